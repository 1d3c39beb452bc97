//! The pid table on disk: every instance and the runtime scale counts, written atomically
//! (temp file, fsync, rename) by a writer thread so the supervisor never waits on the disk.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context, bail};
use procctl_proto::Exit;
use serde::{Deserialize, Serialize};

/// The file's own format version, separate from the wire protocol.
pub const TABLE_VERSION: u32 = 1;
pub const TABLE_FILE: &str = "table.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableFile {
    pub version: u32,
    pub agent_pid: u32,
    /// The `PROCCTL_AGENT` value every process this agent started inherits, so the next
    /// agent can find descendants that left their instance's group.
    #[serde(default)]
    pub agent_token: Option<String>,
    /// The agent's cgroup tree, with cgroup tracking: the next agent ends what is left in it.
    #[serde(default)]
    pub cgroup_base: Option<std::path::PathBuf>,
    pub instances: Vec<Row>,
    /// Counts set by `procctl scale`, by process name.
    #[serde(default)]
    pub scaled: BTreeMap<String, ScaleOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub index: u32,
    pub pid: Option<i32>,
    /// The process group while any of it may be alive.
    pub pgid: Option<i32>,
    /// /proc start time of the group leader, so a reused pid is never taken for ours.
    pub start_time: Option<u64>,
    pub state: String,
    pub restarts: u32,
    pub last_exit: Option<ExitRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitRecord {
    Code(i32),
    Signal(i32),
}

impl From<Exit> for ExitRecord {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Code(code) => ExitRecord::Code(code),
            Exit::Signal(sig) => ExitRecord::Signal(sig.number()),
        }
    }
}

/// A `scale` count, and the config's `instances` when it was set: it holds until that value changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleOverride {
    pub count: u32,
    pub config_instances: u32,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(TABLE_FILE)
}

/// Reads the table left by an earlier agent. A missing file is `Ok(None)`; a corrupt one
/// is moved aside (its new name is in the error) so it is reported once and never crashes.
pub fn load(state_dir: &Path) -> Result<Option<TableFile>, String> {
    let file = path(state_dir);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let problem = match serde_json::from_str::<TableFile>(&text) {
        Ok(table) if table.version == TABLE_VERSION => return Ok(Some(table)),
        Ok(table) => format!("unknown table version {} (this agent writes {TABLE_VERSION})", table.version),
        Err(e) => e.to_string(),
    };
    let aside = file.with_extension("json.corrupt");
    let _ = fs::rename(&file, &aside);
    Err(format!("{} is unreadable ({problem}); moved to {}", file.display(), aside.display()))
}

/// The scale counts of the last table whose rename was made durable (none before the first).
#[derive(Default)]
struct Durable(Option<BTreeMap<String, ScaleOverride>>);

impl Durable {
    /// Whether a table with these counts needs its rename made durable.
    fn wanted(&self, scaled: &BTreeMap<String, ScaleOverride>) -> bool {
        self.0.as_ref() != Some(scaled)
    }

    fn made(&mut self, scaled: &BTreeMap<String, ScaleOverride>) {
        self.0 = Some(scaled.clone());
    }
}

/// Writes `table` in place of the last one: the new file complete on disk before it is
/// renamed over the old, so the agent's death (or the machine's) leaves one or the other,
/// whole. `sync_dir` makes the rename itself durable, which matters only for what outlives a
/// reboot, the scale counts: the writer asks for it when they changed. Without it a power
/// loss may bring back the table before, whose pids mean nothing after a reboot anyway, and
/// every save is one `fsync` cheaper (about a quarter of a millisecond of CPU on ext4).
fn save(state_dir: &Path, table: &TableFile, sync_dir: bool) -> std::io::Result<()> {
    let file = path(state_dir);
    let temp = file.with_extension("json.tmp");
    // Private: the table names every process of the user's.
    let out = File::options().create(true).truncate(true).write(true).mode(0o600).open(&temp)?;
    // Written as it is made: a table of a thousand rows is a quarter of a megabyte of
    // text, which the writer thread's heap would keep after the first save.
    let mut out = std::io::BufWriter::new(out);
    serde_json::to_writer_pretty(&mut out, table).map_err(std::io::Error::other)?;
    let out = out.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    fs::rename(&temp, &file)?;
    // The rename is durable once the directory is synced.
    if sync_dir { File::open(state_dir)?.sync_all() } else { Ok(()) }
}

/// Hands tables to the writer thread; only the newest of a burst is written.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
}

enum Command {
    Save(Box<TableFile>),
    Flush(mpsc::Sender<()>),
}

impl Writer {
    pub fn start(state_dir: PathBuf) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Command>();
        std::thread::Builder::new().name("table-writer".into()).spawn(move || {
            // The agent's signals (SIGCHLD above all) go to the thread that handles them,
            // not through this one: a thread woken only to pass a signal on is a hop on the
            // way from a child's exit to its replacement.
            let _ = nix::sys::signal::SigSet::all().thread_block();
            let mut failing = false;
            let mut durable = Durable::default();
            while let Ok(mut command) = rx.recv() {
                let mut flushes = vec![];
                let mut newest = None;
                loop {
                    match command {
                        Command::Save(table) => newest = Some(table),
                        Command::Flush(done) => flushes.push(done),
                    }
                    match rx.try_recv() {
                        Ok(next) => command = next,
                        Err(_) => break,
                    }
                }
                if let Some(table) = newest {
                    let sync_dir = durable.wanted(&table.scaled);
                    match save(&state_dir, &table, sync_dir) {
                        Ok(()) => {
                            failing = false;
                            if sync_dir {
                                durable.made(&table.scaled);
                            }
                        }
                        Err(e) if !failing => {
                            failing = true;
                            log!("cannot write the pid table in {}: {e}", state_dir.display());
                        }
                        Err(_) => {}
                    }
                }
                for done in flushes {
                    let _ = done.send(());
                }
            }
        })?;
        Ok(Writer { tx })
    }

    pub fn save(&self, table: TableFile) {
        let _ = self.tx.send(Command::Save(Box::new(table)));
    }

    /// Waits until everything handed over so far is on disk.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// One agent per state directory: two would fight over the pid table.
pub fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("agent.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // An open file description lock: it belongs to this open file, whichever descriptors
    // (or descriptor tables) refer to it, so it survives an upgrade's execve, where the
    // descriptor is handed over from another thread's table (a classic POSIX lock belongs
    // to the table that took it, and went with it). Children never get a copy of the
    // descriptor (the spawner closes its copy: see `spawn::start`), so the next agent after
    // a crash is never locked out by one. It conflicts with a classic POSIX lock too.
    let whole =
        libc::flock { l_type: libc::F_WRLCK as i16, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
    if nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLK(&whole)).is_err() {
        bail!("another procagent is already using the state directory {}", dir.display());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rename_is_made_durable_first_and_when_a_scale_count_changed() {
        let counts = |n: u32| BTreeMap::from([("web".to_string(), ScaleOverride { count: n, config_instances: 1 })]);
        let mut durable = Durable::default();
        // (the counts of the table saved, whether its rename is synced)
        let cases = [
            (BTreeMap::new(), true),
            (BTreeMap::new(), false),
            (counts(3), true),
            (counts(3), false),
            (counts(4), true),
            (BTreeMap::new(), true),
        ];
        for (scaled, want) in cases {
            assert_eq!(durable.wanted(&scaled), want, "{scaled:?}");
            if want {
                durable.made(&scaled);
            }
        }
    }

    fn sample() -> TableFile {
        TableFile {
            version: TABLE_VERSION,
            agent_pid: 1,
            agent_token: Some("1.2.3".into()),
            cgroup_base: Some("/sys/fs/cgroup/procctl-1.2.3".into()),
            instances: vec![Row {
                name: "w".into(),
                index: 0,
                pid: Some(10),
                pgid: Some(10),
                start_time: Some(99),
                state: "running".into(),
                restarts: 2,
                last_exit: Some(ExitRecord::Signal(9)),
            }],
            scaled: BTreeMap::from([("w".into(), ScaleOverride { count: 3, config_instances: 1 })]),
        }
    }

    #[test]
    fn saves_and_loads_through_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(dir.path().to_path_buf()).unwrap();
        writer.save(sample());
        writer.flush();
        assert_eq!(load(dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join("table.json.tmp").exists());
    }

    #[test]
    fn a_missing_table_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
    }

    #[test]
    fn a_corrupt_table_is_reported_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), "{\"version\": 1, \"agent_pid\": ").unwrap();
        let error = load(dir.path()).unwrap_err();
        assert!(error.contains("unreadable"), "{error}");
        assert!(dir.path().join("table.json.corrupt").exists());
        assert_eq!(load(dir.path()), Ok(None), "reported once, then a fresh start");
    }
}
