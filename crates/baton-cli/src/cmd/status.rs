//! `baton status`: are the services alive, how big are the streams, how far
//! behind are the consumers, what state are the tasks in, what is firing —
//! and, in one word and an exit code, whether Baton is doing its job.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use baton_core::{Time, subjects};
use baton_proto::{prost::Message, v1 as pb};
use clap::Args;
use serde::Serialize;

use crate::{
    args::NatsArgs,
    cmd::{
        common::{connect, now},
        services::duration,
    },
    output::{Color, Table, ago, paint, print_json},
};

/// What `baton status` exits with, for scripts and healthchecks.
pub const EXIT_CODES: &str = "\
Exit status:
  0  healthy: an orchestrator and a stall detector are alive and keeping up, no alert is firing
  1  degraded: the services are fine, but alerts are firing (someone has to act)
  2  down: the orchestrator or the stall detector is missing, not reporting, or stuck
     (events pending and none acknowledged for --stuck-after); or NATS or the Baton
     streams cannot be reached. Nothing may be watching the tasks.
     (A mistyped flag also exits 2, as with every command.)";

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long, env = "BATON_STATUS_JSON")]
    pub json: bool,
    /// A service whose consumer has pending events and acknowledged none for this long is stuck
    #[arg(long, env = "BATON_STUCK_AFTER", default_value = "60s", value_parser = duration)]
    pub stuck_after: Duration,
}

/// The services Baton needs, with their consumers, and what is lost
/// without each.
const REQUIRED: [(&str, &str, &str); 2] = [
    (
        "orchestrator",
        subjects::ORCHESTRATOR_CONSUMER,
        "no task state, ownership checks or queries",
    ),
    (
        "stall-detector",
        subjects::DETECTOR_CONSUMER,
        "nothing raises stall alerts",
    ),
];

/// Overall health, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Health {
    Healthy,
    Degraded,
    Down,
}

impl Health {
    fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Down => 2,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "DEGRADED",
            Health::Down => "DOWN",
        }
    }
}

/// A required service's state.
#[derive(Serialize)]
struct RequiredJson {
    service: String,
    /// "ok", "missing" (never reported), "down" (no fresh report), "stuck"
    /// (reports, but its consumer does not move).
    state: String,
    alive_instances: usize,
    /// Alive instances holding the leadership lease (1 when all is well).
    active_instances: usize,
    /// Alive instances standing by to take over (0 = no high availability).
    standby_instances: usize,
    problem: Option<String>,
}

#[derive(Serialize)]
struct ServiceJson {
    service: String,
    instance: String,
    alive: bool,
    /// "active" or "standby".
    role: String,
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
    /// healthy, degraded or down (as the exit status: 0, 1, 2).
    health: Health,
    /// Why it is not healthy, one sentence each.
    problems: Vec<String>,
    required: Vec<RequiredJson>,
    services: Vec<ServiceJson>,
    streams: Vec<StreamJson>,
    consumers: Vec<ConsumerJson>,
    tasks_by_status: BTreeMap<String, u64>,
    firing_alerts_by_kind: BTreeMap<String, u64>,
    /// Tasks with a protocol report (violation, stale context, malformed
    /// event, unknown task) in the last 24 h, by kind. Reports never
    /// resolve, so they are counted here and do not make Baton degraded.
    recent_reports_by_kind: BTreeMap<String, u64>,
}

/// How far back `status` counts protocol reports.
const REPORTS_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Runs `baton status`; the exit status says how healthy Baton is (see
/// [`EXIT_CODES`]).
pub async fn status(nats: &NatsArgs, args: &StatusArgs) -> ExitCode {
    match report(nats, args).await {
        Ok(health) => health.exit_code(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Health::Down.exit_code()
        }
    }
}

async fn report(nats: &NatsArgs, args: &StatusArgs) -> anyhow::Result<Health> {
    let conn = connect(nats).await?;
    conn.require_baton().await?;
    let now = now();
    let mut services = Vec::new();
    baton_jetstream::read::for_each_kv_value(&conn.js, subjects::SERVICES_BUCKET, |_, stored| {
        if let Ok(s) = pb::ServiceStatus::decode(stored.payload.clone()) {
            // Alive: reported within three of its intervals (broker time).
            let reported: Time = stored.stored_at;
            let allowed = std::time::Duration::from_millis(s.interval_ms.max(1) * 3)
                .max(std::time::Duration::from_secs(5));
            services.push((s, reported, now.since(reported) <= allowed));
        }
    })
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
    // Per consumer: since when it has had work and acknowledged none.
    let mut idle_with_work: BTreeMap<&str, Duration> = BTreeMap::new();
    if let Ok(s) = conn.js.get_stream_no_info(subjects::EVENTS_STREAM).await {
        for name in [subjects::ORCHESTRATOR_CONSUMER, subjects::DETECTOR_CONSUMER] {
            if let Ok(info) = s.consumer_info(name).await {
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    let last_ack = info.ack_floor.last_active.unwrap_or(info.created);
                    idle_with_work
                        .insert(name, now.since(baton_jetstream::read::time_of(last_ack)));
                }
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
    let alerts = conn.alert_view(REPORTS_WINDOW).await?;
    let mut firing: BTreeMap<String, u64> = BTreeMap::new();
    for (a, _) in &alerts.firing {
        *firing.entry(a.kind.to_string()).or_default() += 1;
    }
    let mut reports: BTreeMap<String, u64> = BTreeMap::new();
    for (a, _) in &alerts.recent_reports {
        *reports.entry(a.kind.to_string()).or_default() += 1;
    }
    let mut required = Vec::new();
    let mut problems = Vec::new();
    for (service, consumer, without) in REQUIRED {
        let instances: Vec<_> = services.iter().filter(|s| s.0.service == service).collect();
        let alive = instances.iter().filter(|s| s.2).count();
        let active = instances
            .iter()
            .filter(|s| s.2 && s.0.role != "standby")
            .count();
        let standby = alive - active;
        let (state, problem) = if instances.is_empty() {
            (
                "missing",
                Some(format!(
                    "no {service} has reported: {without}; start `baton {service}` (or `baton dev`)"
                )),
            )
        } else if alive == 0 {
            let last = instances.iter().map(|s| s.1).max().unwrap_or(now);
            (
                "down",
                Some(format!(
                    "no {service} has reported for {}: {without}; is it running?",
                    crate::output::ago(last, now).trim_end_matches(" ago")
                )),
            )
        } else if active == 0 {
            (
                "no_active",
                Some(format!(
                    "{alive} {service} instance(s) alive, none active: {without} until one takes the lease (a takeover takes up to the lease ttl)"
                )),
            )
        } else if let Some(idle) = idle_with_work
            .get(consumer)
            .filter(|d| **d >= args.stuck_after)
        {
            (
                "stuck",
                Some(format!(
                    "the {service} is alive but stuck: consumer {consumer} has pending events and acknowledged none for {}",
                    baton_core::time::human_duration(*idle)
                )),
            )
        } else {
            ("ok", None)
        };
        if let Some(p) = &problem {
            problems.push(p.clone());
        }
        required.push(RequiredJson {
            service: service.to_string(),
            state: state.to_string(),
            alive_instances: alive,
            active_instances: active,
            standby_instances: standby,
            problem,
        });
    }
    let firing_total: u64 = firing.values().sum();
    let health = if !problems.is_empty() {
        Health::Down
    } else if firing_total > 0 {
        problems.push(format!(
            "{firing_total} alert(s) firing: see `baton alerts`"
        ));
        Health::Degraded
    } else {
        Health::Healthy
    };
    let service_rows: Vec<ServiceJson> = services
        .iter()
        .map(|(s, reported, alive)| ServiceJson {
            service: s.service.clone(),
            instance: s.instance.clone(),
            alive: *alive,
            role: s.role.clone(),
            last_report: Some(reported.to_rfc3339()),
            applied_seq: s.applied_seq,
            pending: s.pending,
            http: s.http_addr.clone(),
        })
        .collect();
    if args.json {
        print_json(&StatusJson {
            health,
            problems,
            required,
            services: service_rows,
            streams,
            consumers,
            tasks_by_status: by_status,
            firing_alerts_by_kind: firing,
            recent_reports_by_kind: reports,
        });
        return Ok(health);
    }
    let health_color = match health {
        Health::Healthy => Color::Green,
        Health::Degraded => Color::Yellow,
        Health::Down => Color::Red,
    };
    println!(
        "{} {}",
        paint("Health", Color::Bold),
        paint(health.as_str(), health_color)
    );
    for p in &problems {
        println!("  {}", paint(p, health_color));
    }
    println!("\n{}", paint("Services", Color::Bold));
    if services.is_empty() {
        println!(
            "  none has reported: start `baton orchestrator` and `baton stall-detector` (or `baton dev`)"
        );
    } else {
        for r in &required {
            if r.alive_instances > 0 {
                println!(
                    "  {}: {} active, {} standby{}",
                    r.service,
                    r.active_instances,
                    r.standby_instances,
                    if r.standby_instances == 0 {
                        " (no standby: a crash stops it until restarted)"
                    } else {
                        ""
                    }
                );
            }
        }
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
                    match (*alive, s.role.as_str()) {
                        (false, _) => "DOWN".into(),
                        (true, "standby") => "standby".into(),
                        (true, _) => "active".into(),
                    },
                    Some(match (*alive, s.role.as_str()) {
                        (false, _) => Color::Red,
                        (true, "standby") => Color::Yellow,
                        (true, _) => Color::Green,
                    }),
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
    let detector_ok = required
        .iter()
        .any(|r| r.service == "stall-detector" && r.state == "ok");
    if firing.is_empty() && !detector_ok {
        println!("  none raised, but no stall detector is watching: none could be");
    } else if firing.is_empty() {
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
    println!(
        "\n{}",
        paint(
            "Reports in the last 24h (one-shot, never resolve)",
            Color::Bold
        )
    );
    if reports.is_empty() {
        println!("  none");
    } else {
        println!(
            "  {} task(s): {}  (see `baton alerts`)",
            reports.values().sum::<u64>(),
            reports
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(health)
}
