//! What cannot come up must not loop hot, and must not be waited for (SPEC.md "Processes",
//! "Readiness"): an end within start_secs is quick even after the probe passed, a probe
//! answered by another process on the instance's port is no pass, and `wait` gives up at
//! once on an instance that is fatal.

use std::net::TcpListener;

use crate::support::{Agent, sh};

#[test]
fn a_program_that_dies_soon_after_it_became_ready_backs_off_and_becomes_fatal() {
    let mut agent = Agent::start(&format!(
        "[process.flappy]\ncommand = {}\nready = {{ log = \"^up\" }}\nstart_secs = \"1s\"\nstart_retries = 3\n",
        sh("echo up; sleep 0.1; exit 1")
    ));
    agent.wait_state("flappy", 0, "fatal");
    let row = agent.row("flappy", 0);
    assert_eq!(row["restarts"], 2, "two restarts, then fatal: {row}");
    assert_eq!(row["last_exit"]["code"], 1, "{row}");
}

#[test]
fn a_probe_answered_by_another_process_on_the_port_is_not_a_pass() {
    // Another server holds the port; the instance listens on nothing.
    let other = TcpListener::bind("127.0.0.1:18170").expect("port 18170 is free for this test");
    let mut agent = Agent::start(
        "[process.web]\ncommand = [\"sleep\", \"100000\"]\nport = 18170\n\
         ready = { tcp = \"127.0.0.1:{port}\" }\nready_timeout = \"60s\"\n",
    );
    let said = format!("port 18170 is answered by pid {}, not by web:0", std::process::id());
    crate::support::wait_until(crate::support::WAIT, "the instance's log names the other server", || {
        agent.ctl(&["logs", "web"]).stdout.contains(&said)
    });
    assert_eq!(agent.state_of("web", 0), "starting", "not ready: the port is not its own");
    drop(other);
}

#[test]
fn waiting_for_running_ends_at_once_when_an_instance_is_or_becomes_fatal() {
    let agent = Agent::start(&format!(
        "[process.steady]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n\
         [process.crashy]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 2\n\
         [process.once]\ncommand = {}\nrestart = \"never\"\n",
        sh("sleep 0.2; exit 3"),
        sh("exit 4")
    ));
    // Asked while crashy is still trying: it becomes fatal during the wait.
    let out = agent.ctl(&["wait", "crashy", "--timeout", "50s"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("crashy:0 is fatal (last exit: code 3)"), "{out:?}");
    assert!(!out.stderr.contains("timed out"), "nothing to wait for: {out:?}");
    // Asked when it already is, and with an instance that exited under restart = "never".
    let out = agent.ctl(&["wait", "all", "--timeout", "50s"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("crashy:0 is fatal (last exit: code 3)"), "{out:?}");
    assert!(out.stderr.contains("once:0 is exited (last exit: code 4)"), "{out:?}");
    assert!(!out.stderr.contains("steady"), "steady is running: {out:?}");
    agent.ctl(&["wait", "steady", "--timeout", "50s"]).ok();
}
