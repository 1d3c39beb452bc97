//! `procctl pid TARGET`

use procctl_proto::{Request, Response, Target};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};

pub fn run(client: &mut Client, target: Target) -> Result<Status, CtlError> {
    match client.call(&Request::Pid { target: target.clone() })? {
        Response::Pids(pids) if pids.is_empty() => Err(CtlError::Failed(format!("no running instance of {target}"))),
        Response::Pids(pids) => {
            let lines: Vec<String> = pids.iter().map(u32::to_string).collect();
            println!("{}", lines.join("\n"));
            Ok(Status::Success)
        }
        other => Err(unexpected(&other)),
    }
}
