//! The event loop and sole owner of every instance, the pid map, the runtime scale counts
//! and the config (a reload swaps it).
//!
//! Everything else sends it an `Event`: a command from a handler (with a reply channel), a
//! spawn report, a reaped exit, a cgroup change, a notify message, a probe result, or a
//! signal to the agent; its own timers wake it too. It feeds each instance's state machine
//! (`instance.rs`) and carries out the actions. By concern: `api` is what handlers ask and
//! get, `lifecycle` runs instances (spawn, reap, signals, rechecks), `scale`, `reload` and
//! `routes` plan and apply those requests, `readiness` and `deps` decide when a run is ready
//! and when a dependent may start, `service` speaks to the agent's own service manager,
//! `usage` samples CPU and memory, `persist` writes the table, `timers` is the one timer
//! queue.

mod api;
mod deps;
mod lifecycle;
mod metrics;
mod persist;
mod readiness;
mod reload;
mod routes;
mod scale;
mod service;
mod timers;
mod usage;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use procctl_proto::{ErrorKind, Exit, Health, InstanceId, InstanceInfo, Target, WireError};
use tokio::sync::{mpsc as tokio_mpsc, oneshot, watch};
use tokio_util::time::delay_queue::Key;

use api::gone;
pub use api::{Command, Handle, Pending, Settle, Settled};
pub use readiness::Purpose;
pub use service::Service;
use timers::{Armed, Due, Timers};

use crate::config::Config;
use crate::events::Bus;
use crate::instance::{Input, Instance};
use crate::logs::{Follow, SharedSink, Sink};
use crate::pipe::PipeRef;
use crate::spawn::{Sent, Spawner};
use crate::table::{self, ScaleOverride, TableFile};

pub enum Event {
    Command(Command),
    Spawn(Sent),
    Reaped {
        pid: i32,
        exit: Exit,
    },
    /// The `cgroup.events` of a draining run changed.
    CgroupChanged(inotify::WatchDescriptor),
    /// An sd_notify datagram on the notify socket.
    Notify(crate::notify::Message),
    /// A try of a ready or health probe of run `run` ended.
    Probed {
        id: InstanceId,
        run: u64,
        purpose: Purpose,
        result: Result<(), String>,
    },
    /// Run `run` printed the line its `ready = { log = … }` waits for.
    LogReady {
        id: InstanceId,
        run: u64,
    },
    Signal(AgentSignal),
}

/// What a spawn in flight is for.
enum Spawning {
    Run(InstanceId),
    /// An `exec` probe, cut at `timeout`.
    Probe {
        id: InstanceId,
        run: u64,
        purpose: Purpose,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSignal {
    /// SIGTERM or SIGINT: shut down; a second one kills what is left.
    Terminate,
}

/// One instance and what belongs to its runs besides the state machine.
struct Slot {
    inst: Instance,
    spawn_seq: Option<u64>,
    start_time: Option<u64>,
    /// The message pipe of the current run.
    pipe: Option<PipeRef>,
    /// Where its output goes; outlives runs.
    sink: SharedSink,
    /// Why the last start failed, when it did (bad cwd, program not found, exec error).
    start_error: Option<String>,
    up_waiters: Vec<oneshot::Sender<Settled>>,
    down_waiters: Vec<oneshot::Sender<Settled>>,
    timers: Armed,
    /// The last STATUS= of the current run.
    status: Option<String>,
    /// The health check's last verdict for the current run.
    health: Option<Health>,
    /// Failed health checks over all runs, for the metrics.
    health_failures: u64,
    /// The probe of the current run, when it has one going.
    checks: Option<readiness::Checks>,
    watchdog: Option<Key>,
    /// The cgroup of the run whose processes may be alive, with cgroup tracking.
    cgroup: Option<PathBuf>,
    /// Its `cgroup.events` watch, while it drains.
    cgroup_watch: Option<inotify::WatchDescriptor>,
    /// The last CPU sample: microseconds used, and when.
    cpu_sample: Option<(u64, std::time::Instant)>,
    /// The files CPU and memory are read from.
    usage: usage::Files,
}

impl Slot {
    fn new(sink: SharedSink) -> Slot {
        Slot {
            inst: Instance::new(),
            spawn_seq: None,
            start_time: None,
            pipe: None,
            sink,
            start_error: None,
            up_waiters: vec![],
            down_waiters: vec![],
            timers: Armed::default(),
            status: None,
            health: None,
            health_failures: 0,
            checks: None,
            watchdog: None,
            cgroup: None,
            cgroup_watch: None,
            cpu_sample: None,
            usage: usage::Files::default(),
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
    /// Spawns in flight, by the sequence number their report will carry.
    spawning: HashMap<u64, Spawning>,
    /// `exec` probes running, by pid; those past their timeout.
    probe_pids: HashMap<i32, readiness::ExecProbe>,
    timed_out: HashSet<i32>,
    /// `$NOTIFY_SOCKET` of the instances with `ready = "notify"`.
    notify_name: String,
    notify_refusals: u64,
    own_uid: u32,
    /// Instances in `waiting`, for their dependencies.
    waiting: BTreeSet<InstanceId>,
    /// Stops that wait for dependents to go first.
    deferred: Vec<deps::Deferred>,
    /// Bumped on every change that `list` shows, for `wait`.
    changes: watch::Sender<u64>,
    tracking: crate::cgroup::Tracking,
    inotify: inotify::Watches,
    cgroup_watches: HashMap<inotify::WatchDescriptor, InstanceId>,
    service: service::Service,
    /// Processes already warned about a limit their cgroup cannot have.
    limit_warned: HashSet<String>,
    next_seq: u64,
    scaled: BTreeMap<String, ScaleOverride>,
    base_env: Vec<(String, String)>,
    spawner: Spawner,
    persist: persist::Persist,
    timers: Timers,
    events: tokio_mpsc::UnboundedSender<Event>,
    bus: Bus,
    follow: Follow,
    /// The next instance `send --any` picks, by process name.
    round_robin: HashMap<String, usize>,
    /// Processes a reload removed: their spec stays in `config` until their instances are gone.
    retired: HashSet<String>,
    shutting_down: bool,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    rng: u64,
}

pub struct Parts {
    pub config: Config,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub previous: Option<TableFile>,
    pub spawner: Spawner,
    pub writer: table::Writer,
    pub events: tokio_mpsc::UnboundedSender<Event>,
    pub bus: Bus,
    pub follow: Follow,
    pub notify_name: String,
    pub changes: watch::Sender<u64>,
    pub tracking: crate::cgroup::Tracking,
    pub inotify: inotify::Watches,
    pub service: service::Service,
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
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let mut sup = Supervisor {
            config: parts.config,
            socket: parts.socket,
            state_dir: parts.state_dir,
            slots: BTreeMap::new(),
            by_pid: HashMap::new(),
            spawning: HashMap::new(),
            probe_pids: HashMap::new(),
            timed_out: HashSet::new(),
            notify_name: parts.notify_name,
            notify_refusals: 0,
            own_uid: nix::unistd::geteuid().as_raw(),
            waiting: BTreeSet::new(),
            deferred: vec![],
            changes: parts.changes,
            tracking: parts.tracking,
            inotify: parts.inotify,
            cgroup_watches: HashMap::new(),
            service: parts.service,
            limit_warned: HashSet::new(),
            next_seq: 0,
            scaled,
            base_env: crate::spawn::base_env(),
            spawner: parts.spawner,
            persist: persist::Persist::new(parts.writer),
            timers: Timers::default(),
            events: parts.events,
            bus: parts.bus,
            follow: parts.follow,
            round_robin: HashMap::new(),
            retired: HashSet::new(),
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
                    sup.expect_first_start(&id);
                }
            }
        }
        sup.warn_unlimited();
        let ids: Vec<InstanceId> = sup.service_pending();
        for id in ids {
            sup.start_with_dependencies(&id);
        }
        sup.service_ready_if_due();
        sup
    }

    /// A limit a process asks for that its cgroup cannot have: said once per process.
    fn warn_unlimited(&mut self) {
        let tree = self.tracking.tree();
        for (name, spec) in &self.config.processes {
            let missing: Vec<&str> =
                [("memory_max", "memory", spec.memory_max.is_some()), ("cpu_max", "cpu", spec.cpu_max.is_some())]
                    .into_iter()
                    .filter(|(_, controller, wanted)| *wanted && !tree.is_some_and(|t| t.has(controller)))
                    .map(|(key, _, _)| key)
                    .collect();
            if !missing.is_empty() && self.limit_warned.insert(name.clone()) {
                let why = match &self.tracking {
                    crate::cgroup::Tracking::Cgroups(_) => "its controller is not available in this cgroup".to_string(),
                    crate::cgroup::Tracking::Groups(why) => why.clone(),
                };
                log!("{name}: {} not applied ({why}); it runs without", missing.join(" and "));
            }
        }
    }

    fn service_pending(&self) -> Vec<InstanceId> {
        self.slots.keys().filter(|id| self.config.processes[&id.name].autostart).cloned().collect()
    }

    /// Runs until a shutdown has stopped every instance; returns the critical instance
    /// that caused it, if one did.
    pub async fn run(mut self, mut events: tokio_mpsc::UnboundedReceiver<Event>) -> Option<InstanceId> {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                due = self.timers.next(), if !self.timers.is_empty() => self.on_due(due),
            }
            // Take the whole burst before writing the table once.
            while let Ok(event) = events.try_recv() {
                self.handle(event);
            }
            self.save_if_due();
            if self.shutting_down && self.slots.values().all(|slot| slot.inst.is_down()) {
                break;
            }
        }
        let nothing_left = crate::reclaim::stop_adopted().await;
        let mut last = self.snapshot();
        if nothing_left {
            last.agent_token = None; // the next agent has no stray of this run to look for
        }
        self.persist.writer().save(last);
        self.persist.writer().flush();
        if let Some(tree) = self.tracking.tree() {
            tree.remove_all();
        }
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.service.critical.take()
    }

    fn new_slot(&self, id: &InstanceId) -> Slot {
        let spec = &self.config.processes[&id.name];
        Slot::new(Sink::new(id.clone(), &self.state_dir.join("logs"), spec.log_max_size, spec.log_files))
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
            Event::Spawn(sent) => {
                let report = self.spawner.claim(sent);
                self.on_spawn_report(report)
            }
            Event::Notify(message) => self.on_notify(message),
            Event::CgroupChanged(watch) => self.on_cgroup_event(watch),
            Event::Probed { id, run, purpose, result } => self.on_probed(id, run, purpose, result),
            Event::LogReady { id, run } => self.on_log_ready(id, run),
            Event::Reaped { pid, exit } => self.on_reaped(pid, exit),
            Event::Signal(AgentSignal::Terminate) if self.shutting_down => {
                log!("second stop signal: killing what is left");
                self.kill_everything();
            }
            Event::Signal(AgentSignal::Terminate) => {
                log!("stop signal: shutting down");
                self.begin_shutdown();
            }
        }
    }

    fn on_due(&mut self, due: Due) {
        match due {
            Due::Instance { id, timer, generation } => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    Timers::fired(&mut slot.timers, timer);
                }
                self.step(&id, Input::Timer { timer, generation });
            }
            Due::Recheck { id, run, attempt, vanished } => self.on_recheck(id, run, attempt, vanished),
            Due::Save => self.on_save_due(),
            Due::Probe { id, run, purpose } => self.on_probe_due(id, run, purpose),
            Due::Watchdog { id, run } => self.on_watchdog_due(id, run),
            Due::ProbeTimeout { pid } => self.on_probe_timeout(pid),
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::List { target, usage, reply } => {
                let result = self.resolve(&target).map(|ids| {
                    let mut rows: Vec<InstanceInfo> = ids.iter().map(|id| self.info(id)).collect();
                    if usage {
                        self.sample_usage(&mut rows);
                    }
                    rows
                });
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
                let result = self.resolve(&target).map(|ids| self.stop(ids));
                let _ = reply.send(result);
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
            Command::Metrics { reply } => {
                let _ = reply.send(Ok(self.metrics()));
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
        if let (Target::Instance(id), true) = (target, ids.iter().all(|id| self.slots[id].inst.removing)) {
            return Err(WireError::new(
                ErrorKind::Refused,
                format!("{id} is being removed (scaled down or reloaded away)"),
            ));
        }
        Ok(ids.into_iter().filter(|id| !self.slots[id].inst.removing).collect())
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
            health: slot.health.filter(|_| slot.inst.is_up()),
            status: slot.status.clone(),
            cpu_tenths: None,
            memory_bytes: None,
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
