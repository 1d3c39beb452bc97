//! The directories the agent keeps its socket, table and logs in: used only when they are
//! real directories of its own that nobody else can write, since whoever can write there
//! can replace the socket and impersonate the agent, or read what the instances print.

use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    #[error(
        "{dir} is a symbolic link: the agent uses only a real directory of its own; remove it or choose another path"
    )]
    Symlink { dir: String },
    #[error("{dir} is not a directory; remove it or choose another path")]
    NotADirectory { dir: String },
    #[error(
        "{dir} belongs to {owner} (uid {uid}) with mode {mode:04o}, not to this agent's user (uid {own}): \
         whoever owns it can replace the socket or read the logs; remove it or choose another path"
    )]
    Foreign { dir: String, owner: String, uid: u32, mode: u32, own: u32 },
    #[error(
        "{dir} is shared (mode {mode:04o}): the agent keeps its table and logs only in a directory of its own; choose another path"
    )]
    Shared { dir: String, mode: u32 },
    #[error(
        "{dir} (owner {owner}, mode {mode:04o}) can be written by others, who could replace what the agent keeps \
         there; the agent changes no directory it did not create: run `chmod go-w {dir}` or choose another path"
    )]
    Writable { dir: String, owner: String, mode: u32 },
    #[error("cannot create {dir}: {error}")]
    Create { dir: String, error: String },
    #[error("cannot check {dir}: {error}")]
    Check { dir: String, error: String },
}

/// How a directory is shared, as far as the agent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Only the agent's: the state directory and its logs.
    Private,
    /// The socket's: also a sticky directory of the agent's own (like /tmp for root), where
    /// nobody but the owner of an entry can remove or replace it.
    Socket,
}

/// Makes sure `dir` is a directory the agent can trust: created 0700 (with its missing
/// parents) when absent. One that exists is never changed: one of its own that others may
/// read is used as it is (only write access lets anyone replace an entry), one that others
/// may write is refused (except a sticky one the socket may live in), and so are a
/// symlink, a file, and anyone else's directory.
pub fn private_dir(dir: &Path) -> Result<(), TrustError> {
    trusted_dir(dir, Use::Private)
}

pub fn trusted_dir(dir: &Path, use_: Use) -> Result<(), TrustError> {
    let shown = dir.display().to_string();
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| TrustError::Create { dir: shown.clone(), error: e.to_string() })?;
            fs::symlink_metadata(dir).map_err(|e| TrustError::Check { dir: shown.clone(), error: e.to_string() })?
        }
        Err(e) => return Err(TrustError::Check { dir: shown, error: e.to_string() }),
    };
    if meta.file_type().is_symlink() {
        return Err(TrustError::Symlink { dir: shown });
    }
    if !meta.is_dir() {
        return Err(TrustError::NotADirectory { dir: shown });
    }
    let own = nix::unistd::geteuid().as_raw();
    if meta.uid() != own {
        let owner = user_name(meta.uid()).unwrap_or_else(|| "another user".into());
        return Err(TrustError::Foreign { dir: shown, owner, uid: meta.uid(), mode: meta.mode() & 0o7777, own });
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if sticky && use_ == Use::Socket {
        return Ok(());
    }
    if sticky {
        return Err(TrustError::Shared { dir: shown, mode: meta.mode() & 0o7777 });
    }
    if meta.mode() & 0o022 != 0 {
        let owner = user_name(meta.uid()).unwrap_or_else(|| format!("uid {}", meta.uid()));
        return Err(TrustError::Writable { dir: shown, owner, mode: meta.mode() & 0o7777 });
    }
    Ok(())
}

/// The login name of `uid`, if the passwd database has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|user| user.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_missing_directory_is_created_private_and_an_existing_one_never_changed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700, "missing parents too");
        // (mode, accepted): only write access for others is refused.
        for (mode_before, accepted) in
            [(0o755, true), (0o750, true), (0o700, true), (0o775, false), (0o777, false), (0o757, false)]
        {
            fs::set_permissions(&dir, Permissions::from_mode(mode_before)).unwrap();
            let result = private_dir(&dir);
            assert_eq!(result.is_ok(), accepted, "{mode_before:o}: {result:?}");
            assert_eq!(mode(&dir), mode_before, "{mode_before:o} left as it is");
            if let Err(error) = result {
                let text = error.to_string();
                assert!(text.contains(&format!("`chmod go-w {}`", dir.display())), "{text}");
                assert!(text.contains(&format!("mode {mode_before:04o}")), "{text}");
            }
        }
    }

    #[test]
    fn a_shared_sticky_directory_takes_a_socket_but_never_the_state_and_is_never_changed() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, Permissions::from_mode(0o1777)).unwrap();
        trusted_dir(&shared, Use::Socket).unwrap();
        assert!(matches!(private_dir(&shared), Err(TrustError::Shared { .. })));
        assert_eq!(fs::metadata(&shared).unwrap().mode() & 0o7777, 0o1777, "left as it is");
    }

    #[test]
    fn symlinks_and_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(private_dir(&link), Err(TrustError::Symlink { .. })));
        let file = root.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(private_dir(&file), Err(TrustError::NotADirectory { .. })));
    }

    #[test]
    fn a_foreign_directory_is_named_with_its_owner_and_mode() {
        let error = TrustError::Foreign {
            dir: "/tmp/procctl-0".into(),
            owner: "nobody".into(),
            uid: 65534,
            mode: 0o777,
            own: 0,
        };
        assert_eq!(
            error.to_string(),
            "/tmp/procctl-0 belongs to nobody (uid 65534) with mode 0777, not to this agent's user (uid 0): \
             whoever owns it can replace the socket or read the logs; remove it or choose another path"
        );
    }
}
