//! `procctl signal`: send a signal to each targeted instance's process group.

use procctl_proto::{Response, Signal, Target, WireError};

use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target, signal: Signal) -> Result<Response, WireError> {
    sup.signal(target, signal).await.map(Response::Outcomes)
}
