//! `baton alerts`: fault reports from `BATON_ALERTS`, firing and resolved,
//! live with `--follow`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use baton_core::{Alert, AlertKind, TaskId, subjects};
use clap::Args;
use futures::StreamExt;

use crate::{
    args::NatsArgs,
    cmd::{common::connect, services::duration},
    output::{AlertJson, Table, alert_color, paint, print_json, print_json_line},
};

#[derive(Debug, Clone, Args)]
pub struct AlertsArgs {
    /// Keep printing new alerts as they arrive (until ctrl-c)
    #[arg(long, short)]
    pub follow: bool,
    /// Only this kind (e.g. heartbeat_missed, handoff_not_accepted)
    #[arg(long)]
    pub kind: Option<String>,
    /// Only alerts about this task
    #[arg(long)]
    pub task: Option<String>,
    /// How far back to look
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub since: Duration,
    /// Print JSON (one object per line with --follow)
    #[arg(long)]
    pub json: bool,
}

pub async fn alerts(nats: &NatsArgs, args: &AlertsArgs) -> anyhow::Result<()> {
    let kind = match &args.kind {
        Some(k) => Some(AlertKind::parse(k).with_context(|| {
            format!(
                "unknown alert kind {k:?}: use one of {}",
                AlertKind::ALL.map(AlertKind::as_str).join(", ")
            )
        })?),
        None => None,
    };
    let task = args.task.as_deref().map(TaskId::new).transpose()?;
    // As stored: the stream republishes each on baton.alert.<kind>.<task>.
    let filter = format!(
        "baton.raise.{}.{}",
        kind.map_or("*", AlertKind::as_str),
        task.as_ref().map_or("*", TaskId::as_str)
    );
    let conn = connect(nats).await?;
    conn.require_baton().await?;
    let stream = conn.js.get_stream(subjects::ALERTS_STREAM).await?;
    let start = crate::cmd::common::now().saturating_sub(args.since);
    let start_time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(start.unix_nanos()))
            .context("start time")?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut seen: Vec<(Alert, u64)> = Vec::new();
    // What is stored already.
    while pending > 0 {
        let Some(msg) = tokio::time::timeout(Duration::from_secs(10), messages.next()).await?
        else {
            break;
        };
        let msg = msg?;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        pending = info.pending;
        match Alert::decode(&msg.payload) {
            Ok(a) if args.follow => show_line(&a, info.stream_sequence, args.json),
            Ok(a) => seen.push((a, info.stream_sequence)),
            Err(e) => eprintln!(
                "skipping unreadable alert at seq {}: {e}",
                info.stream_sequence
            ),
        }
    }
    if !args.follow {
        if args.json {
            print_json(
                &seen
                    .iter()
                    .map(|(a, s)| AlertJson::from_alert(a, *s))
                    .collect::<Vec<_>>(),
            );
        } else if seen.is_empty() {
            println!(
                "No alerts in the last {}.",
                baton_core::time::human_duration(args.since)
            );
        } else {
            let mut table = Table::new(&["TIME", "STATE", "KIND", "TASK", "AGENTS", "SUMMARY"]);
            for (a, _) in &seen {
                table.row_colored(vec![
                    (a.observed_at.to_rfc3339(), None),
                    (state_label(a), alert_color(a)),
                    (a.kind.to_string(), alert_color(a)),
                    (
                        a.task
                            .as_ref()
                            .map_or("_system".into(), ToString::to_string),
                        None,
                    ),
                    (
                        a.agents
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        None,
                    ),
                    (a.summary.clone(), None),
                ]);
            }
            table.print();
        }
        return Ok(());
    }
    if !args.json {
        eprintln!(
            "{}",
            paint(
                "Following alerts; ctrl-c to stop.",
                crate::output::Color::Dim
            )
        );
    }
    loop {
        tokio::select! {
            _ = baton_service::shutdown::signal() => return Ok(()),
            next = messages.next() => {
                let Some(msg) = next else { bail!("the alert stream closed") };
                let msg = msg?;
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                match Alert::decode(&msg.payload) {
                    Ok(a) => show_line(&a, seq, args.json),
                    Err(e) => eprintln!("skipping unreadable alert at seq {seq}: {e}"),
                }
            }
        }
    }
}

/// FIRING / RESOLVED for conditions; REPORT for one-shot protocol reports,
/// which never resolve and so must not read as "still firing".
fn state_label(a: &Alert) -> String {
    if a.kind.is_report() {
        return "REPORT".into();
    }
    match (a.state, a.notification) {
        (baton_core::AlertState::Resolved, _) => "RESOLVED".into(),
        (_, 0) => "FIRING".into(),
        (_, n) => format!("FIRING (again, #{n})"),
    }
}

fn show_line(a: &Alert, seq: u64, json: bool) {
    if json {
        print_json_line(&AlertJson::from_alert(a, seq));
    } else {
        let head = format!(
            "{} {} {}",
            a.observed_at.to_rfc3339(),
            state_label(a),
            a.kind
        );
        let line = format!(
            "{} task={} agents={} {}",
            match alert_color(a) {
                Some(c) => paint(&head, c),
                None => head,
            },
            a.task
                .as_ref()
                .map_or("_system".into(), ToString::to_string),
            a.agents
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            a.summary
        );
        println!("{line}");
    }
}
