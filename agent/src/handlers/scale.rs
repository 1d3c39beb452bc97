//! `procctl scale`: start or stop instances until N exist; the count is kept in the state
//! directory. Returns when the new instances run and the removed ones are gone.

use procctl_proto::{OutcomeKind, Response, WireError};

use super::{started, stopped};
use crate::supervisor::Handle;

pub async fn run(sup: &Handle, name: String, count: u32) -> Result<Response, WireError> {
    let plan = sup.scale(name.clone(), count).await?;
    let mut failures = vec![];
    for pending in plan.starting {
        let outcome = started(pending).await;
        if matches!(outcome.kind, OutcomeKind::Failed(_)) {
            failures.push(outcome);
        }
    }
    for pending in plan.stopping {
        stopped(pending).await;
    }
    if failures.is_empty() {
        Ok(Response::Scaled { name, from: plan.from, to: plan.to })
    } else {
        Ok(Response::Outcomes(failures))
    }
}
