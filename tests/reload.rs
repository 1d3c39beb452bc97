use crate::support::{Agent, WAIT, alive, kill, sh, sleepers, wait_until};

fn sleeper(name: &str, n: u32, extra: &str) -> String {
    format!("[process.{name}]\ncommand = [\"sleep\", \"100000\"]\ninstances = {n}\nstart_secs = \"0s\"\n{extra}\n")
}

#[test]
fn reload_applies_only_the_difference_and_says_what_changed() {
    let mut agent = Agent::start(&format!(
        "{}{}{}{}",
        sleeper("same", 2, ""),
        sleeper("gone", 1, ""),
        sleeper("grow", 1, ""),
        sleeper("edit", 2, "env = { V = \"1\" }")
    ));
    let same = agent.wait_running("same", 2);
    let gone = agent.wait_running("gone", 1);
    let grow = agent.wait_running("grow", 1);
    let edit = agent.wait_running("edit", 2);

    agent.write_config(&format!(
        "{}{}{}{}",
        sleeper("same", 2, ""),
        sleeper("grow", 3, ""),
        sleeper("edit", 2, "env = { V = \"2\" }"),
        sleeper("fresh", 1, "")
    ));
    let out = agent.ctl(&["reload"]);
    let text = out.ok().stdout.clone();
    for line in ["added: fresh", "removed: gone", "restarted: edit", "rescaled: grow from 1 to 3"] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert_eq!(agent.wait_running("same", 2), same, "untouched instances keep their pids");
    assert_eq!(agent.wait_running("grow", 3)[0], grow[0]);
    let edited = agent.wait_running("edit", 2);
    assert!(edited.iter().all(|pid| !edit.contains(pid)), "changed processes restart");
    agent.wait_running("fresh", 1);
    assert!(!alive(gone[0]));
    assert_eq!(agent.ctl(&["list", "gone"]).code, Some(1), "a removed process leaves the table");
    assert_eq!(agent.ctl(&["reload"]).ok().stdout.trim(), "nothing changed");
}

#[test]
fn an_invalid_config_is_refused_and_nothing_changes() {
    let mut agent = Agent::start(&sleepers(2));
    let before = agent.wait_running("worker", 2);
    agent.write_config("[process.worker]\ncommand = [\"sleep\", \"1\"]\ninstances = \"two\"\n");
    let out = agent.ctl(&["reload"]);
    assert_eq!(out.code, Some(1));
    let config = agent.config.display().to_string();
    assert!(out.stderr.contains(&format!("{config}:3:")), "file and line: {out:?}");
    assert!(out.stderr.contains("nothing changed"), "{out:?}");
    assert_eq!(agent.wait_running("worker", 2), before);
}

#[test]
fn sighup_reloads() {
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    agent.write_config(&sleepers(3));
    kill(agent.pid(), libc::SIGHUP);
    agent.wait_running("worker", 3);
    wait_until(WAIT, "the agent logs the reload", || agent.log().contains("SIGHUP: reloaded"));
}

#[test]
fn a_changed_instances_count_wins_over_an_earlier_scale() {
    let mut agent = Agent::start(&sleepers(1));
    agent.ctl(&["scale", "worker", "4"]).ok();
    agent.write_config(&sleepers(1));
    assert_eq!(agent.ctl(&["reload"]).ok().stdout.trim(), "nothing changed", "the scale count holds");
    assert_eq!(agent.list("worker").len(), 4);
    agent.write_config(&sleepers(2));
    agent.ctl(&["reload"]).ok();
    agent.wait_running("worker", 2);
}

#[test]
fn a_broken_new_command_halts_the_rolling_restart() {
    let mut agent = Agent::start(
        "[process.web]\ncommand = [\"sleep\", \"100000\"]\ninstances = 3\nstart_secs = \"200ms\"\nstart_retries = 2\n",
    );
    let old = agent.wait_running("web", 3);
    agent.write_config(&format!(
        "[process.web]\ncommand = {}\ninstances = 3\nstart_secs = \"200ms\"\nstart_retries = 2\n",
        sh("exit 9")
    ));
    let out = agent.ctl(&["reload"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("web:0 did not start"), "{out:?}");
    assert_eq!(agent.pid_of("web", 1), Some(old[1]), "the others keep serving the old code");
    assert_eq!(agent.pid_of("web", 2), Some(old[2]));
}

#[test]
fn a_process_removed_and_added_back_while_still_stopping_is_not_lost() {
    let stubborn = |n: u32| {
        format!(
            "[process.slow]\ncommand = {}\ninstances = {n}\nstart_secs = \"0s\"\nstop_timeout = \"3s\"\n",
            sh("trap '' TERM; while :; do sleep 0.05; done")
        )
    };
    let mut agent = Agent::start(&format!("{}{}", stubborn(2), sleeper("other", 1, "")));
    let old = agent.wait_running("slow", 2);
    // Remove it: its instances take stop_timeout to go. A second procctl adds it back meanwhile.
    agent.write_config(&sleeper("other", 1, ""));
    let mut removing = agent.ctl_command(&["reload"]).spawn().unwrap();
    wait_until(WAIT, "slow is stopping", || agent.list("slow").iter().all(|r| r["state"] == "stopping"));
    agent.write_config(&format!("{}{}", stubborn(2), sleeper("other", 1, "")));
    let out = agent.ctl(&["reload"]);
    assert!(out.ok().stdout.contains("added: slow"), "{out:?}");
    assert!(removing.wait().unwrap().success(), "the first reload ends too");
    let new = agent.wait_running("slow", 2);
    assert!(new.iter().all(|pid| !old.contains(pid)), "the old instances were stopped, then started afresh");
    assert!(old.iter().all(|&pid| !alive(pid)), "no old instance was orphaned");
}

#[test]
fn a_changed_process_restarts_what_runs_and_leaves_stopped_instances_stopped() {
    let mut agent = Agent::start(&format!(
        "{}{}{}",
        sleeper("edit", 2, "env = { V = \"1\" }"),
        sleeper("manual", 1, "autostart = false\nenv = { V = \"1\" }"),
        "[process.broken]\ncommand = [\"sh\", \"-c\", \"exit 1\"]\nstart_secs = \"1s\"\nstart_retries = 1\n"
    ));
    let edit = agent.wait_running("edit", 2);
    agent.ctl(&["stop", "edit:1"]).ok();
    agent.wait_state("broken", 0, "fatal");
    agent.write_config(&format!(
        "{}{}{}",
        sleeper("edit", 2, "env = { V = \"2\" }"),
        sleeper("manual", 2, "autostart = false\nenv = { V = \"2\" }"),
        sleeper("broken", 1, "")
    ));
    agent.ctl(&["reload"]).ok();
    assert_eq!(agent.state_of("manual", 1), "stopped", "a new instance follows autostart = false");
    assert_ne!(agent.pid_of("edit", 0), Some(edit[0]), "the running instance restarted");
    assert_eq!(agent.state_of("edit", 0), "running");
    assert_eq!(agent.state_of("edit", 1), "stopped", "stopped by the user: it stays stopped");
    assert_eq!(agent.state_of("manual", 0), "stopped", "autostart = false: it stays stopped");
    assert_eq!(agent.state_of("broken", 0), "running", "a fixed command cures fatal");
    // The stopped ones run the new settings at their next start.
    agent.ctl(&["start", "edit:1"]).ok();
    let pid = agent.pid_of("edit", 1).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.split(|&b| b == 0).any(|entry| entry == b"V=2"), "the new env");
}
