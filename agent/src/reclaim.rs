//! At start-up: stop whatever an earlier agent on this state directory left running.
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
