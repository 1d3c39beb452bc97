//! `procctl wait TARGET... [--for STATE] [--timeout 30s]`: silent on success, for scripts.

use std::time::{Duration, Instant};

use procctl_proto::{Request, Response, Target, WaitFor};

use super::{distinct, resolve};
use crate::Status;
use crate::client::{Client, CtlError, unexpected};

/// Each target in turn, all within one `timeout`.
pub fn run(client: &mut Client, targets: &[Target], until: WaitFor, timeout: Duration) -> Result<Status, CtlError> {
    let targets = distinct(targets);
    resolve(client, &targets)?;
    let deadline = Instant::now() + timeout;
    for target in targets {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout_ms = left.as_millis().min(u128::from(u64::MAX)) as u64;
        match client.call(&Request::Wait { target, until, timeout_ms })? {
            Response::Waited => {}
            other => return Err(unexpected(&other)),
        }
    }
    Ok(Status::Success)
}
