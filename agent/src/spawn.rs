//! The spawner thread: the agent's only `fork`. It prepares everything, forks, and reports.
//!
//! Fork happens on one thread that lives as long as the agent, because the kernel fires
//! `PR_SET_PDEATHSIG` when the *thread* that forked the child exits, not the process.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procctl_proto::InstanceId;

use crate::cgroup;
use crate::config::{Account, Limit, Pipe, ProcessSpec};
use crate::fdpass;
use crate::procfs;

pub struct SpawnRequest {
    /// Ties the report to the spawn the supervisor asked for.
    pub seq: u64,
    pub argv: Vec<String>,
    /// The whole environment of the child.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub pipe: Pipe,
    /// Capture stdout and stderr (an instance); otherwise they go to /dev/null (a probe).
    pub capture: bool,
    /// The cgroup to create for the run and move the child into, with its limits.
    pub cgroup: Option<(PathBuf, cgroup::Limits)>,
    pub account: Option<Account>,
    pub umask: Option<u32>,
    pub limits: Vec<Limit>,
}

/// What the agent passes on to every run of one instance besides its spec.
pub struct Context<'a> {
    /// The agent's environment, without PROCCTL_* of our own parent.
    pub base: &'a [(String, String)],
    pub socket: &'a Path,
    /// `$NOTIFY_SOCKET`, for instances with `ready = "notify"`.
    pub notify: Option<&'a str>,
}

impl SpawnRequest {
    /// What run `seq` of instance `id` gets: its argv, cwd and pipe from `spec`, and its
    /// environment (see `child_env`).
    pub fn new(seq: u64, id: &InstanceId, spec: &ProcessSpec, context: &Context, cgroup: Option<PathBuf>) -> Self {
        let env = child_env(id, spec, context);
        let limits = cgroup::Limits { memory_max: spec.memory_max, cpu_max: spec.cpu_max };
        SpawnRequest {
            seq,
            argv: spec.command.clone(),
            env,
            cwd: spec.cwd.clone(),
            pipe: spec.pipe,
            capture: true,
            cgroup: cgroup.map(|path| (path, limits)),
            account: spec.account.clone(),
            umask: spec.umask,
            limits: spec.limits.clone(),
        }
    }

    /// An `exec` probe of instance `id`: `argv` in the instance's cwd and environment, in a
    /// process group of its own, its output discarded.
    pub fn probe(seq: u64, id: &InstanceId, spec: &ProcessSpec, argv: Vec<String>, context: &Context) -> Self {
        let env = child_env(id, spec, context);
        SpawnRequest {
            seq,
            argv,
            env,
            cwd: spec.cwd.clone(),
            pipe: Pipe::None,
            capture: false,
            cgroup: None,
            account: spec.account.clone(),
            umask: spec.umask,
            limits: spec.limits.clone(),
        }
    }
}

/// The agent's environment with the spec's `env` over it and, on top, the variables of
/// SPEC.md: PROCCTL_*, PORT with `port`, NOTIFY_SOCKET with `ready = "notify"`,
/// WATCHDOG_USEC with `watchdog`, and HOME, USER, LOGNAME, SHELL with `user`.
fn child_env(id: &InstanceId, spec: &ProcessSpec, context: &Context) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        context.base.iter().filter(|(k, _)| !spec.env.contains_key(k)).cloned().collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut set = |key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    };
    set("PROCCTL_NAME", id.name.clone());
    set("PROCCTL_INSTANCE", id.index.to_string());
    set("PROCCTL_SOCKET", context.socket.display().to_string());
    set(crate::reclaim::TOKEN_VAR, crate::reclaim::token().to_owned());
    if spec.pipe == Pipe::Fd {
        set("PROCCTL_PIPE_FD", PIPE_FD.to_string());
    }
    if let Some(arg) = &spec.arg {
        set("PROCCTL_ARG", arg.clone());
    }
    if let Some(port) = spec.port_of(id.index) {
        set("PORT", port.to_string());
    }
    if let (crate::config::Ready::Notify, Some(notify)) = (&spec.ready, context.notify) {
        set("NOTIFY_SOCKET", notify.to_string());
        if let Some(watchdog) = spec.watchdog {
            set("WATCHDOG_USEC", watchdog.as_micros().to_string());
        }
    }
    if let Some(account) = &spec.account {
        set("HOME", account.home.display().to_string());
        set("USER", account.user.clone());
        set("LOGNAME", account.user.clone());
        set("SHELL", account.shell.display().to_string());
    }
    env
}

/// The agent's own environment, as children inherit it: without the PROCCTL_* variables an
/// agent that is itself an instance of another agent would pass on, nor what its own
/// service manager gave it (notify socket, watchdog, listening sockets).
pub fn base_env() -> Vec<(String, String)> {
    const MANAGER: [&str; 6] =
        ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];
    std::env::vars().filter(|(k, _)| !k.starts_with("PROCCTL_") && !MANAGER.contains(&k.as_str())).collect()
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
    requests: mpsc::Sender<SpawnRequest>,
    handoff: OwnedFd,
}

impl Spawner {
    /// Queues a spawn; false when the spawner thread is gone.
    pub fn send(&self, request: SpawnRequest) -> bool {
        self.requests.send(request).is_ok()
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

/// The number the message pipe gets in the child.
pub const PIPE_FD: RawFd = 3;

/// Starts the spawner thread. `report` is called with the fork lock held, so that a
/// `Spawned` report always reaches the supervisor before the reaper's report of that pid.
///
/// The thread unshares its descriptor table at once: a clone copies the spawner's table into
/// the child (and exec closes the copies again), so with the agent's table that cost grows
/// with every instance and client, and starting n instances took time in n². The copy it
/// begins with holds what the agent had open then (the runtime's waker among them, which
/// `report` writes to); what the spawner opens later is its own, and the agent's ends of the
/// pipes go over by `fdpass`.
pub fn start(
    fork_lock: Arc<Mutex<()>>,
    fd_limit: libc::rlimit,
    report: impl Fn(Sent) + Send + 'static,
) -> std::io::Result<Spawner> {
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    let (agent_end, spawner_end) = fdpass::pair()?;
    let (agent_raw, spawner_raw) = (agent_end.as_raw_fd(), spawner_end.as_raw_fd());
    let (unshared_tx, unshared_rx) = mpsc::channel::<bool>();
    std::thread::Builder::new().name("spawner".into()).spawn(move || {
        // No signal handler may run in a child that shares this thread's memory: the
        // kernel delivers the agent's signals to its other threads instead.
        // SAFETY: a full set we own, for this thread's mask.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        }
        // SAFETY: unshare of this thread's descriptor table; close of the agent's end of the
        // pair in our copy only.
        let private = unsafe { libc::unshare(libc::CLONE_FILES) } == 0;
        if private {
            unsafe { libc::close(agent_raw) };
        } else {
            log!(
                "the spawner cannot have a descriptor table of its own ({}): each start copies the agent's",
                std::io::Error::last_os_error()
            );
        }
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
        for request in rx {
            if null.is_err() {
                null = open_null().map_err(|e| e.to_string());
            }
            let context = Shared {
                fork_lock: &fork_lock,
                fd_limit,
                handled: &handled,
                handoff: &spawner_end,
                null: null.as_ref(),
            };
            spawn_one(request, &context, &report, &mut stack, &mut programs);
        }
        // The agent is exiting; children must not lose their parent thread before it does.
        std::thread::park();
    })?;
    if unshared_rx.recv().unwrap_or(false) {
        // The spawner's end now lives in the spawner's table; this copy is not needed.
        // SAFETY: the number is still the pair's end in this table: nothing closed it here.
        unsafe { libc::close(spawner_raw) };
    }
    Ok(Spawner { requests: tx, handoff: agent_end })
}

/// The child's stack between clone and exec: it runs one small function.
const CHILD_STACK: usize = 64 * 1024;

/// Everything the child needs, allocated before the clone.
struct Prepared {
    program: CString,
    /// Owns the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns the strings `envp_ptrs` points into.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    /// Where stdin comes from: the message pipe (`pipe = "stdin"`), else /dev/null.
    stdin: Option<OwnedFd>,
    /// Where stdout and stderr go: the output capture, else /dev/null.
    output_write: Option<OwnedFd>,
    output_read: Option<OwnedFd>,
    pipe_child: Option<OwnedFd>,
    pipe_parent: Option<OwnedFd>,
    /// The run's cgroup directory, which the child is made in or moves itself into.
    cgroup: Option<OwnedFd>,
    /// (uid, gid, supplementary groups) to switch to.
    credentials: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    umask: Option<libc::mode_t>,
    limits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
}

/// What the child function gets through clone's argument.
struct ChildArgs<'a> {
    prepared: &'a Prepared,
    parent: libc::pid_t,
    fd_limit: libc::rlimit,
    /// Where a child that cannot exec writes why (`report`), in the memory it shares with
    /// this thread until it execs or exits.
    failure: &'a AtomicU64,
    /// /dev/null, for the stdin and output of children that have none of their own.
    null: RawFd,
    /// Signals whose disposition the child must reset.
    handled: &'a [i32],
    /// The child moves itself into its cgroup (the clone could not make it there).
    join_cgroup: bool,
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
}

/// The signals this process does not leave at their default (handled or ignored).
fn handled_signals() -> Vec<i32> {
    (1..=64)
        .filter(|&sig| {
            // SAFETY: sigaction with no new action only reads the current one into `old`.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            let read = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0;
            read && old.sa_sigaction != libc::SIG_DFL
        })
        .collect()
}

/// Programs found in PATH, for a second: a start loop of a thousand instances looks each
/// up once, and a program installed meanwhile is found a second later.
#[derive(Default)]
struct Programs {
    found: HashMap<(String, Option<String>, PathBuf), (PathBuf, Instant)>,
}

impl Programs {
    const FRESH: Duration = Duration::from_secs(1);

    fn find(&mut self, program: &str, path_var: Option<&str>, cwd: &Path) -> Result<PathBuf, String> {
        if program.contains('/') {
            return find_program(program, path_var, cwd);
        }
        let key = (program.to_string(), path_var.map(str::to_string), cwd.to_path_buf());
        if let Some((path, _)) = self.found.get(&key).filter(|(_, at)| at.elapsed() < Self::FRESH) {
            return Ok(path.clone());
        }
        let path = find_program(program, path_var, cwd)?;
        self.found.retain(|_, (_, at)| at.elapsed() < Self::FRESH);
        self.found.insert(key, (path.clone(), Instant::now()));
        Ok(path)
    }
}

fn spawn_one(
    request: SpawnRequest,
    spawner: &Shared,
    report: &impl Fn(Sent),
    stack: &mut [u8],
    programs: &mut Programs,
) {
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
    let mut prepared = match prepare(request, programs) {
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
        parent: std::process::id() as libc::pid_t,
        fd_limit: spawner.fd_limit,
        failure: &failure,
        null: null.as_raw_fd(),
        handled: spawner.handled,
        join_cgroup: false,
    };
    let guard = spawner.fork_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
    prepared.pipe_child = None;
    prepared.output_write = None;
    let start_time = procfs::stat(pid).map(|s| s.start_time);
    let exec_error = exec_error(failure.load(Ordering::Relaxed), &messages);
    report(Sent::Spawned { seq, pid, start_time, exec_error, handed });
    drop(guard);
    // `prepared` is dropped here, closing the agent's copies of the child's ends.
}

/// CLONE_VM | CLONE_VFORK, as posix_spawn does: no copy of the agent's page tables, and this
/// thread waits until the child has exec'd or exited, so the shared memory and stack are the
/// child's alone meanwhile, and the exec's outcome is known on return.
fn clone_vfork(stack: &mut [u8], args: &ChildArgs) -> std::io::Result<i32> {
    // The stack grows down from its end, which must be 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs only raw system calls on memory prepared before (see `child`)
    // and then execs or exits; `args` and `stack` outlive it since this thread is suspended.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (args as *const ChildArgs).cast_mut().cast(),
        )
    };
    if pid < 0 { Err(std::io::Error::last_os_error()) } else { Ok(pid) }
}

/// Whether clone3 with CLONE_INTO_CGROUP may be tried: cleared the first time the kernel (or
/// a seccomp filter, as container runtimes have) says it does not know it, and at start by
/// `PROCCTL_NO_CLONE_INTO_CGROUP=1` (the children then move themselves, as on older kernels).
static CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// As `clone_vfork`, with the child made directly in the cgroup `dir` (clone3 with
/// CLONE_INTO_CGROUP, Linux 5.7). Moving a process into a cgroup afterwards waits for an RCU
/// grace period in the kernel (about 7 ms here), which would be most of the time of a
/// restart; a child made in its cgroup costs nothing more. `None` when clone3 cannot be
/// used here: the child then moves itself.
fn clone_into_cgroup(dir: &OwnedFd, stack: &mut [u8], args: &ChildArgs) -> Option<std::io::Result<i32>> {
    use std::sync::atomic::Ordering;
    if !cfg!(target_arch = "x86_64") || !CLONE3.load(Ordering::Relaxed) {
        return None;
    }
    // clone3 takes the lowest address of the stack and its size, and starts the child at
    // their end: both 16-byte aligned.
    let base = (stack.as_mut_ptr() as usize).next_multiple_of(16);
    let size = (stack.as_mut_ptr() as usize + stack.len() - base) & !15;
    let mut clone = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: base as u64,
        stack_size: size as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: as in `clone_vfork`: the child runs `child_entry` on `stack`, with `args`,
    // while this thread is suspended.
    let ret = unsafe { clone3(&mut clone, child_entry, (args as *const ChildArgs).cast_mut().cast()) };
    if ret >= 0 {
        return Some(Ok(ret as i32));
    }
    let error = std::io::Error::from_raw_os_error(-ret as i32);
    match error.raw_os_error() {
        Some(libc::ENOSYS) => {
            CLONE3.store(false, Ordering::Relaxed);
            None
        }
        // An older seccomp profile refuses clone3 this way; a cgroup we may not use fails
        // the same when the child moves itself, and says so.
        Some(libc::EPERM) => None,
        _ => Some(Err(error)),
    }
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3 with a child that calls `entry(arg)` on the stack of `args` and exits with what it
/// returns. No libc wrapper exists: after the system call the child runs on its new stack,
/// so it must not return through the caller's frames, and calls `entry` from here.
/// Returns the child's pid, or a negated errno.
///
/// # Safety
/// `args` names a valid stack that nothing else uses while the child runs (CLONE_VFORK), and
/// `entry` only makes system calls and ends with exec or exit.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: &mut CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: see the function's contract. The parent returns from `syscall` with the pid
    // or an error in rax; the child with 0, on its own stack (16-byte aligned, so `call`
    // leaves it as a function expects), never to leave this block.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(_: &mut CloneArgs, _: extern "C" fn(*mut libc::c_void) -> libc::c_int, _: *mut libc::c_void) -> i64 {
    -(libc::ENOSYS as i64)
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of `spawn_one`, alive while its thread is suspended.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: we are the child of clone; see `child`.
    unsafe { child(args) }
}

/// What the messages about a failed start name.
struct Messages {
    program: String,
    cwd: String,
    user: Option<String>,
    limits: Vec<&'static str>,
}

/// Where between clone and exec a child failed, as it writes it before errno.
mod step {
    pub const FDS: u32 = 1;
    pub const CHDIR: u32 = 3;
    pub const EXEC: u32 = 4;
    pub const CGROUP: u32 = 5;
    pub const USER: u32 = 6;
    /// Plus the index of the limit.
    pub const LIMIT: u32 = 100;
}

/// Why the child could not exec, from what it left in `ChildArgs::failure` (0: nothing). By
/// the time clone(CLONE_VFORK) returns the child has either passed exec's point of no return
/// or written its report and exited, so nothing written means it runs its program. Shared
/// memory, as posix_spawn uses, instead of a pipe: three system calls fewer per start.
fn exec_error(failure: u64, messages: &Messages) -> Option<String> {
    if failure == 0 {
        return None;
    }
    let step = (failure >> 32) as u32;
    let error = std::io::Error::from_raw_os_error(failure as u32 as i32);
    Some(match step {
        step::EXEC => format!("cannot run `{}`: {error}", messages.program),
        step::CHDIR => format!("cannot enter the working directory {}: {error}", messages.cwd),
        step::CGROUP => format!("cannot move into its cgroup: {error}"),
        step::USER => format!("cannot switch to user {}: {error}", messages.user.as_deref().unwrap_or("?")),
        n if n >= step::LIMIT => {
            let name = messages.limits.get((n - step::LIMIT) as usize).copied().unwrap_or("?");
            format!("cannot set the limit {name}: {error}")
        }
        _ => format!("cannot set up its file descriptors: {error}"),
    })
}

fn prepare(request: SpawnRequest, programs: &mut Programs) -> Result<Prepared, String> {
    let path_var = request.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    let program = programs.find(&request.argv[0], path_var, &request.cwd)?;
    let cstring = |s: &[u8]| CString::new(s).map_err(|_| "an argument contains a NUL byte".to_string());
    let argv = request.argv.iter().map(|a| cstring(a.as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let envp =
        request.env.iter().map(|(k, v)| cstring(format!("{k}={v}").as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let cwd = cstring(request.cwd.as_os_str().as_bytes())?;
    if !request.cwd.is_dir() {
        return Err(format!("working directory {} does not exist", request.cwd.display()));
    }
    let null_ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect();
    let argv_ptrs = null_ptrs(&argv);
    let envp_ptrs = null_ptrs(&envp);
    let (output_read, output_write) = if request.capture {
        let (read, write) = cloexec_pipe().map_err(|e| format!("cannot make the output pipe: {e}"))?;
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    let (pipe_parent, pipe_child) = match request.pipe {
        Pipe::None => (None, None),
        Pipe::Fd | Pipe::Stdin => {
            let (parent, child) = UnixStream::pair().map_err(|e| format!("cannot make the message pipe: {e}"))?;
            (Some(OwnedFd::from(parent)), Some(OwnedFd::from(child)))
        }
    };
    let stdin = match (request.pipe, &pipe_child) {
        (Pipe::Stdin, Some(child)) => Some(child.try_clone().map_err(|e| e.to_string())?),
        _ => None,
    };
    let pipe_child = if request.pipe == Pipe::Fd { pipe_child } else { None };
    let cgroup = match &request.cgroup {
        Some((path, limits)) => Some(
            cgroup::create(path, *limits).map_err(|e| format!("cannot create its cgroup {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let credentials = request.account.as_ref().map(|a| (a.uid, a.gid, a.groups.clone()));
    let limits =
        request.limits.iter().map(|l| (l.resource, libc::rlimit { rlim_cur: l.value, rlim_max: l.value })).collect();
    Ok(Prepared {
        program: cstring(program.as_os_str().as_bytes())?,
        _argv: argv,
        argv_ptrs,
        _envp: envp,
        envp_ptrs,
        cwd,
        stdin,
        output_write,
        output_read,
        pipe_child,
        pipe_parent,
        cgroup,
        credentials,
        umask: request.umask.map(|mask| mask as libc::mode_t),
        limits,
    })
}

/// Resolves the program as execvp would, but before fork: a name with a `/` is a path
/// (relative to the child's working directory), anything else is looked up in PATH.
fn find_program(program: &str, path_var: Option<&str>, cwd: &Path) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = cwd.join(program);
        return if path.is_file() { Ok(path) } else { Err(format!("program {} not found", path.display())) };
    }
    let dirs = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    std::env::split_paths(OsStr::new(dirs))
        .map(|dir| cwd.join(dir).join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| format!("program `{program}` not found in PATH"))
}

fn is_executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    path.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// A pipe, both ends close-on-exec: (read, write).
fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two fds to us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child side of the clone: it shares the agent's memory until it execs, so it only
/// makes system calls on memory prepared before (no allocation, no lock), with signals
/// blocked until their dispositions are reset. The order matters: what needs root (the
/// cgroup move, raising limits) comes before the switch of user, and PDEATHSIG after it,
/// since the kernel clears PDEATHSIG when credentials change. The switch is made with raw
/// system calls: glibc's setuid would try to change the credentials of every thread it
/// knows, and the ones it knows here are the agent's.
unsafe fn child(args: &ChildArgs) -> ! {
    let (p, parent, fd_limit, failure) = (args.prepared, args.parent, args.fd_limit, args.failure);
    // SAFETY: each call below is a system call on memory prepared before the clone.
    unsafe {
        // Its own process group, so a stop or a signal reaches everything the instance starts.
        libc::setpgid(0, 0);
        // Die with the agent. The kernel sends this when the forking thread exits, and the
        // spawner thread lives as long as the agent; the getppid check closes the window
        // in which the agent died before the prctl. Set again after a change of user,
        // which clears it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        // Into the run's cgroup before anything can fork, when the clone did not make it
        // there: writing 0 to `cgroup.procs` moves the writer.
        if let (Some(dir), true) = (&p.cgroup, args.join_cgroup) {
            let procs = libc::openat(dir.as_raw_fd(), c"cgroup.procs".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if procs < 0 || libc::write(procs, c"0".as_ptr().cast(), 1) != 1 {
                fail(failure, step::CGROUP);
            }
            libc::close(procs);
        }
        // The fd limit the agent itself was given, not the one it raised for itself.
        libc::setrlimit(libc::RLIMIT_NOFILE, &fd_limit);
        for (i, (resource, limit)) in p.limits.iter().enumerate() {
            if libc::setrlimit(*resource, limit) != 0 {
                fail(failure, step::LIMIT + i as u32);
            }
        }
        if let Some(mask) = p.umask {
            libc::umask(mask);
        }
        if let Some((uid, gid, groups)) = &p.credentials
            && (libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, *gid) != 0
                || libc::syscall(libc::SYS_setuid, *uid) != 0)
        {
            fail(failure, step::USER);
        }
        if p.credentials.is_some() {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        // Handlers reset at exec, but ignored signals and the mask would be inherited:
        // the Rust runtime ignores SIGPIPE. Reset before the mask is cleared, so no handler
        // of the agent's ever runs here.
        for &sig in args.handled {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        // Every fd the agent holds is close-on-exec; dup2 clears that flag on the targets.
        let stdin = p.stdin.as_ref().map_or(args.null, |fd| fd.as_raw_fd());
        let out = p.output_write.as_ref().map_or(args.null, |fd| fd.as_raw_fd());
        if libc::dup2(stdin, 0) < 0 || libc::dup2(out, 1) < 0 || libc::dup2(out, 2) < 0 {
            fail(failure, step::FDS);
        }
        if let Some(pipe) = &p.pipe_child {
            let fd = pipe.as_raw_fd();
            let ok =
                if fd == PIPE_FD { libc::fcntl(fd, libc::F_SETFD, 0) == 0 } else { libc::dup2(fd, PIPE_FD) == PIPE_FD };
            if !ok {
                fail(failure, step::FDS);
            }
        }
        // As the instance's user, so a directory it may not enter is its error.
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(failure, step::CHDIR);
        }
        libc::execve(p.program.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        fail(failure, step::EXEC)
    }
}

/// Reports the step and errno to the spawner thread (steps start at 1, so the report is
/// never 0) and exits the child with 127, as a shell does.
unsafe fn fail(failure: &AtomicU64, step: u32) -> ! {
    // SAFETY: errno is readable; a plain store to memory the spawner reads once we are gone;
    // _exit is async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        failure.store(u64::from(step) << 32 | u64::from(errno as u32), Ordering::Relaxed);
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_in_path_or_by_path() {
        let here = Path::new("/");
        assert_eq!(find_program("sh", Some("/nonexistent:/bin"), here), Ok(PathBuf::from("/bin/sh")));
        assert!(find_program("no-such-program-here", Some("/bin"), here).unwrap_err().contains("not found in PATH"));
        assert_eq!(find_program("/bin/sh", None, here), Ok(PathBuf::from("/bin/sh")));
        assert!(find_program("./nope.sh", None, here).is_err());
    }

    #[test]
    fn the_child_environment_layers_base_spec_and_procctl_variables() {
        let config = crate::config::Config::parse(
            Path::new("/etc/app/procctl.toml"),
            "[process.w]\ncommand = [\"x\"]\nenv = { HOME = \"/srv\", EXTRA = \"1\" }\narg = { queue = \"jobs\" }\n",
        )
        .unwrap();
        let base = vec![("HOME".to_string(), "/root".to_string()), ("PATH".to_string(), "/bin".to_string())];
        let context = Context { base: &base, socket: Path::new("/run/a.sock"), notify: Some("@n") };
        let request = SpawnRequest::new(7, &InstanceId::new("w", 2), &config.processes["w"], &context, None);
        let env: std::collections::BTreeMap<_, _> = request.env.iter().cloned().collect();
        assert_eq!(env["HOME"], "/srv", "the spec wins over the agent's own");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["EXTRA"], "1");
        assert_eq!((env["PROCCTL_NAME"].as_str(), env["PROCCTL_INSTANCE"].as_str()), ("w", "2"));
        assert_eq!(env["PROCCTL_SOCKET"], "/run/a.sock");
        assert_eq!(env["PROCCTL_PIPE_FD"], "3");
        assert_eq!(env["PROCCTL_ARG"], r#"{"queue":"jobs"}"#);
        assert!(env.contains_key(crate::reclaim::TOKEN_VAR));
        assert_eq!(request.env.iter().filter(|(k, _)| k == "HOME").count(), 1, "no variable twice");
        assert_eq!(request.cwd, Path::new("/etc/app"));
    }
}
