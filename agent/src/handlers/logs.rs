//! `procctl logs TARGET [-n N] [-f]`: the last lines of captured output, merged by time
//! across instances; with `-f`, then every new line.

use procctl_proto::{Response, Target};

use super::{Context, Reply};
use crate::logs;

pub async fn run(context: &Context, target: Target, lines: u32, follow: bool) -> Reply {
    // Subscribe before the snapshot, so no line falls between the two.
    let receiver = follow.then(|| context.follow.subscribe());
    let sinks = match context.sup.sinks(target.clone()).await {
        Ok(sinks) => sinks,
        Err(error) => return Reply::One(Response::Error(error)),
    };
    let several = sinks.len() > 1;
    let tails = sinks.iter().map(|sink| sink.lock().unwrap_or_else(|p| p.into_inner()).tail(lines as usize)).collect();
    let (tail, after) = logs::merge(tails, lines as usize);
    let first = Response::Logs { lines: tail, several };
    match receiver {
        Some(lines) => Reply::Logs { first, lines, target, after },
        None => Reply::One(first),
    }
}
