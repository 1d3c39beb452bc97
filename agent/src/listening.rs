//! Whose socket answered a probe: a tcp or http probe on an instance's `{port}` passes only
//! when a process of that instance holds a listening socket of the port, so another server
//! on the same port cannot make an instance ready (or healthy) that is failing to bind.
//!
//! The kernel lists listening sockets with their inode in /proc/net/tcp and tcp6; a
//! process's descriptors name the sockets they hold as `socket:[INODE]` in /proc/PID/fd.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use procctl_proto::InstanceId;

use crate::config::Probe;
use crate::logs::{Follow, SharedSink};

/// `st` of a listening socket in /proc/net/tcp.
const LISTEN: &str = "0A";

/// What a probe's pass is checked against: the instance, its port and where its processes are.
pub struct Owner {
    pub id: InstanceId,
    pub port: u16,
    pub pid: i32,
    pub cgroup: Option<PathBuf>,
    /// The instance's log, told once per run when another process answers.
    pub sink: SharedSink,
    pub follow: Follow,
    pub noted: Arc<AtomicBool>,
}

/// Whether a tcp or http probe is aimed at the instance's own `{port}` on this machine (a
/// probe of another host's port says nothing about the sockets here).
pub fn aims_at_port(probe: &Probe) -> bool {
    let (Probe::Tcp(text) | Probe::Http(text)) = probe else {
        return false;
    };
    let rest = text.split_once("://").map_or(text.as_str(), |(_, rest)| rest);
    let host = rest.rsplit_once(":{port}").map_or("", |(host, _)| host);
    text.contains("{port}") && (host.starts_with("127.") || ["localhost", "[::1]", "0.0.0.0", "[::]"].contains(&host))
}

impl Owner {
    /// A probe that reached the port passes only if the instance holds its listening socket.
    pub async fn confirm(owner: Option<Owner>) -> Result<(), String> {
        let Some(owner) = owner else {
            return Ok(());
        };
        // /proc reads are quick but blocking: off the runtime's thread.
        tokio::task::spawn_blocking(move || owner.check()).await.unwrap_or(Ok(()))
    }

    fn check(&self) -> Result<(), String> {
        let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|path| fs::read_to_string(path).ok())
            .flat_map(|table| listening_inodes(&table, self.port))
            .collect();
        if inodes.is_empty() {
            // Not listening in this network namespace: nothing can be told.
            return Ok(());
        }
        if self.members().into_iter().any(|pid| holds(pid, &inodes)) {
            return Ok(());
        }
        let holder = all_pids().into_iter().find(|&pid| holds(pid, &inodes));
        let why = match holder {
            Some(pid) => format!("port {} is answered by pid {pid}, not by {}", self.port, self.id),
            None => format!("port {} is answered by another process, not by {}", self.port, self.id),
        };
        if !self.noted.swap(true, Ordering::Relaxed) {
            log!("{why}");
            crate::logs::note(&self.sink, &self.follow, &format!("procagent: {why}"));
        }
        Err(why)
    }

    /// The instance's processes: its cgroup's, else its main process and its descendants.
    fn members(&self) -> Vec<i32> {
        if let Some(cgroup) = &self.cgroup {
            let procs = crate::cgroup::procs(cgroup);
            if !procs.is_empty() {
                return procs;
            }
        }
        let mut family = vec![self.pid];
        let mut members = vec![];
        while let Some(member) = family.pop() {
            members.push(member);
            family.extend(crate::procfs::children(member));
        }
        members
    }
}

/// The inodes of the sockets listening on `port` in a /proc/net/tcp or tcp6 table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == LISTEN;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port).then(|| fields.get(9)?.parse().ok())?
        })
        .filter(|&inode| inode != 0)
        .collect()
}

/// Whether one of `pid`'s descriptors is a socket with one of `inodes`.
fn holds(pid: i32, inodes: &[u64]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(target.to_str()?))
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// The inode of a descriptor's link text `socket:[INODE]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4711 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4712 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4713 1 0000000000000000 20 4 30 10 -1
   3: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4714 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listening_sockets_of_a_port_are_found_by_inode() {
        // (port, inodes): a connected socket on the port (st 01) is not a listener.
        let cases: [(u16, &[u64]); 3] = [(8000, &[4711, 4714]), (8001, &[4712]), (8002, &[])];
        for (port, inodes) in cases {
            assert_eq!(listening_inodes(TABLE, port), inodes, "port {port}");
        }
    }

    #[test]
    fn only_probes_of_a_local_port_of_the_instance_are_checked() {
        let cases = [
            (Probe::Tcp("127.0.0.1:{port}".into()), true),
            (Probe::Http("http://127.0.0.1:{port}/health".into()), true),
            (Probe::Http("http://localhost:{port}/".into()), true),
            (Probe::Tcp("[::1]:{port}".into()), true),
            (Probe::Tcp("127.0.0.1:8000".into()), false),
            (Probe::Http("http://10.0.0.5:{port}/".into()), false),
            (Probe::Log("{port}".into()), false),
        ];
        for (probe, checked) in cases {
            assert_eq!(aims_at_port(&probe), checked, "{probe:?}");
        }
    }

    #[test]
    fn descriptor_links_name_their_socket() {
        let cases = [("socket:[4711]", Some(4711)), ("pipe:[4711]", None), ("/dev/null", None), ("socket:[x]", None)];
        for (link, inode) in cases {
            assert_eq!(socket_inode(link), inode, "{link}");
        }
    }

    #[test]
    fn a_listener_of_this_process_is_seen_among_its_descriptors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let table = fs::read_to_string("/proc/net/tcp").unwrap();
        let inodes = listening_inodes(&table, port);
        assert_eq!(inodes.len(), 1, "{port} in {table}");
        assert!(holds(std::process::id() as i32, &inodes));
    }
}
