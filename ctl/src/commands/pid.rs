//! `procctl pid TARGET...`

use procctl_proto::{Request, Response, Target};

use super::{distinct, printed};
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::host::Endpoint;
use crate::output;
use crate::snapshot::{self, Need};
use crate::streams::Io;

pub fn run(endpoint: &Endpoint, targets: &[Target], io: &mut Io) -> Result<Status, CtlError> {
    let targets = distinct(targets);
    let kept = match endpoint {
        Endpoint::Local(socket) => snapshot::rows(socket, &targets, Need::Rows),
        Endpoint::Ssh(_) => None,
    };
    let all = match kept {
        Some(rows) => rows.iter().filter_map(|row| row.pid).collect(),
        None => ask(&mut Client::open_to_ask(endpoint)?, &targets)?,
    };
    if all.is_empty() {
        let names: Vec<String> = targets.iter().map(Target::to_string).collect();
        return Err(CtlError::Failed(format!("no running instance of {}", names.join(" "))));
    }
    printed(output::pids(&all, &mut io.out))
}

/// The pids of `targets`, each once, from the agent.
fn ask(client: &mut Client, targets: &[Target]) -> Result<Vec<u32>, CtlError> {
    let mut all = vec![];
    for (index, target) in targets.iter().enumerate() {
        let request = Request::Pid { target: target.clone() };
        match client.ask(&request, index + 1 == targets.len())? {
            Response::Pids(pids) => all.extend(pids.into_iter().filter(|pid| !all.contains(pid)).collect::<Vec<_>>()),
            other => return Err(unexpected(&other)),
        }
    }
    Ok(all)
}
