use crate::support::{Agent, WAIT, alive, lines, sh, sleepers, wait_until};

#[test]
fn restart_gives_a_new_pid_and_prints_both() {
    let mut agent = Agent::start(&sleepers(1));
    let old = agent.wait_running("worker", 1)[0];
    let out = agent.ctl(&["restart", "worker:0"]);
    let new = agent.pid_of("worker", 0).unwrap();
    assert_ne!(new, old);
    assert!(alive(new) && !alive(old));
    assert_eq!(out.ok().stdout.trim(), format!("worker:0 restarted: pid {old} -> {new}"));
    assert_eq!(agent.row("worker", 0)["restarts"], 0, "a requested restart is not counted");
}

#[test]
fn restart_of_several_is_rolling_each_replacement_up_before_the_next_goes() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    agent.write_config(&format!(
        "[process.web]\ncommand = {}\ninstances = 3\nstart_secs = \"200ms\"\n",
        sh(&format!(
            "echo up $PROCCTL_INSTANCE >> {0}; trap 'echo down $PROCCTL_INSTANCE >> {0}; exit 0' TERM; while :; do sleep 0.02; done",
            log.display()
        ))
    ));
    agent.launch();
    let old = agent.wait_running("web", 3);
    wait_until(WAIT, "three runs logged", || lines(&log).len() == 3);
    let out = agent.ctl(&["restart", "web"]);
    let new = agent.wait_running("web", 3);
    for (i, (old, new)) in old.iter().zip(&new).enumerate() {
        assert!(out.stdout.contains(&format!("web:{i} restarted: pid {old} -> {new}")), "{out:?}");
    }
    let seen = lines(&log);
    assert_eq!(&seen[3..], ["down 0", "up 0", "down 1", "up 1", "down 2", "up 2"], "{seen:?}");
}

#[test]
fn a_replacement_that_fails_halts_the_roll() {
    let mut agent = Agent::new("");
    let flag = agent.path("broken");
    agent.write_config(&format!(
        "[process.web]\ncommand = {}\ninstances = 3\nstart_secs = \"200ms\"\nstart_retries = 2\n",
        sh(&format!("[ -e {} ] && exit 9; exec sleep 100000", flag.display()))
    ));
    agent.launch();
    let old = agent.wait_running("web", 3);
    std::fs::write(&flag, "").unwrap(); // the "new release" is broken
    let out = agent.ctl(&["restart", "web"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("web:0 did not start"), "{out:?}");
    assert!(out.stderr.contains("web:1 not restarted"), "{out:?}");
    assert_eq!(agent.pid_of("web", 1), Some(old[1]), "the rest keep serving");
    assert_eq!(agent.pid_of("web", 2), Some(old[2]));
}

#[test]
fn restart_all_rolls_the_running_first_and_an_instance_dead_before_halts_nothing() {
    let mut agent = Agent::start(&format!(
        "[process.crashy]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 1\n\
         [process.web]\ncommand = [\"sleep\", \"100000\"]\ninstances = 2\nstart_secs = \"0s\"\n",
        sh("exit 1")
    ));
    agent.wait_state("crashy", 0, "fatal");
    let old = agent.wait_running("web", 2);
    let out = agent.ctl(&["restart", "all"]);
    assert_eq!(out.code, Some(1), "crashy:0 still fails: {out:?}");
    let new = agent.wait_running("web", 2);
    for (i, (old, new)) in old.iter().zip(&new).enumerate() {
        assert!(out.stdout.contains(&format!("web:{i} restarted: pid {old} -> {new}")), "{out:?}");
    }
    assert!(out.stderr.contains("crashy:0 did not start: it is fatal"), "{out:?}");
    assert!(!out.stderr.contains("not restarted"), "nothing halted: {out:?}");
}

#[test]
fn restart_prints_each_step_as_it_happens_and_says_when_sigkill_was_needed() {
    use std::io::BufRead;
    let mut agent = Agent::new("");
    let gate = agent.path("gate");
    agent.write_config(&format!(
        "[process.web]\ncommand = {}\ninstances = 2\nready = {{ log = \"^up\" }}\nstop_timeout = \"300ms\"\n",
        // Instance 0 ignores SIGTERM; the replacement of instance 1 is up only once the gate opens.
        sh(&format!(
            "[ $PROCCTL_INSTANCE = 0 ] && trap '' TERM; \
             if [ -e ran.$PROCCTL_INSTANCE ] && [ $PROCCTL_INSTANCE = 1 ]; then while [ ! -e {} ]; do sleep 0.02; done; fi; \
             touch ran.$PROCCTL_INSTANCE; echo up; while :; do sleep 0.05; done",
            gate.display()
        ))
    ));
    agent.launch();
    let old = agent.wait_running("web", 2);
    let mut child = agent.ctl_command(&["restart", "web"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = vec![];
    wait_until(WAIT, "web:0's step is printed while web:1's replacement is not up yet", || {
        seen.extend(rx.try_iter());
        !seen.is_empty()
    });
    assert!(!gate.exists());
    let new0 = agent.pid_of("web", 0).unwrap();
    assert_eq!(seen, [format!("web:0 restarted: pid {} -> {new0} (the old one needed SIGKILL)", old[0])]);
    std::fs::write(&gate, "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    seen.extend(rx.iter());
    let new1 = agent.pid_of("web", 1).unwrap();
    assert_eq!(seen[1..], [format!("web:1 restarted: pid {} -> {new1}", old[1])], "{seen:?}");
}

#[test]
fn restart_all_is_not_halted_by_an_instance_still_crash_looping() {
    let mut agent = Agent::start(&format!(
        "[process.flaky]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 3\n\
         [process.web]\ncommand = [\"sleep\", \"100000\"]\ninstances = 2\nstart_secs = \"0s\"\n",
        sh("sleep 0.2; exit 1")
    ));
    let old = agent.wait_running("web", 2);
    wait_until(WAIT, "flaky has failed once", || agent.row("flaky", 0)["restarts"].as_u64() >= Some(1));
    let out = agent.ctl(&["restart", "all"]);
    assert_eq!(out.code, Some(1), "flaky fails again: {out:?}");
    let new = agent.wait_running("web", 2);
    for (i, (old, new)) in old.iter().zip(&new).enumerate() {
        assert!(out.stdout.contains(&format!("web:{i} restarted: pid {old} -> {new}")), "{out:?}");
    }
    assert!(out.stderr.contains("flaky:0"), "{out:?}");
    assert!(!out.stderr.contains("not restarted"), "nothing halted: {out:?}");
}
