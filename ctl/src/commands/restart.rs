//! `procctl restart TARGET...`: rolling; prints each old and new pid as it happens

use std::io::Write;

use procctl_proto::{Request, Response, Target};

use super::{distinct, printed, resolve};
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;
use crate::streams::Io;

/// Each target in turn, once all are resolved; each step is printed as the agent streams it.
pub fn run(client: &mut Client, targets: &[Target], io: &mut Io) -> Result<Status, CtlError> {
    let targets = distinct(targets);
    resolve(client, &targets)?;
    let mut status = Status::Success;
    for target in targets {
        client.start(&Request::Restart { target: target.clone() })?;
        loop {
            match client.next()? {
                Response::Step(outcome) => {
                    if printed(output::outcomes(&[outcome], &mut io.out, &mut io.err))? == Status::Failure {
                        status = Status::Failure;
                    }
                    printed(io.out.flush())?;
                }
                Response::Outcomes(list) if list.is_empty() => {
                    if printed(output::nothing_to("restart", &target, &mut io.out))? == Status::Failure {
                        status = Status::Failure;
                    }
                    break;
                }
                Response::Outcomes(_) => break,
                other => return Err(unexpected(&other)),
            }
        }
    }
    Ok(status)
}
