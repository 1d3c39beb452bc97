//! Black-box tests: each starts a real procagent in a temp dir and drives the real procctl.
//! One binary, so the suite links once. Build the binaries first (`cargo build --workspace`).

mod support;

mod chaos;
mod completions;
mod config;
mod contrib;
mod control;
mod events;
mod exit_codes;
mod fleet;
mod fuzz;
mod hostile;
mod import;
mod logs;
mod manuals;
mod messaging;
mod persistence;
mod production;
mod protocol;
mod readiness;
mod reload;
mod restart;
mod scale;
mod security;
mod signals;
mod socket;
mod supervision;
mod workers;
