//! Raw access to the agent's socket, for tests that speak the protocol themselves.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use procctl_proto::{PROTOCOL_VERSION, Request, Response, frame};

/// A connection to `socket` whose reads give up after 30 s.
pub fn connect(socket: &std::path::Path) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
}

/// Says hello and checks the agent answers in kind.
pub fn hello(stream: &mut UnixStream) {
    stream.write_all(&frame::encode(&Request::Hello { version: PROTOCOL_VERSION }).unwrap()).unwrap();
    assert!(matches!(read_response(stream), Some(Response::Hello { .. })));
}

/// Reads one response frame, or `None` once the agent has closed the connection.
pub fn read_response(stream: &mut UnixStream) -> Option<Response> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut body = vec![0u8; frame::body_len(header).ok()?];
    stream.read_exact(&mut body).ok()?;
    frame::decode_body(&body).ok()
}

/// Whether the agent closes `stream` within 15 s: end of stream, after whatever it still
/// sends, as opposed to a read that merely times out.
pub fn closed_by_agent(stream: &mut UnixStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}
