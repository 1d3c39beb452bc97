//! Listening sockets held by the agent (`listen`): the addresses as the config writes them,
//! binding them once, and which of them are open, shared with the spawner by a key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr, sockopt};

use crate::config::ProcessSpec;
use crate::trust;

/// One `listen` address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "tcp://{addr}"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

impl Address {
    /// `tcp://IP:PORT` (an IPv6 address in brackets) or `unix://PATH`; a relative path is
    /// taken from `dir`, the config file's directory.
    pub fn parse(text: &str, dir: &Path) -> Result<Address, String> {
        let expected = || {
            format!("expected tcp://IP:PORT (tcp://127.0.0.1:8000, tcp://[::1]:8000) or unix://PATH, found \"{text}\"")
        };
        if let Some(rest) = text.strip_prefix("tcp://") {
            let addr: SocketAddr = rest.parse().map_err(|_| expected())?;
            if addr.port() == 0 {
                return Err(format!("\"{text}\" needs a port other than 0"));
            }
            Ok(Address::Tcp(addr))
        } else if let Some(rest) = text.strip_prefix("unix://") {
            if rest.is_empty() || rest.contains('\0') {
                return Err(expected());
            }
            let path = dir.join(rest);
            // sun_path holds 108 bytes with the terminating NUL.
            if path.as_os_str().len() > 107 {
                return Err(format!("the socket path {} is longer than 107 bytes", path.display()));
            }
            Ok(Address::Unix(path))
        } else {
            Err(expected())
        }
    }
}

/// The queue of connections not accepted yet: large, so a rolling restart that leaves a
/// moment with fewer workers queues connections rather than refusing them (the kernel caps
/// it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Binds and listens on `address`: close-on-exec, SO_REUSEADDR (a port left in TIME_WAIT by
/// an earlier agent binds again), IPv6 sockets IPv6 only. A Unix socket follows the control
/// socket's rules: a directory the agent trusts, the file 0600 from its first moment, a stale
/// socket of the agent's own user replaced, a live one, someone else's or anything not a
/// socket refused.
pub fn bind(address: &Address) -> Result<OwnedFd, String> {
    match address {
        Address::Tcp(addr) => bind_tcp(addr).map_err(|e| e.to_string()),
        Address::Unix(path) => bind_unix(path),
    }
}

fn bind_tcp(addr: &SocketAddr) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match addr {
        SocketAddr::V4(v4) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(*v4))?,
        SocketAddr::V6(v6) => {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(*v6))?
        }
    }
    socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

fn bind_unix(path: &Path) -> Result<OwnedFd, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        trust::trusted_dir(dir, trust::Use::Socket).map_err(|e| e.to_string())?;
    }
    let own = nix::unistd::geteuid().as_raw();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.uid() != own => {
            let owner = trust::user_name(meta.uid()).unwrap_or_else(|| "another user".into());
            return Err(format!("{} belongs to {owner} (uid {})", path.display(), meta.uid()));
        }
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(format!("something already accepts connections on {}", path.display())),
            Err(_) => std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))?,
        },
        Ok(_) => return Err(format!("{} exists and is not a socket", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| e.to_string())?;
    // The mode is set on the socket before bind, so the file is 0600 from its first moment.
    nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| e.to_string())?;
    let addr = UnixAddr::new(path).map_err(|e| e.to_string())?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN)).map_err(|e| e.to_string())?;
    Ok(fd)
}

/// An open listening socket; the spawner holds a copy under `key`.
pub struct Bound {
    pub key: u64,
    pub fd: OwnedFd,
    /// The inode of a Unix socket's file, so only our own file is removed when it closes.
    inode: Option<(u64, u64)>,
}

/// Every address the config listens on, bound, by address. The one owner of the agent's
/// listening sockets.
#[derive(Default)]
pub struct Listening {
    open: BTreeMap<Address, Bound>,
    next_key: u64,
}

/// One listening socket as an upgrade hands it over: its address, key, file and the
/// index of its descriptor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Handed {
    pub address: String,
    pub key: u64,
    pub inode: Option<(u64, u64)>,
    pub fd: usize,
}

/// What a reload would change: sockets bound for new addresses, and the addresses no process
/// listens on any more.
pub struct Rebind {
    bound: Vec<(Address, OwnedFd)>,
    closed: Vec<Address>,
}

impl Listening {
    /// Binds every address of `processes`; the first failure names the process and the
    /// address, and closes what was bound.
    pub fn bind_all<'a>(processes: impl IntoIterator<Item = &'a ProcessSpec>) -> Result<Listening, String> {
        let mut listening = Listening::default();
        let rebind = listening.rebind(processes)?;
        listening.commit(rebind);
        Ok(listening)
    }

    /// Binds what `processes` listen on and is not open yet (nothing changes yet: see
    /// `commit`); the first failure names the process and the address.
    pub fn rebind<'a>(&self, processes: impl IntoIterator<Item = &'a ProcessSpec>) -> Result<Rebind, String> {
        let mut bound: Vec<(Address, OwnedFd)> = vec![];
        let mut wanted = vec![];
        for spec in processes {
            for address in &spec.listen {
                wanted.push(address.clone());
                if self.open.contains_key(address) || bound.iter().any(|(a, _)| a == address) {
                    continue;
                }
                match bind(address) {
                    Ok(fd) => bound.push((address.clone(), fd)),
                    Err(e) => {
                        for (address, _) in &bound {
                            remove_unix_file(address);
                        }
                        return Err(format!("process {}: cannot listen on {address}: {e}", spec.name));
                    }
                }
            }
        }
        let closed = self.open.keys().filter(|a| !wanted.contains(a)).cloned().collect();
        Ok(Rebind { bound, closed })
    }

    /// Makes `rebind` the open set. Returns the sockets to share with the spawner (key and
    /// descriptor) and the keys it must forget.
    pub fn commit(&mut self, rebind: Rebind) -> (Vec<u64>, Vec<u64>) {
        let mut shared = vec![];
        for (address, fd) in rebind.bound {
            self.next_key += 1;
            let inode = match &address {
                Address::Unix(path) => std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino())),
                Address::Tcp(_) => None,
            };
            shared.push(self.next_key);
            self.open.insert(address, Bound { key: self.next_key, fd, inode });
        }
        let mut forgotten = vec![];
        for address in rebind.closed {
            if let Some(bound) = self.open.remove(&address) {
                forgotten.push(bound.key);
                remove_own_file(&address, bound.inode);
            }
        }
        (shared, forgotten)
    }

    /// The open socket with `key`.
    pub fn by_key(&self, key: u64) -> Option<&OwnedFd> {
        self.open.values().find(|b| b.key == key).map(|b| &b.fd)
    }

    /// Every open socket's number in the agent's table.
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.open.values().map(|b| b.fd.as_raw_fd()).collect()
    }

    /// Every open socket's key.
    pub fn keys(&self) -> Vec<u64> {
        self.open.values().map(|b| b.key).collect()
    }

    /// The keys of `spec`'s sockets, in the order of its `listen`.
    pub fn keys_of(&self, spec: &ProcessSpec) -> Vec<u64> {
        spec.listen.iter().filter_map(|a| self.open.get(a)).map(|b| b.key).collect()
    }

    /// Every open socket for an upgrade, its descriptor added to `fds`; and the last key given.
    pub fn handed(&self, fds: &mut crate::upgrade::FdList) -> (Vec<Handed>, u64) {
        let handed = self
            .open
            .iter()
            .map(|(address, bound)| Handed {
                address: address.to_string(),
                key: bound.key,
                inode: bound.inode,
                fd: fds.add(bound.fd.as_raw_fd()),
            })
            .collect();
        (handed, self.next_key)
    }

    /// The sockets an upgrade handed over, under the keys they had.
    pub fn from_handed(handed: Vec<Handed>, next_key: u64, received: &mut crate::upgrade::Received) -> Listening {
        let mut listening = Listening { open: BTreeMap::new(), next_key };
        for one in handed {
            let (Ok(address), Some(fd)) = (Address::parse(&one.address, Path::new("/")), received.take(Some(one.fd)))
            else {
                log!("internal error: the listening socket {} was not handed over", one.address);
                continue;
            };
            listening.open.insert(address, Bound { key: one.key, fd, inode: one.inode });
        }
        listening
    }

    /// Closes every socket, removing the files of Unix ones (at shutdown).
    pub fn close_all(&mut self) {
        for (address, bound) in std::mem::take(&mut self.open) {
            remove_own_file(&address, bound.inode);
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Removes a Unix socket's file if it is still the one we made.
fn remove_own_file(address: &Address, inode: Option<(u64, u64)>) {
    if let (Address::Unix(path), Some(inode)) = (address, inode)
        && std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == inode)
    {
        let _ = std::fs::remove_file(path);
    }
}

fn remove_unix_file(address: &Address) {
    if let Address::Unix(path) = address {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_written() {
        let dir = Path::new("/srv/app");
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("tcp://127.0.0.1:8000", Ok("tcp://127.0.0.1:8000")),
            ("tcp://[::1]:8000", Ok("tcp://[::1]:8000")),
            ("tcp://0.0.0.0:80", Ok("tcp://0.0.0.0:80")),
            ("unix:///run/web.sock", Ok("unix:///run/web.sock")),
            ("unix://web.sock", Ok("unix:///srv/app/web.sock")),
            ("tcp://localhost:8000", Err("expected tcp://IP:PORT")),
            ("tcp://127.0.0.1", Err("expected tcp://IP:PORT")),
            ("tcp://127.0.0.1:0", Err("a port other than 0")),
            ("http://127.0.0.1:80", Err("expected tcp://IP:PORT")),
            ("unix://", Err("expected tcp://IP:PORT")),
        ];
        for (text, want) in cases {
            let got = Address::parse(text, dir).map(|a| a.to_string());
            match want {
                Ok(shown) => assert_eq!(got.as_deref(), Ok(*shown), "{text}"),
                Err(part) => assert!(got.as_ref().is_err_and(|e| e.contains(part)), "{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_bound_tcp_socket_accepts_and_a_second_bind_names_the_problem() {
        let address = Address::parse("tcp://127.0.0.1:0", Path::new("/")).unwrap_err();
        assert!(address.contains("port other than 0"));
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let address = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
        let fd = bind(&address).unwrap();
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("the socket listens");
        let again = bind(&address).unwrap_err();
        assert!(again.contains("in use"), "{again}");
        drop(fd);
    }

    fn spec(name: &str, listen: &[&Path]) -> ProcessSpec {
        let toml = format!("[process.{name}]\ncommand = [\"x\"]\n");
        let mut spec =
            crate::config::Config::parse(Path::new("/c/procctl.toml"), &toml).unwrap().processes[name].clone();
        spec.listen = listen.iter().map(|p| Address::Unix(p.to_path_buf())).collect();
        spec
    }

    #[test]
    fn a_rebind_keeps_what_stays_binds_what_is_new_and_closes_what_went() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let [a, b, c] = ["a.sock", "b.sock", "c.sock"].map(|n| dir.path().join(n));
        let mut listening = Listening::bind_all([&spec("web", &[&a, &b])]).unwrap();
        let keys = listening.keys_of(&spec("web", &[&a, &b]));
        assert_eq!(keys.len(), 2);
        // `a` moves to another process, `b` goes, `c` is new.
        let rebind = listening.rebind([&spec("web", &[&c]), &spec("api", &[&a])]).unwrap();
        assert!(b.exists(), "nothing changes before the commit");
        let (shared, forgotten) = listening.commit(rebind);
        assert_eq!(forgotten, vec![keys[1]]);
        assert_eq!(shared.len(), 1);
        assert_eq!(listening.keys_of(&spec("api", &[&a])), vec![keys[0]], "the socket of `a` is kept");
        assert_eq!(listening.keys_of(&spec("web", &[&c])), shared);
        assert!(!b.exists(), "the closed socket's file is removed");
        // A failure binds nothing and leaves the open set as it was.
        std::fs::write(dir.path().join("d.sock"), b"x").unwrap();
        let failed = listening.rebind([&spec("web", &[&c, &dir.path().join("e.sock"), &dir.path().join("d.sock")])]);
        let error = failed.err().unwrap();
        assert!(
            error.starts_with("process web: cannot listen on unix://") && error.contains("not a socket"),
            "{error}"
        );
        assert!(!dir.path().join("e.sock").exists(), "what the failed rebind bound is gone again");
        assert_eq!(listening.keys().len(), 2);
        drop(listening);
        assert!(!a.exists() && !c.exists(), "the agent removes its socket files at exit");
    }

    #[test]
    fn a_unix_socket_is_0600_replaces_a_stale_one_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("web.sock");
        let address = Address::Unix(path.clone());
        let fd = bind(&address).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let live = bind(&address).unwrap_err();
        assert!(live.contains("already accepts"), "{live}");
        drop(fd);
        let fd = bind(&address).expect("a stale socket file is replaced");
        drop(fd);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"x").unwrap();
        assert!(bind(&address).unwrap_err().contains("not a socket"));
    }
}
