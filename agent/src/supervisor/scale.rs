//! `scale NAME COUNT`: which instances to create, keep, start and remove (a pure plan,
//! tested as a table), and applying it.

use procctl_proto::{ErrorKind, EventKind, InstanceId, WireError};

use super::Supervisor;
use super::api::ScalePlan;
use crate::config::MAX_INSTANCES;
use crate::instance::Input;
use crate::table::ScaleOverride;

/// What a scale does to the instances of one process, by index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New slots.
    pub create: Vec<u32>,
    /// On their way out by an earlier scale or reload: kept after all.
    pub keep: Vec<u32>,
    /// Created and kept ones, when the scale starts what it adds.
    pub start: Vec<u32>,
    /// Above the count: stopped and taken out, highest first.
    pub remove: Vec<u32>,
}

/// `existing` holds (index, on its way out) for each instance of the process. Instances
/// that stay keep whatever state they are in.
pub fn plan(existing: &[(u32, bool)], count: u32, start: bool) -> Plan {
    let mut plan = Plan::default();
    for index in 0..count {
        match existing.iter().find(|(i, _)| *i == index) {
            Some((_, false)) => continue,
            Some((_, true)) => plan.keep.push(index),
            None => plan.create.push(index),
        }
        if start {
            plan.start.push(index);
        }
    }
    let mut remove: Vec<u32> = existing.iter().filter(|(i, gone)| *i >= count && !gone).map(|(i, _)| *i).collect();
    remove.sort_unstable_by(|a, b| b.cmp(a));
    plan.remove = remove;
    plan
}

impl Supervisor {
    /// Adds or takes away instances until `count` exist; the added ones start when `start`.
    pub(super) fn scale(&mut self, name: &str, count: u32, start: bool) -> Result<ScalePlan, WireError> {
        self.refuse_when_shutting_down()?;
        let Some(spec) = self.config.processes.get(name) else {
            let names = self.config.processes.keys().map(String::as_str);
            return Err(WireError::new(ErrorKind::NotFound, crate::suggest::unknown_process(name, names)));
        };
        if count > MAX_INSTANCES {
            return Err(WireError::new(
                ErrorKind::BadRequest,
                format!("cannot scale `{name}` to {count}: the limit is {MAX_INSTANCES}"),
            ));
        }
        let config_instances = spec.instances;
        let from = self.count(name);
        self.scaled.insert(name.to_string(), ScaleOverride { count, config_instances });
        self.touch();
        let existing: Vec<(u32, bool)> = self
            .slots
            .iter()
            .filter(|(id, _)| id.name == name)
            .map(|(id, slot)| (id.index, slot.inst.removing))
            .collect();
        let plan = plan(&existing, count, start);
        for &index in &plan.create {
            let id = InstanceId::new(name, index);
            let slot = self.new_slot(&id);
            self.slots.insert(id, slot);
        }
        for &index in &plan.keep {
            self.feed(&InstanceId::new(name, index), Input::Keep);
        }
        let starting = plan.start.iter().map(|&index| self.start(InstanceId::new(name, index))).collect();
        let stopping = self.remove(plan.remove.iter().map(|&index| InstanceId::new(name, index)).collect());
        if from != count {
            self.bus.emit(EventKind::Scaled { name: name.to_string(), from, to: count });
        }
        Ok(ScalePlan { from, to: count, starting, stopping })
    }

    /// Instances of `name` that are not on their way out.
    pub(super) fn count(&self, name: &str) -> u32 {
        self.slots.iter().filter(|(id, slot)| id.name == name && !slot.inst.removing).count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        // (existing (index, removing), count, start) -> (create, keep, start, remove)
        type Case = (&'static [(u32, bool)], u32, bool, &'static [u32], &'static [u32], &'static [u32], &'static [u32]);
        let cases: &[Case] = &[
            (&[], 3, true, &[0, 1, 2], &[], &[0, 1, 2], &[]),
            (&[], 2, false, &[0, 1], &[], &[], &[]),
            (&[(0, false)], 3, true, &[1, 2], &[], &[1, 2], &[]),
            (&[(0, false), (1, false), (2, false)], 1, true, &[], &[], &[], &[2, 1]),
            (&[(0, false), (1, false)], 2, true, &[], &[], &[], &[]),
            (&[(0, false), (1, true), (2, true)], 3, true, &[], &[1, 2], &[1, 2], &[]),
            (&[(0, false), (1, true), (2, true)], 2, false, &[], &[1], &[], &[]),
            (&[(0, false), (1, false), (2, true)], 0, true, &[], &[], &[], &[1, 0]),
            (&[(0, false), (5, false)], 2, true, &[1], &[], &[1], &[5]),
        ];
        for &(existing, count, start, create, keep, starts, remove) in cases {
            let got = plan(existing, count, start);
            let want = Plan { create: create.into(), keep: keep.into(), start: starts.into(), remove: remove.into() };
            assert_eq!(got, want, "{existing:?} to {count} (start {start})");
        }
    }
}
