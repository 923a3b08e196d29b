//! The orchestrator: a separate service that consumes `BATON_EVENTS`,
//! derives every task's state and its single owner with `baton-core`, and
//! raises protocol alerts. It does no agent work; it watches.
//!
//! # How it runs
//!
//! 1. Connects, creates the streams and buckets (idempotently), and loads
//!    the snapshot: every task's last stored state from KV `baton-tasks`
//!    (start-up time grows with live tasks, not with history) and the
//!    decision records.
//! 2. Re-creates its durable consumer at the ack floor, so nothing that
//!    was delivered but not acknowledged before a crash is skipped.
//! 3. Loops: take a batch ([`book::Book`] folds it and says what to
//!    publish), make the effects durable through the outbox, then
//!    acknowledge the batch's last message (ack policy `All`). Under load
//!    several batches are folded before one flush, so a task touched many
//!    times costs one KV write; `max_lag` bounds how stale KV may get.
//! 4. Answers queries under `baton.api.v1` ([`api`]), writes its liveness
//!    record, serves `/metrics` and `/healthz`, and stops on shutdown
//!    after flushing what it has applied.

pub mod api;
pub mod book;
pub mod metrics;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use baton_core::{
    Policy, Task, Time,
    context::{ContextEntry, MissingVersion},
    subjects,
    wire::decode_event,
};
use baton_jetstream::{NatsOptions, Topology, read};
use baton_service::{
    consumer::{Batches, ConsumerSpec},
    http::{self, Health},
    liveness::{self, Progress, wall_now},
    outbox::Outbox,
    shutdown::Shutdown,
};
use book::{BatchOut, Book, Raw};
use metrics::{KindLabel, Metrics};
use prometheus_client::registry::Registry;

/// How the orchestrator runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsOptions,
    pub topology: Topology,
    pub policy: Policy,
    /// Whether an event without a context version, in a workflow with a
    /// decision record, counts as stale.
    pub missing_context_version: MissingVersion,
    /// `/metrics` and `/healthz`; `None` = off.
    pub http_addr: Option<SocketAddr>,
    /// Instance name in the liveness record.
    pub instance: String,
    /// Most events taken in one batch.
    pub max_batch: usize,
    /// Under load, flush at least this often: KV state is never older.
    pub max_lag: Duration,
    /// Flush once this many tasks wait to be written.
    pub max_unflushed: usize,
    pub liveness_interval: Duration,
    pub ack_wait: Duration,
}

impl Config {
    /// Defaults for everything but the connection.
    pub fn new(nats: NatsOptions) -> Config {
        Config {
            nats,
            topology: Topology::default(),
            policy: Policy::default(),
            missing_context_version: MissingVersion::Stale,
            http_addr: None,
            instance: default_instance(),
            max_batch: 10_000,
            max_lag: Duration::from_millis(250),
            max_unflushed: 100_000,
            liveness_interval: Duration::from_secs(2),
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// `<hostname>-<pid>`.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Why the orchestrator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Connect(#[from] baton_jetstream::ConnectError),
    #[error(transparent)]
    Topology(#[from] baton_jetstream::TopologyError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error(transparent)]
    Consumer(#[from] baton_service::consumer::ConsumerError),
}

/// A started orchestrator.
#[derive(Debug)]
pub struct Running {
    /// Where `/metrics` and `/healthz` are served.
    pub http_addr: Option<SocketAddr>,
    /// Tasks loaded from the snapshot at start.
    pub restored_tasks: usize,
    /// How long start-up took.
    pub startup: Duration,
    task: tokio::task::JoinHandle<Result<(), OrchestratorError>>,
}

impl Running {
    /// Waits for the orchestrator to stop.
    pub async fn wait(self) -> Result<(), OrchestratorError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(OrchestratorError::Setup(format!(
                "orchestrator task failed: {e}"
            ))),
        }
    }
}

/// Starts the orchestrator; returns once it is ready to consume.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, OrchestratorError> {
    let started = tokio::time::Instant::now();
    let client = config.nats.connect().await?;
    let js = jetstream::new(client.clone());
    baton_jetstream::ensure(&js, &config.topology).await?;
    let max_payload = client.server_info().max_payload;
    let mut book = Book::new(
        config.policy.clone(),
        config.missing_context_version,
        max_payload,
    );
    let restored = load_snapshot(&js, &mut book).await?;
    record_decisions(&mut book, fetch_decisions(&js, 0).await?);
    tracing::info!(tasks = restored, "snapshot loaded");

    let spec = ConsumerSpec {
        stream: subjects::EVENTS_STREAM.into(),
        durable: subjects::ORCHESTRATOR_CONSUMER.into(),
        filter: subjects::EVENTS_ALL.into(),
        max_ack_pending: i64::try_from(config.max_unflushed.max(config.max_batch) * 2)
            .unwrap_or(i64::MAX),
        ack_wait: config.ack_wait,
        max_batch: config.max_batch,
    };
    let consumer = baton_service::consumer::resume(&js, &spec).await?;

    let metrics = Metrics::new();
    metrics
        .tasks
        .set(i64::try_from(book.len()).unwrap_or(i64::MAX));
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let health = Health::default();
    let http_addr = match config.http_addr {
        Some(addr) => {
            let (bound, _) =
                http::serve(addr, Arc::new(registry), health.clone(), shutdown.clone())
                    .await
                    .map_err(|e| {
                        OrchestratorError::Setup(format!("cannot serve HTTP on {addr}: {e}"))
                    })?;
            Some(bound)
        }
        None => None,
    };

    let book = Arc::new(Mutex::new(book));
    api::start(client.clone(), js.clone(), book.clone(), shutdown.clone())
        .await
        .map_err(|e| OrchestratorError::Setup(format!("cannot start the query API: {e}")))?;

    let kv = js
        .get_key_value(subjects::SERVICES_BUCKET)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    let progress = Progress::default();
    let info = consumer.cached_info();
    progress.set(info.ack_floor.stream_sequence, info.num_pending);
    liveness::spawn(
        kv,
        "orchestrator",
        &config.instance,
        http_addr.map(|a| a.to_string()),
        config.liveness_interval,
        progress.clone(),
        shutdown.clone(),
    );

    let batches = Batches::new(&consumer, config.max_batch).await?;
    let ingest = Ingest {
        js: js.clone(),
        outbox: Outbox::new(js),
        book,
        metrics,
        health,
        progress,
        config,
        spec,
        batches,
        shutdown,
    };
    let task = tokio::spawn(ingest.run());
    Ok(Running {
        http_addr,
        restored_tasks: restored,
        startup: started.elapsed(),
        task,
    })
}

/// Runs until shutdown.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), OrchestratorError> {
    start(config, shutdown).await?.wait().await
}

/// Loads every task's stored state from KV.
async fn load_snapshot(
    js: &jetstream::Context,
    book: &mut Book,
) -> Result<usize, OrchestratorError> {
    let mut bad = 0usize;
    let mut count = 0usize;
    read::for_each_last_per_subject(
        js,
        &format!("KV_{}", subjects::TASKS_BUCKET),
        &format!("$KV.{}.>", subjects::TASKS_BUCKET),
        |stored| {
            if stored.is_kv_tombstone() {
                return;
            }
            match Task::decode(&stored.payload) {
                Ok(task) => {
                    count += 1;
                    book.restore(task);
                }
                Err(e) => {
                    bad += 1;
                    tracing::warn!(subject = %stored.subject, error = %e, "unreadable task state in KV; it will be rebuilt from events");
                }
            }
        },
    )
    .await?;
    if bad > 0 {
        tracing::warn!(bad, "some task states could not be read");
    }
    Ok(count)
}

/// Decision-record entries after sequence `known`, if the stream has any.
async fn fetch_decisions(
    js: &jetstream::Context,
    known: u64,
) -> Result<Vec<read::Stored>, OrchestratorError> {
    let stream = js
        .get_stream(subjects::CONTEXT_STREAM)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    if stream.cached_info().state.last_sequence <= known {
        return Ok(Vec::new());
    }
    Ok(read::read_subject(
        js,
        subjects::CONTEXT_STREAM,
        subjects::CONTEXT_ALL,
        known + 1,
        None,
    )
    .await?)
}

fn record_decisions(book: &mut Book, entries: Vec<read::Stored>) {
    for stored in entries {
        match ContextEntry::decode(&stored.payload) {
            Ok(entry) => book.record_decision(&entry, stored.seq, stored.stored_at),
            Err(e) => {
                tracing::warn!(seq = stored.seq, error = %e, "undecodable decision-record entry skipped");
                book.skip_decision(stored.seq);
            }
        }
    }
}

/// The ingest loop's state.
struct Ingest {
    js: jetstream::Context,
    outbox: Outbox,
    book: Arc<Mutex<Book>>,
    metrics: Metrics,
    health: Health,
    progress: Progress,
    config: Config,
    spec: ConsumerSpec,
    batches: Batches,
    shutdown: Shutdown,
}

/// Folded but not yet durable.
#[derive(Default)]
struct Unflushed {
    out: BatchOut,
    last: Option<jetstream::Message>,
    last_seq: u64,
    pending: u64,
    since: Option<tokio::time::Instant>,
    stored: Vec<Time>,
    events: u64,
}

impl Ingest {
    async fn run(mut self) -> Result<(), OrchestratorError> {
        let mut unflushed = Unflushed::default();
        let mut expected_consumer_seq: Option<u64> = None;
        let mut decisions_watermark = Time::EPOCH;
        let idle = self.config.max_lag.min(Duration::from_millis(500));
        loop {
            let mut shutdown = self.shutdown.clone();
            let Some(batch) = self.batches.next(idle, &mut shutdown).await else {
                break;
            };
            let full = batch.len() >= self.config.max_batch;
            let mut gap = false;
            if !batch.is_empty() {
                // Decode once to see whether the decision record must be
                // caught up to these events' stored time first.
                let mut newest_checked = Time::EPOCH;
                for msg in &batch {
                    if let (Ok(e), Some(d)) = (
                        decode_event(&msg.payload),
                        baton_service::consumer::delivery_of(msg),
                    ) && Book::needs_decisions(e.kind())
                    {
                        newest_checked = newest_checked.max(d.meta.stored_at);
                    }
                }
                if newest_checked > decisions_watermark {
                    // Every entry stored before these events is in the
                    // stream by now: catch up, then they can be judged.
                    let known = self.book_lock().decisions_seq();
                    let entries = fetch_decisions(&self.js, known).await?;
                    record_decisions(&mut self.book_lock(), entries);
                    decisions_watermark = newest_checked;
                }
                let mut book = self.book_lock();
                for msg in &batch {
                    let Some(d) = baton_service::consumer::delivery_of(msg) else {
                        tracing::warn!(subject = %msg.subject, "message without JetStream metadata skipped");
                        continue;
                    };
                    if let Some(expected) = expected_consumer_seq
                        && d.consumer_seq != expected
                    {
                        tracing::warn!(
                            expected,
                            got = d.consumer_seq,
                            "gap in deliveries; re-reading from the last durable event"
                        );
                        gap = true;
                        break;
                    }
                    expected_consumer_seq = Some(d.consumer_seq + 1);
                    book.ingest(
                        Raw {
                            subject: msg.subject.as_str(),
                            payload: &msg.payload,
                            headers: msg.headers.as_ref(),
                            meta: d.meta,
                        },
                        &mut unflushed.out,
                    );
                    unflushed.events += 1;
                    unflushed.last_seq = d.meta.seq;
                    unflushed.pending = d.pending;
                    unflushed.stored.push(d.meta.stored_at);
                    unflushed.last = Some(msg.clone());
                    unflushed
                        .since
                        .get_or_insert_with(tokio::time::Instant::now);
                }
                self.metrics
                    .tasks
                    .set(i64::try_from(book.len()).unwrap_or(i64::MAX));
            }
            let due = unflushed
                .since
                .is_some_and(|s| s.elapsed() >= self.config.max_lag)
                || unflushed.out.dirty_len() >= self.config.max_unflushed;
            if unflushed.last.is_some() && (!full || due || gap) {
                unflushed = self.flush(unflushed).await?;
            }
            if gap {
                let from = self.progress.applied_seq() + 1;
                let consumer =
                    baton_service::consumer::restart_from(&self.js, &self.spec, from).await?;
                self.batches = Batches::new(&consumer, self.config.max_batch).await?;
                expected_consumer_seq = None;
            }
        }
        if unflushed.last.is_some() {
            // Shutting down: make what was applied durable and acknowledge.
            let _ = self.flush(unflushed).await;
        }
        tracing::info!("orchestrator stopped");
        Ok(())
    }

    fn book_lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes the folded batches' effects, then acknowledges.
    async fn flush(&mut self, mut u: Unflushed) -> Result<Unflushed, OrchestratorError> {
        self.book_lock().finish(&mut u.out);
        match self.outbox.deliver(&u.out.outgoing, &self.shutdown).await {
            Ok(delivered) => {
                self.metrics.outbox_retries.inc_by(delivered.retries as u64);
                self.health.set_problem(None);
            }
            Err(e) => {
                // Not acknowledged: redelivered after restart.
                tracing::warn!(error = %e, "stopping with a batch not made durable");
                self.health.set_problem(Some(e.to_string()));
                return Ok(Unflushed::default());
            }
        }
        if let Some(last) = &u.last
            && let Err(e) = last.ack().await
        {
            tracing::warn!(error = %e, "ack failed; the batch will be redelivered and skipped as duplicates");
        }
        let now = wall_now();
        for t in &u.stored {
            self.metrics
                .apply_latency
                .observe(now.since(*t).as_secs_f64());
        }
        let m = &self.metrics;
        m.events_applied.inc_by(u.out.applied);
        m.violations.inc_by(u.out.refused);
        m.duplicates.inc_by(u.out.duplicates);
        m.unknown_task.inc_by(u.out.unknown_task);
        m.dead_lettered.inc_by(u.out.dead_lettered);
        m.kv_writes.inc_by(u.out.kv_writes);
        for kind in &u.out.alerts {
            m.alerts
                .get_or_create(&KindLabel {
                    kind: kind.as_str().to_string(),
                })
                .inc();
        }
        m.flushes.inc();
        m.batch_size.observe(u.events as f64);
        m.consumer_pending
            .set(i64::try_from(u.pending).unwrap_or(i64::MAX));
        m.applied_seq
            .set(i64::try_from(u.last_seq).unwrap_or(i64::MAX));
        self.progress.set(u.last_seq, u.pending);
        tracing::debug!(
            events = u.events,
            kv_writes = u.out.kv_writes,
            seq = u.last_seq,
            "batch durable"
        );
        Ok(Unflushed::default())
    }
}
