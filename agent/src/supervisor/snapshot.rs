//! The list snapshot (`procctl_proto::snapshot`): the last `list` or `pid` answer, written
//! beside the socket once it has gone out, and removed before the loop carries out anything
//! that could change what it shows. `procctl` reads it instead of asking while it is there,
//! its owner is the agent's, and the agent's lock is on it.
//!
//! Whether something could change the rows is not decided case by case: every event and
//! timer of the loop but a `list` or `pid` question (and the table's save and the spare
//! cgroups, which show nowhere) removes it. So a snapshot only lives between questions
//! with nothing in between, which is what a script or a person polling a quiet fleet does;
//! it costs nothing while nobody lists (nothing is written) and one unlink at the next
//! change after someone did.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use procctl_proto::Target;
use procctl_proto::snapshot::{self, Header};

pub struct Snapshot {
    path: PathBuf,
    /// Where the next one is written before it is renamed over `path`.
    fresh: PathBuf,
    /// The file at `path`, held open for its lock: the lock tells a reader that an agent
    /// keeps it (a dead agent's file is unlocked).
    held: Option<File>,
    /// An answer to write once it has gone out.
    due: Option<(Header, Vec<u8>)>,
}

impl Snapshot {
    /// The snapshot of the agent on `socket`; a dead agent's is removed.
    pub fn new(socket: &Path) -> Snapshot {
        let path = snapshot::path(socket);
        let _ = fs::remove_file(&path);
        let mut fresh = path.clone().into_os_string();
        fresh.push(".new");
        Snapshot { path, fresh: PathBuf::from(fresh), held: None, due: None }
    }

    /// `list`, an answer about `target` (CPU and MEM `sampled` or not), to be written once
    /// it is sent.
    pub fn keep(&mut self, target: &Target, sampled: bool, list: Vec<u8>) {
        let at_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.due = Some((Header { at_ms, sampled, target: target.clone() }, list));
    }

    pub fn is_due(&self) -> bool {
        self.due.is_some()
    }

    /// Writes the answer kept; on a failure there is no snapshot (and `list` asks).
    pub fn write_due(&mut self) {
        let Some((header, list)) = self.due.take() else {
            return;
        };
        match self.write(&header, &list) {
            // The one it replaces is closed here, after the rename: its lock holds until then.
            Ok(file) => self.held = Some(file),
            Err(_) => self.forget(),
        }
    }

    fn write(&self, header: &Header, list: &[u8]) -> io::Result<File> {
        let bytes = snapshot::encode(header, list).map_err(io::Error::other)?;
        // A new file of the agent's own, whatever was left there (the socket, and so this,
        // may be in a shared sticky directory such as /tmp).
        let _ = fs::remove_file(&self.fresh);
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.fresh)?;
        lock(&file)?;
        file.write_all(&bytes)?;
        fs::rename(&self.fresh, &self.path)?;
        Ok(file)
    }

    /// Something may change: no snapshot, none due. Removed before it is unlocked, so a
    /// reader finds it gone, or finds it locked and answers from before the change.
    pub fn forget(&mut self) {
        self.due = None;
        if self.held.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// An open file description write lock on the whole of `file`: a reader tests it with
/// F_OFD_GETLK, taking nothing. It goes with the last descriptor of this open file, which
/// only the agent's own table holds (the spawner's table is its own), so it goes with the
/// agent.
fn lock(file: &File) -> io::Result<()> {
    let whole =
        libc::flock { l_type: libc::F_WRLCK as i16, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&whole)).map(drop).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::frame;

    fn locked(path: &Path) -> bool {
        let file = File::open(path).unwrap();
        let mut probe = libc::flock {
            l_type: libc::F_RDLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut probe)).unwrap();
        probe.l_type != libc::F_UNLCK as i16
    }

    #[test]
    fn an_answer_is_written_when_due_locked_and_gone_at_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let path = snapshot::path(&socket);
        fs::write(&path, b"a dead agent's").unwrap();
        let mut snap = Snapshot::new(&socket);
        assert!(!path.exists(), "a dead agent's snapshot is removed");

        // Whatever is where the next one is written is replaced, not written through.
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, b"untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &snap.fresh).unwrap();

        let list = frame::encode(&procctl_proto::Response::List(vec![])).unwrap();
        snap.keep(&Target::All, true, list.clone());
        assert!(!path.exists(), "nothing is written before the answer has gone");
        snap.write_due();
        let (header, rows) = snapshot::decode(&fs::read(&path).unwrap()).unwrap();
        assert_eq!((header.target, header.sampled, rows.len()), (Target::All, true, 0));
        assert!(locked(&path));
        assert_eq!(fs::read(&elsewhere).unwrap(), b"untouched");

        snap.keep(&Target::Name("web".into()), false, list.clone());
        snap.write_due();
        assert_eq!(snapshot::decode(&fs::read(&path).unwrap()).unwrap().0.target, Target::Name("web".into()));
        assert!(locked(&path), "the replacement is locked");

        snap.keep(&Target::All, true, list.clone());
        snap.forget();
        assert!(!snap.is_due(), "an answer from before a change is not written after it");
        assert!(!path.exists());
    }
}
