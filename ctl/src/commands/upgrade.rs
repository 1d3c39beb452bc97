//! `procctl upgrade`: the agent re-executes itself in place from a new binary, keeping its
//! pid and every instance; returns once the new image serves.

use std::time::{Duration, Instant};

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::host::Endpoint;
use crate::output;
use crate::streams::Io;

/// How long the new image may take to serve after the exec.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it tries to reach it meanwhile.
const RETRY: Duration = Duration::from_millis(20);

pub fn run(endpoint: &Endpoint, binary: Option<String>, io: &mut Io) -> Result<Status, CtlError> {
    let binary = match (endpoint, binary) {
        // The agent runs it from its own directory: a relative path is this shell's.
        (Endpoint::Local(_), Some(binary)) => Some(
            std::path::absolute(&binary)
                .map_err(|e| CtlError::Usage(format!("{binary}: {e}")))?
                .to_string_lossy()
                .into_owned(),
        ),
        (_, binary) => binary,
    };
    let mut client = Client::open(endpoint)?;
    let (from, to) = match client.call(&Request::Upgrade { binary })? {
        Response::Upgrading { from, to } => (from, to),
        other => return Err(unexpected(&other)),
    };
    // The agent answers again only when the upgrade did not happen; when it did, the
    // connection closes at the exec.
    match client.next() {
        Ok(other) => return Err(unexpected(&other)),
        Err(CtlError::Agent(error)) => return Err(CtlError::Agent(error)),
        Err(_) => {}
    }
    drop(client);
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        match Client::open(endpoint) {
            Ok(_) => break,
            Err(error) if Instant::now() >= deadline => {
                return Err(CtlError::Failed(format!(
                    "the agent was handed over to {to} but does not serve after {}s: {error}",
                    SERVE_TIMEOUT.as_secs()
                )));
            }
            Err(_) => std::thread::sleep(RETRY),
        }
    }
    printed(output::upgraded(&from, &to, &mut io.out))
}
