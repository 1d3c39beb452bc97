//! Process groups: the one place that signals, probes and kills an instance's group. The
//! supervisor, `reclaim` and shutdown all go through here.

use nix::errno::Errno;
use nix::unistd::Pid;
use procctl_proto::Signal;

/// Sends `signal` to every process in group `pgid` (real-time signals included, which nix's
/// `Signal` cannot name: hence the raw call).
pub fn signal(pgid: i32, signal: Signal) -> Result<(), Errno> {
    // SAFETY: kill takes plain integers and touches no memory.
    Errno::result(unsafe { libc::kill(-pgid, signal.number()) }).map(drop)
}

/// `signal`, then SIGCONT: a process stopped with SIGSTOP acts on a signal only once continued.
pub fn signal_and_continue(pgid: i32, sig: Signal) -> Result<(), Errno> {
    let sent = signal(pgid, sig);
    let _ = signal(pgid, Signal::CONT);
    sent
}

pub fn kill(pgid: i32) -> Result<(), Errno> {
    signal(pgid, Signal::KILL)
}

/// Whether any process (a zombie included) is left in group `pgid`.
pub fn alive(pgid: i32) -> bool {
    !matches!(nix::sys::signal::killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// Whether process `pid` exists at all, a zombie included: once it does not, whoever
/// reaped it was not us.
pub fn process_exists(pid: i32) -> bool {
    !matches!(nix::sys::signal::kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Sends a raw signal number to one process; for leftovers found in /proc.
pub fn signal_process(pid: i32, signal: i32) {
    // SAFETY: kill takes plain integers and touches no memory.
    unsafe { libc::kill(pid, signal) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_group_is_alive_and_a_free_number_is_not() {
        let own = nix::unistd::getpgrp().as_raw();
        assert!(alive(own));
        assert!(process_exists(std::process::id() as i32));
        // pid_max is at most 2^22: this number is never a group.
        assert!(!alive(1 << 23));
        assert!(!process_exists(1 << 23));
        assert_eq!(signal(1 << 23, Signal::CONT), Err(Errno::ESRCH));
    }
}
