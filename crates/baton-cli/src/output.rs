//! Output for people (aligned tables, colour only on a terminal) and for
//! scripts (`--json`: one JSON document, or one JSON object per line when
//! following).

use std::io::{IsTerminal, Write};

use baton_core::{Alert, AlertState, Severity, Task, Time, time::human_duration};
use serde::Serialize;

/// The exit status when stdout is closed early (`baton tasks | head -1`):
/// 128 + SIGPIPE, what a shell reports for a command that the closed pipe
/// stopped.
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Makes a closed stdout end the process quietly with
/// [`BROKEN_PIPE_EXIT`], as other command-line tools do, instead of a panic
/// message: `println!` panics when stdout is a closed pipe (Rust ignores
/// SIGPIPE), and this hook turns that one panic into a quiet exit.
pub fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default(info);
    }));
}

/// Ends the process quietly if writing to stdout failed because the
/// reader went away; other errors are ignored (as `print!` would panic on
/// them, this is no worse).
fn check_stdout(result: std::io::Result<()>) {
    if let Err(e) = result
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
}

/// Whether stdout is a terminal (colour, progress bars).
pub fn is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// Terminal colours.
#[derive(Debug, Clone, Copy)]
pub enum Color {
    Red,
    Yellow,
    Green,
    Dim,
    Bold,
}

/// `s` in colour when stdout is a terminal (and NO_COLOR is unset).
pub fn paint(s: &str, color: Color) -> String {
    if !is_tty() || std::env::var_os("NO_COLOR").is_some() {
        return s.to_string();
    }
    let code = match color {
        Color::Red => "31",
        Color::Yellow => "33",
        Color::Green => "32",
        Color::Dim => "2",
        Color::Bold => "1",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

/// A table printed with aligned columns.
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<(String, Option<Color>)>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| (c, None)).collect());
    }

    pub fn row_colored(&mut self, cells: Vec<(String, Option<Color>)>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, (cell, _)) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let mut out = std::io::stdout().lock();
        let header: Vec<String> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{h:<w$}", w = widths[i]))
            .collect();
        check_stdout(writeln!(
            out,
            "{}",
            paint(header.join("  ").trim_end(), Color::Bold)
        ));
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, (cell, color))| {
                    let padded = if i + 1 == row.len() {
                        cell.clone()
                    } else {
                        format!("{cell:<w$}", w = widths.get(i).copied().unwrap_or(0))
                    };
                    match color {
                        Some(c) => paint(&padded, *c),
                        None => padded,
                    }
                })
                .collect();
            check_stdout(writeln!(out, "{}", line.join("  ").trim_end()));
        }
    }
}

/// Prints a value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

/// Prints a value as one JSON line (for streams).
pub fn print_json_line<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => {
            let mut out = std::io::stdout().lock();
            check_stdout(writeln!(out, "{s}").and_then(|()| out.flush()));
        }
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

/// "3m05s ago" relative to `now`.
pub fn ago(t: Time, now: Time) -> String {
    format!("{} ago", human_duration(now.since(t)))
}

fn opt_time(t: Option<Time>) -> Option<String> {
    t.map(|t| t.to_rfc3339())
}

/// A task for `--json`.
#[derive(Debug, Serialize)]
pub struct TaskJson {
    pub task_id: String,
    pub workflow_id: String,
    pub stage: Option<String>,
    pub title: String,
    pub status: String,
    pub owner: Option<String>,
    pub epoch: u64,
    pub assignee: Option<String>,
    pub pending_handoff: Option<HandoffJson>,
    pub output_location: String,
    pub context_version: u64,
    pub last_event: EventRefJson,
    pub created_at: String,
    pub updated_at: String,
    pub last_heartbeat_at: Option<String>,
    pub last_progress_at: Option<String>,
    pub violations: u64,
    pub outcome: String,
    /// Ids of stall alerts firing for the task.
    pub firing_alerts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HandoffJson {
    pub from: String,
    pub to_agent: Option<String>,
    pub to_stage: Option<String>,
    pub output_location: String,
    pub offered_at: String,
    pub accept_by: Option<String>,
}

impl TaskJson {
    pub fn from_task(t: &Task, firing_alerts: Vec<String>) -> TaskJson {
        TaskJson {
            task_id: t.id.to_string(),
            workflow_id: t.workflow.to_string(),
            stage: t.stage.as_ref().map(ToString::to_string),
            title: t.title().to_string(),
            status: t.status.as_str().to_string(),
            owner: t.owner.as_ref().map(ToString::to_string),
            epoch: t.epoch,
            assignee: t.assignee().map(ToString::to_string),
            pending_handoff: t.pending_handoff.as_deref().map(|p| HandoffJson {
                from: p.from.to_string(),
                to_agent: match &p.to {
                    baton_core::HandoffTarget::Agent(a) => Some(a.to_string()),
                    baton_core::HandoffTarget::Stage(_) => None,
                },
                to_stage: match &p.to {
                    baton_core::HandoffTarget::Stage(s) => Some(s.to_string()),
                    baton_core::HandoffTarget::Agent(_) => None,
                },
                output_location: p.output_location.clone(),
                offered_at: p.offered.at.to_rfc3339(),
                accept_by: opt_time(p.accept_by()),
            }),
            output_location: t.output_location().to_string(),
            context_version: t.context_version,
            last_event: EventRefJson::from(&t.last_event),
            created_at: t.created.at.to_rfc3339(),
            updated_at: t.updated_at.to_rfc3339(),
            last_heartbeat_at: opt_time(t.last_heartbeat_at),
            last_progress_at: opt_time(t.last_progress_at),
            violations: t.violations,
            outcome: t.outcome().to_string(),
            firing_alerts,
        }
    }
}

/// An alert for `--json`: the one JSON shape of an alert (the webhook
/// body of `baton notify` carries the same).
pub use baton_core::alert::json::{AlertJson, EventRefJson};

/// The colour of an alert line.
pub fn alert_color(a: &Alert) -> Option<Color> {
    match (a.state, a.severity) {
        (AlertState::Resolved, _) => Some(Color::Green),
        (_, Severity::Critical) => Some(Color::Red),
        (_, Severity::Warning) => Some(Color::Yellow),
        _ => None,
    }
}
