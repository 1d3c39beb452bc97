//! `procctl reload` (and SIGHUP): re-read the config and apply only the difference. New
//! processes start, removed ones stop and leave the table, changed counts rescale, and
//! processes with any other changed key restart one instance at a time. Untouched instances
//! keep their pids. An invalid file is refused whole and nothing running changes.

use procctl_proto::{EventKind, OutcomeKind, Response, WireError};

use super::restart::roll;
use super::{Context, started, stopped};

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
    let restarted = roll(sup, plan.restart, None).await?;
    report.failures.extend(restarted.into_iter().filter(|outcome| matches!(outcome.kind, OutcomeKind::Failed(_))));
    context.bus.emit(EventKind::Reloaded);
    Ok(Response::Reloaded(report))
}
