//! Shutdown with clients around (SPEC.md "procctl commands", "Signals to the agent"):
//! followers are told the stream ended and let go at once, and a request that comes while
//! the agent shuts down is told so, exit 3.

use std::io::Read;
use std::process::Stdio;

use crate::support::{Agent, CTL_TIMEOUT, WAIT, run, sh, wait_until};

#[test]
fn a_log_follower_is_told_the_agent_is_shutting_down_and_let_go() {
    let mut agent = Agent::start(&format!(
        "[process.talker]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh("echo hello; exec sleep 100000")
    ));
    let mut follower =
        agent.ctl_command(&["logs", "talker", "-f"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 6];
    follower.stdout.take().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"hello\n");
    agent.shutdown();
    let mut status = None;
    wait_until(WAIT, "procctl logs -f ends", || {
        status = follower.try_wait().unwrap();
        status.is_some()
    });
    let mut stderr = String::new();
    follower.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(stderr, "procctl: the agent is shutting down: end of stream\n");
    assert_eq!(status.unwrap().code(), Some(0));
}

#[test]
fn a_request_during_shutdown_gets_exit_3_saying_the_agent_is_shutting_down() {
    let mut agent = Agent::start(&format!(
        "[process.slow]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"30s\"\n",
        // Takes its time to stop, until told to go on.
        sh("trap 'while [ ! -e go ]; do sleep 0.02; done; exit 0' TERM; while :; do sleep 0.02; done")
    ));
    agent.wait_running("slow", 1);
    let mut command = agent.ctl_command(&["shutdown"]);
    let shutdown = std::thread::spawn(move || run(&mut command, None, CTL_TIMEOUT));
    agent.wait_state("slow", 0, "stopping");
    let out = agent.ctl(&["start", "slow"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(out.stderr, "procctl: the agent is shutting down\n");
    assert_eq!(agent.state_of("slow", 0), "stopping", "list keeps answering meanwhile");
    std::fs::write(agent.path("go"), "").unwrap();
    shutdown.join().unwrap().ok();
    assert_eq!(agent.wait_exit(WAIT), Some(0));
}
