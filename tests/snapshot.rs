//! The list snapshot beside the socket: `list` and `pid` read the agent's last answer while
//! nothing has changed, and never believe one that a change, a dead agent or another owner
//! has made untrue.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::support::{Agent, WAIT, bin, run, sleepers, wait_until};

fn snapshot_of(agent: &Agent) -> PathBuf {
    procctl_proto::snapshot::path(&agent.socket)
}

/// The pids `procctl pid worker` prints.
fn pids(agent: &Agent) -> Vec<String> {
    let out = agent.ctl(&["pid", "worker"]);
    out.ok();
    out.stdout.lines().map(str::to_string).collect()
}

/// Asks `pid` and waits until the agent has written the snapshot of that answer.
fn answered_and_kept(agent: &Agent) -> Vec<String> {
    let pids = pids(agent);
    let path = snapshot_of(agent);
    wait_until(WAIT, "the answer's snapshot is written", || path.exists());
    pids
}

/// An open file description write lock on `file`, as the agent holds on its snapshot.
fn lock(file: &File) {
    let whole =
        libc::flock { l_type: libc::F_WRLCK as i16, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
    // SAFETY: fcntl reads the flock struct it is given, on a descriptor this test owns.
    assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &whole) }, 0);
}

fn pid_on(socket: &Path) -> crate::support::Output {
    let mut command = std::process::Command::new(bin("procctl"));
    command.arg("--socket").arg(socket).args(["pid", "worker"]);
    run(&mut command, None, WAIT)
}

#[test]
fn pid_answers_from_the_snapshot_without_waking_the_agent() {
    let mut agent = Agent::start(&sleepers(2));
    let running = agent.wait_running("worker", 2);
    let pids = answered_and_kept(&agent);
    assert_eq!(pids, running.iter().map(i32::to_string).collect::<Vec<_>>());
    // A stopped agent answers nothing on its socket: an answer now comes from the snapshot
    // (asking would wait for the test's deadline and fail).
    // SAFETY: signals to the agent this test started.
    unsafe { libc::kill(agent.pid(), libc::SIGSTOP) };
    let out = agent.ctl(&["pid", "worker"]);
    // SAFETY: as above.
    unsafe { libc::kill(agent.pid(), libc::SIGCONT) };
    out.ok();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), pids);
}

#[test]
fn a_change_removes_the_snapshot_before_the_command_that_made_it_returns() {
    let mut agent = Agent::start(&sleepers(2));
    agent.wait_running("worker", 2);
    answered_and_kept(&agent);
    agent.ctl(&["stop", "worker:0"]).ok();
    assert!(!snapshot_of(&agent).exists(), "the snapshot outlived a stop");
    let out = agent.ctl(&["pid", "worker:0"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no running instance of worker:0"), "{out:?}");

    // A restart, and `list` right after it, shows the new pid.
    answered_and_kept(&agent);
    let before = agent.pid_of("worker", 1);
    agent.ctl(&["restart", "worker:1"]).ok();
    let after = agent.pid_of("worker", 1);
    assert!(after.is_some() && after != before, "{before:?} -> {after:?}");
}

#[test]
fn a_dead_agent_s_snapshot_is_not_believed() {
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    answered_and_kept(&agent);
    agent.kill9();
    assert!(snapshot_of(&agent).exists(), "a killed agent leaves its snapshot");
    for args in [&["pid", "worker"][..], &["list"], &["list", "worker:0", "--json"]] {
        let out = agent.ctl(args);
        assert_eq!(out.code, Some(3), "{args:?}: {out:?}");
        assert!(out.stderr.contains("cannot reach procagent"), "{args:?}: {out:?}");
    }
    // The next agent replaces it with its own.
    agent.launch();
    agent.wait_running("worker", 1);
    agent.ctl(&["pid", "worker"]).ok();
}

#[test]
fn only_a_snapshot_locked_by_its_keeper_answers() {
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    let pids = answered_and_kept(&agent);
    let bytes = std::fs::read(snapshot_of(&agent)).unwrap();
    // The same bytes beside a socket no agent serves: unlocked, they are not believed.
    let socket = agent.path("elsewhere.sock");
    let copy = procctl_proto::snapshot::path(&socket);
    std::fs::write(&copy, &bytes).unwrap();
    let out = pid_on(&socket);
    assert_eq!(out.code, Some(3), "{out:?}");
    // Locked (as a live agent holds it), they are.
    let file = File::options().read(true).write(true).open(&copy).unwrap();
    lock(&file);
    let out = pid_on(&socket);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), pids);
    // Reached through a symbolic link, they are not.
    let linked = agent.path("linked.sock");
    std::os::unix::fs::symlink(&copy, procctl_proto::snapshot::path(&linked)).unwrap();
    assert_eq!(pid_on(&linked).code, Some(3));
    // Of another protocol version, they are not.
    let mut other = bytes;
    other[procctl_proto::snapshot::MAGIC.len() + 3] ^= 0xff;
    std::fs::write(&copy, &other).unwrap();
    assert_eq!(pid_on(&socket).code, Some(3));
}

#[test]
#[ignore = "needs root"]
fn a_snapshot_of_another_user_is_not_believed() {
    crate::support::require_root();
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    answered_and_kept(&agent);
    let socket = agent.path("elsewhere.sock");
    let copy = procctl_proto::snapshot::path(&socket);
    std::fs::copy(snapshot_of(&agent), &copy).unwrap();
    let file = File::options().read(true).write(true).open(&copy).unwrap();
    lock(&file);
    assert_eq!(pid_on(&socket).code, Some(0), "root's own, locked: believed");
    std::os::unix::fs::chown(&copy, Some(crate::support::NOBODY), Some(crate::support::NOBODY)).unwrap();
    let out = pid_on(&socket);
    assert_eq!(out.code, Some(3), "someone else's: {out:?}");
}
