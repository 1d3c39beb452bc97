//! `procctl send`: hand messages to each target instance's pipe queue and wait until they
//! are written to the pipe (or, with `--reply`, until each instance answered). A full queue
//! waits for room as long as the instance keeps reading; an instance that reads nothing for
//! the timeout fails the send, which says how many messages it accepted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use procctl_proto::duration::human;
use procctl_proto::{Delivery, ErrorKind, InstanceId, Response, SendRequest, WireError};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::metrics::Tally;
use crate::pipe::{CHUNK_BYTES, Chunk, PipeRef};
use crate::supervisor::Handle;

pub async fn run(sup: &Handle, request: SendRequest, tally: &Arc<Tally>) -> Result<Response, WireError> {
    if request.messages.iter().any(|m| m.contains(['\n', '\r'])) {
        return Err(WireError::new(ErrorKind::BadRequest, "a message is one line: it cannot contain a newline"));
    }
    if request.reply && request.messages.len() != 1 {
        return Err(WireError::new(ErrorKind::BadRequest, "--reply takes exactly one message"));
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(1));
    let routes = sup.pipes(request.target.clone(), request.any, request.messages.len()).await?;

    // Which messages go where, in order; every instance gets all of them unless `any`.
    let mut plan: BTreeMap<InstanceId, (Result<PipeRef, WireError>, Vec<String>)> = BTreeMap::new();
    if request.any {
        for (i, message) in request.messages.into_iter().enumerate() {
            let (id, pipe) = &routes[i % routes.len()];
            plan.entry(id.clone()).or_insert_with(|| (pipe.clone(), vec![])).1.push(message);
        }
    } else {
        for (id, pipe) in routes {
            plan.insert(id, (pipe, request.messages.clone()));
        }
    }

    let mut tasks = JoinSet::new();
    for (id, (pipe, messages)) in plan {
        let reply = request.reply;
        let tally = tally.clone();
        tasks.spawn(async move {
            match pipe {
                Ok(pipe) => deliver(id, pipe, messages, timeout, reply, &tally).await,
                Err(error) => {
                    tally.rejected(messages.len() as u64);
                    Delivery { id, accepted: 0, reply: None, error: Some(error) }
                }
            }
        });
    }
    let mut deliveries = tasks.join_all().await;
    deliveries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Response::Sent(deliveries))
}

/// Hands `messages` to one instance's pipe; the tally learns how many were written, how many
/// were refused, and how long a reply took.
async fn deliver(
    id: InstanceId,
    pipe: PipeRef,
    messages: Vec<String>,
    timeout: Duration,
    reply: bool,
    tally: &Tally,
) -> Delivery {
    let sent_at = Instant::now();
    let total = messages.len();
    let delivery = deliver_to(id, pipe, messages, timeout, reply).await;
    let accepted = u64::from(delivery.accepted);
    match &delivery.error {
        None => tally.delivered(&delivery.id, accepted),
        // Written; only the reply is late.
        Some(error) if error.kind == ErrorKind::Timeout => tally.delivered(&delivery.id, accepted),
        // Queued but never confirmed written: the pipe closed or stalled at the end.
        Some(_) if accepted == total as u64 => tally.rejected(accepted),
        Some(_) => tally.rejected(total as u64 - accepted),
    }
    if delivery.reply.is_some() {
        tally.replied(sent_at.elapsed());
    }
    delivery
}

async fn deliver_to(id: InstanceId, pipe: PipeRef, messages: Vec<String>, timeout: Duration, reply: bool) -> Delivery {
    let total = messages.len();
    let mut delivery = Delivery { id, accepted: 0, reply: None, error: None };
    let id = delivery.id.clone();
    if reply && !pipe.carries_replies() {
        delivery.error = Some(WireError::new(
            ErrorKind::Refused,
            format!("{id} cannot reply: its messages arrive on stdin (pipe = \"stdin\")"),
        ));
        return delivery;
    }
    let full = |accepted: u32| {
        WireError::new(
            ErrorKind::QueueFull,
            format!(
                "{id}: queue full: it read nothing for {} while messages waited ({accepted} of {total} messages accepted)",
                human(timeout)
            ),
        )
    };
    let closed = |accepted: u32| {
        WireError::new(
            ErrorKind::NotRunning,
            format!("{id}: its pipe closed ({accepted} of {total} messages accepted)"),
        )
    };
    let mut waiter = None;
    for (bytes, count) in chunks(&messages) {
        let permit = match tokio::time::timeout(timeout, pipe.queue.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Delivery { error: Some(closed(delivery.accepted)), ..delivery },
            Err(_) => return Delivery { error: Some(full(delivery.accepted)), ..delivery },
        };
        if reply {
            waiter = pipe.send_expecting_reply(permit, bytes);
        } else {
            permit.send(Chunk::Data(bytes));
        }
        delivery.accepted += count;
    }
    let (done, flushed) = oneshot::channel();
    let written = async {
        pipe.queue.send(Chunk::Flush(done)).await.map_err(|_| ())?;
        flushed.await.map_err(|_| ())
    };
    match tokio::time::timeout(timeout, written).await {
        Ok(Ok(())) => {}
        Ok(Err(())) => {
            let message = format!(
                "{id}: its pipe closed before the messages were written ({} of {total} queued, not delivered)",
                delivery.accepted
            );
            return Delivery { error: Some(WireError::new(ErrorKind::NotRunning, message)), ..delivery };
        }
        Err(_) => return Delivery { error: Some(full(delivery.accepted)), ..delivery },
    }
    if let Some(waiter) = waiter {
        match tokio::time::timeout(timeout, waiter).await {
            Ok(Ok(line)) => delivery.reply = Some(line),
            Ok(Err(_)) => delivery.error = Some(closed(delivery.accepted)),
            Err(_) => {
                let message = format!("{id} did not reply within {}", human(timeout));
                delivery.error = Some(WireError::new(ErrorKind::Timeout, message));
            }
        }
    }
    delivery
}

/// Messages as newline-terminated bytes, in chunks of about `CHUNK_BYTES`, with their counts.
fn chunks(messages: &[String]) -> Vec<(Vec<u8>, u32)> {
    let mut out = vec![];
    let mut bytes = Vec::new();
    let mut count = 0;
    for message in messages {
        if !bytes.is_empty() && bytes.len() + message.len() + 1 > CHUNK_BYTES {
            out.push((std::mem::take(&mut bytes), count));
            count = 0;
        }
        bytes.extend_from_slice(message.as_bytes());
        bytes.push(b'\n');
        count += 1;
    }
    if count > 0 {
        out.push((bytes, count));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_lines_whole_and_count_them() {
        let messages: Vec<String> = (0..10_000).map(|i| format!("message {i}")).collect();
        let chunks = chunks(&messages);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|(bytes, _)| bytes.len() <= CHUNK_BYTES && bytes.ends_with(b"\n")));
        assert_eq!(chunks.iter().map(|(_, n)| *n as usize).sum::<usize>(), messages.len());
        let joined: Vec<u8> = chunks.into_iter().flat_map(|(bytes, _)| bytes).collect();
        assert_eq!(String::from_utf8(joined).unwrap().lines().count(), 10_000);
    }
}
