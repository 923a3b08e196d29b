//! `baton status`: are the services alive, how big are the streams, how far
//! behind are the consumers, what state are the tasks in, what is firing.

use std::collections::BTreeMap;

use baton_core::{Time, subjects};
use baton_proto::{prost::Message, v1 as pb};
use clap::Args;
use serde::Serialize;

use crate::{
    args::NatsArgs,
    cmd::common::{connect, now},
    output::{Color, Table, ago, paint, print_json},
};

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ServiceJson {
    service: String,
    instance: String,
    alive: bool,
    last_report: Option<String>,
    applied_seq: u64,
    pending: u64,
    http: String,
}

#[derive(Serialize)]
struct StreamJson {
    stream: String,
    messages: u64,
    bytes: u64,
    last_seq: u64,
}

#[derive(Serialize)]
struct ConsumerJson {
    consumer: String,
    pending: u64,
    ack_pending: usize,
    delivered_seq: u64,
    ack_floor: u64,
}

#[derive(Serialize)]
struct StatusJson {
    services: Vec<ServiceJson>,
    streams: Vec<StreamJson>,
    consumers: Vec<ConsumerJson>,
    tasks_by_status: BTreeMap<String, u64>,
    firing_alerts_by_kind: BTreeMap<String, u64>,
}

pub async fn status(nats: &NatsArgs, args: &StatusArgs) -> anyhow::Result<()> {
    let conn = connect(nats).await?;
    conn.require_baton().await?;
    let now = now();
    let mut services = Vec::new();
    baton_jetstream::read::for_each_last_per_subject(
        &conn.js,
        &format!("KV_{}", subjects::SERVICES_BUCKET),
        &format!("$KV.{}.>", subjects::SERVICES_BUCKET),
        |stored| {
            if stored.is_kv_tombstone() {
                return;
            }
            if let Ok(s) = pb::ServiceStatus::decode(stored.payload.clone()) {
                // Alive: reported within three of its intervals (broker time).
                let reported: Time = stored.stored_at;
                let allowed = std::time::Duration::from_millis(s.interval_ms.max(1) * 3)
                    .max(std::time::Duration::from_secs(5));
                services.push((s, reported, now.since(reported) <= allowed));
            }
        },
    )
    .await?;
    services.sort_by(|a, b| {
        (a.0.service.as_str(), std::cmp::Reverse(a.1))
            .cmp(&(b.0.service.as_str(), std::cmp::Reverse(b.1)))
    });
    let mut streams = Vec::new();
    for name in [
        subjects::EVENTS_STREAM,
        subjects::CONTEXT_STREAM,
        subjects::ALERTS_STREAM,
        subjects::DLQ_STREAM,
    ] {
        if let Ok(mut s) = conn.js.get_stream(name).await
            && let Ok(info) = s.info().await
        {
            streams.push(StreamJson {
                stream: name.into(),
                messages: info.state.messages,
                bytes: info.state.bytes,
                last_seq: info.state.last_sequence,
            });
        }
    }
    let mut consumers = Vec::new();
    if let Ok(s) = conn.js.get_stream_no_info(subjects::EVENTS_STREAM).await {
        for name in [subjects::ORCHESTRATOR_CONSUMER, subjects::DETECTOR_CONSUMER] {
            if let Ok(info) = s.consumer_info(name).await {
                consumers.push(ConsumerJson {
                    consumer: name.into(),
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending,
                    delivered_seq: info.delivered.stream_sequence,
                    ack_floor: info.ack_floor.stream_sequence,
                });
            }
        }
    }
    let (tasks, _) = conn.all_tasks().await?;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for t in &tasks {
        *by_status.entry(t.status.to_string()).or_default() += 1;
    }
    let mut firing: BTreeMap<String, u64> = BTreeMap::new();
    for (a, _) in conn.firing_alerts().await? {
        *firing.entry(a.kind.to_string()).or_default() += 1;
    }
    let service_rows: Vec<ServiceJson> = services
        .iter()
        .map(|(s, reported, alive)| ServiceJson {
            service: s.service.clone(),
            instance: s.instance.clone(),
            alive: *alive,
            last_report: Some(reported.to_rfc3339()),
            applied_seq: s.applied_seq,
            pending: s.pending,
            http: s.http_addr.clone(),
        })
        .collect();
    if args.json {
        print_json(&StatusJson {
            services: service_rows,
            streams,
            consumers,
            tasks_by_status: by_status,
            firing_alerts_by_kind: firing,
        });
        return Ok(());
    }
    println!("{}", paint("Services", Color::Bold));
    if services.is_empty() {
        println!(
            "  none has reported: start `baton orchestrator` and `baton stall-detector` (or `baton dev`)"
        );
    } else {
        let mut t = Table::new(&[
            "  SERVICE",
            "INSTANCE",
            "STATE",
            "LAST REPORT",
            "APPLIED SEQ",
            "PENDING",
            "HTTP",
        ]);
        for (s, reported, alive) in &services {
            t.row_colored(vec![
                (format!("  {}", s.service), None),
                (s.instance.clone(), None),
                (
                    if *alive {
                        "alive".into()
                    } else {
                        "DOWN".into()
                    },
                    Some(if *alive { Color::Green } else { Color::Red }),
                ),
                (ago(*reported, now), None),
                (s.applied_seq.to_string(), None),
                (s.pending.to_string(), None),
                (
                    if s.http_addr.is_empty() {
                        "-".into()
                    } else {
                        format!("http://{}/metrics", s.http_addr)
                    },
                    None,
                ),
            ]);
        }
        t.print();
    }
    println!("\n{}", paint("Streams", Color::Bold));
    let mut t = Table::new(&["  STREAM", "MESSAGES", "BYTES", "LAST SEQ"]);
    for s in &streams {
        t.row(vec![
            format!("  {}", s.stream),
            s.messages.to_string(),
            s.bytes.to_string(),
            s.last_seq.to_string(),
        ]);
    }
    t.print();
    println!("\n{}", paint("Consumers", Color::Bold));
    let mut t = Table::new(&[
        "  CONSUMER",
        "PENDING",
        "ACK PENDING",
        "DELIVERED SEQ",
        "ACK FLOOR",
    ]);
    for c in &consumers {
        t.row(vec![
            format!("  {}", c.consumer),
            c.pending.to_string(),
            c.ack_pending.to_string(),
            c.delivered_seq.to_string(),
            c.ack_floor.to_string(),
        ]);
    }
    t.print();
    println!("\n{}", paint("Tasks", Color::Bold));
    if by_status.is_empty() {
        println!("  none");
    } else {
        println!(
            "  {}",
            by_status
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("\n{}", paint("Firing alerts", Color::Bold));
    if firing.is_empty() {
        println!("  none");
    } else {
        println!(
            "  {}",
            paint(
                &firing
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Color::Red
            )
        );
    }
    Ok(())
}
