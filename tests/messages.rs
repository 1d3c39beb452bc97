//! The messages a newcomer meets first: each names the thing and says what to do.

use crate::support::{Agent, WAIT, run, sh};

fn demo_like() -> Agent {
    Agent::start(&format!(
        "[process.echo]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n\
         [process.crashy]\ncommand = {}\nstart_retries = 1\n\
         [process.missing]\ncommand = [\"no-such-program-anywhere\"]\nstart_retries = 1\n",
        sh("exit 1")
    ))
}

#[test]
fn stop_says_a_fatal_instance_is_fatal_not_already_stopped() {
    let mut agent = demo_like();
    agent.wait_state("crashy", 0, "fatal");
    let out = agent.ctl(&["stop", "crashy"]);
    out.ok();
    assert_eq!(out.stdout, "crashy:0 is fatal: nothing to stop\n");
}

#[test]
fn an_unknown_process_name_gets_the_closest_one() {
    let agent = demo_like();
    let out = agent.ctl(&["stop", "ech"]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr, "procctl: no process named `ech` (did you mean `echo`?)\n");
    let out = agent.ctl(&["scale", "database", "2"]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr, "procctl: no process named `database` (the processes are crashy, echo, missing)\n");
}

#[test]
fn a_negative_count_is_a_usage_error_that_says_what_a_count_is() {
    let agent = demo_like();
    let out = agent.ctl(&["scale", "echo", "-1"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("a count is a whole number, 0 or more"), "{out:?}");
    assert!(!out.stderr.contains("'-- -1'"), "no tip that leads to another error: {out:?}");
}

#[test]
fn a_program_that_cannot_be_run_shows_why_in_last_exit() {
    let mut agent = demo_like();
    agent.wait_state("missing", 0, "fatal");
    let row = agent.row("missing", 0);
    let why = row["start_error"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("not found"), "{row}");
    let table = agent.ctl(&["list", "missing"]);
    assert!(table.ok().stdout.contains(&why), "{table:?}");
    let out = agent.ctl(&["wait", "missing", "--timeout", "50s"]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr, format!("procctl: missing:0 is fatal ({why})\n"));
}

#[test]
fn an_unknown_config_key_gets_the_closest_one_and_a_duplicate_is_named() {
    for (extra, want) in [
        (
            "start_sec = \"1s\"",
            "procctl.toml:3: process.a.start_sec: unknown key `start_sec` (did you mean `start_secs`?)",
        ),
        ("instances = 1\ninstances = 2", "procctl.toml:4: duplicate key `instances`"),
    ] {
        let agent = Agent::new(&format!("[process.a]\ncommand = [\"true\"]\n{extra}\n"));
        let out = run(&mut agent.command(), None, WAIT);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(want), "{out:?}");
    }
}
