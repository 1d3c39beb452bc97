//! The supervisor's side of an upgrade (see `crate::upgrade`): the check of the new binary,
//! spawned and reaped like a hook, its output read like an autoscale probe's; then, once
//! nothing is half done, the handover written and the exec asked of the spawner thread.

use std::path::PathBuf;
use std::time::Duration;

use procctl_proto::{ErrorKind, Exit, WireError};
use tokio_util::time::delay_queue::Key;

use super::api::Reply;
use super::{Due, Event, Spawning, Supervisor};
use crate::config::Pipe;
use crate::spawn::SpawnRequest;
use crate::upgrade::{FdList, HANDOVER, Handed, Own};

/// How long the new binary may take to answer `--handover-check`.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Upgrading {
    own: Own,
    check: Option<Check>,
    next_token: u64,
}

/// The check in flight: the binary asked, and what came back so far.
struct Check {
    token: u64,
    binary: PathBuf,
    pid: Option<i32>,
    exit: Option<Exit>,
    output: Option<Vec<u8>>,
    timed_out: bool,
    timeout: Option<Key>,
    reply: Reply<String>,
}

impl Upgrading {
    pub fn new(own: Own) -> Upgrading {
        Upgrading { own, check: None, next_token: 0 }
    }

    pub fn is_check(&self, pid: i32) -> bool {
        self.check.as_ref().is_some_and(|check| check.pid == Some(pid))
    }
}

fn failed(binary: &std::path::Path, why: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorKind::Failed, format!("{} cannot take over: {why}; nothing changed", binary.display()))
}

impl Supervisor {
    /// Runs `binary --handover-check` (answered when it has exited and its output is read).
    pub(super) fn upgrade_check(&mut self, binary: PathBuf, reply: Reply<String>) {
        if self.shutting_down {
            let _ = reply.send(Err(super::gone()));
            return;
        }
        if self.upgrading.check.is_some() {
            let _ = reply.send(Err(WireError::new(ErrorKind::Refused, "an upgrade is being checked already")));
            return;
        }
        if !binary.is_file() {
            let _ = reply.send(Err(failed(&binary, "no such file")));
            return;
        }
        self.upgrading.next_token += 1;
        let token = self.upgrading.next_token;
        self.next_seq += 1;
        let seq = self.next_seq;
        let request = SpawnRequest {
            seq,
            argv: vec![binary.to_string_lossy().into_owned(), crate::upgrade::CHECK_FLAG.into()],
            env: self.base_env.to_vec(),
            shared_env: None,
            cwd: PathBuf::from("/"),
            pipe: Pipe::None,
            capture: true,
            cgroup: None,
            account: None,
            umask: None,
            limits: vec![],
            listen: vec![],
        };
        self.spawning.insert(seq, Spawning::UpgradeCheck { token });
        if !self.kernel.spawn(request) {
            self.spawning.remove(&seq);
            let _ = reply.send(Err(failed(&binary, "the spawner is gone")));
            return;
        }
        let timeout = Some(self.timers.after_key(CHECK_TIMEOUT, Due::UpgradeCheckTimeout { token }));
        self.upgrading.check =
            Some(Check { token, binary, pid: None, exit: None, output: None, timed_out: false, timeout, reply });
    }

    pub(super) fn upgrade_check_spawned(
        &mut self,
        token: u64,
        spawned: Result<(i32, Option<std::os::fd::OwnedFd>), String>,
    ) {
        let Some(check) = self.upgrading.check.as_mut().filter(|check| check.token == token) else {
            if let Ok((pid, _)) = spawned {
                self.kernel.kill_group(pid);
            }
            return;
        };
        match spawned {
            Err(error) => self.upgrade_check_done(Err(error)),
            Ok((pid, output)) => {
                check.pid = Some(pid);
                let events = self.events.clone();
                let done = move |output| {
                    let _ = events.send(Event::UpgradeCheckOutput { token, output });
                };
                match output.map(|fd| super::autoscale::read_capped(fd, done)) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        log!("cannot read the upgrade check's output: {e}");
                        check.output = Some(vec![]);
                    }
                    None => check.output = Some(vec![]),
                }
            }
        }
    }

    pub(super) fn upgrade_check_reaped(&mut self, exit: Exit) {
        let Some(check) = self.upgrading.check.as_mut() else {
            return;
        };
        if let Some(pid) = check.pid {
            // What it left in its group goes with it, and with them the last writers of its pipe.
            self.kernel.kill_group(pid);
        }
        check.exit = Some(exit);
        self.upgrade_check_maybe_done();
    }

    pub(super) fn on_upgrade_check_output(&mut self, token: u64, output: Vec<u8>) {
        if let Some(check) = self.upgrading.check.as_mut().filter(|check| check.token == token) {
            check.output = Some(output);
            self.upgrade_check_maybe_done();
        }
    }

    pub(super) fn on_upgrade_check_timeout(&mut self, token: u64) {
        let Some(check) = self.upgrading.check.as_mut().filter(|check| check.token == token) else {
            return;
        };
        check.timeout = None;
        check.timed_out = true;
        match check.pid {
            Some(pid) => self.kernel.kill_group(pid),
            // Never spawned in time: the spawn's report, should it come, finds no check.
            None => self.upgrade_check_done(Err(format!("it did not start within {}s", CHECK_TIMEOUT.as_secs()))),
        }
    }

    fn upgrade_check_maybe_done(&mut self) {
        let Some(check) = &self.upgrading.check else {
            return;
        };
        let (Some(exit), Some(output)) = (check.exit, check.output.as_deref()) else {
            return;
        };
        let result = if check.timed_out {
            Err(format!(
                "`{} --handover-check` did not answer within {}s",
                check.binary.display(),
                CHECK_TIMEOUT.as_secs()
            ))
        } else if exit != Exit::Code(0) {
            Err(format!("`{} --handover-check` ended with {exit}", check.binary.display()))
        } else {
            crate::upgrade::parse_check(output)
        };
        self.upgrade_check_done(result);
    }

    fn upgrade_check_done(&mut self, result: Result<String, String>) {
        let Some(check) = self.upgrading.check.take() else {
            return;
        };
        if let Some(key) = check.timeout {
            self.timers.remove(&key);
        }
        let _ = check.reply.send(result.map_err(|why| failed(&check.binary, why)));
    }

    /// Writes the handover and has the spawner thread exec `binary` with it. Answered only
    /// when that cannot be done: `Refused` while something is half done (the caller tries
    /// again), `Failed` when the exec failed (everything goes on as before).
    pub(super) fn upgrade_now(&mut self, binary: PathBuf, reply: Reply<()>) {
        if self.shutting_down {
            let _ = reply.send(Err(super::gone()));
            return;
        }
        if let Some(why) = self.handover_busy() {
            let _ = reply.send(Err(WireError::new(ErrorKind::Refused, why)));
            return;
        }
        let Some(start) = crate::upgrade::start() else {
            let _ = reply.send(Err(failed(&binary, "this agent does not know how it was started")));
            return;
        };
        let mut fds = FdList::default();
        let own = self.upgrading.own;
        let (listening, listening_next) = self.listening.handed(&mut fds);
        let handed = Handed {
            handover: HANDOVER,
            from: crate::VERSION.to_string(),
            token: crate::reclaim::token().to_string(),
            notify_name: self.readiness.notify_name.clone(),
            config: self.config.source.clone(),
            control: own.control.map(|fd| fds.add(fd)),
            lock: own.lock.map(|fd| fds.add(fd)),
            notify: own.notify.map(|fd| fds.add(fd)),
            metrics: own.metrics.map(|fd| fds.add(fd)),
            tree: self.cgroups.tracking.handed(),
            service_notify: self.service.manager(),
            listening,
            listening_next,
            supervisor: self.handed_state(&mut fds),
        };
        let state = match serde_json::to_vec(&handed) {
            Ok(state) => state,
            Err(e) => {
                let _ = reply.send(Err(failed(&binary, format!("cannot write the handover: {e}"))));
                return;
            }
        };
        // The table on disk as it is now, should the new image not come up.
        self.save();
        self.persist.writer().flush();
        log!("upgrade: handing over {} instance(s) to {}", self.slots.len(), binary.display());
        // The next image knows nothing of spares, nor of cgroups left to remove.
        self.drop_spares();
        self.remove_ended_cgroups();
        let why = self.kernel.exec(binary.clone(), start.args.clone(), state, &fds.0);
        log!("upgrade: {why}; going on as before");
        let _ = reply.send(Err(WireError::new(ErrorKind::Failed, format!("{why}; nothing changed"))));
    }
}
