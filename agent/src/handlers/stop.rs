//! `procctl stop`: stop gracefully; wait until each group is gone.

use procctl_proto::{Response, Target, WireError};

use super::stopped;
use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target) -> Result<Response, WireError> {
    let mut outcomes = vec![];
    for pending in sup.stop(target).await? {
        outcomes.push(stopped(pending).await);
    }
    Ok(Response::Outcomes(outcomes))
}
