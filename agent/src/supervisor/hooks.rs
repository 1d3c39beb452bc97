//! Hooks: `pre_start` before each start (a non-zero exit, a failure to run it or its
//! timeout is a failed start), `post_stop` after each run ends, `on_fatal` when an instance
//! turns `fatal`. Each is a child of the spawner like an `exec` probe: the instance's user,
//! cwd and environment plus PROCCTL_EVENT, PROCCTL_EXIT_CODE / PROCCTL_EXIT_SIGNAL and
//! PROCCTL_RESTARTS, a process group of its own that is killed at `hook_timeout` and once
//! the hook has exited (so nothing it forked stays), its output in the instance's log line
//! by line behind a `[pre_start]` prefix, each line cut at `MAX_LINE`. Nothing waits for a
//! hook but the start it precedes; shutdown waits for the hooks still running, each at
//! most its timeout.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;

use procctl_proto::{Exit, InstanceId, State};
use tokio_util::time::delay_queue::Key;

use super::{Due, Spawning, Supervisor};
use crate::instance::{Input, SPAWN_REPORT_TIMEOUT, Timer};
use crate::logs::{self, Follow, SharedSink};
use crate::spawn::{Context, SpawnRequest};

/// The longest line of a hook's output kept in the log; the rest of it is dropped.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreStart,
    PostStop,
    OnFatal,
}

impl Hook {
    pub fn key(self) -> &'static str {
        match self {
            Hook::PreStart => "pre_start",
            Hook::PostStop => "post_stop",
            Hook::OnFatal => "on_fatal",
        }
    }

    /// PROCCTL_EVENT.
    fn event(self) -> &'static str {
        match self {
            Hook::PreStart => "pre_start",
            Hook::PostStop => "post_stop",
            Hook::OnFatal => "fatal",
        }
    }
}

/// A hook on its way (`spawning`) or running.
pub struct Running {
    id: InstanceId,
    hook: Hook,
    /// For a `pre_start`: the token of the start it precedes.
    token: u64,
    timeout: Option<Key>,
}

/// The hooks of the whole agent.
#[derive(Default)]
pub struct Hooks {
    running: HashMap<i32, Running>,
    timed_out: HashSet<i32>,
    /// By instance: the start whose `pre_start` is on its way or running, by token, and
    /// the run it is to spawn.
    pre_start: HashMap<InstanceId, (u64, u64)>,
    next_token: u64,
}

impl Hooks {
    pub fn is_hook(&self, pid: i32) -> bool {
        self.running.contains_key(&pid)
    }

    /// No hook is running: shutdown may finish.
    pub fn idle(&self) -> bool {
        self.running.is_empty()
    }
}

/// The extra environment of a hook.
pub fn hook_env(hook: Hook, exit: Option<Exit>, restarts: u32) -> Vec<(String, String)> {
    let (code, signal) = match exit {
        Some(Exit::Code(code)) => (code.to_string(), String::new()),
        Some(Exit::Signal(signal)) => (String::new(), signal.name()),
        None => (String::new(), String::new()),
    };
    vec![
        ("PROCCTL_EVENT".into(), hook.event().into()),
        ("PROCCTL_EXIT_CODE".into(), code),
        ("PROCCTL_EXIT_SIGNAL".into(), signal),
        ("PROCCTL_RESTARTS".into(), restarts.to_string()),
    ]
}

impl Supervisor {
    /// Starts `hook` of `id` if its process has one; for a `pre_start`, returns whether it
    /// was asked for (the spawn of run `run` then waits for it).
    pub(super) fn run_hook(&mut self, id: &InstanceId, hook: Hook, run: u64, exit: Option<Exit>) -> bool {
        let (Some(slot), Some(spec)) = (self.slots.get(id), self.config.processes.get(&id.name)) else {
            return false;
        };
        let argv = match hook {
            Hook::PreStart => &spec.hooks.pre_start,
            Hook::PostStop => &spec.hooks.post_stop,
            Hook::OnFatal => &spec.hooks.on_fatal,
        };
        let Some(argv) = argv.clone() else {
            return false;
        };
        self.next_seq += 1;
        let seq = self.next_seq;
        let context = Context { base: &self.base_env, socket: &self.socket, notify: None };
        let mut request = SpawnRequest::probe(seq, id, spec, argv, &context);
        let extra = hook_env(hook, exit, slot.inst.restarts);
        request.env.retain(|(key, _)| !extra.iter().any(|(k, _)| k == key));
        request.env.extend(extra);
        request.capture = true;
        let mut token = 0;
        if hook == Hook::PreStart {
            self.hooks.next_token += 1;
            token = self.hooks.next_token;
            self.hooks.pre_start.insert(id.clone(), (token, run));
        }
        self.spawning.insert(seq, Spawning::Hook { id: id.clone(), hook, token });
        if !self.kernel.spawn(request) {
            self.spawning.remove(&seq);
            self.hooks.pre_start.remove(id);
            return false;
        }
        true
    }

    /// The spawner ran (or could not run) a hook.
    pub(super) fn hook_spawned(
        &mut self,
        (id, hook, token): (InstanceId, Hook, u64),
        spawned: Result<(i32, Option<OwnedFd>), String>,
    ) {
        let (pid, output) = match spawned {
            Ok(spawned) => spawned,
            Err(error) => return self.hook_ended(&id, hook, token, Err(error)),
        };
        let timeout =
            self.config.processes.get(&id.name).map_or(crate::config::fleet::HOOK_TIMEOUT, |s| s.hooks.timeout);
        let key = self.timers.after_key(timeout, Due::HookTimeout { pid });
        self.hooks.running.insert(pid, Running { id: id.clone(), hook, token, timeout: Some(key) });
        // A `pre_start` whose start was cut (a stop) or given up while it was on its way:
        // `cut_pre_start` found it not yet running, so it is killed now; its end tells the
        // instance as usual.
        if hook == Hook::PreStart && !self.pre_start_wanted(&id, token) {
            self.kernel.kill_group(pid);
        } else if hook == Hook::PreStart {
            // The start's spawn report may not come before the hook has had its time.
            self.hold_spawn_timer(&id, timeout + SPAWN_REPORT_TIMEOUT);
        }
        if let (Some(output), Some(slot)) = (output, self.slots.get(&id))
            && let Err(e) = capture(output, slot.sink.clone(), self.follow.clone(), hook.key())
        {
            log!("{id}: cannot capture the output of its {} hook: {e}", hook.key());
        }
    }

    pub(super) fn on_hook_timeout(&mut self, pid: i32) {
        if let Some(running) = self.hooks.running.get_mut(&pid) {
            running.timeout = None;
            self.kernel.kill_group(pid);
            self.hooks.timed_out.insert(pid);
        }
    }

    /// A hook's process was reaped: what it left in its group goes with it.
    pub(super) fn hook_reaped(&mut self, pid: i32, exit: Exit) {
        let Some(running) = self.hooks.running.remove(&pid) else {
            return;
        };
        self.kernel.kill_group(pid);
        if let Some(key) = &running.timeout {
            self.timers.remove(key);
        }
        let result = match (self.hooks.timed_out.remove(&pid), exit) {
            (true, _) => Err("no result within its hook_timeout".to_string()),
            (false, Exit::Code(0)) => Ok(()),
            (false, exit) => Err(format!("exited with {exit}")),
        };
        self.hook_ended(&running.id, running.hook, running.token, result);
    }

    fn hook_ended(&mut self, id: &InstanceId, hook: Hook, token: u64, result: Result<(), String>) {
        let key = hook.key();
        if hook != Hook::PreStart {
            if let (Err(why), Some(slot)) = (&result, self.slots.get(id)) {
                log!("{id}: its {key} hook failed: {why}");
                logs::note(&slot.sink, &self.follow, &format!("procagent: the {key} hook failed: {why}"));
            }
            return;
        }
        let Some(&(current, run)) = self.hooks.pre_start.get(id) else {
            return;
        };
        if current != token {
            return; // a start given up since
        }
        let wanted = self.pre_start_wanted(id, token);
        self.hooks.pre_start.remove(id);
        match result {
            Ok(()) if wanted => {
                self.hold_spawn_timer(id, SPAWN_REPORT_TIMEOUT);
                self.spawn_run(id, run);
            }
            Ok(()) => self.feed(id, Input::SpawnFailed),
            Err(why) => {
                if wanted {
                    self.start_failed(id, format!("the pre_start hook failed: {why}"));
                }
                self.feed(id, Input::SpawnFailed);
            }
        }
    }

    /// Moves the deadline of the spawn report `id` waits for (armed by the instance when it
    /// asked for the spawn, which a `pre_start` precedes) to `delay` from now.
    fn hold_spawn_timer(&mut self, id: &InstanceId, delay: std::time::Duration) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.timers.armed().any(|(timer, _)| timer == Timer::Spawn) {
            let due =
                Due::Instance { id: id.clone(), timer: Timer::Spawn, generation: slot.inst.generation(Timer::Spawn) };
            self.timers.arm(&mut slot.timers, Timer::Spawn, delay, due);
        }
    }

    /// Whether the start that `pre_start` `token` precedes is still to be made.
    fn pre_start_wanted(&self, id: &InstanceId, token: u64) -> bool {
        self.hooks.pre_start.get(id).is_some_and(|&(current, _)| current == token)
            && self.slots.get(id).is_some_and(|slot| slot.inst.awaits_spawn() && slot.inst.state == State::Starting)
    }

    /// The start `id` was waiting for is not wanted any more (stopped, given up): its
    /// `pre_start` is killed; its end then tells the instance.
    pub(super) fn cut_pre_start(&mut self, id: &InstanceId) {
        let Some(&(token, _)) = self.hooks.pre_start.get(id) else {
            return;
        };
        let pids: Vec<i32> = self
            .hooks
            .running
            .iter()
            .filter(|(_, r)| r.id == *id && r.hook == Hook::PreStart && r.token == token)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            self.kernel.kill_group(pid);
        }
    }

    /// A start given up without a report (the spawn timer): its hook's end is for nobody.
    pub(super) fn forget_pre_start(&mut self, id: &InstanceId) {
        self.cut_pre_start(id);
        self.hooks.pre_start.remove(id);
    }

    /// A second stop signal: every hook is killed.
    pub(super) fn kill_hooks(&mut self) {
        let pids: Vec<i32> = self.hooks.running.keys().copied().collect();
        for pid in pids {
            self.kernel.kill_group(pid);
        }
    }
}

/// Copies a hook's output into the instance's log, each line behind `[key]` and cut at
/// MAX_LINE; reads until the hook and all it started have closed the pipe.
fn capture(fd: OwnedFd, sink: SharedSink, follow: Follow, key: &'static str) -> std::io::Result<()> {
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    tokio::spawn(async move {
        let mut line: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        let put = |line: &mut Vec<u8>| {
            logs::note(&sink, &follow, &format!("[{key}] {}", String::from_utf8_lossy(line)));
            line.clear();
        };
        loop {
            if pipe.readable().await.is_err() {
                break;
            }
            match pipe.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for &byte in &buf[..n] {
                        if byte == b'\n' {
                            put(&mut line);
                        } else if line.len() < MAX_LINE {
                            line.push(byte);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            }
            // Readiness alone never yields: a pipe that never runs dry would starve the
            // agent's one thread.
            tokio::task::yield_now().await;
        }
        if !line.is_empty() {
            put(&mut line);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::Signal;

    #[test]
    fn a_hook_hears_how_the_run_ended() {
        let env = |hook, exit| -> Vec<String> {
            hook_env(hook, exit, 2).into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        // (hook, exit) -> PROCCTL_EVENT, PROCCTL_EXIT_CODE, PROCCTL_EXIT_SIGNAL, PROCCTL_RESTARTS
        let cases = [
            (Hook::PostStop, Some(Exit::Code(3)), ["post_stop", "3", "", "2"]),
            (Hook::OnFatal, Some(Exit::Signal(Signal::KILL)), ["fatal", "", "KILL", "2"]),
            (Hook::PreStart, None, ["pre_start", "", "", "2"]),
        ];
        for (hook, exit, want) in cases {
            let want: Vec<String> = ["PROCCTL_EVENT", "PROCCTL_EXIT_CODE", "PROCCTL_EXIT_SIGNAL", "PROCCTL_RESTARTS"]
                .iter()
                .zip(want)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            assert_eq!(env(hook, exit), want, "{hook:?}");
        }
    }
}
