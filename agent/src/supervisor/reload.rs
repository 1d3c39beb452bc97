//! `reload`: what changed between the running config and the file (a pure diff, tested as a
//! table), which instances a changed process restarts, and applying all but the rolling
//! restarts, which the handler carries out one instance at a time.

use std::collections::{BTreeMap, HashSet};

use procctl_proto::{ErrorKind, InstanceId, State, WireError};

use super::Supervisor;
use super::api::ReloadPlan;
use crate::config::{Config, ProcessSpec};
use crate::instance::Input;

/// The difference between two configs, by process name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Any key but `instances` and `autostart` changed: restart, rolling.
    pub changed: Vec<String>,
    /// `instances` changed: (name, new count).
    pub rescaled: Vec<(String, u32)>,
}

/// `retired` processes were removed by an earlier reload and are still on their way out:
/// they count as absent from `old`.
pub fn diff(
    old: &BTreeMap<String, ProcessSpec>,
    retired: &HashSet<String>,
    fresh: &BTreeMap<String, ProcessSpec>,
) -> Diff {
    let mut diff = Diff::default();
    let counts_aside = |s: &ProcessSpec| ProcessSpec { instances: 0, autostart: false, autoscale: None, ..s.clone() };
    for (name, spec) in fresh {
        match old.get(name).filter(|_| !retired.contains(name)) {
            None => diff.added.push(name.clone()),
            Some(old) => {
                if counts_aside(old) != counts_aside(spec) {
                    diff.changed.push(name.clone());
                }
                if old.instances != spec.instances {
                    diff.rescaled.push((name.clone(), spec.instances));
                }
            }
        }
    }
    diff.removed = old.keys().filter(|name| !fresh.contains_key(*name) && !retired.contains(*name)).cloned().collect();
    diff
}

/// The instances a changed process restarts: those that run or should (running, starting,
/// backoff, fatal, exited), not those stopped on purpose (by `stop`, or never started with
/// `autostart = false`: they run the new settings at their next start), nor those a
/// rescale takes away.
pub fn to_restart(
    instances: &[(InstanceId, State, bool)],
    diff: &Diff,
    fresh: &BTreeMap<String, ProcessSpec>,
) -> Vec<InstanceId> {
    instances
        .iter()
        .filter(|(id, _, removing)| diff.changed.contains(&id.name) && !removing)
        .filter(|(_, state, _)| !matches!(state, State::Stopped | State::Stopping))
        .filter(|(id, _, _)| {
            id.index < fresh[&id.name].instances || !diff.rescaled.iter().any(|(name, _)| *name == id.name)
        })
        .map(|(id, _, _)| id.clone())
        .collect()
}

impl Supervisor {
    pub(super) fn reload(&mut self) -> Result<ReloadPlan, WireError> {
        self.refuse_when_shutting_down()?;
        let mut fresh = Config::load(&self.config.path)
            .map_err(|e| WireError::new(ErrorKind::Refused, format!("reload refused, nothing changed: {e}")))?;
        let diff = diff(&self.config.processes, &self.retired, &fresh.processes);
        let mut plan = ReloadPlan::default();
        plan.report.added = diff.added.clone();
        plan.report.removed = diff.removed.clone();
        plan.report.changed = diff.changed.clone();
        plan.report.rescaled = diff.rescaled.iter().map(|(name, to)| (name.clone(), self.count(name), *to)).collect();
        // A removed process keeps its spec until its instances are gone.
        for name in diff.removed.iter().chain(&self.retired) {
            fresh.processes.insert(name.clone(), self.config.processes[name].clone());
        }
        let instances: Vec<(InstanceId, State, bool)> =
            self.slots.iter().map(|(id, slot)| (id.clone(), slot.inst.state, slot.inst.removing)).collect();
        plan.restart = to_restart(&instances, &diff, &fresh.processes);
        // Every new address is bound before anything changes; a process whose `listen`
        // changed restarts (rolling) onto the new sockets, as for any changed key.
        let rebind = self
            .listening
            .rebind(fresh.processes.values())
            .map_err(|e| WireError::new(ErrorKind::Refused, format!("reload refused, nothing changed: {e}")))?;
        self.commit_listening(rebind);
        self.config.processes = fresh.processes;
        self.config.source = fresh.source;

        for name in &diff.removed {
            self.retired.insert(name.clone());
        }
        let removed: Vec<InstanceId> =
            self.slots.keys().filter(|id| diff.removed.contains(&id.name)).cloned().collect();
        plan.stopping.extend(self.remove(removed));
        // Every added instance exists before any starts, so one that depends on another
        // added process finds all of it, whatever the names' order.
        let mut autostarted = vec![];
        for name in &diff.added {
            self.scaled.remove(name);
            // Removed by an earlier reload and back before its instances were gone.
            self.retired.remove(name);
            let spec = &self.config.processes[name];
            let autostart = spec.autostart;
            for index in 0..spec.instances {
                let id = InstanceId::new(name.clone(), index);
                if self.slots.contains_key(&id) {
                    self.feed(&id, Input::Keep);
                } else {
                    let slot = self.new_slot(&id);
                    self.slots.insert(id.clone(), slot);
                }
                if autostart {
                    autostarted.push(id);
                }
            }
            // Old instances above the new count keep going away.
        }
        for id in autostarted {
            plan.starting.push(self.start(id));
        }
        for (name, to) in &diff.rescaled {
            // New instances follow `autostart`, as they would at agent start.
            let autostart = self.config.processes[name].autostart;
            let scale = self.scale(name, *to, autostart)?;
            // The config's count rules again: no runtime count is kept.
            self.scaled.remove(name);
            plan.starting.extend(scale.starting);
            plan.stopping.extend(scale.stopping);
        }
        for name in &diff.changed {
            let spec = &self.config.processes[name];
            for slot in self.slots.iter().filter(|(id, _)| id.name == *name).map(|(_, slot)| slot) {
                slot.sink.lock().unwrap_or_else(|p| p.into_inner()).configure(spec.log_max_size, spec.log_files);
            }
        }
        self.warn_unlimited();
        self.touch();
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn specs(text: &str) -> BTreeMap<String, ProcessSpec> {
        Config::parse(Path::new("/c/procctl.toml"), text).unwrap().processes
    }

    #[test]
    fn diffs() {
        let base = "[process.a]\ncommand = [\"x\"]\n[process.b]\ncommand = [\"y\"]\ninstances = 2\n";
        // (fresh file, retired, added, removed, changed, rescaled)
        type Case = (
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            &'static [&'static str],
            &'static [&'static str],
            &'static [(&'static str, u32)],
        );
        let cases: &[Case] = &[
            (base, &[], &[], &[], &[], &[]),
            ("[process.a]\ncommand = [\"x\"]\n", &[], &[], &["b"], &[], &[]),
            (
                "[process.a]\ncommand = [\"x\"]\n[process.b]\ncommand = [\"y\"]\ninstances = 2\n[process.c]\ncommand = [\"z\"]\n",
                &[],
                &["c"],
                &[],
                &[],
                &[],
            ),
            (
                "[process.a]\ncommand = [\"x2\"]\n[process.b]\ncommand = [\"y\"]\ninstances = 2\n",
                &[],
                &[],
                &[],
                &["a"],
                &[],
            ),
            (
                "[process.a]\ncommand = [\"x\"]\n[process.b]\ncommand = [\"y\"]\ninstances = 5\n",
                &[],
                &[],
                &[],
                &[],
                &[("b", 5)],
            ),
            (
                "[process.a]\ncommand = [\"x\"]\n[process.b]\ncommand = [\"y\"]\ninstances = 1\nstop_timeout = \"1s\"\n",
                &[],
                &[],
                &[],
                &["b"],
                &[("b", 1)],
            ),
            (
                "[process.a]\ncommand = [\"x\"]\nautostart = false\n[process.b]\ncommand = [\"y\"]\ninstances = 2\n",
                &[],
                &[],
                &[],
                &[],
                &[],
            ),
            // b was removed by an earlier reload and is back: it is added, not changed.
            (base, &["b"], &["b"], &[], &[], &[]),
            ("[process.a]\ncommand = [\"x\"]\n", &["b"], &[], &[], &[], &[]),
        ];
        let old = specs(base);
        for &(fresh, retired, added, removed, changed, rescaled) in cases {
            let retired: HashSet<String> = retired.iter().map(|s| s.to_string()).collect();
            let got = diff(&old, &retired, &specs(fresh));
            let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let want = Diff {
                added: names(added),
                removed: names(removed),
                changed: names(changed),
                rescaled: rescaled.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            };
            assert_eq!(got, want, "{fresh}");
        }
    }

    #[test]
    fn a_changed_process_restarts_what_runs_or_should() {
        let fresh = specs("[process.w]\ncommand = [\"new\"]\ninstances = 2\n[process.v]\ncommand = [\"v\"]\n");
        let diff = Diff { changed: vec!["w".into()], rescaled: vec![("w".into(), 2)], ..Diff::default() };
        let id = |i| InstanceId::new("w", i);
        // (instance, state, removing, restarted?)
        let cases = [
            (id(0), State::Running, false, true),
            (id(1), State::Fatal, false, true),
            (id(0), State::Exited, false, true),
            (id(0), State::Backoff, false, true),
            (id(0), State::Starting, false, true),
            (id(0), State::Stopped, false, false),
            (id(0), State::Stopping, false, false),
            (id(1), State::Running, true, false),
            (id(2), State::Running, false, false), // above the new count
            (InstanceId::new("v", 0), State::Running, false, false),
        ];
        for (id, state, removing, want) in cases {
            let got = to_restart(&[(id.clone(), state, removing)], &diff, &fresh);
            assert_eq!(!got.is_empty(), want, "{id} {state} removing={removing}");
        }
    }
}
