//! The snapshot a metrics scrape reads: every instance and process as the table has them,
//! CPU and memory sampled as for `list`.

use procctl_proto::InstanceInfo;

use super::Supervisor;
use crate::metrics::{InstanceSample, ProcessSample, Snapshot};

impl Supervisor {
    pub(super) fn metrics(&mut self) -> Snapshot {
        let mut rows: Vec<InstanceInfo> = self.slots.keys().filter_map(|id| self.info(id)).collect();
        self.sample_usage(&mut rows);
        let instances = rows
            .into_iter()
            .filter_map(|row| {
                let slot = self.slots.get(&row.id)?;
                let run = slot.inst.pid.is_some();
                Some(InstanceSample {
                    state: row.state,
                    restarts: row.restarts,
                    recycles: u64::from(self.recycling.recycles(&row.id)),
                    started_at: slot.inst.started_at.filter(|_| run),
                    last_exit: row.last_exit,
                    cpu_usec: slot.cpu_sample.filter(|_| run).map(|(used, _)| used),
                    memory_bytes: row.memory_bytes,
                    health_failures: slot.health_failures,
                    id: row.id,
                })
            })
            .collect();
        let processes = self
            .config
            .processes
            .keys()
            .filter(|name| !self.retired.contains(*name))
            .map(|name| {
                let policy = self.config.processes.get(name).is_some_and(|spec| spec.autoscale.is_some());
                // An autoscale decision is applied as a scale: the count it wants is the count.
                let autoscale_wanted = (self.autoscaling.shown(name, policy) == Some(true)).then(|| self.desired(name));
                ProcessSample { name: name.clone(), wanted: self.desired(name), autoscale_wanted }
            })
            .collect();
        Snapshot { instances, processes }
    }
}
