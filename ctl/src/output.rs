//! The only place that turns replies into text: tables, JSON with stable keys, outcome lines.
//! Results go to stdout, failures to stderr.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use procctl_proto::{Exit, InstanceInfo, Outcome, OutcomeKind};
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
    fn uptime_reads_well() {
        assert_eq!(uptime(9), "9s");
        assert_eq!(uptime(247), "4m07s");
        assert_eq!(uptime(7500), "2h05m");
        assert_eq!(uptime(273_600), "3d4h");
    }
}
