//! `procctl list`: a snapshot of the targeted instances.

use procctl_proto::{Response, Target, WireError};

use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target) -> Result<Response, WireError> {
    sup.list(target).await.map(Response::List)
}
