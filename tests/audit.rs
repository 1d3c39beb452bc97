//! The agent's log says who did what (SPEC.md, the paragraph before "Signals to the agent"):
//! one line per request that changes something, with the client's uid, pid and target,
//! and one for its outcome.

use crate::support::{Agent, WAIT, sleepers, wait_until};

/// Runs procctl with `args` to its end; returns its pid.
fn ctl_pid(agent: &Agent, args: &[&str]) -> u32 {
    let mut child = agent.ctl_command(args).stdout(std::process::Stdio::null()).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn each_state_changing_request_is_logged_with_who_asked_and_what_came_of_it() {
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let asked = [
        (vec!["restart", "worker"], "restart worker", "done (1 instance(s))"),
        (vec!["scale", "worker", "2"], "scale worker 2", "worker scaled from 1 to 2"),
        (vec!["stop", "worker:1"], "stop worker:1", "done (1 instance(s))"),
        (vec!["start", "nosuch"], "start nosuch", "refused: "),
    ];
    for (args, what, outcome) in asked {
        let pid = ctl_pid(&agent, &args);
        let who = format!("uid {uid} pid {pid}");
        let request = format!("procagent: {what}: asked by {who}\n");
        let result = format!("procagent: {what} (asked by {who}): {outcome}");
        wait_until(WAIT, &format!("the log has {what} and its outcome"), || {
            let log = agent.log();
            log.contains(&request) && log.contains(&result)
        });
    }
    agent.list("all"); // queries are not logged
    assert!(!agent.log().contains("list"), "{}", agent.log());
}
