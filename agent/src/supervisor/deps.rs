//! `depends_on`: whether an instance's dependencies are met (a pure check, tested as a
//! table), starting what a start needs, the `waiting` state, and stops in dependency order
//! (dependents first) when one request stops both.

use std::collections::{BTreeMap, BTreeSet};

use procctl_proto::{EventKind, Exit, InstanceId, State};

use super::{Next, Supervisor};
use crate::config::Dependency;
use crate::instance::Input;

/// Where a dependency stands for the ones that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Met,
    /// Not yet: it is starting, or stopped and can be started.
    Pending,
    /// It cannot get there on its own (`fatal`; for `completed`, an exit other than 0): a
    /// start that needs it fails, naming `culprit`.
    Failed {
        culprit: InstanceId,
        state: State,
    },
}

/// The standing of dependency `kind` given (instance, state, last exit) of each of its
/// instances. A process with no instances is met.
pub fn standing(kind: Dependency, instances: &[(InstanceId, State, Option<Exit>)]) -> Standing {
    let mut result = Standing::Met;
    for (id, state, last_exit) in instances {
        let here = match (kind, state, last_exit) {
            (Dependency::Running, State::Running, _) => Standing::Met,
            (Dependency::Completed, State::Exited, Some(Exit::Code(0))) => Standing::Met,
            (_, State::Fatal, _) => Standing::Failed { culprit: id.clone(), state: *state },
            (Dependency::Completed, State::Exited, _) => Standing::Failed { culprit: id.clone(), state: *state },
            _ => Standing::Pending,
        };
        match (&result, here) {
            (Standing::Failed { .. }, _) => {}
            (_, failed @ Standing::Failed { .. }) => result = failed,
            (_, Standing::Pending) => result = Standing::Pending,
            (_, Standing::Met) => {}
        }
    }
    result
}

/// Which of `pending` may be stopped now, when dependents go first: an instance waits while
/// an instance of a process that depends on it, among the request's `ids`, is not down yet.
///
/// One pass over `ids` finds the processes that still have an instance up; each pending
/// instance is then checked against those names alone (a shutdown of a thousand instances
/// of one process does not compare every pair).
pub fn stoppable(
    pending: &[InstanceId],
    ids: &[InstanceId],
    depends_on: &BTreeMap<String, BTreeSet<String>>,
    down: impl Fn(&InstanceId) -> bool,
) -> Vec<InstanceId> {
    // The processes of the request that depend on something and are not all down yet.
    let mut holding: BTreeSet<&str> = BTreeSet::new();
    for other in ids {
        let depends = depends_on.get(&other.name).is_some_and(|deps| !deps.is_empty());
        if depends && !holding.contains(other.name.as_str()) && !down(other) {
            holding.insert(&other.name);
        }
    }
    pending
        .iter()
        .filter(|id| {
            !holding
                .iter()
                .any(|name| *name != id.name && depends_on.get(*name).is_some_and(|deps| deps.contains(&id.name)))
        })
        .cloned()
        .collect()
}

/// A stop request whose dependencies wait for their dependents.
pub struct Deferred {
    /// Everything the request stops.
    ids: Vec<InstanceId>,
    /// What it has not stopped yet.
    pending: Vec<InstanceId>,
    input: Input,
}

impl Supervisor {
    fn instances_of(&self, name: &str) -> Vec<(InstanceId, State, Option<Exit>)> {
        self.slots
            .iter()
            .filter(|(id, slot)| id.name == name && !slot.inst.removing)
            .map(|(id, slot)| (id.clone(), slot.inst.state, slot.inst.last_exit))
            .collect()
    }

    /// The dependencies of `id` and where each stands.
    fn dependencies(&self, id: &InstanceId) -> Vec<(String, Dependency, Standing)> {
        let Some(spec) = self.config.processes.get(&id.name) else {
            return vec![];
        };
        spec.depends_on
            .iter()
            .map(|(name, kind)| {
                // Only a process with no instances wanted is met without any; one whose
                // instances are not all in the table yet is not.
                let standing = if self.not_all_there(name) {
                    Standing::Pending
                } else {
                    standing(*kind, &self.instances_of(name))
                };
                (name.clone(), *kind, standing)
            })
            .collect()
    }

    /// Whether some of the instances `name` should have are not in the table yet: the agent
    /// (at start-up) and a reload create the instances of one process after the other, in
    /// name order, starting each as they go.
    fn not_all_there(&self, name: &str) -> bool {
        (self.instances_of(name).len() as u64) < u64::from(self.desired(name))
    }

    /// A start (by autostart or a user) of an instance at rest: straight away when its
    /// dependencies are met; otherwise it waits in `waiting`, and the dependencies that
    /// are not there yet are started too (a completed one is not run again).
    pub(super) fn start_with_dependencies(&mut self, id: &InstanceId) {
        let deps = self.dependencies(id);
        let unmet: Vec<&(String, Dependency, Standing)> = deps.iter().filter(|(_, _, s)| *s != Standing::Met).collect();
        if unmet.is_empty() {
            return self.feed(id, Input::Start);
        }
        self.feed(id, Input::Wait);
        let on = unmet.iter().map(|(name, _, _)| name.clone()).collect();
        self.bus.emit(EventKind::Waiting { id: id.clone(), on });
        for (name, kind, _) in unmet {
            for (dep, state, last_exit) in self.instances_of(name) {
                let done = *kind == Dependency::Completed && state == State::Exited && last_exit == Some(Exit::Code(0));
                if !done && matches!(state, State::Stopped | State::Exited | State::Fatal) {
                    self.start_with_dependencies(&dep);
                }
            }
        }
        // Once it is waiting, and even when it was already: a failed dependency answers
        // whoever asked for this start.
        self.queue.push_back(Next::CheckWaiting(id.clone()));
    }

    /// After any change: waiting instances whose dependencies are now met start; those with
    /// a failed dependency tell whoever waits for them to start.
    pub(super) fn recheck_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let ids: Vec<InstanceId> = self.waiting.iter().cloned().collect();
        for id in ids {
            self.check_waiting(&id);
        }
    }

    pub(super) fn check_waiting(&mut self, id: &InstanceId) {
        if !self.slots.get(id).is_some_and(|slot| slot.inst.state == State::Waiting) {
            self.waiting.remove(id);
            return;
        }
        let deps = self.dependencies(id);
        if deps.iter().all(|(_, _, standing)| *standing == Standing::Met) {
            if !self.room_to_start(id) {
                return; // held by max_starting: looked at again after the next change
            }
            self.waiting.remove(id);
            self.feed(id, Input::DependenciesMet);
            return;
        }
        let failed = deps.iter().find_map(|(_, _, standing)| match standing {
            Standing::Failed { culprit, state } => Some((culprit.clone(), *state)),
            _ => None,
        });
        // It keeps waiting (a fixed dependency still brings it up); a start asked for has failed.
        if let (Some((culprit, state)), Some(slot)) = (failed, self.slots.get_mut(id))
            && !slot.up_waiters.is_empty()
        {
            slot.start_error = Some(format!("its dependency {culprit} is {state}"));
            self.feed(id, Input::DependencyFailed);
        }
    }

    /// Stops `ids` (with `input`: stop or remove), dependents first: an instance whose
    /// dependents in the same request still run is stopped once they are down.
    pub(super) fn stop_in_order(&mut self, ids: Vec<InstanceId>, input: Input) {
        self.deferred.push(Deferred { pending: ids.clone(), ids, input });
        self.run_deferred();
    }

    /// Carries out the stops that may go now; called again whenever an instance goes down.
    pub(super) fn run_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let depends_on: BTreeMap<String, BTreeSet<String>> = self
            .config
            .processes
            .iter()
            .map(|(name, spec)| (name.clone(), spec.depends_on.keys().cloned().collect()))
            .collect();
        let mut batches = std::mem::take(&mut self.deferred);
        for batch in &mut batches {
            // Each instance that goes down brings this back, for the ones that waited on it.
            let down = |id: &InstanceId| self.slots.get(id).is_none_or(|slot| slot.inst.is_down());
            let ready = stoppable(&batch.pending, &batch.ids, &depends_on, down);
            let taken: BTreeSet<&InstanceId> = ready.iter().collect();
            batch.pending.retain(|id| !taken.contains(id));
            for id in ready {
                self.queue.push_back(Next::Input(id, batch.input));
            }
        }
        batches.retain(|batch| !batch.pending.is_empty());
        // Stops that came while these ran go after them.
        batches.append(&mut self.deferred);
        self.deferred = batches;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, i: u32) -> InstanceId {
        InstanceId::new(name, i)
    }

    #[test]
    fn standings() {
        use Dependency::{Completed as C, Running as R};
        use State::*;
        // (kind, states and exits of the dependency's instances, standing)
        let failed = |i: u32, state: State| Standing::Failed { culprit: id("d", i), state };
        type Case = (Dependency, Vec<(State, Option<Exit>)>, Standing);
        let cases: Vec<Case> = vec![
            (R, vec![], Standing::Met),
            (R, vec![(Running, None)], Standing::Met),
            (R, vec![(Running, None), (Starting, None)], Standing::Pending),
            (R, vec![(Stopped, None)], Standing::Pending),
            (R, vec![(Backoff, Some(Exit::Code(1)))], Standing::Pending),
            (R, vec![(Running, None), (Fatal, Some(Exit::Code(1)))], failed(1, Fatal)),
            (R, vec![(Exited, Some(Exit::Code(0)))], Standing::Pending),
            (C, vec![(Exited, Some(Exit::Code(0)))], Standing::Met),
            (C, vec![(Exited, Some(Exit::Code(0))), (Running, None)], Standing::Pending),
            (C, vec![(Exited, Some(Exit::Code(2)))], failed(0, Exited)),
            (C, vec![(Fatal, Some(Exit::Code(2)))], failed(0, Fatal)),
            (C, vec![(Stopped, None)], Standing::Pending),
        ];
        for (kind, instances, want) in cases {
            let list: Vec<(InstanceId, State, Option<Exit>)> =
                instances.iter().enumerate().map(|(i, (s, e))| (id("d", i as u32), *s, *e)).collect();
            assert_eq!(standing(kind, &list), want, "{kind:?} {instances:?}");
        }
    }

    #[test]
    fn dependents_stop_first() {
        // web depends on api, api on db; worker on nothing.
        let deps: BTreeMap<String, BTreeSet<String>> =
            [("web", vec!["api"]), ("api", vec!["db"]), ("db", vec![]), ("worker", vec![])]
                .into_iter()
                .map(|(n, d)| (n.to_string(), d.into_iter().map(String::from).collect()))
                .collect();
        let all = vec![id("db", 0), id("api", 0), id("api", 1), id("web", 0), id("worker", 0)];
        let names = |list: Vec<InstanceId>| list.into_iter().map(|i| i.to_string()).collect::<Vec<_>>();
        // Nothing down yet: only what nothing in the request depends on.
        assert_eq!(names(stoppable(&all, &all, &deps, |_| false)), ["web:0", "worker:0"]);
        // web is down: api goes; db waits for both api instances.
        let pending = vec![id("db", 0), id("api", 0), id("api", 1)];
        let down = |i: &InstanceId| i.name == "web" || i.name == "worker";
        assert_eq!(names(stoppable(&pending, &all, &deps, down)), ["api:0", "api:1"]);
        let down = |i: &InstanceId| i.name == "web" || *i == id("api", 0);
        let pending = vec![id("db", 0), id("api", 1)];
        assert_eq!(names(stoppable(&pending, &all, &deps, down)), ["api:1"], "db waits for api:1");
        // A stop of db alone leaves its dependents running.
        assert_eq!(names(stoppable(&[id("db", 0)], &[id("db", 0)], &deps, |_| false)), ["db:0"]);
        // One instance of a dependent still up holds the dependency; those down do not.
        let ids = vec![id("api", 0), id("web", 0), id("web", 1)];
        let down = |i: &InstanceId| *i == id("web", 0);
        assert_eq!(names(stoppable(&ids, &ids, &deps, down)), ["web:0", "web:1"], "api waits for web:1");
        // A shutdown of many instances of processes with no dependencies between them: all at once.
        let many: Vec<InstanceId> = (0..1000).map(|i| id(if i % 2 == 0 { "worker" } else { "db" }, i)).collect();
        assert_eq!(stoppable(&many, &many, &deps, |_| false).len(), 1000);
    }
}
