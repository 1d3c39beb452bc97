//! Black-box tests: each starts a real procagent in a temp dir and drives the real procctl.
//! One binary, so the suite links once. Build the binaries first (`cargo build --workspace`).

mod support;

mod audit;
mod chaos;
mod completions;
mod config;
mod contrib;
mod control;
mod crash_loops;
mod docs;
mod events;
mod exit_codes;
mod fleet;
mod fuzz;
mod hostile;
mod import;
mod listen;
mod logs;
mod manuals;
mod messages;
mod messaging;
mod metrics;
mod persistence;
mod production;
mod protocol;
mod readiness;
mod rechecks;
mod reload;
mod remote;
mod restart;
mod scale;
mod security;
mod shutdown;
mod signals;
mod snapshot;
mod socket;
mod supervision;
mod targets;
mod top;
mod upgrade;
mod workers;
