//! Descriptors passed from the spawner's descriptor table to the agent's.
//!
//! The spawner thread has a descriptor table of its own (see `spawn::start`), so that each
//! clone copies the few descriptors a child needs rather than every one the agent holds
//! (with 1,000 instances, 2,000 of them: copied at clone and closed again at exec, for every
//! start). The agent's ends of a new child's pipes are made there and come over to the
//! agent's table through a socket pair, as SCM_RIGHTS, each message tagged with its spawn.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType};

/// What one message carries: the spawn's number and up to this many descriptors.
pub const SLOTS: usize = 2;

/// A connected pair (sequenced packets: one message per spawn, kept apart), both ends
/// close-on-exec.
pub fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(socket::AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?)
}

/// Sends the descriptors in `fds` (slot order kept; a `None` slot sends nothing) for spawn
/// `seq`. Blocks while the receiving end is full.
pub fn send(socket: &OwnedFd, seq: u64, fds: [Option<RawFd>; SLOTS]) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8] = fds.iter().enumerate().filter(|(_, fd)| fd.is_some()).fold(0u8, |mask, (i, _)| mask | 1 << i);
    let raw: Vec<RawFd> = fds.iter().flatten().copied().collect();
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &[ControlMessage::ScmRights(&raw)] };
    loop {
        match socket::sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(&head)], cmsgs, MsgFlags::empty(), None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes the next message, which must be there already; the descriptors arrive
/// close-on-exec in the caller's table.
pub fn receive(socket: &OwnedFd) -> std::io::Result<(u64, [Option<OwnedFd>; SLOTS])> {
    let mut head = [0u8; 9];
    let mut space = nix::cmsg_space!([RawFd; SLOTS]);
    let mut iov = [IoSliceMut::new(&mut head)];
    let msg = socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let bytes = msg.bytes;
    let mut received = vec![];
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel installed these descriptors for us; nothing else owns them.
            received.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if bytes != head.len() {
        return Err(std::io::Error::other(format!("a message of {bytes} bytes, not {}", head.len())));
    }
    let seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let mask = head[8];
    let mut received = received.into_iter();
    let mut slots: [Option<OwnedFd>; SLOTS] = Default::default();
    for (i, slot) in slots.iter_mut().enumerate() {
        if mask & 1 << i != 0 {
            *slot = Some(received.next().ok_or_else(|| std::io::Error::other("fewer descriptors than announced"))?);
        }
    }
    Ok((seq, slots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn descriptors_arrive_in_their_slots_with_their_spawn() {
        let (tx, rx) = pair().unwrap();
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        send(&tx, 7, [None, Some(b.as_raw_fd())]).unwrap();
        send(&tx, 8, [None, None]).unwrap();
        drop(b);
        let (seq, [first, second]) = receive(&rx).unwrap();
        assert_eq!(seq, 7);
        assert!(first.is_none());
        let mut b = std::os::unix::net::UnixStream::from(second.expect("slot 1 filled"));
        a.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        let flags = nix::fcntl::fcntl(&b, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received descriptors are close-on-exec");
        let (seq, slots) = receive(&rx).unwrap();
        assert_eq!(seq, 8);
        assert!(slots.iter().all(Option::is_none));
        assert!(receive(&rx).is_err(), "nothing more is there, and receive does not wait");
    }
}
