//! `procctl reload` (and SIGHUP): re-read the config and apply only the difference. New
//! processes start, removed ones stop and leave the table, changed counts rescale, and
//! processes with any other changed key restart one instance at a time. Untouched instances
//! keep their pids. An invalid file is refused whole and nothing running changes.

use procctl_proto::{ErrorKind, EventKind, OutcomeKind, Response, WireError};

use super::restart::restart_one;
use super::{Context, failed, started, stopped};

pub async fn run(context: &Context) -> Result<Response, WireError> {
    let sup = &context.sup;
    let plan = sup.reload().await?;
    let mut report = plan.report;
    for pending in plan.starting {
        let outcome = started(pending).await;
        if matches!(outcome.kind, OutcomeKind::Failed(_)) {
            report.failures.push(outcome);
        }
    }
    for pending in plan.stopping {
        stopped(pending).await;
    }
    let mut halted = None;
    for id in plan.restart {
        if let Some(culprit) = &halted {
            let message = format!("{id} not restarted: the rolling restart halted at {culprit}");
            report.failures.push(failed(&id, ErrorKind::Failed, message));
            continue;
        }
        let outcome = restart_one(sup, &id).await?;
        if matches!(outcome.kind, OutcomeKind::Failed(_)) {
            report.failures.push(outcome);
            halted = Some(id);
        }
    }
    context.bus.emit(EventKind::Reloaded);
    Ok(Response::Reloaded(report))
}
