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
