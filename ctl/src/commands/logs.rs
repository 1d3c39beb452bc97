//! `procctl logs TARGET [-n N] [-f]`

use procctl_proto::{Request, Response, Target};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, target: Target, lines: u32, follow: bool) -> Result<Status, CtlError> {
    client.start(&Request::Logs { target, lines, follow })?;
    let several = match client.next()? {
        Response::Logs { lines, several } => {
            for line in &lines {
                if output::log_line(line, several).is_err() {
                    return Ok(Status::Success);
                }
            }
            several
        }
        other => return Err(unexpected(&other)),
    };
    if !follow {
        return Ok(Status::Success);
    }
    loop {
        match client.next()? {
            Response::LogLine(line) => {
                if output::log_line(&line, several).is_err() {
                    // Whoever read our output has gone (a closed pipe): stop quietly.
                    return Ok(Status::Success);
                }
            }
            Response::Missed(count) => eprintln!("procctl: missed {count} line(s): this terminal read too slowly"),
            other => return Err(unexpected(&other)),
        }
    }
}
