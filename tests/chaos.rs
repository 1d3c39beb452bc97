use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Agent, WAIT, alive, holds_for, kill, sh, sleepers, wait_every, wait_until, zombies_of};

/// Zombies of the agent that have stayed zombies for `ZOMBIE_GRACE` or more: the agent reaps
/// at once, but a debug build on a loaded machine may take a few hundred milliseconds to get
/// to it during a storm; a zombie it forgot stays for good.
fn lasting_zombies(agent: i32, first_seen: &mut HashMap<i32, Instant>) -> Vec<i32> {
    let now: HashSet<i32> = zombies_of(agent).into_iter().collect();
    first_seen.retain(|pid, _| now.contains(pid));
    for &pid in &now {
        first_seen.entry(pid).or_insert_with(Instant::now);
    }
    first_seen.iter().filter(|(_, at)| at.elapsed() >= ZOMBIE_GRACE).map(|(&pid, _)| pid).collect()
}

const ZOMBIE_GRACE: Duration = Duration::from_secs(2);

#[test]
fn a_crash_storm_of_100_instances_ends_in_fatal_with_the_agent_answering_throughout() {
    let mut agent = Agent::start(&format!(
        "[process.storm]\ncommand = {}\ninstances = 100\nstart_secs = \"1s\"\nstart_retries = 12\n",
        sh("exit 1")
    ));
    let pid = agent.pid();
    let mut zombies = HashMap::new();
    let began = Instant::now();
    let mut answers = 0;
    wait_every(Duration::from_secs(90), Duration::from_millis(100), "every instance is fatal", || {
        let rows = agent.list("storm");
        answers += 1;
        let lasting = lasting_zombies(pid, &mut zombies);
        assert!(lasting.is_empty(), "zombies stayed for {ZOMBIE_GRACE:?}: {lasting:?}");
        rows.iter().all(|r| r["state"] == "fatal")
    });
    // 0 + 0.1 + 0.2 + ... capped at 5 s: the storm lasts about 26 s.
    assert!(began.elapsed() > Duration::from_secs(20), "backoff spread the retries out");
    assert!(answers > 10, "list kept answering during the storm");
    for row in agent.list("storm") {
        assert_eq!(row["restarts"], 11, "start_retries starts, so one fewer restarts: {row}");
        assert_eq!(row["last_exit"]["code"], 1);
    }
}

#[test]
fn sigkill_in_a_loop_while_list_and_send_run() {
    let mut agent = Agent::start(&format!(
        "[process.w]\ncommand = {}\ninstances = 8\nstart_secs = \"0s\"\n",
        sh("while IFS= read -r m <&3; do :; done")
    ));
    agent.wait_running("w", 8);
    let stop = Arc::new(AtomicBool::new(false));
    let socket = agent.socket.clone();
    let killer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = crate::support::run(
                    std::process::Command::new(crate::support::bin("procctl"))
                        .args(["pid", "w"])
                        .env("PROCCTL_SOCKET", &socket),
                    None,
                    WAIT,
                );
                if let Some(victim) = out.stdout.lines().next().and_then(|l| l.parse().ok()) {
                    kill(victim, libc::SIGKILL);
                    kills += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            kills
        })
    };
    holds_for(Duration::from_secs(3), Duration::ZERO, "every send succeeds or names its instance", || {
        agent.list("all");
        let out = agent.ctl(&["send", "w", "hello"]);
        match out.code {
            Some(0) => true,
            Some(1) => out.stderr.contains("w:"),
            other => panic!("send ended with {other:?}: {out:?}"),
        }
    });
    stop.store(true, Ordering::Relaxed);
    assert!(killer.join().unwrap() > 10);
    agent.wait_running("w", 8);
    wait_until(WAIT, "no zombie is left", || zombies_of(agent.pid()).is_empty());
}

#[test]
fn a_second_sigterm_during_shutdown_leaves_nothing_behind() {
    let mut agent = Agent::start(&format!(
        "[process.stubborn]\ncommand = {}\ninstances = 3\nstart_secs = \"0s\"\nstop_timeout = \"60s\"\n",
        sh("trap '' TERM; while :; do sleep 0.05; done")
    ));
    let pids = agent.wait_running("stubborn", 3);
    kill(agent.pid(), libc::SIGTERM);
    wait_until(WAIT, "the instances are stopping", || agent.list("stubborn").iter().all(|r| r["state"] == "stopping"));
    kill(agent.pid(), libc::SIGTERM);
    assert_eq!(agent.wait_exit(WAIT), Some(0));
    for pid in pids {
        assert!(!alive(pid));
    }
    assert!(agent.leftovers().is_empty());
}

#[test]
fn sigint_acts_as_shutdown() {
    let mut agent = Agent::start(&sleepers(2));
    let pids = agent.wait_running("worker", 2);
    kill(agent.pid(), libc::SIGINT);
    assert_eq!(agent.wait_exit(WAIT), Some(0));
    assert!(pids.iter().all(|&pid| !alive(pid)));
}

#[test]
fn shutdown_of_200_instances_that_ignore_sigterm_takes_one_stop_timeout() {
    let mut agent = Agent::start(&format!(
        "[process.stubborn]\ncommand = {}\ninstances = 200\nstart_secs = \"0s\"\nstop_timeout = \"1s\"\n",
        sh("trap '' TERM; while :; do sleep 1; done")
    ));
    agent.wait_running("stubborn", 200);
    let began = Instant::now();
    agent.shutdown();
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(1), "each waited its stop_timeout");
    // In parallel: one stop_timeout plus a margin, where one after the other would take 200 s.
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    assert!(agent.leftovers().is_empty());
}

#[test]
fn a_scale_survives_kill_9_of_the_agent() {
    let mut agent = Agent::start(&sleepers(1));
    agent.ctl(&["scale", "worker", "3"]).ok();
    let old = agent.wait_running("worker", 3);
    let table = agent.state.join("table.json");
    wait_until(WAIT, "the table on disk has the count", || {
        std::fs::read_to_string(&table).is_ok_and(|t| t.contains("\"count\": 3"))
    });
    agent.kill9();
    wait_until(WAIT, "the instances die with the agent", || old.iter().all(|&pid| !alive(pid)));
    agent.launch();
    agent.wait_running("worker", 3);
}

#[test]
fn an_agent_whose_log_is_a_closed_pipe_keeps_working() {
    let mut agent = Agent::new(&format!(
        "{}[process.crashy]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 3\n",
        sleepers(1),
        sh("exit 1")
    ));
    // The read end is closed before the agent writes its first line.
    let (read, write) = std::io::pipe().unwrap();
    drop(read);
    agent.launch_logging_to(&[], write.into());
    agent.wait_state("crashy", 0, "fatal");
    agent.wait_running("worker", 1);
    assert!(agent.is_running(), "log lines into a closed pipe must not end the agent");
}

/// How many bytes wait in the pipe.
fn queued(read: &std::io::PipeReader) -> i32 {
    use std::os::fd::AsRawFd;
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(read.as_raw_fd(), libc::FIONREAD, &mut bytes) };
    bytes
}

/// Reads what the pipe holds now, without waiting for more.
fn drain(read: &std::io::PipeReader) -> String {
    use std::os::fd::AsRawFd;
    let fd = read.as_raw_fd();
    let mut bytes = vec![];
    let mut chunk = [0u8; 65536];
    // SAFETY: fcntl and read on an fd we own, into a buffer of the given size.
    unsafe {
        libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
        loop {
            let n = libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len());
            if n <= 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n as usize]);
        }
        libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) & !libc::O_NONBLOCK);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn an_agent_whose_log_is_a_full_pipe_nobody_reads_keeps_working() {
    let mut agent = Agent::new(&sleepers(1));
    // We hold the read end and do not read it until the end.
    let (mut read, write) = std::io::pipe().unwrap();
    agent.launch_logging_to(&["--max-connections", "1"], write.into());
    agent.wait_running("worker", 1);
    let held = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    wait_until(WAIT, "the held connection counts", || agent.ctl(&["list"]).code == Some(1));
    // Each refused connection is a log line: refuse connections until the pipe is full, then
    // a hundred more. Reading each refusal to its end keeps us in step with the agent.
    let refused = || {
        let mut stream = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reply = vec![];
        std::io::Read::read_to_end(&mut stream, &mut reply).expect("the agent answers with its log full");
    };
    let mut tries = 0;
    while queued(&read) < 60_000 {
        tries += 1;
        assert!(tries < 20_000, "the log pipe never filled up");
        refused();
    }
    for _ in 0..100 {
        refused();
    }
    drop(held);
    wait_until(WAIT, "the agent answers with its log full", || agent.ctl(&["list"]).code == Some(0));

    // Once the log drains, the next line says how many were lost.
    let mut text = drain(&read);
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_string(&mut read, &mut text);
        let _ = log_tx.send(text);
    });
    kill(agent.pid(), libc::SIGTERM);
    assert_eq!(agent.wait_exit(WAIT), Some(0));
    let log = log_rx.recv_timeout(WAIT).expect("the log pipe closes when the agent exits");
    assert!(log.contains("log line(s) dropped: stderr was not accepting them"), "{log}");
    let after_drop = log.split("log line(s) dropped").nth(1).unwrap_or_default();
    assert!(after_drop.contains("procagent: stop signal: shutting down"), "{log}");
}

#[test]
fn shutdown_also_stops_what_left_its_instance_group() {
    let mut agent = Agent::new("");
    let escaped = agent.path("escaped");
    // The instance starts a daemon in a session of its own, so it is outside the instance's
    // process group; when the instance stops, the agent (the subreaper) adopts it.
    agent.write_config(&format!(
        "[process.d]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh(&format!("setsid sh -c 'echo $$ > {}; exec sleep 100000' & exec sleep 100000", escaped.display()))
    ));
    agent.launch();
    agent.wait_running("d", 1);
    wait_until(WAIT, "the daemon is up", || !crate::support::lines(&escaped).is_empty());
    let daemon: i32 = crate::support::lines(&escaped)[0].parse().unwrap();
    agent.remember(daemon);
    agent.ctl(&["stop", "d"]).ok();
    if agent.log().contains("tracking instances with cgroup v2") {
        assert!(!alive(daemon), "with cgroup tracking, a stop ends everything of the instance");
    } else {
        assert!(alive(daemon), "a stop leaves a process that left the group on purpose");
    }
    agent.shutdown();
    assert!(!alive(daemon), "nothing the agent started outlives it");
}
