//! `procctl scale NAME COUNT`

use std::io::{stderr, stdout};

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, name: String, count: u32) -> Result<Status, CtlError> {
    match client.call(&Request::Scale { name, count })? {
        Response::Scaled { name, from, to } => printed(output::scaled(&name, from, to, &mut stdout().lock())),
        Response::Outcomes(failures) => {
            printed(output::outcomes(&failures, &mut stdout().lock(), &mut stderr().lock()))
        }
        other => Err(unexpected(&other)),
    }
}
