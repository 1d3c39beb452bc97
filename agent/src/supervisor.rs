//! The event loop and sole owner of every instance, the pid map and the runtime scale counts.
//!
//! Everything else sends it an `Event`: a command from a handler (with a reply channel), a
//! spawn report, a reaped exit, a timer, or a signal to the agent. It steps the instance's
//! state machine and carries out the actions. Handlers that must wait for an outcome get
//! a receiver that is resolved when the instance is up or down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use procctl_proto::{
    ErrorKind, EventKind, Exit, InstanceId, InstanceInfo, Outcome, OutcomeKind, ReloadReport, Signal, State, Target,
    WireError,
};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::config::{Config, MAX_INSTANCES, Pipe, ProcessSpec};
use crate::events::Bus;
use crate::instance::{Action, Input, Instance, Timer};
use crate::logs::{self, Follow, SharedSink, Sink};
use crate::pipe::{self, PipeRef};
use crate::spawn::{Exec, ExecCheck, PIPE_FD, SpawnReport, SpawnRequest};
use crate::table::{self, Row, ScaleOverride, TableFile};

/// The first wait after a SIGKILL before checking that the group is gone; it doubles up to a second.
const RECHECK_FIRST: Duration = Duration::from_millis(20);
const RECHECK_MAX: Duration = Duration::from_secs(1);
/// A change after a quiet spell is written at once; further changes within this window are
/// written together at its end.
const SAVE_WINDOW: Duration = Duration::from_millis(10);

pub enum Event {
    Command(Command),
    Spawn(SpawnReport),
    Reaped {
        pid: i32,
        exit: Exit,
    },
    Timer {
        id: InstanceId,
        timer: Timer,
        generation: u64,
    },
    /// The exec-error pipe of this run has something to say (exec done, or errno).
    ExecSettled {
        id: InstanceId,
        pid: i32,
    },
    /// Is the group of SIGKILLed run `run` gone yet? Dropped once the instance has moved on.
    Recheck {
        id: InstanceId,
        run: u64,
        attempt: u32,
    },
    Signal(AgentSignal),
    /// Time to write the table: `SAVE_WINDOW` after the first unsaved change.
    Save,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSignal {
    /// SIGTERM or SIGINT: shut down; a second one kills what is left.
    Terminate,
}

type Reply<T> = oneshot::Sender<Result<T, WireError>>;

/// Where each message of a send goes: an instance and its pipe, or why it has none.
pub type Routes = Vec<(InstanceId, Result<PipeRef, WireError>)>;

pub enum Command {
    List {
        target: Target,
        reply: Reply<Vec<InstanceInfo>>,
    },
    Resolve {
        target: Target,
        reply: Reply<Vec<InstanceId>>,
    },
    Start {
        target: Target,
        reply: Reply<Vec<Pending>>,
    },
    Stop {
        target: Target,
        reply: Reply<Vec<Pending>>,
    },
    Signal {
        target: Target,
        signal: Signal,
        reply: Reply<Vec<Outcome>>,
    },
    Scale {
        name: String,
        count: u32,
        reply: Reply<ScalePlan>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// The pipes to send to: every target instance, or with `any`, the running instances of
    /// the process starting at the next in turn (message i goes to entry i mod len), the turn
    /// moving on by `count` messages.
    Pipes {
        target: Target,
        any: bool,
        count: usize,
        reply: Reply<Routes>,
    },
    /// The output sinks of the target instances, for `logs`.
    Sinks {
        target: Target,
        reply: Reply<Vec<SharedSink>>,
    },
    /// Re-read the config and apply all but the rolling restarts, which the handler does.
    Reload {
        reply: Reply<ReloadPlan>,
    },
}

/// An instance a start or stop touched, and how to learn the result.
pub struct Pending {
    pub id: InstanceId,
    pub pid_before: Option<u32>,
    pub settle: Settle,
}

pub enum Settle {
    /// Nothing to do: already in the state asked for.
    Already,

    Wait(oneshot::Receiver<Settled>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Up {
        pid: u32,
    },
    Down,
    /// A start that ended at rest instead of running.
    NotUp {
        state: State,
        last_exit: Option<Exit>,
        /// Why the last start failed, when the program never ran.
        error: Option<String>,
    },
}

#[derive(Default)]
pub struct ReloadPlan {
    pub report: ReloadReport,
    pub starting: Vec<Pending>,
    pub stopping: Vec<Pending>,
    /// Instances of changed processes, to restart one at a time.
    pub restart: Vec<InstanceId>,
}

pub struct ScalePlan {
    pub from: u32,
    pub to: u32,
    pub starting: Vec<Pending>,
    pub stopping: Vec<Pending>,
}

/// What handlers hold to talk to the supervisor.
#[derive(Clone)]
pub struct Handle {
    events: tokio_mpsc::UnboundedSender<Event>,
}

fn gone() -> WireError {
    WireError::new(ErrorKind::ShuttingDown, "the agent is shutting down")
}

impl Handle {
    pub fn new(events: tokio_mpsc::UnboundedSender<Event>) -> Self {
        Handle { events }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, WireError> {
        let (reply, answer) = oneshot::channel();
        self.events.send(Event::Command(make(reply))).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub async fn list(&self, target: Target) -> Result<Vec<InstanceInfo>, WireError> {
        self.call(|reply| Command::List { target, reply }).await
    }

    pub async fn resolve(&self, target: Target) -> Result<Vec<InstanceId>, WireError> {
        self.call(|reply| Command::Resolve { target, reply }).await
    }

    pub async fn start(&self, target: Target) -> Result<Vec<Pending>, WireError> {
        self.call(|reply| Command::Start { target, reply }).await
    }

    pub async fn stop(&self, target: Target) -> Result<Vec<Pending>, WireError> {
        self.call(|reply| Command::Stop { target, reply }).await
    }

    pub async fn signal(&self, target: Target, signal: Signal) -> Result<Vec<Outcome>, WireError> {
        self.call(|reply| Command::Signal { target, signal, reply }).await
    }

    pub async fn scale(&self, name: String, count: u32) -> Result<ScalePlan, WireError> {
        self.call(|reply| Command::Scale { name, count, reply }).await
    }

    pub async fn pipes(&self, target: Target, any: bool, count: usize) -> Result<Routes, WireError> {
        self.call(|reply| Command::Pipes { target, any, count, reply }).await
    }

    pub async fn sinks(&self, target: Target) -> Result<Vec<SharedSink>, WireError> {
        self.call(|reply| Command::Sinks { target, reply }).await
    }

    pub async fn reload(&self) -> Result<ReloadPlan, WireError> {
        self.call(|reply| Command::Reload { reply }).await
    }

    pub async fn shutdown(&self) -> Result<(), WireError> {
        let (reply, done) = oneshot::channel();
        self.events.send(Event::Command(Command::Shutdown { reply })).map_err(|_| gone())?;
        done.await.map_err(|_| gone())
    }
}

struct Slot {
    inst: Instance,
    spawn_seq: Option<u64>,
    start_time: Option<u64>,
    /// The message pipe of the current run.
    pipe: Option<PipeRef>,
    /// Where its output goes; outlives runs.
    sink: SharedSink,
    /// Scaled away: leaves the table once down.
    removing: bool,
    /// Why the last start failed, when it did (bad cwd, program not found, exec error).
    start_error: Option<String>,
    /// Whether the current run could exec its program, until that is known.
    exec_check: Option<ExecCheck>,
    up_waiters: Vec<oneshot::Sender<Settled>>,
    down_waiters: Vec<oneshot::Sender<Settled>>,
}

impl Slot {
    fn new(sink: SharedSink) -> Slot {
        Slot {
            inst: Instance::new(),
            spawn_seq: None,
            start_time: None,
            pipe: None,
            sink,
            removing: false,
            start_error: None,
            exec_check: None,
            up_waiters: vec![],
            down_waiters: vec![],
        }
    }

    fn pid(&self) -> Option<u32> {
        self.inst.pid.map(|pid| pid as u32)
    }
}

pub struct Supervisor {
    config: Config,
    socket: PathBuf,
    state_dir: PathBuf,
    slots: BTreeMap<InstanceId, Slot>,
    by_pid: HashMap<i32, InstanceId>,
    spawning: HashMap<u64, InstanceId>,
    next_seq: u64,
    scaled: BTreeMap<String, ScaleOverride>,
    base_env: Vec<(String, String)>,
    spawner: mpsc::Sender<SpawnRequest>,
    writer: table::Writer,
    events: tokio_mpsc::UnboundedSender<Event>,
    bus: Bus,
    follow: Follow,
    /// The next instance `send --any` picks, by process name.
    round_robin: HashMap<String, usize>,
    /// Processes a reload removed: their spec stays in `config` until their instances are gone.
    retired: HashSet<String>,
    dirty: bool,
    save_armed: bool,
    last_save: Instant,
    shutting_down: bool,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    rng: u64,
}

pub struct Parts {
    pub config: Config,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub previous: Option<TableFile>,
    pub spawner: mpsc::Sender<SpawnRequest>,
    pub writer: table::Writer,
    pub events: tokio_mpsc::UnboundedSender<Event>,
    pub bus: Bus,
    pub follow: Follow,
}

impl Supervisor {
    /// Builds the table from the config (and the scale counts of `previous`) and starts
    /// every autostart instance.
    pub fn new(parts: Parts) -> Supervisor {
        let scaled = parts
            .previous
            .map(|table| table.scaled)
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, over)| {
                parts.config.processes.get(name).is_some_and(|spec| spec.instances == over.config_instances)
            })
            .collect();
        let base_env = std::env::vars().filter(|(k, _)| !k.starts_with("PROCCTL_")).collect();
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let mut sup = Supervisor {
            config: parts.config,
            socket: parts.socket,
            state_dir: parts.state_dir,
            slots: BTreeMap::new(),
            by_pid: HashMap::new(),
            spawning: HashMap::new(),
            next_seq: 0,
            scaled,
            base_env,
            spawner: parts.spawner,
            writer: parts.writer,
            events: parts.events,
            bus: parts.bus,
            follow: parts.follow,
            round_robin: HashMap::new(),
            retired: HashSet::new(),
            dirty: true,
            save_armed: false,
            last_save: Instant::now() - SAVE_WINDOW,
            shutting_down: false,
            shutdown_waiters: vec![],
            rng: seed | 1,
        };
        let names: Vec<String> = sup.config.processes.keys().cloned().collect();
        for name in names {
            let autostart = sup.config.processes[&name].autostart;
            for index in 0..sup.desired(&name) {
                let id = InstanceId::new(name.clone(), index);
                let slot = sup.new_slot(&id);
                sup.slots.insert(id.clone(), slot);
                if autostart {
                    sup.step(&id, Input::Start);
                }
            }
        }
        sup
    }

    /// Runs until a shutdown has stopped every instance.
    pub async fn run(mut self, mut events: tokio_mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = events.recv().await {
            self.handle(event);
            // Take the whole burst before writing the table once.
            while let Ok(event) = events.try_recv() {
                self.handle(event);
            }
            if self.dirty && !self.save_armed {
                let since = self.last_save.elapsed();
                if since >= SAVE_WINDOW {
                    self.save();
                } else {
                    self.save_armed = true;
                    self.after(SAVE_WINDOW - since, Event::Save);
                }
            }
            if self.shutting_down && self.slots.values().all(|slot| slot.inst.is_down()) {
                break;
            }
        }
        let nothing_left = crate::reclaim::stop_adopted().await;
        let mut last = self.snapshot();
        if nothing_left {
            last.agent_token = None; // the next agent has no stray of this run to look for
        }
        self.writer.save(last);
        self.writer.flush();
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn new_slot(&self, id: &InstanceId) -> Slot {
        let spec = &self.config.processes[&id.name];
        Slot::new(Sink::new(id.clone(), &self.state_dir.join("logs"), spec.log_max_size, spec.log_files))
    }

    fn save(&mut self) {
        self.dirty = false;
        self.last_save = Instant::now();
        self.writer.save(self.snapshot());
    }

    fn desired(&self, name: &str) -> u32 {
        match (self.scaled.get(name), self.config.processes.get(name)) {
            (Some(over), Some(spec)) if over.config_instances == spec.instances => over.count,
            (_, Some(spec)) => spec.instances,
            (_, None) => 0,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Command(command) => self.on_command(command),
            Event::Spawn(SpawnReport::Spawned { seq, pid, start_time, pipe, output, exec_check }) => {
                let Some(id) = self.spawning.remove(&seq) else {
                    // Nobody wants this child any more; it is reaped as a stray.
                    let _ = signal_group(pid, Signal::KILL);
                    return;
                };
                match exec_check.settled() {
                    Ok(settled) => {
                        let (events, id) = (self.events.clone(), id.clone());
                        tokio::spawn(async move {
                            settled.await;
                            let _ = events.send(Event::ExecSettled { id, pid });
                        });
                    }
                    // Then the answer is read when the child is reaped.
                    Err(e) => log!("{id}: cannot watch the exec of pid {pid}: {e}"),
                }
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.spawn_seq = None;
                    slot.start_error = None;
                    slot.exec_check = Some(exec_check);
                    slot.start_time = start_time;
                    if let Err(e) = logs::capture(output, slot.sink.clone(), self.follow.clone()) {
                        log!("{id}: cannot capture output: {e}");
                    }
                    let replies = self.config.processes.get(&id.name).is_some_and(|spec| spec.pipe == Pipe::Fd);
                    slot.pipe = pipe.and_then(|fd| match pipe::start(fd, id.clone(), replies, self.bus.clone()) {
                        Ok(pipe) => Some(pipe),
                        Err(e) => {
                            log!("{id}: cannot set up the message pipe: {e}");
                            None
                        }
                    });
                    self.by_pid.insert(pid, id.clone());
                    self.bus.emit(EventKind::Spawned { id: id.clone(), pid: pid as u32 });
                    self.step(&id, Input::Spawned { pid, at: SystemTime::now() });
                }
            }
            Event::Spawn(SpawnReport::Failed { seq, error }) => {
                let Some(id) = self.spawning.remove(&seq) else {
                    log!("a start nobody waits for failed: {error}");
                    return;
                };
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.spawn_seq = None;
                }
                self.start_failed(&id, error);
                self.step(&id, Input::SpawnFailed);
            }
            Event::ExecSettled { id, pid } => self.on_exec_settled(&id, pid),
            Event::Reaped { pid, exit } => self.on_reaped(pid, exit),
            Event::Timer { id, timer, generation } => self.step(&id, Input::Timer { timer, generation }),
            Event::Recheck { id, run, attempt } => self.on_recheck(id, run, attempt),
            Event::Save => {
                self.save_armed = false;
                self.save();
            }
            Event::Signal(AgentSignal::Terminate) if self.shutting_down => {
                log!("second stop signal: killing what is left");
                for pgid in self.slots.values().filter_map(|slot| slot.inst.pgid) {
                    let _ = signal_group(pgid, Signal::KILL);
                }
            }
            Event::Signal(AgentSignal::Terminate) => {
                log!("stop signal: shutting down");
                self.begin_shutdown();
            }
        }
    }

    fn on_reaped(&mut self, pid: i32, exit: Exit) {
        let Some(id) = self.by_pid.remove(&pid) else {
            // A grandchild handed to us as subreaper: its group may now be empty.
            self.check_draining_groups();
            return;
        };
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.pipe = None;
        let group_left = slot.inst.pgid.is_some_and(group_alive);
        if slot.inst.state != State::Stopping {
            log!("{id} exited ({exit})");
        }
        // The child is gone, so the pipe holds its answer if the watcher has not had it read.
        self.read_exec(&id);
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.exec_check = None;
        }
        self.bus.emit(EventKind::Exited { id: id.clone(), pid: pid as u32, exit });
        self.step(&id, Input::Exited { exit, group_left });
    }

    /// The watcher saw the exec-error pipe of run `pid` become readable.
    fn on_exec_settled(&mut self, id: &InstanceId, pid: i32) {
        if self.slots.get(id).is_some_and(|slot| slot.inst.pid == Some(pid)) {
            self.read_exec(id);
        } // else already reaped: the answer was read then
    }

    /// Reads the current run's exec-error pipe: closes it once the child has exec'd, says
    /// why when it could not, and keeps it while the answer is not there yet.
    fn read_exec(&mut self, id: &InstanceId) {
        let Some(check) = self.slots.get_mut(id).and_then(|slot| slot.exec_check.take()) else {
            return;
        };
        match check.read() {
            Exec::Done => {}
            Exec::Failed(error) => self.start_failed(id, error),
            Exec::Pending => {
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.exec_check = Some(check);
                }
            }
        }
    }

    fn check_draining_groups(&mut self) {
        let gone: Vec<InstanceId> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.inst.pid.is_none() && slot.inst.pgid.is_some_and(|pgid| !group_alive(pgid)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.step(&id, Input::GroupGone);
        }
    }

    fn on_recheck(&mut self, id: InstanceId, run: u64, attempt: u32) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        let (Some(pgid), true) = (slot.inst.pgid, slot.inst.run == run) else {
            return; // that run's group is gone and the instance has moved on
        };
        if slot.inst.pid.is_none() && !group_alive(pgid) {
            self.step(&id, Input::GroupGone);
            return;
        }
        let _ = signal_group(pgid, Signal::KILL);
        let delay = (RECHECK_FIRST * 2u32.pow(attempt.min(10))).min(RECHECK_MAX);
        self.after(delay, Event::Recheck { id, run, attempt: attempt + 1 });
    }

    /// Feeds one input to one instance and carries out what it returns.
    fn step(&mut self, id: &InstanceId, input: Input) {
        let (Some(slot), Some(spec)) = (self.slots.get_mut(id), self.config.processes.get(&id.name)) else {
            return;
        };
        let before = slot.inst.state;
        let actions = slot.inst.step(input, spec);
        if slot.inst.state != before {
            self.dirty = true;
            match slot.inst.state {
                State::Running => {
                    let pid = slot.pid().unwrap_or_default();
                    self.bus.emit(EventKind::Started { id: id.clone(), pid });
                }
                State::Fatal => {
                    log!("{id} is fatal: it failed {} starts in a row", spec.start_retries);
                    self.bus.emit(EventKind::Fatal { id: id.clone() });
                }
                State::Stopped => self.bus.emit(EventKind::Stopped { id: id.clone() }),
                _ => {}
            }
        }
        for action in actions {
            self.act(id, action);
        }
        self.settle(id, before);
    }

    fn act(&mut self, id: &InstanceId, action: Action) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        match action {
            Action::Spawn => {
                self.next_seq += 1;
                let seq = self.next_seq;
                slot.spawn_seq = Some(seq);
                self.spawning.insert(seq, id.clone());
                let request = self.spawn_request(seq, id);
                if self.spawner.send(request).is_err() {
                    self.spawning.remove(&seq);
                    self.step(id, Input::SpawnFailed);
                }
            }
            Action::SignalGroup(signal) => {
                if let Some(pgid) = slot.inst.pgid {
                    let _ = signal_group(pgid, signal);
                    // A process stopped with SIGSTOP only acts on the signal once continued.
                    let _ = signal_group(pgid, Signal::CONT);
                }
            }
            Action::KillGroup => {
                if let Some(pgid) = slot.inst.pgid {
                    log!("{id} did not stop in time: SIGKILL to its group");
                    let _ = signal_group(pgid, Signal::KILL);
                    let run = slot.inst.run;
                    self.after(RECHECK_FIRST, Event::Recheck { id: id.clone(), run, attempt: 1 });
                }
            }
            Action::Arm { timer, after, generation } => {
                let after = if timer == Timer::Backoff { self.jitter(after) } else { after };
                if timer == Timer::Backoff {
                    self.bus.emit(EventKind::Backoff { id: id.clone(), delay_ms: after.as_millis() as u64 });
                }
                self.after(after, Event::Timer { id: id.clone(), timer, generation });
            }
        }
    }

    /// Says why a start failed: in the agent's log, in the instance's own log (so that
    /// `procctl logs` shows it) and to whoever waits for the instance to come up.
    fn start_failed(&mut self, id: &InstanceId, error: String) {
        log!("{id}: {error}");
        if let Some(slot) = self.slots.get_mut(id) {
            logs::note(&slot.sink, &self.follow, &format!("procagent: {error}"));
            slot.start_error = Some(error);
        }
    }

    fn after(&self, delay: Duration, event: Event) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(event);
        });
    }

    /// Up to 10% either way, so instances that failed together do not restart in lockstep.
    fn jitter(&mut self, delay: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let permille = (self.rng % 201) as u32 + 900;
        delay * permille / 1000
    }

    fn spawn_request(&self, seq: u64, id: &InstanceId) -> SpawnRequest {
        let spec = &self.config.processes[&id.name];
        let mut env = self.base_env.clone();
        env.retain(|(k, _)| !spec.env.contains_key(k));
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("PROCCTL_NAME".into(), id.name.clone()));
        env.push(("PROCCTL_INSTANCE".into(), id.index.to_string()));
        env.push(("PROCCTL_SOCKET".into(), self.socket.display().to_string()));
        env.push((crate::reclaim::TOKEN_VAR.into(), crate::reclaim::token().to_owned()));
        if spec.pipe == Pipe::Fd {
            env.push(("PROCCTL_PIPE_FD".into(), PIPE_FD.to_string()));
        }
        SpawnRequest { seq, argv: spec.command.clone(), env, cwd: spec.cwd.clone(), pipe: spec.pipe }
    }

    fn settle_now(&mut self, id: &InstanceId) {
        if let Some(state) = self.slots.get(id).map(|slot| slot.inst.state) {
            self.settle(id, state);
        }
    }

    /// Keeps an instance that an earlier scale or reload was taking away; that request's
    /// wait for it to go ends here.
    fn keep(&mut self, id: &InstanceId) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.removing = false;
            for waiter in slot.down_waiters.drain(..) {
                let _ = waiter.send(Settled::Down);
            }
        }
    }

    /// Resolves waiters whose condition now holds, and drops a scaled-away instance once down.
    /// A stop is done when its instance is down, or when it left `stopping` for a start that
    /// came meanwhile.
    fn settle(&mut self, id: &InstanceId, before: State) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let inst = &slot.inst;
        if before == State::Stopping && inst.state != State::Stopping {
            for waiter in slot.down_waiters.drain(..) {
                let _ = waiter.send(Settled::Down);
            }
        }
        if inst.is_up() {
            let pid = slot.pid().unwrap_or_default();
            for waiter in slot.up_waiters.drain(..) {
                let _ = waiter.send(Settled::Up { pid });
            }
        } else if matches!(inst.state, State::Stopped | State::Exited | State::Fatal) {
            for waiter in slot.up_waiters.drain(..) {
                let error = slot.start_error.clone();
                let _ = waiter.send(Settled::NotUp { state: inst.state, last_exit: inst.last_exit, error });
            }
        }
        if inst.is_down() {
            for waiter in slot.down_waiters.drain(..) {
                let _ = waiter.send(Settled::Down);
            }
            if slot.removing {
                self.slots.remove(id);
                self.dirty = true;
                if self.retired.contains(&id.name) && !self.slots.keys().any(|other| other.name == id.name) {
                    self.retired.remove(&id.name);
                    self.config.processes.remove(&id.name);
                    self.scaled.remove(&id.name);
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::List { target, reply } => {
                let result = self.resolve(&target).map(|ids| ids.iter().map(|id| self.info(id)).collect());
                let _ = reply.send(result);
            }
            Command::Resolve { target, reply } => {
                let _ = reply.send(self.resolve(&target));
            }
            Command::Start { target, reply } => {
                let result = self.refuse_when_shutting_down().and_then(|()| self.startable(&target));
                let _ = reply.send(result.map(|ids| ids.into_iter().map(|id| self.start(id)).collect()));
            }
            Command::Stop { target, reply } => {
                let result = self.resolve(&target);
                let _ = reply.send(result.map(|ids| ids.into_iter().map(|id| self.stop(id)).collect()));
            }
            Command::Signal { target, signal, reply } => {
                let result =
                    self.resolve(&target).map(|ids| ids.into_iter().map(|id| self.signal(id, signal)).collect());
                let _ = reply.send(result);
            }
            Command::Scale { name, count, reply } => {
                let _ = reply.send(self.scale(&name, count, true));
            }
            Command::Shutdown { reply } => {
                self.shutdown_waiters.push(reply);
                self.begin_shutdown();
            }
            Command::Pipes { target, any, count, reply } => {
                let _ = reply.send(self.pipes(&target, any, count));
            }
            Command::Reload { reply } => {
                let _ = reply.send(self.reload());
            }
            Command::Sinks { target, reply } => {
                let sinks = self.resolve(&target).map(|ids| ids.iter().map(|id| self.slots[id].sink.clone()).collect());
                let _ = reply.send(sinks);
            }
        }
    }

    fn refuse_when_shutting_down(&self) -> Result<(), WireError> {
        if self.shutting_down { Err(gone()) } else { Ok(()) }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        let ids: Vec<InstanceId> = self.slots.keys().cloned().collect();
        for id in ids {
            self.step(&id, Input::Stop);
        }
    }

    fn resolve(&self, target: &Target) -> Result<Vec<InstanceId>, WireError> {
        let ids: Vec<InstanceId> = self.slots.keys().filter(|id| target.matches(id)).cloned().collect();
        match target {
            Target::All => Ok(ids),
            Target::Name(name) | Target::Instance(InstanceId { name, .. })
                if !self.config.processes.contains_key(name) =>
            {
                Err(WireError::new(ErrorKind::NotFound, format!("no process named `{name}`")))
            }
            Target::Instance(id) if ids.is_empty() => {
                let count = self.slots.keys().filter(|other| other.name == id.name).count();
                Err(WireError::new(
                    ErrorKind::NotFound,
                    format!("no instance `{id}`: `{}` has {count} instance{}", id.name, plural(count)),
                ))
            }
            _ => Ok(ids),
        }
    }

    /// The target's instances, less those a scale or reload is taking away (naming one of
    /// those on its own is refused).
    fn startable(&self, target: &Target) -> Result<Vec<InstanceId>, WireError> {
        let ids = self.resolve(target)?;
        if let (Target::Instance(id), true) = (target, ids.iter().all(|id| self.slots[id].removing)) {
            return Err(WireError::new(
                ErrorKind::Refused,
                format!("{id} is being removed (scaled down or reloaded away)"),
            ));
        }
        Ok(ids.into_iter().filter(|id| !self.slots[id].removing).collect())
    }

    fn info(&self, id: &InstanceId) -> InstanceInfo {
        let slot = &self.slots[id];
        let uptime_secs = slot
            .inst
            .pid
            .and(slot.inst.started_at)
            .map(|at| SystemTime::now().duration_since(at).map_or(0, |d| d.as_secs()));
        InstanceInfo {
            id: id.clone(),
            pid: slot.pid(),
            state: slot.inst.state,
            uptime_secs,
            restarts: slot.inst.restarts,
            last_exit: slot.inst.last_exit,
        }
    }

    fn start(&mut self, id: InstanceId) -> Pending {
        let slot = self.slots.get_mut(&id).expect("resolved ids exist");
        let pid_before = slot.pid();
        let settle = match slot.inst.state {
            State::Running => Settle::Already,
            // Started once the stop is done.
            State::Stopping => {
                let (waiter, settled) = oneshot::channel();
                slot.up_waiters.push(waiter);
                self.step(&id, Input::Start);
                Settle::Wait(settled)
            }
            State::Starting | State::Backoff => {
                let (waiter, settled) = oneshot::channel();
                slot.up_waiters.push(waiter);
                Settle::Wait(settled)
            }
            State::Stopped | State::Exited | State::Fatal => {
                let (waiter, settled) = oneshot::channel();
                slot.up_waiters.push(waiter);
                self.step(&id, Input::Start);
                Settle::Wait(settled)
            }
        };
        Pending { id, pid_before, settle }
    }

    fn stop(&mut self, id: InstanceId) -> Pending {
        let slot = self.slots.get_mut(&id).expect("resolved ids exist");
        let pid_before = slot.pid();
        if slot.inst.is_down() {
            return Pending { id, pid_before, settle: Settle::Already };
        }
        let (waiter, settled) = oneshot::channel();
        slot.down_waiters.push(waiter);
        self.step(&id, Input::Stop);
        Pending { id, pid_before, settle: Settle::Wait(settled) }
    }

    fn signal(&mut self, id: InstanceId, signal: Signal) -> Outcome {
        let slot = &self.slots[&id];
        let kind = match (slot.inst.pid, slot.inst.pgid) {
            (Some(pid), Some(pgid)) => match signal_group(pgid, signal) {
                Ok(()) => OutcomeKind::Signalled { pid: pid as u32, signal },
                Err(e) => OutcomeKind::Failed(WireError::new(ErrorKind::Failed, format!("{id}: {e}"))),
            },
            _ => OutcomeKind::Failed(WireError::new(
                ErrorKind::NotRunning,
                format!("{id} is not running (state {})", slot.inst.state),
            )),
        };
        Outcome { id, kind }
    }

    /// Adds or takes away instances until `count` exist; the added ones start when `start`.
    fn scale(&mut self, name: &str, count: u32, start: bool) -> Result<ScalePlan, WireError> {
        self.refuse_when_shutting_down()?;
        let Some(spec) = self.config.processes.get(name) else {
            return Err(WireError::new(ErrorKind::NotFound, format!("no process named `{name}`")));
        };
        if count > MAX_INSTANCES {
            return Err(WireError::new(
                ErrorKind::BadRequest,
                format!("cannot scale `{name}` to {count}: the limit is {MAX_INSTANCES}"),
            ));
        }
        let config_instances = spec.instances;
        let from = self.count(name);
        self.scaled.insert(name.to_string(), ScaleOverride { count, config_instances });
        self.dirty = true;
        let mut starting = vec![];
        for index in 0..count {
            let id = InstanceId::new(name, index);
            match self.slots.get(&id) {
                // An instance that stays keeps whatever state it is in.
                Some(slot) if !slot.removing => continue,
                // Being scaled away by an earlier request: keep it after all.
                Some(_) => self.keep(&id),
                None => {
                    let slot = self.new_slot(&id);
                    self.slots.insert(id.clone(), slot);
                }
            }
            if start {
                starting.push(self.start(id));
            }
        }
        let doomed: Vec<InstanceId> = self
            .slots
            .iter()
            .filter(|(id, slot)| id.name == name && id.index >= count && !slot.removing)
            .map(|(id, _)| id.clone())
            .rev()
            .collect();
        let mut stopping = vec![];
        for id in doomed {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.removing = true;
            }
            stopping.push(self.stop(id.clone()));
            self.settle_now(&id);
        }
        if from != count {
            self.bus.emit(EventKind::Scaled { name: name.to_string(), from, to: count });
        }
        Ok(ScalePlan { from, to: count, starting, stopping })
    }

    fn reload(&mut self) -> Result<ReloadPlan, WireError> {
        self.refuse_when_shutting_down()?;
        let mut fresh = Config::load(&self.config.path)
            .map_err(|e| WireError::new(ErrorKind::Refused, format!("reload refused, nothing changed: {e}")))?;
        let mut plan = ReloadPlan::default();
        let report = &mut plan.report;
        for (name, spec) in &fresh.processes {
            match self.config.processes.get(name).filter(|_| !self.retired.contains(name)) {
                None => report.added.push(name.clone()),
                Some(old) => {
                    let counts_aside = |s: &ProcessSpec| ProcessSpec { instances: 0, autostart: false, ..s.clone() };
                    if counts_aside(old) != counts_aside(spec) {
                        report.changed.push(name.clone());
                    }
                    if old.instances != spec.instances {
                        report.rescaled.push((name.clone(), self.count(name), spec.instances));
                    }
                }
            }
        }
        for name in self.config.processes.keys() {
            if !fresh.processes.contains_key(name) && !self.retired.contains(name) {
                report.removed.push(name.clone());
            }
        }
        // A removed process keeps its spec until its instances are gone.
        for name in report.removed.iter().chain(&self.retired) {
            fresh.processes.insert(name.clone(), self.config.processes[name].clone());
        }
        let report = plan.report.clone();
        plan.restart = self
            .slots
            .iter()
            .filter(|(id, slot)| report.changed.contains(&id.name) && !slot.removing)
            // Stopped on purpose (by `stop`, or never started with autostart = false): it
            // stays stopped and runs the new settings at its next start.
            .filter(|(_, slot)| !matches!(slot.inst.state, State::Stopped | State::Stopping))
            .filter(|(id, _)| {
                id.index < fresh.processes[&id.name].instances || !report.rescaled.iter().any(|r| r.0 == id.name)
            })
            .map(|(id, _)| id.clone())
            .collect();
        self.config.processes = fresh.processes;

        for name in &report.removed {
            self.retired.insert(name.clone());
            let ids: Vec<InstanceId> = self.slots.keys().filter(|id| id.name == *name).cloned().collect();
            for id in ids {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.removing = true;
                }
                plan.stopping.push(self.stop(id.clone()));
                self.settle_now(&id);
            }
        }
        for name in &report.added {
            self.scaled.remove(name);
            // Removed by an earlier reload and back before its instances were gone.
            self.retired.remove(name);
            let spec = &self.config.processes[name];
            let autostart = spec.autostart;
            for index in 0..spec.instances {
                let id = InstanceId::new(name.clone(), index);
                if self.slots.contains_key(&id) {
                    self.keep(&id);
                } else {
                    let slot = self.new_slot(&id);
                    self.slots.insert(id.clone(), slot);
                }
                if autostart {
                    plan.starting.push(self.start(id));
                }
            }
            // Old instances above the new count keep going away.
        }
        for (name, _, to) in &report.rescaled {
            // New instances follow `autostart`, as they would at agent start.
            let autostart = self.config.processes[name].autostart;
            let scale = self.scale(name, *to, autostart)?;
            // The config's count rules again: no runtime count is kept.
            self.scaled.remove(name);
            plan.starting.extend(scale.starting);
            plan.stopping.extend(scale.stopping);
        }
        for name in &report.changed {
            let spec = &self.config.processes[name];
            for slot in self.slots.iter().filter(|(id, _)| id.name == *name).map(|(_, slot)| slot) {
                slot.sink.lock().unwrap_or_else(|p| p.into_inner()).configure(spec.log_max_size, spec.log_files);
            }
        }
        self.dirty = true;
        Ok(plan)
    }

    /// Instances of `name` that are not on their way out.
    fn count(&self, name: &str) -> u32 {
        self.slots.iter().filter(|(id, slot)| id.name == name && !slot.removing).count() as u32
    }

    fn pipes(&mut self, target: &Target, any: bool, count: usize) -> Result<Routes, WireError> {
        let ids = self.resolve(target)?;
        let pipe_of = |id: &InstanceId| -> Result<PipeRef, WireError> {
            let slot = &self.slots[id];
            let deliverable = matches!(slot.inst.state, State::Starting | State::Running) && slot.inst.pid.is_some();
            match (&slot.pipe, deliverable) {
                (Some(pipe), true) => Ok(pipe.clone()),
                (_, false) => Err(WireError::new(
                    ErrorKind::NotRunning,
                    format!("{id} is not running (state {})", slot.inst.state),
                )),
                (None, true) if self.config.processes[&id.name].pipe == Pipe::None => {
                    Err(WireError::new(ErrorKind::Refused, format!("{id} has no message pipe (pipe = \"none\")")))
                }
                (None, true) => Err(WireError::new(ErrorKind::Failed, format!("{id}: its message pipe is closed"))),
            }
        };
        if !any {
            return Ok(ids.iter().map(|id| (id.clone(), pipe_of(id))).collect());
        }
        let running: Vec<(InstanceId, PipeRef)> =
            ids.iter().filter_map(|id| pipe_of(id).ok().map(|pipe| (id.clone(), pipe))).collect();
        if running.is_empty() {
            return Err(WireError::new(ErrorKind::NotRunning, format!("no running instance of {target} to send to")));
        }
        let next = self.round_robin.entry(target.name().unwrap_or("all").to_string()).or_default();
        let start = *next % running.len();
        *next = (start + count) % running.len();
        let mut routes: Routes = running.into_iter().map(|(id, pipe)| (id, Ok(pipe))).collect();
        routes.rotate_left(start);
        Ok(routes)
    }

    fn snapshot(&self) -> TableFile {
        let instances = self
            .slots
            .iter()
            .map(|(id, slot)| Row {
                name: id.name.clone(),
                index: id.index,
                pid: slot.inst.pid,
                pgid: slot.inst.pgid,
                start_time: slot.start_time.filter(|_| slot.inst.pgid.is_some()),
                state: slot.inst.state.to_string(),
                restarts: slot.inst.restarts,
                last_exit: slot.inst.last_exit.map(Into::into),
            })
            .collect();
        TableFile {
            version: table::TABLE_VERSION,
            agent_pid: std::process::id(),
            agent_token: Some(crate::reclaim::token().to_owned()),
            instances,
            scaled: self.scaled.clone(),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Sends `signal` to every process in group `pgid` (realtime signals included).
fn signal_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    // SAFETY: kill takes plain integers and touches no memory.
    Errno::result(unsafe { libc::kill(-pgid, signal.number()) }).map(drop)
}

/// Whether any process (a zombie included) is left in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    !matches!(kill(Pid::from_raw(-pgid), None), Err(Errno::ESRCH))
}
