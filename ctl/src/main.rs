//! procctl: the command-line client of procagent.
//!
//! `cli` is the clap tree, `host` where a command goes (the local socket or ssh), `client`
//! the blocking connection over either, `commands` one file per subcommand, `output` the
//! only place that turns replies into text and `streams` where it goes, `top` the live view,
//! `snapshot` reads the agent's last `list` answer from beside its socket, and `import`
//! reads other supervisors' files for `procctl import`. `main` parses, calls
//! `commands::run`, and maps the result to an exit code: 0 success, 1 refused or failed,
//! 2 usage error, 3 agent unreachable.

#![cfg_attr(not(test), no_main)]

mod cli;
mod client;
mod commands;
mod host;
mod import;
mod output;
mod snapshot;
mod streams;
mod top;

use clap::{CommandFactory, FromArgMatches};

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

/// The C entry point, in place of Rust's: the runtime's start-up reads and parses
/// `/proc/self/maps` to place a guard for stack overflows of the main thread and installs a
/// signal stack and handlers for it, which is about an eighth of what `procctl list` runs, for
/// a message that would only replace a SIGSEGV. SIGPIPE keeps its default disposition (the
/// runtime would ignore it): like other Unix filters, procctl ends quietly when the reader of
/// its output goes away (`procctl logs -f | head`); socket writes are sent with MSG_NOSIGNAL
/// and unaffected. Arguments come from `std::env::args_os`, which glibc fills before `main`.
#[cfg_attr(not(test), unsafe(no_mangle))]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    open_standard_fds();
    let code = run();
    // The runtime's exit path would flush stdout; this entry point has none.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code.into()
}

/// What the runtime's start-up also does: a closed stdin, stdout or stderr is opened on
/// /dev/null, so the agent's socket can never become one and take the output meant for it.
fn open_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll reads and writes only the three entries it is given.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } <= 0 {
        return;
    }
    for fd in fds.iter().filter(|fd| fd.revents & libc::POLLNVAL != 0) {
        // open returns the lowest free number, which is this one (the lower ones are open).
        if let Ok(null) = std::fs::File::options().read(true).write(true).open("/dev/null") {
            debug_assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&null), fd.fd);
            std::mem::forget(null);
        }
    }
}

fn run() -> u8 {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { 2 } else { 0 };
        }
    };
    match commands::run(cli) {
        Ok(Status::Success) => 0,
        Ok(Status::Failure) => 1,
        Ok(Status::Worst(code)) => code,
        Err(error) => {
            eprintln!("procctl: {error}");
            error.exit_code()
        }
    }
}

/// `Cli::try_parse`, except that clap's tree of commands is left for the process's exit to
/// free: dropping it is a sixth of clap's work in a `procctl list`, and it is built once.
fn parse() -> Result<cli::Cli, clap::Error> {
    let command = Box::leak(Box::new(cli::Cli::command()));
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    let mut matches = std::mem::ManuallyDrop::new(matches);
    cli::Cli::from_arg_matches_mut(&mut matches).map_err(|error| error.format(command))
}
