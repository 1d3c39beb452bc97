//! One instance's lifecycle as data: (state, input) -> (state, actions). Touches no process.
//!
//! The supervisor feeds it what happened (a request, a spawn, an exit, a timer) and carries
//! out the actions it returns. Timers carry the generation they were armed with, so a timer
//! that outlived its reason is ignored.

use std::time::{Duration, SystemTime};

use procctl_proto::{Exit, Signal, State};

use crate::config::{ProcessSpec, Restart};

/// The first delay after a second quick failure; it doubles with each one after.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two starts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// start_secs after a spawn: the instance counts as started.
    Up,
    /// The backoff delay before the next start.
    Backoff,
    /// stop_timeout after the group was signalled: SIGKILL it.
    StopDeadline,
}

impl Timer {
    fn slot(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A user (or autostart) asks for it to run.
    Start,
    /// A user asks for it to stop.
    Stop,
    Spawned {
        pid: i32,
        at: SystemTime,
    },
    SpawnFailed,
    /// The main process ended; `group_left` when other processes remain in its group.
    Exited {
        exit: Exit,
        group_left: bool,
    },
    /// No process is left in the instance's process group.
    GroupGone,
    Timer {
        timer: Timer,
        generation: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Spawn,
    SignalGroup(Signal),
    KillGroup,
    /// Arm `timer`; when it fires, feed `Input::Timer` with this generation.
    Arm {
        timer: Timer,
        after: Duration,
        generation: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    quick_failures: u32,
    spawn_pending: bool,
    spawn_when_clear: bool,
    /// A start came while stopping: start once the stop is done.
    start_after_stop: bool,
    generations: [u64; 3],
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
            quick_failures: 0,
            spawn_pending: false,
            spawn_when_clear: false,
            start_after_stop: false,
            generations: [0; 3],
        }
    }

    /// Running for start_secs.
    pub fn is_up(&self) -> bool {
        self.state == State::Running
    }

    /// At rest and nothing of it left alive.
    pub fn is_down(&self) -> bool {
        matches!(self.state, State::Stopped | State::Exited | State::Fatal)
            && self.pid.is_none()
            && self.pgid.is_none()
            && !self.spawn_pending
    }

    /// Whether a start request has anything to do.
    pub fn is_startable(&self) -> bool {
        matches!(self.state, State::Stopped | State::Exited | State::Fatal)
    }

    pub fn step(&mut self, input: Input, spec: &ProcessSpec) -> Vec<Action> {
        match input {
            Input::Start if self.is_startable() => {
                self.quick_failures = 0;
                self.begin_start()
            }
            Input::Start if self.state == State::Stopping => {
                self.start_after_stop = true;
                vec![]
            }
            Input::Start => vec![],
            Input::Stop => self.on_stop(spec),
            Input::Spawned { pid, at } => self.on_spawned(pid, at, spec),
            Input::SpawnFailed => {
                self.spawn_pending = false;
                match self.state {
                    State::Stopping => self.settle_stopping(),
                    State::Starting => self.after_exit(None, true, spec),
                    _ => vec![],
                }
            }
            Input::Exited { exit, group_left } => self.on_exited(exit, group_left, spec),
            Input::GroupGone => self.on_group_gone(),
            Input::Timer { timer, generation } if generation == self.generations[timer.slot()] => {
                self.on_timer(timer, spec)
            }
            Input::Timer { .. } => vec![],
        }
    }

    fn arm(&mut self, timer: Timer, after: Duration) -> Action {
        self.generations[timer.slot()] += 1;
        Action::Arm { timer, after, generation: self.generations[timer.slot()] }
    }

    fn cancel(&mut self, timer: Timer) {
        self.generations[timer.slot()] += 1;
    }

    fn begin_start(&mut self) -> Vec<Action> {
        self.state = State::Starting;
        if self.pgid.is_some() {
            // The previous run's group is still being stopped; start when it is gone.
            self.spawn_when_clear = true;
            vec![]
        } else {
            self.spawn_pending = true;
            vec![Action::Spawn]
        }
    }

    fn on_stop(&mut self, spec: &ProcessSpec) -> Vec<Action> {
        self.start_after_stop = false;
        match self.state {
            State::Starting | State::Running => {
                self.spawn_when_clear = false;
                self.state = State::Stopping;
                if self.pid.is_some() {
                    let deadline = self.arm(Timer::StopDeadline, spec.stop_timeout);
                    vec![Action::SignalGroup(spec.stop_signal), deadline]
                } else {
                    // A spawn in flight is signalled when it lands; a draining group keeps its deadline.
                    self.settle_stopping()
                }
            }
            State::Backoff => {
                self.cancel(Timer::Backoff);
                self.state = State::Stopping;
                self.settle_stopping()
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

    fn on_spawned(&mut self, pid: i32, at: SystemTime, spec: &ProcessSpec) -> Vec<Action> {
        self.spawn_pending = false;
        self.run += 1;
        self.pid = Some(pid);
        self.pgid = Some(pid);
        self.started_at = Some(at);
        match self.state {
            State::Starting if spec.start_secs.is_zero() => {
                self.state = State::Running;
                self.quick_failures = 0;
                vec![]
            }
            State::Starting => vec![self.arm(Timer::Up, spec.start_secs)],
            _ => {
                // Stopped while the spawn was in flight.
                let deadline = self.arm(Timer::StopDeadline, spec.stop_timeout);
                vec![Action::SignalGroup(spec.stop_signal), deadline]
            }
        }
    }

    fn on_exited(&mut self, exit: Exit, group_left: bool, spec: &ProcessSpec) -> Vec<Action> {
        self.pid = None;
        self.started_at = None;
        self.last_exit = Some(exit);
        self.cancel(Timer::Up);
        if !group_left {
            self.pgid = None;
            self.cancel(Timer::StopDeadline);
        }
        match self.state {
            State::Stopping => self.settle_stopping(),
            State::Starting | State::Running => {
                let quick = self.state == State::Starting;
                let mut actions = Vec::new();
                if group_left {
                    // Stop what the main process left behind before anything starts again.
                    actions.push(Action::SignalGroup(spec.stop_signal));
                    actions.push(self.arm(Timer::StopDeadline, spec.stop_timeout));
                }
                actions.extend(self.after_exit(Some(exit), quick, spec));
                actions
            }
            State::Backoff | State::Stopped | State::Exited | State::Fatal => vec![],
        }
    }

    /// An unexpected end of a run (or a failed spawn: `exit` is `None`).
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
        self.state = State::Backoff;
        let delay = backoff_delay(self.quick_failures);
        if delay.is_zero() { self.restart_now() } else { vec![self.arm(Timer::Backoff, delay)] }
    }

    fn restart_now(&mut self) -> Vec<Action> {
        self.restarts += 1;
        self.begin_start()
    }

    fn on_timer(&mut self, timer: Timer, _spec: &ProcessSpec) -> Vec<Action> {
        match timer {
            Timer::Up if self.state == State::Starting && self.pid.is_some() => {
                self.state = State::Running;
                self.quick_failures = 0;
                vec![]
            }
            Timer::Backoff if self.state == State::Backoff => self.restart_now(),
            Timer::StopDeadline if self.pgid.is_some() => vec![Action::KillGroup],
            _ => vec![],
        }
    }

    fn on_group_gone(&mut self) -> Vec<Action> {
        if self.pid.is_some() {
            // The main process is alive, so its group is not gone: a stale report.
            return vec![];
        }
        self.pgid = None;
        self.cancel(Timer::StopDeadline);
        match self.state {
            State::Stopping => self.settle_stopping(),
            State::Starting if self.spawn_when_clear => {
                self.spawn_when_clear = false;
                self.spawn_pending = true;
                vec![Action::Spawn]
            }
            _ => vec![],
        }
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
        Input::Spawned { pid, at: T0 }
    }

    fn exited(code: i32) -> Input {
        Input::Exited { exit: Exit::Code(code), group_left: false }
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

    fn running(spec: &ProcessSpec) -> (Instance, Vec<Action>) {
        let mut inst = Instance::new();
        assert_eq!(inst.step(Input::Start, spec), [Action::Spawn]);
        let actions = inst.step(spawned(100), spec);
        (inst, actions)
    }

    #[test]
    fn start_spawns_and_start_secs_makes_it_running() {
        let spec = spec("start_secs = \"1s\"");
        let (mut inst, actions) = running(&spec);
        assert_eq!(inst.state, Starting);
        let up = armed(&actions, Timer::Up);
        assert_eq!(inst.step(Input::Timer { timer: Timer::Up, generation: up }, &spec), []);
        assert_eq!(inst.state, Running);
        assert!(inst.is_up());
    }

    #[test]
    fn zero_start_secs_is_running_at_once() {
        let spec = spec("start_secs = \"0s\"");
        let (inst, actions) = running(&spec);
        assert_eq!((inst.state, actions), (Running, vec![]));
    }

    #[test]
    fn restart_policy_matrix() {
        // (policy, exit, state after an unexpected exit of a long run)
        let cases = [
            ("always", Exit::Code(0), Starting),
            ("always", Exit::Code(1), Starting),
            ("on-failure", Exit::Code(0), Exited),
            ("on-failure", Exit::Code(3), Starting),
            ("on-failure", Exit::Signal(Signal::KILL), Starting),
            ("never", Exit::Code(1), Exited),
            ("never", Exit::Signal(Signal::KILL), Exited),
        ];
        for (policy, exit, want) in cases {
            let spec = spec(&format!("restart = \"{policy}\"\nstart_secs = \"0s\""));
            let (mut inst, _) = running(&spec);
            let actions = inst.step(Input::Exited { exit, group_left: false }, &spec);
            assert_eq!(inst.state, want, "{policy} {exit}");
            assert_eq!(actions.contains(&Action::Spawn), want == Starting, "{policy} {exit}");
            assert_eq!(inst.restarts, u32::from(want == Starting));
            assert_eq!(inst.last_exit, Some(exit));
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
                    let Action::Arm { after, .. } = actions[0] else { unreachable!() };
                    delays.push(after);
                    assert_eq!(inst.step(Input::Timer { timer: Timer::Backoff, generation }, &spec), [Action::Spawn]);
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(delays, [Duration::ZERO, BACKOFF_BASE, BACKOFF_BASE * 2]);
        assert_eq!(inst.restarts, 3);
        assert!(inst.is_down());
        // `start` tries again from fatal, with a fresh count.
        assert_eq!(inst.step(Input::Start, &spec), [Action::Spawn]);
        assert_eq!(inst.state, Starting);
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let spec = spec("start_secs = \"1s\"");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        for _ in 0..3 {
            inst.step(spawned(7), &spec);
            inst.step(exited(1), &spec);
        }
        assert_eq!(inst.state, Backoff);
        inst.step(Input::Timer { timer: Timer::Backoff, generation: inst.generations[1] }, &spec);
        let actions = inst.step(spawned(8), &spec);
        inst.step(Input::Timer { timer: Timer::Up, generation: armed(&actions, Timer::Up) }, &spec);
        assert_eq!(inst.state, Running);
        assert_eq!(inst.step(exited(1), &spec), [Action::Spawn], "the next restart is immediate");
    }

    #[test]
    fn stop_signals_the_group_and_kills_at_the_deadline() {
        let spec = spec("stop_signal = \"INT\"\nstop_timeout = \"2s\"\nstart_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let actions = inst.step(Input::Stop, &spec);
        assert_eq!(actions[0], Action::SignalGroup(Signal::INT));
        assert_eq!(inst.state, Stopping);
        let deadline = armed(&actions, Timer::StopDeadline);
        assert_eq!(
            inst.step(Input::Timer { timer: Timer::StopDeadline, generation: deadline }, &spec),
            [Action::KillGroup]
        );
        inst.step(Input::Exited { exit: Exit::Signal(Signal::KILL), group_left: false }, &spec);
        assert_eq!(inst.state, Stopped);
        assert!(inst.is_down());
        assert_eq!(inst.restarts, 0, "a requested stop is not a restart");
    }

    #[test]
    fn a_stale_deadline_never_hits_the_next_run() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let deadline = armed(&inst.step(Input::Stop, &spec), Timer::StopDeadline);
        inst.step(exited(0), &spec);
        inst.step(Input::Start, &spec);
        inst.step(spawned(200), &spec);
        assert_eq!(inst.step(Input::Timer { timer: Timer::StopDeadline, generation: deadline }, &spec), []);
        assert_eq!(inst.state, Running);
    }

    #[test]
    fn leftovers_of_the_group_are_stopped_before_the_next_start() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let actions = inst.step(Input::Exited { exit: Exit::Code(1), group_left: true }, &spec);
        assert_eq!(actions[0], Action::SignalGroup(Signal::TERM));
        assert!(!actions.contains(&Action::Spawn), "no spawn while the old group lives");
        assert_eq!(inst.state, Starting);
        assert_eq!(inst.step(Input::GroupGone, &spec), [Action::Spawn]);
    }

    #[test]
    fn stopping_waits_for_the_whole_group() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        inst.step(Input::Stop, &spec);
        inst.step(Input::Exited { exit: Exit::Code(0), group_left: true }, &spec);
        assert_eq!(inst.state, Stopping);
        assert!(!inst.is_down());
        inst.step(Input::GroupGone, &spec);
        assert_eq!(inst.state, Stopped);
        assert!(inst.is_down());
    }

    #[test]
    fn stop_during_a_spawn_in_flight_signals_when_it_lands() {
        let spec = spec("");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        assert_eq!(inst.step(Input::Stop, &spec), []);
        assert_eq!(inst.state, Stopping);
        let actions = inst.step(spawned(5), &spec);
        assert_eq!(actions[0], Action::SignalGroup(Signal::TERM));
        inst.step(exited(0), &spec);
        assert_eq!(inst.state, Stopped);
    }

    #[test]
    fn a_start_during_a_stop_starts_once_the_stop_is_done() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        inst.step(Input::Stop, &spec);
        assert_eq!(inst.step(Input::Start, &spec), [], "nothing starts while the old run lives");
        assert_eq!(inst.state, Stopping);
        assert_eq!(inst.step(exited(0), &spec), [Action::Spawn]);
        assert_eq!(inst.state, Starting);
        assert_eq!(inst.restarts, 0, "a requested start is not a restart");
        // A stop after the start wins again.
        inst.step(spawned(9), &spec);
        inst.step(Input::Stop, &spec);
        inst.step(Input::Start, &spec);
        inst.step(Input::Stop, &spec);
        assert_eq!(inst.step(exited(0), &spec), []);
        assert_eq!(inst.state, Stopped);
    }

    #[test]
    fn stop_in_backoff_is_immediate() {
        let spec = spec("start_secs = \"1s\"");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        for _ in 0..2 {
            inst.step(spawned(7), &spec);
            inst.step(exited(1), &spec);
        }
        assert_eq!(inst.state, Backoff);
        let generation = inst.generations[1];
        inst.step(Input::Stop, &spec);
        assert_eq!(inst.state, Stopped);
        assert_eq!(inst.step(Input::Timer { timer: Timer::Backoff, generation }, &spec), []);
    }

    #[test]
    fn requests_with_nothing_to_do_change_nothing() {
        let spec = spec("start_secs = \"0s\"");
        let (mut inst, _) = running(&spec);
        let before = inst.clone();
        assert_eq!(inst.step(Input::Start, &spec), []);
        assert_eq!(inst, before);
        let mut stopped = Instance::new();
        assert_eq!(stopped.step(Input::Stop, &spec), []);
        assert_eq!(stopped.state, Stopped);
    }

    #[test]
    fn a_failed_spawn_counts_as_a_quick_failure() {
        let spec = spec("start_retries = 1");
        let mut inst = Instance::new();
        inst.step(Input::Start, &spec);
        inst.step(Input::SpawnFailed, &spec);
        assert_eq!(inst.state, Fatal);
        assert!(inst.is_down());
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::ZERO);
        assert_eq!(backoff_delay(2), BACKOFF_BASE);
        assert_eq!(backoff_delay(40), BACKOFF_MAX);
    }
}
