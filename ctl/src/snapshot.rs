//! `list` and `pid` from the agent's snapshot (`procctl_proto::snapshot`) when it answers
//! them: the agent's last answer, which it removes before anything changes, read instead of
//! waking the agent. Believed only when it is as trustworthy as the socket: owned by this
//! user or root, locked by a live agent, of this protocol version, about the targets asked
//! (each naming at least one of its rows), and for `list` no older than a sample is given
//! again. Anything else is `None`, and the command asks the agent, which answers (or says
//! why not) as always.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use procctl_proto::snapshot::{self, Header, SAMPLE_FRESH};
use procctl_proto::{InstanceInfo, Target};

/// What the rows are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `list`: CPU and MEM sampled within `SAMPLE_FRESH`.
    Sampled,
    /// `pid`: the rows as they are.
    Rows,
}

/// The rows of `targets` (distinct, in order) from the snapshot of the agent on `socket`,
/// each instance once and in the order the agent gives them; `None` to ask the agent.
pub fn rows(socket: &Path, targets: &[Target], need: Need) -> Option<Vec<InstanceInfo>> {
    let (header, rows) = read(&snapshot::path(socket))?;
    let now = SystemTime::now();
    answer(&header, rows, targets, need, now)
}

/// The header and rows of the file at `path`, if an agent of this user (or root) keeps it.
fn read(path: &Path) -> Option<(Header, Vec<InstanceInfo>)> {
    let mut file = File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    let meta = file.metadata().ok()?;
    let own = nix::unistd::geteuid().as_raw();
    // No bigger than a frame can be (and the prefix and header): a file of another kind is
    // not read whole.
    let most = (procctl_proto::MAX_FRAME * 2) as u64;
    if !meta.is_file() || (meta.uid() != own && meta.uid() != 0) || meta.len() > most || !kept(&file) {
        return None;
    }
    // Read to its end into room for all of it and a byte more (`read_to_end` would ask the
    // size and the offset again first).
    let mut bytes = vec![0; meta.len() as usize + 1];
    let mut len = 0;
    while len < bytes.len() {
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    snapshot::decode(&bytes[..len])
}

/// Whether a live agent holds its lock on `file` (F_OFD_GETLK takes none).
fn kept(file: &File) -> bool {
    let mut probe =
        libc::flock { l_type: libc::F_RDLCK as i16, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut probe)).is_ok()
        && probe.l_type != libc::F_UNLCK as i16
}

/// The answer to `targets` a snapshot with `header` and `rows` gives at `now`, if it gives one.
fn answer(
    header: &Header,
    rows: Vec<InstanceInfo>,
    targets: &[Target],
    need: Need,
    now: SystemTime,
) -> Option<Vec<InstanceInfo>> {
    if need == Need::Sampled {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(header.at_ms);
        // A clock set back makes the age an error: asked, not believed.
        if !header.sampled || now.duration_since(at).ok()? >= SAMPLE_FRESH {
            return None;
        }
    }
    if targets.len() == 1 && targets[0] == header.target {
        // The very question it answers (and no row of it: the agent says why).
        return (!rows.is_empty()).then_some(rows);
    }
    let mut taken = vec![false; rows.len()];
    let mut order = Vec::with_capacity(rows.len());
    for target in targets {
        // Every row of `target` is in the snapshot only if its question covers `target`; and
        // a target naming none of them (an unknown name, an instance past the count) is the
        // agent's to answer.
        if !covers(&header.target, target) {
            return None;
        }
        let before = order.len();
        let mut named = false;
        for (at, _) in rows.iter().enumerate().filter(|(_, row)| target.matches(&row.id)) {
            named = true;
            if !taken[at] {
                taken[at] = true;
                order.push(at);
            }
        }
        if !named {
            return None;
        }
        // The agent's answer of each target is in table order, as the snapshot's is.
        order[before..].sort_unstable();
    }
    let mut rows: Vec<Option<InstanceInfo>> = rows.into_iter().map(Some).collect();
    Some(order.into_iter().filter_map(|at| rows[at].take()).collect())
}

/// Whether the rows of `asked` are all among the rows of the answer to `answered`.
fn covers(answered: &Target, asked: &Target) -> bool {
    match (answered, asked) {
        (Target::All, _) => true,
        (Target::Name(name), Target::Name(other)) => name == other,
        (Target::Name(name), Target::Instance(id)) => *name == id.name,
        (Target::Instance(id), Target::Instance(other)) => id == other,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::{InstanceId, State};

    fn row(name: &str, index: u32) -> InstanceInfo {
        InstanceInfo {
            id: InstanceId::new(name, index),
            pid: Some(100 + index),
            state: State::Running,
            uptime_secs: Some(1),
            restarts: 0,
            last_exit: None,
            health: None,
            status: None,
            cpu_tenths: None,
            memory_bytes: None,
            start_error: None,
            recycles: 0,
            messages: 0,
            autoscale: None,
        }
    }

    fn t(s: &str) -> Target {
        s.parse().unwrap()
    }

    fn ids(rows: Option<Vec<InstanceInfo>>) -> Option<Vec<String>> {
        rows.map(|rows| rows.iter().map(|row| row.id.to_string()).collect())
    }

    #[test]
    fn a_snapshot_answers_what_its_question_covers_as_the_agent_would() {
        let all = [row("db", 0), row("web", 0), row("web", 1), row("web", 2)];
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let header = |target: &str| Header { at_ms: 1_000_000, sampled: true, target: t(target) };
        // (snapshot of, targets asked, the rows answered or None to ask the agent)
        type Case = (&'static str, &'static [&'static str], Option<&'static [&'static str]>);
        let cases: [Case; 12] = [
            ("all", &["all"], Some(&["db:0", "web:0", "web:1", "web:2"])),
            ("all", &["web"], Some(&["web:0", "web:1", "web:2"])),
            ("all", &["web:1"], Some(&["web:1"])),
            ("all", &["web:2", "db", "web"], Some(&["web:2", "db:0", "web:0", "web:1"])),
            ("all", &["web:1", "web:1"], Some(&["web:1"])),
            ("all", &["ghost"], None),
            ("all", &["web:3"], None),
            ("all", &["db", "ghost"], None),
            ("web", &["web:1"], Some(&["web:1"])),
            ("web", &["db"], None),
            ("web", &["all"], None),
            ("web:1", &["web"], None),
        ];
        for (of, asked, want) in cases {
            let snap_rows: Vec<InstanceInfo> = all.iter().filter(|r| t(of).matches(&r.id)).cloned().collect();
            let targets: Vec<Target> = asked.iter().map(|s| t(s)).collect();
            let got = ids(answer(&header(of), snap_rows, &targets, Need::Rows, at));
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "snapshot of {of}, asked {asked:?}");
        }
    }

    #[test]
    fn list_believes_only_a_fresh_sample() {
        let rows = vec![row("web", 0)];
        let header = |sampled, at_ms| Header { at_ms, sampled, target: Target::All };
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        // (sampled, made at ms, asked at ms, need, answered)
        let cases = [
            (true, 1000, 1000, Need::Sampled, true),
            (true, 1000, 1249, Need::Sampled, true),
            (true, 1000, 1250, Need::Sampled, false),
            (true, 1000, 999, Need::Sampled, false),
            (false, 1000, 1000, Need::Sampled, false),
            (false, 1000, 99_000, Need::Rows, true),
            (true, 1000, 99_000, Need::Rows, true),
        ];
        for (sampled, made, asked, need, want) in cases {
            let got = answer(&header(sampled, made), rows.clone(), &[Target::All], need, at(asked));
            assert_eq!(got.is_some(), want, "sampled {sampled}, made {made}, asked {asked}, {need:?}");
        }
    }
}
