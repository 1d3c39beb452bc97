//! `procctl logs TARGET [-n N] [-f]`

use std::io::{stderr, stdout};

use procctl_proto::{Request, Response, Target};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, target: Target, lines: u32, follow: bool) -> Result<Status, CtlError> {
    client.start(&Request::Logs { target, lines, follow })?;
    let several = match client.next()? {
        Response::Logs { lines, several } => {
            let out = &mut stdout().lock();
            for line in &lines {
                if output::log_line(line, several, out).is_err() {
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
        let Some(response) = super::until_shutdown(client.next())? else {
            return Ok(Status::Success);
        };
        match response {
            Response::LogLine(line) => {
                if output::log_line(&line, several, &mut stdout().lock()).is_err() {
                    // Whoever read our output has gone (a closed pipe): stop quietly.
                    return Ok(Status::Success);
                }
            }
            Response::Missed(count) => printed(output::missed_lines(count, &mut stderr().lock()))?,
            other => return Err(unexpected(&other)),
        }
    }
}
