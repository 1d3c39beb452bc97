use crate::support::{Agent, WAIT, alive, lines, sh, sleepers, wait_until};

#[test]
fn list_shows_every_instance_as_a_table_and_as_json() {
    let mut agent = Agent::start(&sleepers(3));
    let pids = agent.wait_running("worker", 3);
    let table = agent.ctl(&["list"]);
    table.ok();
    let header = table.stdout.lines().next().unwrap();
    for column in ["NAME", "INSTANCE", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT", "CPU", "MEM"] {
        assert!(header.contains(column), "{header}");
    }
    for pid in &pids {
        assert!(table.stdout.contains(&pid.to_string()));
    }
    let rows = agent.list("all");
    assert_eq!(rows.len(), 3);
    for (index, row) in rows.iter().enumerate() {
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "autoscale",
                "cpu_percent",
                "health",
                "instance",
                "last_exit",
                "memory_bytes",
                "messages",
                "name",
                "pid",
                "recycles",
                "restarts",
                "start_error",
                "state",
                "status",
                "uptime_secs"
            ]
        );
        assert_eq!(row["instance"], index);
        assert_eq!(row["state"], "running");
    }
}

#[test]
fn list_and_pid_take_a_target() {
    let mut agent = Agent::start(&format!(
        "{}\n[process.other]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n",
        sleepers(2)
    ));
    let pids = agent.wait_running("worker", 2);
    assert_eq!(agent.list("worker:1").len(), 1);
    assert_eq!(agent.list("other").len(), 1);
    assert_eq!(agent.list("all").len(), 3);
    let out = agent.ctl(&["pid", "worker"]);
    let mut got: Vec<i32> = out.ok().stdout.lines().map(|l| l.parse().unwrap()).collect();
    got.sort();
    let mut want = pids.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(agent.ctl(&["pid", "worker:1"]).stdout.trim(), pids[1].to_string());
}

#[test]
fn pid_of_nothing_running_is_exit_1() {
    let agent = Agent::start("[process.idle]\ncommand = [\"sleep\", \"100000\"]\nautostart = false\n");
    let out = agent.ctl(&["pid", "idle"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("idle"), "{out:?}");
}

#[test]
fn stop_and_start_return_when_done_and_say_when_there_is_nothing_to_do() {
    let mut agent = Agent::start(&sleepers(2));
    let pids = agent.wait_running("worker", 2);
    let out = agent.ctl(&["stop", "worker:0"]);
    assert_eq!(out.ok().stdout.trim(), "worker:0 stopped");
    assert!(!alive(pids[0]), "stop returns once the process is gone");
    let row = agent.row("worker", 0);
    assert_eq!(
        (row["state"].as_str(), row["pid"].is_null(), row["uptime_secs"].is_null()),
        (Some("stopped"), true, true)
    );
    assert_eq!(row["restarts"], 0, "a requested stop is not a restart");

    assert_eq!(agent.ctl(&["stop", "worker:0"]).ok().stdout.trim(), "worker:0 already stopped");
    let out = agent.ctl(&["start", "worker"]);
    let text = &out.ok().stdout;
    assert!(text.contains("worker:0 started (pid "), "{text}");
    assert!(text.contains(&format!("worker:1 already running (pid {})", pids[1])), "{text}");
    assert_eq!(agent.state_of("worker", 0), "running", "start returns once it runs");
}

#[test]
fn autostart_false_waits_for_start() {
    let mut agent =
        Agent::start("[process.lazy]\ncommand = [\"sleep\", \"100000\"]\nautostart = false\nstart_secs = \"0s\"\n");
    assert_eq!(agent.state_of("lazy", 0), "stopped");
    agent.ctl(&["start", "lazy"]).ok();
    assert_eq!(agent.state_of("lazy", 0), "running");
}

#[test]
fn start_waits_for_start_secs() {
    let mut agent =
        Agent::start("[process.slow]\ncommand = [\"sleep\", \"100000\"]\nautostart = false\nstart_secs = \"400ms\"\n");
    let began = std::time::Instant::now();
    agent.ctl(&["start", "slow"]).ok();
    assert!(began.elapsed() >= std::time::Duration::from_millis(400));
    assert_eq!(agent.state_of("slow", 0), "running");
}

#[test]
fn signal_reaches_the_process_group_by_name_or_number() {
    let mut agent = Agent::new("");
    let got = agent.path("got");
    agent.write_config(&format!(
        "[process.trap]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh(&format!(
            "trap 'echo USR1 >> {0}' USR1; trap 'echo HUP >> {0}' HUP; touch {0}.ready; while :; do sleep 0.05; done",
            got.display()
        ))
    ));
    agent.launch();
    let pid = agent.wait_running("trap", 1)[0];
    let ready = agent.path("got.ready");
    wait_until(WAIT, "the traps are set", || ready.exists());
    let out = agent.ctl(&["signal", "trap", "USR1"]);
    assert_eq!(out.ok().stdout.trim(), format!("trap:0 sent USR1 (pid {pid})"));
    agent.ctl(&["signal", "trap:0", "1"]).ok();
    wait_until(WAIT, "both signals arrived", || lines(&got) == ["USR1", "HUP"]);
    assert_eq!(agent.pid_of("trap", 0), Some(pid));
}

#[test]
fn signal_to_a_stopped_instance_fails_naming_it() {
    let agent = Agent::start("[process.lazy]\ncommand = [\"sleep\", \"100000\"]\nautostart = false\n");
    let out = agent.ctl(&["signal", "lazy", "TERM"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("lazy:0 is not running"), "{out:?}");
    assert_eq!(agent.ctl(&["signal", "lazy", "NOPE"]).code, Some(2), "a bad signal is a usage error");
}

#[test]
fn shutdown_stops_everything_and_the_agent_exits_0() {
    let mut agent = Agent::start(&sleepers(3));
    let pids = agent.wait_running("worker", 3);
    agent.shutdown();
    for pid in pids {
        assert!(!alive(pid));
    }
    assert!(!agent.socket.exists(), "the socket file is removed");
}

#[test]
fn sigterm_to_the_agent_acts_as_shutdown() {
    let mut agent = Agent::start(&sleepers(2));
    let pids = agent.wait_running("worker", 2);
    crate::support::kill(agent.pid(), libc::SIGTERM);
    assert_eq!(agent.wait_exit(WAIT), Some(0));
    for pid in pids {
        assert!(!alive(pid));
    }
}

#[test]
fn a_start_during_a_stop_waits_for_the_stop_then_starts() {
    let mut agent = Agent::start(&format!(
        "[process.slow]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"1s\"\n",
        sh("trap '' TERM; while :; do sleep 0.05; done")
    ));
    let old = agent.wait_running("slow", 1)[0];
    let mut stop = agent.ctl_command(&["stop", "slow"]).spawn().unwrap();
    agent.wait_state("slow", 0, "stopping");
    let out = agent.ctl(&["start", "slow"]);
    assert!(out.ok().stdout.contains("slow:0 started"), "{out:?}");
    assert!(stop.wait().unwrap().success(), "the stop returns too, once the old process is gone");
    assert!(!alive(old));
    assert_eq!(agent.state_of("slow", 0), "running");
}
