//! `ready`, `health` and `depends_on`: how an instance says it is ready, how it is checked
//! while it runs, and what it waits for before it starts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Value;

use super::value::{self, describe};

/// One check: a TCP connect, an HTTP GET answered 2xx, a line of the instance's output, or
/// a command that exits 0. Strings may hold `{instance}` and `{port}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp(String),
    Http(String),
    Log(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Up for start_secs.
    Up,
    /// `READY=1` on `$NOTIFY_SOCKET`.
    Notify,
    /// A probe passes; each try is cut at `timeout`.
    Probe { probe: Probe, timeout: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub probe: Probe,
    pub every: Duration,
    pub timeout: Duration,
    /// Failures in a row that make the instance unhealthy.
    pub failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Every instance of it is running (ready).
    Running,
    /// Its instances have exited with code 0.
    Completed,
}

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
pub const HEALTH_EVERY: Duration = Duration::from_secs(10);
pub const HEALTH_FAILURES: u32 = 3;

impl Probe {
    fn strings(&self) -> Vec<&str> {
        match self {
            Probe::Tcp(s) | Probe::Http(s) | Probe::Log(s) => vec![s],
            Probe::Exec(argv) => argv.iter().map(String::as_str).collect(),
        }
    }

    pub fn uses_port(&self) -> bool {
        self.strings().iter().any(|s| s.contains("{port}"))
    }

    /// The probe of one instance: `{instance}` and `{port}` replaced.
    pub fn render(&self, instance: u32, port: Option<u16>) -> Probe {
        let fill = |s: &str| {
            let s = s.replace("{instance}", &instance.to_string());
            match port {
                Some(port) => s.replace("{port}", &port.to_string()),
                None => s,
            }
        };
        match self {
            Probe::Tcp(s) => Probe::Tcp(fill(s)),
            Probe::Http(s) => Probe::Http(fill(s)),
            Probe::Log(s) => Probe::Log(fill(s)),
            Probe::Exec(argv) => Probe::Exec(argv.iter().map(|a| fill(a)).collect()),
        }
    }

    /// Refuses what can never work, as it would be for instance 0 on port 1.
    fn check(&self) -> Result<(), String> {
        match self.render(0, Some(1)) {
            Probe::Tcp(addr) => {
                let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("`{addr}` is not HOST:PORT"))?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(format!("`{addr}` is not HOST:PORT"));
                }
            }
            Probe::Http(url) => {
                let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(format!("`{url}`: a probe takes an http:// URL with a host"));
                }
            }
            Probe::Log(pattern) => {
                regex::Regex::new(&pattern).map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))?;
            }
            Probe::Exec(argv) if argv.first().is_none_or(|p| p.is_empty()) => {
                return Err("exec needs a program as its first element".into());
            }
            Probe::Exec(_) => {}
        }
        Ok(())
    }
}

/// Reads a probe table: exactly one of tcp, http, log, exec, plus the keys in `extra`
/// (durations or counts), whose values are returned by name.
fn probe_table(value: Value, extra: &[&str]) -> Result<(Probe, BTreeMap<String, Value>), String> {
    let Value::Table(table) = value else {
        return Err(format!("expected a table like {{ tcp = \"127.0.0.1:8000\" }}, found {}", describe(&value)));
    };
    let mut probe = None;
    let mut rest = BTreeMap::new();
    for (key, value) in table {
        let text = |value: Value| match value {
            Value::String(s) if !s.is_empty() => Ok(s),
            other => Err(format!("`{key}`: expected a non-empty string, found {}", describe(&other))),
        };
        let found = match key.as_str() {
            "tcp" => Probe::Tcp(text(value)?),
            "http" => Probe::Http(text(value)?),
            "log" => Probe::Log(text(value)?),
            "exec" => match value {
                Value::Array(items) => Probe::Exec(
                    items
                        .into_iter()
                        .map(|item| match item {
                            Value::String(s) => Ok(s),
                            other => Err(format!("`exec`: expected an array of strings, found {}", describe(&other))),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Value::String(line) => Probe::Exec(vec!["/bin/sh".into(), "-c".into(), line]),
                other => return Err(format!("`exec`: expected an array of strings, found {}", describe(&other))),
            },
            other if extra.contains(&other) => {
                rest.insert(key, value);
                continue;
            }
            other => {
                let keys: Vec<&str> = ["tcp", "http", "log", "exec"].into_iter().chain(extra.iter().copied()).collect();
                return Err(super::keys::unknown(other, &keys));
            }
        };
        if probe.replace(found).is_some() {
            return Err("a probe has one kind: one of tcp, http, log, exec".into());
        }
    }
    let probe = probe.ok_or("a probe needs one of tcp, http, log, exec")?;
    probe.check()?;
    Ok((probe, rest))
}

fn duration_of(rest: &mut BTreeMap<String, Value>, key: &str, default: Duration) -> Result<Duration, String> {
    match rest.remove(key) {
        None => Ok(default),
        Some(Value::String(s)) => procctl_proto::duration::parse(&s).map_err(|e| format!("`{key}`: {e}")),
        Some(other) => Err(format!("`{key}`: expected a duration like \"10s\", found {}", describe(&other))),
    }
}

pub fn ready<'de, D: Deserializer<'de>>(d: D) -> Result<Ready, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if s == "up" => Ok(Ready::Up),
        Value::String(s) if s == "notify" => Ok(Ready::Notify),
        value @ Value::Table(_) => {
            let (probe, mut rest) = probe_table(value, &["timeout"]).map_err(D::Error::custom)?;
            let timeout = duration_of(&mut rest, "timeout", PROBE_TIMEOUT).map_err(D::Error::custom)?;
            Ok(Ready::Probe { probe, timeout })
        }
        other => Err(D::Error::custom(format!(
            "expected \"up\", \"notify\" or a probe like {{ tcp = \"127.0.0.1:{{port}}\" }}, found {}",
            describe(&other)
        ))),
    }
}

pub fn health<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Health>, D::Error> {
    let value = Value::deserialize(d)?;
    let (probe, mut rest) = probe_table(value, &["every", "timeout", "failures"]).map_err(D::Error::custom)?;
    if let Probe::Log(_) = probe {
        return Err(D::Error::custom("a health check cannot be a log probe: use tcp, http or exec"));
    }
    let every = duration_of(&mut rest, "every", HEALTH_EVERY).map_err(D::Error::custom)?;
    let timeout = duration_of(&mut rest, "timeout", PROBE_TIMEOUT).map_err(D::Error::custom)?;
    let failures = match rest.remove("failures") {
        None => HEALTH_FAILURES,
        Some(Value::Integer(n)) if (1..=1000).contains(&n) => n as u32,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "`failures`: expected a whole number from 1, found {}",
                describe(&other)
            )));
        }
    };
    if every.is_zero() {
        return Err(D::Error::custom("`every` must be above 0"));
    }
    Ok(Some(Health { probe, every, timeout, failures }))
}

pub fn depends_on<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Dependency>, D::Error> {
    let table = match Value::deserialize(d)? {
        Value::Table(table) => table,
        other => {
            return Err(D::Error::custom(format!(
                "expected a table like {{ db = \"running\" }}, found {}",
                describe(&other)
            )));
        }
    };
    table
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(s) if s == "running" => Ok((name, Dependency::Running)),
            Value::String(s) if s == "completed" => Ok((name, Dependency::Completed)),
            other => Err(D::Error::custom(format!(
                "`{name}`: expected \"running\" or \"completed\", found {}",
                describe(&other)
            ))),
        })
        .collect()
}

pub fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match Value::deserialize(d)? {
        Value::Integer(n) if (1..=65535).contains(&n) => Ok(Some(n as u16)),
        other => Err(D::Error::custom(format!("expected a port from 1 to 65535, found {}", describe(&other)))),
    }
}

pub fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    value::duration(d).map(Some)
}

/// The first cycle among the dependencies, as the names along it (`a b a`).
pub fn cycle(deps: &BTreeMap<&str, Vec<&str>>) -> Option<Vec<String>> {
    // Depth-first search; `path` is the current chain of names.
    fn visit<'a>(
        name: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if done.contains(&name) {
            return None;
        }
        path.push(name);
        for next in deps.get(name).into_iter().flatten() {
            if let Some(cycle) = visit(next, deps, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(name);
        None
    }
    let mut done = vec![];
    deps.keys().find_map(|name| visit(name, deps, &mut vec![], &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_with_their_path() {
        let graph = |edges: &[(&'static str, &'static [&'static str])]| -> BTreeMap<&str, Vec<&str>> {
            edges.iter().map(|(from, to)| (*from, to.to_vec())).collect()
        };
        assert_eq!(cycle(&graph(&[("a", &["b"]), ("b", &["c"]), ("c", &[])])), None);
        assert_eq!(cycle(&graph(&[("a", &["b"]), ("b", &["a"])])), Some(vec!["a".into(), "b".into(), "a".into()]));
        assert_eq!(cycle(&graph(&[("a", &["a"])])), Some(vec!["a".into(), "a".into()]));
        assert_eq!(
            cycle(&graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])])),
            Some(vec!["b".into(), "c".into(), "b".into()])
        );
        assert_eq!(cycle(&graph(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])])), None);
    }

    #[test]
    fn probes_fill_in_instance_and_port() {
        let probe = Probe::Http("http://127.0.0.1:{port}/i/{instance}".into());
        assert_eq!(probe.render(2, Some(8002)), Probe::Http("http://127.0.0.1:8002/i/2".into()));
        assert!(probe.uses_port());
        assert!(!Probe::Tcp("127.0.0.1:80".into()).uses_port());
        let exec = Probe::Exec(vec!["check".into(), "--port={port}".into()]);
        assert_eq!(exec.render(0, Some(9)), Probe::Exec(vec!["check".into(), "--port=9".into()]));
    }
}
