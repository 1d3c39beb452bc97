//! Responses from the agent: results, per-instance outcomes, and typed errors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::signal::{Exit, Signal};
use crate::target::InstanceId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Hello {
        version: u32,
        agent_version: String,
    },
    List(Vec<InstanceInfo>),
    Pids(Vec<u32>),
    /// What happened to each instance a command touched.
    Outcomes(Vec<Outcome>),
    Scaled {
        name: String,
        from: u32,
        to: u32,
    },
    ShutDown,
    /// What each instance a `Send` reached did with it.
    Sent(Vec<Delivery>),
    /// The tail of captured output, oldest first; `several` when the target has more than one instance.
    Logs {
        lines: Vec<LogLine>,
        several: bool,
    },
    /// One more line of a followed log.
    LogLine(LogLine),
    /// One lifecycle event of a stream.
    Event(Event),
    /// A slow reader of a stream missed this many items.
    Missed(u64),
    Reloaded(ReloadReport),
    /// Every instance of a `wait` target reached the state asked for.
    Waited,
    Error(WireError),
    /// One outcome of an operation that goes instance by instance, as it happens; the
    /// operation's final response follows the last.
    Step(Outcome),
    /// A piece of the OpenMetrics text, cut at a line end to fit a frame; `more` until the last.
    /// Last, so the variants before it keep their numbers on the wire.
    Metrics {
        text: String,
        more: bool,
    },
    /// The new binary takes the handover: the agent re-executes itself once this is
    /// written, and serves again from the new image on the same socket. Last, so the
    /// variants before it keep their numbers on the wire.
    Upgrading {
        from: String,
        to: String,
    },
}

/// What a reload changed, by process name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Restarted, rolling, because a key other than `instances` or `autostart` changed.
    pub changed: Vec<String>,
    /// (name, from, to) where `instances` changed.
    pub rescaled: Vec<(String, u32, u32)>,
    /// Instances that did not come up (a failed start halts a rolling restart).
    pub failures: Vec<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: InstanceId,
    /// Messages of this request handed to the instance's pipe.
    pub accepted: u32,
    /// The reply line, when one was asked for and came.
    pub reply: Option<String>,
    /// Why not everything was delivered (or no reply came).
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub id: InstanceId,
    /// Milliseconds since the Unix epoch when the agent read it; 0 when read back from a file.
    pub time_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Spawned {
        id: InstanceId,
        pid: u32,
    },
    /// Running: ready (up for start_secs, or as its `ready` says).
    Started {
        id: InstanceId,
        pid: u32,
    },
    /// Its dependencies are not met yet; `on` names the processes it waits for.
    Waiting {
        id: InstanceId,
        on: Vec<String>,
    },
    /// Failed its health check (or watchdog) and is restarted; `reason` says why.
    Unhealthy {
        id: InstanceId,
        reason: String,
    },
    Exited {
        id: InstanceId,
        pid: u32,
        exit: Exit,
    },
    Backoff {
        id: InstanceId,
        delay_ms: u64,
    },
    Fatal {
        id: InstanceId,
    },
    Stopped {
        id: InstanceId,
    },
    Scaled {
        name: String,
        from: u32,
        to: u32,
    },
    /// A line an instance wrote on its pipe that no `send --reply` was waiting for.
    Reply {
        id: InstanceId,
        line: String,
    },
    Reloaded,
    /// An autoscale probe failed, or printed no number: nothing changes (once per streak).
    AutoscaleError {
        name: String,
        reason: String,
    },
    /// Warm-restarted by a recycling policy (`max_memory`, `max_age`, `max_messages`).
    Recycled {
        id: InstanceId,
        reason: RecycleReason,
    },
}

/// Which limit a recycled instance crossed, and its figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecycleReason {
    Memory { bytes: u64 },
    Age { secs: u64 },
    Messages { count: u64 },
}

impl RecycleReason {
    /// The `reason` of the event, and the key and value of its figure.
    pub fn parts(self) -> (&'static str, &'static str, u64) {
        match self {
            RecycleReason::Memory { bytes } => ("memory", "memory_bytes", bytes),
            RecycleReason::Age { secs } => ("age", "uptime_secs", secs),
            RecycleReason::Messages { count } => ("messages", "messages", count),
        }
    }
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Spawned { .. } => "spawned",
            EventKind::Started { .. } => "started",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Unhealthy { .. } => "unhealthy",
            EventKind::Exited { .. } => "exited",
            EventKind::Backoff { .. } => "backoff",
            EventKind::Fatal { .. } => "fatal",
            EventKind::Stopped { .. } => "stopped",
            EventKind::Scaled { .. } => "scaled",
            EventKind::Reply { .. } => "reply",
            EventKind::Reloaded => "reloaded",
            EventKind::Recycled { .. } => "recycled",
            EventKind::AutoscaleError { .. } => "autoscale_error",
        }
    }

    pub fn id(&self) -> Option<&InstanceId> {
        match self {
            EventKind::Spawned { id, .. }
            | EventKind::Started { id, .. }
            | EventKind::Waiting { id, .. }
            | EventKind::Unhealthy { id, .. }
            | EventKind::Exited { id, .. }
            | EventKind::Backoff { id, .. }
            | EventKind::Fatal { id }
            | EventKind::Stopped { id }
            | EventKind::Reply { id, .. }
            | EventKind::Recycled { id, .. } => Some(id),
            EventKind::Scaled { .. } | EventKind::Reloaded | EventKind::AutoscaleError { .. } => None,
        }
    }
}

/// The states of SPEC.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Its dependencies are not met; it starts when they are.
    Waiting,
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Exited,
    Fatal,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Exited => "exited",
            State::Fatal => "fatal",
        }
    }
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| format!("unknown state `{s}`"))
    }
}

impl State {
    pub const ALL: [State; 8] = [
        State::Waiting,
        State::Starting,
        State::Running,
        State::Backoff,
        State::Stopping,
        State::Stopped,
        State::Exited,
        State::Fatal,
    ];
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `procctl list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: InstanceId,
    pub pid: Option<u32>,
    pub state: State,
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// The health check's verdict: `None` without one, before its first result, and while
    /// not running.
    pub health: Option<Health>,
    /// The last `STATUS=` text of the current run.
    pub status: Option<String>,
    /// CPU since the previous sample of this instance, in tenths of a percent of one CPU.
    pub cpu_tenths: Option<u32>,
    /// Resident memory of the instance's whole tree.
    pub memory_bytes: Option<u64>,
    /// Why its last start failed before the program ran (not found, permission denied),
    /// while that is the latest news of it.
    pub start_error: Option<String>,
    /// Recycled this many times since the agent started.
    pub recycles: u32,
    /// Messages routed to the current run's pipe.
    pub messages: u64,
    /// Its process's autoscaling: on (`Some(true)`), paused, or `None` without a policy.
    pub autoscale: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    Ok,
    Failing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Failing => "failing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: InstanceId,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeKind {
    Started {
        pid: u32,
    },
    AlreadyRunning {
        pid: Option<u32>,
    },
    Stopped,
    AlreadyStopped,
    Restarted {
        old: Option<u32>,
        new: u32,
        /// The old run ended only at SIGKILL, after stop_timeout.
        killed: bool,
    },
    Signalled {
        pid: u32,
        signal: Signal,
    },
    /// Not done, and why; the instance is named by the outcome.
    Failed(WireError),
    /// Nothing to stop: it is not running, and not stopped either (`fatal`, `exited`).
    NotRunning {
        state: State,
    },
}

/// Why something failed: a kind procctl can branch on, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    NotRunning,
    Timeout,
    QueueFull,
    VersionMismatch,
    /// The peer is not served (wrong uid) or the request was not acceptable now.
    Refused,
    BadRequest,
    /// The operation was tried and did not succeed (a start that never came up).
    Failed,
    ShuttingDown,
}
