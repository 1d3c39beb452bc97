//! The supervisor's timers: one queue, polled by the loop, that wakes it only when the next
//! timer is due. An instance's timer of a kind is replaced when re-armed and removed when
//! disarmed, so an idle agent holds none.

use std::future::poll_fn;
use std::time::Duration;

use procctl_proto::InstanceId;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use super::readiness::Purpose;
use crate::instance::{TIMERS, Timer};

pub enum Due {
    Instance {
        id: InstanceId,
        timer: Timer,
        generation: u64,
    },
    /// Is the group of SIGKILLed run `run` gone yet? `vanished` when the last check found the
    /// main process gone without an exit report.
    Recheck {
        id: InstanceId,
        run: u64,
        attempt: u32,
        vanished: bool,
    },
    /// Time to write the table.
    Save,
    /// The next try of a run's ready or health probe.
    Probe {
        id: InstanceId,
        run: u64,
        purpose: Purpose,
    },
    /// No WATCHDOG=1 came in time.
    Watchdog {
        id: InstanceId,
        run: u64,
    },
    /// An `exec` probe ran out of time.
    ProbeTimeout {
        pid: i32,
    },
}

#[derive(Default)]
pub struct Timers {
    queue: DelayQueue<Due>,
}

/// The live timer of each kind of one instance; a key is dropped as soon as its entry fires
/// or is removed, because the queue reuses keys.
#[derive(Default)]
pub struct Armed([Option<Key>; TIMERS]);

impl Timers {
    pub fn after(&mut self, delay: Duration, due: Due) {
        self.queue.insert(due, delay);
    }

    /// `after`, keeping the key to reset or remove it; the caller drops the key when it fires.
    pub fn after_key(&mut self, delay: Duration, due: Due) -> Key {
        self.queue.insert(due, delay)
    }

    pub fn reset(&mut self, key: &Key, delay: Duration) {
        self.queue.reset(key, delay);
    }

    pub fn remove(&mut self, key: &Key) {
        self.queue.try_remove(key);
    }

    /// Arms `timer` of instance `id`, replacing the one of that kind it had.
    pub fn arm(&mut self, armed: &mut Armed, id: &InstanceId, timer: Timer, generation: u64, delay: Duration) {
        self.disarm(armed, timer);
        let key = self.queue.insert(Due::Instance { id: id.clone(), timer, generation }, delay);
        armed.0[timer.slot()] = Some(key);
    }

    pub fn disarm(&mut self, armed: &mut Armed, timer: Timer) {
        if let Some(key) = armed.0[timer.slot()].take() {
            self.queue.try_remove(&key);
        }
    }

    /// Removes every timer of an instance that leaves the table.
    pub fn disarm_all(&mut self, armed: &mut Armed) {
        for key in armed.0.iter_mut().filter_map(Option::take) {
            self.queue.try_remove(&key);
        }
    }

    /// Forgets the key of a timer that just fired.
    pub fn fired(armed: &mut Armed, timer: Timer) {
        armed.0[timer.slot()] = None;
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next timer due; pending while none is armed.
    pub async fn next(&mut self) -> Due {
        loop {
            if let Some(expired) = poll_fn(|cx| self.queue.poll_expired(cx)).await {
                return expired.into_inner();
            }
            // Empty: the loop only polls when a timer is armed, so this does not spin.
            std::future::pending::<()>().await;
        }
    }
}
