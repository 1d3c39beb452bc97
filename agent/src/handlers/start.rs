//! `procctl start`: start what is stopped, exited or fatal; wait until each is running.

use procctl_proto::{Response, Target, WireError};

use super::started;
use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target) -> Result<Response, WireError> {
    let mut outcomes = vec![];
    for pending in sup.start(target).await? {
        outcomes.push(started(pending).await);
    }
    Ok(Response::Outcomes(outcomes))
}
