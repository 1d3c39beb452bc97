//! The metrics endpoint and `procctl metrics`: values after real events, the same text
//! both ways, only /metrics served, nothing open unless asked, a Unix address, limits on
//! scrapers, and a real Prometheus server scraping the agent.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{Agent, WAIT, kill, sh, sleepers, wait_until};

/// The ports these tests listen on (one each, so they can run side by side).
const EVENTS_PORT: u16 = 29101;
const SAME_TEXT_PORT: u16 = 29102;
const PATHS_PORT: u16 = 29103;
const CRASH_PORT: u16 = 29104;
const MEMORY_PORT: u16 = 29105;
const SCRAPERS_PORT: u16 = 29106;
const PROMETHEUS_TARGET_PORT: u16 = 29107;

/// One HTTP/1.1 request over `stream`; the status and the body.
fn exchange(stream: impl Read + Write, method: &str, path: &str) -> (u16, String) {
    try_exchange(stream, method, path).unwrap()
}

fn try_exchange(mut stream: impl Read + Write, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

fn get(port: u16, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("the metrics port takes connections");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    exchange(stream, "GET", path)
}

/// `GET /metrics`, which must answer 200.
fn scrape(port: u16) -> String {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The samples of a text: series (name and labels, as written) to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).get(series).copied()
}

/// `{name="NAME",index="INDEX"}` after `metric`.
fn of(metric: &str, name: &str, index: u32) -> String {
    format!("{metric}{{name=\"{name}\",index=\"{index}\"}}")
}

fn metrics_flag(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn metrics_follow_kill_9_and_scale() {
    let mut agent = Agent::new(&sleepers(2));
    agent.launch_with(&["--metrics", &metrics_flag(EVENTS_PORT)]);
    let pids = agent.wait_running("worker", 2);
    let text = scrape(EVENTS_PORT);
    for index in 0..2 {
        assert_eq!(value(&text, &of("procctl_instance_up", "worker", index)), Some(1.0), "{text}");
        assert_eq!(value(&text, &of("procctl_instance_restarts_total", "worker", index)), Some(0.0));
    }
    assert_eq!(value(&text, r#"procctl_process_instances{name="worker"}"#), Some(2.0));
    let started = value(&text, &of("procctl_instance_start_time_seconds", "worker", 0)).expect("a start time");

    kill(pids[0], libc::SIGKILL);
    wait_until(WAIT, "worker:0 is counted restarted and up again", || {
        let text = scrape(EVENTS_PORT);
        value(&text, &of("procctl_instance_restarts_total", "worker", 0)) == Some(1.0)
            && value(&text, &of("procctl_instance_up", "worker", 0)) == Some(1.0)
    });
    let text = scrape(EVENTS_PORT);
    assert_eq!(value(&text, &of("procctl_instance_restarts_total", "worker", 1)), Some(0.0), "only the killed one");
    assert!(value(&text, &of("procctl_instance_start_time_seconds", "worker", 0)).unwrap() > started);
    assert_eq!(
        value(&text, &of("procctl_instance_last_exit_code", "worker", 0)),
        None,
        "a signal is no exit code:\n{text}"
    );

    agent.ctl(&["scale", "worker", "3"]).ok();
    let text = scrape(EVENTS_PORT);
    assert_eq!(value(&text, r#"procctl_process_instances{name="worker"}"#), Some(3.0));
    assert_eq!(value(&text, &of("procctl_instance_up", "worker", 2)), Some(1.0), "{text}");
    agent.ctl(&["scale", "worker", "1"]).ok();
    let text = scrape(EVENTS_PORT);
    assert_eq!(value(&text, r#"procctl_process_instances{name="worker"}"#), Some(1.0));
    assert!(!text.contains(r#"index="1""#) && !text.contains(r#"index="2""#), "removed series remain:\n{text}");
    assert_eq!(
        value(&text, &of("procctl_instance_restarts_total", "worker", 0)),
        Some(1.0),
        "the count of the one that stays is kept"
    );
}

#[test]
fn a_crash_loop_shows_in_the_states_and_the_exit_code() {
    let toml = format!(
        "[process.crash]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 2\n\n{}",
        sh("exit 3"),
        sleepers(1)
    );
    let mut agent = Agent::new(&toml);
    agent.launch_with(&["--metrics", &metrics_flag(CRASH_PORT)]);
    agent.wait_state("crash", 0, "fatal");
    let text = scrape(CRASH_PORT);
    let state = |state: &str| format!(r#"procctl_instance_state{{name="crash",index="0",state="{state}"}}"#);
    assert_eq!(value(&text, &state("fatal")), Some(1.0), "{text}");
    for other in ["waiting", "starting", "running", "backoff", "stopping", "stopped", "exited"] {
        assert_eq!(value(&text, &state(other)), Some(0.0), "{other}:\n{text}");
    }
    assert_eq!(value(&text, &of("procctl_instance_up", "crash", 0)), Some(0.0));
    assert_eq!(value(&text, &of("procctl_instance_last_exit_code", "crash", 0)), Some(3.0));
    assert!(value(&text, &of("procctl_instance_restarts_total", "crash", 0)).unwrap() >= 1.0, "{text}");
    assert_eq!(value(&text, &of("procctl_instance_start_time_seconds", "crash", 0)), None, "no run, no start");
    assert_eq!(value(&text, &of("procctl_instance_up", "worker", 0)), Some(1.0), "the other process is unaffected");
}

#[test]
fn memory_messages_and_replies_are_counted() {
    // 64 MiB written to, so the pages are resident; then it answers each message on its pipe.
    let script = "import os, socket\n\
                  x = bytearray(b'\\x01') * (64 << 20)\n\
                  pipe = socket.socket(fileno=int(os.environ['PROCCTL_PIPE_FD']))\n\
                  messages, replies = pipe.makefile('r'), pipe.makefile('w')\n\
                  for line in messages:\n    replies.write('pong ' + line)\n    replies.flush()\n";
    let toml = format!(
        "[process.big]\ncommand = {}\nstart_secs = \"0s\"\n",
        serde_json::to_string(&["python3", "-c", script]).unwrap()
    );
    let mut agent = Agent::new(&toml);
    agent.launch_with(&["--metrics", &metrics_flag(MEMORY_PORT)]);
    let pid = agent.wait_running("big", 1)[0];
    wait_until(WAIT, "the 64 MiB are resident and counted", || {
        value(&scrape(MEMORY_PORT), &of("procctl_instance_memory_bytes", "big", 0)).unwrap_or(0.0)
            >= f64::from(64u32 << 20)
    });
    let text = scrape(MEMORY_PORT);
    assert!(value(&text, &of("procctl_instance_cpu_seconds_total", "big", 0)).unwrap() > 0.0, "{text}");

    let out = agent.ctl(&["send", "--reply", "big", "ping"]);
    assert_eq!(out.ok().stdout.trim(), "pong ping");
    agent.ctl_stdin(&["send", "big", "-"], "a\nb\n").ok();
    let text = scrape(MEMORY_PORT);
    assert_eq!(value(&text, &of("procctl_instance_messages_total", "big", 0)), Some(3.0), "{text}");
    assert_eq!(value(&text, "procctl_reply_duration_seconds_count"), Some(1.0));
    assert_eq!(value(&text, r#"procctl_reply_duration_seconds_bucket{le="+Inf"}"#), Some(1.0));
    assert_eq!(value(&text, "procctl_send_rejected_total"), Some(0.0));

    // Counters outlive the run they were counted in.
    kill(pid, libc::SIGKILL);
    wait_until(WAIT, "big is restarted", || {
        value(&scrape(MEMORY_PORT), &of("procctl_instance_restarts_total", "big", 0)) == Some(1.0)
    });
    agent.wait_running("big", 1);
    let text = scrape(MEMORY_PORT);
    assert_eq!(value(&text, &of("procctl_instance_messages_total", "big", 0)), Some(3.0), "{text}");

    agent.ctl(&["stop", "big"]).ok();
    assert_eq!(agent.ctl_stdin(&["send", "big", "-"], "x\ny\n").code, Some(1));
    let text = scrape(MEMORY_PORT);
    assert_eq!(value(&text, "procctl_send_rejected_total"), Some(2.0), "{text}");
    assert_eq!(value(&text, &of("procctl_instance_memory_bytes", "big", 0)), None, "stopped: no memory");
}

/// Lines whose values depend on the moment: CPU and memory are sampled at each read, and
/// `procctl metrics` is itself a connected client.
fn timeless(text: &str) -> Vec<&str> {
    let moving =
        ["procctl_instance_cpu_seconds_total{", "procctl_instance_memory_bytes{", "procctl_agent_connections "];
    text.lines().filter(|line| !moving.iter().any(|prefix| line.starts_with(prefix))).collect()
}

#[test]
fn procctl_metrics_prints_what_the_endpoint_serves() {
    let mut agent = Agent::new(&sleepers(3));
    agent.launch_with(&["--metrics", &metrics_flag(SAME_TEXT_PORT)]);
    agent.wait_running("worker", 3);
    let served = scrape(SAME_TEXT_PORT);
    let printed = agent.ctl(&["metrics"]);
    printed.ok();
    assert_eq!(timeless(&printed.stdout), timeless(&served));
    assert!(printed.stdout.ends_with("# EOF\n"));
    assert!(served.contains("\nprocctl_agent_info{version=\""), "{served}");
    assert_eq!(value(&printed.stdout, "procctl_agent_connections"), Some(1.0), "procctl itself");
    assert_eq!(value(&served, "procctl_agent_connections"), Some(0.0));
}

#[test]
fn procctl_metrics_works_with_no_endpoint_and_large_fleets() {
    // Over a frame's worth of text: it comes in pieces.
    let mut agent = Agent::start(&sleepers(1200));
    agent.wait_running("worker", 1200);
    let printed = agent.ctl(&["metrics"]);
    printed.ok();
    assert!(printed.stdout.len() > 1 << 20, "{} bytes", printed.stdout.len());
    let up = samples(&printed.stdout).keys().filter(|series| series.starts_with("procctl_instance_up{")).count();
    assert_eq!(up, 1200);
    assert!(printed.stdout.ends_with("# EOF\n"));
    assert_eq!(printed.stdout.matches("# EOF").count(), 1);
}

#[test]
fn only_get_metrics_is_served_and_the_config_can_ask_for_it() {
    let agent = Agent::start(&format!("metrics = \"127.0.0.1:{PATHS_PORT}\"\n{}", sleepers(1)));
    for path in ["/", "/metric", "/metrics/x", "/api/v1/query"] {
        assert_eq!(get(PATHS_PORT, path).0, 404, "{path}");
    }
    assert_eq!(get(PATHS_PORT, "/metrics?x=1").0, 200);
    let stream = TcpStream::connect(("127.0.0.1", PATHS_PORT)).unwrap();
    assert_eq!(exchange(stream, "POST", "/metrics").0, 405);
    drop(agent);
}

/// The inodes of the TCP sockets in LISTEN state on this machine.
fn tcp_listeners() -> Vec<u64> {
    let mut inodes = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A") {
                inodes.extend(fields.get(9).and_then(|inode| inode.parse::<u64>().ok()));
            }
        }
    }
    inodes
}

/// The socket inodes process `pid` holds.
fn socket_inodes(pid: i32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

#[test]
fn nothing_listens_without_the_option() {
    let mut agent = Agent::start(&sleepers(1));
    agent.wait_running("worker", 1);
    let listening = tcp_listeners();
    let own = socket_inodes(agent.pid());
    assert!(!own.is_empty(), "the control socket at least");
    assert!(own.iter().all(|inode| !listening.contains(inode)), "the agent listens on TCP");
}

#[test]
fn a_unix_address_serves_the_metrics_from_a_private_socket() {
    let mut agent = Agent::new(&sleepers(1));
    let path = agent.path("metrics/m.sock");
    let flag = format!("unix://{}", path.display());
    agent.launch_with(&["--metrics", &flag]);
    agent.wait_running("worker", 1);
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
    let (status, body) = exchange(UnixStream::connect(&path).unwrap(), "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(value(&body, &of("procctl_instance_up", "worker", 0)), Some(1.0), "{body}");
    agent.shutdown();
    assert!(!path.exists(), "the socket is removed at exit");

    // A directory that is a symbolic link is refused, as for the control socket.
    let link = agent.path("link");
    std::os::unix::fs::symlink(path.parent().unwrap(), &link).unwrap();
    let flag = format!("unix://{}", link.join("m.sock").display());
    let out = crate::support::run(agent.command().args(["--metrics", &flag]), None, WAIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
}

#[test]
fn a_bad_address_or_a_taken_port_stops_the_agent_with_a_message() {
    let agent = Agent::new(&sleepers(1));
    let out = crate::support::run(agent.command().args(["--metrics", "9101"]), None, WAIT);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("127.0.0.1:9101"), "{}", out.stderr);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let flag = taken.local_addr().unwrap().to_string();
    let out = crate::support::run(agent.command().args(["--metrics", &flag]), None, WAIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&flag), "{}", out.stderr);
}

/// Threads that scrape without a pause until the returned flag is set; each counts the
/// scrapes that were answered 200.
fn flood(threads: usize) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<u32>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(stream) = TcpStream::connect(("127.0.0.1", SCRAPERS_PORT)) {
                        let _ = stream.set_read_timeout(Some(WAIT));
                        // With every slot taken, the agent closes at once.
                        if let Ok((200, _)) = try_exchange(stream, "GET", "/metrics") {
                            served += 1;
                        }
                    }
                }
                served
            })
        })
        .collect();
    (stop, handles)
}

fn stop_flood((stop, handles): (Arc<AtomicBool>, Vec<std::thread::JoinHandle<u32>>)) -> u32 {
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().map(|handle| handle.join().unwrap()).sum()
}

#[test]
fn floods_and_silent_scrapers_never_keep_procctl_from_being_served() {
    let mut agent = Agent::new(&sleepers(50));
    agent.launch_with(&["--metrics", &metrics_flag(SCRAPERS_PORT)]);
    agent.wait_running("worker", 50);

    // Scrapers that never pause.
    let scrapers = flood(8);
    agent.ctl(&["list"]).ok();
    agent.ctl(&["restart", "worker:0"]).ok();
    agent.ctl(&["scale", "worker", "40"]).ok();
    assert!(stop_flood(scrapers) > 0, "the flood was served too");

    // More silent connections than there are scrape slots, and a flood that finds no slot.
    let silent: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(("127.0.0.1", SCRAPERS_PORT)).unwrap()).collect();
    let scrapers = flood(4);
    agent.ctl(&["list"]).ok();
    agent.ctl(&["restart", "worker:0"]).ok();
    agent.ctl(&["metrics"]).ok();
    stop_flood(scrapers);
    // The agent hangs up on each silent one once the time for a request head is over.
    for mut stream in silent {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        match stream.read(&mut [0u8; 1]) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent scraper was not closed by the agent: {other:?}"),
        }
    }
    wait_until(WAIT, "a scrape is served again", || get(SCRAPERS_PORT, "/metrics").0 == 200);
}

/// A process that is killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn contrib(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus").join(file)
}

fn promtool(args: &[&str]) -> crate::support::Output {
    crate::support::run(Command::new("promtool").args(args), None, WAIT)
}

#[test]
fn the_alerting_rules_and_the_scrape_config_pass_promtool() {
    let rules = contrib("alerts.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let config = contrib("prometheus.yml");
    let out = promtool(&["check", "config", config.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let rules_text = std::fs::read_to_string(rules).unwrap();
    for alert in ["ProcctlInstanceDown", "ProcctlProcessFatal", "ProcctlRestartsClimbing", "ProcctlRecycleStorm"] {
        assert!(rules_text.contains(&format!("alert: {alert}")), "{alert}");
    }
}

/// A free loopback port of the kernel's choosing, for a server a test starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn procctl_metrics_feeds_node_exporters_textfile_collector() {
    let mut agent = Agent::start(&sleepers(2));
    agent.wait_running("worker", 2);
    // The README's recipe: write beside, then rename, so the collector never reads half a file.
    let dir = agent.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    let out = agent.ctl(&["metrics"]);
    out.ok();
    std::fs::write(dir.join("procctl.prom.tmp"), &out.stdout).unwrap();
    std::fs::rename(dir.join("procctl.prom.tmp"), dir.join("procctl.prom")).unwrap();

    let port = free_port();
    let exporter = Command::new("prometheus-node-exporter")
        .args(["--collector.disable-defaults", "--collector.textfile"])
        .arg(format!("--collector.textfile.directory={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node_exporter is installed (Debian's package `prometheus-node-exporter`)");
    let _exporter = Killed(exporter);
    let mut text = String::new();
    wait_until(WAIT, "node_exporter serves", || {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let (status, body) = exchange(stream, "GET", "/metrics");
        text = body;
        status == 200
    });
    assert_eq!(value(&text, "node_textfile_scrape_error"), Some(0.0), "{text}");
    for index in 0..2 {
        let series = format!("procctl_instance_up{{index=\"{index}\",name=\"worker\"}}");
        assert_eq!(value(&text, &series), Some(1.0), "{series} in:\n{text}");
    }
    assert!(text.contains("\nprocctl_instance_restarts_total{"), "{text}");
}

/// Prometheus's answer to an instant query, as JSON.
fn query(port: u16, expression: &str) -> serde_json::Value {
    // Until it listens, it does not answer.
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return serde_json::Value::Null;
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (status, body) = exchange(stream, "GET", &format!("/api/v1/query?query={expression}"));
    if status != 200 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_real_prometheus_scrapes_the_agent() {
    let mut agent = Agent::new(&format!(
        "{}\n[process.other]\ncommand = [\"sleep\", \"100000\"]\ninstances = 2\nstart_secs = \"0s\"\n",
        sleepers(3)
    ));
    agent.launch_with(&["--metrics", &metrics_flag(PROMETHEUS_TARGET_PORT)]);
    agent.wait_running("worker", 3);
    agent.wait_running("other", 2);

    let config = agent.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: procctl\n    \
             static_configs:\n      - targets: ['127.0.0.1:{PROMETHEUS_TARGET_PORT}']\n"
        ),
    )
    .unwrap();
    let storage = agent.path("prometheus-data");
    // A port of its own, never the packaged service's 9090.
    let port = free_port();
    let server = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(agent.path("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus is installed (Debian's package `prometheus`)");
    let _server = Killed(server);

    let mut series = vec![];
    let answered = crate::support::poll_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let answer = query(port, "procctl_instance_up");
        let Some(result) = answer["data"]["result"].as_array() else {
            return false;
        };
        series = result
            .iter()
            .map(|sample| {
                let metric = &sample["metric"];
                (
                    format!("{}:{}", metric["name"].as_str().unwrap_or("?"), metric["index"].as_str().unwrap_or("?")),
                    sample["value"][1].as_str().unwrap_or("?").to_string(),
                    metric["job"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        series.sort();
        series.len() == 5
    });
    let log = std::fs::read_to_string(agent.path("prometheus.log")).unwrap_or_default();
    assert!(answered, "prometheus did not answer for every instance: {series:?}\n{log}");
    let want: Vec<(String, String, String)> = ["other:0", "other:1", "worker:0", "worker:1", "worker:2"]
        .iter()
        .map(|id| (id.to_string(), "1".to_string(), "procctl".to_string()))
        .collect();
    assert_eq!(series, want);
    // The target is healthy: its last scrape was parsed without error.
    let up = query(port, "up");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}
