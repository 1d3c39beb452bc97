//! `procctl dial-stdio`: joins stdin and stdout to the local agent's socket, byte for byte,
//! until either side closes. `--host ssh://` runs it on the far side of an ssh connection.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::Status;
use crate::client::{CtlError, peer_uid, trusted_peer};

pub fn run(socket: &Path) -> Result<Status, CtlError> {
    let unreachable = |source| CtlError::Unreachable { path: socket.to_path_buf(), source };
    let stream = UnixStream::connect(socket).map_err(unreachable)?;
    // The same check as every local connection: our uid or root, before a byte goes through.
    trusted_peer(peer_uid(stream.as_fd()), socket)?;
    let mut to_agent = stream.try_clone().map_err(unreachable)?;
    // stdin to the agent on a thread of its own; at stdin's end the agent sees ours (a
    // half-close), and it answers what it has and closes in turn.
    std::thread::spawn(move || {
        let _ = copy(&mut std::io::stdin().lock(), &mut to_agent);
        let _ = to_agent.shutdown(Shutdown::Write);
    });
    let mut from_agent = stream;
    let copied = copy(&mut from_agent, &mut std::io::stdout().lock());
    copied.map(|_| Status::Success).map_err(|e| CtlError::Failed(format!("dial-stdio: {e}")))
}

/// Like `std::io::copy`, but flushes each chunk at once: the far side waits for it.
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&chunk[..n])?;
        to.flush()?;
        total += n as u64;
    }
}
