//! Routes each request to its handler; one file per verb. Handlers run in their own task,
//! talk to the supervisor through `Handle`, and wait for the outcomes they report. Most
//! answer with one response; `events` and `logs -f` hand the server a stream to forward.

mod events;
mod list;
mod logs;
mod metrics;
mod pid;
mod reload;
mod restart;
mod scale;
mod send;
mod shutdown;
mod signal;
mod start;
mod stop;
mod upgrade;
mod wait;

pub use upgrade::{
    Notice as UpgradeNotice, Open as UpgradeOpen, announced as upgrade_announced, on_signal as upgrade_on_signal,
};

use std::collections::HashMap;

use procctl_proto::{ErrorKind, Event, InstanceId, Outcome, OutcomeKind, Request, Response, Target, WireError};
use tokio::sync::broadcast;

use crate::events::Bus;
use crate::logs::{Follow, Numbered};
use crate::supervisor::{Handle, Pending, Settle, Settled};

/// What a handler may use besides the supervisor: the event bus, the log followers, and
/// the counter the supervisor bumps on every change `list` shows, and the metrics' counters.
#[derive(Clone)]
pub struct Context {
    pub sup: Handle,
    pub bus: Bus,
    pub follow: Follow,
    pub changes: tokio::sync::watch::Receiver<u64>,
    pub tally: std::sync::Arc<crate::metrics::Tally>,
    /// Tells open streams an upgrade is about to happen.
    pub upgrade: UpgradeNotice,
}

pub enum Reply {
    One(Response),
    /// One response, encoded already as a whole frame.
    Frame(Vec<u8>),
    /// Several responses, in order, for an answer too large for one frame.
    Many(Vec<Response>),
    /// Forward every event until the client goes away.
    Events(broadcast::Receiver<Event>),
    /// Send `first`, then every new line of `target` numbered above what `first` had.
    Logs {
        first: Response,
        lines: broadcast::Receiver<Numbered>,
        target: Target,
        after: HashMap<InstanceId, u64>,
    },
    /// Send each response as it comes (steps of an operation, the last one its result);
    /// then the connection takes its next request.
    Steps(tokio::sync::mpsc::UnboundedReceiver<Response>),
    /// An upgrade: send `first`, say so on `written`, then send `rest` if it comes (it does
    /// only when the upgrade did not happen; when it did, this image is gone).
    Upgrade {
        first: Response,
        written: tokio::sync::oneshot::Sender<()>,
        rest: tokio::sync::oneshot::Receiver<Response>,
    },
}

pub async fn handle(request: Request, context: Context) -> Reply {
    let sup = &context.sup;
    let result = match request {
        Request::Hello { .. } => Err(WireError::new(ErrorKind::BadRequest, "hello was already received")),
        Request::List { target } => return list::run(sup, target).await,
        Request::Pid { target } => pid::run(sup, target).await,
        Request::Start { target } => start::run(sup, target).await,
        Request::Stop { target } => stop::run(sup, target).await,
        Request::Restart { target } => match restart::run(sup, target).await {
            Ok(reply) => return reply,
            Err(error) => Err(error),
        },
        Request::Signal { target, signal } => signal::run(sup, target, signal).await,
        Request::Scale { name, count } => scale::run(sup, name, count).await,
        Request::Autoscale { name } => {
            sup.autoscale(name.clone()).await.map(|count| Response::Scaled { name, from: count, to: count })
        }
        Request::Shutdown => shutdown::run(sup).await,
        Request::Send(request) => send::run(sup, request, &context.tally).await,
        Request::Logs { target, lines, follow } => return logs::run(&context, target, lines, follow).await,
        Request::Events => return events::run(&context),
        Request::Reload => reload::run(&context).await,
        Request::Wait { target, until, timeout_ms } => wait::run(&context, target, until, timeout_ms).await,
        Request::Metrics => return metrics::run(&context).await,
        Request::Upgrade { binary } => return upgrade::run(&context, binary).await,
    };
    Reply::One(result.unwrap_or_else(Response::Error))
}

fn failed(id: &InstanceId, kind: ErrorKind, message: String) -> Outcome {
    Outcome { id: id.clone(), kind: OutcomeKind::Failed(WireError::new(kind, message)) }
}

/// Waits for a started instance to be running, or reports why it is not.
async fn started(pending: Pending) -> Outcome {
    let id = &pending.id;
    let settled = match pending.settle {
        Settle::Already => {
            return Outcome { id: id.clone(), kind: OutcomeKind::AlreadyRunning { pid: pending.pid_before } };
        }

        Settle::Wait(settled) => settled.await,
    };
    match settled {
        Ok(Settled::Up { pid }) => Outcome { id: id.clone(), kind: OutcomeKind::Started { pid } },
        Ok(Settled::NotUp { state, last_exit, error }) => {
            let how = match (error, last_exit) {
                (Some(error), _) => format!(": {error}"),
                (None, Some(exit)) => format!(", last exit {exit}"),
                (None, None) => String::new(),
            };
            failed(id, ErrorKind::Failed, format!("{id} did not start: it is {state}{how}"))
        }
        Ok(Settled::Down) | Err(_) => failed(id, ErrorKind::Failed, format!("{id} was removed before it started")),
    }
}

/// Waits for a stopped instance to be gone, group and all.
async fn stopped(pending: Pending) -> Outcome {
    let id = &pending.id;
    let settled = match pending.settle {
        Settle::Already => return Outcome { id: id.clone(), kind: OutcomeKind::AlreadyStopped },

        Settle::Wait(settled) => settled.await,
    };
    match settled {
        // A receiver dropped because the instance left the table also means it is gone.
        Ok(_) | Err(_) => Outcome { id: id.clone(), kind: OutcomeKind::Stopped },
    }
}
