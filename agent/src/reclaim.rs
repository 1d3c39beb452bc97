//! At start-up: stop whatever an earlier agent on this state directory left running. At
//! shutdown: stop what the agent adopted as subreaper (processes that left their instance's
//! group and outlived their parent).
//!
//! Its direct children died with it (PDEATHSIG), but grandchildren may live on in their
//! instance's process group. A group is only touched when its recorded leader is dead or
//! still has the recorded start time, and only members that started after the leader
//! are signalled, so a reused pid is never hit.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::procfs;
use crate::table::TableFile;

/// How long leftovers get after SIGKILL before they are reported as unkillable.
const KILL_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// Stops the leftovers; returns how many processes were signalled.
pub fn reclaim(previous: &TableFile, config: &Config) -> usize {
    let mut signalled: Vec<(i32, u64)> = vec![];
    let mut deadline = Instant::now();
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
        let spec = config.processes.get(&row.name);
        let signal = spec.map_or(libc::SIGTERM, |spec| spec.stop_signal.number());
        let timeout = spec.map_or(Duration::from_secs(10), |spec| spec.stop_timeout);
        deadline = deadline.max(Instant::now() + timeout);
        log!("{}:{} left {} process(es) behind in group {pgid}; stopping them", row.name, row.index, members.len());
        for pid in members {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, signal) };
            signalled.push((pid, since));
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
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        left = wait_gone(left, Instant::now() + KILL_GRACE, alive);
        for (pid, _) in left {
            log!("leftover process {pid} survived SIGKILL");
        }
    }
    signalled.len()
}

/// How long adopted processes get between SIGTERM and SIGKILL at shutdown.
pub const ADOPTED_GRACE: Duration = Duration::from_secs(5);

/// Once every instance is down, any child the agent still has was adopted: a process that
/// left its instance's process group (setsid, daemonizing) and whose parent ended. Nothing
/// the agent started may outlive it, so these get SIGTERM (their group too, when they lead
/// one), then SIGKILL after `ADOPTED_GRACE`. The reaper keeps reaping while this waits.
pub async fn stop_adopted() {
    let children = procfs::children(std::process::id() as i32);
    if children.is_empty() {
        return;
    }
    log!("stopping {} process(es) that left their instances' groups", children.len());
    let signal_all = |children: &[i32], signal: i32| {
        for &pid in children {
            let leads_group = procfs::stat(pid).is_some_and(|s| s.pgrp == pid);
            // SAFETY: kill takes plain integers; `pid` is our own child, so not yet reused.
            unsafe {
                if leads_group {
                    libc::kill(-pid, signal);
                }
                libc::kill(pid, signal);
            }
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
    while !procfs::children(std::process::id() as i32).is_empty() && Instant::now() < deadline {
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
