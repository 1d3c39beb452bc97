//! `listen`: sockets the agent binds once and hands to every instance (sd_listen_fds), kept
//! across restarts and reloads, so a rolling restart of a real server fleet refuses nothing.
//! Ports 24100-24199.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{Agent, WAIT, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn server_script() -> String {
    repo().join("examples/workers/listen_http.py").display().to_string()
}

/// What fd N of `pid` is (`socket:[INODE]` for a socket).
fn fd_link(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default()
}

fn environ(pid: i32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn var(pid: i32, key: &str) -> Option<String> {
    environ(pid).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// One HTTP/1.0 GET; true for a 2xx answer.
fn get(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(5)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    if stream.read_to_end(&mut answer).is_err() {
        return false;
    }
    answer.starts_with(b"HTTP/1.0 2") || answer.starts_with(b"HTTP/1.1 2")
}

/// A steady load of a few clients, each sending one request after another, until stopped or
/// `MAX_REQUESTS` in all: counts the answers and every failed connection or non-2xx.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const MAX_REQUESTS: u64 = 200_000;
const CLIENTS: usize = 4;

impl Load {
    pub(crate) fn start(address: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed)
                        && served.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < MAX_REQUESTS
                    {
                        let counter = if get(address) { &served } else { &failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load { stop, served, failed, threads }
    }

    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops the clients: (served, failed).
    pub(crate) fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        (self.served.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// The Python server fleet; `extra` ends the TOML table, and `option` (python3's first argument) varies the command.
fn python_fleet(port: u16, instances: u32, extra: &str) -> String {
    python_fleet_run(port, instances, "-u", extra)
}

fn python_fleet_run(port: u16, instances: u32, option: &str, extra: &str) -> String {
    format!(
        "[process.web]\ncommand = [\"python3\", \"{option}\", \"{}\"]\ninstances = {instances}\nlisten = [\"tcp://127.0.0.1:{port}\"]\nready = {{ log = \"serving\" }}\nstart_secs = \"0s\"\n{extra}",
        server_script()
    )
}

pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn each_instance_gets_the_same_sockets_from_fd_3_with_its_own_pid_and_the_pipe_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("web.sock");
    // The pipe after the sockets: a shell worker answers on $PROCCTL_PIPE_FD.
    let script = r#"while read -r m <&"$PROCCTL_PIPE_FD"; do echo "got $m" >&"$PROCCTL_PIPE_FD"; done"#;
    let mut agent = Agent::start(&format!(
        "[process.web]\ncommand = [\"sh\", \"-c\", '{script}']\ninstances = 2\nlisten = [\"tcp://127.0.0.1:24101\", \"tcp://[::1]:24101\", \"unix://{}\"]\n",
        unix.display()
    ));
    let pids = agent.wait_running("web", 2);
    let sockets: Vec<Vec<String>> = pids.iter().map(|&pid| (3..6).map(|fd| fd_link(pid, fd)).collect()).collect();
    for (pid, links) in pids.iter().zip(&sockets) {
        assert!(links.iter().all(|l| l.starts_with("socket:")), "{pid}: fds 3-5 are sockets: {links:?}");
        assert!(fd_link(*pid, 6).starts_with("socket:"), "the pipe is fd 6");
        assert_eq!(var(*pid, "LISTEN_PID"), Some(pid.to_string()), "LISTEN_PID is the instance's own pid");
        assert_eq!(var(*pid, "LISTEN_FDS").as_deref(), Some("3"));
        assert_eq!(var(*pid, "LISTEN_FDNAMES").as_deref(), Some("web:web:web"));
        assert_eq!(var(*pid, "PROCCTL_PIPE_FD").as_deref(), Some("6"));
    }
    assert_eq!(sockets[0], sockets[1], "every instance has the same sockets");
    let reply = agent.ctl(&["send", "--reply", "web:1", "ping"]);
    assert_eq!(reply.ok().stdout.trim(), "got ping", "the pipe works after the sockets");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&unix).unwrap().permissions().mode() & 0o777, 0o600);

    // A restart keeps the sockets: the replacement has the very same ones.
    agent.ctl(&["restart", "web:0"]).ok();
    let new = agent.wait_running("web", 2);
    assert_ne!(new[0], pids[0]);
    let kept: Vec<String> = (3..6).map(|fd| fd_link(new[0], fd)).collect();
    assert_eq!(kept, sockets[0], "the replacement gets the sockets its predecessor had");
    assert_eq!(var(new[0], "LISTEN_PID"), Some(new[0].to_string()));
    agent.shutdown();
    assert!(!unix.exists(), "the agent removes its Unix socket at exit");
}

#[test]
fn the_python_server_answers_on_tcp_and_unix_sockets_it_never_bound() {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("web.sock");
    let mut agent = Agent::start(&format!(
        "[process.web]\ncommand = [\"python3\", \"-u\", \"{}\"]\nlisten = [\"unix://{}\", \"tcp://127.0.0.1:24102\"]\nready = {{ log = \"serving\" }}\n",
        server_script(),
        unix.display()
    ));
    agent.wait_running("web", 1);
    let mut stream = std::os::unix::net::UnixStream::connect(&unix).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    // The first socket is fd 3; the TCP one is fd 4, which this server does not serve.
    let tcp = TcpStream::connect(local(24102));
    assert!(tcp.is_ok(), "the agent holds the TCP socket: connections queue on it");
}

#[test]
fn a_rolling_restart_and_a_reload_of_the_command_fail_no_request() {
    let port = 24110;
    let mut agent = Agent::start(&python_fleet(port, 3, ""));
    let first = agent.wait_running("web", 3);
    let load = Load::start(local(port));
    wait_until(WAIT, "the load is served", || load.served() > 50);
    agent.ctl(&["restart", "web"]).ok();
    let restarted = agent.wait_running("web", 3);
    assert!(restarted.iter().all(|pid| !first.contains(pid)), "every server was replaced: {first:?} {restarted:?}");
    let before_reload = load.served();
    // The command changes (unbuffered output becomes optimized bytecode: both serve alike).
    agent.write_config(&python_fleet_run(port, 3, "-O", ""));
    let reload = agent.ctl(&["reload"]);
    assert!(reload.ok().stdout.contains("web"), "{}", reload.stdout);
    wait_until(WAIT, "the load is served after the reload", || load.served() > before_reload + 50);
    wait_until(WAIT, "the reload replaced every server too", || {
        let rows = agent.list("web");
        rows.len() == 3
            && rows
                .iter()
                .all(|r| r["state"] == "running" && r["pid"].as_i64().is_some_and(|p| !restarted.contains(&(p as i32))))
    });
    let (served, failed) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} requests failed during a rolling restart and a reload", served + failed);
    assert!(served > 100);
}

/// gunicorn reads LISTEN_FDS itself and checks LISTEN_PID against its own pid.
#[test]
fn gunicorn_behind_listen_restarts_rolling_without_a_failed_request() {
    let port = 24120;
    let agent_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        agent_dir.path().join("app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok\\n']\n",
    )
    .unwrap();
    let mut agent = Agent::start(&format!(
        "[process.web]\ncommand = [\"python3\", \"-m\", \"gunicorn\", \"--chdir\", \"{}\", \"-w\", \"1\", \"--graceful-timeout\", \"5\", \"app:app\"]\ninstances = 3\nlisten = [\"tcp://127.0.0.1:{port}\"]\nready = {{ log = \"Booting worker\" }}\n",
        agent_dir.path().display()
    ));
    let first = agent.wait_running("web", 3);
    let load = Load::start(local(port));
    wait_until(WAIT, "gunicorn serves", || load.served() > 50);
    agent.ctl(&["restart", "web"]).ok();
    let restarted = agent.wait_running("web", 3);
    assert!(restarted.iter().all(|pid| !first.contains(pid)), "every gunicorn was replaced: {first:?} {restarted:?}");
    let before = load.served();
    wait_until(WAIT, "gunicorn serves after the restart", || load.served() > before + 50);
    let (served, failed) = load.finish();
    // gunicorn binds 127.0.0.1:8000 itself unless it takes the sockets: then nothing would
    // accept on the port and every request would fail.
    assert_eq!(failed, 0, "{failed} of {} requests failed", served + failed);
}

#[test]
fn an_address_in_use_is_refused_at_load_and_at_reload_naming_process_and_address() {
    let taken = TcpListener::bind("127.0.0.1:24130").unwrap();
    let mut agent =
        Agent::new("[process.web]\ncommand = [\"sleep\", \"1000\"]\nlisten = [\"tcp://127.0.0.1:24130\"]\n");
    let out = crate::support::run(&mut agent.command(), None, WAIT);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("process web: cannot listen on tcp://127.0.0.1:24130"), "{}", out.stderr);

    agent.write_config("[process.web]\ncommand = [\"sleep\", \"1000\"]\nlisten = [\"tcp://127.0.0.1:24131\"]\n");
    agent.launch();
    let pid = agent.wait_running("web", 1)[0];
    agent.write_config(
        "[process.web]\ncommand = [\"sleep\", \"1000\"]\nlisten = [\"tcp://127.0.0.1:24131\", \"tcp://127.0.0.1:24130\"]\n",
    );
    let reload = agent.ctl(&["reload"]);
    assert_eq!(reload.code, Some(1));
    assert!(reload.stderr.contains("process web: cannot listen on tcp://127.0.0.1:24130"), "{}", reload.stderr);
    assert_eq!(agent.wait_running("web", 1), vec![pid], "nothing running changed");
    assert!(TcpStream::connect(local(24131)).is_ok(), "the old socket is still open");
    drop(taken);
}

#[test]
fn a_reload_that_changes_listen_rebinds_and_restarts_the_process() {
    let mut agent = Agent::start(&python_fleet(24140, 2, ""));
    let old = agent.wait_running("web", 2);
    assert!(get(local(24140)));
    agent.write_config(&python_fleet(24141, 2, ""));
    agent.ctl(&["reload"]).ok();
    let new = agent.wait_running("web", 2);
    assert!(new.iter().all(|pid| !old.contains(pid)), "every instance restarted: {old:?} -> {new:?}");
    assert!(get(local(24141)), "the new address answers");
    wait_until(WAIT, "the old address is closed", || TcpStream::connect(local(24140)).is_err());
}

#[test]
fn a_removed_process_closes_its_socket_once_its_instances_are_gone() {
    let mut agent = Agent::start(&python_fleet(24160, 1, ""));
    agent.wait_running("web", 1);
    agent.write_config("[process.other]\ncommand = [\"sleep\", \"1000\"]\n");
    agent.ctl(&["reload"]).ok();
    agent.wait_running("other", 1);
    wait_until(WAIT, "the removed process's address is closed", || TcpStream::connect(local(24160)).is_err());
}

#[test]
fn bad_listen_addresses_are_config_errors_with_file_line_and_key() {
    for (listen, problem) in [
        ("[\"tcp://localhost:80\"]", "expected tcp://IP:PORT"),
        ("[\"tcp://127.0.0.1:24150\", \"tcp://127.0.0.1:24150\"]", "listened on already"),
        ("42", "expected a list of strings"),
    ] {
        let mut agent = Agent::new(&format!("[process.web]\ncommand = [\"sleep\", \"1\"]\nlisten = {listen}\n"));
        let out = crate::support::run(&mut agent.command(), None, WAIT);
        assert_ne!(out.code, Some(0));
        assert!(out.stderr.contains("procctl.toml:3") && out.stderr.contains("listen"), "{}", out.stderr);
        assert!(out.stderr.contains(problem), "{listen}: {}", out.stderr);
        let _ = &mut agent;
    }
}
