//! What the benchmarks share: the broker they run against (one node, or a
//! 3-node cluster with `BATON_BENCH_CLUSTER=3`), the raw-consume baseline
//! they compare a service with, and the one JSON line per measure they
//! print so `scripts/bench` can keep figures across commits.
//!
//! A figure line looks like
//!
//! ```text
//! {"bench":"ingest","measure":"orchestrator_vs_raw","value":0.61,"unit":"ratio","commit":"31e12fe","date":"2026-01-01T00:00:00Z","machine":"2c/23GiB","note":"..."}
//! ```
//!
//! and is the only stdout line of a benchmark that starts with `{`.
#![allow(clippy::print_stdout)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
};
use futures::{FutureExt as _, StreamExt as _};

use crate::{NatsCluster, NatsServer, TestkitError};

/// An integer from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The broker a benchmark runs against, kept alive as long as this is.
#[derive(Debug)]
pub enum Broker {
    Single(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Broker {
    /// One node, or `BATON_BENCH_CLUSTER` nodes (e.g. 3) in a JetStream
    /// cluster.
    pub async fn from_env() -> Result<Broker, TestkitError> {
        match env_usize("BATON_BENCH_CLUSTER", 1) {
            0 | 1 => Ok(Broker::Single(Box::new(NatsServer::start().await?))),
            n => Ok(Broker::Cluster(NatsCluster::start(n).await?)),
        }
    }

    /// Client URL(s), comma-separated for a cluster.
    pub fn url(&self) -> String {
        match self {
            Broker::Single(s) => s.url(),
            Broker::Cluster(c) => c.url(),
        }
    }

    /// A client of every node (a cluster's URLs cannot go comma-separated
    /// to `async_nats::connect`).
    pub async fn connect(&self) -> async_nats::Client {
        let urls = match self {
            Broker::Single(s) => vec![s.url()],
            Broker::Cluster(c) => c.urls(),
        };
        async_nats::connect(urls).await.expect("connect")
    }

    /// Nodes in the broker; the streams' replica count to ask for.
    pub fn nodes(&self) -> usize {
        match self {
            Broker::Single(_) => 1,
            Broker::Cluster(c) => c.len(),
        }
    }

    /// `""` on one node, `"_r3"` on a 3-node cluster: appended to the
    /// bench name in figure lines, so R1 and R3 figures never mix.
    pub fn suffix(&self) -> String {
        match self.nodes() {
            1 => String::new(),
            n => format!("_r{n}"),
        }
    }
}

/// How a raw consume reads: the service's consumer settings.
#[derive(Debug, Clone)]
pub struct RawConsume<'a> {
    pub stream: &'a str,
    pub filter: &'a str,
    pub durable: &'a str,
    pub max_ack_pending: i64,
    pub ack_wait: Duration,
    /// Messages per pull request, and per ack.
    pub batch: usize,
}

/// Reads `total` messages with a durable pull consumer (`AckPolicy::All`),
/// acknowledging the last message of each batch (what is already buffered,
/// up to `batch`), doing no work: the broker's pace a service is compared
/// with. Deletes the consumer afterwards and returns the time taken.
pub async fn raw_consume(js: &jetstream::Context, spec: &RawConsume<'_>, total: u64) -> Duration {
    let stream = js.get_stream(spec.stream).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(spec.durable.into()),
            ack_policy: AckPolicy::All,
            ack_wait: spec.ack_wait,
            max_ack_pending: spec.max_ack_pending,
            max_deliver: -1,
            filter_subject: spec.filter.into(),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let started = std::time::Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(spec.batch.min(10_000))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .expect("messages");
    let mut seen = 0u64;
    while seen < total {
        let mut last = messages.next().await.expect("open").expect("message");
        seen += 1;
        let mut in_batch = 1;
        while in_batch < spec.batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => {
                    last = m;
                    seen += 1;
                    in_batch += 1;
                }
                _ => break,
            }
        }
        last.ack().await.expect("ack");
    }
    let took = started.elapsed();
    stream.delete_consumer(spec.durable).await.expect("delete");
    took
}

/// Prints figure lines; one per benchmark run.
#[derive(Debug, Clone)]
pub struct Figures {
    bench: String,
    commit: String,
    date: String,
    machine: String,
    run: String,
    note: String,
}

impl Figures {
    /// Figures of benchmark `bench` (e.g. `"ingest"`, `"ingest_r3"`) at
    /// `scale` (e.g. `"1000000 events over 100000 tasks"`), the note of
    /// every line, followed by `BATON_BENCH_NOTE` if set (e.g. `"shared
    /// machine"`). The commit is `BATON_BENCH_COMMIT` or `git rev-parse --short HEAD`
    /// (`-dirty` when the work tree has changes); the run id is
    /// `BATON_BENCH_RUN` (set by `scripts/bench` for all benches of one
    /// invocation) or the date.
    pub fn new(bench: &str, scale: &str) -> Figures {
        let date = utc_now();
        let note = match std::env::var("BATON_BENCH_NOTE") {
            Ok(extra) if !extra.is_empty() => format!("{scale}; {extra}"),
            _ => scale.to_string(),
        };
        Figures {
            bench: bench.to_string(),
            commit: std::env::var("BATON_BENCH_COMMIT").unwrap_or_else(|_| git_commit()),
            run: std::env::var("BATON_BENCH_RUN").unwrap_or_else(|_| date.clone()),
            date,
            machine: machine(),
            note,
        }
    }

    /// Prints one figure line.
    pub fn emit(&self, measure: &str, value: f64, unit: &str) {
        println!("{}", self.line(measure, value, unit));
    }

    fn line(&self, measure: &str, value: f64, unit: &str) -> String {
        // Three significant decimals are more than these figures carry.
        let value = if value.is_finite() {
            format!("{}", (value * 1000.0).round() / 1000.0)
        } else {
            "null".into()
        };
        format!(
            r#"{{"bench":{},"measure":{},"value":{value},"unit":{},"commit":{},"date":{},"machine":{},"run":{},"note":{}}}"#,
            json_str(&self.bench),
            json_str(measure),
            json_str(unit),
            json_str(&self.commit),
            json_str(&self.date),
            json_str(&self.machine),
            json_str(&self.run),
            json_str(&self.note),
        )
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(sha) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{sha}-dirty"),
            _ => sha,
        },
        None => "unknown".into(),
    }
}

/// `<cores>c/<GiB>GiB`.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!("{cores}c/{}GiB", (kib as f64 / (1u64 << 20) as f64).round())
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn a_figure_is_one_json_line() {
        let f = Figures {
            bench: "ingest".into(),
            commit: "abc".into(),
            date: "d".into(),
            machine: "2c/8GiB".into(),
            run: "r".into(),
            note: "a \"quoted\"\nnote".into(),
        };
        assert_eq!(
            f.line("orchestrator_vs_raw", 0.61234, "ratio"),
            r#"{"bench":"ingest","measure":"orchestrator_vs_raw","value":0.612,"unit":"ratio","commit":"abc","date":"d","machine":"2c/8GiB","run":"r","note":"a \"quoted\"\nnote"}"#
        );
        assert!(f.line("x", f64::NAN, "ms").contains(r#""value":null"#));
    }
}
