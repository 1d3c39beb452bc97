//! Cgroup tracking as the supervisor uses it: the run's cgroup path, the inotify watches on
//! the `cgroup.events` of draining runs (and which instance each is for), removal once a run
//! is gone, and the limits a process asks for that its cgroup cannot have.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use procctl_proto::InstanceId;

use super::Supervisor;
use super::lifecycle::run_alive;
use crate::cgroup::{Tracking, Tree};
use crate::instance::Input;

pub struct CgroupWatch {
    pub tracking: Tracking,
    inotify: inotify::Watches,
    watches: HashMap<inotify::WatchDescriptor, InstanceId>,
    /// Processes already warned about a limit their cgroup cannot have.
    limit_warned: HashSet<String>,
    /// Empty cgroups of runs that ended, removed once the spawns that follow are asked for.
    ended: Vec<PathBuf>,
}

impl CgroupWatch {
    pub fn new(tracking: Tracking, inotify: inotify::Watches) -> CgroupWatch {
        CgroupWatch { tracking, inotify, watches: HashMap::new(), limit_warned: HashSet::new(), ended: vec![] }
    }

    /// The agent's cgroup tree, when runs are tracked by cgroups.
    pub fn tree(&self) -> Option<&Tree> {
        self.tracking.tree()
    }

    /// Where run `run` of `id` lives, with cgroup tracking.
    pub fn run_path(&self, id: &InstanceId, run: u64) -> Option<PathBuf> {
        self.tree().map(|tree| tree.run_path(id, run))
    }

    /// Watches a draining run's `cgroup.events`; without a watch the reaper's reports and
    /// the rechecks still see it go.
    fn watch(&mut self, id: &InstanceId, cgroup: &Path) -> Option<inotify::WatchDescriptor> {
        match self.inotify.add(cgroup.join("cgroup.events"), inotify::WatchMask::MODIFY) {
            Ok(watch) => {
                self.watches.insert(watch.clone(), id.clone());
                Some(watch)
            }
            Err(e) => {
                log!("{id}: cannot watch {}: {e}", cgroup.display());
                None
            }
        }
    }

    fn unwatch(&mut self, watch: inotify::WatchDescriptor) {
        self.watches.remove(&watch);
        let _ = self.inotify.remove(watch);
    }

    fn owner(&self, watch: &inotify::WatchDescriptor) -> Option<&InstanceId> {
        self.watches.get(watch)
    }

    /// The empty cgroup of a run that ended, to be removed after the current burst.
    pub fn remove_later(&mut self, cgroup: PathBuf) {
        self.ended.push(cgroup);
    }
}

/// Ended runs' cgroups left to remove while spawns are in flight, at most.
const ENDED_KEPT: usize = 64;

impl Supervisor {
    /// A run's cgroup is watched while it drains (its main process gone, others left) and
    /// removed once the instance has seen it empty.
    pub(super) fn follow_cgroup(&mut self, id: &InstanceId) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let Some(cgroup) = slot.cgroup.clone() else {
            return;
        };
        if slot.inst.pgid.is_none() {
            if let Some(watch) = slot.cgroup_watch.take() {
                self.cgroups.unwatch(watch);
            }
            slot.cgroup = None;
            crate::cgroup::remove(&cgroup);
        } else if slot.inst.pid.is_none() && slot.cgroup_watch.is_none() {
            slot.cgroup_watch = self.cgroups.watch(id, &cgroup);
            // It may have emptied before the watch was there.
            if !run_alive(&*self.kernel, slot) {
                self.feed(id, Input::GroupGone);
            }
        }
    }

    /// Removes the cgroups of runs that ended, once no spawn is in flight: a replacement's
    /// spawn, and the handling of its report (a restart's answer), come first. A removal on
    /// the spawner right after a clone held up the agent's answer on the same CPU. A long
    /// storm of starts does not let them pile up past `ENDED_KEPT`.
    pub(super) fn remove_ended_cgroups(&mut self) {
        if !self.spawning.is_empty() && self.cgroups.ended.len() < ENDED_KEPT {
            return;
        }
        for cgroup in std::mem::take(&mut self.cgroups.ended) {
            self.kernel.remove_cgroup(cgroup);
        }
    }

    /// `cgroup.events` of a draining run changed: is it empty now?
    pub(super) fn on_cgroup_event(&mut self, watch: inotify::WatchDescriptor) {
        let Some(id) = self.cgroups.owner(&watch).cloned() else {
            return;
        };
        if self.slots.get(&id).is_some_and(|slot| slot.inst.pid.is_none() && !run_alive(&*self.kernel, slot)) {
            self.feed(&id, Input::GroupGone);
        }
    }

    /// A limit a process asks for that its cgroup cannot have: said once per process.
    pub(super) fn warn_unlimited(&mut self) {
        let tree = self.cgroups.tracking.tree();
        for (name, spec) in &self.config.processes {
            let missing: Vec<&str> =
                [("memory_max", "memory", spec.memory_max.is_some()), ("cpu_max", "cpu", spec.cpu_max.is_some())]
                    .into_iter()
                    .filter(|(_, controller, wanted)| *wanted && !tree.is_some_and(|t| t.has(controller)))
                    .map(|(key, _, _)| key)
                    .collect();
            if !missing.is_empty() && self.cgroups.limit_warned.insert(name.clone()) {
                let why = match &self.cgroups.tracking {
                    crate::cgroup::Tracking::Cgroups(_) => "its controller is not available in this cgroup".to_string(),
                    crate::cgroup::Tracking::Groups(why) => why.clone(),
                };
                log!("{name}: {} not applied ({why}); it runs without", missing.join(" and "));
            }
        }
    }
}
