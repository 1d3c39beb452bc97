//! `procctl reload`: returns when the changes are applied; prints what changed.

use std::io::{stderr, stdout};

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client) -> Result<Status, CtlError> {
    match client.call(&Request::Reload)? {
        Response::Reloaded(report) => printed(output::reloaded(&report, &mut stdout().lock(), &mut stderr().lock())),
        other => Err(unexpected(&other)),
    }
}
