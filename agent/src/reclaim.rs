//! At start-up: stop whatever an earlier agent on this state directory left running. At
//! shutdown: stop what the agent adopted as subreaper (processes that left their instance's
//! group and outlived their parent).
//!
//! Its direct children died with it (PDEATHSIG), but grandchildren may live on in their
//! instance's process group. A group is only touched when its recorded leader is dead or
//! still has the recorded start time, and only members that started after the leader
//! are signalled, so a reused pid is never hit. Descendants that left their group
//! (setsid, daemonizing) are found by the `PROCCTL_AGENT` token they inherited: it names
//! one run of one agent, so no stranger carries it. An agent that shut down cleanly and
//! left nothing behind saves its table without the token, which spares the next one that
//! search of every process.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::group;
use crate::procfs;
use crate::table::TableFile;

/// How long leftovers get after SIGKILL before they are reported as unkillable.
const KILL_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// The variable that carries the token into every process the agent starts.
pub const TOKEN_VAR: &str = "PROCCTL_AGENT";

static TOKEN: OnceLock<String> = OnceLock::new();

/// After an upgrade: the token of the image before, which every instance carries.
pub fn keep_token(token: String) {
    let _ = TOKEN.set(token);
}

/// This run of the agent: its pid, its start time and the clock at start-up.
pub fn token() -> &'static str {
    TOKEN.get_or_init(|| {
        let pid = std::process::id();
        let started = procfs::stat(pid as i32).map_or(0, |s| s.start_time);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{pid}.{started}.{nanos}")
    })
}

/// Stops the leftovers; returns how many processes were signalled.
pub fn reclaim(previous: &TableFile, config: &Config) -> usize {
    let mut signalled: Vec<(i32, u64)> = vec![];
    let mut deadline = Instant::now();
    let stop_of = |name: Option<&str>| {
        let spec = name.and_then(|name| config.processes.get(name));
        (
            spec.map_or(libc::SIGTERM, |spec| spec.stop_signal.number()),
            spec.map_or(Duration::from_secs(10), |spec| spec.stop_timeout),
        )
    };
    // With cgroup tracking, everything it started is in its tree, whatever it did since.
    let in_cgroups =
        previous.cgroup_base.as_ref().map_or(0, |base| crate::cgroup::reclaim(base, |name| stop_of(Some(name))));
    for row in &previous.instances {
        let (Some(pgid), Some(since)) = (row.pgid, row.start_time) else {
            continue;
        };
        if procfs::stat(pgid).is_some_and(|leader| leader.start_time != since) {
            continue; // the pid now belongs to another process
        }
        let members = procfs::group_members(pgid, since);
        if members.is_empty() {
            continue;
        }
        let (signal, timeout) = stop_of(Some(&row.name));
        deadline = deadline.max(Instant::now() + timeout);
        log!("{}:{} left {} process(es) behind in group {pgid}; stopping them", row.name, row.index, members.len());
        for pid in members {
            group::signal_process(pid, signal);
            signalled.push((pid, since));
        }
    }
    if let Some(token) = &previous.agent_token {
        // Never ourselves or whoever started us, should we descend from the old agent.
        let spared = procfs::lineage();
        let strays = procfs::with_env_entry(&format!("{TOKEN_VAR}={token}"), "PROCCTL_NAME");
        for stray in strays {
            if spared.contains(&stray.pid) || signalled.iter().any(|&(done, _)| done == stray.pid) {
                continue;
            }
            let (signal, timeout) = stop_of(stray.name.as_deref());
            deadline = deadline.max(Instant::now() + timeout);
            log!(
                "process {} of {} left its group under the previous agent; stopping it",
                stray.pid,
                stray.name.as_deref().unwrap_or("an instance")
            );
            // The token and start time make the pid ours.
            group::signal_process(stray.pid, signal);
            signalled.push((stray.pid, stray.start_time));
        }
    }
    let alive = |list: &[(i32, u64)]| -> Vec<(i32, u64)> {
        list.iter()
            .copied()
            .filter(|&(pid, since)| procfs::stat(pid).is_some_and(|s| !s.zombie && s.start_time >= since))
            .collect()
    };
    let mut left = wait_gone(alive(&signalled), deadline, alive);
    if !left.is_empty() {
        for &(pid, _) in &left {
            group::signal_process(pid, libc::SIGKILL);
        }
        left = wait_gone(left, Instant::now() + KILL_GRACE, alive);
        for (pid, _) in left {
            log!("leftover process {pid} survived SIGKILL");
        }
    }
    in_cgroups + signalled.len()
}

/// How long adopted processes get between SIGTERM and SIGKILL at shutdown.
pub const ADOPTED_GRACE: Duration = Duration::from_secs(5);

/// Once every instance is down, any child the agent still has was adopted: a process that
/// left its instance's process group (setsid, daemonizing) and whose parent ended. Nothing
/// the agent started may outlive it, so these get SIGTERM (their group too, when they lead
/// one), then SIGKILL after `ADOPTED_GRACE`. The reaper keeps reaping while this waits.
/// Returns whether none is left.
pub async fn stop_adopted() -> bool {
    let children = procfs::children(std::process::id() as i32);
    if children.is_empty() {
        return true;
    }
    log!("stopping {} process(es) that left their instances' groups", children.len());
    let signal_all = |children: &[i32], signal: i32| {
        for &pid in children {
            // `pid` is our own child, so its number is not reused yet.
            if procfs::stat(pid).is_some_and(|s| s.pgrp == pid) {
                group::signal_process(-pid, signal);
            }
            group::signal_process(pid, signal);
        }
    };
    signal_all(&children, libc::SIGTERM);
    let deadline = Instant::now() + ADOPTED_GRACE;
    let mut left = children;
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        left = procfs::children(std::process::id() as i32);
    }
    signal_all(&left, libc::SIGKILL);
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        let gone = procfs::children(std::process::id() as i32).is_empty();
        if gone || Instant::now() >= deadline {
            return gone;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// These processes are not our children, so nothing notifies us of their end: poll /proc
/// until they are gone or the deadline passes.
fn wait_gone(
    mut left: Vec<(i32, u64)>,
    deadline: Instant,
    alive: impl Fn(&[(i32, u64)]) -> Vec<(i32, u64)>,
) -> Vec<(i32, u64)> {
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL);
        left = alive(&left);
    }
    left
}
