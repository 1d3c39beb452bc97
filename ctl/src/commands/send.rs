//! `procctl send [--any] [--reply] [--timeout 5s] TARGET MSG...|-`
//!
//! With `-`, messages are read from stdin one per line and sent in batches over one
//! connection, in order; the first batch an instance fails stops the stream.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use procctl_proto::frame::{self, MAX_FRAME};
use procctl_proto::{InstanceId, Request, Response, SendRequest, Target};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::host::Endpoint;
use crate::output;
use crate::streams::Io;

pub struct Options {
    pub any: bool,
    pub reply: bool,
    pub timeout: Duration,
}

/// The longest message `send -` takes: what fits in one frame with room for the request.
const MAX_MESSAGE: usize = MAX_FRAME - 1024;

/// A batch is sent once it holds this many bytes of messages (well under one frame).
const BATCH_BYTES: usize = 256 * 1024;

pub fn run(
    endpoint: &Endpoint,
    target: Target,
    words: Vec<String>,
    options: Options,
    io: &mut Io,
) -> Result<Status, CtlError> {
    if options.any && matches!(target, Target::Instance(_)) {
        return Err(CtlError::Usage(format!("--any takes a process NAME, not the instance {target}")));
    }
    let request = |messages: Vec<String>| {
        Request::Send(SendRequest {
            target: target.clone(),
            messages,
            any: options.any,
            reply: options.reply,
            timeout_ms: options.timeout.as_millis() as u64,
        })
    };
    if words != ["-"] {
        let send = request(vec![words.join(" ")]);
        // Refused before anything is sent when it cannot fit in one frame.
        frame::encode(&send).map_err(|e| CtlError::Failed(format!("message too large: {e}")))?;
        let mut client = Client::open(endpoint)?;
        return match client.call(&send)? {
            Response::Sent(deliveries) => {
                printed(output::deliveries(&target, &deliveries, options.reply, &mut io.out, &mut io.err))
            }
            other => Err(unexpected(&other)),
        };
    }
    if options.reply {
        return Err(CtlError::Usage("--reply takes one message, not a stream from stdin".into()));
    }
    let mut client = Client::open(endpoint)?;
    let mut accepted: BTreeMap<InstanceId, u32> = BTreeMap::new();
    let mut batch: Vec<String> = vec![];
    let mut bytes = 0;
    let mut sent = 0usize;
    let stdin = std::io::stdin().lock();
    let mut lines = stdin.lines();
    loop {
        let line = lines.next().transpose().map_err(|e| CtlError::Failed(format!("cannot read stdin: {e}")))?;
        // A message too large ends the stream: what came before it is still sent.
        let too_large = line.as_ref().filter(|line| line.len() > MAX_MESSAGE).map(String::len);
        let end = line.is_none() || too_large.is_some();
        if let Some(line) = line.filter(|_| too_large.is_none()) {
            bytes += line.len() + 8;
            batch.push(line);
        }
        if (end && !batch.is_empty()) || bytes >= BATCH_BYTES {
            let count = batch.len();
            match client.call(&request(std::mem::take(&mut batch)))? {
                Response::Sent(deliveries) => {
                    for delivery in &deliveries {
                        *accepted.entry(delivery.id.clone()).or_default() += delivery.accepted;
                    }
                    if deliveries.is_empty() || deliveries.iter().any(|d| d.error.is_some()) {
                        // No instance at all (scaled to 0 meanwhile) took none of this batch.
                        let through = if deliveries.is_empty() { sent } else { sent + count };
                        return printed(output::stream_stopped(
                            &target,
                            &deliveries,
                            through,
                            &mut io.out,
                            &mut io.err,
                        ));
                    }
                }
                other => return Err(unexpected(&other)),
            }
            sent += count;
            bytes = 0;
        }
        if let Some(size) = too_large {
            let message = format!(
                "message {} is {size} bytes, over the limit of {MAX_MESSAGE}: it and any after it were not sent; the {sent} before it were",
                sent + 1
            );
            return Err(CtlError::Failed(message));
        }
        if end {
            break;
        }
    }
    printed(output::stream_accepted(&accepted, &mut io.out))
}
