//! Everything a child needs, made before the clone: the program found as execvp would, argv
//! and the environment as C strings, the output and message pipes, the run's cgroup, the
//! credentials and limits.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SpawnRequest;
use crate::cgroup;
use crate::config::Pipe;

/// Everything the child needs, allocated before the clone.
pub(super) struct Prepared {
    pub(super) program: CString,
    /// Owns the strings `argv_ptrs` points into.
    pub(super) _argv: Vec<CString>,
    pub(super) argv_ptrs: Vec<*const libc::c_char>,
    /// Own the strings `envp_ptrs` points into.
    pub(super) _envp: Vec<CString>,
    pub(super) _shared_env: Option<Arc<[CString]>>,
    pub(super) envp_ptrs: Vec<*const libc::c_char>,
    pub(super) cwd: CString,
    /// Where stdin comes from: the message pipe (`pipe = "stdin"`), else /dev/null.
    pub(super) stdin: Option<OwnedFd>,
    /// Where stdout and stderr go: the output capture, else /dev/null.
    pub(super) output_write: Option<OwnedFd>,
    pub(super) output_read: Option<OwnedFd>,
    pub(super) pipe_child: Option<OwnedFd>,
    pub(super) pipe_parent: Option<OwnedFd>,
    /// The run's cgroup directory, which the child is made in or moves itself into.
    pub(super) cgroup: Option<OwnedFd>,
    /// (uid, gid, supplementary groups) to switch to.
    pub(super) credentials: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    pub(super) umask: Option<libc::mode_t>,
    pub(super) limits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    /// The listening sockets, in order, each to be moved to fd 3 + its index: copies above
    /// every target number (as is `pipe_child` then), so no move overwrites another's source.
    pub(super) listen: Vec<OwnedFd>,
    /// Owns `LISTEN_PID=` and room for the digits, which `envp_ptrs` points to.
    pub(super) _listen_pid: Option<Box<[u8]>>,
    /// Where the child writes its pid's digits and a NUL, in `_listen_pid`.
    pub(super) listen_pid_digits: Option<*mut u8>,
}

/// `LISTEN_PID=`, then room for any pid's digits and the NUL.
const LISTEN_PID: &[u8] = b"LISTEN_PID=";
const PID_ROOM: usize = 21;

/// Programs found in PATH, for a second: a start loop of a thousand instances looks each
/// up once, and a program installed meanwhile is found a second later.
#[derive(Default)]
pub(super) struct Programs {
    found: HashMap<(String, Option<String>, PathBuf), (PathBuf, Instant)>,
}

impl Programs {
    const FRESH: Duration = Duration::from_secs(1);

    pub(super) fn find(&mut self, program: &str, path_var: Option<&str>, cwd: &Path) -> Result<PathBuf, String> {
        if program.contains('/') {
            return find_program(program, path_var, cwd);
        }
        let key = (program.to_string(), path_var.map(str::to_string), cwd.to_path_buf());
        if let Some((path, _)) = self.found.get(&key).filter(|(_, at)| at.elapsed() < Self::FRESH) {
            return Ok(path.clone());
        }
        let path = find_program(program, path_var, cwd)?;
        self.found.retain(|_, (_, at)| at.elapsed() < Self::FRESH);
        self.found.insert(key, (path.clone(), Instant::now()));
        Ok(path)
    }
}

/// `spare`: the run's cgroup was made ahead, with its limits.
pub(super) fn prepare(
    request: SpawnRequest,
    spare: bool,
    programs: &mut Programs,
    listening: &HashMap<u64, OwnedFd>,
) -> Result<Prepared, String> {
    let shared: &[CString] = request.shared_env.as_deref().unwrap_or_default();
    let path_var = request
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .or_else(|| shared.iter().find_map(|c| c.to_str().ok()?.strip_prefix("PATH=")));
    let program = programs.find(&request.argv[0], path_var, &request.cwd)?;
    let cstring = |s: &[u8]| CString::new(s).map_err(|_| "an argument contains a NUL byte".to_string());
    let argv = request.argv.iter().map(|a| cstring(a.as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let envp =
        request.env.iter().map(|(k, v)| cstring(format!("{k}={v}").as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let cwd = cstring(request.cwd.as_os_str().as_bytes())?;
    if !request.cwd.is_dir() {
        return Err(format!("working directory {} does not exist", request.cwd.display()));
    }
    let null_ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect();
    let argv_ptrs = null_ptrs(&argv);
    // The shared strings a variable of the start's own replaces are left out; so is a
    // LISTEN_PID, which the child writes itself.
    let kept = shared.iter().filter(|c| {
        let key = key_of(c);
        !request.env.iter().any(|(own, _)| own.as_bytes() == key) && (request.listen.is_empty() || key != b"LISTEN_PID")
    });
    let mut envp_ptrs: Vec<*const libc::c_char> =
        kept.chain(&envp).map(|c| c.as_ptr()).chain([std::ptr::null()]).collect();
    // Every listening socket and the pipe are copied above the numbers they move to (3 on).
    let above = super::pipe_fd(request.listen.len()) + 1;
    let copy_above = |fd: &OwnedFd| {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(above))
            // SAFETY: F_DUPFD_CLOEXEC made this descriptor for us alone.
            .map(|raw| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
            .map_err(|e| format!("cannot pass on its listening sockets: {e}"))
    };
    let mut listen = Vec::with_capacity(request.listen.len());
    for key in &request.listen {
        let fd = listening.get(key).ok_or("one of its listening sockets is not open")?;
        listen.push(copy_above(fd)?);
    }
    let (listen_pid, listen_pid_digits) = if listen.is_empty() {
        (None, None)
    } else {
        let mut buffer = vec![0u8; LISTEN_PID.len() + PID_ROOM].into_boxed_slice();
        buffer[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        let start = buffer.as_mut_ptr();
        envp_ptrs.insert(envp_ptrs.len() - 1, start.cast_const().cast());
        // The heap buffer does not move with the Box; the digits start after `LISTEN_PID=`.
        (Some(buffer), Some(start.wrapping_add(LISTEN_PID.len())))
    };
    let (output_read, output_write) = if request.capture {
        let (read, write) = cloexec_pipe().map_err(|e| format!("cannot make the output pipe: {e}"))?;
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    let (pipe_parent, pipe_child) = match request.pipe {
        Pipe::None => (None, None),
        Pipe::Fd | Pipe::Stdin => {
            let (parent, child) = UnixStream::pair().map_err(|e| format!("cannot make the message pipe: {e}"))?;
            (Some(OwnedFd::from(parent)), Some(OwnedFd::from(child)))
        }
    };
    let stdin = match (request.pipe, &pipe_child) {
        (Pipe::Stdin, Some(child)) => Some(child.try_clone().map_err(|e| e.to_string())?),
        _ => None,
    };
    let pipe_child = if request.pipe == Pipe::Fd { pipe_child } else { None };
    let pipe_child = match pipe_child {
        Some(fd) if !listen.is_empty() => Some(copy_above(&fd)?),
        other => other,
    };
    let cgroup = match &request.cgroup {
        Some((path, limits)) => Some(
            if spare { cgroup::open(path) } else { cgroup::create(path, *limits) }
                .map_err(|e| format!("cannot create its cgroup {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let credentials = request.account.as_ref().map(|a| (a.uid, a.gid, a.groups.clone()));
    let limits =
        request.limits.iter().map(|l| (l.resource, libc::rlimit { rlim_cur: l.value, rlim_max: l.value })).collect();
    Ok(Prepared {
        program: cstring(program.as_os_str().as_bytes())?,
        _argv: argv,
        argv_ptrs,
        _envp: envp,
        _shared_env: request.shared_env,
        envp_ptrs,
        cwd,
        stdin,
        output_write,
        output_read,
        pipe_child,
        pipe_parent,
        cgroup,
        credentials,
        umask: request.umask.map(|mask| mask as libc::mode_t),
        limits,
        listen,
        _listen_pid: listen_pid,
        listen_pid_digits,
    })
}

/// The name of a `KEY=VALUE` string.
fn key_of(var: &CString) -> &[u8] {
    let bytes = var.as_bytes();
    bytes.split(|&b| b == b'=').next().unwrap_or(bytes)
}

/// Resolves the program as execvp would, but before fork: a name with a `/` is a path
/// (relative to the child's working directory), anything else is looked up in PATH.
fn find_program(program: &str, path_var: Option<&str>, cwd: &Path) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = cwd.join(program);
        return if path.is_file() { Ok(path) } else { Err(format!("program {} not found", path.display())) };
    }
    let dirs = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    std::env::split_paths(OsStr::new(dirs))
        .map(|dir| cwd.join(dir).join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| format!("program `{program}` not found in PATH"))
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// A pipe, both ends close-on-exec: (read, write).
fn cloexec_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_in_path_or_by_path() {
        let here = Path::new("/");
        assert_eq!(find_program("sh", Some("/nonexistent:/bin"), here), Ok(PathBuf::from("/bin/sh")));
        assert!(find_program("no-such-program-here", Some("/bin"), here).unwrap_err().contains("not found in PATH"));
        assert_eq!(find_program("/bin/sh", None, here), Ok(PathBuf::from("/bin/sh")));
        assert!(find_program("./nope.sh", None, here).is_err());
    }
}
