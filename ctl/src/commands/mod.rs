//! One file per subcommand: build the request, send it, hand the reply to `output`.

mod completions;
mod events;
mod import;
mod list;
mod logs;
mod manpages;
mod pid;
mod reload;
mod restart;
pub mod scale;
mod send;
mod shutdown;
mod signal;
mod start;
mod stop;
mod wait;

use std::io::{self, stderr, stdout};

use procctl_proto::{Request, Response, Target};

use crate::Status;
use crate::cli::{Cli, Command};
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(cli: Cli) -> Result<Status, CtlError> {
    let socket = procctl_proto::socket::socket_path(cli.socket);
    match cli.command {
        Command::Completions { shell } => completions::run(shell),
        Command::Manpages { dir } => manpages::run(&dir),
        Command::Import { files, from } => import::run(&files, from),
        Command::List { target, json } => list::run(&mut Client::connect(&socket)?, target, json),
        Command::Pid { target } => pid::run(&mut Client::connect(&socket)?, target),
        Command::Start { target } => start::run(&mut Client::connect(&socket)?, target),
        Command::Stop { target } => stop::run(&mut Client::connect(&socket)?, target),
        Command::Restart { target } => restart::run(&mut Client::connect(&socket)?, target),
        Command::Signal { target, signal } => signal::run(&mut Client::connect(&socket)?, target, signal),
        Command::Scale { name, count } => scale::run(&mut Client::connect(&socket)?, name, count),
        Command::Shutdown => shutdown::run(&mut Client::connect(&socket)?),
        Command::Reload => reload::run(&mut Client::connect(&socket)?),
        Command::Send { any, reply, timeout, target, message } => {
            let options = send::Options { any, reply, timeout };
            send::run(&socket, target, message, options)
        }
        Command::Logs { target, lines, follow } => logs::run(&mut Client::connect(&socket)?, target, lines, follow),
        Command::Events { json } => events::run(&mut Client::connect(&socket)?, json),
        Command::Wait { target, until, timeout } => wait::run(&mut Client::connect(&socket)?, target, until, timeout),
    }
}

/// For commands that answer with per-instance outcomes; `verb` names the command.
fn outcomes(client: &mut Client, request: &Request, verb: &str, target: &Target) -> Result<Status, CtlError> {
    match client.call(request)? {
        Response::Outcomes(list) if list.is_empty() => printed(output::nothing_to(verb, target, &mut stdout().lock())),
        Response::Outcomes(list) => printed(output::outcomes(&list, &mut stdout().lock(), &mut stderr().lock())),
        other => Err(unexpected(&other)),
    }
}

/// Output that could not be written fails the command. A closed pipe never gets here (SIGPIPE
/// ends procctl first) and neither does a closed stdout (std ignores EBADF).
fn printed<T>(result: io::Result<T>) -> Result<T, CtlError> {
    result.map_err(|e| CtlError::Failed(format!("cannot write the output: {e}")))
}
