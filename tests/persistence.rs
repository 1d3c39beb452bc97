use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::support::{Agent, WAIT, alive, lines, sh, sleepers, start_time, stat, wait_until};

#[test]
fn the_pid_table_is_on_disk_and_follows_every_change() {
    let mut agent = Agent::start(&sleepers(2));
    let pids = agent.wait_running("worker", 2);
    let table = agent.state.join("table.json");
    let read = || -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap() };
    // The first save comes within the save window after the instances run, not before
    // `list` says they do: until then there is no file.
    wait_until(WAIT, "the table lists both pids", || {
        let Ok(text) = std::fs::read_to_string(&table) else { return false };
        let written: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows = written["instances"].as_array().cloned().unwrap_or_default();
        rows.iter().filter_map(|r| r["pid"].as_i64()).map(|p| p as i32).collect::<Vec<_>>() == pids
    });
    agent.ctl(&["stop", "worker:1"]).ok();
    wait_until(WAIT, "the table shows the stop", || read()["instances"][1]["state"] == "stopped");
    assert!(read()["agent_token"].is_string(), "a running agent names its run");
    agent.shutdown();
    assert!(read()["agent_token"].is_null(), "nothing is left after a clean shutdown: no token to search for");
}

/// Starts `tree`, whose `script` starts a background job and writes its pid to the file
/// `grandchild`, then kills the agent with SIGKILL: the direct child dies with it, the
/// job is left behind. Its pid.
fn kill_9_leaving_a_grandchild(agent: &mut Agent, grandchild: &std::path::Path, script: &str, flags: &[&str]) -> i32 {
    agent.write_config(&format!(
        "[process.tree]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"2s\"\n",
        sh(&format!("{script} & echo $! > {}; wait", grandchild.display()))
    ));
    agent.launch_with(flags);
    let main = agent.wait_running("tree", 1)[0];
    wait_until(WAIT, "the grandchild is up", || !lines(grandchild).is_empty());
    let escaped: i32 = lines(grandchild)[0].parse().unwrap();
    agent.remember(escaped);
    let table = agent.state.join("table.json");
    wait_until(WAIT, "the table on disk has the instance", || {
        std::fs::read_to_string(&table).is_ok_and(|t| t.contains(&format!("\"pgid\": {main}")))
    });

    agent.kill9();
    wait_until(WAIT, "the direct child dies with the agent", || !alive(main));
    assert!(alive(escaped), "the grandchild escaped (this is what the next agent must handle)");
    std::fs::remove_file(grandchild).unwrap();
    escaped
}

#[test]
fn after_kill_9_of_the_agent_children_die_and_the_next_agent_stops_the_leftovers() {
    let mut agent = Agent::new("");
    let grandchild = agent.path("grandchild");
    let escaped = kill_9_leaving_a_grandchild(&mut agent, &grandchild, "sleep 100000", &[]);
    agent.launch();
    assert!(!alive(escaped), "the next agent stopped the leftover before serving");
    // In its cgroup (with cgroup tracking), or in its process group.
    let log = agent.log();
    assert!(log.contains("left 1 process(es) behind") || log.contains("left 1 process(es) in"), "{log}");
    agent.wait_running("tree", 1);
}

#[test]
fn after_kill_9_of_the_agent_a_leftover_whose_name_is_not_utf8_is_stopped_too() {
    // Process groups only: the next agent finds the leftovers by reading /proc, and a
    // program's name is whatever bytes its file has (here 0xff 0xfe, no UTF-8).
    let mut agent = Agent::new("");
    let grandchild = agent.path("grandchild");
    let odd = agent.path("odd-links");
    std::fs::create_dir(&odd).unwrap();
    std::os::unix::fs::symlink(which_sleep(), odd.join(std::ffi::OsStr::from_bytes(b"\xff\xfe"))).unwrap();
    let script = format!("\"$(printf '{}/\\377\\376')\" 100000", odd.display());
    let escaped = kill_9_leaving_a_grandchild(&mut agent, &grandchild, &script, &["--no-cgroups"]);
    assert_eq!(std::fs::read(format!("/proc/{escaped}/comm")).unwrap(), b"\xff\xfe\n", "the leftover's name");
    agent.launch_with(&["--no-cgroups"]);
    assert!(!alive(escaped), "the next agent stopped the leftover before serving:\n{}", agent.log());
    assert!(agent.log().contains("left 1 process(es) behind"), "{}", agent.log());
    agent.wait_running("tree", 1);
}

/// Where `sleep` is, for a link to it.
fn which_sleep() -> std::path::PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"].iter().map(std::path::PathBuf::from).find(|p| p.exists()).expect("sleep")
}

#[test]
fn after_kill_9_of_the_agent_a_descendant_that_left_its_group_is_stopped_by_the_next_agent() {
    let mut agent = Agent::new("");
    let stray = agent.path("stray");
    // setsid from a background job: a new session and group, as a daemonizing program makes.
    agent.write_config(&format!(
        "[process.daemonizer]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"2s\"\n",
        sh(&format!("setsid sh -c 'echo $$ > {}; exec sleep 100000' & wait", stray.display()))
    ));
    agent.launch();
    let main = agent.wait_running("daemonizer", 1)[0];
    wait_until(WAIT, "the stray is up", || lines(&stray).len() == 1);
    let escaped: i32 = lines(&stray)[0].parse().unwrap();
    agent.remember(escaped);
    wait_until(WAIT, "the stray has its own group", || stat(escaped).is_some_and(|s| s.pgrp == escaped));
    // The table is written behind the loop (after an fsync): `list` shows the run before the
    // disk does, and a kill before then leaves the next agent nothing to find the stray by.
    let table = agent.state.join("table.json");
    wait_until(WAIT, "the table on disk has the instance", || {
        std::fs::read_to_string(&table).is_ok_and(|t| t.contains(&format!("\"pgid\": {main}")))
    });

    agent.kill9();
    wait_until(WAIT, "the direct child dies with the agent", || !alive(main));
    assert!(alive(escaped), "the stray outlived the agent (this is what the next agent must handle)");

    agent.launch();
    assert!(!alive(escaped), "the next agent stopped the stray before serving");
    // Found in the dead agent's cgroup (with cgroup tracking), or by its token.
    let log = agent.log();
    let by_token = log.contains(&format!("process {escaped} of daemonizer left its group"));
    assert!(by_token || log.contains("daemonizer left 1 process(es) in"), "{log}");
    agent.wait_running("daemonizer", 1);
}

#[test]
fn a_reused_pid_is_never_touched() {
    let mut agent = Agent::start(&sleepers(1));
    agent.shutdown();
    // A process of someone else, in its own group, whose pid the table claims with another start time.
    let mut stranger = Command::new("sleep").arg("100000").process_group(0).stdin(Stdio::null()).spawn().unwrap();
    let pid = stranger.id() as i32;
    let table = agent.state.join("table.json");
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    value["instances"][0]["pid"] = pid.into();
    value["instances"][0]["pgid"] = pid.into();
    value["instances"][0]["start_time"] = (start_time(pid).unwrap() - 1).into();
    std::fs::write(&table, value.to_string()).unwrap();
    agent.launch();
    let survived = alive(pid);
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(survived, "a pid with another start time is not ours");
}

#[test]
fn a_corrupt_table_is_reported_and_set_aside() {
    let mut agent = Agent::new(&sleepers(1));
    std::fs::create_dir_all(&agent.state).unwrap();
    std::fs::write(agent.state.join("table.json"), "{\"version\": 1, \"instan").unwrap();
    agent.launch();
    agent.wait_running("worker", 1);
    assert!(agent.log().contains("unreadable"), "{}", agent.log());
    assert!(agent.state.join("table.json.corrupt").exists());
}

#[test]
fn a_second_agent_on_the_same_state_directory_is_refused() {
    let agent = Agent::start(&sleepers(1));
    let out = crate::support::run(&mut agent.command_on(&agent.path("other.sock"), &agent.state), None, WAIT);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("state directory"), "{out:?}");
}
