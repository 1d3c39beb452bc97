//! The list snapshot: the agent's last `list` answer, kept in a file beside its socket for
//! as long as nothing it shows has changed, so `procctl list` and `pid` can read it instead
//! of waking the agent (as runit's `sv status` reads the `supervise/status` runsv keeps).
//!
//! The file is the prefix `MAGIC` and `PROTOCOL_VERSION` (big-endian), a frame of `Header`,
//! then the answer's own `Response::List` frame, byte for byte as it went out on the
//! socket. Whether it may be believed (its owner, the agent's lock on it, its age) is the
//! reader's to check; this module only gives the format and the name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError};
use crate::{InstanceInfo, PROTOCOL_VERSION, Response, Target};

/// The first bytes of a snapshot file.
pub const MAGIC: [u8; 8] = *b"procctl\x01";

/// How long CPU and MEM sampled for an answer are given again (the agent's own reuse of a
/// sample): a snapshot with them answers `list` for as long, a snapshot's rows answer `pid`
/// until something changes.
pub const SAMPLE_FRESH: Duration = Duration::from_millis(250);

/// What the rows of a snapshot answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// When the answer was made, in milliseconds since the Unix epoch (wall clock: the
    /// reader is another process).
    pub at_ms: u64,
    /// Whether CPU and MEM were sampled for it (a `pid` answer has neither).
    pub sampled: bool,
    /// The target the rows are of: every row of it is there.
    pub target: Target,
}

/// The snapshot of the agent on `socket`: the socket's path with `.list` added.
pub fn path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".list");
    PathBuf::from(name)
}

/// The whole file: the prefix, `header`, and the answer's frame `list`.
pub fn encode(header: &Header, list: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + 32 + list.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    frame::encode_onto(header, &mut out)?;
    out.extend_from_slice(list);
    Ok(out)
}

/// The header and rows of a whole file; `None` for anything else: another version's file,
/// one cut short, or not a list.
pub fn decode(bytes: &[u8]) -> Option<(Header, Vec<InstanceInfo>)> {
    let rest = bytes.strip_prefix(&MAGIC)?;
    let (version, rest) = rest.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*version) != PROTOCOL_VERSION {
        return None;
    }
    let (header, used) = frame::decode::<Header>(rest).ok()??;
    let rest = &rest[used..];
    match frame::decode::<Response>(rest).ok()? {
        Some((Response::List(rows), used)) if used == rest.len() => Some((header, rows)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Row, RowId};
    use crate::{InstanceId, State};

    fn file(target: Target) -> Vec<u8> {
        let rows = [0, 1].map(|index| Row {
            id: RowId { name: "web", index },
            pid: Some(100 + index),
            state: State::Running,
            uptime_secs: Some(5),
            restarts: 0,
            last_exit: None,
            health: None,
            status: None,
            cpu_tenths: Some(3),
            memory_bytes: Some(4096),
            start_error: None,
            recycles: 0,
            messages: 0,
            autoscale: None,
        });
        let mut list = vec![];
        frame::encode_list(rows.into_iter(), &mut list).unwrap();
        encode(&Header { at_ms: 7, sampled: true, target }, &list).unwrap()
    }

    #[test]
    fn a_file_gives_back_its_header_and_rows() {
        let target = Target::Name("web".into());
        let (header, rows) = decode(&file(target.clone())).unwrap();
        assert_eq!(header, Header { at_ms: 7, sampled: true, target });
        assert_eq!(
            rows.iter().map(|row| row.id.clone()).collect::<Vec<_>>(),
            [0, 1].map(|i| InstanceId::new("web", i))
        );
        assert_eq!(rows[1].pid, Some(101));
    }

    #[test]
    fn anything_but_a_whole_file_of_this_version_is_refused() {
        let whole = file(Target::All);
        for cut in [0, 4, MAGIC.len(), MAGIC.len() + 4, whole.len() - 1] {
            assert!(decode(&whole[..cut]).is_none(), "cut at {cut}");
        }
        let mut other = whole.clone();
        other[MAGIC.len() + 3] ^= 1;
        assert!(decode(&other).is_none(), "another protocol version");
        let mut longer = whole.clone();
        longer.push(0);
        assert!(decode(&longer).is_none(), "trailing bytes");
        let mut foreign = whole;
        foreign[0] = b'P';
        assert!(decode(&foreign).is_none(), "not a snapshot");
    }

    #[test]
    fn the_file_is_named_after_the_socket() {
        assert_eq!(path(Path::new("/run/procctl/agent.sock")), PathBuf::from("/run/procctl/agent.sock.list"));
    }
}
