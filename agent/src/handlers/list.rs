//! `procctl list`: a snapshot of the targeted instances.

use procctl_proto::{Response, Target};

use super::Reply;
use crate::supervisor::Handle;

/// The supervisor writes the answer's frame itself, from its table.
pub async fn run(sup: &Handle, target: Target) -> Reply {
    match sup.list(target).await {
        Ok(frame) => Reply::Frame(frame),
        Err(error) => Reply::One(Response::Error(error)),
    }
}
