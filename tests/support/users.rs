//! Acting as another user: the tests that need it run only as root (CI runs as root) and
//! use `nobody` through setpriv.

use std::ffi::OsString;
use std::process::Command;

pub const NOBODY: u32 = 65534;

/// Whether this runs as root; says that the test is skipped when not.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: acting as another user needs root (CI runs as root)");
    }
    root
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
