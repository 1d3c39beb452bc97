//! The fixture: a real procagent in a temp dir, the real procctl bound to its socket, and
//! `wait_until` for every wait. Dropping an `Agent` shuts it down, kills whatever is left
//! of its instances' process groups, and fails the test if anything had to be killed.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long an agent may take to answer its first `list`.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The default deadline of a `wait_until`.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long one procctl call may take before the test fails.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

fn target_dir() -> PathBuf {
    // The test binary is target/<profile>/deps/blackbox-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let path = target_dir().join(name);
    assert!(path.exists(), "{} is missing: build it first (cargo build --workspace)", path.display());
    path
}

/// Polls `condition` until it holds; panics naming `what` after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "procctl failed: {self:?}");
        self
    }
}

/// Runs a command to its end, killing it at `deadline`. Its output is read while it runs,
/// so a command that prints more than a pipe holds does not stall.
pub fn run(command: &mut Command, stdin: Option<&str>, deadline: Duration) -> Output {
    use std::io::{Read, Write};
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut bytes = vec![];
            let _ = from.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {deadline:?}: {}", stderr.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output { code: status.code(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    /// Every instance pid seen, with its start time: the cleanup kills what is left of their groups.
    seen: HashMap<i32, u64>,
}

impl Agent {
    /// Writes `toml` as the config and starts an agent on it; waits until it answers.
    pub fn start(toml: &str) -> Agent {
        let mut agent = Agent::new(toml);
        agent.launch();
        agent
    }

    /// An agent whose files exist but which is not running yet.
    pub fn new(toml: &str) -> Agent {
        let dir = tempfile::Builder::new().prefix("procctl-test").tempdir().expect("temp dir");
        let config = dir.path().join("procctl.toml");
        fs::write(&config, toml).unwrap();
        Agent {
            socket: dir.path().join("run/agent.sock"),
            state: dir.path().join("state"),
            config,
            dir,
            child: None,
            seen: HashMap::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_config(&self, toml: &str) {
        fs::write(&self.config, toml).unwrap();
    }

    /// procagent on this agent's config, socket and state directory.
    pub fn command(&self) -> Command {
        self.command_on(&self.socket, &self.state)
    }

    /// procagent on this agent's config with another socket or state directory.
    pub fn command_on(&self, socket: &Path, state: &Path) -> Command {
        let mut command = Command::new(bin("procagent"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(state)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1");
        command
    }

    /// Starts the agent process (in its own process group) and waits until it answers.
    pub fn launch(&mut self) {
        self.launch_with(&[]);
    }

    /// `launch` with more procagent flags.
    pub fn launch_with(&mut self, flags: &[&str]) {
        let log = fs::File::options().create(true).append(true).open(self.path("agent.log")).unwrap();
        self.launch_logging_to(flags, log.into());
    }

    /// `launch` with the agent's stderr going to `log`.
    pub fn launch_logging_to(&mut self, flags: &[&str], log: Stdio) {
        let child = self
            .command()
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start procagent");
        self.child = Some(child);
        wait_until(START_TIMEOUT, "the agent answers `procctl list`", || {
            assert!(self.is_running(), "procagent exited: {}", self.log());
            self.ctl(&["list"]).code == Some(0)
        });
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("agent started").id() as i32
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Waits for the agent process to exit; returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("agent started");
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < end, "the agent did not exit within {deadline:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("procctl"));
        command.args(args).env("PROCCTL_SOCKET", &self.socket).env("NO_COLOR", "1").current_dir(self.dir.path());
        command
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        run(&mut self.ctl_command(args), None, CTL_TIMEOUT)
    }

    pub fn ctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run(&mut self.ctl_command(args), Some(stdin), CTL_TIMEOUT)
    }

    /// `procctl list --json TARGET`, remembering every pid for the cleanup.
    pub fn list(&mut self, target: &str) -> Vec<Value> {
        let out = self.ctl(&["list", target, "--json"]);
        out.ok();
        let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("list --json is JSON");
        for row in &rows {
            if let Some(pid) = row["pid"].as_i64() {
                let pid = pid as i32;
                if let Some(start) = start_time(pid) {
                    self.seen.entry(pid).or_insert(start);
                }
            }
        }
        rows
    }

    pub fn row(&mut self, name: &str, index: u32) -> Value {
        self.list(&format!("{name}:{index}")).pop().expect("one row")
    }

    pub fn pid_of(&mut self, name: &str, index: u32) -> Option<i32> {
        self.row(name, index)["pid"].as_i64().map(|pid| pid as i32)
    }

    pub fn state_of(&mut self, name: &str, index: u32) -> String {
        self.row(name, index)["state"].as_str().unwrap().to_string()
    }

    pub fn wait_state(&mut self, name: &str, index: u32, state: &str) {
        wait_until(WAIT, &format!("{name}:{index} is {state}"), || self.state_of(name, index) == state);
    }

    /// Waits until `name` has exactly `count` instances, all running.
    pub fn wait_running(&mut self, name: &str, count: usize) -> Vec<i32> {
        let mut pids = vec![];
        wait_until(WAIT, &format!("{count} instance(s) of {name} are running"), || {
            let rows = self.list(name);
            pids = rows.iter().filter_map(|r| r["pid"].as_i64().map(|p| p as i32)).collect();
            rows.len() == count && rows.iter().all(|r| r["state"] == "running")
        });
        pids
    }

    /// Kills the agent outright, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Shuts the agent down through procctl and waits for it to exit 0.
    pub fn shutdown(&mut self) {
        self.ctl(&["shutdown"]).ok();
        assert_eq!(self.wait_exit(WAIT), Some(0), "{}", self.log());
    }

    /// Processes left in the groups of instances this test saw.
    pub fn leftovers(&self) -> Vec<i32> {
        leftovers_of(&self.seen)
    }

    pub fn remember(&mut self, pid: i32) {
        if let Some(start) = start_time(pid) {
            self.seen.insert(pid, start);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.list("all");
            let _ = run(&mut self.ctl_command(&["shutdown"]), None, Duration::from_secs(30));
            let end = Instant::now() + Duration::from_secs(30);
            while self.is_running() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(child) = self.child.as_mut() {
            // SAFETY: kill on the agent's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        let left = self.leftovers();
        for &pid in &left {
            // SAFETY: a process of a group this test's agent started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("processes left behind after the test: {left:?}\nagent log:\n{}", self.log());
        }
    }
}

/// /proc/PID/stat: (state, pgrp, start time).
pub fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields[0].chars().next()?, fields[2].parse().ok()?, fields[19].parse().ok()?))
}

pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.2)
}

pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.0 != 'Z')
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Live processes in the groups led by `seen` pids, started no earlier than their leader.
pub fn leftovers_of(seen: &HashMap<i32, u64>) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|(state, pgrp, start)| {
                state != 'Z' && seen.get(&pgrp).is_some_and(|&leader_start| start >= leader_start)
            })
        })
        .collect()
}

/// A `kB` field of /proc/PID/status, such as `VmRSS` or `VmHWM`.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
}

/// Reads one response frame, or `None` once the agent has closed the connection.
pub fn read_response(stream: &mut std::os::unix::net::UnixStream) -> Option<procctl_proto::Response> {
    use std::io::Read;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut body = vec![0u8; procctl_proto::frame::body_len(header).ok()?];
    stream.read_exact(&mut body).ok()?;
    procctl_proto::frame::decode_body(&body).ok()
}

/// Whether the agent closes `stream` within 15 s: end of stream, after whatever it still
/// sends, as opposed to a read that merely times out.
pub fn closed_by_agent(stream: &mut std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Zombies whose parent is `pid`.
pub fn zombies_of(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&child| {
            fs::read_to_string(format!("/proc/{child}/stat")).ok().is_some_and(|text| {
                let fields: Vec<&str> =
                    text.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
                fields.first() == Some(&"Z") && fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid)
            })
        })
        .collect()
}

/// Direct children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut kids = vec![];
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("children")) {
                kids.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    kids
}

pub fn kill(pid: i32, signal: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, signal) };
}

/// A TOML array for `sh -c SCRIPT`.
pub fn sh(script: &str) -> String {
    serde_json::to_string(&["sh", "-c", script]).unwrap()
}

/// The lines of a file, or none if it does not exist yet.
pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// A config of `n` sleepers named `worker` that count as started at once.
pub fn sleepers(n: u32) -> String {
    format!(
        "[process.worker]\ncommand = [\"sleep\", \"100000\"]\ninstances = {n}\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n"
    )
}
