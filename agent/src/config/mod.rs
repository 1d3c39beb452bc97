//! `procctl.toml` into a validated `Config`; every error names the file, the line and the problem.
//!
//! `raw.rs` is the file as written (the serde schema and its defaults), `resolve.rs` turns one
//! process of it into a `ProcessSpec`, `error.rs` has the error and the line lookups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procctl_proto::Signal;
use toml::de::DeTable;

mod account;
mod error;
pub mod fleet;
mod keys;
mod probe;
mod raw;
mod resolve;
mod value;

pub use account::{Account, Limit};
pub use error::ConfigError;
pub use probe::{Dependency, Health, Probe, Ready};

use error::Keys;
use resolve::{Context, check_dependencies, resolve_process};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub processes: BTreeMap<String, ProcessSpec>,
    /// Where to serve the metrics (`--metrics` wins); read at start only.
    pub metrics: Option<crate::metrics::Address>,
    /// The text it was read from: an upgrade hands it over, so the new image runs the
    /// config in effect and not whatever the file holds by then (that is a reload's job).
    pub source: String,
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

/// The largest `instances` (and `scale`) count accepted.
pub const MAX_INSTANCES: u32 = 10_000;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, None, format!("cannot read: {e}")))?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_as(path, text, nix::unistd::geteuid().as_raw())
    }

    /// `parse` for an agent running as `euid`: only root may set `user`.
    pub fn parse_as(path: &Path, text: &str, euid: u32) -> Result<Config, ConfigError> {
        let document = DeTable::parse(text).map_err(|e| ConfigError::syntax(path, text, e))?;
        let raw = raw::read(path, text, document.clone())?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let context = Context { path, dir, euid, keys: Keys { text, root: document.get_ref() } };
        let mut processes = BTreeMap::new();
        for (name, raw) in raw.process {
            let spec = resolve_process(&name, raw, &context, &processes)?;
            processes.insert(name, spec);
        }
        check_dependencies(&processes, &context)?;
        Ok(Config { path: path.to_path_buf(), processes, metrics: raw.metrics, source: text.to_string() })
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
