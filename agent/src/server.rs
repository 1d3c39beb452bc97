//! The socket: a safe bind (a trusted 0700 directory, 0600 socket, stale file replaced, live
//! agent refused), then a task per connection: peer check, hello, and request after request.
//! interprocess is the local-socket layer: its listener accepts, its peer credentials
//! decide who is served.

use std::fs::{self, Permissions};
use std::io::ErrorKind as IoErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use interprocess::local_socket::traits::StreamCommon;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use interprocess::os::unix::uds_local_socket as uds;
use procctl_proto::frame::{self, FrameError, HEADER_LEN};
use procctl_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, watch};

use crate::audit;
use crate::handlers::{Context, Reply};
use crate::trust::{self, TrustError};

/// Connections served at once unless `--max-connections` says otherwise; past it a client
/// is told so and closed.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may sit idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the rest of a frame may take once its header has come.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may leave a reply unread before it is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another procagent is already running on {0}")]
    Live(String),
    #[error("{0} exists and is not a socket; remove it or choose another --socket")]
    NotASocket(String),
    #[error("{0} belongs to {1} (uid {2}), not to this agent's user; remove it or choose another --socket")]
    Foreign(String, String, u32),
    #[error("the socket directory: {0}")]
    Dir(#[from] TrustError),
    #[error("cannot bind {0}: {1}")]
    Bind(String, std::io::Error),
}

/// Binds the socket as SPEC.md says: in a directory of the agent's own that nobody else can
/// write (see `trust`), created 0600 from the start, a dead agent's socket replaced, a live
/// one refused. Call before the runtime starts; `serve` takes the descriptor.
pub fn bind(path: &Path) -> Result<OwnedFd, BindError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        trust::trusted_dir(dir, trust::Use::Socket)?;
    }
    let own = nix::unistd::geteuid().as_raw();
    match fs::symlink_metadata(path) {
        // In a shared directory, someone else's socket is not ours to replace or trust.
        Ok(meta) if meta.uid() != own => {
            let owner = trust::user_name(meta.uid()).unwrap_or_else(|| "another user".into());
            return Err(BindError::Foreign(shown, owner, meta.uid()));
        }
        Ok(meta) if meta.file_type().is_socket() => match StdStream::connect(path) {
            Ok(stream) if answers_hello(&stream) => return Err(BindError::Live(shown)),
            // Nobody answers: a dead agent's socket (the descriptor may live on for a moment
            // in a child of it that has not exec'd yet, which accepts nothing).
            _ => fs::remove_file(path).map_err(|e| BindError::Bind(shown.clone(), e))?,
        },
        Ok(_) => return Err(BindError::NotASocket(shown)),
        Err(e) if e.kind() == IoErrorKind::NotFound => {}
        Err(e) => return Err(BindError::Bind(shown, e)),
    }
    let name = path.to_fs_name::<GenericFilePath>().map_err(|e| BindError::Bind(shown.clone(), e))?;
    // The mode is set on the socket before bind, so the file is 0600 from its first moment.
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .reclaim_name(false)
        .create_sync_as::<uds::Listener>()
        .map_err(|e| BindError::Bind(shown.clone(), e))?;
    fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(|e| BindError::Bind(shown, e))?;
    Ok(OwnedFd::from(listener))
}

/// How long an agent already on the socket has to answer a hello (it takes microseconds).
const HELLO_PROBE: Duration = Duration::from_secs(2);

/// Whether an agent answers a hello on `stream` within `HELLO_PROBE`.
fn answers_hello(stream: &StdStream) -> bool {
    use std::io::{Read, Write};
    let Ok(hello) = frame::encode(&Request::Hello { version: PROTOCOL_VERSION }) else {
        return true;
    };
    let _ = stream.set_read_timeout(Some(HELLO_PROBE));
    let _ = stream.set_write_timeout(Some(HELLO_PROBE));
    let mut header = [0u8; HEADER_LEN];
    let mut stream = stream;
    stream.write_all(&hello).is_ok() && stream.read_exact(&mut header).is_ok()
}

/// Accepts connections until dropped. Each connection task holds a clone of `alive`, so
/// the caller can wait for in-flight replies before exiting. Once the supervisor is gone
/// (the agent is exiting), `alive` is let go, followers are ended, and whoever still
/// connects is told the agent is shutting down.
pub async fn serve(listener: OwnedFd, context: Context, alive: mpsc::Sender<()>, max_connections: usize) {
    let listener = match uds::tokio::Listener::try_from(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log!("cannot serve the socket: {e}");
            return;
        }
    };
    let own_uid = nix::unistd::geteuid().as_raw();
    let open = context.tally.connections.clone();
    let mut alive = Some(alive);
    let mut changes = context.changes.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = exiting(&mut changes), if alive.is_some() => {
                alive = None;
                continue;
            }
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                log!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let context = context.clone();
        let alive = alive.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let count = open.fetch_add(1, Ordering::Relaxed) + 1;
            connection(stream, context, own_uid, count, max_connections).await;
            open.fetch_sub(1, Ordering::Relaxed);
            drop(alive);
        });
    }
}

async fn connection(stream: uds::tokio::Stream, context: Context, own_uid: u32, open: usize, max_connections: usize) {
    let peer_uid = peer_uid(&stream);
    let client = audit::Client { uid: peer_uid, pid: peer_pid(&stream) };
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
    match tokio::time::timeout(HELLO_TIMEOUT, read(&mut stream)).await {
        Ok(Ok(Some(Request::Hello { .. }))) if context.changes.has_changed().is_err() => {
            let _ = write(&mut stream, &Response::Error(shutting_down())).await;
            return;
        }
        Ok(Ok(Some(Request::Hello { version }))) if version == PROTOCOL_VERSION => {
            let hello = Response::Hello { version: PROTOCOL_VERSION, agent_version: env!("CARGO_PKG_VERSION").into() };
            if write(&mut stream, &hello).await.is_err() {
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
        let request = match tokio::time::timeout(IDLE_TIMEOUT, read(&mut stream)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Err(error)) => return refuse_frame(&mut stream, error).await,
            Ok(Ok(None)) | Err(_) => return,
        };
        // Its own task: an accepted operation runs to the end even if this client goes away.
        let only_waits = only_waits(&request);
        let mut handler = tokio::spawn(audit::handle(request, context.clone(), client));
        let reply = tokio::select! {
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
        };
        match reply {
            Reply::One(response) => {
                if write(&mut stream, &response).await.is_err() {
                    return;
                }
            }
            Reply::Steps(mut steps) => {
                while let Some(response) = steps.recv().await {
                    if write(&mut stream, &response).await.is_err() {
                        return;
                    }
                }
            }
            Reply::Many(responses) => {
                for response in responses {
                    if write(&mut stream, &response).await.is_err() {
                        return;
                    }
                }
            }
            Reply::Events(events) => {
                let changes = context.changes.clone();
                return forward(&mut stream, events, changes, |event| Some(Response::Event(event))).await;
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
                return forward(&mut stream, lines, context.changes.clone(), keep).await;
            }
        }
    }
}

/// Writes each item the mapping keeps until the client goes away. A client that reads
/// slowly falls behind the channel and is told how many items it missed. When the agent
/// exits, the stream ends with a message saying so.
async fn forward<T: Clone>(
    stream: &mut UnixStream,
    mut items: broadcast::Receiver<T>,
    mut changes: watch::Receiver<u64>,
    mut keep: impl FnMut(T) -> Option<Response>,
) {
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

fn shutting_down() -> WireError {
    WireError::new(ErrorKind::ShuttingDown, "the agent is shutting down")
}

/// Resolves once the supervisor is gone: its end of the change counter is dropped only when
/// the agent is exiting.
async fn exiting(changes: &mut watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {}
}

/// The uid of the process on the other end: interprocess's peer credentials, else the
/// kernel's SO_PEERCRED read directly (interprocess takes a peer in another PID namespace,
/// which the kernel shows with pid 0, for a reset connection; its uid is still good).
fn peer_uid(stream: &uds::tokio::Stream) -> Option<u32> {
    stream.peer_creds().ok().and_then(|creds| creds.euid()).or_else(|| {
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).ok().map(|creds| creds.uid())
    })
}

/// The pid of the process on the other end, from SO_PEERCRED (0 from another PID namespace).
fn peer_pid(stream: &uds::tokio::Stream) -> Option<i32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|creds| creds.pid())
        .filter(|&pid| pid > 0)
}

/// A request that changes nothing, so nothing is lost when it is dropped with its client:
/// a query, a stream, or the wait for a reply (the message itself is already on its way).
fn only_waits(request: &Request) -> bool {
    match request {
        Request::List { .. }
        | Request::Pid { .. }
        | Request::Logs { .. }
        | Request::Events
        | Request::Wait { .. }
        | Request::Metrics => true,
        Request::Send(send) => send.reply,
        _ => false,
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

/// The next request, or `None` at a clean end of stream.
async fn read(stream: &mut UnixStream) -> Result<Option<Request>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == IoErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Err(ReadError::Io),
    }
    let len = frame::body_len(header).map_err(ReadError::Frame)?;
    // Grown as bytes arrive, so a client announcing a large frame and sending nothing costs nothing.
    let mut body = Vec::new();
    let mut limited = (&mut *stream).take(len as u64);
    match tokio::time::timeout(FRAME_TIMEOUT, limited.read_to_end(&mut body)).await {
        Ok(Ok(n)) if n == len => {}
        _ => return Err(ReadError::Io),
    }
    frame::decode_body(&body).map(Some).map_err(ReadError::Frame)
}

async fn write(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let bytes = frame::encode(response).map_err(std::io::Error::other)?;
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn bind_sets_modes_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        let first = std::os::unix::net::UnixListener::from(bind(&path).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
        // A listener that accepts but never answers is not an agent: its socket is stale.
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let silent = std::thread::spawn(move || {
            let conn = first.accept();
            let _ = wait.recv();
            drop(conn);
        });
        bind(&path).expect("a socket nobody answers on is replaced");
        done.send(()).unwrap();
        silent.join().unwrap();
        // One that answers the hello is a live agent.
        let first = std::os::unix::net::UnixListener::from(bind(&path).unwrap());
        let live = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = first.accept().unwrap();
            let mut header = [0u8; HEADER_LEN];
            conn.read_exact(&mut header).unwrap();
            let mut body = vec![0u8; frame::body_len(header).unwrap()];
            conn.read_exact(&mut body).unwrap();
            let hello = Response::Hello { version: PROTOCOL_VERSION, agent_version: "test".into() };
            conn.write_all(&frame::encode(&hello).unwrap()).unwrap();
            first
        });
        assert!(matches!(bind(&path), Err(BindError::Live(_))));
        drop(live.join().unwrap()); // the file stays behind, as after a crash
        assert!(path.exists());
        bind(&path).expect("a stale socket is replaced");
    }

    #[test]
    fn bind_refuses_a_file_that_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        fs::write(&path, "x").unwrap();
        assert!(matches!(bind(&path), Err(BindError::NotASocket(_))));
    }
}
