//! Production (SPEC.md "Production: users, limits, cgroups, containers, systemd"): cgroup
//! tracking and what it catches, the fallback to process groups of an agent that cannot make
//! cgroups, users, groups, umask and rlimits, CPU and MEM in `list`, the agent as PID 1 of a
//! PID namespace, and sd_notify to the agent's own service manager.
//!
//! The processes these tests start are found by their argv: each sleeps for a number of
//! seconds unique to this test binary and test (`marker`), and a `Markers` guard kills
//! whatever carries one when the test ends, pass or fail. Agents that the fixture cannot start
//! (as `nobody`, under `unshare`, with a notify socket) are a `Daemon`, killed with their
//! process group on drop.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Agent, Daemon, NOBODY, WAIT, alive, all_pids, argv, bin, children_of, command_of, lines, nobody_argv, require_root,
    run, sh, stat, status_field, task_stat, wait_until,
};

// ---------------------------------------------------------------------------------------
// Helpers

/// A number of seconds for `sleep` that only this test binary and `tag` use.
fn marker(tag: u32) -> String {
    format!("{}{tag:02}", 7_000_000 + std::process::id())
}

/// Live processes that run `sleep MARKER`.
fn sleeping(marker: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let argv = argv(pid);
            argv.len() == 2 && argv[0].ends_with("sleep") && argv[1] == marker && alive(pid)
        })
        .collect()
}

/// The one live `sleep MARKER`, once there is exactly one.
#[track_caller]
fn one_sleeping(marker: &str) -> i32 {
    let mut found = vec![];
    wait_until(WAIT, &format!("one `sleep {marker}` runs"), || {
        found = sleeping(marker);
        found.len() == 1
    });
    found[0]
}

/// Kills every process sleeping on one of its markers when dropped, so a failing test
/// leaves nothing behind.
struct Markers(Vec<String>);

impl Markers {
    fn new(tags: &[u32]) -> Markers {
        Markers(tags.iter().map(|&tag| marker(tag)).collect())
    }

    fn get(&self, i: usize) -> &str {
        &self.0[i]
    }

    /// Markers that still have a live process.
    fn alive(&self) -> Vec<(String, Vec<i32>)> {
        self.0.iter().map(|m| (m.clone(), sleeping(m))).filter(|(_, pids)| !pids.is_empty()).collect()
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        for marker in &self.0 {
            for pid in sleeping(marker) {
                crate::support::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The `0::` line of /proc/PID/cgroup: the process's cgroup v2 path.
fn cgroup_of(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(String::from)
}

/// The mount point and root of the cgroup v2 hierarchy, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<(PathBuf, String)> {
    fs::read_to_string("/proc/self/mountinfo").ok()?.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2").then_some(())?;
        let fields: Vec<&str> = left.split_whitespace().collect();
        Some((PathBuf::from(fields.get(4)?), fields.get(3)?.to_string()))
    })
}

/// Where the cgroup of `pid` is in the filesystem.
fn cgroup_dir(pid: i32) -> Option<PathBuf> {
    let (mount, root) = cgroup2_mount()?;
    let path = cgroup_of(pid)?;
    let relative = path.strip_prefix(root.as_str())?.trim_start_matches('/').to_string();
    Some(mount.join(relative))
}

/// Fails unless a root process here can make cgroups under its own, as the agent would: the
/// cgroup tests are `#[ignore]`d, and run (as root, by CI) only where they can.
#[track_caller]
fn require_cgroups() {
    require_root();
    let own = cgroup_dir(std::process::id() as i32).expect("this test needs a cgroup v2 hierarchy: there is none here");
    let probe = own.join(format!("procctl-test-probe-{}", std::process::id()));
    let usable = fs::create_dir(&probe).is_ok() || probe.is_dir();
    let _ = fs::remove_dir(&probe);
    assert!(usable, "this test needs cgroups: cannot create one in {}", own.display());
}

/// The agent's tree, from its start-up line.
#[track_caller]
fn tracked_tree(log: &str) -> PathBuf {
    let start = log.find("tracking instances with cgroup v2 in ").unwrap_or_else(|| panic!("no cgroup line: {log}"));
    let rest = &log[start + "tracking instances with cgroup v2 in ".len()..];
    PathBuf::from(rest.split(" (controllers").next().unwrap())
}

/// A TOML string (quoted and escaped).
fn q(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn write_script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// A directory of `nobody`'s, in /tmp, for an agent that runs as nobody: its config, socket
/// and state directory, and the agent's log (written through the stderr root opened).
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new(toml: &str) -> Place {
        let dir = tempfile::Builder::new().prefix("procctl-prod").tempdir_in("/tmp").unwrap();
        chown(dir.path(), NOBODY);
        let place = Place { dir };
        fs::write(place.config(), toml).unwrap();
        chown(&place.config(), NOBODY);
        place
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("procctl.toml")
    }

    fn socket(&self) -> PathBuf {
        self.path("run/agent.sock")
    }

    /// procagent as nobody on this place.
    fn agent_argv(&self) -> Vec<OsString> {
        let mut argv = nobody_argv(bin("procagent"));
        argv.extend(["--config".into(), self.config().into(), "--socket".into(), self.socket().into()]);
        argv.extend(["--state-dir".into(), self.path("state").into()]);
        argv
    }

    /// Starts the agent as nobody and waits until it serves nobody's procctl.
    fn launch(&self) -> Daemon {
        let mut ctl = nobody_argv(bin("procctl"));
        ctl.extend(["--socket".into(), self.socket().into()]);
        let mut command = command_of(&self.agent_argv());
        command.current_dir(self.dir.path());
        let mut daemon = Daemon::spawn(command, &self.path("agent.log"), ctl);
        daemon.serving();
        daemon
    }
}

// ---------------------------------------------------------------------------------------
// 1. cgroup tracking

#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn with_cgroups_each_instance_runs_in_a_cgroup_of_its_own_under_the_agents_tree() {
    cgroup_per_run(false, 1);
}

/// The same where clone3 cannot make a child in its cgroup (kernels before 5.7, seccomp
/// filters that refuse clone3): the child moves itself there before exec.
#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn without_clone_into_cgroup_each_child_moves_itself_into_its_cgroup() {
    cgroup_per_run(true, 2);
}

fn cgroup_per_run(without_clone3: bool, tag: u32) {
    require_cgroups();
    let markers = Markers::new(&[tag]);
    let mut agent = Agent::new(&format!(
        "[process.w]\ncommand = [\"sleep\", \"{}\"]\ninstances = 2\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n",
        markers.get(0)
    ));
    if without_clone3 {
        agent.env.push(("PROCCTL_NO_CLONE_INTO_CGROUP".into(), "1".into()));
    }
    agent.launch();
    let log = agent.log();
    assert!(log.contains("tracking instances with cgroup v2 in "), "the start-up line says how it tracks: {log}");
    let tree = tracked_tree(&log);
    assert!(tree.is_dir(), "{} exists", tree.display());
    // The tree is under the agent's own cgroup (or holds it, in `agent/`, below a non-root one).
    let own = cgroup_dir(agent.pid()).unwrap();
    assert!(
        own == tree.join("agent") || tree.parent() == Some(own.as_path()),
        "{} vs {}",
        own.display(),
        tree.display()
    );

    // Runs are numbered once across the agent: the two first runs are 1 and 2.
    let pids = agent.wait_running("w", 2);
    let mut first = vec![];
    for (index, pid) in pids.iter().enumerate() {
        let dir = cgroup_dir(*pid).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let run = name.strip_prefix(&format!("w.{index}.")).unwrap_or_else(|| panic!("w:{index} is in {name}"));
        assert_eq!(dir, tree.join(format!("runs/{name}")), "w:{index} is in its own cgroup");
        first.push(run.parse::<u64>().unwrap());
    }
    first.sort();
    assert_eq!(first, [1, 2]);

    // A new run, a new cgroup; the old one goes with its processes.
    let old = cgroup_dir(pids[0]).unwrap();
    agent.ctl(&["restart", "w:0"]).ok();
    let new = agent.wait_running("w", 2)[0];
    assert_ne!(new, pids[0]);
    assert_eq!(cgroup_dir(new).unwrap(), tree.join("runs/w.0.3"));
    wait_until(WAIT, "the cgroup of the first run is removed", || !old.exists());

    agent.shutdown();
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
    assert!(!tree.exists(), "the agent's tree goes at shutdown");
}

/// An instance whose descendants escape everything a process group and the token can see:
/// a double-forked `setsid` child (M1), a `setsid` child with a cleared environment (M2), and
/// one of those that ignores TERM (M3); the main process is M0. Returns the config.
fn feared(agent: &Agent, markers: &Markers) -> String {
    let script = agent.path("fear.sh");
    write_script(
        &script,
        &format!(
            "setsid sh -c 'sleep {m1} & exit 0' &\n\
             setsid -f env -i /bin/sh -c 'exec /bin/sleep {m2}'\n\
             setsid -f env -i /bin/sh -c 'trap \"\" TERM; exec /bin/sleep {m3}'\n\
             exec sleep {m0}\n",
            m0 = markers.get(0),
            m1 = markers.get(1),
            m2 = markers.get(2),
            m3 = markers.get(3)
        ),
    );
    format!(
        "[process.fear]\ncommand = [\"sh\", {}]\nstart_secs = \"0s\"\nstop_timeout = \"300ms\"\n",
        q(&script.display().to_string())
    )
}

/// An agent running `feared`: the agent, its cgroup tree and the four pids, checked.
#[track_caller]
fn feared_agent(markers: &Markers) -> (Agent, PathBuf, Vec<i32>) {
    let mut agent = Agent::new("");
    agent.write_config(&feared(&agent, markers));
    agent.launch();
    let tree = tracked_tree(&agent.log());
    agent.wait_running("fear", 1);
    let pids = fear_is_up(markers);
    (agent, tree, pids)
}

/// Waits for the four processes of `feared` and checks each escapes as it should; their pids.
#[track_caller]
fn fear_is_up(markers: &Markers) -> Vec<i32> {
    let pids: Vec<i32> = (0..4).map(|i| one_sleeping(markers.get(i))).collect();
    let (main, session) = (pids[0], |pid: i32| status_field(pid, "NSsid"));
    for &escaped in &pids[1..] {
        assert_ne!(stat(escaped).unwrap().pgrp, main, "pid {escaped} left the instance's process group");
        assert_ne!(session(escaped), session(main), "pid {escaped} is in a session of its own");
    }
    for &cleared in &pids[2..] {
        let environ = String::from_utf8_lossy(&fs::read(format!("/proc/{cleared}/environ")).unwrap()).into_owned();
        assert!(!environ.contains("PROCCTL_"), "pid {cleared} carries no PROCCTL_AGENT token: {environ:?}");
    }
    let ignored = u64::from_str_radix(&status_field(pids[3], "SigIgn").unwrap(), 16).unwrap();
    assert_ne!(ignored & (1 << (libc::SIGTERM - 1)), 0, "pid {} ignores TERM", pids[3]);
    let cgroup = cgroup_of(main).unwrap();
    for &pid in &pids {
        assert_eq!(cgroup_of(pid).unwrap(), cgroup, "pid {pid} is still in the run's cgroup");
    }
    pids
}

#[track_caller]
fn all_gone(pids: &[i32], what: &str) {
    let left: Vec<i32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(left.is_empty(), "{what}: {left:?} survived");
}

#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn the_process_everyone_fears_is_stopped_completely_by_stop_restart_and_shutdown() {
    require_cgroups();
    let markers = Markers::new(&[10, 11, 12, 13]);
    let (mut agent, tree, first) = feared_agent(&markers);

    let began = Instant::now();
    agent.ctl(&["stop", "fear"]).ok();
    all_gone(&first, "stop");
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
    assert!(began.elapsed() >= Duration::from_millis(300), "the TERM-ignoring one lasted until stop_timeout");
    assert!(agent.log().contains("fear:0 did not stop in time"), "cgroup.kill ended it: {}", agent.log());
    assert!(!tree.join("runs/fear.0.1").exists(), "the run's cgroup is removed");
    assert_eq!(agent.state_of("fear", 0), "stopped");

    agent.ctl(&["start", "fear"]).ok();
    let second = fear_is_up(&markers);
    let out = agent.ctl(&["restart", "fear"]);
    out.ok();
    all_gone(&second, "restart");
    let third = fear_is_up(&markers);
    assert!(third.iter().all(|pid| !second.contains(pid)), "a whole new set: {second:?} then {third:?}");
    assert!(out.stdout.contains(&format!("{} -> {}", second[0], third[0])), "{out:?}");

    agent.shutdown();
    all_gone(&third, "shutdown");
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
    assert!(!tree.exists(), "the agent's tree goes at shutdown");
}

#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn after_kill_9_the_next_agent_ends_what_is_left_in_the_dead_agents_cgroups_before_it_serves() {
    require_cgroups();
    let markers = Markers::new(&[20, 21, 22, 23]);
    let (mut agent, dead_tree, pids) = feared_agent(&markers);
    wait_until(WAIT, "the table names the agent's tree", || {
        fs::read_to_string(agent.state.join("table.json")).is_ok_and(|t| {
            t.contains(&dead_tree.display().to_string()) && t.contains(&format!("\"pgid\": {}", pids[0]))
        })
    });

    // Its instance has a spare cgroup too, empty: it goes with the dead agent's tree.
    wait_until(WAIT, "a spare cgroup for fear:0", || spares_of(&dead_tree.join("runs"), "fear.0.").len() == 1);
    agent.kill9();
    wait_until(WAIT, "the main process dies with the agent", || !alive(pids[0]));
    assert!(pids[1..].iter().all(|&pid| alive(pid)), "the escaped three outlive the agent");
    assert!(dead_tree.is_dir(), "a dead agent leaves its tree");

    fs::write(agent.path("agent.log"), "").unwrap();
    agent.launch();
    all_gone(&pids, "the next agent's start");
    assert!(!dead_tree.exists(), "the next agent removed the dead agent's tree");
    let log = agent.log();
    assert!(log.contains("fear left 3 process(es) in"), "{log}");
    assert!(!log.contains("survived"), "{log}");
    // It started the instance anew, in a tree of its own.
    let tree = tracked_tree(&log);
    assert_ne!(tree, dead_tree);
    agent.wait_running("fear", 1);
    let again = fear_is_up(&markers);
    assert_eq!(cgroup_dir(again[0]).unwrap(), tree.join("runs/fear.0.1"));
    agent.shutdown();
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
}

#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn an_agent_that_is_an_instance_of_another_gets_its_stop_signal_and_its_cgroups_go_with_it() {
    require_cgroups();
    // The inner agent moves itself into a cgroup below its run's (the no-internal-processes
    // rule), as it would under systemd's delegation: the outer one must look below too.
    let markers = Markers::new(&[15]);
    let mut agent = Agent::new("");
    let inner_config = agent.path("inner.toml");
    fs::write(
        &inner_config,
        format!("[process.leaf]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"0s\"\n", markers.get(0)),
    )
    .unwrap();
    let argv = [
        bin("procagent").display().to_string(),
        "--config".into(),
        inner_config.display().to_string(),
        "--socket".into(),
        agent.path("inner/agent.sock").display().to_string(),
        "--state-dir".into(),
        agent.path("inner/state").display().to_string(),
    ];
    agent.write_config(&format!(
        "[process.inner]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n",
        serde_json::to_string(&argv).unwrap()
    ));
    agent.launch();
    let tree = tracked_tree(&agent.log());
    let inner = agent.wait_running("inner", 1)[0];
    let leaf = one_sleeping(markers.get(0));
    let run = tree.join("runs/inner.0.1");
    wait_until(WAIT, "the inner agent moved into a cgroup of its own below its run's", || {
        cgroup_dir(inner).is_some_and(|dir| dir.starts_with(&run) && dir != run)
    });
    assert!(cgroup_dir(leaf).unwrap().starts_with(&run), "its instance is below the run's cgroup too");

    // MEM covers the whole tree, below cgroups included.
    let rss: u64 = [inner, leaf].iter().map(|&p| crate::support::status_kib(p, "VmRSS") * 1024).sum();
    // A sample answers for a quarter second: one taken by `wait_running` right after the
    // inner agent's exec is not what it holds now; a later sample is.
    let mut memory = 0;
    crate::support::wait_every(WAIT, Duration::from_millis(100), "MEM covers the inner tree", || {
        memory = agent.row("inner", 0)["memory_bytes"].as_u64().unwrap_or(0);
        memory * 4 >= rss
    });
    assert!(memory * 4 >= rss, "memory_bytes {memory} is roughly the RSS {rss} of the inner agent and its instance");

    let began = Instant::now();
    agent.ctl(&["stop", "inner"]).ok();
    assert!(began.elapsed() < Duration::from_secs(4), "stopped by its stop signal, not killed after stop_timeout");
    assert_eq!(agent.row("inner", 0)["last_exit"], serde_json::json!({"code": 0}), "it shut down cleanly");
    assert!(!alive(leaf));
    let said = fs::read_to_string(agent.state.join("logs/inner.0.log")).unwrap();
    assert!(said.contains("stop signal: shutting down") && said.contains("every instance stopped; exiting"), "{said}");
    wait_until(WAIT, "the run's cgroup, with the inner agent's tree in it, is removed", || !run.exists());

    agent.ctl(&["start", "inner"]).ok();
    one_sleeping(markers.get(0));
    agent.shutdown();
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
    assert!(!tree.exists(), "the whole tree goes at shutdown, the inner agent's cgroups too");
}

#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn memory_max_and_cpu_max_apply_with_their_controllers_and_are_warned_about_once_without() {
    require_cgroups();
    let markers = Markers::new(&[25]);
    let mut agent = Agent::start(&format!(
        "[process.capped]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n\
         memory_max = \"64MiB\"\ncpu_max = \"50%\"\n",
        markers.get(0)
    ));
    let log = agent.log();
    let controllers = log.split("(controllers: ").nth(1).and_then(|c| c.split(')').next()).unwrap().to_string();
    let pid = agent.wait_running("capped", 1)[0];
    assert_eq!(one_sleeping(markers.get(0)), pid, "it runs");
    let run = cgroup_dir(pid).unwrap();
    assert!(run.ends_with("runs/capped.0.1"), "{}", run.display());
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if has("memory") {
        assert_eq!(fs::read_to_string(run.join("memory.max")).unwrap().trim(), (64u64 << 20).to_string());
    }
    if has("cpu") {
        assert_eq!(fs::read_to_string(run.join("cpu.max")).unwrap().trim(), "50000 100000");
    }
    // Restarts do not repeat the warning.
    agent.ctl(&["restart", "capped"]).ok();
    agent.ctl(&["stop", "capped"]).ok();
    agent.ctl(&["start", "capped"]).ok();
    let log = agent.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("not applied")).collect();
    let missing: Vec<&str> = [("memory_max", "memory"), ("cpu_max", "cpu")]
        .into_iter()
        .filter(|(_, c)| !has(c))
        .map(|(key, _)| key)
        .collect();
    if missing.is_empty() {
        assert!(warnings.is_empty(), "{log}");
    } else {
        assert_eq!(warnings.len(), 1, "warned once: {log}");
        assert!(warnings[0].contains(&format!("capped: {} not applied", missing.join(" and "))), "{log}");
    }
    agent.wait_running("capped", 1);
    agent.shutdown();
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
}

// ---------------------------------------------------------------------------------------
// 2. The fallback: an agent that cannot make cgroups (run as nobody)

#[test]
#[ignore = "needs root"]
fn an_agent_that_cannot_make_cgroups_tracks_with_process_groups_says_why_and_warns_once_about_limits() {
    require_root();
    let markers = Markers::new(&[30, 31]);
    let place = Place::new(&format!(
        "[process.plain]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n\n\
         [process.capped]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"0s\"\nmemory_max = \"64MiB\"\ncpu_max = \"50%\"\n",
        markers.get(0),
        markers.get(1)
    ));
    let mut agent = place.launch();
    let log = agent.log();
    let line = log.lines().find(|l| l.contains("tracking instances with")).unwrap_or_else(|| panic!("{log}"));
    let why = line.split("tracking instances with process groups: ").nth(1).unwrap_or_else(|| panic!("{line}"));
    assert!(why.contains("cgroup"), "it says why: {line}");

    let plain = agent.wait_state("plain:0", "running")["pid"].as_i64().unwrap() as i32;
    let capped = agent.wait_state("capped:0", "running")["pid"].as_i64().unwrap() as i32;
    assert_eq!(one_sleeping(markers.get(1)), capped, "capped runs, without its limits");
    let agents_cgroup = cgroup_of(agent.agent).unwrap();
    for pid in [plain, capped] {
        assert_eq!(status_field(pid, "Uid").unwrap().split_whitespace().next(), Some("65534"));
        assert_eq!(cgroup_of(pid).unwrap(), agents_cgroup, "no cgroup of its own");
        assert_eq!(stat(pid).unwrap().pgrp, pid, "it leads its process group");
    }

    // CPU and MEM from /proc, summed over the process group.
    let row = agent.row("plain:0");
    assert!(row["cpu_percent"].is_f64() && row["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{row}");

    // Stop, start and restart work with process groups.
    agent.ctl(&["stop", "plain"]).ok();
    assert!(!alive(plain));
    agent.wait_state("plain:0", "stopped");
    agent.ctl(&["start", "plain"]).ok();
    let plain = agent.pid_of("plain:0").unwrap();
    agent.ctl(&["restart", "all"]).ok();
    assert!(!alive(plain) && !alive(capped), "restart ended both");
    let restarted = agent.pid_of("capped:0").unwrap();
    assert_ne!(restarted, capped);
    assert_eq!(one_sleeping(markers.get(1)), restarted);

    let log = agent.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("not applied")).collect();
    assert_eq!(warnings.len(), 1, "warned once: {log}");
    assert!(warnings[0].contains("capped: memory_max and cpu_max not applied"), "{log}");
    assert!(warnings[0].contains("it runs without"), "{log}");

    agent.ctl(&["shutdown"]).ok();
    assert_eq!(agent.wait_exit(WAIT), Some(0));
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
}

/// A limit accepted at load, where the agent's own hard core limit allows it, and refused at
/// spawn, because the agent's limit was lowered in between (prlimit, as the same user): `start`
/// fails naming the process and the limit.
fn a_limit_refused_at_spawn(start_secs: &str, tag: u32) {
    let mut hard = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_CORE, &mut hard);
        if hard.rlim_max < 4096 {
            // Root may raise a hard limit; the agent below inherits it.
            hard.rlim_max = 4096;
            assert_eq!(libc::setrlimit(libc::RLIMIT_CORE, &hard), 0, "cannot raise the hard core limit to 4096");
        }
    }
    let markers = Markers::new(&[tag]);
    let place = Place::new(&format!(
        "[process.capped]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"{start_secs}\"\nstart_retries = 1\n\
         restart = \"never\"\nautostart = false\nlimits = {{ core = 4096 }}\n",
        markers.get(0)
    ));
    let agent = place.launch();
    let mut prlimit = nobody_argv("prlimit");
    prlimit.extend(["--pid".into(), agent.agent.to_string().into(), "--core=0:0".into()]);
    let out = run(&mut command_of(&prlimit), None, WAIT);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = agent.ctl(&["start", "capped"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("capped:0"), "names the process: {out:?}");
    assert!(out.stderr.contains("cannot set the limit core"), "names the limit: {out:?}");
    assert!(markers.alive().is_empty(), "nothing ran");
    assert!(agent.log().contains("capped:0: cannot set the limit core"), "{}", agent.log());
}

#[test]
#[ignore = "needs root"]
fn a_limit_the_kernel_refuses_at_spawn_names_the_process_and_the_limit() {
    require_root();
    a_limit_refused_at_spawn("1s", 35);
}

#[test]
#[ignore = "needs root"]
fn a_limit_the_kernel_refuses_at_spawn_fails_start_even_with_start_secs_0() {
    require_root();
    a_limit_refused_at_spawn("0s", 37);
}

#[test]
#[ignore = "needs root"]
fn user_in_a_non_root_agents_config_is_refused_at_load() {
    require_root();
    let markers = Markers::new(&[36]);
    let place = Place::new(&format!("[process.web]\ncommand = [\"sleep\", \"{}\"]\nuser = \"root\"\n", markers.get(0)));
    let out = run(&mut command_of(&place.agent_argv()), None, WAIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    let want = format!("{}:3: process.web.user: only an agent running as root", place.config().display());
    assert!(out.stderr.contains(&want), "{out:?}");
    assert!(!place.socket().exists(), "nothing was served");
    assert!(markers.alive().is_empty(), "nothing ran");
}

// ---------------------------------------------------------------------------------------
// 3. Users, groups, umask and limits

/// Field `index` of the line of `name` in /etc/passwd or /etc/group.
fn passwd_field(file: &str, name: &str, index: usize) -> String {
    let text = fs::read_to_string(file).unwrap();
    let line =
        text.lines().find(|l| l.split(':').next() == Some(name)).unwrap_or_else(|| panic!("no {name} in {file}"));
    line.split(':').nth(index).unwrap().to_string()
}

/// A report file the instance (as nobody) may write but could not create.
fn report_file(agent: &Agent, name: &str) -> PathBuf {
    let path = agent.path(name);
    fs::write(&path, "").unwrap();
    chown(&path, NOBODY);
    path
}

#[test]
#[ignore = "needs root"]
fn as_root_an_instance_runs_as_its_user_and_group_with_its_umask_and_limits() {
    require_root();
    let markers = Markers::new(&[40, 41]);
    let mut agent = Agent::new("");
    // nobody may pass through the test's directory and owns `out`, where the instances work.
    fs::set_permissions(agent.dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let out = agent.path("out");
    fs::create_dir(&out).unwrap();
    chown(&out, NOBODY);
    let report = report_file(&agent, "report");
    let grouped = report_file(&agent, "grouped");
    let script = format!(
        "{{ id -u; id -g; id -G; echo \"$HOME\"; echo \"$USER\"; echo \"$LOGNAME\"; umask; ulimit -n; ulimit -c; }} > {}; \
         touch made-file; mkdir made-dir; echo hello from nobody; exec sleep {}",
        report.display(),
        markers.get(0)
    );
    agent.write_config(&format!(
        "[process.svc]\ncommand = {}\nuser = \"nobody\"\numask = \"027\"\nlimits = {{ nofile = 1234, core = 0 }}\n\
         cwd = \"out\"\nstart_secs = \"0s\"\n\n\
         [process.grouped]\ncommand = {}\nuser = \"nobody\"\ngroup = \"daemon\"\ncwd = \"out\"\nstart_secs = \"0s\"\n",
        sh(&script),
        sh(&format!(
            "{{ id -u; id -g; id -G; }} > {}; echo hello from daemon; exec sleep {}",
            grouped.display(),
            markers.get(1)
        ))
    ));
    agent.launch();
    let svc = agent.wait_running("svc", 1)[0];
    agent.wait_running("grouped", 1);
    wait_until(WAIT, "svc wrote its report", || lines(&report).len() == 9);
    let home = passwd_field("/etc/passwd", "nobody", 5);
    assert_eq!(
        lines(&report),
        ["65534", "65534", "65534", &home, "nobody", "nobody", "0027", "1234", "0"],
        "uid, gid, groups, HOME, USER, LOGNAME, umask, nofile, core"
    );
    for field in ["Uid", "Gid"] {
        assert_eq!(status_field(svc, field).unwrap().split_whitespace().collect::<Vec<_>>(), ["65534"; 4], "{field}");
    }
    assert_eq!(status_field(svc, "Groups").unwrap(), "65534", "root's groups are gone");
    let limits = fs::read_to_string(format!("/proc/{svc}/limits")).unwrap();
    let limit = |name: &str| -> Vec<String> {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{limits}"));
        line[name.len()..].split_whitespace().take(2).map(String::from).collect()
    };
    assert_eq!(limit("Max open files"), ["1234", "1234"], "soft = hard");
    assert_eq!(limit("Max core file size"), ["0", "0"]);

    let made = |name: &str| fs::metadata(out.join(name)).unwrap();
    wait_until(WAIT, "svc made its file and directory", || out.join("made-dir").exists());
    assert_eq!(made("made-file").mode() & 0o777, 0o640, "umask 027 on a file");
    assert_eq!(made("made-dir").mode() & 0o777, 0o750, "umask 027 on a directory");
    assert_eq!((made("made-file").uid(), made("made-file").gid()), (NOBODY, NOBODY));

    wait_until(WAIT, "grouped wrote its report", || lines(&grouped).len() == 3);
    let ids = lines(&grouped);
    let daemon = passwd_field("/etc/group", "daemon", 2);
    assert_eq!(ids[..2], ["65534", daemon.as_str()], "uid nobody, gid daemon: {ids:?}");
    let groups: Vec<&str> = ids[2].split_whitespace().collect();
    assert!(groups.contains(&daemon.as_str()) && !groups.contains(&"0"), "daemon in, root out: {ids:?}");

    // The agent's own files stay root's and private.
    let logs = [agent.state.join("logs/svc.0.log"), agent.state.join("logs/grouped.0.log")];
    wait_until(WAIT, "the output is in the logs, the table on disk", || {
        logs.iter().all(|log| fs::read_to_string(log).is_ok_and(|t| t.contains("hello from")))
            && agent.state.join("table.json").exists()
    });
    for file in logs.iter().chain([&agent.state.join("table.json")]) {
        let meta = fs::metadata(file).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600), "{}", file.display());
    }
    agent.shutdown();
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
}

/// The agent refuses `toml` (followed by a good process) at load: exit 1, nothing bound,
/// nothing started; its stderr and the config path.
fn refused(toml: &str) -> (String, String) {
    let agent = Agent::new("");
    let started = agent.path("started");
    agent.write_config(&format!("{toml}\n[process.good]\ncommand = {}\n", sh(&format!("touch {}", started.display()))));
    let out = run(&mut agent.command(), None, WAIT);
    assert_eq!(out.code, Some(1), "a bad config must stop the agent: {out:?}");
    assert!(!agent.socket.exists(), "nothing was bound");
    assert!(!started.exists(), "nothing was started");
    (out.stderr, agent.config.display().to_string())
}

/// Whether this process has CAP_SYS_RESOURCE, without which even root cannot raise a hard limit.
fn can_raise_limits() -> bool {
    let effective = status_field(std::process::id() as i32, "CapEff").unwrap();
    u64::from_str_radix(&effective, 16).unwrap() & (1 << 24) != 0
}

#[test]
#[ignore = "needs root"]
fn unknown_users_groups_and_limits_are_config_errors_naming_file_line_and_key() {
    require_root();
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open").unwrap().trim().parse().unwrap();
    let mut cases = vec![
        (
            "[process.a]\ncommand = [\"true\"]\nuser = \"no-such-user-procctl\"\n".to_string(),
            ":3: process.a.user: ",
            "no-such-user-procctl",
        ),
        (
            "[process.a]\ncommand = [\"true\"]\nuser = \"nobody\"\ngroup = \"no-such-group-procctl\"\n".into(),
            ":4: process.a.group: ",
            "no-such-group-procctl",
        ),
        ("[process.a]\ncommand = [\"true\"]\n\nlimits = { nofiles = 5 }\n".into(), ":4: process.a.limits", "nofiles"),
        (
            format!("[process.a]\ncommand = [\"true\"]\nlimits = {{ nofile = {} }}\n", nr_open + 1),
            ":3: process.a.limits: ",
            "fs.nr_open",
        ),
    ];
    // Root without CAP_SYS_RESOURCE (a container, like here) cannot raise its hard limit:
    // refused at load rather than at every spawn.
    let mut hard = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    if !can_raise_limits() && hard.rlim_max < nr_open {
        cases.push((
            format!("[process.a]\ncommand = [\"true\"]\nlimits = {{ nofile = {} }}\n", hard.rlim_max + 1),
            ":3: process.a.limits: ",
            "CAP_SYS_RESOURCE",
        ));
    }
    for (toml, at, problem) in cases {
        let (stderr, config) = refused(&toml);
        assert!(stderr.contains(&format!("{config}{at}")), "file, line and key: {stderr}");
        assert!(stderr.contains(problem), "the problem: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// Priority

/// The nice value of thread `tid` of `pid`.
fn nice_of(pid: i32, tid: i32) -> i32 {
    task_stat(pid, tid).unwrap_or_else(|| panic!("no stat of {pid}/{tid}")).nice
}

/// A start of many runs the spawner thread ahead of the programs it started, where the
/// agent may raise a priority (as root): none of them keeps that priority, each takes the
/// agent's own before its exec, and the spawner takes it back once the start is done, so a
/// restart after it, and the agent's other threads, run at the agent's own.
#[test]
fn instances_run_at_the_agents_own_priority_after_a_start_of_many_and_a_restart() {
    // Children take the nice value of the thread that starts them: this test's thread.
    // SAFETY: gettid has no arguments; setpriority on this thread only (raising a nice value
    // needs no privilege).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        assert_eq!(libc::setpriority(libc::PRIO_PROCESS, tid, 3), 0, "cannot set this thread's nice value");
    }
    let mut agent = Agent::start(&crate::support::sleepers(40));
    let pids = agent.wait_running("worker", 40);
    let main = agent.pid();
    wait_until(WAIT, "the spawner thread back at the agent's priority", || nice_of(main, main) == 3);
    for task in fs::read_dir(format!("/proc/{main}/task")).unwrap() {
        let tid: i32 = task.unwrap().file_name().to_string_lossy().parse().unwrap();
        assert_eq!(nice_of(main, tid), 3, "thread {tid} of the agent");
    }
    for &pid in &pids {
        assert_eq!(nice_of(pid, pid), 3, "instance {pid}");
    }
    agent.ctl(&["restart", "worker:7"]).ok();
    let new = agent.pid_of("worker", 7).expect("worker:7 runs again");
    assert!(!pids.contains(&new));
    assert_eq!(nice_of(new, new), 3, "restarted instance {new}");
    // `renice -p` of the agent's pid changes the spawner thread's value (the main thread's):
    // the next start of many takes that as the agent's own.
    // SAFETY: setpriority of a process of this user to a higher nice value.
    assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, main as libc::id_t, 6) }, 0);
    agent.ctl(&["scale", "worker", "60"]).ok();
    let all = agent.wait_running("worker", 60);
    wait_until(WAIT, "the spawner thread back at its reniced value", || nice_of(main, main) == 6);
    for pid in all.into_iter().filter(|pid| !pids.contains(pid) && *pid != new) {
        assert_eq!(nice_of(pid, pid), 6, "instance {pid} started after the renice");
    }
}

// ---------------------------------------------------------------------------------------
// 4. CPU and MEM

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = stat(pid).unwrap_or_else(|| panic!("pid {pid} is gone"));
    stat.utime + stat.stime
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

#[test]
fn list_shows_cpu_and_memory_of_running_instances_and_dashes_for_stopped_ones() {
    cpu_and_memory(&[], [50, 51]);
}

/// The same from /proc, over the main process and its descendants.
#[test]
fn list_shows_cpu_and_memory_without_cgroups_too() {
    cpu_and_memory(&["--no-cgroups"], [52, 53]);
}

fn cpu_and_memory(flags: &[&str], tags: [u32; 2]) {
    let markers = Markers::new(&tags);
    let mut agent = Agent::new(&format!(
        "[process.burn]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n\n\
         [process.idle]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n\n\
         [process.off]\ncommand = [\"sleep\", \"{}\"]\nautostart = false\n",
        sh("while :; do :; done"),
        sh(&format!("sleep {m} & sleep {m} & wait", m = markers.get(0))),
        markers.get(1)
    ));
    agent.launch_with(flags);
    let burn = agent.wait_running("burn", 1)[0];
    let idle = agent.wait_running("idle", 1)[0];
    wait_until(WAIT, "idle has both its sleeps", || sleeping(markers.get(0)).len() == 2);

    // The table: CPU and MEM are the last two columns (no instance has HEALTH or STATUS).
    let table = agent.ctl(&["list"]);
    table.ok();
    let mut rows = table.stdout.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(&header[header.len() - 2..], ["CPU", "MEM"], "{}", table.stdout);
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let (cpu, mem) = (cells[cells.len() - 2], cells[cells.len() - 1]);
        if cells[0] == "off" {
            assert_eq!((cpu, mem), ("-", "-"), "{row}");
        } else {
            let percent = cpu.strip_suffix('%').and_then(|n| n.parse::<f64>().ok());
            assert!(percent.is_some(), "CPU is a percentage: {row}");
            let size = mem.strip_suffix(['K', 'M', 'G']).and_then(|n| n.parse::<f64>().ok());
            assert!(size.is_some_and(|s| s > 0.0), "MEM is a size: {row}");
        }
    }

    // JSON: numbers for running instances, null for the stopped one.
    let off = agent.row("off", 0);
    assert!(off["cpu_percent"].is_null() && off["memory_bytes"].is_null(), "{off}");
    let idle_row = agent.row("idle", 0);
    assert!(idle_row["cpu_percent"].is_f64(), "{idle_row}");
    // The whole tree: the shell and its two sleeps.
    let tree: Vec<i32> =
        all_pids().into_iter().filter(|&p| stat(p).is_some_and(|s| s.pgrp == idle && s.state != 'Z')).collect();
    assert_eq!(tree.len(), 3, "{tree:?}");
    let rss: u64 = tree.iter().map(|&p| crate::support::status_kib(p, "VmRSS") * 1024).sum();
    assert!(idle_row["memory_bytes"].as_u64().is_some_and(|memory| memory > 0), "{idle_row}");
    // The sum of RSS without the memory controller; memory.current (which counts shared
    // pages once) with it. A sample answers for a quarter second and the members it found
    // for a second, so a `list` right after the sleeps were forked may not count them yet
    // (or see the shell as it was right after its exec): a later sample does.
    let mut memory = 0;
    crate::support::wait_every(WAIT, Duration::from_millis(100), "MEM counts the whole tree", || {
        memory = agent.row("idle", 0)["memory_bytes"].as_u64().unwrap_or(0);
        memory <= rss * 4 && memory * 4 >= rss
    });
    assert!(memory <= rss * 4 && memory * 4 >= rss, "memory_bytes {memory} is roughly the RSS {rss} of {tree:?}");

    // Each later sample covers the time since the one before: the busy loop shows what it
    // got of a CPU (measured here from its /proc/PID/stat over about the same time), more
    // than 50% once the machine lets it have that much; the sleeper stays near 0.
    let mut samples: Vec<(f64, f64, f64)> = vec![];
    let mut last = (Instant::now(), cpu_ticks(burn));
    agent.row("burn", 0);
    agent.row("idle", 0);
    let began = Instant::now();
    wait_until(WAIT, "burn shows more than 50% of a CPU", || {
        if last.0.elapsed() < Duration::from_millis(400) {
            return false;
        }
        let now = (Instant::now(), cpu_ticks(burn));
        let measured = (now.1 - last.1) as f64 / clock_ticks() / now.0.duration_since(last.0).as_secs_f64() * 100.0;
        last = now;
        let busy = agent.row("burn", 0)["cpu_percent"].as_f64().unwrap();
        let quiet = agent.row("idle", 0)["cpu_percent"].as_f64().unwrap();
        samples.push((busy, measured, quiet));
        eprintln!("cpu_percent: burn {busy} (measured here {measured:.1}), idle {quiet}");
        assert!((busy - measured).abs() <= 25.0, "burn's cpu_percent is what it used: {samples:?}");
        assert!(quiet < 5.0, "idle stays near 0: {samples:?}");
        // A machine too busy to give it 60% for long: the figures agreeing is what is left.
        busy > 50.0 || (measured < 60.0 && samples.len() >= 3 && began.elapsed() > Duration::from_secs(8))
    });
    assert!(alive(burn));
}

// ---------------------------------------------------------------------------------------
// 5. PID 1 of a PID namespace

/// `procagent` under `unshare --pid --fork --mount-proc`, driven by a procctl that enters
/// its namespaces with nsenter (as `docker exec` would).
fn in_pid_namespace(agent: &Agent) -> Daemon {
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork", "--mount-proc", "--kill-child"]).arg(bin("procagent"));
    command.arg("--config").arg(&agent.config).arg("--socket").arg(&agent.socket).arg("--state-dir").arg(&agent.state);
    command.current_dir(agent.dir.path());
    let mut daemon = Daemon::spawn(command, &agent.path("agent.log"), vec![]);
    let unshare = daemon.child.id() as i32;
    wait_until(WAIT, "unshare forks the agent", || {
        daemon.agent = children_of(unshare).first().copied().unwrap_or(unshare);
        daemon.agent != unshare && argv(daemon.agent).first().is_some_and(|a| a.ends_with("procagent"))
    });
    daemon.ctl = ["nsenter", "--target", &daemon.agent.to_string(), "--pid", "--mount"].map(OsString::from).to_vec();
    daemon.ctl.extend([bin("procctl").into(), "--socket".into(), agent.socket.clone().into()]);
    daemon
}

/// Processes in the PID namespace of `pid` (seen from outside), zombies included.
fn in_namespace_of(pid: i32) -> Vec<i32> {
    let ns = |p: i32| fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(theirs) = ns(pid) else {
        return vec![];
    };
    all_pids().into_iter().filter(|&p| ns(p).as_ref() == Some(&theirs)).collect()
}

/// A shell that notes `up` and, on TERM, `term` in `notes`, then exits 0; it sleeps on `marker`.
fn stoppable(notes: &Path, marker: &str, before: &str) -> String {
    sh(&format!(
        "{before}trap 'echo term >> {n}; kill $!; exit 0' TERM; echo up >> {n}; sleep {marker} & wait",
        n = notes.display()
    ))
}

#[test]
#[ignore = "needs root"]
fn as_pid_1_of_a_pid_namespace_the_agent_reaps_every_orphan_and_exits_0_on_sigterm() {
    require_root();
    let markers = Markers::new(&[60, 63]);
    let agent = Agent::new("");
    let (parent, notes) = (agent.path("parent"), agent.path("notes"));
    let deep = agent.path("deep.sh");
    // A chain of four generations; the instance exits at once, each parent before its child.
    write_script(&deep, "sh -c 'sh -c \"sh -c \\\"sleep 0.6\\\" & sleep 0.4\" & sleep 0.2' &\nexit 0\n");
    agent.write_config(&format!(
        "[process.child]\ncommand = {}\nstart_secs = \"0s\"\n\n\
         [process.deep]\ncommand = [\"sh\", {}]\nrestart = \"never\"\nstart_secs = \"0s\"\n",
        stoppable(&notes, markers.get(0), &format!("echo $PPID > {}; ", parent.display())),
        q(&deep.display().to_string())
    ));
    let mut daemon = in_pid_namespace(&agent);
    daemon.serving();
    assert_eq!(status_field(daemon.agent, "NSpid").unwrap().split_whitespace().last(), Some("1"), "the agent is PID 1");
    daemon.wait_state("child:0", "running");
    wait_until(WAIT, "child wrote its parent's pid", || !lines(&parent).is_empty());
    assert_eq!(lines(&parent), ["1"], "the instance's parent is PID 1");

    daemon.wait_state("deep:0", "exited");
    // Once the chain has run out, the namespace holds the agent and child's shell and sleep:
    // no zombie, no orphan.
    let sleeper = one_sleeping(markers.get(0));
    let shell: i32 = status_field(sleeper, "PPid").unwrap().parse().unwrap();
    let mut want = vec![daemon.agent, shell, sleeper];
    want.sort();
    let mut left = vec![];
    wait_until(WAIT, "every orphan of the chain is reaped", || {
        left = in_namespace_of(daemon.agent);
        left.sort();
        left == want
    });
    assert!(left.iter().all(|&p| alive(p)), "no zombie: {left:?}");

    // An orphan of a process no instance started (`docker exec` of a daemonizing command)
    // is PID 1's to reap.
    let mut exec = command_of(&daemon.ctl[..5]);
    exec.args(["sh", "-c", &format!("sleep {} >/dev/null 2>&1 & exit 0", markers.get(1))]);
    assert_eq!(run(&mut exec, None, WAIT).code, Some(0));
    let orphan = one_sleeping(markers.get(1));
    wait_until(WAIT, "the orphan is the agent's child", || {
        status_field(orphan, "PPid").is_some_and(|p| p == daemon.agent.to_string())
    });
    crate::support::kill(orphan, libc::SIGKILL);
    wait_until(WAIT, "the agent reaped the orphan", || {
        left = in_namespace_of(daemon.agent);
        left.sort();
        left == want
    });

    crate::support::kill(daemon.agent, libc::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT), Some(0), "{}", daemon.log());
    assert_eq!(lines(&notes), ["up", "term"], "child was stopped with its signal before the agent exited");
    assert!(daemon.log().contains("every instance stopped; exiting"), "{}", daemon.log());
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
}

#[test]
#[ignore = "needs root"]
fn as_pid_1_a_critical_instance_going_fatal_stops_everything_and_the_agent_exits_1() {
    require_root();
    let markers = Markers::new(&[61]);
    let agent = Agent::new("");
    let notes = agent.path("notes");
    agent.write_config(&format!(
        "[process.bystander]\ncommand = {}\nstart_secs = \"0s\"\n\n\
         [process.vital]\ncommand = {}\ncritical = true\nstart_secs = \"1s\"\nstart_retries = 1\n",
        stoppable(&notes, markers.get(0), ""),
        sh("sleep 0.3; exit 3")
    ));
    let mut daemon = in_pid_namespace(&agent);
    assert_eq!(daemon.wait_exit(WAIT), Some(1), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("vital:0 is critical and fatal: shutting everything down"), "{log}");
    assert!(log.contains("critical instance vital:0 ended"), "{log}");
    assert_eq!(lines(&notes), ["up", "term"], "bystander was stopped with its signal before the agent exited");
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
}

#[test]
#[ignore = "needs root"]
fn as_pid_1_the_agent_serves_a_procctl_of_the_host_through_its_socket() {
    require_root();
    let markers = Markers::new(&[62]);
    let agent =
        Agent::new(&format!("[process.w]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"0s\"\n", markers.get(0)));
    let mut daemon = in_pid_namespace(&agent);
    daemon.serving();
    // A root procctl in the host's namespaces, on the socket the container shares.
    let out = agent.ctl(&["list"]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", daemon.log());
}

#[test]
#[ignore = "needs root"]
fn a_procctl_in_a_pid_namespace_talks_to_an_agent_outside_it() {
    require_root();
    let markers = Markers::new(&[64]);
    let agent =
        Agent::start(&format!("[process.w]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"0s\"\n", markers.get(0)));
    // A container's procctl on the host agent's socket, mounted in.
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork", "--mount-proc"]).arg(bin("procctl")).arg("--socket").arg(&agent.socket);
    let out = run(command.arg("list"), None, WAIT);
    assert_eq!(out.code, Some(0), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// 6. systemd notify

/// The agent's log next to its notify socket `ours`, for messages.
fn daemon_log(ours: &Path) -> String {
    fs::read_to_string(ours.with_file_name("agent.log")).unwrap_or_default()
}

#[test]
fn ready_1_comes_once_every_autostart_instance_is_up_stopping_1_at_shutdown_and_no_instance_inherits_the_socket() {
    let markers = Markers::new(&[70]);
    let mut agent = Agent::new("");
    let (plain, talker) = (agent.path("plain.env"), agent.path("talker.env"));
    let python = format!(
        "import os, socket, time\n\
         addr = os.environ.get('NOTIFY_SOCKET', 'none')\n\
         open({file}, 'w').write(addr + '\\n')\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1', '\\0' + addr[1:] if addr.startswith('@') else addr)\n\
         time.sleep(100000)\n",
        file = q(&talker.display().to_string())
    );
    agent.write_config(&format!(
        "[process.slow]\ncommand = {}\nstart_secs = \"400ms\"\n\n\
         [process.talker]\ncommand = [\"/usr/bin/python3\", \"-c\", {}]\nready = \"notify\"\nstart_secs = \"0s\"\n",
        sh(&format!("echo ${{NOTIFY_SOCKET:-none}} > {}; exec sleep {}", plain.display(), markers.get(0))),
        q(&python)
    ));
    let ours = agent.path("notify.sock");
    let listener = UnixDatagram::bind(&ours).unwrap();
    listener.set_read_timeout(Some(WAIT)).unwrap();
    let began = Instant::now();
    let mut command = agent.command();
    command.env("NOTIFY_SOCKET", &ours);
    let mut daemon = Daemon::spawn(command, &agent.path("agent.log"), vec![]);
    let receive = |listener: &UnixDatagram| -> String {
        let mut buf = [0u8; 4096];
        // A receive with a timeout ends with EINTR when this process is stopped and continued
        // (or a signal with a handler comes), whatever SA_RESTART says: receive again, within
        // the same deadline.
        let deadline = Instant::now() + WAIT;
        let n = loop {
            match listener.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted && Instant::now() < deadline => continue,
                result => break result.unwrap_or_else(|e| panic!("no notification: {e}\n{}", daemon_log(&ours))),
            }
        };
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    let ready = receive(&listener);
    let at = began.elapsed();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // At that moment the agent serves and both instances are up.
    assert_eq!(agent.state_of("slow", 0), "running", "READY=1 after slow's start_secs");
    assert_eq!(agent.state_of("talker", 0), "running");
    assert!(at >= Duration::from_millis(400), "READY=1 came {at:?} after the agent started");

    assert_eq!(lines(&plain), ["none"], "an instance does not get the agent's NOTIFY_SOCKET");
    let given = lines(&talker);
    assert_eq!(given.len(), 1);
    assert!(given[0].starts_with("@procctl/"), "a notify instance gets the agent's own socket: {given:?}");
    assert_ne!(given[0], ours.display().to_string());

    listener.set_nonblocking(true).unwrap();
    assert!(listener.recv(&mut [0u8; 4096]).is_err(), "nothing else before the shutdown");
    listener.set_nonblocking(false).unwrap();
    agent.list("all");
    agent.ctl(&["shutdown"]).ok();
    let stopping = receive(&listener);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(daemon.wait_exit(WAIT), Some(0), "{}", agent.log());
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
}

#[test]
fn no_cgroups_keeps_process_groups_and_says_so() {
    let mut agent = Agent::new(&crate::support::sleepers(1));
    agent.launch_with(&["--no-cgroups"]);
    let pid = agent.wait_running("worker", 1)[0];
    let log = agent.log();
    assert!(log.contains("tracking instances with process groups: turned off with --no-cgroups"), "{log}");
    assert_eq!(cgroup_of(pid), cgroup_of(agent.pid()), "the instance stays in the agent's own cgroup");
    agent.ctl(&["stop", "worker"]).ok();
    agent.ctl(&["start", "worker"]).ok();
}

/// An agent cannot tell from /proc whether an agent it cannot see (outside its PID
/// namespace) is alive: the tree of one that is must survive another's start-up sweep, or
/// every later start of the first fails for want of its cgroup.
#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn an_agent_in_a_pid_namespace_leaves_the_cgroup_tree_of_a_live_agent_it_cannot_see_alone() {
    require_cgroups();
    let markers = Markers::new(&[60, 61]);
    // Idle, so its tree is empty (here the agent itself is not in it).
    let mut agent = Agent::start(&format!(
        "[process.later]\ncommand = [\"sleep\", \"{}\"]\nautostart = false\nstart_secs = \"0s\"\n",
        markers.get(0)
    ));
    let tree = tracked_tree(&agent.log());
    assert!(tree.is_dir());
    let other =
        Agent::new(&format!("[process.inner]\ncommand = [\"sleep\", \"{}\"]\nstart_secs = \"0s\"\n", markers.get(1)));
    let mut inner = in_pid_namespace(&other);
    inner.serving();
    let kept = tree.is_dir();
    let out = agent.ctl(&["start", "later"]);
    assert!(
        kept,
        "the agent in the PID namespace removed the tree of a live agent ({}); then start: {out:?}",
        tree.display()
    );
    out.ok();
    assert_eq!(one_sleeping(markers.get(0)), agent.pid_of("later", 0).unwrap());
    drop(inner);
    agent.shutdown();
}

// ---------------------------------------------------------------------------------------
// Spare run cgroups

/// The run cgroups in `runs` by name, each with whether it holds a process.
fn run_cgroups(runs: &Path) -> Vec<(String, bool)> {
    let mut found: Vec<(String, bool)> = fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| {
            let procs = fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
            (entry.file_name().to_string_lossy().into_owned(), !procs.trim().is_empty())
        })
        .collect();
    found.sort();
    found
}

/// The empty run cgroups of instance `prefix` (`w.0.`): its spare, once it has one.
fn spares_of(runs: &Path, prefix: &str) -> Vec<String> {
    run_cgroups(runs).into_iter().filter(|(name, busy)| !busy && name.starts_with(prefix)).map(|(n, _)| n).collect()
}

#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn a_replacement_runs_in_the_spare_cgroup_made_for_it_and_spares_go_with_their_instances() {
    require_cgroups();
    let markers = Markers::new(&[80]);
    let mut agent = Agent::new(&format!(
        "[process.w]\ncommand = [\"sleep\", \"{}\"]\ninstances = 2\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n",
        markers.get(0)
    ));
    agent.launch();
    let tree = tracked_tree(&agent.log());
    let runs = tree.join("runs");
    let pids = agent.wait_running("w", 2);
    // Each running instance gets one spare: an empty cgroup named for its next run.
    wait_until(WAIT, "a spare for each instance", || {
        spares_of(&runs, "w.0.").len() == 1 && spares_of(&runs, "w.1.").len() == 1
    });
    let spare = spares_of(&runs, "w.0.").remove(0);
    let old = cgroup_dir(pids[0]).unwrap();

    // A crash's replacement is made in the spare; the old run's cgroup goes, and the
    // instance gets a new spare.
    // SAFETY: kill(2) on a pid this test found running.
    assert_eq!(unsafe { libc::kill(pids[0], libc::SIGKILL) }, 0);
    let mut new = None;
    wait_until(WAIT, "w:0 has a new pid", || {
        new = agent.pid_of("w", 0).filter(|pid| *pid != pids[0]);
        new.is_some()
    });
    assert_eq!(cgroup_dir(new.unwrap()).unwrap(), runs.join(&spare), "the replacement runs in the spare");
    wait_until(WAIT, "the old run's cgroup is removed", || !old.exists());
    wait_until(WAIT, "w:0 has a spare again", || {
        spares_of(&runs, "w.0.").iter().any(|name| *name != spare) && spares_of(&runs, "w.0.").len() == 1
    });
    assert_eq!(spares_of(&runs, "w.1.").len(), 1, "{:?}", run_cgroups(&runs));

    // An instance scaled away takes its spare with it.
    agent.ctl(&["scale", "w", "1"]).ok();
    wait_until(WAIT, "no cgroup of w:1 is left", || {
        !run_cgroups(&runs).iter().any(|(name, _)| name.starts_with("w.1."))
    });
    assert_eq!(spares_of(&runs, "w.0.").len(), 1, "{:?}", run_cgroups(&runs));

    // Past 128 instances there are no spares: a stop of many would pay for them.
    agent.ctl(&["scale", "w", "130"]).ok();
    agent.wait_running("w", 130);
    wait_until(WAIT, "no spare is left", || spares_of(&runs, "w.").is_empty());
    assert_eq!(run_cgroups(&runs).len(), 130, "one cgroup per run");

    agent.shutdown();
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
    assert!(!tree.exists(), "the agent's tree goes at shutdown, spares and all");
}

/// A start that fails after its instance had a spare (its program removed, or no longer
/// executable) leaves neither the spare nor a cgroup of its own behind.
#[test]
#[ignore = "needs root and a cgroup v2 hierarchy it can write"]
fn starts_that_fail_leave_no_cgroup_behind_spares_included() {
    require_cgroups();
    let markers = Markers::new(&[81, 82]);
    let mut agent = Agent::new("");
    for name in ["gone", "noexec"] {
        fs::copy("/bin/sleep", agent.path(name)).unwrap();
    }
    agent.write_config(&format!(
        "[process.gone]\ncommand = [{}, \"{}\"]\nstart_secs = \"0s\"\nstart_retries = 1\n\
         [process.noexec]\ncommand = [{}, \"{}\"]\nstart_secs = \"0s\"\nstart_retries = 1\n",
        q(&agent.path("gone").display().to_string()),
        markers.get(0),
        q(&agent.path("noexec").display().to_string()),
        markers.get(1),
    ));
    agent.launch();
    let tree = tracked_tree(&agent.log());
    let runs = tree.join("runs");
    let gone = agent.wait_running("gone", 1)[0];
    let noexec = agent.wait_running("noexec", 1)[0];
    wait_until(WAIT, "a spare for each instance", || {
        spares_of(&runs, "gone.0.").len() == 1 && spares_of(&runs, "noexec.0.").len() == 1
    });
    fs::remove_file(agent.path("gone")).unwrap();
    fs::set_permissions(agent.path("noexec"), fs::Permissions::from_mode(0o644)).unwrap();
    for pid in [gone, noexec] {
        // SAFETY: kill(2) on a pid this test found running.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    }
    agent.wait_state("gone", 0, "fatal");
    agent.wait_state("noexec", 0, "fatal");
    wait_until(WAIT, "no run cgroup is left", || run_cgroups(&runs).is_empty());
    agent.shutdown();
    assert!(markers.alive().is_empty(), "{:?}", markers.alive());
    assert!(!tree.exists());
}
