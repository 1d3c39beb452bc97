use crate::support::{Agent, WAIT, lines, sh, wait_until};

/// A worker that appends every line it reads on its pipe to `rec.<instance>`.
fn recorder(agent: &Agent, instances: u32, extra: &str) -> String {
    let out = agent.path("rec");
    format!(
        "[process.rec]\ncommand = {}\ninstances = {instances}\nstart_secs = \"0s\"\n{extra}\n",
        sh(&format!(
            "while IFS= read -r m <&\"$PROCCTL_PIPE_FD\"; do printf '%s\\n' \"$m\" >> {}.$PROCCTL_INSTANCE; done",
            out.display()
        ))
    )
}

/// A worker that answers each message with `pong-<instance> <message>`.
fn echo(instances: u32) -> String {
    format!(
        "[process.echo]\ncommand = {}\ninstances = {instances}\nstart_secs = \"0s\"\n",
        sh(
            "while IFS= read -r m <&\"$PROCCTL_PIPE_FD\"; do echo \"pong-$PROCCTL_INSTANCE $m\" >&\"$PROCCTL_PIPE_FD\"; done"
        )
    )
}

fn recorded(agent: &Agent, index: u32) -> Vec<String> {
    lines(&agent.path(&format!("rec.{index}")))
}

#[test]
fn send_reaches_one_instance_every_instance_or_one_at_a_time_with_any() {
    let mut agent = Agent::new("");
    agent.write_config(&recorder(&agent, 3, ""));
    agent.launch();
    agent.wait_running("rec", 3);

    agent.ctl(&["send", "rec:1", "hello", "world"]).ok();
    wait_until(WAIT, "rec:1 got it", || recorded(&agent, 1) == ["hello world"]);

    agent.ctl(&["send", "rec", "to-all"]).ok();
    wait_until(WAIT, "every instance got it", || (0..3).all(|i| recorded(&agent, i).contains(&"to-all".to_string())));
    assert_eq!(recorded(&agent, 0), ["to-all"], "send returned after writing; nothing else arrived");

    for n in 0..6 {
        agent.ctl(&["send", "--any", "rec", &format!("any-{n}")]).ok();
    }
    wait_until(WAIT, "six --any messages arrived", || {
        (0..3).map(|i| recorded(&agent, i).iter().filter(|l| l.starts_with("any-")).count()).sum::<usize>() == 6
    });
    for i in 0..3 {
        let got = recorded(&agent, i).iter().filter(|l| l.starts_with("any-")).count();
        assert_eq!(got, 2, "round-robin gives each instance two: rec:{i} got {:?}", recorded(&agent, i));
    }
}

#[test]
fn reply_from_one_or_several_instances() {
    let mut agent = Agent::start(&echo(3));
    agent.wait_running("echo", 3);
    let out = agent.ctl(&["send", "--reply", "echo:2", "ping"]);
    assert_eq!(out.ok().stdout, "pong-2 ping\n");
    let out = agent.ctl(&["send", "--reply", "echo", "ping"]);
    let mut got: Vec<&str> = out.ok().stdout.lines().collect();
    got.sort();
    assert_eq!(got, ["echo:0 pong-0 ping", "echo:1 pong-1 ping", "echo:2 pong-2 ping"]);
}

#[test]
fn a_missing_reply_is_exit_1_naming_the_silent_instance() {
    let mut agent = Agent::new("");
    agent.write_config(&recorder(&agent, 1, ""));
    agent.launch();
    agent.wait_running("rec", 1);
    let out = agent.ctl(&["send", "--reply", "--timeout", "300ms", "rec", "anyone?"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("rec:0 did not reply within 300ms"), "{out:?}");
}

#[test]
fn a_10000_line_stream_arrives_complete_and_in_order() {
    let mut agent = Agent::new("");
    agent.write_config(&recorder(&agent, 1, ""));
    agent.launch();
    agent.wait_running("rec", 1);
    let input: String = (0..10_000).map(|i| format!("message number {i}\n")).collect();
    let out = agent.ctl_stdin(&["send", "rec", "-"], &input);
    assert_eq!(out.ok().stdout.trim(), "rec:0 accepted 10000 message(s)");
    wait_until(WAIT, "all 10,000 lines are recorded", || recorded(&agent, 0).len() == 10_000);
    let want: Vec<String> = input.lines().map(str::to_string).collect();
    assert_eq!(recorded(&agent, 0), want);
}

#[test]
fn a_worker_that_never_reads_fills_its_queue_and_send_fails_naming_it() {
    let mut agent = Agent::start("[process.deaf]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n");
    agent.wait_running("deaf", 1);
    let input: String = (0..200_000).map(|i| format!("filler line {i} that nobody will ever read\n")).collect();
    let out = agent.ctl_stdin(&["send", "--timeout", "300ms", "deaf", "-"], &input);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("deaf:0: queue full: it read nothing for 300ms"), "{out:?}");
    assert!(out.stderr.contains("messages accepted"), "{out:?}");
    agent.ctl(&["list"]).ok();
}

#[test]
fn pipe_stdin_delivers_on_standard_input() {
    let mut agent = Agent::new("");
    let out = agent.path("got");
    agent.write_config(&format!(
        "[process.reader]\ncommand = {}\npipe = \"stdin\"\nstart_secs = \"0s\"\n",
        sh(&format!("while IFS= read -r m; do echo \"$m\" >> {}; done", out.display()))
    ));
    agent.launch();
    agent.wait_running("reader", 1);
    agent.ctl(&["send", "reader", "via", "stdin"]).ok();
    wait_until(WAIT, "the line arrived on stdin", || lines(&out) == ["via stdin"]);
    let reply = agent.ctl(&["send", "--reply", "reader", "x"]);
    assert_eq!(reply.code, Some(1));
    assert!(reply.stderr.contains("cannot reply"), "{reply:?}");
}

#[test]
fn sending_to_a_stopped_instance_fails_naming_it() {
    let mut agent = Agent::new("");
    agent.write_config(&recorder(&agent, 2, ""));
    agent.launch();
    agent.wait_running("rec", 2);
    agent.ctl(&["stop", "rec:1"]).ok();
    let out = agent.ctl(&["send", "rec", "hi"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("rec:1 is not running"), "{out:?}");
    assert!(out.stdout.contains("rec:0 accepted 1"), "the running one still got it: {out:?}");
    let none = agent.ctl(&["send", "--any", "rec:0", "x"]);
    assert_eq!(none.code, Some(2), "--any takes a NAME: {none:?}");
}

#[test]
fn sending_to_a_process_with_no_instances_fails_naming_it() {
    let mut agent = Agent::new("");
    agent.write_config(&recorder(&agent, 0, ""));
    agent.launch();
    for out in [agent.ctl(&["send", "rec", "x"]), agent.ctl_stdin(&["send", "rec", "-"], "a\nb\n")] {
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("nothing to send to: `rec` has no instances"), "{out:?}");
    }
}

#[test]
fn a_reply_line_too_long_is_cut_and_the_next_reply_still_meets_its_sender() {
    let mut agent = Agent::new("");
    // "big" gets the first 64 KiB of a long line at once; the rest of that line comes only
    // after the next message, just before that message's own reply.
    agent.write_config(&format!(
        "[process.talk]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh("while IFS= read -r m <&3; do if [ \"$m\" = big ]; then printf '%065536d' 0 | tr 0 z >&3; \
            IFS= read -r m <&3; printf '%0100000d\\n' 0 | tr 0 z >&3; fi; echo \"pong $m\" >&3; done")
    ));
    agent.launch();
    agent.wait_running("talk", 1);
    let big = agent.ctl(&["send", "--reply", "talk", "big"]);
    big.ok();
    assert_eq!(big.stdout.trim_end().len(), 64 * 1024, "cut at 64 KiB");
    assert!(big.stdout.trim_end().bytes().all(|b| b == b'z'));
    let next = agent.ctl(&["send", "--reply", "talk", "after"]);
    next.ok();
    assert_eq!(next.stdout, "pong after\n", "the rest of the long line is not a reply");
}

#[test]
fn messages_must_be_one_line_and_fit_in_a_frame() {
    let mut agent = Agent::new("");
    agent.write_config(&recorder(&agent, 1, ""));
    agent.launch();
    agent.wait_running("rec", 1);
    assert_eq!(agent.ctl(&["send", "rec", "two\nlines"]).code, Some(2));
    let huge = format!("{}\n", "x".repeat(procctl_proto::MAX_FRAME + 1));
    let out = agent.ctl_stdin(&["send", "rec", "-"], &format!("small\n{huge}"));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("message 2 is 1048577 bytes, over the limit"), "{out:?}");
    assert!(out.stderr.contains("the 1 before it were"), "{out:?}");
    // Anything sent before the marker arrives before it on the same pipe.
    agent.ctl(&["send", "rec", "marker"]).ok();
    wait_until(WAIT, "the marker arrived", || recorded(&agent, 0).contains(&"marker".to_string()));
    assert_eq!(
        recorded(&agent, 0),
        ["small", "marker"],
        "what came before the huge line was sent, the huge line never"
    );
}

#[test]
fn pipe_none_has_no_fd_and_refuses_messages() {
    let mut agent = Agent::new("");
    let out = agent.path("fd");
    agent.write_config(&format!(
        "[process.quiet]\ncommand = {}\npipe = \"none\"\nstart_secs = \"0s\"\n",
        sh(&format!("echo \"${{PROCCTL_PIPE_FD:-unset}}\" > {}; exec sleep 100000", out.display()))
    ));
    agent.launch();
    agent.wait_running("quiet", 1);
    wait_until(WAIT, "the worker wrote", || !lines(&out).is_empty());
    assert_eq!(lines(&out), ["unset"]);
    let sent = agent.ctl(&["send", "quiet", "x"]);
    assert_eq!(sent.code, Some(1));
    assert!(sent.stderr.contains("no message pipe"), "{sent:?}");
}

#[test]
fn the_example_workers_answer_on_their_pipe() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workers");
    // .ci/run installs php-cli, so CI always runs the PHP worker (the seeds' language).
    let php = std::process::Command::new("php").arg("--version").output().is_ok_and(|o| o.status.success());
    let names: &[&str] = if php { &["py", "sh", "php"] } else { &["py", "sh"] };
    if !php {
        eprintln!("php is not installed: the PHP worker is not tried (apt-get install php-cli)");
    }
    let mut agent = Agent::start(&format!(
        "[process.py]\ncommand = [\"python3\", \"{0}/echo.py\"]\nstart_secs = \"0s\"\n\
         [process.sh]\ncommand = [\"bash\", \"{0}/echo.sh\"]\nstart_secs = \"0s\"\n\
         [process.php]\ncommand = [\"php\", \"{0}/echo.php\"]\nstart_secs = \"0s\"\nautostart = {php}\n",
        examples.display()
    ));
    for name in names {
        agent.wait_running(name, 1);
    }
    for name in names {
        let out = agent.ctl(&["send", "--reply", name, "ping"]);
        assert_eq!(out.ok().stdout, "got ping\n", "{name}");
    }
}

#[test]
fn a_worker_that_closed_its_pipe_fails_the_send_naming_it() {
    let mut agent = Agent::start(&format!(
        "[process.closed]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh("exec 3<&-; exec sleep 100000")
    ));
    agent.wait_running("closed", 1);
    for _ in 0..2 {
        let out = agent.ctl(&["send", "--timeout", "1s", "closed", "hello"]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("closed:0: its pipe closed"), "{out:?}");
    }
    agent.ctl(&["list"]).ok();
}

#[test]
fn concurrent_replies_from_one_instance_go_to_the_right_sender() {
    let mut agent = Agent::start(&echo(1));
    agent.wait_running("echo", 1);
    let senders: Vec<_> = (0..20)
        .map(|i| {
            let mut command = agent.ctl_command(&["send", "--reply", "echo", &format!("m{i}")]);
            std::thread::spawn(move || (i, crate::support::run(&mut command, None, crate::support::CTL_TIMEOUT)))
        })
        .collect();
    for sender in senders {
        let (i, out) = sender.join().unwrap();
        assert_eq!(out.ok().stdout, format!("pong-0 m{i}\n"));
    }
}
