//! The agent's only `waitpid`: on SIGCHLD, reap every child that has ended and report each
//! exit by pid. Pids the supervisor does not know (grandchildren handed to us as the
//! subreaper) are reaped all the same, so no zombie is left.

use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use procctl_proto::{Exit, Signal};
use tokio::signal::unix::Signal as SignalStream;

/// Runs until the agent exits; `report` is called for each reaped child.
pub async fn run(mut sigchld: SignalStream, fork_lock: Arc<Mutex<()>>, report: impl Fn(i32, Exit)) {
    loop {
        reap_all(&fork_lock, &report);
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

fn reap_all(fork_lock: &Mutex<()>, report: &impl Fn(i32, Exit)) {
    loop {
        let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                let signal = Signal::from_number(sig as i32).unwrap_or(Signal::KILL);
                (pid, Exit::Signal(signal))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                log!("waitpid failed: {e}");
                return;
            }
        };
        // Taken after the spawner released it, so its `Spawned` report for this pid is queued first.
        let _guard = fork_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        report(pid.as_raw(), exit);
    }
}
