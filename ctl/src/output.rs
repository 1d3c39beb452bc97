//! The only place that turns replies into text: tables, JSON with stable keys, outcome lines.
//! Results go to stdout, failures to stderr.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use std::io::Write;

use procctl_proto::{
    Delivery, Event, EventKind, Exit, InstanceInfo, LogLine, Outcome, OutcomeKind, ReloadReport, Target,
};
use serde_json::{Value, json};

use crate::Status;

pub fn list_table(rows: &[InstanceInfo]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header([
        "NAME",
        "INSTANCE",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
    ]);
    for row in rows {
        table.add_row([
            row.id.name.clone(),
            row.id.index.to_string(),
            row.pid.map_or("-".into(), |pid| pid.to_string()),
            row.state.to_string(),
            row.uptime_secs.map_or("-".into(), uptime),
            row.restarts.to_string(),
            row.last_exit.map_or("-".into(), |exit| exit.to_string()),
        ]);
    }
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if [1, 2, 5].contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    // The borderless preset pads each line; scripts prefer no trailing blanks.
    table.lines().map(|line| line.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

pub fn list_json(rows: &[InstanceInfo]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "name": row.id.name,
                "instance": row.id.index,
                "pid": row.pid,
                "state": row.state.as_str(),
                "uptime_secs": row.uptime_secs,
                "restarts": row.restarts,
                "last_exit": row.last_exit.map(exit_json),
            })
        })
        .collect();
    Value::Array(rows).to_string()
}

fn exit_json(exit: Exit) -> Value {
    match exit {
        Exit::Code(code) => json!({ "code": code }),
        Exit::Signal(signal) => json!({ "signal": signal.name() }),
    }
}

/// `3d4h`, `2h05m`, `4m07s`, `9s`.
pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Prints one line per outcome; any failure makes the command fail.
pub fn outcomes(outcomes: &[Outcome]) -> Status {
    let mut status = Status::Success;
    for outcome in outcomes {
        let id = &outcome.id;
        let pid = |pid: Option<u32>| pid.map_or("-".to_string(), |pid| pid.to_string());
        match &outcome.kind {
            OutcomeKind::Started { pid } => println!("{id} started (pid {pid})"),
            OutcomeKind::AlreadyRunning { pid: p } => println!("{id} already running (pid {})", pid(*p)),
            OutcomeKind::Stopped => println!("{id} stopped"),
            OutcomeKind::AlreadyStopped => println!("{id} already stopped"),
            OutcomeKind::Restarted { old, new } => println!("{id} restarted: pid {} -> {new}", pid(*old)),
            OutcomeKind::Signalled { pid, signal } => println!("{id} sent {signal} (pid {pid})"),
            OutcomeKind::Failed(error) => {
                eprintln!("procctl: {error}");
                status = Status::Failure;
            }
        }
    }
    status
}

/// Replies (prefixed `NAME:INDEX ` when there are several) or what each instance accepted;
/// failures to stderr. Any failure makes the command fail.
pub fn deliveries(target: &Target, deliveries: &[Delivery], reply: bool) -> Status {
    let several = deliveries.len() > 1;
    let mut status = Status::Success;
    for delivery in deliveries {
        match (&delivery.error, &delivery.reply) {
            (Some(error), _) => {
                eprintln!("procctl: {error}");
                status = Status::Failure;
            }
            (None, Some(line)) if several => println!("{} {line}", delivery.id),
            (None, Some(line)) => println!("{line}"),
            (None, None) if !reply => println!("{} accepted {} message(s)", delivery.id, delivery.accepted),
            (None, None) => {}
        }
    }
    if deliveries.is_empty() {
        eprintln!("procctl: nothing to send to: `{target}` has no instances");
        status = Status::Failure;
    }
    status
}

/// What a reload changed, one line per kind of change; failures to stderr.
pub fn reloaded(report: &ReloadReport) -> Status {
    let names = |list: &[String]| list.join(" ");
    let mut changed = false;
    for (what, list) in [("added", &report.added), ("removed", &report.removed), ("restarted", &report.changed)] {
        if !list.is_empty() {
            println!("{what}: {}", names(list));
            changed = true;
        }
    }
    for (name, from, to) in &report.rescaled {
        println!("rescaled: {name} from {from} to {to}");
        changed = true;
    }
    if !changed {
        println!("nothing changed");
    }
    if report.failures.is_empty() { Status::Success } else { outcomes(&report.failures) }
}

/// One captured line, prefixed `NAME:INDEX ` when the target has several instances.
pub fn log_line(line: &LogLine, several: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if several {
        write!(out, "{} ", line.id)?;
    }
    writeln!(out, "{}", line.text)
}

/// One event: a readable line, or one JSON object with stable keys.
pub fn event(event: &Event, json: bool) -> std::io::Result<()> {
    let time = rfc3339(event.time_ms);
    let line = if json { event_json(&time, &event.kind).to_string() } else { event_text(&time, &event.kind) };
    writeln!(std::io::stdout().lock(), "{line}")
}

pub fn missed(count: u64, json: bool) -> std::io::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let line = if json {
        json!({"time": rfc3339(now), "event": "missed", "count": count}).to_string()
    } else {
        format!("{} missed {count} event(s): this reader was too slow", rfc3339(now))
    };
    writeln!(std::io::stdout().lock(), "{line}")
}

fn event_text(time: &str, kind: &EventKind) -> String {
    let what = match kind {
        EventKind::Spawned { pid, .. } | EventKind::Started { pid, .. } => format!("pid {pid}"),
        EventKind::Exited { pid, exit, .. } => format!("pid {pid} {exit}"),
        EventKind::Backoff { delay_ms, .. } => format!("restart in {delay_ms}ms"),
        EventKind::Scaled { name, from, to } => format!("{name} from {from} to {to}"),
        EventKind::Reply { line, .. } => line.clone(),
        EventKind::Fatal { .. } | EventKind::Stopped { .. } | EventKind::Reloaded => String::new(),
    };
    let id = kind.id().map(|id| format!(" {id}")).unwrap_or_default();
    format!("{time} {}{id} {what}", kind.name()).trim_end().to_string()
}

fn event_json(time: &str, kind: &EventKind) -> Value {
    let mut value = json!({"time": time, "event": kind.name()});
    if let Some(id) = kind.id() {
        value["name"] = json!(id.name);
        value["instance"] = json!(id.index);
    }
    match kind {
        EventKind::Spawned { pid, .. } | EventKind::Started { pid, .. } => value["pid"] = json!(pid),
        EventKind::Exited { pid, exit, .. } => {
            value["pid"] = json!(pid);
            match exit {
                Exit::Code(code) => value["code"] = json!(code),
                Exit::Signal(signal) => value["signal"] = json!(signal.name()),
            }
        }
        EventKind::Backoff { delay_ms, .. } => value["delay_ms"] = json!(delay_ms),
        EventKind::Scaled { name, from, to } => {
            value["name"] = json!(name);
            value["from"] = json!(from);
            value["to"] = json!(to);
        }
        EventKind::Reply { line, .. } => value["line"] = json!(line),
        EventKind::Fatal { .. } | EventKind::Stopped { .. } | EventKind::Reloaded => {}
    }
    value
}

/// RFC 3339 in UTC with milliseconds: `2026-11-24T11:06:36.123Z`.
pub fn rfc3339(time_ms: u64) -> String {
    let (secs, millis) = (time_ms / 1000, time_ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::{InstanceId, Signal, State};

    fn row(pid: Option<u32>, state: State, last_exit: Option<Exit>) -> InstanceInfo {
        InstanceInfo { id: InstanceId::new("web", 1), pid, state, uptime_secs: pid.map(|_| 75), restarts: 2, last_exit }
    }

    #[test]
    fn json_keys_and_nulls_are_those_of_the_spec() {
        let rows = [
            row(Some(42), State::Running, Some(Exit::Signal(Signal::KILL))),
            row(None, State::Stopped, Some(Exit::Code(3))),
        ];
        let value: Value = serde_json::from_str(&list_json(&rows)).unwrap();
        assert_eq!(
            value[0],
            json!({"name": "web", "instance": 1, "pid": 42, "state": "running", "uptime_secs": 75,
                   "restarts": 2, "last_exit": {"signal": "KILL"}})
        );
        assert_eq!(value[1]["pid"], Value::Null);
        assert_eq!(value[1]["uptime_secs"], Value::Null);
        assert_eq!(value[1]["last_exit"], json!({"code": 3}));
    }

    #[test]
    fn the_table_has_every_column() {
        let text = list_table(&[row(Some(42), State::Running, None)]);
        let header = text.lines().next().unwrap();
        for column in ["NAME", "INSTANCE", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT"] {
            assert!(header.contains(column), "{header}");
        }
        assert!(text.contains("1m15s") && text.contains("running") && text.contains("42"));
        assert!(text.lines().all(|line| !line.ends_with(' ')));
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_518_396_007), "2026-11-24T11:06:36.007Z");
    }

    #[test]
    fn event_json_has_the_spec_keys() {
        let id = InstanceId::new("web", 2);
        let exited = EventKind::Exited { id: id.clone(), pid: 9, exit: Exit::Signal(Signal::KILL) };
        assert_eq!(
            event_json("T", &exited),
            json!({"time": "T", "event": "exited", "name": "web", "instance": 2, "pid": 9, "signal": "KILL"})
        );
        let scaled = EventKind::Scaled { name: "web".into(), from: 1, to: 3 };
        assert_eq!(
            event_json("T", &scaled),
            json!({"time": "T", "event": "scaled", "name": "web", "from": 1, "to": 3})
        );
        assert_eq!(event_json("T", &EventKind::Reloaded), json!({"time": "T", "event": "reloaded"}));
        let backoff = EventKind::Backoff { id, delay_ms: 200 };
        assert_eq!(event_json("T", &backoff)["delay_ms"], 200);
    }

    #[test]
    fn uptime_reads_well() {
        assert_eq!(uptime(9), "9s");
        assert_eq!(uptime(247), "4m07s");
        assert_eq!(uptime(7500), "2h05m");
        assert_eq!(uptime(273_600), "3d4h");
    }
}
