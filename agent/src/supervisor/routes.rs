//! Where the messages of a send go: each target instance's pipe, or why it has none (a pure
//! plan, tested as a table), with `--any` turning round-robin over the running ones.

use procctl_proto::{ErrorKind, InstanceId, State, Target, WireError};

use super::Supervisor;
use super::api::Routes;
use crate::config::Pipe;

/// The pipe of an instance in `state`, or why a message cannot go there.
pub fn deliverable<T: Clone>(
    id: &InstanceId,
    state: State,
    running: bool,
    pipe: Option<&T>,
    kind: Pipe,
) -> Result<T, WireError> {
    let open = matches!(state, State::Starting | State::Running) && running;
    match (pipe, open) {
        (Some(pipe), true) => Ok(pipe.clone()),
        (_, false) => Err(WireError::new(ErrorKind::NotRunning, format!("{id} is not running (state {state})"))),
        (None, true) if kind == Pipe::None => {
            Err(WireError::new(ErrorKind::Refused, format!("{id} has no message pipe (pipe = \"none\")")))
        }
        (None, true) => Err(WireError::new(ErrorKind::Failed, format!("{id}: its message pipe is closed"))),
    }
}

/// Each instance with its pipe, or why it has none.
pub type Candidates<T> = Vec<(InstanceId, Result<T, WireError>)>;

/// Every candidate as it is, or with `any`, the deliverable ones starting at `turn`, which
/// moves on by `count` messages.
pub fn route<T: Clone>(
    candidates: Candidates<T>,
    any: bool,
    count: usize,
    turn: &mut usize,
    target: &Target,
) -> Result<Candidates<T>, WireError> {
    if !any {
        return Ok(candidates);
    }
    let mut running: Candidates<T> = candidates.into_iter().filter(|(_, pipe)| pipe.is_ok()).collect();
    if running.is_empty() {
        return Err(WireError::new(ErrorKind::NotRunning, format!("no running instance of {target} to send to")));
    }
    let start = *turn % running.len();
    *turn = (start + count) % running.len();
    running.rotate_left(start);
    Ok(running)
}

impl Supervisor {
    pub(super) fn pipes(&mut self, target: &Target, any: bool, count: usize) -> Result<Routes, WireError> {
        let ids = self.resolve(target)?;
        let candidates = ids
            .into_iter()
            .filter_map(|id| {
                let (slot, spec) = (self.slots.get(&id)?, self.config.processes.get(&id.name)?);
                let pipe = deliverable(&id, slot.inst.state, slot.inst.pid.is_some(), slot.pipe.as_ref(), spec.pipe);
                Some((id, pipe))
            })
            .collect();
        let turn = self.round_robin.entry(target.name().unwrap_or("all").to_string()).or_default();
        let routes = route(candidates, any, count, turn, target)?;
        let routed: Vec<(InstanceId, bool)> = routes.iter().map(|(id, pipe)| (id.clone(), pipe.is_ok())).collect();
        self.recycle_count_messages(&routed, any, count);
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_can_take_a_message() {
        let id = InstanceId::new("w", 0);
        // (state, has a live process, has a pipe, pipe kind) -> delivered, or the error kind
        let cases = [
            (State::Running, true, true, Pipe::Fd, Ok(7)),
            (State::Starting, true, true, Pipe::Fd, Ok(7)),
            (State::Stopping, true, true, Pipe::Fd, Err(ErrorKind::NotRunning)),
            (State::Backoff, false, false, Pipe::Fd, Err(ErrorKind::NotRunning)),
            (State::Stopped, false, false, Pipe::Fd, Err(ErrorKind::NotRunning)),
            (State::Starting, false, false, Pipe::Fd, Err(ErrorKind::NotRunning)),
            (State::Running, true, false, Pipe::None, Err(ErrorKind::Refused)),
            (State::Running, true, false, Pipe::Fd, Err(ErrorKind::Failed)),
        ];
        for (state, running, has_pipe, kind, want) in cases {
            let got = deliverable(&id, state, running, has_pipe.then_some(&7), kind).map_err(|e| e.kind);
            assert_eq!(got, want, "{state} running={running} pipe={has_pipe} {kind:?}");
        }
    }

    #[test]
    fn any_turns_round_robin_over_the_running_ones() {
        let target = Target::Name("w".into());
        let cands = || -> Candidates<u32> {
            vec![
                (InstanceId::new("w", 0), Ok(0)),
                (InstanceId::new("w", 1), Err(WireError::new(ErrorKind::NotRunning, "down"))),
                (InstanceId::new("w", 2), Ok(2)),
                (InstanceId::new("w", 3), Ok(3)),
            ]
        };
        let order =
            |routes: Candidates<u32>| -> Vec<u32> { routes.into_iter().map(|(_, pipe)| pipe.unwrap()).collect() };
        let mut turn = 0;
        // (messages in this send) -> the order of the running instances it starts from
        let cases: [(usize, &[u32]); 4] = [(1, &[0, 2, 3]), (1, &[2, 3, 0]), (2, &[3, 0, 2]), (4, &[2, 3, 0])];
        for (count, want) in cases {
            assert_eq!(order(route(cands(), true, count, &mut turn, &target).unwrap()), want, "count {count}");
        }
        let all = route(cands(), false, 1, &mut turn, &target).unwrap();
        assert_eq!(all.len(), 4, "without --any every instance is a route, failures included");
        let none = vec![(InstanceId::new("w", 0), Err::<u32, _>(WireError::new(ErrorKind::NotRunning, "down")))];
        assert_eq!(route(none, true, 1, &mut turn, &target).unwrap_err().kind, ErrorKind::NotRunning);
    }
}
