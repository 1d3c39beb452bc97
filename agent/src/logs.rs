//! Captured output: each instance's stdout and stderr, byte for byte as written, go to
//! `logs/NAME.INDEX.log` (rotated by size into `.1` … `.N`) and, split into lines, to a small
//! in-memory ring that `procctl logs` reads first and to the followers of `logs -f`.
//! The pipe is always drained, so a child never blocks on its output.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use procctl_proto::{InstanceId, LogLine};
use tokio::sync::broadcast;

use crate::events::now_ms;
use crate::scratch;

/// Lines and bytes the ring of one instance keeps.
pub const RING_LINES: usize = 1000;
pub const RING_BYTES: usize = 128 * 1024;
/// A line longer than this is split in the ring (the file keeps it whole).
pub const MAX_LINE: usize = 16 * 1024;
/// How much of the end of a log file is read back when the ring has too few lines.
const FILE_TAIL: u64 = 256 * 1024;
/// Lines a follower may fall behind by before it misses some.
pub const FOLLOW_CAPACITY: usize = 4096;

/// A line with its place in the order of everything captured.
#[derive(Clone)]
pub struct Numbered {
    pub seq: u64,
    pub line: LogLine,
}

/// A line in the ring: its text is the next `len` bytes of the ring's text.
struct Kept {
    seq: u64,
    time_ms: u64,
    len: u32,
}

pub struct Sink {
    id: InstanceId,
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    /// The ring: the lines' numbers and times, and their texts one after another in one
    /// buffer (24 bytes a line besides its text, where a line of its own with the
    /// instance's name cost about 200).
    ring: VecDeque<Kept>,
    ring_text: VecDeque<u8>,
    /// The file holds lines the ring does not (evicted, or written before this agent).
    file_has_more: bool,
}

pub type SharedSink = Arc<Mutex<Sink>>;

impl Sink {
    pub fn new(id: InstanceId, dir: &Path, max_size: u64, keep: u32) -> SharedSink {
        let path = dir.join(format!("{}.{}.log", id.name, id.index));
        let size = fs::metadata(&path).map_or(0, |m| m.len());
        Arc::new(Mutex::new(Sink {
            id,
            path,
            max_size,
            keep,
            file: None,
            size,
            ring: VecDeque::new(),
            ring_text: VecDeque::new(),
            file_has_more: size > 0,
        }))
    }

    /// New rotation settings, after a reload.
    pub fn configure(&mut self, max_size: u64, keep: u32) {
        self.max_size = max_size;
        self.keep = keep;
    }

    /// Appends to the file, rotating whenever it would pass `max_size`.
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.size >= self.max_size {
                self.rotate();
            }
            let room = (self.max_size - self.size).max(1) as usize;
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            if self.file.is_none() {
                // Private: whatever the instance prints may be secret.
                self.file = OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path).ok();
            }
            if let Some(file) = self.file.as_mut() {
                if file.write_all(now).is_err() {
                    self.file = None;
                }
            }
            self.size += now.len() as u64;
            bytes = later;
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let _ = fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            let _ = fs::rename(&self.path, numbered(1));
        }
        self.size = 0;
    }

    fn push(&mut self, seq: u64, time_ms: u64, text: &str) {
        self.ring_text.extend(text.as_bytes());
        self.ring.push_back(Kept { seq, time_ms, len: text.len() as u32 });
        while self.ring.len() > RING_LINES || self.ring_text.len() > RING_BYTES {
            if let Some(old) = self.ring.pop_front() {
                self.ring_text.drain(..old.len as usize);
                self.file_has_more = true;
            }
        }
    }

    /// The last `n` lines of the ring.
    fn ring_tail(&self, n: usize) -> Vec<Numbered> {
        let skip = self.ring.len().saturating_sub(n);
        let mut at: usize = self.ring.iter().take(skip).map(|kept| kept.len as usize).sum();
        self.ring
            .iter()
            .skip(skip)
            .map(|kept| {
                let end = at + kept.len as usize;
                let bytes: Vec<u8> = self.ring_text.range(at..end).copied().collect();
                at = end;
                // Whole lines of a String went in, so they come out as valid UTF-8.
                let text =
                    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                Numbered { seq: kept.seq, line: LogLine { id: self.id.clone(), time_ms: kept.time_ms, text } }
            })
            .collect()
    }

    /// The last `n` lines: from the ring, topped up from the file when the ring has fewer
    /// and the file has older ones. Lines read back from the file have no time (0).
    pub fn tail(&self, n: usize) -> Vec<Numbered> {
        let from_ring = self.ring_tail(n);
        if from_ring.len() >= n || !self.file_has_more {
            return from_ring;
        }
        let text = read_tail(&self.path, FILE_TAIL).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // The ring's lines are the file's last lines; take what comes before them.
        let older = &lines[..lines.len().saturating_sub(self.ring.len())];
        let wanted = n - from_ring.len();
        older[older.len().saturating_sub(wanted)..]
            .iter()
            .map(|text| Numbered { seq: 0, line: LogLine { id: self.id.clone(), time_ms: 0, text: text.to_string() } })
            .chain(from_ring)
            .collect()
    }
}

fn read_tail(path: &Path, bytes: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // Drop the partial first line.
        let cut = text.find('\n').map_or(text.len(), |i| i + 1);
        text.drain(..cut);
    }
    Ok(text)
}

/// Numbers every captured line and hands it to the followers.
///
/// The channel is made when the first follower comes: its ring of `FOLLOW_CAPACITY` slots
/// is written whole when made (about 400 KiB), and a line read while nobody follows
/// reaches nobody.
#[derive(Clone)]
pub struct Follow {
    tx: Arc<std::sync::OnceLock<broadcast::Sender<Numbered>>>,
    seq: Arc<AtomicU64>,
}

impl Default for Follow {
    fn default() -> Self {
        Follow::new()
    }
}

impl Follow {
    pub fn new() -> Follow {
        Follow { tx: Arc::default(), seq: Arc::new(AtomicU64::new(0)) }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        self.tx.get_or_init(|| broadcast::channel(FOLLOW_CAPACITY).0).subscribe()
    }
}

/// A `ready = { log = REGEX }` probe: told once, at the first line that matches.
pub struct LineWatch {
    pub regex: regex::Regex,
    pub matched: Box<dyn FnOnce() + Send>,
}

/// Drains one run's output pipe into its sink until every writer has closed it.
pub fn capture(fd: OwnedFd, sink: SharedSink, follow: Follow, mut watch: Option<LineWatch>) -> std::io::Result<()> {
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let id = sink.lock().unwrap_or_else(|p| p.into_inner()).id.clone();
    tokio::spawn(async move {
        let mut partial: Vec<u8> = Vec::new();
        loop {
            if pipe.readable().await.is_err() {
                break;
            }
            let take = |bytes: &[u8]| {
                let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                sink.write(bytes);
                let time_ms = now_ms();
                let mut rest = bytes;
                while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                    partial.extend_from_slice(&rest[..pos]);
                    if watch.as_ref().is_some_and(|w| w.regex.is_match(&String::from_utf8_lossy(&partial))) {
                        if let Some(watch) = watch.take() {
                            (watch.matched)();
                        }
                    }
                    emit(&mut sink, &follow, &id, time_ms, &mut partial);
                    rest = &rest[pos + 1..];
                }
                partial.extend_from_slice(rest);
                while partial.len() >= MAX_LINE {
                    let mut head: Vec<u8> = partial.drain(..MAX_LINE).collect();
                    emit(&mut sink, &follow, &id, time_ms, &mut head);
                }
                if partial.capacity() > 4 * MAX_LINE {
                    partial.shrink_to(MAX_LINE);
                }
            };
            if let scratch::Read::End = scratch::read(|buf| pipe.try_read(buf), take) {
                break;
            }
            // Readiness alone never yields: a pipe that never runs dry would starve every
            // other task of this thread.
            tokio::task::yield_now().await;
        }
        if !partial.is_empty() {
            let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
            emit(&mut sink, &follow, &id, now_ms(), &mut partial);
        }
    });
    Ok(())
}

/// A line of the agent's own about this instance, into its log file and ring.
pub fn note(sink: &SharedSink, follow: &Follow, text: &str) {
    let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
    let id = sink.id.clone();
    let mut bytes = format!("{text}\n").into_bytes();
    sink.write(&bytes);
    bytes.pop();
    emit(&mut sink, follow, &id, now_ms(), &mut bytes);
}

fn emit(sink: &mut Sink, follow: &Follow, id: &InstanceId, time_ms: u64, bytes: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(bytes).trim_end_matches('\r').to_string();
    bytes.clear();
    let seq = follow.seq.fetch_add(1, Ordering::Relaxed) + 1;
    sink.push(seq, time_ms, &text);
    if let Some(tx) = follow.tx.get().filter(|tx| tx.receiver_count() > 0) {
        let _ = tx.send(Numbered { seq, line: LogLine { id: id.clone(), time_ms, text } });
    }
}

/// Merges the tails of several instances by the time each line was read.
pub fn merge(mut tails: Vec<Vec<Numbered>>, n: usize) -> (Vec<LogLine>, HashMap<InstanceId, u64>) {
    let mut last = HashMap::new();
    for tail in &tails {
        if let Some(line) = tail.last() {
            last.insert(line.line.id.clone(), line.seq);
        }
    }
    let mut all: Vec<Numbered> = tails.drain(..).flatten().collect();
    all.sort_by_key(|l| (l.line.time_ms, l.seq));
    let skip = all.len().saturating_sub(n);
    (all.into_iter().skip(skip).map(|l| l.line).collect(), last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path, max: u64, keep: u32) -> SharedSink {
        Sink::new(InstanceId::new("w", 0), dir, max, keep)
    }

    #[test]
    fn rotation_keeps_each_file_under_the_limit_and_n_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let shared = sink(dir.path(), 100, 2);
        let mut sink = shared.lock().unwrap();
        for _ in 0..10 {
            sink.write(&[b'x'; 45]);
        }
        let size = |name: &str| fs::metadata(dir.path().join(name)).map(|m| m.len()).ok();
        assert_eq!(size("w.0.log"), Some(50));
        assert_eq!(size("w.0.log.1"), Some(100));
        assert_eq!(size("w.0.log.2"), Some(100));
        assert_eq!(size("w.0.log.3"), None);
    }

    #[test]
    fn zero_files_kept_means_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let shared = sink(dir.path(), 10, 0);
        shared.lock().unwrap().write(b"0123456789abc");
        assert_eq!(fs::read(dir.path().join("w.0.log")).unwrap(), b"abc");
        assert!(!dir.path().join("w.0.log.1").exists());
    }

    #[test]
    fn the_ring_is_bounded_and_tail_reads_the_file_when_it_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let shared = sink(dir.path(), 1 << 20, 1);
        let mut sink = shared.lock().unwrap();
        for seq in 0..(RING_LINES as u64 + 10) {
            sink.push(seq, seq, &format!("line {seq} é"));
        }
        assert_eq!(sink.ring.len(), RING_LINES);
        let tail = sink.tail(2);
        assert_eq!(tail.iter().map(|l| l.line.text.as_str()).collect::<Vec<_>>(), ["line 1008 é", "line 1009 é"]);
        assert_eq!(tail.iter().map(|l| (l.seq, l.line.time_ms)).collect::<Vec<_>>(), [(1008, 1008), (1009, 1009)]);
        assert_eq!(tail[0].line.id, InstanceId::new("w", 0));

        // Bounded by bytes too: long lines push out the oldest, whole.
        let long = "x".repeat(RING_BYTES / 4 + 1);
        for seq in 0..4 {
            sink.push(2000 + seq, 0, &long);
        }
        assert_eq!(sink.ring.len(), 3, "three long lines fit, not four");
        assert_eq!(sink.ring_text.len(), 3 * long.len());
        assert!(sink.tail(3).iter().all(|l| l.line.text == long));

        fs::write(dir.path().join("w.1.log"), "a\nb\nc\n").unwrap();
        let fresh = Sink::new(InstanceId::new("w", 1), dir.path(), 1 << 20, 1);
        let tail = fresh.lock().unwrap().tail(2);
        assert_eq!(tail.iter().map(|l| l.line.text.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    }
}
