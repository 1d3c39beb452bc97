//! `procctl upgrade`: the agent re-executes itself in place from a new binary, keeping its
//! pid and every instance; returns once the new image serves.

use std::time::{Duration, Instant};

use procctl_proto::{Request, Response, Target};

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
    let failed = |why: String| {
        CtlError::Failed(format!(
            "the agent was handed over to {to} but does not serve after {}s: {why}",
            SERVE_TIMEOUT.as_secs()
        ))
    };
    // Served means a request answered: a connection alone is taken by the socket's queue,
    // which the new image inherits before it serves. Asked on a thread of its own, so an
    // image that never answers cannot hold this past the deadline.
    let (answered, answer) = std::sync::mpsc::channel();
    let endpoint = endpoint.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + SERVE_TIMEOUT;
        loop {
            let served =
                Client::open(&endpoint).and_then(|mut client| client.call(&Request::Pid { target: Target::All }));
            match served {
                // An error the agent sends (no instance, say) is an answer too.
                Ok(_) | Err(CtlError::Agent(_)) => break answered.send(Ok(())),
                Err(error) if Instant::now() >= deadline => break answered.send(Err(error.to_string())),
                Err(_) => std::thread::sleep(RETRY),
            }
        }
    });
    match answer.recv_timeout(SERVE_TIMEOUT + RETRY) {
        Ok(Ok(())) => printed(output::upgraded(&from, &to, &mut io.out)),
        Ok(Err(why)) => Err(failed(why)),
        Err(_) => Err(failed("no answer".into())),
    }
}
