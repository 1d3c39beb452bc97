use std::io::Write;

use procctl_proto::frame;
use procctl_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response};

use crate::support::{Agent, closed_by_agent, connect, read_response, sleepers};

#[test]
fn a_version_mismatch_names_both_versions_and_closes() {
    let agent = Agent::start(&sleepers(1));
    let mut stream = connect(&agent.socket);
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
        let mut stream = connect(&agent.socket);
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
    let mut stream = connect(&agent.socket);
    stream.write_all(&frame::encode(&Request::Shutdown).unwrap()).unwrap();
    match read_response(&mut stream) {
        Some(Response::Error(error)) => assert!(error.message.contains("hello"), "{error:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
    agent.ctl(&["list"]).ok();
}
