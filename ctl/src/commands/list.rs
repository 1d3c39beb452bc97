//! `procctl list [TARGET] [--json]`

use procctl_proto::{Request, Response, Target};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, target: Option<Target>, json: bool) -> Result<Status, CtlError> {
    let target = target.unwrap_or(Target::All);
    match client.call(&Request::List { target })? {
        Response::List(rows) if json => println!("{}", output::list_json(&rows)),
        Response::List(rows) => println!("{}", output::list_table(&rows)),
        other => return Err(unexpected(&other)),
    }
    Ok(Status::Success)
}
