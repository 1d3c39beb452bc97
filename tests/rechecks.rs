//! The rechecks that follow a SIGKILL at the end of a stop: they belong to the run that was
//! killed, and never touch what comes after it.

use std::io::Write;
use std::time::Duration;

use procctl_proto::{Request, Response, frame};

use crate::support::{Agent, connect, hello, holds_for, read_response, sh};

/// `term` ignores SIGTERM with its whole group: every stop ends in SIGKILL and its rechecks.
fn config() -> String {
    format!(
        "[process.term]\ncommand = {}\ninstances = 2\nstart_secs = \"0s\"\nstop_timeout = \"100ms\"\n",
        sh("trap '' TERM; while :; do sleep 1; done")
    )
}

#[test]
fn an_instance_scaled_away_and_back_at_once_is_not_killed_by_the_rechecks_of_its_predecessor() {
    let mut agent = Agent::start(&config());
    agent.wait_running("term", 2);
    // One connection, so that the scale back follows the scale down at once: the new
    // term:1 runs its first run, numbered like the one just killed, within the 20 ms
    // before that one's first recheck.
    let mut stream = connect(&agent.socket);
    hello(&mut stream);
    for count in [1, 2] {
        let scale = Request::Scale { name: "term".into(), count };
        stream.write_all(&frame::encode(&scale).unwrap()).unwrap();
        let answer = read_response(&mut stream);
        assert!(matches!(answer, Some(Response::Scaled { .. })), "{answer:?}");
    }
    let pid = agent.wait_running("term", 2)[1];
    // The rechecks of a run go on for at most a second after its SIGKILL.
    holds_for(Duration::from_secs(2), Duration::from_millis(20), "term:1 runs its first run undisturbed", || {
        let row = agent.row("term", 1);
        row["pid"] == pid && row["restarts"] == 0 && row["last_exit"].is_null()
    });
    assert!(!agent.log().contains("term:1 exited"), "the new term:1 was killed: {}", agent.log());
}
