//! `baton rules check FILE` and `baton rules backtest`.

use std::path::PathBuf;

use anyhow::Context as _;
use baton_core::{rules::Windows, time::human_duration};
use baton_stall::backtest::{BacktestOptions, backtest};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::{
    args::NatsArgs,
    cmd::{
        common::connect,
        services::{duration, load_rules},
    },
    output::{AlertJson, Table, alert_color, print_json},
};

#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub action: RulesAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RulesAction {
    /// Validate a rules file; errors name the line and field
    Check {
        /// The rules file (TOML)
        file: PathBuf,
        /// Print JSON: {"file", "valid", "error"?, "defaults", "workflows"}
        #[arg(long, env = "BATON_RULES_JSON")]
        json: bool,
    },
    /// Replay recorded events with these rules and print the alerts they would have raised
    Backtest {
        /// The rules to replay with (TOML)
        #[arg(long)]
        rules: PathBuf,
        /// First BATON_EVENTS sequence
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last BATON_EVENTS sequence [default: the end]
        #[arg(long)]
        to: Option<u64>,
        /// Also evaluate deadlines this long after the last event
        #[arg(long, value_parser = duration)]
        then: Option<std::time::Duration>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn show(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "off".into(), human_duration)
}

fn windows_line(w: &Windows) -> String {
    format!(
        "heartbeat {}, accept {}, start {}, progress {}, blocked {}, deadline {}, renotify {}",
        show(w.heartbeat),
        show(w.accept),
        show(w.start),
        show(w.progress),
        show(w.blocked),
        show(w.deadline),
        show(w.renotify)
    )
}

/// One set of windows for `rules check --json`: each in milliseconds, or
/// null when the expectation is off.
#[derive(Serialize)]
struct WindowsJson {
    heartbeat_ms: Option<u64>,
    accept_ms: Option<u64>,
    start_ms: Option<u64>,
    progress_ms: Option<u64>,
    blocked_ms: Option<u64>,
    deadline_ms: Option<u64>,
    renotify_ms: Option<u64>,
}

impl From<&Windows> for WindowsJson {
    fn from(w: &Windows) -> Self {
        let ms = |d: Option<std::time::Duration>| {
            d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        WindowsJson {
            heartbeat_ms: ms(w.heartbeat),
            accept_ms: ms(w.accept),
            start_ms: ms(w.start),
            progress_ms: ms(w.progress),
            blocked_ms: ms(w.blocked),
            deadline_ms: ms(w.deadline),
            renotify_ms: ms(w.renotify),
        }
    }
}

#[derive(Serialize)]
struct CheckJson {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    defaults: Option<WindowsJson>,
    /// The windows each workflow with rules resolves to.
    workflows: std::collections::BTreeMap<String, WindowsJson>,
}

#[derive(Serialize)]
struct BacktestJson {
    events: u64,
    undecodable: u64,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    alerts: Vec<AlertJson>,
}

pub async fn rules(nats: &NatsArgs, args: &RulesArgs) -> anyhow::Result<()> {
    match &args.action {
        RulesAction::Check { file, json } => {
            let rules = match load_rules(Some(file)) {
                Ok(r) => r,
                Err(e) => {
                    if *json {
                        print_json(&CheckJson {
                            file: file.display().to_string(),
                            valid: false,
                            error: Some(format!("{e:#}")),
                            defaults: None,
                            workflows: Default::default(),
                        });
                    }
                    return Err(e);
                }
            };
            if *json {
                let mut workflows = std::collections::BTreeMap::new();
                for w in rules.workflows.keys() {
                    workflows.insert(w.to_string(), WindowsJson::from(&rules.resolve(w, None)));
                }
                print_json(&CheckJson {
                    file: file.display().to_string(),
                    valid: true,
                    error: None,
                    defaults: Some(WindowsJson::from(&rules.defaults)),
                    workflows,
                });
                return Ok(());
            }
            println!("{} is valid.", file.display());
            println!("  defaults: {}", windows_line(&rules.defaults));
            let mut names: Vec<_> = rules.workflows.keys().map(ToString::to_string).collect();
            names.sort();
            for w in names {
                let id = baton_core::WorkflowId::new(&w)?;
                println!(
                    "  workflow {w}: {}",
                    windows_line(&rules.resolve(&id, None))
                );
            }
            let mut stages: Vec<_> = rules.stages.keys().map(ToString::to_string).collect();
            stages.sort();
            for s in stages {
                println!(
                    "  stage {s} overrides {} field(s)",
                    count(rules.stages.get(s.as_str()))
                );
            }
            for ((w, s), o) in &rules.workflow_stages {
                println!(
                    "  workflow {w} stage {s} overrides {} field(s)",
                    count(Some(o))
                );
            }
            Ok(())
        }
        RulesAction::Backtest {
            rules,
            from,
            to,
            then,
            json,
        } => {
            let rules = load_rules(Some(rules))?;
            let conn = connect(nats).await?;
            conn.require_baton().await?;
            let bar = ProgressBar::new(0);
            if *json || !crate::output::is_tty() {
                bar.set_draw_target(ProgressDrawTarget::hidden());
            } else {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
            bar.set_style(
                ProgressStyle::with_template(
                    "replaying {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
                )
                .context("progress style")?,
            );
            let options = BacktestOptions {
                rules,
                // The orchestrator's policy, so replayed ownership matches.
                policy: baton_jetstream::policy::read_or_default(&conn.js).await?,
                from: *from,
                to: *to,
                tail: then.unwrap_or_default(),
            };
            let report = backtest(&conn.js, &options, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
            bar.finish_and_clear();
            if *json {
                print_json(&BacktestJson {
                    events: report.events,
                    undecodable: report.undecodable,
                    from_seq: report.first.map(|f| f.0),
                    to_seq: report.last.map(|l| l.0),
                    alerts: report
                        .alerts
                        .iter()
                        .map(|a| AlertJson::from_alert(a, 0))
                        .collect(),
                });
                return Ok(());
            }
            println!(
                "Replayed {} events (seq {} to {}){}.",
                report.events,
                report.first.map_or(0, |f| f.0),
                report.last.map_or(0, |l| l.0),
                if report.undecodable > 0 {
                    format!(
                        ", skipped {} refused (undecodable, over a limit or forged)",
                        report.undecodable
                    )
                } else {
                    String::new()
                }
            );
            if report.alerts.is_empty() {
                println!("These rules would have raised no alerts.");
                return Ok(());
            }
            let mut table = Table::new(&[
                "WOULD FIRE AT",
                "STATE",
                "KIND",
                "TASK",
                "LATE BY",
                "SUMMARY",
            ]);
            for a in &report.alerts {
                table.row_colored(vec![
                    (a.observed_at.to_rfc3339(), None),
                    (a.state.as_str().to_uppercase(), alert_color(a)),
                    (a.kind.to_string(), alert_color(a)),
                    (
                        a.task
                            .as_ref()
                            .map_or("_system".into(), ToString::to_string),
                        None,
                    ),
                    (a.late_by.map_or("-".into(), human_duration), None),
                    (a.summary.clone(), None),
                ]);
            }
            table.print();
            let mut counts = std::collections::BTreeMap::new();
            for a in report
                .alerts
                .iter()
                .filter(|a| a.state == baton_core::AlertState::Firing && a.notification == 0)
            {
                *counts.entry(a.kind.to_string()).or_insert(0u64) += 1;
            }
            println!(
                "\n{}",
                counts
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
    }
}

fn count(o: Option<&baton_core::rules::Overrides>) -> usize {
    let Some(o) = o else { return 0 };
    [
        o.heartbeat,
        o.accept,
        o.start,
        o.deadline,
        o.progress,
        o.blocked,
        o.renotify,
    ]
    .iter()
    .filter(|x| x.is_some())
    .count()
}
