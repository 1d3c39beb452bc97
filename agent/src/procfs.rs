//! What the agent reads from /proc: a process's group and start time, and group members.

use std::fs;

/// Fields of /proc/PID/stat that identify a process over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub zombie: bool,
    pub pgrp: i32,
    /// Clock ticks after boot; with the pid, it tells a process from a later one with the same pid.
    pub start_time: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses; the fields start after the last `)`.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        zombie: *fields.first()? == "Z",
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Live (non-zombie) processes in group `pgid` that started no earlier than `since`.
pub fn group_members(pgid: i32, since: u64) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| !s.zombie && s.pgrp == pgid && s.start_time >= since))
        .collect()
}

/// The direct children of `pid` (over all its threads), zombies included.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(Stat { zombie: false, pgrp: 42, start_time: 987654 }));
        assert!(parse_stat("42 (x) Z 1").is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id() as i32).expect("own stat");
        assert!(!me.zombie);
        assert!(me.start_time > 0);
    }
}
