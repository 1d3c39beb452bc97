//! Only the owner gets in, and nobody else can stand in for the agent: directories someone
//! else made are refused, procctl checks who answers before it sends anything, and the
//! files that hold the instances' output are private. The attacks run for real as `nobody`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::{Agent, WAIT, as_nobody, lines, require_root, run, sleepers, wait_until};

/// A world-writable sticky directory in which `nobody` can make its own, like /tmp; removed on drop.
struct Playground(tempfile::TempDir);

impl Playground {
    fn new() -> Playground {
        let dir = tempfile::Builder::new().prefix("procctl-sec").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        Playground(dir)
    }

    /// A directory made by `nobody`, mode 0777.
    fn foreign_dir(&self, name: &str) -> PathBuf {
        let dir = self.0.path().join(name);
        run(as_nobody("mkdir").args(["-m", "0777"]).arg(&dir), None, WAIT).ok();
        assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 65534);
        dir
    }
}

fn refused_start(agent: &Agent, command: &mut Command) -> String {
    let out = run(command, None, WAIT);
    assert_eq!(out.code, Some(1), "the agent must refuse to start: {out:?}");
    assert!(!agent.socket.exists(), "nothing was bound");
    out.stderr
}

#[test]
#[ignore = "needs root"]
fn a_socket_directory_someone_else_made_is_refused_naming_its_owner_and_mode() {
    require_root();
    let agent = Agent::new(&sleepers(1));
    let playground = Playground::new();
    let evil = playground.foreign_dir("evil");
    let socket = evil.join("agent.sock");
    let stderr = refused_start(&agent, &mut agent.command_on(&socket, &agent.state));
    let want = format!("{} belongs to nobody (uid 65534) with mode 0777", evil.display());
    assert!(stderr.contains(&want), "{stderr}");
    assert!(stderr.contains("remove it or choose another path"), "{stderr}");
    assert!(!socket.exists());
    assert_eq!(std::fs::metadata(&evil).unwrap().mode() & 0o7777, 0o777, "a foreign directory is left as it is");
}

#[test]
#[ignore = "needs root"]
fn the_default_socket_directory_in_tmp_made_first_by_someone_else_is_refused() {
    require_root();
    let default = PathBuf::from("/tmp/procctl-0");
    // The same test of another checkout may hold it for a moment; an agent of root's would for good.
    wait_until(WAIT, &format!("{} is free (an agent of root's may use it)", default.display()), || !default.exists());
    // As the attack goes: nobody creates it first, open to all.
    run(as_nobody("mkdir").args(["-m", "0777"]).arg(&default), None, WAIT).ok();
    let agent = Agent::new(&sleepers(1));
    let mut command = Command::new(crate::support::bin("procagent"));
    command
        .arg("--config")
        .arg(&agent.config)
        .arg("--state-dir")
        .arg(&agent.state)
        .env_remove("PROCCTL_SOCKET")
        .env_remove("XDG_RUNTIME_DIR");
    let out = run(&mut command, None, WAIT);
    let _ = std::fs::remove_dir_all(&default);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("/tmp/procctl-0 belongs to nobody (uid 65534) with mode 0777"), "{out:?}");
}

#[test]
fn a_state_directory_that_is_a_symlink_is_refused() {
    let agent = Agent::new(&sleepers(1));
    let real = agent.path("real-state");
    std::fs::create_dir(&real).unwrap();
    let link = agent.path("linked-state");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let stderr = refused_start(&agent, &mut agent.command_on(&agent.socket, &link));
    assert!(stderr.contains(&format!("{} is a symbolic link", link.display())), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn a_state_directory_of_someone_elses_is_refused() {
    require_root();
    let agent = Agent::new(&sleepers(1));
    let playground = Playground::new();
    let foreign = playground.foreign_dir("state");
    let stderr = refused_start(&agent, &mut agent.command_on(&agent.socket, &foreign));
    assert!(stderr.contains("belongs to nobody (uid 65534)"), "{stderr}");
}

#[test]
fn an_own_directory_others_may_read_is_used_as_it_is_and_the_files_are_private() {
    let mut agent = Agent::new(
        "[process.worker]\ncommand = \"echo secret; exec sleep 100000\"\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n",
    );
    let dirs = [agent.socket.parent().unwrap().to_path_buf(), agent.state.clone(), agent.state.join("logs")];
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    agent.launch();
    agent.wait_running("worker", 1);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    for dir in &dirs {
        assert_eq!(mode(dir), 0o755, "{} is not the agent's to change", dir.display());
    }
    assert_eq!(mode(&agent.socket), 0o600);
    let log = agent.state.join("logs/worker.0.log");
    wait_until(WAIT, "the table and the log exist", || agent.state.join("table.json").exists() && log.exists());
    assert_eq!(mode(&agent.state.join("table.json")), 0o600);
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(&agent.state.join("agent.lock")), 0o600);
}

#[test]
fn an_own_directory_others_may_write_is_refused_naming_the_chmod_and_left_as_it_is() {
    let agent = Agent::new(&sleepers(1));
    for (dir, mode) in [(agent.socket.parent().unwrap().to_path_buf(), 0o775), (agent.state.clone(), 0o777)] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let stderr = refused_start(&agent, &mut agent.command());
        assert!(stderr.contains(&format!("{} (owner ", dir.display())), "{stderr}");
        assert!(stderr.contains(&format!("mode {mode:04o}) can be written by others")), "{stderr}");
        assert!(stderr.contains(&format!("run `chmod go-w {}`", dir.display())), "{stderr}");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, mode, "left as it is");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// A listener of `nobody`'s on `socket` that answers nothing and writes, per connection,
/// how many bytes it received into `seen`.
fn impostor(socket: &Path, seen: &Path) -> Child {
    let script = format!(
        "import socket, os\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind({socket:?})\n\
         s.listen(8)\n\
         open({seen:?}, 'a').write('listening\\n')\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   n = 0\n\
         \x20   while True:\n\
         \x20       b = c.recv(65536)\n\
         \x20       if not b: break\n\
         \x20       n += len(b)\n\
         \x20   open({seen:?}, 'a').write(f'got {{n}} bytes\\n')\n\
         \x20   c.close()\n",
        socket = socket.display().to_string(),
        seen = seen.display().to_string(),
    );
    // The system's python: one under root's home is out of nobody's reach.
    as_nobody("/usr/bin/python3").args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
#[ignore = "needs root"]
fn procctl_refuses_a_socket_someone_else_serves_before_sending_a_byte() {
    require_root();
    let playground = Playground::new();
    let dir = playground.foreign_dir("impostor");
    let socket = dir.join("agent.sock");
    let seen = dir.join("seen");
    std::fs::write(&seen, "").unwrap();
    std::fs::set_permissions(&seen, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut listener = impostor(&socket, &seen);
    wait_until(WAIT, "the impostor listens", || lines(&seen).first().is_some_and(|l| l == "listening"));
    for args in [&["send", "w", "password=hunter2"][..], &["list"]] {
        let mut command = Command::new(crate::support::bin("procctl"));
        command.arg("--socket").arg(&socket).args(args);
        let out = run(&mut command, None, WAIT);
        assert_eq!(out.code, Some(3), "{args:?}: {out:?}");
        assert!(out.stderr.contains(&socket.display().to_string()), "{out:?}");
        assert!(out.stderr.contains("served by nobody (uid 65534)"), "{out:?}");
    }
    wait_until(WAIT, "the impostor saw both connections end", || lines(&seen).len() == 3);
    let _ = listener.kill();
    let _ = listener.wait();
    assert_eq!(lines(&seen), ["listening", "got 0 bytes", "got 0 bytes"], "not even the hello reached it");
}

#[test]
fn a_socket_in_a_shared_sticky_directory_like_tmp_leaves_its_mode_alone() {
    // Declared first, so it outlives the agent whose socket it holds.
    let playground = Playground::new(); // root's own, 1777, like /tmp
    let mut agent = Agent::new(&sleepers(1));
    let socket = playground.0.path().join("agent.sock");
    agent.socket = socket.clone();
    agent.launch();
    agent.wait_running("worker", 1);
    assert_eq!(
        std::fs::metadata(playground.0.path()).unwrap().mode() & 0o7777,
        0o1777,
        "a shared directory is never tightened"
    );
    assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);
    // But the table and the logs never go in one.
    let other = playground.0.path().join("b.sock");
    let out = run(&mut agent.command_on(&other, playground.0.path()), None, WAIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("is shared (mode 1777)"), "{out:?}");
    assert!(!other.exists());
}
