//! The orchestrator: a separate service that consumes `BATON_EVENTS`,
//! derives every task's state and its single owner with `baton-core`, and
//! raises protocol alerts. It does no agent work; it watches.
//!
//! # How it runs
//!
//! 0. Connects, creates the streams and buckets (idempotently), serves
//!    `/metrics` and `/healthz`, writes its liveness record, and campaigns
//!    for the leadership lease ([`baton_service::leader`]): several
//!    instances may run, one is active, the others stand by and take over
//!    when it dies, stops, or stops making progress. Everything below
//!    happens in a term of leadership, and every write of a term carries
//!    its fence, so a deposed instance cannot write (decision 8).
//! 1. Loads
//!    the snapshot: every task's last stored state from KV `baton-tasks`
//!    (start-up time grows with live tasks, not with history) and the
//!    decision records.
//! 2. Re-creates its durable consumer just after the checkpoint (KV
//!    `baton-checkpoints`): every event up to it has its state in KV, so
//!    nothing is skipped and nothing is applied twice after a crash.
//! 3. Loops: take a batch ([`book::Book`] folds it and says what to
//!    publish), make its alerts and dead letters durable through the
//!    outbox, then acknowledge the batch's last message (ack policy `All`).
//!    Task states go to KV in state flushes, each followed by the
//!    checkpoint: at once when caught up, at most `max_lag` behind while
//!    live, every `catch_up_lag` while replaying a backlog. A task touched
//!    many times between flushes costs one KV write, and the flush is
//!    stored in the background while the next batches fold.
//! 4. Answers queries under `baton.api.v1` ([`api`]), watches the stall
//!    detector's lease (`DETECTOR_DOWN`, [`watch`]), materialises artifact
//!    leases in KV `baton-leases` ([`leases`]), and stops on shutdown
//!    after flushing what it has applied, then releases the lease so a
//!    standby takes over at once.

pub mod api;
pub mod book;
pub mod leases;
pub mod metrics;
pub mod watch;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use baton_core::{Policy, Task, Time, context::MissingVersion, subjects, wire::read_context_entry};
use baton_jetstream::{NatsOptions, Topology, leadership::FenceTarget, read};
use baton_service::{
    consumer::{Batches, ConsumerSpec},
    http::{self, Health},
    leader::{self, Beat, LeaderConfig, LeaderMetrics, Leadership, Term, TermWork},
    liveness::{self, Progress, wall_now},
    outbox::{Outbox, Outgoing, SoleWriter},
    shutdown::Shutdown,
    snapshot::Checkpoint,
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
    /// While live, KV state trails the fold by at most this.
    pub max_lag: Duration,
    /// While replaying a backlog, KV state is flushed this often (fewer,
    /// larger flushes: one KV write per task per flush).
    pub catch_up_lag: Duration,
    pub liveness_interval: Duration,
    pub ack_wait: Duration,
    /// Leadership lease: a standby takes over after the active instance
    /// has not renewed it (or made progress) for this long.
    pub lease_ttl: Duration,
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
            catch_up_lag: Duration::from_secs(5),
            liveness_interval: Duration::from_secs(2),
            ack_wait: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(5),
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
    /// Last event sequence made durable, and consumer pending.
    pub progress: Progress,
    /// The live metrics (counters are shared with the service).
    pub metrics: Metrics,
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

/// The lease key and service name of the orchestrator.
pub const SERVICE: &str = "orchestrator";

/// The streams the orchestrator writes to, each fenced per term.
pub fn fence_targets() -> Vec<FenceTarget> {
    vec![
        FenceTarget::sole_bucket(subjects::TASKS_BUCKET, SERVICE),
        FenceTarget::bucket(subjects::CHECKPOINTS_BUCKET, SERVICE),
        FenceTarget::bucket(subjects::LEASES_BUCKET, SERVICE),
        FenceTarget::alerts(SERVICE),
        FenceTarget::dlq(SERVICE),
    ]
}

/// What every term of this instance shares.
struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    config: Config,
    max_payload: usize,
    metrics: Metrics,
    health: Health,
    progress: Progress,
    beat: Beat,
    shutdown: Shutdown,
}

/// Starts the orchestrator. Returns once this instance knows its role: if
/// it took the leadership, once it is ready to consume; otherwise as a
/// standby, which takes over when the active instance stops renewing.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, OrchestratorError> {
    let started = tokio::time::Instant::now();
    let client = config.nats.connect().await?;
    let js = jetstream::new(client.clone());
    baton_jetstream::ensure(&js, &config.topology).await?;
    let max_payload = client.server_info().max_payload;

    let metrics = Metrics::new();
    let leader_metrics = LeaderMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    leader_metrics.register(&mut registry);
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
    let services = js
        .get_key_value(subjects::SERVICES_BUCKET)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    let progress = Progress::default();
    // Under a leadership lease: the record says standby until a term begins.
    progress.set_term(0);
    liveness::spawn(
        services,
        SERVICE,
        &config.instance,
        http_addr.map(|a| a.to_string()),
        config.liveness_interval,
        progress.clone(),
        shutdown.clone(),
    );
    let beat = Beat::default();
    let mut leadership = leader::spawn(
        js.clone(),
        LeaderConfig {
            service: SERVICE.into(),
            instance: config.instance.clone(),
            ttl: config.lease_ttl,
            targets: fence_targets(),
        },
        beat.clone(),
        leader_metrics,
        shutdown.clone(),
    )
    .await
    .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    let shared = Arc::new(Shared {
        client,
        js,
        config,
        max_payload,
        metrics: metrics.clone(),
        health,
        progress: progress.clone(),
        beat,
        shutdown: shutdown.clone(),
    });
    // The first look at the lease decides how start returns.
    let first =
        leader::first_term(&mut leadership, &shutdown, |term| activate(&shared, term)).await?;
    let restored = first.as_ref().map_or(0, |a| a.restored);
    let task = tokio::spawn(supervise(shared, leadership, first));
    Ok(Running {
        http_addr,
        restored_tasks: restored,
        startup: started.elapsed(),
        progress,
        metrics,
        task,
    })
}

/// Runs terms for as long as the process lives: each time this instance
/// becomes active it loads the snapshot and consumes until the term ends;
/// deposed, it stands by again.
async fn supervise(
    shared: Arc<Shared>,
    leadership: Leadership,
    first: Option<Active>,
) -> Result<(), OrchestratorError> {
    leader::run_terms(
        leadership,
        &shared.progress,
        &shared.shutdown,
        first,
        |term| activate(&shared, term),
        || {
            shared.metrics.tasks.set(0);
        },
    )
    .await
}

/// An instance's term, set up and ready to consume.
struct Active {
    term: Term,
    ingest: Ingest,
    restored: usize,
}

impl TermWork for Active {
    type Error = OrchestratorError;

    fn term(&self) -> &Term {
        &self.term
    }

    fn outbox(&self) -> &Outbox {
        &self.ingest.outbox
    }

    async fn run(self) -> Result<(), OrchestratorError> {
        self.ingest.run().await
    }
}

/// Sets up a term: the published policy, the snapshot, the decision
/// records, the consumer just after the checkpoint, the query API and the
/// watch of the stall detector.
async fn activate(shared: &Arc<Shared>, term: Term) -> Result<Active, OrchestratorError> {
    let config = &shared.config;
    let js = shared.js.clone();
    let shutdown = term.ended.clone();
    // A new term, a new outbox: what the last one could not store is
    // re-derived from the events after the checkpoint.
    shared
        .health
        .set_condition(baton_service::outbox::HEALTH_CONDITION, None);
    let outbox = Outbox::new(js.clone())
        .reporting_to(shared.health.clone())
        .fenced(term.fences.clone());
    // Every other reader folds with the policy this orchestrator runs.
    baton_jetstream::policy::publish(&js, &config.policy)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    let mut book = Book::new(
        config.policy.clone(),
        config.missing_context_version,
        shared.max_payload,
    );
    let restored = load_snapshot(&js, &mut book, &shared.beat).await?;
    let context_checkpoint = Checkpoint::open(&js, CONTEXT_CHECKPOINT)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?
        .writing_through(outbox.clone());
    let reported = context_checkpoint
        .load()
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    let refused = record_decisions(&mut book, fetch_decisions(&js, 0).await?, reported);
    report_refused_decisions(
        &outbox,
        &context_checkpoint,
        &refused,
        book.decisions_seq(),
        &shutdown,
    )
    .await?;
    tracing::info!(tasks = restored, term = term.term, "snapshot loaded");

    let spec = ConsumerSpec {
        stream: subjects::EVENTS_STREAM.into(),
        durable: subjects::ORCHESTRATOR_CONSUMER.into(),
        filter: subjects::EVENTS_ALL.into(),
        // Acknowledged per batch once its alerts are stored.
        max_ack_pending: i64::try_from(config.max_batch * 4).unwrap_or(i64::MAX),
        ack_wait: config.ack_wait,
        max_batch: config.max_batch,
    };
    // Resume after the checkpoint: every state change up to it is in KV.
    let checkpoint = Checkpoint::open(&js, subjects::ORCHESTRATOR_CONSUMER)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?
        .writing_through(outbox.clone());
    let resume_after = checkpoint
        .load()
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    let consumer = term.restart_consumer(&js, &spec, resume_after + 1).await?;
    shared
        .metrics
        .tasks
        .set(i64::try_from(book.len()).unwrap_or(i64::MAX));
    shared
        .progress
        .set(resume_after, consumer.cached_info().num_pending);

    let book = Arc::new(Mutex::new(book));
    api::start(
        shared.client.clone(),
        js.clone(),
        book.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| OrchestratorError::Setup(format!("cannot start the query API: {e}")))?;
    watch::spawn_detector_watch(js.clone(), outbox.clone(), shutdown.clone())
        .await
        .map_err(|e| OrchestratorError::Setup(format!("cannot watch the stall detector: {e}")))?;
    leases::spawn(
        js.clone(),
        outbox.clone(),
        config.policy.operators.clone(),
        shared.health.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| OrchestratorError::Setup(format!("cannot materialise the leases: {e}")))?;

    let batches = Batches::new(&consumer, config.max_batch).await?;
    let ingest = Ingest {
        js: js.clone(),
        outbox,
        // Fenced by a chain from the term's fence in KV baton-tasks.
        state_writer: Arc::new(tokio::sync::Mutex::new(SoleWriter::for_term(
            format!("KV_{}", subjects::TASKS_BUCKET),
            &term.fences,
        ))),
        checkpoint,
        context_checkpoint,
        book,
        metrics: shared.metrics.clone(),
        health: shared.health.clone(),
        progress: shared.progress.clone(),
        beat: shared.beat.clone(),
        config: config.clone(),
        spec,
        batches,
        shutdown,
    };
    Ok(Active {
        term,
        ingest,
        restored,
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
    beat: &Beat,
) -> Result<usize, OrchestratorError> {
    let mut bad = 0usize;
    let mut count = 0usize;
    read::for_each_kv_value(js, subjects::TASKS_BUCKET, |_, stored| {
            // Loading a large snapshot is progress: the lease stays renewed.
            beat.beat();
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

/// The stored time of the newest event in `BATON_EVENTS`.
async fn newest_event_time(js: &jetstream::Context) -> Result<Time, OrchestratorError> {
    let stream = js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))?;
    Ok(read::time_of(stream.cached_info().state.last_timestamp))
}

/// Checkpoint key: the decision-record sequence up to which every refused
/// entry has been dead-lettered and reported, so each is reported once.
const CONTEXT_CHECKPOINT: &str = "baton-orchestrator-context";

/// Records decision-record entries in stream order. An entry that cannot
/// be used (undecodable, over a limit, on a subject that does not name its
/// workflow and author) is skipped, as every reader skips it; if it is newer
/// than `reported`, its dead letter and `MALFORMED_EVENT` report are
/// returned for publishing.
fn record_decisions(book: &mut Book, entries: Vec<read::Stored>, reported: u64) -> Vec<Outgoing> {
    let mut refused = Vec::new();
    for stored in entries {
        match read_context_entry(&stored.subject, &stored.payload) {
            Ok(entry) => book.record_decision(&entry, stored.seq, stored.stored_at),
            Err(e) => {
                tracing::warn!(seq = stored.seq, subject = %stored.subject, error = %e, "decision-record entry refused and skipped");
                book.skip_decision(stored.seq);
                if stored.seq > reported {
                    refused.extend(book.refuse_decision(&stored, &e));
                }
            }
        }
    }
    refused
}

/// Publishes the reports of refused decision-record entries, then moves the
/// checkpoint past them (to `upto`), so a restart does not report them again.
async fn report_refused_decisions(
    outbox: &Outbox,
    checkpoint: &Checkpoint,
    refused: &[Outgoing],
    upto: u64,
    shutdown: &Shutdown,
) -> Result<(), OrchestratorError> {
    if refused.is_empty() {
        return Ok(());
    }
    outbox.deliver(refused, shutdown).await.map_err(|e| {
        OrchestratorError::Setup(format!(
            "cannot store the report of a refused decision-record entry: {e}"
        ))
    })?;
    checkpoint
        .store(upto)
        .await
        .map_err(|e| OrchestratorError::Setup(e.to_string()))
}

/// The ingest loop's state.
struct Ingest {
    js: jetstream::Context,
    outbox: Outbox,
    /// Task states go to KV with one acknowledgement per flush: only the
    /// orchestrator writes `baton-tasks`.
    state_writer: Arc<tokio::sync::Mutex<SoleWriter>>,
    checkpoint: Checkpoint,
    /// Where refused decision-record entries have been reported up to.
    context_checkpoint: Checkpoint,
    book: Arc<Mutex<Book>>,
    metrics: Metrics,
    health: Health,
    progress: Progress,
    /// Beaten every loop iteration: the lease is renewed only while fresh.
    beat: Beat,
    config: Config,
    spec: ConsumerSpec,
    batches: Batches,
    shutdown: Shutdown,
}

/// A state flush in the background: KV writes, then the checkpoint.
struct StateFlush {
    upto: u64,
    task: tokio::task::JoinHandle<bool>,
}

/// What the ingest loop woke for.
enum Woke {
    /// The next batch (empty after `idle`), or `None` on shutdown.
    Batch(Option<Vec<jetstream::Message>>),
    /// The state flush in flight finished: stored, or not.
    Flushed(Result<bool, tokio::task::JoinError>),
}

impl Ingest {
    async fn run(mut self) -> Result<(), OrchestratorError> {
        let mut folded = BatchOut::default();
        let mut folded_seq = self.progress.applied_seq();
        let mut pending = 0u64;
        // When the oldest event not yet covered by the checkpoint was folded.
        let mut unflushed_since: Option<tokio::time::Instant> = None;
        // At most one state flush in flight: the next batches fold while
        // the broker stores the previous flush.
        let mut in_flight: Option<StateFlush> = None;
        // False once a batch's effects or a state flush could not be
        // stored: the checkpoint must then stay where it is, so that a
        // restart re-reads (and re-publishes) from there.
        let mut clean = true;
        let mut expected_consumer_seq: Option<u64> = None;
        let mut decisions_watermark = Time::EPOCH;
        let idle = self.config.max_lag.min(Duration::from_millis(500));
        loop {
            self.beat.beat();
            let mut shutdown = self.shutdown.clone();
            // Wake for the next batch, or as soon as a state flush is
            // stored (so progress moves and the next flush can start).
            let woke = match in_flight.as_mut() {
                Some(flush) => tokio::select! {
                    biased;
                    stored = &mut flush.task => Woke::Flushed(stored),
                    batch = self.batches.next(idle, &mut shutdown) => Woke::Batch(batch),
                },
                None => Woke::Batch(self.batches.next(idle, &mut shutdown).await),
            };
            let batch = match woke {
                Woke::Batch(Some(batch)) => batch,
                Woke::Batch(None) => break,
                Woke::Flushed(stored) => {
                    let Some(flush) = in_flight.take() else {
                        break;
                    };
                    if !self.flush_stored(flush.upto, stored) {
                        clean = false;
                        break;
                    }
                    Vec::new()
                }
            };
            let mut gap = false;
            if !batch.is_empty() {
                // Decode outside the lock, once.
                let mut decoded = Vec::with_capacity(batch.len());
                let mut newest_checked = Time::EPOCH;
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
                            "gap in deliveries; re-reading after the last folded event"
                        );
                        gap = true;
                        break;
                    }
                    expected_consumer_seq = Some(d.consumer_seq + 1);
                    let raw = Raw {
                        subject: msg.subject.as_str(),
                        payload: &msg.payload,
                        headers: msg.headers.as_ref(),
                        meta: d.meta,
                    };
                    let event = Book::decode(raw);
                    if let Ok(e) = &event
                        && Book::needs_decisions(e.kind())
                    {
                        newest_checked = newest_checked.max(d.meta.stored_at);
                    }
                    decoded.push((msg, d, Some(event)));
                }
                if newest_checked > decisions_watermark {
                    let Some(covered) = self.catch_up_decisions().await else {
                        break;
                    };
                    decisions_watermark = newest_checked.max(covered);
                }
                {
                    let mut book = self.book_lock();
                    for (msg, d, event) in &mut decoded {
                        let raw = Raw {
                            subject: msg.subject.as_str(),
                            payload: &msg.payload,
                            headers: msg.headers.as_ref(),
                            meta: d.meta,
                        };
                        if let Some(event) = event.take() {
                            book.ingest_decoded(raw, event, &mut folded);
                        }
                        folded_seq = d.meta.seq;
                        pending = d.pending;
                    }
                    self.metrics
                        .tasks
                        .set(i64::try_from(book.len()).unwrap_or(i64::MAX));
                }
                if !decoded.is_empty() {
                    unflushed_since.get_or_insert_with(tokio::time::Instant::now);
                }
                // Effects first, then the acknowledgement.
                let effects = folded.take_effects();
                if !self.publish_effects(&effects).await {
                    clean = false;
                    break;
                }
                self.count(
                    &effects,
                    &decoded
                        .iter()
                        .map(|(_, d, _)| d.meta.stored_at)
                        .collect::<Vec<_>>(),
                );
                if let Some((msg, _, _)) = decoded.last() {
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(error = %e, "ack failed; the events will be redelivered and skipped");
                    }
                    self.metrics
                        .consumer_pending
                        .set(i64::try_from(pending).unwrap_or(i64::MAX));
                    self.progress.set(self.progress.applied_seq(), pending);
                }
            }
            // State flush: at once when live and caught up; every max_lag
            // while live; every catch_up_lag while replaying a backlog.
            if in_flight.as_ref().is_some_and(|f| f.task.is_finished())
                && let Some(f) = in_flight.take()
                && !self.finished(f).await
            {
                clean = false;
                break;
            }
            let backlog = pending > self.config.max_batch as u64;
            let lag = if backlog {
                self.config.catch_up_lag
            } else {
                self.config.max_lag
            };
            let dirty = folded.dirty_len();
            let behind = dirty > 0 || folded_seq > self.progress.applied_seq();
            let due =
                behind && (pending == 0 || unflushed_since.is_some_and(|s| s.elapsed() >= lag));
            if (due && in_flight.is_none()) || (gap && dirty > 0) {
                if let Some(f) = in_flight.take()
                    && !self.finished(f).await
                {
                    clean = false;
                    break;
                }
                in_flight = Some(self.flush_state(&mut folded, folded_seq));
                unflushed_since = None;
            }
            if gap {
                // Memory holds everything folded so far: read on after it.
                let consumer =
                    baton_service::consumer::restart_from(&self.js, &self.spec, folded_seq + 1)
                        .await?;
                self.batches = Batches::new(&consumer, self.config.max_batch).await?;
                expected_consumer_seq = None;
            }
        }
        // Shutting down: store what was folded, then the checkpoint.
        if let Some(f) = in_flight.take() {
            clean &= self.finished(f).await;
        }
        if !clean {
            tracing::warn!(
                "stopping with effects or task states not stored; the next start re-reads the events since the last checkpoint"
            );
        } else if folded.dirty_len() > 0 {
            let f = self.flush_state(&mut folded, folded_seq);
            self.finished(f).await;
        } else if folded_seq > self.progress.applied_seq() {
            // Nothing to write, but the checkpoint can move on.
            let _ = self.checkpoint.store(folded_seq).await;
        }
        if !self.shutdown.is_triggered() {
            // Not asked to stop: exit with an error so that a supervisor
            // restarts the service (it resumes from the last checkpoint).
            return Err(OrchestratorError::Setup(if clean {
                "stopped: the consumer's message stream ended".into()
            } else {
                "stopped: effects or state could not be stored (see the log)".into()
            }));
        }
        tracing::info!("orchestrator stopped");
        Ok(())
    }

    /// Reads the decisions recorded since the last catch-up, so that every
    /// event stored until now can be judged against the record: every
    /// decision stored before such an event is in the stream by now.
    /// Returns the stored time of the newest event covered (read before the
    /// record, so one catch-up covers a whole backlog, not just a batch).
    /// Retries until it succeeds; `None` on shutdown.
    async fn catch_up_decisions(&self) -> Option<Time> {
        let mut backoff = Duration::from_millis(100);
        let mut failed = false;
        loop {
            let attempt = async {
                let covered = newest_event_time(&self.js).await?;
                let known = self.book_lock().decisions_seq();
                let entries = fetch_decisions(&self.js, known).await?;
                let refused = record_decisions(&mut self.book_lock(), entries, known);
                let upto = self.book_lock().decisions_seq();
                report_refused_decisions(
                    &self.outbox,
                    &self.context_checkpoint,
                    &refused,
                    upto,
                    &self.shutdown,
                )
                .await?;
                Ok::<_, OrchestratorError>(covered)
            };
            match attempt.await {
                Ok(covered) => {
                    if failed {
                        self.health.set_problem(None);
                    }
                    return Some(covered);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the decision record; retrying before judging these events");
                    self.health
                        .set_problem(Some(format!("cannot read the decision record: {e}")));
                    failed = true;
                }
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn book_lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes alerts and dead letters and waits until all are stored;
    /// false on shutdown (nothing acknowledged then).
    async fn publish_effects(&self, effects: &BatchOut) -> bool {
        if effects.outgoing.is_empty() {
            return true;
        }
        match self.outbox.deliver(&effects.outgoing, &self.shutdown).await {
            Ok(d) => {
                self.metrics.outbox_retries.inc_by(d.retries as u64);
                self.health.set_problem(None);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "stopping before these events' effects were stored; they will be re-read");
                self.health.set_problem(Some(e.to_string()));
                false
            }
        }
    }

    fn count(&self, out: &BatchOut, stored: &[Time]) {
        let m = &self.metrics;
        m.events_applied.inc_by(out.applied);
        m.violations.inc_by(out.refused);
        m.duplicates.inc_by(out.duplicates);
        m.unknown_task.inc_by(out.unknown_task);
        m.dead_lettered.inc_by(out.dead_lettered);
        for kind in &out.alerts {
            m.alerts
                .get_or_create(&KindLabel {
                    kind: kind.as_str().to_string(),
                })
                .inc();
        }
        let now = wall_now();
        for t in stored {
            m.apply_latency.observe(now.since(*t).as_secs_f64());
        }
        m.batch_size.observe(stored.len() as f64);
    }

    /// Waits for a state flush; false if it could not be stored (shutdown).
    async fn finished(&self, flush: StateFlush) -> bool {
        let stored = flush.task.await;
        self.flush_stored(flush.upto, stored)
    }

    /// Records a state flush's outcome; false if it was not stored.
    fn flush_stored(&self, upto: u64, stored: Result<bool, tokio::task::JoinError>) -> bool {
        match stored {
            Ok(true) => {
                self.progress.set(upto, self.progress.pending());
                self.metrics
                    .applied_seq
                    .set(i64::try_from(upto).unwrap_or(i64::MAX));
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::error!(error = %e, "state flush failed");
                false
            }
        }
    }

    /// Encodes every task touched since the last flush and, in the
    /// background, writes them to KV and then moves the checkpoint to `upto`.
    fn flush_state(&self, folded: &mut BatchOut, upto: u64) -> StateFlush {
        let started = tokio::time::Instant::now();
        let writes = self.book_lock().state_writes(folded);
        let encoded = started.elapsed();
        let outbox = self.outbox.clone();
        let writer = self.state_writer.clone();
        let shutdown = self.shutdown.clone();
        let metrics = self.metrics.clone();
        let health = self.health.clone();
        let checkpoint = self.checkpoint.clone();
        let task = tokio::spawn(async move {
            let delivered = writer
                .lock()
                .await
                .deliver(&outbox, &writes, &shutdown)
                .await;
            match delivered {
                Ok(d) => {
                    metrics.outbox_retries.inc_by(d.retries as u64);
                    metrics.flush_fallbacks.inc_by(u64::from(d.fell_back));
                    metrics.kv_writes.inc_by(writes.len() as u64);
                    metrics.flushes.inc();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stopping with task states not stored; they will be rebuilt from events");
                    health.set_problem(Some(e.to_string()));
                    return false;
                }
            }
            if let Err(e) = checkpoint.store(upto).await {
                // The next flush moves it; a restart re-reads a little more.
                tracing::warn!(error = %e, "could not store the checkpoint");
            }
            tracing::debug!(
                kv_writes = writes.len(),
                upto,
                encode_ms = encoded.as_millis(),
                total_ms = started.elapsed().as_millis(),
                "state durable"
            );
            true
        });
        StateFlush { upto, task }
    }
}
