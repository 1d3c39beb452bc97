//! Routes each request to its handler; one file per verb. Handlers run in their own task,
//! talk to the supervisor through `Handle`, and wait for the outcomes they report.

mod list;
mod pid;
mod restart;
mod scale;
mod shutdown;
mod signal;
mod start;
mod stop;

use procctl_proto::{ErrorKind, Outcome, OutcomeKind, Request, Response, WireError};

use crate::supervisor::{Handle, Pending, Settle, Settled};

pub async fn handle(request: Request, sup: Handle) -> Response {
    let result = match request {
        Request::Hello { .. } => Err(WireError::new(ErrorKind::BadRequest, "hello was already received")),
        Request::List { target } => list::run(&sup, target).await,
        Request::Pid { target } => pid::run(&sup, target).await,
        Request::Start { target } => start::run(&sup, target).await,
        Request::Stop { target } => stop::run(&sup, target).await,
        Request::Restart { target } => restart::run(&sup, target).await,
        Request::Signal { target, signal } => signal::run(&sup, target, signal).await,
        Request::Scale { name, count } => scale::run(&sup, name, count).await,
        Request::Shutdown => shutdown::run(&sup).await,
    };
    result.unwrap_or_else(Response::Error)
}

fn failed(id: &procctl_proto::InstanceId, kind: ErrorKind, message: String) -> Outcome {
    Outcome { id: id.clone(), kind: OutcomeKind::Failed(WireError::new(kind, message)) }
}

/// Waits for a started instance to be running, or reports why it is not.
async fn started(pending: Pending) -> Outcome {
    let id = &pending.id;
    let settled = match pending.settle {
        Settle::Already => {
            return Outcome { id: id.clone(), kind: OutcomeKind::AlreadyRunning { pid: pending.pid_before } };
        }
        Settle::Busy(state) => {
            return failed(id, ErrorKind::Refused, format!("{id} is {state}: try again once it has stopped"));
        }
        Settle::Wait(settled) => settled.await,
    };
    match settled {
        Ok(Settled::Up { pid }) => Outcome { id: id.clone(), kind: OutcomeKind::Started { pid } },
        Ok(Settled::NotUp { state, last_exit }) => {
            let how = last_exit.map(|exit| format!(", last exit {exit}")).unwrap_or_default();
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
        Settle::Busy(state) => return failed(id, ErrorKind::Refused, format!("{id} is {state}")),
        Settle::Wait(settled) => settled.await,
    };
    match settled {
        // A receiver dropped because the instance left the table also means it is gone.
        Ok(_) | Err(_) => Outcome { id: id.clone(), kind: OutcomeKind::Stopped },
    }
}
