//! The values of a config file, read with messages in the user's words: what the key takes
//! and what the file has (`expected a whole number, found the string "two"`), never a Rust
//! type. Each function is a serde `deserialize_with`; serde_path_to_error adds the key path.

use std::collections::BTreeMap;
use std::time::Duration;

use procctl_proto::Signal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Value;

/// How a TOML value reads in a message: `the string "two"`, `the number 3`, `a table`.
pub fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(n) => format!("the number {n}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

fn expected<E: serde::de::Error>(what: &str, value: &Value) -> E {
    E::custom(format!("expected {what}, found {}", describe(value)))
}

/// A count: a whole number from 0 up.
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match Value::deserialize(d)? {
        Value::Integer(n) => u32::try_from(n).map_err(|_| {
            D::Error::custom(format!("expected a whole number from 0 to {}, found the number {n}", u32::MAX))
        }),
        other => Err(expected("a whole number", &other)),
    }
}

pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Boolean(b) => Ok(b),
        other => Err(expected("true or false", &other)),
    }
}

pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if s.contains('\0') => Err(D::Error::custom("a string here cannot contain a NUL byte")),
        Value::String(s) => Ok(s),
        other => Err(expected("a string", &other)),
    }
}

/// One of `choices`, as a string.
pub fn choice<'de, D: Deserializer<'de>>(d: D, choices: &[&str]) -> Result<String, D::Error> {
    let list = choices.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    match Value::deserialize(d)? {
        Value::String(s) if choices.contains(&s.as_str()) => Ok(s),
        other => Err(expected(&format!("one of {list}"), &other)),
    }
}

pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => procctl_proto::duration::parse(&s).map_err(D::Error::custom),
        other => Err(expected("a duration like \"10s\" or \"500ms\"", &other)),
    }
}

/// Bytes, as a number or a string with a unit (`"10MiB"`); never 0.
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Integer(n) if n > 0 => Ok(n as u64),
        Value::String(s) => parse_size(&s).map_err(D::Error::custom),
        other => Err(expected("a size above 0, in bytes or like \"10MiB\"", &other)),
    }
}

/// A signal by name (`"TERM"`, `"SIGTERM"`, `"RTMIN+2"`) or number.
pub fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(D::Error::custom),
        Value::Integer(n) => i32::try_from(n)
            .ok()
            .and_then(Signal::from_number)
            .ok_or_else(|| D::Error::custom(format!("no signal has the number {n}"))),
        other => Err(expected("a signal name like \"TERM\" or a number", &other)),
    }
}

/// argv, or a plain string that runs through `/bin/sh -c`.
pub fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let argv = match Value::deserialize(d)? {
        Value::String(line) if line.trim().is_empty() => return Err(D::Error::custom("the command is empty")),
        Value::String(line) => vec!["/bin/sh".into(), "-c".into(), line],
        Value::Array(items) => {
            let mut argv = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => argv.push(s),
                    other => {
                        let what = format!("an array of strings (element {} is not)", i + 1);
                        return Err(D::Error::custom(format!("expected {what}, found {}", describe(&other))));
                    }
                }
            }
            if argv.first().is_none_or(|p| p.is_empty()) {
                return Err(D::Error::custom("the command needs a program as its first element"));
            }
            argv
        }
        other => return Err(expected("a string or an array of strings", &other)),
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(D::Error::custom("the command contains a NUL byte"));
    }
    Ok(argv)
}

/// A table of strings; each key must be a valid variable name.
pub fn env<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let table = match Value::deserialize(d)? {
        Value::Table(table) => table,
        other => return Err(expected("a table of strings, like { KEY = \"value\" }", &other)),
    };
    let mut env = BTreeMap::new();
    for (key, value) in table {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(D::Error::custom(format!("`{key}` cannot be an environment variable name")));
        }
        match value {
            Value::String(s) if s.contains('\0') => {
                return Err(D::Error::custom(format!("the value of `{key}` contains a NUL byte")));
            }
            Value::String(s) => {
                env.insert(key, s);
            }
            other => return Err(D::Error::custom(format!("`{key}`: expected a string, found {}", describe(&other)))),
        }
    }
    Ok(env)
}

/// A list of strings (`listen`); one string is a list of one.
pub fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Array(items) => items,
        one @ Value::String(_) => vec![one],
        other => return Err(expected("a list of strings", &other)),
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s),
            other => Err(expected("a string", &other)),
        })
        .collect()
}

/// `arg`: any table, handed to the worker as JSON text (`PROCCTL_ARG`); a date becomes its
/// TOML text, a string.
pub fn arg<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        table @ Value::Table(_) => Ok(Some(to_json(table).to_string())),
        other => Err(expected("a table, like { queue = \"jobs\", batch = 10 }", &other)),
    }
}

fn to_json(value: Value) -> serde_json::Value {
    match value {
        Value::String(s) => s.into(),
        Value::Integer(n) => n.into(),
        // JSON has no NaN or infinity: they become null.
        Value::Float(f) => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
        Value::Boolean(b) => b.into(),
        Value::Datetime(d) => d.to_string().into(),
        Value::Array(items) => items.into_iter().map(to_json).collect(),
        Value::Table(table) => table.into_iter().map(|(k, v)| (k, to_json(v))).collect(),
    }
}

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
        Some(0) => Err("expected a size above 0".into()),
        Some(n) => Ok(n),
        None => Err(bad()),
    }
}
