use std::os::unix::fs::PermissionsExt;

use crate::support::{Agent, WAIT, run, sleepers};

#[test]
fn the_socket_is_0600_in_a_0700_directory() {
    let agent = Agent::start(&sleepers(1));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.socket), 0o600);
    assert_eq!(mode(agent.socket.parent().unwrap()), 0o700);
}

#[test]
fn a_stale_socket_left_by_a_dead_agent_is_replaced() {
    let mut agent = Agent::start(&sleepers(1));
    agent.kill9();
    assert!(agent.socket.exists(), "a killed agent leaves its socket file");
    agent.launch();
    agent.wait_running("worker", 1);
}

#[test]
fn a_second_agent_on_a_live_socket_is_refused_and_the_first_keeps_working() {
    let mut agent = Agent::start(&sleepers(1));
    let out = run(&mut agent.command_on(&agent.socket, &agent.path("state2")), None, WAIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("already running") && out.stderr.contains(&agent.socket.display().to_string()),
        "{out:?}"
    );
    agent.wait_running("worker", 1);
}

#[test]
fn procctl_finds_the_socket_through_the_environment() {
    let agent = Agent::start(&sleepers(1));
    let via_option = run(
        std::process::Command::new(crate::support::bin("procctl")).arg("--socket").arg(&agent.socket).arg("list"),
        None,
        WAIT,
    );
    via_option.ok();
    // XDG_RUNTIME_DIR/procctl/agent.sock, with no option and no PROCCTL_SOCKET.
    let runtime = agent.socket.parent().unwrap().parent().unwrap().join("xdg");
    std::fs::create_dir_all(runtime.join("procctl")).unwrap();
    std::os::unix::fs::symlink(&agent.socket, runtime.join("procctl/agent.sock")).unwrap();
    let mut command = std::process::Command::new(crate::support::bin("procctl"));
    command.arg("list").env_remove("PROCCTL_SOCKET").env("XDG_RUNTIME_DIR", &runtime);
    run(&mut command, None, WAIT).ok();
}
