//! `--host ssh://` and `dial-stdio`, for real: OpenSSH's sshd on a loopback port with a
//! host key and a user key made in a temp dir, and a second agent reached through it.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{Agent, CTL_TIMEOUT, Output, WAIT, bin, run, sleepers, wait_until};

const SSHD: &str = "/usr/sbin/sshd";

/// sshd listening on 127.0.0.1:`port` for the current user, and an ssh config that reaches
/// it with the user key; killed on drop.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Sshd {
    fn start(port: u16) -> Sshd {
        assert!(Path::new(SSHD).exists(), "{SSHD} is missing: install openssh-server (.ci/run does)");
        let dir = tempfile::Builder::new().prefix("procctl-sshd").tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        for key in ["host_key", "id"] {
            let out =
                run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f", &path(key)]), None, WAIT);
            assert_eq!(out.code, Some(0), "ssh-keygen: {out:?}");
        }
        std::fs::copy(path("id.pub"), path("authorized_keys")).unwrap();
        // sshd refuses to start without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let procctl_dir = bin("procctl").parent().unwrap().display().to_string();
        let user = run(Command::new("id").arg("-un"), None, WAIT).stdout.trim().to_string();
        std::fs::write(
            path("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\nSetEnv PATH={procctl_dir}:/usr/bin:/bin\n\
                 LogLevel ERROR\n",
                path("host_key"),
                path("authorized_keys"),
            ),
        )
        .unwrap();
        let host_key = std::fs::read_to_string(path("host_key.pub")).unwrap();
        std::fs::write(path("known_hosts"), format!("[127.0.0.1]:{port} {host_key}")).unwrap();
        std::fs::write(
            path("ssh_config"),
            format!(
                "Host *\n  User {user}\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n\
                 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
                path("id"),
                path("known_hosts"),
            ),
        )
        .unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f", &path("sshd_config")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd { dir, port, child };
        wait_until(WAIT, "sshd accepts connections", || {
            assert!(sshd.child.try_wait().unwrap().is_none(), "sshd ended: {}", sshd.log());
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `ssh://127.0.0.1:PORT/SOCKET` for an agent's socket.
    fn url(&self, agent: &Agent) -> String {
        format!("ssh://127.0.0.1:{}{}", self.port, agent.socket.display())
    }

    /// procctl with this ssh config and no local socket of its own.
    fn ctl(&self, args: &[&str]) -> Output {
        run(&mut self.command(args), None, CTL_TIMEOUT)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("procctl"));
        let config = self.dir.path().join("ssh_config");
        command
            .args(args)
            .env("PROCCTL_SSH", format!("ssh -F {}", config.display()))
            .env("PROCCTL_SOCKET", self.dir.path().join("no-local-agent.sock"))
            .env_remove("PROCCTL_HOST")
            .env("NO_COLOR", "1");
        command
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(out: &Output) -> Vec<Value> {
    serde_json::from_str(&out.ok().stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn every_kind_of_command_reaches_an_agent_through_ssh() {
    let sshd = Sshd::start(24601);
    let mut agent = Agent::start(&sleepers(2));
    let pids = agent.wait_running("worker", 2);
    let url = sshd.url(&agent);
    let rows = json(&sshd.ctl(&["--host", &url, "list", "--json"]));
    assert_eq!(rows.len(), 2, "{}", sshd.log());
    assert_eq!(rows[0]["pid"], pids[0]);
    assert!(rows[0].get("host").is_none(), "one host has no host key");
    let out = sshd.ctl(&["--host", &url, "restart", "worker:0"]);
    assert!(out.ok().stdout.starts_with(&format!("worker:0 restarted: pid {} -> ", pids[0])), "{out:?}");
    assert_ne!(agent.pid_of("worker", 0), Some(pids[0]));
    // PROCCTL_HOST does what --host does; a stream and stdin go through as well.
    let mut command = sshd.command(&["send", "worker:1", "-"]);
    command.env("PROCCTL_HOST", &url);
    let out = run(&mut command, Some("one\ntwo\n"), CTL_TIMEOUT);
    assert_eq!(out.ok().stdout, "worker:1 accepted 2 message(s)\n");
    let out = sshd.ctl(&["--host", &url, "pid", "worker:1"]);
    assert_eq!(out.ok().stdout, format!("{}\n", pids[1]));
}

#[test]
fn several_hosts_answer_in_one_table_with_a_host_column_and_the_worst_status() {
    let sshd = Sshd::start(24602);
    let mut a = Agent::start(&sleepers(1));
    let mut b = Agent::start(&sleepers(2));
    a.wait_running("worker", 1);
    b.wait_running("worker", 2);
    let (url_a, url_b) = (sshd.url(&a), sshd.url(&b));
    let hosts = format!("{url_a},{url_b}");
    let rows = json(&sshd.ctl(&["--host", &hosts, "list", "--json"]));
    let labels: Vec<&str> = rows.iter().map(|row| row["host"].as_str().unwrap()).collect();
    let (label_a, label_b) = (url_a.trim_start_matches("ssh://"), url_b.trim_start_matches("ssh://"));
    assert_eq!(labels, [label_a, label_b, label_b]);
    let table = sshd.ctl(&["--host", &url_a, "--host", &url_b, "list"]);
    assert!(table.ok().stdout.starts_with("HOST "), "{table:?}");
    let out = sshd.ctl(&["--host", &hosts, "stop", "worker:0"]);
    let mut lines: Vec<&str> = out.ok().stdout.lines().collect();
    lines.sort();
    let mut expected = [format!("{label_a} worker:0 stopped"), format!("{label_b} worker:0 stopped")];
    expected.sort();
    assert_eq!(lines, expected);
    // A host whose agent is not there: the others still answer; the status is its 3.
    let gone = format!("ssh://127.0.0.1:{}/nonexistent/agent.sock", sshd.port);
    let out = sshd.ctl(&["--host", &format!("{url_a},{gone}"), "list", "--json"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out.stdout).unwrap().len(), 1);
    assert!(out.stderr.contains("/nonexistent/agent.sock"), "the far side says which socket: {out:?}");
}

#[test]
fn an_ssh_failure_is_exit_3_with_ssh_s_own_message() {
    let sshd = Sshd::start(24603);
    // Nothing listens on the port after it.
    let out = sshd.ctl(&["--host", "ssh://127.0.0.1:24604", "list"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("127.0.0.1") && out.stderr.to_lowercase().contains("refused"), "{out:?}");
    let out = sshd.ctl(&["--host", "box.example", "list"]);
    assert_eq!(out.code, Some(2), "not a ssh:// URL is a usage error: {out:?}");
}

#[test]
fn dial_stdio_is_exit_3_when_the_agent_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut command = Command::new(bin("procctl"));
    command.args(["dial-stdio", "--socket"]).arg(&socket);
    let out = run(&mut command, Some(""), CTL_TIMEOUT);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains(&socket.display().to_string()), "{out:?}");
}
