//! The safe bind of the control socket: a trusted 0700 directory, a 0600 socket, a stale
//! file replaced, a live agent refused.

use std::fs::{self, Permissions};
use std::io::ErrorKind as IoErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use interprocess::os::unix::uds_local_socket as uds;
use procctl_proto::frame::{self, HEADER_LEN};
use procctl_proto::{PROTOCOL_VERSION, Request};

use crate::trust::{self, TrustError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::Response;
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
