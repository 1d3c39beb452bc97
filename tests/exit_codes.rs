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

#[test]
fn closed_standard_fds_do_not_take_the_agent_s_socket() {
    // With 0, 1 and 2 closed, the socket would be fd 0 and the output would go nowhere (or
    // into the socket): procctl opens /dev/null on them first, as programs are expected to.
    let agent = Agent::start(&sleepers(1));
    let script = format!("'{}' pid worker:0 >&-; echo \"rc=$?\"", bin("procctl").display());
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(script).env("PROCCTL_SOCKET", &agent.socket);
    let out = run(&mut command, None, WAIT);
    assert_eq!(out.stdout.trim(), "rc=0", "{out:?}");
}
