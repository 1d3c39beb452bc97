use std::io::Write;
use std::os::unix::net::UnixStream;

use procctl_proto::frame;
use procctl_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response};

use crate::support::{Agent, closed_by_agent, read_response, sleepers};

fn connected(agent: &Agent) -> UnixStream {
    let stream = UnixStream::connect(&agent.socket).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream
}

#[test]
fn a_version_mismatch_names_both_versions_and_closes() {
    let agent = Agent::start(&sleepers(1));
    let mut stream = connected(&agent);
    stream.write_all(&frame::encode(&Request::Hello { version: 999 }).unwrap()).unwrap();
    match read_response(&mut stream) {
        Some(Response::Error(error)) => {
            assert_eq!(error.kind, ErrorKind::VersionMismatch);
            assert!(
                error.message.contains("999") && error.message.contains(&PROTOCOL_VERSION.to_string()),
                "{error:?}"
            );
        }
        other => panic!("expected a mismatch error, got {other:?}"),
    }
    assert!(closed_by_agent(&mut stream), "the connection is closed");
}

#[test]
fn an_oversized_or_garbage_frame_gets_an_error_and_the_agent_carries_on() {
    let mut agent = Agent::start(&sleepers(1));
    for bytes in [u32::MAX.to_be_bytes().to_vec(), vec![0, 0, 0, 3, 0xff, 0xff, 0xff]] {
        let mut stream = connected(&agent);
        stream.write_all(&bytes).unwrap();
        match read_response(&mut stream) {
            Some(Response::Error(error)) => assert_eq!(error.kind, ErrorKind::BadRequest, "{error:?}"),
            other => panic!("expected an error reply, got {other:?}"),
        }
        assert!(closed_by_agent(&mut stream), "the connection is closed");
    }
    agent.wait_running("worker", 1);
}

#[test]
fn a_request_before_hello_is_refused() {
    let agent = Agent::start(&sleepers(1));
    let mut stream = connected(&agent);
    stream.write_all(&frame::encode(&Request::Shutdown).unwrap()).unwrap();
    match read_response(&mut stream) {
        Some(Response::Error(error)) => assert!(error.message.contains("hello"), "{error:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
    agent.ctl(&["list"]).ok();
}
