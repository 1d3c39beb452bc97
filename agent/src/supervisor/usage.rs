//! CPU and memory of the listed instances, sampled when `list` asks and never on a timer:
//! from the run's cgroup (cpu.stat, memory.current) where it has one, else summed over the
//! processes of its group from /proc. CPU is the share of one CPU since the previous sample
//! of that instance, or since its start for the first.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use procctl_proto::InstanceInfo;

use super::Supervisor;
use crate::cgroup;
use crate::procfs;

impl Supervisor {
    /// Fills `cpu_tenths` and `memory_bytes` of the running rows.
    pub(super) fn sample_usage(&mut self, rows: &mut [InstanceInfo]) {
        let (ticks_per_sec, page) = procfs::units();
        let mut by_group: Option<HashMap<i32, (u64, u64)>> = None;
        let memory_controller = self.tracking.tree().is_some_and(|tree| tree.has("memory"));
        let now = Instant::now();
        for row in rows.iter_mut() {
            let Some(slot) = self.slots.get_mut(&row.id) else {
                continue;
            };
            let (Some(pgid), Some(_)) = (slot.inst.pgid, slot.inst.pid) else {
                continue;
            };
            let (cpu_usec, memory) = match &slot.cgroup {
                Some(path) => {
                    let memory = if memory_controller {
                        cgroup::memory_current(path)
                    } else {
                        Some(cgroup::members(path).iter().filter_map(|&pid| procfs::rss_pages(pid)).sum::<u64>() * page)
                    };
                    (cgroup::cpu_usec(path), memory)
                }
                None => {
                    let usage = by_group.get_or_insert_with(procfs::usage_by_group);
                    let (ticks, pages) = usage.get(&pgid).copied().unwrap_or_default();
                    (Some(ticks * 1_000_000 / ticks_per_sec), Some(pages * page))
                }
            };
            row.memory_bytes = memory;
            let Some(used) = cpu_usec else {
                continue;
            };
            let (before, since) = match slot.cpu_sample {
                Some((before, at)) => (before, now.duration_since(at)),
                None => (
                    0,
                    slot.inst.started_at.and_then(|at| SystemTime::now().duration_since(at).ok()).unwrap_or_default(),
                ),
            };
            let elapsed = since.as_micros() as u64;
            row.cpu_tenths = (used.saturating_sub(before) * 1000).checked_div(elapsed).map(|t| t as u32);
            slot.cpu_sample = Some((used, now));
        }
    }
}
