use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use procctl_proto::{PROTOCOL_VERSION, Request, Response, frame};
use serde_json::Value;

use crate::support::{Agent, SPARE, WAIT, Watcher, kill, sh, sleepers, wait_until};

fn with_spare(toml: &str) -> String {
    format!("{toml}\n{SPARE}")
}

#[test]
fn events_show_a_kill_9_and_its_restart() {
    let mut agent = Agent::start(&with_spare(&sleepers(1)));
    let old = agent.wait_running("worker", 1)[0];
    // Two watchers at once, each seeing everything.
    let watcher = Watcher::start(&agent, false);
    let second = Watcher::start(&agent, true);
    watcher.wait_subscribed(&agent);
    second.wait_subscribed(&agent);
    kill(old, libc::SIGKILL);
    let seen = watcher.until("the replacement starts", |l| l.contains(" started worker:0 "));
    second.until("the second watcher sees the kill too", |l| l.contains("\"signal\":\"KILL\""));
    let text = seen.join("\n");
    assert!(text.contains(&format!("exited worker:0 pid {old} signal KILL")), "{text}");
    let new = agent.pid_of("worker", 0).unwrap();
    assert!(text.contains(&format!("spawned worker:0 pid {new}")), "{text}");
    let first = seen.iter().find(|l| l.contains("worker:0")).unwrap();
    assert!(first.len() > 24 && first.as_bytes()[10] == b'T' && first[..24].ends_with('Z'), "RFC 3339 time: {first}");
}

#[test]
fn events_json_has_stable_keys_for_each_kind() {
    let mut agent = Agent::new("");
    agent.write_config(&with_spare(&format!(
        "[process.crashy]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 3\nautostart = false\n\
         [process.echo]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh("exit 4"),
        sh("while IFS= read -r m <&3; do echo \"re $m\" >&3; done")
    )));
    agent.launch();
    agent.wait_running("echo", 1);
    let watcher = Watcher::start(&agent, true);
    watcher.wait_subscribed(&agent);
    agent.ctl(&["send", "echo", "unclaimed"]).ok();
    assert_eq!(agent.ctl(&["start", "crashy"]).code, Some(1));
    let seen: Vec<Value> = watcher
        .until("crashy goes fatal", |l| l.contains("\"fatal\""))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The spare process scaled by `subscribed` has events too: look at one process at a time.
    let find = |event: &str| {
        let of_interest = |v: &&Value| v["event"] == event && v["name"] != "spare";
        seen.iter().find(of_interest).unwrap_or_else(|| panic!("no {event}: {seen:?}"))
    };
    let reply = find("reply");
    assert_eq!(
        (reply["name"].as_str(), reply["instance"].as_u64(), reply["line"].as_str()),
        (Some("echo"), Some(0), Some("re unclaimed"))
    );
    let exited = find("exited");
    assert_eq!(exited["code"], 4);
    assert!(exited["pid"].is_u64());
    assert!(find("backoff")["delay_ms"].is_u64());
    assert!(find("spawned")["pid"].is_u64());
    assert_eq!(find("fatal")["name"], "crashy");
    for value in &seen {
        assert!(value["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{value}");
    }
}

#[test]
fn a_watcher_that_does_not_read_misses_events_without_slowing_the_agent() {
    let mut agent = Agent::start(&format!(
        "[process.echo]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh("while IFS= read -r m <&3; do echo \"$m\" >&3; done")
    ));
    agent.wait_running("echo", 1);
    let mut slow = UnixStream::connect(&agent.socket).unwrap();
    for request in [Request::Hello { version: PROTOCOL_VERSION }, Request::Events] {
        slow.write_all(&frame::encode(&request).unwrap()).unwrap();
    }
    // 30,000 unclaimed replies: far more events than the bus and the socket buffer hold.
    let input: String = (0..30_000).map(|i| format!("event {i}\n")).collect();
    agent.ctl_stdin(&["send", "echo", "-"], &input).ok();
    agent.ctl(&["list"]).ok();

    slow.set_read_timeout(Some(WAIT)).unwrap();
    let mut missed = None;
    let mut seen = 0;
    while missed.is_none() {
        let mut header = [0u8; 4];
        slow.read_exact(&mut header).expect("the stream goes on");
        let mut body = vec![0u8; frame::body_len(header).unwrap()];
        slow.read_exact(&mut body).unwrap();
        match frame::decode_body::<Response>(&body).unwrap() {
            Response::Missed(count) => missed = Some(count),
            _ => seen += 1,
        }
        assert!(seen <= 30_001, "every event arrived: the marker never came");
    }
    assert!(missed.unwrap() > 0);
}

#[test]
fn the_stream_ends_with_a_clear_message_when_the_agent_goes() {
    let mut agent = Agent::start(&with_spare(&sleepers(1)));
    agent.wait_running("worker", 1);
    let mut watcher = Watcher::start(&agent, false);
    watcher.wait_subscribed(&agent);
    agent.shutdown();
    let mut status = None;
    wait_until(WAIT, "procctl events ends", || {
        status = watcher.child.try_wait().unwrap();
        status.is_some()
    });
    let mut stderr = String::new();
    watcher.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.unwrap().code(), Some(0), "an orderly end: {stderr}");
    assert_eq!(stderr, "procctl: the agent is shutting down: end of stream\n");
}
