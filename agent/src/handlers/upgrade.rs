//! `procctl upgrade` (and SIGUSR2): ask the new binary whether it takes the handover, tell
//! the client it will happen, then have the supervisor hand everything over and exec it,
//! trying again while something is half done (a start, a hook, a probe, a message being
//! written), for a bounded time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use procctl_proto::{ErrorKind, Response, WireError};
use tokio::sync::{oneshot, watch};

use super::{Context, Reply};
use crate::supervisor::Handle;

/// How long the open streams get to write their last message before the exec.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells the open streams (`events`, `logs -f`, and so `top`) that the agent is about to be
/// upgraded, so each ends with a message naming it rather than a closed connection.
#[derive(Clone)]
pub struct Notice {
    said: Arc<watch::Sender<Option<String>>>,
    open: Arc<AtomicUsize>,
}

impl Default for Notice {
    fn default() -> Self {
        Notice { said: Arc::new(watch::channel(None).0), open: Arc::default() }
    }
}

/// An open stream, counted while it lasts.
pub struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Notice {
    /// A stream begins: what it waits on, and its place in the count.
    pub fn open(&self) -> (watch::Receiver<Option<String>>, Open) {
        self.open.fetch_add(1, Ordering::Relaxed);
        (self.said.subscribe(), Open(self.open.clone()))
    }

    /// Tells every open stream `message` and waits (a bounded time) until they have ended.
    async fn end_streams(&self, message: String) {
        self.said.send_replace(Some(message));
        let deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
        while self.open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Resolves with the message once an upgrade is announced.
pub async fn announced(said: &mut watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(message) = said.borrow_and_update().clone() {
            return message;
        }
        if said.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

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
    let (sup, notice) = (context.sup.clone(), context.upgrade.clone());
    let notice_of = format!("the agent is being upgraded to procagent {to}: reconnect to follow on");
    tokio::spawn(async move {
        // Once the client has been told (or has gone): the answer is in the socket's buffer
        // before the exec closes the connection.
        let _ = was_written.await;
        notice.end_streams(notice_of).await;
        let _ = rest.send(Response::Error(exec(&sup, &notice, binary).await));
    });
    Reply::Upgrade { first: Response::Upgrading { from: crate::VERSION.into(), to }, written, rest: after }
}

/// SIGUSR2: the same upgrade, to the agent's own binary, with the outcome in the log.
pub async fn on_signal(context: Context) {
    match check(&context.sup, None).await {
        Ok((binary, to)) => {
            log!("SIGUSR2: upgrading to {} ({to})", binary.display());
            let notice = format!("the agent is being upgraded to procagent {to}: reconnect to follow on");
            context.upgrade.end_streams(notice).await;
            let error = exec(&context.sup, &context.upgrade, binary).await;
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
/// returns nothing when it did: this image is gone), with the notice withdrawn, so the
/// agent that goes on serves streams and waits as before.
async fn exec(sup: &Handle, notice: &Notice, binary: PathBuf) -> WireError {
    let error = exec_when_quiet(sup, binary).await;
    notice.said.send_replace(None);
    error
}

async fn exec_when_quiet(sup: &Handle, binary: PathBuf) -> WireError {
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
