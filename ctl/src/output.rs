//! The only place that turns replies into text: tables, JSON with stable keys, outcome lines.
//! Each printer writes results to `out` (stdout) and failures to `err` (stderr), and returns
//! what the exit status needs; a write error is the caller's to handle.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{self, Write};

use comfy_table::{Cell, CellAlignment, Color, ContentArrangement, Table, presets};
use procctl_proto::{
    Delivery, Event, EventKind, Exit, InstanceId, InstanceInfo, LogLine, Outcome, OutcomeKind, ReloadReport, Target,
    WireError,
};
use procctl_proto::{Health, State};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Status;

/// The rows of `list`: a table, or one JSON array. `hosts` is empty for one agent, else the
/// host of each row (a HOST column first, a `host` key in JSON).
pub fn list(
    rows: &[InstanceInfo],
    hosts: &[&str],
    json: bool,
    colour: bool,
    out: &mut impl Write,
) -> io::Result<Status> {
    if json {
        // Written as it is made, through a buffer of its own, not made whole first: a
        // thousand rows are about 250 KB of JSON, most of what procctl would touch and fault
        // in.
        let mut out = io::BufWriter::with_capacity(JSON_BUFFER.min(JSON_ROW * (rows.len() + 1)), out);
        write_json(rows, hosts, &mut out)?;
        out.write_all(b"\n")?;
        out.flush()?;
    } else {
        writeln!(out, "{}", list_table(rows, hosts, colour))?;
    }
    Ok(Status::Success)
}

/// Bytes of JSON written at a time: what a pipe holds (or room for the rows, when fewer:
/// every page of the buffer is one more for procctl to fault in).
const JSON_BUFFER: usize = 64 * 1024;

/// Bytes of a JSON row, about, besides a status or start error.
const JSON_ROW: usize = 320;

/// The table of `list`: the columns of SPEC.md, then CPU and MEM, then HEALTH and STATUS
/// when an instance listed has one (STATUS last: free text of any length).
///
/// comfy-table, set for speed: no borders (preset NOTHING), no arrangement, and never asked
/// to look at the terminal (`force_no_tty`: its width and tty probes are system calls);
/// colour is decided by the caller. Columns are two spaces apart and no line ends in blanks.
///
/// Without colour the table is one row of multi-line cells, a cell per column holding every
/// instance's value on a line of its own: comfy-table lays out lines as it lays out cells
/// (the widest line sets the column's width, each line aligned and padded alike), so the text
/// is the same as with a cell per value, for a tenth of the cells it makes, measures and frees
/// (most of its time at a thousand rows). With colour, the one thing that differs from row to
/// row, each value is a cell of its own. No value holds a line break (control characters are
/// shown as `?`), so a line is a row.
fn list_table(rows: &[InstanceInfo], hosts: &[&str], colour: bool) -> String {
    let layout = Layout {
        host: !hosts.is_empty(),
        health: rows.iter().any(|row| row.health.is_some()),
        status: rows.iter().any(|row| row.status.is_some()),
    };
    let header = layout.header();
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).force_no_tty();
    if colour {
        table.enforce_styling();
    }
    table.set_header(header.iter().map(Cell::new));
    let host = |number: usize| layout.host.then(|| hosts.get(number).copied().unwrap_or("-"));
    if colour {
        let state = header.iter().position(|&title| title == "STATE");
        let health = header.iter().position(|&title| title == "HEALTH");
        let mut values = vec![String::new(); header.len()];
        for (number, row) in rows.iter().enumerate() {
            values.iter_mut().for_each(String::clear);
            layout.push_row(&mut values, row, host(number));
            let paint = |index| match Some(index) {
                at if at == state => state_colour(row.state),
                at if at == health && row.health == Some(Health::Failing) => Some(Color::Red),
                _ => None,
            };
            table.add_row(values.iter().enumerate().map(|(index, value)| match paint(index) {
                Some(colour_of_value) => Cell::new(value).fg(colour_of_value),
                None => Cell::new(value),
            }));
        }
    } else if !rows.is_empty() {
        let mut columns: Vec<String> = header.iter().map(|_| String::with_capacity(8 * rows.len())).collect();
        for (number, row) in rows.iter().enumerate() {
            if number > 0 {
                columns.iter_mut().for_each(|column| column.push('\n'));
            }
            layout.push_row(&mut columns, row, host(number));
        }
        table.add_row(columns.into_iter().map(Cell::new_owned));
    }
    for (column, title) in table.column_iter_mut().zip(&header) {
        column.set_padding((0, 2));
        if ["INSTANCE", "PID", "RESTARTS", "CPU", "MEM"].contains(title) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    // `trim_fmt`, without a second copy of every line.
    let mut text = String::with_capacity(80 * (rows.len() + 1));
    for (number, line) in table.lines().enumerate() {
        if number > 0 {
            text.push('\n');
        }
        text.push_str(line.trim_end());
    }
    // procctl ends right after printing: the table's memory goes back with the process,
    // instead of being freed line by line.
    std::mem::forget(table);
    text
}

/// The columns of one `list` table: HOST with several hosts, HEALTH and STATUS when a row has one.
struct Layout {
    host: bool,
    health: bool,
    status: bool,
}

impl Layout {
    fn header(&self) -> Vec<&'static str> {
        let mut header = Vec::with_capacity(12);
        header.extend(self.host.then_some("HOST"));
        header.extend(["NAME", "INSTANCE", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT", "CPU", "MEM"]);
        header.extend(self.health.then_some("HEALTH"));
        header.extend(self.status.then_some("STATUS"));
        header
    }

    /// Appends the values of `row` to `columns`, one to each, in the header's order: text
    /// written straight into the column, with no string of its own.
    fn push_row(&self, columns: &mut [String], row: &InstanceInfo, host: Option<&str>) {
        let mut columns = columns.iter_mut();
        let mut next = || columns.next().unwrap_or_else(|| unreachable!("a column for each value"));
        if let Some(host) = host {
            push_text(next(), host);
        }
        push_text(next(), &row.id.name);
        put(next(), row.id.index);
        put_or_dash(next(), row.pid);
        next().push_str(row.state.as_str());
        put_or_dash(next(), row.uptime_secs.map(Uptime));
        put(next(), row.restarts);
        match (&row.start_error, row.last_exit) {
            (Some(error), _) => push_text(next(), error),
            (None, exit) => put_or_dash(next(), exit),
        }
        put_or_dash(next(), row.cpu_tenths.map(Percent));
        put_or_dash(next(), row.memory_bytes.map(Memory));
        if self.health {
            next().push_str(row.health.map_or("-", Health::as_str));
        }
        if self.status {
            // The program's own words: control characters (an escape sequence meant for the
            // terminal of whoever lists) are shown as `?`.
            push_text(next(), row.status.as_deref().unwrap_or("-"));
        }
    }
}

fn put(out: &mut String, value: impl fmt::Display) {
    let _ = write!(out, "{value}");
}

fn put_or_dash(out: &mut String, value: Option<impl fmt::Display>) {
    match value {
        Some(value) => put(out, value),
        None => out.push('-'),
    }
}

/// Text from elsewhere (a program's STATUS=, an error, a name), its control characters shown
/// as `?`: nothing in it reaches the terminal as a command, or breaks its line.
fn push_text(out: &mut String, text: &str) {
    if text.chars().any(char::is_control) {
        out.extend(text.chars().map(|c| if c.is_control() { '?' } else { c }));
    } else {
        out.push_str(text);
    }
}

/// The colour of a state in `list` and `top`: running green; on its way or retrying yellow;
/// given up or ended red; the others plain.
pub fn state_colour(state: State) -> Option<Color> {
    match state {
        State::Running => Some(Color::Green),
        State::Starting | State::Waiting | State::Backoff => Some(Color::Yellow),
        State::Fatal | State::Exited => Some(Color::Red),
        State::Stopping | State::Stopped => None,
    }
}

/// Resident memory as `ps` and `top` show it: `340K`, `12.4M`, `1.02G`.
pub fn memory(bytes: u64) -> String {
    Memory(bytes).to_string()
}

struct Memory(u64);

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = self.0 / 1024;
        match kib {
            0..1024 => write!(f, "{kib}K"),
            1024..1_048_576 => write!(f, "{:.1}M", kib as f64 / 1024.0),
            _ => write!(f, "{:.2}G", kib as f64 / 1_048_576.0),
        }
    }
}

/// CPU in tenths of a percent, as `12.5%`.
struct Percent(u32);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}%", self.0 / 10, self.0 % 10)
    }
}

/// One row of `list --json`, written as it is serialized (no tree of values in between):
/// the keys in name order, `host` only when several hosts answered.
#[derive(Serialize)]
struct JsonRow<'a> {
    autoscale: Option<&'static str>,
    cpu_percent: Option<f64>,
    health: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    instance: u32,
    last_exit: Option<JsonExit>,
    memory_bytes: Option<u64>,
    messages: u64,
    name: &'a str,
    pid: Option<u32>,
    recycles: u32,
    restarts: u32,
    start_error: Option<&'a str>,
    state: &'static str,
    status: Option<&'a str>,
    uptime_secs: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum JsonExit {
    Code(i32),
    Signal(String),
}

/// The rows as one JSON array, the keys of each row in name order.
fn write_json(rows: &[InstanceInfo], hosts: &[&str], out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"[")?;
    for (number, row) in rows.iter().enumerate() {
        if number > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &json_row(row, hosts.get(number).copied()))?;
    }
    out.write_all(b"]")
}

fn json_row<'a>(row: &'a InstanceInfo, host: Option<&'a str>) -> JsonRow<'a> {
    JsonRow {
        autoscale: row.autoscale.map(|on| if on { "on" } else { "paused" }),
        cpu_percent: row.cpu_tenths.map(|t| f64::from(t) / 10.0),
        health: row.health.map(|h| h.as_str()),
        host,
        instance: row.id.index,
        last_exit: row.last_exit.map(|exit| match exit {
            Exit::Code(code) => JsonExit::Code(code),
            Exit::Signal(signal) => JsonExit::Signal(signal.name()),
        }),
        memory_bytes: row.memory_bytes,
        messages: row.messages,
        name: &row.id.name,
        pid: row.pid,
        recycles: row.recycles,
        restarts: row.restarts,
        start_error: row.start_error.as_deref(),
        state: row.state.as_str(),
        status: row.status.as_deref(),
        uptime_secs: row.uptime_secs,
    }
}

/// `3d4h`, `2h05m`, `4m07s`, `9s`.
pub fn uptime(secs: u64) -> String {
    Uptime(secs).to_string()
}

struct Uptime(u64);

impl fmt::Display for Uptime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0;
        let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        match (d, h, m) {
            (0, 0, 0) => write!(f, "{s}s"),
            (0, 0, _) => write!(f, "{m}m{s:02}s"),
            (0, _, _) => write!(f, "{h}h{m:02}m"),
            _ => write!(f, "{d}d{h}h"),
        }
    }
}

/// The pids of `pid`, one per line.
pub fn pids(pids: &[u32], out: &mut impl Write) -> io::Result<Status> {
    for pid in pids {
        writeln!(out, "{pid}")?;
    }
    Ok(Status::Success)
}

/// What a command that found no instance of its target says (`verb` is `start`, `stop`...).
pub fn nothing_to(verb: &str, target: &Target, out: &mut impl Write) -> io::Result<Status> {
    writeln!(out, "nothing to {verb}: {target} has no instances")?;
    Ok(Status::Success)
}

/// One line per outcome, failures to `err`; any failure makes the command fail.
pub fn outcomes(outcomes: &[Outcome], out: &mut impl Write, err: &mut impl Write) -> io::Result<Status> {
    let mut status = Status::Success;
    for outcome in outcomes {
        let id = &outcome.id;
        let pid = |pid: Option<u32>| pid.map_or("-".to_string(), |pid| pid.to_string());
        match &outcome.kind {
            OutcomeKind::Started { pid } => writeln!(out, "{id} started (pid {pid})")?,
            OutcomeKind::AlreadyRunning { pid: p } => writeln!(out, "{id} already running (pid {})", pid(*p))?,
            OutcomeKind::Stopped => writeln!(out, "{id} stopped")?,
            OutcomeKind::AlreadyStopped => writeln!(out, "{id} already stopped")?,
            OutcomeKind::NotRunning { state } => writeln!(out, "{id} is {state}: nothing to stop")?,
            OutcomeKind::Restarted { old, new, killed: false } => {
                writeln!(out, "{id} restarted: pid {} -> {new}", pid(*old))?
            }
            OutcomeKind::Restarted { old, new, killed: true } => {
                writeln!(out, "{id} restarted: pid {} -> {new} (the old one needed SIGKILL)", pid(*old))?
            }
            OutcomeKind::Signalled { pid, signal } => writeln!(out, "{id} sent {signal} (pid {pid})")?,
            OutcomeKind::Failed(error) => {
                writeln!(err, "procctl: {error}")?;
                status = Status::Failure;
            }
        }
    }
    Ok(status)
}

/// A followed stream the agent ended (it is shutting down).
pub fn stream_ended(error: &WireError, err: &mut impl Write) -> io::Result<()> {
    writeln!(err, "procctl: {error}: end of stream")
}

/// What `scale` did.
pub fn scaled(name: &str, from: u32, to: u32, out: &mut impl Write) -> io::Result<Status> {
    if from == to {
        writeln!(out, "{name} already has {to} instance(s)")?;
    } else {
        writeln!(out, "{name} scaled from {from} to {to}")?;
    }
    Ok(Status::Success)
}

pub fn upgraded(from: &str, to: &str, out: &mut impl Write) -> io::Result<Status> {
    writeln!(out, "upgraded procagent {from} -> {to}; serving again, every instance kept")?;
    Ok(Status::Success)
}

pub fn shut_down(out: &mut impl Write) -> io::Result<Status> {
    writeln!(out, "every instance stopped; the agent is exiting")?;
    Ok(Status::Success)
}

/// Replies (prefixed `NAME:INDEX ` when there are several) or what each instance accepted;
/// failures to `err`. Any failure makes the command fail.
pub fn deliveries(
    target: &Target,
    deliveries: &[Delivery],
    reply: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Status> {
    let several = deliveries.len() > 1;
    let mut status = Status::Success;
    for delivery in deliveries {
        match (&delivery.error, &delivery.reply) {
            (Some(error), _) => {
                writeln!(err, "procctl: {error}")?;
                status = Status::Failure;
            }
            (None, Some(line)) if several => writeln!(out, "{} {line}", delivery.id)?,
            (None, Some(line)) => writeln!(out, "{line}")?,
            (None, None) if !reply => accepted_line(&delivery.id, delivery.accepted, out)?,
            (None, None) => {}
        }
    }
    if deliveries.is_empty() {
        writeln!(err, "procctl: nothing to send to: `{target}` has no instances")?;
        status = Status::Failure;
    }
    Ok(status)
}

/// The batch that stopped a `send -` stream, then how many messages went through before it
/// (when any did). The command fails.
pub fn stream_stopped(
    target: &Target,
    batch: &[Delivery],
    through: usize,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Status> {
    deliveries(target, batch, false, out, err)?;
    if through > 0 {
        writeln!(err, "procctl: stopped after {through} messages")?;
    }
    Ok(Status::Failure)
}

/// What each instance accepted over a whole `send -` stream.
pub fn stream_accepted(accepted: &BTreeMap<InstanceId, u32>, out: &mut impl Write) -> io::Result<Status> {
    for (id, count) in accepted {
        accepted_line(id, *count, out)?;
    }
    Ok(Status::Success)
}

fn accepted_line(id: &InstanceId, count: u32, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "{id} accepted {count} message(s)")
}

/// What a reload changed, one line per kind of change; failures to `err`.
pub fn reloaded(report: &ReloadReport, out: &mut impl Write, err: &mut impl Write) -> io::Result<Status> {
    let names = |list: &[String]| list.join(" ");
    let mut changed = false;
    for (what, list) in [("added", &report.added), ("removed", &report.removed), ("restarted", &report.changed)] {
        if !list.is_empty() {
            writeln!(out, "{what}: {}", names(list))?;
            changed = true;
        }
    }
    for (name, from, to) in &report.rescaled {
        writeln!(out, "rescaled: {name} from {from} to {to}")?;
        changed = true;
    }
    if !changed {
        writeln!(out, "nothing changed")?;
    }
    if report.failures.is_empty() { Ok(Status::Success) } else { outcomes(&report.failures, out, err) }
}

/// A piece of the metrics text, as the agent wrote it.
pub fn text(piece: &str, out: &mut impl Write) -> io::Result<()> {
    out.write_all(piece.as_bytes())
}

/// One captured line, prefixed `NAME:INDEX ` when the target has several instances.
pub fn log_line(line: &LogLine, several: bool, out: &mut impl Write) -> io::Result<()> {
    if several {
        write!(out, "{} ", line.id)?;
    }
    writeln!(out, "{}", line.text)
}

/// Lines of a followed log that the agent dropped because we read too slowly.
pub fn missed_lines(count: u64, err: &mut impl Write) -> io::Result<()> {
    writeln!(err, "procctl: missed {count} line(s): this terminal read too slowly")
}

/// One event: a readable line, or one JSON object with stable keys.
pub fn event(event: &Event, json: bool, out: &mut impl Write) -> io::Result<()> {
    let time = rfc3339(event.time_ms);
    let line = if json { event_json(&time, &event.kind).to_string() } else { event_text(&time, &event.kind) };
    writeln!(out, "{line}")
}

/// Events the agent dropped because we read too slowly, in the stream's own form.
pub fn missed_events(count: u64, json: bool, out: &mut impl Write) -> io::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let line = if json {
        json!({"time": rfc3339(now), "event": "missed", "count": count}).to_string()
    } else {
        format!("{} missed {count} event(s): this reader was too slow", rfc3339(now))
    };
    writeln!(out, "{line}")
}

fn event_text(time: &str, kind: &EventKind) -> String {
    let what = match kind {
        EventKind::Spawned { pid, .. } | EventKind::Started { pid, .. } => format!("pid {pid}"),
        EventKind::Exited { pid, exit, .. } => format!("pid {pid} {exit}"),
        EventKind::Backoff { delay_ms, .. } => format!("restart in {delay_ms}ms"),
        EventKind::Scaled { name, from, to } => format!("{name} from {from} to {to}"),
        EventKind::Reply { line, .. } => line.clone(),
        EventKind::Waiting { on, .. } => format!("on {}", on.join(" ")),
        EventKind::Unhealthy { reason, .. } => reason.clone(),
        EventKind::Recycled { reason, .. } => {
            let (why, key, figure) = reason.parts();
            format!("{why} {key}={figure}")
        }
        EventKind::AutoscaleError { name, reason } => format!("{name} {reason}"),
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
        EventKind::Waiting { on, .. } => value["on"] = json!(on),
        EventKind::Unhealthy { reason, .. } => value["reason"] = json!(reason),
        EventKind::Recycled { reason, .. } => {
            let (why, key, figure) = reason.parts();
            value["reason"] = json!(why);
            value[key] = json!(figure);
        }
        EventKind::AutoscaleError { name, reason } => {
            value["name"] = json!(name);
            value["reason"] = json!(reason);
        }
        EventKind::Fatal { .. } | EventKind::Stopped { .. } | EventKind::Reloaded => {}
    }
    value
}

/// RFC 3339 in UTC with milliseconds: `2026-11-24T11:06:36.123Z` (humantime's, which
/// writes it into a fixed buffer without a time-zone database: UTC is all it needs).
fn rfc3339(time_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use procctl_proto::{ErrorKind, Signal, WireError};

    /// What a printer wrote to stdout and to stderr, and the status it returned.
    fn print(printer: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> io::Result<Status>) -> (String, String, Status) {
        let (mut out, mut err) = (vec![], vec![]);
        let status = printer(&mut out, &mut err).unwrap();
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), status)
    }

    fn outcome(index: u32, kind: OutcomeKind) -> Outcome {
        Outcome { id: InstanceId::new("web", index), kind }
    }

    fn failed(message: &str) -> WireError {
        WireError::new(ErrorKind::Failed, message)
    }

    fn delivery(index: u32, accepted: u32, reply: Option<&str>, error: Option<&str>) -> Delivery {
        Delivery { id: InstanceId::new("web", index), accepted, reply: reply.map(Into::into), error: error.map(failed) }
    }

    fn row(pid: Option<u32>, state: State, last_exit: Option<Exit>) -> InstanceInfo {
        InstanceInfo {
            id: InstanceId::new("web", 1),
            pid,
            state,
            uptime_secs: pid.map(|_| 75),
            restarts: 2,
            last_exit,
            health: None,
            status: None,
            cpu_tenths: pid.map(|_| 125),
            memory_bytes: pid.map(|_| 13 << 20),
            start_error: None,
            recycles: 1,
            messages: 7,
            autoscale: None,
        }
    }

    #[test]
    fn json_keys_and_nulls_are_those_of_the_spec() {
        let rows = [
            row(Some(42), State::Running, Some(Exit::Signal(Signal::KILL))),
            row(None, State::Stopped, Some(Exit::Code(3))),
        ];
        let value: Value = serde_json::from_str(&list_json(&rows, &[])).unwrap();
        assert_eq!(
            value[0],
            json!({"name": "web", "instance": 1, "pid": 42, "state": "running", "uptime_secs": 75,
                   "restarts": 2, "last_exit": {"signal": "KILL"}, "health": null, "status": null,
                   "cpu_percent": 12.5, "memory_bytes": 13 << 20, "start_error": null, "recycles": 1, "messages": 7, "autoscale": null})
        );
        assert_eq!(value[1]["pid"], Value::Null);
        assert_eq!(value[1]["uptime_secs"], Value::Null);
        assert_eq!(value[1]["last_exit"], json!({"code": 3}));
    }

    #[test]
    fn the_table_has_every_column() {
        let text = list_table(&[row(Some(42), State::Running, None)], &[], false);
        let header = text.lines().next().unwrap();
        for column in ["NAME", "INSTANCE", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT"] {
            assert!(header.contains(column), "{header}");
        }
        assert!(text.contains("1m15s") && text.contains("running") && text.contains("42"));
        assert!(text.lines().all(|line| !line.ends_with(' ')));
    }

    #[test]
    fn the_table_aligns_columns_by_their_width_on_screen() {
        let mut a = row(Some(42), State::Running, None);
        a.status = Some("listening on :8080 ✓ — ready".into());
        a.health = Some(Health::Ok);
        let mut b = row(None, State::Exited, Some(Exit::Code(3)));
        b.id = InstanceId::new("一个很长的名字-worker", 10);
        b.restarts = 12345;
        let mut c = row(Some(1234567), State::Backoff, None);
        c.cpu_tenths = Some(1999);
        c.memory_bytes = Some(3 << 30);
        c.uptime_secs = Some(90061);
        let all = [
            "NAME                   INSTANCE      PID  STATE    UPTIME  RESTARTS  LAST EXIT     CPU    MEM  HEALTH  STATUS",
            "web                           1       42  running  1m15s          2  -           12.5%  13.0M  ok      listening on :8080 ✓ — ready",
            "一个很长的名字-worker        10        -  exited   -          12345  code 3          -      -  -       -",
            "web                           1  1234567  backoff  1d1h           2  -          199.9%  3.00G  -       -",
        ];
        assert_eq!(list_table(&[a, b.clone(), c.clone()], &[], false), all.join("\n"));
        let without_health_and_status = [
            "NAME                   INSTANCE      PID  STATE    UPTIME  RESTARTS  LAST EXIT     CPU    MEM",
            "一个很长的名字-worker        10        -  exited   -          12345  code 3          -      -",
            "web                           1  1234567  backoff  1d1h           2  -          199.9%  3.00G",
        ];
        assert_eq!(list_table(&[b, c], &[], false), without_health_and_status.join("\n"));
        let mut d = row(Some(7), State::Running, None);
        d.status = Some("\u{1b}]0;owned\u{7}\tup".into());
        assert!(list_table(&[d], &[], false).ends_with("  ?]0;owned??up"), "control characters are not written out");
        assert_eq!(list_table(&[], &[], false), "NAME  INSTANCE  PID  STATE  UPTIME  RESTARTS  LAST EXIT  CPU  MEM");
    }

    #[test]
    fn colour_changes_no_place_in_the_table_and_a_value_never_breaks_its_line() {
        let mut a = row(Some(42), State::Running, None);
        a.health = Some(Health::Failing);
        a.status = Some("two\nlines".into());
        let mut b = row(None, State::Fatal, None);
        b.start_error = Some("not found:\n/bin/nope".into());
        let mut c = row(Some(7), State::Backoff, Some(Exit::Code(1)));
        c.id = InstanceId::new("longer-name", 12);
        let rows = [a, b, c];
        for hosts in [&[][..], &["a", "far\u{1b}host", "b"][..]] {
            let plain = list_table(&rows, hosts, false);
            let coloured = list_table(&rows, hosts, true);
            assert!(coloured.contains("\u{1b}["), "{coloured}");
            // Escape sequences take no width: without them, the same text.
            let mut stripped = String::new();
            let mut chars = coloured.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    chars.by_ref().find(|c| ('@'..='~').contains(c) && *c != '[');
                } else {
                    stripped.push(c);
                }
            }
            assert_eq!(stripped, plain);
            assert_eq!(plain.lines().count(), 4, "{plain}");
            assert!(plain.contains("two?lines") && plain.contains("not found:?/bin/nope"), "{plain}");
        }
        assert!(list_table(&rows, &["a", "far\u{1b}host", "b"], false).contains("far?host"));
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

    #[test]
    fn each_outcome_is_one_line_on_stdout_and_a_failure_one_line_on_stderr() {
        use OutcomeKind::*;
        let cases = [
            (Started { pid: 10 }, "web:0 started (pid 10)\n", "", Status::Success),
            (AlreadyRunning { pid: Some(10) }, "web:0 already running (pid 10)\n", "", Status::Success),
            (AlreadyRunning { pid: None }, "web:0 already running (pid -)\n", "", Status::Success),
            (Stopped, "web:0 stopped\n", "", Status::Success),
            (AlreadyStopped, "web:0 already stopped\n", "", Status::Success),
            (NotRunning { state: State::Fatal }, "web:0 is fatal: nothing to stop\n", "", Status::Success),
            (
                Restarted { old: Some(10), new: 12, killed: false },
                "web:0 restarted: pid 10 -> 12\n",
                "",
                Status::Success,
            ),
            (Restarted { old: None, new: 12, killed: false }, "web:0 restarted: pid - -> 12\n", "", Status::Success),
            (
                Restarted { old: Some(10), new: 12, killed: true },
                "web:0 restarted: pid 10 -> 12 (the old one needed SIGKILL)\n",
                "",
                Status::Success,
            ),
            (Signalled { pid: 10, signal: Signal::HUP }, "web:0 sent HUP (pid 10)\n", "", Status::Success),
            (Failed(failed("web:0 did not start")), "", "procctl: web:0 did not start\n", Status::Failure),
        ];
        for (kind, out, err, status) in cases {
            let list = [outcome(0, kind)];
            assert_eq!(print(|o, e| outcomes(&list, o, e)), (out.into(), err.into(), status), "{list:?}");
        }
    }

    #[test]
    fn one_failed_outcome_among_others_fails_the_command_and_the_rest_still_print() {
        let list = [
            outcome(0, OutcomeKind::Stopped),
            outcome(1, OutcomeKind::Failed(failed("web:1 is stuck"))),
            outcome(2, OutcomeKind::AlreadyStopped),
        ];
        let (out, err, status) = print(|o, e| outcomes(&list, o, e));
        assert_eq!(out, "web:0 stopped\nweb:2 already stopped\n");
        assert_eq!(err, "procctl: web:1 is stuck\n");
        assert_eq!(status, Status::Failure);
    }

    #[test]
    fn a_target_without_instances_says_there_was_nothing_to_do() {
        for (verb, target, line) in [
            ("start", Target::All, "nothing to start: all has no instances\n"),
            ("stop", Target::Name("web".into()), "nothing to stop: web has no instances\n"),
            ("restart", Target::Instance(InstanceId::new("web", 3)), "nothing to restart: web:3 has no instances\n"),
            ("signal", Target::Name("web".into()), "nothing to signal: web has no instances\n"),
        ] {
            assert_eq!(print(|o, _| nothing_to(verb, &target, o)), (line.into(), String::new(), Status::Success));
        }
    }

    #[test]
    fn deliveries_print_replies_acceptances_and_failures_where_they_belong() {
        let web = Target::Name("web".into());
        let cases = [
            (
                "several replies are prefixed",
                vec![delivery(0, 1, Some("pong 0"), None), delivery(1, 1, Some("pong 1"), None)],
                true,
                "web:0 pong 0\nweb:1 pong 1\n",
                "",
                Status::Success,
            ),
            ("a single reply is bare", vec![delivery(0, 1, Some("pong"), None)], true, "pong\n", "", Status::Success),
            (
                "without --reply, each instance says what it accepted",
                vec![delivery(0, 1, None, None), delivery(1, 1, None, None)],
                false,
                "web:0 accepted 1 message(s)\nweb:1 accepted 1 message(s)\n",
                "",
                Status::Success,
            ),
            (
                "with --reply and no line, nothing is printed",
                vec![delivery(0, 1, None, None)],
                true,
                "",
                "",
                Status::Success,
            ),
            (
                "an error goes to stderr and fails",
                vec![delivery(0, 0, None, Some("web:0 sent no reply within 5s"))],
                true,
                "",
                "procctl: web:0 sent no reply within 5s\n",
                Status::Failure,
            ),
            (
                "an error among replies keeps the others prefixed",
                vec![delivery(0, 1, Some("pong"), None), delivery(1, 0, Some("late"), Some("web:1 queue is full"))],
                true,
                "web:0 pong\n",
                "procctl: web:1 queue is full\n",
                Status::Failure,
            ),
            (
                "no instance at all fails",
                vec![],
                false,
                "",
                "procctl: nothing to send to: `web` has no instances\n",
                Status::Failure,
            ),
        ];
        for (case, list, reply, out, err, status) in cases {
            assert_eq!(print(|o, e| deliveries(&web, &list, reply, o, e)), (out.into(), err.into(), status), "{case}");
        }
    }

    #[test]
    fn a_stopped_stream_says_how_many_messages_went_through_when_any_did() {
        let web = Target::Name("web".into());
        let batch = [delivery(0, 2, None, None), delivery(1, 0, None, Some("web:1 read nothing for 5s"))];
        let (out, err, status) = print(|o, e| stream_stopped(&web, &batch, 7, o, e));
        assert_eq!(out, "web:0 accepted 2 message(s)\n");
        assert_eq!(err, "procctl: web:1 read nothing for 5s\nprocctl: stopped after 7 messages\n");
        assert_eq!(status, Status::Failure);
        let none = print(|o, e| stream_stopped(&web, &[], 0, o, e));
        assert_eq!(
            none,
            (String::new(), "procctl: nothing to send to: `web` has no instances\n".into(), Status::Failure)
        );
    }

    #[test]
    fn a_finished_stream_says_what_each_instance_accepted_in_order() {
        let accepted = BTreeMap::from([(InstanceId::new("web", 1), 5), (InstanceId::new("web", 0), 3)]);
        let printed = print(|o, _| stream_accepted(&accepted, o));
        assert_eq!(
            printed,
            ("web:0 accepted 3 message(s)\nweb:1 accepted 5 message(s)\n".into(), String::new(), Status::Success)
        );
    }

    #[test]
    fn a_reload_prints_one_line_per_kind_of_change_and_its_failures_on_stderr() {
        let report = ReloadReport {
            added: vec!["api".into(), "cron".into()],
            removed: vec!["old".into()],
            changed: vec!["web".into()],
            rescaled: vec![("worker".into(), 1, 3)],
            failures: vec![],
        };
        let printed = print(|o, e| reloaded(&report, o, e));
        let out = "added: api cron\nremoved: old\nrestarted: web\nrescaled: worker from 1 to 3\n";
        assert_eq!(printed, (out.into(), String::new(), Status::Success));

        let printed = print(|o, e| reloaded(&ReloadReport::default(), o, e));
        assert_eq!(printed, ("nothing changed\n".into(), String::new(), Status::Success));

        let failures = ReloadReport {
            changed: vec!["web".into()],
            failures: vec![outcome(0, OutcomeKind::Failed(failed("web:0 exited with code 1 while starting")))],
            ..ReloadReport::default()
        };
        let printed = print(|o, e| reloaded(&failures, o, e));
        let err = "procctl: web:0 exited with code 1 while starting\n";
        assert_eq!(printed, ("restarted: web\n".into(), err.into(), Status::Failure));
    }

    #[test]
    fn pids_are_one_per_line() {
        assert_eq!(print(|o, _| pids(&[10], o)), ("10\n".into(), String::new(), Status::Success));
        assert_eq!(print(|o, _| pids(&[10, 11, 12], o)), ("10\n11\n12\n".into(), String::new(), Status::Success));
    }

    #[test]
    fn scale_says_what_changed_or_that_nothing_did() {
        for (from, to, line) in [
            (1, 4, "worker scaled from 1 to 4\n"),
            (3, 0, "worker scaled from 3 to 0\n"),
            (2, 2, "worker already has 2 instance(s)\n"),
        ] {
            assert_eq!(print(|o, _| scaled("worker", from, to, o)), (line.into(), String::new(), Status::Success));
        }
    }

    #[test]
    fn shutdown_says_the_agent_is_exiting() {
        let printed = print(|o, _| shut_down(o));
        assert_eq!(printed, ("every instance stopped; the agent is exiting\n".into(), String::new(), Status::Success));
    }

    /// The rows as the one JSON array serde makes of them collected, to check what `list`
    /// writes row by row against.
    fn list_json(rows: &[InstanceInfo], hosts: &[&str]) -> String {
        let rows: Vec<JsonRow> =
            rows.iter().enumerate().map(|(number, row)| json_row(row, hosts.get(number).copied())).collect();
        serde_json::to_string(&rows).unwrap()
    }

    #[test]
    fn list_ends_its_table_or_json_with_a_newline() {
        let rows = [row(Some(42), State::Running, None)];
        let (table, _, status) = print(|o, _| list(&rows, &[], false, false, o));
        assert_eq!((table, status), (format!("{}\n", list_table(&rows, &[], false)), Status::Success));
        let (json, _, _) = print(|o, _| list(&rows, &[], true, false, o));
        assert_eq!(json, format!("{}\n", list_json(&rows, &[])));
    }

    #[test]
    fn list_json_written_row_by_row_is_the_array_serde_makes() {
        let mut rows = vec![
            row(Some(42), State::Running, Some(Exit::Signal(Signal::KILL))),
            row(None, State::Fatal, Some(Exit::Code(-1))),
        ];
        rows[1].status = Some("say \"hi\"\n\u{1}".into());
        rows[1].start_error = Some("é not found".into());
        rows[1].health = Some(Health::Failing);
        rows[1].autoscale = Some(false);
        // Enough rows to fill the buffer several times over.
        let many: Vec<InstanceInfo> = rows.iter().cycle().take(2000).cloned().collect();
        // (rows, hosts)
        let cases: [(&[InstanceInfo], &[&str]); 5] =
            [(&[], &[]), (&rows[..1], &[]), (&rows, &[]), (&rows, &["a", "b"]), (&many, &[])];
        for (rows, hosts) in cases {
            let (json, _, status) = print(|o, _| list(rows, hosts, true, false, o));
            assert_eq!(
                (json, status),
                (format!("{}\n", list_json(rows, hosts)), Status::Success),
                "{} rows",
                rows.len()
            );
        }
    }

    #[test]
    fn log_lines_are_prefixed_only_when_the_target_has_several_instances() {
        let line = LogLine { id: InstanceId::new("web", 1), time_ms: 0, text: "hello".into() };
        for (several, text) in [(true, "web:1 hello\n"), (false, "hello\n")] {
            let mut out = vec![];
            log_line(&line, several, &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
        let mut err = vec![];
        missed_lines(4, &mut err).unwrap();
        assert_eq!(String::from_utf8(err).unwrap(), "procctl: missed 4 line(s): this terminal read too slowly\n");
    }

    #[test]
    fn an_event_is_one_line_of_text_or_json() {
        let started = Event { time_ms: 0, kind: EventKind::Started { id: InstanceId::new("web", 0), pid: 7 } };
        let mut out = vec![];
        event(&started, false, &mut out).unwrap();
        event(&started, true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "1970-01-01T00:00:00.000Z started web:0 pid 7");
        let json: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            json,
            json!({"time": "1970-01-01T00:00:00.000Z", "event": "started", "name": "web", "instance": 0, "pid": 7})
        );
        assert!(text.ends_with('\n') && lines.len() == 2);
    }
}
