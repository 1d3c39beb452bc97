use crate::support::{Agent, WAIT, bin, run, sleepers};

#[test]
fn an_unreachable_agent_is_exit_3_naming_the_socket_and_procagent() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let out = run(std::process::Command::new(bin("procctl")).arg("--socket").arg(&socket).arg("list"), None, WAIT);
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains(&socket.display().to_string()), "{out:?}");
    assert!(out.stderr.contains("procagent"), "{out:?}");
    let out =
        run(std::process::Command::new(bin("procctl")).arg("pid").arg("x").env("PROCCTL_SOCKET", &socket), None, WAIT);
    assert_eq!(out.code, Some(3));
}

#[test]
fn usage_errors_are_exit_2() {
    let agent = Agent::start(&sleepers(1));
    for args in [
        &["definitely-not-a-command"][..],
        &["scale", "worker"],
        &["scale", "worker", "many"],
        &["restart", "bad name"],
        &["stop", "worker:x"],
        &["list", "all:0"],
    ] {
        assert_eq!(agent.ctl(args).code, Some(2), "{args:?}");
    }
}

#[test]
fn an_unknown_target_is_exit_1_naming_it() {
    let agent = Agent::start(&sleepers(2));
    for args in [
        &["restart", "nosuch"][..],
        &["stop", "nosuch"],
        &["pid", "nosuch"],
        &["list", "nosuch"],
        &["start", "worker:7"],
    ] {
        let out = agent.ctl(args);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(out.stderr.contains(args[1]), "{args:?}: {out:?}");
    }
}

#[test]
fn version_and_help_are_exit_0() {
    for binary in ["procctl", "procagent"] {
        let out = run(std::process::Command::new(bin(binary)).arg("--version"), None, WAIT);
        assert_eq!(out.code, Some(0));
        assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")) && out.stdout.contains("protocol"), "{out:?}");
    }
    assert_eq!(run(std::process::Command::new(bin("procctl")).arg("--help"), None, WAIT).code, Some(0));
}
