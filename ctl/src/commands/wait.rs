//! `procctl wait TARGET [--for STATE] [--timeout 30s]`: silent on success, for scripts.

use std::time::Duration;

use procctl_proto::{Request, Response, Target, WaitFor};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};

pub fn run(client: &mut Client, target: Target, until: WaitFor, timeout: Duration) -> Result<Status, CtlError> {
    let timeout_ms = timeout.as_millis().min(u128::from(u64::MAX)) as u64;
    match client.call(&Request::Wait { target, until, timeout_ms })? {
        Response::Waited => Ok(Status::Success),
        other => Err(unexpected(&other)),
    }
}
