//! `procctl.toml` into a validated `Config`; every error names the file, the line and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procctl_proto::Signal;
use procctl_proto::target::check_name;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub processes: BTreeMap<String, ProcessSpec>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.problem),
            None => write!(f, "{}: {}", self.path.display(), self.problem),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    process: BTreeMap<String, RawProcess>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    #[serde(deserialize_with = "command")]
    command: Vec<String>,
    #[serde(default = "one")]
    instances: u32,
    #[serde(default = "always")]
    restart: Restart,
    #[serde(default = "term", deserialize_with = "signal")]
    stop_signal: Signal,
    #[serde(default = "ten_secs", deserialize_with = "duration")]
    stop_timeout: Duration,
    #[serde(default = "one_sec", deserialize_with = "duration")]
    start_secs: Duration,
    #[serde(default = "five")]
    start_retries: u32,
    #[serde(default, deserialize_with = "env")]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    #[serde(default = "fd")]
    pipe: Pipe,
    #[serde(default = "yes")]
    autostart: bool,
    #[serde(default = "ten_mib", deserialize_with = "size")]
    log_max_size: u64,
    #[serde(default = "three")]
    log_files: u32,
}

fn one() -> u32 {
    1
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

/// The largest `instances` (and `scale`) count accepted.
pub const MAX_INSTANCES: u32 = 10_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    let argv = match RawCommand::deserialize(d)
        .map_err(|_| D::Error::custom("command must be a string or an array of strings"))?
    {
        RawCommand::Shell(line) if line.trim().is_empty() => return Err(D::Error::custom("command is empty")),
        RawCommand::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line],
        RawCommand::Argv(argv) if argv.first().is_none_or(|p| p.is_empty()) => {
            return Err(D::Error::custom("command needs a program as its first element"));
        }
        RawCommand::Argv(argv) => argv,
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(D::Error::custom("command contains a NUL byte"));
    }
    Ok(argv)
}

fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected bytes or a size like \"10MiB\""))? {
        Raw::Bytes(0) => Err(serde::de::Error::custom("log_max_size must be above 0")),
        Raw::Bytes(n) => Ok(n),
        Raw::Text(text) => parse_size(&text).map_err(serde::de::Error::custom),
    }
}

fn env<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let env = BTreeMap::<String, String>::deserialize(d)?;
    for (key, value) in &env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(serde::de::Error::custom(format!("invalid environment variable `{key}`")));
        }
    }
    Ok(env)
}

pub use procctl_proto::duration::parse as parse_duration;

/// Bytes, or a number with B, KiB, MiB or GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size `{text}`: use bytes or a number with KiB, MiB or GiB, like \"10MiB\"");
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(bad()),
    };
    match number.checked_mul(1 << shift) {
        Some(0) => Err("log_max_size must be above 0".into()),
        Some(n) => Ok(n),
        None => Err(bad()),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            problem: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let error = |line: Option<usize>, problem: String| ConfigError { path: path.to_path_buf(), line, problem };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            error(line, e.message().trim().to_string())
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let mut processes = BTreeMap::new();
        for (name, raw) in raw.process {
            let line = find_line(text, &name);
            check_name(&name).map_err(|problem| error(line, problem))?;
            if raw.instances > MAX_INSTANCES {
                return Err(error(line, format!("instances of `{name}` is over the limit of {MAX_INSTANCES}")));
            }
            let cwd = match raw.cwd {
                Some(cwd) if cwd.is_absolute() => cwd,
                Some(cwd) => dir.join(cwd),
                None => dir.clone(),
            };
            let spec = ProcessSpec {
                name: name.clone(),
                command: raw.command,
                instances: raw.instances,
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
            };
            processes.insert(name, spec);
        }
        Ok(Config { path: path.to_path_buf(), processes })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line that declares process `name`: its `[process.NAME]` header or a dotted key.
fn find_line(text: &str, name: &str) -> Option<usize> {
    let needles = [format!("process.{name}"), format!("process.\"{name}\""), name.to_string()];
    needles.iter().find_map(|needle| text.lines().position(|line| line.contains(needle.as_str())).map(|i| i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn errors_name_file_line_and_problem() {
        let cases: [(&str, usize, &str); 9] = [
            ("[process.a]\ncommand = [\"x\"]\nbogus = 1\n", 3, "bogus"),
            ("[process.a]\ncommand = [\"x\"]\nrestart = \"sometimes\"\n", 3, "sometimes"),
            ("[process.a]\ncommand = [\"x\"]\nstop_timeout = \"soon\"\n", 3, "soon"),
            ("[process.a]\ncommand = [\"x\"]\nstop_signal = \"NOPE\"\n", 3, "NOPE"),
            ("[process.a]\ncommand = [\"x\"]\nlog_max_size = \"5 parsecs\"\n", 3, "parsecs"),
            ("\n[process.\"a b\"]\ncommand = [\"x\"]\n", 2, "a b"),
            ("[process.all]\ncommand = [\"x\"]\n", 1, "reserved"),
            ("[process.a]\ncommand = []\n", 2, "program"),
            ("[process.a]\ncommand = [\"x\"\n", 2, ""),
        ];
        for (text, line, word) in cases {
            let error = error_of(text);
            assert_eq!(error.line, Some(line), "{text}: {error}");
            assert!(error.problem.contains(word), "{text}: {error}");
            assert!(error.to_string().starts_with(&format!("/etc/app/procctl.toml:{line}: ")), "{error}");
        }
    }

    #[test]
    fn a_missing_command_is_refused() {
        assert!(error_of("[process.a]\ninstances = 2\n").problem.contains("command"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1TB").is_err());
    }
}
