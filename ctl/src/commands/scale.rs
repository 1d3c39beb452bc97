//! `procctl scale NAME COUNT`

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;
use crate::streams::Io;

pub fn run(client: &mut Client, name: String, count: u32, io: &mut Io) -> Result<Status, CtlError> {
    match client.call(&Request::Scale { name, count })? {
        Response::Scaled { name, from, to } => printed(output::scaled(&name, from, to, &mut io.out)),
        Response::Outcomes(failures) => printed(output::outcomes(&failures, &mut io.out, &mut io.err)),
        other => Err(unexpected(&other)),
    }
}
