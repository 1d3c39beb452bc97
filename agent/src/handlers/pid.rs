//! `procctl pid`: pids of the targeted instances that have a live process.

use procctl_proto::{Response, Target, WireError};

use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target) -> Result<Response, WireError> {
    let rows = sup.pids(target).await?;
    Ok(Response::Pids(rows.iter().filter_map(|row| row.pid).collect()))
}
