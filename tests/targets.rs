//! Several targets in one command, and colour in `list`.

use crate::support::{Agent, sleepers};

fn fleet() -> String {
    format!("{}\n[process.other]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n", sleepers(2))
}

#[test]
fn restart_takes_several_targets_and_touches_only_those() {
    let mut agent = Agent::start(&fleet());
    let workers = agent.wait_running("worker", 2);
    let other = agent.wait_running("other", 1)[0];
    let out = agent.ctl(&["restart", "worker:1", "other"]);
    out.ok();
    assert!(out.stdout.contains("worker:1 restarted") && out.stdout.contains("other:0 restarted"), "{out:?}");
    assert_eq!(agent.pid_of("worker", 0), Some(workers[0]), "worker:0 was not named");
    assert_ne!(agent.pid_of("worker", 1), Some(workers[1]));
    assert_ne!(agent.pid_of("other", 0), Some(other));
}

#[test]
fn an_unknown_target_among_several_fails_before_anything_is_done() {
    let mut agent = Agent::start(&fleet());
    let other = agent.wait_running("other", 1)[0];
    for verb in [&["stop"][..], &["restart"], &["signal"], &["start"], &["pid"], &["list"], &["logs"], &["wait"]] {
        let mut args = verb.to_vec();
        args.extend(["other", "nosuch", "worker:0"]);
        if verb == ["signal"] {
            args.push("HUP");
        }
        let out = agent.ctl(&args);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(out.stderr.contains("nosuch"), "{args:?} names the unknown target: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?} did nothing: {out:?}");
    }
    assert_eq!(agent.pid_of("other", 0), Some(other), "nothing was stopped or restarted");
    assert_eq!(agent.state_of("other", 0), "running");
}

#[test]
fn stop_list_pid_and_wait_take_several_targets() {
    let mut agent = Agent::start(&fleet());
    let workers = agent.wait_running("worker", 2);
    let other = agent.wait_running("other", 1)[0];
    let rows = agent.ctl(&["list", "worker:1", "other", "worker:1", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&rows.ok().stdout).unwrap();
    let ids: Vec<String> =
        rows.iter().map(|row| format!("{}:{}", row["name"].as_str().unwrap(), row["instance"])).collect();
    assert_eq!(ids, ["worker:1", "other:0"], "each instance once, in the order asked");
    let pids = agent.ctl(&["pid", "other", "worker:0"]);
    assert_eq!(pids.ok().stdout, format!("{other}\n{}\n", workers[0]));
    let out = agent.ctl(&["stop", "other", "worker:0"]);
    assert_eq!(out.ok().stdout, "other:0 stopped\nworker:0 stopped\n");
    agent.ctl(&["wait", "other", "worker:0", "--for", "stopped", "--timeout", "10s"]).ok();
    assert_eq!(agent.state_of("worker", 1), "running");
    agent.ctl(&["start", "other", "worker:0"]).ok();
    agent.ctl(&["wait", "other", "worker", "--timeout", "10s"]).ok();
}

#[test]
fn list_colours_states_only_when_asked_or_on_a_terminal_without_no_color() {
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    let always = agent.ctl(&["list", "--color", "always"]);
    let running = always.ok().stdout.lines().nth(1).unwrap().to_string();
    assert!(running.contains("\u{1b}[") && running.contains("running"), "{running:?}");
    // Escape codes do not count toward the width: the columns after STATE still line up.
    let plain = agent.ctl(&["list", "--color", "never"]);
    let strip = |line: &str| {
        let mut text = String::new();
        let mut escape = false;
        for c in line.chars() {
            match (escape, c) {
                (false, '\u{1b}') => escape = true,
                (true, 'm') => escape = false,
                (false, c) => text.push(c),
                (true, _) => {}
            }
        }
        text
    };
    assert_eq!(strip(&running), plain.ok().stdout.lines().nth(1).unwrap());
    assert!(!plain.stdout.contains('\u{1b}'));
    // Piped, `auto` has no colour, and the fixture sets NO_COLOR as well.
    assert!(!agent.ctl(&["list"]).ok().stdout.contains('\u{1b}'));
}
