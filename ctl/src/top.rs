//! `procctl top`: the full-screen live view. Its terminal set-up (ratatui, crossterm) runs
//! only here, never on another command's path.
//!
//! Four threads feed one channel: the agent's events (one subscription: each event marks the
//! rows stale), the rows (a `list` when they are stale, and each second for CPU and MEM), the
//! output of every instance (one `logs -f all`, filtered to the selected one here), and the
//! keyboard. The screen is drawn only after something changed, at most 30 times a second.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use procctl_proto::{InstanceId, InstanceInfo, LogLine, Request, Response, State, Target};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState};
use ratatui::{DefaultTerminal, Frame};

use crate::Status;
use crate::client::{Client, CtlError};
use crate::host::Endpoint;
use crate::output;

const FRAME: Duration = Duration::from_millis(1000 / 30);
const SAMPLE: Duration = Duration::from_secs(1);
/// Lines of log kept for the selected instance.
const TAIL: usize = 500;

enum Msg {
    Rows(Vec<InstanceInfo>),
    Stale,
    Log(LogLine),
    Tail(InstanceId, Vec<LogLine>),
    Key(KeyEvent),
    Resized,
    Said(String),
    Lost(String),
}

pub fn run(endpoint: &Endpoint, colour: bool) -> Result<Status, CtlError> {
    if !std::io::stdout().is_terminal() {
        return Err(CtlError::Usage("top draws on a terminal, and stdout is not one".into()));
    }
    // Connect before the screen changes, so an unreachable agent is an ordinary error.
    let mut events = Client::open(endpoint)?;
    events.start(&Request::Events)?;
    let mut logs = Client::open(endpoint)?;
    logs.start(&Request::Logs { target: Target::All, lines: 0, follow: true })?;
    let rows = Client::open(endpoint)?;
    let actions = Client::open(endpoint)?;

    let (tx, rx) = channel();
    let (stale_tx, stale_rx) = channel::<()>();
    feed_events(events, tx.clone(), stale_tx.clone());
    feed_rows(rows, tx.clone(), stale_rx);
    feed_logs(logs, tx.clone());
    let actions = spawn_actions(actions, tx.clone());
    feed_keys(tx);

    let terminal = ratatui::try_init().map_err(|e| CtlError::Failed(format!("cannot set up the terminal: {e}")))?;
    // Restored on every way out: return, error, and (through ratatui's hook) a panic.
    let _restore = Restore;
    let mut view = View::new(colour, actions);
    view.event_loop(terminal, &rx)
}

struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn feed_events(mut client: Client, tx: Sender<Msg>, stale: Sender<()>) {
    std::thread::spawn(move || {
        loop {
            match client.next() {
                Ok(Response::Event(_) | Response::Missed(_)) => {
                    let _ = stale.send(());
                    if tx.send(Msg::Stale).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = tx.send(Msg::Lost(error.to_string()));
                    return;
                }
            }
        }
    });
}

/// A `list` at once, then whenever an event says the rows changed (several events at once
/// make one request), and each second for CPU and MEM.
fn feed_rows(mut client: Client, tx: Sender<Msg>, stale: Receiver<()>) {
    std::thread::spawn(move || {
        loop {
            match client.call(&Request::List { target: Target::All }) {
                Ok(Response::List(rows)) => {
                    if tx.send(Msg::Rows(rows)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = tx.send(Msg::Lost(error.to_string()));
                    return;
                }
            }
            match stale.recv_timeout(SAMPLE) {
                Ok(()) => while stale.try_recv().is_ok() {},
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    });
}

fn feed_logs(mut client: Client, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        loop {
            let msg = match client.next() {
                Ok(Response::LogLine(line)) => Msg::Log(line),
                Ok(_) => continue,
                Err(error) => Msg::Lost(error.to_string()),
            };
            let lost = matches!(msg, Msg::Lost(_));
            if tx.send(msg).is_err() || lost {
                return;
            }
        }
    });
}

fn feed_keys(tx: Sender<Msg>) {
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            let msg = match event {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => Msg::Key(key),
                TermEvent::Resize(..) => Msg::Resized,
                _ => continue,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}

/// Runs each request the keys ask for on a connection of its own, one at a time, and says
/// how it went in the status line.
fn spawn_actions(mut client: Client, tx: Sender<Msg>) -> Sender<Request> {
    let (requests, queue) = channel::<Request>();
    std::thread::spawn(move || {
        for request in queue {
            let mut answer = client.call(&request);
            // A restart streams its steps before its outcomes, which tell it all.
            while let Ok(Response::Step(_)) = answer {
                answer = client.next();
            }
            let msg = match (&request, answer) {
                (Request::Logs { target: Target::Instance(id), .. }, Ok(Response::Logs { lines, .. })) => {
                    Msg::Tail(id.clone(), lines)
                }
                (_, Ok(response)) => Msg::Said(said(&request, &response)),
                (_, Err(CtlError::Agent(error))) => Msg::Said(error.to_string()),
                (_, Err(error)) => Msg::Lost(error.to_string()),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
    requests
}

/// The status line's words for what an action did.
fn said(request: &Request, response: &Response) -> String {
    let mut text = vec![];
    match response {
        Response::Outcomes(list) if list.is_empty() => text.extend(b"nothing to do".iter().copied()),
        Response::Outcomes(list) => {
            let _ = output::outcomes(list, &mut text, &mut Vec::new());
            for outcome in list {
                if let procctl_proto::OutcomeKind::Failed(error) = &outcome.kind {
                    text.extend(format!("{error}\n").bytes());
                }
            }
        }
        Response::Scaled { name, from, to } => {
            let _ = output::scaled(name, *from, *to, &mut text);
        }
        _ => text.extend(format!("{} done", request.verb()).bytes()),
    }
    String::from_utf8_lossy(&text).trim().replace('\n', "; ")
}

struct View {
    colour: bool,
    actions: Sender<Request>,
    rows: Vec<InstanceInfo>,
    table: TableState,
    selected: Option<InstanceId>,
    log: VecDeque<LogLine>,
    filter: String,
    /// The filter being typed after `/`.
    editing: Option<String>,
    full_logs: bool,
    help: bool,
    status: String,
    dirty: bool,
}

impl View {
    fn new(colour: bool, actions: Sender<Request>) -> View {
        View {
            colour,
            actions,
            rows: vec![],
            table: TableState::default(),
            selected: None,
            log: VecDeque::new(),
            filter: String::new(),
            editing: None,
            full_logs: false,
            help: false,
            status: "? for help".into(),
            dirty: true,
        }
    }

    fn event_loop(&mut self, mut terminal: DefaultTerminal, rx: &Receiver<Msg>) -> Result<Status, CtlError> {
        let mut drawn = Instant::now() - FRAME;
        loop {
            let wait = if self.dirty { FRAME.saturating_sub(drawn.elapsed()) } else { Duration::from_secs(3600) };
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    if let Some(end) = self.take(msg) {
                        return end;
                    }
                    while let Ok(msg) = rx.try_recv() {
                        if let Some(end) = self.take(msg) {
                            return end;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Status::Success),
            }
            if self.dirty && drawn.elapsed() >= FRAME {
                terminal.draw(|frame| self.draw(frame)).map_err(|e| CtlError::Failed(format!("cannot draw: {e}")))?;
                drawn = Instant::now();
                self.dirty = false;
            }
        }
    }

    /// Takes one message; `Some` ends `top` with that result.
    fn take(&mut self, msg: Msg) -> Option<Result<Status, CtlError>> {
        self.dirty = true;
        match msg {
            Msg::Rows(rows) => {
                self.rows = rows;
                self.reselect();
            }
            Msg::Stale | Msg::Resized => {}
            Msg::Log(line) => {
                if self.selected.as_ref() == Some(&line.id) {
                    self.push_log(line);
                } else {
                    self.dirty = false;
                }
            }
            Msg::Tail(id, lines) => {
                if self.selected.as_ref() == Some(&id) {
                    self.log.clear();
                    lines.into_iter().for_each(|line| self.push_log(line));
                }
            }
            Msg::Said(text) => self.status = text,
            Msg::Lost(error) => return Some(Err(CtlError::Protocol(error))),
            Msg::Key(key) => return self.key(key),
        }
        None
    }

    fn push_log(&mut self, line: LogLine) {
        if self.log.len() == TAIL {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    fn visible(&self) -> Vec<&InstanceInfo> {
        self.rows.iter().filter(|row| row.id.to_string().contains(self.filter.as_str())).collect()
    }

    /// Keeps the selection on the same instance as rows come and go; a new selection asks
    /// for its log tail.
    fn reselect(&mut self) {
        let visible = self.visible();
        let index = self
            .selected
            .as_ref()
            .and_then(|id| visible.iter().position(|row| &row.id == id))
            .or_else(|| (!visible.is_empty()).then(|| self.table.selected().unwrap_or(0).min(visible.len() - 1)));
        let id = index.map(|index| visible[index].id.clone());
        self.table.select(index);
        if id != self.selected {
            self.selected = id.clone();
            self.log.clear();
            if let Some(id) = id {
                let _ = self.actions.send(Request::Logs {
                    target: Target::Instance(id),
                    lines: TAIL as u32,
                    follow: false,
                });
            }
        }
    }

    fn key(&mut self, key: KeyEvent) -> Option<Result<Status, CtlError>> {
        let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c {
            return Some(Ok(Status::Success));
        }
        if let Some(typed) = &mut self.editing {
            match key.code {
                KeyCode::Enter => self.editing = None,
                KeyCode::Esc => {
                    self.editing = None;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    typed.pop();
                    self.filter = typed.clone();
                }
                KeyCode::Char(c) => {
                    typed.push(c);
                    self.filter = typed.clone();
                }
                _ => {}
            }
            self.reselect();
            return None;
        }
        if self.help {
            self.help = false;
            return None;
        }
        let selected = self.selected.clone();
        let row = selected.as_ref().and_then(|id| self.rows.iter().find(|row| &row.id == id));
        match key.code {
            KeyCode::Char('q') => return Some(Ok(Status::Success)),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('l') => self.full_logs = !self.full_logs,
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Char('r') => {
                if let Some(id) = selected {
                    self.act(format!("restarting {id}"), Request::Restart { target: Target::Instance(id) });
                }
            }
            KeyCode::Char('s') => {
                if let Some(row) = row {
                    let target = Target::Instance(row.id.clone());
                    match row.state {
                        State::Running | State::Starting | State::Backoff | State::Waiting => {
                            self.act(format!("stopping {}", row.id), Request::Stop { target })
                        }
                        _ => self.act(format!("starting {}", row.id), Request::Start { target }),
                    }
                }
            }
            KeyCode::Char(sign @ ('+' | '-')) => {
                if let Some(id) = selected {
                    let count = self.rows.iter().filter(|row| row.id.name == id.name).count() as u32;
                    let count = if sign == '+' { count + 1 } else { count.saturating_sub(1) };
                    self.act(format!("scaling {} to {count}", id.name), Request::Scale { name: id.name, count });
                }
            }
            _ => {}
        }
        self.reselect();
        None
    }

    fn act(&mut self, doing: String, request: Request) {
        self.status = format!("{doing}…");
        let _ = self.actions.send(request);
    }

    fn step(&mut self, by: isize) {
        let visible = self.visible();
        if visible.is_empty() {
            return;
        }
        let at = self.table.selected().unwrap_or(0) as isize + by;
        let at = at.clamp(0, visible.len() as isize - 1) as usize;
        let id = visible[at].id.clone();
        if self.selected.as_ref() == Some(&id) {
            return;
        }
        self.table.select(Some(at));
        self.selected = Some(id.clone());
        self.log.clear();
        let _ = self.actions.send(Request::Logs { target: Target::Instance(id), lines: TAIL as u32, follow: false });
    }

    fn draw(&mut self, frame: &mut Frame) {
        let area = frame.area();
        let [main, status] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
        let logs_area = if self.full_logs {
            main
        } else {
            let [rows, logs] = Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(main);
            self.draw_rows(frame, rows);
            logs
        };
        self.draw_logs(frame, logs_area);
        let line = match &self.editing {
            Some(typed) => format!("/{typed}"),
            None if self.filter.is_empty() => format!("{} instances · {}", self.rows.len(), self.status),
            None => format!(
                "{} of {} instances match /{} · {}",
                self.visible().len(),
                self.rows.len(),
                self.filter,
                self.status
            ),
        };
        frame.render_widget(
            Paragraph::new(line).style(self.style(Style::new().add_modifier(Modifier::REVERSED))),
            status,
        );
        if self.help {
            self.draw_help(frame, area);
        }
    }

    fn style(&self, style: Style) -> Style {
        if self.colour { style } else { Style::new().add_modifier(style.add_modifier) }
    }

    fn draw_rows(&mut self, frame: &mut Frame, area: Rect) {
        let header = ["NAME:INDEX", "PID", "STATE", "HEALTH", "UPTIME", "RESTARTS", "CPU", "MEM", "LAST EXIT"];
        let dash = || "-".to_string();
        let colour = self.colour;
        let rows: Vec<Row> = self
            .visible()
            .into_iter()
            .map(|row| {
                let state_style = match output::state_colour(row.state).filter(|_| colour) {
                    Some(comfy) => Style::new().fg(ratatui_colour(comfy)),
                    None => Style::new(),
                };
                let health = row.health.map_or_else(dash, |health| health.as_str().to_string());
                let health_style =
                    if colour && health == "failing" { Style::new().fg(Color::Red) } else { Style::new() };
                Row::new([
                    Cell::new(row.id.to_string()),
                    Cell::new(row.pid.map_or_else(dash, |pid| pid.to_string())),
                    Cell::new(row.state.as_str()).style(state_style),
                    Cell::new(health).style(health_style),
                    Cell::new(row.uptime_secs.map_or_else(dash, output::uptime)),
                    Cell::new(row.restarts.to_string()),
                    Cell::new(row.cpu_tenths.map_or_else(dash, |t| format!("{}.{}%", t / 10, t % 10))),
                    Cell::new(row.memory_bytes.map_or_else(dash, output::memory)),
                    Cell::new(row.last_exit.map_or_else(dash, |exit| exit.to_string())),
                ])
            })
            .collect();
        let widths = [
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Min(10),
        ];
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::new().borders(Borders::BOTTOM));
        frame.render_stateful_widget(table, area, &mut self.table);
    }

    fn draw_logs(&self, frame: &mut Frame, area: Rect) {
        let title = match &self.selected {
            Some(id) => format!(" {id} log "),
            None => " log ".to_string(),
        };
        let height = area.height.saturating_sub(1) as usize;
        let skip = self.log.len().saturating_sub(height);
        let lines: Vec<Line> = self.log.iter().skip(skip).map(|line| Line::raw(printable(&line.text))).collect();
        frame.render_widget(Paragraph::new(lines).block(Block::new().title(title).borders(Borders::TOP)), area);
    }

    fn draw_help(&self, frame: &mut Frame, area: Rect) {
        let text = [
            "↑ ↓ or j k   select",
            "r            restart the selected instance",
            "s            stop it, or start it",
            "+ -          scale its process up or down",
            "/            filter by name (Enter keeps, Esc clears)",
            "l            full-height logs",
            "?            this help",
            "q or Ctrl-C  quit",
            "",
            "any key closes this help",
        ];
        let width = 52.min(area.width);
        let height = (text.len() as u16 + 2).min(area.height);
        let popup = Rect::new(area.x + (area.width - width) / 2, area.y + (area.height - height) / 2, width, height);
        frame.render_widget(Clear, popup);
        let lines: Vec<Line> = text.iter().map(|line| Line::raw(*line)).collect();
        frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" keys ")), popup);
    }
}

/// A program's output may hold escape sequences meant for some other terminal: shown as `?`.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn ratatui_colour(colour: comfy_table::Color) -> Color {
    match colour {
        comfy_table::Color::Green => Color::Green,
        comfy_table::Color::Yellow => Color::Yellow,
        comfy_table::Color::Red => Color::Red,
        _ => Color::Reset,
    }
}
