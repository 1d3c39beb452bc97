//! One instance's whole lifecycle as data: (state, input) -> (state, actions). Touches no
//! process.
//!
//! The supervisor feeds it what happened (a request, a spawn, an exit, a timer) and carries
//! out the actions it returns, including the ones that answer whoever waits for the
//! instance to come up or go down, and the one that takes a removed instance out of the
//! table. Timers carry the generation they were armed with, so a timer that outlived its
//! reason is ignored; `run` counts spawns, so a delayed check about an earlier run is too.

use std::time::{Duration, SystemTime};

use procctl_proto::{Exit, Signal, State};

use crate::config::{ProcessSpec, Ready, Restart};

/// The first delay after a second quick failure; it doubles with each one after.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two starts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a spawn may go unanswered by the spawner thread before it counts as failed.
pub const SPAWN_REPORT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Timer {
    /// start_secs after a spawn: the instance counts as started.
    Up,
    /// The backoff delay before the next start.
    Backoff,
    /// stop_timeout after the group was signalled: SIGKILL it.
    StopDeadline,
    /// The spawner never answered: give up on that spawn.
    Spawn,
    /// ready_timeout after a spawn with a `ready` other than "up": a failed start.
    Ready,
    /// start_secs after a spawn with a `ready` other than "up": an end is no longer quick.
    Young,
}

/// How many kinds of timer an instance has.
pub const TIMERS: usize = 6;

impl Timer {
    /// Every kind, in slot order.
    pub const ALL: [Timer; TIMERS] =
        [Timer::Up, Timer::Backoff, Timer::StopDeadline, Timer::Spawn, Timer::Ready, Timer::Young];

    pub fn slot(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A user (or autostart) asks for it to run.
    Start,
    /// A user asks for it to stop.
    Stop,
    /// A start whose dependencies are not met: wait for them.
    Wait,
    /// Its dependencies are met: a `waiting` instance starts (decided while it was waiting,
    /// so it changes nothing once the instance has left `waiting`).
    DependenciesMet,
    /// A dependency it waits for cannot come up on its own: whoever waits for this
    /// instance to start hears that the start failed; it keeps waiting.
    DependencyFailed,
    /// A scale or reload takes it away: stop it, then it leaves the table.
    Remove,
    /// A later scale or reload keeps it after all.
    Keep,
    /// Its process has `max_starting` instances starting already: a start that has just
    /// asked for a spawn waits in `waiting` instead (ignored once the spawn is under way).
    Hold,
    /// Run `run` has started as `pid`. Runs are numbered by the supervisor, once across the
    /// agent, so a delayed event of an earlier instance of the same name never matches.
    Spawned {
        pid: i32,
        at: SystemTime,
        run: u64,
    },
    SpawnFailed,
    /// The main process ended; `group_left` when other processes remain in its group. The
    /// exit is `None` when the process is gone but its end was never reported.
    Exited {
        exit: Option<Exit>,
        group_left: bool,
    },
    /// No process is left in the instance's process group.
    GroupGone,
    /// The current run is ready (READY=1, or its ready probe passed).
    Ready,
    /// The current run failed its health check (or watchdog): restart it.
    Unhealthy,
    /// A health check of the current run passed.
    Healthy,
    Timer {
        timer: Timer,
        generation: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a new run; the supervisor numbers it and says which in `Input::Spawned`.
    Spawn,
    /// Forget the spawn in flight: its report, should it still come, is for nobody.
    AbandonSpawn,
    /// `signal` to the run's group (and SIGCONT, so a stopped process acts on it).
    Signal(Signal),
    /// SIGKILL to the run's group, then check until it is gone.
    Kill,
    /// Arm `timer`; when it fires, feed `Input::Timer` with this generation.
    Arm { timer: Timer, after: Duration, generation: u64 },
    /// The timer of this kind is no longer wanted.
    Disarm(Timer),
    /// It is running: whoever waits for it to come up gets this pid.
    Up { pid: i32 },
    /// It came to rest without running: whoever waits for it to come up hears it failed.
    NotUp,
    /// Whoever waits for it to go down (or for a stop that a start overtook) is answered.
    Down,
    /// Removed and down: it leaves the table.
    Leave,
}

/// Serialized whole for an upgrade's handover (`supervisor::handover`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    pub state: State,
    pub pid: Option<i32>,
    /// The process group (the first pid's number) while any process in it may be alive.
    pub pgid: Option<i32>,
    pub started_at: Option<SystemTime>,
    /// Restarts the agent made after unexpected exits.
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Counts spawns: names the current run, so that a delayed event for an earlier one is dropped.
    pub run: u64,
    /// Taken away by a scale or reload: it leaves the table once down.
    pub removing: bool,
    quick_failures: u32,
    /// The current run started less than start_secs ago: its end is quick, ready or not.
    young: bool,
    /// Health restarts in a row without a passing check; sets their backoff.
    unhealthy_streak: u32,
    /// The current run is being stopped as a failure (never ready, or unhealthy): its exit
    /// is a failure whatever its code.
    run_failed: bool,
    spawn_pending: bool,
    spawn_when_clear: bool,
    /// A start came while stopping: start once the stop is done.
    start_after_stop: bool,
    generations: [u64; TIMERS],
}

impl Default for Instance {
    fn default() -> Self {
        Instance::new()
    }
}

impl Instance {
    /// A new instance: `stopped` until it is started.
    pub fn new() -> Self {
        Instance {
            state: State::Stopped,
            pid: None,
            pgid: None,
            started_at: None,
            restarts: 0,
            last_exit: None,
            run: 0,
            removing: false,
            quick_failures: 0,
            young: false,
            unhealthy_streak: 0,
            run_failed: false,
            spawn_pending: false,
            spawn_when_clear: false,
            start_after_stop: false,
            generations: [0; TIMERS],
        }
    }

    /// Running: ready.
    pub fn is_up(&self) -> bool {
        self.state == State::Running
    }

    /// At rest and nothing of it left alive.
    pub fn is_down(&self) -> bool {
        self.at_rest() && self.pid.is_none() && self.pgid.is_none() && !self.spawn_pending
    }

    fn at_rest(&self) -> bool {
        matches!(self.state, State::Stopped | State::Exited | State::Fatal)
    }

    /// The generation a timer of this kind was last armed with.
    pub fn generation(&self, timer: Timer) -> u64 {
        self.generations[timer.slot()]
    }

    /// Whether a spawn was asked for and not answered yet.
    pub fn awaits_spawn(&self) -> bool {
        self.spawn_pending
    }

    /// Whether a start request has anything to do.
    pub fn is_startable(&self) -> bool {
        self.at_rest()
    }

    pub fn step(&mut self, input: Input, spec: &ProcessSpec) -> Vec<Action> {
        let before = self.state;
        let mut actions = self.transition(input, spec);
        self.settle(before, &mut actions);
        actions
    }

    fn transition(&mut self, input: Input, spec: &ProcessSpec) -> Vec<Action> {
        match input {
            Input::Start if self.is_startable() => {
                self.quick_failures = 0;
                self.begin_start()
            }
            Input::Start if self.state == State::Stopping => {
                self.start_after_stop = true;
                vec![]
            }
            Input::Start if self.state == State::Waiting => self.begin_start(),
            Input::Start => vec![],
            Input::Wait if self.is_startable() => {
                self.quick_failures = 0;
                self.state = State::Waiting;
                vec![]
            }
            Input::Wait => vec![],
            Input::DependenciesMet if self.state == State::Waiting => self.begin_start(),
            Input::DependenciesMet => vec![],
            Input::DependencyFailed if self.state == State::Waiting => vec![Action::NotUp],
            Input::DependencyFailed => vec![],
            Input::Stop => self.on_stop(spec),
            Input::Remove => {
                self.removing = true;
                self.on_stop(spec)
            }
            Input::Hold if self.state == State::Starting && self.spawn_pending && self.pid.is_none() => {
                self.spawn_pending = false;
                self.state = State::Waiting;
                vec![self.disarm(Timer::Spawn)]
            }
            Input::Hold => vec![],
            Input::Keep => {
                self.removing = false;
                // The request that was taking it away stops waiting.
                vec![Action::Down]
            }
            Input::Spawned { pid, at, run } => self.on_spawned(pid, at, run, spec),
            Input::SpawnFailed => self.on_spawn_failed(spec),
            Input::Exited { exit, group_left } => self.on_exited(exit, group_left, spec),
            Input::GroupGone => self.on_group_gone(),
            Input::Ready => self.on_ready(spec),
            Input::Unhealthy if self.state == State::Running && self.pid.is_some() && !self.run_failed => {
                self.unhealthy_streak += 1;
                self.stop_failed_run(spec)
            }
            Input::Unhealthy => vec![],
            Input::Healthy => {
                self.unhealthy_streak = 0;
                vec![]
            }
            Input::Timer { timer, generation } if generation == self.generations[timer.slot()] => {
                self.on_timer(timer, spec)
            }
            Input::Timer { .. } => vec![],
        }
    }

    /// The answers to waiters that hold once the transition is done.
    fn settle(&self, before: State, actions: &mut Vec<Action>) {
        let stop_over = before == State::Stopping && self.state != State::Stopping;
        if let (true, Some(pid)) = (self.is_up(), self.pid) {
            actions.push(Action::Up { pid });
        } else if self.at_rest() {
            actions.push(Action::NotUp);
        }
        if stop_over || self.is_down() {
            actions.push(Action::Down);
        }
        if self.is_down() && self.removing {
            actions.push(Action::Leave);
        }
    }

    fn arm(&mut self, timer: Timer, after: Duration) -> Action {
        self.generations[timer.slot()] += 1;
        Action::Arm { timer, after, generation: self.generations[timer.slot()] }
    }

    fn disarm(&mut self, timer: Timer) -> Action {
        self.generations[timer.slot()] += 1;
        Action::Disarm(timer)
    }

    fn spawn(&mut self) -> Vec<Action> {
        self.spawn_pending = true;
        vec![Action::Spawn, self.arm(Timer::Spawn, SPAWN_REPORT_TIMEOUT)]
    }

    fn begin_start(&mut self) -> Vec<Action> {
        self.state = State::Starting;
        if self.pgid.is_some() {
            // The previous run's group is still being stopped; start when it is gone.
            self.spawn_when_clear = true;
            vec![]
        } else {
            self.spawn()
        }
    }

    fn on_stop(&mut self, spec: &ProcessSpec) -> Vec<Action> {
        self.start_after_stop = false;
        match self.state {
            State::Waiting => {
                self.state = State::Stopped;
                vec![]
            }
            State::Starting | State::Running => {
                self.spawn_when_clear = false;
                self.state = State::Stopping;
                if self.pid.is_some() {
                    let deadline = self.arm(Timer::StopDeadline, spec.stop_timeout);
                    vec![Action::Signal(spec.stop_signal), deadline, self.disarm(Timer::Up), self.disarm(Timer::Ready)]
                } else {
                    // A spawn in flight is signalled when it lands; a draining group keeps its deadline.
                    self.settle_stopping()
                }
            }
            State::Backoff => {
                let disarm = self.disarm(Timer::Backoff);
                self.state = State::Stopping;
                let mut actions = vec![disarm];
                actions.extend(self.settle_stopping());
                actions
            }
            State::Stopping | State::Stopped | State::Exited | State::Fatal => vec![],
        }
    }

    /// Stopped once nothing of the run is left; then started again if a start came meanwhile.
    fn settle_stopping(&mut self) -> Vec<Action> {
        if self.pid.is_some() || self.pgid.is_some() || self.spawn_pending {
            return vec![];
        }
        self.state = State::Stopped;
        if std::mem::take(&mut self.start_after_stop) {
            self.quick_failures = 0;
            return self.begin_start();
        }
        vec![]
    }

    fn on_spawned(&mut self, pid: i32, at: SystemTime, run: u64, spec: &ProcessSpec) -> Vec<Action> {
        self.spawn_pending = false;
        self.run = run;
        self.run_failed = false;
        self.pid = Some(pid);
        self.pgid = Some(pid);
        self.started_at = Some(at);
        self.young = !spec.start_secs.is_zero();
        let mut actions = vec![self.disarm(Timer::Spawn)];
        match self.state {
            State::Starting if spec.ready != Ready::Up => {
                actions.push(self.arm(Timer::Ready, spec.ready_timeout));
                if self.young {
                    actions.push(self.arm(Timer::Young, spec.start_secs));
                }
            }
            State::Starting if spec.start_secs.is_zero() => {
                self.state = State::Running;
                self.quick_failures = 0;
            }
            State::Starting => actions.push(self.arm(Timer::Up, spec.start_secs)),
            _ => {
                // Stopped while the spawn was in flight.
                actions.push(Action::Signal(spec.stop_signal));
                actions.push(self.arm(Timer::StopDeadline, spec.stop_timeout));
            }
        }
        actions
    }

    fn on_spawn_failed(&mut self, spec: &ProcessSpec) -> Vec<Action> {
        if !self.spawn_pending {
            return vec![];
        }
        self.spawn_pending = false;
        let mut actions = vec![self.disarm(Timer::Spawn)];
        match self.state {
            State::Stopping => actions.extend(self.settle_stopping()),
            State::Starting => actions.extend(self.after_exit(None, true, spec)),
            _ => {}
        }
        actions
    }

    fn on_exited(&mut self, exit: Option<Exit>, group_left: bool, spec: &ProcessSpec) -> Vec<Action> {
        if self.pid.is_none() {
            return vec![]; // no run of ours is alive: a stale report
        }
        self.pid = None;
        self.started_at = None;
        if exit.is_some() {
            self.last_exit = exit;
        }
        let failed = std::mem::take(&mut self.run_failed);
        let mut actions = vec![self.disarm(Timer::Up), self.disarm(Timer::Ready), self.disarm(Timer::Young)];
        let young = std::mem::take(&mut self.young);
        if !group_left {
            self.pgid = None;
            actions.push(self.disarm(Timer::StopDeadline));
        }
        match self.state {
            State::Stopping => actions.extend(self.settle_stopping()),
            State::Starting | State::Running => {
                // Within start_secs of its start, an end is quick even after the run became
                // ready: a program that dies just after its probe passed must back off too.
                let quick = self.state == State::Starting || young;
                if group_left {
                    // Stop what the main process left behind before anything starts again.
                    actions.push(Action::Signal(spec.stop_signal));
                    actions.push(self.arm(Timer::StopDeadline, spec.stop_timeout));
                }
                // A run stopped for failing counts as a failure whatever its code.
                let exit = if failed { None } else { exit };
                if failed && self.state == State::Running {
                    actions.extend(self.after_unhealthy(spec));
                } else {
                    actions.extend(self.after_exit(exit, quick, spec));
                }
            }
            State::Waiting | State::Backoff | State::Stopped | State::Exited | State::Fatal => {}
        }
        actions
    }

    /// An unexpected end of a run (or a failed spawn, or an end never reported: `exit` is `None`).
    fn after_exit(&mut self, exit: Option<Exit>, quick: bool, spec: &ProcessSpec) -> Vec<Action> {
        self.quick_failures = if quick { self.quick_failures + 1 } else { 0 };
        let wanted = match spec.restart {
            Restart::Always => true,
            Restart::OnFailure => !exit.is_some_and(Exit::is_success),
            Restart::Never => false,
        };
        if !wanted {
            self.state = State::Exited;
            return vec![];
        }
        if quick && self.quick_failures >= spec.start_retries {
            self.state = State::Fatal;
            return vec![];
        }
        self.back_off(self.quick_failures)
    }

    /// The end of a run stopped as unhealthy: restarted like an unexpected exit of a running
    /// instance, backing off while health restarts follow each other, never `fatal`.
    fn after_unhealthy(&mut self, spec: &ProcessSpec) -> Vec<Action> {
        self.quick_failures = 0;
        if spec.restart == Restart::Never {
            self.state = State::Exited;
            return vec![];
        }
        self.back_off(self.unhealthy_streak)
    }

    /// Into `backoff` for the delay a streak of `failures` earns: restarted at once for the
    /// first, else when the backoff timer fires.
    fn back_off(&mut self, failures: u32) -> Vec<Action> {
        self.state = State::Backoff;
        let delay = backoff_delay(failures);
        if delay.is_zero() { self.restart_now() } else { vec![self.arm(Timer::Backoff, delay)] }
    }

    /// Stops the current run as a failure (never ready, or unhealthy); its end decides what next.
    fn stop_failed_run(&mut self, spec: &ProcessSpec) -> Vec<Action> {
        self.run_failed = true;
        vec![
            Action::Signal(spec.stop_signal),
            self.arm(Timer::StopDeadline, spec.stop_timeout),
            self.disarm(Timer::Ready),
        ]
    }

    fn on_ready(&mut self, spec: &ProcessSpec) -> Vec<Action> {
        if self.state != State::Starting || self.pid.is_none() || self.run_failed || spec.ready == Ready::Up {
            return vec![];
        }
        self.state = State::Running;
        if !self.young {
            self.quick_failures = 0;
        }
        vec![self.disarm(Timer::Ready)]
    }

    fn restart_now(&mut self) -> Vec<Action> {
        self.restarts += 1;
        self.begin_start()
    }

    fn on_timer(&mut self, timer: Timer, spec: &ProcessSpec) -> Vec<Action> {
        match timer {
            Timer::Up if self.state == State::Starting && self.pid.is_some() => {
                self.state = State::Running;
                self.young = false;
                self.quick_failures = 0;
                vec![]
            }
            Timer::Young if self.pid.is_some() => {
                self.young = false;
                if self.state == State::Running {
                    self.quick_failures = 0;
                }
                vec![]
            }
            Timer::Backoff if self.state == State::Backoff => self.restart_now(),
            Timer::StopDeadline if self.pgid.is_some() => vec![Action::Kill],
            Timer::Ready if self.state == State::Starting && self.pid.is_some() && !self.run_failed => {
                self.stop_failed_run(spec)
            }
            Timer::Spawn if self.spawn_pending => {
                let mut actions = vec![Action::AbandonSpawn];
                actions.extend(self.on_spawn_failed(spec));
                actions
            }
            _ => vec![],
        }
    }

    fn on_group_gone(&mut self) -> Vec<Action> {
        if self.pid.is_some() || self.pgid.is_none() {
            // The main process is alive, so its group is not gone: a stale report.
            return vec![];
        }
        self.pgid = None;
        let mut actions = vec![self.disarm(Timer::StopDeadline)];
        match self.state {
            State::Stopping => actions.extend(self.settle_stopping()),
            State::Starting if self.spawn_when_clear => {
                self.spawn_when_clear = false;
                actions.extend(self.spawn());
            }
            _ => {}
        }
        actions
    }
}

/// Immediate for the first quick failure in a row, then doubling from `BACKOFF_BASE`.
pub fn backoff_delay(quick_failures: u32) -> Duration {
    if quick_failures <= 1 {
        return Duration::ZERO;
    }
    let doublings = (quick_failures - 2).min(16);
    (BACKOFF_BASE * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use State::*;
    use std::path::Path;

    fn spec(extra: &str) -> ProcessSpec {
        let text = format!("[process.w]\ncommand = [\"x\"]\n{extra}\n");
        Config::parse(Path::new("/t.toml"), &text).unwrap().processes.remove("w").unwrap()
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn spawned(pid: i32) -> Input {
        Input::Spawned { pid, at: T0, run: pid as u64 }
    }

    fn exited(code: i32) -> Input {
        Input::Exited { exit: Some(Exit::Code(code)), group_left: false }
    }

    /// The generation of the last `Arm` of `timer` in `actions`.
    fn armed(actions: &[Action], timer: Timer) -> u64 {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Arm { timer: t, generation, .. } if *t == timer => Some(*generation),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{timer:?} not armed in {actions:?}"))
    }

    fn has(actions: &[Action], want: impl Fn(&Action) -> bool) -> bool {
        actions.iter().any(want)
    }

    const SPAWN: Action = Action::Spawn;

    fn is_spawn(action: &Action) -> bool {
        *action == Action::Spawn
    }

    /// Only what acts on processes and timers, without the answers to waiters.
    fn effects(actions: &[Action]) -> Vec<Action> {
        actions
            .iter()
            .copied()
            .filter(|a| !matches!(a, Action::Up { .. } | Action::NotUp | Action::Down | Action::Leave))
            .filter(|a| !matches!(a, Action::Arm { timer: Timer::Spawn, .. } | Action::Disarm(_)))
            .collect()
    }

    fn running(spec: &ProcessSpec) -> (Instance, Vec<Action>) {
        let mut inst = Instance::new();
        assert_eq!(effects(&inst.step(Input::Start, spec)), [SPAWN]);
        let actions = inst.step(spawned(100), spec);
        (inst, actions)
    }

    #[test]
    fn start_spawns_and_start_secs_makes_it_running() {
        let spec = spec("start_secs = \"1s\"");
        let (mut inst, actions) = running(&spec);
        assert_eq!(inst.state, Starting);
        let up = armed(&actions, Timer::Up);
        let actions = inst.step(Input::Timer { timer: Timer::Up, generation: up }, &spec);
        assert_eq!(actions, [Action::Up { pid: 100 }], "whoever waits is told");
        assert_eq!(inst.state, Running);
        assert!(inst.is_up());
    }

    #[test]
    fn zero_start_secs_is_running_at_once() {
        let spec = spec("start_secs = \"0s\"");
        let (inst, actions) = running(&spec);
        assert_eq!(inst.state, Running);
        assert_eq!(effects(&actions), []);
        assert!(actions.contains(&Action::Up { pid: 100 }));
    }

    #[test]
    fn restart_policy_matrix() {
        // (policy, exit, state after an unexpected exit of a long run)
        let cases = [
            ("always", Some(Exit::Code(0)), Starting),
            ("always", Some(Exit::Code(1)), Starting),
            ("on-failure", Some(Exit::Code(0)), Exited),
            ("on-failure", Some(Exit::Code(3)), Starting),
            ("on-failure", Some(Exit::Signal(Signal::KILL)), Starting),
            ("on-failure", None, Starting),
            ("never", Some(Exit::Code(1)), Exited),
            ("never", Some(Exit::Signal(Signal::KILL)), Exited),
        ];
        for (policy, exit, want) in cases {
            let spec = spec(&format!("restart = \"{policy}\"\nstart_secs = \"0s\""));
            let (mut inst, _) = running(&spec);
            inst.last_exit = Some(Exit::Code(42));
            let actions = inst.step(Input::Exited { exit, group_left: false }, &spec);
            assert_eq!(inst.state, want, "{policy} {exit:?}");
            assert_eq!(has(&actions, is_spawn), want == Starting, "{policy} {exit:?}");
            assert_eq!(inst.restarts, u32::from(want == Starting));
            assert_eq!(inst.last_exit, exit.or(Some(Exit::Code(42))), "an unreported end keeps the last exit");
        }
    }

    #[test]
    fn quick_failures_back_off_then_go_fatal() {
        let spec = spec("start_secs = \"1s\"\nstart_retries = 4");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        let mut delays = vec![];
        loop {
            inst.step(spawned(7), &spec);
            let actions = inst.step(exited(1), &spec);
            match inst.state {
                Fatal => break,
                Starting => delays.push(Duration::ZERO),
                Backoff => {
                    let generation = armed(&actions, Timer::Backoff);
                    let after = actions
                        .iter()
                        .find_map(|a| match a {
                            Action::Arm { timer: Timer::Backoff, after, .. } => Some(*after),
                            _ => None,
                        })
                        .unwrap();
                    delays.push(after);
                    let next = inst.step(Input::Timer { timer: Timer::Backoff, generation }, &spec);
                    assert_eq!(effects(&next), [SPAWN]);
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(delays, [Duration::ZERO, BACKOFF_BASE, BACKOFF_BASE * 2]);
        assert_eq!(inst.restarts, 3);
        assert!(inst.is_down());
        // `start` tries again from fatal, with a fresh count.
        assert_eq!(effects(&inst.step(Input::Start, &spec)), [SPAWN]);
        assert_eq!(inst.state, Starting);
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let spec = spec("start_secs = \"1s\"");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        let mut last = vec![];
        for _ in 0..2 {
            inst.step(spawned(7), &spec);
            last = inst.step(exited(1), &spec);
        }
        assert_eq!(inst.state, Backoff);
        inst.step(Input::Timer { timer: Timer::Backoff, generation: armed(&last, Timer::Backoff) }, &spec);
        let actions = inst.step(spawned(8), &spec);
        inst.step(Input::Timer { timer: Timer::Up, generation: armed(&actions, Timer::Up) }, &spec);
        assert_eq!(inst.state, Running);
        assert_eq!(effects(&inst.step(exited(1), &spec)), [SPAWN], "the next restart is immediate");
    }

    #[test]
    fn stop_signals_the_group_and_kills_at_the_deadline() {
        let spec = spec("stop_signal = \"INT\"\nstop_timeout = \"2s\"\nstart_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let actions = inst.step(Input::Stop, &spec);
        assert_eq!(actions[0], Action::Signal(Signal::INT));
        assert_eq!(inst.state, Stopping);
        let deadline = armed(&actions, Timer::StopDeadline);
        assert_eq!(inst.step(Input::Timer { timer: Timer::StopDeadline, generation: deadline }, &spec), [Action::Kill]);
        let actions = inst.step(Input::Exited { exit: Some(Exit::Signal(Signal::KILL)), group_left: false }, &spec);
        assert_eq!(inst.state, Stopped);
        assert!(inst.is_down());
        assert!(actions.contains(&Action::Down), "the stop is answered");
        assert_eq!(inst.restarts, 0, "a requested stop is not a restart");
    }

    #[test]
    fn a_stop_whose_exit_is_never_reported_still_settles() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let deadline = armed(&inst.step(Input::Stop, &spec), Timer::StopDeadline);
        assert_eq!(inst.step(Input::Timer { timer: Timer::StopDeadline, generation: deadline }, &spec), [Action::Kill]);
        // The supervisor found the process and its group gone without an exit report.
        let actions = inst.step(Input::Exited { exit: None, group_left: false }, &spec);
        assert_eq!(inst.state, Stopped);
        assert!(actions.contains(&Action::Down));
        assert_eq!(inst.last_exit, None);
    }

    #[test]
    fn a_spawn_the_spawner_never_answers_is_given_up() {
        let spec = spec("start_retries = 1");
        let mut inst = Instance::new();
        let actions = inst.step(Input::Start, &spec);
        let generation = armed(&actions, Timer::Spawn);
        let actions = inst.step(Input::Timer { timer: Timer::Spawn, generation }, &spec);
        assert_eq!(actions[0], Action::AbandonSpawn);
        assert!(actions.contains(&Action::NotUp), "the start is answered");
        assert_eq!(inst.state, Fatal);
        assert!(inst.is_down());
        // A report that comes in time disarms it.
        let mut inst = Instance::new();
        let generation = armed(&inst.step(Input::Start, &spec), Timer::Spawn);
        assert!(inst.step(spawned(5), &spec).contains(&Action::Disarm(Timer::Spawn)));
        assert!(effects(&inst.step(Input::Timer { timer: Timer::Spawn, generation }, &spec)).is_empty());
    }

    #[test]
    fn a_stale_deadline_never_hits_the_next_run() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let deadline = armed(&inst.step(Input::Stop, &spec), Timer::StopDeadline);
        inst.step(exited(0), &spec);
        inst.step(Input::Start, &spec);
        inst.step(spawned(200), &spec);
        assert_eq!(effects(&inst.step(Input::Timer { timer: Timer::StopDeadline, generation: deadline }, &spec)), []);
        assert_eq!(inst.state, Running);
        assert_eq!(inst.run, 200, "each spawn is a run of its own");
    }

    #[test]
    fn leftovers_of_the_group_are_stopped_before_the_next_start() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let actions = inst.step(Input::Exited { exit: Some(Exit::Code(1)), group_left: true }, &spec);
        assert!(actions.contains(&Action::Signal(Signal::TERM)));
        assert!(!has(&actions, is_spawn), "no spawn while the old group lives");
        assert_eq!(inst.state, Starting);
        assert_eq!(effects(&inst.step(Input::GroupGone, &spec)), [SPAWN]);
    }

    #[test]
    fn stopping_waits_for_the_whole_group() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        inst.step(Input::Stop, &spec);
        let actions = inst.step(Input::Exited { exit: Some(Exit::Code(0)), group_left: true }, &spec);
        assert_eq!(inst.state, Stopping);
        assert!(!inst.is_down());
        assert!(!actions.contains(&Action::Down));
        assert!(inst.step(Input::GroupGone, &spec).contains(&Action::Down));
        assert_eq!(inst.state, Stopped);
        assert!(inst.is_down());
    }

    #[test]
    fn stop_during_a_spawn_in_flight_signals_when_it_lands() {
        let spec = spec("");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        assert_eq!(effects(&inst.step(Input::Stop, &spec)), []);
        assert_eq!(inst.state, Stopping);
        let actions = inst.step(spawned(5), &spec);
        assert!(actions.contains(&Action::Signal(Signal::TERM)));
        inst.step(exited(0), &spec);
        assert_eq!(inst.state, Stopped);
    }

    #[test]
    fn a_start_during_a_stop_starts_once_the_stop_is_done() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        inst.step(Input::Stop, &spec);
        assert_eq!(effects(&inst.step(Input::Start, &spec)), [], "nothing starts while the old run lives");
        assert_eq!(inst.state, Stopping);
        let actions = inst.step(exited(0), &spec);
        assert!(has(&actions, is_spawn));
        assert!(actions.contains(&Action::Down), "the stop is over, overtaken by the start");
        assert_eq!(inst.state, Starting);
        assert_eq!(inst.restarts, 0, "a requested start is not a restart");
        // A stop after the start wins again.
        inst.step(spawned(9), &spec);
        inst.step(Input::Stop, &spec);
        inst.step(Input::Start, &spec);
        inst.step(Input::Stop, &spec);
        assert!(!has(&inst.step(exited(0), &spec), is_spawn));
        assert_eq!(inst.state, Stopped);
    }

    #[test]
    fn removal_stops_it_then_it_leaves_and_keep_takes_it_back() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let actions = inst.step(Input::Remove, &spec);
        assert!(inst.removing && actions.contains(&Action::Signal(Signal::TERM)));
        assert!(!actions.contains(&Action::Leave));
        assert!(inst.step(exited(0), &spec).contains(&Action::Leave));
        // A stopped instance leaves at once.
        let mut idle = Instance::new();
        assert!(idle.step(Input::Remove, &spec).contains(&Action::Leave));
        // Kept while on its way out: the removal's wait ends, and it never leaves.
        let (mut inst, _) = running(&spec);
        inst.step(Input::Remove, &spec);
        assert!(inst.step(Input::Keep, &spec).contains(&Action::Down));
        assert!(!inst.step(exited(0), &spec).contains(&Action::Leave));
        assert!(!inst.removing);
    }

    /// Ways to put an instance in each state of the machine, by feeding it inputs.
    fn setups() -> Vec<(&'static str, Vec<Input>)> {
        let deadline_of_stop = Input::Timer { timer: Timer::StopDeadline, generation: 1 };
        vec![
            ("stopped (new)", vec![]),
            ("waiting", vec![Input::Wait]),
            ("starting (spawn in flight)", vec![Input::Start]),
            ("starting (up, before start_secs)", vec![Input::Start, spawned(10)]),
            (
                "starting (waiting for the old group)",
                vec![Input::Start, spawned(10), Input::Exited { exit: Some(Exit::Code(1)), group_left: true }],
            ),
            ("running", vec![Input::Start, spawned(10), Input::Timer { timer: Timer::Up, generation: 1 }]),
            ("backoff", vec![Input::Start, spawned(10), exited(1), spawned(11), exited(1)]),
            ("stopping", vec![Input::Start, spawned(10), Input::Stop]),
            ("stopping (killed)", vec![Input::Start, spawned(10), Input::Stop, deadline_of_stop]),
            ("stopped", vec![Input::Start, spawned(10), Input::Stop, exited(0)]),
            ("exited", vec![Input::Start, spawned(10), Input::Timer { timer: Timer::Up, generation: 1 }, exited(0)]),
            (
                "fatal",
                vec![
                    Input::Start,
                    spawned(10),
                    exited(1),
                    spawned(11),
                    exited(1),
                    Input::Timer { timer: Timer::Backoff, generation: 1 },
                    spawned(12),
                    exited(1),
                ],
            ),
        ]
    }

    fn inputs() -> Vec<(&'static str, Input)> {
        vec![
            ("start", Input::Start),
            ("stop", Input::Stop),
            ("remove", Input::Remove),
            ("keep", Input::Keep),
            ("spawned", spawned(20)),
            ("spawn failed", Input::SpawnFailed),
            ("exited 0", exited(0)),
            ("exited 1", exited(1)),
            ("exited, group left", Input::Exited { exit: Some(Exit::Code(1)), group_left: true }),
            ("exit never reported", Input::Exited { exit: None, group_left: false }),
            ("group gone", Input::GroupGone),
            ("up timer", Input::Timer { timer: Timer::Up, generation: 1 }),
            ("backoff timer", Input::Timer { timer: Timer::Backoff, generation: 1 }),
            ("stop deadline", Input::Timer { timer: Timer::StopDeadline, generation: 1 }),
            ("spawn timer", Input::Timer { timer: Timer::Spawn, generation: 1 }),
            ("stale timer", Input::Timer { timer: Timer::StopDeadline, generation: 99 }),
            ("wait", Input::Wait),
            ("dependency failed", Input::DependencyFailed),
            ("dependencies met", Input::DependenciesMet),
            ("ready", Input::Ready),
            ("unhealthy", Input::Unhealthy),
            ("healthy", Input::Healthy),
            ("ready timer", Input::Timer { timer: Timer::Ready, generation: 1 }),
        ]
    }

    /// Every (state, input) pair: the state it leads to, from the table below, and the
    /// invariants that hold after any step.
    #[test]
    fn transition_matrix() {
        let spec = spec("start_secs = \"1s\"\nstart_retries = 3\nrestart = \"on-failure\"");
        // Rows follow `setups`, columns `inputs`: the state after that input.
        use State::{
            Backoff as B, Exited as E, Fatal as F, Running as R, Starting as S, Stopped as D, Stopping as P,
            Waiting as W,
        };
        #[rustfmt::skip]
        let table: [[State; 23]; 12] = [
            //start stop rem keep spawnd sfail ex0 ex1 exgl lost gone up  boff dead spwn stale wait dfail dmet rdy unh hlth rdyt
            [S,    D,   D,  D,   D,     D,    D,  D,  D,   D,   D,   D,  D,   D,   D,   D,    W,   D,    D,   D,  D,  D,   D], // stopped (new)
            [S,    D,   D,  W,   W,     W,    W,  W,  W,   W,   W,   W,  W,   W,   W,   W,    W,   W,    S,   W,  W,  W,   W], // waiting
            [S,    P,   P,  S,   S,     S,    S,  S,  S,   S,   S,   S,  S,   S,   S,   S,    S,   S,    S,   S,  S,  S,   S], // starting (in flight)
            [S,    P,   P,  S,   S,     S,    E,  S,  S,   S,   S,   R,  S,   S,   S,   S,    S,   S,    S,   S,  S,  S,   S], // starting (up)
            [S,    P,   P,  S,   S,     S,    S,  S,  S,   S,   S,   S,  S,   S,   S,   S,    S,   S,    S,   S,  S,  S,   S], // starting (old group)
            [R,    P,   P,  R,   R,     R,    E,  S,  S,   S,   R,   R,  R,   R,   R,   R,    R,   R,    R,   R,  R,  R,   R], // running
            [B,    D,   D,  B,   B,     B,    B,  B,  B,   B,   B,   B,  S,   B,   B,   B,    B,   B,    B,   B,  B,  B,   B], // backoff
            [P,    P,   P,  P,   P,     P,    D,  D,  P,   D,   P,   P,  P,   P,   P,   P,    P,   P,    P,   P,  P,  P,   P], // stopping
            [P,    P,   P,  P,   P,     P,    D,  D,  P,   D,   P,   P,  P,   P,   P,   P,    P,   P,    P,   P,  P,  P,   P], // stopping (killed)
            [S,    D,   D,  D,   D,     D,    D,  D,  D,   D,   D,   D,  D,   D,   D,   D,    W,   D,    D,   D,  D,  D,   D], // stopped
            [S,    E,   E,  E,   E,     E,    E,  E,  E,   E,   E,   E,  E,   E,   E,   E,    W,   E,    E,   E,  E,  E,   E], // exited
            [S,    F,   F,  F,   F,     F,    F,  F,  F,   F,   F,   F,  F,   F,   F,   F,    W,   F,    F,   F,  F,  F,   F], // fatal
        ];
        let setups = setups();
        let inputs = inputs();
        for (row, (setup, path)) in setups.iter().enumerate() {
            for (column, (name, input)) in inputs.iter().enumerate() {
                let mut inst = Instance::new();
                for step in path {
                    inst.step(*step, &spec);
                }
                // A backoff setup needs its real backoff generation.
                let input = match (setup, input) {
                    (&"backoff", Input::Timer { timer: Timer::Backoff, .. }) => {
                        Input::Timer { timer: Timer::Backoff, generation: inst.generations[Timer::Backoff.slot()] }
                    }
                    _ => *input,
                };
                let before = inst.clone();
                let actions = inst.step(input, &spec);
                let want = table[row][column];
                assert_eq!(inst.state, want, "{setup} + {name}: {actions:?}");
                let case = format!("{setup} + {name} -> {}: {actions:?}", inst.state);
                // What holds after every step.
                assert_eq!(inst.is_up(), has(&actions, |a| matches!(a, Action::Up { .. })), "{case}");
                assert!(!inst.is_down() || has(&actions, |a| *a == Action::Down), "down is answered: {case}");
                assert_eq!(inst.removing && inst.is_down(), has(&actions, |a| *a == Action::Leave), "{case}");
                assert!(
                    !has(&actions, is_spawn) || (inst.pgid.is_none() && inst.spawn_pending),
                    "a spawn only when no old group lives: {case}"
                );
                if has(&actions, |a| matches!(a, Action::Signal(_) | Action::Kill)) {
                    assert!(inst.pgid.is_some(), "a signal needs a group: {case}");
                }
                if inst.pid.is_some() {
                    assert!(inst.pgid.is_some(), "a live run has its group: {case}");
                }
                assert!(inst.restarts >= before.restarts, "{case}");
                if matches!(input, Input::Start | Input::Stop | Input::Remove) {
                    assert_eq!(inst.restarts, before.restarts, "a request is never a restart: {case}");
                }
            }
        }
    }

    /// The inputs of readiness and health, for a process that says when it is ready: the
    /// state each leads to, and whether the run is being stopped as a failure.
    #[test]
    fn readiness_matrix() {
        let spec = spec("ready = \"notify\"\nstart_secs = \"1s\"\nstart_retries = 3");
        let ready_timer = Input::Timer { timer: Timer::Ready, generation: 1 };
        let setups: [(&str, Vec<Input>); 4] = [
            ("waiting", vec![Input::Wait]),
            ("starting (spawn in flight)", vec![Input::Start]),
            ("starting (not ready yet)", vec![Input::Start, spawned(10)]),
            ("running", vec![Input::Start, spawned(10), Input::Ready]),
        ];
        let inputs = [Input::Ready, Input::Unhealthy, Input::Healthy, ready_timer, Input::DependencyFailed];
        // (state after, stopped as a failed run) per setup and input.
        let (w, s, r) = ((Waiting, false), (Starting, false), (Running, false));
        #[rustfmt::skip]
        let table = [
            //ready      unhealthy       healthy  ready timer      dependency failed
            [w,          w,              w,       w,               w], // waiting
            [s,          s,              s,       s,               s], // starting (in flight)
            [r,          s,              s,       (Starting, true), s], // starting (not ready)
            [r,          (Running, true), r,      r,               r], // running
        ];
        for (row, (setup, path)) in setups.iter().enumerate() {
            for (column, input) in inputs.iter().enumerate() {
                let mut inst = Instance::new();
                for step in path {
                    inst.step(*step, &spec);
                }
                let actions = inst.step(*input, &spec);
                let case = format!("{setup} + {input:?}: {actions:?}");
                assert_eq!((inst.state, inst.run_failed), table[row][column], "{case}");
                let signalled = has(&actions, |a| matches!(a, Action::Signal(_)));
                assert_eq!(signalled, inst.run_failed, "a failed run is signalled once: {case}");
                let not_up = has(&actions, |a| *a == Action::NotUp);
                assert_eq!(not_up, *input == Input::DependencyFailed && *setup == "waiting", "{case}");
            }
        }
    }

    #[test]
    fn stop_in_backoff_is_immediate() {
        let spec = spec("start_secs = \"1s\"");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        let mut last = vec![];
        for _ in 0..2 {
            inst.step(spawned(7), &spec);
            last = inst.step(exited(1), &spec);
        }
        assert_eq!(inst.state, Backoff);
        let generation = armed(&last, Timer::Backoff);
        inst.step(Input::Stop, &spec);
        assert_eq!(inst.state, Stopped);
        assert_eq!(effects(&inst.step(Input::Timer { timer: Timer::Backoff, generation }, &spec)), []);
    }

    #[test]
    fn requests_with_nothing_to_do_change_nothing() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let before = inst.clone();
        assert_eq!(effects(&inst.step(Input::Start, &spec)), []);
        assert_eq!(inst, before);
        let mut stopped = Instance::new();
        assert_eq!(effects(&stopped.step(Input::Stop, &spec)), []);
        assert_eq!(stopped.state, Stopped);
    }

    #[test]
    fn a_failed_spawn_counts_as_a_quick_failure() {
        let spec = spec("start_retries = 1");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        assert!(inst.step(Input::SpawnFailed, &spec).contains(&Action::NotUp));
        assert_eq!(inst.state, Fatal);
        assert!(inst.is_down());
    }

    /// A run that ended, and what came of it: the run's story, then the state after its end.
    fn ends_after(spec: &ProcessSpec, inst: &mut Instance, story: &[&str]) -> State {
        let actions = inst.step(spawned(7), spec);
        for step in story {
            match *step {
                "ready" => {
                    inst.step(Input::Ready, spec);
                }
                "start_secs" => {
                    let timer = if spec.ready == Ready::Up { Timer::Up } else { Timer::Young };
                    inst.step(Input::Timer { timer, generation: armed(&actions, timer) }, spec);
                }
                other => panic!("no step {other}"),
            }
        }
        let actions = inst.step(exited(1), spec);
        if inst.state == Backoff {
            let generation = armed(&actions, Timer::Backoff);
            inst.step(Input::Timer { timer: Timer::Backoff, generation }, spec);
            return Backoff;
        }
        inst.state
    }

    #[test]
    fn an_end_within_start_secs_is_quick_whether_or_not_the_run_became_ready() {
        // (ready, what each run lived through, the states after its end, run after run)
        let cases: [(&str, &[&str], &[State]); 5] = [
            ("ready = { log = \"^up\" }", &["ready"], &[Starting, Backoff, Fatal]),
            ("ready = { log = \"^up\" }", &[], &[Starting, Backoff, Fatal]),
            ("ready = { log = \"^up\" }", &["ready", "start_secs"], &[Starting, Starting, Starting]),
            ("ready = { log = \"^up\" }", &["start_secs", "ready"], &[Starting, Starting, Starting]),
            ("ready = \"up\"", &["start_secs"], &[Starting, Starting, Starting]),
        ];
        for (ready, story, states) in cases {
            let spec = spec(&format!("{ready}\nstart_secs = \"1s\"\nstart_retries = 3"));
            let mut inst = Instance::new();
            inst.step(Input::Start, &spec);
            let seen: Vec<State> = states.iter().map(|_| ends_after(&spec, &mut inst, story)).collect();
            assert_eq!(seen, states, "{ready} {story:?}");
        }
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::ZERO);
        assert_eq!(backoff_delay(2), BACKOFF_BASE);
        assert_eq!(backoff_delay(40), BACKOFF_MAX);
    }
}
