//! Readiness, health and dependencies (SPEC.md "Readiness, health and dependencies"), against
//! real programs: redis-server speaking sd_notify, the example notify workers, python web
//! servers behind tcp and http probes, exec and log probes, and `procctl wait`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    Agent, CTL_TIMEOUT, Output, SPARE, WAIT, Watcher, alive, holds_for, kill, lines, run, sh, status_kib, wait_until,
};

/// examples/workers, where notify.py and notify.sh live.
fn workers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workers").canonicalize().unwrap()
}

/// A TOML string (quoted and escaped).
fn q(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// A procctl run in the background.
struct Background(std::thread::JoinHandle<Ended>);

/// How a background procctl ended, and when.
#[derive(Debug)]
struct Ended {
    out: Output,
    at: Instant,
}

impl Background {
    fn start(agent: &Agent, args: &[&str]) -> Background {
        let mut command = agent.ctl_command(args);
        Background(std::thread::spawn(move || {
            let out = run(&mut command, None, CTL_TIMEOUT);
            Ended { out, at: Instant::now() }
        }))
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    fn finish(self) -> Ended {
        self.0.join().expect("the procctl thread")
    }
}

/// Whether `event` is `kind` about `name:index`.
fn is(event: &Value, kind: &str, name: &str, index: u64) -> bool {
    event["event"] == kind && event["name"] == name && event["instance"] == index
}

/// A shell loop that notes `start NAME` in `log`, and on TERM `stop-begin NAME`, then
/// `stop-end NAME` `linger` seconds later, so that the order of stops shows.
fn stoppable(log: &Path, name: &str, linger: &str) -> String {
    format!(
        "trap 'echo stop-begin {name} >> {0}; sleep {linger}; echo stop-end {name} >> {0}; exit 0' TERM; \
         echo start {name} >> {0}; while :; do sleep 0.02; done",
        log.display()
    )
}

/// `text` quoted for sh.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Sends one sd_notify datagram to the abstract socket `@name` from this test process.
fn notify_from_outside(socket: &str, text: &str) {
    use std::os::linux::net::SocketAddrExt;
    let name = socket.strip_prefix('@').expect("NOTIFY_SOCKET names an abstract socket");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sender.send_to_addr(text.as_bytes(), &addr).unwrap();
}

// ---------------------------------------------------------------------------------------
// ready = "notify"

#[test]
fn procctl_wait_returns_once_redis_says_it_is_ready_and_list_shows_its_status() {
    let redis = Path::new("/usr/bin/redis-server");
    assert!(
        redis.exists(),
        "redis-server is missing: install it (apt-get install redis-server) to run this test; CI installs it"
    );
    let mut agent = Agent::start(&format!(
        "[process.db]\ncommand = [\"{}\", \"--port\", \"6391\", \"--bind\", \"127.0.0.1\", \"--supervised\", \
         \"systemd\", \"--save\", \"\", \"--appendonly\", \"no\"]\nready = \"notify\"\nready_timeout = \"20s\"\n\
         start_secs = \"0s\"\n",
        redis.display()
    ));
    agent.ctl(&["wait", "db", "--timeout", "20s"]).ok();
    // Ready means redis answers at once.
    let mut conn = std::net::TcpStream::connect("127.0.0.1:6391").expect("redis listens once it said READY=1");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"PING\r\n").unwrap();
    let mut answer = [0u8; 7];
    conn.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"+PONG\r\n");
    let row = agent.row("db", 0);
    assert_eq!(row["state"], "running", "{row}");
    let status = row["status"].as_str().unwrap_or_else(|| panic!("list --json has redis's STATUS= text: {row}"));
    assert!(status.contains("Ready to accept connections"), "{row}");
    let table = agent.ctl(&["list", "db"]).ok().stdout.clone();
    assert!(table.lines().next().unwrap().ends_with("STATUS"), "{table}");
    assert!(table.contains("running") && table.contains(status), "list shows the status: {table}");
}

#[test]
fn the_python_notify_worker_is_starting_until_ready_and_its_status_moves_along() {
    let mut agent = Agent::start(&format!(
        "[process.api]\ncommand = [\"python3\", \"{}/notify.py\"]\nready = \"notify\"\nstart_secs = \"0s\"\n\
         env = {{ LOAD_SECS = \"1.2\" }}\n",
        workers().display()
    ));
    wait_until(WAIT, "api says it is loading", || agent.row("api", 0)["status"] == "loading 0%");
    let row = agent.row("api", 0);
    assert_eq!(row["state"], "starting", "not ready before READY=1, start_secs 0 or not: {row}");
    wait_until(WAIT, "api is half loaded", || agent.row("api", 0)["status"] == "loading 50%");
    assert_eq!(agent.state_of("api", 0), "starting");
    agent.ctl(&["wait", "api", "--timeout", "10s"]).ok();
    let row = agent.row("api", 0);
    assert_eq!((&row["state"], &row["status"]), (&"running".into(), &"serving".into()), "{row}");
    // The status is the current run's: none once it is over.
    agent.ctl(&["stop", "api"]).ok();
    let row = agent.row("api", 0);
    assert_eq!((&row["state"], &row["status"]), (&"stopped".into(), &Value::Null), "{row}");
}

#[test]
fn the_shell_notify_worker_speaks_sd_notify_through_socat() {
    let mut agent = Agent::start(&format!(
        "[process.job]\ncommand = [\"sh\", \"{}/notify.sh\"]\nready = \"notify\"\nstart_secs = \"0s\"\n\
         env = {{ LOAD_SECS = \"1\" }}\n",
        workers().display()
    ));
    wait_until(WAIT, "job says it is warming up", || agent.row("job", 0)["status"] == "warming up");
    assert_eq!(agent.state_of("job", 0), "starting");
    agent.ctl(&["wait", "job", "--timeout", "10s"]).ok();
    let row = agent.row("job", 0);
    assert_eq!(row["state"], "running", "{row}");
    assert!(row["status"].as_str().is_some_and(|s| s.starts_with("up since ")), "{row}");
}

#[test]
fn a_notification_from_a_process_outside_every_instance_is_ignored_and_logged() {
    let mut agent = Agent::new("");
    let socket_file = agent.path("socket");
    let sent = agent.path("sent");
    // `plain` is an instance, but without ready = "notify": its messages are ignored too.
    let send = "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
                s.sendto(b'READY=1\\nSTATUS=forged by plain', '\\0' + sys.argv[1][1:])";
    agent.write_config(&format!(
        "[process.quiet]\ncommand = {}\nready = \"notify\"\nready_timeout = \"60s\"\n\
         [process.plain]\ncommand = {}\nstart_secs = \"0s\"\n",
        sh(&format!("echo \"$NOTIFY_SOCKET\" > {}; exec sleep 100000", socket_file.display())),
        sh(&format!(
            "while [ ! -s {0} ]; do sleep 0.02; done; python3 -c {1} $(cat {0}) && touch {2}; exec sleep 100000",
            socket_file.display(),
            shell_quote(send),
            sent.display()
        ))
    ));
    agent.launch();
    wait_until(WAIT, "the instance wrote $NOTIFY_SOCKET", || !lines(&socket_file).is_empty());
    let socket = lines(&socket_file)[0].clone();
    notify_from_outside(&socket, "READY=1\nSTATUS=forged");
    let me = std::process::id();
    wait_until(WAIT, "the agent logs that it ignored the datagram", || {
        agent.log().contains(&format!("ignored a notification from pid {me}"))
    });
    wait_until(WAIT, "plain sent its message", || sent.exists());
    wait_until(WAIT, "the agent logs that it ignored plain's message", || {
        agent.log().contains("of plain:0, which does not use ready = \"notify\"")
    });
    // Many more: the log says so once in a while, not line by line.
    for _ in 0..5000 {
        notify_from_outside(&socket, "READY=1");
    }
    wait_until(WAIT, "the agent has read them all", || agent.log().contains("(4096 ignored so far)"));
    let logged = agent.log().matches("ignored a notification").count();
    assert!(logged <= 14, "{logged} log lines for 5002 ignored messages");
    holds_for(Duration::from_millis(300), Duration::from_millis(30), "quiet:0 stays starting", || {
        let row = agent.row("quiet", 0);
        row["state"] == "starting" && row["status"].is_null()
    });
}

#[test]
fn a_flood_of_notifications_neither_stalls_the_agent_nor_grows_its_memory() {
    let mut agent = Agent::new("");
    let flooder = agent.path("flood.py");
    let done = agent.path("flood.done");
    std::fs::write(
        &flooder,
        format!(
            "import os, socket\n\
             address = '\\0' + os.environ['NOTIFY_SOCKET'][1:]\n\
             sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             for i in range(200000):\n    sock.sendto(b'STATUS=flood %d' % i, address)\n\
             sock.sendto(b'READY=1\\nSTATUS=flooded', address)\n\
             open('{}', 'w').close()\n\
             import time\ntime.sleep(100000)\n",
            done.display()
        ),
    )
    .unwrap();
    agent.write_config(&format!(
        "[process.flood]\ncommand = [\"python3\", \"{}\"]\nready = \"notify\"\nready_timeout = \"120s\"\n",
        flooder.display()
    ));
    agent.launch();
    wait_until(WAIT, "the flood begins", || agent.row("flood", 0)["status"].as_str().is_some());
    let rss_before = status_kib(agent.pid(), "VmRSS");
    let mut slowest = Duration::ZERO;
    let mut lists = 0;
    wait_until(Duration::from_secs(60), "the flood is over", || {
        let started = Instant::now();
        agent.ctl(&["list"]).ok();
        slowest = slowest.max(started.elapsed());
        lists += 1;
        done.exists()
    });
    agent.ctl(&["wait", "flood", "--timeout", "10s"]).ok();
    assert_eq!(agent.row("flood", 0)["status"], "flooded");
    let rss_after = status_kib(agent.pid(), "VmRSS");
    eprintln!("flood: {lists} lists, slowest {slowest:?}, RSS {rss_before} -> {rss_after} KiB");
    assert!(slowest < Duration::from_secs(1), "list answered promptly during the flood: slowest {slowest:?}");
    assert!(rss_after < rss_before + 8 * 1024, "RSS stays bounded: {rss_before} -> {rss_after} KiB");
}

// ---------------------------------------------------------------------------------------
// probes

/// A python one-liner server: sleeps `delay` seconds, then serves HTTP on 127.0.0.1:$PORT.
fn late_http_server(delay: &str) -> String {
    sh(&format!("sleep {delay}; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1"))
}

#[test]
fn tcp_and_http_probes_wait_for_each_instance_to_listen_on_its_port() {
    let mut agent = Agent::new("");
    agent.write_config(&format!(
        "[process.web]\ncommand = {0}\ninstances = 2\nport = 18110\nstart_secs = \"0s\"\n\
         ready = {{ http = \"http://127.0.0.1:{{port}}/\" }}\n\
         [process.raw]\ncommand = {0}\nport = 18105\nstart_secs = \"0s\"\nready = {{ tcp = \"127.0.0.1:{{port}}\" }}\n",
        late_http_server("0.8")
    ));
    agent.launch();
    holds_for(Duration::from_millis(500), Duration::from_millis(25), "not ready before they listen", || {
        agent.list("all").iter().all(|row| row["state"] == "starting")
    });
    agent.ctl(&["wait", "all", "--timeout", "10s"]).ok();
    for port in [18105, 18110, 18111] {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("running, so port {port} (PORT of its instance) listens: {e}"));
    }
}

#[test]
fn log_and_exec_probes_fill_in_instance_and_port() {
    let mut agent = Agent::new("");
    let dir = agent.dir.path().display().to_string();
    agent.write_config(&format!(
        "[process.logged]\ncommand = {}\ninstances = 2\nport = 18140\nstart_secs = \"0s\"\n\
         ready = {{ log = \"^listening on {{port}} as {{instance}}$\" }}\n\
         [process.checked]\ncommand = {}\ninstances = 2\nport = 18150\nstart_secs = \"0s\"\n\
         ready = {{ exec = [\"test\", \"-e\", \"{dir}/ready.{{instance}}.{{port}}\"] }}\n",
        // Wrong lines first: the pattern must match the instance's own port and index.
        sh("echo listening on 1 as 9; while [ ! -e go.$PROCCTL_INSTANCE ]; do sleep 0.02; done; \
            echo listening on $PORT as $PROCCTL_INSTANCE; exec sleep 100000"),
        sh("exec sleep 100000"),
    ));
    agent.launch();
    holds_for(Duration::from_millis(400), Duration::from_millis(25), "nothing is ready yet", || {
        agent.list("all").iter().all(|row| row["state"] == "starting")
    });
    std::fs::write(agent.path("go.1"), "").unwrap();
    std::fs::write(agent.path("ready.1.18151"), "").unwrap();
    agent.wait_state("logged", 1, "running");
    agent.wait_state("checked", 1, "running");
    assert_eq!(agent.state_of("logged", 0), "starting", "instance 0 has not printed its line");
    assert_eq!(agent.state_of("checked", 0), "starting", "ready.0.18150 does not exist");
    std::fs::write(agent.path("go.0"), "").unwrap();
    std::fs::write(agent.path("ready.0.18150"), "").unwrap();
    agent.ctl(&["wait", "all", "--timeout", "10s"]).ok();
}

#[test]
fn an_exec_probe_that_hangs_is_cut_at_its_timeout_and_leaves_no_process_behind() {
    let mut agent = Agent::new("");
    let (pids, times, leaked) = (agent.path("probe-pids"), agent.path("probe-times"), agent.path("leaked-pids"));
    agent.write_config(&format!(
        "[process.slow]\ncommand = [\"sleep\", \"100000\"]\nready_timeout = \"20s\"\n\
         ready = {{ exec = [\"sh\", \"-c\", \"date +%s.%N >> {1}; echo $$ >> {0}; sleep 100 & echo $! >> {0}; wait\"], \
         timeout = \"300ms\" }}\n\
         [process.leaky]\ncommand = [\"sleep\", \"100000\"]\nready_timeout = \"20s\"\n\
         ready = {{ exec = [\"sh\", \"-c\", \"sleep 100 & echo $! >> {2}; exit 1\"] }}\n",
        pids.display(),
        times.display(),
        leaked.display()
    ));
    agent.launch();
    let numbers = |path: &Path| -> Vec<i32> { lines(path).iter().map(|l| l.parse().unwrap()).collect() };
    // Each try records its shell and its sleep; the second try starts only after the first was cut.
    wait_until(WAIT, "a second try of the probe starts", || lines(&pids).len() >= 4);
    let first = numbers(&pids)[..2].to_vec();
    wait_until(Duration::from_secs(2), "the first try's shell and sleep are gone", || {
        first.iter().all(|&pid| !alive(pid))
    });
    let tries: Vec<f64> = lines(&times).iter().map(|l| l.parse().unwrap()).collect();
    assert!(tries[1] - tries[0] >= 0.3, "the first try had its 300ms: {tries:?}");
    assert_eq!(agent.state_of("slow", 0), "starting");
    // A probe that ends leaving a child in its group: the child goes too.
    wait_until(WAIT, "the leaky probe ran twice", || lines(&leaked).len() >= 2);
    let left = numbers(&leaked)[0];
    wait_until(Duration::from_secs(2), "what the first leaky probe left is gone", || !alive(left));
    agent.ctl(&["stop", "all"]).ok();
    let all: Vec<i32> = numbers(&pids).into_iter().chain(numbers(&leaked)).collect();
    wait_until(Duration::from_secs(2), "no probe process is left after the stop", || {
        all.iter().all(|&pid| !alive(pid))
    });
    let zombies = crate::support::zombies_of(agent.pid());
    assert!(zombies.is_empty(), "probe children are reaped: {zombies:?}");
}

#[test]
fn exec_probes_cut_at_their_timeout_together_keep_every_other_timer() {
    // Many probes time out at about the same moment; each timeout and each next try is a
    // timer. A timer must never be lost to another one's bookkeeping: every instance keeps
    // being probed, and ready_timeout still ends each run.
    let mut agent = Agent::new("");
    let tries = agent.path("tries");
    std::fs::create_dir(&tries).unwrap();
    agent.write_config(&format!(
        "[process.many]\ncommand = [\"sleep\", \"100000\"]\ninstances = 12\nready_timeout = \"4s\"\n\
         start_retries = 1000\nstop_timeout = \"1s\"\n\
         ready = {{ exec = [\"sh\", \"-c\", \"echo >> {}/{{instance}}; exec sleep 100\"], timeout = \"100ms\" }}\n",
        tries.display()
    ));
    agent.launch();
    let count = |i: u32| lines(&tries.join(i.to_string())).len();
    // Tries at about 50ms, then each 100ms timeout and a wait of 50, 100, 200, 400ms: the
    // fifth at about 1.2s, well before ready_timeout.
    wait_until(Duration::from_secs(3), "every instance has been probed five times", || (0..12).all(|i| count(i) >= 5));
    // At ready_timeout each run is stopped as a failed start and a new one begins.
    wait_until(WAIT, "every instance was restarted by its ready_timeout", || {
        agent.list("many").iter().all(|row| row["restarts"].as_u64() >= Some(1))
    });
}

// ---------------------------------------------------------------------------------------
// ready_timeout

#[test]
fn a_run_never_ready_within_ready_timeout_is_stopped_as_a_failed_start_and_goes_fatal() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    agent.write_config(&format!(
        "[process.never]\ncommand = {}\nready = \"notify\"\nready_timeout = \"400ms\"\nstart_retries = 2\n\
         autostart = false\nstop_timeout = \"5s\"\n\
         [process.closed]\ncommand = [\"sleep\", \"100000\"]\nready = {{ tcp = \"127.0.0.1:18106\" }}\n\
         ready_timeout = \"300ms\"\nstart_retries = 1\nautostart = false\n",
        // Exits 0 when stopped: still a failed start.
        sh(&format!(
            "trap 'echo stopped >> {0}; exit 0' TERM; echo run >> {0}; while :; do sleep 0.02; done",
            log.display()
        ))
    ));
    agent.launch();
    let started = Instant::now();
    let out = agent.ctl(&["start", "never"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("never:0"), "{out:?}");
    assert!(started.elapsed() >= Duration::from_millis(800), "two runs of ready_timeout each: {:?}", started.elapsed());
    assert_eq!(lines(&log), ["run", "stopped", "run", "stopped"], "each run was stopped at ready_timeout");
    let row = agent.row("never", 0);
    assert_eq!((&row["state"], &row["restarts"]), (&"fatal".into(), &1.into()), "{row}");
    let out = agent.ctl(&["start", "closed"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("closed:0"), "{out:?}");
    assert_eq!(agent.state_of("closed", 0), "fatal");
}

// ---------------------------------------------------------------------------------------
// health and watchdog

#[test]
fn a_frozen_http_server_fails_its_health_checks_and_is_restarted() {
    let mut agent = Agent::new("");
    agent.write_config(&format!(
        "[process.web]\ncommand = {}\nport = 18120\nready = {{ http = \"http://127.0.0.1:{{port}}/\" }}\n\
         health = {{ http = \"http://127.0.0.1:{{port}}/\", every = \"250ms\", timeout = \"250ms\", failures = 3 }}\n\
         stop_timeout = \"5s\"\n{SPARE}",
        sh("exec python3 -m http.server \"$PORT\" --bind 127.0.0.1")
    ));
    agent.launch();
    let watcher = Watcher::subscribed(&agent, true);
    agent.ctl(&["wait", "web", "--timeout", "10s"]).ok();
    let old = agent.pid_of("web", 0).unwrap();
    wait_until(WAIT, "the first health check passes", || agent.row("web", 0)["health"] == "ok");
    holds_for(Duration::from_secs(1), Duration::from_millis(50), "web:0 stays healthy while it answers", || {
        let row = agent.row("web", 0);
        row["health"] == "ok" && row["pid"] == old
    });
    kill(old, libc::SIGSTOP);
    wait_until(WAIT, "health is failing", || agent.row("web", 0)["health"] == "failing");
    assert_eq!(agent.pid_of("web", 0), Some(old), "one failure is not enough");
    let seen = watcher.until_json("an unhealthy event", |e| is(e, "unhealthy", "web", 0));
    let reason = seen.last().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("3 health checks failed in a row") && reason.contains("18120"), "{reason}");
    watcher.until_json("the replacement is running", |e| is(e, "started", "web", 0));
    let row = agent.row("web", 0);
    let new = row["pid"].as_i64().unwrap() as i32;
    assert_ne!(new, old, "{row}");
    assert!(!alive(old), "the frozen server was stopped");
    assert_eq!(row["restarts"], 1, "{row}");
    assert_eq!(row["state"], "running", "{row}");
    wait_until(WAIT, "the new run is healthy", || agent.row("web", 0)["health"] == "ok");
    assert!(agent.log().contains("web:0 is unhealthy"), "{}", agent.log());
}

#[test]
fn an_instance_that_stays_unhealthy_backs_off_but_never_goes_fatal() {
    let mut agent = Agent::start(&format!(
        "[process.sick]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\nstart_retries = 1\n\
         health = {{ exec = [\"false\"], every = \"100ms\", failures = 1 }}\n{SPARE}"
    ));
    let watcher = Watcher::subscribed(&agent, true);
    let seen = watcher.until_json("the fourth health restart backs off", |e| {
        e["event"] == "backoff" && e["name"] == "sick" && e["delay_ms"].as_u64() >= Some(350)
    });
    let unhealthy: Vec<&Value> = seen.iter().filter(|e| is(e, "unhealthy", "sick", 0)).collect();
    assert!(unhealthy.len() >= 3, "{seen:?}");
    assert!(unhealthy.iter().all(|e| e["reason"].as_str().is_some_and(|r| r.contains("exec false"))), "{seen:?}");
    let delays: Vec<u64> =
        seen.iter().filter(|e| e["event"] == "backoff").map(|e| e["delay_ms"].as_u64().unwrap()).collect();
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "the delays grow: {delays:?}");
    assert!(!seen.iter().any(|e| e["event"] == "fatal"), "{seen:?}");
    let row = agent.row("sick", 0);
    assert!(row["restarts"].as_u64() >= Some(3), "health restarts count: {row}");
    assert_ne!(row["state"], "fatal", "{row}");
}

#[test]
fn a_notify_worker_that_stops_feeding_its_watchdog_is_restarted() {
    let mut agent = Agent::new("");
    let hang = agent.path("hang");
    agent.write_config(&format!(
        "[process.api]\ncommand = [\"python3\", \"{}/notify.py\"]\nready = \"notify\"\nwatchdog = \"400ms\"\n\
         env = {{ LOAD_SECS = \"0\", HANG_FILE = {} }}\n{SPARE}",
        workers().display(),
        q(&hang.display().to_string())
    ));
    agent.launch();
    let watcher = Watcher::subscribed(&agent, true);
    agent.ctl(&["wait", "api", "--timeout", "10s"]).ok();
    let old = agent.pid_of("api", 0).unwrap();
    holds_for(Duration::from_millis(1200), Duration::from_millis(50), "a fed watchdog keeps it running", || {
        let row = agent.row("api", 0);
        row["state"] == "running" && row["pid"] == old
    });
    std::fs::write(&hang, "").unwrap();
    let seen = watcher.until_json("an unhealthy event", |e| is(e, "unhealthy", "api", 0));
    std::fs::remove_file(&hang).unwrap();
    let reason = seen.last().unwrap()["reason"].as_str().unwrap();
    assert!(reason.contains("WATCHDOG=1") && reason.contains("400ms"), "{reason}");
    watcher.until_json("the replacement is running", |e| is(e, "started", "api", 0));
    let row = agent.row("api", 0);
    assert_ne!(row["pid"], old, "{row}");
    assert!(row["restarts"].as_u64() >= Some(1), "{row}");
    assert!(!alive(old));
}

// ---------------------------------------------------------------------------------------
// depends_on

#[test]
fn a_dependent_waits_until_its_dependencies_are_running_and_completed() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    agent.write_config(&format!(
        // `app` sorts before what it depends on: the order of the file must not matter.
        "[process.app]\ncommand = {}\nstart_secs = \"0s\"\ndepends_on = {{ zdb = \"running\", migrate = \"completed\" }}\n\
         [process.zdb]\ncommand = [\"sleep\", \"100000\"]\nready = {{ exec = [\"test\", \"-e\", \"db-ready\"] }}\n\
         [process.migrate]\ncommand = {}\nrestart = \"never\"\nstart_secs = \"0s\"\n",
        sh(&format!("echo app >> {}; exec sleep 100000", log.display())),
        sh(&format!("while [ ! -e migrate-go ]; do sleep 0.02; done; echo migrate >> {}; exit 0", log.display())),
    ));
    agent.launch();
    agent.wait_state("app", 0, "waiting");
    let both_pending = |agent: &mut Agent| {
        agent.state_of("app", 0) == "waiting" && agent.row("app", 0)["pid"].is_null() && lines(&log).is_empty()
    };
    holds_for(Duration::from_millis(400), Duration::from_millis(25), "app waits for both", || both_pending(&mut agent));
    std::fs::write(agent.path("db-ready"), "").unwrap();
    agent.wait_state("zdb", 0, "running");
    holds_for(Duration::from_millis(300), Duration::from_millis(25), "app still waits for migrate", || {
        agent.state_of("app", 0) == "waiting"
    });
    std::fs::write(agent.path("migrate-go"), "").unwrap();
    agent.wait_state("app", 0, "running");
    // Running from its spawn on (start_secs 0): its line follows.
    wait_until(WAIT, "app has written its line", || lines(&log).len() == 2);
    assert_eq!(lines(&log), ["migrate", "app"]);
    let migrate = agent.row("migrate", 0);
    assert_eq!((&migrate["state"], &migrate["last_exit"]["code"]), (&"exited".into(), &0.into()), "{migrate}");
}

#[test]
fn autostart_of_a_dependent_starts_its_dependencies_whatever_the_order_of_their_names() {
    // The agent and a reload create the instances of one process after the other, in name
    // order: `app` comes before the `zdb` it needs, which is not started on its own.
    let config = |dependent: &str, dependency: &str| {
        format!(
            "[process.{dependent}]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n\
             depends_on = {{ {dependency} = \"running\" }}\n\
             [process.{dependency}]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\nautostart = false\n"
        )
    };
    for (dependent, dependency) in [("web", "db"), ("app", "zdb")] {
        let mut agent = Agent::start(&config(dependent, dependency));
        agent.wait_running(dependency, 1);
        agent.wait_running(dependent, 1);
    }
    let other = "[process.other]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n";
    let mut agent = Agent::start(other);
    agent.write_config(&format!("{other}{}", config("app", "zdb")));
    let out = agent.ctl(&["reload"]);
    assert!(out.ok().stdout.contains("added: app") && out.stdout.contains("zdb"), "{out:?}");
    agent.wait_running("zdb", 1);
    agent.wait_running("app", 1);
}

#[test]
fn starting_a_dependent_starts_its_dependencies_and_says_what_it_waits_on() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    agent.write_config(&format!(
        "[process.web]\ncommand = {}\nstart_secs = \"0s\"\nautostart = false\n\
         depends_on = {{ db = \"running\", migrate = \"completed\" }}\n\
         [process.db]\ncommand = {}\nready = {{ exec = [\"test\", \"-e\", \"db-ready\"] }}\nautostart = false\n\
         [process.migrate]\ncommand = {}\nrestart = \"never\"\nstart_secs = \"0s\"\nautostart = false\n{SPARE}",
        sh(&format!("echo web >> {}; exec sleep 100000", log.display())),
        sh(&format!("echo db >> {0}; sleep 0.3; touch db-ready; exec sleep 100000", log.display())),
        sh(&format!("sleep 0.2; echo migrate >> {}; exit 0", log.display())),
    ));
    agent.launch();
    let watcher = Watcher::subscribed(&agent, true);
    let out = agent.ctl(&["start", "web"]);
    out.ok();
    let seen = watcher.until_json("web starts", |e| is(e, "started", "web", 0));
    let waiting = seen.iter().find(|e| is(e, "waiting", "web", 0)).unwrap_or_else(|| panic!("no waiting: {seen:?}"));
    let mut on: Vec<&str> = waiting["on"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    on.sort();
    assert_eq!(on, ["db", "migrate"], "{waiting}");
    assert_eq!(agent.state_of("db", 0), "running");
    assert_eq!(agent.row("migrate", 0)["last_exit"]["code"], 0);
    let seen = lines(&log);
    assert_eq!(seen.last().map(String::as_str), Some("web"), "web starts after both: {seen:?}");

    // A completed dependency is not run again.
    agent.ctl(&["stop", "web"]).ok();
    agent.ctl(&["start", "web"]).ok();
    assert_eq!(lines(&log).iter().filter(|l| *l == "migrate").count(), 1, "{:?}", lines(&log));
}

#[test]
fn a_dependency_gone_fatal_makes_the_start_of_its_dependent_fail_naming_it() {
    let mut agent = Agent::start(&format!(
        "[process.web]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\nautostart = false\n\
         depends_on = {{ db = \"running\" }}\n\
         [process.db]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 2\nautostart = false\n",
        sh("exit 3")
    ));
    let out = agent.ctl(&["start", "web"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("web:0") && out.stderr.contains("db:0") && out.stderr.contains("fatal"), "{out:?}");
    assert_eq!(agent.state_of("db", 0), "fatal");
    assert!(agent.row("web", 0)["pid"].is_null(), "web never ran");
}

#[test]
fn shutdown_and_stop_all_stop_dependents_before_their_dependencies() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    agent.write_config(&format!(
        "[process.db]\ncommand = {}\nstart_secs = \"0s\"\n\
         [process.api]\ncommand = {}\nstart_secs = \"0s\"\ninstances = 2\ndepends_on = {{ db = \"running\" }}\n\
         [process.web]\ncommand = {}\nstart_secs = \"0s\"\ndepends_on = {{ api = \"running\" }}\n",
        sh(&stoppable(&log, "db", "0.1")),
        sh(&stoppable(&log, "api", "0.1")),
        sh(&stoppable(&log, "web", "0.1")),
    ));
    agent.launch();
    let check_order = |seen: &[String]| {
        let stops: Vec<&String> = seen.iter().filter(|l| l.starts_with("stop-")).collect();
        let last_end = |name: &str| stops.iter().rposition(|l| **l == format!("stop-end {name}")).unwrap();
        let first_begin = |name: &str| stops.iter().position(|l| **l == format!("stop-begin {name}")).unwrap();
        assert!(last_end("web") < first_begin("api"), "web is down before api stops: {stops:?}");
        assert!(last_end("api") < first_begin("db"), "both api are down before db stops: {stops:?}");
    };
    wait_until(WAIT, "all four started", || lines(&log).len() == 4);
    agent.ctl(&["stop", "all"]).ok();
    check_order(&lines(&log));

    std::fs::write(&log, "").unwrap();
    agent.ctl(&["start", "all"]).ok();
    wait_until(WAIT, "all four started again", || lines(&log).len() == 4);
    agent.shutdown();
    check_order(&lines(&log));
}

#[test]
fn stopping_a_dependency_alone_leaves_its_dependents_running() {
    let mut agent = Agent::start(
        "[process.db]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n\
         [process.web]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\ndepends_on = { db = \"running\" }\n",
    );
    let web = agent.wait_running("web", 1)[0];
    agent.wait_running("db", 1);
    agent.ctl(&["stop", "db"]).ok();
    assert_eq!(agent.state_of("db", 0), "stopped");
    holds_for(Duration::from_millis(400), Duration::from_millis(25), "web keeps running", || {
        let row = agent.row("web", 0);
        row["state"] == "running" && row["pid"] == web
    });
    // Automatic restarts do not wait for dependencies.
    kill(web, libc::SIGKILL);
    wait_until(WAIT, "web runs again", || {
        let row = agent.row("web", 0);
        row["state"] == "running" && row["pid"] != web
    });
    assert_eq!(agent.state_of("db", 0), "stopped", "the restart did not start db");
}

#[test]
fn reload_adds_changes_and_removes_a_dependency() {
    let sleeper = |name: &str, extra: &str| {
        format!("[process.{name}]\ncommand = [\"sleep\", \"100000\"]\nstart_secs = \"0s\"\n{extra}\n")
    };
    let config = |deps: &str| format!("{}{}{}", sleeper("db", ""), sleeper("cache", ""), sleeper("web", deps));
    let mut agent = Agent::start(&config(""));
    let web = agent.wait_running("web", 1)[0];
    agent.wait_running("db", 1);
    agent.wait_running("cache", 1);
    // With nothing running, what does `start web` bring up?
    let started_with_web = |agent: &mut Agent| -> Vec<String> {
        agent.ctl(&["stop", "all"]).ok();
        agent.ctl(&["start", "web"]).ok();
        agent
            .list("all")
            .iter()
            .filter(|row| row["state"] == "running")
            .map(|row| row["name"].as_str().unwrap().to_string())
            .collect()
    };

    agent.write_config(&config("depends_on = { db = \"running\" }"));
    let out = agent.ctl(&["reload"]);
    assert!(out.ok().stdout.contains("restarted: web"), "a changed depends_on is a change: {out:?}");
    assert_ne!(agent.wait_running("web", 1)[0], web);
    assert_eq!(started_with_web(&mut agent), ["db", "web"], "the added dependency is started");

    agent.ctl(&["start", "all"]).ok();
    agent.write_config(&config("depends_on = { cache = \"running\" }"));
    agent.ctl(&["reload"]).ok();
    assert_eq!(started_with_web(&mut agent), ["cache", "web"], "the changed dependency is started");

    agent.ctl(&["start", "all"]).ok();
    let pids = |agent: &mut Agent| -> Vec<Value> { agent.list("all").iter().map(|row| row["pid"].clone()).collect() };
    let before = pids(&mut agent);
    let bad = config("depends_on = { nosuch = \"running\" }");
    let line = bad.lines().position(|l| l.contains("nosuch")).unwrap() + 1;
    agent.write_config(&bad);
    let out = agent.ctl(&["reload"]);
    assert_eq!(out.code, Some(1), "an unknown dependency is refused: {out:?}");
    let at = format!("{}:{line}:", agent.config.display());
    assert!(out.stderr.contains("nosuch") && out.stderr.contains(&at), "{at} in {out:?}");
    assert_eq!(pids(&mut agent), before, "nothing running changed");

    agent.write_config(&config(""));
    agent.ctl(&["reload"]).ok();
    assert_eq!(started_with_web(&mut agent), ["web"], "no dependency is left");
}

#[test]
fn a_dependency_cycle_an_unknown_name_or_a_misused_key_is_refused_at_load_with_file_and_line() {
    let cases = [
        (
            "[process.a]\ncommand = [\"x\"]\ndepends_on = { b = \"running\" }\n\
             [process.b]\ncommand = [\"x\"]\ndepends_on = { a = \"running\" }\n",
            ":3:",
            &["cycle", "a", "b"][..],
        ),
        ("[process.a]\ncommand = [\"x\"]\n\ndepends_on = { ghost = \"completed\" }\n", ":4:", &["ghost"][..]),
        ("[process.a]\ncommand = [\"x\"]\nwatchdog = \"1s\"\n", ":3:", &["watchdog", "notify"][..]),
        ("[process.a]\ncommand = [\"x\"]\nready = { tcp = \"127.0.0.1:{port}\" }\n", ":3:", &["{port}", "port"][..]),
    ];
    for (toml, line, words) in cases {
        let agent = Agent::new(toml);
        let out = run(&mut agent.command(), None, WAIT);
        assert_eq!(out.code, Some(1), "{toml:?}: {out:?}");
        let config = agent.config.display().to_string();
        assert!(out.stderr.contains(&format!("{config}{line}")), "{toml:?}: {}", out.stderr);
        for word in words {
            assert!(out.stderr.contains(word), "{word:?} in {}", out.stderr);
        }
    }
}

// ---------------------------------------------------------------------------------------
// rolling restarts

#[test]
fn a_rolling_restart_waits_for_each_replacement_to_be_ready() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    let broken = agent.path("broken");
    let config = |release: u32| {
        format!(
            "[process.web]\ncommand = {}\ninstances = 3\nready = {{ exec = [\"test\", \"-e\", \"ready.{{instance}}\"] }}\n\
             ready_timeout = \"1s\"\nstart_retries = 1\nenv = {{ RELEASE = \"{release}\" }}\n",
            sh(&format!(
                "i=$PROCCTL_INSTANCE; trap 'rm -f ready.$i; echo down $i $(date +%s.%N) >> {0}; exit 0' TERM; \
                 echo up $i $(date +%s.%N) >> {0}; [ -e {1} ] && exec sleep 100000; \
                 sleep 0.3; touch ready.$i; while :; do sleep 0.02; done",
                log.display(),
                broken.display()
            ))
        )
    };
    agent.write_config(&config(1));
    agent.launch();
    // The log lines from `from` on: each instance goes down, its replacement comes up, and
    // the next one goes down only once that replacement is ready (0.3s after it came up).
    let rolled = |from: usize| {
        let events: Vec<(String, String, f64)> = lines(&log)[from..]
            .iter()
            .map(|l| {
                let words: Vec<&str> = l.split(' ').collect();
                (words[0].to_string(), words[1].to_string(), words[2].parse().unwrap())
            })
            .collect();
        let order: Vec<String> = events.iter().map(|(what, i, _)| format!("{what} {i}")).collect();
        assert_eq!(order, ["down 0", "up 0", "down 1", "up 1", "down 2", "up 2"], "{events:?}");
        for (up, next_down) in [(1, 2), (3, 4)] {
            let gap = events[next_down].2 - events[up].2;
            assert!(gap >= 0.3, "the next instance went down {gap:.3}s after the replacement began: {events:?}");
        }
    };
    let old = agent.wait_running("web", 3);
    let out = agent.ctl(&["restart", "web"]);
    out.ok();
    let new = agent.wait_running("web", 3);
    for (i, (old, new)) in old.iter().zip(&new).enumerate() {
        assert!(out.stdout.contains(&format!("web:{i} restarted: pid {old} -> {new}")), "{out:?}");
    }
    rolled(3);

    // A reload's restart of a changed process rolls the same way.
    agent.write_config(&config(2));
    agent.ctl(&["reload"]).ok();
    rolled(9);
    let new = agent.wait_running("web", 3);

    // A release whose replacement never gets ready halts the roll.
    std::fs::write(&broken, "").unwrap();
    let out = agent.ctl(&["restart", "web"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("web:0 did not start"), "{out:?}");
    assert!(out.stderr.contains("web:1 not restarted"), "{out:?}");
    assert_eq!(agent.pid_of("web", 1), Some(new[1]), "the rest keep serving");
    assert_eq!(agent.pid_of("web", 2), Some(new[2]));
    assert_eq!(agent.state_of("web", 0), "fatal");
}

// ---------------------------------------------------------------------------------------
// procctl wait

/// How far apart two moments are.
fn apart(a: Instant, b: Instant) -> Duration {
    if a > b { a - b } else { b - a }
}

#[test]
fn wait_returns_as_soon_as_each_state_is_reached() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    agent.write_config(&format!(
        "[process.gated]\ncommand = {}\nstart_secs = \"0s\"\nready = {{ log = \"^listening$\" }}\n\
         [process.slow]\ncommand = {}\nstart_secs = \"0s\"\n\
         [process.job]\ncommand = {}\nstart_secs = \"0s\"\nrestart = \"never\"\n\
         [process.crashy]\ncommand = {}\nstart_secs = \"1s\"\nstart_retries = 2\nautostart = false\n",
        sh("while [ ! -e go ]; do sleep 0.02; done; echo listening; exec sleep 100000"),
        sh(&stoppable(&log, "slow", "0.4")),
        sh("while [ ! -e job-go ]; do sleep 0.02; done; exit 0"),
        sh("exit 3"),
    ));
    agent.launch();
    let wait = Background::start(&agent, &["wait", "gated", "--timeout", "20s"]);
    holds_for(Duration::from_millis(300), Duration::from_millis(20), "wait waits", || !wait.is_finished());
    let go = Instant::now();
    std::fs::write(agent.path("go"), "").unwrap();
    let waited = wait.finish();
    waited.out.ok();
    assert!(waited.at - go < Duration::from_millis(800), "running: took {:?}", waited.at - go);
    assert_eq!(agent.state_of("gated", 0), "running");

    let wait = Background::start(&agent, &["wait", "job", "--for", "exited", "--timeout", "20s"]);
    holds_for(Duration::from_millis(200), Duration::from_millis(20), "wait waits", || !wait.is_finished());
    std::fs::write(agent.path("job-go"), "").unwrap();
    let go = Instant::now();
    let waited = wait.finish();
    waited.out.ok();
    assert!(waited.at - go < Duration::from_millis(800), "exited: took {:?}", waited.at - go);

    agent.wait_state("slow", 0, "running");
    let wait = Background::start(&agent, &["wait", "slow", "--for", "stopped", "--timeout", "20s"]);
    holds_for(Duration::from_millis(200), Duration::from_millis(20), "wait waits", || !wait.is_finished());
    let stop = Background::start(&agent, &["stop", "slow"]);
    let waited = wait.finish();
    waited.out.ok();
    let stopped = stop.finish();
    stopped.out.ok();
    let gap = apart(waited.at, stopped.at);
    assert!(gap < Duration::from_millis(300), "wait and stop end together: {gap:?} apart");
    assert!(lines(&log).contains(&"stop-end slow".to_string()), "{:?}", lines(&log));

    let wait = Background::start(&agent, &["wait", "crashy", "--for", "fatal", "--timeout", "20s"]);
    holds_for(Duration::from_millis(200), Duration::from_millis(20), "wait waits", || !wait.is_finished());
    let start = Background::start(&agent, &["start", "crashy"]);
    let waited = wait.finish();
    waited.out.ok();
    let started = start.finish();
    assert!(started.out.code == Some(1) && started.out.stderr.contains("crashy:0"), "{started:?}");
    let gap = apart(waited.at, started.at);
    assert!(gap < Duration::from_millis(300), "wait and start end together: {gap:?} apart");
    assert_eq!(agent.state_of("crashy", 0), "fatal");
}

#[test]
fn wait_times_out_naming_the_instances_not_there_and_their_states() {
    let mut agent = Agent::start(
        "[process.w]\ncommand = [\"sleep\", \"100000\"]\ninstances = 3\nstart_secs = \"0s\"\n\
         [process.p]\ncommand = [\"sleep\", \"100000\"]\nready = \"notify\"\n",
    );
    agent.wait_running("w", 3);
    agent.ctl(&["stop", "w:1"]).ok();
    let started = Instant::now();
    let out = agent.ctl(&["wait", "w", "--for", "stopped", "--timeout", "300ms"]);
    let took = started.elapsed();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    assert!(out.stderr.contains("w:0 is running") && out.stderr.contains("w:2 is running"), "{out:?}");
    assert!(!out.stderr.contains("w:1"), "w:1 is stopped: {out:?}");
    let out = agent.ctl(&["wait", "p", "--timeout", "200ms"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("p:0 is starting"), "{out:?}");
    agent.ctl(&["wait", "w:1", "--for", "stopped", "--timeout", "1s"]).ok();
}

#[test]
fn wait_for_gone_returns_once_scale_has_taken_the_instances_away() {
    let mut agent = Agent::new("");
    let log = agent.path("log");
    agent.write_config(&format!(
        "[process.w]\ncommand = {}\ninstances = 3\nstart_secs = \"0s\"\n",
        sh(&stoppable(&log, "w", "0.3"))
    ));
    agent.launch();
    agent.wait_running("w", 3);
    agent.ctl(&["wait", "nosuch", "--for", "gone", "--timeout", "1s"]).ok();
    let out = agent.ctl(&["wait", "nosuch", "--timeout", "1s"]);
    assert!(out.code == Some(1) && out.stderr.contains("nosuch"), "{out:?}");
    let out = agent.ctl(&["wait", "w", "--for", "gone", "--timeout", "200ms"]);
    assert_eq!(out.code, Some(1), "they are all there: {out:?}");
    assert!(out.stderr.contains("w:0 is running"), "{out:?}");

    let wait = Background::start(&agent, &["wait", "w:2", "--for", "gone", "--timeout", "20s"]);
    holds_for(Duration::from_millis(200), Duration::from_millis(20), "wait waits", || !wait.is_finished());
    agent.ctl(&["scale", "w", "2"]).ok();
    wait.finish().out.ok();
    assert_eq!(agent.list("w").len(), 2);

    let wait = Background::start(&agent, &["wait", "w", "--for", "gone", "--timeout", "20s"]);
    holds_for(Duration::from_millis(200), Duration::from_millis(20), "wait waits", || !wait.is_finished());
    agent.ctl(&["scale", "w", "0"]).ok();
    wait.finish().out.ok();
    assert!(agent.list("w").is_empty());
}
