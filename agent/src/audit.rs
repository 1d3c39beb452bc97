//! Who did what: one line in the agent's log for each request that changes something,
//! naming the client's uid and pid and the target, and one for its outcome, so that who
//! restarted `web`, and when, can be found later. The outcome is logged when the operation
//! ends, even if the client that asked for it has gone.

use procctl_proto::{OutcomeKind, Request, Response};
use tokio::sync::mpsc;

use crate::handlers::{self, Context, Reply};

/// The process on the other end of a connection, from its socket's peer credentials.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |n: Option<String>| n.unwrap_or_else(|| "?".into());
        write!(f, "uid {} pid {}", shown(self.uid.map(|u| u.to_string())), shown(self.pid.map(|p| p.to_string())))
    }
}

/// The request with its target, as a user would type it, when it changes something.
fn changing(request: &Request) -> Option<String> {
    Some(match request {
        Request::Start { target } => format!("start {target}"),
        Request::Stop { target } => format!("stop {target}"),
        Request::Restart { target } => format!("restart {target}"),
        Request::Signal { target, signal } => format!("signal {target} {signal}"),
        Request::Scale { name, count } => format!("scale {name} {count}"),
        Request::Autoscale { name } => format!("scale {name} auto"),
        Request::Reload => "reload".into(),
        Request::Shutdown => "shutdown".into(),
        Request::Upgrade { binary: Some(binary) } => format!("upgrade --binary {binary}"),
        Request::Upgrade { binary: None } => "upgrade".into(),
        Request::Hello { .. }
        | Request::List { .. }
        | Request::Pid { .. }
        | Request::Send(_)
        | Request::Logs { .. }
        | Request::Events
        | Request::Wait { .. }
        | Request::Metrics => return None,
    })
}

/// Handles `request` as `handlers::handle` does, logging it and its outcome when it changes
/// something.
pub async fn handle(request: Request, context: Context, client: Client) -> Reply {
    let Some(what) = changing(&request) else {
        return handlers::handle(request, context).await;
    };
    log!("{what}: asked by {client}");
    match handlers::handle(request, context).await {
        Reply::One(response) => {
            log!("{what} (asked by {client}): {}", outcome(&response));
            Reply::One(response)
        }
        Reply::Steps(mut steps) => {
            // Relayed by a task of its own, so the outcome is logged even if the client leaves.
            let (relay, relayed) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(response) = steps.recv().await {
                    if !matches!(response, Response::Step(_)) {
                        log!("{what} (asked by {client}): {}", outcome(&response));
                    }
                    let _ = relay.send(response);
                }
            });
            Reply::Steps(relayed)
        }
        Reply::Upgrade { first, written, rest } => {
            log!("{what} (asked by {client}): {}", outcome(&first));
            let (relay, relayed) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                if let Ok(response) = rest.await {
                    log!("{what} (asked by {client}): {}", outcome(&response));
                    let _ = relay.send(response);
                }
            });
            Reply::Upgrade { first, written, rest: relayed }
        }
        other => other,
    }
}

/// What came of a request, in a few words.
fn outcome(response: &Response) -> String {
    match response {
        Response::Outcomes(outcomes) if outcomes.is_empty() => "nothing to do".into(),
        Response::Outcomes(outcomes) => {
            let failures: Vec<_> = outcomes
                .iter()
                .filter_map(|outcome| match &outcome.kind {
                    OutcomeKind::Failed(error) => Some(error),
                    _ => None,
                })
                .collect();
            match failures.first() {
                None => format!("done ({} instance(s))", outcomes.len()),
                Some(first) => format!("failed for {} of {} instance(s): {first}", failures.len(), outcomes.len()),
            }
        }
        Response::Scaled { name, from, to } => format!("{name} scaled from {from} to {to}"),
        Response::ShutDown => "every instance stopped".into(),
        Response::Reloaded(report) => format!(
            "added {:?}, removed {:?}, restarted {:?}, rescaled {:?}, {} failure(s)",
            report.added,
            report.removed,
            report.changed,
            report.rescaled,
            report.failures.len()
        ),
        Response::Error(error) => format!("refused: {error}"),
        Response::Upgrading { from, to } => format!("handing over from {from} to {to}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::{ErrorKind, InstanceId, Outcome, Target, WireError};

    #[test]
    fn only_requests_that_change_something_are_logged_with_their_target() {
        let web: Target = "web".parse().unwrap();
        let cases = [
            (Request::Restart { target: web.clone() }, Some("restart web")),
            (Request::Stop { target: Target::All }, Some("stop all")),
            (Request::Scale { name: "web".into(), count: 3 }, Some("scale web 3")),
            (Request::Shutdown, Some("shutdown")),
            (Request::List { target: web.clone() }, None),
            (Request::Events, None),
        ];
        for (request, want) in cases {
            assert_eq!(changing(&request).as_deref(), want, "{request:?}");
        }
    }

    #[test]
    fn outcomes_are_summed_up_with_the_first_failure() {
        let id = InstanceId { name: "web".into(), index: 1 };
        let ok = Outcome { id: id.clone(), kind: OutcomeKind::Stopped };
        let failed = Outcome {
            id,
            kind: OutcomeKind::Failed(WireError::new(ErrorKind::Failed, "web:1 did not start: it is fatal")),
        };
        let cases = [
            (Response::Outcomes(vec![]), "nothing to do"),
            (Response::Outcomes(vec![ok.clone(), ok.clone()]), "done (2 instance(s))"),
            (Response::Outcomes(vec![ok, failed]), "failed for 1 of 2 instance(s): web:1 did not start: it is fatal"),
            (
                Response::Error(WireError::new(ErrorKind::NotFound, "no process named ech")),
                "refused: no process named ech",
            ),
        ];
        for (response, want) in cases {
            assert_eq!(outcome(&response), want);
        }
    }
}
