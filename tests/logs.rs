use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{Agent, WAIT, sh, wait_until};

/// A worker that prints `line <instance> <n>` for each message it gets, on stdout or stderr.
fn talker(instances: u32) -> String {
    format!(
        "[process.talk]\ncommand = {}\ninstances = {instances}\nstart_secs = \"0s\"\n",
        sh(
            "while IFS= read -r m <&\"$PROCCTL_PIPE_FD\"; do echo \"out $PROCCTL_INSTANCE $m\"; echo \"err $PROCCTL_INSTANCE $m\" >&2; done"
        )
    )
}

#[test]
fn logs_show_the_tail_of_stdout_and_stderr_interleaved_by_time_with_prefixes() {
    let mut agent = Agent::start(&talker(2));
    agent.wait_running("talk", 2);
    for (target, message) in [("talk:0", "a"), ("talk:1", "b"), ("talk:0", "c")] {
        agent.ctl(&["send", target, message]).ok();
        let want = format!("err {} {message}", &target[5..]);
        wait_until(WAIT, "the line is captured", || agent.ctl(&["logs", target, "-n", "1"]).stdout.trim() == want);
    }
    let out = agent.ctl(&["logs", "talk", "-n", "4"]);
    assert_eq!(out.ok().stdout, "talk:1 out 1 b\ntalk:1 err 1 b\ntalk:0 out 0 c\ntalk:0 err 0 c\n");
    let one = agent.ctl(&["logs", "talk:0"]);
    assert_eq!(one.ok().stdout, "out 0 a\nerr 0 a\nout 0 c\nerr 0 c\n", "no prefix for one instance");
    let file = std::fs::read_to_string(agent.state.join("logs/talk.0.log")).unwrap();
    assert_eq!(file, "out 0 a\nerr 0 a\nout 0 c\nerr 0 c\n", "stdout and stderr together, byte for byte");
}

#[test]
fn logs_follow_sees_new_lines() {
    let mut agent = Agent::start(&talker(1));
    agent.wait_running("talk", 1);
    let mut follower = agent.ctl_command(&["logs", "talk", "-n", "0", "-f"]).stdout(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Keep sending until the follower is surely subscribed and sees a line.
    let mut seen = vec![];
    wait_until(WAIT, "the follower prints a new line", || {
        agent.ctl(&["send", "talk", "hello"]).ok();
        seen.extend(rx.recv_timeout(Duration::from_millis(200)));
        !seen.is_empty()
    });
    assert!(seen[0].ends_with("0 hello"), "{seen:?}");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn a_child_writing_100_mb_quickly_is_drained_with_bounded_memory_and_rotated_files() {
    let mut agent = Agent::start(
        "[process.flood]\ncommand = \"yes 'a line of output that repeats' | head -c 100000000\"\n\
         restart = \"never\"\nstart_secs = \"0s\"\nlog_max_size = \"10MiB\"\nlog_files = 2\n",
    );
    wait_until(Duration::from_secs(120), "the flood ends", || agent.state_of("flood", 0) == "exited");
    assert_eq!(agent.row("flood", 0)["last_exit"]["code"], 0, "the child was never blocked or killed");
    let dir = agent.state.join("logs");
    let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
    assert_eq!(size("flood.0.log.1"), 10 << 20);
    assert_eq!(size("flood.0.log.2"), 10 << 20);
    assert!(!dir.join("flood.0.log.3").exists(), "only log_files old files are kept");
    assert_eq!(size("flood.0.log"), 100_000_000 % (10 << 20), "the current file holds the rest");
    let rss_kib = crate::support::status_kib(agent.pid(), "VmHWM");
    assert!(rss_kib < 64 * 1024, "the agent's peak memory stays bounded: {rss_kib} KiB");
    let tail = agent.ctl(&["logs", "flood", "-n", "3"]);
    assert_eq!(tail.ok().stdout.lines().count(), 3);
}

#[test]
fn a_child_that_never_stops_writing_does_not_starve_the_agent() {
    let mut agent = Agent::start(&format!(
        "[process.chatty]\ncommand = {}\nstart_secs = \"0s\"\nlog_max_size = \"1MiB\"\nlog_files = 1\n\
         [process.quiet]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\nautostart = false\n",
        sh("yes 'a short line'"),
    ));
    agent.wait_running("chatty", 1);
    // A follower makes every line cost more, as it did when the agent once froze like this.
    let mut follower = agent.ctl_command(&["logs", "chatty", "-n", "0", "-f"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut followed = BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    followed.read_line(&mut first).unwrap();
    assert_eq!(first, "a short line\n");
    std::thread::spawn(move || for _ in followed.lines() {});

    // Every request below has to get through while the output floods in. The deadline is a
    // liveness bound (a starved agent took minutes), far above a normal answer.
    let ctl = |args: &[&str]| crate::support::run(&mut agent.ctl_command(args), None, Duration::from_secs(10));
    for _ in 0..5 {
        ctl(&["list"]).ok();
    }
    ctl(&["start", "quiet"]).ok();
    assert_eq!(ctl(&["logs", "chatty", "-n", "1"]).ok().stdout, "a short line\n");
    ctl(&["stop", "chatty"]).ok();
    let _ = follower.kill();
    let _ = follower.wait();
}
