//! Running instances: feeding their state machines and carrying out what they ask (spawn,
//! signal, kill, timers, answers to waiters), the spawner's reports, reaped exits, the exec
//! check, and the rechecks that follow a group kill until the group is gone.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use procctl_proto::{ErrorKind, EventKind, Exit, InstanceId, Outcome, OutcomeKind, Signal, State, WireError};
use tokio::sync::oneshot;

use super::api::{Pending, Settle, Settled};
use super::handover::Kept;
use super::hooks::Hook;
use super::kernel::{Ended, Kernel};
use super::{Due, Next, Spawning, Supervisor};
use crate::config::{Pipe, Probe, Ready};
use crate::instance::{Action, Input, Timer};
use crate::logs::{self, LineWatch};
use crate::pipe;
use crate::spawn::{Context, SpawnReport, SpawnRequest};

/// The first wait after a SIGKILL before checking that the group is gone; it doubles up to a second.
const RECHECK_FIRST: Duration = Duration::from_millis(20);
const RECHECK_MAX: Duration = Duration::from_secs(1);
/// Entries of room the follow-up queue and the spawns in flight keep once empty.
const ROOM_KEPT: usize = 64;

impl Supervisor {
    /// Queues an input for an instance: the loop feeds it once the current event (and
    /// everything queued before it) has been carried out, so a decision never runs inside
    /// another's actions.
    pub(super) fn feed(&mut self, id: &InstanceId, input: Input) {
        self.queue.push_back(Next::Input(id.clone(), input));
    }

    /// Carries out every queued follow-up, the ones they queue included.
    pub(super) fn drain(&mut self) {
        while let Some(next) = self.queue.pop_front() {
            match next {
                Next::Input(id, input) => self.step(&id, input),
                Next::CheckWaiting(id) => self.check_waiting(&id),
                Next::Start(id, waiter) => self.start_after_stop(&id, waiter),
            }
        }
        // A burst (a thousand starts) grew the queue and the table of spawns in flight;
        // once they are empty again, their room goes back.
        if self.queue.capacity() > ROOM_KEPT {
            self.queue = VecDeque::new();
        }
        if self.spawning.is_empty() && self.spawning.capacity() > ROOM_KEPT {
            self.spawning = HashMap::new();
        }
    }

    /// Feeds one input to one instance and carries out what it returns. Only `drain` calls
    /// it: anything that follows from it is queued, never stepped from here.
    fn step(&mut self, id: &InstanceId, input: Input) {
        let (Some(slot), Some(spec)) = (self.slots.get_mut(id), self.config.processes.get(&id.name)) else {
            return;
        };
        let before = slot.inst.state;
        let was_down = slot.inst.is_down();
        let mut actions = slot.inst.step(input, spec);
        self.hold_over_max_starting(id, before, &mut actions);
        let (Some(slot), Some(_)) = (self.slots.get_mut(id), self.config.processes.get(&id.name)) else {
            return;
        };
        let changed = slot.inst.state != before || slot.inst.is_down() != was_down;
        if slot.inst.state != before {
            self.persist.touch_state(slot.inst.state);
            self.touch();
            self.on_state_change(id, before);
            self.recycle_on_state(id);
        }
        for action in actions {
            self.act(id, action);
        }
        self.follow_cgroup(id);
        if changed {
            self.recheck_waiting();
            self.run_deferred();
        }
    }

    /// Something `list` shows changed: the table is due, and `wait` looks again.
    pub(super) fn touch(&mut self) {
        self.persist.touch();
        self.changes.send_modify(|n| *n += 1);
    }

    /// The events, log lines and checks a new state brings.
    fn on_state_change(&mut self, id: &InstanceId, before: State) {
        let Some(state) = self.slots.get(id).map(|slot| slot.inst.state) else {
            return;
        };
        if matches!(before, State::Starting | State::Running) && !matches!(state, State::Starting | State::Running) {
            self.end_checks(id);
        }
        if state == State::Stopping
            && let Some(slot) = self.slots.get_mut(id)
        {
            // A stop drains the queue: routing ends here, the writer keeps writing what is
            // queued as the worker reads, and closes the pipe once the last sender is done.
            slot.pipe = None;
        }
        let (Some(slot), Some(spec)) = (self.slots.get(id), self.config.processes.get(&id.name)) else {
            return;
        };
        match state {
            State::Running => {
                self.bus.emit(EventKind::Started { id: id.clone(), pid: slot.pid().unwrap_or_default() });
                if let Some(checks) = self.slots.get_mut(id).and_then(|slot| slot.checks.probe.take())
                    && let Some(task) = checks.task
                {
                    task.abort(); // a ready probe still in flight
                }
                self.begin_running_checks(id);
            }
            State::Fatal => {
                log!("{id} is fatal: it failed {} starts in a row", spec.start_retries);
                self.bus.emit(EventKind::Fatal { id: id.clone() });
                let last_exit = slot.inst.last_exit;
                self.run_hook(id, Hook::OnFatal, 0, last_exit);
            }
            State::Stopping => self.cut_pre_start(id),
            State::Stopped => self.bus.emit(EventKind::Stopped { id: id.clone() }),
            // Looked at again after every change until it starts or stops.
            State::Waiting => {
                self.waiting.insert(id.clone());
            }
            _ => {}
        }
        self.service_on_state(id, state);
    }

    fn act(&mut self, id: &InstanceId, action: Action) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        match action {
            Action::Spawn => {
                let last_exit = slot.inst.last_exit;
                let run = self.next_run(id);
                if !self.run_hook(id, Hook::PreStart, run, last_exit) {
                    self.spawn_run(id, run);
                }
            }
            Action::AbandonSpawn => {
                self.forget_pre_start(id);
                let Some(slot) = self.slots.get_mut(id) else {
                    return;
                };
                if let Some(seq) = slot.spawn_seq.take() {
                    self.spawning.remove(&seq);
                }
                self.start_failed(id, "the spawner did not answer: the start was given up".into());
            }
            Action::Signal(signal) => {
                if let Some(pgid) = slot.inst.pgid {
                    self.kernel.signal_run(slot.cgroup.as_deref(), pgid, signal);
                }
            }
            Action::Kill => {
                if let Some(pgid) = slot.inst.pgid {
                    log!("{id} did not stop in time: SIGKILL to its group");
                    self.kernel.kill_run(slot.cgroup.as_deref(), pgid);
                    let (id, run) = (id.clone(), slot.inst.run);
                    self.timers.after(RECHECK_FIRST, Due::Recheck { id, run, attempt: 1, vanished: false });
                }
            }
            Action::Arm { timer, after, generation } => {
                let after = if timer == Timer::Backoff { self.jitter(after) } else { after };
                if timer == Timer::Backoff {
                    self.bus.emit(EventKind::Backoff { id: id.clone(), delay_ms: after.as_millis() as u64 });
                }
                if let Some(slot) = self.slots.get_mut(id) {
                    self.timers.arm(
                        &mut slot.timers,
                        timer,
                        after,
                        Due::Instance { id: id.clone(), timer, generation },
                    );
                }
                // The ready timeout runs from the spawn, and so does the ready probe.
                if timer == Timer::Ready {
                    self.begin_ready_checks(id);
                }
            }
            Action::Disarm(timer) => self.timers.disarm(&mut slot.timers, timer),
            Action::Up { pid } => {
                for waiter in slot.up_waiters.drain(..) {
                    let _ = waiter.send(Settled::Up { pid: pid as u32 });
                }
            }
            Action::NotUp => {
                let (state, last_exit) = (slot.inst.state, slot.inst.last_exit);
                for waiter in slot.up_waiters.drain(..) {
                    let error = slot.start_error.clone();
                    let _ = waiter.send(Settled::NotUp { state, last_exit, error });
                }
            }
            Action::Down => {
                for waiter in slot.down_waiters.drain(..) {
                    let _ = waiter.send(Settled::Down);
                }
            }
            Action::Leave => self.leave(id),
        }
    }

    /// Asks the spawner for run `run` of `id`.
    pub(super) fn spawn_run(&mut self, id: &InstanceId, run: u64) {
        let (Some(slot), Some(spec)) = (self.slots.get_mut(id), self.config.processes.get(&id.name)) else {
            return;
        };
        self.next_seq += 1;
        let seq = self.next_seq;
        slot.spawn_seq = Some(seq);
        self.spawning.insert(seq, Spawning::Run { id: id.clone(), run });
        let context = Context { base: &self.base_env, socket: &self.socket, notify: Some(&self.readiness.notify_name) };
        let cgroup = self.cgroups.run_path(id, run);
        let request =
            SpawnRequest::new(seq, id, spec, &context, cgroup).with_listen(spec, self.listening.keys_of(spec));
        if !self.kernel.spawn(request) {
            self.spawning.remove(&seq);
            self.feed(id, Input::SpawnFailed);
        }
    }

    /// A removed instance that is down leaves the table, and its process with its last one.
    fn leave(&mut self, id: &InstanceId) {
        self.end_checks(id);
        let Some(mut slot) = self.slots.remove(id) else {
            return;
        };
        self.timers.disarm_all(&mut slot.timers);
        self.waiting.remove(id);
        self.drop_spare(id);
        self.recycle_left(id);
        self.touch();
        if self.retired.contains(&id.name) && !self.slots.keys().any(|other| other.name == id.name) {
            self.retired.remove(&id.name);
            self.config.processes.remove(&id.name);
            self.scaled.remove(&id.name);
            self.release_listening();
        }
    }

    pub(super) fn on_spawn_report(&mut self, report: SpawnReport) {
        match report {
            SpawnReport::Spawned { seq, pid, start_time, pipe, output, exec_error } => {
                let (id, run) = match self.spawning.remove(&seq) {
                    Some(Spawning::Run { id, run }) => (id, run),
                    Some(Spawning::Probe { id, run, purpose, timeout }) => {
                        return self.exec_probe_spawned(pid, (id, run, purpose, timeout), exec_error);
                    }
                    Some(Spawning::Autoscale { name, token }) => {
                        let spawned = match exec_error {
                            Some(error) => Err(error),
                            None => Ok((pid, output)),
                        };
                        return self.autoscale_spawned((name, token), spawned);
                    }
                    Some(Spawning::UpgradeCheck { token }) => {
                        let spawned = match exec_error {
                            Some(error) => Err(error),
                            None => Ok((pid, output)),
                        };
                        return self.upgrade_check_spawned(token, spawned);
                    }
                    Some(Spawning::Hook { id, hook, token }) => {
                        // A hook that could not exec has exited already and is reaped as a stranger.
                        let spawned = match exec_error {
                            Some(error) => Err(error),
                            None => Ok((pid, output)),
                        };
                        return self.hook_spawned((id, hook, token), spawned);
                    }
                    None => {
                        // Nobody wants this child any more; it is reaped as a stray.
                        self.kernel.kill_group(pid);
                        return;
                    }
                };
                if let Some(error) = exec_error {
                    // It never ran its program and has exited already (the reaper reaps it
                    // as a stranger): a failed start like any other. Its cgroup goes.
                    if let Some(cgroup) = self.cgroups.run_path(&id, run) {
                        self.cgroups.remove_later(cgroup);
                    }
                    if let Some(slot) = self.slots.get_mut(&id) {
                        slot.spawn_seq = None;
                    }
                    self.start_failed(&id, error);
                    return self.feed(&id, Input::SpawnFailed);
                }
                let Some(slot) = self.slots.get_mut(&id) else {
                    return;
                };
                slot.spawn_seq = None;
                slot.start_error = None;
                slot.cgroup = self.cgroups.run_path(&id, run);
                slot.cpu_sample = None;
                slot.start_time = start_time;
                slot.checks.status = None;
                slot.checks.health = None;
                self.attach_run(&id, run, pipe, output);
                self.by_pid.insert(pid, id.clone());
                self.recycle_spawned(&id, run);
                self.want_spare(&id);
                self.bus.emit(EventKind::Spawned { id: id.clone(), pid: pid as u32 });
                self.feed(&id, Input::Spawned { pid, at: SystemTime::now(), run });
            }
            SpawnReport::Failed { seq, error } => {
                let id = match self.spawning.remove(&seq) {
                    Some(Spawning::Run { id, .. }) => id,
                    Some(Spawning::Probe { id, run, purpose, .. }) => {
                        return self.on_probed(id, run, purpose, Err(error));
                    }
                    Some(Spawning::Hook { id, hook, token }) => {
                        return self.hook_spawned((id, hook, token), Err(error));
                    }
                    Some(Spawning::Autoscale { name, token }) => {
                        return self.autoscale_spawned((name, token), Err(error));
                    }
                    Some(Spawning::UpgradeCheck { token }) => {
                        return self.upgrade_check_spawned(token, Err(error));
                    }
                    None => {
                        log!("a start nobody waits for failed: {error}");
                        return;
                    }
                };
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.spawn_seq = None;
                }
                self.start_failed(&id, error);
                self.feed(&id, Input::SpawnFailed);
            }
        }
    }

    /// Takes up a run's output capture and message pipe (from a spawn, or handed over by an
    /// upgrade), keeping copies of both ends for an upgrade.
    pub(super) fn attach_run(
        &mut self,
        id: &InstanceId,
        run: u64,
        pipe: Option<std::os::fd::OwnedFd>,
        output: Option<std::os::fd::OwnedFd>,
    ) {
        let (Some(slot), Some(spec)) = (self.slots.get_mut(id), self.config.processes.get(&id.name)) else {
            return;
        };
        let kept = Kept::of_run(id, pipe.as_ref(), output.as_ref());
        let watch = match &spec.ready {
            Ready::Probe { probe: Probe::Log(pattern), .. } => {
                let pattern = Probe::Log(pattern.clone()).render(id.index, spec.port_of(id.index));
                let Probe::Log(pattern) = pattern else { unreachable!("rendered a log probe") };
                // Checked at load with placeholders filled in the same way.
                regex::Regex::new(&pattern).ok().map(|regex| {
                    let (events, id) = (self.events.clone(), id.clone());
                    LineWatch {
                        regex,
                        matched: Box::new(move || {
                            let _ = events.send(super::Event::LogReady { id, run });
                        }),
                    }
                })
            }
            _ => None,
        };
        if let Some(output) = output
            && let Err(e) = logs::capture(output, slot.sink.clone(), self.follow.clone(), watch)
        {
            log!("{id}: cannot capture output: {e}");
        }
        let replies = spec.pipe == Pipe::Fd;
        slot.pipe = pipe.and_then(|fd| match pipe::start(fd, id.clone(), replies, self.bus.clone()) {
            Ok(pipe) => Some(pipe),
            Err(e) => {
                log!("{id}: cannot set up the message pipe: {e}");
                None
            }
        });
        slot.kept = kept.with_writing(slot.pipe.as_ref().map(pipe::PipeRef::writing));
    }

    pub(super) fn on_reaped(&mut self, pid: i32, exit: Exit) {
        if self.readiness.is_probe(pid) {
            return self.exec_probe_reaped(pid, exit);
        }
        if self.hooks.is_hook(pid) {
            return self.hook_reaped(pid, exit);
        }
        if self.autoscaling.is_probe(pid) {
            return self.autoscale_reaped(pid, exit);
        }
        if self.upgrading.is_check(pid) {
            return self.upgrade_check_reaped(exit);
        }
        let Some(id) = self.by_pid.get(&pid).cloned() else {
            // A grandchild handed to us as subreaper: its group may now be empty.
            self.check_draining_groups();
            return;
        };
        if self.slots.get(&id).is_some_and(|slot| slot.inst.state != State::Stopping) {
            log!("{id} exited ({exit})");
        }
        self.bus.emit(EventKind::Exited { id: id.clone(), pid: pid as u32, exit });
        self.run_ended(&id, pid, Some(exit));
    }

    /// The main process `pid` of `id` is gone: with its exit, or without when it was never
    /// reported.
    fn run_ended(&mut self, id: &InstanceId, pid: i32, exit: Option<Exit>) {
        self.by_pid.remove(&pid);
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.pipe = None;
        slot.kept = Kept::default();
        // Its sample files are closed before its cgroup goes: the removal of a cgroup with
        // files open in it has to drain them first.
        slot.usage = super::usage::Files::default();
        // A start follows (a crash's replacement, a restart): the empty cgroup is removed
        // after its spawn is asked for, not before. A stop removes it at once.
        let start_follows = !self.shutting_down && (slot.inst.state != State::Stopping || !slot.up_waiters.is_empty());
        let ended = slot.inst.pgid.map(|pgid| match &slot.cgroup {
            Some(cgroup) if start_follows => Ended { left: self.kernel.run_alive(Some(cgroup), pgid), removed: false },
            cgroup => self.kernel.run_ended(cgroup.as_deref(), pgid),
        });
        if ended.is_some_and(|ended| ended.removed) {
            slot.cgroup = None; // nothing is left to follow or remove
        } else if start_follows
            && ended.is_some_and(|ended| !ended.left)
            && let Some(cgroup) = slot.cgroup.take()
        {
            self.cgroups.remove_later(cgroup);
        }
        let group_left = ended.is_some_and(|ended| ended.left);
        self.end_checks(id);
        self.feed(id, Input::Exited { exit, group_left });
        self.run_hook(id, Hook::PostStop, 0, exit);
    }

    pub(super) fn check_draining_groups(&mut self) {
        let gone: Vec<InstanceId> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.inst.pid.is_none() && slot.inst.pgid.is_some() && !run_alive(&*self.kernel, slot))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.feed(&id, Input::GroupGone);
        }
    }

    /// After a SIGKILL to run `run`'s group: is it gone? If its main process vanished without
    /// an exit report (twice in a row, so a report already on its way is not overtaken), the
    /// run is taken as ended, so a stop always finishes.
    pub(super) fn on_recheck(&mut self, id: InstanceId, run: u64, attempt: u32, vanished: bool) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        let (Some(pgid), true) = (slot.inst.pgid, slot.inst.run == run) else {
            return; // that run's group is gone and the instance has moved on
        };
        let cgroup = slot.cgroup.clone();
        match slot.inst.pid {
            None if !run_alive(&*self.kernel, slot) => return self.feed(&id, Input::GroupGone),
            Some(pid) if !self.kernel.process_exists(pid) && vanished => {
                log!("{id}: pid {pid} is gone but its exit was never reported; taking it as ended");
                // Its end is queued: the next recheck finds the run moved on, or its
                // leftovers still there.
                self.run_ended(&id, pid, None);
            }
            _ => {}
        }
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        let vanished = slot.inst.pid.is_some_and(|pid| !self.kernel.process_exists(pid));
        if run_alive(&*self.kernel, slot) {
            self.kernel.kill_run(cgroup.as_deref(), pgid);
        }
        let delay = (RECHECK_FIRST * 2u32.pow(attempt.min(10))).min(RECHECK_MAX);
        self.timers.after(delay, Due::Recheck { id, run, attempt: attempt + 1, vanished });
    }

    /// Says why a start failed: in the agent's log, in the instance's own log (so that
    /// `procctl logs` shows it) and to whoever waits for the instance to come up.
    pub(super) fn start_failed(&mut self, id: &InstanceId, error: String) {
        log!("{id}: {error}");
        if let Some(slot) = self.slots.get_mut(id) {
            logs::note(&slot.sink, &self.follow, &format!("procagent: {error}"));
            slot.start_error = Some(error);
        }
    }

    /// Up to 10% either way, so instances that failed together do not restart in lockstep.
    fn jitter(&mut self, delay: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let permille = (self.rng % 201) as u32 + 900;
        delay * permille / 1000
    }

    /// Starts `id`, which the caller has just resolved (no step ran since).
    pub(super) fn start(&mut self, id: InstanceId) -> Pending {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Pending { id, pid_before: None, settle: Settle::Already };
        };
        let pid_before = slot.pid();
        if slot.inst.state == State::Running {
            return Pending { id, pid_before, settle: Settle::Already };
        }
        let (waiter, settled) = oneshot::channel();
        slot.up_waiters.push(waiter);
        match slot.inst.state {
            // On their way up already.
            State::Starting | State::Backoff => {}
            // Starts once stopped.
            State::Stopping => self.feed(&id, Input::Start),
            _ => self.start_with_dependencies(&id),
        }
        Pending { id, pid_before, settle: Settle::Wait(settled) }
    }

    /// Stops `id` and starts it again. The stop is fed at once and the start right after it
    /// in the same drain, so no other request comes between; whoever asked hears when the
    /// new run is up (or could not come up).
    pub(super) fn restart(&mut self, id: InstanceId) -> Result<Pending, WireError> {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Err(WireError::new(ErrorKind::NotFound, format!("no instance `{id}`")));
        };
        if slot.inst.removing {
            return Err(WireError::new(
                ErrorKind::Refused,
                format!("{id} is being removed (scaled down or reloaded away)"),
            ));
        }
        let pid_before = slot.pid();
        let (waiter, settled) = oneshot::channel();
        self.feed(&id, Input::Stop);
        self.queue.push_back(Next::Start(id.clone(), waiter));
        Ok(Pending { id, pid_before, settle: Settle::Wait(settled) })
    }

    /// The start half of a restart, once its stop has been taken (so the waiter hears of the
    /// new run, not of the old one coming to rest): once stopping, it starts when the stop is
    /// over; at rest, it starts as any start does (its dependencies first).
    fn start_after_stop(&mut self, id: &InstanceId, waiter: oneshot::Sender<Settled>) {
        let Some(slot) = self.slots.get_mut(id) else {
            return; // the waiter hears the instance is gone
        };
        slot.up_waiters.push(waiter);
        match slot.inst.state {
            State::Stopping => self.feed(id, Input::Start),
            State::Stopped | State::Exited | State::Fatal => self.start_with_dependencies(id),
            _ => {}
        }
    }

    /// Stops `ids`, dependents before what they depend on.
    pub(super) fn stop(&mut self, ids: Vec<InstanceId>) -> Vec<Pending> {
        self.take_down(ids, Input::Stop)
    }

    /// Takes instances away (scale down, reload): stopped, then out of the table.
    pub(super) fn remove(&mut self, ids: Vec<InstanceId>) -> Vec<Pending> {
        self.take_down(ids, Input::Remove)
    }

    fn take_down(&mut self, ids: Vec<InstanceId>, input: Input) -> Vec<Pending> {
        let pendings = ids
            .iter()
            .filter_map(|id| {
                let slot = self.slots.get_mut(id)?;
                let pid_before = slot.pid();
                let settle = if slot.inst.is_down() {
                    Settle::Already
                } else {
                    let (waiter, settled) = oneshot::channel();
                    slot.down_waiters.push(waiter);
                    Settle::Wait(settled)
                };
                Some(Pending { id: id.clone(), pid_before, settle })
            })
            .collect();
        self.stop_in_order(ids, input);
        pendings
    }

    pub(super) fn signal(&mut self, id: InstanceId, signal: Signal) -> Outcome {
        let Some(slot) = self.slots.get(&id) else {
            let error = WireError::new(ErrorKind::NotFound, format!("{id} has just left the table"));
            return Outcome { id, kind: OutcomeKind::Failed(error) };
        };
        let kind = match (slot.inst.pid, slot.inst.pgid) {
            (Some(pid), Some(pgid)) => match self.kernel.signal_group(pgid, signal) {
                Ok(()) => OutcomeKind::Signalled { pid: pid as u32, signal },
                Err(Errno::ESRCH) => OutcomeKind::Failed(WireError::new(
                    ErrorKind::NotRunning,
                    format!("{id} is gone: no process is left in its group (pid {pid} has just ended)"),
                )),
                Err(e) => OutcomeKind::Failed(WireError::new(
                    ErrorKind::Failed,
                    format!("{id}: cannot send {signal}: {}", e.desc()),
                )),
            },
            _ => OutcomeKind::Failed(WireError::new(
                ErrorKind::NotRunning,
                format!("{id} is not running (state {})", slot.inst.state),
            )),
        };
        Outcome { id, kind }
    }

    pub(super) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.drop_spares();
        self.service_stopping();
        let ids: Vec<InstanceId> = self.slots.keys().cloned().collect();
        self.stop_in_order(ids, Input::Stop);
    }

    /// A second SIGTERM: SIGKILL to every group, and the rechecks that see them gone.
    pub(super) fn kill_everything(&mut self) {
        self.kill_hooks();
        for (id, slot) in &self.slots {
            if let Some(pgid) = slot.inst.pgid {
                self.kernel.kill_run(slot.cgroup.as_deref(), pgid);
                let (id, run) = (id.clone(), slot.inst.run);
                self.timers.after(RECHECK_FIRST, Due::Recheck { id, run, attempt: 1, vanished: false });
            }
        }
    }
}

/// Whether anything of the run is left: its cgroup is populated, or its process group has
/// a member.
pub(super) fn run_alive(kernel: &dyn Kernel, slot: &super::Slot) -> bool {
    slot.inst.pgid.is_some_and(|pgid| kernel.run_alive(slot.cgroup.as_deref(), pgid))
}
