//! `procctl wait TARGET [--for STATE] [--timeout D]`: answers once every instance of the
//! target is in the state asked for (or gone), looking again at each change the supervisor
//! announces, never on a timer; at the timeout, names those that are not. Waiting for
//! `running`, an instance that is fatal or exited ends the wait at once.

use std::time::Duration;

use procctl_proto::{ErrorKind, InstanceInfo, Response, State, Target, WaitFor, WireError};

use super::Context;

pub async fn run(context: &Context, target: Target, until: WaitFor, timeout_ms: u64) -> Result<Response, WireError> {
    let mut changes = context.changes.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        changes.borrow_and_update();
        let rows = match context.sup.states(target.clone()).await {
            Ok(rows) => rows,
            // The process itself, or the one instance, is gone.
            Err(error) if error.kind == ErrorKind::NotFound && until == WaitFor::Gone => return Ok(Response::Waited),
            Err(error) => return Err(error),
        };
        let behind = not_there(&rows, until);
        if behind.is_empty() {
            return Ok(Response::Waited);
        }
        let hopeless = cannot_come(&behind, until);
        if !hopeless.is_empty() {
            return Err(WireError::new(ErrorKind::Failed, hopeless.join(", ")));
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return Err(WireError::new(ErrorKind::ShuttingDown, "the agent is shutting down"));
            },
            () = tokio::time::sleep_until(deadline) => {
                let list: Vec<String> = behind.iter().map(|row| format!("{} is {}", row.id, row.state)).collect();
                let message = format!(
                    "timed out after {} waiting for {target} to be {until}: {}",
                    procctl_proto::duration::human(Duration::from_millis(timeout_ms)),
                    list.join(", ")
                );
                return Err(WireError::new(ErrorKind::Timeout, message));
            }
        }
    }
}

/// Why some of the instances will never be running by themselves: `fatal` waits for a
/// `procctl start`, `exited` (restart = "never", or "on-failure" after a success) for
/// nothing at all. Only `running` is hopeless to wait for: other states come by request.
fn cannot_come(behind: &[&InstanceInfo], until: WaitFor) -> Vec<String> {
    if until != WaitFor::State(State::Running) {
        return vec![];
    }
    behind
        .iter()
        .filter(|row| matches!(row.state, State::Fatal | State::Exited))
        .map(|row| match (&row.start_error, row.last_exit) {
            (Some(error), _) => format!("{} is {} ({error})", row.id, row.state),
            (None, Some(exit)) => format!("{} is {} (last exit: {exit})", row.id, row.state),
            (None, None) => format!("{} is {}", row.id, row.state),
        })
        .collect()
}

/// The instances that are not yet where `until` wants them.
fn not_there(rows: &[InstanceInfo], until: WaitFor) -> Vec<&InstanceInfo> {
    match until {
        WaitFor::Gone => rows.iter().collect(),
        WaitFor::State(state) => rows.iter().filter(|row| row.state != state).collect(),
    }
}
