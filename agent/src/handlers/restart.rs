//! `procctl restart`: rolling, one instance at a time, each replacement running before the
//! next goes down. A replacement that does not come up halts the roll, so a broken release
//! takes down one instance, not all of them. Instances that were not running when asked
//! (stopped, exited, fatal, or still trying: starting, backoff) come after the roll, and
//! their failure halts nothing.
//! Each outcome is streamed to the client as it happens, and the roll runs in a task of its
//! own, so it finishes even if the client leaves. `roll` is also how a reload restarts.

use procctl_proto::{ErrorKind, Exit, InstanceId, Outcome, OutcomeKind, Response, Signal, State, Target, WireError};
use tokio::sync::mpsc;

use super::{Reply, failed, started};
use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target) -> Result<Reply, WireError> {
    // The target is resolved once: its rows name the instances and their states.
    let rows = sup.states(target).await?;
    let ids: Vec<InstanceId> = rows.iter().map(|row| row.id.clone()).collect();
    let state = |id: &InstanceId| rows.iter().find(|row| &row.id == id).map(|row| row.state);
    let (running, others): (Vec<_>, Vec<_>) = ids.into_iter().partition(|id| state(id) == Some(State::Running));
    let others: Vec<(InstanceId, bool)> = others
        .into_iter()
        .map(|id| {
            let at_rest = matches!(state(&id), Some(State::Stopped | State::Exited | State::Fatal));
            (id, at_rest)
        })
        .collect();
    let (steps, reply) = mpsc::unbounded_channel();
    let sup = sup.clone();
    tokio::spawn(async move {
        let mut outcomes = match roll(&sup, running, Some(&steps)).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                let _ = steps.send(Response::Error(error));
                return;
            }
        };
        for (id, at_rest) in others {
            // One at rest is started; one still trying (starting, backoff) is restarted.
            let outcome = match at_rest {
                true => start_one(&sup, &id).await,
                false => restart_one(&sup, &id).await,
            }
            .unwrap_or_else(|error| Outcome { id, kind: OutcomeKind::Failed(error) });
            let _ = steps.send(Response::Step(outcome.clone()));
            outcomes.push(outcome);
        }
        let _ = steps.send(Response::Outcomes(outcomes));
    });
    Ok(Reply::Steps(reply))
}

/// Restarts `ids` in order, one at a time, telling `steps` of each outcome as it comes;
/// after the first that fails, the rest are not touched and each says where the roll halted.
pub(super) async fn roll(
    sup: &Handle,
    ids: Vec<InstanceId>,
    steps: Option<&mpsc::UnboundedSender<Response>>,
) -> Result<Vec<Outcome>, WireError> {
    let _rolling = sup.rolling(ids.iter().map(|id| id.name.clone()).collect());
    let mut outcomes = vec![];
    let mut halted_at: Option<InstanceId> = None;
    for id in ids {
        let outcome = match &halted_at {
            Some(culprit) => {
                let message = format!("{id} not restarted: the rolling restart halted at {culprit}");
                failed(&id, ErrorKind::Failed, message)
            }
            None => restart_one(sup, &id).await?,
        };
        if halted_at.is_none() && matches!(outcome.kind, OutcomeKind::Failed(_)) {
            halted_at = Some(id);
        }
        if let Some(steps) = steps {
            let _ = steps.send(Response::Step(outcome.clone()));
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn start_one(sup: &Handle, id: &InstanceId) -> Result<Outcome, WireError> {
    let mut outcome = failed(id, ErrorKind::NotFound, format!("{id} left the table"));
    for pending in sup.start(Target::Instance(id.clone())).await? {
        outcome = started(pending).await;
    }
    Ok(outcome)
}

async fn restart_one(sup: &Handle, id: &InstanceId) -> Result<Outcome, WireError> {
    let pending = sup.restart(id.clone()).await?;
    let old = pending.pid_before;
    let mut outcome = started(pending).await;
    if let OutcomeKind::Started { pid } | OutcomeKind::AlreadyRunning { pid: Some(pid) } = outcome.kind {
        // The old run's end, still the last exit while the new run lives: a SIGKILL there
        // means stop_signal and stop_timeout were not enough.
        let killed = old.is_some()
            && sup
                .states(Target::Instance(id.clone()))
                .await?
                .first()
                .is_some_and(|row| row.last_exit == Some(Exit::Signal(Signal::KILL)));
        outcome.kind = OutcomeKind::Restarted { old, new: pid, killed };
    }
    Ok(outcome)
}
