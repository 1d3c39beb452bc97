//! `procctl shutdown`: returns once every instance has stopped.

use procctl_proto::{Request, Response};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};

pub fn run(client: &mut Client) -> Result<Status, CtlError> {
    match client.call(&Request::Shutdown)? {
        Response::ShutDown => {
            println!("every instance stopped; the agent is exiting");
            Ok(Status::Success)
        }
        other => Err(unexpected(&other)),
    }
}
