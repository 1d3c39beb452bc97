//! `procctl shutdown`: returns once every instance has stopped.

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client) -> Result<Status, CtlError> {
    match client.call(&Request::Shutdown)? {
        Response::ShutDown => printed(output::shut_down(&mut std::io::stdout().lock())),
        other => Err(unexpected(&other)),
    }
}
