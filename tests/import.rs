//! `procctl import` (SPEC.md "Coming from supervisord, a Procfile or pm2"): real files of
//! each kind become a procctl.toml that a real procagent loads as it is and that starts the
//! same number of instances of the same commands, checked in /proc; for supervisord, against
//! a real supervisord running the same file.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{
    Agent, CTL_TIMEOUT, NOBODY, Output, WAIT, bin, children_of, kill, poll_until, root, run, wait_until,
};

/// Laravel's queue documentation, "Configuring Supervisor", word for word.
const LARAVEL: &str = "\
[program:laravel-worker]
process_name=%(program_name)s_%(process_num)02d
command=php /home/forge/app.com/artisan queue:work sqs --sleep=3 --tries=3 --max-time=3600
autostart=true
autorestart=true
stopasgroup=true
killasgroup=true
user=forge
numprocs=8
redirect_stderr=true
stdout_logfile=/home/forge/app.com/worker.log
stopwaitsecs=3600
";

/// A number of seconds for `sleep` that only this test binary and `tag` use.
fn marker(tag: u32) -> String {
    format!("{}{tag:02}", 6_000_000 + std::process::id())
}

fn import(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("procctl")).arg("import").args(args).current_dir(dir), None, CTL_TIMEOUT)
}

/// `procctl import` that must succeed; its procctl.toml.
#[track_caller]
fn imported(dir: &Path, args: &[&str]) -> String {
    let out = import(dir, args);
    assert_eq!(out.code, Some(0), "procctl import {args:?} failed: {out:?}");
    assert!(out.stderr.is_empty(), "procctl import {args:?} complained: {}", out.stderr);
    out.stdout
}

fn argv(pid: i32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/cmdline"))
}

fn environ(pid: i32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/environ"))
}

fn nul_separated(path: &str) -> Vec<String> {
    let bytes = fs::read(path).unwrap_or_default();
    bytes.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect()
}

fn status_field(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line[field.len() + 1..].split_whitespace().next().unwrap().to_string()
}

/// Starts an agent on `toml` whose directory others may enter (an instance run as another
/// user starts in it) and waits until each process has its count of running instances;
/// the pids of each.
fn load(toml: &str, counts: &[(&str, usize)]) -> (Agent, BTreeMap<String, Vec<i32>>) {
    let mut agent = Agent::new(toml);
    fs::set_permissions(agent.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    agent.launch();
    let mut pids = BTreeMap::new();
    for (name, count) in counts {
        pids.insert(name.to_string(), agent.wait_running(name, *count));
    }
    let all = agent.list("all");
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(all.len(), total, "instances other than those expected: {all:?}");
    (agent, pids)
}

/// A real supervisord in the foreground on `config`. Dropping it stops it with SIGTERM (it
/// stops its programs, each in a process group of its own, first) and kills what is left.
struct Supervisord {
    child: Child,
    /// Its programs' pids with their argv, so a pid reused since is never touched.
    programs: Vec<(i32, Vec<String>)>,
}

impl Supervisord {
    fn start(config: &Path) -> Supervisord {
        let mut command = Command::new("supervisord");
        command.arg("-n").arg("-c").arg(config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it touches only the new process.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("supervisord (apt-get install supervisor, as .ci/run does)");
        Supervisord { child, programs: vec![] }
    }

    /// The argv of each of its programs, once there are `count` and each has exec'd.
    fn fleet(&mut self, count: usize) -> Vec<Vec<String>> {
        let pid = self.child.id() as i32;
        let mut fleet = vec![];
        wait_until(WAIT, &format!("supervisord runs {count} programs"), || {
            self.programs = children_of(pid).into_iter().map(|p| (p, argv(p))).collect();
            fleet = self.programs.iter().map(|(_, argv)| argv.clone()).collect();
            fleet.len() == count && fleet.iter().all(|a| !a.is_empty() && !a.iter().any(|w| w.contains("supervisord")))
        });
        fleet.sort();
        fleet
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        kill(self.child.id() as i32, libc::SIGTERM);
        poll_until(WAIT, Duration::from_millis(5), || self.child.try_wait().ok().flatten().is_some());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (pid, was) in &self.programs {
            if argv(*pid) == *was {
                kill(-pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn laravels_queue_worker_section_imports_and_runs_eight_workers() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("laravel-worker.conf"), LARAVEL).unwrap();
    let toml = imported(dir.path(), &["laravel-worker.conf"]);
    for line in [
        "[process.laravel-worker]",
        r#"command = ["php", "/home/forge/app.com/artisan", "queue:work", "sqs", "--sleep=3", "--tries=3", "--max-time=3600"]"#,
        "instances = 8  # numprocs=8",
        "restart = \"always\"  # autorestart=true",
        "autostart = true",
        "stop_timeout = \"3600s\"",
        "user = \"forge\"",
        "# process_name=%(program_name)s_%(process_num)02d: procctl names its instances laravel-worker:0 … laravel-worker:7",
        "# stdout_logfile=/home/forge/app.com/worker.log: procctl keeps each instance's output in its state directory",
    ] {
        assert!(toml.lines().any(|l| l.starts_with(line)), "no line `{line}` in:\n{toml}");
    }

    // The same section on a machine without forge's home: artisan is a PHP script here, and the
    // user one that exists (or none, for an agent that is not root).
    let app = tempfile::tempdir().unwrap();
    fs::set_permissions(app.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let artisan = app.path().join("artisan");
    fs::write(&artisan, "<?php\nsleep(100000);\n").unwrap();
    fs::set_permissions(&artisan, fs::Permissions::from_mode(0o644)).unwrap();
    let user = if root() { "user=nobody\n".to_string() } else { String::new() };
    let here =
        LARAVEL.replace("/home/forge/app.com/artisan", &artisan.display().to_string()).replace("user=forge\n", &user);
    fs::write(dir.path().join("here.conf"), here).unwrap();
    let toml = imported(dir.path(), &["here.conf"]);
    let (_agent, pids) = load(&toml, &[("laravel-worker", 8)]);
    let want =
        ["php", &artisan.display().to_string(), "queue:work", "sqs", "--sleep=3", "--tries=3", "--max-time=3600"];
    for &pid in &pids["laravel-worker"] {
        assert_eq!(argv(pid), want, "pid {pid}");
        if root() {
            assert_eq!(status_field(pid, "Uid"), NOBODY.to_string(), "pid {pid} runs as nobody");
        }
    }
}

#[test]
fn a_supervisord_config_with_includes_runs_the_fleet_that_supervisord_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    fs::create_dir(path.join("conf.d")).unwrap();
    let (queue, slot) = (marker(1), marker(2));
    fs::write(
        path.join("supervisord.conf"),
        "[supervisord]\nnodaemon=true\nlogfile=%(here)s/supervisord.log\npidfile=%(here)s/supervisord.pid\n\
         childlogdir=%(here)s\n\n[include]\nfiles = conf.d/*.conf\n",
    )
    .unwrap();
    fs::write(
        path.join("conf.d/queue.conf"),
        format!(
            "[program:queue]\nprocess_name=%(program_name)s_%(process_num)02d\ncommand=sleep {queue}\nnumprocs=3\n\
             environment=QUEUES=\"high,low\",GREETING='hello world',HOME_APP=%(ENV_HOME)s/app\nstartsecs=0\n"
        ),
    )
    .unwrap();
    fs::write(
        path.join("conf.d/slots.conf"),
        format!(
            "; one per slot: the command differs by process_num\n[program:slot]\n\
             process_name=%(program_name)s_%(process_num)02d\ncommand=sleep {slot}%(process_num)d\n\
             numprocs=2\nnumprocs_start=1\nstartsecs=0\n"
        ),
    )
    .unwrap();
    fs::write(path.join("conf.d/ignored.ini"), "[program:ignored]\ncommand=sleep 1\n").unwrap();

    let toml = imported(path, &["supervisord.conf"]);
    assert!(toml.contains(&format!("#     with {} ([include])", path.join("conf.d/queue.conf").display())), "{toml}");
    assert!(!toml.contains("ignored"), "{toml}");
    let (_agent, pids) = load(&toml, &[("queue", 3), ("slot_01", 1), ("slot_02", 1)]);
    let mut ours: Vec<Vec<String>> = pids.values().flatten().map(|&pid| argv(pid)).collect();
    ours.sort();
    let home = std::env::var("HOME").unwrap_or_default();
    for &pid in &pids["queue"] {
        let env = environ(pid);
        for var in ["QUEUES=high,low".to_string(), "GREETING=hello world".into(), format!("HOME_APP={home}/app")] {
            assert!(env.contains(&var), "queue pid {pid} lacks {var}: {env:?}");
        }
    }

    let mut supervisord = Supervisord::start(&path.join("supervisord.conf"));
    let theirs = supervisord.fleet(5);
    assert_eq!(ours, theirs, "procagent runs what supervisord runs");
    let want: Vec<Vec<String>> = [
        vec!["sleep".to_string(), queue.clone()],
        vec!["sleep".into(), queue.clone()],
        vec!["sleep".into(), queue.clone()],
        vec!["sleep".into(), format!("{slot}1")],
        vec!["sleep".into(), format!("{slot}2")],
    ]
    .into();
    assert_eq!(ours, want);
}

#[test]
fn a_procfile_runs_each_line_with_the_port_foreman_gives_it() {
    let dir = tempfile::tempdir().unwrap();
    let worker = marker(3);
    fs::write(dir.path().join("Procfile"), format!("# the app\nworker: sleep {worker}\nweb: sleep $PORT\n")).unwrap();
    let toml = imported(dir.path(), &["Procfile"]);
    let (_agent, pids) = load(&toml, &[("worker", 1), ("web", 1)]);
    assert_eq!(argv(pids["worker"][0]), ["sleep", worker.as_str()]);
    let web = pids["web"][0];
    assert_eq!(argv(web), ["/bin/sh", "-c", "sleep $PORT"]);
    let mut sleeper = vec![];
    wait_until(WAIT, "the web line's shell runs sleep", || {
        sleeper = children_of(web).into_iter().map(argv).collect();
        !sleeper.is_empty()
    });
    assert_eq!(sleeper, [["sleep", "5100"]], "the second process type gets foreman's PORT 5100");
}

#[test]
fn a_pm2_ecosystem_file_runs_its_apps_as_pm2_would() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = marker(4);
    fs::write(dir.path().join("jobs.php"), "<?php\nsleep(100000);\n").unwrap();
    fs::write(
        dir.path().join("ecosystem.json"),
        format!(
            r#"{{
  "apps": [
    {{
      "name": "ticker",
      "script": "sleep",
      "args": "{sleeper}",
      "instances": 2,
      "autorestart": true
    }},
    {{
      "name": "jobs",
      "script": "jobs.php",
      "args": ["--queue", "high"],
      "env": {{ "QUEUE": "high", "WORKERS": 2 }},
      "max_restarts": 3,
      "kill_timeout": 3000,
      "out_file": "/var/log/jobs.log"
    }}
  ]
}}
"#
        ),
    )
    .unwrap();
    let toml = imported(dir.path(), &["ecosystem.json"]);
    assert!(toml.contains("stop_signal = \"INT\"  # pm2 stops with SIGINT"), "{toml}");
    assert!(toml.contains("# \"out_file\": \"/var/log/jobs.log\": procctl keeps"), "{toml}");
    let (_agent, pids) = load(&toml, &[("ticker", 2), ("jobs", 1)]);
    let sleep = fs::canonicalize(which("sleep")).unwrap();
    for &pid in &pids["ticker"] {
        let argv = argv(pid);
        assert_eq!(fs::canonicalize(&argv[0]).unwrap(), sleep, "{argv:?}");
        assert_eq!(argv[1..], [sleeper.as_str()]);
    }
    let jobs = pids["jobs"][0];
    let script = dir.path().join("jobs.php");
    assert_eq!(argv(jobs), ["php", &script.display().to_string(), "--queue", "high"]);
    let env = environ(jobs);
    assert!(env.contains(&"QUEUE=high".to_string()) && env.contains(&"WORKERS=2".to_string()), "{env:?}");
}

fn which(program: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).expect(program)
}

/// The sample that `echo_supervisord_conf` prints: as it is (nothing to run), and with its
/// sample program section uncommented, as one starts from it.
#[test]
fn the_sample_config_of_echo_supervisord_conf_imports_and_loads() {
    let sample = run(&mut Command::new("echo_supervisord_conf"), None, CTL_TIMEOUT);
    assert_eq!(sample.code, Some(0), "echo_supervisord_conf (apt-get install supervisor): {sample:?}");
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("supervisord.conf"), &sample.stdout).unwrap();
    let toml = imported(dir.path(), &["supervisord.conf"]);
    for line in [
        "# [unix_http_server] file=/tmp/supervisor.sock: not carried over",
        "# [supervisord] logfile=/tmp/supervisord.log",
    ] {
        assert!(toml.contains(line), "no `{line}` in:\n{toml}");
    }
    let (_agent, _) = load(&toml, &[]);

    // Uncomment the sample [program:theprogramname] (up to the blank line that ends it).
    let mut inside = false;
    let program: Vec<String> = sample
        .stdout
        .lines()
        .map(|line| {
            inside = (inside && !line.trim().is_empty()) || line.starts_with(";[program:");
            if inside { line.trim_start_matches(';').to_string() } else { line.to_string() }
        })
        .collect();
    let program = program.join("\n") + "\n";
    assert!(program.contains("\n[program:theprogramname]\ncommand=/bin/cat"), "{program}");
    fs::write(dir.path().join("program.conf"), &program).unwrap();
    let toml = imported(dir.path(), &["program.conf"]);
    for line in [
        "command = [\"/bin/cat\"]",
        "stop_signal = \"QUIT\"",
        "cwd = \"/tmp\"",
        "env = { A = \"1\", B = \"2\" }",
        "user = \"chrism\"",
        "umask = \"022\"",
        "pipe = \"stdin\"",
        "log_max_size = \"1MiB\"",
        "# stdout_logfile=/a/path: procctl keeps",
        "# priority=999: procctl starts",
    ] {
        assert!(toml.lines().any(|l| l.starts_with(line)), "no line `{line}` in:\n{toml}");
    }
    let user = if root() { "user=nobody" } else { "" };
    fs::write(dir.path().join("here.conf"), program.replace("user=chrism", user)).unwrap();
    let toml = imported(dir.path(), &["here.conf"]);
    let (_agent, pids) = load(&toml, &[("theprogramname", 1)]);
    let cat = pids["theprogramname"][0];
    assert_eq!(argv(cat), ["/bin/cat"], "cat keeps running: its stdin is a pipe from the agent");
    assert_eq!(fs::read_link(format!("/proc/{cat}/cwd")).unwrap(), Path::new("/tmp"));
    assert_eq!(status_field(cat, "Umask"), "0022");
    let env = environ(cat);
    assert!(env.contains(&"A=1".to_string()) && env.contains(&"B=2".to_string()), "{env:?}");
}

#[test]
fn files_it_cannot_read_fail_naming_file_line_and_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "bad.conf",
            "[program:w]\ncommand=php worker.php\nnumprocs=eight\n",
            "bad.conf:3: [program:w] numprocs: expected a whole number, found `eight`",
        ),
        (
            "quote.conf",
            "[program:w]\ncommand=php 'worker.php\n",
            "quote.conf:2: [program:w] command: a ' quote is not closed",
        ),
        (
            "env.conf",
            "[program:w]\ncommand=x\nenvironment=A=\"1\",B\n",
            "env.conf:3: [program:w] environment: expected KEY=VALUE pairs",
        ),
        ("Procfile", "web: php -S 0.0.0.0:8000\nthis is not a process\n", "Procfile:2: expected `name: command`"),
        (
            "ecosystem.json",
            "{\"apps\": [\n  {\"script\": \"a.js\",\n   \"instances\": \"lots\"}\n]}\n",
            "ecosystem.json:3: apps[0].instances: expected a number",
        ),
        (
            "ecosystem.config.js",
            "module.exports = { apps: [] }\n",
            "ecosystem.config.js: a JavaScript ecosystem file cannot be read",
        ),
        ("notes.txt", "just some words\n", "notes.txt:1: cannot tell the format"),
    ];
    for (name, text, want) in cases {
        fs::write(dir.path().join(name), text).unwrap();
        let out = import(dir.path(), &[name]);
        assert_eq!(out.code, Some(1), "{name}: {out:?}");
        assert!(out.stdout.is_empty(), "{name}: printed a config: {}", out.stdout);
        assert!(out.stderr.starts_with(&format!("procctl: {want}")), "{name}: {}", out.stderr);
    }
    let missing = import(dir.path(), &["missing.conf"]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.starts_with("procctl: missing.conf: cannot read:"), "{}", missing.stderr);
    let usage = import(dir.path(), &[]);
    assert_eq!(usage.code, Some(2), "no FILE is a usage error: {usage:?}");
    // --from reads a file as told, whatever its content suggests.
    fs::write(dir.path().join("procs"), "[web]: x\n").unwrap();
    let forced = import(dir.path(), &["--from", "procfile", "procs"]);
    assert_eq!(forced.code, Some(1));
    assert!(forced.stderr.starts_with("procctl: procs:1: expected `name: command`"), "{}", forced.stderr);
}
