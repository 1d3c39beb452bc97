//! `procctl shutdown`: returns once every instance has stopped.

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;
use crate::streams::Io;

pub fn run(client: &mut Client, io: &mut Io) -> Result<Status, CtlError> {
    match client.call(&Request::Shutdown)? {
        Response::ShutDown => printed(output::shut_down(&mut io.out)),
        other => Err(unexpected(&other)),
    }
}
