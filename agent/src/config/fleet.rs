//! The fleet policies of a process: when an instance is recycled (`max_memory`, `max_age`,
//! `max_messages`, sampled every `recycle_check`), and how many may start at once
//! (`max_starting`), and the hooks run around its runs (`pre_start`, `post_stop`,
//! `on_fatal`, cut at `hook_timeout`).

use std::time::Duration;

use serde::Deserializer;

use super::value;

/// When an instance is warm-restarted by the agent; none of them by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recycle {
    /// MEM above this for two checks in a row.
    pub max_memory: Option<u64>,
    /// Running longer than this (each run's deadline falls up to 10% later).
    pub max_age: Option<Duration>,
    /// This many messages routed to the current run.
    pub max_messages: Option<u64>,
    /// How often `max_memory` is sampled.
    pub check: Duration,
}

impl Default for Recycle {
    fn default() -> Self {
        Recycle { max_memory: None, max_age: None, max_messages: None, check: RECYCLE_CHECK }
    }
}

/// Commands run around an instance's runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Before each start: a non-zero exit is a failed start.
    pub pre_start: Option<Vec<String>>,
    /// After each run ends, whatever ended it.
    pub post_stop: Option<Vec<String>>,
    /// When the instance turns `fatal`.
    pub on_fatal: Option<Vec<String>>,
    /// Each hook's process group is killed after this long.
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { pre_start: None, post_stop: None, on_fatal: None, timeout: HOOK_TIMEOUT }
    }
}

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

pub fn thirty_secs() -> Duration {
    HOOK_TIMEOUT
}

pub fn hook_period<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    some_period(d).map(|p| p.unwrap_or(HOOK_TIMEOUT))
}

pub fn some_hook<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    value::command(d).map(Some)
}

/// `[process.NAME.autoscale]`: wanted instances = ceil(probe's number / per_instance),
/// within min..max.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    pub probe: Vec<String>,
    pub per_instance: u64,
    /// The probe's interval and timeout.
    pub every: Duration,
    /// At most this many added or removed per decision.
    pub step: Option<u32>,
    /// A scale-down waits until the wanted count has stayed lower this long.
    pub down_after: Duration,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoscale {
    #[serde(deserialize_with = "value::whole")]
    pub min: u32,
    #[serde(deserialize_with = "value::whole")]
    pub max: u32,
    #[serde(deserialize_with = "value::command")]
    pub probe: Vec<String>,
    #[serde(deserialize_with = "value::whole")]
    pub per_instance: u32,
    #[serde(default = "five_secs", deserialize_with = "every")]
    pub every: Duration,
    #[serde(default, deserialize_with = "some_limit")]
    pub step: Option<u32>,
    #[serde(default = "thirty_secs", deserialize_with = "value::duration")]
    pub down_after: Duration,
}

fn five_secs() -> Duration {
    Duration::from_secs(5)
}

fn every<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    some_period(d).map(|p| p.unwrap_or(Duration::from_secs(5)))
}

pub fn some_autoscale<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RawAutoscale>, D::Error> {
    <RawAutoscale as serde::Deserialize>::deserialize(d).map(Some)
}

impl RawAutoscale {
    /// The policy, or the key that is wrong and why.
    pub fn check(self) -> Result<Autoscale, (&'static str, String)> {
        if self.min > self.max {
            return Err(("autoscale.min", format!("min ({}) is above max ({})", self.min, self.max)));
        }
        if self.per_instance == 0 {
            return Err(("autoscale.per_instance", "per_instance must be 1 or more".into()));
        }
        Ok(Autoscale {
            min: self.min,
            max: self.max,
            probe: self.probe,
            per_instance: u64::from(self.per_instance),
            every: self.every,
            step: self.step,
            down_after: self.down_after,
        })
    }
}

pub const RECYCLE_CHECK: Duration = Duration::from_secs(10);

pub fn ten_secs() -> Duration {
    RECYCLE_CHECK
}

/// A count from 1 up.
pub fn some_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match value::whole(d)? {
        0 => Err(serde::de::Error::custom("expected a whole number from 1 up, found 0")),
        n => Ok(Some(u64::from(n))),
    }
}

/// A limit from 1 up.
pub fn some_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match value::whole(d)? {
        0 => Err(serde::de::Error::custom("expected a whole number from 1 up, found 0")),
        n => Ok(Some(n)),
    }
}

/// A duration above zero.
pub fn some_period<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match value::duration(d)? {
        zero if zero.is_zero() => Err(serde::de::Error::custom("expected a duration above zero")),
        period => Ok(Some(period)),
    }
}

pub fn period<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    some_period(d).map(|p| p.unwrap_or(RECYCLE_CHECK))
}
