//! The file as written: the serde schema of `procctl.toml` with its defaults and readers, and
//! its reading into `RawFile` with the key path and line of the first problem.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use procctl_proto::Signal;
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::DeTable;

use super::error::line_of;
use super::{ConfigError, Health, Limit, Pipe, Ready, Restart};
use super::{Dependency, account, fleet, keys, probe, value};

/// `document` into the raw schema; an unknown key is answered with the closest known one.
pub(super) fn read(path: &Path, text: &str, document: Spanned<DeTable<'_>>) -> Result<RawFile, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::from(document)).map_err(|e| {
        let key = e.path().to_string();
        let segments: Vec<String> = e.path().iter().map(ToString::to_string).collect();
        let inner = e.into_inner();
        let line = inner.span().map(|span| line_of(text, span.start));
        let (process, file) = (keys::of::<RawProcess>(), keys::of::<RawFile>());
        let problem = match segments.as_slice() {
            [table, _, key] if table == "process" && !process.contains(&key.as_str()) => keys::unknown(key, process),
            [key] if !file.contains(&key.as_str()) => keys::unknown(key, file),
            _ => inner.message().trim().to_string(),
        };
        ConfigError::new(path, line, Some(key).filter(|k| k != "."), problem)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub process: BTreeMap<String, RawProcess>,
    #[serde(default, deserialize_with = "metrics")]
    pub metrics: Option<crate::metrics::Address>,
}

/// One `[process.NAME]` table as written; every key has its own reader in `value`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    #[serde(default, deserialize_with = "some_command")]
    pub command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some_whole")]
    pub instances: Option<u32>,
    #[serde(default = "always", deserialize_with = "restart")]
    pub restart: Restart,
    #[serde(default = "term", deserialize_with = "value::signal")]
    pub stop_signal: Signal,
    #[serde(default = "ten_secs", deserialize_with = "value::duration")]
    pub stop_timeout: Duration,
    #[serde(default = "one_sec", deserialize_with = "value::duration")]
    pub start_secs: Duration,
    #[serde(default = "five", deserialize_with = "value::whole")]
    pub start_retries: u32,
    #[serde(default, deserialize_with = "value::env")]
    pub env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "some_text")]
    pub cwd: Option<String>,
    #[serde(default = "fd", deserialize_with = "pipe")]
    pub pipe: Pipe,
    #[serde(default = "yes", deserialize_with = "value::flag")]
    pub autostart: bool,
    #[serde(default = "ten_mib", deserialize_with = "value::size")]
    pub log_max_size: u64,
    #[serde(default = "three", deserialize_with = "value::whole")]
    pub log_files: u32,
    #[serde(default = "up", deserialize_with = "probe::ready")]
    pub ready: Ready,
    #[serde(default = "sixty_secs", deserialize_with = "value::duration")]
    pub ready_timeout: Duration,
    #[serde(default, deserialize_with = "probe::port")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "probe::health")]
    pub health: Option<Health>,
    #[serde(default, deserialize_with = "probe::some_duration")]
    pub watchdog: Option<Duration>,
    #[serde(default, deserialize_with = "probe::depends_on")]
    pub depends_on: BTreeMap<String, Dependency>,
    #[serde(default, deserialize_with = "some_text")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "some_text")]
    pub group: Option<String>,
    #[serde(default, deserialize_with = "account::umask")]
    pub umask: Option<u32>,
    #[serde(default, deserialize_with = "account::limits")]
    pub limits: Vec<Limit>,
    #[serde(default, deserialize_with = "some_size")]
    pub memory_max: Option<u64>,
    #[serde(default, deserialize_with = "account::cpu_max")]
    pub cpu_max: Option<u32>,
    #[serde(default, deserialize_with = "value::flag")]
    pub critical: bool,
    #[serde(default, deserialize_with = "value::arg")]
    pub arg: Option<String>,
    #[serde(default, deserialize_with = "value::texts")]
    pub listen: Vec<String>,
    #[serde(default, deserialize_with = "some_size")]
    pub max_memory: Option<u64>,
    #[serde(default, deserialize_with = "fleet::some_period")]
    pub max_age: Option<Duration>,
    #[serde(default, deserialize_with = "fleet::some_count")]
    pub max_messages: Option<u64>,
    #[serde(default = "fleet::ten_secs", deserialize_with = "fleet::period")]
    pub recycle_check: Duration,
    #[serde(default, deserialize_with = "fleet::some_limit")]
    pub max_starting: Option<u32>,
    #[serde(default, deserialize_with = "fleet::some_hook")]
    pub pre_start: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fleet::some_hook")]
    pub post_stop: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fleet::some_hook")]
    pub on_fatal: Option<Vec<String>>,
    #[serde(default = "fleet::thirty_secs", deserialize_with = "fleet::hook_period")]
    pub hook_timeout: Duration,
    #[serde(default, deserialize_with = "fleet::some_autoscale")]
    pub autoscale: Option<fleet::RawAutoscale>,
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
