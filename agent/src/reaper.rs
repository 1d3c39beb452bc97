//! The agent's only `waitpid`: on SIGCHLD, reap every child that has ended and report each
//! exit by pid. Pids the supervisor does not know (grandchildren handed to us as the
//! subreaper) are reaped all the same, so no zombie is left.
//!
//! The raw wait status is decoded here, not by a type that knows only some signals: a
//! child killed by a real-time signal is reported like any other. Between reaping a pid
//! and reporting it nothing can return early.

use std::sync::{Arc, Mutex};

use procctl_proto::{Exit, Signal};
use tokio::signal::unix::Signal as SignalStream;

/// Runs until the agent exits; `report` is called for each reaped child.
///
/// After the first report it yields, so that the supervisor acts on that exit (a
/// replacement's spawn) before the next `waitpid`, which would otherwise stand between an
/// exit and the start that follows it; the rest of a burst is reaped at once after that,
/// so the supervisor takes many exits (a stop of a thousand) in one pass.
pub async fn run(mut sigchld: SignalStream, fork_lock: Arc<Mutex<()>>, report: impl Fn(i32, Exit)) {
    loop {
        if reap_next(&fork_lock, &report) {
            tokio::task::yield_now().await;
            while reap_next(&fork_lock, &report) {}
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

/// What one `waitpid(-1, WNOHANG)` gave.
enum Reaped {
    Child(i32, Exit),
    /// Children exist but none has ended.
    NoneEnded,
    /// No child at all.
    NoChildren,
    /// The call was interrupted or returned a status that is not an end (nothing reaped).
    Again,
    Failed(std::io::Error),
}

/// Reaps and reports one ended child; false when none has ended.
fn reap_next(fork_lock: &Mutex<()>, report: &impl Fn(i32, Exit)) -> bool {
    loop {
        match reap_one() {
            Reaped::Child(pid, exit) => {
                // Taken after the spawner released it, so its `Spawned` report for this pid is queued first.
                let _guard = fork_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                report(pid, exit);
                return true;
            }
            Reaped::Again => continue,
            Reaped::NoneEnded | Reaped::NoChildren => return false,
            Reaped::Failed(e) => {
                log!("waitpid failed: {e}");
                return false;
            }
        }
    }
}

fn reap_one() -> Reaped {
    let mut status = 0;
    // SAFETY: waitpid writes the status into an int we own.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        0 => Reaped::NoneEnded,
        -1 => {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ECHILD) => Reaped::NoChildren,
                Some(libc::EINTR) => Reaped::Again,
                _ => Reaped::Failed(error),
            }
        }
        pid => decode(status).map_or(Reaped::Again, |exit| Reaped::Child(pid, exit)),
    }
}

/// The end a raw wait status describes; `None` for a stop or continue report, which ends nothing.
fn decode(status: i32) -> Option<Exit> {
    if libc::WIFEXITED(status) {
        Some(Exit::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Exit::Signal(Signal::from_raw(libc::WTERMSIG(status))))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_of_an_ended_child_is_decoded() {
        // (raw status as the kernel builds it, what it means)
        let cases = [
            (0, Some(Exit::Code(0))),
            (3 << 8, Some(Exit::Code(3))),
            (255 << 8, Some(Exit::Code(255))),
            (9, Some(Exit::Signal(Signal::KILL))),
            (15 | 0x80, Some(Exit::Signal(Signal::TERM))), // with a core dump
            (40, Some(Exit::Signal(Signal::from_raw(40)))), // SIGRTMIN+6
            (64, Some(Exit::Signal(Signal::from_raw(64)))),
            (32, Some(Exit::Signal(Signal::from_raw(32)))),
            ((19 << 8) | 0x7f, None), // stopped by SIGSTOP
            (0xffff, None),           // continued
        ];
        for (status, want) in cases {
            assert_eq!(decode(status), want, "status {status:#x}");
        }
        assert_eq!(decode(40).unwrap().to_string(), "signal RTMIN+6");
    }
}
