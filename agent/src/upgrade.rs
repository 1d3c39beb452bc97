//! The in-place upgrade of the agent (`procctl upgrade`, SIGUSR2): the handover format, the
//! check a new binary answers before anything changes, and reading a handover in the new
//! image.
//!
//! The old image runs `NEW --handover-check` (through the spawner and the reaper, like a
//! hook), which prints `procagent VERSION handover N`; only a binary that speaks this
//! handover version `N` is exec'd. The supervisor then writes its state (`Handed`, JSON)
//! and sends the descriptors the new image keeps to the spawner thread, which puts them
//! and the state (a memfd) into its own descriptor table, clears close-on-exec on exactly
//! those, and calls execve itself: children were forked by that thread, and
//! `PR_SET_PDEATHSIG` fires when the thread that forked a child ends, which every other
//! thread does at execve. The new image starts with `--handover FD`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The handover format version: what a new binary must speak to take over from this one.
/// Bumped whenever `Handed` (or what it holds) changes incompatibly.
pub const HANDOVER: u32 = 1;

/// The flag that asks a binary which handover it takes.
pub const CHECK_FLAG: &str = "--handover-check";
/// The flag that gives the new image its handover.
pub const HANDOVER_FLAG: &str = "--handover";

/// The line `--handover-check` prints.
pub fn check_line(version: &str) -> String {
    format!("procagent {version} handover {HANDOVER}")
}

/// What a binary's `--handover-check` printed: its version, when it takes this handover;
/// otherwise why not.
pub fn parse_check(output: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().find(|line| !line.trim().is_empty()).unwrap_or("").trim();
    let Some(rest) = line.strip_prefix("procagent ") else {
        return Err(format!("it printed {line:?}, not \"procagent VERSION handover N\""));
    };
    let Some((version, handover)) = rest.rsplit_once(" handover ") else {
        return Err(format!("it printed {line:?}, not \"procagent VERSION handover N\""));
    };
    match handover.trim().parse::<u32>() {
        Ok(HANDOVER) => Ok(version.trim().to_string()),
        Ok(other) => Err(format!("it takes handover {other}, this agent writes handover {HANDOVER}")),
        Err(_) => Err(format!("it printed {line:?}, not \"procagent VERSION handover N\"")),
    }
}

/// How this image was started, read once at start-up: the binary (before anyone replaces
/// the file, after which /proc/self/exe reads "... (deleted)") and the arguments the next
/// image gets again (without an earlier `--handover FD`).
pub struct Start {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

static START: OnceLock<Start> = OnceLock::new();

/// Records how the agent was started; the first call wins.
pub fn record_start() {
    START.get_or_init(|| {
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("procagent"));
        let mut args = vec![];
        let mut skip = false;
        for arg in std::env::args_os().skip(1) {
            if skip {
                skip = false;
                continue;
            }
            if arg == HANDOVER_FLAG {
                skip = true;
                continue;
            }
            if arg.to_str().is_some_and(|a| a.starts_with("--handover=")) {
                continue;
            }
            args.push(arg);
        }
        Start { exe, args }
    });
}

/// How the agent was started (empty before `record_start`, as in unit tests).
pub fn start() -> Option<&'static Start> {
    START.get()
}

/// The agent's own descriptors that the new image takes, by their number in this image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Own {
    pub control: Option<RawFd>,
    pub lock: Option<RawFd>,
    pub notify: Option<RawFd>,
    pub metrics: Option<RawFd>,
}

/// The whole handover, as the memfd holds it. Descriptors are indices into the list the
/// spawner writes on the first line (their numbers in the new image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handed {
    pub handover: u32,
    /// The version of the image that wrote it.
    pub from: String,
    /// `PROCCTL_AGENT` of every process the agent started: the agent's identity stays.
    pub token: String,
    pub notify_name: String,
    /// The text of the config in effect: the new image parses it, not the file, whose
    /// changes wait for a reload.
    pub config: String,
    pub control: Option<usize>,
    pub lock: Option<usize>,
    pub notify: Option<usize>,
    pub metrics: Option<usize>,
    /// The agent's cgroup tree, with cgroup tracking (else why not).
    pub tree: Result<crate::cgroup::Tree, String>,
    /// The agent's own service manager's notify socket.
    pub service_notify: Option<String>,
    pub listening: Vec<crate::listen::Handed>,
    /// The last key given to a listening socket.
    pub listening_next: u64,
    pub supervisor: crate::supervisor::HandedState,
}

/// Collects descriptors for a handover, in order; an index names each.
#[derive(Debug, Default)]
pub struct FdList(pub Vec<RawFd>);

impl FdList {
    pub fn add(&mut self, fd: RawFd) -> usize {
        self.0.push(fd);
        self.0.len() - 1
    }
}

/// A handover as the new image reads it: the state, and the descriptors it names.
pub struct Received {
    pub handed: Handed,
    fds: Vec<Option<OwnedFd>>,
}

impl Received {
    /// Reads the handover in descriptor `fd` (closed after), takes every descriptor it
    /// names, and makes each close-on-exec again.
    pub fn read(fd: RawFd) -> anyhow::Result<Received> {
        use anyhow::Context;
        // SAFETY: the number was given by the image before, which made it for us.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.rewind().context("cannot read the handover")?;
        let mut text = String::new();
        file.read_to_string(&mut text).context("cannot read the handover")?;
        let (first, rest) = text.split_once('\n').context("the handover has no descriptor line")?;
        let numbers: Vec<RawFd> = serde_json::from_str(first).context("the handover's descriptor line")?;
        let fds = numbers
            .into_iter()
            .map(|number| {
                // SAFETY: the old image passed these numbers open to us, each once.
                let fd = unsafe { OwnedFd::from_raw_fd(number) };
                let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
                Some(fd)
            })
            .collect();
        let handed: Handed = serde_json::from_str(rest).context("the handover's state")?;
        if handed.handover != HANDOVER {
            anyhow::bail!("handover {} given, this agent takes handover {HANDOVER}", handed.handover);
        }
        Ok(Received { handed, fds })
    }

    /// The numbers of the descriptors not taken yet.
    pub fn untaken(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd;
        self.fds.iter().flatten().map(|fd| fd.as_raw_fd()).collect()
    }

    /// Takes the descriptor at `index` (once).
    pub fn take(&mut self, index: Option<usize>) -> Option<OwnedFd> {
        index.and_then(|i| self.fds.get_mut(i)).and_then(Option::take)
    }
}

/// What the spawner writes into the memfd: the descriptors' numbers in its table (the new
/// image's), then the state.
pub fn memfd_text(numbers: &[RawFd], state: &[u8]) -> Vec<u8> {
    let mut text = serde_json::to_vec(numbers).unwrap_or_else(|_| b"[]".to_vec());
    text.push(b'\n');
    text.extend_from_slice(state);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_line_is_read_back_and_other_handovers_are_refused() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (&check_line("1.2.3 (protocol 3)"), Ok("1.2.3 (protocol 3)")),
            ("procagent 9.0.0 handover 2\n", Err("it takes handover 2, this agent writes handover 1")),
            ("", Err("it printed \"\", not \"procagent VERSION handover N\"")),
            ("usage: procagent", Err("it printed \"usage: procagent\", not \"procagent VERSION handover N\"")),
            (
                "procagent 1.0 handover x",
                Err("it printed \"procagent 1.0 handover x\", not \"procagent VERSION handover N\""),
            ),
        ];
        for (output, expected) in cases {
            let got = parse_check(output.as_bytes());
            assert_eq!(got.as_deref().map_err(String::as_str), *expected, "{output:?}");
        }
    }

    #[test]
    fn the_memfd_text_is_the_numbers_then_the_state() {
        assert_eq!(memfd_text(&[5, 7], b"{}"), b"[5,7]\n{}".to_vec());
    }
}
