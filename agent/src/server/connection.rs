//! One client: peer check, hello, then request after request; frames read with their size
//! cap and timeouts, streams forwarded, a client that hangs up noticed.

use std::io::ErrorKind as IoErrorKind;
use std::os::fd::AsFd;

use interprocess::os::unix::uds_local_socket as uds;
use procctl_proto::frame::{self, FrameError};
use procctl_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch};

use super::{FRAME_TIMEOUT, HELLO_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT};
use crate::audit;
use crate::handlers::{Context, Reply};

pub(super) async fn connection(
    stream: uds::tokio::Stream,
    context: Context,
    own_uid: u32,
    open: usize,
    max_connections: usize,
) {
    let client = peer(&stream);
    let peer_uid = client.uid;
    let mut stream = UnixStream::from(stream);
    if !peer_uid.is_some_and(|uid| uid == own_uid || uid == 0) {
        let who = peer_uid.map_or("an unknown uid".to_string(), |uid| format!("uid {uid}"));
        log!("refused a connection from {who}: only uid {own_uid} and root are served");
        let message = format!("refused: this agent serves only uid {own_uid} and root");
        let _ = write(&mut stream, &Response::Error(WireError::new(ErrorKind::Refused, message))).await;
        return;
    }
    if open > max_connections {
        log!("refused a connection: {max_connections} are open already");
        let message = format!("refused: the agent already serves {max_connections} connections (its limit)");
        let _ = write(&mut stream, &Response::Error(WireError::new(ErrorKind::Refused, message))).await;
        return;
    }
    let mut pending = Vec::new();
    let mut held;
    match tokio::time::timeout(HELLO_TIMEOUT, read(&mut stream, &mut pending)).await {
        Ok(Ok(Some(Request::Hello { .. }))) if context.changes.has_changed().is_err() => {
            let _ = write(&mut stream, &Response::Error(shutting_down())).await;
            return;
        }
        Ok(Ok(Some(Request::Hello { version }))) if version == PROTOCOL_VERSION => {
            let hello = Response::Hello { version: PROTOCOL_VERSION, agent_version: env!("CARGO_PKG_VERSION").into() };
            let Ok(bytes) = frame::encode(&hello) else { return };
            // A client that sent its request behind its hello gets both answers in one
            // write (woken once, not twice); one that waits for the hello gets it now.
            held = Some(bytes);
            let request_behind = frame::missing(&pending) == Ok(Some(0));
            if !request_behind && flush(&mut stream, &mut held).await.is_err() {
                return;
            }
        }
        Ok(Ok(Some(Request::Hello { version }))) => {
            let message = format!(
                "protocol version mismatch: procctl speaks version {version}, procagent speaks version {PROTOCOL_VERSION}"
            );
            let _ = write(&mut stream, &Response::Error(WireError::new(ErrorKind::VersionMismatch, message))).await;
            return;
        }
        Ok(Ok(Some(other))) => {
            let message = format!("expected hello first, got {}", other.verb());
            let _ = write(&mut stream, &Response::Error(WireError::new(ErrorKind::BadRequest, message))).await;
            return;
        }
        Ok(Err(error)) => return refuse_frame(&mut stream, error).await,
        Ok(Ok(None)) | Err(_) => return,
    }
    loop {
        let request = match tokio::time::timeout(IDLE_TIMEOUT, read(&mut stream, &mut pending)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Err(error)) => {
                if flush(&mut stream, &mut held).await.is_ok() {
                    refuse_frame(&mut stream, error).await;
                }
                return;
            }
            Ok(Ok(None)) | Err(_) => return,
        };
        let only_waits = request.only_waits();
        // A wait on instances is answered when the agent is about to be upgraded, before
        // the exec closes this connection; the operation itself goes on in the new agent.
        let mut upgrade = request.waits_on_instances().then(|| (context.upgrade.open(), upgrade_cut(&request)));
        let reply = if only_waits && request.answered_at_once() {
            // Answered from what the agent knows and changing nothing: handled here, without
            // a task of its own (nothing is lost if this client goes away meanwhile).
            audit::handle(request, context.clone(), client).await
        } else {
            // Its own task: an accepted operation runs to the end even if this client goes away.
            let mut handler = tokio::spawn(audit::handle(request, context.clone(), client));
            tokio::select! {
                reply = &mut handler => reply.unwrap_or_else(|e| {
                    Reply::One(Response::Error(WireError::new(ErrorKind::Failed, format!("internal error: {e}"))))
                }),
                // The slot is the client's only while it is there to read the answer.
                () = hangup(&stream) => {
                    if only_waits {
                        handler.abort();
                    }
                    return;
                }
                message = upgrading(&mut upgrade) => {
                    if flush(&mut stream, &mut held).await.is_ok() {
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, write(&mut stream, &Response::Error(message))).await;
                    }
                    return;
                }
            }
        };
        if let Some(hello) = &mut held {
            let behind = match &reply {
                Reply::One(response) => {
                    if frame::encode_onto(response, hello).is_err() {
                        return;
                    }
                    true
                }
                Reply::Frame(bytes) => {
                    hello.extend_from_slice(bytes);
                    true
                }
                _ => false,
            };
            if behind {
                if flush(&mut stream, &mut held).await.is_err() {
                    return;
                }
                continue;
            }
        }
        if flush(&mut stream, &mut held).await.is_err() {
            return;
        }
        match reply {
            Reply::One(response) => {
                if write(&mut stream, &response).await.is_err() {
                    return;
                }
            }
            Reply::Frame(bytes) => {
                if write_bytes(&mut stream, &bytes).await.is_err() {
                    return;
                }
            }
            Reply::Steps(mut steps) => loop {
                let response = tokio::select! {
                    step = steps.recv() => match step {
                        Some(response) => response,
                        None => break,
                    },
                    message = upgrading(&mut upgrade) => {
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, write(&mut stream, &Response::Error(message))).await;
                        return;
                    }
                };
                if write(&mut stream, &response).await.is_err() {
                    return;
                }
            },
            Reply::Many(responses) => {
                for response in responses {
                    if write(&mut stream, &response).await.is_err() {
                        return;
                    }
                }
            }
            Reply::Upgrade { first, written, rest } => {
                let sent = write(&mut stream, &first).await;
                let _ = written.send(());
                if sent.is_err() {
                    return;
                }
                if let Ok(response) = rest.await
                    && write(&mut stream, &response).await.is_err()
                {
                    return;
                }
            }
            Reply::Events(events) => {
                let changes = context.changes.clone();
                let upgrade = context.upgrade.clone();
                return forward(&mut stream, events, changes, upgrade, |event| Some(Response::Event(event))).await;
            }
            Reply::Logs { first, lines, target, after } => {
                if write(&mut stream, &first).await.is_err() {
                    return;
                }
                let keep = move |line: crate::logs::Numbered| {
                    let new =
                        target.matches(&line.line.id) && line.seq > after.get(&line.line.id).copied().unwrap_or(0);
                    new.then_some(Response::LogLine(line.line))
                };
                return forward(&mut stream, lines, context.changes.clone(), context.upgrade.clone(), keep).await;
            }
        }
    }
}

/// Writes each item the mapping keeps until the client goes away. A client that reads
/// slowly falls behind the channel and is told how many items it missed. When the agent
/// exits, or is about to be upgraded, the stream ends with a message saying so.
async fn forward<T: Clone>(
    stream: &mut UnixStream,
    mut items: broadcast::Receiver<T>,
    mut changes: watch::Receiver<u64>,
    upgrade: crate::handlers::UpgradeNotice,
    mut keep: impl FnMut(T) -> Option<Response>,
) {
    let (mut announced, _open) = upgrade.open();
    let (mut read, mut write_half) = stream.split();
    let mut probe = [0u8; 64];
    loop {
        let response = tokio::select! {
            item = items.recv() => match item {
                Ok(item) => match keep(item) {
                    Some(response) => response,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => Response::Missed(missed),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = exiting(&mut changes) => Response::Error(shutting_down()),
            message = crate::handlers::upgrade_announced(&mut announced) => {
                Response::Error(WireError::new(ErrorKind::ShuttingDown, message))
            }
            // The client sends nothing during a stream: a read that ends means it left.
            read = read.read(&mut probe) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        let end = matches!(response, Response::Error(_));
        let Ok(bytes) = frame::encode(&response) else { continue };
        if end {
            // The agent is exiting: a client that does not read is not waited for.
            let _ = tokio::time::timeout(WRITE_TIMEOUT, write_half.write_all(&bytes)).await;
            return;
        }
        if write_half.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

type UpgradeWatch = ((watch::Receiver<Option<String>>, crate::handlers::UpgradeOpen), &'static str);

/// What a wait cut by an upgrade goes on to say after the upgrade's notice.
fn upgrade_cut(request: &Request) -> &'static str {
    match request {
        Request::Wait { .. } => "wait again once it is done",
        Request::Send(_) => "the message was delivered; a reply that comes later is an event (`procctl events`)",
        _ => "the operation goes on in the new agent; `procctl wait` follows it",
    }
}

/// Resolves with the answer for a wait when an upgrade of the agent is announced; never for
/// a request that does not wait on instances.
async fn upgrading(upgrade: &mut Option<UpgradeWatch>) -> WireError {
    match upgrade {
        Some(((said, _open), after)) => {
            let notice = crate::handlers::upgrade_announced(said).await;
            WireError::new(ErrorKind::ShuttingDown, format!("{notice} ({after})"))
        }
        None => std::future::pending().await,
    }
}

fn shutting_down() -> WireError {
    WireError::new(ErrorKind::ShuttingDown, "the agent is shutting down")
}

/// Resolves once the supervisor is gone: its end of the change counter is dropped only when
/// the agent is exiting.
pub(super) async fn exiting(changes: &mut watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {}
}

/// Who is on the other end, from one SO_PEERCRED read: the uid always (a peer in another
/// PID namespace is shown with pid 0, and its uid is still good), the pid when the kernel
/// names one in ours.
fn peer(stream: &uds::tokio::Stream) -> audit::Client {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(creds) => audit::Client { uid: Some(creds.uid()), pid: Some(creds.pid()).filter(|&pid| pid > 0) },
        Err(_) => audit::Client { uid: None, pid: None },
    }
}

/// Resolves once the client has closed its socket. A client that only shut down its
/// writing half (`socat`, a script that sends and then waits) still reads the answer, and
/// one that already sent its next request is not gone: both keep the handler, until they
/// close for good. It watches a duplicate of the socket, registered on its own, so it can
/// clear each readiness it sees (and be woken only by the next event on the socket, a
/// full close among them) without touching the readiness the connection's reads and
/// writes rely on.
async fn hangup(stream: &UnixStream) {
    let watch = stream
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)));
    let Ok(watch) = watch else {
        return std::future::pending().await; // then the request is served to its end
    };
    let mut interest = Interest::READABLE | Interest::WRITABLE;
    loop {
        let Ok(ready) = watch.ready(interest).await else {
            return;
        };
        if peer_closed(&watch) {
            return;
        }
        // A half-close stays set (tokio keeps "read closed" for good): from then on only
        // the write side's events can tell a full close.
        if ready.is_read_closed() {
            interest = Interest::WRITABLE;
        }
        let _ = watch.try_io(Interest::READABLE, || Err::<(), _>(IoErrorKind::WouldBlock.into()));
        let _ = watch.try_io(Interest::WRITABLE, || Err::<(), _>(IoErrorKind::WouldBlock.into()));
    }
}

/// Whether the peer closed its whole socket: the kernel then reports POLLHUP, where a peer
/// that only shut down writing gives POLLRDHUP alone.
fn peer_closed(stream: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    let ready = poll(&mut fds, PollTimeout::ZERO).unwrap_or(0);
    ready == 1 && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

enum ReadError {
    Frame(FrameError),
    Io,
}

async fn refuse_frame(stream: &mut UnixStream, error: ReadError) {
    if let ReadError::Frame(error) = error {
        let _ = write(stream, &Response::Error(WireError::new(ErrorKind::BadRequest, error.to_string()))).await;
    }
}

/// The next request, or `None` at a clean end of stream. `pending` holds what was read and
/// not yet taken: a client's hello and the request right behind it mostly come in one read.
/// The header is waited for as long as the caller allows; the rest of a frame must follow
/// within `FRAME_TIMEOUT`. The buffer grows as bytes arrive, so a client announcing a large
/// frame and sending nothing costs nothing.
async fn read(stream: &mut UnixStream, pending: &mut Vec<u8>) -> Result<Option<Request>, ReadError> {
    let mut rest_by = None;
    loop {
        if let Some((request, used)) = frame::decode(pending).map_err(ReadError::Frame)? {
            pending.drain(..used);
            if pending.capacity() > FIRST_READ * 8 {
                pending.shrink_to(FIRST_READ); // a large frame's room is not kept
            }
            return Ok(Some(request));
        }
        let wanted = match frame::missing(pending).map_err(ReadError::Frame)? {
            Some(missing) => {
                rest_by.get_or_insert_with(|| tokio::time::Instant::now() + FRAME_TIMEOUT);
                missing
            }
            None => FIRST_READ,
        };
        // Room doubling as bytes come, up to what the frame still needs.
        pending.reserve(wanted.min(pending.len().max(FIRST_READ)));
        let read = match rest_by {
            Some(by) => tokio::time::timeout_at(by, stream.read_buf(pending)).await.map_err(|_| ReadError::Io)?,
            None => stream.read_buf(pending).await,
        };
        match read {
            Ok(0) if rest_by.is_none() => return Ok(None), // nothing, or part of a header
            Ok(0) | Err(_) => return Err(ReadError::Io),
            Ok(_) => {}
        }
    }
}

/// Room for a read when no frame is under way: a hello and a request, or several small ones.
const FIRST_READ: usize = 512;

async fn write(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let bytes = frame::encode(response).map_err(std::io::Error::other)?;
    write_bytes(stream, &bytes).await
}

/// Writes the bytes held back (the hello's answer, with whatever was put behind it), if any.
async fn flush(stream: &mut UnixStream, held: &mut Option<Vec<u8>>) -> std::io::Result<()> {
    match held.take() {
        Some(bytes) => write_bytes(stream, &bytes).await,
        None => Ok(()),
    }
}

async fn write_bytes(stream: &mut UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::Target;

    /// One outcome of `read`, its error as text.
    type Read = Result<Option<Request>, String>;

    /// What `read` makes of bytes a client sent and then closed, request by request.
    async fn requests_from(bytes: Vec<u8>) -> Vec<Read> {
        let (mut client, mut agent) = UnixStream::pair().unwrap();
        client.write_all(&bytes).await.unwrap();
        drop(client);
        let mut pending = Vec::new();
        let mut seen = vec![];
        loop {
            let got = read(&mut agent, &mut pending).await;
            let end = !matches!(got, Ok(Some(_)));
            seen.push(got.map_err(|e| match e {
                ReadError::Frame(e) => e.to_string(),
                ReadError::Io => "io".into(),
            }));
            if end {
                return seen;
            }
        }
    }

    #[tokio::test]
    async fn frames_that_come_in_one_read_are_taken_one_by_one_and_a_cut_one_is_an_error() {
        let hello = frame::encode(&Request::Hello { version: PROTOCOL_VERSION }).unwrap();
        let list = frame::encode(&Request::List { target: Target::All }).unwrap();
        let big = frame::encode(&Request::Send(procctl_proto::SendRequest {
            target: Target::All,
            messages: vec!["x".repeat(100_000)],
            any: false,
            reply: false,
            timeout_ms: 0,
        }))
        .unwrap();
        let both = [hello.clone(), list.clone()].concat();
        let cases: Vec<(&str, Vec<u8>, Vec<Read>)> = vec![
            ("nothing", vec![], vec![Ok(None)]),
            (
                "hello and list in one write",
                both.clone(),
                vec![
                    Ok(Some(Request::Hello { version: PROTOCOL_VERSION })),
                    Ok(Some(Request::List { target: Target::All })),
                    Ok(None),
                ],
            ),
            ("part of a header", vec![0, 0], vec![Ok(None)]),
            ("a header and part of its body", list[..list.len() - 1].to_vec(), vec![Err("io".into())]),
            (
                "a frame larger than any room kept",
                [big.clone(), list.clone()].concat(),
                vec![
                    Ok(Some(procctl_proto::frame::decode_body(&big[frame::HEADER_LEN..]).unwrap())),
                    Ok(Some(Request::List { target: Target::All })),
                    Ok(None),
                ],
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(requests_from(bytes).await, want, "{what}");
        }
        let oversized = requests_from(u32::MAX.to_be_bytes().to_vec()).await;
        assert!(matches!(&oversized[..], [Err(e)] if e.contains("over the")), "{oversized:?}");
    }
}
