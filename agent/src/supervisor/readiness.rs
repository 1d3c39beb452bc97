//! Readiness and health: the notify socket's messages, ready and health probes (scheduled,
//! run in tasks or as `exec` children, their results tied to the run they were for), and
//! the watchdog. Nothing here runs for a process that declares none of them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use procctl_proto::{EventKind, Exit, Health, InstanceId, State};
use tokio::task::AbortHandle;
use tokio_util::time::delay_queue::Key;

use super::{Due, Event, Spawning, Supervisor};
use crate::config::{Probe, ProcessSpec, Ready};
use crate::instance::Input;
use crate::listening;
use crate::notify;
use crate::procfs;
use crate::spawn::{Context, SpawnRequest};

/// The first wait before a ready probe, and its doubling cap.
const READY_FIRST: Duration = Duration::from_millis(50);
const READY_MAX: Duration = Duration::from_secs(1);
/// How far up its parents a notify sender is followed to find its instance.
const MAX_ANCESTORS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Ready,
    Health,
}

/// What readiness keeps besides each run's checks: the `exec` probes running and the notify
/// socket's name and refusals.
pub struct Readiness {
    /// `exec` probes running, by pid; those past their timeout.
    probes: HashMap<i32, ExecProbe>,
    timed_out: HashSet<i32>,
    /// `$NOTIFY_SOCKET` of the instances with `ready = "notify"`.
    pub notify_name: String,
    refusals: u64,
}

impl Readiness {
    pub fn new(notify_name: String) -> Readiness {
        Readiness { probes: HashMap::new(), timed_out: HashSet::new(), notify_name, refusals: 0 }
    }

    /// Whether any `exec` probe is running.
    pub fn probes_running(&self) -> bool {
        !self.probes.is_empty()
    }

    /// Whether `pid` is an `exec` probe's child.
    pub fn is_probe(&self, pid: i32) -> bool {
        self.probes.contains_key(&pid)
    }
}

/// One run's readiness and health: its probe, its watchdog, its last STATUS= and the health
/// check's last verdict. A new run starts with none.
#[derive(Default)]
pub struct RunChecks {
    /// The probe of the current run, when it has one going.
    pub probe: Option<Checks>,
    pub watchdog: Option<Key>,
    pub status: Option<String>,
    pub health: Option<Health>,
}

/// One probe of one run: what it is for and where it stands.
pub struct Checks {
    pub run: u64,
    pub purpose: Purpose,
    /// The wait before the next try of a ready probe.
    delay: Duration,
    /// Health failures in a row.
    failures: u32,
    /// The try in flight: a task, or an `exec` child's pid.
    pub task: Option<AbortHandle>,
    exec: Option<i32>,
    /// Another process answering on the run's port has been told of.
    port_noted: Arc<AtomicBool>,
}

/// An `exec` probe's child.
pub struct ExecProbe {
    pub id: InstanceId,
    pub run: u64,
    pub purpose: Purpose,
    /// Why it could not run, when it could not.
    pub error: Option<String>,
    /// Its timeout timer, until that fires: the queue reuses keys, so a key that has fired
    /// must not be removed later (it may be another timer's by then).
    pub timeout: Option<Key>,
}

impl Supervisor {
    /// A run has been spawned: start its ready probe, if it has one that is not `log`.
    pub(super) fn begin_ready_checks(&mut self, id: &InstanceId) {
        let Some(spec) = self.config.processes.get(&id.name) else {
            return;
        };
        if let Ready::Probe { probe, .. } = &spec.ready
            && !matches!(probe, Probe::Log(_))
        {
            self.schedule_check(id, Purpose::Ready, READY_FIRST);
        }
    }

    /// The instance is running: start its health check and watchdog.
    pub(super) fn begin_running_checks(&mut self, id: &InstanceId) {
        let Some(spec) = self.config.processes.get(&id.name) else {
            return;
        };
        let (health, watchdog) = (spec.health.as_ref().map(|h| h.every), spec.watchdog);
        if let Some(every) = health {
            self.schedule_check(id, Purpose::Health, every);
        }
        if let Some(watchdog) = watchdog {
            let Some(slot) = self.slots.get_mut(id) else {
                return;
            };
            let run = slot.inst.run;
            if let Some(key) = slot.checks.watchdog.take() {
                self.timers.remove(&key);
            }
            slot.checks.watchdog = Some(self.timers.after_key(watchdog, Due::Watchdog { id: id.clone(), run }));
        }
    }

    /// The run's probes and watchdog stop (it ended, or left the state they are for).
    /// Its health and status are the run's: `list` shows neither once it is over (or being
    /// stopped; a STATUS= sent while stopping still shows).
    pub(super) fn end_checks(&mut self, id: &InstanceId) {
        self.cancel_checks(id);
        if let Some(slot) = self.slots.get_mut(id) {
            slot.checks.health = None;
            slot.checks.status = None;
        }
    }

    /// No more probe or watchdog for the run (its last health result stays shown).
    fn cancel_checks(&mut self, id: &InstanceId) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if let Some(checks) = slot.checks.probe.take() {
            if let Some(task) = checks.task {
                task.abort();
            }
            if let Some(pid) = checks.exec {
                self.kernel.kill_group(pid);
            }
        }
        if let Some(key) = slot.checks.watchdog.take() {
            self.timers.remove(&key);
        }
    }

    fn schedule_check(&mut self, id: &InstanceId, purpose: Purpose, after: Duration) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let run = slot.inst.run;
        match &mut slot.checks.probe {
            Some(checks) if checks.run == run && checks.purpose == purpose => {
                checks.task = None;
                checks.exec = None;
            }
            other => {
                *other = Some(Checks {
                    run,
                    purpose,
                    delay: READY_FIRST,
                    failures: 0,
                    task: None,
                    exec: None,
                    port_noted: Arc::default(),
                });
            }
        }
        self.timers.after(after, Due::Probe { id: id.clone(), run, purpose });
    }

    /// The wait before the next try is over: try once.
    pub(super) fn on_probe_due(&mut self, id: InstanceId, run: u64, purpose: Purpose) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        if !slot.checks.probe.as_ref().is_some_and(|c| c.run == run && c.purpose == purpose) || slot.inst.run != run {
            return;
        }
        let spec = &self.config.processes[&id.name];
        let Some((probe, timeout)) = probe_of(spec, purpose) else {
            return;
        };
        let owner = match (spec.port_of(id.index), slot.inst.pid, &slot.checks.probe) {
            (Some(port), Some(pid), Some(checks)) if listening::aims_at_port(probe) => Some(listening::Owner {
                id: id.clone(),
                port,
                pid,
                cgroup: slot.cgroup.clone(),
                sink: slot.sink.clone(),
                follow: self.follow.clone(),
                noted: checks.port_noted.clone(),
            }),
            _ => None,
        };
        let probe = probe.render(id.index, spec.port_of(id.index));
        match probe {
            Probe::Exec(argv) => {
                self.next_seq += 1;
                let seq = self.next_seq;
                self.spawning.insert(seq, Spawning::Probe { id: id.clone(), run, purpose, timeout });
                let context =
                    Context { base: &self.base_env, socket: &self.socket, notify: Some(&self.readiness.notify_name) };
                let request = SpawnRequest::probe(seq, &id, spec, argv, &context);
                if !self.kernel.spawn(request) {
                    self.spawning.remove(&seq);
                }
            }
            Probe::Tcp(addr) => self.probe_task(id, run, purpose, async move {
                crate::probe::tcp(&addr, timeout).await?;
                listening::Owner::confirm(owner).await
            }),
            Probe::Http(url) => self.probe_task(id, run, purpose, async move {
                crate::probe::http(&url, timeout).await?;
                listening::Owner::confirm(owner).await
            }),
            Probe::Log(_) => {}
        }
    }

    fn probe_task(
        &mut self,
        id: InstanceId,
        run: u64,
        purpose: Purpose,
        probe: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let events = self.events.clone();
        let task = {
            let id = id.clone();
            tokio::spawn(async move {
                let result = probe.await;
                let _ = events.send(Event::Probed { id, run, purpose, result });
            })
        };
        if let Some(checks) = self.slots.get_mut(&id).and_then(|slot| slot.checks.probe.as_mut()) {
            checks.task = Some(task.abort_handle());
        }
    }

    /// An `exec` probe's child was spawned: it is cut at its timeout.
    pub(super) fn exec_probe_spawned(
        &mut self,
        pid: i32,
        (id, run, purpose, timeout): (InstanceId, u64, Purpose, Duration),
        error: Option<String>,
    ) {
        let live = self.slots.get_mut(&id).and_then(|slot| slot.checks.probe.as_mut()).filter(|c| c.run == run);
        let Some(checks) = live else {
            self.kernel.kill_group(pid);
            return;
        };
        checks.exec = Some(pid);
        let key = self.timers.after_key(timeout, Due::ProbeTimeout { pid });
        self.readiness.probes.insert(pid, ExecProbe { id, run, purpose, error, timeout: Some(key) });
    }

    pub(super) fn on_probe_timeout(&mut self, pid: i32) {
        if self.readiness.probes.contains_key(&pid) {
            self.kernel.kill_group(pid);
            if let Some(probe) = self.readiness.probes.get_mut(&pid) {
                probe.timeout = None; // fired: its key is free for other timers
                probe.error = None; // the reason is the timeout
            }
            self.readiness.timed_out.insert(pid);
        }
    }

    /// An `exec` probe's child was reaped: its exit is the result.
    pub(super) fn exec_probe_reaped(&mut self, pid: i32, exit: Exit) {
        let Some(probe) = self.readiness.probes.remove(&pid) else {
            return;
        };
        // What it left in its group (a background child) goes with it: nothing else would
        // ever stop it. The group keeps its number while anything is in it.
        self.kernel.kill_group(pid);
        if let Some(key) = &probe.timeout {
            self.timers.remove(key);
        }
        let timed_out = self.readiness.timed_out.remove(&pid);
        let argv0 = self.config.processes.get(&probe.id.name).and_then(|spec| probe_of(spec, probe.purpose)).map_or(
            String::new(),
            |(probe, _)| match probe {
                Probe::Exec(argv) => argv[0].clone(),
                _ => String::new(),
            },
        );
        let result = match (exit, timed_out, probe.error) {
            (_, true, _) => Err(format!("exec {argv0}: no result within its timeout")),
            (_, _, Some(error)) => Err(error),
            (Exit::Code(0), ..) => Ok(()),
            (exit, ..) => Err(format!("exec {argv0}: {exit}")),
        };
        self.on_probed(probe.id, probe.run, probe.purpose, result);
    }

    pub(super) fn on_probed(&mut self, id: InstanceId, run: u64, purpose: Purpose, result: Result<(), String>) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let wanted_state = match purpose {
            Purpose::Ready => State::Starting,
            Purpose::Health => State::Running,
        };
        let current = slot.inst.run == run && slot.inst.state == wanted_state;
        let Some(checks) = slot.checks.probe.as_mut().filter(|c| current && c.run == run && c.purpose == purpose)
        else {
            return;
        };
        checks.task = None;
        checks.exec = None;
        let spec = &self.config.processes[&id.name];
        match (purpose, result) {
            (Purpose::Ready, Ok(())) => {
                slot.checks.probe = None;
                self.feed(&id, Input::Ready);
            }
            (Purpose::Ready, Err(_)) => {
                let delay = checks.delay;
                checks.delay = (delay * 2).min(READY_MAX);
                self.timers.after(delay, Due::Probe { id, run, purpose });
            }
            (Purpose::Health, Ok(())) => {
                checks.failures = 0;
                slot.checks.health = Some(Health::Ok);
                let every = spec.health.as_ref().map_or(Duration::from_secs(10), |h| h.every);
                self.timers.after(every, Due::Probe { id: id.clone(), run, purpose });
                self.feed(&id, Input::Healthy);
            }
            (Purpose::Health, Err(reason)) => {
                checks.failures += 1;
                slot.checks.health = Some(Health::Failing);
                slot.health_failures += 1;
                let Some(health) = &spec.health else {
                    return;
                };
                if checks.failures < health.failures {
                    self.timers.after(health.every, Due::Probe { id, run, purpose });
                    return;
                }
                let reason = format!("{} health checks failed in a row: {reason}", checks.failures);
                slot.checks.probe = None;
                self.unhealthy(&id, reason);
            }
        }
    }

    fn unhealthy(&mut self, id: &InstanceId, reason: String) {
        // The run is being stopped: neither its health check nor its watchdog may find it
        // unhealthy a second time meanwhile.
        self.cancel_checks(id);
        log!("{id} is unhealthy: {reason}; restarting it");
        self.bus.emit(EventKind::Unhealthy { id: id.clone(), reason });
        self.feed(id, Input::Unhealthy);
    }

    pub(super) fn on_watchdog_due(&mut self, id: InstanceId, run: u64) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.checks.watchdog = None;
        if slot.inst.run != run || slot.inst.state != State::Running {
            return;
        }
        let watchdog = self.config.processes[&id.name].watchdog.unwrap_or_default();
        self.unhealthy(&id, format!("no WATCHDOG=1 for {}", procctl_proto::duration::human(watchdog)));
    }

    /// A `ready = { log = … }` run printed its line.
    pub(super) fn on_log_ready(&mut self, id: InstanceId, run: u64) {
        if self.slots.get(&id).is_some_and(|slot| slot.inst.run == run) {
            self.feed(&id, Input::Ready);
        }
    }

    /// One sd_notify datagram: taken only from a process of an instance with
    /// `ready = "notify"`, checked by the sender's credentials.
    pub(super) fn on_notify(&mut self, message: notify::Message) {
        let Some(id) = self.sender_instance(message.pid) else {
            self.notify_refused(format!("a notification from pid {} (not a process of any instance)", message.pid));
            return;
        };
        let spec = &self.config.processes[&id.name];
        let allowed_uid = spec.account.as_ref().map_or(self.own_uid, |a| a.uid);
        if spec.ready != Ready::Notify || (message.uid != allowed_uid && message.uid != 0) {
            self.notify_refused(format!(
                "a notification from pid {} of {id}, which does not use ready = \"notify\"",
                message.pid
            ));
            return;
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if let Some(status) = message.status {
            slot.checks.status = Some(status);
        }
        if message.stopping {
            log!("{id} says it is stopping");
        }
        if message.watchdog
            && let (Some(key), Some(watchdog)) = (&slot.checks.watchdog, spec.watchdog)
        {
            self.timers.reset(key, watchdog);
        }
        if message.ready {
            self.feed(&id, Input::Ready);
        }
    }

    fn notify_refused(&mut self, what: String) {
        self.readiness.refusals += 1;
        // A flood is logged once in a while, not line by line.
        if self.readiness.refusals.is_power_of_two() {
            log!("ignored {what} ({} ignored so far)", self.readiness.refusals);
        }
    }

    /// The instance whose run `pid` belongs to: its main process, a member of its group, or
    /// a descendant of its main process.
    fn sender_instance(&self, pid: i32) -> Option<InstanceId> {
        if let Some(id) = self.by_pid.get(&pid) {
            return Some(id.clone());
        }
        let stat = procfs::stat(pid)?;
        if let Some(id) = self.by_pid.get(&stat.pgrp) {
            return Some(id.clone());
        }
        let mut parent = stat.ppid;
        for _ in 0..MAX_ANCESTORS {
            if parent <= 1 {
                return None;
            }
            if let Some(id) = self.by_pid.get(&parent) {
                return Some(id.clone());
            }
            parent = procfs::stat(parent)?.ppid;
        }
        None
    }
}

fn probe_of(spec: &ProcessSpec, purpose: Purpose) -> Option<(&Probe, Duration)> {
    match (purpose, &spec.ready, &spec.health) {
        (Purpose::Ready, Ready::Probe { probe, timeout }, _) => Some((probe, *timeout)),
        (Purpose::Health, _, Some(health)) => Some((&health.probe, health.timeout)),
        _ => None,
    }
}
