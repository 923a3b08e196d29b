//! The stall detector: turns "an expected signal did not come" into a
//! specific fault report, and resolves it when the signal finally comes.
//!
//! It folds `BATON_EVENTS` with its own durable consumer and the same
//! `baton-core` fold as the orchestrator; [`baton_core::stall::Detector`]
//! arms a deadline for every expectation and decides what to publish. This
//! crate is the executor around it:
//!
//! - **Time.** Deadlines come from the broker's stored time of events. While
//!   replaying a backlog, time is the stored time of the event being
//!   processed (so a late event never hides a deadline it missed); once
//!   caught up, time is the [`Clock`] (monotonic, anchored to the wall clock
//!   at start) minus a small grace for events still in flight.
//! - **Restart.** Task states are snapshotted to KV `baton-detector` with a
//!   checkpoint; firing alerts are recovered from `BATON_ALERTS` (the latest
//!   notification per kind and task), so a restarted detector neither pages
//!   twice nor forgets, and alerts that became due while it was down fire at
//!   once.
//! - **Silences** from KV `baton-silences` are honoured; **watching the
//!   watchers** ([`system`]) raises `ORCHESTRATOR_DOWN` (no orchestrator
//!   renews its leadership lease) and `CONSUMER_STALLED`.
//! - **Standbys.** Several instances may run; one is active under the
//!   leadership lease and its writes are fenced
//!   ([`baton_service::leader`], decision 8). A standby takes over when the
//!   active one dies, stops, or stops making progress.
//! - **Artifact leases.** It follows `BATON_ARTIFACTS` with the same lease
//!   fold as every reader ([`baton_core::lease::LeaseWatch`]): when a hold
//!   is past its expiry it sends a sweep, so every reader sees the lease
//!   free, and it reports each hold the fold drops as expired
//!   (`LEASE_EXPIRED`, once per lapsed grant, not when a recorded broker
//!   outage kept the renewal out), each stale write a store
//!   reports (`LEASE_STALE_WRITE`), and each exclusive hold kept past its
//!   rule's `max_hold` while others wait (`LEASE_HELD_TOO_LONG`, checked
//!   every second, once per grant).
//! - [`backtest`] replays recorded history on virtual time with other rules.

pub mod backtest;
pub mod broker;
pub mod clock;
pub mod metrics;
pub mod system;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{self, kv},
};
use baton_core::{
    Alert, AlertState, Policy, Task, TaskId, Time,
    lease::LeaseMeta,
    rules::Rules,
    stall::{Detector, ENDED_SNAPSHOT, Silence},
    subjects,
    wire::{read_event, read_lease_event},
};
use baton_jetstream::{NatsOptions, Topology, leadership::FenceTarget, read};
use baton_proto::{prost::Message, v1 as pb};
use baton_service::{
    consumer::{self, Batches, ConsumerSpec},
    http::{self, Health},
    leader::{self, Beat, LeaderConfig, LeaderMetrics, Leadership, Term, TermWork},
    liveness::{self, Progress},
    outbox::{Outbox, Outgoing, SoleWriter},
    shutdown::Shutdown,
    snapshot::Checkpoint,
};
pub use clock::{Clock, ManualClock};
use futures::StreamExt;
use metrics::{AlertLabel, Metrics};
use prometheus_client::registry::Registry;
use system::{ConsumerObservation, SystemWatch, WatchLimits};

/// How the detector runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsOptions,
    pub topology: Topology,
    pub rules: Rules,
    pub policy: Policy,
    pub http_addr: Option<SocketAddr>,
    pub instance: String,
    /// Once caught up, an expectation is judged this long after it is due
    /// (an event stored just in time may still be on its way).
    pub grace: Duration,
    pub liveness_interval: Duration,
    pub max_batch: usize,
    /// While live, the snapshot trails the fold by at most this.
    pub max_lag: Duration,
    /// While replaying a backlog, the snapshot is written this often.
    pub catch_up_lag: Duration,
    pub watch: WatchLimits,
    /// How often consumers are checked for stalls.
    pub consumer_check_interval: Duration,
    pub clock: Clock,
    /// Leadership lease: a standby takes over after the active instance
    /// has not renewed it (or made progress) for this long.
    pub lease_ttl: Duration,
}

impl Config {
    pub fn new(nats: NatsOptions) -> Config {
        Config {
            nats,
            topology: Topology::default(),
            rules: Rules::default(),
            policy: Policy::default(),
            http_addr: None,
            instance: format!("local-{}", std::process::id()),
            grace: Duration::from_millis(100),
            liveness_interval: Duration::from_secs(2),
            max_batch: 10_000,
            max_lag: Duration::from_millis(250),
            catch_up_lag: Duration::from_secs(5),
            watch: WatchLimits::default(),
            consumer_check_interval: Duration::from_secs(5),
            clock: Clock::system(),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

/// Why the detector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(transparent)]
    Connect(#[from] baton_jetstream::ConnectError),
    #[error(transparent)]
    Topology(#[from] baton_jetstream::TopologyError),
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error(transparent)]
    Consumer(#[from] consumer::ConsumerError),
    #[error("{0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> DetectorError {
    DetectorError::Setup(e.to_string())
}

/// A started detector.
#[derive(Debug)]
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    /// Tasks restored from the snapshot, and firing alerts adopted.
    pub restored_tasks: usize,
    pub restored_alerts: usize,
    pub startup: Duration,
    pub progress: Progress,
    pub metrics: Metrics,
    task: tokio::task::JoinHandle<Result<(), DetectorError>>,
}

impl Running {
    pub async fn wait(self) -> Result<(), DetectorError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(DetectorError::Setup(format!("detector task failed: {e}"))),
        }
    }
}

/// The lease key and service name of the stall detector.
pub const SERVICE: &str = "stall-detector";

/// The streams the detector writes to, each fenced per term.
pub fn fence_targets() -> Vec<FenceTarget> {
    vec![
        FenceTarget::sole_bucket(subjects::DETECTOR_BUCKET, SERVICE),
        FenceTarget::bucket(subjects::CHECKPOINTS_BUCKET, SERVICE),
        FenceTarget::alerts(SERVICE),
    ]
}

/// What every term of this instance shares.
struct Shared {
    js: jetstream::Context,
    /// The broker probe, for the life of the process (decision 9).
    broker: broker::BrokerView,
    config: Config,
    metrics: Metrics,
    health: Health,
    progress: Progress,
    beat: Beat,
    shutdown: Shutdown,
}

/// Starts the detector. Returns once this instance knows its role: if it
/// took the leadership, once it is ready; otherwise as a standby.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, DetectorError> {
    let started = tokio::time::Instant::now();
    let client = config.nats.connect().await?;
    let js = jetstream::new(client.clone());
    baton_jetstream::ensure(&js, &config.topology).await?;

    let metrics = Metrics::new();
    let leader_metrics = LeaderMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    leader_metrics.register(&mut registry);
    let health = Health::default();
    let http_addr = match config.http_addr {
        Some(addr) => Some(
            http::serve(addr, Arc::new(registry), health.clone(), shutdown.clone())
                .await
                .map_err(|e| setup(format!("cannot serve HTTP on {addr}: {e}")))?
                .0,
        ),
        None => None,
    };
    let services = js
        .get_key_value(subjects::SERVICES_BUCKET)
        .await
        .map_err(setup)?;
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
    .map_err(setup)?;
    let broker = broker::spawn_probe(js.clone(), config.clock.clone(), shutdown.clone());
    let shared = Arc::new(Shared {
        js,
        broker,
        config,
        metrics: metrics.clone(),
        health,
        progress: progress.clone(),
        beat,
        shutdown: shutdown.clone(),
    });
    let first =
        leader::first_term(&mut leadership, &shutdown, |term| activate(&shared, term)).await?;
    let (restored_tasks, restored_alerts) = first
        .as_ref()
        .map_or((0, 0), |a| (a.restored_tasks, a.restored_alerts));
    let task = tokio::spawn(supervise(shared, leadership, first));
    Ok(Running {
        http_addr,
        restored_tasks,
        restored_alerts,
        startup: started.elapsed(),
        progress,
        metrics,
        task,
    })
}

/// Runs terms for as long as the process lives (see the orchestrator's).
async fn supervise(
    shared: Arc<Shared>,
    leadership: Leadership,
    first: Option<Active>,
) -> Result<(), DetectorError> {
    leader::run_terms(
        leadership,
        &shared.progress,
        &shared.shutdown,
        first,
        |term| activate(&shared, term),
        || {},
    )
    .await
}

/// A term, set up and ready to run.
struct Active {
    term: Term,
    service: Service,
    silence_watch: kv::Watch,
    orchestrator_watch: kv::Watch,
    restored_tasks: usize,
    restored_alerts: usize,
}

impl TermWork for Active {
    type Error = DetectorError;

    fn term(&self) -> &Term {
        &self.term
    }

    fn outbox(&self) -> &Outbox {
        &self.service.outbox
    }

    async fn run(self) -> Result<(), DetectorError> {
        self.service
            .run(self.silence_watch, self.orchestrator_watch)
            .await
    }
}

/// Sets up a term: the policy, the snapshot, the firing alerts, the
/// consumer after the checkpoint, and the watches of silences and of the
/// orchestrator's lease.
async fn activate(shared: &Arc<Shared>, term: Term) -> Result<Active, DetectorError> {
    let config = &shared.config;
    let js = shared.js.clone();
    // The orchestrator's published policy wins over this process's flags:
    // both services must judge every event the same way.
    let policy = match baton_jetstream::policy::read(&js).await.map_err(setup)? {
        Some(published) => {
            if published.operators != config.policy.operators
                || published.unknown_task != config.policy.unknown_task
            {
                tracing::warn!(
                    published = ?published,
                    configured = ?config.policy,
                    "using the orchestrator's published policy, not this detector's flags"
                );
            }
            published
        }
        None => {
            tracing::info!(
                "no policy published yet (orchestrator not started); using this detector's flags"
            );
            config.policy.clone()
        }
    };
    let mut leases = baton_core::lease::LeaseWatch::new(
        baton_core::AgentId::new(LEASE_SWEEPER).map_err(setup)?,
        policy.operators.clone(),
        config.topology.alert_duplicate_window,
    )
    .with_rules(config.rules.clone());
    let lease_events: LeaseEvents = std::sync::Mutex::new(Box::pin(
        read::follow(&js, subjects::ARTIFACTS_STREAM, subjects::ARTIFACTS_ALL)
            .await
            .map_err(setup)?,
    ));
    let mut det = Detector::new(config.rules.clone(), policy);
    // The outages this process saw, standing by or in earlier terms: a
    // takeover caused by the broker's troubles does not blame agents.
    // (Subscribed first: an outage seen meanwhile wakes the loop.)
    let outages = shared.broker.subscribe();
    let (outages_so_far, outages_seen) = shared.broker.outages_since(0);
    for &(from, until) in &outages_so_far {
        det.record_outage(from, until);
        leases.record_outage(from, until);
    }
    if let Some(&(_, until)) = outages_so_far.last() {
        shared.broker.recorded(until);
    }
    let mut restored_tasks = 0;
    read::for_each_kv_value(&js, subjects::DETECTOR_BUCKET, |key, stored| {
            // Loading a large snapshot is progress: the lease stays renewed.
            shared.beat.beat();
            if stored.payload.as_ref() == ENDED_SNAPSHOT {
                if let Ok(id) = TaskId::new(key) {
                    det.restore_ended(id);
                }
                return;
            }
            match Task::decode(&stored.payload) {
                Ok(task) => {
                    restored_tasks += 1;
                    det.restore(task);
                }
                Err(e) => tracing::warn!(subject = %stored.subject, error = %e, "unreadable snapshot entry skipped; rebuilt from events"),
            }
        },
    )
    .await?;
    let mut watch = SystemWatch::new(config.watch);
    let mut restored_alerts = 0;
    read::for_each_last_per_subject(
        &js,
        subjects::ALERTS_STREAM,
        subjects::ALERTS_RAISE_ALL,
        |stored| {
            shared.beat.beat();
            let Ok(alert) = Alert::decode(&stored.payload) else {
                return;
            };
            if alert.state != AlertState::Firing || !alert.kind.is_stall() {
                return;
            }
            if alert.task.is_none() {
                watch.restore(alert);
                restored_alerts += 1;
            } else if det.restore_firing(&alert) {
                restored_alerts += 1;
            }
        },
    )
    .await?;

    // A new term, a new outbox: what the last one could not store is
    // re-derived from the events after the checkpoint.
    shared
        .health
        .set_condition(baton_service::outbox::HEALTH_CONDITION, None);
    let outbox = Outbox::new(js.clone())
        .reporting_to(shared.health.clone())
        .fenced(term.fences.clone());
    let checkpoint = Checkpoint::open(&js, subjects::DETECTOR_CONSUMER)
        .await
        .map_err(setup)?
        .writing_through(outbox.clone());
    let resume_after = checkpoint.load().await.map_err(setup)?;
    let spec = ConsumerSpec {
        stream: subjects::EVENTS_STREAM.into(),
        durable: subjects::DETECTOR_CONSUMER.into(),
        filter: subjects::EVENTS_ALL.into(),
        max_ack_pending: i64::try_from(config.max_batch * 4).unwrap_or(i64::MAX),
        ack_wait: Duration::from_secs(30),
        max_batch: config.max_batch,
    };
    let consumer = term.restart_consumer(&js, &spec, resume_after + 1).await?;
    tracing::info!(
        tasks = restored_tasks,
        alerts = restored_alerts,
        checkpoint = resume_after,
        term = term.term,
        "detector state restored"
    );
    let silences = js
        .get_key_value(subjects::SILENCES_BUCKET)
        .await
        .map_err(setup)?;
    let silence_watch = silences.watch_with_history(">").await.map_err(setup)?;
    let leaders = js
        .get_key_value(subjects::LEADERS_BUCKET)
        .await
        .map_err(setup)?;
    let orchestrator_watch = leaders
        .watch_with_history("orchestrator")
        .await
        .map_err(setup)?;
    let pending_at_start = consumer.cached_info().num_pending;
    shared.progress.set(resume_after, pending_at_start);
    let batches = Batches::new(&consumer, config.max_batch).await?;
    let service = Service {
        broker: shared.broker.clone(),
        outages,
        outages_seen,
        snapshot_writer: Arc::new(tokio::sync::Mutex::new(SoleWriter::for_term(
            format!("KV_{}", subjects::DETECTOR_BUCKET),
            &term.fences,
        ))),
        outbox,
        js,
        det,
        watch,
        leases,
        lease_events,
        config: config.clone(),
        checkpoint,
        metrics: shared.metrics.clone(),
        health: shared.health.clone(),
        progress: shared.progress.clone(),
        beat: shared.beat.clone(),
        batches,
        pending_at_start,
        spec,
        shutdown: term.ended.clone(),
    };
    Ok(Active {
        term,
        service,
        silence_watch,
        orchestrator_watch,
        restored_tasks,
        restored_alerts,
    })
}

/// The agent id the detector sends lease sweeps as.
pub const LEASE_SWEEPER: &str = "stall-detector";

/// In a mutex only to be `Sync` (the service is shared by reference across
/// awaits); the loop reaches it through `get_mut`, never locking.
type LeaseEvents = std::sync::Mutex<
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<read::Stored, read::ReadError>> + Send>>,
>;

/// Runs until shutdown.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), DetectorError> {
    start(config, shutdown).await?.wait().await
}

struct Service {
    js: jetstream::Context,
    outbox: Outbox,
    /// Only the active detector writes `baton-detector`: one
    /// acknowledgement per snapshot write, fenced by a chain.
    snapshot_writer: Arc<tokio::sync::Mutex<SoleWriter>>,
    det: Detector,
    watch: SystemWatch,
    /// The lease fold, fed by `lease_events` (all of `BATON_ARTIFACTS`).
    leases: baton_core::lease::LeaseWatch,
    lease_events: LeaseEvents,
    config: Config,
    checkpoint: Checkpoint,
    metrics: Metrics,
    health: Health,
    progress: Progress,
    /// Beaten every loop iteration: the lease is renewed only while fresh.
    beat: Beat,
    batches: Batches,
    /// Events after the checkpoint when the term began: with none, the
    /// detector is caught up at once and judges the restored deadlines
    /// without waiting for an event to arrive.
    pending_at_start: u64,
    spec: ConsumerSpec,
    shutdown: Shutdown,
    broker: broker::BrokerView,
    /// Wakes when the probe sees an outage; `outages_seen` of them are
    /// recorded in `det`.
    outages: tokio::sync::watch::Receiver<usize>,
    outages_seen: usize,
}

impl Service {
    /// `silence_watch` yields current silences first, then changes;
    /// `liveness_watch` the orchestrator's lease renewals likewise. Both
    /// are opened before `start` returns, so nothing is missed.
    async fn run(
        mut self,
        mut silence_watch: kv::Watch,
        mut liveness_watch: kv::Watch,
    ) -> Result<(), DetectorError> {
        let mut silences: HashMap<String, Silence> = HashMap::new();
        let (mut silences_ended, mut liveness_ended) = (false, false);
        let mut leases_ended = false;
        let mut in_flight: Option<tokio::task::JoinHandle<SnapshotWrite>> = None;
        // False once alerts or a snapshot could not be stored: the
        // checkpoint must then stay where it is, so that a restart re-reads
        // from there.
        let mut clean = true;
        let mut dirty: Vec<TaskId> = Vec::new();
        let mut folded_seq = self.progress.applied_seq();
        let mut unflushed_since: Option<tokio::time::Instant> = None;
        let mut pending = self.pending_at_start;
        let mut caught_up = pending == 0;
        let mut expected_consumer_seq: Option<u64> = None;
        let mut consumer_tick = tokio::time::interval(self.config.consumer_check_interval);
        consumer_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut system_tick = tokio::time::interval(Duration::from_secs(1));
        system_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle = self.config.max_lag.min(Duration::from_millis(500));
        loop {
            self.beat.beat();
            // Judge deadlines `grace` after they are due.
            // Deadlines are judged by the clock only when every stored event
            // is folded: by what the consumer says (`caught_up`) and by the
            // stream itself (a stalled delivery is an outage too, decision 9;
            // the events judge the deadlines when they arrive).
            let delivered_all = self.broker.stream_last_seq() <= folded_seq;
            let wake = self
                .det
                .poll_timeout()
                .filter(|_| caught_up && delivered_all)
                .map(|t| t.saturating_add(self.config.grace));
            let clock = self.config.clock.clone();
            let judge_until = self.broker.judge_until();
            let mut shutdown = self.shutdown.clone();
            let mut batch_shutdown = self.shutdown.clone();
            let mut alerts = Vec::new();
            tokio::select! {
                _ = shutdown.wait() => break,
                batch = self.batches.next(idle, &mut batch_shutdown) => {
                    let Some(batch) = batch else { break };
                    let mut last = None;
                    let mut gap = false;
                    for msg in &batch {
                        let Some(d) = consumer::delivery_of(msg) else { continue };
                        if let Some(expected) = expected_consumer_seq
                            && d.consumer_seq != expected
                        {
                            tracing::warn!(expected, got = d.consumer_seq, "gap in deliveries; re-reading after the last folded event");
                            gap = true;
                            break;
                        }
                        expected_consumer_seq = Some(d.consumer_seq + 1);
                        // The orchestrator dead-letters what cannot be
                        // decoded; here it is simply not an expectation.
                        if let Ok(event) = read_event(msg.subject.as_str(), &msg.payload) {
                            // Deadlines that passed before this event was
                            // stored fire first, even when it is processed late.
                            // (Never past what the broker was seen serving:
                            // an outage not yet recorded must not count.)
                            alerts.extend(self.det.handle_timeout(d.meta.stored_at.saturating_sub(Duration::from_nanos(1)).min(self.broker.judge_until())));
                            alerts.extend(self.det.handle_event(&event, d.meta));
                            dirty.push(event.task.clone());
                            self.metrics.events.inc();
                        }
                        folded_seq = d.meta.seq;
                        pending = d.pending;
                        last = Some(msg);
                    }
                    if last.is_some() {
                        unflushed_since.get_or_insert_with(tokio::time::Instant::now);
                        caught_up = pending == 0;
                    }
                    if caught_up {
                        alerts.extend(self.det.handle_timeout(self.now()));
                    }
                    if !self.publish(&alerts).await {
                        clean = false;
                        break;
                    }
                    alerts.clear();
                    if let Some(msg) = last
                        && let Err(e) = msg.ack().await
                    {
                        tracing::warn!(error = %e, "ack failed; the events will be redelivered");
                    }
                    self.metrics.consumer_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
                    self.progress.set(self.progress.applied_seq(), pending);
                    if gap {
                        if let Some(f) = in_flight.take()
                            && !self.snapshot_done(f).await
                        {
                            clean = false;
                            break;
                        }
                        let f = self.start_snapshot(&mut dirty, folded_seq);
                        if !self.snapshot_done(f).await {
                            clean = false;
                            break;
                        }
                        unflushed_since = None;
                        let consumer = consumer::restart_from(&self.js, &self.spec, folded_seq + 1).await?;
                        self.batches = Batches::new(&consumer, self.config.max_batch).await?;
                        expected_consumer_seq = None;
                    }
                }
                _ = async {
                    match wake {
                        // Due past what the broker was last seen serving:
                        // wait for the probe's next answer, never spin.
                        Some(at) if at.saturating_sub(self.config.grace) > judge_until => {
                            tokio::time::sleep(broker::PROBE_EVERY).await
                        }
                        Some(at) => clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    alerts.extend(self.det.handle_timeout(self.now()));
                }
                entry = silence_watch.next(), if !silences_ended => {
                    let entry = match entry {
                        Some(Ok(entry)) => entry,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "silence watch error");
                            continue;
                        }
                        None => {
                            // Silences set from now on would not be seen.
                            silences_ended = true;
                            self.health.set_condition("silences", Some("the watch of KV baton-silences ended; restart the detector".into()));
                            continue;
                        }
                    };
                    {
                        match entry.operation {
                            kv::Operation::Put => match pb::Silence::decode(entry.value.clone()).map_err(|e| e.to_string()).and_then(|s| Silence::try_from(s).map_err(|e| e.to_string())) {
                                Ok(s) => { silences.insert(entry.key.clone(), s); }
                                Err(e) => {
                                    // Refused (e.g. no matcher: it would mute
                                    // everything): it mutes nothing, and
                                    // replaces whatever the key held.
                                    tracing::warn!(key = %entry.key, error = %e, "silence refused; it mutes nothing");
                                    silences.remove(&entry.key);
                                }
                            },
                            _ => { silences.remove(&entry.key); }
                        }
                        let now = self.now();
                        self.det.set_silences(silences.values().cloned().collect(), now);
                        alerts.extend(self.det.handle_timeout(now));
                    }
                }
                next = self.lease_events.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).next(), if !leases_ended => {
                    match next {
                        Some(Ok(stored)) => {
                            // The one read path: a forged or malformed lease
                            // event is no part of any reader's history.
                            if let Ok(event) = read_lease_event(&stored.subject, &stored.payload) {
                                let meta = LeaseMeta { seq: stored.seq, stored_at: stored.stored_at };
                                alerts.extend(self.leases.handle_event(&event, meta, self.config.clock.now()));
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "reading the leases stream"),
                        None => {
                            leases_ended = true;
                            self.health.set_condition("leases", Some("the follower of BATON_ARTIFACTS ended; restart the detector".into()));
                        }
                    }
                }
                entry = liveness_watch.next(), if !liveness_ended => {
                    if entry.is_none() {
                        // The orchestrator's liveness would no longer be seen.
                        liveness_ended = true;
                        self.health.set_condition("liveness", Some("the watch of KV baton-leaders ended; restart the detector".into()));
                        continue;
                    }
                    if let Some(Ok(entry)) = entry
                        && let Some(r) = leader::renewal(&entry, self.config.clock.now())
                    {
                        alerts.extend(self.watch.orchestrator_seen(&r.instance, r.ttl, r.at));
                    }
                }
                Ok(()) = self.outages.changed() => {
                    // Decision 9: the outage does not count against agents.
                    let (windows, seen) = self.broker.outages_since(self.outages_seen);
                    self.outages_seen = seen;
                    for &(from, until) in &windows {
                        self.det.record_outage(from, until);
                        self.leases.record_outage(from, until);
                        self.metrics.outages.inc();
                    }
                    if let Some(&(_, until)) = windows.last() {
                        self.broker.recorded(until);
                    }
                }
                _ = system_tick.tick() => {
                    let now = self.config.clock.now();
                    alerts.extend(self.watch.check_orchestrator(now));
                    self.update_gauges();
                    self.sweep_leases();
                    alerts.extend(self.leases.due_reports(now));
                }
                _ = consumer_tick.tick() => {
                    let now = self.config.clock.now();
                    for name in [subjects::ORCHESTRATOR_CONSUMER, subjects::DETECTOR_CONSUMER] {
                        if let Some(o) = self.observe_consumer(name).await {
                            alerts.extend(self.watch.check_consumer(name, o, now));
                        }
                    }
                }
            }
            let now = self.config.clock.now();
            alerts.retain(|a| a.task.is_some() || !silences.values().any(|s| s.mutes(a, now)));
            if !self.publish(&alerts).await {
                clean = false;
                break;
            }
            // Snapshot: at once when live and idle; every max_lag live;
            // every catch_up_lag while replaying a backlog.
            let lag = if pending > self.config.max_batch as u64 {
                self.config.catch_up_lag
            } else {
                self.config.max_lag
            };
            if in_flight.as_ref().is_some_and(|f| f.is_finished())
                && let Some(f) = in_flight.take()
                && !self.snapshot_done(f).await
            {
                clean = false;
                break;
            }
            let behind = !dirty.is_empty() || folded_seq > self.progress.applied_seq();
            // One snapshot write in flight at a time; folding goes on meanwhile.
            if behind
                && in_flight.is_none()
                && (pending == 0 || unflushed_since.is_some_and(|s| s.elapsed() >= lag))
            {
                in_flight = Some(self.start_snapshot(&mut dirty, folded_seq));
                unflushed_since = None;
            }
        }
        if let Some(f) = in_flight.take() {
            clean &= self.snapshot_done(f).await;
        }
        if !clean {
            tracing::warn!(
                "stopping with alerts or snapshot writes not stored; the next start re-reads the events since the last checkpoint"
            );
        } else if !dirty.is_empty() || folded_seq > self.progress.applied_seq() {
            let f = self.start_snapshot(&mut dirty, folded_seq);
            self.snapshot_done(f).await;
        }
        if !self.shutdown.is_triggered() {
            // Not asked to stop: exit with an error so that a supervisor
            // restarts the service (it resumes from the last checkpoint).
            return Err(DetectorError::Setup(if clean {
                "stopped: the consumer's message stream ended".into()
            } else {
                "stopped: effects or state could not be stored (see the log)".into()
            }));
        }
        tracing::info!("stall detector stopped");
        Ok(())
    }

    /// Gauges that cost a pass over the tracked tasks: once a second.
    fn update_gauges(&self) {
        let stats = self.det.stats();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.tracked_tasks.set(gauge(self.det.len() as u64));
        self.metrics
            .firing
            .set(gauge(self.det.firing_count() as u64));
        self.metrics.silenced.set(gauge(stats.silenced));
        self.metrics.inhibited.set(gauge(stats.inhibited));
    }

    /// Evaluation time: the clock minus the grace (only used once caught
    /// up), and never past what the broker was last seen serving
    /// (decision 9, [`broker`]).
    fn now(&self) -> Time {
        self.config
            .clock
            .now()
            .saturating_sub(self.config.grace)
            .min(self.broker.judge_until())
    }

    async fn observe_consumer(&self, name: &str) -> Option<ConsumerObservation> {
        let stream = self
            .js
            .get_stream_no_info(subjects::EVENTS_STREAM)
            .await
            .ok()?;
        let info = stream.consumer_info(name).await.ok()?;
        Some(ConsumerObservation {
            num_pending: info.num_pending,
            num_ack_pending: u64::try_from(info.num_ack_pending).unwrap_or(0),
            max_ack_pending: info.config.max_ack_pending,
            delivered_seq: info.delivered.stream_sequence,
            ack_floor: info.ack_floor.stream_sequence,
        })
    }

    /// Sends a sweep for every lease past its expiry, in the background:
    /// the broker's time of the sweep decides (a sweep drops no live hold),
    /// and its deterministic id makes a repeat, or another instance's
    /// sweep, a duplicate. A sweep that was not stored is asked for again.
    fn sweep_leases(&mut self) {
        for sweep in self.leases.due_sweeps(self.now()) {
            let js = self.js.clone();
            tokio::spawn(async move {
                let subject = subjects::lease(&sweep.artifact, &sweep.agent);
                let sent = baton_jetstream::publish_durable(
                    &js,
                    &subject,
                    sweep.encode().into(),
                    &sweep.event_id,
                    None,
                    baton_jetstream::Retry::default(),
                )
                .await;
                if let Err(e) = sent {
                    tracing::warn!(artifact = %sweep.artifact, error = %e, "lease sweep not stored; asking again");
                }
            });
        }
    }

    /// Publishes alerts and waits until stored; false on shutdown.
    async fn publish(&self, alerts: &[Alert]) -> bool {
        if alerts.is_empty() {
            return true;
        }
        let out: Vec<Outgoing> = alerts
            .iter()
            .map(|a| Outgoing::new(a.raise_subject(), a.encode_to_vec()).with_msg_id(a.msg_id()))
            .collect();
        match self.outbox.deliver(&out, &self.shutdown).await {
            Ok(_) => {
                let now = self.config.clock.now();
                for a in alerts {
                    self.metrics
                        .alerts
                        .get_or_create(&AlertLabel {
                            kind: a.kind.as_str().to_string(),
                            state: a.state.as_str().to_string(),
                        })
                        .inc();
                    if let (AlertState::Firing, 0, Some(due)) = (a.state, a.notification, a.due_at)
                    {
                        self.metrics
                            .alert_latency
                            .observe(now.since(due).as_secs_f64());
                    }
                    tracing::info!(alert = %a.id, kind = %a.kind, state = a.state.as_str(), "{}", a.summary);
                }
                self.health.set_problem(None);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "stopping with alerts not stored; they are derived again after restart");
                false
            }
        }
    }

    /// Encodes the state of every task touched since the last snapshot (a
    /// delete marker if the task ended) and, in the background, writes it
    /// and then moves the checkpoint to `upto`. Returns `upto` when stored.
    fn start_snapshot(
        &self,
        dirty: &mut Vec<TaskId>,
        upto: u64,
    ) -> tokio::task::JoinHandle<SnapshotWrite> {
        dirty.sort();
        dirty.dedup();
        let prefix = format!("$KV.{}.", subjects::DETECTOR_BUCKET);
        let writes: Vec<Outgoing> = dirty
            .drain(..)
            .map(|id| match self.det.task(&id) {
                Some(task) => Outgoing::new(format!("{prefix}{id}"), task.encode_to_vec()),
                None if self.det.has_ended(&id) => {
                    Outgoing::new(format!("{prefix}{id}"), ENDED_SNAPSHOT.to_vec())
                }
                None => {
                    let mut h = HeaderMap::new();
                    h.insert("KV-Operation", "DEL");
                    Outgoing::new(format!("{prefix}{id}"), Vec::new()).with_headers(h)
                }
            })
            .collect();
        let outbox = self.outbox.clone();
        let writer = self.snapshot_writer.clone();
        let shutdown = self.shutdown.clone();
        let checkpoint = self.checkpoint.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let delivered = writer
                .lock()
                .await
                .deliver(&outbox, &writes, &shutdown)
                .await;
            match delivered {
                Ok(_) => {
                    metrics.snapshot_writes.inc_by(writes.len() as u64);
                    if let Err(e) = checkpoint.store(upto).await {
                        // The next snapshot moves it; a restart re-reads a
                        // little more.
                        tracing::warn!(error = %e, "could not store the checkpoint");
                        return SnapshotWrite::Stored { checkpoint: None };
                    }
                    SnapshotWrite::Stored {
                        checkpoint: Some(upto),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot not stored; it is rebuilt from events after restart");
                    SnapshotWrite::NotStored
                }
            }
        })
    }

    /// Waits for a snapshot write and records its checkpoint; false if the
    /// snapshot was not stored.
    async fn snapshot_done(&self, flush: tokio::task::JoinHandle<SnapshotWrite>) -> bool {
        match flush.await {
            Ok(SnapshotWrite::Stored { checkpoint }) => {
                if let Some(upto) = checkpoint {
                    self.progress.set(upto, self.progress.pending());
                    self.metrics
                        .applied_seq
                        .set(i64::try_from(upto).unwrap_or(i64::MAX));
                }
                true
            }
            Ok(SnapshotWrite::NotStored) => false,
            Err(e) => {
                tracing::error!(error = %e, "snapshot write failed");
                false
            }
        }
    }
}

/// What became of a snapshot write.
#[derive(Debug, Clone, Copy)]
enum SnapshotWrite {
    /// Every task state stored; the checkpoint moved to `checkpoint`
    /// (`None` if storing it failed).
    Stored { checkpoint: Option<u64> },
    /// Not stored (stopped while retrying): the checkpoint did not move.
    NotStored,
}
