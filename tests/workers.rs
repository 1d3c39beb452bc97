//! The worker libraries (clients/php, clients/python) under a real agent, with the real
//! interpreters: the same test worker written on each base (PHP, Python plain, Python
//! asyncio), driven by its `arg` table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Agent, SPARE, WAIT, Watcher, lines, run, wait_until};

/// The three bases, as (process name, language).
const KINDS: [&str; 3] = ["php", "py", "pya"];

/// How long a `procctl stop` of a library worker may take; its stop_timeout is far longer,
/// so a worker that did not end by itself fails here rather than being killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

const PHP_WORKER: &str = r#"<?php
require getenv('LIB') . '/autoload.php';

class TestWorker extends Procctl\AbstractProcess
{
    private $out;

    protected function run($arg)
    {
        $this->out = fopen($arg['out'] . '.' . $this->getInstance(), 'a');
        $this->note('run ' . $this->getProcessName() . ' ' . $arg['color']);
        if (isset($arg['tick_ms'])) {
            $this->addTimer($arg['tick_ms'], fn() => $this->note('tick'));
        }
        if (isset($arg['gate'])) {
            while (!file_exists($arg['gate'])) {
                if (!$this->wait(20)) {
                    return;
                }
            }
            $this->ready('serving');
        }
        if (!empty($arg['loop'])) {
            while ($this->wait(1000)) {
            }
            $this->note('loop over');
        }
    }

    protected function onPipeReadable(string $message)
    {
        if ($message === 'boom') {
            throw new RuntimeException('boom from the worker');
        }
        if (!empty($this->getArg()['record'])) {
            $this->note($message);
        }
        usleep(($this->getArg()['work_ms'] ?? 0) * 1000);
        return $this->getProcessName() . ':' . $this->getInstance() . ' ' . $this->getArg()['color'] . ' ' . $message;
    }

    protected function onShutDown()
    {
        $this->note('shutdown');
    }

    protected function onException(\Throwable $throwable, ...$args)
    {
        $this->note('exception ' . $throwable->getMessage());
    }

    private function note(string $line): void
    {
        fwrite($this->out, "$line\n");
        fflush($this->out);
    }
}

(new TestWorker())->start();
"#;

const PY_WORKER: &str = r#"
import os, time
from procctl_worker import Worker


class TestWorker(Worker):
    def note(self, line):
        self.out.write(line + "\n")
        self.out.flush()

    def run(self, arg):
        self.out = open(f"{arg['out']}.{self.instance}", "a")
        self.note(f"run {self.process_name} {arg['color']}")
        if "tick_ms" in arg:
            self.add_timer(arg["tick_ms"], lambda timer: self.note("tick"))
        if "gate" in arg:
            while not os.path.exists(arg["gate"]):
                if not self.wait(20):
                    return
            self.ready("serving")
        if arg.get("loop"):
            while self.wait(1000):
                pass
            self.note("loop over")

    def on_pipe_readable(self, message):
        if message == "boom":
            raise RuntimeError("boom from the worker")
        if self.arg.get("record"):
            self.note(message)
        time.sleep(self.arg.get("work_ms", 0) / 1000)
        return f"{self.process_name}:{self.instance} {self.arg['color']} {message}"

    def on_shutdown(self):
        self.note("shutdown")

    def on_exception(self, exc):
        self.note(f"exception {exc}")


TestWorker().start()
"#;

const PYA_WORKER: &str = r#"
import asyncio, os
from procctl_worker import AsyncWorker


class TestWorker(AsyncWorker):
    def note(self, line):
        self.out.write(line + "\n")
        self.out.flush()

    async def run(self, arg):
        self.out = open(f"{arg['out']}.{self.instance}", "a")
        self.note(f"run {self.process_name} {arg['color']}")
        if "tick_ms" in arg:
            self.add_timer(arg["tick_ms"], lambda timer: self.note("tick"))
        if "gate" in arg:
            while not os.path.exists(arg["gate"]):
                if not await self.wait(20):
                    return
            self.ready("serving")
        if arg.get("loop"):
            while await self.wait(1000):
                pass
            self.note("loop over")

    async def on_pipe_readable(self, message):
        if message == "boom":
            raise RuntimeError("boom from the worker")
        if self.arg.get("record"):
            self.note(message)
        await asyncio.sleep(self.arg.get("work_ms", 0) / 1000)
        return f"{self.process_name}:{self.instance} {self.arg['color']} {message}"

    async def on_shutdown(self):
        self.note("shutdown")

    def on_exception(self, exc):
        self.note(f"exception {exc}")


TestWorker().start()
"#;

/// A config with the test worker on each base, `instances` of each, with `arg` entries
/// (TOML inline-table items) added to `out` and `color`, and `extra` keys.
fn config(agent: &Agent, instances: u32, arg: &str, extra: &str) -> String {
    let php = std::process::Command::new("php").arg("--version").output();
    assert!(php.is_ok_and(|o| o.status.success()), "php is not installed (apt-get install php-cli; .ci/run does)");
    let mut toml = String::from(SPARE);
    for (kind, script, interpreter) in
        [("php", PHP_WORKER, "php"), ("py", PY_WORKER, "python3"), ("pya", PYA_WORKER, "python3")]
    {
        let path = agent.path(&format!("{kind}.worker"));
        std::fs::write(&path, script).unwrap();
        let out = agent.path(&format!("out.{kind}"));
        toml.push_str(&format!(
            "[process.{kind}]\ncommand = [\"{interpreter}\", \"{}\"]\ninstances = {instances}\nstart_secs = \"0s\"\n\
             stop_timeout = \"300s\"\nenv = {{ LIB = \"{lib}/php\", PYTHONPATH = \"{lib}/python\" }}\n\
             arg = {{ out = \"{}\", color = \"blue\"{arg} }}\n{extra}\n",
            path.display(),
            out.display(),
            lib = repo().join("clients").display(),
        ));
    }
    toml
}

/// An agent started on `config(instances, arg, extra)`.
fn launched(instances: u32, arg: &str, extra: &str) -> Agent {
    let mut agent = Agent::new("");
    agent.write_config(&config(&agent, instances, arg, extra));
    agent.launch();
    agent
}

fn notes(agent: &Agent, kind: &str, index: u32) -> Vec<String> {
    lines(&agent.path(&format!("out.{kind}.{index}")))
}

/// Waits until `count` instances of `kind` run and each has reached its `run()`: a stop
/// before that finds the interpreter still loading, before the library handles signals.
fn started(agent: &mut Agent, kind: &str, count: u32) -> Vec<i32> {
    let pids = agent.wait_running(kind, count as usize);
    wait_until(WAIT, &format!("every {kind} reached run()"), || (0..count).all(|i| !notes(agent, kind, i).is_empty()));
    pids
}

fn stop(agent: &Agent, target: &str) {
    let out = run(&mut agent.ctl_command(&["stop", target]), None, STOP_DEADLINE);
    out.ok();
}

#[test]
fn messages_get_their_returned_replies_and_run_gets_the_arg_table() {
    let mut agent = launched(2, "", "");
    for kind in KINDS {
        agent.wait_running(kind, 2);
        for index in 0..2 {
            let out = agent.ctl(&["send", "--reply", &format!("{kind}:{index}"), "hello", "there"]);
            assert_eq!(out.ok().stdout, format!("{kind}:{index} blue hello there\n"));
        }
        assert_eq!(notes(&agent, kind, 1)[0], format!("run {kind} blue"), "run($arg) saw the arg table");
    }
}

#[test]
fn on_shutdown_runs_on_stop_and_the_stop_takes_only_as_long_as_the_worker() {
    let mut agent = launched(1, "", "");
    for kind in KINDS {
        started(&mut agent, kind, 1);
        // stop_timeout is 300s: a stop that returns before STOP_DEADLINE ended by itself.
        stop(&agent, kind);
        assert_eq!(notes(&agent, kind, 0).last().map(String::as_str), Some("shutdown"), "{kind}");
        assert_eq!(agent.row(kind, 0)["last_exit"], serde_json::json!({"code": 0}), "{kind} exited 0");
    }
}

#[test]
fn a_run_that_loops_by_itself_ends_its_loop_on_stop() {
    let mut agent = launched(1, ", loop = true", "");
    for kind in KINDS {
        started(&mut agent, kind, 1);
        let out = agent.ctl(&["send", "--reply", kind, "while looping"]);
        assert_eq!(out.ok().stdout, format!("{kind}:0 blue while looping\n"), "messages are served inside wait()");
        stop(&agent, kind);
        let seen = notes(&agent, kind, 0);
        assert_eq!(seen[seen.len() - 2..], ["loop over", "shutdown"], "{kind}");
        assert_eq!(agent.row(kind, 0)["last_exit"], serde_json::json!({"code": 0}), "{kind} exited 0");
    }
}

#[test]
fn an_uncaught_exception_is_logged_with_its_trace_exits_1_and_procctl_starts_it_again() {
    let mut agent = launched(1, "", "");
    for kind in KINDS {
        agent.wait_running(kind, 1);
        let before = agent.pid_of(kind, 0);
        let out = agent.ctl(&["send", "--reply", "--timeout", "10s", kind, "boom"]);
        assert_eq!(out.code, Some(1), "no reply comes from a worker that threw: {out:?}");
        wait_until(WAIT, &format!("{kind} runs again"), || {
            let row = agent.row(kind, 0);
            row["state"] == "running" && row["pid"].as_i64().map(|p| p as i32) != before
        });
        let row = agent.row(kind, 0);
        assert_eq!((&row["last_exit"], &row["restarts"]), (&serde_json::json!({"code": 1}), &1.into()), "{kind}");
        assert!(notes(&agent, kind, 0).contains(&"exception boom from the worker".to_string()), "{kind}");
        let logs = agent.ctl(&["logs", kind, "-n", "50"]).ok().stdout.clone();
        let trace = if kind == "php" { "#0 " } else { "Traceback (most recent call last)" };
        assert!(logs.contains("boom from the worker") && logs.contains(trace), "{kind} logged the trace: {logs}");
    }
}

#[test]
fn ready_tells_a_notify_process_it_is_running_with_its_status() {
    let mut agent = Agent::new("");
    let gate = agent.path("gate");
    agent.write_config(&config(&agent, 1, &format!(", gate = \"{}\"", gate.display()), "ready = \"notify\"\n"));
    agent.launch();
    for kind in KINDS {
        wait_until(WAIT, &format!("{kind} ran"), || !notes(&agent, kind, 0).is_empty());
        assert_eq!(agent.state_of(kind, 0), "starting", "{kind} is not ready before ready()");
    }
    std::fs::write(&gate, "").unwrap();
    for kind in KINDS {
        agent.wait_running(kind, 1);
        assert_eq!(agent.row(kind, 0)["status"], "serving", "{kind}");
    }
}

#[test]
fn timers_fire_while_no_message_comes_and_stop_at_a_stop() {
    let agent = launched(1, ", tick_ms = 50", "");
    for kind in KINDS {
        wait_until(WAIT, &format!("{kind}'s timer fired three times"), || {
            notes(&agent, kind, 0).iter().filter(|l| *l == "tick").count() >= 3
        });
        stop(&agent, kind);
        assert_eq!(notes(&agent, kind, 0).last().map(String::as_str), Some("shutdown"), "no tick after the stop");
    }
}

#[test]
fn ten_thousand_messages_through_send_stdin_arrive_in_order() {
    let mut agent = launched(1, ", record = true", "");
    let messages: Vec<String> = (0..10_000).map(|i| format!("message {i}")).collect();
    let input = messages.join("\n") + "\n";
    for kind in KINDS {
        agent.wait_running(kind, 1);
        let out = agent.ctl_stdin(&["send", kind, "-"], &input);
        out.ok();
        // The first line is run's.
        wait_until(WAIT, &format!("{kind} recorded 10000 messages"), || notes(&agent, kind, 0).len() > messages.len());
        assert_eq!(notes(&agent, kind, 0)[1..], messages[..], "{kind}: every message, in order");
    }
}

#[test]
fn a_restart_at_once_after_40_jobs_loses_none_of_their_replies() {
    let mut agent = launched(4, ", work_ms = 20", "");
    let watcher = Watcher::subscribed(&agent, true);
    for kind in KINDS {
        let old: BTreeSet<i32> = started(&mut agent, kind, 4).into_iter().collect();
        let jobs: Vec<String> = (0..40).map(|i| format!("{kind}-job-{i}")).collect();
        let sent = agent.ctl_stdin(&["send", "--any", kind, "-"], &(jobs.join("\n") + "\n"));
        assert_eq!(sent.ok().stdout.matches("accepted 10 message(s)").count(), 4, "{sent:?}");
        agent.ctl(&["restart", kind]).ok();

        let mut replied = BTreeSet::new();
        let mut exits = vec![];
        let seen = watcher.until_json(&format!("every {kind} job is replied to and the old instances exit"), |event| {
            if event["name"] == kind {
                if event["event"] == "reply" {
                    let line = event["line"].as_str().unwrap();
                    replied.insert(line.rsplit(' ').next().unwrap().to_string());
                }
                if event["event"] == "exited" && old.contains(&(event["pid"].as_i64().unwrap() as i32)) {
                    exits.push(event["code"].clone());
                }
            }
            replied.len() == jobs.len() && exits.len() == old.len()
        });
        let want: BTreeSet<String> = jobs.iter().cloned().collect();
        assert_eq!(replied, want, "{kind}: {seen:?}");
        assert_eq!(exits, [0, 0, 0, 0], "{kind}: each old instance drained its pipe and exited 0, none was killed");
    }
}

#[test]
fn the_examples_of_workers_toml_run() {
    let examples = repo().join("examples");
    let text = std::fs::read_to_string(examples.join("workers.toml")).unwrap();
    let text = text.replace("\"workers/", &format!("\"{}/workers/", examples.display()));
    let mut agent = Agent::start(&text);
    for (name, count) in [("consumer", 4), ("reload", 2), ("monitor", 1), ("consumer-py", 2), ("monitor-py", 1)] {
        agent.wait_running(name, count);
    }
    let out = agent.ctl(&["send", "--reply", "consumer:2", "job-1"]);
    assert_eq!(out.ok().stdout, "done job-1 by consumer:2\n");
    let out = agent.ctl(&["send", "--reply", "consumer-py:1", "job-2"]);
    assert_eq!(out.ok().stdout, "done job-2 by consumer-py:1\n");
    for monitor in ["monitor", "monitor-py"] {
        let out = agent.ctl(&["send", "--reply", monitor, "report"]);
        assert!(out.ok().stdout.split_whitespace().count() >= 2, "{monitor}: {out:?}");
        let status: Value = agent.row(monitor, 0)["status"].clone();
        assert!(status.as_str().is_some_and(|s| s.starts_with("load ")), "{monitor}: {status}");
    }
    let old = agent.pid_of("reload", 0);
    agent.ctl(&["restart", "reload"]).ok();
    assert_ne!(agent.pid_of("reload", 0), old);
    let logs = agent.ctl(&["logs", "reload:0", "-n", "20"]).ok().stdout.clone();
    assert!(logs.contains("shutdown") && logs.contains("start"), "{logs}");
    agent.shutdown();
}

#[test]
fn a_scale_down_drains_the_instances_it_removes() {
    let mut agent = launched(2, ", work_ms = 20", "");
    let watcher = Watcher::subscribed(&agent, true);
    for kind in KINDS {
        let pids = started(&mut agent, kind, 2);
        let jobs: Vec<String> = (0..20).map(|i| format!("{kind}-job-{i}")).collect();
        agent.ctl_stdin(&["send", "--any", kind, "-"], &(jobs.join("\n") + "\n")).ok();
        agent.ctl(&["scale", kind, "1"]).ok();
        let removed = pids[1];
        let mut replied = BTreeSet::new();
        let mut exit = None;
        watcher.until_json(&format!("every {kind} job is replied to and {kind}:1 exits"), |event| {
            if event["name"] == kind && event["event"] == "reply" {
                replied.insert(event["line"].as_str().unwrap().rsplit(' ').next().unwrap().to_string());
            }
            if event["name"] == kind && event["event"] == "exited" && event["pid"] == removed {
                exit = Some(event["code"].clone());
            }
            replied.len() == jobs.len() && exit.is_some()
        });
        assert_eq!(replied, jobs.iter().cloned().collect::<BTreeSet<_>>(), "{kind}");
        assert_eq!(exit, Some(0.into()), "{kind}:1 drained its pipe and exited 0");
    }
}
