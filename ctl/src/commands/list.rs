//! `procctl list [TARGET] [--json]`

use procctl_proto::{Request, Response, Target};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, target: Option<Target>, json: bool) -> Result<Status, CtlError> {
    let target = target.unwrap_or(Target::All);
    match client.call(&Request::List { target })? {
        Response::List(rows) => printed(output::list(&rows, json, &mut std::io::stdout().lock())),
        other => Err(unexpected(&other)),
    }
}
