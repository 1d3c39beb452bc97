//! `procctl upgrade` and SIGUSR2: the agent re-executes itself in place, keeping its pid,
//! every instance, their pipes, output and listening sockets. Ports 24300-24399.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::listen::{Load, local};
use crate::support::{Agent, WAIT, alive, bin, kill, sh, wait_until};

/// A copy of procagent at `name` in the agent's directory: a binary of its own, so the
/// agent's /proc/PID/exe shows the upgrade.
fn copy_of_agent(agent: &Agent, name: &str) -> PathBuf {
    let path = agent.path(name);
    std::fs::copy(bin("procagent"), &path).unwrap();
    path
}

fn exe(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// The agent's descriptors: its main thread's table (the spawner's, which it unshares) and
/// the table of the thread named `agent` (the runtime's, which the other threads share).
fn fd_count(pid: i32) -> usize {
    let count = |task: &str| std::fs::read_dir(format!("/proc/{pid}/task/{task}/fd")).unwrap().count();
    let runtime = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| task.ok().map(|t| t.file_name().to_string_lossy().into_owned()))
        .find(|task| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{task}/comm")).unwrap_or_default().trim() == "agent"
        })
        .expect("the agent's thread");
    count(&pid.to_string()) + count(&runtime)
}

fn script(agent: &Agent, name: &str, text: &str) -> PathBuf {
    let path = agent.path(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A worker that writes each message it reads to `seen` and prints it, and a sleeper.
fn fleet(seen: &Path) -> String {
    let worker = format!(r#"while read -r m; do echo "$m" >> {}; echo "got $m"; done"#, seen.display());
    format!(
        "[process.worker]\ncommand = {}\ninstances = 2\npipe = \"stdin\"\nstart_secs = \"0s\"\n\n[process.sleeper]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n",
        sh(&worker)
    )
}

fn pids(agent: &mut Agent) -> Vec<(String, i32)> {
    agent
        .list("all")
        .iter()
        .map(|row| {
            let id = format!("{}:{}", row["name"].as_str().unwrap(), row["instance"]);
            (id, row["pid"].as_i64().expect("a pid") as i32)
        })
        .collect()
}

fn upgrade(agent: &Agent, binary: &Path) {
    let out = agent.ctl(&["upgrade", "--binary", binary.to_str().unwrap()]);
    out.ok();
    assert!(out.stdout.contains("upgraded procagent"), "{}", out.stdout);
}

#[test]
fn an_upgrade_keeps_the_agent_pid_and_every_instance_with_its_pipe_output_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let mut agent = Agent::start(&fleet(&seen));
    agent.wait_running("worker", 2);
    agent.wait_running("sleeper", 1);
    let before = pids(&mut agent);
    let new = copy_of_agent(&agent, "procagent-new");
    let agent_pid = agent.pid();
    assert_ne!(exe(agent_pid), new);

    // Messages accepted just before the upgrade reach the worker.
    agent.ctl_stdin(&["send", "worker:0", "-"], "before-1\nbefore-2\n").ok();
    upgrade(&agent, &new);
    assert_eq!(exe(agent_pid), new, "the agent runs the new binary");
    assert!(agent.is_running(), "the same agent process: {}", agent.log());
    assert_eq!(pids(&mut agent), before, "every instance keeps its pid");
    assert!(before.iter().all(|(_, pid)| alive(*pid)), "and runs");
    assert!(agent.log().contains("took over from version"), "{}", agent.log());

    // The pipes and the output capture were handed over.
    agent.ctl(&["send", "worker:0", "after"]).ok();
    wait_until(WAIT, &format!("the worker read every message: {}", agent.log()), || {
        crate::support::lines(&seen) == ["before-1", "before-2", "after"]
    });
    wait_until(WAIT, "the output after the upgrade is captured", || {
        agent.ctl(&["logs", "worker:0"]).stdout.contains("got after")
    });

    // The reaper of the new image sees an exit, and the instance is restarted.
    let sleeper = agent.pid_of("sleeper", 0).unwrap();
    kill(sleeper, libc::SIGKILL);
    wait_until(WAIT, "the sleeper is restarted", || {
        let row = agent.row("sleeper", 0);
        row["state"] == "running" && row["pid"].as_i64() != Some(sleeper as i64) && row["restarts"] == 1
    });
    agent.shutdown();
    assert!(agent.leftovers().is_empty(), "nothing left: {:?}", agent.leftovers());
}

#[test]
fn sigusr2_upgrades_to_the_agents_own_binary_as_procctl_upgrade_does() {
    let mut agent = Agent::start(&crate::support::sleepers(2));
    let before = agent.wait_running("worker", 2);
    kill(agent.pid(), libc::SIGUSR2);
    wait_until(WAIT, "the new image has taken over", || agent.log().contains("took over from version"));
    assert_eq!(agent.wait_running("worker", 2), before, "every instance keeps its pid");
    assert!(agent.log().contains("SIGUSR2: upgrading to"), "{}", agent.log());
    agent.shutdown();
}

#[test]
fn a_binary_that_is_missing_or_cannot_take_over_changes_nothing_and_exits_1() {
    let mut agent = Agent::start(&crate::support::sleepers(1));
    let before = agent.wait_running("worker", 1);
    let own = exe(agent.pid());
    let other = script(&agent, "other-handover", "#!/bin/sh\necho 'procagent 9.9.9 (protocol 9) handover 99'\n");
    let failing = script(&agent, "failing", "#!/bin/sh\necho nope >&2\nexit 3\n");
    let missing = agent.path("missing");
    let cases = [
        (missing.clone(), "no such file"),
        (other, "it takes handover 99, this agent writes handover 1"),
        (failing, "--handover-check` ended with code 3"),
    ];
    for (binary, why) in cases {
        let out = agent.ctl(&["upgrade", "--binary", binary.to_str().unwrap()]);
        assert_eq!(out.code, Some(1), "{binary:?}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{binary:?}: {}", out.stderr);
        assert!(out.stderr.contains("nothing changed"), "{binary:?}: {}", out.stderr);
        assert_eq!(exe(agent.pid()), own, "the agent still runs its binary");
        assert_eq!(agent.wait_running("worker", 1), before, "the instance is untouched");
    }
    let relative = agent.ctl(&["upgrade", "--binary", "missing"]);
    assert_eq!(relative.code, Some(1));
    assert!(
        relative.stderr.contains(&missing.display().to_string()),
        "a relative path is the shell's: {}",
        relative.stderr
    );
    agent.shutdown();
}

#[test]
fn the_agent_holds_no_more_descriptors_after_three_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&fleet(&dir.path().join("seen")));
    agent.wait_running("worker", 2);
    let before_pids = pids(&mut agent);
    let count = |agent: &mut Agent| {
        agent.list("all");
        fd_count(agent.pid())
    };
    let before = count(&mut agent);
    let binaries = [copy_of_agent(&agent, "a"), copy_of_agent(&agent, "b")];
    for round in 0..3 {
        upgrade(&agent, &binaries[round % 2]);
        let after = count(&mut agent);
        assert!(after <= before, "round {round}: {after} descriptors after the upgrade, {before} before");
    }
    assert_eq!(pids(&mut agent), before_pids);
    agent.shutdown();
}

/// The instance watches the agent's binary and exits as soon as it changes: in the exec's
/// gap or just after. Its exit is reaped by the new image and it is restarted.
#[test]
fn an_instance_that_exits_during_the_upgrade_is_restarted_after_it() {
    let mut agent = Agent::new("");
    let new = copy_of_agent(&agent, "procagent-new");
    let marker = agent.path("exited-once");
    let watcher = format!(
        r#"[ -e {marker} ] && exec sleep 100000; while [ "$(readlink /proc/$PPID/exe)" != "{new}" ]; do sleep 0.005; done; touch {marker}; exit 3"#,
        marker = marker.display(),
        new = new.display()
    );
    agent.write_config(&format!(
        "[process.watcher]\ncommand = {}\nstart_secs = \"0s\"\n\n[process.other]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n",
        sh(&watcher)
    ));
    agent.launch();
    let first = agent.wait_running("watcher", 1)[0];
    upgrade(&agent, &new);
    wait_until(WAIT, "the watcher ended and was restarted", || {
        let row = agent.row("watcher", 0);
        row["restarts"] == 1 && row["state"] == "running" && row["pid"].as_i64() != Some(first as i64)
    });
    assert_eq!(agent.row("watcher", 0)["last_exit"]["code"], 3, "its exit was reported: {}", agent.log());
    agent.shutdown();
}

/// gunicorn behind `listen`, under a steady load during `procctl upgrade`: no request fails.
#[test]
fn gunicorn_behind_listen_fails_no_request_during_an_upgrade() {
    let port = 24300;
    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok\\n']\n",
    )
    .unwrap();
    let mut agent = Agent::start(&format!(
        "[process.web]\ncommand = [\"python3\", \"-m\", \"gunicorn\", \"--chdir\", \"{}\", \"-w\", \"1\", \"app:app\"]\ninstances = 2\nlisten = [\"tcp://127.0.0.1:{port}\"]\nready = {{ log = \"Booting worker\" }}\n",
        app.path().display()
    ));
    let before = agent.wait_running("web", 2);
    let new = copy_of_agent(&agent, "procagent-new");
    let load = Load::start(local(port));
    wait_until(WAIT, "gunicorn serves", || load.served() > 50);
    upgrade(&agent, &new);
    let served = load.served();
    wait_until(WAIT, "gunicorn serves after the upgrade", || load.served() > served + 50);
    let (served, failed) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} requests failed during the upgrade", served + failed);
    assert_eq!(agent.wait_running("web", 2), before, "the same servers");
    agent.shutdown();
}

/// `events` and `logs -f` end with a message naming the upgrade (exit 0), not a lost
/// connection; a follower started after it follows the new agent.
#[test]
fn open_streams_end_with_a_message_naming_the_upgrade() {
    let mut agent = Agent::start(&format!(
        "[process.talker]\ncommand = {}\nstart_secs = \"0s\"\n{}",
        sh("echo hello; exec sleep 100000"),
        crate::support::SPARE
    ));
    agent.wait_running("talker", 1);
    let mut events = crate::support::Watcher::subscribed(&agent, false);
    let mut follower = agent
        .ctl_command(&["logs", "talker", "-f"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    std::io::Read::read_exact(&mut follower.stdout.take().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"hello\n");
    let new = copy_of_agent(&agent, "procagent-new");
    upgrade(&agent, &new);
    for (what, child) in [("events", &mut events.child), ("logs -f", &mut follower)] {
        let mut status = None;
        wait_until(WAIT, &format!("{what} ends"), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(stderr.contains("the agent is being upgraded to procagent"), "{what}: {stderr}");
        assert_eq!(status.unwrap().code(), Some(0), "{what}: {stderr}");
    }
    let again = crate::support::Watcher::subscribed(&agent, false);
    drop(again);
    agent.shutdown();
}

/// A count pinned by `scale NAME N` (autoscaling paused) stays pinned after an upgrade.
#[test]
fn a_scale_that_paused_autoscaling_holds_after_an_upgrade() {
    let mut agent = Agent::start(
        "[process.q]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n\
         [process.q.autoscale]\nmin = 1\nmax = 4\nprobe = [\"echo\", \"40\"]\nper_instance = 10\nevery = \"100ms\"\n",
    );
    agent.wait_running("q", 4);
    agent.ctl(&["scale", "q", "2"]).ok();
    let pinned = agent.wait_running("q", 2);
    upgrade(&agent, &copy_of_agent(&agent, "procagent-new"));
    assert!(agent.list("q").iter().all(|row| row["autoscale"] == "paused"), "{:?}", agent.list("q"));
    crate::support::holds_for(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_millis(100),
        "q stays at 2",
        || agent.list("q").len() == 2,
    );
    assert_eq!(agent.wait_running("q", 2), pinned);
    agent.shutdown();
}

/// An upgrade is not a reload: the new image runs the config in effect, whatever the file
/// holds by then (here first a broken file, then a changed one), and a reload afterwards
/// applies the file as always.
#[test]
fn an_upgrade_runs_the_config_in_effect_and_leaves_edits_of_the_file_to_a_reload() {
    let mut agent = Agent::start(&crate::support::sleepers(2));
    let before = agent.wait_running("worker", 2);
    let new = copy_of_agent(&agent, "procagent-new");
    agent.write_config("[process.worker\ncommand = oops\n");
    upgrade(&agent, &new);
    assert_eq!(agent.wait_running("worker", 2), before, "a broken file changes nothing");
    agent.write_config(&crate::support::sleepers(3));
    upgrade(&agent, &copy_of_agent(&agent, "procagent-newer"));
    assert_eq!(agent.wait_running("worker", 2), before, "nor does an edited one");
    agent.ctl(&["reload"]).ok();
    let after = agent.wait_running("worker", 3);
    assert_eq!(after[..2], before[..], "the reload adds the third and keeps the two");
    agent.shutdown();
}

/// A client waiting on an instance when the agent is upgraded is answered before the exec,
/// naming the upgrade (exit 3, as for an agent that goes away), not left with a closed
/// connection; the operation goes on in the new agent.
#[test]
fn a_client_waiting_for_a_reply_is_answered_with_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let silent = format!(r#"while read -r m <&"$PROCCTL_PIPE_FD"; do echo "$m" >> {}; done"#, seen.display());
    let mut agent = Agent::start(&format!("[process.silent]\ncommand = {}\nstart_secs = \"0s\"\n", sh(&silent)));
    let before = agent.wait_running("silent", 1);
    let mut waiting = agent.ctl_command(&["send", "--reply", "--timeout", "60s", "silent:0", "question"]);
    let client = std::thread::spawn(move || crate::support::run(&mut waiting, None, WAIT));
    wait_until(WAIT, "the message reached the worker", || crate::support::lines(&seen) == ["question"]);
    upgrade(&agent, &copy_of_agent(&agent, "procagent-new"));
    let out = client.join().unwrap();
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("being upgraded to procagent"), "{}", out.stderr);
    assert!(out.stderr.contains("a reply that comes later is an event"), "{}", out.stderr);
    assert_eq!(agent.wait_running("silent", 1), before);
    agent.shutdown();
}

/// The fleet policies' counts go over: the recycles of an instance, and the messages its
/// run was sent toward `max_messages` (the next one after the upgrade recycles it).
#[test]
fn recycles_and_the_messages_toward_max_messages_go_over_an_upgrade() {
    let mut agent = Agent::start(&format!(
        "[process.rec]\ncommand = {}\nstart_secs = \"0s\"\nmax_messages = 2\n",
        // It reads its queue to the end when told to stop.
        sh("trap '' TERM; while IFS= read -r m <&\"$PROCCTL_PIPE_FD\"; do :; done")
    ));
    let first = agent.wait_running("rec", 1)[0];
    agent.ctl(&["send", "rec", "one"]).ok();
    agent.ctl(&["send", "rec", "two"]).ok();
    wait_until(WAIT, "rec:0 is recycled once", || {
        let row = agent.row("rec", 0);
        row["recycles"] == 1 && row["state"] == "running" && row["pid"].as_i64() != Some(first as i64)
    });
    let second = agent.pid_of("rec", 0).unwrap();
    agent.ctl(&["send", "rec", "three"]).ok();
    assert_eq!(agent.row("rec", 0)["messages"], 1);
    upgrade(&agent, &copy_of_agent(&agent, "procagent-new"));
    let row = agent.row("rec", 0);
    assert_eq!((row["recycles"].as_u64(), row["messages"].as_u64()), (Some(1), Some(1)), "{row}");
    agent.ctl(&["send", "rec", "four"]).ok();
    wait_until(WAIT, "the second message of the run recycles it", || {
        let row = agent.row("rec", 0);
        row["recycles"] == 2 && row["state"] == "running" && row["pid"].as_i64() != Some(second as i64)
    });
    agent.shutdown();
}

/// A binary that passes the check but cannot be executed (it takes its own execute bit
/// away as it answers): the exec fails, the agent goes on as before with no descriptor
/// more, says why (exit 1), and a later upgrade still works.
#[test]
fn an_exec_that_fails_after_the_check_changes_nothing_and_a_later_upgrade_works() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let mut agent = Agent::start(&fleet(&seen));
    agent.wait_running("worker", 2);
    let before = pids(&mut agent);
    let own = exe(agent.pid());
    agent.list("all");
    let fds_before = fd_count(agent.pid());
    let treacherous = script(
        &agent,
        "treacherous",
        &format!("#!/bin/sh\nchmod -x \"$0\"\nexec {} \"$@\"\n", bin("procagent").display()),
    );
    let out = agent.ctl(&["upgrade", "--binary", treacherous.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("cannot execute"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing changed"), "{}", out.stderr);
    assert_eq!(exe(agent.pid()), own, "the agent still runs its binary");
    assert_eq!(pids(&mut agent), before, "every instance untouched");
    agent.list("all");
    let fds_after = fd_count(agent.pid());
    assert!(fds_after <= fds_before, "no descriptor kept from the try: {fds_after} after, {fds_before} before");
    agent.ctl(&["send", "worker:0", "after-the-failed-try"]).ok();
    // The notice of the upgrade that did not happen is withdrawn: a stop and a start that
    // wait on their instance are answered by them, not cut short by it.
    agent.ctl(&["stop", "sleeper"]).ok();
    agent.ctl(&["start", "sleeper"]).ok();
    let before = pids(&mut agent);
    wait_until(WAIT, "the worker still reads its pipe", || crate::support::lines(&seen) == ["after-the-failed-try"]);

    upgrade(&agent, &copy_of_agent(&agent, "procagent-new"));
    assert_eq!(pids(&mut agent), before, "and an upgrade after it keeps them too");
    agent.shutdown();
    assert!(agent.leftovers().is_empty(), "nothing left: {:?}", agent.leftovers());
}
