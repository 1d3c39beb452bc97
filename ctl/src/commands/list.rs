//! `procctl list [TARGET...] [--json]`

use procctl_proto::{InstanceInfo, Request, Response, Target};

use super::{distinct, exit_code, printed};
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::host::Endpoint;
use crate::output;
use crate::snapshot::{self, Need};
use crate::streams::Io;

pub fn run(endpoint: &Endpoint, targets: &[Target], json: bool, io: &mut Io) -> Result<Status, CtlError> {
    let rows = match endpoint {
        Endpoint::Local(socket) => snapshot::rows(socket, &distinct(targets), Need::Sampled),
        Endpoint::Ssh(_) => None,
    };
    let rows = match rows {
        Some(rows) => rows,
        None => rows_of(&mut Client::open_to_ask(endpoint)?, targets)?,
    };
    let status = printed(output::list(&rows, &[], json, io.colour, &mut io.out));
    // procctl ends right after: its memory goes back with the process, row by row frees
    // are time for nothing.
    std::mem::forget(rows);
    status
}

/// The rows of every target, each instance once, in the order asked.
fn rows_of(client: &mut Client, targets: &[Target]) -> Result<Vec<InstanceInfo>, CtlError> {
    let mut all: Vec<InstanceInfo> = vec![];
    let targets = distinct(targets);
    let last = targets.len().saturating_sub(1);
    for (index, target) in targets.into_iter().enumerate() {
        let request = Request::List { target };
        match client.ask(&request, index == last)? {
            Response::List(rows) if all.is_empty() => all = rows,
            Response::List(rows) => {
                all.extend(rows.into_iter().filter(|row| !all.iter().any(|seen| seen.id == row.id)).collect::<Vec<_>>())
            }
            other => return Err(unexpected(&other)),
        }
    }
    Ok(all)
}

/// One table (or JSON array) of every host's rows, with a HOST column; a host that cannot
/// answer says why on stderr, and the exit status is the worst.
pub fn on_each(endpoints: &[Endpoint], targets: &[Target], json: bool, colour: bool) -> Result<Status, CtlError> {
    let answers: Vec<Result<Vec<InstanceInfo>, CtlError>> = std::thread::scope(|scope| {
        let runs: Vec<_> = endpoints
            .iter()
            .map(|endpoint| scope.spawn(move || rows_of(&mut Client::open(endpoint)?, targets)))
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap_or_else(|_| Err(CtlError::Failed("a host's thread failed".into()))))
            .collect()
    });
    let (mut rows, mut hosts, mut worst) = (vec![], vec![], 0);
    for (endpoint, answer) in endpoints.iter().zip(answers) {
        match answer {
            Ok(found) => {
                hosts.extend(std::iter::repeat_n(endpoint.label(), found.len()));
                rows.extend(found);
            }
            Err(error) => worst = worst.max(exit_code(Err(error), &mut Io::lines(Some(endpoint.label()), colour))),
        }
    }
    let mut io = Io::std(colour);
    printed(output::list(&rows, &hosts, json, colour, &mut io.out))?;
    Ok(Status::Worst(worst))
}
