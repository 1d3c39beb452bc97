//! `procctl metrics`: the OpenMetrics text, which comes in pieces; printed as it arrives.

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client) -> Result<Status, CtlError> {
    let mut response = client.call(&Request::Metrics)?;
    let mut out = std::io::stdout().lock();
    loop {
        match response {
            Response::Metrics { text, more } => {
                printed(output::text(&text, &mut out))?;
                if !more {
                    return Ok(Status::Success);
                }
            }
            other => return Err(unexpected(&other)),
        }
        response = client.next()?;
    }
}
