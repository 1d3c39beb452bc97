//! CPU and memory of the listed instances, sampled when `list` asks and never on a timer:
//! from the run's cgroup (cpu.stat, memory.current, or the RSS of its processes when the
//! memory controller is not there) with cgroup tracking, else from /proc over the main
//! process and its descendants. CPU is the share of one CPU since the previous sample of
//! that instance, or since its start for the first. A sample answers for a quarter of a
//! second: a `list` within it reads nothing.
//!
//! The files are opened once per run and read again with pread at offset 0 (the kernel
//! makes them anew at each read): a sample costs a read per file, not an open, a path walk
//! and a close, which is most of the time of `list` with a hundred instances.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use procctl_proto::InstanceInfo;

use super::Supervisor;
use crate::procfs;

/// Files kept open for sampling, in the whole agent, and how many may be: a quarter of its
/// descriptors, so that sampling never takes the ones spawns and clients need.
static KEPT: AtomicUsize = AtomicUsize::new(0);

fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap_or((0, 0));
        (soft / 4) as usize
    })
}

/// One file a sample is read from: opened once and read again with pread (within the
/// budget), or read by its path each time (past it), or known to be missing.
#[derive(Default)]
enum Source {
    #[default]
    Unopened,
    Open(File),
    Missing,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Open(_) = self {
            KEPT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Source {
    /// The file's bytes, from its start; `path` is made only when the file is not open.
    fn read<'b, P: AsRef<Path>>(&mut self, path: impl FnOnce() -> P, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        if let Source::Unopened = self {
            match File::open(path()) {
                Ok(file) if KEPT.load(Ordering::Relaxed) < budget() => {
                    KEPT.fetch_add(1, Ordering::Relaxed);
                    *self = Source::Open(file);
                }
                Ok(file) => return whole(&file, buf),
                Err(_) => *self = Source::Missing,
            }
        }
        match self {
            Source::Open(file) => whole(file, buf),
            _ => None,
        }
    }
}

/// A read of a whole small file, from its start.
fn whole<'b>(file: &File, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let n = file.read_at(buf, 0).ok().filter(|&n| n < buf.len())?;
    Some(&buf[..n])
}

/// The files one run is sampled from.
#[derive(Default)]
pub struct Files {
    /// The run (and its pid) the files below were opened for: a new run opens them anew.
    run: Option<(u64, i32)>,
    cpu_stat: Source,
    memory_current: Source,
    procs: Source,
    /// `/proc/PID/statm` (cgroup tracking) or `/proc/PID/stat` (process groups) of each
    /// process last seen in the run.
    per_pid: Vec<(i32, Source)>,
    /// When the members were last found (`cgroup.procs`, or a walk of the main process's
    /// descendants): they are found again after a second, or at once when one is gone.
    members_at: Option<Instant>,
    /// The last sample, given again to whoever asks within `SAMPLE_FRESH` of it.
    last: Option<Sample>,
}

/// What one sample of a run found.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_tenths: Option<u32>,
    memory_bytes: Option<u64>,
}

/// How long a sample answers for: a `list` within it gets the sample again and reads
/// nothing (a file read per instance is most of the time of `list` at a thousand), one
/// after it samples anew; well under `top`'s refresh (and anyone polling a few times a
/// second), so each of those gets a sample of its own.
const SAMPLE_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// How long the members of a run's cgroup are taken as known.
const MEMBERS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Files {
    fn for_run(&mut self, run: u64, pid: i32) {
        if self.run != Some((run, pid)) {
            *self = Files { run: Some((run, pid)), ..Files::default() };
        }
    }

    /// The last sample, while it still answers for the run.
    fn kept(&self, now: Instant) -> Option<Sample> {
        self.last.filter(|last| now.saturating_duration_since(last.at) < SAMPLE_FRESH)
    }

    /// The sources of `pids`: the ones open already, and new ones for the others.
    fn members(&mut self, pids: &[i32]) {
        let mut old = std::mem::take(&mut self.per_pid);
        for &pid in pids {
            let source = old.iter().position(|(p, _)| *p == pid).map_or(Source::Unopened, |at| old.swap_remove(at).1);
            self.per_pid.push((pid, source));
        }
    }

    /// The CPU ticks and resident pages of the members from their /proc/PID/stat, or `None`
    /// when one of them is gone.
    fn stat_sum(&mut self, buf: &mut [u8]) -> Option<(u64, u64)> {
        let (mut ticks, mut pages) = (0, 0);
        for (pid, source) in &mut self.per_pid {
            let stat = source
                .read(|| format!("/proc/{pid}/stat"), buf)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(procfs::parse_stat)?;
            ticks += stat.cpu_ticks;
            pages += stat.rss_pages;
        }
        Some((ticks, pages))
    }

    /// The resident pages of the members, or `None` when one of them is gone.
    fn resident(&mut self, buf: &mut [u8]) -> Option<u64> {
        let mut pages = 0;
        for (pid, source) in &mut self.per_pid {
            pages += source.read(|| format!("/proc/{pid}/statm"), buf).and_then(statm_resident)?;
        }
        Some(pages)
    }
}

impl Supervisor {
    /// Fills `cpu_tenths` and `memory_bytes` of the running rows.
    pub(super) fn sample_usage(&mut self, rows: &mut [InstanceInfo]) {
        let (ticks_per_sec, page) = procfs::units();
        let memory_controller = self.cgroups.tree().is_some_and(|tree| tree.has("memory"));
        let now = Instant::now();
        let mut buf = [0u8; 4096];
        for row in rows.iter_mut() {
            let Some(slot) = self.slots.get_mut(&row.id) else {
                continue;
            };
            let Some(pid) = slot.inst.pid else {
                continue;
            };
            let files = &mut slot.usage;
            files.for_run(slot.inst.run, pid);
            if let Some(last) = files.kept(now) {
                (row.cpu_tenths, row.memory_bytes) = (last.cpu_tenths, last.memory_bytes);
                continue;
            }
            let (cpu_usec, memory) = match &slot.cgroup {
                Some(cgroup) => {
                    let cpu = files.cpu_stat.read(|| cgroup.join("cpu.stat"), &mut buf).and_then(cpu_usec);
                    let memory = if memory_controller {
                        files
                            .memory_current
                            .read(|| cgroup.join("memory.current"), &mut buf)
                            .and_then(|bytes| std::str::from_utf8(bytes).ok()?.trim().parse().ok())
                    } else {
                        let known = files.members_at.is_some_and(|at| at.elapsed() < MEMBERS_FRESH);
                        let pages = match known.then(|| files.resident(&mut buf)).flatten() {
                            Some(pages) => pages,
                            None => {
                                let mut pids = files
                                    .procs
                                    .read(|| cgroup.join("cgroup.procs"), &mut buf)
                                    .map(procfs::pids)
                                    .unwrap_or_default();
                                if pids.is_empty() {
                                    // The main process moved into a cgroup of its own (an agent
                                    // that is an instance): the whole subtree, walked.
                                    pids = crate::cgroup::procs(cgroup);
                                }
                                files.members(&pids);
                                files.members_at = Some(Instant::now());
                                files.resident(&mut buf).unwrap_or(0)
                            }
                        };
                        Some(pages * page)
                    };
                    (cpu, memory)
                }
                None => {
                    // The main process and what it started, by its children, as far as they
                    // are still its own descendants: walked again after a second, or at once
                    // when one of them is gone.
                    let known = files.members_at.is_some_and(|at| at.elapsed() < MEMBERS_FRESH);
                    let (ticks, pages) = match known.then(|| files.stat_sum(&mut buf)).flatten() {
                        Some(sum) => sum,
                        None => {
                            let mut family = vec![pid];
                            let mut members = vec![];
                            while let Some(member) = family.pop() {
                                members.push(member);
                                family.extend(procfs::children(member));
                            }
                            files.members(&members);
                            files.members_at = Some(Instant::now());
                            files.stat_sum(&mut buf).unwrap_or((0, 0))
                        }
                    };
                    (Some(ticks * 1_000_000 / ticks_per_sec), Some(pages * page))
                }
            };
            row.memory_bytes = memory;
            files.last = Some(Sample { at: now, cpu_tenths: None, memory_bytes: memory });
            let Some(used) = cpu_usec else {
                continue;
            };
            let (before, since) = match slot.cpu_sample {
                Some((before, at)) => (before, now.duration_since(at)),
                None => (
                    0,
                    slot.inst.started_at.and_then(|at| SystemTime::now().duration_since(at).ok()).unwrap_or_default(),
                ),
            };
            let elapsed = since.as_micros() as u64;
            row.cpu_tenths = (used.saturating_sub(before) * 1000).checked_div(elapsed).map(|t| t as u32);
            slot.cpu_sample = Some((used, now));
            slot.usage.last = Some(Sample { at: now, cpu_tenths: row.cpu_tenths, memory_bytes: memory });
        }
    }
}

fn cpu_usec(stat: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(stat).ok()?;
    text.lines().find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())
}

/// The second field of statm: resident pages.
fn statm_resident(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_kernel_writes() {
        assert_eq!(cpu_usec(b"usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n"), Some(1234));
        assert_eq!(cpu_usec(b"user_usec 1\n"), None);
        assert_eq!(procfs::pids(b"12\n345\n"), [12, 345]);
        assert_eq!(statm_resident(b"2476 410 370 5 0 118 0\n"), Some(410));
    }

    #[test]
    fn a_sample_answers_for_a_quarter_second_of_its_run() {
        let at = Instant::now();
        let sample = Sample { at, cpu_tenths: Some(12), memory_bytes: Some(4096) };
        let mut files = Files::default();
        files.for_run(1, 100);
        assert!(files.kept(at).is_none(), "nothing sampled yet");
        files.last = Some(sample);
        // (age of the sample, kept)
        let cases = [(0, true), (249, true), (250, false), (2000, false)];
        for (age, kept) in cases {
            let now = at + std::time::Duration::from_millis(age);
            assert_eq!(files.kept(now).is_some(), kept, "{age} ms");
        }
        files.for_run(1, 100);
        assert!(files.kept(at).is_some(), "the same run keeps it");
        files.for_run(2, 100);
        assert!(files.kept(at).is_none(), "a new run with the same pid starts afresh");
    }

    #[test]
    fn a_file_read_again_at_its_start_is_made_anew() {
        let path = format!("/proc/{}/stat", std::process::id());
        let mut source = Source::Unopened;
        let mut buf = [0u8; 4096];
        let first = source.read(|| &path, &mut buf).unwrap().len();
        assert!(first > 0);
        assert!(matches!(source, Source::Open(_)), "kept open within the budget");
        let again = source.read(|| &path, &mut buf).unwrap().len();
        assert!(again > 0, "pread at 0 reads it whole again");
        let mut missing = Source::Unopened;
        assert!(missing.read(|| "/proc/no/such/file", &mut buf).is_none());
        assert!(matches!(missing, Source::Missing), "not tried again");
    }
}
