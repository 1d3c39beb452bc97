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
    Error(WireError),
}

/// The states of SPEC.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
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
    },
    Signalled {
        pid: u32,
        signal: Signal,
    },
    /// Not done, and why; the instance is named by the outcome.
    Failed(WireError),
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
