//! The notify socket: one datagram socket of the agent's, in the abstract namespace, that
//! every instance with `ready = "notify"` gets as `$NOTIFY_SOCKET`, speaking sd_notify
//! (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`). The kernel attaches each sender's
//! credentials (`SO_PASSCRED`), so the supervisor can tell whether a message comes from a
//! process of the instance it claims to be about. No file: users the instances run as
//! reach it whatever the modes of the agent's directories, and it never goes stale.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, sockopt};
use tokio::io::Interest;

/// Datagrams read per wakeup before yielding, so a flood cannot starve the agent.
const BATCH: usize = 64;
/// The longest message read; sd_notify messages are a few short lines.
const MAX_MESSAGE: usize = 4096;
/// A STATUS= text longer than this is cut.
pub const MAX_STATUS: usize = 1024;

/// What one datagram said, and who sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub pid: i32,
    pub uid: u32,
    pub ready: bool,
    pub watchdog: bool,
    pub stopping: bool,
    pub status: Option<String>,
}

/// Binds the socket; returns it and the value of `$NOTIFY_SOCKET` (`@name`).
pub fn bind(token: &str) -> std::io::Result<(OwnedFd, String)> {
    let name = format!("procctl/{token}/notify");
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::PassCred, &true)?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
    Ok((fd, format!("@{name}")))
}

/// Sends one datagram to `address` (a path, or `@name` for an abstract socket): how the
/// agent itself speaks to its service manager.
pub fn send(address: &str, text: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let to = match address.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
        None => std::os::unix::net::SocketAddr::from_pathname(address)?,
    };
    socket.send_to_addr(text.as_bytes(), &to).map(drop)
}

/// Reads datagrams until the agent exits; `report` gets each one that carries credentials.
pub async fn run(fd: OwnedFd, report: impl Fn(Message)) {
    let socket = match tokio::net::UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd)) {
        Ok(socket) => socket,
        Err(e) => {
            log!("cannot watch the notify socket: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        for _ in 0..BATCH {
            let fd = socket.as_raw_fd();
            match socket.try_io(Interest::READABLE, || receive(fd, &mut buf).map_err(std::io::Error::from)) {
                Ok(Some(message)) => report(message),
                Ok(None) => {}
                Err(_) => break, // WouldBlock clears the readiness
            }
        }
        tokio::task::yield_now().await;
    }
}

fn receive(fd: std::os::fd::RawFd, buf: &mut [u8]) -> nix::Result<Option<Message>> {
    let mut space = nix::cmsg_space!(socket::UnixCredentials);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT)?;
    let creds = msg.cmsgs()?.find_map(|cmsg| match cmsg {
        ControlMessageOwned::ScmCredentials(creds) => Some(creds),
        _ => None,
    });
    let len = msg.bytes;
    let Some(creds) = creds else {
        return Ok(None);
    };
    Ok(Some(parse(&buf[..len.min(buf.len())], creds.pid(), creds.uid())))
}

/// The assignments of one sd_notify datagram: newline-separated `KEY=VALUE`; unknown keys
/// are ignored, as systemd does.
pub fn parse(bytes: &[u8], pid: i32, uid: u32) -> Message {
    let text = String::from_utf8_lossy(bytes);
    let mut message = Message { pid, uid, ..Message::default() };
    for line in text.split('\n') {
        match line.split_once('=') {
            Some(("READY", "1")) => message.ready = true,
            Some(("WATCHDOG", "1")) => message.watchdog = true,
            Some(("STOPPING", "1")) => message.stopping = true,
            Some(("STATUS", status)) => {
                let mut status = status.to_string();
                if status.len() > MAX_STATUS {
                    let mut end = MAX_STATUS;
                    while !status.is_char_boundary(end) {
                        end -= 1;
                    }
                    status.truncate(end);
                }
                message.status = Some(status);
            }
            _ => {}
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_sd_notify_senders_send() {
        // (datagram, ready, watchdog, stopping, status)
        let cases: &[(&str, bool, bool, bool, Option<&str>)] = &[
            ("READY=1", true, false, false, None),
            (
                "READY=1\nSTATUS=Ready to accept connections tcp",
                true,
                false,
                false,
                Some("Ready to accept connections tcp"),
            ),
            ("STATUS=loading 40%\n", false, false, false, Some("loading 40%")),
            ("WATCHDOG=1", false, true, false, None),
            ("STOPPING=1\nSTATUS=bye", false, false, true, Some("bye")),
            ("READY=0\nMAINPID=7\nX_CUSTOM=1", false, false, false, None),
            ("", false, false, false, None),
        ];
        for &(text, ready, watchdog, stopping, status) in cases {
            let m = parse(text.as_bytes(), 7, 0);
            assert_eq!(
                (m.ready, m.watchdog, m.stopping, m.status.as_deref()),
                (ready, watchdog, stopping, status),
                "{text:?}"
            );
        }
        let long = parse(format!("STATUS={}", "é".repeat(2000)).as_bytes(), 7, 0);
        assert!(long.status.unwrap().len() <= MAX_STATUS);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_datagram_arrives_with_the_senders_credentials() {
        let (fd, name) = bind(&format!("test-{}", std::process::id())).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run(fd, move |m| {
            let _ = tx.send(m);
        }));
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.strip_prefix('@').unwrap(),
        )
        .unwrap();
        sender.send_to_addr(b"READY=1\nSTATUS=up", &addr).unwrap();
        let message = rx.recv().await.unwrap();
        assert_eq!(message.pid, std::process::id() as i32);
        assert!(message.ready);
        assert_eq!(message.status.as_deref(), Some("up"));
    }
}
