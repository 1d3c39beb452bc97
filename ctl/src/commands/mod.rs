//! One file per subcommand: build the request, send it, hand the reply to `output`.
//!
//! A command runs against one endpoint (`on`), or against each of several hosts in
//! parallel, with lines prefixed by the host and the worst exit status (`on_each`). The
//! commands that take several targets resolve them all before anything is done, so an
//! unknown one fails the command before it changes anything.

mod completions;
mod dial_stdio;
mod events;
mod import;
mod list;
mod logs;
mod manpages;
mod metrics;
mod pid;
mod reload;
mod restart;
pub mod scale;
mod send;
mod shutdown;
mod signal;
mod start;
mod stop;
mod upgrade;
mod wait;

use std::io::{self, IsTerminal};

use procctl_proto::{Request, Response, Target};

use crate::Status;
use crate::cli::{Cli, ColorChoice, Command};
use crate::client::{Client, CtlError, unexpected};
use crate::host::{self, Endpoint};
use crate::output;
use crate::streams::Io;

pub fn run(cli: Cli) -> Result<Status, CtlError> {
    let options = cli.options();
    let socket = procctl_proto::socket::socket_path(options.socket);
    match cli.command {
        Command::Completions { shell, .. } => return completions::run(shell),
        Command::Manpages { dir, .. } => return manpages::run(&dir),
        Command::DialStdio { .. } => return dial_stdio::run(&socket),
        Command::Import { files, from, .. } => return import::run(&files, from),
        _ => {}
    }
    let endpoints =
        host::endpoints(&options.host, std::env::var(host::HOST_ENV).ok(), socket).map_err(CtlError::Usage)?;
    let colour =
        colour(options.color.unwrap_or(ColorChoice::Auto), io::stdout().is_terminal(), std::env::var_os("NO_COLOR"));
    match (endpoints.as_slice(), cli.command) {
        ([endpoint], Command::Top { .. }) => crate::top::run(endpoint, colour),
        ([endpoint], command) => on(endpoint, command, &mut Io::std(colour)),
        (_, Command::List { targets, json, .. }) => list::on_each(&endpoints, &targets, json, colour),
        (_, Command::Top { .. }) => Err(CtlError::Usage("top watches one host: give one --host".into())),
        (_, Command::Send { message, .. }) if message == ["-"] => {
            Err(CtlError::Usage("send - reads stdin for one host: give one --host".into()))
        }
        (_, command) => Ok(on_each(&endpoints, command, colour)),
    }
}

/// Colour with `always`, never with `never`, and with `auto` on a terminal unless `NO_COLOR`
/// is set to anything but the empty string.
fn colour(choice: ColorChoice, terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && no_color.is_none_or(|value| value.is_empty()),
    }
}

/// The next item of a stream, or `None` once the agent ended it because it is shutting down
/// (said on stderr): the end of a followed stream, not a failure.
fn until_shutdown(next: Result<Response, CtlError>, io: &mut Io) -> Result<Option<Response>, CtlError> {
    match next {
        Err(CtlError::Agent(error)) if error.kind == procctl_proto::ErrorKind::ShuttingDown => {
            printed(output::stream_ended(&error, &mut io.err))?;
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// One command against one agent.
fn on(endpoint: &Endpoint, command: Command, io: &mut Io) -> Result<Status, CtlError> {
    // Each of these sends its first request at once.
    let open = || Client::open_to_ask(endpoint);
    match command {
        Command::List { targets, json, .. } => list::run(endpoint, &targets, json, io),
        Command::Pid { targets, .. } => pid::run(endpoint, &targets, io),
        Command::Start { targets, .. } => start::run(&mut open()?, &targets, io),
        Command::Stop { targets, .. } => stop::run(&mut open()?, &targets, io),
        Command::Restart { targets, .. } => restart::run(&mut open()?, &targets, io),
        Command::Signal { targets, signal, .. } => signal::run(&mut open()?, &targets, signal, io),
        Command::Scale { name, count, .. } => scale::run(&mut open()?, name, count, io),
        Command::Shutdown { .. } => shutdown::run(&mut open()?, io),
        Command::Reload { .. } => reload::run(&mut open()?, io),
        Command::Upgrade { binary, .. } => upgrade::run(endpoint, binary, io),
        Command::Metrics { .. } => metrics::run(&mut open()?, io),
        Command::Send { any, reply, timeout, target, message, .. } => {
            let options = send::Options { any, reply, timeout };
            send::run(endpoint, target, message, options, io)
        }
        Command::Logs { targets, lines, follow, .. } => logs::run(endpoint, &targets, lines, follow, io),
        Command::Events { json, .. } => events::run(&mut open()?, json, io),
        Command::Wait { targets, until, timeout, .. } => wait::run(&mut open()?, &targets, until, timeout),
        Command::Top { .. } => Err(CtlError::Usage("top runs on its own".into())),
        Command::Completions { .. } | Command::Manpages { .. } | Command::DialStdio { .. } | Command::Import { .. } => {
            Err(CtlError::Usage("this command does not reach an agent".into()))
        }
    }
}

/// One command on each host at once, each line prefixed with its host; the exit status is
/// the worst of them.
fn on_each(endpoints: &[Endpoint], command: Command, colour: bool) -> Status {
    let codes: Vec<u8> = std::thread::scope(|scope| {
        let runs: Vec<_> = endpoints
            .iter()
            .map(|endpoint| {
                let command = command.clone();
                scope.spawn(move || {
                    let label = endpoint.label();
                    let mut io = Io::lines(Some(label), colour);
                    let code = exit_code(on(endpoint, command, &mut io), &mut io);
                    drop(io);
                    code
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap_or(1)).collect()
    });
    Status::Worst(codes.into_iter().max().unwrap_or(0))
}

/// The exit code of one host's run; its error, if any, is printed on its `err`.
fn exit_code(result: Result<Status, CtlError>, io: &mut Io) -> u8 {
    match result {
        Ok(Status::Success) => 0,
        Ok(Status::Failure) => 1,
        Ok(Status::Worst(code)) => code,
        Err(error) => {
            let _ = writeln!(io.err, "procctl: {error}");
            error.exit_code()
        }
    }
}

use std::io::Write as _;

/// The targets without repeats, in the order given; none means `all`.
fn distinct(targets: &[Target]) -> Vec<Target> {
    let mut seen: Vec<Target> = Vec::with_capacity(targets.len());
    for target in targets {
        if !seen.contains(target) {
            seen.push(target.clone());
        }
    }
    if seen.is_empty() {
        seen.push(Target::All);
    }
    seen
}

/// Checks that every target names something before any is acted on: the agent's error
/// names the first unknown one. One target needs no check (its own request fails whole).
fn resolve(client: &mut Client, targets: &[Target]) -> Result<(), CtlError> {
    if targets.len() > 1 {
        for target in targets {
            client.call(&Request::Pid { target: target.clone() })?;
        }
    }
    Ok(())
}

/// For commands that answer with per-instance outcomes, one request per target after all
/// are resolved; `verb` names the command.
fn outcomes(
    client: &mut Client,
    targets: &[Target],
    request: impl Fn(Target) -> Request,
    verb: &str,
    io: &mut Io,
) -> Result<Status, CtlError> {
    let targets = distinct(targets);
    resolve(client, &targets)?;
    let mut status = Status::Success;
    for target in targets {
        let printed_status = match client.call(&request(target.clone()))? {
            Response::Outcomes(list) if list.is_empty() => printed(output::nothing_to(verb, &target, &mut io.out))?,
            Response::Outcomes(list) => printed(output::outcomes(&list, &mut io.out, &mut io.err))?,
            other => return Err(unexpected(&other)),
        };
        if printed_status != Status::Success {
            status = printed_status;
        }
    }
    Ok(status)
}

/// Output that could not be written fails the command. A closed pipe never gets here (SIGPIPE
/// ends procctl first) and neither does a closed stdout (std ignores EBADF).
fn printed<T>(result: io::Result<T>) -> Result<T, CtlError> {
    result.map_err(|e| CtlError::Failed(format!("cannot write the output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_choice_the_terminal_and_no_color() {
        let set = || Some("1".into());
        let cases = [
            (ColorChoice::Auto, true, None, true),
            (ColorChoice::Auto, false, None, false),
            (ColorChoice::Auto, true, set(), false),
            (ColorChoice::Auto, true, Some("".into()), true),
            (ColorChoice::Always, false, set(), true),
            (ColorChoice::Never, true, None, false),
        ];
        for (choice, terminal, no_color, expected) in cases {
            assert_eq!(colour(choice, terminal, no_color.clone()), expected, "{choice:?} {terminal} {no_color:?}");
        }
    }

    #[test]
    fn targets_are_taken_once_each_and_none_is_all() {
        let t = |s: &str| s.parse::<Target>().unwrap();
        assert_eq!(distinct(&[]), [Target::All]);
        assert_eq!(distinct(&[t("web"), t("db:1"), t("web")]), [t("web"), t("db:1")]);
    }
}
