//! An agent started outside the `Agent` fixture: as `nobody` through setpriv, as PID 1 of a
//! PID namespace under unshare, with a notify socket of a service manager. It runs in a
//! process group of its own, and dropping it stops it and kills what is left of the group.

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::agent::{Output, run};
use super::procfs::kill;
use super::wait::{CTL_TIMEOUT, WAIT, poll_until, wait_until};

/// A command from an argv (`setpriv ... procagent`, `nsenter ... procctl`).
pub fn command_of(argv: &[OsString]) -> Command {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// An agent started outside the fixture: as `nobody`, in a PID namespace, with a notify
/// socket. It runs in a process group of its own; dropping it sends SIGTERM to the agent,
/// waits, then kills the group.
pub struct Daemon {
    pub child: Child,
    /// The agent itself (for `unshare`, the child of the unshare process).
    pub agent: i32,
    pub log: PathBuf,
    /// procctl and its first arguments (`--socket PATH`), maybe behind setpriv or nsenter.
    pub ctl: Vec<OsString>,
}

impl Daemon {
    /// Starts `command` with its stderr appended to `log`; does not wait for it to serve.
    pub fn spawn(mut command: Command, log: &Path, ctl: Vec<OsString>) -> Daemon {
        let file = fs::File::options().create(true).append(true).open(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .env("NO_COLOR", "1")
            .process_group(0)
            .spawn()
            .expect("start the agent");
        let agent = child.id() as i32;
        Daemon { child, agent, log: log.to_path_buf(), ctl }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until it answers `list`.
    pub fn serving(&mut self) {
        wait_until(WAIT, "the agent answers `procctl list`", || {
            assert!(self.running(), "the agent exited: {}", self.log());
            self.ctl(&["list"]).code == Some(0)
        });
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        run(command_of(&self.ctl).args(args).env("NO_COLOR", "1"), None, CTL_TIMEOUT)
    }

    pub fn rows(&self, target: &str) -> Vec<Value> {
        let out = self.ctl(&["list", target, "--json"]);
        out.ok();
        serde_json::from_str(&out.stdout).expect("list --json is JSON")
    }

    pub fn row(&self, target: &str) -> Value {
        self.rows(target).pop().expect("one row")
    }

    pub fn pid_of(&self, target: &str) -> Option<i32> {
        self.row(target)["pid"].as_i64().map(|p| p as i32)
    }

    #[track_caller]
    pub fn wait_state(&self, target: &str, state: &str) -> Value {
        let mut row = Value::Null;
        wait_until(WAIT, &format!("{target} is {state}"), || {
            row = self.row(target);
            row["state"] == state
        });
        row
    }

    /// Waits for the process started (setpriv or unshare) to exit; its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let mut status = None;
        wait_until(deadline, "the agent exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.and_then(|s| s.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            kill(self.agent, libc::SIGTERM);
            poll_until(Duration::from_secs(20), Duration::from_millis(10), || !self.running());
        }
        // Only while the child is not reaped is its group id surely ours. The agent is in
        // that group (under unshare --kill-child it also dies with its parent).
        if self.running() {
            kill(-(self.child.id() as i32), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
