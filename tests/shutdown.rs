//! Shutdown with clients around (SPEC.md "procctl commands", "Signals to the agent"):
//! followers are told the stream ended and let go at once, and a request that comes while
//! the agent shuts down is told so, exit 3. Shutdown at scale: each instance gets its own
//! stop_signal, dependents go first, nothing is left (with cgroups, not a cgroup either).

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;

use crate::support::{Agent, CTL_TIMEOUT, WAIT, lines, require_root, run, sh, wait_until};

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

/// A script that notes `signal` in `notes/NAME.INDEX` when it gets it, then exits 0; its
/// `sleep` (in its group and cgroup) gets the stop signal too.
fn noting(notes: &std::path::Path, signal: &str) -> String {
    let file = format!("{}/$PROCCTL_NAME.$PROCCTL_INSTANCE", notes.display());
    sh(&format!("trap 'echo {signal} > {file}; exit 0' {signal}; while :; do sleep 1000; done"))
}

#[test]
fn a_shutdown_of_many_instances_gives_each_its_stop_signal_stops_dependents_first_and_leaves_nothing() {
    let mut agent = Agent::new("");
    let notes = agent.path("notes");
    std::fs::create_dir(&notes).unwrap();
    // db notes how many web instances had stopped when its own stop came: all of them.
    let db = sh(&format!(
        "trap 'ls {0} | grep -c ^web > {0}/db.count; exit 0' TERM; while :; do sleep 1000; done",
        notes.display()
    ));
    agent.write_config(&format!(
        "[process.db]\ncommand = {db}\nstart_secs = \"0s\"\n\n\
         [process.web]\ncommand = {}\ninstances = 40\nstart_secs = \"0s\"\ndepends_on = {{ db = \"running\" }}\n\n\
         [process.worker]\ncommand = {}\ninstances = 60\nstart_secs = \"0s\"\nstop_signal = \"INT\"\n",
        noting(&notes, "TERM"),
        noting(&notes, "INT"),
    ));
    agent.launch();
    agent.wait_running("db", 1);
    agent.wait_running("web", 40);
    agent.wait_running("worker", 60);
    agent.shutdown();
    assert_eq!(lines(&notes.join("db.count")), ["40"], "db was stopped once every web instance was down");
    for (name, count, signal) in [("web", 40, "TERM"), ("worker", 60, "INT")] {
        for index in 0..count {
            assert_eq!(lines(&notes.join(format!("{name}.{index}"))), [signal], "{name}:{index} got its stop_signal");
        }
    }
    assert_eq!(agent.leftovers(), Vec::<i32>::new(), "nothing is left: {}", agent.log());
}

/// The agent's cgroup tree, from its start-up line.
#[track_caller]
fn tracked_tree(log: &str) -> PathBuf {
    let line = "tracking instances with cgroup v2 in ";
    let start = log.find(line).unwrap_or_else(|| panic!("this test needs cgroups; the agent says: {log}"));
    PathBuf::from(log[start + line.len()..].split(" (controllers").next().unwrap())
}

#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn with_cgroups_a_shutdown_of_many_instances_removes_every_run_cgroup_and_the_tree() {
    require_root();
    let mut agent =
        Agent::start("[process.many]\ncommand = [\"sleep\", \"100000\"]\ninstances = 300\nstart_secs = \"0s\"\n");
    let tree = tracked_tree(&agent.log());
    agent.wait_running("many", 300);
    let runs = std::fs::read_dir(tree.join("runs")).unwrap().flatten().filter(|e| e.path().is_dir()).count();
    assert_eq!(runs, 300, "a cgroup per run");
    agent.shutdown();
    assert!(!tree.exists(), "the agent's tree and every run's cgroup are gone");
    assert_eq!(agent.leftovers(), Vec::<i32>::new(), "nothing is left: {}", agent.log());
}
