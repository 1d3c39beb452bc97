//! Where the metrics are served: `HOST:PORT` (an IP address and a port) or `unix:///path`,
//! bound before the agent starts anything, so a taken port or a bad directory stops it with
//! a message. A Unix socket follows the control socket's rules: a trusted directory (see
//! `trust`), a socket made 0600, a dead one replaced, a live one or someone else's refused.

use std::fmt;
use std::fs::{self, Permissions};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use interprocess::os::unix::uds_local_socket as uds;

use crate::trust::{self, TrustError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix://") {
            return match Path::new(path) {
                path if path.is_absolute() && path.file_name().is_some() => Ok(Address::Unix(path.to_path_buf())),
                _ => Err(format!(
                    "expected unix:// followed by an absolute path (unix:///run/procctl/metrics.sock), found {text:?}"
                )),
            };
        }
        text.parse().map(Address::Tcp).map_err(|_| {
            format!("expected an IP address and a port (127.0.0.1:9101, [::1]:9101) or unix:///path, found {text:?}")
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "http://{addr}/metrics"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// A bound metrics listener, not yet registered with a runtime.
pub enum Bound {
    Tcp(TcpListener),
    /// The listener and its path, removed when the agent exits.
    Unix(UnixListener, PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {0}: {1}")]
    Tcp(SocketAddr, std::io::Error),
    #[error("the metrics socket directory: {0}")]
    Dir(#[from] TrustError),
    #[error("something already serves on {0}; stop it or choose another metrics address")]
    Live(String),
    #[error("{0} exists and is not a socket; remove it or choose another metrics address")]
    NotASocket(String),
    #[error("{0} belongs to another user (uid {1}); remove it or choose another metrics address")]
    Foreign(String, u32),
    #[error("cannot bind {0}: {1}")]
    Unix(String, std::io::Error),
}

pub fn bind(address: &Address) -> Result<Bound, BindError> {
    match address {
        Address::Tcp(addr) => {
            let listener = TcpListener::bind(addr).map_err(|e| BindError::Tcp(*addr, e))?;
            listener.set_nonblocking(true).map_err(|e| BindError::Tcp(*addr, e))?;
            Ok(Bound::Tcp(listener))
        }
        Address::Unix(path) => bind_unix(path).map(|listener| Bound::Unix(listener, path.clone())),
    }
}

impl Bound {
    /// Its descriptor, for an upgrade to hand over.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Bound::Tcp(listener) => listener.as_raw_fd(),
            Bound::Unix(listener, _) => listener.as_raw_fd(),
        }
    }

    /// The listener an upgrade handed over for `address`.
    pub fn from_handed(address: &Address, fd: OwnedFd) -> std::io::Result<Bound> {
        Ok(match address {
            Address::Tcp(_) => {
                let listener = TcpListener::from(fd);
                listener.set_nonblocking(true)?;
                Bound::Tcp(listener)
            }
            Address::Unix(path) => {
                let listener = UnixListener::from(fd);
                listener.set_nonblocking(true)?;
                Bound::Unix(listener, path.clone())
            }
        })
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener, BindError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        trust::trusted_dir(dir, trust::Use::Socket)?;
    }
    let own = nix::unistd::geteuid().as_raw();
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.uid() != own => return Err(BindError::Foreign(shown, meta.uid())),
        // A socket that accepts belongs to a live server; one that refuses is left over.
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(BindError::Live(shown)),
            Err(_) => fs::remove_file(path).map_err(|e| BindError::Unix(shown.clone(), e))?,
        },
        Ok(_) => return Err(BindError::NotASocket(shown)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(BindError::Unix(shown, e)),
    }
    let name = path.to_fs_name::<GenericFilePath>().map_err(|e| BindError::Unix(shown.clone(), e))?;
    // The mode is set before bind, so the socket is 0600 from its first moment.
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .reclaim_name(false)
        .create_sync_as::<uds::Listener>()
        .map_err(|e| BindError::Unix(shown.clone(), e))?;
    fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(|e| BindError::Unix(shown.clone(), e))?;
    let listener = UnixListener::from(OwnedFd::from(listener));
    listener.set_nonblocking(true).map_err(|e| BindError::Unix(shown, e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_the_spec_writes_them() {
        let cases: &[(&str, Option<Address>)] = &[
            ("127.0.0.1:9101", Some(Address::Tcp("127.0.0.1:9101".parse().unwrap()))),
            ("[::1]:9101", Some(Address::Tcp("[::1]:9101".parse().unwrap()))),
            ("0.0.0.0:9101", Some(Address::Tcp("0.0.0.0:9101".parse().unwrap()))),
            ("unix:///run/m.sock", Some(Address::Unix("/run/m.sock".into()))),
            ("unix://relative.sock", None),
            ("unix:///", None),
            ("localhost:9101", None),
            ("9101", None),
            ("127.0.0.1", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Address>().ok(), *want, "{text}");
        }
        let error = "9101".parse::<Address>().unwrap_err();
        assert!(error.contains("127.0.0.1:9101") && error.contains("\"9101\""), "{error}");
    }

    #[test]
    fn a_unix_address_is_made_private_replaces_a_dead_socket_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/metrics.sock");
        let first = bind_unix(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
        assert!(matches!(bind_unix(&path), Err(BindError::Live(_))));
        drop(first);
        bind_unix(&path).expect("a socket nobody accepts on is replaced");
        let file = dir.path().join("run/file");
        fs::write(&file, "").unwrap();
        assert!(matches!(bind_unix(&file), Err(BindError::NotASocket(_))));
    }
}
