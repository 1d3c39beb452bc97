//! What every black-box test uses: the `Agent` fixture and `run` (agent.rs), an agent started
//! outside it (daemon.rs), the one deadline helper `wait_until` (wait.rs), /proc readers
//! (procfs.rs), raw protocol access (wire.rs), a `procctl events` watcher (events.rs), acting
//! as `nobody` (users.rs), and small config helpers here.

mod agent;
mod daemon;
mod events;
mod procfs;
mod users;
mod wait;
mod wire;

use std::path::Path;

pub use agent::{Agent, Output, bin, run};
pub use daemon::{Daemon, command_of};
pub use events::{SPARE, Watcher};
pub use procfs::{
    alive, all_pids, argv, children_of, kill, start_time, stat, status_field, status_kib, task_stat, zombies_of,
};
pub use users::{NOBODY, as_nobody, nobody_argv, require_root, root};
pub use wait::{CTL_TIMEOUT, WAIT, holds_for, poll_until, wait_every, wait_until};
pub use wire::{closed_by_agent, connect, hello, read_response};

/// A TOML array for `sh -c SCRIPT`.
pub fn sh(script: &str) -> String {
    serde_json::to_string(&["sh", "-c", script]).unwrap()
}

/// The lines of a file, or none if it does not exist yet.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// A config of `n` sleepers named `worker` that count as started at once.
pub fn sleepers(n: u32) -> String {
    format!(
        "[process.worker]\ncommand = [\"sleep\", \"100000\"]\ninstances = {n}\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n"
    )
}
