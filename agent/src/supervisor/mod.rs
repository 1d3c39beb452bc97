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
//! `usage` samples CPU and memory, `list` writes the rows, `snapshot` keeps the last answer
//! beside the socket for `procctl` to read, `persist` writes the table, `timers` is the
//! one timer queue.

mod api;
mod autoscale;
mod cgroups;
mod deps;
mod handover;
mod hooks;
mod kernel;
mod lifecycle;
mod list;
mod listening;
mod metrics;
#[cfg(test)]
mod model;
mod persist;
mod readiness;
mod recycle;
mod reload;
mod routes;
mod scale;
mod service;
mod snapshot;
mod spares;
mod starting;
mod timers;
mod upgrade;
mod usage;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use procctl_proto::{ErrorKind, Exit, InstanceId, InstanceInfo, Target, WireError};
use tokio::sync::{mpsc as tokio_mpsc, oneshot, watch};

use api::gone;
pub use api::{Command, Handle, Pending, Settle, Settled};
pub use handover::HandedState;
pub use kernel::{Kernel, Real as RealKernel};
pub use readiness::Purpose;
pub use service::Service;
use timers::{Armed, Timers};

use crate::config::Config;
use crate::events::Bus;
use crate::instance::{Input, Instance, Timer};
use crate::logs::{Follow, SharedSink, Sink};
use crate::pipe::PipeRef;
use crate::spawn::Sent;
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
    /// The output of autoscale probe `token` of `name`, read to its end (capped).
    AutoscaleOutput {
        name: String,
        token: u64,
        output: Vec<u8>,
    },
    /// The output of upgrade check `token`, read to its end (capped).
    UpgradeCheckOutput {
        token: u64,
        output: Vec<u8>,
    },
}

/// What a timer of the loop hands back when it is due.
pub enum Due {
    Instance {
        id: InstanceId,
        timer: Timer,
        generation: u64,
    },
    /// Is the group of SIGKILLed run `run` gone yet? `vanished` when the last check found the
    /// main process gone without an exit report.
    Recheck {
        id: InstanceId,
        run: u64,
        attempt: u32,
        vanished: bool,
    },
    /// Time to write the table.
    Save,
    /// Time to make the spare cgroups instances wait for.
    Spares,
    /// The next try of a run's ready or health probe.
    Probe {
        id: InstanceId,
        run: u64,
        purpose: Purpose,
    },
    /// No WATCHDOG=1 came in time.
    Watchdog {
        id: InstanceId,
        run: u64,
    },
    /// An `exec` probe ran out of time.
    ProbeTimeout {
        pid: i32,
    },
    /// Time to sample the instances of a process with `max_memory`.
    MemoryCheck {
        name: String,
        generation: u64,
    },
    /// Time to run the autoscale probe of `name`.
    Autoscale {
        name: String,
        generation: u64,
    },
    /// An autoscale probe ran out of time.
    AutoscaleTimeout {
        pid: i32,
    },
    /// A hook ran out of time.
    HookTimeout {
        pid: i32,
    },
    /// Run `run` reached its `max_age`.
    Age {
        id: InstanceId,
        run: u64,
    },
    /// An upgrade's check of the new binary ran out of time.
    UpgradeCheckTimeout {
        token: u64,
    },
}

/// What a spawn in flight is for.
enum Spawning {
    /// Run `run` of an instance.
    Run { id: InstanceId, run: u64 },
    /// An `exec` probe, cut at `timeout`.
    Probe { id: InstanceId, run: u64, purpose: Purpose, timeout: Duration },
    /// A hook; a `pre_start` carries the token of the start it precedes.
    Hook { id: InstanceId, hook: hooks::Hook, token: u64 },
    /// An autoscale probe.
    Autoscale { name: String, token: u64 },
    /// The check of the binary an upgrade would run.
    UpgradeCheck { token: u64 },
}

/// A follow-up decided while carrying out an event or another follow-up: the loop takes
/// them in order once that is done (Horust's `handle_event -> Vec<Event>`), so no step
/// runs inside another and nothing a step removes is pulled from under its caller.
enum Next {
    Input(InstanceId, Input),
    /// The start half of a restart, after its stop was fed, and who waits for it.
    Start(InstanceId, oneshot::Sender<Settled>),
    /// Are the dependencies of this `waiting` instance met, or has one failed?
    CheckWaiting(InstanceId),
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
    /// The current run's probe, watchdog, STATUS= and health verdict.
    checks: readiness::RunChecks,
    /// Failed health checks over all runs, for the metrics.
    health_failures: u64,
    /// The cgroup of the run whose processes may be alive, with cgroup tracking.
    cgroup: Option<PathBuf>,
    /// Its `cgroup.events` watch, while it drains.
    cgroup_watch: Option<inotify::WatchDescriptor>,
    /// The last CPU sample: microseconds used, and when.
    cpu_sample: Option<(u64, std::time::Instant)>,
    /// The files CPU and memory are read from.
    usage: usage::Files,
    /// Copies of the run's pipe ends, for an upgrade.
    kept: handover::Kept,
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
            checks: readiness::RunChecks::default(),
            health_failures: 0,
            cgroup: None,
            cgroup_watch: None,
            cpu_sample: None,
            usage: usage::Files::default(),
            kept: handover::Kept::default(),
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
    /// Boxed: a map node holds eleven entries, mostly not all used, and a slot is large.
    slots: BTreeMap<InstanceId, Box<Slot>>,
    by_pid: HashMap<i32, InstanceId>,
    /// Spawns in flight, by the sequence number their report will carry.
    spawning: HashMap<u64, Spawning>,
    /// Probes in flight and the notify socket's intake.
    readiness: readiness::Readiness,
    own_uid: u32,
    /// Instances in `waiting`, for their dependencies.
    waiting: BTreeSet<InstanceId>,
    /// Stops that wait for dependents to go first.
    deferred: Vec<deps::Deferred>,
    /// Bumped on every change that `list` shows, for `wait`.
    changes: watch::Sender<u64>,
    /// How runs are tracked, and the watches on draining runs' cgroups.
    cgroups: cgroups::CgroupWatch,
    service: service::Service,
    next_seq: u64,
    scaled: BTreeMap<String, ScaleOverride>,
    base_env: crate::spawn::BaseEnv,
    kernel: Box<dyn Kernel>,
    persist: persist::Persist,
    timers: Timers<Due>,
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
    /// Follow-ups not carried out yet.
    queue: VecDeque<Next>,
    /// The last run number given: runs are numbered once across the agent, so a delayed
    /// event of an earlier instance of the same name (scaled away, then back) never matches
    /// one of a new one's runs, and no two runs share a cgroup path.
    runs: u64,
    /// The listening sockets the instances get.
    listening: crate::listen::Listening,
    /// Recycles going on and waiting, and what they are decided from.
    recycling: recycle::Recycling,
    /// Hooks running.
    hooks: hooks::Hooks,
    /// Autoscale probes and decisions.
    autoscaling: autoscale::Autoscaling,
    /// An upgrade's check, and the agent's descriptors an upgrade hands over.
    upgrading: upgrade::Upgrading,
    /// Run cgroups made ahead of the runs that will take them.
    spares: spares::Spares,
    /// The last `list` or `pid` answer, while nothing has changed since.
    snapshot: snapshot::Snapshot,
}

pub struct Parts {
    pub config: Config,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub previous: Option<TableFile>,
    pub kernel: Box<dyn Kernel>,
    pub writer: table::Writer,
    pub events: tokio_mpsc::UnboundedSender<Event>,
    pub bus: Bus,
    pub follow: Follow,
    pub notify_name: String,
    pub changes: watch::Sender<u64>,
    pub tracking: crate::cgroup::Tracking,
    pub inotify: inotify::Watches,
    pub service: service::Service,
    /// The listening sockets of the config, bound.
    pub listening: crate::listen::Listening,
    /// The agent's own descriptors an upgrade hands over.
    pub own: crate::upgrade::Own,
}

impl Supervisor {
    /// Builds the table from the config (and the scale counts of `previous`) and starts
    /// every autostart instance.
    pub fn new(parts: Parts) -> Supervisor {
        let mut sup = Supervisor::assemble(parts);
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
        sup.recycle_arm_checks();
        sup.autoscale_arm(&[]);
        let ids: Vec<InstanceId> = sup.service_pending();
        for id in ids {
            sup.start_with_dependencies(&id);
        }
        sup.drain();
        sup.service_ready_if_due();
        sup
    }

    /// The supervisor with no instance yet, its listening sockets shared with the spawner.
    fn assemble(parts: Parts) -> Supervisor {
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
        let snapshot = snapshot::Snapshot::new(&parts.socket);
        let mut sup = Supervisor {
            config: parts.config,
            socket: parts.socket,
            state_dir: parts.state_dir,
            slots: BTreeMap::new(),
            by_pid: HashMap::new(),
            spawning: HashMap::new(),
            readiness: readiness::Readiness::new(parts.notify_name),
            own_uid: nix::unistd::geteuid().as_raw(),
            waiting: BTreeSet::new(),
            deferred: vec![],
            changes: parts.changes,
            cgroups: cgroups::CgroupWatch::new(parts.tracking, parts.inotify),
            service: parts.service,
            next_seq: 0,
            scaled,
            base_env: crate::spawn::base_env(),
            kernel: parts.kernel,
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
            queue: VecDeque::new(),
            runs: 0,
            listening: parts.listening,
            recycling: recycle::Recycling::default(),
            hooks: hooks::Hooks::default(),
            autoscaling: autoscale::Autoscaling::default(),
            upgrading: upgrade::Upgrading::new(parts.own),
            spares: spares::Spares::default(),
            snapshot,
        };
        for key in sup.listening.keys() {
            sup.share_listener(key);
        }
        sup
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
            self.drain();
            // Take the whole burst before writing the table once.
            while let Ok(event) = events.try_recv() {
                self.handle(event);
                self.drain();
            }
            // Once the spawns are done: the cgroups of runs that ended go, and spares are made.
            self.remove_ended_cgroups();
            self.make_spares();
            self.save_if_due();
            if self.snapshot.is_due() {
                // The answer goes out first (its connection's task is ready to run), then
                // the snapshot of it is written; whatever came in meanwhile is carried out
                // after, and removes it.
                tokio::task::yield_now().await;
                self.snapshot.write_due();
            }
            if self.shutting_down && self.slots.values().all(|slot| slot.inst.is_down()) && self.hooks.idle() {
                break;
            }
        }
        self.snapshot.forget();
        let nothing_left = crate::reclaim::stop_adopted().await;
        let mut last = self.snapshot();
        if nothing_left {
            last.agent_token = None; // the next agent has no stray of this run to look for
        }
        // The writer syncs the last table while the cgroup tree goes.
        self.persist.writer().save(last);
        if let Some(tree) = self.cgroups.tree() {
            tree.remove_all();
        }
        self.persist.writer().flush();
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.service.critical.take()
    }

    fn new_slot(&self, id: &InstanceId) -> Box<Slot> {
        let spec = &self.config.processes[&id.name];
        Box::new(Slot::new(Sink::new(id.clone(), &self.state_dir.join("logs"), spec.log_max_size, spec.log_files)))
    }

    fn desired(&self, name: &str) -> u32 {
        match (self.scaled.get(name), self.config.processes.get(name)) {
            (Some(over), Some(spec)) if over.config_instances == spec.instances => over.count,
            (_, Some(spec)) => spec.instances,
            (_, None) => 0,
        }
    }

    fn handle(&mut self, event: Event) {
        if !matches!(event, Event::Command(Command::List { .. } | Command::ListFrame { .. })) {
            self.snapshot.forget();
        }
        match event {
            Event::Command(command) => self.on_command(command),
            Event::Spawn(sent) => {
                let report = self.kernel.claim(sent);
                self.on_spawn_report(report)
            }
            Event::Notify(message) => self.on_notify(message),
            Event::CgroupChanged(watch) => self.on_cgroup_event(watch),
            Event::Probed { id, run, purpose, result } => self.on_probed(id, run, purpose, result),
            Event::LogReady { id, run } => self.on_log_ready(id, run),
            Event::AutoscaleOutput { name, token, output } => self.on_autoscale_output(name, token, output),
            Event::UpgradeCheckOutput { token, output } => self.on_upgrade_check_output(token, output),
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
        if !matches!(due, Due::Save | Due::Spares) {
            self.snapshot.forget();
        }
        match due {
            Due::Instance { id, timer, generation } => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.timers.fired(timer);
                }
                self.feed(&id, Input::Timer { timer, generation });
            }
            Due::Recheck { id, run, attempt, vanished } => self.on_recheck(id, run, attempt, vanished),
            Due::Save => self.on_save_due(),
            Due::Spares => self.on_spares_due(),
            Due::Probe { id, run, purpose } => self.on_probe_due(id, run, purpose),
            Due::Watchdog { id, run } => self.on_watchdog_due(id, run),
            Due::ProbeTimeout { pid } => self.on_probe_timeout(pid),
            Due::MemoryCheck { name, generation } => self.on_memory_check(name, generation),
            Due::Age { id, run } => self.on_age_due(id, run),
            Due::UpgradeCheckTimeout { token } => self.on_upgrade_check_timeout(token),
            Due::HookTimeout { pid } => self.on_hook_timeout(pid),
            Due::Autoscale { name, generation } => self.on_autoscale_due(name, generation),
            Due::AutoscaleTimeout { pid } => self.on_autoscale_timeout(pid),
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::List { target, keep, reply } => {
                let rows = self.rows(&target);
                if let (true, Ok(rows)) = (keep, &rows) {
                    let mut list = Vec::new();
                    if procctl_proto::frame::encode_list(rows.iter().map(InstanceInfo::row), &mut list).is_ok() {
                        self.keep_snapshot(&target, false, list);
                    }
                }
                let _ = reply.send(rows);
            }
            Command::ListFrame { target, reply } => {
                let frame = self.list_frame(&target);
                if let Ok(frame) = &frame {
                    self.keep_snapshot(&target, true, frame.clone());
                }
                let _ = reply.send(frame);
            }
            Command::Start { target, reply } => {
                let result = self.refuse_when_shutting_down().and_then(|()| self.startable(&target));
                let _ = reply.send(result.map(|ids| ids.into_iter().map(|id| self.start(id)).collect()));
            }
            Command::Stop { target, reply } => {
                let result = self.resolve(&target).map(|ids| self.stop(ids));
                let _ = reply.send(result);
            }
            Command::Restart { id, reply } => {
                let result = self.refuse_when_shutting_down().and_then(|()| self.restart(id));
                let _ = reply.send(result);
            }
            Command::Signal { target, signal, reply } => {
                let result =
                    self.resolve(&target).map(|ids| ids.into_iter().map(|id| self.signal(id, signal)).collect());
                let _ = reply.send(result);
            }
            Command::Scale { name, count, reply } => {
                let result = self.scale(&name, count, true);
                if result.is_ok() {
                    self.autoscale_pause(&name);
                }
                let _ = reply.send(result);
            }
            Command::Autoscale { name, reply } => {
                let _ = reply.send(self.autoscale_resume(&name));
            }
            Command::Shutdown { reply } => {
                self.shutdown_waiters.push(reply);
                self.begin_shutdown();
            }
            Command::Pipes { target, any, count, reply } => {
                let _ = reply.send(self.pipes(&target, any, count));
            }
            Command::Reload { reply } => {
                let before: Vec<(String, Option<crate::config::fleet::Autoscale>)> =
                    self.config.processes.iter().map(|(name, spec)| (name.clone(), spec.autoscale.clone())).collect();
                let _ = reply.send(self.reload());
                self.recycle_arm_checks();
                let changed: Vec<String> = before
                    .into_iter()
                    .filter(|(name, policy)| self.config.processes.get(name).is_some_and(|s| s.autoscale != *policy))
                    .map(|(name, _)| name)
                    .collect();
                self.autoscale_arm(&changed);
            }
            Command::Metrics { reply } => {
                let _ = reply.send(Ok(self.metrics()));
            }
            Command::Rolling { names, on } => self.on_rolling(names, on),
            Command::UpgradeCheck { binary, reply } => self.upgrade_check(binary, reply),
            Command::Upgrade { binary, reply } => self.upgrade_now(binary, reply),
            Command::Sinks { target, reply } => {
                let sinks = self
                    .resolve(&target)
                    .map(|ids| ids.iter().filter_map(|id| self.slots.get(id)).map(|slot| slot.sink.clone()).collect());
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
                let names = self.config.processes.keys().map(String::as_str);
                Err(WireError::new(ErrorKind::NotFound, crate::suggest::unknown_process(name, names)))
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
        let removing = |id: &InstanceId| self.slots.get(id).is_none_or(|slot| slot.inst.removing);
        if let (Target::Instance(id), true) = (target, ids.iter().all(removing)) {
            return Err(WireError::new(
                ErrorKind::Refused,
                format!("{id} is being removed (scaled down or reloaded away)"),
            ));
        }
        Ok(ids.into_iter().filter(|id| !removing(id)).collect())
    }

    /// The rows of the target, in the table's order; `all` walks the table once, with no
    /// list of ids in between (it is every `list` of a thousand).
    fn rows(&self, target: &Target) -> Result<Vec<InstanceInfo>, WireError> {
        if let Target::All = target {
            return Ok(self.slots.iter().map(|(id, slot)| self.info_of(id, slot)).collect());
        }
        Ok(self.resolve(target)?.iter().filter_map(|id| self.info(id)).collect())
    }

    fn info(&self, id: &InstanceId) -> Option<InstanceInfo> {
        self.slots.get(id).map(|slot| self.info_of(id, slot))
    }

    fn info_of(&self, id: &InstanceId, slot: &Slot) -> InstanceInfo {
        self.row_of(id, slot, SystemTime::now(), self.autoscale_shown(&id.name)).to_info()
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
