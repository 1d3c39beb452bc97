//! `list`'s answer, written from the table as it is walked: each row borrows its name,
//! status and start error from the slot, and goes straight into the frame that is sent,
//! so a `list` of a thousand copies and frees no row (a thousand names, and the rows'
//! vector, were most of what the agent allocated for it).

use std::time::SystemTime;

use procctl_proto::frame::{self, HEADER_LEN};
use procctl_proto::row::{Row, RowId};
use procctl_proto::{ErrorKind, FrameError, InstanceId, InstanceInfo, Target, WireError};

use super::{Slot, Supervisor};

/// Bytes a row takes in a frame besides its name, about: room reserved for each, so the
/// frame is seldom grown while it is written.
const ROW_BYTES: usize = 40;

impl Supervisor {
    /// The rows of the target, CPU and memory sampled, as a whole `Response::List` frame.
    pub(super) fn list_frame(&mut self, target: &Target) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        let written = if let Target::All = target {
            self.sample_all();
            self.frame_of_all(&mut out)
        } else {
            // A name or an instance: a few rows, built owned as for every other request.
            let mut rows = self.rows(target)?;
            self.sample_usage(&mut rows);
            frame::encode_list(rows.iter().map(InstanceInfo::row), &mut out)
        };
        written.map_err(|e| WireError::new(ErrorKind::Failed, format!("the list of {target} does not fit: {e}")))?;
        Ok(out)
    }

    /// Every row, with CPU and memory as last sampled, as a frame at the end of `out`.
    pub(super) fn frame_of_all(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let now = SystemTime::now();
        let mut autoscale = Autoscale::default();
        let room = self.slots.keys().map(|id| id.name.len() + ROW_BYTES).sum::<usize>();
        out.reserve(HEADER_LEN + 8 + room);
        let rows = self.slots.iter().map(|(id, slot)| {
            let shown = autoscale.of(self, &id.name);
            let mut row = self.row_of(id, slot, now, shown);
            (row.cpu_tenths, row.memory_bytes) = slot.usage.shown(slot.inst.run, slot.inst.pid);
            row
        });
        frame::encode_list(rows, out)
    }

    /// The row of `id`, borrowed from its slot, as of `now`; no CPU or memory.
    pub(super) fn row_of<'a>(
        &'a self,
        id: &'a InstanceId,
        slot: &'a Slot,
        now: SystemTime,
        autoscale: Option<bool>,
    ) -> Row<'a> {
        let uptime_secs =
            slot.inst.pid.and(slot.inst.started_at).map(|at| now.duration_since(at).map_or(0, |d| d.as_secs()));
        Row {
            id: RowId { name: &id.name, index: id.index },
            pid: slot.pid(),
            state: slot.inst.state,
            uptime_secs,
            restarts: slot.inst.restarts,
            last_exit: slot.inst.last_exit,
            health: slot.checks.health.filter(|_| slot.inst.is_up()),
            status: slot.checks.status.as_deref(),
            cpu_tenths: None,
            memory_bytes: None,
            start_error: slot.start_error.as_deref(),
            recycles: self.recycling.recycles(id),
            messages: self.recycling.messages(id, slot.inst.run),
            autoscale,
        }
    }

    /// Keeps `list`, an answer about `target`, for the snapshot, unless the agent is going
    /// away (its socket is too).
    pub(super) fn keep_snapshot(&mut self, target: &Target, sampled: bool, list: Vec<u8>) {
        if !self.shutting_down {
            self.snapshot.keep(target, sampled, list);
        }
    }

    /// The autoscale column of process `name`: `None` without a policy, else whether it is on.
    pub(super) fn autoscale_shown(&self, name: &str) -> Option<bool> {
        let has_policy = self.config.processes.get(name).is_some_and(|spec| spec.autoscale.is_some());
        self.autoscaling.shown(name, has_policy)
    }
}

/// The autoscale column of the last process asked about: the rows come by process, so it
/// is looked up once per process, not once per row.
#[derive(Default)]
struct Autoscale<'a> {
    last: Option<(&'a str, Option<bool>)>,
}

impl<'a> Autoscale<'a> {
    fn of(&mut self, sup: &Supervisor, name: &'a str) -> Option<bool> {
        match self.last {
            Some((last, shown)) if last == name => shown,
            _ => {
                let shown = sup.autoscale_shown(name);
                self.last = Some((name, shown));
                shown
            }
        }
    }
}
