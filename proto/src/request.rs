//! Requests from procctl to the agent. `Hello` comes first on every connection.

use serde::{Deserialize, Serialize};

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
}

impl Request {
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
            Request::Shutdown => "shutdown",
        }
    }
}
