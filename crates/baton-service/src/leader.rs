//! Leadership for a service with standbys (decision 8), written once for
//! both services.
//!
//! [`spawn`] runs the campaign: a standby looks at the lease every quarter
//! of its ttl and takes it when it is free, released or expired; it then
//! raises the term's fences ([`baton_jetstream::leadership`]) and hands the
//! service a [`Term`]. While active it renews the lease — but only while
//! the service's loop keeps beating ([`Beat`]): an instance that is alive
//! but stuck stops renewing, so a standby takes over, and its fences make
//! the broker refuse whatever the stuck one still tries to write.
//!
//! A term ends when the lease is lost (a renewal refused), when the service
//! reports a fenced write refused ([`Leadership::step_down`]), or on
//! shutdown; the service then stops its loop and, unless shutting down,
//! waits for its next term as a standby. On a graceful stop the service
//! flushes first and then [`Leadership::release`]s the lease, so a standby
//! takes over at its next look with nothing left to redo.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use baton_jetstream::leadership::{
    Campaign, FenceTarget, Fences, LeadershipError, Lease, Renewal, raise_fences, term_record,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    liveness::{Progress, wall_now},
    outbox::Outbox,
    shutdown::{self, Shutdown},
};

/// How a service campaigns.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The lease key: "orchestrator", "stall-detector".
    pub service: String,
    pub instance: String,
    /// A standby takes over after the active instance has not renewed for
    /// this long (crashed, stuck, or cut off).
    pub ttl: Duration,
    /// The streams the service writes to, each fenced per term.
    pub targets: Vec<FenceTarget>,
}

/// The service loop's heartbeat: the loop beats every iteration, and the
/// lease is renewed only while the last beat is recent.
#[derive(Debug, Clone)]
pub struct Beat {
    anchor: tokio::time::Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Beat {
    fn default() -> Self {
        Beat {
            anchor: tokio::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Beat {
    /// The loop is alive and making progress.
    pub fn beat(&self) {
        let ms = u64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the last beat is at most `within` old.
    pub fn fresh(&self, within: Duration) -> bool {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.anchor.elapsed().saturating_sub(last) <= within
    }
}

/// One term of leadership, as the service sees it.
#[derive(Debug, Clone)]
pub struct Term {
    pub term: u64,
    /// Every write of the term carries these (give them to the outbox).
    pub fences: Arc<Fences>,
    /// Fires when the term is over: deposed, or the service shuts down.
    pub ended: Shutdown,
}

impl Term {
    /// Whether this term is still the latest: its first fence is still the
    /// last one in its stream (every term raises its fences in the same
    /// order, so a later term shows there first). Asked right before acts
    /// the broker cannot fence, such as re-creating the service's durable
    /// consumer, which would cut off the active instance's reads.
    pub async fn still_current(
        &self,
        js: &jetstream::Context,
    ) -> Result<bool, baton_jetstream::leadership::FenceError> {
        match self.fences.iter().next() {
            Some(first) => baton_jetstream::leadership::still_fenced(js, first).await,
            None => Ok(true),
        }
    }

    /// Re-creates the service's durable consumer to deliver from stream
    /// sequence `from`, for this term's set-up: only if the term is still
    /// current, so that a deposed instance whose set-up was slow cannot
    /// cut off the active one's reads (the broker fences writes, not this).
    pub async fn restart_consumer(
        &self,
        js: &jetstream::Context,
        spec: &crate::consumer::ConsumerSpec,
        from: u64,
    ) -> Result<async_nats::jetstream::consumer::PullConsumer, crate::consumer::ConsumerError> {
        let refused = |message: String| crate::consumer::ConsumerError {
            stream: spec.stream.clone(),
            durable: spec.durable.clone(),
            message,
        };
        if !self
            .still_current(js)
            .await
            .map_err(|e| refused(e.to_string()))?
        {
            return Err(refused(format!(
                "term {} was superseded while it was set up",
                self.term
            )));
        }
        crate::consumer::restart_from(js, spec, from).await
    }
}

/// Leadership metrics (shared by every service; label `service`).
#[derive(Debug, Clone, Default)]
pub struct LeaderMetrics {
    /// 1 while this instance is the active one, 0 on standby.
    pub active: Family<ServiceLabel, Gauge>,
    /// The term held (0 on standby).
    pub term: Family<ServiceLabel, Gauge>,
    /// Terms this instance began.
    pub takeovers: Family<ServiceLabel, Counter>,
    /// Terms that ended because another instance took over.
    pub deposed: Family<ServiceLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

impl LeaderMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "baton_service_active",
            "1 while this instance is the service's active instance (holds the leadership lease), 0 on standby",
            self.active.clone(),
        );
        registry.register(
            "baton_service_term",
            "The leadership term this instance holds (0 on standby)",
            self.term.clone(),
        );
        registry.register(
            "baton_service_takeovers",
            "Leadership terms this instance began",
            self.takeovers.clone(),
        );
        registry.register(
            "baton_service_deposed",
            "Leadership terms of this instance that ended because another instance took over",
            self.deposed.clone(),
        );
    }
}

enum Command {
    StepDown(u64, StepDown),
    Release(oneshot::Sender<()>),
}

/// Why a term is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDown {
    /// A write was refused by a later term's fence.
    Deposed,
    /// The term's work could not be set up, or failed: the instance stands
    /// by and campaigns again (it retakes its own lease at once if no one
    /// else took it, and starts over from the checkpoint).
    Failed,
}

/// The service's handle on its leadership.
#[derive(Debug)]
pub struct Leadership {
    service: String,
    commands: mpsc::UnboundedSender<Command>,
    terms: mpsc::UnboundedReceiver<Term>,
    role: watch::Receiver<u64>,
    first_look: Option<oneshot::Receiver<bool>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::StepDown(t, why) => write!(f, "StepDown({t}, {why:?})"),
            Command::Release(_) => write!(f, "Release"),
        }
    }
}

impl Leadership {
    /// Waits for the first look at the lease: true if this instance took
    /// it (its term is then the next one), false if it stands by.
    pub async fn first_look(&mut self) -> bool {
        match self.first_look.take() {
            Some(rx) => rx.await.unwrap_or(false),
            None => false,
        }
    }

    /// The next term, once this instance wins one; `None` on shutdown.
    pub async fn next_term(&mut self, shutdown: &Shutdown) -> Option<Term> {
        let mut shutdown = shutdown.clone();
        tokio::select! {
            biased;
            _ = shutdown.wait() => None,
            term = self.terms.recv() => term,
        }
    }

    /// The term held (0 = standby), as it changes.
    pub fn role(&self) -> watch::Receiver<u64> {
        self.role.clone()
    }

    /// The term is over: deposed (a write was refused by a later term's
    /// fence), or its work failed.
    pub fn step_down(&self, term: u64, why: StepDown) {
        let _ = self.commands.send(Command::StepDown(term, why));
    }

    /// Gives the lease up (after the service's last flush) and stops
    /// campaigning; waits until done (bounded by the lease's own timeouts).
    pub async fn release(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Release(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A term's work, set up by its service and ready to run: the service's
/// fold and effects, and all a term runner needs to know of them.
pub trait TermWork: Send + Sized {
    type Error: std::fmt::Display + Send;
    /// The term it works in.
    fn term(&self) -> &Term;
    /// The outbox its writes go through (a fenced refusal shows there).
    fn outbox(&self) -> &Outbox;
    /// Runs until the term ends (deposed, or shutdown) or the work fails.
    fn run(self) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// A renewal of a service's lease, as a watcher of that service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    pub instance: String,
    /// The holder's ttl: how often it should be seen, at worst.
    pub ttl: Duration,
    /// The broker's time of the renewal (at most `now`).
    pub at: baton_core::Time,
}

/// Reads an entry of a lease key's watch: a renewal by an instance, or
/// `None` for a release, a deletion, or an unreadable value.
pub fn renewal(entry: &async_nats::jetstream::kv::Entry, now: baton_core::Time) -> Option<Renewed> {
    use baton_proto::{prost::Message as _, v1 as pb};
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return None;
    }
    let lease = pb::Leadership::decode(entry.value.clone()).ok()?;
    if lease.instance.is_empty() {
        return None;
    }
    Some(Renewed {
        instance: lease.instance,
        ttl: Duration::from_millis(lease.ttl_ms.max(1)),
        // Broker time of the renewal, like every deadline.
        at: baton_jetstream::read::time_of(entry.created).min(now),
    })
}

/// The first look at the lease: if this instance took it, its first term,
/// set up by `activate`; `None` if it stands by (or shuts down first).
pub async fn first_term<W, F, Fut>(
    leadership: &mut Leadership,
    shutdown: &Shutdown,
    activate: F,
) -> Result<Option<W>, W::Error>
where
    W: TermWork,
    F: FnOnce(Term) -> Fut,
    Fut: std::future::Future<Output = Result<W, W::Error>>,
{
    if !leadership.first_look().await {
        tracing::info!(service = %leadership.service, "standing by: another instance is active");
        return Ok(None);
    }
    match leadership.next_term(shutdown).await {
        Some(term) => activate(term).await.map(Some),
        None => Ok(None),
    }
}

/// Runs terms for as long as the process lives: `next` first (if any),
/// then each term this instance wins, set up by `activate`. A term that
/// cannot be set up, that fails, or whose instance was deposed (then
/// `on_deposed` runs) is stood down from, and the instance waits for the
/// next; only shutdown ends the loop. The lease is released last, after the work's
/// final flush, so a standby takes over at once.
pub async fn run_terms<W, F, Fut>(
    mut leadership: Leadership,
    progress: &Progress,
    shutdown: &Shutdown,
    mut next: Option<W>,
    mut activate: F,
    mut on_deposed: impl FnMut(),
) -> Result<(), W::Error>
where
    W: TermWork,
    F: FnMut(Term) -> Fut,
    Fut: std::future::Future<Output = Result<W, W::Error>>,
{
    let result = loop {
        let work = match next.take() {
            Some(work) => work,
            None => {
                let Some(term) = leadership.next_term(shutdown).await else {
                    break Ok(());
                };
                let number = term.term;
                match activate(term).await {
                    Ok(work) => work,
                    Err(e) => {
                        tracing::warn!(error = %e, term = number, "could not start the term; standing by");
                        leadership.step_down(number, StepDown::Failed);
                        continue;
                    }
                }
            }
        };
        let term = work.term().clone();
        let outbox = work.outbox().clone();
        progress.set_term(term.term);
        let ran = work.run().await;
        progress.set_term(0);
        if shutdown.is_triggered() {
            break ran;
        }
        if term.ended.is_triggered() || outbox.was_deposed() {
            // Another instance took over: stand by for the next term.
            leadership.step_down(term.term, StepDown::Deposed);
            on_deposed();
            continue;
        }
        // The work failed (its consumer was deleted, say): the process
        // stays, stands by and starts over from the checkpoint in its next
        // term, as a restart by a supervisor would.
        if let Err(e) = &ran {
            tracing::error!(error = %e, term = term.term, "the term's work failed; standing by");
        }
        leadership.step_down(term.term, StepDown::Failed);
    };
    leadership.release().await;
    result
}

/// Starts campaigning for `config.service`'s lease.
pub async fn spawn(
    js: jetstream::Context,
    config: LeaderConfig,
    beat: Beat,
    metrics: LeaderMetrics,
    shutdown: Shutdown,
) -> Result<Leadership, LeadershipError> {
    let lease = Lease::open(&js, &config.service, &config.instance, config.ttl).await?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (term_tx, terms) = mpsc::unbounded_channel();
    let (role_tx, role) = watch::channel(0);
    let (first_tx, first_look) = oneshot::channel();
    let service = config.service.clone();
    let campaign = Campaigner {
        first_look: Some(first_tx),
        js,
        lease,
        config,
        beat,
        metrics,
        shutdown,
        term_tx,
        role_tx,
        active: None,
    };
    tokio::spawn(campaign.run(command_rx));
    Ok(Leadership {
        service,
        commands,
        terms,
        role,
        first_look: Some(first_look),
    })
}

struct Campaigner {
    js: jetstream::Context,
    lease: Lease,
    config: LeaderConfig,
    beat: Beat,
    metrics: LeaderMetrics,
    shutdown: Shutdown,
    term_tx: mpsc::UnboundedSender<Term>,
    role_tx: watch::Sender<u64>,
    /// The term held and the trigger that ends it.
    active: Option<(u64, Arc<shutdown::Trigger>)>,
    /// Told the outcome of the first look.
    first_look: Option<oneshot::Sender<bool>>,
}

impl Campaigner {
    fn label(&self) -> ServiceLabel {
        ServiceLabel {
            service: self.config.service.clone(),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        // Every series exists from the start: a standby shows 0, not nothing.
        let label = self.label();
        self.metrics.active.get_or_create(&label).set(0);
        self.metrics.term.get_or_create(&label).set(0);
        let _ = self.metrics.takeovers.get_or_create(&label);
        let _ = self.metrics.deposed.get_or_create(&label);
        let tick = (self.config.ttl / 4).max(Duration::from_millis(50));
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    command = commands.recv() => match command {
                        Some(Command::StepDown(term, why)) => {
                            if self.active.as_ref().is_some_and(|(t, _)| *t == term) {
                                match why {
                                    StepDown::Deposed => tracing::warn!(service = %self.config.service, term, "deposed: a write was refused by a later term's fence"),
                                    StepDown::Failed => tracing::warn!(service = %self.config.service, term, "the term failed; campaigning again"),
                                }
                                self.lease.abandon();
                                self.end_term(why == StepDown::Deposed);
                            }
                            continue;
                        }
                        Some(Command::Release(done)) => {
                            self.end_term(false);
                            if let Err(e) = self.lease.release().await {
                                tracing::warn!(error = %e, "could not release the leadership lease; a standby takes over after its ttl");
                            }
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                    },
                    _ = tokio::time::sleep(tick) => {}
                }
            }
            first = false;
            match self.active.as_ref().map(|(t, _)| *t) {
                None => {
                    // A standby stops campaigning at shutdown.
                    if self.shutdown.is_triggered() {
                        continue;
                    }
                    self.campaign().await;
                    if let Some(tx) = self.first_look.take() {
                        let _ = tx.send(self.active.is_some());
                    }
                }
                Some(term) => self.renew(term).await,
            }
        }
    }

    async fn campaign(&mut self) {
        match self.lease.campaign(wall_now()).await {
            Ok(Campaign::Won { term }) => {
                let record = term_record(
                    &self.config.service,
                    &self.config.instance,
                    term,
                    wall_now(),
                );
                match raise_fences(&self.js, &record, &self.config.targets).await {
                    Ok(fences) => self.begin_term(term, fences),
                    Err(e) => {
                        tracing::warn!(service = %self.config.service, term, error = %e, "won the lease but could not fence; giving it up");
                        if let Err(e) = self.lease.release().await {
                            tracing::debug!(error = %e, "release after a failed fence");
                        }
                    }
                }
            }
            Ok(Campaign::Held { holder, term }) => {
                tracing::trace!(service = %self.config.service, holder, term, "standing by");
            }
            Err(e) => tracing::debug!(error = %e, "cannot look at the leadership lease"),
        }
    }

    fn begin_term(&mut self, term: u64, fences: Fences) {
        let (trigger, ended) = shutdown::channel();
        let trigger = Arc::new(trigger);
        // The term also ends when the service shuts down.
        let mut global = self.shutdown.clone();
        let mut over = ended.clone();
        let ends = trigger.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = global.wait() => ends.trigger(),
                _ = over.wait() => {}
            }
        });
        // The term's set-up (loading the snapshot) counts as progress from
        // here; the service beats while it loads and then every iteration.
        self.beat.beat();
        tracing::info!(service = %self.config.service, instance = %self.config.instance, term, "active: leadership taken and fenced");
        self.metrics.active.get_or_create(&self.label()).set(1);
        self.metrics
            .term
            .get_or_create(&self.label())
            .set(i64::try_from(term).unwrap_or(i64::MAX));
        self.metrics.takeovers.get_or_create(&self.label()).inc();
        self.active = Some((term, trigger));
        let _ = self.role_tx.send(term);
        let _ = self.term_tx.send(Term {
            term,
            fences: Arc::new(fences),
            ended,
        });
    }

    /// Ends the active term (if any); `deposed` counts it as taken over.
    fn end_term(&mut self, deposed: bool) {
        if let Some((term, trigger)) = self.active.take() {
            trigger.trigger();
            self.metrics.active.get_or_create(&self.label()).set(0);
            self.metrics.term.get_or_create(&self.label()).set(0);
            if deposed {
                self.metrics.deposed.get_or_create(&self.label()).inc();
            }
            let _ = self.role_tx.send(0);
            tracing::info!(service = %self.config.service, term, deposed, "term ended; standing by");
        }
    }

    async fn renew(&mut self, term: u64) {
        // Stuck (the loop has not beaten for a ttl): let the lease lapse so
        // that a standby takes over.
        if !self.beat.fresh(self.config.ttl) {
            tracing::warn!(service = %self.config.service, term, "the service loop is not making progress; not renewing the leadership lease");
            return;
        }
        match self.lease.renew(wall_now()).await {
            Ok(Renewal::Renewed) => {}
            Ok(Renewal::Lost { holder, term: now }) => {
                tracing::warn!(service = %self.config.service, term, holder, holder_term = now, "deposed: the leadership lease was taken over");
                self.end_term(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the leadership lease; retrying (a write after a takeover is refused by its fence)");
            }
        }
    }
}
