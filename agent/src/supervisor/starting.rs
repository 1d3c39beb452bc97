//! `max_starting`: at most N instances of a process `starting` at once. Every start of an
//! instance asks for a spawn, whatever asked for the start (start-up, `start`, a scale, a
//! restart after an exit, a recycle): when its process has N others starting, the same
//! step turns it to `waiting` (`Input::Hold`) instead, and it is started like an instance
//! whose dependencies are met once one of them is running or has left `starting`.

use procctl_proto::{EventKind, InstanceId, State};

use super::Supervisor;
use crate::instance::{Action, Input, Timer};

/// Whether a start may go: fewer than `max` others starting.
pub fn room(max: Option<u32>, others_starting: usize) -> bool {
    max.is_none_or(|max| others_starting < max as usize)
}

impl Supervisor {
    fn others_starting(&self, id: &InstanceId) -> usize {
        self.slots
            .iter()
            .filter(|(other, slot)| other.name == id.name && *other != id && slot.inst.state == State::Starting)
            .count()
    }

    /// Whether `id` may start now as far as `max_starting` goes.
    pub(super) fn room_to_start(&self, id: &InstanceId) -> bool {
        let max = self.config.processes.get(&id.name).and_then(|spec| spec.max_starting);
        max.is_none() || room(max, self.others_starting(id))
    }

    /// Right after a transition of `id` that asked for a spawn: when its process has no room,
    /// the spawn is not carried out and the instance waits (the same step, so nothing comes
    /// between the start and its hold).
    pub(super) fn hold_over_max_starting(&mut self, id: &InstanceId, before: State, actions: &mut Vec<Action>) {
        if !actions.iter().any(|action| matches!(action, Action::Spawn)) || self.room_to_start(id) {
            return;
        }
        let (Some(slot), Some(spec)) = (self.slots.get_mut(id), self.config.processes.get(&id.name)) else {
            return;
        };
        let held = slot.inst.step(Input::Hold, spec);
        if slot.inst.state != State::Waiting {
            actions.extend(held);
            return;
        }
        actions.retain(|action| !matches!(action, Action::Spawn | Action::Arm { timer: Timer::Spawn, .. }));
        actions.extend(held.into_iter().filter(|action| !matches!(action, Action::Disarm(Timer::Spawn))));
        // Looked at again after every change, also when it was waiting before this step.
        self.waiting.insert(id.clone());
        if before != State::Waiting {
            self.bus.emit(EventKind::Waiting { id: id.clone(), on: vec!["max_starting".into()] });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_waits_while_max_starting_others_start() {
        // (max_starting, others starting) -> may start
        let cases =
            [(None, 100, true), (Some(1), 0, true), (Some(1), 1, false), (Some(2), 1, true), (Some(2), 2, false)];
        for (max, others, want) in cases {
            assert_eq!(room(max, others), want, "{max:?} {others}");
        }
    }
}
