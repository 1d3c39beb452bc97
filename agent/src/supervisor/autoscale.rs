//! Autoscaling: every `every`, a probe command (a child of the spawner, as the process's
//! user, cwd and environment, in a group of its own, killed at `every`) prints a number;
//! wanted = ceil(n / per_instance) within min..max, at most `step` away, a scale-down only
//! once the wanted count has stayed lower for `down_after`. Each change is an ordinary
//! scale. A failing probe or one that prints no number changes nothing and is told once per
//! streak (`autoscale_error`). `scale NAME N` pauses it, `scale NAME auto` resumes it; a
//! decision while a rolling restart of the process goes on is not carried out (the next
//! probe decides again). The probe's output is read through a pipe, keeping at most
//! `MAX_OUTPUT` bytes: a flood costs bounded memory.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Instant;

use procctl_proto::{EventKind, Exit, InstanceId};
use tokio_util::time::delay_queue::Key;

use super::{Due, Event, Spawning, Supervisor};
use crate::config::fleet::Autoscale;
use crate::spawn::{Context, SpawnRequest};

const MAX_OUTPUT: usize = 64;

/// The autoscaling state of every process with a policy.
#[derive(Default)]
pub struct Autoscaling {
    per: HashMap<String, Scaler>,
    by_pid: HashMap<i32, String>,
    generation: u64,
    next_token: u64,
}

#[derive(Default)]
struct Scaler {
    paused: bool,
    /// Since when the wanted count is below the current one.
    lower_since: Option<Instant>,
    /// In an error streak: told already.
    erring: bool,
    probe: Option<Probe>,
}

/// A probe on its way, running, or ended and waiting for the rest of its output.
struct Probe {
    token: u64,
    pid: Option<i32>,
    exit: Option<Exit>,
    output: Option<Vec<u8>>,
    timed_out: bool,
    timeout: Option<Key>,
}

impl Autoscaling {
    /// The processes whose autoscaling a `scale NAME N` paused.
    pub fn paused(&self) -> Vec<String> {
        self.per.iter().filter(|(_, scaler)| scaler.paused).map(|(name, _)| name.clone()).collect()
    }

    /// By process: how long its wanted count has stayed below the current one (a scale-down
    /// waiting out `down_after`), for a handover.
    pub fn lower_for(&self) -> Vec<(String, u64)> {
        let now = Instant::now();
        self.per
            .iter()
            .filter_map(|(name, scaler)| {
                scaler.lower_since.map(|since| (name.clone(), (now - since).as_millis() as u64))
            })
            .collect()
    }

    /// Takes up what `lower_for` handed over, for the processes that still autoscale.
    pub fn resume_lower_for(&mut self, lower: &[(String, u64)]) {
        let now = Instant::now();
        for (name, millis) in lower {
            if let Some(scaler) = self.per.get_mut(name) {
                scaler.lower_since = now.checked_sub(std::time::Duration::from_millis(*millis));
            }
        }
    }

    /// Whether an autoscale probe is under way (spawned or running).
    pub fn probing(&self) -> bool {
        self.per.values().any(|scaler| scaler.probe.is_some())
    }

    pub fn is_probe(&self, pid: i32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// `Some(true)` on, `Some(false)` paused, `None` without a policy.
    pub fn shown(&self, name: &str, has_policy: bool) -> Option<bool> {
        has_policy.then(|| !self.per.get(name).is_some_and(|s| s.paused))
    }
}

/// The count a probe's number asks for, and since when a lower count has been wanted:
/// `(new count if it changes, lower_since)`.
pub fn decide(
    n: u64,
    policy: &Autoscale,
    current: u32,
    lower_since: Option<Instant>,
    now: Instant,
) -> (Option<u32>, Option<Instant>) {
    let wanted = n.div_ceil(policy.per_instance).clamp(u64::from(policy.min), u64::from(policy.max)) as u32;
    let step = policy.step.unwrap_or(u32::MAX);
    if wanted > current {
        return (Some(wanted.min(current.saturating_add(step))), None);
    }
    if wanted == current {
        return (None, None);
    }
    match lower_since {
        Some(since) if now.duration_since(since) >= policy.down_after => {
            (Some(wanted.max(current.saturating_sub(step))), None)
        }
        Some(since) => (None, Some(since)),
        None if policy.down_after.is_zero() => (Some(wanted.max(current.saturating_sub(step))), None),
        None => (None, Some(now)),
    }
}

/// The one non-negative number a probe printed, or why not.
pub fn reading(output: &[u8], exit: Option<Exit>, timed_out: bool) -> Result<u64, String> {
    if timed_out {
        return Err("the probe gave no result within `every`".into());
    }
    match exit {
        Some(Exit::Code(0)) => {}
        Some(exit) => return Err(format!("the probe exited with {exit}")),
        None => return Err("the probe could not run".into()),
    }
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    // redis-cli prints `(integer) 12` on a terminal; as a pipe it prints `12`.
    let text = text.strip_prefix("(integer) ").unwrap_or(text);
    text.parse::<u64>()
        .map_err(|_| format!("the probe printed no number: {:?}", text.chars().take(40).collect::<String>()))
}

impl Supervisor {
    /// (Re)arms the probes of every process with a policy; a reload that changes a policy
    /// resumes it.
    pub(super) fn autoscale_arm(&mut self, changed: &[String]) {
        self.autoscaling.generation += 1;
        let generation = self.autoscaling.generation;
        for name in changed {
            if let Some(scaler) = self.autoscaling.per.get_mut(name) {
                scaler.paused = false;
            }
        }
        for (name, spec) in &self.config.processes {
            if let Some(policy) = &spec.autoscale {
                self.autoscaling.per.entry(name.clone()).or_default();
                self.timers.after(policy.every, Due::Autoscale { name: name.clone(), generation });
            }
        }
        let config = &self.config;
        self.autoscaling.per.retain(|name, _| config.processes.get(name).is_some_and(|s| s.autoscale.is_some()));
    }

    /// `scale NAME N`: autoscaling of NAME waits for `scale NAME auto`.
    pub(super) fn autoscale_pause(&mut self, name: &str) {
        if let Some(scaler) = self.autoscaling.per.get_mut(name) {
            scaler.paused = true;
            self.touch();
        }
    }

    /// `scale NAME auto`: the current count, or why not.
    pub(super) fn autoscale_resume(&mut self, name: &str) -> Result<u32, procctl_proto::WireError> {
        use procctl_proto::{ErrorKind, WireError};
        if !self.config.processes.contains_key(name) {
            return Err(WireError::new(ErrorKind::NotFound, format!("no process named `{name}`")));
        }
        let Some(scaler) = self.autoscaling.per.get_mut(name) else {
            return Err(WireError::new(ErrorKind::Refused, format!("`{name}` has no autoscale policy")));
        };
        scaler.paused = false;
        self.touch();
        Ok(self.count(name))
    }

    pub(super) fn on_autoscale_due(&mut self, name: String, generation: u64) {
        if generation != self.autoscaling.generation || self.shutting_down {
            return;
        }
        let Some(policy) = self.config.processes.get(&name).and_then(|spec| spec.autoscale.clone()) else {
            return;
        };
        self.timers.after(policy.every, Due::Autoscale { name: name.clone(), generation });
        let Some(scaler) = self.autoscaling.per.get_mut(&name) else {
            return;
        };
        if scaler.paused || scaler.probe.is_some() {
            return;
        }
        self.autoscaling.next_token += 1;
        let token = self.autoscaling.next_token;
        scaler.probe = Some(Probe { token, pid: None, exit: None, output: None, timed_out: false, timeout: None });
        self.next_seq += 1;
        let seq = self.next_seq;
        let spec = &self.config.processes[&name];
        let context = Context { base: &self.base_env, socket: &self.socket, notify: None };
        let mut request = SpawnRequest::probe(seq, &InstanceId::new(name.clone(), 0), spec, policy.probe, &context);
        request.capture = true;
        self.spawning.insert(seq, Spawning::Autoscale { name: name.clone(), token });
        if !self.kernel.spawn(request) {
            self.spawning.remove(&seq);
            self.autoscale_result(&name, token, Err("the probe could not be started".into()));
        }
    }

    pub(super) fn autoscale_spawned(
        &mut self,
        (name, token): (String, u64),
        spawned: Result<(i32, Option<OwnedFd>), String>,
    ) {
        let (pid, output) = match spawned {
            Ok(spawned) => spawned,
            Err(error) => return self.autoscale_result(&name, token, Err(error)),
        };
        let every = self.config.processes.get(&name).and_then(|s| s.autoscale.as_ref()).map(|p| p.every);
        let live = self.autoscaling.per.get_mut(&name).and_then(|s| s.probe.as_mut()).filter(|p| p.token == token);
        let (Some(probe), Some(every)) = (live, every) else {
            self.kernel.kill_group(pid);
            return;
        };
        probe.pid = Some(pid);
        probe.timeout = Some(self.timers.after_key(every, Due::AutoscaleTimeout { pid }));
        self.autoscaling.by_pid.insert(pid, name.clone());
        match output {
            Some(fd) => {
                let events = self.events.clone();
                let (owner, token_) = (name.clone(), token);
                let done = move |output| {
                    let _ = events.send(Event::AutoscaleOutput { name: owner, token: token_, output });
                };
                if let Err(e) = read_capped(fd, done) {
                    log!("{name}: cannot read its autoscale probe: {e}");
                    probe.output = Some(vec![]);
                }
            }
            None => probe.output = Some(vec![]),
        }
    }

    pub(super) fn on_autoscale_timeout(&mut self, pid: i32) {
        let Some(name) = self.autoscaling.by_pid.get(&pid) else {
            return;
        };
        if let Some(probe) = self.autoscaling.per.get_mut(name).and_then(|s| s.probe.as_mut()) {
            probe.timeout = None;
            probe.timed_out = true;
        }
        self.kernel.kill_group(pid);
    }

    pub(super) fn autoscale_reaped(&mut self, pid: i32, exit: Exit) {
        let Some(name) = self.autoscaling.by_pid.remove(&pid) else {
            return;
        };
        // What it left in its group goes with it, and with them the last writers of its pipe.
        self.kernel.kill_group(pid);
        let Some(probe) = self.autoscaling.per.get_mut(&name).and_then(|s| s.probe.as_mut()) else {
            return;
        };
        if let Some(key) = probe.timeout.take() {
            self.timers.remove(&key);
        }
        probe.exit = Some(exit);
        self.autoscale_maybe_done(&name);
    }

    pub(super) fn on_autoscale_output(&mut self, name: String, token: u64, output: Vec<u8>) {
        let Some(probe) = self.autoscaling.per.get_mut(&name).and_then(|s| s.probe.as_mut()) else {
            return;
        };
        if probe.token == token {
            probe.output = Some(output);
            self.autoscale_maybe_done(&name);
        }
    }

    /// Once the probe has exited and its output is all read.
    fn autoscale_maybe_done(&mut self, name: &str) {
        let Some(scaler) = self.autoscaling.per.get_mut(name) else {
            return;
        };
        let Some(probe) = scaler.probe.as_ref() else {
            return;
        };
        let (Some(exit), Some(output)) = (probe.exit, probe.output.as_ref()) else {
            return;
        };
        let result = reading(output, Some(exit), probe.timed_out);
        let token = probe.token;
        self.autoscale_result(name, token, result);
    }

    fn autoscale_result(&mut self, name: &str, token: u64, result: Result<u64, String>) {
        let Some(scaler) =
            self.autoscaling.per.get_mut(name).filter(|s| s.probe.as_ref().is_some_and(|p| p.token == token))
        else {
            return;
        };
        scaler.probe = None;
        let n = match result {
            Ok(n) => n,
            Err(reason) => {
                if !std::mem::replace(&mut scaler.erring, true) {
                    log!("{name}: autoscale: {reason}");
                    self.bus.emit(EventKind::AutoscaleError { name: name.to_string(), reason });
                }
                return;
            }
        };
        scaler.erring = false;
        let (paused, lower_since) = (scaler.paused, scaler.lower_since);
        if paused || self.shutting_down || self.recycling.rolling(name) {
            return;
        }
        let Some(policy) = self.config.processes.get(name).and_then(|s| s.autoscale.as_ref()) else {
            return;
        };
        let current = self.count(name);
        let (to, lower_since) = decide(n, policy, current, lower_since, Instant::now());
        if let Some(scaler) = self.autoscaling.per.get_mut(name) {
            scaler.lower_since = lower_since;
        }
        if let Some(to) = to {
            log!("{name}: autoscale: the probe says {n}: {current} -> {to} instance(s)");
            if let Err(e) = self.scale(name, to, true) {
                log!("{name}: autoscale: {}", e.message);
            }
        }
    }
}

/// Reads a probe's output to its end, keeping the first MAX_OUTPUT bytes, and hands it to
/// `done` (which sends it to the supervisor).
pub(super) fn read_capped(fd: OwnedFd, done: impl FnOnce(Vec<u8>) + Send + 'static) -> std::io::Result<()> {
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if pipe.readable().await.is_err() {
                break;
            }
            match pipe.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = (MAX_OUTPUT + 1).saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            }
            // Readiness alone never yields: a pipe that never runs dry would starve the
            // agent's one thread.
            tokio::task::yield_now().await;
        }
        done(kept);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_scale_down_waiting_out_down_after_goes_over_with_the_time_it_waited() {
        let mut before = Autoscaling::default();
        let since = Instant::now() - Duration::from_secs(30);
        before.per.insert("w".into(), Scaler { lower_since: Some(since), ..Scaler::default() });
        before.per.insert("steady".into(), Scaler::default());
        let handed = before.lower_for();
        assert_eq!(handed.len(), 1, "only the process that waits: {handed:?}");
        assert!(handed[0].1 >= 30_000, "{handed:?}");

        let mut after = Autoscaling::default();
        after.per.insert("w".into(), Scaler::default());
        after.resume_lower_for(&[handed[0].clone(), ("gone".into(), 5)]);
        let waited = after.per["w"].lower_since.expect("waits on").elapsed();
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
        assert!(!after.per.contains_key("gone"), "a process no longer autoscaled is left out");
    }

    fn policy(min: u32, max: u32, step: Option<u32>) -> Autoscale {
        Autoscale {
            min,
            max,
            probe: vec![],
            per_instance: 10,
            every: Duration::from_secs(1),
            step,
            down_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_count_follows_the_number_within_bounds_and_steps() {
        let now = Instant::now();
        let long_ago = now - Duration::from_secs(60);
        let recently = now - Duration::from_secs(5);
        // (n, min, max, step, current, lower since) -> (new count, lower since)
        let cases = [
            (0, 1, 8, None, 1, None, (None, None)),
            (25, 1, 8, None, 1, None, (Some(3), None)),
            (1000, 1, 8, None, 1, None, (Some(8), None)),
            (1000, 1, 8, Some(2), 1, None, (Some(3), None)),
            (5, 1, 8, None, 4, None, (None, Some(now))),
            (5, 1, 8, None, 4, Some(recently), (None, Some(recently))),
            (5, 1, 8, None, 4, Some(long_ago), (Some(1), None)),
            (5, 1, 8, Some(2), 4, Some(long_ago), (Some(2), None)),
            (0, 2, 8, None, 4, Some(long_ago), (Some(2), None)),
            (40, 1, 8, None, 4, Some(recently), (None, None)),
        ];
        for (n, min, max, step, current, since, want) in cases {
            assert_eq!(
                decide(n, &policy(min, max, step), current, since, now),
                want,
                "{n} {min}..{max} {step:?} {current}"
            );
        }
    }

    #[test]
    fn only_one_number_from_a_clean_exit_counts() {
        let ok = Some(Exit::Code(0));
        assert_eq!(reading(b"12\n", ok, false), Ok(12));
        assert_eq!(reading(b"(integer) 7\n", ok, false), Ok(7));
        assert!(reading(b"-3\n", ok, false).is_err());
        assert!(reading(b"12 13\n", ok, false).is_err());
        assert!(reading(b"", ok, false).is_err());
        assert!(reading(b"12\n", Some(Exit::Code(1)), false).is_err());
        assert!(reading(b"12\n", ok, true).is_err());
    }
}
