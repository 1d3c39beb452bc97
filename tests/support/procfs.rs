//! What tests read from /proc: one parser of /proc/PID/stat (`stat`), a process's argv and
//! status fields, children, zombies, memory, and what is left of the groups a
//! test's instances led.

use std::collections::HashMap;
use std::fs;

/// The fields of /proc/PID/stat that tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `T`, `Z`...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// User and system time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks after boot.
    pub start_time: u64,
    /// The nice value (of the thread, for a task's stat).
    pub nice: i32,
}

/// /proc/PID/stat, read as bytes: a process's name is any bytes (a `)`, a newline, no UTF-8
/// at all), so the fields are those after the last `)`.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// /proc/PID/task/TID/stat: one thread's.
pub fn task_stat(pid: i32, tid: i32) -> Option<Stat> {
    parse_stat(&fs::read(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
}

fn parse_stat(bytes: &[u8]) -> Option<Stat> {
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&bytes[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 of proc(5), the state.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
        nice: field(19)?.parse().ok()?,
    })
}

pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// The argv of a process, or none if it is gone (or a zombie, whose cmdline is empty).
pub fn argv(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A field of /proc/PID/status, such as `Uid`, `SigIgn` or `VmRSS`.
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let bytes = fs::read(format!("/proc/{pid}/status")).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// Live processes in the groups led by `seen` pids, started no earlier than their leader.
/// A group whose leader's number now belongs to a later process is not ours any more: a
/// pid in use as a group id is never handed out again, so ours is gone, and what is in the
/// group now is someone else's (another test's, with pids churning through pid_max).
pub fn leftovers_of(seen: &HashMap<i32, u64>) -> Vec<i32> {
    let ours = |pgrp: i32, leader_start: u64| stat(pgrp).is_none_or(|leader| leader.start_time == leader_start);
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|s| {
                s.state != 'Z'
                    && seen
                        .get(&s.pgrp)
                        .is_some_and(|&leader_start| s.start_time >= leader_start && ours(s.pgrp, leader_start))
            })
        })
        .collect()
}

/// A `kB` field of /proc/PID/status, such as `VmRSS` or `VmHWM`.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    status_field(pid, field)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
}

/// Zombies whose parent is `pid`.
pub fn zombies_of(pid: i32) -> Vec<i32> {
    all_pids().into_iter().filter(|&child| stat(child).is_some_and(|s| s.state == 'Z' && s.ppid == pid)).collect()
}

/// Direct children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut kids = vec![];
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read(task.path().join("children")) {
                kids.extend(String::from_utf8_lossy(&text).split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    kids
}

pub fn kill(pid: i32, signal: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, signal) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_parentheses_newlines_and_bytes_that_are_not_utf8_is_read_past() {
        let mut line = b"4242 (a) b\n\xff\xfe) ".to_vec();
        line.extend(b"S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 25 5 1 0 123456 1000 10");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat, Stat { state: 'S', ppid: 1, pgrp: 4242, utime: 7, stime: 3, start_time: 123456, nice: 5 });
        assert_eq!(parse_stat(b"1 (init"), None);
    }

    #[test]
    fn this_process_reads_as_alive_with_its_own_parent() {
        let me = std::process::id() as i32;
        let stat = stat(me).unwrap();
        assert_eq!(stat.ppid, std::os::unix::process::parent_id() as i32);
        assert!(alive(me));
    }
}
