//! `procctl scale NAME COUNT`

use procctl_proto::{Request, Response};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, name: String, count: u32) -> Result<Status, CtlError> {
    match client.call(&Request::Scale { name, count })? {
        Response::Scaled { name, from, to } if from == to => println!("{name} already has {to} instance(s)"),
        Response::Scaled { name, from, to } => println!("{name} scaled from {from} to {to}"),
        Response::Outcomes(failures) => return Ok(output::outcomes(&failures)),
        other => return Err(unexpected(&other)),
    }
    Ok(Status::Success)
}
