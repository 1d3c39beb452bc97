//! `procctl events [--json]`: streams until interrupted.

use procctl_proto::{Request, Response};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;
use crate::streams::Io;

pub fn run(client: &mut Client, json: bool, io: &mut Io) -> Result<Status, CtlError> {
    client.start(&Request::Events)?;
    loop {
        let printed = match super::until_shutdown(client.next(), io)? {
            None => return Ok(Status::Success),
            Some(response) => response,
        };
        let printed = match printed {
            Response::Event(event) => output::event(&event, json, &mut io.out),
            Response::Missed(count) => output::missed_events(count, json, &mut io.out),
            other => return Err(unexpected(&other)),
        };
        if printed.and_then(|()| io.out.flush()).is_err() {
            // Whoever read our output has gone (a closed pipe): stop quietly.
            return Ok(Status::Success);
        }
    }
}
