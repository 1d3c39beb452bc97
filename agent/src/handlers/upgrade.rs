//! `procctl upgrade` (and SIGUSR2): ask the new binary whether it takes the handover, tell
//! the client it will happen, then have the supervisor hand everything over and exec it,
//! trying again while something is half done (a start, a hook, a probe, a message being
//! written), for a bounded time.

use std::path::PathBuf;
use std::time::Duration;

use procctl_proto::{ErrorKind, Response, WireError};
use tokio::sync::oneshot;

use super::{Context, Reply};
use crate::supervisor::Handle;

/// How long an upgrade waits for a moment when nothing is half done.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often it looks again meanwhile.
const BUSY_RETRY: Duration = Duration::from_millis(20);

pub async fn run(context: &Context, binary: Option<String>) -> Reply {
    let (binary, to) = match check(&context.sup, binary).await {
        Ok(checked) => checked,
        Err(error) => return Reply::One(Response::Error(error)),
    };
    let (written, was_written) = oneshot::channel();
    let (rest, after) = oneshot::channel();
    let sup = context.sup.clone();
    tokio::spawn(async move {
        // Once the client has been told (or has gone): the answer is in the socket's buffer
        // before the exec closes the connection.
        let _ = was_written.await;
        let _ = rest.send(Response::Error(exec(&sup, binary).await));
    });
    Reply::Upgrade { first: Response::Upgrading { from: crate::VERSION.into(), to }, written, rest: after }
}

/// SIGUSR2: the same upgrade, to the agent's own binary, with the outcome in the log.
pub async fn on_signal(context: Context) {
    match check(&context.sup, None).await {
        Ok((binary, to)) => {
            log!("SIGUSR2: upgrading to {} ({to})", binary.display());
            let error = exec(&context.sup, binary).await;
            log!("SIGUSR2: {error}");
        }
        Err(error) => log!("SIGUSR2: {error}"),
    }
}

/// The binary to run (the agent's own, as it was at start, by default) and its version,
/// when it takes this agent's handover.
async fn check(sup: &Handle, binary: Option<String>) -> Result<(PathBuf, String), WireError> {
    let binary = match binary {
        Some(binary) => PathBuf::from(binary),
        None => crate::upgrade::start()
            .map(|start| start.exe.clone())
            .ok_or_else(|| WireError::new(ErrorKind::Failed, "this agent does not know its own binary"))?,
    };
    if !binary.is_absolute() {
        let message = format!("{}: give the new binary's absolute path", binary.display());
        return Err(WireError::new(ErrorKind::BadRequest, message));
    }
    let to = sup.upgrade_check(binary.clone()).await?;
    Ok((binary, to))
}

/// Asks for the exec until nothing is half done; returns why it did not happen (it
/// returns nothing when it did: this image is gone).
async fn exec(sup: &Handle, binary: PathBuf) -> WireError {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match sup.upgrade(binary.clone()).await {
            Ok(()) => return WireError::new(ErrorKind::Failed, "the upgrade did not happen"),
            Err(error) if error.kind == ErrorKind::Refused && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(BUSY_RETRY).await;
            }
            Err(error) if error.kind == ErrorKind::Refused => {
                let message =
                    format!("{} for {}s: not upgraded; nothing changed", error.message, BUSY_TIMEOUT.as_secs());
                return WireError::new(ErrorKind::Failed, message);
            }
            Err(error) => return error,
        }
    }
}
