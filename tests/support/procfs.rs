//! What tests read from /proc: a process's state, group and start time, children, zombies,
//! memory, and what is left of the groups a test's instances led.

use std::collections::HashMap;
use std::fs;

/// A /proc file as text: a process's name is any bytes, and must not make it unreadable.
fn read_lossy(path: String) -> Option<String> {
    fs::read(path).ok().map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// /proc/PID/stat: (state, pgrp, start time).
pub fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = read_lossy(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields[0].chars().next()?, fields[2].parse().ok()?, fields[19].parse().ok()?))
}

/// The parent of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    let text = read_lossy(format!("/proc/{pid}/stat"))?;
    text.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.2)
}

pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.0 != 'Z')
}

pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Live processes in the groups led by `seen` pids, started no earlier than their leader.
/// A group whose leader's number now belongs to a later process is not ours any more: a
/// pid in use as a group id is never handed out again, so ours is gone, and what is in the
/// group now is someone else's (another test's, with pids churning through pid_max).
pub fn leftovers_of(seen: &HashMap<i32, u64>) -> Vec<i32> {
    let ours = |pgrp: i32, leader_start: u64| stat(pgrp).is_none_or(|(_, _, start)| start == leader_start);
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|(state, pgrp, start)| {
                state != 'Z'
                    && seen.get(&pgrp).is_some_and(|&leader_start| start >= leader_start && ours(pgrp, leader_start))
            })
        })
        .collect()
}

/// A `kB` field of /proc/PID/status, such as `VmRSS` or `VmHWM`.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    read_lossy(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
}

/// Zombies whose parent is `pid`.
pub fn zombies_of(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&child| stat(child).is_some_and(|s| s.0 == 'Z') && ppid(child) == Some(pid))
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
