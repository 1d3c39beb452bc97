//! Spare run cgroups: an instance's next run's cgroup, made by the spawner ahead of time,
//! so that a replacement after a crash or a restart is cloned straight into it, without a
//! mkdir (the larger part of a start's cost in the spawner) between the old run's end and
//! the new one's exec.
//!
//! A spare is named as the run it will hold (`runs/NAME.INDEX.RUN`): its run number is
//! taken when the spare is asked for, and the instance's next run gets it. It is asked for
//! once a run of the instance has spawned and no spawn has been asked for over `QUIET` (a
//! start of many instances, which may come in several bursts, is not slowed by spares),
//! and only while the agent has at most `MOST`
//! instances: each spare costs a cgroup made ahead and its removal at a stop (about 11 ms
//! of the agent's CPU, a tenth of it, in a stop of a thousand with 128 spares), which a fleet
//! larger than that pays for spares few of which a crash ever takes; past `MOST` the spares
//! go. It has the limits of its process's spec at the time; a run
//! whose spec has other limits by then (a reload) gets a new cgroup, and the spare goes.
//! Spares go when their instance leaves, at shutdown and before an upgrade's exec; one
//! left by an agent that died is empty, and goes with the dead agent's tree.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use procctl_proto::InstanceId;

use super::Supervisor;
use crate::cgroup::Limits;
use crate::spawn::limits_of;

/// Instances the agent may have for spares to be made.
pub const MOST: usize = 128;
/// How long no spawn is asked for before spares are made.
const QUIET: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Spares {
    /// Each instance's spare: the run it is numbered for, and the limits it was made with.
    made: HashMap<InstanceId, (u64, Limits)>,
    /// Instances whose run has spawned, to get a spare once no spawn is in flight.
    wanted: VecDeque<InstanceId>,
    /// The timer that makes them is armed.
    armed: bool,
    /// Spawns asked for since it was armed: it waits again.
    spawned: bool,
}

/// What the next run of an instance with `spare` gets, when its spec's limits are `limits`
/// and it has a pre-start hook or not.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The spare's run number and cgroup.
    Spare(u64),
    /// A new run number; the spare, made for other limits (or for a start without a hook
    /// between), is removed.
    Drop(u64),
    /// A new run number.
    New,
}

fn next(spare: Option<(u64, Limits)>, limits: Limits, pre_start: bool) -> Next {
    match spare {
        // A pre-start hook may fail and the spawn never come: its cgroup would be left.
        Some((run, made_with)) if made_with == limits && !pre_start => Next::Spare(run),
        Some((run, _)) => Next::Drop(run),
        None => Next::New,
    }
}

impl Supervisor {
    /// The run number of the next run of `id`: its spare's, else a new one.
    pub(super) fn next_run(&mut self, id: &InstanceId) -> u64 {
        self.spares.spawned = true;
        let spare = self.spares.made.remove(id);
        let spec = self.config.processes.get(&id.name);
        let limits = spec.map(limits_of).unwrap_or_default();
        let pre_start = spec.is_some_and(|spec| spec.hooks.pre_start.is_some());
        match next(spare, limits, pre_start) {
            Next::Spare(run) => return run,
            Next::Drop(run) => {
                if let Some(path) = self.cgroups.run_path(id, run) {
                    self.kernel.drop_spare(path);
                }
            }
            Next::New => {}
        }
        self.runs += 1;
        self.runs
    }

    /// A run of `id` has spawned: it gets a spare for its next run when the spawns are done.
    pub(super) fn want_spare(&mut self, id: &InstanceId) {
        if self.cgroups.tree().is_some() && self.slots.len() <= MOST && self.spares.wanted.len() < MOST {
            self.spares.wanted.push_back(id.clone());
        }
    }

    /// After a burst of events: once instances want spares (or there are spares to drop,
    /// past `MOST` instances), the timer that makes them.
    pub(super) fn make_spares(&mut self) {
        let due = !self.spares.wanted.is_empty() || (self.slots.len() > MOST && !self.spares.made.is_empty());
        if !self.spares.armed && due && !self.shutting_down {
            self.spares.armed = true;
            self.spares.spawned = false;
            self.timers.after(QUIET, super::Due::Spares);
        }
    }

    /// Spares for the instances that want one, when no spawn was asked for over `QUIET` and
    /// none is in flight (the spawner makes them after whatever it was asked before); else
    /// it waits again.
    pub(super) fn on_spares_due(&mut self) {
        self.spares.armed = false;
        if self.shutting_down {
            return;
        }
        if !self.spawning.is_empty() || self.spares.spawned {
            return self.make_spares();
        }
        if self.slots.len() > MOST {
            if !self.spares.made.is_empty() || !self.spares.wanted.is_empty() {
                self.drop_spares();
            }
            return;
        }
        while let Some(id) = self.spares.wanted.pop_front() {
            let (Some(slot), Some(spec)) = (self.slots.get(&id), self.config.processes.get(&id.name)) else {
                continue;
            };
            // Only for a run that is up: a spare for one that ended would wait for nothing.
            if slot.inst.removing || slot.inst.pid.is_none() || spec.hooks.pre_start.is_some() {
                continue;
            }
            if self.spares.made.contains_key(&id) {
                continue;
            }
            let limits = limits_of(spec);
            self.runs += 1;
            let run = self.runs;
            let Some(path) = self.cgroups.run_path(&id, run) else {
                return;
            };
            self.kernel.make_spare(path, limits);
            self.spares.made.insert(id, (run, limits));
        }
    }

    /// `id` leaves the table: its spare goes.
    pub(super) fn drop_spare(&mut self, id: &InstanceId) {
        if let Some((run, _)) = self.spares.made.remove(id)
            && let Some(path) = self.cgroups.run_path(id, run)
        {
            self.kernel.drop_spare(path);
        }
    }

    /// Every spare goes (shutdown, upgrade): the spawner removes them after the spawns it
    /// was asked for.
    pub(super) fn drop_spares(&mut self) {
        self.spares.wanted = VecDeque::new();
        let ids: Vec<InstanceId> = self.spares.made.keys().cloned().collect();
        for id in ids {
            self.drop_spare(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_takes_the_spare_only_as_it_was_made() {
        let none = Limits::default();
        let capped = Limits { memory_max: Some(1 << 20), cpu_max: None };
        // (spare, limits now, pre-start hook, what the next run gets)
        let cases = [
            (None, none, false, Next::New),
            (None, capped, true, Next::New),
            (Some((7, none)), none, false, Next::Spare(7)),
            (Some((7, capped)), capped, false, Next::Spare(7)),
            (Some((7, none)), capped, false, Next::Drop(7)),
            (Some((7, capped)), none, false, Next::Drop(7)),
            (Some((7, none)), none, true, Next::Drop(7)),
        ];
        for (spare, limits, pre_start, want) in cases {
            assert_eq!(next(spare, limits, pre_start), want, "{spare:?} {limits:?} pre-start {pre_start}");
        }
    }
}
