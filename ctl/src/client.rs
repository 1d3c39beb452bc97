//! A blocking connection to the agent: connect, check who answers, then requests and
//! their responses; the hello's answer is read with the first request's (through ssh, before
//! it, so that an ssh failure shows as one). The protocol is spoken over any byte stream: the local socket
//! (interprocess is the local-socket layer, its peer credentials the check) or the pipes of
//! an `ssh` child running `procctl dial-stdio` on the far side.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use interprocess::local_socket::traits::{Stream as _, StreamCommon};
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName};

use procctl_proto::frame;
use procctl_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response, WireError};

use crate::host::{Endpoint, SSH_ENV, SshHost};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach procagent at {}: {source}; start it with `procagent --config procctl.toml`", path.display())]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error(
        "refusing to talk to {}: it is served by {owner} (uid {uid}), not by you (uid {own}) or root; \
         someone else's process holds that socket", path.display()
    )]
    Impostor { path: PathBuf, uid: u32, owner: String, own: u32 },
    #[error("cannot reach the agent on {host} through ssh: {message}")]
    Ssh { host: String, message: String },
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
            CtlError::Unreachable { .. } | CtlError::Impostor { .. } | CtlError::Ssh { .. } => 3,
            // Going away: as unreachable as an agent that is not there.
            CtlError::Agent(error) if error.kind == ErrorKind::ShuttingDown => 3,
            CtlError::Usage(_) => 2,
            CtlError::Agent(_) | CtlError::Protocol(_) | CtlError::Failed(_) => 1,
        }
    }
}

/// A byte stream the protocol runs over.
trait Transport: Read + Write + Send {
    /// No request follows: the agent is told by the end of the stream right behind the
    /// last one, so it closes its side in the same wake-up that answers (the local socket's
    /// writing half is shut down; ssh's pipe stays open, as `dial-stdio` ends with it).
    fn finish_writing(&mut self) {}
}

impl Transport for Stream {
    fn finish_writing(&mut self) {
        let Stream::UdSocket(socket) = self;
        let _ = nix::sys::socket::shutdown(socket.as_fd().as_raw_fd(), nix::sys::socket::Shutdown::Write);
    }
}

impl Transport for SshPipes {}

pub struct Client {
    stream: Box<dyn Transport>,
    /// The hello of a local connection is sent at connect, and its answer read only before
    /// the first request's: the request does not wait for it, so a command costs one round
    /// trip, not two (and the agent has the hello at once, as its hello timeout wants).
    hello_answered: bool,
    /// What was read and not yet taken: the hello's answer and the reply behind it mostly
    /// come in one read.
    inbuf: Vec<u8>,
    /// A hello not written yet (`open_to_ask`): it goes out with the first request.
    unsent: Vec<u8>,
}

impl Client {
    /// Connects to the agent `endpoint` names and says hello.
    pub fn open(endpoint: &Endpoint) -> Result<Client, CtlError> {
        match endpoint {
            Endpoint::Local(path) => Client::connect(path),
            Endpoint::Ssh(host) => Client::ssh(host),
        }
    }

    /// A client over `stream`, nothing read yet.
    fn over(stream: Box<dyn Transport>, hello_answered: bool, unsent: Vec<u8>) -> Client {
        Client { stream, hello_answered, inbuf: Vec::new(), unsent }
    }

    /// As `open`, for a caller that sends its request at once: a local connection's hello
    /// goes out in one write with that request (the agent then has both when it wakes).
    /// Not for one that may wait before its first request: the agent gives a hello only so
    /// long to come.
    pub fn open_to_ask(endpoint: &Endpoint) -> Result<Client, CtlError> {
        match endpoint {
            Endpoint::Local(path) => Client::connect_holding(path, true),
            Endpoint::Ssh(host) => Client::ssh(host),
        }
    }

    /// Connects, checks that the agent on the other end runs as this user or root (before a
    /// byte is sent: a socket someone else bound must not see our requests), and says hello;
    /// a version mismatch comes back as the agent's error, with the first request's answer.
    fn connect(path: &Path) -> Result<Client, CtlError> {
        Client::connect_holding(path, false)
    }

    /// `connect`, the hello written now or (`hold`) with the first request.
    fn connect_holding(path: &Path, hold: bool) -> Result<Client, CtlError> {
        let unreachable = |source| CtlError::Unreachable { path: path.to_path_buf(), source };
        let stream =
            Stream::connect(path.to_fs_name::<GenericFilePath>().map_err(unreachable)?).map_err(unreachable)?;
        check_peer(&stream, path)?;
        let mut stream = stream;
        let hello = frame::encode(&Request::Hello { version: PROTOCOL_VERSION })
            .map_err(|e| CtlError::Failed(format!("cannot send: {e}")))?;
        if hold {
            return Ok(Client::over(Box::new(stream), false, hello));
        }
        if stream.write_all(&hello).is_err() {
            // The agent may have answered (a refusal) and closed: a whole hello says why.
            hello_now(&mut stream)?;
            return Ok(Client::over(Box::new(stream), true, vec![]));
        }
        Ok(Client::over(Box::new(stream), false, vec![]))
    }

    /// Starts ssh with `procctl dial-stdio` on the far side and says hello through it. When
    /// nothing answers, ssh's own message (or the far procctl's) is the error.
    fn ssh(host: &SshHost) -> Result<Client, CtlError> {
        let failed = |message: String| CtlError::Ssh { host: host.label.clone(), message };
        let mut command = ssh_command(host, std::env::var(SSH_ENV).ok().as_deref()).map_err(failed)?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", command.get_program().to_string_lossy())))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let said = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().map(|mut stderr| {
            let said = Arc::clone(&said);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                    said.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]);
                }
            })
        });
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else { unreachable!("both pipes were asked for") };
        let mut pipes = SshPipes { child, stdin: Some(stdin), stdout, stderr, said };
        match hello_now(&mut pipes) {
            Ok(()) => Ok(Client::over(Box::new(pipes), true, vec![])),
            Err(CtlError::Protocol(lost)) => {
                let said = pipes.finish();
                Err(failed(if said.is_empty() { lost } else { said }))
            }
            Err(error) => Err(error),
        }
    }

    /// Sends one request and reads its response; an error response becomes `CtlError::Agent`.
    pub fn call(&mut self, request: &Request) -> Result<Response, CtlError> {
        self.ask(request, false)
    }

    /// `call`, saying whether this is the last request on this connection.
    pub fn ask(&mut self, request: &Request, last: bool) -> Result<Response, CtlError> {
        // A write can fail because the agent already answered and closed: read that answer.
        let written = self.send(request)?;
        if last {
            self.stream.finish_writing();
        }
        match self.next() {
            Ok(response) => Ok(response),
            Err(CtlError::Protocol(lost)) => Err(written.err().map_or(CtlError::Protocol(lost), lost_agent)),
            Err(error) => Err(error),
        }
    }

    /// Sends a request without waiting, for a stream of responses read with `next`.
    pub fn start(&mut self, request: &Request) -> Result<(), CtlError> {
        self.send(request)?.map_err(lost_agent)
    }

    /// The next response of a stream; an error response becomes `CtlError::Agent`.
    pub fn next(&mut self) -> Result<Response, CtlError> {
        if !self.hello_answered {
            if !self.unsent.is_empty() {
                let hello = std::mem::take(&mut self.unsent);
                self.stream.write_all(&hello).map_err(lost_agent)?;
            }
            check_hello(read(&mut *self.stream, &mut self.inbuf)?)?;
            self.hello_answered = true;
        }
        match read(&mut *self.stream, &mut self.inbuf)? {
            Response::Error(error) => Err(CtlError::Agent(error)),
            response => Ok(response),
        }
    }

    /// Writes the request; the result of the write is the caller's to weigh.
    fn send(&mut self, request: &Request) -> Result<std::io::Result<()>, CtlError> {
        let bytes = frame::encode(request).map_err(|e| CtlError::Failed(format!("cannot send: {e}")))?;
        let bytes = if self.unsent.is_empty() { bytes } else { [std::mem::take(&mut self.unsent), bytes].concat() };
        Ok(self.stream.write_all(&bytes).and_then(|()| self.stream.flush()))
    }
}

fn lost_agent(error: std::io::Error) -> CtlError {
    CtlError::Protocol(format!("lost the agent: {error}"))
}

/// A hello and its answer, one after the other.
fn hello_now(stream: &mut dyn Transport) -> Result<(), CtlError> {
    check_hello(call(stream, &Request::Hello { version: PROTOCOL_VERSION })?)
}

/// The agent's answer to the hello: its version must be ours.
fn check_hello(response: Response) -> Result<(), CtlError> {
    match response {
        Response::Error(error) => Err(CtlError::Agent(error)),
        Response::Hello { version, .. } if version == PROTOCOL_VERSION => Ok(()),
        Response::Hello { version, .. } => Err(CtlError::Protocol(format!(
            "protocol version mismatch: procctl speaks version {PROTOCOL_VERSION}, procagent speaks version {version}"
        ))),
        other => Err(unexpected(&other)),
    }
}

fn call(stream: &mut dyn Transport, request: &Request) -> Result<Response, CtlError> {
    let bytes = frame::encode(request).map_err(|e| CtlError::Failed(format!("cannot send: {e}")))?;
    // A write can fail because the agent already answered and closed: read that answer.
    let written = stream.write_all(&bytes).and_then(|()| stream.flush());
    // Nothing but this answer is on its way, so nothing read past it is lost with the buffer.
    match read(stream, &mut Vec::new()) {
        Ok(Response::Error(error)) => Err(CtlError::Agent(error)),
        Ok(response) => Ok(response),
        Err(e) => Err(written.err().map_or(e, lost_agent)),
    }
}

/// The next response: taken from `inbuf` when it holds a whole frame, else read into it,
/// as much as has arrived at once.
fn read(stream: &mut dyn Transport, inbuf: &mut Vec<u8>) -> Result<Response, CtlError> {
    let protocol = |e: frame::FrameError| CtlError::Protocol(e.to_string());
    loop {
        if let Some((response, used)) = frame::decode(inbuf).map_err(protocol)? {
            inbuf.drain(..used);
            return Ok(response);
        }
        let wanted = frame::missing(inbuf).map_err(protocol)?.unwrap_or(FIRST_READ);
        let start = inbuf.len();
        inbuf.resize(start + wanted.max(FIRST_READ), 0);
        let read = stream.read(&mut inbuf[start..]);
        inbuf.truncate(start + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Err(CtlError::Protocol("the agent closed the connection (it shut down or died)".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CtlError::Protocol(format!("lost the agent: {e}"))),
        }
    }
}

/// Room for a read when no frame is under way: a hello's answer and a short reply.
const FIRST_READ: usize = 4096;

/// The ssh child's pipes as one byte stream; dropping it closes the far side's stdin, so
/// `dial-stdio` there ends, and waits for ssh.
struct SshPipes {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<()>>,
    said: Arc<Mutex<Vec<u8>>>,
}

impl SshPipes {
    /// Closes our end, waits for ssh, and returns what it wrote on stderr (or how it ended).
    fn finish(&mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait();
        if let Some(reader) = self.stderr.take() {
            let _ = reader.join();
        }
        let said = String::from_utf8_lossy(&self.said.lock().unwrap_or_else(|e| e.into_inner())).trim().to_string();
        match status {
            Ok(status) if !status.success() && said.is_empty() => format!("ssh ended with {status}"),
            _ => said,
        }
    }
}

impl Read for SshPipes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Write for SshPipes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.stdin {
            Some(stdin) => stdin.write(buf),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for SshPipes {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.finish();
        }
    }
}

/// `PROCCTL_SSH` (default `ssh`, split as a shell would) with `-o BatchMode=yes`, the port
/// and user, the host, and `procctl dial-stdio [--socket SOCKET]` for the far side's shell.
fn ssh_command(host: &SshHost, ssh: Option<&str>) -> Result<Command, String> {
    let ssh = ssh.map(str::trim).filter(|ssh| !ssh.is_empty()).unwrap_or("ssh");
    let words = shlex::split(ssh)
        .filter(|words| !words.is_empty())
        .ok_or_else(|| format!("{SSH_ENV} cannot be split into words: {ssh}"))?;
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]).args(["-o", "BatchMode=yes"]);
    if let Some(port) = host.port {
        command.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &host.user {
        command.arg("-l").arg(user);
    }
    let mut remote = String::from("procctl dial-stdio");
    if let Some(socket) = &host.socket {
        let quoted =
            shlex::try_quote(socket).map_err(|_| format!("the socket path {socket:?} cannot be quoted for a shell"))?;
        remote.push_str(" --socket ");
        remote.push_str(&quoted);
    }
    command.arg("--").arg(&host.host).arg(remote);
    Ok(command)
}

fn check_peer(stream: &Stream, path: &Path) -> Result<(), CtlError> {
    // interprocess takes a peer in another PID namespace (pid 0) for a reset connection:
    // then SO_PEERCRED, read directly, still gives its uid.
    let uid = stream.peer_creds().ok().and_then(|creds| creds.euid()).or_else(|| {
        let Stream::UdSocket(socket) = stream;
        nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerCredentials).ok().map(|creds| creds.uid())
    });
    trusted_peer(uid, path)
}

/// Refuses a socket held by anyone but us or root (the same check for every connection,
/// `dial-stdio`'s included), naming the holder.
pub fn trusted_peer(uid: Option<u32>, path: &Path) -> Result<(), CtlError> {
    let own = nix::unistd::geteuid().as_raw();
    match uid {
        Some(uid) if uid == own || uid == 0 => Ok(()),
        _ => {
            let uid = uid.unwrap_or(u32::MAX);
            let owner = user_name(uid).unwrap_or_else(|| "an unknown user".to_string());
            Err(CtlError::Impostor { path: path.to_path_buf(), uid, owner, own })
        }
    }
}

/// The name of a user, from the passwd file. procctl is linked statically, where the C
/// library's user look-up would load the system's NSS modules at run time: the file is
/// read instead (a user only a directory service knows is named by uid).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd_name(&passwd, uid).map(str::to_string)
}

fn passwd_name(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then_some(name)
    })
}

/// The uid at the other end of a connected Unix socket, when the kernel says.
pub fn peer_uid(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials).ok().map(|creds| creds.uid())
}

pub fn unexpected(response: &Response) -> CtlError {
    CtlError::Protocol(format!("unexpected answer from the agent: {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::parse;

    fn words(command: &Command) -> Vec<String> {
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|w| w.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_user_is_named_by_the_passwd_line_of_its_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# a comment\nbroken\nops:x:1000:1000::/home/ops:/bin/sh\n";
        let cases = [(0, Some("root")), (1000, Some("ops")), (1001, None), (u32::MAX, None)];
        for (uid, name) in cases {
            assert_eq!(passwd_name(passwd, uid), name, "uid {uid}");
        }
    }

    #[test]
    fn ssh_runs_dial_stdio_in_batch_mode_with_the_port_user_and_socket() {
        let cases = [
            ("ssh://box", None, vec!["ssh", "-o", "BatchMode=yes", "--", "box", "procctl dial-stdio"]),
            (
                "ssh://ops@box:2222/run/my agent.sock",
                Some("ssh -F '/tmp/my config'"),
                vec![
                    "ssh",
                    "-F",
                    "/tmp/my config",
                    "-o",
                    "BatchMode=yes",
                    "-p",
                    "2222",
                    "-l",
                    "ops",
                    "--",
                    "box",
                    "procctl dial-stdio --socket '/run/my agent.sock'",
                ],
            ),
        ];
        for (url, ssh, expected) in cases {
            assert_eq!(words(&ssh_command(&parse(url).unwrap(), ssh).unwrap()), expected, "{url}");
        }
        assert!(ssh_command(&parse("ssh://box").unwrap(), Some("ssh 'unclosed")).is_err());
    }
}
