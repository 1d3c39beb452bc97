//! CPU and memory of the listed instances, sampled when `list` asks and never on a timer:
//! from the run's cgroup (cpu.stat, memory.current, or the RSS of its processes when the
//! memory controller is not there) with cgroup tracking, else from /proc over the main
//! process and its descendants. CPU is the share of one CPU since the previous sample of
//! that instance, or since its start for the first. A sample answers for a quarter of a
//! second: a `list` within it reads nothing.
//!
//! The files are opened once per run and read again with pread at offset 0 (the kernel
//! makes them anew at each read): a sample costs a read per file, not an open, a path walk
//! and a close, which is most of the time of `list` with a hundred instances.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use std::ops::Bound;

use procctl_proto::{InstanceId, InstanceInfo};

use super::{Slot, Supervisor};
use crate::procfs;

/// Files kept open for sampling, in the whole agent, and how many may be: a quarter of its
/// descriptors, so that sampling never takes the ones spawns and clients need.
static KEPT: AtomicUsize = AtomicUsize::new(0);

fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap_or((0, 0));
        (soft / 4) as usize
    })
}

/// One file a sample is read from: opened once and read again with pread (within the
/// budget), or read by its path each time (past it), or known to be missing.
#[derive(Default)]
enum Source {
    #[default]
    Unopened,
    Open(File),
    Missing,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Open(_) = self {
            KEPT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Source {
    /// The file's bytes, from its start; `path` is made only when the file is not open.
    fn read<'b, P: AsRef<Path>>(&mut self, path: impl FnOnce() -> P, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        if let Source::Unopened = self {
            match File::open(path()) {
                Ok(file) if KEPT.load(Ordering::Relaxed) < budget() => {
                    KEPT.fetch_add(1, Ordering::Relaxed);
                    *self = Source::Open(file);
                }
                Ok(file) => return whole(&file, buf),
                Err(_) => *self = Source::Missing,
            }
        }
        match self {
            Source::Open(file) => whole(file, buf),
            _ => None,
        }
    }
}

/// A read of a whole small file, from its start.
fn whole<'b>(file: &File, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let n = file.read_at(buf, 0).ok().filter(|&n| n < buf.len())?;
    Some(&buf[..n])
}

/// The files one run is sampled from.
#[derive(Default)]
pub struct Files {
    /// The run (and its pid) the files below were opened for: a new run opens them anew.
    run: Option<(u64, i32)>,
    cpu_stat: Source,
    memory_current: Source,
    procs: Source,
    /// `/proc/PID/statm` (cgroup tracking) or `/proc/PID/stat` (process groups) of each
    /// process last seen in the run.
    per_pid: Vec<(i32, Source)>,
    /// When the members were last found (`cgroup.procs`, or a walk of the main process's
    /// descendants): they are found again after a second, or at once when one is gone.
    members_at: Option<Instant>,
    /// The last sample, given again to whoever asks within `SAMPLE_FRESH` of it.
    last: Option<Sample>,
    /// The resident pages last read from the members' statm, with the run's CPU time read
    /// just before them, and when.
    resident: Option<Resident>,
}

#[derive(Clone, Copy)]
struct Resident {
    pages: u64,
    cpu_usec: u64,
    at: Instant,
}

/// What one sample of a run found.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_tenths: Option<u32>,
    memory_bytes: Option<u64>,
}

/// How long a sample answers for: a `list` within it gets the sample again and reads
/// nothing (a file read per instance is most of the time of `list` at a thousand), one
/// after it samples anew; well under `top`'s refresh (and anyone polling a few times a
/// second), so each of those gets a sample of its own.
const SAMPLE_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// How long the members of a run's cgroup are taken as known.
const MEMBERS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the resident memory of a run whose processes have not run since it was read is
/// taken as known (without the memory controller): a process that did not run has not
/// forked, exited or touched a page, so its members and their pages are those read then;
/// only the kernel can change them meanwhile (reclaim under memory pressure), which a read
/// at least this often catches up with.
const IDLE_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

impl Files {
    fn for_run(&mut self, run: u64, pid: i32) {
        if self.run != Some((run, pid)) {
            *self = Files { run: Some((run, pid)), ..Files::default() };
        }
    }

    /// CPU (tenths of a percent) and memory as the last sample of run `run` found them,
    /// while it runs (`pid`): what `sample` returned for it.
    pub(super) fn shown(&self, run: u64, pid: Option<i32>) -> (Option<u32>, Option<u64>) {
        match (pid, self.last) {
            (Some(pid), Some(last)) if self.run == Some((run, pid)) => (last.cpu_tenths, last.memory_bytes),
            _ => (None, None),
        }
    }

    /// The last sample, while it still answers for the run.
    fn kept(&self, now: Instant) -> Option<Sample> {
        self.last.filter(|last| now.saturating_duration_since(last.at) < SAMPLE_FRESH)
    }

    /// The sources of `pids`: the ones open already, and new ones for the others.
    fn members(&mut self, pids: &[i32]) {
        let mut old = std::mem::take(&mut self.per_pid);
        for &pid in pids {
            let source = old.iter().position(|(p, _)| *p == pid).map_or(Source::Unopened, |at| old.swap_remove(at).1);
            self.per_pid.push((pid, source));
        }
    }

    /// The CPU ticks and resident pages of the members from their /proc/PID/stat, or `None`
    /// when one of them is gone.
    fn stat_sum(&mut self, buf: &mut [u8]) -> Option<(u64, u64)> {
        let (mut ticks, mut pages) = (0, 0);
        for (pid, source) in &mut self.per_pid {
            let stat = source
                .read(|| format!("/proc/{pid}/stat"), buf)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(procfs::parse_stat)?;
            ticks += stat.cpu_ticks;
            pages += stat.rss_pages;
        }
        Some((ticks, pages))
    }

    /// The resident pages of the processes of the run's cgroup, after reading its CPU time
    /// (`cpu_usec`): those read last while the run has not used the CPU since, else the sum of
    /// the members' statm (the members found again when a second old or one is gone).
    ///
    /// Only pages summed over members found after that CPU time was read stand for it: the
    /// members taken as known for a second may miss a child forked since they were found.
    fn resident_of_cgroup(&mut self, cgroup: &Path, cpu_usec: Option<u64>, buf: &mut [u8]) -> u64 {
        let now = Instant::now();
        if let (Some(cpu_usec), Some(last)) = (cpu_usec, self.resident)
            && idle_since(last, cpu_usec, now)
        {
            return last.pages;
        }
        self.resident = None;
        let known = self.members_at.is_some_and(|at| now.saturating_duration_since(at) < MEMBERS_FRESH);
        match known.then(|| self.resident(buf)).flatten() {
            Some(pages) => pages,
            None => {
                let mut pids =
                    self.procs.read(|| cgroup.join("cgroup.procs"), buf).map(procfs::pids).unwrap_or_default();
                if pids.is_empty() {
                    // The main process moved into a cgroup of its own (an agent that is an
                    // instance): the whole subtree, walked.
                    pids = crate::cgroup::procs(cgroup);
                }
                self.members(&pids);
                self.members_at = Some(now);
                let pages = self.resident(buf).unwrap_or(0);
                self.resident = cpu_usec.map(|cpu_usec| Resident { pages, cpu_usec, at: now });
                pages
            }
        }
    }

    /// The resident pages of the members, or `None` when one of them is gone.
    fn resident(&mut self, buf: &mut [u8]) -> Option<u64> {
        let mut pages = 0;
        for (pid, source) in &mut self.per_pid {
            pages += source.read(|| format!("/proc/{pid}/statm"), buf).and_then(statm_resident)?;
        }
        Some(pages)
    }
}

/// What every sample of one `list` shares.
struct Context {
    ticks_per_sec: u64,
    page: u64,
    memory_controller: bool,
    now: Instant,
}

impl Supervisor {
    fn usage_context(&self) -> Context {
        let (ticks_per_sec, page) = procfs::units();
        let memory_controller = self.cgroups.tree().is_some_and(|tree| tree.has("memory"));
        Context { ticks_per_sec, page, memory_controller, now: Instant::now() }
    }

    /// Samples every running instance; what each shows is then its slot's `usage.shown`.
    pub(super) fn sample_all(&mut self) {
        let context = self.usage_context();
        let mut buf = [0u8; 4096];
        for slot in self.slots.values_mut() {
            sample(slot, &context, &mut buf);
        }
    }

    /// Fills `cpu_tenths` and `memory_bytes` of the running rows, which are in the table's
    /// order (every caller walks it): each row's slot is the next one, looked up only when it
    /// is not, so a `list` of all walks the table once.
    pub(super) fn sample_usage(&mut self, rows: &mut [InstanceInfo]) {
        let context = self.usage_context();
        let mut buf = [0u8; 4096];
        let mut slots = self.slots.range_mut::<InstanceId, _>(..);
        for row in rows.iter_mut() {
            let mut next = slots.next().filter(|(id, _)| **id == row.id);
            if next.is_none() {
                slots = self.slots.range_mut::<InstanceId, _>((Bound::Included(&row.id), Bound::Unbounded));
                next = slots.next().filter(|(id, _)| **id == row.id);
            }
            if let Some((cpu, memory)) = next.and_then(|(_, slot)| sample(slot, &context, &mut buf)) {
                (row.cpu_tenths, row.memory_bytes) = (cpu, memory);
            }
        }
    }
}

/// CPU (tenths of a percent) and memory of a running instance; `None` when not running.
fn sample(slot: &mut Slot, context: &Context, buf: &mut [u8]) -> Option<(Option<u32>, Option<u64>)> {
    let pid = slot.inst.pid?;
    let now = context.now;
    let files = &mut slot.usage;
    files.for_run(slot.inst.run, pid);
    if let Some(last) = files.kept(now) {
        return Some((last.cpu_tenths, last.memory_bytes));
    }
    let (cpu_usec, memory) = match &slot.cgroup {
        Some(cgroup) => {
            let cpu = files.cpu_stat.read(|| cgroup.join("cpu.stat"), buf).and_then(cpu_usec);
            let memory = if context.memory_controller {
                files
                    .memory_current
                    .read(|| cgroup.join("memory.current"), buf)
                    .and_then(|bytes| std::str::from_utf8(bytes).ok()?.trim().parse().ok())
            } else {
                Some(files.resident_of_cgroup(cgroup, cpu, buf) * context.page)
            };
            (cpu, memory)
        }
        None => {
            // The main process and what it started, by its children, as far as they
            // are still its own descendants: walked again after a second, or at once
            // when one of them is gone.
            let known = files.members_at.is_some_and(|at| at.elapsed() < MEMBERS_FRESH);
            let (ticks, pages) = match known.then(|| files.stat_sum(buf)).flatten() {
                Some(sum) => sum,
                None => {
                    let mut family = vec![pid];
                    let mut members = vec![];
                    while let Some(member) = family.pop() {
                        members.push(member);
                        family.extend(procfs::children(member));
                    }
                    files.members(&members);
                    files.members_at = Some(Instant::now());
                    files.stat_sum(buf).unwrap_or((0, 0))
                }
            };
            (Some(ticks * 1_000_000 / context.ticks_per_sec), Some(pages * context.page))
        }
    };
    let mut cpu_tenths = None;
    if let Some(used) = cpu_usec {
        let (before, since) = match slot.cpu_sample {
            Some((before, at)) => (before, now.duration_since(at)),
            None => {
                (0, slot.inst.started_at.and_then(|at| SystemTime::now().duration_since(at).ok()).unwrap_or_default())
            }
        };
        let elapsed = since.as_micros() as u64;
        cpu_tenths = (used.saturating_sub(before) * 1000).checked_div(elapsed).map(|t| t as u32);
        slot.cpu_sample = Some((used, now));
    }
    slot.usage.last = Some(Sample { at: now, cpu_tenths, memory_bytes: memory });
    Some((cpu_tenths, memory))
}

/// Whether the pages read at `last` still stand: the run's CPU time is what it was then, and
/// that was under `IDLE_FRESH` ago.
fn idle_since(last: Resident, cpu_usec: u64, now: Instant) -> bool {
    last.cpu_usec == cpu_usec && now.saturating_duration_since(last.at) < IDLE_FRESH
}

fn cpu_usec(stat: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(stat).ok()?;
    text.lines().find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())
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
        assert_eq!(procfs::pids(b"12\n345\n"), [12, 345]);
        assert_eq!(statm_resident(b"2476 410 370 5 0 118 0\n"), Some(410));
    }

    #[test]
    fn a_sample_answers_for_a_quarter_second_of_its_run() {
        let at = Instant::now();
        let sample = Sample { at, cpu_tenths: Some(12), memory_bytes: Some(4096) };
        let mut files = Files::default();
        files.for_run(1, 100);
        assert!(files.kept(at).is_none(), "nothing sampled yet");
        files.last = Some(sample);
        // (age of the sample, kept)
        let cases = [(0, true), (249, true), (250, false), (2000, false)];
        for (age, kept) in cases {
            let now = at + std::time::Duration::from_millis(age);
            assert_eq!(files.kept(now).is_some(), kept, "{age} ms");
        }
        files.for_run(1, 100);
        assert!(files.kept(at).is_some(), "the same run keeps it");
        files.for_run(2, 100);
        assert!(files.kept(at).is_none(), "a new run with the same pid starts afresh");
    }

    #[test]
    fn pages_read_stand_while_the_run_has_not_used_the_cpu_and_for_five_seconds_at_most() {
        let at = Instant::now();
        let last = Resident { pages: 10, cpu_usec: 500, at };
        // (CPU time now, seconds since the read, still standing)
        let cases = [(500, 0, true), (500, 4, true), (500, 5, false), (501, 0, false), (499, 1, false)];
        for (cpu_usec, secs, stands) in cases {
            let now = at + std::time::Duration::from_secs(secs);
            assert_eq!(idle_since(last, cpu_usec, now), stands, "{cpu_usec} usec, {secs} s");
        }
    }

    #[test]
    fn a_run_that_used_the_cpu_has_its_members_pages_read_again() {
        // A cgroup whose one member is this test: its pages grow by 48 MiB between reads (mapped on
        // its own, past the most malloc keeps on its heap, so freeing it gives the pages back).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), format!("{}\n", std::process::id())).unwrap();
        let mut files = Files::default();
        files.for_run(1, std::process::id() as i32);
        let mut buf = [0u8; 4096];
        let before = files.resident_of_cgroup(dir.path(), Some(1000), &mut buf);
        assert!(before > 0);
        let grown = std::hint::black_box(vec![1u8; 48 << 20]);
        let page = procfs::units().1;
        assert_eq!(files.resident_of_cgroup(dir.path(), Some(1000), &mut buf), before, "not run since: kept");
        let after = files.resident_of_cgroup(dir.path(), Some(1001), &mut buf);
        assert!(after >= before + (40 << 20) / page, "ran: read again ({before} -> {after} pages)");
        drop(grown);
        let freed = files.resident_of_cgroup(dir.path(), None, &mut buf);
        assert!(freed + (40 << 20) / page <= after, "no CPU figure: read every time ({after} -> {freed} pages)");
    }

    #[test]
    fn only_pages_of_members_found_after_the_cpu_time_stand_for_it() {
        // The cgroup gains a member (this test again, so its pages count twice) while the
        // members found a moment before are still taken as known.
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        let me = std::process::id();
        std::fs::write(&procs, format!("{me}\n")).unwrap();
        let mut files = Files::default();
        files.for_run(1, me as i32);
        let mut buf = [0u8; 4096];
        let once = files.resident_of_cgroup(dir.path(), Some(1000), &mut buf);
        std::fs::write(&procs, format!("{me}\n{me}\n")).unwrap();
        // It ran (it forked): the members known from before are read again, not found again.
        let known = files.resident_of_cgroup(dir.path(), Some(1001), &mut buf);
        assert!(known < once * 3 / 2, "members known for a second: {once} -> {known}");
        // Nothing ran since, but those pages were not summed over members found after 1001.
        files.members_at = Instant::now().checked_sub(MEMBERS_FRESH);
        let found = files.resident_of_cgroup(dir.path(), Some(1001), &mut buf);
        assert!(found > once * 3 / 2, "the new member is counted once the members are found: {once} -> {found}");
        assert_eq!(files.resident_of_cgroup(dir.path(), Some(1001), &mut buf), found, "and that figure stands");
    }

    #[test]
    fn a_file_read_again_at_its_start_is_made_anew() {
        let path = format!("/proc/{}/stat", std::process::id());
        let mut source = Source::Unopened;
        let mut buf = [0u8; 4096];
        let first = source.read(|| &path, &mut buf).unwrap().len();
        assert!(first > 0);
        assert!(matches!(source, Source::Open(_)), "kept open within the budget");
        let again = source.read(|| &path, &mut buf).unwrap().len();
        assert!(again > 0, "pread at 0 reads it whole again");
        let mut missing = Source::Unopened;
        assert!(missing.read(|| "/proc/no/such/file", &mut buf).is_none());
        assert!(matches!(missing, Source::Missing), "not tried again");
    }
}
