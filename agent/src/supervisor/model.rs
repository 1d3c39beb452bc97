//! The supervisor driven as a model: a kernel that the test plays (spawns answered or not,
//! processes that exit, ignore SIGTERM, fork, or vanish without an exit report, reports
//! that come late) and random sequences of requests, kernel events and timer firings. After
//! each step nothing has panicked and every instance is in a state its run allows; at the
//! end, once everything is stopped and the world has settled, every waiter was answered and
//! no process is left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use procctl_proto::{Exit, InstanceId, Signal, State, Target};
use proptest::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use super::api::{Command, Pending, Settle, Settled};
use super::kernel::Kernel;
use super::{Event, Parts, Service, Supervisor};
use crate::config::Config;
use crate::spawn::{Sent, SpawnReport, SpawnRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Alive,
    /// Exited, not reaped yet.
    Zombie(Exit),
}

#[derive(Debug)]
struct Proc {
    pgid: i32,
    ignores_term: bool,
    life: Life,
}

/// What the kernel knows: spawns asked for and not answered, and every process not reaped.
#[derive(Default, Debug)]
struct World {
    next_pid: i32,
    spawns: Vec<u64>,
    procs: BTreeMap<i32, Proc>,
    /// Processes that ignore SIGTERM when they are spawned.
    stubborn: bool,
}

impl World {
    fn signal_group(&mut self, pgid: i32, signal: Signal) -> bool {
        let mut any = false;
        for proc in self.procs.values_mut().filter(|p| p.pgid == pgid) {
            any = true;
            let dies = signal == Signal::KILL || (signal == Signal::TERM && !proc.ignores_term);
            if dies && proc.life == Life::Alive {
                proc.life = Life::Zombie(Exit::Signal(signal));
            }
        }
        any
    }
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
}

impl Kernel for Fake {
    fn spawn(&mut self, request: SpawnRequest) -> bool {
        self.world().spawns.push(request.seq);
        true
    }

    fn claim(&mut self, _: Sent) -> SpawnReport {
        unreachable!("the model reports spawns itself")
    }

    fn share_listener(&mut self, _: u64, _: &std::os::fd::OwnedFd) -> std::io::Result<()> {
        Ok(())
    }

    fn forget_listener(&mut self, _: u64) {}

    fn exec(
        &mut self,
        _: std::path::PathBuf,
        _: Vec<std::ffi::OsString>,
        _: Vec<u8>,
        _: &[std::os::fd::RawFd],
    ) -> String {
        "a model does not exec".into()
    }

    fn signal_run(&mut self, _: Option<&Path>, pgid: i32, signal: Signal) {
        self.world().signal_group(pgid, signal);
    }

    fn signal_group(&mut self, pgid: i32, signal: Signal) -> Result<(), Errno> {
        if self.world().signal_group(pgid, signal) { Ok(()) } else { Err(Errno::ESRCH) }
    }

    fn kill_run(&mut self, _: Option<&Path>, pgid: i32) {
        self.world().signal_group(pgid, Signal::KILL);
    }

    fn kill_group(&mut self, pgid: i32) {
        self.world().signal_group(pgid, Signal::KILL);
    }

    fn run_alive(&self, _: Option<&Path>, pgid: i32) -> bool {
        self.world().procs.values().any(|p| p.pgid == pgid)
    }

    fn process_exists(&self, pid: i32) -> bool {
        self.world().procs.contains_key(&pid)
    }

    fn make_spare(&mut self, _: std::path::PathBuf, _: crate::cgroup::Limits) {
        unreachable!("a model tracks runs by process group: it has no cgroups")
    }

    fn drop_spare(&mut self, _: std::path::PathBuf) {
        unreachable!("a model tracks runs by process group: it has no cgroups")
    }

    fn remove_cgroup(&mut self, _: std::path::PathBuf) {
        unreachable!("a model tracks runs by process group: it has no cgroups")
    }
}

const CONFIG: &str = r#"
[process.a]
command = ["a"]
instances = 2
start_secs = "1s"
stop_timeout = "2s"
max_starting = 1

[process.b]
command = ["b"]
start_secs = "1s"
start_retries = 2
restart = "on-failure"
stop_timeout = "1s"
depends_on = { a = "running" }

[process.c]
command = ["c"]
start_secs = "0s"
restart = "never"
autostart = false

[process.d]
command = ["d"]
instances = 2
start_secs = "1s"
stop_timeout = "2s"
autostart = false
"#;

#[derive(Debug, Clone)]
enum Op {
    Start(Target),
    Stop(Target),
    Scale(&'static str, u32),
    Restart(&'static str, u32),
    Signal(Target, Signal),
    /// The spawner answers the k-th spawn it was asked for: started, failed, or started a
    /// child that could not exec (it exits 127 at once).
    SpawnOk(usize),
    SpawnFailed(usize),
    ExecFailed(usize),
    /// The k-th live process exits with a code, leaving a child in its group or not.
    Exit(usize, i32, bool),
    /// The k-th zombie is reaped and reported.
    Reap(usize),
    /// The k-th zombie is reaped by someone else: its exit is never reported.
    Vanish(usize),
    /// Processes spawned from now on ignore SIGTERM (or not).
    Stubborn(bool),
    /// Time passes; due timers fire.
    Advance(u64),
    /// The agent upgrades in place (when nothing is half done): its state is written out,
    /// read back, and a new supervisor resumes from it with the same processes.
    Upgrade,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::All),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|n| Target::Name(n.into())),
        (prop::sample::select(vec!["a", "b", "c"]), 0u32..3).prop_map(|(n, i)| Target::Instance(InstanceId::new(n, i))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => target().prop_map(Op::Start),
        2 => target().prop_map(Op::Stop),
        2 => (prop::sample::select(vec!["a", "b", "c"]), 0u32..4).prop_map(|(n, c)| Op::Scale(n, c)),
        2 => (prop::sample::select(vec!["a", "b", "c"]), 0u32..3).prop_map(|(n, i)| Op::Restart(n, i)),
        1 => (target(), prop::sample::select(vec![Signal::TERM, Signal::KILL, Signal::HUP])).prop_map(|(t, s)| Op::Signal(t, s)),
        6 => any::<usize>().prop_map(Op::SpawnOk),
        1 => any::<usize>().prop_map(Op::SpawnFailed),
        1 => any::<usize>().prop_map(Op::ExecFailed),
        4 => (any::<usize>(), prop::sample::select(vec![0, 1]), any::<bool>()).prop_map(|(k, c, f)| Op::Exit(k, c, f)),
        5 => any::<usize>().prop_map(Op::Reap),
        1 => any::<usize>().prop_map(Op::Vanish),
        1 => any::<bool>().prop_map(Op::Stubborn),
        4 => prop::sample::select(vec![10u64, 100, 1_100, 2_100, 6_000]).prop_map(Op::Advance),
        1 => Just(Op::Upgrade),
    ]
}

struct Model {
    sup: Supervisor,
    kernel: Fake,
    waiters: Vec<(String, oneshot::Receiver<Settled>)>,
    _events: mpsc::UnboundedReceiver<Event>,
    _dir: tempfile::TempDir,
}

impl Model {
    fn new() -> Model {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Fake::default();
        let (events, events_rx) = mpsc::unbounded_channel();
        let sup = Supervisor::new(Model::parts(&kernel, dir.path(), events));
        Model { sup, kernel, waiters: vec![], _events: events_rx, _dir: dir }
    }

    /// What a supervisor is made of: the config above, the model's kernel.
    fn parts(kernel: &Fake, dir: &Path, events: mpsc::UnboundedSender<Event>) -> Parts {
        let config = Config::parse(&dir.join("procctl.toml"), CONFIG).unwrap();
        let inotify = inotify::Inotify::init().unwrap();
        let dir = tempfile::TempDir::new_in(dir).unwrap().keep();
        Parts {
            config,
            socket: dir.join("sock"),
            state_dir: dir.clone(),
            previous: None,
            kernel: Box::new(kernel.clone()),
            writer: crate::table::Writer::start(dir).unwrap(),
            events,
            bus: crate::events::Bus::new(),
            follow: crate::logs::Follow::new(),
            notify_name: "@model".into(),
            changes: watch::channel(0).0,
            tracking: crate::cgroup::Tracking::Groups("a model".into()),
            inotify: inotify.watches(),
            service: Service::from_env(),
            listening: crate::listen::Listening::default(),
            own: crate::upgrade::Own::default(),
        }
    }

    /// An upgrade, when the supervisor would take one now: the state written out reads
    /// back equal, and the new supervisor goes on with the same processes. Waits in flight
    /// are not handed over (their requests' connections end with the old image).
    fn upgrade(&mut self) {
        if self.sup.handover_busy().is_some() {
            return;
        }
        let state = self.sup.handed_state(&mut crate::upgrade::FdList::default());
        let text = serde_json::to_string(&state).unwrap();
        let back: super::HandedState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state, "the state reads back as it was written");
        let (events, events_rx) = mpsc::unbounded_channel();
        let parts = Model::parts(&self.kernel, self._dir.path(), events);
        self.sup = Supervisor::resume(parts, back, &mut |_| None);
        self._events = events_rx;
        self.waiters.clear();
    }

    fn keep(&mut self, what: &str, pendings: Vec<Pending>) {
        for pending in pendings {
            if let Settle::Wait(settled) = pending.settle {
                self.waiters.push((format!("{what} {}", pending.id), settled));
            }
        }
    }

    fn command<T>(
        &mut self,
        make: impl FnOnce(oneshot::Sender<Result<T, procctl_proto::WireError>>) -> Command,
    ) -> Option<T> {
        let (reply, mut answer) = oneshot::channel();
        self.sup.on_command(make(reply));
        self.sup.drain();
        answer.try_recv().expect("a command is answered at once").ok()
    }

    /// The pid of the k-th process in the given life, if any.
    fn pick(&self, k: usize, zombie: bool) -> Option<i32> {
        let world = self.kernel.world();
        let pids: Vec<i32> = world
            .procs
            .iter()
            .filter(|(_, p)| matches!(p.life, Life::Zombie(_)) == zombie)
            .map(|(pid, _)| *pid)
            .collect();
        (!pids.is_empty()).then(|| pids[k % pids.len()])
    }

    fn take_spawn(&mut self, k: usize) -> Option<u64> {
        let mut world = self.kernel.world();
        (!world.spawns.is_empty()).then(|| {
            let at = k % world.spawns.len();
            world.spawns.remove(at)
        })
    }

    fn new_proc(&mut self, pgid: Option<i32>, life: Life) -> i32 {
        let mut world = self.kernel.world();
        world.next_pid += 1;
        let pid = 1000 + world.next_pid;
        let ignores_term = world.stubborn;
        world.procs.insert(pid, Proc { pgid: pgid.unwrap_or(pid), ignores_term, life });
        pid
    }

    async fn apply(&mut self, op: Op) {
        match op {
            Op::Start(target) => {
                if let Some(pendings) = self.command(|reply| Command::Start { target, reply }) {
                    self.keep("start", pendings);
                }
            }
            Op::Stop(target) => {
                if let Some(pendings) = self.command(|reply| Command::Stop { target, reply }) {
                    self.keep("stop", pendings);
                }
            }
            Op::Scale(name, count) => {
                if let Some(plan) = self.command(|reply| Command::Scale { name: name.into(), count, reply }) {
                    self.keep("scale up", plan.starting);
                    self.keep("scale down", plan.stopping);
                }
            }
            Op::Restart(name, index) => {
                let id = InstanceId::new(name, index);
                if let Some(pending) = self.command(|reply| Command::Restart { id, reply }) {
                    self.keep("restart", vec![pending]);
                }
            }
            Op::Signal(target, signal) => {
                self.command(|reply| Command::Signal { target, signal, reply });
            }
            Op::SpawnOk(k) | Op::ExecFailed(k) => {
                let Some(seq) = self.take_spawn(k) else { return };
                let failed = matches!(op, Op::ExecFailed(_));
                let pid = self.new_proc(None, if failed { Life::Zombie(Exit::Code(127)) } else { Life::Alive });
                let exec_error = failed.then(|| "exec x: not found".to_string());
                let report = SpawnReport::Spawned { seq, pid, start_time: None, pipe: None, output: None, exec_error };
                self.sup.on_spawn_report(report);
            }
            Op::SpawnFailed(k) => {
                let Some(seq) = self.take_spawn(k) else { return };
                self.sup.on_spawn_report(SpawnReport::Failed { seq, error: "no".into() });
            }
            Op::Exit(k, code, leaves_child) => {
                let Some(pid) = self.pick(k, false) else { return };
                let pgid = {
                    let mut world = self.kernel.world();
                    let proc = world.procs.get_mut(&pid).unwrap();
                    proc.life = Life::Zombie(Exit::Code(code));
                    proc.pgid
                };
                if leaves_child {
                    self.new_proc(Some(pgid), Life::Alive);
                }
            }
            Op::Reap(k) | Op::Vanish(k) => {
                let Some(pid) = self.pick(k, true) else { return };
                let proc = self.kernel.world().procs.remove(&pid).unwrap();
                if let (Op::Reap(_), Life::Zombie(exit)) = (op, proc.life) {
                    self.sup.handle(Event::Reaped { pid, exit });
                }
            }
            Op::Stubborn(on) => self.kernel.world().stubborn = on,
            Op::Advance(ms) => self.advance(Duration::from_millis(ms)).await,
            Op::Upgrade => self.upgrade(),
        }
        self.sup.drain();
    }

    async fn advance(&mut self, by: Duration) {
        tokio::time::advance(by).await;
        while !self.sup.timers.is_empty() {
            let Ok(due) = tokio::time::timeout(Duration::ZERO, self.sup.timers.next()).await else {
                break;
            };
            self.sup.on_due(due);
            self.sup.drain();
        }
    }

    /// What holds after every step.
    fn check(&self, history: &[Op]) {
        let sup = &self.sup;
        for (pid, id) in &sup.by_pid {
            let slot =
                sup.slots.get(id).unwrap_or_else(|| panic!("{id} is in the pid map but not the table: {history:?}"));
            assert_eq!(slot.inst.pid, Some(*pid), "{id}: the pid map and the instance agree: {history:?}");
        }
        for (id, slot) in &sup.slots {
            let inst = &slot.inst;
            let case = format!("{id} {:?} pid {:?} group {:?}: {history:?}", inst.state, inst.pid, inst.pgid);
            if let Some(pid) = inst.pid {
                assert!(matches!(inst.state, State::Starting | State::Running | State::Stopping), "a live run: {case}");
                assert!(inst.pgid.is_some(), "a live run has its group: {case}");
                assert!(sup.by_pid.contains_key(&pid), "a live run is in the pid map: {case}");
            }
            if inst.state == State::Running {
                assert!(inst.pid.is_some(), "running has a process: {case}");
            }
            if let Some(seq) = slot.spawn_seq {
                assert!(sup.spawning.contains_key(&seq), "a spawn in flight is known: {case}");
            }
            if inst.state == State::Waiting {
                assert!(sup.waiting.contains(id), "a waiting instance is looked at again: {case}");
            }
        }
        let launching = |name: &str| {
            sup.slots
                .iter()
                .filter(|(id, slot)| {
                    id.name == name
                        && slot.inst.state == State::Starting
                        && (slot.spawn_seq.is_some() || slot.inst.pid.is_some())
                })
                .count()
        };
        assert!(launching("a") <= 1, "max_starting = 1 holds for a: {history:?}");
        // `list`'s frame, written from the table, says what the rows built owned say.
        let mut frame = vec![];
        sup.frame_of_all(&mut frame).unwrap();
        let listed = procctl_proto::frame::decode::<procctl_proto::Response>(&frame).unwrap().map(|(r, _)| r);
        assert_eq!(listed, Some(procctl_proto::Response::List(sup.rows(&Target::All).unwrap())), "{history:?}");
    }

    /// Everything is stopped and the world settles: processes that ignore SIGTERM are
    /// killed at their deadline, every exit is reaped, every spawn answered.
    async fn settle(&mut self, history: &[Op]) {
        if let Some(pendings) = self.command(|reply| Command::Stop { target: Target::All, reply }) {
            self.keep("final stop", pendings);
        }
        for _ in 0..50 {
            while let Some(seq) = self.take_spawn(0) {
                let pid = self.new_proc(None, Life::Alive);
                let report =
                    SpawnReport::Spawned { seq, pid, start_time: None, pipe: None, output: None, exec_error: None };
                self.sup.on_spawn_report(report);
                self.sup.drain();
            }
            while let Some(pid) = self.pick(0, true) {
                let proc = self.kernel.world().procs.remove(&pid).unwrap();
                if let Life::Zombie(exit) = proc.life {
                    self.sup.handle(Event::Reaped { pid, exit });
                    self.sup.drain();
                }
            }
            self.check(history);
            if self.sup.slots.values().all(|slot| slot.inst.is_down()) && self.kernel.world().procs.is_empty() {
                break;
            }
            self.advance(Duration::from_millis(1_100)).await;
        }
        for (id, slot) in &self.sup.slots {
            assert!(slot.inst.is_down(), "{id} is down after stop all ({:?}): {history:?}", slot.inst.state);
        }
        let left: BTreeSet<i32> = self.kernel.world().procs.keys().copied().collect();
        assert!(left.is_empty(), "no process is left: {left:?}: {history:?}");
        for (what, settled) in &mut self.waiters {
            assert!(settled.try_recv().is_ok(), "{what} was answered: {history:?}");
        }
    }
}

fn run(ops: Vec<Op>) {
    run_then(ops, |_, _| {});
}

/// Carries out `ops`, checking after each; then `look` at the model, then the world settles.
fn run_then(ops: Vec<Op>, look: impl FnOnce(&Model, &[Op])) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let mut model = Model::new();
        let mut history = vec![];
        for op in ops {
            history.push(op.clone());
            model.apply(op).await;
            model.check(&history);
        }
        look(&model, &history);
        model.settle(&history).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_requests_exits_and_timers_keeps_the_table_true(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

/// A start decided while a dependent waited (its dependency's instances all scaled away)
/// must not run after a stop that came meanwhile.
#[test]
fn a_queued_start_of_a_waiting_instance_does_not_undo_a_stop() {
    run(vec![Op::Stop(Target::All), Op::ExecFailed(0), Op::Scale("b", 3), Op::Scale("a", 0)]);
}

/// An instance scaled away and back at once is a new one: the recheck of its predecessor's
/// killed run (20 ms after the SIGKILL) must not kill its first run.
#[test]
fn an_instance_scaled_away_and_back_is_not_killed_by_its_predecessors_recheck() {
    let answer_spawns = || vec![Op::SpawnOk(0); 6];
    let mut ops = vec![Op::Stubborn(true), Op::Start(Target::Name("d".into()))];
    ops.extend(answer_spawns());
    ops.push(Op::Advance(1_100));
    ops.extend(answer_spawns());
    ops.extend([
        Op::Advance(1_100),
        Op::Scale("d", 1),
        Op::Advance(2_000), // d:1's stop deadline: SIGKILL, a recheck 20 ms later
        Op::Reap(0),        // gone: d:1 leaves the table
        Op::Stubborn(false),
        Op::Scale("d", 2), // a new d:1
    ]);
    ops.extend(answer_spawns());
    ops.push(Op::Advance(30));
    run_then(ops, |model, history| {
        let pid = model.sup.slots[&InstanceId::new("d", 1)].inst.pid.expect("the new d:1 runs");
        assert_eq!(model.kernel.world().procs[&pid].life, Life::Alive, "the new d:1 was killed: {history:?}");
    });
}

/// The fuzzer's abort: an instance being scaled away ignores SIGTERM, is killed at its
/// deadline, and its exit is never reported; the recheck that takes it as ended removes it
/// from the table, and the old code indexed it right after.
#[test]
fn a_recheck_that_ends_an_instance_being_removed_does_not_pull_it_from_under_itself() {
    run(vec![
        Op::Stubborn(true),
        Op::SpawnOk(0),
        Op::SpawnOk(0),
        Op::SpawnOk(0),
        Op::Advance(1_100),
        Op::Scale("a", 1),
        Op::Advance(2_100),
        Op::Vanish(0),
        Op::Advance(100),
        Op::Advance(100),
        Op::Advance(100),
    ]);
}

/// A group SIGKILLed before an upgrade is looked at again by the resumed supervisor until it
/// is gone, so a stop after the upgrade finishes.
#[test]
fn a_group_killed_before_an_upgrade_is_rechecked_after_it() {
    run(vec![Op::SpawnOk(0), Op::Exit(0, 0, true), Op::Reap(0), Op::Advance(2100), Op::Upgrade, Op::Vanish(0)]);
}
