use crate::support::{Agent, alive, sleepers};

#[test]
fn scale_up_and_down_returns_when_the_count_is_reached() {
    let mut agent = Agent::start(&sleepers(1));
    let keep = agent.wait_running("worker", 1)[0];
    assert_eq!(agent.ctl(&["scale", "worker", "4"]).ok().stdout.trim(), "worker scaled from 1 to 4");
    let rows = agent.list("worker");
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["state"] == "running"), "{rows:?}");
    let doomed: Vec<i32> = rows[2..].iter().map(|r| r["pid"].as_i64().unwrap() as i32).collect();

    agent.ctl(&["scale", "worker", "2"]).ok();
    let rows = agent.list("worker");
    let indexes: Vec<u64> = rows.iter().map(|r| r["instance"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1], "the highest indexes leave the table");
    assert!(doomed.iter().all(|&pid| !alive(pid)), "and their processes are gone");
    assert_eq!(agent.pid_of("worker", 0), Some(keep), "the others are untouched");
    assert_eq!(agent.ctl(&["scale", "worker", "2"]).ok().stdout.trim(), "worker already has 2 instance(s)");
}

#[test]
fn scale_to_zero_and_back() {
    let mut agent = Agent::start(&sleepers(2));
    agent.wait_running("worker", 2);
    agent.ctl(&["scale", "worker", "0"]).ok();
    assert!(agent.list("worker").is_empty());
    assert_eq!(agent.ctl(&["pid", "worker"]).code, Some(1));
    agent.ctl(&["scale", "worker", "1"]).ok();
    agent.wait_running("worker", 1);
}

#[test]
fn a_scale_count_survives_an_agent_restart_until_the_config_changes() {
    let mut agent = Agent::start(&sleepers(1));
    agent.ctl(&["scale", "worker", "3"]).ok();
    agent.shutdown();
    agent.launch();
    agent.wait_running("worker", 3);
    agent.shutdown();
    agent.write_config(&sleepers(2));
    agent.launch();
    agent.wait_running("worker", 2);
}

#[test]
fn scale_of_an_unknown_process_or_beyond_the_limit_is_refused() {
    let agent = Agent::start(&sleepers(1));
    let out = agent.ctl(&["scale", "nosuch", "2"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("nosuch"), "{out:?}");
    let out = agent.ctl(&["scale", "worker", "1000000"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("limit"), "{out:?}");
}

#[test]
fn an_instance_on_its_way_out_cannot_be_started() {
    let mut agent = Agent::start(&format!(
        "[process.slow]\ncommand = {}\ninstances = 2\nstart_secs = \"0s\"\nstop_timeout = \"1s\"\n",
        crate::support::sh("trap '' TERM; while :; do sleep 0.05; done")
    ));
    agent.wait_running("slow", 2);
    let mut scale = agent.ctl_command(&["scale", "slow", "1"]).spawn().unwrap();
    agent.wait_state("slow", 1, "stopping");
    let out = agent.ctl(&["start", "slow:1"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("slow:1 is being removed"), "{out:?}");
    assert!(scale.wait().unwrap().success());
    assert_eq!(agent.list("slow").len(), 1);
}
