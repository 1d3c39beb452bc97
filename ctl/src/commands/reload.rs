//! `procctl reload`: returns when the changes are applied; prints what changed.

use procctl_proto::{Request, Response};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client) -> Result<Status, CtlError> {
    match client.call(&Request::Reload)? {
        Response::Reloaded(report) => Ok(output::reloaded(&report)),
        other => Err(unexpected(&other)),
    }
}
