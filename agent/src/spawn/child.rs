//! The child side of the clone, until exec: async-signal-safe system calls only, on memory
//! prepared before; and how a child that cannot exec says why.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::PIPE_FD;
use super::prepare::Prepared;

/// What the child function gets through clone's argument.
pub(super) struct ChildArgs<'a> {
    pub(super) prepared: &'a Prepared,
    pub(super) parent: libc::pid_t,
    pub(super) fd_limit: libc::rlimit,
    /// Where a child that cannot exec writes why (`report`), in the memory it shares with
    /// this thread until it execs or exits.
    pub(super) failure: &'a AtomicU64,
    /// /dev/null, for the stdin and output of children that have none of their own.
    pub(super) null: RawFd,
    /// Signals whose disposition the child must reset.
    pub(super) handled: &'a [i32],
    /// The child moves itself into its cgroup (the clone could not make it there).
    pub(super) join_cgroup: bool,
    /// The nice value to take back before exec (the spawner thread runs at a raised one).
    pub(super) nice: Option<libc::c_int>,
}

pub(super) extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of `spawn_one`, alive while its thread is suspended.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: we are the child of clone; see `child`.
    unsafe { child(args) }
}

/// What the messages about a failed start name.
pub(super) struct Messages {
    pub(super) program: String,
    pub(super) cwd: String,
    pub(super) user: Option<String>,
    pub(super) limits: Vec<&'static str>,
}

/// Where between clone and exec a child failed, as it writes it before errno.
mod step {
    pub const FDS: u32 = 1;
    pub const CHDIR: u32 = 3;
    pub const EXEC: u32 = 4;
    pub const CGROUP: u32 = 5;
    pub const USER: u32 = 6;
    pub const NICE: u32 = 7;
    /// Plus the index of the limit.
    pub const LIMIT: u32 = 100;
}

/// Why the child could not exec, from what it left in `ChildArgs::failure` (0: nothing). By
/// the time clone(CLONE_VFORK) returns the child has either passed exec's point of no return
/// or written its report and exited, so nothing written means it runs its program. Shared
/// memory, as posix_spawn uses, instead of a pipe: three system calls fewer per start.
pub(super) fn exec_error(failure: u64, messages: &Messages) -> Option<String> {
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
        step::NICE => format!("cannot take back the agent's own priority before exec: {error}"),
        n if n >= step::LIMIT => {
            let name = messages.limits.get((n - step::LIMIT) as usize).copied().unwrap_or("?");
            format!("cannot set the limit {name}: {error}")
        }
        _ => format!("cannot set up its file descriptors: {error}"),
    })
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
        // The listening sockets from 3 on, then the pipe: every source was copied above
        // these numbers before the clone, so no dup2 here replaces a source still to come.
        for (i, fd) in p.listen.iter().enumerate() {
            let target = PIPE_FD + i as RawFd;
            if libc::dup2(fd.as_raw_fd(), target) != target {
                fail(failure, step::FDS);
            }
        }
        if let Some(pipe) = &p.pipe_child {
            let (fd, target) = (pipe.as_raw_fd(), super::pipe_fd(p.listen.len()));
            let ok =
                if fd == target { libc::fcntl(fd, libc::F_SETFD, 0) == 0 } else { libc::dup2(fd, target) == target };
            if !ok {
                fail(failure, step::FDS);
            }
        }
        // LISTEN_PID is this process's pid, known only now: its digits go into the buffer
        // made for them before the clone (sd_listen_fds and gunicorn check it).
        if let Some(digits) = p.listen_pid_digits {
            write_pid(digits, libc::syscall(libc::SYS_getpid) as u64);
        }
        // As the instance's user, so a directory it may not enter is its error.
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(failure, step::CHDIR);
        }
        // The agent's own priority, taken back last: up to here the child ran ahead of the
        // programs started before it, as the spawner does, which waits for it. Lowering a
        // priority needs no privilege, whoever the child now is; should the kernel refuse it
        // all the same, the start fails rather than run the program ahead of the others.
        if let Some(nice) = args.nice
            && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0
        {
            fail(failure, step::NICE);
        }
        libc::execve(p.program.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        fail(failure, step::EXEC)
    }
}

/// Writes `pid` in decimal at `at`, then a NUL: no allocation, no formatting machinery.
///
/// # Safety
/// `at` points to at least 21 writable bytes that nothing else reads or writes meanwhile.
unsafe fn write_pid(at: *mut u8, pid: u64) {
    let mut reversed = [0u8; 20];
    let (mut n, mut len) = (pid, 0);
    loop {
        reversed[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: i < len <= 20, within the 21 bytes the caller promises.
        unsafe { at.add(i).write(reversed[len - 1 - i]) };
    }
    // SAFETY: len <= 20.
    unsafe { at.add(len).write(0) };
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
    fn a_failed_step_is_named_with_its_errno() {
        let messages =
            Messages { program: "/bin/x".into(), cwd: "/srv".into(), user: Some("www".into()), limits: vec!["nofile"] };
        let report = |step: u32, errno: i32| exec_error(u64::from(step) << 32 | errno as u64, &messages);
        assert_eq!(exec_error(0, &messages), None);
        for (step, errno, want) in [
            (step::EXEC, libc::ENOENT, "cannot run `/bin/x`: "),
            (step::CHDIR, libc::EACCES, "cannot enter the working directory /srv: "),
            (step::USER, libc::EPERM, "cannot switch to user www: "),
            (step::NICE, libc::EPERM, "cannot take back the agent's own priority before exec: "),
            (step::LIMIT, libc::EPERM, "cannot set the limit nofile: "),
            (step::FDS, libc::EBADF, "cannot set up its file descriptors: "),
        ] {
            let text = report(step, errno).unwrap();
            let error = std::io::Error::from_raw_os_error(errno).to_string();
            assert_eq!(text, format!("{want}{error}"), "step {step}");
        }
    }

    #[test]
    fn pids_are_written_in_decimal_with_a_nul() {
        for (pid, want) in
            [(0u64, &b"0\0"[..]), (7, b"7\0"), (4194304, b"4194304\0"), (u64::MAX, b"18446744073709551615\0")]
        {
            let mut buffer = [0xffu8; 21];
            // SAFETY: 21 bytes of our own.
            unsafe { write_pid(buffer.as_mut_ptr(), pid) };
            assert_eq!(&buffer[..want.len()], want, "{pid}");
        }
    }
}
