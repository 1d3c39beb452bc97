//! `procctl pid TARGET`

use procctl_proto::{Request, Response, Target};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, target: Target) -> Result<Status, CtlError> {
    match client.call(&Request::Pid { target: target.clone() })? {
        Response::Pids(pids) if pids.is_empty() => Err(CtlError::Failed(format!("no running instance of {target}"))),
        Response::Pids(pids) => printed(output::pids(&pids, &mut std::io::stdout().lock())),
        other => Err(unexpected(&other)),
    }
}
