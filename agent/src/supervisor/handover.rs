//! The supervisor's state as an upgrade hands it to the next image (`HandedState`), and the
//! supervisor the next image makes of it (`Supervisor::resume`).
//!
//! Handed over: every instance's state machine whole (state, pid, group, run, restarts,
//! backoff, quick failures, timer generations), its start time, cgroup, STATUS= and health
//! count, its timers as the time they had left, the agent's ends of its message pipe and
//! output capture (by descriptor), its recycles and the messages its run was sent
//! (`max_messages`), and its `max_age` deadline (from its start time); the run counter, the
//! scale overrides, autoscaling paused by a `scale`, how long an autoscale scale-down has
//! waited out `down_after`, and `send --any`'s turn. Not handed over, and started afresh by
//! the new image: probes and the watchdog of each run (they begin again as for a new run of
//! that state), memory-check and autoscale timers, `max_memory` strikes, recycles held
//! back, the in-memory log ring (the log files stay). An upgrade waits until no spawn, hook
//! or probe is in flight and no pipe is half written (`busy`), so none of those is lost.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use procctl_proto::{InstanceId, State};
use serde::{Deserialize, Serialize};

use super::{Due, Parts, Supervisor};
use crate::instance::{Instance, Timer};
use crate::table::ScaleOverride;
use crate::upgrade::FdList;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedState {
    pub runs: u64,
    pub next_seq: u64,
    pub scaled: BTreeMap<String, ScaleOverride>,
    pub round_robin: BTreeMap<String, usize>,
    /// Processes whose autoscaling a `scale NAME N` paused.
    #[serde(default)]
    pub autoscale_paused: Vec<String>,
    /// Processes whose autoscale scale-down waits out `down_after`: for how long so far (ms).
    #[serde(default)]
    pub autoscale_lower_for: Vec<(String, u64)>,
    pub instances: Vec<HandedInstance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedInstance {
    pub id: InstanceId,
    pub inst: Instance,
    pub start_time: Option<u64>,
    pub start_error: Option<String>,
    pub health_failures: u64,
    pub status: Option<String>,
    pub cgroup: Option<PathBuf>,
    /// The timers armed: kind, milliseconds left, generation.
    pub timers: Vec<(Timer, u64, u64)>,
    /// Recycles over all runs, and the messages routed to the current run (`max_messages`).
    #[serde(default)]
    pub recycles: u32,
    #[serde(default)]
    pub messages: u64,
    /// The agent's end of the message pipe, while messages are routed to it.
    pub pipe: Option<usize>,
    /// The read end of its output.
    pub output: Option<usize>,
}

impl HandedState {
    /// No instance (what is left once a handover is taken).
    pub fn empty() -> HandedState {
        HandedState {
            runs: 0,
            next_seq: 0,
            scaled: BTreeMap::new(),
            round_robin: BTreeMap::new(),
            autoscale_paused: vec![],
            autoscale_lower_for: vec![],
            instances: vec![],
        }
    }
}

/// What a run keeps for a handover: copies of the agent's ends of its pipes (the pipe's
/// and the capture's tasks own the originals), and its pipe writer's progress.
#[derive(Default)]
pub struct Kept {
    pipe: Option<OwnedFd>,
    output: Option<OwnedFd>,
    writing: Option<crate::pipe::Writing>,
}

impl Kept {
    /// Copies of a new run's ends; a copy that cannot be made leaves that end out of an
    /// upgrade (said in the log).
    pub fn of_run(id: &InstanceId, pipe: Option<&OwnedFd>, output: Option<&OwnedFd>) -> Kept {
        let copy = |fd: Option<&OwnedFd>| {
            fd.and_then(|fd| {
                fd.try_clone().inspect_err(|e| log!("{id}: cannot keep a copy of a pipe for an upgrade: {e}")).ok()
            })
        };
        Kept { pipe: copy(pipe), output: copy(output), writing: None }
    }

    pub fn with_writing(mut self, writing: Option<crate::pipe::Writing>) -> Kept {
        self.writing = writing;
        self
    }

    /// Its pipe writer has a message half written.
    pub fn mid_write(&self) -> bool {
        self.writing.as_ref().is_some_and(crate::pipe::Writing::busy)
    }
}

impl Supervisor {
    /// The whole state, with the descriptors it names added to `fds`.
    pub(super) fn handed_state(&self, fds: &mut FdList) -> HandedState {
        let instances = self
            .slots
            .iter()
            .map(|(id, slot)| HandedInstance {
                id: id.clone(),
                inst: slot.inst.clone(),
                start_time: slot.start_time,
                start_error: slot.start_error.clone(),
                health_failures: slot.health_failures,
                status: slot.checks.status.clone(),
                cgroup: slot.cgroup.clone(),
                timers: slot
                    .timers
                    .armed()
                    .map(|(timer, key)| {
                        (timer, self.timers.remaining(key).as_millis() as u64, slot.inst.generation(timer))
                    })
                    .collect(),
                recycles: self.recycling.recycles(id),
                messages: self.recycling.messages(id, slot.inst.run),
                pipe: slot.pipe.as_ref().and(slot.kept.pipe.as_ref()).map(|fd| fds.add(fd.as_raw_fd())),
                output: slot.kept.output.as_ref().map(|fd| fds.add(fd.as_raw_fd())),
            })
            .collect();
        HandedState {
            runs: self.runs,
            next_seq: self.next_seq,
            scaled: self.scaled.clone(),
            round_robin: self.round_robin.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            autoscale_paused: {
                let mut paused = self.autoscaling.paused();
                paused.sort();
                paused
            },
            autoscale_lower_for: {
                let mut lower = self.autoscaling.lower_for();
                lower.sort();
                lower
            },
            instances,
        }
    }

    /// Why an upgrade cannot be made at this moment without losing something, if so.
    pub(super) fn handover_busy(&self) -> Option<String> {
        if !self.spawning.is_empty() {
            return Some("a start is under way".into());
        }
        if !self.hooks.idle() {
            return Some("a hook is running".into());
        }
        if self.readiness.probes_running() {
            return Some("an exec probe is running".into());
        }
        if self.autoscaling.probing() {
            return Some("an autoscale probe is running".into());
        }
        if let Some((id, _)) = self.slots.iter().find(|(_, slot)| slot.kept.mid_write()) {
            return Some(format!("a message to {id} is being written"));
        }
        None
    }

    /// The supervisor of a new image, from what the image before handed over: every
    /// instance as it was, its pipes and output taken up again, its timers armed with the
    /// time they had left. Instances of processes the config in effect no longer has (removed
    /// by a reload, still draining) are killed; instances it gained are added as a start would add them.
    /// `take` gives the descriptor at an index of the handover (once).
    pub fn resume(
        parts: Parts,
        state: HandedState,
        take: &mut dyn FnMut(Option<usize>) -> Option<OwnedFd>,
    ) -> Supervisor {
        let mut sup = Supervisor::assemble(parts);
        sup.service.handed_over();
        sup.runs = state.runs;
        sup.next_seq = state.next_seq;
        sup.scaled = state.scaled;
        sup.round_robin = state.round_robin.into_iter().collect();
        for row in state.instances {
            let id = row.id;
            let (pipe, output) = (take(row.pipe), take(row.output));
            if !sup.config.processes.contains_key(&id.name) {
                log!("{id}: its process is no longer in the config: ending it");
                if let Some(pgid) = row.inst.pgid {
                    sup.kernel.kill_run(row.cgroup.as_deref(), pgid);
                }
                continue;
            }
            let mut slot = sup.new_slot(&id);
            let run = row.inst.run;
            sup.recycling.resume(&id, row.recycles, run, row.messages);
            slot.inst = row.inst;
            slot.start_time = row.start_time;
            slot.start_error = row.start_error;
            slot.health_failures = row.health_failures;
            slot.checks.status = row.status;
            slot.cgroup = row.cgroup;
            if let Some(pid) = slot.inst.pid {
                sup.by_pid.insert(pid, id.clone());
            }
            for (timer, left, generation) in row.timers {
                let due = Due::Instance { id: id.clone(), timer, generation };
                sup.timers.arm(&mut slot.timers, timer, Duration::from_millis(left), due);
            }
            // A run stopped or drained past its deadline was SIGKILLed: its rechecks (until
            // the group is gone, or the main process is taken as ended) go on from the first.
            let killed = slot.inst.pgid.is_some()
                && (slot.inst.state == State::Stopping || slot.inst.pid.is_none())
                && !slot.timers.armed().any(|(timer, _)| timer == Timer::StopDeadline);
            if killed {
                sup.timers.after(Duration::ZERO, Due::Recheck { id: id.clone(), run, attempt: 1, vanished: false });
            }
            let (state, live) = (slot.inst.state, slot.inst.pid.is_some());
            sup.slots.insert(id.clone(), slot);
            if live {
                sup.attach_run(&id, run, pipe, output);
            }
            match state {
                State::Running if live => {
                    sup.begin_running_checks(&id);
                    sup.recycle_resumed(&id, run);
                }
                State::Starting if live => {
                    sup.begin_ready_checks(&id);
                    sup.recycle_resumed(&id, run);
                }
                State::Waiting => {
                    sup.waiting.insert(id.clone());
                }
                _ => {}
            }
            sup.follow_cgroup(&id);
        }
        let names: Vec<String> = sup.config.processes.keys().cloned().collect();
        for name in names {
            for index in 0..sup.desired(&name) {
                let id = InstanceId::new(name.clone(), index);
                if sup.slots.contains_key(&id) {
                    continue;
                }
                let slot = sup.new_slot(&id);
                sup.slots.insert(id.clone(), slot);
                if sup.config.processes[&name].autostart {
                    sup.start_with_dependencies(&id);
                }
            }
        }
        sup.warn_unlimited();
        sup.recycle_arm_checks();
        sup.autoscale_arm(&[]);
        for name in &state.autoscale_paused {
            sup.autoscale_pause(name);
        }
        sup.autoscaling.resume_lower_for(&state.autoscale_lower_for);
        // Groups that emptied during the exec; exits in it are reaped as the reaper starts.
        sup.check_draining_groups();
        sup.recheck_waiting();
        sup.drain();
        sup.touch();
        sup
    }
}
