//! The agent's own log: one line per call on stderr.
//!
//! Whoever holds the other end of stderr may stop reading (a hung log collector, a terminal
//! paused with Ctrl-S). A blocking write there would freeze every task of the agent, so a
//! line is written only when stderr can take it at once; otherwise it is dropped and
//! counted, and the next line that goes out says how many were lost. A closed pipe is
//! treated the same way: the agent never dies of its log.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

static DROPPED: AtomicU64 = AtomicU64::new(0);

pub fn line(args: fmt::Arguments) {
    if !stderr_ready() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut text = String::new();
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        text.push_str(&format!("procagent: ({dropped} log line(s) dropped: stderr was not accepting them)\n"));
    }
    text.push_str(&format!("procagent: {args}\n"));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Whether a short write to stderr would not block. A pipe with a free buffer slot takes a
/// write of up to a page whole; files and /dev/null are always ready.
fn stderr_ready() -> bool {
    let mut fd = libc::pollfd { fd: libc::STDERR_FILENO, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd and a zero timeout: poll only reads and writes `fd`.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & libc::POLLOUT != 0 && fd.revents & (libc::POLLERR | libc::POLLNVAL) == 0
}
