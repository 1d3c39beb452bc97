//! The one deadline helper: every wait in the suite polls a condition until a deadline.

use std::time::{Duration, Instant};

/// How long an agent may take to answer its first `list`.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The default deadline of a `wait_until`.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long one procctl call may take before the test fails.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `condition` every `step` until it holds (true) or `deadline` has passed (false).
pub fn poll_until(deadline: Duration, step: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Polls `condition` until it holds; panics naming `what` after `deadline`.
#[track_caller]
pub fn wait_until(deadline: Duration, what: &str, condition: impl FnMut() -> bool) {
    wait_every(deadline, Duration::from_millis(10), what, condition);
}

/// `wait_until` polling every `step`, for a condition that costs the agent something to ask.
#[track_caller]
pub fn wait_every(deadline: Duration, step: Duration, what: &str, condition: impl FnMut() -> bool) {
    let held = poll_until(deadline, step, condition);
    assert!(held, "timed out after {deadline:?} waiting until {what}");
}

/// Checks `condition` every `step` for all of `duration` (for what must not happen, such as
/// a restart); panics naming `what` the first time it fails.
#[track_caller]
pub fn holds_for(duration: Duration, step: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let broke = poll_until(duration, step, || !condition());
    assert!(!broke, "{what} stopped holding within {duration:?}");
}
