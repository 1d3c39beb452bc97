//! Where the agent's socket lives; both binaries use this one rule.

use std::path::PathBuf;

pub const SOCKET_ENV: &str = "PROCCTL_SOCKET";

/// First match wins: the `--socket` option, `$PROCCTL_SOCKET`,
/// `$XDG_RUNTIME_DIR/procctl/agent.sock`, `/tmp/procctl-<uid>/agent.sock`.
pub fn socket_path(option: Option<PathBuf>) -> PathBuf {
    resolve(
        option,
        std::env::var_os(SOCKET_ENV).map(PathBuf::from),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        // SAFETY: getuid cannot fail and touches no memory.
        unsafe { libc_getuid() },
    )
}

unsafe extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

fn resolve(option: Option<PathBuf>, env: Option<PathBuf>, runtime: Option<PathBuf>, uid: u32) -> PathBuf {
    let nonempty = |p: &PathBuf| !p.as_os_str().is_empty();
    option
        .filter(nonempty)
        .or(env.filter(nonempty))
        .or_else(|| runtime.filter(nonempty).map(|dir| dir.join("procctl/agent.sock")))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/procctl-{uid}/agent.sock")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn first_match_wins() {
        assert_eq!(resolve(p("/a.sock"), p("/b.sock"), p("/run"), 5), PathBuf::from("/a.sock"));
        assert_eq!(resolve(None, p("/b.sock"), p("/run"), 5), PathBuf::from("/b.sock"));
        assert_eq!(resolve(None, None, p("/run/user/5"), 5), PathBuf::from("/run/user/5/procctl/agent.sock"));
        assert_eq!(resolve(None, None, None, 5), PathBuf::from("/tmp/procctl-5/agent.sock"));
    }

    #[test]
    fn empty_values_are_skipped() {
        assert_eq!(resolve(p(""), p(""), p(""), 0), PathBuf::from("/tmp/procctl-0/agent.sock"));
    }
}
