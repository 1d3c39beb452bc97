//! Writing the pid table: a change after a quiet spell is written at once, and further
//! changes within the save window are written together at its end. A save costs in
//! proportion to the rows, so the window grows with them (10 ms up to 100 instances, 100 ms
//! at 1,000, at most 200 ms): saves take a bounded share of the agent however large the
//! table. The writer thread does the disk work; here is what to write and when.

use std::time::{Duration, Instant};

use super::Due;
use super::Supervisor;
use crate::table::{self, Row, TableFile};

pub const SAVE_WINDOW: Duration = Duration::from_millis(10);
const SAVE_WINDOW_MAX: Duration = Duration::from_millis(200);

/// The save window for a table of `rows`.
fn window(rows: usize) -> Duration {
    (Duration::from_micros(100) * rows as u32).clamp(SAVE_WINDOW, SAVE_WINDOW_MAX)
}

pub struct Persist {
    writer: table::Writer,
    dirty: bool,
    armed: bool,
    last_save: Instant,
}

impl Persist {
    pub fn new(writer: table::Writer) -> Persist {
        Persist { writer, dirty: true, armed: false, last_save: Instant::now() - SAVE_WINDOW }
    }

    /// Something the table shows changed.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    pub fn writer(&self) -> &table::Writer {
        &self.writer
    }
}

impl Supervisor {
    /// After a burst of events: write now, or arm the end of the window. Not while shutting
    /// down: the agent writes the table once when every instance is down, and a save begun
    /// meanwhile (its fsyncs) would only hold that last one up. Should the agent die during
    /// the shutdown, the table before it still names every run that may be alive, and the
    /// next agent checks each pid's start time.
    pub(super) fn save_if_due(&mut self) {
        if !self.persist.dirty || self.persist.armed || self.shutting_down {
            return;
        }
        let since = self.persist.last_save.elapsed();
        let window = window(self.slots.len());
        if since >= window {
            self.save();
        } else {
            self.persist.armed = true;
            self.timers.after(window - since, Due::Save);
        }
    }

    pub(super) fn on_save_due(&mut self) {
        self.persist.armed = false;
        if !self.shutting_down {
            self.save();
        }
    }

    pub(super) fn save(&mut self) {
        self.persist.dirty = false;
        self.persist.last_save = Instant::now();
        let table = self.snapshot();
        self.persist.writer.save(table);
    }

    pub(super) fn snapshot(&self) -> TableFile {
        let instances = self
            .slots
            .iter()
            .map(|(id, slot)| Row {
                name: id.name.clone(),
                index: id.index,
                pid: slot.inst.pid,
                pgid: slot.inst.pgid,
                start_time: slot.start_time.filter(|_| slot.inst.pgid.is_some()),
                state: slot.inst.state.to_string(),
                restarts: slot.inst.restarts,
                last_exit: slot.inst.last_exit.map(Into::into),
            })
            .collect();
        TableFile {
            version: table::TABLE_VERSION,
            agent_pid: std::process::id(),
            agent_token: Some(crate::reclaim::token().to_owned()),
            cgroup_base: self.cgroups.tree().map(|tree| tree.base.clone()),
            instances,
            scaled: self.scaled.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_the_table() {
        // (rows, window)
        let cases = [(0, 10), (100, 10), (250, 25), (1000, 100), (2000, 200), (10_000, 200)];
        for (rows, ms) in cases {
            assert_eq!(window(rows), Duration::from_millis(ms), "{rows} rows");
        }
    }
}
