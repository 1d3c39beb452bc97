//! What the supervisor asks of the kernel (spawns through the spawner thread, signals, kills,
//! "is anything of this run left"), behind one trait, so that the supervisor's core can be
//! driven as a model in tests with a kernel that the test plays.

use std::ffi::OsString;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use procctl_proto::Signal;

use crate::cgroup::Limits;
use crate::group;
use crate::spawn::{Sent, SpawnReport, SpawnRequest, Spawner};

pub trait Kernel: Send {
    /// Hands a start (of a run or an `exec` probe) to the spawner; false when it is gone.
    fn spawn(&mut self, request: SpawnRequest) -> bool;
    /// The full report of a spawn the spawner announced.
    fn claim(&mut self, sent: Sent) -> SpawnReport;
    /// `signal` to every process of a run (its cgroup, else its process group), and SIGCONT
    /// so that a stopped process acts on it.
    fn signal_run(&mut self, cgroup: Option<&Path>, pgid: i32, signal: Signal);
    /// `signal` to a run's process group, as a user asked.
    fn signal_group(&mut self, pgid: i32, signal: Signal) -> Result<(), Errno>;
    /// SIGKILL to everything of a run: its cgroup, else its process group.
    fn kill_run(&mut self, cgroup: Option<&Path>, pgid: i32);
    /// SIGKILL to one process group: a stray spawn, an `exec` probe and what it left.
    fn kill_group(&mut self, pgid: i32);
    /// Whether anything of a run is left: its cgroup is populated, or its group has a member.
    fn run_alive(&self, cgroup: Option<&Path>, pgid: i32) -> bool;
    /// The main process of a run has ended: is anything of the run left? With a cgroup, an
    /// empty one is removed on the way (`Ended::removed`), so a run's end costs one system
    /// call, not a read of `cgroup.events` and a removal after it.
    fn run_ended(&mut self, cgroup: Option<&Path>, pgid: i32) -> Ended {
        Ended { left: self.run_alive(cgroup, pgid), removed: false }
    }
    /// Whether `pid` exists (a zombie does).
    fn process_exists(&self, pid: i32) -> bool;
    /// Has the spawner make run cgroup `path` with `limits` ahead of the spawn that will
    /// name it (a spare), once the spawns already asked for are made.
    fn make_spare(&mut self, path: PathBuf, limits: Limits);
    /// Has the spawner remove a spare that no spawn will take.
    fn drop_spare(&mut self, path: PathBuf);
    /// Removes the empty cgroup of a run that ended (and any empty cgroup below it), after
    /// the spawns asked for before.
    fn remove_cgroup(&mut self, path: PathBuf);
    /// Gives the spawner the listening socket `fd`, under `key`, for the spawns after this.
    fn share_listener(&mut self, key: u64, fd: &OwnedFd) -> std::io::Result<()>;
    /// Makes the spawner close its copy of the listening socket under `key`.
    fn forget_listener(&mut self, key: u64);
    /// Re-executes the agent from the spawner thread with a handover (`state` and `fds`, in
    /// order). Returns only when that failed, with why.
    fn exec(&mut self, program: PathBuf, args: Vec<OsString>, state: Vec<u8>, fds: &[RawFd]) -> String;
}

/// What is left of a run whose main process has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Some process of the run is still alive.
    pub left: bool,
    /// Its cgroup was empty and is removed already.
    pub removed: bool,
}

/// The real one: the spawner thread, process groups and cgroups.
pub struct Real {
    spawner: Spawner,
}

impl Real {
    pub fn new(spawner: Spawner) -> Real {
        Real { spawner }
    }
}

impl Kernel for Real {
    fn spawn(&mut self, request: SpawnRequest) -> bool {
        self.spawner.send(request)
    }

    fn claim(&mut self, sent: Sent) -> SpawnReport {
        self.spawner.claim(sent)
    }

    fn share_listener(&mut self, key: u64, fd: &OwnedFd) -> std::io::Result<()> {
        self.spawner.share_listener(key, fd)
    }

    fn forget_listener(&mut self, key: u64) {
        self.spawner.forget_listener(key)
    }

    fn exec(&mut self, program: PathBuf, args: Vec<OsString>, state: Vec<u8>, fds: &[RawFd]) -> String {
        self.spawner.exec(program, args, state, fds)
    }

    fn signal_run(&mut self, cgroup: Option<&Path>, pgid: i32, signal: Signal) {
        match cgroup {
            Some(cgroup) => crate::cgroup::signal_all(cgroup, signal.number()),
            None => {
                let _ = group::signal_and_continue(pgid, signal);
            }
        }
    }

    fn signal_group(&mut self, pgid: i32, signal: Signal) -> Result<(), Errno> {
        group::signal(pgid, signal)
    }

    fn kill_run(&mut self, cgroup: Option<&Path>, pgid: i32) {
        if cgroup.is_none_or(|cgroup| crate::cgroup::kill(cgroup).is_err()) {
            let _ = group::kill(pgid);
        }
    }

    fn kill_group(&mut self, pgid: i32) {
        let _ = group::kill(pgid);
    }

    fn run_alive(&self, cgroup: Option<&Path>, pgid: i32) -> bool {
        match cgroup {
            Some(cgroup) => crate::cgroup::populated(cgroup),
            None => group::alive(pgid),
        }
    }

    fn run_ended(&mut self, cgroup: Option<&Path>, pgid: i32) -> Ended {
        match cgroup {
            // rmdir succeeds only on an empty cgroup: no process in it, none below it.
            Some(path) if crate::cgroup::remove_empty(path) => Ended { left: false, removed: true },
            _ => Ended { left: self.run_alive(cgroup, pgid), removed: false },
        }
    }

    fn process_exists(&self, pid: i32) -> bool {
        group::process_exists(pid)
    }

    fn make_spare(&mut self, path: PathBuf, limits: Limits) {
        self.spawner.make_spare(path, limits)
    }

    fn drop_spare(&mut self, path: PathBuf) {
        self.spawner.drop_spare(path)
    }

    fn remove_cgroup(&mut self, path: PathBuf) {
        if let Err(path) = self.spawner.remove_cgroup(path) {
            crate::cgroup::remove(&path);
        }
    }
}
