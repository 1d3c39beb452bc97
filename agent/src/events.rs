//! The event bus: lifecycle events to every watcher. Sending never waits; a watcher that
//! falls behind misses events and is told how many.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use procctl_proto::{Event, EventKind};
use tokio::sync::broadcast;

/// Events a watcher may fall behind by before it misses some.
pub const CAPACITY: usize = 4096;

/// The channel is made when the first watcher comes: its ring of `CAPACITY` slots is
/// written whole when made (about 400 KiB), and until a watcher comes an event reaches
/// nobody, so none is kept.
#[derive(Clone)]
pub struct Bus {
    tx: Arc<OnceLock<broadcast::Sender<Event>>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus { tx: Arc::default() }
    }

    pub fn emit(&self, kind: EventKind) {
        // No watcher is not an error.
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(Event { time_ms: now_ms(), kind });
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.get_or_init(|| broadcast::channel(CAPACITY).0).subscribe()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
