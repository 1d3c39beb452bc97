//! `procctl.toml` into a validated `Config`; every error names the file, the line and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procctl_proto::Signal;
use procctl_proto::target::check_name;
use serde::{Deserialize, Deserializer};
use toml::de::DeTable;

mod account;
pub mod fleet;
mod keys;
mod probe;
mod value;

pub use account::{Account, Limit};
pub use probe::{Dependency, Health, Probe, Ready};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub processes: BTreeMap<String, ProcessSpec>,
    /// Where to serve the metrics (`--metrics` wins); read at start only.
    pub metrics: Option<crate::metrics::Address>,
}

/// One `[process.NAME]` table, defaults applied and paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    pub name: String,
    /// argv; a plain string in the file becomes `/bin/sh -c STRING`.
    pub command: Vec<String>,
    pub instances: u32,
    pub restart: Restart,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub start_secs: Duration,
    pub start_retries: u32,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub pipe: Pipe,
    pub autostart: bool,
    pub log_max_size: u64,
    pub log_files: u32,
    pub ready: Ready,
    /// Not ready by then: the run is stopped and counts as a failed start.
    pub ready_timeout: Duration,
    /// Instance i gets PORT = port + i.
    pub port: Option<u16>,
    pub health: Option<Health>,
    /// With `ready = "notify"`: no WATCHDOG=1 for this long makes it unhealthy.
    pub watchdog: Option<Duration>,
    pub depends_on: BTreeMap<String, Dependency>,
    /// The user it runs as (root agents only), resolved at load.
    pub account: Option<Account>,
    pub umask: Option<u32>,
    pub limits: Vec<Limit>,
    pub memory_max: Option<u64>,
    /// Percent of one CPU.
    pub cpu_max: Option<u32>,
    /// Fatal (or exited with restart = "never"): the agent shuts down and exits 1.
    pub critical: bool,
    /// `arg`, as JSON text for `PROCCTL_ARG`.
    pub arg: Option<String>,
    /// Listening sockets the agent holds and hands to every instance from fd 3.
    pub listen: Vec<crate::listen::Address>,
    pub recycle: fleet::Recycle,
    /// At most this many instances `starting` at once.
    pub max_starting: Option<u32>,
    pub hooks: fleet::Hooks,
    pub autoscale: Option<fleet::Autoscale>,
}

impl ProcessSpec {
    /// The PORT of instance `index`.
    pub fn port_of(&self, index: u32) -> Option<u16> {
        self.port.map(|port| port + index as u16)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Fd,
    Stdin,
    None,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; `None` when the problem is not on one line (the file cannot be read).
    pub line: Option<usize>,
    /// The key path the problem is about (`process.worker.instances`), when there is one.
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    process: BTreeMap<String, RawProcess>,
    #[serde(default, deserialize_with = "metrics")]
    metrics: Option<crate::metrics::Address>,
}

/// One `[process.NAME]` table as written; every key has its own reader in `value`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    #[serde(default, deserialize_with = "some_command")]
    command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some_whole")]
    instances: Option<u32>,
    #[serde(default = "always", deserialize_with = "restart")]
    restart: Restart,
    #[serde(default = "term", deserialize_with = "value::signal")]
    stop_signal: Signal,
    #[serde(default = "ten_secs", deserialize_with = "value::duration")]
    stop_timeout: Duration,
    #[serde(default = "one_sec", deserialize_with = "value::duration")]
    start_secs: Duration,
    #[serde(default = "five", deserialize_with = "value::whole")]
    start_retries: u32,
    #[serde(default, deserialize_with = "value::env")]
    env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "some_text")]
    cwd: Option<String>,
    #[serde(default = "fd", deserialize_with = "pipe")]
    pipe: Pipe,
    #[serde(default = "yes", deserialize_with = "value::flag")]
    autostart: bool,
    #[serde(default = "ten_mib", deserialize_with = "value::size")]
    log_max_size: u64,
    #[serde(default = "three", deserialize_with = "value::whole")]
    log_files: u32,
    #[serde(default = "up", deserialize_with = "probe::ready")]
    ready: Ready,
    #[serde(default = "sixty_secs", deserialize_with = "value::duration")]
    ready_timeout: Duration,
    #[serde(default, deserialize_with = "probe::port")]
    port: Option<u16>,
    #[serde(default, deserialize_with = "probe::health")]
    health: Option<Health>,
    #[serde(default, deserialize_with = "probe::some_duration")]
    watchdog: Option<Duration>,
    #[serde(default, deserialize_with = "probe::depends_on")]
    depends_on: BTreeMap<String, Dependency>,
    #[serde(default, deserialize_with = "some_text")]
    user: Option<String>,
    #[serde(default, deserialize_with = "some_text")]
    group: Option<String>,
    #[serde(default, deserialize_with = "account::umask")]
    umask: Option<u32>,
    #[serde(default, deserialize_with = "account::limits")]
    limits: Vec<Limit>,
    #[serde(default, deserialize_with = "some_size")]
    memory_max: Option<u64>,
    #[serde(default, deserialize_with = "account::cpu_max")]
    cpu_max: Option<u32>,
    #[serde(default, deserialize_with = "value::flag")]
    critical: bool,
    #[serde(default, deserialize_with = "value::arg")]
    arg: Option<String>,
    #[serde(default, deserialize_with = "value::texts")]
    listen: Vec<String>,
    #[serde(default, deserialize_with = "some_size")]
    max_memory: Option<u64>,
    #[serde(default, deserialize_with = "fleet::some_period")]
    max_age: Option<Duration>,
    #[serde(default, deserialize_with = "fleet::some_count")]
    max_messages: Option<u64>,
    #[serde(default = "fleet::ten_secs", deserialize_with = "fleet::period")]
    recycle_check: Duration,
    #[serde(default, deserialize_with = "fleet::some_limit")]
    max_starting: Option<u32>,
    #[serde(default, deserialize_with = "fleet::some_hook")]
    pre_start: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fleet::some_hook")]
    post_stop: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fleet::some_hook")]
    on_fatal: Option<Vec<String>>,
    #[serde(default = "fleet::thirty_secs", deserialize_with = "fleet::hook_period")]
    hook_timeout: Duration,
    #[serde(default, deserialize_with = "fleet::some_autoscale")]
    autoscale: Option<fleet::RawAutoscale>,
}

fn some_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    value::whole(d).map(Some)
}

fn up() -> Ready {
    Ready::Up
}
fn sixty_secs() -> Duration {
    Duration::from_secs(60)
}

fn some_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    value::size(d).map(Some)
}

fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn always() -> Restart {
    Restart::Always
}
fn term() -> Signal {
    Signal::TERM
}
fn ten_secs() -> Duration {
    Duration::from_secs(10)
}
fn one_sec() -> Duration {
    Duration::from_secs(1)
}
fn fd() -> Pipe {
    Pipe::Fd
}
fn yes() -> bool {
    true
}
fn ten_mib() -> u64 {
    10 << 20
}

fn some_command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    value::command(d).map(Some)
}

fn some_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    value::text(d).map(Some)
}

fn restart<'de, D: Deserializer<'de>>(d: D) -> Result<Restart, D::Error> {
    Ok(match value::choice(d, &["always", "on-failure", "never"])?.as_str() {
        "always" => Restart::Always,
        "on-failure" => Restart::OnFailure,
        _ => Restart::Never,
    })
}

fn metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::metrics::Address>, D::Error> {
    value::text(d)?.parse().map(Some).map_err(serde::de::Error::custom)
}

fn pipe<'de, D: Deserializer<'de>>(d: D) -> Result<Pipe, D::Error> {
    Ok(match value::choice(d, &["fd", "stdin", "none"])?.as_str() {
        "fd" => Pipe::Fd,
        "stdin" => Pipe::Stdin,
        _ => Pipe::None,
    })
}

/// The largest `instances` (and `scale`) count accepted.
pub const MAX_INSTANCES: u32 = 10_000;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            problem: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_as(path, text, nix::unistd::geteuid().as_raw())
    }

    /// `parse` for an agent running as `euid`: only root may set `user`.
    pub fn parse_as(path: &Path, text: &str, euid: u32) -> Result<Config, ConfigError> {
        let error = |line: Option<usize>, key: Option<String>, problem: String| ConfigError {
            path: path.to_path_buf(),
            line,
            key,
            problem,
        };
        let syntax = |e: toml::de::Error| {
            let line = e.span().map(|span| line_of(text, span.start));
            let mut problem = e.message().trim().to_string();
            // toml names no key in this one (and gives no error kind to tell it by).
            if let (true, Some(key)) = (problem == "duplicate key", e.span().and_then(|span| text.get(span))) {
                problem = format!("duplicate key `{}`", key.trim());
            }
            error(line, None, problem)
        };
        let document = DeTable::parse(text).map_err(syntax)?;
        let keys = Keys { text, root: document.get_ref() };
        let raw: RawFile =
            serde_path_to_error::deserialize(toml::Deserializer::from(document.clone())).map_err(|e| {
                let key = e.path().to_string();
                let segments: Vec<String> = e.path().iter().map(ToString::to_string).collect();
                let inner = e.into_inner();
                let line = inner.span().map(|span| line_of(text, span.start));
                let (process, file) = (keys::of::<RawProcess>(), keys::of::<RawFile>());
                let problem = match segments.as_slice() {
                    [table, _, key] if table == "process" && !process.contains(&key.as_str()) => {
                        keys::unknown(key, process)
                    }
                    [key] if !file.contains(&key.as_str()) => keys::unknown(key, file),
                    _ => inner.message().trim().to_string(),
                };
                error(line, Some(key).filter(|k| k != "."), problem)
            })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let mut processes = BTreeMap::new();
        for (name, raw) in raw.process {
            let at = |key: &str| {
                let line = keys.line(&["process", &name, key]).or_else(|| keys.line(&["process", &name]));
                let key = if key.is_empty() { format!("process.{name}") } else { format!("process.{name}.{key}") };
                (line, Some(key))
            };
            let fail = |key: &str, problem: String| {
                let (line, key) = at(key);
                error(line, key, problem)
            };
            check_name(&name).map_err(|problem| fail("", problem))?;
            let autoscale = match raw.autoscale {
                Some(_) if raw.instances.is_some() => {
                    return Err(fail(
                        "autoscale",
                        "a process with `autoscale` leaves `instances` out (it starts with min)".into(),
                    ));
                }
                Some(policy) => Some(policy.check().map_err(|(key, problem)| fail(key, problem))?),
                None => None,
            };
            let instances = autoscale.as_ref().map_or(raw.instances.unwrap_or(1), |policy| policy.min);
            if instances > MAX_INSTANCES {
                return Err(fail("instances", format!("{instances} is over the limit of {MAX_INSTANCES}")));
            }
            let Some(mut command) = raw.command else {
                return Err(fail("", "missing key `command` (the program to run)".into()));
            };
            // A program named by a relative path (`./bin/app`) is found from the config's
            // directory, like `cwd`; a bare name is looked up in PATH.
            if command[0].contains('/') && Path::new(&command[0]).is_relative() {
                command[0] = dir.join(&command[0]).display().to_string();
            }
            let cwd = match raw.cwd.map(PathBuf::from) {
                Some(cwd) if cwd.is_absolute() => cwd,
                Some(cwd) => dir.join(cwd),
                None => dir.clone(),
            };
            if raw.watchdog.is_some() && raw.ready != Ready::Notify {
                return Err(fail(
                    "watchdog",
                    "a watchdog needs ready = \"notify\" (the program sends WATCHDOG=1)".into(),
                ));
            }
            if raw.port.is_none() {
                let uses = [("ready", matches!(&raw.ready, Ready::Probe { probe, .. } if probe.uses_port()))]
                    .into_iter()
                    .chain([("health", raw.health.as_ref().is_some_and(|h| h.probe.uses_port()))]);
                if let Some((key, _)) = uses.into_iter().find(|(_, uses)| *uses) {
                    return Err(fail(key, "`{port}` needs a `port` key for this process".into()));
                }
            }
            if let Some(port) = raw.port {
                if u32::from(port) + instances.max(1) - 1 > 65535 {
                    return Err(fail("port", format!("{port} + {instances} instances goes past port 65535")));
                }
            }
            let account = match &raw.user {
                None if raw.group.is_some() => {
                    return Err(fail("group", "`group` needs `user`".into()));
                }
                None => None,
                Some(_) if euid != 0 => {
                    return Err(fail(
                        "user",
                        "only an agent running as root can start processes as another user".into(),
                    ));
                }
                Some(user) => {
                    Some(account::resolve(user, raw.group.as_deref()).map_err(|(key, problem)| fail(key, problem))?)
                }
            };
            account::check_limits(&raw.limits, euid == 0).map_err(|problem| fail("limits", problem))?;
            let mut listen = vec![];
            for text in &raw.listen {
                let address = crate::listen::Address::parse(text, &dir).map_err(|problem| fail("listen", problem))?;
                let other = processes.values().find(|other: &&ProcessSpec| other.listen.contains(&address));
                if listen.contains(&address) || other.is_some() {
                    let whose = other.map_or("this process".to_string(), |o| format!("process {}", o.name));
                    return Err(fail("listen", format!("{address} is listened on already by {whose}")));
                }
                listen.push(address);
            }
            let spec = ProcessSpec {
                name: name.clone(),
                command,
                instances,
                restart: raw.restart,
                stop_signal: raw.stop_signal,
                stop_timeout: raw.stop_timeout,
                start_secs: raw.start_secs,
                start_retries: raw.start_retries,
                env: raw.env,
                cwd,
                pipe: raw.pipe,
                autostart: raw.autostart,
                log_max_size: raw.log_max_size,
                log_files: raw.log_files,
                ready: raw.ready,
                ready_timeout: raw.ready_timeout,
                port: raw.port,
                health: raw.health,
                watchdog: raw.watchdog,
                depends_on: raw.depends_on,
                account,
                umask: raw.umask,
                limits: raw.limits,
                memory_max: raw.memory_max,
                cpu_max: raw.cpu_max,
                critical: raw.critical,
                arg: raw.arg,
                listen,
                recycle: fleet::Recycle {
                    max_memory: raw.max_memory,
                    max_age: raw.max_age,
                    max_messages: raw.max_messages,
                    check: raw.recycle_check,
                },
                max_starting: raw.max_starting,
                autoscale,
                hooks: fleet::Hooks {
                    pre_start: raw.pre_start,
                    post_stop: raw.post_stop,
                    on_fatal: raw.on_fatal,
                    timeout: raw.hook_timeout,
                },
            };
            processes.insert(name, spec);
        }
        check_dependencies(&processes, &keys).map_err(|(line, key, problem)| error(line, Some(key), problem))?;
        Ok(Config { path: path.to_path_buf(), processes, metrics: raw.metrics })
    }
}

/// Every dependency names a process, and none leads back to where it started.
fn check_dependencies(
    processes: &BTreeMap<String, ProcessSpec>,
    keys: &Keys,
) -> Result<(), (Option<usize>, String, String)> {
    for (name, spec) in processes {
        for dep in spec.depends_on.keys() {
            if !processes.contains_key(dep) {
                let line = keys.line(&["process", name, "depends_on", dep]).or_else(|| keys.line(&["process", name]));
                return Err((line, format!("process.{name}.depends_on.{dep}"), format!("no process named `{dep}`")));
            }
        }
    }
    let graph = processes
        .iter()
        .map(|(name, spec)| (name.as_str(), spec.depends_on.keys().map(String::as_str).collect()))
        .collect();
    if let Some(cycle) = probe::cycle(&graph) {
        let first = &cycle[0];
        let line = keys.line(&["process", first, "depends_on"]).or_else(|| keys.line(&["process", first]));
        return Err((
            line,
            format!("process.{first}.depends_on"),
            format!("a dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The parsed document, for the line of a key found wrong after reading (a name, a limit).
struct Keys<'a> {
    text: &'a str,
    root: &'a DeTable<'a>,
}

impl Keys<'_> {
    /// The line of the last key of `path` (`["process", "web", "instances"]`).
    fn line(&self, path: &[&str]) -> Option<usize> {
        let (last, parents) = path.split_last()?;
        let mut table = self.root;
        for key in parents {
            table = table.get(*key)?.get_ref().as_table()?;
        }
        let (key, _) = table.get_key_value(*last)?;
        Some(line_of(self.text, key.span().start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use value::parse_size;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/app/procctl.toml"), text)
    }

    fn error_of(text: &str) -> ConfigError {
        parse(text).expect_err("config should be refused")
    }

    #[test]
    fn defaults_are_those_of_the_spec() {
        let config = parse("[process.web]\ncommand = [\"sleep\", \"1\"]\n").unwrap();
        let web = &config.processes["web"];
        assert_eq!(web.command, ["sleep", "1"]);
        assert_eq!(web.instances, 1);
        assert_eq!(web.restart, Restart::Always);
        assert_eq!(web.stop_signal, Signal::TERM);
        assert_eq!(web.stop_timeout, Duration::from_secs(10));
        assert_eq!(web.start_secs, Duration::from_secs(1));
        assert_eq!(web.start_retries, 5);
        assert_eq!(web.cwd, Path::new("/etc/app"));
        assert_eq!(web.pipe, Pipe::Fd);
        assert!(web.autostart);
        assert_eq!(web.log_max_size, 10 << 20);
        assert_eq!(web.log_files, 3);
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(
            r#"
[process.w]
command = "echo hi"
instances = 3
restart = "on-failure"
stop_signal = "SIGINT"
stop_timeout = "1.5s"
start_secs = "0s"
start_retries = 2
env = { A = "1" }
cwd = "sub"
pipe = "stdin"
autostart = false
log_max_size = "2KiB"
log_files = 0
"#,
        )
        .unwrap();
        let w = &config.processes["w"];
        assert_eq!(w.command, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(w.instances, 3);
        assert_eq!(w.restart, Restart::OnFailure);
        assert_eq!(w.stop_signal, Signal::INT);
        assert_eq!(w.stop_timeout, Duration::from_millis(1500));
        assert_eq!(w.start_secs, Duration::ZERO);
        assert_eq!(w.start_retries, 2);
        assert_eq!(w.env["A"], "1");
        assert_eq!(w.cwd, Path::new("/etc/app/sub"));
        assert_eq!(w.pipe, Pipe::Stdin);
        assert!(!w.autostart);
        assert_eq!(w.log_max_size, 2048);
        assert_eq!(w.log_files, 0);
    }

    #[test]
    fn errors_name_file_line_key_and_problem_in_the_users_words() {
        let head = "[process.a]\ncommand = [\"x\"]\n";
        let cases: &[(&str, &str)] = &[
            ("instances = \"two\"", "3: process.a.instances: expected a whole number, found the string \"two\""),
            (
                "instances = -1",
                "3: process.a.instances: expected a whole number from 0 to 4294967295, found the number -1",
            ),
            ("instances = 20000", "3: process.a.instances: 20000 is over the limit of 10000"),
            ("bogus = 1", "3: process.a.bogus: unknown key `bogus`; the keys are command, instances, restart,"),
            ("start_sec = \"1s\"", "3: process.a.start_sec: unknown key `start_sec` (did you mean `start_secs`?)"),
            ("instances = 1\ninstances = 2", "4: duplicate key `instances`"),
            (
                "port = 8000\nhealth = { tcp = \"127.0.0.1:{port}\", evry = \"5s\" }",
                "4: process.a.health: unknown key `evry` (did you mean `every`?)",
            ),
            (
                "restart = \"sometimes\"",
                "3: process.a.restart: expected one of \"always\", \"on-failure\", \"never\", found the string \"sometimes\"",
            ),
            ("restart = 5", "3: process.a.restart: expected one of"),
            ("stop_timeout = \"soon\"", "3: process.a.stop_timeout: invalid duration `soon`"),
            (
                "stop_timeout = 10",
                "3: process.a.stop_timeout: expected a duration like \"10s\" or \"500ms\", found the number 10",
            ),
            ("stop_signal = \"NOPE\"", "3: process.a.stop_signal: unknown signal `NOPE`"),
            ("log_max_size = \"5 parsecs\"", "3: process.a.log_max_size: invalid size `5 parsecs`"),
            ("autostart = \"yes\"", "3: process.a.autostart: expected true or false, found the string \"yes\""),
            ("env = { A = 1 }", "3: process.a.env: `A`: expected a string, found the number 1"),
            ("env = 5", "3: process.a.env: expected a table of strings"),
            ("cwd = [\"a\"]", "3: process.a.cwd: expected a string, found an array"),
        ];
        for (extra, want) in cases {
            let error = error_of(&format!("{head}{extra}\n"));
            let text = error.to_string();
            assert!(text.starts_with(&format!("/etc/app/procctl.toml:{want}")), "{extra}: {text}");
            for rust in ["u32", "u64", "i64", "String", "bool", "Vec", "BTreeMap", "enum "] {
                assert!(!text.contains(rust), "{extra}: a Rust type in {text}");
            }
        }
        let others: &[(&str, &str)] = &[
            ("\n[process.\"a b\"]\ncommand = [\"x\"]\n", "2: process.a b: "),
            ("[process.all]\ncommand = [\"x\"]\n", "1: process.all: "),
            ("[process.a]\ncommand = []\n", "2: process.a.command: the command needs a program"),
            (
                "[process.a]\ncommand = [\"x\", 3]\n",
                "2: process.a.command: expected an array of strings (element 2 is not), found the number 3",
            ),
            ("[process.a]\ninstances = 2\n", "1: process.a: missing key `command`"),
            ("[process.a]\ncommand = [\"x\"\n", "2: "),
            (
                "metrics = \"9101\"\n",
                "1: metrics: expected an IP address and a port (127.0.0.1:9101, [::1]:9101) or unix:///path, found \"9101\"",
            ),
            ("metrics = 9101\n", "1: metrics: expected a string, found the number 9101"),
        ];
        for (text, want) in others {
            let error = error_of(text).to_string();
            assert!(error.starts_with(&format!("/etc/app/procctl.toml:{want}")), "{text}: {error}");
        }
    }

    #[test]
    fn the_metrics_address_is_read_at_the_top_level() {
        let config = parse("metrics = \"unix:///run/procctl/metrics.sock\"\n[process.a]\ncommand = \"x\"\n").unwrap();
        assert_eq!(config.metrics, Some(crate::metrics::Address::Unix("/run/procctl/metrics.sock".into())));
        assert_eq!(parse("[process.a]\ncommand = \"x\"\n").unwrap().metrics, None);
    }

    #[test]
    fn a_relative_program_path_is_taken_from_the_config_directory() {
        let config =
            parse("[process.a]\ncommand = [\"./bin/app\", \"x\"]\ncwd = \"data\"\n[process.b]\ncommand = [\"app\"]\n")
                .unwrap();
        assert_eq!(config.processes["a"].command, ["/etc/app/./bin/app", "x"]);
        assert_eq!(config.processes["a"].cwd, Path::new("/etc/app/data"));
        assert_eq!(config.processes["b"].command, ["app"], "a bare name is looked up in PATH");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(procctl_proto::duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1TB").is_err());
    }

    #[test]
    fn arg_is_any_table_and_reaches_the_worker_as_json() {
        let config = parse(
            "[process.a]\ncommand = [\"x\"]\narg = { queue = \"jobs\", batch = 10, tags = [\"a\", 1.5], deep = { on = true } }\n",
        )
        .unwrap();
        let arg: serde_json::Value = serde_json::from_str(config.processes["a"].arg.as_deref().unwrap()).unwrap();
        assert_eq!(arg, serde_json::json!({"queue": "jobs", "batch": 10, "tags": ["a", 1.5], "deep": {"on": true}}));
        let dated = parse("[process.a]\ncommand = [\"x\"]\n[process.a.arg]\nat = 1979-05-27\n").unwrap();
        assert_eq!(dated.processes["a"].arg.as_deref(), Some(r#"{"at":"1979-05-27"}"#));
        assert_eq!(parse("[process.a]\ncommand = [\"x\"]\n").unwrap().processes["a"].arg, None);
        let error = error_of("[process.a]\ncommand = [\"x\"]\narg = 3\n").to_string();
        assert!(error.starts_with("/etc/app/procctl.toml:3: process.a.arg: expected a table"), "{error}");
    }
}
