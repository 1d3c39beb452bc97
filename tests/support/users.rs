//! Acting as another user: the tests that need it are `#[ignore = "needs root"]` (CI runs
//! them as root) and use `nobody` through setpriv.

use std::ffi::OsString;
use std::process::Command;

pub const NOBODY: u32 = 65534;

/// The first line of a test marked `#[ignore = "needs root"]`: run as another user, it fails
/// saying why instead of with whatever the first refused step says.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (CI runs the ignored tests as root: `cargo test -- --ignored`)");
}

/// Whether the tests run as root: a test that runs either way, and does more as root (a
/// `user =` only root may set), asks this.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The setpriv argv that runs `program` as `nobody`.
pub fn nobody_argv(program: impl Into<OsString>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = ["setpriv".to_string(), format!("--reuid={NOBODY}"), format!("--regid={NOBODY}")]
        .into_iter()
        .map(OsString::from)
        .collect();
    argv.push("--clear-groups".into());
    argv.push(program.into());
    argv
}

/// A command that runs `program` as `nobody`.
pub fn as_nobody(program: impl Into<OsString>) -> Command {
    let argv = nobody_argv(program);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}
