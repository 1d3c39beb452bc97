//! The spawner thread: the agent's only child creation. It prepares everything, clones, and
//! reports.
//!
//! Clone happens on one thread that lives as long as the agent, because the kernel fires
//! `PR_SET_PDEATHSIG` when the *thread* that forked the child exits, not the process. By
//! concern: `env` is the child's environment, `prepare` turns a request into what the child
//! needs (program found, strings, pipes, cgroup, credentials), `clone` makes the child (clone
//! with CLONE_VM | CLONE_VFORK, or clone3 into its cgroup) and `child` is what the child runs
//! until exec. The unsafe code that matters is in those last two.

mod child;
mod clone;
mod env;
mod prepare;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use nix::sched::CloneFlags;
use nix::sys::signal::SigSet;
use procctl_proto::InstanceId;

use crate::cgroup;
use crate::config::{Account, Limit, Pipe, ProcessSpec};
use crate::fdpass;
use crate::procfs;
use child::{ChildArgs, Messages, exec_error};
use clone::{CHILD_STACK, CLONE3, clone_into_cgroup, clone_vfork};
pub use env::{BaseEnv, base_env};
use env::{child_env, on_top};
use prepare::{Programs, prepare};

pub struct SpawnRequest {
    /// Ties the report to the spawn the supervisor asked for.
    pub seq: u64,
    pub argv: Vec<String>,
    /// The whole environment of the child or, with `shared_env`, the variables over it.
    pub env: Vec<(String, String)>,
    /// The agent's environment with the spec's `env` over it, shared by the process's starts.
    pub shared_env: Option<Arc<[std::ffi::CString]>>,
    pub cwd: PathBuf,
    pub pipe: Pipe,
    /// Capture stdout and stderr (an instance); otherwise they go to /dev/null (a probe).
    pub capture: bool,
    /// The cgroup to create for the run and move the child into, with its limits.
    pub cgroup: Option<(PathBuf, cgroup::Limits)>,
    pub account: Option<Account>,
    pub umask: Option<u32>,
    pub limits: Vec<Limit>,
    /// The listening sockets it gets from fd 3 on, by the key the spawner holds them under.
    pub listen: Vec<u64>,
}

/// What the agent passes on to every run of one instance besides its spec.
pub struct Context<'a> {
    /// The agent's environment, without PROCCTL_* of our own parent.
    pub base: &'a BaseEnv,
    pub socket: &'a Path,
    /// `$NOTIFY_SOCKET`, for instances with `ready = "notify"`.
    pub notify: Option<&'a str>,
}

impl SpawnRequest {
    /// What run `seq` of instance `id` gets: its argv, cwd and pipe from `spec`, and its
    /// environment (see `child_env`): the process's shared strings and its own variables.
    pub fn new(seq: u64, id: &InstanceId, spec: &ProcessSpec, context: &Context, cgroup: Option<PathBuf>) -> Self {
        let shared_env = context.base.layered(spec);
        let env = match shared_env {
            Some(_) => on_top(id, spec, context),
            None => child_env(id, spec, context),
        };
        let limits = limits_of(spec);
        SpawnRequest {
            seq,
            argv: spec.command.clone(),
            env,
            shared_env,
            cwd: spec.cwd.clone(),
            pipe: spec.pipe,
            capture: true,
            cgroup: cgroup.map(|path| (path, limits)),
            account: spec.account.clone(),
            umask: spec.umask,
            limits: spec.limits.clone(),
            listen: vec![],
        }
    }

    /// Hands the instance the listening sockets under `keys` (the spawner's copies of
    /// `spec.listen`) with the sd_listen_fds variables; the message pipe moves after them.
    /// `LISTEN_PID` is the child's own pid, written by the child itself (see `child`).
    pub fn with_listen(mut self, spec: &ProcessSpec, keys: Vec<u64>) -> Self {
        if keys.is_empty() {
            return self;
        }
        let count = keys.len();
        let mut set = |key: &str, value: String| {
            self.env.retain(|(k, _)| k != key);
            self.env.push((key.to_string(), value));
        };
        set("LISTEN_FDS", count.to_string());
        set("LISTEN_FDNAMES", vec![spec.name.as_str(); count].join(":"));
        if spec.pipe == Pipe::Fd {
            set("PROCCTL_PIPE_FD", pipe_fd(count).to_string());
        }
        self.env.retain(|(k, _)| k != "LISTEN_PID");
        self.listen = keys;
        self
    }

    /// An `exec` probe of instance `id`: `argv` in the instance's cwd and environment, in a
    /// process group of its own, its output discarded.
    pub fn probe(seq: u64, id: &InstanceId, spec: &ProcessSpec, argv: Vec<String>, context: &Context) -> Self {
        let env = child_env(id, spec, context);
        SpawnRequest {
            seq,
            argv,
            env,
            shared_env: None,
            cwd: spec.cwd.clone(),
            pipe: Pipe::None,
            capture: false,
            cgroup: None,
            account: spec.account.clone(),
            umask: spec.umask,
            limits: spec.limits.clone(),
            listen: vec![],
        }
    }
}

/// The limits the runs of `spec` get in their cgroups.
pub fn limits_of(spec: &ProcessSpec) -> cgroup::Limits {
    cgroup::Limits { memory_max: spec.memory_max, cpu_max: spec.cpu_max }
}

/// What the spawner thread is asked to do.
enum Job {
    Spawn(Box<SpawnRequest>),
    /// Make a run's cgroup ahead of its spawn (a spare), with these limits: the spawn that
    /// names it only opens it. (It is not kept open: every descriptor of the spawner's table
    /// is copied into each child and closed again at its exec.)
    Spare(PathBuf, cgroup::Limits),
    /// Remove a spare no spawn took.
    DropSpare(PathBuf),
    /// Remove the empty cgroup of a run that ended, after the spawns asked for before: a
    /// removal at the same time as a clone into a cgroup holds the clone up in the kernel.
    Remove(PathBuf),
    /// Keep the listening socket that came over the hand-off socket under this key.
    Listen(u64),
    /// Close the listening socket under this key.
    Forget(u64),
    /// Re-execute the agent from this thread (see `upgrade`).
    Exec(Box<ExecRequest>),
}

/// An upgrade's execve, made by the spawner thread: the thread that forked every child, so
/// that none gets its `PR_SET_PDEATHSIG` when the other threads end at execve.
struct ExecRequest {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    /// The state; the spawner writes it into a memfd after the descriptors' numbers.
    state: Vec<u8>,
    /// How many descriptors come over the hand-off socket after this job.
    count: usize,
    /// Why the exec failed (only a failure ever answers).
    failed: mpsc::Sender<String>,
}

pub enum SpawnReport {
    Spawned {
        seq: u64,
        pid: i32,
        start_time: Option<u64>,
        /// The agent's end of the message pipe.
        pipe: Option<OwnedFd>,
        /// The read end of the child's stdout and stderr, when captured.
        output: Option<OwnedFd>,
        /// Why the child could not run its program, when it could not: it has exited (127),
        /// and its exit comes through the reaper as any other.
        exec_error: Option<String>,
    },
    /// Nothing was started; `error` says why (without the instance: the supervisor adds it).
    Failed { seq: u64, error: String },
}

/// What the spawner thread reports. The agent's ends of the child's pipes travel apart,
/// through the hand-off socket (`handed` says they were sent), because the spawner has a
/// descriptor table of its own; `Spawner::claim` puts the two together as a `SpawnReport`.
pub enum Sent {
    Spawned { seq: u64, pid: i32, start_time: Option<u64>, exec_error: Option<String>, handed: bool },
    Failed { seq: u64, error: String, handed: bool },
}

/// The agent's side of the spawner: where requests go and where the pipes come back.
pub struct Spawner {
    requests: mpsc::Sender<Job>,
    handoff: OwnedFd,
    /// Spawns queued and not yet taken by the spawner thread.
    queued: Arc<AtomicUsize>,
}

impl Spawner {
    /// Queues a spawn; false when the spawner thread is gone.
    pub fn send(&self, request: SpawnRequest) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.requests.send(Job::Spawn(Box::new(request))).is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// Gives the spawner a copy of a listening socket, under `key`, for the spawns after
    /// this. It goes through the hand-off socket, the other way than the pipes: the spawner
    /// has a descriptor table of its own. These messages are few (one per address bound), so
    /// the send never waits on a full queue.
    pub fn share_listener(&self, key: u64, fd: &OwnedFd) -> std::io::Result<()> {
        fdpass::send(&self.handoff, key, [Some(fd.as_raw_fd()), None])?;
        self.requests.send(Job::Listen(key)).map_err(|_| std::io::Error::other("the spawner thread is gone"))
    }

    /// Makes the spawner close its copy of the listening socket under `key`.
    pub fn forget_listener(&self, key: u64) {
        let _ = self.requests.send(Job::Forget(key));
    }

    /// Has the spawner make the cgroup `path` with `limits` once the jobs before are done,
    /// for a spawn to take later (see `Job::Spare`).
    pub fn make_spare(&self, path: PathBuf, limits: cgroup::Limits) {
        let _ = self.requests.send(Job::Spare(path, limits));
    }

    /// Has the spawner remove the spare cgroup `path`, when no spawn took it.
    pub fn drop_spare(&self, path: PathBuf) {
        let _ = self.requests.send(Job::DropSpare(path));
    }

    /// Has the spawner remove the empty cgroup `path` of a run that ended, after the spawns
    /// already asked for; the path back when the spawner thread is gone.
    pub fn remove_cgroup(&self, path: PathBuf) -> Result<(), PathBuf> {
        self.requests.send(Job::Remove(path)).map_err(|e| match e.0 {
            Job::Remove(path) => path,
            _ => unreachable!("the job sent comes back"),
        })
    }

    /// Re-executes the agent as `program args... --handover FD` from the spawner thread,
    /// handing over `fds` (in this order) and `state`. Returns only when that failed, with
    /// why; the agent goes on as before then.
    pub fn exec(&self, program: PathBuf, args: Vec<std::ffi::OsString>, state: Vec<u8>, fds: &[RawFd]) -> String {
        let (failed, why) = mpsc::channel();
        let job = ExecRequest { program, args, state, count: fds.len(), failed };
        if self.requests.send(Job::Exec(Box::new(job))).is_err() {
            return "the spawner thread is gone".into();
        }
        for (i, chunk) in fds.chunks(fdpass::SLOTS).enumerate() {
            let mut slots = [None; fdpass::SLOTS];
            for (slot, fd) in slots.iter_mut().zip(chunk) {
                *slot = Some(*fd);
            }
            if let Err(e) = fdpass::send(&self.handoff, i as u64, slots) {
                // The spawner waits for the rest until its deadline, then gives up.
                return format!("cannot hand the descriptors to the spawner: {e}");
            }
        }
        match why.recv_timeout(EXEC_TIMEOUT + std::time::Duration::from_secs(5)) {
            Ok(why) => why,
            Err(_) => "the spawner did not answer".into(),
        }
    }

    /// The report of a spawn, with the agent's ends of its pipes in the agent's table. The
    /// spawner sends them before its report, so they are there already.
    pub fn claim(&self, sent: Sent) -> SpawnReport {
        match sent {
            Sent::Spawned { seq, pid, start_time, exec_error, handed } => {
                let [pipe, output] = if handed { self.take(seq) } else { Default::default() };
                SpawnReport::Spawned { seq, pid, start_time, pipe, output, exec_error }
            }
            Sent::Failed { seq, error, handed } => {
                if handed {
                    drop(self.take(seq));
                }
                SpawnReport::Failed { seq, error }
            }
        }
    }

    fn take(&self, seq: u64) -> [Option<OwnedFd>; fdpass::SLOTS] {
        match fdpass::receive(&self.handoff) {
            Ok((got, fds)) if got == seq => fds,
            Ok((got, _)) => {
                log!("internal error: the pipes of spawn {got} came where those of spawn {seq} were expected");
                Default::default()
            }
            Err(e) => {
                log!("internal error: the pipes of spawn {seq} did not come over: {e}");
                Default::default()
            }
        }
    }
}

/// How long the spawner waits for each message of an upgrade's descriptors.
const EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The number the message pipe gets in the child without listening sockets.
pub const PIPE_FD: RawFd = 3;

/// The number the message pipe gets in a child with `listening` sockets (at 3 on).
pub fn pipe_fd(listening: usize) -> RawFd {
    PIPE_FD + listening as RawFd
}

/// Starts the spawner thread. `report` is called with the fork lock held, so that a
/// `Spawned` report always reaches the supervisor before the reaper's report of that pid.
///
/// The thread unshares its descriptor table at once: a clone copies the spawner's table into
/// the child (and exec closes the copies again), so with the agent's table that cost grows
/// with every instance and client, and starting n instances took time in n². The copy it
/// begins with holds what the agent had open then (the runtime's waker among them, which
/// `report` writes to); what the spawner opens later is its own, and the agent's ends of the
/// pipes go over by `fdpass`. `drop_copies` are descriptors of the agent's that its copy
/// must not keep (the listening sockets bound before: a socket closed by the agent must
/// close).
///
/// `launch` runs the spawner's loop on the thread that is to be the spawner: the agent
/// passes it to its main thread, which lives as long as the process and is the one thread
/// an upgrade's execve keeps (see `upgrade`), so every child, those of the image before
/// included, has the same parent thread in every image. The loop returns once the
/// `Spawner` is dropped; its thread must then live until the agent exits.
pub fn start(
    fork_lock: Arc<Mutex<()>>,
    fd_limit: libc::rlimit,
    drop_copies: Vec<RawFd>,
    report: impl Fn(Sent) + Send + 'static,
    launch: impl FnOnce(Box<dyn FnOnce() + Send>) -> std::io::Result<()>,
) -> std::io::Result<Spawner> {
    let (tx, rx) = mpsc::channel::<Job>();
    let queued = Arc::new(AtomicUsize::new(0));
    let queued_here = queued.clone();
    let (agent_end, spawner_end) = fdpass::pair()?;
    let (agent_raw, spawner_raw) = (agent_end.as_raw_fd(), spawner_end.as_raw_fd());
    let (unshared_tx, unshared_rx) = mpsc::channel::<bool>();
    launch(Box::new(move || {
        // No signal handler may run in a child that shares this thread's memory: the
        // kernel delivers the agent's signals to its other threads instead.
        let _ = SigSet::all().thread_block();
        let unshared = nix::sched::unshare(CloneFlags::CLONE_FILES);
        let private = match unshared {
            // The agent's end of the pair, in our copy of the table only.
            Ok(()) => {
                let _ = nix::unistd::close(agent_raw);
                for fd in drop_copies {
                    let _ = nix::unistd::close(fd);
                }
                true
            }
            Err(e) => {
                log!("the spawner cannot have a descriptor table of its own ({e}): each start copies the agent's");
                false
            }
        };
        let _ = unshared_tx.send(private);
        let mut stack = vec![0u8; CHILD_STACK];
        // The agent sets its signal handlers before it starts this thread, and none later.
        let handled = handled_signals();
        if std::env::var_os("PROCCTL_NO_CLONE_INTO_CGROUP").is_some_and(|v| v == "1") {
            CLONE3.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let mut programs = Programs::default();
        // /dev/null, opened once (again at the next start should it fail): the stdin of most
        // children and the output of probes.
        let open_null = || File::options().read(true).write(true).open("/dev/null").map(OwnedFd::from);
        let mut null: Result<OwnedFd, String> = Err(String::new());
        // The spawner's copies of the agent's listening sockets, by key.
        let mut listening: HashMap<u64, OwnedFd> = HashMap::new();
        // Spare run cgroups made ahead.
        let mut spares: HashSet<PathBuf> = HashSet::new();
        let pid = std::process::id() as libc::pid_t;
        let (ticks_per_second, _) = procfs::units();
        let mut nice = Nice::new();
        for job in rx {
            let request = match job {
                Job::Spawn(request) => {
                    // Ahead of the children while more spawns wait behind this one (a start
                    // of many); a lone start (a restart) is not held up by anyone's start-up.
                    let behind = queued_here.fetch_sub(1, Ordering::Relaxed) > 1;
                    nice.ahead(behind);
                    *request
                }
                Job::Listen(key) => {
                    match fdpass::receive(&spawner_end) {
                        Ok((got, [Some(fd), _])) if got == key => {
                            listening.insert(key, fd);
                        }
                        Ok((got, _)) => log!("internal error: listening socket {got} came where {key} was expected"),
                        Err(e) => log!("internal error: listening socket {key} did not come over: {e}"),
                    }
                    continue;
                }
                Job::Forget(key) => {
                    listening.remove(&key);
                    continue;
                }
                Job::Spare(path, limits) => {
                    match cgroup::create(&path, limits) {
                        Ok(_) => {
                            spares.insert(path);
                        }
                        // The spawn that names it makes it then, and says what failed.
                        Err(_) => {
                            cgroup::remove_empty(&path);
                        }
                    }
                    continue;
                }
                Job::DropSpare(path) => {
                    if spares.remove(&path) {
                        cgroup::remove_empty(&path);
                    }
                    continue;
                }
                Job::Remove(path) => {
                    cgroup::remove(&path);
                    continue;
                }
                Job::Exec(request) => {
                    let ExecRequest { failed, .. } = &*request;
                    let failed = failed.clone();
                    // The new image starts with this thread's nice value: its own.
                    nice.ahead(false);
                    let _ = failed.send(exec(*request, &spawner_end));
                    continue;
                }
            };
            if null.is_err() {
                null = open_null().map_err(|e| e.to_string());
            }
            let context = Shared {
                fork_lock: &fork_lock,
                fd_limit,
                handled: &handled,
                handoff: &spawner_end,
                null: null.as_ref(),
                listening: &listening,
                pid,
                ticks_per_second,
                nice: nice.raised_from(),
            };
            let spare = request.cgroup.as_ref().is_some_and(|(path, _)| spares.remove(path));
            spawn_one(request, spare, &context, &report, &mut stack, &mut programs);
        }
        // The agent is exiting: the caller keeps this thread until it does.
    }))?;
    if unshared_rx.recv().unwrap_or(false) {
        // The spawner's end now lives in the spawner's table; this copy is not needed (the
        // number is still the pair's end in this table: nothing closed it here).
        let _ = nix::unistd::close(spawner_raw);
    }
    Ok(Spawner { requests: tx, handoff: agent_end, queued })
}

/// Takes the descriptors of an upgrade into this thread's table, writes the memfd, clears
/// close-on-exec on exactly those, and execve's. Returns why it could not.
fn exec(request: ExecRequest, handoff: &OwnedFd) -> String {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::unix::ffi::OsStrExt;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(request.count);
    for i in 0..request.count.div_ceil(fdpass::SLOTS) {
        let mut poll = [nix::poll::PollFd::new(handoff.as_fd(), nix::poll::PollFlags::POLLIN)];
        let timeout = nix::poll::PollTimeout::try_from(EXEC_TIMEOUT).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut poll, timeout) {
            Ok(1..) => {}
            _ => return "the descriptors did not come over to the spawner in time".into(),
        }
        match fdpass::receive(handoff) {
            Ok((got, received)) if got == i as u64 => fds.extend(received.into_iter().flatten()),
            Ok((got, _)) => return format!("internal error: descriptors {got} came where {i} were expected"),
            Err(e) => return format!("the descriptors did not come over: {e}"),
        }
    }
    if fds.len() != request.count {
        return format!("{} of {} descriptors came over", fds.len(), request.count);
    }
    let numbers: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let memfd = match nix::sys::memfd::memfd_create(c"procagent-handover", nix::sys::memfd::MFdFlags::empty()) {
        Ok(memfd) => File::from(memfd),
        Err(e) => return format!("cannot make the handover file: {e}"),
    };
    if let Err(e) = (&memfd).write_all(&crate::upgrade::memfd_text(&numbers, &request.state)) {
        return format!("cannot write the handover: {e}");
    }
    let mut argv: Vec<CString> = vec![];
    let memfd_number = memfd.as_raw_fd().to_string();
    let words = std::iter::once(request.program.as_os_str())
        .chain(request.args.iter().map(|a| a.as_os_str()))
        .chain([std::ffi::OsStr::new(crate::upgrade::HANDOVER_FLAG), std::ffi::OsStr::new(&memfd_number)]);
    for word in words {
        match CString::new(word.as_bytes()) {
            Ok(word) => argv.push(word),
            Err(_) => return format!("an argument holds a NUL byte: {}", word.to_string_lossy()),
        }
    }
    let Ok(program) = CString::new(request.program.as_os_str().as_bytes()) else {
        return "the binary's path holds a NUL byte".into();
    };
    // Close-on-exec comes off exactly the handed-over descriptors and the handover itself;
    // every other descriptor of this table closes at execve.
    for fd in fds.iter().map(|fd| fd.as_fd()).chain([memfd.as_fd()]) {
        if let Err(e) = fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())) {
            return format!("cannot keep a descriptor open across exec: {e}");
        }
    }
    // Returns only on failure; `fds` and `memfd` close then, as the copies they are.
    let Err(e) = nix::unistd::execv(&program, &argv);
    format!("cannot execute {}: {e}", request.program.display())
}

/// What every spawn of the thread shares.
struct Shared<'a> {
    fork_lock: &'a Mutex<()>,
    fd_limit: libc::rlimit,
    handled: &'a [i32],
    /// The spawner's end of the hand-off socket.
    handoff: &'a OwnedFd,
    /// /dev/null, read and write, or why it could not be opened.
    null: Result<&'a OwnedFd, &'a String>,
    /// The listening sockets, by key.
    listening: &'a HashMap<u64, OwnedFd>,
    /// The agent's pid (an upgrade's exec keeps it), which each child checks its parent against.
    pid: libc::pid_t,
    /// Clock ticks per second, the unit of a start time.
    ticks_per_second: u64,
    /// The agent's own nice value, which a child takes back before its exec, when this
    /// thread runs at a raised priority.
    nice: Option<libc::c_int>,
}

/// How much ahead of its children the spawner thread runs, in nice steps, in a start of
/// many. That is a race between the spawner and the programs it already started, whose
/// start-up (the loader, libc) takes several times the CPU of a spawn: at the same priority
/// the spawner and each child before its exec waited for a CPU for most of a start of a
/// thousand. Only a process that may raise a priority (root, CAP_SYS_NICE, RLIMIT_NICE)
/// gets it; the others spawn as before.
const SPAWNER_AHEAD: libc::c_int = 10;

/// The spawner thread's nice value: raised by `SPAWNER_AHEAD` over the agent's own while
/// spawns are queued behind the current one, when the system allows it, and back when
/// the queue is empty. Linux keeps a nice value per thread, so the agent's other threads
/// run as before, and a child made meanwhile takes the agent's own value back as the last
/// thing before its exec. A lone start (a restart) is made at the agent's own priority:
/// with the raise and the child's step back, SIGKILL to replacement measured 20-50 µs
/// slower, and nobody's start-up competes with it.
struct Nice {
    tid: libc::id_t,
    /// The agent's own value, read when the thread last went ahead.
    own: libc::c_int,
    /// The raise was refused once: not tried again.
    refused: bool,
    raised: bool,
}

impl Nice {
    fn new() -> Nice {
        // SAFETY: gettid has no arguments.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        Nice { tid, own: 0, refused: false, raised: false }
    }

    /// This thread's nice value now (`renice -p` of the agent's pid changes this thread's).
    fn current(&self) -> Option<libc::c_int> {
        // SAFETY: only this thread's errno and priority are read (getpriority can return
        // -1 as a value, so errno tells an error).
        unsafe {
            *libc::__errno_location() = 0;
            let value = libc::getpriority(libc::PRIO_PROCESS, self.tid);
            (value != -1 || *libc::__errno_location() == 0).then_some(value)
        }
    }

    /// Ahead of the children (`true`) or at the agent's own value.
    fn ahead(&mut self, ahead: bool) {
        if ahead == self.raised || (ahead && self.refused) {
            return;
        }
        let value = if ahead {
            // Whatever it is by now: a renice of the agent since the last start of many.
            match self.current() {
                Some(own) if own > -20 => {
                    self.own = own;
                    (own - SPAWNER_AHEAD).max(-20)
                }
                // Unknown, or the highest there is already.
                _ => {
                    self.refused = true;
                    return;
                }
            }
        } else {
            self.own
        };
        // SAFETY: setpriority on this thread only.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, self.tid, value) } == 0 {
            self.raised = ahead;
        } else if ahead {
            self.refused = true;
        }
    }

    /// The value a child takes back before its exec, while this thread's is raised.
    fn raised_from(&self) -> Option<libc::c_int> {
        self.raised.then_some(self.own)
    }
}

/// The signals this process does not leave at their default (handled or ignored).
fn handled_signals() -> Vec<i32> {
    (1..=64)
        .filter(|&sig| {
            // nix has no read-only sigaction. SAFETY: with no new action it only reads the
            // current one into `old`.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            let read = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0;
            read && old.sa_sigaction != libc::SIG_DFL
        })
        .collect()
}

/// Makes the child of `request`, in `spare` when its cgroup was made ahead. When nothing
/// was started, the run's cgroup (made here or ahead) is removed again: no spawn will take it.
fn spawn_one(
    request: SpawnRequest,
    spare: bool,
    spawner: &Shared,
    report: &impl Fn(Sent),
    stack: &mut [u8],
    programs: &mut Programs,
) {
    let cgroup = request.cgroup.as_ref().map(|(path, _)| path.clone());
    let report = |sent: Sent| {
        if let (Sent::Failed { .. }, Some(path)) = (&sent, &cgroup) {
            cgroup::remove_empty(path);
        }
        report(sent)
    };
    let seq = request.seq;
    let messages = Messages {
        cwd: request.cwd.display().to_string(),
        user: request.account.as_ref().map(|a| a.user.clone()),
        limits: request.limits.iter().map(|l| l.name).collect(),
        program: String::new(),
    };
    let null = match spawner.null {
        Ok(null) => null,
        Err(e) => return report(Sent::Failed { seq, error: format!("cannot open /dev/null: {e}"), handed: false }),
    };
    let mut prepared = match prepare(request, spare, programs, spawner.listening) {
        Ok(prepared) => prepared,
        Err(error) => return report(Sent::Failed { seq, error, handed: false }),
    };
    let messages = Messages { program: prepared.program.to_string_lossy().into_owned(), ..messages };
    let failure = AtomicU64::new(0);
    // The agent's ends go over before the clone (without the fork lock, as the send may wait
    // for the supervisor to take earlier ones), and this table's copies are closed at once.
    let parent_ends = [prepared.pipe_parent.take(), prepared.output_read.take()];
    let handed = parent_ends.iter().any(Option::is_some);
    if handed
        && let Err(e) =
            fdpass::send(spawner.handoff, seq, parent_ends.each_ref().map(|fd| fd.as_ref().map(|fd| fd.as_raw_fd())))
    {
        return report(Sent::Failed { seq, error: format!("cannot hand its pipes to the agent: {e}"), handed: false });
    }
    drop(parent_ends);
    let mut args = ChildArgs {
        prepared: &prepared,
        parent: spawner.pid,
        fd_limit: spawner.fd_limit,
        failure: &failure,
        null: null.as_raw_fd(),
        handled: spawner.handled,
        nice: spawner.nice,
        join_cgroup: false,
    };
    let guard = spawner.fork_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = procfs::boot_ticks(spawner.ticks_per_second);
    let made = match &prepared.cgroup {
        Some(dir) => clone_into_cgroup(dir, stack, &args),
        None => None,
    };
    let pid = match made {
        Some(result) => result,
        None => {
            args.join_cgroup = prepared.cgroup.is_some();
            clone_vfork(stack, &args)
        }
    };
    let pid = match pid {
        Ok(pid) => pid,
        Err(error) => {
            drop(guard);
            let error = format!("cannot start a process: {error}");
            return report(Sent::Failed { seq, error, handed });
        }
    };
    let after = procfs::boot_ticks(spawner.ticks_per_second);
    prepared.pipe_child = None;
    prepared.output_write = None;
    // From the boot clock when the clone fell within one tick (nearly always: the clone
    // takes a fraction of a millisecond), which spares an open, two reads and a close of
    // /proc per start; the child cannot be gone yet, since only the agent reaps it.
    let start_time = procfs::start_between(before, after).or_else(|| procfs::stat(pid).map(|s| s.start_time));
    let exec_error = exec_error(failure.load(Ordering::Relaxed), &messages);
    report(Sent::Spawned { seq, pid, start_time, exec_error, handed });
    drop(guard);
    // `prepared` is dropped here, closing the agent's copies of the child's ends.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spawner_runs_ahead_only_where_it_may_and_comes_back_to_its_own() {
        // A thread of its own, whose nice value nothing else shares.
        std::thread::spawn(|| {
            let mut nice = Nice::new();
            let own = nice.current().expect("this thread's nice value");
            let may = own > -20 && unsafe { libc::geteuid() } == 0;
            nice.ahead(true);
            assert_eq!(nice.raised, may);
            assert_eq!(nice.current(), Some(if may { (own - SPAWNER_AHEAD).max(-20) } else { own }));
            assert_eq!(nice.raised_from(), may.then_some(own));
            nice.ahead(true); // already there: nothing asked
            nice.ahead(false);
            assert_eq!(nice.current(), Some(own));
            assert_eq!(nice.raised_from(), None);
            assert!(!nice.raised);
        })
        .join()
        .unwrap();
    }
}
