//! Requests from procctl to the agent. `Hello` comes first on every connection.

use serde::{Deserialize, Serialize};

use crate::response::State;
use crate::signal::Signal;
use crate::target::Target;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens a connection; the agent answers `Response::Hello` or a `VersionMismatch` error.
    Hello {
        version: u32,
    },
    List {
        target: Target,
    },
    Pid {
        target: Target,
    },
    Start {
        target: Target,
    },
    Stop {
        target: Target,
    },
    /// Rolling: one instance at a time, each replacement running before the next.
    Restart {
        target: Target,
    },
    Signal {
        target: Target,
        signal: Signal,
    },
    Scale {
        name: String,
        count: u32,
    },
    Shutdown,
    /// One batch of messages; `procctl send -` sends many over one connection.
    Send(SendRequest),
    /// The last lines of captured output; with `follow`, then a stream of `LogLine`s.
    Logs {
        target: Target,
        lines: u32,
        follow: bool,
    },
    /// A stream of `Event`s until the client goes away.
    Events,
    /// Re-read the config file and apply the difference.
    Reload,
    /// Answer `Waited` once every instance of `target` is in `until`, or an error naming
    /// those that are not at the timeout.
    Wait {
        target: Target,
        until: WaitFor,
        timeout_ms: u64,
    },
    /// The metrics in the OpenMetrics text format, as `--metrics` serves them.
    Metrics,
    /// `scale NAME auto`: autoscaling of NAME resumes (a `Scale` pauses it). Last, so that
    /// the tags of the requests before it stay.
    Autoscale {
        name: String,
    },
    /// Re-execute the agent in place from `binary` (default: the agent's own path as it was
    /// at start), keeping its pid, its instances and their descriptors. Last, so that the
    /// tags of the requests before it stay.
    Upgrade {
        binary: Option<String>,
    },
}

/// What `procctl wait --for` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitFor {
    State(State),
    /// The instances no longer exist.
    Gone,
}

impl std::str::FromStr for WaitFor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gone" => Ok(WaitFor::Gone),
            "running" | "stopped" | "exited" | "fatal" => s.parse().map(WaitFor::State),
            _ => Err(format!("cannot wait for `{s}`: use running, stopped, exited, fatal or gone")),
        }
    }
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitFor::State(state) => write!(f, "{state}"),
            WaitFor::Gone => f.write_str("gone"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub target: Target,
    /// One line each, without the newline.
    pub messages: Vec<String>,
    /// Each message to one running instance of the process, round-robin.
    pub any: bool,
    /// Wait for one reply line from each instance the message went to.
    pub reply: bool,
    /// How long an instance may read nothing while messages wait (and, with `reply`, how
    /// long to wait for the reply).
    pub timeout_ms: u64,
}

impl Request {
    /// A request that changes nothing, so nothing is lost when it is dropped with its client:
    /// a query, a stream, or the wait for a reply (the message itself is already on its way).
    pub fn only_waits(&self) -> bool {
        match self {
            Request::List { .. }
            | Request::Pid { .. }
            | Request::Logs { .. }
            | Request::Events
            | Request::Wait { .. }
            | Request::Metrics => true,
            Request::Send(send) => send.reply,
            _ => false,
        }
    }

    /// A request the agent answers (or, for a stream, first answers) from what it knows at
    /// once: nothing to wait for before it is written, so its client's leaving need not be
    /// watched meanwhile.
    pub fn answered_at_once(&self) -> bool {
        matches!(
            self,
            Request::List { .. } | Request::Pid { .. } | Request::Metrics | Request::Events | Request::Logs { .. }
        )
    }

    /// A request whose answer waits on instances (to come up, go down, reach a state, or
    /// reply): an upgrade of the agent answers it at once, and the operation goes on in the
    /// new agent.
    pub fn waits_on_instances(&self) -> bool {
        match self {
            Request::Start { .. } | Request::Stop { .. } | Request::Restart { .. } | Request::Wait { .. } => true,
            Request::Send(send) => send.reply,
            _ => false,
        }
    }

    /// The verb, for logs and error messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::List { .. } => "list",
            Request::Pid { .. } => "pid",
            Request::Start { .. } => "start",
            Request::Stop { .. } => "stop",
            Request::Restart { .. } => "restart",
            Request::Signal { .. } => "signal",
            Request::Scale { .. } => "scale",
            Request::Autoscale { .. } => "autoscale",
            Request::Shutdown => "shutdown",
            Request::Send(_) => "send",
            Request::Logs { .. } => "logs",
            Request::Events => "events",
            Request::Reload => "reload",
            Request::Wait { .. } => "wait",
            Request::Metrics => "metrics",
            Request::Upgrade { .. } => "upgrade",
        }
    }
}
