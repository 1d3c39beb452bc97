//! `procctl stop`: stop gracefully; wait until each group is gone. One with nothing to stop
//! says which state it is in when that is not `stopped` (a `fatal` one is not "stopped").

use procctl_proto::{OutcomeKind, Response, State, Target, WireError};

use super::stopped;
use crate::supervisor::Handle;

pub async fn run(sup: &Handle, target: Target) -> Result<Response, WireError> {
    let rows = sup.states(target.clone()).await?;
    let mut outcomes = vec![];
    for pending in sup.stop(target).await? {
        let mut outcome = stopped(pending).await;
        let state = rows.iter().find(|row| row.id == outcome.id).map(|row| row.state);
        if let (OutcomeKind::AlreadyStopped, Some(state @ (State::Fatal | State::Exited))) = (&outcome.kind, state) {
            outcome.kind = OutcomeKind::NotRunning { state };
        }
        outcomes.push(outcome);
    }
    Ok(Response::Outcomes(outcomes))
}
