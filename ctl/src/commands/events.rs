//! `procctl events [--json]`: streams until interrupted.

use procctl_proto::{Request, Response};

use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(client: &mut Client, json: bool) -> Result<Status, CtlError> {
    client.start(&Request::Events)?;
    loop {
        let printed = match super::until_shutdown(client.next())? {
            None => return Ok(Status::Success),
            Some(response) => response,
        };
        let printed = match printed {
            Response::Event(event) => output::event(&event, json, &mut std::io::stdout().lock()),
            Response::Missed(count) => output::missed_events(count, json, &mut std::io::stdout().lock()),
            other => return Err(unexpected(&other)),
        };
        if printed.is_err() {
            // Whoever read our output has gone (a closed pipe): stop quietly.
            return Ok(Status::Success);
        }
    }
}
