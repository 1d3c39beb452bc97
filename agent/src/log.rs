//! The agent's own log: one line per call on stderr.
//!
//! Whoever holds the other end of stderr may stop reading (a hung log collector, a terminal
//! paused with Ctrl-S). A blocking write there would freeze every task of the agent, so a
//! line is written only when stderr can take it at once; otherwise it is dropped and
//! counted, and the next line that goes out says how many were lost. A closed pipe is
//! treated the same way: the agent never dies of its log. A line is at most a page, so a
//! pipe that polls writable takes it whole. Only the error the agent exits with waits.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

static DROPPED: AtomicU64 = AtomicU64::new(0);

pub fn line(args: fmt::Arguments) {
    if stderr_ready() {
        last(args);
    } else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes the line whatever it takes: for the agent's last words (why it cannot run),
/// since the process ends right after, and for `line` once stderr is ready.
pub fn last(args: fmt::Arguments) {
    let text = compose(DROPPED.swap(0, Ordering::Relaxed), args);
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The line (after a count of dropped ones, if any), cut to fit in one page.
fn compose(dropped: u64, args: fmt::Arguments) -> String {
    use fmt::Write as _;
    let mut text = String::new();
    if dropped > 0 {
        let _ = writeln!(text, "procagent: ({dropped} log line(s) dropped: stderr was not accepting them)");
    }
    let _ = write!(text, "procagent: {args}");
    if text.len() >= PAGE {
        let mut end = PAGE - '…'.len_utf8() - 1;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text.push('\n');
    text
}

/// What one write may hold: a pipe that polls writable has a free page, and a write that fits
/// in it does not block.
const PAGE: usize = 4096;

/// Whether a short write to stderr would not block. A pipe with a free buffer slot takes a
/// write of up to a page whole; files and /dev/null are always ready.
fn stderr_ready() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let stderr = std::io::stderr();
    let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLOUT)];
    let ready = poll(&mut fds, PollTimeout::ZERO).unwrap_or(0);
    let bad = PollFlags::POLLERR | PollFlags::POLLNVAL;
    ready == 1 && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLOUT) && !r.intersects(bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_what_was_dropped_and_fits_in_a_page() {
        assert_eq!(compose(0, format_args!("hi")), "procagent: hi\n");
        assert_eq!(
            compose(2, format_args!("hi")),
            "procagent: (2 log line(s) dropped: stderr was not accepting them)\nprocagent: hi\n"
        );
        let long = compose(0, format_args!("{}", "é".repeat(5000)));
        assert!(long.len() <= PAGE && long.ends_with("…\n"), "{}", long.len());
    }
}
