//! Fleet policies: recycling by memory, age and messages, as warm restarts of one instance
//! at a time that are no failures.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Agent, SPARE, WAIT, Watcher, alive, holds_for, run, sh, wait_until};

/// A python3 worker that, on its first run only (a marker file says), holds 64 MiB it
/// really touches, a MiB at a time.
fn grower(agent: &Agent, extra: &str) -> String {
    let mark = agent.path("grew");
    let script = format!(
        "import os, time\n\
         grow = not os.path.exists({mark:?})\n\
         open({mark:?}, 'a').close()\n\
         held = []\n\
         while True:\n\
         \x20   if grow and len(held) < 64:\n\
         \x20       held.append(b'x' * (1 << 20))\n\
         \x20   time.sleep(0.02)\n",
        mark = mark.display().to_string()
    );
    let argv = serde_json::to_string(&["python3", "-c", &script]).unwrap();
    format!("{SPARE}[process.grow]\ncommand = {argv}\nstart_secs = \"0s\"\n{extra}\n")
}

fn recycled(event: &Value, name: &str, instance: u64) -> bool {
    event["event"] == "recycled" && event["name"] == name && event["instance"] == instance
}

#[test]
fn max_memory_recycles_a_growing_child_and_leaves_its_replacement_alone() {
    let mut agent = Agent::new("");
    agent.write_config(&grower(&agent, "max_memory = \"32MiB\"\nrecycle_check = \"200ms\""));
    agent.launch();
    let watcher = Watcher::subscribed(&agent, true);
    let first = agent.wait_running("grow", 1)[0];
    let seen = watcher.until_json("grow:0 is recycled", |e| recycled(e, "grow", 0));
    let event = seen.last().unwrap();
    assert_eq!(event["reason"], "memory", "{event}");
    assert!(event["memory_bytes"].as_u64().unwrap() > 32 << 20, "the figure that crossed the limit: {event}");

    wait_until(Duration::from_secs(15), "the replacement runs", || {
        let row = agent.row("grow", 0);
        row["state"] == "running" && row["pid"].as_i64().is_some_and(|pid| pid as i32 != first)
    });
    assert!(!alive(first), "the old run is gone");
    let row = agent.row("grow", 0);
    assert_eq!(row["recycles"], 1, "{row}");
    assert_eq!(row["restarts"], 0, "a recycle is no failure: {row}");
    let metrics = agent.ctl(&["metrics"]).ok().stdout.clone();
    assert!(
        metrics.lines().any(|line| line.starts_with("procctl_instance_recycles_total{")
            && line.contains("name=\"grow\"")
            && line.ends_with(" 1")),
        "the metrics count the recycle:\n{metrics}"
    );
    let second = agent.pid_of("grow", 0).unwrap();
    holds_for(Duration::from_secs(1), Duration::from_millis(100), "the small replacement is left alone", || {
        agent.pid_of("grow", 0) == Some(second)
    });
}

#[test]
fn max_age_recycles_one_instance_at_a_time() {
    let mut agent = Agent::new(&format!(
        "{SPARE}[process.old]\ncommand = [\"sleep\", \"100000\"]\ninstances = 2\nstart_secs = \"0s\"\nmax_age = \"1s\"\n"
    ));
    agent.launch();
    let watcher = Watcher::subscribed(&agent, true);
    // Until each instance has been recycled once: between two recycles, the first
    // recycled instance's replacement came up.
    let mut busy: Option<u64> = None;
    let mut done = std::collections::BTreeSet::new();
    watcher.until_json("both instances are recycled", |e| {
        if e["name"] != "old" {
            return false;
        }
        let instance = e["instance"].as_u64().unwrap();
        match e["event"].as_str().unwrap() {
            "recycled" => {
                assert_eq!(busy, None, "a second recycle while one is going on: {e}");
                assert_eq!(e["reason"], "age", "{e}");
                assert!(e["uptime_secs"].as_u64().unwrap() >= 1, "{e}");
                busy = Some(instance);
            }
            "started" if busy == Some(instance) => {
                busy = None;
                done.insert(instance);
            }
            _ => {}
        }
        done.len() == 2
    });
    for row in agent.list("old") {
        assert_eq!(row["restarts"], 0, "{row}");
        assert!(row["recycles"].as_u64().unwrap() >= 1, "{row}");
    }
}

#[test]
fn max_messages_recycles_after_the_last_message_is_delivered() {
    let mut agent = Agent::new("");
    let out = agent.path("rec");
    agent.write_config(&format!(
        "{SPARE}[process.rec]\ncommand = {}\nstart_secs = \"0s\"\nmax_messages = 3\n",
        // A worker that reads its queue to the end when told to stop.
        sh(&format!(
            "trap '' TERM; while IFS= read -r m <&\"$PROCCTL_PIPE_FD\"; do printf '%s %s\\n' $$ \"$m\" >> {}; done",
            out.display()
        ))
    ));
    agent.launch();
    let first = agent.wait_running("rec", 1)[0];
    let watcher = Watcher::subscribed(&agent, true);
    agent.ctl(&["send", "rec", "one"]).ok();
    agent.ctl(&["send", "rec", "two"]).ok();
    assert_eq!(agent.row("rec", 0)["messages"], 2);
    agent.ctl(&["send", "rec", "three"]).ok();
    let seen = watcher.until_json("rec:0 is recycled", |e| recycled(e, "rec", 0));
    let event = seen.last().unwrap();
    assert_eq!((event["reason"].as_str(), event["messages"].as_u64()), (Some("messages"), Some(3)), "{event}");
    wait_until(Duration::from_secs(15), "the replacement runs", || {
        agent.pid_of("rec", 0).is_some_and(|pid| pid != first) && agent.state_of("rec", 0) == "running"
    });
    let row = agent.row("rec", 0);
    assert_eq!(
        (row["messages"].as_u64(), row["recycles"].as_u64(), row["restarts"].as_u64()),
        (Some(0), Some(1), Some(0))
    );
    let got = std::fs::read_to_string(&out).unwrap();
    let want: Vec<String> = ["one", "two", "three"].iter().map(|m| format!("{first} {m}")).collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), want, "the queue drained into the old run before it stopped");
}

#[test]
fn stop_during_a_recycle_stops_cleanly() {
    // The old run takes a second to stop, so the stop comes while the recycle goes on.
    let mut agent = Agent::new(&format!(
        "{SPARE}[process.slow]\ncommand = {}\nstart_secs = \"0s\"\nmax_age = \"1s\"\nstop_timeout = \"10s\"\n",
        sh("trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done")
    ));
    agent.launch();
    let watcher = Watcher::subscribed(&agent, true);
    let first = agent.wait_running("slow", 1)[0];
    watcher.until_json("slow:0 is recycled", |e| recycled(e, "slow", 0));
    assert_eq!(agent.state_of("slow", 0), "stopping");
    agent.ctl(&["stop", "slow"]).ok();
    assert_eq!(agent.state_of("slow", 0), "stopped");
    assert!(!alive(first));
    holds_for(Duration::from_millis(1500), Duration::from_millis(100), "it stays stopped", || {
        agent.state_of("slow", 0) == "stopped"
    });
    agent.ctl(&["start", "slow"]).ok();
    agent.wait_running("slow", 1);
}

#[test]
fn a_recycle_decided_during_a_rolling_restart_waits_for_it() {
    // Each stop takes a second, so the roll is still stopping rec:1 when rec:0, already
    // restarted, reaches its max_messages.
    let mut agent = Agent::new(&format!(
        "{SPARE}[process.rec]\ncommand = {}\ninstances = 2\nstart_secs = \"0s\"\nmax_messages = 1\nstop_timeout = \"10s\"\n",
        sh("trap 'sleep 1; exit 0' TERM; while IFS= read -r m <&\"$PROCCTL_PIPE_FD\"; do :; done")
    ));
    agent.launch();
    agent.wait_running("rec", 2);
    let watcher = Watcher::subscribed(&agent, true);
    let mut restart = agent.ctl_command(&["restart", "rec"]).spawn().unwrap();
    watcher.until_json("the roll has restarted rec:0", |e| {
        e["event"] == "started" && e["name"] == "rec" && e["instance"] == 0
    });
    agent.ctl(&["send", "rec:0", "last"]).ok();
    let seen = watcher.until_json("rec:0 is recycled", |e| recycled(e, "rec", 0));
    let events: Vec<(String, u64)> = seen
        .iter()
        .filter(|e| e["name"] == "rec")
        .map(|e| (e["event"].as_str().unwrap().to_string(), e["instance"].as_u64().unwrap()))
        .collect();
    let roll_done = events.iter().position(|e| *e == ("started".to_string(), 1));
    assert!(roll_done.is_some(), "the roll finished before the recycle began: {events:?}");
    assert!(restart.wait().unwrap().success());
    wait_until(Duration::from_secs(15), "the recycled rec:0 runs again", || {
        agent.row("rec", 0)["recycles"] == 1 && agent.state_of("rec", 0) == "running"
    });
}

#[test]
fn recycling_limits_are_checked_at_load() {
    let cases = [
        ("max_messages = 0", "max_messages"),
        ("max_age = \"0s\"", "max_age"),
        ("recycle_check = \"0s\"", "recycle_check"),
        ("max_memory = \"lots\"", "max_memory"),
    ];
    for (line, key) in cases {
        let agent = Agent::new(&format!("[process.w]\ncommand = [\"sleep\", \"1\"]\n{line}\n"));
        let out = run(&mut agent.command(), None, WAIT);
        assert_eq!(out.code, Some(1), "{line}: {out:?}");
        assert!(out.stderr.contains(&format!(":3: process.w.{key}")), "{line}: {out:?}");
    }
}

/// Follows `warm`'s events until `count` of its instances have started: the most that were
/// starting at once, and how many waited on max_starting meanwhile.
fn starts_of_warm(watcher: &Watcher, what: &str, count: i32) -> (i32, i32) {
    let (mut starting, mut most, mut held, mut started) = (0i32, 0, 0, 0);
    watcher.until_json(what, |e| {
        if e["name"] != "warm" {
            return false;
        }
        match e["event"].as_str().unwrap() {
            "spawned" => starting += 1,
            "started" => {
                starting -= 1;
                started += 1;
            }
            "waiting" => {
                assert_eq!(e["on"], serde_json::json!(["max_starting"]), "{e}");
                held += 1;
            }
            _ => {}
        }
        most = most.max(starting);
        started == count
    });
    (most, held)
}

#[test]
fn max_starting_lets_that_many_start_at_once_and_the_rest_wait() {
    let mut agent = Agent::new(&format!(
        "{SPARE}[process.warm]\ncommand = [\"sleep\", \"100000\"]\ninstances = 5\nstart_secs = \"300ms\"\nautostart = false\nmax_starting = 2\n"
    ));
    agent.launch();
    let watcher = Watcher::subscribed(&agent, true);
    let out = agent.ctl(&["start", "warm"]);
    out.ok();
    let (most, held) = starts_of_warm(&watcher, "all five started", 5);
    assert_eq!(most, 2, "at most two starting at once, and two did");
    assert_eq!(held, 3, "the other three waited on max_starting");
    assert!(agent.list("warm").iter().all(|row| row["state"] == "running"));

    // A restart after an exit goes through the same gate: kill three, two start at once.
    let pids: Vec<i32> = agent.list("warm").iter().take(3).map(|row| row["pid"].as_i64().unwrap() as i32).collect();
    for pid in &pids {
        crate::support::kill(*pid, 9);
    }
    let (most, _) = starts_of_warm(&watcher, "the three killed are back", 3);
    assert!(most <= 2, "restarts after exits wait on max_starting too");
}

/// A TOML string of `sh -c SCRIPT`, for a hook.
fn hook(script: &str) -> String {
    serde_json::to_string(script).unwrap()
}

#[test]
fn hooks_run_with_the_instance_environment_and_their_output_in_its_log() {
    let mut agent = Agent::new("");
    let file = agent.path("hooks");
    let record = format!(
        "echo \"$PROCCTL_EVENT $PROCCTL_NAME:$PROCCTL_INSTANCE code=$PROCCTL_EXIT_CODE signal=$PROCCTL_EXIT_SIGNAL restarts=$PROCCTL_RESTARTS $(pwd)\" >> {}",
        file.display()
    );
    agent.write_config(&format!(
        "[process.svc]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\ncwd = {cwd:?}\n\
         pre_start = {pre}\npost_stop = {post}\n\n\
         [process.bad]\ncommand = [\"sh\", \"-c\", \"exit 4\"]\nstart_retries = 2\nstart_secs = \"1s\"\non_fatal = {fatal}\n",
        cwd = agent.path("").display().to_string(),
        pre = hook(&format!("{record}; echo warming up")),
        post = hook(&record),
        fatal = hook(&record),
    ));
    agent.launch();
    agent.wait_running("svc", 1);
    wait_until(WAIT, "pre_start's output is in the instance's log", || {
        agent.ctl(&["logs", "svc"]).stdout.contains("[pre_start] warming up")
    });
    agent.ctl(&["stop", "svc"]).ok();
    wait_until(WAIT, "post_stop and on_fatal ran", || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.contains("post_stop") && text.contains("fatal bad")
    });
    let text = std::fs::read_to_string(&file).unwrap();
    let dir = agent.path("").display().to_string();
    let dir = dir.trim_end_matches('/');
    assert!(text.contains(&format!("pre_start svc:0 code= signal= restarts=0 {dir}")), "{text}");
    assert!(text.contains(&format!("post_stop svc:0 code= signal=TERM restarts=0 {dir}")), "{text}");
    assert!(text.contains("fatal bad:0 code=4 signal= restarts=1"), "{text}");
}

#[test]
fn a_failing_pre_start_is_a_failed_start_that_names_the_hook() {
    let mut agent = Agent::new("");
    let ran = agent.path("ran");
    agent.write_config(&format!(
        "[process.gate]\ncommand = {}\nstart_retries = 2\nautostart = false\npre_start = {}\n",
        sh(&format!("touch {}; exec sleep 100000", ran.display())),
        hook("echo not today; exit 3"),
    ));
    agent.launch();
    let out = agent.ctl(&["start", "gate"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("the pre_start hook failed: exited with code 3"), "{out:?}");
    assert_eq!(agent.state_of("gate", 0), "fatal", "it counts toward start_retries");
    assert!(!ran.exists(), "the command never ran");
}

#[test]
fn hanging_forking_and_flooding_hooks_are_killed_at_hook_timeout_while_the_agent_serves() {
    let mut agent = Agent::new("");
    let pids = agent.path("pids");
    // Each hook leaves a child that ignores SIGTERM, then hangs ignoring SIGTERM itself; the
    // post_stop hook floods its output meanwhile.
    let hang = |flood: bool| {
        hook(&format!(
            "trap '' TERM; (trap '' TERM; sleep 100000) & echo $$ $! >> {}; {}",
            pids.display(),
            if flood { "yes flood" } else { "sleep 100000" }
        ))
    };
    agent.write_config(&format!(
        "[process.stuck]\ncommand = [\"sleep\", \"100000\"]\nautostart = false\nstart_retries = 1\nhook_timeout = \"1s\"\n\
         pre_start = {}\n\n[process.flood]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\nhook_timeout = \"1s\"\npost_stop = {}\n",
        hang(false),
        hang(true),
    ));
    agent.launch();
    agent.wait_running("flood", 1);
    let start = agent.ctl_command(&["start", "stuck"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    wait_until(WAIT, "the pre_start hook runs", || {
        std::fs::read_to_string(&pids).is_ok_and(|t| t.lines().count() == 1)
    });
    // The agent answers while the hook hangs.
    assert_eq!(agent.state_of("stuck", 0), "starting");
    agent.ctl(&["stop", "flood"]).ok();
    wait_until(WAIT, "the post_stop hook runs", || {
        std::fs::read_to_string(&pids).is_ok_and(|t| t.lines().count() == 2)
    });
    assert_eq!(agent.state_of("flood", 0), "stopped", "a stop does not wait for its post_stop hook");
    let out = start.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hook_timeout"), "{out:?}");
    let all: Vec<i32> =
        std::fs::read_to_string(&pids).unwrap().split_whitespace().map(|pid| pid.parse().unwrap()).collect();
    wait_until(WAIT, "every hook process is gone", || all.iter().all(|&pid| !alive(pid)));
    assert!(agent.ctl(&["logs", "flood"]).stdout.contains("[post_stop] flood"));
    let rss = crate::support::status_kib(agent.pid(), "VmRSS");
    assert!(rss < 200 << 10, "a flood costs bounded memory: agent RSS {rss} KiB");
}

/// A redis-server of the test's own on a loopback port, stopped when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let redis = Redis { child, port, _dir: dir };
        wait_until(WAIT, "redis answers", || redis.cli(&["ping"]) == "PONG");
        redis
    }

    fn cli(&self, args: &[&str]) -> String {
        let out =
            std::process::Command::new("redis-cli").arg("-p").arg(self.port.to_string()).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn queue_workers(redis: &Redis, command: &str, extra: &str) -> String {
    format!(
        "{SPARE}[process.q]\ncommand = {command}\nstart_secs = \"0s\"\nstop_timeout = \"10s\"\n{extra}\n\
         [process.q.autoscale]\nmin = 1\nmax = 4\nprobe = [\"redis-cli\", \"-p\", \"{}\", \"llen\", \"jobs\"]\n\
         per_instance = 10\nevery = \"200ms\"\ndown_after = \"1s\"\n",
        redis.port
    )
}

fn count(agent: &mut Agent) -> usize {
    agent.list("q").len()
}

#[test]
fn autoscale_follows_a_redis_list_and_scale_pauses_it() {
    let redis = Redis::start(26391);
    let mut agent = Agent::new(&queue_workers(&redis, "[\"sleep\", \"100000\"]", ""));
    agent.launch();
    agent.wait_running("q", 1);
    assert_eq!(agent.row("q", 0)["autoscale"], "on");
    let watcher = Watcher::subscribed(&agent, true);
    let jobs: Vec<String> = (0..35).map(|i| format!("job-{i}")).collect();
    let mut push = vec!["rpush", "jobs"];
    push.extend(jobs.iter().map(String::as_str));
    redis.cli(&push);
    let seen = watcher.until_json("q is scaled up", |e| e["event"] == "scaled" && e["name"] == "q");
    let scaled = seen.last().unwrap();
    assert_eq!((scaled["from"].as_u64(), scaled["to"].as_u64()), (Some(1), Some(4)), "ceil(35 / 10) = 4: {scaled}");
    agent.wait_running("q", 4);

    // A scale by hand pins the count and pauses autoscaling.
    agent.ctl(&["scale", "q", "2"]).ok();
    assert!(agent.list("q").iter().all(|row| row["autoscale"] == "paused"));
    holds_for(Duration::from_secs(1), Duration::from_millis(100), "the pinned count stays", || count(&mut agent) == 2);
    let out = agent.ctl(&["scale", "q", "auto"]);
    assert!(out.ok().stdout.contains("autoscaling of q is on"), "{out:?}");
    wait_until(WAIT, "autoscaling brings q back to 4", || count(&mut agent) == 4);

    // Down only after down_after, to min.
    redis.cli(&["del", "jobs"]);
    watcher.until_json("q is scaled down", |e| e["event"] == "scaled" && e["name"] == "q" && e["to"] == 1);
    assert_eq!(count(&mut agent), 1);

    // A probe that prints no number changes nothing and is told once per streak.
    redis.cli(&["set", "jobs", "not a list"]);
    let seen = watcher.until_json("an autoscale_error", |e| e["event"] == "autoscale_error");
    assert_eq!(seen.last().unwrap()["name"], "q");
    holds_for(Duration::from_secs(1), Duration::from_millis(50), "one event per streak", || {
        watcher.lines.try_recv().map_or(true, |line| !line.contains("autoscale_error"))
    });
    assert_eq!(count(&mut agent), 1);
}

#[test]
fn an_autoscale_decision_during_a_rolling_restart_waits_for_it() {
    let redis = Redis::start(26392);
    // Its stop takes a second: the roll goes on while the queue fills.
    let slow = sh("trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done");
    let mut agent = Agent::new(&queue_workers(&redis, &slow, ""));
    agent.launch();
    agent.wait_running("q", 1);
    let watcher = Watcher::subscribed(&agent, true);
    let mut restart = agent.ctl_command(&["restart", "q"]).spawn().unwrap();
    watcher.until_json("the roll stops q:0", |e| e["name"] == "q" && e["event"] == "exited");
    redis.cli(&["rpush", "jobs", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"]);
    let seen = watcher.until_json("q is scaled", |e| e["event"] == "scaled" && e["name"] == "q");
    let events: Vec<String> =
        seen.iter().filter(|e| e["name"] == "q").map(|e| e["event"].as_str().unwrap().to_string()).collect();
    let started = events.iter().position(|e| e == "started");
    assert!(started.is_some(), "the roll's replacement ran before the scale: {events:?}");
    assert!(restart.wait().unwrap().success());
    agent.wait_running("q", 2);
}

#[test]
fn autoscale_mistakes_name_their_key() {
    let table = |extra: &str, keys: &str| {
        format!(
            "[process.w]\ncommand = [\"sleep\", \"1\"]\n{extra}\n[process.w.autoscale]\n{keys}\nprobe = [\"echo\", \"1\"]\n"
        )
    };
    let cases = [
        (table("", "min = 5\nmax = 2\nper_instance = 1"), "process.w.autoscale.min", "above max"),
        (table("", "min = 1\nmax = 2\nper_instance = 0"), "process.w.autoscale.per_instance", "1 or more"),
        (table("instances = 3", "min = 1\nmax = 2\nper_instance = 1"), "process.w.autoscale", "instances"),
        (table("", "min = 1\nmax = 2\nper_instance = 1\nevery = \"0s\""), "process.w.autoscale.every", "above zero"),
    ];
    for (toml, key, word) in cases {
        let agent = Agent::new(&toml);
        let out = run(&mut agent.command(), None, WAIT);
        assert_eq!(out.code, Some(1), "{toml}: {out:?}");
        assert!(out.stderr.contains(key) && out.stderr.contains(word), "{toml}: {out:?}");
    }
}
