//! Recycling: the warm restart of one instance that crossed `max_memory` (two checks in a
//! row), `max_age` or `max_messages`, one instance of a process at a time and never while a
//! rolling restart of it goes on. A recycle is a stop and a start, as `restart NAME:INDEX`
//! does it: no failure, no RESTARTS, no backoff.
//!
//! Only processes with `max_memory` have a check timer; `max_age` is one timer per run,
//! armed at its spawn; `max_messages` is counted where a send is routed. Each delayed
//! decision carries the run (or the check generation) it was made for and is dropped when
//! that is gone.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use procctl_proto::{EventKind, InstanceId, InstanceInfo, RecycleReason, State};

use super::{Due, Supervisor};
use crate::instance::Input;

/// The recycling state of the whole agent.
#[derive(Default)]
pub struct Recycling {
    /// By process: the instance being recycled, and the run that is being replaced.
    busy: HashMap<String, (InstanceId, u64)>,
    /// By process: rolling restarts going on.
    rolling: HashMap<String, u32>,
    /// Recycles decided while their process was busy, in order.
    pending: VecDeque<(InstanceId, u64, RecycleReason)>,
    per: HashMap<InstanceId, PerInstance>,
    /// The generation of the memory checks; a check of an older one is dropped.
    generation: u64,
}

#[derive(Default)]
struct PerInstance {
    recycles: u32,
    /// The run `messages` and `over` are about.
    run: u64,
    messages: u64,
    /// Memory checks in a row above `max_memory`.
    over: u32,
}

impl PerInstance {
    fn of_run(&mut self, run: u64) -> &mut Self {
        if self.run != run {
            *self = PerInstance { recycles: self.recycles, run, ..PerInstance::default() };
        }
        self
    }
}

/// What a memory check decides for one instance: strikes so far, and whether to recycle.
pub fn memory_verdict(over_before: u32, bytes: Option<u64>, limit: u64) -> (u32, bool) {
    match bytes {
        Some(bytes) if bytes > limit => (over_before + 1, over_before + 1 >= 2),
        _ => (0, false),
    }
}

/// The age at which run `run` of `id` is recycled: `max_age` and up to 10% more, spread
/// over instances and runs by a hash of the run (the same in every image of the agent).
pub fn age_deadline(max_age: Duration, id: &InstanceId, run: u64) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&id.name, id.index, run).hash(&mut hasher);
    let permille = (hasher.finish() % 101) as u32;
    max_age + max_age * permille / 1000
}

/// The number of messages each route gets: all of them each without `any`, else message
/// i goes to route i mod len.
pub fn shares(routes: usize, any: bool, count: usize) -> Vec<u64> {
    (0..routes)
        .map(|j| if any { (count / routes + usize::from(j < count % routes)) as u64 } else { count as u64 })
        .collect()
}

impl Recycling {
    pub fn recycles(&self, id: &InstanceId) -> u32 {
        self.per.get(id).map_or(0, |p| p.recycles)
    }

    /// Takes up the counts of an instance an upgrade handed over.
    pub fn resume(&mut self, id: &InstanceId, recycles: u32, run: u64, messages: u64) {
        if recycles > 0 || messages > 0 {
            self.per.insert(id.clone(), PerInstance { recycles, run, messages, over: 0 });
        }
    }

    pub fn messages(&self, id: &InstanceId, run: u64) -> u64 {
        self.per.get(id).filter(|p| p.run == run).map_or(0, |p| p.messages)
    }

    /// Whether a rolling restart of `name` goes on.
    pub fn rolling(&self, name: &str) -> bool {
        self.rolling.get(name).is_some_and(|n| *n > 0)
    }

    pub fn forget(&mut self, id: &InstanceId) {
        self.per.remove(id);
    }
}

impl Supervisor {
    /// (Re)arms the memory checks of every process with `max_memory`; the ones armed before
    /// are dropped when due.
    pub(super) fn recycle_arm_checks(&mut self) {
        self.recycling.generation += 1;
        let generation = self.recycling.generation;
        for (name, spec) in &self.config.processes {
            if spec.recycle.max_memory.is_some() {
                self.timers.after(spec.recycle.check, Due::MemoryCheck { name: name.clone(), generation });
            }
        }
    }

    /// Samples the running instances of `name` and recycles those above `max_memory` twice
    /// in a row.
    pub(super) fn on_memory_check(&mut self, name: String, generation: u64) {
        if generation != self.recycling.generation {
            return;
        }
        let Some(spec) = self.config.processes.get(&name) else {
            return;
        };
        let (Some(limit), check) = (spec.recycle.max_memory, spec.recycle.check) else {
            return;
        };
        self.timers.after(check, Due::MemoryCheck { name: name.clone(), generation });
        let mut rows: Vec<InstanceInfo> = self
            .slots
            .iter()
            .filter(|(id, slot)| id.name == name && slot.inst.state == State::Running && slot.inst.pid.is_some())
            .filter_map(|(id, _)| self.info(id))
            .collect();
        self.sample_usage(&mut rows);
        for row in rows {
            let Some(run) = self.slots.get(&row.id).map(|slot| slot.inst.run) else {
                continue;
            };
            let per = self.recycling.per.entry(row.id.clone()).or_default().of_run(run);
            let (over, recycle) = memory_verdict(per.over, row.memory_bytes, limit);
            per.over = over;
            if let (true, Some(bytes)) = (recycle, row.memory_bytes) {
                self.request_recycle(row.id, run, RecycleReason::Memory { bytes });
            }
        }
    }

    /// Run `run` of `id` was spawned: its `max_age` deadline, up to 10% later.
    pub(super) fn recycle_spawned(&mut self, id: &InstanceId, run: u64) {
        self.arm_age(id, run, Duration::ZERO);
    }

    /// Run `run` of `id` was handed over by an upgrade: the rest of the `max_age` it had,
    /// from the run's start time (the jitter is the run's own, so it is the same one).
    pub(super) fn recycle_resumed(&mut self, id: &InstanceId, run: u64) {
        let age = self
            .slots
            .get(id)
            .and_then(|slot| slot.inst.started_at)
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        self.arm_age(id, run, age);
    }

    fn arm_age(&mut self, id: &InstanceId, run: u64, age: Duration) {
        let Some(max_age) = self.config.processes.get(&id.name).and_then(|spec| spec.recycle.max_age) else {
            return;
        };
        let deadline = age_deadline(max_age, id, run);
        self.timers.after(deadline.saturating_sub(age), Due::Age { id: id.clone(), run });
    }

    pub(super) fn on_age_due(&mut self, id: InstanceId, run: u64) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        if slot.inst.run != run || slot.inst.pid.is_none() {
            return;
        }
        if slot.inst.state == State::Starting {
            // Not ready yet: looked at again in a second.
            self.timers.after(Duration::from_secs(1), Due::Age { id, run });
            return;
        }
        let secs =
            slot.inst.started_at.and_then(|at| SystemTime::now().duration_since(at).ok()).map_or(0, |d| d.as_secs());
        self.request_recycle(id, run, RecycleReason::Age { secs });
    }

    /// Counts the messages a send routes to each current run, and recycles the runs that
    /// reach `max_messages`.
    pub(super) fn recycle_count_messages(&mut self, routed: &[(InstanceId, bool)], any: bool, count: usize) {
        let shares = shares(routed.len(), any, count);
        for ((id, delivered), share) in routed.iter().zip(shares) {
            let Some(slot) = self.slots.get(id).filter(|_| *delivered) else {
                continue;
            };
            let run = slot.inst.run;
            let limit = self.config.processes.get(&id.name).and_then(|spec| spec.recycle.max_messages);
            let per = self.recycling.per.entry(id.clone()).or_default().of_run(run);
            let before = per.messages;
            per.messages += share;
            if let Some(limit) = limit
                && before < limit
                && per.messages >= limit
            {
                let count = per.messages;
                self.request_recycle(id.clone(), run, RecycleReason::Messages { count });
            }
        }
    }

    /// Recycles run `run` of `id` now, or once its process is free.
    fn request_recycle(&mut self, id: InstanceId, run: u64, reason: RecycleReason) {
        let name = id.name.clone();
        if self.recycling.busy.contains_key(&name) || self.recycling.rolling.get(&name).is_some_and(|n| *n > 0) {
            if !self.recycling.pending.iter().any(|(other, r, _)| *other == id && *r == run) {
                self.recycling.pending.push_back((id, run, reason));
            }
            return;
        }
        self.begin_recycle(id, run, reason);
    }

    /// Whether it began: the run is still the current one, running, and kept.
    fn begin_recycle(&mut self, id: InstanceId, run: u64, reason: RecycleReason) -> bool {
        let Some(slot) = self.slots.get(&id) else {
            return false;
        };
        if slot.inst.run != run || slot.inst.state != State::Running || slot.inst.removing || self.shutting_down {
            return false;
        }
        let (why, key, figure) = reason.parts();
        log!("{id}: recycled ({why}: {key} {figure})");
        self.recycling.per.entry(id.clone()).or_default().recycles += 1;
        self.recycling.busy.insert(id.name.clone(), (id.clone(), run));
        self.bus.emit(EventKind::Recycled { id: id.clone(), reason });
        self.touch();
        self.feed(&id, Input::Stop);
        self.feed(&id, Input::Start);
        true
    }

    /// After a state change of `id`: a recycle of it is over once its replacement runs, or
    /// once it came to rest (stopped by hand, failed).
    pub(super) fn recycle_on_state(&mut self, id: &InstanceId) {
        let Some((busy, run)) = self.recycling.busy.get(&id.name).cloned() else {
            return;
        };
        if busy != *id {
            return;
        }
        let over = match self.slots.get(id) {
            None => true,
            Some(slot) => {
                (slot.inst.state == State::Running && slot.inst.run > run)
                    || matches!(slot.inst.state, State::Stopped | State::Exited | State::Fatal | State::Backoff)
                        && slot.inst.pgid.is_none()
            }
        };
        if over {
            self.recycling.busy.remove(&id.name);
            self.recycle_next(&id.name);
        }
    }

    /// A removed instance is not recycled and frees its process.
    pub(super) fn recycle_left(&mut self, id: &InstanceId) {
        self.recycling.forget(id);
        self.recycle_on_state(id);
    }

    /// The next recycle of `name` that is still due, if its process is free.
    fn recycle_next(&mut self, name: &str) {
        if self.recycling.busy.contains_key(name) || self.recycling.rolling.get(name).is_some_and(|n| *n > 0) {
            return;
        }
        while let Some(at) = self.recycling.pending.iter().position(|(id, _, _)| id.name == name) {
            let Some((id, run, reason)) = self.recycling.pending.remove(at) else {
                break;
            };
            if self.begin_recycle(id, run, reason) {
                return;
            }
        }
    }

    pub(super) fn on_rolling(&mut self, names: Vec<String>, on: bool) {
        for name in names {
            let count = self.recycling.rolling.entry(name.clone()).or_default();
            if on {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.recycling.rolling.remove(&name);
                    self.recycle_next(&name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_deadline_is_max_age_and_up_to_a_tenth_more_the_same_for_the_same_run() {
        let max_age = Duration::from_secs(1000);
        let mut seen = std::collections::HashSet::new();
        for index in 0..50 {
            for run in 1..5 {
                let id = InstanceId::new("w", index);
                let deadline = age_deadline(max_age, &id, run);
                assert!(deadline >= max_age && deadline <= max_age + max_age / 10, "{deadline:?}");
                assert_eq!(deadline, age_deadline(max_age, &id, run), "drawn again alike, as after an upgrade");
                seen.insert(deadline);
            }
        }
        assert!(seen.len() > 20, "spread over instances and runs: {} distinct", seen.len());
    }

    #[test]
    fn memory_must_stay_above_for_two_checks() {
        // (strikes before, sampled, limit) -> (strikes after, recycle)
        let cases = [
            (0, Some(300), 200, (1, false)),
            (1, Some(300), 200, (2, true)),
            (1, Some(100), 200, (0, false)),
            (1, None, 200, (0, false)),
            (0, Some(200), 200, (0, false)),
        ];
        for (before, bytes, limit, want) in cases {
            assert_eq!(memory_verdict(before, bytes, limit), want, "{before} {bytes:?} {limit}");
        }
    }

    #[test]
    fn messages_are_shared_as_routed() {
        // (routes, any, count) -> each route's share
        let cases: [(usize, bool, usize, &[u64]); 4] =
            [(3, false, 2, &[2, 2, 2]), (3, true, 4, &[2, 1, 1]), (2, true, 1, &[1, 0]), (0, true, 5, &[])];
        for (routes, any, count, want) in cases {
            assert_eq!(shares(routes, any, count), want, "{routes} {any} {count}");
        }
    }
}
