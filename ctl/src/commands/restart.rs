//! `procctl restart TARGET`: rolling; prints each old and new pid as it happens

use std::io::{Write, stderr, stdout};

use procctl_proto::{Request, Response, Target};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, target: Target) -> Result<Status, CtlError> {
    client.start(&Request::Restart { target: target.clone() })?;
    let mut status = Status::Success;
    loop {
        match client.next()? {
            Response::Step(outcome) => {
                let (out, err) = (&mut stdout().lock(), &mut stderr().lock());
                if printed(output::outcomes(&[outcome], out, err))? == Status::Failure {
                    status = Status::Failure;
                }
                printed(out.flush())?;
            }
            Response::Outcomes(list) if list.is_empty() => {
                return printed(output::nothing_to("restart", &target, &mut stdout().lock()));
            }
            Response::Outcomes(_) => return Ok(status),
            other => return Err(unexpected(&other)),
        }
    }
}
