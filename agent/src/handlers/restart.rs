//! `procctl restart`: rolling, one instance at a time, each replacement running before the
//! next goes down. A replacement that does not come up halts the roll, so a broken release
//! takes down one instance, not all of them. `roll` is also how a reload restarts.

use procctl_proto::{ErrorKind, InstanceId, Outcome, OutcomeKind, Response, Target, WireError};

use super::{failed, started, stopped};
use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target) -> Result<Response, WireError> {
    let ids = sup.resolve(target).await?;
    roll(sup, ids).await.map(Response::Outcomes)
}

/// Restarts `ids` in order, one at a time; after the first that fails, the rest are not
/// touched and each says where the roll halted.
pub(super) async fn roll(sup: &Handle, ids: Vec<InstanceId>) -> Result<Vec<Outcome>, WireError> {
    let _rolling = sup.rolling(ids.iter().map(|id| id.name.clone()).collect());
    let mut outcomes = vec![];
    let mut halted_at: Option<InstanceId> = None;
    for id in ids {
        if let Some(culprit) = &halted_at {
            let message = format!("{id} not restarted: the rolling restart halted at {culprit}");
            outcomes.push(failed(&id, ErrorKind::Failed, message));
            continue;
        }
        let outcome = restart_one(sup, &id).await?;
        if matches!(outcome.kind, OutcomeKind::Failed(_)) {
            halted_at = Some(id);
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn restart_one(sup: &Handle, id: &InstanceId) -> Result<Outcome, WireError> {
    let target = Target::Instance(id.clone());
    let mut old = None;
    for pending in sup.stop(target.clone()).await? {
        old = pending.pid_before;
        if let OutcomeKind::Failed(error) = stopped(pending).await.kind {
            return Ok(Outcome { id: id.clone(), kind: OutcomeKind::Failed(error) });
        }
    }
    let mut outcome = failed(id, ErrorKind::NotFound, format!("{id} left the table during the restart"));
    for pending in sup.start(target).await? {
        outcome = started(pending).await;
        if let OutcomeKind::Started { pid } | OutcomeKind::AlreadyRunning { pid: Some(pid) } = outcome.kind {
            outcome.kind = OutcomeKind::Restarted { old, new: pid };
        }
    }
    Ok(outcome)
}
