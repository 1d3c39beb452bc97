use std::time::Duration;

use crate::support::{
    Agent, SPARE, WAIT, Watcher, alive, children_of, holds_for, kill, lines, sh, sleepers, wait_until, zombies_of,
};

#[test]
fn kill_9_of_an_instance_brings_a_new_pid() {
    let mut agent = Agent::start(&sleepers(2));
    let old = agent.wait_running("worker", 2)[1];
    kill(old, libc::SIGKILL);
    wait_until(WAIT, "worker:1 has a new pid", || agent.pid_of("worker", 1).is_some_and(|pid| pid != old));
    agent.wait_state("worker", 1, "running");
    let row = agent.row("worker", 1);
    assert_eq!(row["restarts"], 1);
    assert_eq!(row["last_exit"]["signal"], "KILL");
    assert!(zombies_of(agent.pid()).is_empty(), "no zombie is left");
}

#[test]
fn restart_policies_decide_what_an_exit_means() {
    let toml = |policy: &str, code: i32| {
        format!(
            "[process.p]\ncommand = {}\nrestart = \"{policy}\"\nstart_secs = \"0s\"\nstart_retries = 1000\n",
            sh(&format!("sleep 0.2; exit {code}"))
        )
    };
    for (policy, code, restarted) in
        [("never", 1, false), ("on-failure", 0, false), ("on-failure", 2, true), ("always", 0, true)]
    {
        let mut agent = Agent::start(&toml(policy, code));
        if restarted {
            wait_until(WAIT, &format!("{policy} restarts after code {code}"), || agent.row("p", 0)["restarts"] == 2);
        } else {
            agent.wait_state("p", 0, "exited");
            assert_eq!(agent.row("p", 0)["last_exit"]["code"], code);
            assert_eq!(agent.row("p", 0)["restarts"], 0);
        }
    }
}

#[test]
fn quick_failures_back_off_then_go_fatal_and_start_tries_again() {
    let mut agent = Agent::new("");
    let runs = agent.path("runs");
    agent.write_config(&format!(
        "[process.crashy]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 4\n{SPARE}",
        sh(&format!("date +%s.%N >> {}; exit 3", runs.display()))
    ));
    agent.launch();
    agent.wait_state("crashy", 0, "fatal");
    let row = agent.row("crashy", 0);
    assert_eq!(row["restarts"], 3, "{row}");
    assert_eq!(row["last_exit"]["code"], 3);
    let times: Vec<f64> = lines(&runs).iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(times.len(), 4, "start_retries starts in all");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Each run writes its time before it exits, and the backoff starts at the exit: a gap is
    // at least its delay (100 ms, then 200 ms, with 10% jitter), however loaded the machine.
    // (The first restart is at once, but how soon is the machine's: the events below say it.)
    assert!(gaps[1] >= 0.08 && gaps[2] >= 0.16, "the delays grow: {gaps:?}");

    // The agent's own events say which restart waited how long.
    let watcher = Watcher::subscribed(&agent, true);
    let out = agent.ctl(&["start", "crashy"]);
    assert_eq!(out.code, Some(1), "a start that fails again is exit 1: {out:?}");
    assert!(out.stderr.contains("crashy:0"), "{out:?}");
    assert_eq!(lines(&runs).len(), 8, "start gave it start_retries more tries");
    let seen = watcher.until_json("crashy goes fatal again", |e| e["event"] == "fatal" && e["name"] == "crashy");
    let events: Vec<(&str, Option<u64>)> = seen
        .iter()
        .filter(|e| e["name"] == "crashy" && ["exited", "backoff", "fatal"].contains(&e["event"].as_str().unwrap()))
        .map(|e| (e["event"].as_str().unwrap(), e["delay_ms"].as_u64()))
        .collect();
    let delays: Vec<u64> = events.iter().filter_map(|&(_, delay)| delay).collect();
    assert_eq!(
        events.iter().map(|&(event, _)| event).collect::<Vec<_>>(),
        ["exited", "exited", "backoff", "exited", "backoff", "exited", "fatal"],
        "the first quick failure restarts at once, the next two back off: {seen:?}"
    );
    assert!((90..=110).contains(&delays[0]) && (180..=220).contains(&delays[1]), "the delays grow: {delays:?}");
}

#[test]
fn stop_kills_a_child_that_ignores_the_stop_signal_after_stop_timeout() {
    let mut agent = Agent::new("");
    let ready = agent.path("ready");
    agent.write_config(&format!(
        "[process.stubborn]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"300ms\"\n",
        sh(&format!("trap '' TERM; touch {}; while :; do sleep 0.05; done", ready.display()))
    ));
    agent.launch();
    let pid = agent.wait_running("stubborn", 1)[0];
    wait_until(WAIT, "the trap is set", || ready.exists());
    let started = std::time::Instant::now();
    let out = agent.ctl(&["stop", "stubborn"]);
    out.ok();
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited stop_timeout first");
    assert!(!alive(pid));
    let row = agent.row("stubborn", 0);
    assert_eq!(row["state"], "stopped");
    assert!(agent.leftovers().is_empty(), "the whole group is gone");
}

#[test]
fn stop_takes_down_the_whole_process_tree() {
    let mut agent = Agent::new("");
    let grandchild = agent.path("grandchild");
    agent.write_config(&format!(
        "[process.tree]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh(&format!("sleep 100000 & echo $! > {}; wait", grandchild.display()))
    ));
    agent.launch();
    agent.wait_running("tree", 1);
    wait_until(WAIT, "the grandchild is up", || !lines(&grandchild).is_empty());
    let pid: i32 = lines(&grandchild)[0].parse().unwrap();
    agent.remember(pid);
    agent.ctl(&["stop", "tree"]).ok();
    assert!(!alive(pid), "stop returns once the grandchild is gone too");
}

#[test]
fn what_a_dead_main_process_left_in_its_group_is_stopped_before_the_next_start() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    // The main process leaves a child that keeps running, then dies.
    agent.write_config(&format!(
        "[process.leaky]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"2s\"\n",
        sh(&format!(
            "(trap 'echo left-stopped >> {0}; exit 0' TERM; echo left-started >> {0}; while :; do sleep 0.05; done) & \
             sleep 0.3; echo main-exits >> {0}; exit 1",
            log.display()
        ))
    ));
    agent.launch();
    wait_until(WAIT, "the second run starts", || lines(&log).iter().filter(|l| *l == "left-started").count() >= 2);
    agent.ctl(&["stop", "leaky"]).ok();
    let seen = lines(&log);
    let first_stop = seen.iter().position(|l| l == "left-stopped").expect("the leftover was stopped");
    let second_start = seen.iter().enumerate().filter(|(_, l)| *l == "left-started").nth(1).unwrap().0;
    assert!(first_stop < second_start, "leftover stopped before the next run: {seen:?}");
}

#[test]
fn the_agent_reaps_orphaned_grandchildren() {
    let mut agent = Agent::new("");
    let pids = agent.path("pids");
    // The main process starts short-lived children in sessions of their own that ignore
    // TERM (so the cleanup of what it leaves lets them finish) and exits before them: they
    // are re-parented to the agent (the subreaper), which must reap them.
    agent.write_config(&format!(
        "[process.orphans]\ncommand = {}\nstart_secs = \"0s\"\nrestart = \"never\"\n",
        sh(&format!(
            "touch {0}.ready; for i in 1 2 3; do setsid sh -c \"trap '' TERM; echo >> {0}.ready; sleep 0.2; echo \\$\\$ >> {0}\" & done; \
             while [ $(wc -l < {0}.ready) -lt 3 ]; do sleep 0.01; done; exit 0",
            pids.display()
        ))
    ));
    agent.launch();
    wait_until(WAIT, "the orphans finish", || lines(&pids).len() == 3);
    agent.wait_state("orphans", 0, "exited");
    wait_until(WAIT, "no zombie is left", || zombies_of(agent.pid()).is_empty());
    assert!(children_of(agent.pid()).is_empty(), "{:?}", children_of(agent.pid()));
}

#[test]
fn an_idle_agent_does_not_wake_up() {
    let mut agent = Agent::start(&sleepers(20));
    agent.wait_running("worker", 20);
    let switches = |pid: i32| -> u64 {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines().filter(|l| l.contains("ctxt_switches")) {
                total += line.split_whitespace().last().unwrap().parse::<u64>().unwrap();
            }
        }
        total
    };
    let pid = agent.pid();
    wait_until(WAIT, "the agent settles after start-up", || {
        let before = switches(pid);
        std::thread::sleep(Duration::from_millis(200));
        switches(pid) == before
    });
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(switches(pid), before, "an idle agent runs no timer and no poll");
}

/// Each clone copies the spawner thread's descriptor table into the child, and exec closes
/// the copies: with the agent's table (two descriptors per instance) starting n instances
/// cost time in n². The spawner keeps a table of its own, as small with 300 instances as
/// with one, and the children still get only their own descriptors.
#[test]
fn the_spawner_keeps_a_descriptor_table_of_its_own_that_does_not_grow_with_the_instances() {
    let mut agent = Agent::start(&sleepers(300));
    let pids = agent.wait_running("worker", 300);
    let agent_pid = agent.pid();
    let table = |task: &str| std::fs::read_dir(format!("/proc/{agent_pid}/task/{task}/fd")).unwrap().count();
    // The spawner is the main thread (the parent thread of every child, which an upgrade's
    // execve keeps); the runtime runs on the thread named `agent`.
    let runtime = std::fs::read_dir(format!("/proc/{agent_pid}/task"))
        .unwrap()
        .flatten()
        .map(|task| task.file_name().into_string().unwrap())
        .find(|task| {
            std::fs::read_to_string(format!("/proc/{agent_pid}/task/{task}/comm")).is_ok_and(|c| c.trim() == "agent")
        })
        .expect("the agent has a thread named agent");
    let (own, agents) = (table(&agent_pid.to_string()), table(&runtime));
    assert!(agents >= 600, "the agent holds two descriptors per instance: {agents}");
    assert!(own < 50, "the spawner's table holds {own} descriptors, the agent's {agents}");
    // A child started now, with the agent's table at its largest, still gets only its own.
    kill(pids[299], libc::SIGKILL);
    wait_until(WAIT, "worker:299 has a new pid", || agent.pid_of("worker", 299).is_some_and(|pid| pid != pids[299]));
    let child = agent.pid_of("worker", 299).unwrap();
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{child}/fd"))
        .unwrap()
        .flatten()
        .map(|fd| fd.file_name().into_string().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    assert_eq!(fds, [0, 1, 2, 3], "stdin, stdout, stderr and the message pipe");
}

#[test]
fn stop_reaches_an_instance_frozen_with_sigstop() {
    let mut agent = Agent::start(
        "[process.frozen]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\nstop_timeout = \"120s\"\n",
    );
    let pid = agent.wait_running("frozen", 1)[0];
    kill(pid, libc::SIGSTOP);
    wait_until(WAIT, "the instance is stopped", || crate::support::stat(pid).is_some_and(|s| s.state == 'T'));
    // Without a SIGCONT after the stop signal, this would wait out the 120 s stop_timeout.
    agent.ctl(&["stop", "frozen"]).ok();
    assert!(!alive(pid));
    assert_eq!(agent.row("frozen", 0)["last_exit"]["signal"], "TERM");
}

#[test]
fn a_start_that_cannot_run_says_why_in_its_answer_and_in_the_logs() {
    let mut agent = Agent::new("");
    let script = agent.path("broken.sh");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    agent.write_config(&format!(
        "[process.nocwd]\ncommand = [\"sleep\", \"100\"]\ncwd = \"/nonexistent/dir\"\nautostart = false\n\
         start_retries = 2\n\
         [process.noprog]\ncommand = [\"no-such-program-here\"]\nautostart = false\nstart_retries = 2\n\
         [process.badexec]\ncommand = [\"{}\"]\nautostart = false\nstart_retries = 2\n",
        script.display()
    ));
    agent.launch();
    let bad_interpreter = format!("cannot run `{}`: No such file or directory", script.display());
    for (name, why) in [
        ("nocwd", "working directory /nonexistent/dir does not exist"),
        ("noprog", "program `no-such-program-here` not found in PATH"),
        ("badexec", bad_interpreter.as_str()),
    ] {
        let out = agent.ctl(&["start", name]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(&format!("{name}:0 did not start: it is fatal: ")), "{out:?}");
        assert!(out.stderr.contains(why), "{out:?}");
        let logs = agent.ctl(&["logs", name]);
        assert!(logs.stdout.contains("procagent: ") && logs.stdout.contains(why), "{logs:?}");
    }
}

#[test]
fn the_kill_of_a_dead_runs_leftovers_never_reaches_the_next_run() {
    let mut agent = Agent::new("");
    let app = agent.path("app.sh");
    let ready = agent.path("ready");
    std::fs::write(
        &app,
        format!("sh -c \"trap '' TERM; touch {}; exec sleep 100000\" &\nexec sleep 100000\n", ready.display()),
    )
    .unwrap();
    agent.write_config(&format!(
        "[process.app]\ncommand = [\"sh\", \"{}\"]\nstart_secs = \"0s\"\nstop_timeout = \"1s\"\n",
        app.display()
    ));
    agent.launch();
    let first = agent.wait_running("app", 1)[0];
    wait_until(WAIT, "the TERM-ignoring child is up", || ready.exists());
    kill(first, libc::SIGKILL);
    // The leftover ignores TERM, so it is killed at stop_timeout; then the next run starts.
    let mut second = 0;
    wait_until(WAIT, "app:0 runs again with a new pid", || {
        let row = agent.row("app", 0);
        second = row["pid"].as_i64().unwrap_or(0) as i32;
        row["state"] == "running" && second != first && second != 0
    });
    // The group-kill rechecks back off 20 ms, 40 ms … 1 s: the old code killed the new run
    // within that window, again and again.
    holds_for(Duration::from_millis(2500), Duration::from_millis(50), "the new run lives", || {
        let row = agent.row("app", 0);
        row["pid"] == second && row["restarts"] == 1
    });
}
