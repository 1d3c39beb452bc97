//! `procctl metrics`: the OpenMetrics text, which comes in pieces; printed as it arrives.

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;
use crate::streams::Io;

pub fn run(client: &mut Client, io: &mut Io) -> Result<Status, CtlError> {
    let mut response = client.call(&Request::Metrics)?;
    loop {
        match response {
            Response::Metrics { text, more } => {
                printed(output::text(&text, &mut io.out))?;
                if !more {
                    return Ok(Status::Success);
                }
            }
            other => return Err(unexpected(&other)),
        }
        response = client.next()?;
    }
}
