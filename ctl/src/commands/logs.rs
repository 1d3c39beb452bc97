//! `procctl logs TARGET... [-n N] [-f]`

use procctl_proto::{LogLine, Request, Response, Target};

use super::{distinct, exit_code, printed, resolve};
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::host::Endpoint;
use crate::output;
use crate::streams::Io;

pub fn run(endpoint: &Endpoint, targets: &[Target], lines: u32, follow: bool, io: &mut Io) -> Result<Status, CtlError> {
    let targets = distinct(targets);
    let mut client = Client::open(endpoint)?;
    if let [target] = targets.as_slice() {
        return one(&mut client, target.clone(), lines, follow, false, io);
    }
    resolve(&mut client, &targets)?;
    if !follow {
        // Each target's tail, then all of them in time order (a stable sort keeps each
        // instance's own order).
        let mut tail: Vec<LogLine> = vec![];
        for target in targets {
            match client.call(&Request::Logs { target, lines, follow: false })? {
                Response::Logs { lines, .. } => tail.extend(lines),
                other => return Err(unexpected(&other)),
            }
        }
        tail.sort_by_key(|line| line.time_ms);
        let skip = tail.len().saturating_sub(lines as usize);
        for line in &tail[skip..] {
            if output::log_line(line, true, &mut io.out).is_err() {
                break;
            }
        }
        return Ok(Status::Success);
    }
    drop(client);
    // A connection per target, each followed on a thread of its own, whole lines at a time.
    let colour = io.colour;
    let codes: Vec<u8> = std::thread::scope(|scope| {
        let runs: Vec<_> = targets
            .into_iter()
            .map(|target| {
                scope.spawn(move || {
                    let mut io = Io::lines(None, colour);
                    let result = Client::open(endpoint)
                        .and_then(|mut client| one(&mut client, target, lines, true, true, &mut io));
                    exit_code(result, &mut io)
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap_or(1)).collect()
    });
    Ok(Status::Worst(codes.into_iter().max().unwrap_or(0)))
}

/// One target's tail, then (with `follow`) its new lines; `prefix` names each line's
/// instance even when the target has only one.
fn one(
    client: &mut Client,
    target: Target,
    lines: u32,
    follow: bool,
    prefix: bool,
    io: &mut Io,
) -> Result<Status, CtlError> {
    client.start(&Request::Logs { target, lines, follow })?;
    let several = match client.next()? {
        Response::Logs { lines, several } => {
            let several = several || prefix;
            for line in &lines {
                if output::log_line(line, several, &mut io.out).is_err() {
                    return Ok(Status::Success);
                }
            }
            several
        }
        other => return Err(unexpected(&other)),
    };
    if !follow {
        return Ok(Status::Success);
    }
    loop {
        let Some(response) = super::until_shutdown(client.next(), io)? else {
            return Ok(Status::Success);
        };
        match response {
            Response::LogLine(line) => {
                if output::log_line(&line, several, &mut io.out).and_then(|()| io.out.flush()).is_err() {
                    // Whoever read our output has gone (a closed pipe): stop quietly.
                    return Ok(Status::Success);
                }
            }
            Response::Missed(count) => printed(output::missed_lines(count, &mut io.err))?,
            other => return Err(unexpected(&other)),
        }
    }
}
