//! A blocking connection to the agent: connect, check who answers, hello, then one request
//! and its response. interprocess is the local-socket layer, its peer credentials the check.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use interprocess::local_socket::traits::{Stream as _, StreamCommon};
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName};

use procctl_proto::frame::{self, HEADER_LEN};
use procctl_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response, WireError};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach procagent at {}: {source}; start it with `procagent --config procctl.toml`", path.display())]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error(
        "refusing to talk to {}: it is served by {owner} (uid {uid}), not by you (uid {own}) or root; \
         someone else's process holds that socket", path.display()
    )]
    Impostor { path: PathBuf, uid: u32, owner: String, own: u32 },
    #[error("{0}")]
    Agent(WireError),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Usage(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Unreachable { .. } | CtlError::Impostor { .. } => 3,
            // Going away: as unreachable as an agent that is not there.
            CtlError::Agent(error) if error.kind == ErrorKind::ShuttingDown => 3,
            CtlError::Usage(_) => 2,
            CtlError::Agent(_) | CtlError::Protocol(_) | CtlError::Failed(_) => 1,
        }
    }
}

pub struct Client {
    stream: Stream,
}

impl Client {
    /// Connects, checks that the agent on the other end runs as this user or root (before a
    /// byte is sent: a socket someone else bound must not see our requests), and says hello;
    /// a version mismatch comes back as the agent's error.
    pub fn connect(path: &Path) -> Result<Client, CtlError> {
        let unreachable = |source| CtlError::Unreachable { path: path.to_path_buf(), source };
        let stream =
            Stream::connect(path.to_fs_name::<GenericFilePath>().map_err(unreachable)?).map_err(unreachable)?;
        check_peer(&stream, path)?;
        let mut client = Client { stream };
        match client.call(&Request::Hello { version: PROTOCOL_VERSION })? {
            Response::Hello { version, .. } if version == PROTOCOL_VERSION => Ok(client),
            Response::Hello { version, .. } => Err(CtlError::Protocol(format!(
                "protocol version mismatch: procctl speaks version {PROTOCOL_VERSION}, procagent speaks version {version}"
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request and reads its response; an error response becomes `CtlError::Agent`.
    pub fn call(&mut self, request: &Request) -> Result<Response, CtlError> {
        let bytes = frame::encode(request).map_err(|e| CtlError::Failed(format!("cannot send: {e}")))?;
        // A write can fail because the agent already answered and closed: read that answer.
        let written = self.stream.write_all(&bytes);
        match self.read() {
            Ok(Response::Error(error)) => Err(CtlError::Agent(error)),
            Ok(response) => Ok(response),
            Err(e) => Err(written.err().map_or(e, |w| CtlError::Protocol(format!("lost the agent: {w}")))),
        }
    }

    /// Sends a request without waiting, for a stream of responses read with `next`.
    pub fn start(&mut self, request: &Request) -> Result<(), CtlError> {
        let bytes = frame::encode(request).map_err(|e| CtlError::Failed(format!("cannot send: {e}")))?;
        self.stream.write_all(&bytes).map_err(|e| CtlError::Protocol(format!("lost the agent: {e}")))
    }

    /// The next response of a stream; an error response becomes `CtlError::Agent`.
    pub fn next(&mut self) -> Result<Response, CtlError> {
        match self.read()? {
            Response::Error(error) => Err(CtlError::Agent(error)),
            response => Ok(response),
        }
    }

    fn read(&mut self) -> Result<Response, CtlError> {
        let lost = |e: std::io::Error| {
            CtlError::Protocol(match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "the agent closed the connection (it shut down or died)".into(),
                _ => format!("lost the agent: {e}"),
            })
        };
        let mut header = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut header).map_err(lost)?;
        let len = frame::body_len(header).map_err(|e| CtlError::Protocol(e.to_string()))?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).map_err(lost)?;
        frame::decode_body(&body).map_err(|e| CtlError::Protocol(e.to_string()))
    }
}

fn check_peer(stream: &Stream, path: &Path) -> Result<(), CtlError> {
    let own = nix::unistd::geteuid().as_raw();
    // interprocess takes a peer in another PID namespace (pid 0) for a reset connection:
    // then SO_PEERCRED, read directly, still gives its uid.
    let uid = stream.peer_creds().ok().and_then(|creds| creds.euid()).or_else(|| {
        let Stream::UdSocket(socket) = stream;
        nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerCredentials).ok().map(|creds| creds.uid())
    });
    match uid {
        Some(uid) if uid == own || uid == 0 => Ok(()),
        _ => {
            let uid = uid.unwrap_or(u32::MAX);
            let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(|| "an unknown user".to_string(), |user| user.name);
            Err(CtlError::Impostor { path: path.to_path_buf(), uid, owner, own })
        }
    }
}

pub fn unexpected(response: &Response) -> CtlError {
    CtlError::Protocol(format!("unexpected answer from the agent: {response:?}"))
}
