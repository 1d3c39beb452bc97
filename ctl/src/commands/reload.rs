//! `procctl reload`: returns when the changes are applied; prints what changed.

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;
use crate::streams::Io;

pub fn run(client: &mut Client, io: &mut Io) -> Result<Status, CtlError> {
    match client.call(&Request::Reload)? {
        Response::Reloaded(report) => printed(output::reloaded(&report, &mut io.out, &mut io.err)),
        other => Err(unexpected(&other)),
    }
}
