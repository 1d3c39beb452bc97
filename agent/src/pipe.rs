//! The message pipe of one run of an instance: a bounded outgoing queue drained by a
//! writer task, and a reader task that hands each reply line to the oldest waiting
//! `send --reply`, or to the event stream when nobody waits.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use procctl_proto::{EventKind, InstanceId};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::events::Bus;
use crate::scratch;

/// Chunks the queue holds; with `CHUNK_BYTES` this bounds the memory one instance can hold.
pub const QUEUE_CHUNKS: usize = 32;
/// The most bytes of messages in one queued chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// A reply line longer than this is cut there; the rest of it is dropped.
pub const MAX_REPLY_LINE: usize = 64 * 1024;

pub enum Chunk {
    /// Whole lines, each ending in `\n`.
    Data(Vec<u8>),
    /// Answered once everything queued before it is written to the pipe.
    Flush(oneshot::Sender<()>),
}

type Waiters = Arc<Mutex<VecDeque<oneshot::Sender<String>>>>;

/// Whether a pipe's writer is in the middle of a chunk (some of it written, not all): an
/// upgrade waits for it to finish, so the worker never reads half a message.
#[derive(Clone, Default)]
pub struct Writing(Arc<std::sync::atomic::AtomicBool>);

impl Writing {
    pub fn busy(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, busy: bool) {
        self.0.store(busy, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a sender needs: the queue, and where to wait for replies (`None` when the
/// instance cannot reply, as with `pipe = "stdin"`).
#[derive(Clone)]
pub struct PipeRef {
    pub queue: mpsc::Sender<Chunk>,
    waiters: Option<Waiters>,
    writing: Writing,
}

impl PipeRef {
    /// Its writer's progress, which outlives the `PipeRef`s while the queue is written out.
    pub fn writing(&self) -> Writing {
        self.writing.clone()
    }

    /// Whether reply lines come back on this pipe.
    pub fn carries_replies(&self) -> bool {
        self.waiters.is_some()
    }

    /// Queues one message (in the room `permit` holds) and registers for its reply, as one
    /// step under the waiters' lock, so that concurrent senders' replies cannot swap.
    /// `None` when this pipe carries no replies (nothing is queued then).
    pub fn send_expecting_reply(
        &self,
        permit: mpsc::Permit<'_, Chunk>,
        line: Vec<u8>,
    ) -> Option<oneshot::Receiver<String>> {
        let waiters = self.waiters.as_ref()?;
        let (tx, rx) = oneshot::channel();
        let mut waiters = waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.push_back(tx);
        permit.send(Chunk::Data(line));
        Some(rx)
    }
}

/// Starts the tasks of one run's pipe; they end when the instance closes its end or the
/// last `PipeRef` is dropped.
pub fn start(fd: OwnedFd, id: InstanceId, replies: bool, bus: Bus) -> std::io::Result<PipeRef> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    let (read, mut write) = UnixStream::from_std(stream)?.into_split();
    let (queue, mut chunks) = mpsc::channel::<Chunk>(QUEUE_CHUNKS);
    let writing = Writing::default();
    let progress = writing.clone();
    tokio::spawn(async move {
        while let Some(chunk) = chunks.recv().await {
            match chunk {
                Chunk::Data(bytes) => {
                    progress.set(true);
                    let written = write.write_all(&bytes).await;
                    progress.set(false);
                    if written.is_err() {
                        // The instance closed its end: dropping the queue tells every sender.
                        return;
                    }
                }
                Chunk::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    let waiters: Option<Waiters> = replies.then(Waiters::default);
    if let Some(waiters) = waiters.clone() {
        tokio::spawn(async move {
            let mut line = Vec::new();
            // After a line is cut at MAX_REPLY_LINE, the rest of it is dropped, so that one
            // long line is one reply and the replies after it still meet their senders.
            let mut skipping = false;
            loop {
                if read.readable().await.is_err() {
                    break;
                }
                let take = |bytes: &[u8]| {
                    for &byte in bytes {
                        if skipping {
                            skipping = byte != b'\n';
                        } else if byte == b'\n' {
                            deliver(&waiters, &id, &bus, std::mem::take(&mut line));
                        } else {
                            line.push(byte);
                            if line.len() == MAX_REPLY_LINE {
                                deliver(&waiters, &id, &bus, std::mem::take(&mut line));
                                skipping = true;
                            }
                        }
                    }
                };
                if let scratch::Read::End = scratch::read(|buf| read.try_read(buf), take) {
                    break;
                }
                // Readiness alone never yields: an instance that never stops writing would
                // starve every other task of this thread.
                tokio::task::yield_now().await;
            }
            if !line.is_empty() {
                deliver(&waiters, &id, &bus, line);
            }
        });
    }
    Ok(PipeRef { queue, waiters, writing })
}

fn deliver(waiters: &Waiters, id: &InstanceId, bus: &Bus, line: Vec<u8>) {
    let mut line = String::from_utf8_lossy(&line).into_owned();
    if line.ends_with('\r') {
        line.pop();
    }
    let waiter = waiters.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    // A waiter that gave up (timed out) lets its late reply go to the event stream.
    let unclaimed = match waiter {
        Some(waiter) => waiter.send(line).err(),
        None => Some(line),
    };
    if let Some(line) = unclaimed {
        bus.emit(EventKind::Reply { id: id.clone(), line });
    }
}
