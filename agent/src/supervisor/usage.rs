//! CPU and memory of the listed instances, sampled when `list` asks and never on a timer:
//! from the run's cgroup (cpu.stat, memory.current, or the RSS of its processes when the
//! memory controller is not there) with cgroup tracking, else from /proc over the main
//! process and its descendants. CPU is the share of one CPU since the previous sample of
//! that instance, or since its start for the first.
//!
//! The files are opened once per run and read again with pread at offset 0 (the kernel
//! makes them anew at each read): a sample costs a read per file, not an open, a path walk
//! and a close, which is most of the time of `list` with a hundred instances.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Instant, SystemTime};

use procctl_proto::InstanceInfo;

use super::Supervisor;
use crate::procfs;

/// The open files one run is sampled from.
#[derive(Default)]
pub struct Files {
    /// The pid the files below were opened for: a new run opens them anew.
    run: Option<i32>,
    cpu_stat: Option<File>,
    memory_current: Option<File>,
    procs: Option<File>,
    /// `/proc/PID/statm` (cgroup tracking) or `/proc/PID/stat` (process groups) of each
    /// process last seen in the run.
    per_pid: Vec<(i32, File)>,
    /// When `cgroup.procs` was last read: the members are read again after a second, or
    /// at once when one of them is gone.
    members_at: Option<Instant>,
}

/// How long the members of a run's cgroup are taken as known.
const MEMBERS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A read of a whole small file, from its start.
fn read(file: &File, buf: &mut [u8]) -> Option<usize> {
    file.read_at(buf, 0).ok().filter(|&n| n < buf.len())
}

fn open(path: &Path) -> Option<File> {
    File::open(path).ok()
}

impl Files {
    fn for_run(&mut self, pid: i32) {
        if self.run != Some(pid) {
            *self = Files { run: Some(pid), ..Files::default() };
        }
    }

    /// Moves the file of `pid` named `name` in /proc (the one open already, or a new one)
    /// into `kept`, for this sample and the next.
    fn keep(&mut self, pid: i32, name: &str, kept: &mut Vec<(i32, File)>) {
        let at = self.per_pid.iter().position(|(p, _)| *p == pid);
        let file = match at {
            Some(at) => Some(self.per_pid.swap_remove(at).1),
            None => open(Path::new(&format!("/proc/{pid}/{name}"))),
        };
        kept.extend(file.map(|file| (pid, file)));
    }
}

impl Supervisor {
    /// Fills `cpu_tenths` and `memory_bytes` of the running rows.
    pub(super) fn sample_usage(&mut self, rows: &mut [InstanceInfo]) {
        let (ticks_per_sec, page) = procfs::units();
        let memory_controller = self.tracking.tree().is_some_and(|tree| tree.has("memory"));
        let now = Instant::now();
        let mut buf = [0u8; 4096];
        for row in rows.iter_mut() {
            let Some(slot) = self.slots.get_mut(&row.id) else {
                continue;
            };
            let Some(pid) = slot.inst.pid else {
                continue;
            };
            let files = &mut slot.usage;
            files.for_run(pid);
            let (cpu_usec, memory) = match &slot.cgroup {
                Some(cgroup) => {
                    let cpu = files.cpu_stat.get_or_insert_with(|| open(&cgroup.join("cpu.stat")).unwrap_or_else(null));
                    let cpu = read(cpu, &mut buf).and_then(|n| cpu_usec(&buf[..n]));
                    let memory = if memory_controller {
                        let file = files
                            .memory_current
                            .get_or_insert_with(|| open(&cgroup.join("memory.current")).unwrap_or_else(null));
                        read(file, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok())
                    } else {
                        let resident = |files: &mut Files, buf: &mut [u8]| -> Option<u64> {
                            let mut pages = 0;
                            for (_, file) in &files.per_pid {
                                pages += read(file, buf).and_then(|n| statm_resident(&buf[..n]))?;
                            }
                            Some(pages)
                        };
                        let known = files.members_at.is_some_and(|at| at.elapsed() < MEMBERS_FRESH);
                        let pages = match known.then(|| resident(files, &mut buf)).flatten() {
                            Some(pages) => pages,
                            None => {
                                let procs = files
                                    .procs
                                    .get_or_insert_with(|| open(&cgroup.join("cgroup.procs")).unwrap_or_else(null));
                                let mut pids: Vec<i32> =
                                    read(procs, &mut buf).map(|n| parse_pids(&buf[..n])).unwrap_or_default();
                                if pids.is_empty() {
                                    // The main process moved into a cgroup of its own (an agent
                                    // that is an instance): the whole subtree, walked.
                                    pids = crate::cgroup::procs(cgroup);
                                }
                                let mut kept = vec![];
                                for pid in pids {
                                    files.keep(pid, "statm", &mut kept);
                                }
                                files.per_pid = kept;
                                files.members_at = Some(Instant::now());
                                resident(files, &mut buf).unwrap_or(0)
                            }
                        };
                        Some(pages * page)
                    };
                    (cpu, memory)
                }
                None => {
                    // The main process and what it started, by its children, as far as they
                    // are still its own descendants.
                    let mut kept = vec![];
                    let (mut ticks, mut pages) = (0, 0);
                    let mut family = vec![pid];
                    while let Some(member) = family.pop() {
                        files.keep(member, "stat", &mut kept);
                        if let Some((_, file)) = kept.last().filter(|(p, _)| *p == member)
                            && let Some(n) = read(file, &mut buf)
                            && let Some(stat) = std::str::from_utf8(&buf[..n]).ok().and_then(procfs::parse_stat)
                        {
                            ticks += stat.cpu_ticks;
                            pages += stat.rss_pages;
                        }
                        family.extend(procfs::children(member));
                    }
                    files.per_pid = kept;
                    (Some(ticks * 1_000_000 / ticks_per_sec), Some(pages * page))
                }
            };
            row.memory_bytes = memory;
            let Some(used) = cpu_usec else {
                continue;
            };
            let (before, since) = match slot.cpu_sample {
                Some((before, at)) => (before, now.duration_since(at)),
                None => (
                    0,
                    slot.inst.started_at.and_then(|at| SystemTime::now().duration_since(at).ok()).unwrap_or_default(),
                ),
            };
            let elapsed = since.as_micros() as u64;
            row.cpu_tenths = (used.saturating_sub(before) * 1000).checked_div(elapsed).map(|t| t as u32);
            slot.cpu_sample = Some((used, now));
        }
    }
}

/// A file that reads as nothing, for one that could not be opened (no retry each sample).
fn null() -> File {
    File::open("/dev/null").expect("/dev/null opens")
}

fn cpu_usec(stat: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(stat).ok()?;
    text.lines().find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())
}

fn parse_pids(text: &[u8]) -> Vec<i32> {
    std::str::from_utf8(text).map(|t| t.split_whitespace().filter_map(|p| p.parse().ok()).collect()).unwrap_or_default()
}

/// The second field of statm: resident pages.
fn statm_resident(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_kernel_writes() {
        assert_eq!(cpu_usec(b"usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n"), Some(1234));
        assert_eq!(cpu_usec(b"user_usec 1\n"), None);
        assert_eq!(parse_pids(b"12\n345\n"), [12, 345]);
        assert_eq!(statm_resident(b"2476 410 370 5 0 118 0\n"), Some(410));
    }

    #[test]
    fn a_file_read_again_at_its_start_is_made_anew() {
        let stat = File::open(format!("/proc/{}/stat", std::process::id())).unwrap();
        let mut buf = [0u8; 4096];
        let first = read(&stat, &mut buf).unwrap();
        assert!(first > 0);
        let again = read(&stat, &mut buf).unwrap();
        assert!(again > 0, "pread at 0 reads it whole again");
    }
}
