//! A running `procctl events`, its lines arriving on a channel, and the spare process a
//! test scales to make sure a watcher is subscribed before it acts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{Agent, WAIT, wait_until};

/// A process `spare` with no instances, for `Watcher::subscribed`.
pub const SPARE: &str = "[process.spare]\ncommand = [\"sleep\", \"100000\"]\ninstances = 0\nstart_secs = \"0s\"\n";

pub struct Watcher {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Watcher {
    /// `procctl events`, or `events --json`; stderr is piped and only read once it has ended.
    pub fn start(agent: &Agent, json: bool) -> Watcher {
        let args: &[&str] = if json { &["events", "--json"] } else { &["events"] };
        let mut child = agent.ctl_command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Watcher { child, lines }
    }

    /// Started and seen to be subscribed: the config must have `SPARE`, which it scales
    /// until its `scaled` event shows.
    pub fn subscribed(agent: &Agent, json: bool) -> Watcher {
        let watcher = Watcher::start(agent, json);
        watcher.wait_subscribed(agent);
        watcher
    }

    /// Waits until this watcher is seen to be subscribed (see `subscribed`).
    pub fn wait_subscribed(&self, agent: &Agent) {
        let mut count = 0;
        wait_until(WAIT, "the watcher is subscribed", || {
            count = 1 - count;
            agent.ctl(&["scale", "spare", &count.to_string()]).ok();
            self.lines.recv_timeout(Duration::from_millis(100)).is_ok_and(|l| l.contains("scaled"))
        });
    }

    /// Lines until one satisfies `done` (that one included); panics after the deadline.
    pub fn until(&self, what: &str, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut seen = vec![];
        wait_until(WAIT, what, || {
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(20)) {
                let stop = done(&line);
                seen.push(line);
                if stop {
                    return true;
                }
            }
            false
        });
        seen
    }

    /// As `until`, for `events --json`: each line parsed.
    pub fn until_json(&self, what: &str, mut done: impl FnMut(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let parse = |line: &str| serde_json::from_str(line).expect("events --json is JSON lines");
        self.until(what, |line| done(&parse(line))).iter().map(|line| parse(line)).collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
