//! What the agent reads from /proc: a process's group and start time, and group members.

use std::fs;

/// Fields of /proc/PID/stat that identify a process over time, and what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub zombie: bool,
    pub ppid: i32,
    pub pgrp: i32,
    /// Clock ticks after boot; with the pid, it tells a process from a later one with the same pid.
    pub start_time: u64,
    /// User and system CPU, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// `/proc/PID/stat`, read into a buffer that holds it whole (52 numbers and a name of 16
/// bytes at most): an open, a read or two and a close, where `read_to_string` also asks
/// for the size and grows its buffer read by read.
pub fn stat(pid: i32) -> Option<Stat> {
    use std::io::Read;
    let mut file = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    // The name is any bytes the program chose; only the numbers after it are read.
    parse_stat(&String::from_utf8_lossy(&buf[..len]))
}

pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses; the fields start after the last `)`.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        zombie: *fields.first()? == "Z",
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: number(19)?,
        cpu_ticks: number(11).unwrap_or(0) + number(12).unwrap_or(0),
        rss_pages: number(21).unwrap_or(0),
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

/// A live process found by its environment.
#[derive(Debug)]
pub struct Marked {
    pub pid: i32,
    pub start_time: u64,
    /// The value of the name key in its environment, when it has one.
    pub name: Option<String>,
}

/// Every live process whose initial environment holds exactly `entry` (`KEY=VALUE`). Only
/// processes whose environment we may read are seen: our own user's, or everyone's for
/// root. The start time is read before and after the environment, so a pid reused
/// meanwhile is not reported.
pub fn with_env_entry(entry: &str, name_key: &str) -> Vec<Marked> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    let name_prefix = format!("{name_key}=");
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let before = stat(pid).filter(|s| !s.zombie)?;
            let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
            let name = env_entry(&environ, entry, &name_prefix)?;
            let after = stat(pid)?;
            (after.start_time == before.start_time).then_some(Marked { pid, start_time: before.start_time, name })
        })
        .collect()
}

/// `Some(value of name_prefix)` when the NUL-separated `environ` holds `entry`.
fn env_entry(environ: &[u8], entry: &str, name_prefix: &str) -> Option<Option<String>> {
    let mut found = false;
    let mut name = None;
    for item in environ.split(|&b| b == 0) {
        if item == entry.as_bytes() {
            found = true;
        } else if let Some(value) = item.strip_prefix(name_prefix.as_bytes()) {
            name = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    found.then_some(name)
}

/// The pids of a list the kernel writes one per line or space-separated (`cgroup.procs`,
/// `/proc/PID/task/TID/children`).
pub fn pids(text: &[u8]) -> Vec<i32> {
    std::str::from_utf8(text).map(|t| t.split_whitespace().filter_map(|p| p.parse().ok()).collect()).unwrap_or_default()
}

/// The boot clock in the ticks of `Stat::start_time`: the kernel stamps a new process with
/// this clock in the nanosecond and shows it in /proc divided down to ticks of 1/CLK_TCK s
/// (both in the reader's time namespace). `None` where the clock cannot be read.
pub fn boot_ticks(ticks_per_second: u64) -> Option<u64> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is ours to write; the vDSO answers without a system call.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    Some(ticks_of(now.tv_sec as u64, now.tv_nsec as u64, ticks_per_second))
}

/// Seconds and nanoseconds in whole ticks, rounded down as the kernel's `nsec_to_clock_t`.
fn ticks_of(seconds: u64, nanoseconds: u64, ticks_per_second: u64) -> u64 {
    let per_tick = 1_000_000_000 / ticks_per_second.clamp(1, 1_000_000_000);
    (seconds * 1_000_000_000 + nanoseconds) / per_tick
}

/// A process's start time known without reading /proc: the boot clock read just before the
/// process was made and just after. The kernel stamps the process between the two, so when
/// both fall in the same tick, that tick is its start time; otherwise `None`, and /proc
/// must say.
pub fn start_between(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    before.zip(after).filter(|(before, after)| before == after).map(|(tick, _)| tick)
}

/// Clock ticks per second and bytes per page, for the figures above.
pub fn units() -> (u64, u64) {
    use nix::unistd::{SysconfVar, sysconf};
    let value = |var| sysconf(var).ok().flatten().unwrap_or(1).max(1) as u64;
    (value(SysconfVar::CLK_TCK), value(SysconfVar::PAGE_SIZE))
}

/// This process and its ancestors up to init.
pub fn lineage() -> Vec<i32> {
    let mut line = vec![std::process::id() as i32];
    while let Some(parent) = line.last().and_then(|&pid| stat(pid)).map(|s| s.ppid).filter(|&p| p > 0) {
        if line.contains(&parent) {
            break;
        }
        line.push(parent);
    }
    line
}

/// The direct children of `pid` (over all its threads), zombies included.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|text| pids(text.as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let want = Stat { zombie: false, ppid: 1, pgrp: 42, start_time: 987654, cpu_ticks: 0, rss_pages: 10 };
        assert_eq!(parse_stat(line), Some(want));
        let busy = "42 (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 987654 1000 77";
        assert_eq!(parse_stat(busy).map(|s| (s.cpu_ticks, s.rss_pages)), Some((300, 77)));
        assert!(parse_stat("42 (x) Z 1").is_none());
    }

    #[test]
    fn finds_an_exact_environment_entry_and_the_name() {
        let environ = b"PATH=/bin\0PROCCTL_AGENT=7.8\0PROCCTL_NAME=web\0";
        assert_eq!(env_entry(environ, "PROCCTL_AGENT=7.8", "PROCCTL_NAME="), Some(Some("web".into())));
        assert_eq!(env_entry(environ, "PROCCTL_AGENT=7", "PROCCTL_NAME="), None);
        assert_eq!(env_entry(b"PROCCTL_AGENT=7.8", "PROCCTL_AGENT=7.8", "PROCCTL_NAME="), Some(None));
    }

    #[test]
    fn the_lineage_starts_here_and_climbs() {
        let line = lineage();
        assert_eq!(line[0], std::process::id() as i32);
        assert_eq!(line.get(1), Some(&(std::os::unix::process::parent_id() as i32)));
    }

    #[test]
    fn ticks_round_down_as_the_kernel_does() {
        for (seconds, nanoseconds, per_second, want) in [
            (0, 0, 100, 0),
            (0, 9_999_999, 100, 0),
            (0, 10_000_000, 100, 1),
            (12, 345_678_901, 100, 1234),
            (12, 345_678_901, 1000, 12345),
            (3, 999_999_999, 250, 999),
        ] {
            assert_eq!(
                ticks_of(seconds, nanoseconds, per_second),
                want,
                "{seconds}.{nanoseconds:09} at {per_second}/s"
            );
        }
    }

    #[test]
    fn a_start_time_is_known_only_when_both_readings_share_a_tick() {
        for (before, after, want) in
            [(Some(5), Some(5), Some(5)), (Some(5), Some(6), None), (None, Some(6), None), (Some(5), None, None)]
        {
            assert_eq!(start_between(before, after), want, "{before:?} {after:?}");
        }
    }

    #[test]
    fn the_boot_clock_agrees_with_the_start_time_in_proc() {
        // A child made between two readings of the same tick has that tick in /proc; one
        // made across a tick boundary is left to /proc, and the next try shares a tick.
        let (per_second, _) = units();
        for _ in 0..50 {
            let before = boot_ticks(per_second);
            let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
            let after = boot_ticks(per_second);
            let from_proc = stat(child.id() as i32).unwrap().start_time;
            child.kill().unwrap();
            child.wait().unwrap();
            if let Some(tick) = start_between(before, after) {
                assert_eq!(tick, from_proc);
                return;
            }
        }
        panic!("no two readings of the boot clock shared a tick in 50 tries");
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id() as i32).expect("own stat");
        assert!(!me.zombie);
        assert!(me.start_time > 0);
    }

    #[test]
    fn reads_a_process_whose_name_is_not_utf8() {
        // A thread's /proc/TID/stat is read like a process's; its name is set to bytes that
        // are no UTF-8, as a program named so would have.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: PR_SET_NAME reads a NUL-terminated name of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"\xff\xfe) odd".as_ptr() as libc::c_ulong, 0, 0, 0) };
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            done_rx.recv().ok();
        });
        let tid = rx.recv().unwrap();
        let stat = stat(tid);
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        let stat = stat.expect("the stat of a thread with a name that is no UTF-8");
        assert_eq!(stat.ppid, std::os::unix::process::parent_id() as i32);
        assert!(stat.start_time > 0);
    }
}
