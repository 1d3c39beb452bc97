//! One file per subcommand: build the request, send it, hand the reply to `output`.

mod completions;
mod events;
mod list;
mod logs;
mod pid;
mod reload;
mod restart;
mod scale;
mod send;
mod shutdown;
mod signal;
mod start;
mod stop;

use procctl_proto::{Request, Response};

use crate::Status;
use crate::cli::{Cli, Command};
use crate::client::{Client, CtlError, unexpected};
use crate::output;

pub fn run(cli: Cli) -> Result<Status, CtlError> {
    let socket = procctl_proto::socket::socket_path(cli.socket);
    match cli.command {
        Command::Completions { shell } => completions::run(shell),
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
    }
}

/// For commands that answer with per-instance outcomes.
fn outcomes(client: &mut Client, request: &Request, nothing: impl FnOnce() -> String) -> Result<Status, CtlError> {
    match client.call(request)? {
        Response::Outcomes(list) if list.is_empty() => {
            println!("{}", nothing());
            Ok(Status::Success)
        }
        Response::Outcomes(list) => Ok(output::outcomes(&list)),
        other => Err(unexpected(&other)),
    }
}
