//! What crosses procctl's Unix socket, shared by `procagent` and `procctl`.
//!
//! `request` and `response` are the two message enums, `frame` turns them into
//! length-prefixed bytes and back (the only place that knows bincode), `target`
//! parses `all | NAME | NAME:INDEX`, `signal` names signals and exits, and
//! `socket` is the one rule for where the socket lives, `row` a `list` row
//! borrowed for encoding, `snapshot` the file that keeps
//! the last `list` answer beside the socket. `located` is the form of an error
//! about a line of a file, shared by the agent's config and `procctl import`.

pub mod duration;
pub mod frame;
pub mod located;
pub mod request;
pub mod response;
pub mod row;
pub mod signal;
pub mod snapshot;
pub mod socket;
pub mod target;

pub use frame::{FrameError, MAX_FRAME};
pub use request::{Request, SendRequest, WaitFor};
pub use response::{
    Delivery, ErrorKind, Event, EventKind, Health, InstanceInfo, LogLine, Outcome, OutcomeKind, RecycleReason,
    ReloadReport, Response, State, WireError,
};
pub use signal::{Exit, Signal};
pub use target::{InstanceId, Target};

/// Bumped on any change to the messages or their encoding; the hello compares it.
pub const PROTOCOL_VERSION: u32 = 3;
