//! cgroup v2 tracking: every run of every instance in a cgroup of its own, so that nothing
//! it starts can escape a stop (setsid, double fork, a cleared environment), and the
//! next agent after a crash finds whatever is left.
//!
//! The hierarchy is found from /proc/self/mountinfo (not always at /sys/fs/cgroup: a hybrid
//! host mounts it at /sys/fs/cgroup/unified) and the agent's own cgroup A from
//! /proc/self/cgroup. The agent's tree is `A/procctl-ID/`: `runs/NAME.INDEX.RUN` for the
//! runs and, when A is not the root (the kernel's "no internal processes" rule, as systemd's
//! delegation expects), `agent/` for the agent itself. "Gone" is `populated 0` in a
//! cgroup's `cgroup.events`, watched with inotify; `cgroup.kill` ends everything in one.
//! Without a usable hierarchy the agent falls back to process groups and says so.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use procctl_proto::InstanceId;

/// The controllers runs get when the hierarchy offers them.
const WANTED: [&str; 2] = ["memory", "cpu"];
/// The period `cpu_max` is expressed in, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// The agent's `runs` directory, opened once: a run's files are reached from it by a name
/// or two (openat, fstatat, unlinkat) instead of a walk of the whole path, which was the
/// larger part of the kernel's time in a stop of a thousand runs.
static RUNS: OnceLock<(PathBuf, OwnedFd)> = OnceLock::new();

fn remember_runs(runs: &Path) {
    if let Ok(dir) = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(runs) {
        let _ = RUNS.set((runs.to_path_buf(), dir.into()));
    }
}

/// `path` as the runs directory's descriptor and the rest of the path, when it is below it.
fn below_runs(path: &Path) -> Option<(BorrowedFd<'static>, &Path)> {
    let (runs, dir) = RUNS.get()?;
    let rest = path.strip_prefix(runs).ok().filter(|rest| !rest.as_os_str().is_empty())?;
    Some((dir.as_fd(), rest))
}

/// Opens a control file for reading.
fn open_read(path: &Path) -> std::io::Result<fs::File> {
    let Some((dir, rest)) = below_runs(path) else {
        return fs::File::open(path);
    };
    let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC;
    Ok(nix::fcntl::openat(dir, rest, flags, nix::sys::stat::Mode::empty())?.into())
}

/// The link count of a directory.
fn link_count(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let Some((dir, rest)) = below_runs(path) else {
        return fs::symlink_metadata(path).map(|meta| meta.nlink());
    };
    let stat = nix::sys::stat::fstatat(dir, rest, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    #[allow(clippy::unnecessary_cast)] // nlink_t is narrower on some architectures
    Ok(stat.st_nlink as u64)
}

fn rmdir(path: &Path) -> std::io::Result<()> {
    let Some((dir, rest)) = below_runs(path) else {
        return fs::remove_dir(path);
    };
    Ok(nix::unistd::unlinkat(dir, rest, nix::unistd::UnlinkatFlags::RemoveDir)?)
}

/// The agent's own tree in the hierarchy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tree {
    /// `A/procctl-ID`.
    pub base: PathBuf,
    /// `base/runs`, the parent of every run's cgroup.
    runs: PathBuf,
    /// Controllers enabled for runs.
    pub controllers: Vec<String>,
}

/// How the agent keeps track of what an instance started.
pub enum Tracking {
    Cgroups(Tree),
    /// Process groups and the PROCCTL_AGENT token; why cgroups are not used.
    Groups(String),
}

impl Tracking {
    /// Sets up the agent's tree under its own cgroup, or says why it cannot. `id` names
    /// this run of the agent. Call before any thread is started.
    pub fn detect(id: &str) -> Tracking {
        match Tree::create(id) {
            Ok(tree) => Tracking::Cgroups(tree),
            Err(why) => Tracking::Groups(why),
        }
    }

    /// What an upgrade hands the next image: the tree, or why there is none.
    pub fn handed(&self) -> Result<Tree, String> {
        match self {
            Tracking::Cgroups(tree) => Ok(tree.clone()),
            Tracking::Groups(why) => Err(why.clone()),
        }
    }

    /// The tracking an upgrade handed over: the same tree, not a new one.
    pub fn from_handed(handed: Result<Tree, String>) -> Tracking {
        match handed {
            Ok(tree) => {
                remember_runs(&tree.runs);
                Tracking::Cgroups(tree)
            }
            Err(why) => Tracking::Groups(why),
        }
    }

    pub fn tree(&self) -> Option<&Tree> {
        match self {
            Tracking::Cgroups(tree) => Some(tree),
            Tracking::Groups(_) => None,
        }
    }

    /// For the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Tracking::Cgroups(tree) => {
                let controllers = if tree.controllers.is_empty() { "none".into() } else { tree.controllers.join(" ") };
                format!("tracking instances with cgroup v2 in {} (controllers: {controllers})", tree.base.display())
            }
            Tracking::Groups(why) => format!("tracking instances with process groups: {why}"),
        }
    }
}

impl Tree {
    fn create(id: &str) -> Result<Tree, String> {
        // Any mount point may have a name that is no UTF-8; only the cgroup2 line is read.
        let mountinfo = fs::read("/proc/self/mountinfo").map_err(|e| format!("cannot read mountinfo: {e}"))?;
        let mountinfo = String::from_utf8_lossy(&mountinfo);
        let (mount, root) = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let path = own_cgroup(&own).ok_or("this process has no cgroup v2 path")?;
        let relative = path.strip_prefix(root.as_str()).ok_or("the agent's cgroup is outside the mounted hierarchy")?;
        let agent = mount.join(relative.trim_start_matches('/'));
        let namespace = pid_namespace();
        sweep(&agent, namespace);
        // The pid namespace is in the name: only an agent of the same namespace can tell from
        // /proc whether the one that made a tree is alive.
        let base = agent.join(format!("procctl-{id}.{namespace}"));
        fs::create_dir(&base).map_err(|e| format!("cannot create a cgroup in {}: {e}", agent.display()))?;
        let tree = Tree { runs: base.join("runs"), base, controllers: vec![] };
        let cleanup = tree.clone();
        tree.set_up(&agent).inspect_err(|_| cleanup.remove_all())
    }

    fn set_up(mut self, agent: &Path) -> Result<Tree, String> {
        fs::create_dir(&self.runs).map_err(|e| format!("cannot create {}: {e}", self.runs.display()))?;
        remember_runs(&self.runs);
        // The real root has no cgroup.events, and may hold processes and controllers both.
        if agent.join("cgroup.events").exists() {
            let leaf = self.base.join("agent");
            fs::create_dir(&leaf).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
            write(&leaf.join("cgroup.procs"), "0")
                .map_err(|e| format!("cannot move the agent into {}: {e}", leaf.display()))?;
        }
        let offered = fs::read_to_string(agent.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<&str> = WANTED.into_iter().filter(|c| offered.split_whitespace().any(|o| o == *c)).collect();
        // Enabled down the chain agent → base → runs; a controller that cannot be is left out.
        for controller in wanted {
            let enable = format!("+{controller}");
            let chain = [agent, self.base.as_path(), self.runs.as_path()];
            if chain.iter().all(|dir| write(&dir.join("cgroup.subtree_control"), &enable).is_ok()) {
                self.controllers.push(controller.to_string());
            }
        }
        Ok(self)
    }

    /// The cgroup of run `run` of `id` (runs are numbered once across the agent).
    pub fn run_path(&self, id: &InstanceId, run: u64) -> PathBuf {
        self.runs.join(format!("{}.{}.{run}", id.name, id.index))
    }

    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// At shutdown: the agent's tree, emptied, goes (the agent's own leaf last, if it can),
    /// with any cgroup an instance made below its own.
    pub fn remove_all(&self) {
        remove(&self.base);
    }
}

/// The inode of this process's pid namespace (0 when it cannot be read).
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// Removes the empty trees of dead agents beside ours (an agent killed with no successor on
/// its state directory leaves one). A tree that still holds processes is left for the
/// next agent of its own state directory, which knows their stop signals; so is one made in
/// another pid namespace, whose agent's pid means nothing here (and an idle agent's tree is
/// empty when the agent itself could not move into it).
fn sweep(agent: &Path, namespace: u64) {
    for entry in fs::read_dir(agent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(token) = name.strip_prefix("procctl-") else {
            continue;
        };
        // The token is PID.STARTTIME.NANOS.PIDNAMESPACE of the agent that made it.
        let parts: Vec<&str> = token.split('.').collect();
        let (Some(pid), Some(start), Some(made_in)) = (
            parts.first().and_then(|p| p.parse::<i32>().ok()),
            parts.get(1).and_then(|s| s.parse::<u64>().ok()),
            parts.get(3).and_then(|n| n.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if made_in != namespace {
            continue;
        }
        let alive = crate::procfs::stat(pid).is_some_and(|stat| stat.start_time == start);
        if !alive && !populated(&entry.path()) {
            remove(&entry.path());
        }
    }
}

/// The limits a run's cgroup gets before its process moves in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max: Option<u64>,
    /// Percent of one CPU.
    pub cpu_max: Option<u32>,
}

/// Creates a run's cgroup with its limits and opens its directory: the child is made in it
/// (`CLONE_INTO_CGROUP`), or writes itself into its `cgroup.procs` between clone and exec.
pub fn create(path: &Path, limits: Limits) -> std::io::Result<OwnedFd> {
    match fs::create_dir(path) {
        Ok(()) => {}
        // Left by an earlier run that is gone: it is empty, or the spawn would not be asked.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if let Some(bytes) = limits.memory_max {
        write_limit(&path.join("memory.max"), &bytes.to_string())?;
    }
    if let Some(percent) = limits.cpu_max {
        write_limit(&path.join("cpu.max"), &format!("{} {CPU_PERIOD}", u64::from(percent) * CPU_PERIOD / 100))?;
    }
    let dir = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)?;
    Ok(dir.into())
}

/// Opens the directory of a run's cgroup that exists (a spare made ahead).
pub fn open(path: &Path) -> std::io::Result<OwnedFd> {
    let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC;
    match below_runs(path) {
        Some((dir, rest)) => Ok(nix::fcntl::openat(dir, rest, flags, nix::sys::stat::Mode::empty())?),
        None => Ok(fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)?.into()),
    }
}

/// A limit whose controller is not enabled for runs has no file: the agent warned about it
/// once at load, and the run goes without it.
fn write_limit(path: &Path, text: &str) -> std::io::Result<()> {
    match write(path, text) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    fs::OpenOptions::new().write(true).open(path)?.write_all(text.as_bytes())
}

/// Whether any process is left in the cgroup or below it. A cgroup that is gone is empty.
pub fn populated(path: &Path) -> bool {
    let mut buffer = [0u8; 256];
    read_small(&path.join("cgroup.events"), &mut buffer)
        .is_some_and(|events| events.split(|&b| b == b'\n').any(|line| line == b"populated 1"))
}

/// Whether the cgroup has cgroups below it: a cgroup directory's link count is two plus its
/// subdirectories, which a stat gives without opening, reading and closing a file (this is
/// asked for every run at every stop). When the count cannot be read, it is taken to have
/// some, so the caller walks the tree.
fn has_descendants(path: &Path) -> bool {
    !matches!(link_count(path), Ok(2))
}

/// A small control file in one read, without the size query `fs::read` makes first (these
/// are read for every run at every stop).
fn read_small<'a>(path: &Path, buffer: &'a mut [u8]) -> Option<&'a [u8]> {
    use std::io::Read;
    let n = open_read(path).ok()?.read(buffer).ok()?;
    Some(&buffer[..n])
}

/// The processes in the cgroup and in every cgroup below it: an instance may make cgroups of
/// its own (an agent that is itself an instance moves into one), and its processes are still
/// the instance's. The tree is walked only when the cgroup has cgroups below it.
pub fn procs(path: &Path) -> Vec<i32> {
    let dirs = if has_descendants(path) { subtree(path) } else { vec![path.to_path_buf()] };
    dirs.iter().flat_map(|dir| own_procs(&dir.join("cgroup.procs"))).collect()
}

/// The pids of one `cgroup.procs`: read into a buffer on the stack, without the size query
/// and second read `fs::read` makes (a run's cgroup mostly holds one process); a list
/// longer than the buffer is read whole.
fn own_procs(path: &Path) -> Vec<i32> {
    use std::io::Read;
    let mut buffer = [0u8; 1024];
    let Ok(mut file) = open_read(path) else {
        return vec![];
    };
    match file.read(&mut buffer) {
        Ok(n) if n < buffer.len() => crate::procfs::pids(&buffer[..n]),
        Ok(_) => fs::read(path).map(|text| crate::procfs::pids(&text)).unwrap_or_default(),
        Err(_) => vec![],
    }
}

/// The cgroup and every cgroup below it, each after its parent.
fn subtree(path: &Path) -> Vec<PathBuf> {
    let mut all = vec![path.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = all.get(next).cloned() {
        next += 1;
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                all.push(entry.path());
            }
        }
    }
    all
}

/// Sends `signal` to every process in the cgroup and below it, then SIGCONT (a stopped process acts on
/// a signal only once continued). Processes forked meanwhile are caught by `kill` later.
pub fn signal_all(path: &Path, signal: i32) {
    for pid in procs(path) {
        crate::group::signal_process(pid, signal);
        crate::group::signal_process(pid, libc::SIGCONT);
    }
}

/// SIGKILL to everything in the cgroup and below, at once.
pub fn kill(path: &Path) -> std::io::Result<()> {
    write(&path.join("cgroup.kill"), "1")
}

/// Removes the cgroup when nothing is left in it, in one rmdir, which the kernel refuses
/// while a process is in it or a cgroup below it; true when it is gone. The check a run's
/// end needs ("is anything left?") and the removal that follows in one system call.
pub fn remove_empty(path: &Path) -> bool {
    match rmdir(path) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Removes an empty cgroup, and the cgroups below it first (rmdir refuses a cgroup that has
/// children; one that still holds a process stays). A run's cgroup seldom has children, so
/// rmdir is tried first and the tree walked only when the kernel refuses it.
pub fn remove(path: &Path) {
    match rmdir(path) {
        Ok(()) => return,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(_) => {}
    }
    for dir in subtree(path).iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// At start-up: ends what a dead agent left in its tree `base` (recorded in the table),
/// stop signal first, `cgroup.kill` after `timeout`, then removes the tree.
pub fn reclaim(base: &Path, signal_of: impl Fn(&str) -> (i32, Duration)) -> usize {
    let Some(name) = base.file_name().and_then(|n| n.to_str()) else {
        return 0;
    };
    // Only a tree of ours, in a cgroup v2 hierarchy.
    if !name.starts_with("procctl-") || !base.join("cgroup.events").exists() {
        return 0;
    }
    let runs = base.join("runs");
    let mut signalled = 0;
    let mut deadline = Instant::now();
    for entry in fs::read_dir(&runs).into_iter().flatten().flatten() {
        let run = entry.path();
        let process = entry.file_name().to_string_lossy().split('.').next().unwrap_or_default().to_string();
        let pids = procs(&run);
        if pids.is_empty() && !populated(&run) {
            continue;
        }
        let (signal, timeout) = signal_of(&process);
        log!("{} left {} process(es) in {}; stopping them", process, pids.len(), run.display());
        signal_all(&run, signal);
        signalled += pids.len();
        deadline = deadline.max(Instant::now() + timeout);
    }
    let gone = |until: Instant| -> bool {
        while populated(base) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        !populated(base)
    };
    if !gone(deadline) {
        let _ = kill(base);
        if !gone(Instant::now() + Duration::from_secs(2)) {
            log!("processes in {} survived cgroup.kill", base.display());
        }
    }
    let tree = Tree { runs, base: base.to_path_buf(), controllers: vec![] };
    tree.remove_all();
    signalled
}

/// The mount point and root of the first cgroup2 mount in mountinfo.
fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        Some((PathBuf::from(unescape(fields.get(4)?)), unescape(fields.get(3)?)))
    })
}

/// The `0::PATH` line of /proc/self/cgroup.
fn own_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| line.strip_prefix("0::")).map(str::to_string)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_wherever_it_is() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(hybrid), Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".into())));
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(unified), Some((PathBuf::from("/sys/fs/cgroup"), "/".into())));
        let escaped = "30 24 0:26 /sub /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(escaped), Some((PathBuf::from("/mnt/my cgroups"), "/sub".into())));
        assert_eq!(cgroup2_mount("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }

    #[test]
    fn reads_the_own_cgroup_line() {
        let text = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/procagent.service\n";
        assert_eq!(own_cgroup(text).as_deref(), Some("/system.slice/procagent.service"));
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn run_cgroups_are_named_by_instance_and_run() {
        let tree = Tree { base: "/cg/procctl-1".into(), runs: "/cg/procctl-1/runs".into(), controllers: vec![] };
        assert_eq!(tree.run_path(&InstanceId::new("web", 2), 7), Path::new("/cg/procctl-1/runs/web.2.7"));
    }
}
