//! procctl: the command-line client of procagent.
//!
//! `cli` is the clap tree, `host` where a command goes (the local socket or ssh), `client`
//! the blocking connection over either, `commands` one file per subcommand, `output` the
//! only place that turns replies into text and `streams` where it goes, `top` the live view,
//! and `import` reads other supervisors' files for `procctl import`. `main` parses, calls
//! `commands::run`, and maps the result to an exit code: 0 success, 1 refused or failed,
//! 2 usage error, 3 agent unreachable.

mod cli;
mod client;
mod commands;
mod host;
mod import;
mod output;
mod streams;
mod top;

use std::process::ExitCode;

use clap::Parser;

/// How a command that reached the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// Failures were printed already.
    Failure,
    /// The worst exit code of a command run on several hosts (or streams); failures were
    /// printed already.
    Worst(u8),
}

fn main() -> ExitCode {
    // Like other Unix filters, end quietly when the reader of our output goes away
    // (`procctl logs -f | head`). Socket writes are sent with MSG_NOSIGNAL and unaffected.
    // SAFETY: restoring a default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match commands::run(cli) {
        Ok(Status::Success) => ExitCode::SUCCESS,
        Ok(Status::Failure) => ExitCode::from(1),
        Ok(Status::Worst(code)) => ExitCode::from(code),
        Err(error) => {
            eprintln!("procctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
