//! Every exit is seen: real-time signals in and out, and waits that always end.

use std::time::Duration;

use crate::support::{Agent, WAIT, kill, lines, sh, sleepers, wait_until};

#[test]
fn a_child_killed_by_a_real_time_signal_is_seen_restarted_and_named() {
    let mut agent = Agent::start(&sleepers(1));
    let old = agent.wait_running("worker", 1)[0];
    let rtmin6 = libc::SIGRTMIN() + 6;
    kill(old, rtmin6);
    wait_until(WAIT, "worker:0 runs again with a new pid", || {
        let row = agent.row("worker", 0);
        row["state"] == "running" && row["pid"].as_i64().is_some_and(|pid| pid as i32 != old)
    });
    let row = agent.row("worker", 0);
    assert_eq!(row["last_exit"]["signal"], "RTMIN+6", "{row}");
    assert_eq!(row["restarts"], 1, "{row}");
    let table = agent.ctl(&["list"]);
    assert!(table.ok().stdout.contains("signal RTMIN+6"), "{table:?}");
    assert!(agent.log().contains("worker:0 exited (signal RTMIN+6)"), "{}", agent.log());
    assert!(!agent.log().contains("waitpid failed"), "{}", agent.log());
    // And everything that waits on exits still ends.
    agent.ctl(&["stop", "worker"]).ok();
    assert_eq!(agent.state_of("worker", 0), "stopped");
    agent.ctl(&["start", "worker"]).ok();
    agent.shutdown();
}

#[test]
fn a_real_time_death_during_shutdown_does_not_hang_it() {
    let mut agent = Agent::new("");
    let ready = agent.path("ready");
    // The instance ignores TERM and kills itself with a real-time signal when asked to stop.
    agent.write_config(&format!(
        "[process.s]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"20s\"\n",
        sh(&format!("trap 'kill -s RTMIN+3 $$' TERM; touch {}; while :; do sleep 0.05; done", ready.display()))
    ));
    agent.launch();
    agent.wait_running("s", 1);
    wait_until(WAIT, "the trap is set", || ready.exists());
    let started = std::time::Instant::now();
    agent.shutdown();
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown waited for the stop_timeout");
    assert!(agent.log().contains("RTMIN+3") || !agent.log().contains("waitpid failed"), "{}", agent.log());
}

#[test]
fn signal_takes_real_time_names_and_numbers_up_to_rtmax() {
    let mut agent = Agent::new("");
    let got = agent.path("got");
    agent.write_config(&format!(
        "[process.trap]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh(&format!(
            "trap 'echo RTMIN+2 >> {0}' RTMIN+2; trap 'echo RTMAX-1 >> {0}' RTMAX-1; trap 'echo RTMAX >> {0}' 64; \
             echo ready >> {0}; while :; do sleep 0.05; done",
            got.display()
        ))
    ));
    agent.launch();
    agent.wait_running("trap", 1);
    wait_until(WAIT, "the traps are set", || lines(&got) == ["ready"]);
    let out = agent.ctl(&["signal", "trap", "RTMIN+2"]);
    assert!(out.ok().stdout.contains("sent RTMIN+2"), "{out:?}");
    wait_until(WAIT, "RTMIN+2 arrived", || lines(&got).len() == 2);
    agent.ctl(&["signal", "trap", "SIGRTMAX-1"]).ok();
    wait_until(WAIT, "RTMAX-1 arrived", || lines(&got).len() == 3);
    agent.ctl(&["signal", "trap", "64"]).ok();
    wait_until(WAIT, "RTMAX arrived", || lines(&got).len() == 4);
    assert_eq!(lines(&got), ["ready", "RTMIN+2", "RTMAX-1", "RTMAX"]);
    for bad in ["RTMIN+31", "65", "RTMAX+1"] {
        let out = agent.ctl(&["signal", "trap", bad]);
        assert_eq!(out.code, Some(2), "{bad}: {out:?}");
        assert!(out.stderr.contains(bad), "{bad}: {out:?}");
    }
}

#[test]
fn a_real_time_stop_signal_is_accepted_in_the_config() {
    let mut agent = Agent::new("");
    let got = agent.path("got");
    agent.write_config(&format!(
        "[process.r]\ncommand = {}\nstart_secs = \"0s\"\nstop_signal = \"RTMIN+1\"\nstop_timeout = \"20s\"\n",
        sh(&format!(
            "trap 'echo bye >> {0}; exit 0' RTMIN+1; echo ready >> {0}; while :; do sleep 0.05; done",
            got.display()
        ))
    ));
    agent.launch();
    agent.wait_running("r", 1);
    wait_until(WAIT, "the trap is set", || lines(&got) == ["ready"]);
    let started = std::time::Instant::now();
    agent.ctl(&["stop", "r"]).ok();
    assert!(started.elapsed() < Duration::from_secs(10), "the stop signal was not RTMIN+1");
    assert_eq!(lines(&got), ["ready", "bye"]);
}
