//! The fixture: a real procagent in a temp dir, the real procctl bound to its socket.
//! Dropping an `Agent` shuts it down, kills whatever is left of its instances' process
//! groups, and fails the test if anything had to be killed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::procfs::{leftovers_of, start_time};
use super::wait::{CTL_TIMEOUT, START_TIMEOUT, WAIT, poll_until, wait_until};

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
    let mut status = None;
    if !poll_until(deadline, Duration::from_millis(2), || {
        status = child.try_wait().unwrap();
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not finish within {deadline:?}: {}", stderr.join().unwrap());
    }
    let status = status.expect("polled until it ended");
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
    /// Environment variables for the agent process, besides the test's own.
    pub env: Vec<(String, String)>,
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
            env: vec![],
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
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
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

    /// `launch` with the agent's stderr going to `log`. The agent gets SIGKILL when the test's
    /// thread ends, so a test binary that is itself killed leaves no agent running.
    pub fn launch_logging_to(&mut self, flags: &[&str], log: Stdio) {
        let mut command = self.command();
        command.args(flags).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).process_group(0);
        // SAFETY: prctl is async-signal-safe; it touches only the new process.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("start procagent");
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
        let mut status = None;
        wait_until(deadline, "the agent exits", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        status.and_then(|status| status.code())
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
            poll_until(Duration::from_secs(30), Duration::from_millis(5), || !self.is_running());
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
