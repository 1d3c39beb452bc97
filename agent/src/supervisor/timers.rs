//! The supervisor's timers: one queue of whatever the loop wants back when it is due, polled
//! by the loop, that wakes it only then. An instance's timer of a kind is replaced when
//! re-armed and removed when disarmed, so an idle agent holds none.

use std::future::poll_fn;
use std::time::Duration;

use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::instance::{TIMERS, Timer};

pub struct Timers<D> {
    queue: DelayQueue<D>,
}

impl<D> Default for Timers<D> {
    fn default() -> Self {
        Timers { queue: DelayQueue::new() }
    }
}

/// The live timer of each kind of one instance; a key is dropped as soon as its entry fires
/// or is removed, because the queue reuses keys.
#[derive(Default)]
pub struct Armed([Option<Key>; TIMERS]);

impl Armed {
    /// The armed timers, by kind.
    pub fn armed(&self) -> impl Iterator<Item = (Timer, &Key)> {
        Timer::ALL.into_iter().zip(&self.0).filter_map(|(timer, key)| key.as_ref().map(|key| (timer, key)))
    }

    /// Forgets the key of a timer that just fired.
    pub fn fired(&mut self, timer: Timer) {
        self.0[timer.slot()] = None;
    }
}

impl<D> Timers<D> {
    pub fn after(&mut self, delay: Duration, due: D) {
        self.queue.insert(due, delay);
    }

    /// `after`, keeping the key to reset or remove it; the caller drops the key when it fires.
    pub fn after_key(&mut self, delay: Duration, due: D) -> Key {
        self.queue.insert(due, delay)
    }

    pub fn reset(&mut self, key: &Key, delay: Duration) {
        self.queue.reset(key, delay);
    }

    pub fn remove(&mut self, key: &Key) {
        self.queue.try_remove(key);
    }

    /// Arms an instance's `timer` to hand back `due`, replacing the one of that kind it had.
    pub fn arm(&mut self, armed: &mut Armed, timer: Timer, delay: Duration, due: D) {
        self.disarm(armed, timer);
        let key = self.queue.insert(due, delay);
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

    /// How long until the entry under `key` is due (zero when it is due already).
    pub fn remaining(&self, key: &Key) -> Duration {
        self.queue.deadline(key).saturating_duration_since(tokio::time::Instant::now())
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next timer due; pending while none is armed.
    pub async fn next(&mut self) -> D {
        loop {
            if let Some(expired) = poll_fn(|cx| self.queue.poll_expired(cx)).await {
                return expired.into_inner();
            }
            // Empty: the loop only polls when a timer is armed, so this does not spin.
            std::future::pending::<()>().await;
        }
    }
}
