//! Writing the pid table: a change after a quiet spell is written at once, and further
//! changes within the save window are written together at its end. A save costs in
//! proportion to the rows, so the window grows with them (10 ms up to 100 instances, 100 ms
//! at 1,000, at most 200 ms): saves take a bounded share of the agent however large the
//! table. A change that leaves an instance on its way (`starting` or `stopping`: a spawn or
//! an exit follows within moments) is written at the window's end too, with what follows
//! it: a restart or a recovery is written once, after its new process runs, and the disk
//! work never competes with the start. The writer thread does the disk work; here is what
//! to write and when.

use std::time::{Duration, Instant};

use procctl_proto::State;

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
    /// A change since the last save left an instance starting or stopping.
    moving: bool,
    armed: bool,
    last_save: Instant,
}

impl Persist {
    pub fn new(writer: table::Writer) -> Persist {
        Persist { writer, dirty: true, moving: false, armed: false, last_save: Instant::now() - SAVE_WINDOW }
    }

    /// Something the table shows changed.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// An instance changed to `state`: the table is due, and it is on its way when starting
    /// or stopping.
    pub fn touch_state(&mut self, state: State) {
        self.dirty = true;
        self.moving |= moving(state);
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
        match delay(since, window, self.persist.moving) {
            None => self.save(),
            Some(after) => {
                self.persist.armed = true;
                self.timers.after(after, Due::Save);
            }
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
        self.persist.moving = false;
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

/// Whether an instance in `state` changes again within moments (its spawn or its exit).
fn moving(state: State) -> bool {
    matches!(state, State::Starting | State::Stopping)
}

/// When a dirty table is written, `since` the last save: now (`None`) after a quiet spell
/// with nothing on its way, else after the rest of the window (a whole one after a quiet
/// spell).
fn delay(since: Duration, window: Duration, moving: bool) -> Option<Duration> {
    match (since >= window, moving) {
        (true, false) => None,
        (true, true) => Some(window),
        (false, _) => Some(window - since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_on_its_way_waits_for_the_window() {
        let ms = Duration::from_millis;
        // (since the last save, window, an instance starting or stopping, when to write)
        let cases = [
            (ms(50), ms(10), false, None),
            (ms(50), ms(10), true, Some(ms(10))),
            (ms(4), ms(10), false, Some(ms(6))),
            (ms(4), ms(10), true, Some(ms(6))),
            (ms(10), ms(10), false, None),
        ];
        for (since, window, moving, want) in cases {
            assert_eq!(delay(since, window, moving), want, "{since:?} {window:?} {moving}");
        }
        let states = [
            (State::Starting, true),
            (State::Stopping, true),
            (State::Running, false),
            (State::Stopped, false),
            (State::Backoff, false),
            (State::Waiting, false),
            (State::Exited, false),
            (State::Fatal, false),
        ];
        for (state, want) in states {
            assert_eq!(moving(state), want, "{state}");
        }
    }

    #[test]
    fn the_window_grows_with_the_table() {
        // (rows, window)
        let cases = [(0, 10), (100, 10), (250, 25), (1000, 100), (2000, 200), (10_000, 200)];
        for (rows, ms) in cases {
            assert_eq!(window(rows), Duration::from_millis(ms), "{rows} rows");
        }
    }
}
