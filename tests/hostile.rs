use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use procctl_proto::{PROTOCOL_VERSION, Request, Response, frame};

use crate::support::{
    Agent, WAIT, as_nobody, closed_by_agent, connect, hello, read_response, require_root, run, sleepers, status_kib,
    wait_until,
};

#[test]
#[ignore = "needs root"]
fn only_the_owner_and_root_get_in() {
    require_root();
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    // Open the modes, so that only the credential check stands between `nobody` and the agent.
    for dir in [agent.dir.path(), agent.socket.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut command = as_nobody(crate::support::bin("procctl"));
    command.arg("--socket").arg(&agent.socket).arg("list");
    let out = run(&mut command, None, WAIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("refused: this agent serves only uid 0 and root"), "{out:?}");
    wait_until(WAIT, "the refusal is logged", || agent.log().contains("refused a connection from uid 65534"));
    agent.ctl(&["list"]).ok();
}

#[test]
fn hostile_bytes_change_nothing_and_everyone_else_keeps_getting_answers() {
    let mut agent = Agent::start(&sleepers(2));
    let pids = agent.wait_running("worker", 2);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut hostile: Vec<Vec<u8>> = (0..50).map(|i| random(1 + i * 37)).collect();
    hostile.push(u32::MAX.to_be_bytes().to_vec()); // a 4 GiB length
    hostile.push(vec![0, 0, 0, 10, 1, 2]); // a truncated frame, then the client leaves
    hostile.push(vec![0, 0, 0, 3, 0xff, 0xfe, 0xfd]); // a garbage body
    hostile.push(vec![0, 0, 0, 1, 200]); // a request kind that does not exist
    let mut unknown_after_hello = frame::encode(&Request::Hello { version: PROTOCOL_VERSION }).unwrap();
    unknown_after_hello.extend([0, 0, 0, 1, 201]);
    hostile.push(unknown_after_hello);
    for bytes in &hostile {
        let mut stream = connect(&agent.socket);
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Whatever the agent answers, it ends with a closed connection.
        while read_response(&mut stream).is_some() {}
        agent.ctl(&["list"]).ok();
    }
    assert_eq!(agent.wait_running("worker", 2), pids, "nothing changed");
}

#[test]
fn stalled_silent_and_idle_clients_do_not_hold_up_the_others() {
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    // One byte, then nothing: closed after the hello timeout.
    let mut stalled = connect(&agent.socket);
    stalled.write_all(&[0]).unwrap();
    // Sends requests and never reads the replies.
    let mut deaf = connect(&agent.socket);
    hello(&mut deaf);
    let list = frame::encode(&Request::List { target: procctl_proto::Target::All }).unwrap();
    deaf.set_nonblocking(true).unwrap();
    for _ in 0..20_000 {
        if deaf.write_all(&list).is_err() {
            break;
        }
    }
    // 1,000 connections that never say anything.
    let idle: Vec<UnixStream> = (0..1000).map(|_| connect(&agent.socket)).collect();
    // Others are served meanwhile (a blocked agent would fail these at the procctl deadline).
    for _ in 0..20 {
        agent.ctl(&["list"]).ok();
    }
    assert!(closed_by_agent(&mut stalled), "the stalled client is closed");
    drop(idle);
    assert!(status_kib(agent.pid(), "VmRSS") < 64 * 1024, "the agent did not grow without bound");
    agent.ctl(&["list"]).ok();
}

#[test]
fn past_the_connection_limit_a_client_is_refused_with_a_clear_message() {
    let mut agent = Agent::new(&sleepers(1));
    agent.launch_with(&["--max-connections", "20"]);
    let mut held: Vec<UnixStream> = (0..20).map(|_| connect(&agent.socket)).collect();
    for stream in &mut held {
        hello(stream);
    }
    // `metrics`, which always asks (a `list` may be answered from the agent's snapshot).
    let out = agent.ctl(&["metrics"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("refused: the agent already serves 20 connections"), "{out:?}");
    drop(held);
    wait_until(WAIT, "the agent serves again", || agent.ctl(&["metrics"]).code == Some(0));
}

#[test]
fn clients_that_leave_while_waiting_for_a_reply_free_their_slots_at_once() {
    let mut agent = Agent::new("");
    let got = agent.path("got");
    // Reads every message and never answers.
    agent.write_config(&format!(
        "[process.mute]\ncommand = {}\nstart_secs = \"0s\"\n",
        crate::support::sh(&format!("while read -r m <&3; do echo \"$m\" >> {}; done", got.display()))
    ));
    agent.launch_with(&["--max-connections", "20"]);
    agent.wait_running("mute", 1);
    let mut sent = 0;
    for round in 0..5 {
        let mut clients: Vec<std::process::Child> = (0..20)
            .map(|i| {
                agent
                    .ctl_command(&["send", "--reply", "--timeout", "1h", "mute", &format!("r{round}c{i}")])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        sent += 20;
        wait_until(WAIT, &format!("round {round}: every message reached the worker"), || {
            crate::support::lines(&got).len() == sent
        });
        for client in &mut clients {
            let _ = client.kill();
            let _ = client.wait();
        }
        // With the slots still held for the hour, this list would be refused.
        wait_until(WAIT, &format!("round {round}: the agent serves again"), || agent.ctl(&["list"]).code == Some(0));
    }
    // The reply that finally comes goes to the event stream, not to a client long gone.
    agent.ctl(&["send", "mute", "still here"]).ok();
}

#[test]
fn a_client_that_only_shuts_down_its_writing_half_still_gets_its_answer() {
    let mut agent = Agent::start(&sleepers(2));
    agent.wait_running("worker", 2);
    let mut stream = connect(&agent.socket);
    hello(&mut stream);
    let list = Request::List { target: procctl_proto::Target::All };
    stream.write_all(&frame::encode(&list).unwrap()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    match read_response(&mut stream) {
        Some(Response::List(rows)) => assert_eq!(rows.len(), 2),
        other => panic!("no answer after a half-close: {other:?}"),
    }
    assert!(closed_by_agent(&mut stream), "then the agent closes");
}

#[test]
fn a_client_that_half_closes_then_leaves_frees_its_slot() {
    let mut agent = Agent::new("");
    agent.write_config(&format!(
        "[process.mute]\ncommand = {}\nstart_secs = \"0s\"\n",
        crate::support::sh("while read -r m <&3; do :; done")
    ));
    agent.launch_with(&["--max-connections", "5"]);
    agent.wait_running("mute", 1);
    for round in 0..3 {
        let mut held = vec![];
        for _ in 0..5 {
            let mut stream = connect(&agent.socket);
            hello(&mut stream);
            let send = Request::Send(procctl_proto::SendRequest {
                target: "mute:0".parse().unwrap(),
                messages: vec!["x".into()],
                any: false,
                reply: true,
                timeout_ms: u64::MAX,
            });
            stream.write_all(&frame::encode(&send).unwrap()).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            held.push(stream);
        }
        // Waiting on them costs nothing: no spinning on a half-closed socket.
        let ticks = || {
            let stat = crate::support::stat(agent.pid()).expect("the agent is alive");
            stat.utime + stat.stime
        };
        let before = ticks();
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(ticks() - before < 10, "the agent spins while half-closed clients wait");
        drop(held);
        wait_until(WAIT, &format!("round {round}: the slots are free again"), || agent.ctl(&["list"]).code == Some(0));
    }
}
