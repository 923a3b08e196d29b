//! The router's executor: the loops that read `BATON_ALERTS` and KV
//! `baton-services`, feed the pure parts ([`crate::alertmanager::Book`],
//! [`crate::webhook::judge`], [`crate::watchdog::judge`]) and carry out
//! their decisions over HTTP. The service machinery (durable consumers,
//! `/metrics` and `/healthz`, liveness, shutdown) is `baton_service`'s.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use baton_core::{Alert, Time, subjects};
use baton_jetstream::read;
use baton_proto::{prost::Message, v1 as pb};
use baton_service::{
    consumer::{self, Batches, ConsumerSpec},
    http::{self, Health},
    liveness::{self, Progress, wall_now},
    shutdown::Shutdown,
};
use futures::{FutureExt, StreamExt};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use crate::{
    Config, NotifyError, SERVICE,
    alertmanager::{Batch, Book},
    client::{self, Client, Reply},
    config::{AlertmanagerTarget, Format, Routes, Start, WebhookTarget},
    metrics::{Metrics, OutcomeLabel, TargetLabel},
    watchdog, webhook,
};

fn setup(e: impl std::fmt::Display) -> NotifyError {
    NotifyError::Setup(e.to_string())
}

/// Most alerts in one request to Alertmanager.
const AM_CHUNK: usize = 500;

/// A started router.
#[derive(Debug)]
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    pub metrics: Metrics,
    tasks: tokio::task::JoinSet<Result<(), NotifyError>>,
}

impl Running {
    /// Waits until every loop has stopped (on shutdown), or until one
    /// fails: then its error, so that a supervisor restarts the router.
    pub async fn wait(mut self) -> Result<(), NotifyError> {
        while let Some(done) = self.tasks.join_next().await {
            let result = match done {
                Ok(r) => r,
                Err(e) => Err(setup(format!("router task failed: {e}"))),
            };
            if let Err(e) = result {
                self.tasks.abort_all();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Starts the router; returns once every consumer is in place.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, NotifyError> {
    let client = config.nats.connect().await?;
    let js = jetstream::new(client);
    baton_jetstream::ensure(&js, &config.topology).await?;
    let metrics = Metrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
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
    let routes = Arc::new(config.routes.clone());
    let http_client = Client::new(routes.tls_ca.as_deref()).map_err(setup)?;
    let mut tasks = tokio::task::JoinSet::new();
    let progress = Progress::default();

    if !routes.alertmanagers.is_empty() {
        let shared = Arc::new(Shared {
            book: Mutex::new(Book::new(
                routes.alertmanagers.len(),
                routes.resend_interval,
                routes.report_ttl,
            )),
            wake: routes.alertmanagers.iter().map(|_| Notify::new()).collect(),
        });
        let follower = Follower::start(
            &js,
            shared.clone(),
            routes.clone(),
            metrics.clone(),
            health.clone(),
            progress.clone(),
        )
        .await?;
        tasks.spawn(follower.run(shutdown.clone()));
        for (i, target) in routes.alertmanagers.iter().enumerate() {
            metrics.add_target(&TargetLabel {
                kind: "alertmanager",
                target: target.name.clone(),
            });
            let pusher = Pusher {
                client: http_client.clone(),
                index: i,
                target: target.clone(),
                shared: shared.clone(),
                routes: routes.clone(),
                metrics: metrics.clone(),
            };
            tasks.spawn(pusher.run(shutdown.clone()));
        }
        if routes.watchdog.enabled {
            tasks.spawn(run_watchdog(
                js.clone(),
                shared,
                routes.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }
    } else if routes.watchdog.enabled {
        tracing::warn!("no Alertmanager configured: the watchdog has nowhere to go");
    }

    for target in &routes.webhooks {
        let worker = WebhookWorker::start(
            &js,
            http_client.clone(),
            target.clone(),
            routes.clone(),
            metrics.clone(),
            config.max_batch,
        )
        .await?;
        tasks.spawn(worker.run(shutdown.clone()));
    }
    if routes.alertmanagers.is_empty() && routes.webhooks.is_empty() {
        tracing::warn!("no Alertmanager and no webhook configured: nothing will be delivered");
    }

    let services = js
        .get_key_value(subjects::SERVICES_BUCKET)
        .await
        .map_err(setup)?;
    liveness::spawn(
        services,
        SERVICE,
        &config.instance,
        http_addr.map(|a| a.to_string()),
        config.liveness_interval,
        progress,
        shutdown,
    );
    Ok(Running {
        http_addr,
        metrics,
        tasks,
    })
}

/// What the Alertmanager loops share: the book, and a wake-up per target.
#[derive(Debug)]
struct Shared {
    book: Mutex<Book>,
    wake: Vec<Notify>,
}

impl Shared {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake_all(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }
}

/// Reads `BATON_ALERTS` into the book: first the latest alert of every
/// subject, then everything stored after the stream's last sequence at
/// that moment, live.
struct Follower {
    js: jetstream::Context,
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    metrics: Metrics,
    health: Health,
    progress: Progress,
    next_seq: u64,
}

impl Follower {
    async fn start(
        js: &jetstream::Context,
        shared: Arc<Shared>,
        routes: Arc<Routes>,
        metrics: Metrics,
        health: Health,
        progress: Progress,
    ) -> Result<Follower, NotifyError> {
        let mut stream = js
            .get_stream(subjects::ALERTS_STREAM)
            .await
            .map_err(setup)?;
        // Taken before the scan: what is stored during it is read again
        // live, and applying an alert twice changes nothing.
        let last = stream.info().await.map_err(setup)?.state.last_sequence;
        let now = wall_now();
        let mut taken = 0usize;
        {
            let mut scanned = Vec::new();
            read::for_each_last_per_subject(
                js,
                subjects::ALERTS_STREAM,
                subjects::ALERTS_RAISE_ALL,
                |stored| scanned.push(stored),
            )
            .await?;
            let mut book = shared.book();
            for stored in scanned {
                match Alert::decode(&stored.payload) {
                    Ok(alert) => {
                        let link = console_link(&routes, &alert);
                        if book.apply(&alert, link.as_deref(), now) {
                            taken += 1;
                        }
                    }
                    Err(_) => {
                        metrics.undecodable.inc();
                    }
                }
            }
            metrics.alertmanager_active.set(gauge(book.len()));
            metrics.alertmanager_firing.set(gauge(book.firing()));
        }
        tracing::info!(
            active = taken,
            from_seq = last + 1,
            "alerts for Alertmanager restored from BATON_ALERTS"
        );
        metrics
            .alerts_seq
            .set(i64::try_from(last).unwrap_or(i64::MAX));
        progress.set(last, 0);
        shared.wake_all();
        Ok(Follower {
            js: js.clone(),
            shared,
            routes,
            metrics,
            health,
            progress,
            next_seq: last + 1,
        })
    }

    async fn run(mut self, mut shutdown: Shutdown) -> Result<(), NotifyError> {
        let mut expire = tokio::time::interval(Duration::from_secs(5));
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'reopen: loop {
            let mut messages = match self.open().await {
                Ok(m) => {
                    self.health.set_condition("alerts", None);
                    m
                }
                Err(e) => {
                    self.health
                        .set_condition("alerts", Some(format!("cannot read BATON_ALERTS: {e}")));
                    tracing::warn!(error = %e, "cannot read BATON_ALERTS; trying again");
                    tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'reopen,
                    }
                }
            };
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => return Ok(()),
                    first = messages.next() => {
                        let mut batch = Vec::new();
                        match first {
                            Some(Ok(m)) => batch.push(m),
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "alert stream error; reopening");
                                continue 'reopen;
                            }
                            None => continue 'reopen,
                        }
                        while batch.len() < 1000 {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(m))) => batch.push(m),
                                _ => break,
                            }
                        }
                        self.take(&batch);
                    }
                    _ = expire.tick() => {
                        let mut book = self.shared.book();
                        book.expire(wall_now());
                        self.metrics.alertmanager_active.set(gauge(book.len()));
                        self.metrics.alertmanager_firing.set(gauge(book.firing()));
                    }
                }
            }
        }
    }

    async fn open(
        &self,
    ) -> Result<jetstream::consumer::pull::Ordered, Box<dyn std::error::Error + Send + Sync>> {
        let stream = self.js.get_stream_no_info(subjects::ALERTS_STREAM).await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subjects::ALERTS_RAISE_ALL.into(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.next_seq.max(1),
                },
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }

    fn take(&mut self, batch: &[jetstream::Message]) {
        let now = wall_now();
        let mut changed = false;
        {
            let mut book = self.shared.book();
            for msg in batch {
                if let Some(d) = consumer::delivery_of(msg) {
                    if d.meta.seq < self.next_seq {
                        continue;
                    }
                    self.next_seq = d.meta.seq + 1;
                    self.progress.set(d.meta.seq, d.pending);
                }
                self.metrics.alerts_read.inc();
                match Alert::decode(&msg.payload) {
                    Ok(alert) => {
                        let link = console_link(&self.routes, &alert);
                        changed |= book.apply(&alert, link.as_deref(), now);
                    }
                    Err(e) => {
                        self.metrics.undecodable.inc();
                        tracing::warn!(subject = %msg.subject, error = %e, "not a baton.v1.Alert; skipped");
                    }
                }
            }
            self.metrics.alertmanager_active.set(gauge(book.len()));
            self.metrics.alertmanager_firing.set(gauge(book.firing()));
        }
        self.metrics
            .alerts_seq
            .set(i64::try_from(self.next_seq.saturating_sub(1)).unwrap_or(i64::MAX));
        if changed {
            self.shared.wake_all();
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn console_link(routes: &Routes, alert: &Alert) -> Option<String> {
    routes.console_link(alert.task.as_ref().map(|t| t.as_str()))
}

/// Sends one Alertmanager what it has not accepted yet, and everything
/// every `resend_interval`; retries with backoff while it is down.
struct Pusher {
    client: Client,
    index: usize,
    target: AlertmanagerTarget,
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    metrics: Metrics,
}

impl Pusher {
    async fn run(self, mut shutdown: Shutdown) -> Result<(), NotifyError> {
        let label = TargetLabel {
            kind: "alertmanager",
            target: self.target.name.clone(),
        };
        let mut resend = tokio::time::interval(self.routes.resend_interval);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut full = false;
        let mut failures = 0u32;
        loop {
            let retry_in = (failures > 0).then(|| webhook::backoff(&self.routes.retry, failures));
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Ok(()),
                _ = resend.tick() => full = true,
                _ = self.shared.wake[self.index].notified() => {}
                _ = async {
                    match retry_in {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let now = wall_now();
            let batch = self.shared.book().batch(self.index, full, now);
            if batch.is_empty() {
                full = false;
                continue;
            }
            let mut all_ok = true;
            for chunk in batch.chunks(AM_CHUNK) {
                match self.send(&chunk).await {
                    Ok(()) => {
                        self.metrics
                            .delivered
                            .get_or_create(&label)
                            .inc_by(chunk.alerts.len() as u64);
                        self.shared.book().accepted(self.index, &chunk);
                    }
                    Err(why) => {
                        all_ok = false;
                        if failures == 0 || failures.is_multiple_of(10) {
                            tracing::warn!(alertmanager = %self.target.name, url = %self.target.endpoint, error = %why, "Alertmanager did not take the alerts; retrying");
                        }
                        break;
                    }
                }
            }
            self.metrics
                .target_up
                .get_or_create(&label)
                .set(i64::from(all_ok));
            if all_ok {
                if failures > 0 {
                    tracing::info!(alertmanager = %self.target.name, "Alertmanager takes alerts again");
                }
                failures = 0;
                full = false;
            } else {
                failures = failures.saturating_add(1);
            }
        }
    }

    async fn send(&self, batch: &Batch) -> Result<(), String> {
        let body = serde_json::to_vec(&batch.alerts).map_err(|e| e.to_string())?;
        let result = self
            .client
            .post_json(
                &self.target.endpoint,
                &self.target.headers,
                &body,
                self.routes.request_timeout,
            )
            .await;
        let outcome = outcome_of(result.as_ref());
        self.metrics
            .requests
            .get_or_create(&OutcomeLabel {
                kind: "alertmanager",
                target: self.target.name.clone(),
                outcome,
            })
            .inc();
        match result {
            Ok(r) if r.is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}: {}", r.status, r.body)),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn outcome_of(result: Result<&Reply, &client::HttpError>) -> &'static str {
    match result {
        Ok(r) if r.is_success() => "ok",
        Ok(r) if r.is_refusal() => "refused",
        _ => "error",
    }
}

/// Every `watchdog.interval`: judge liveness, refresh or drop the watchdog.
async fn run_watchdog(
    js: jetstream::Context,
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) -> Result<(), NotifyError> {
    let since = wall_now();
    let ttl = routes.watchdog.interval * 3;
    let console = routes.console_link(None);
    let mut tick = tokio::time::interval(routes.watchdog.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy: Option<bool> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            _ = tick.tick() => {}
        }
        let verdict = match liveness_reports(&js).await {
            Ok(reports) => watchdog::judge(&reports, &routes.watchdog.services, wall_now()),
            Err(e) => Err(format!("cannot read KV baton-services: {e}")),
        };
        let healthy = verdict.is_ok();
        if was_healthy != Some(healthy) {
            match &verdict {
                Ok(s) => tracing::info!("watchdog firing: {s}"),
                Err(why) => tracing::warn!("watchdog withheld, Baton is not healthy: {why}"),
            }
            was_healthy = Some(healthy);
        }
        metrics.watchdog_healthy.set(i64::from(healthy));
        {
            let mut book = shared.book();
            book.watchdog(verdict.ok(), since, ttl, console.as_deref(), wall_now());
            metrics.alertmanager_active.set(gauge(book.len()));
        }
        shared.wake_all();
    }
}

/// The liveness records in KV `baton-services`, with their broker times.
async fn liveness_reports(
    js: &jetstream::Context,
) -> Result<Vec<watchdog::Report>, read::ReadError> {
    let mut reports = Vec::new();
    read::for_each_kv_value(js, subjects::SERVICES_BUCKET, |_, stored| {
        // A standby vouches for nothing: only the active instance of a
        // service does its work (decision 8).
        if let Ok(s) = pb::ServiceStatus::decode(stored.payload.clone())
            && s.role != "standby"
        {
            reports.push(watchdog::Report {
                service: s.service,
                instance: s.instance,
                reported_at: stored.stored_at,
                interval: Duration::from_millis(s.interval_ms.max(1)),
            });
        }
    })
    .await?;
    Ok(reports)
}

/// One webhook: its durable consumer, delivered in order, acknowledged
/// once delivered (or given up).
struct WebhookWorker {
    client: Client,
    target: WebhookTarget,
    routes: Arc<Routes>,
    metrics: Metrics,
    batches: Batches,
    label: TargetLabel,
}

/// What became of one notification.
enum Outcome {
    /// Delivered or given up: acknowledge it.
    Done,
    /// Shutdown while retrying: leave it unacknowledged for the next start.
    Stopped,
}

impl WebhookWorker {
    async fn start(
        js: &jetstream::Context,
        client: Client,
        target: WebhookTarget,
        routes: Arc<Routes>,
        metrics: Metrics,
        max_batch: usize,
    ) -> Result<WebhookWorker, NotifyError> {
        // Retries keep the notification in progress; redelivery after
        // ack_wait would only be skipped, but it costs a round trip.
        let ack_wait = (routes.retry.max * 2 + routes.request_timeout).max(Duration::from_secs(30));
        let spec = ConsumerSpec {
            stream: subjects::ALERTS_STREAM.into(),
            durable: target.consumer(),
            filter: subjects::ALERTS_RAISE_ALL.into(),
            max_ack_pending: i64::try_from(max_batch * 4).unwrap_or(i64::MAX),
            ack_wait,
            max_batch,
        };
        let mut stream = js
            .get_stream(subjects::ALERTS_STREAM)
            .await
            .map_err(setup)?;
        let consumer = match stream.consumer_info(&spec.durable).await {
            // Where it left off: its ack floor is the delivery mark.
            Ok(info) => {
                consumer::restart_from(js, &spec, info.ack_floor.stream_sequence + 1).await?
            }
            Err(_) => {
                let from = match target.start {
                    Start::All => None,
                    Start::New => Some(stream.info().await.map_err(setup)?.state.last_sequence + 1),
                };
                tracing::info!(webhook = %target.name, from = ?from, "new webhook: its consumer starts here");
                consumer::ensure_durable_from(js, &spec, from).await?
            }
        };
        let batches = Batches::new(&consumer, max_batch).await?;
        let label = TargetLabel {
            kind: "webhook",
            target: target.name.clone(),
        };
        metrics.add_target(&label);
        metrics
            .pending
            .get_or_create(&label)
            .set(i64::try_from(consumer.cached_info().num_pending).unwrap_or(i64::MAX));
        Ok(WebhookWorker {
            client,
            target,
            routes,
            metrics,
            batches,
            label,
        })
    }

    async fn run(mut self, shutdown: Shutdown) -> Result<(), NotifyError> {
        let mut delivered_upto = 0u64;
        let mut batch_shutdown = shutdown.clone();
        while let Some(batch) = self
            .batches
            .next(Duration::from_secs(1), &mut batch_shutdown)
            .await
        {
            for msg in batch {
                if shutdown.is_triggered() {
                    return Ok(());
                }
                let Some(d) = consumer::delivery_of(&msg) else {
                    continue;
                };
                self.metrics
                    .pending
                    .get_or_create(&self.label)
                    .set(i64::try_from(d.pending).unwrap_or(i64::MAX));
                if d.meta.seq <= delivered_upto {
                    // A redelivered copy of what is done already.
                    let _ = msg.ack().await;
                    continue;
                }
                let outcome = match Alert::decode(&msg.payload) {
                    Err(e) => {
                        self.metrics.undecodable.inc();
                        tracing::warn!(webhook = %self.target.name, seq = d.meta.seq, error = %e, "not a baton.v1.Alert; skipped");
                        Outcome::Done
                    }
                    Ok(alert) if !self.target.wants(alert.kind, alert.severity) => {
                        self.metrics.filtered.get_or_create(&self.label).inc();
                        Outcome::Done
                    }
                    Ok(alert) => {
                        self.deliver(&alert, d.meta.seq, d.meta.stored_at, &msg, shutdown.clone())
                            .await
                    }
                };
                match outcome {
                    Outcome::Stopped => return Ok(()),
                    Outcome::Done => {
                        self.confirm(&msg).await;
                        delivered_upto = d.meta.seq;
                    }
                }
            }
        }
        if shutdown.is_triggered() {
            Ok(())
        } else {
            // Exit with an error so that a supervisor restarts the router
            // (it resumes from the webhook's ack floor).
            Err(setup(format!(
                "webhook {}: the consumer's message stream ended",
                self.target.name
            )))
        }
    }

    /// Acknowledges `msg` and waits for the server to confirm, so the mark
    /// is stored before the next delivery starts.
    async fn confirm(&self, msg: &jetstream::Message) {
        for attempt in 0..5u32 {
            match msg.double_ack().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(webhook = %self.target.name, error = %e, attempt, "acknowledgement not confirmed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        // The next acknowledgement covers this one (ack policy All); a
        // restart before it would deliver this notification once more.
        tracing::warn!(webhook = %self.target.name, "acknowledgement still not confirmed; going on");
    }

    async fn deliver(
        &self,
        alert: &Alert,
        seq: u64,
        stored_at: Time,
        msg: &jetstream::Message,
        mut shutdown: Shutdown,
    ) -> Outcome {
        let console = console_link(&self.routes, alert);
        let body = match self.target.format {
            Format::Json => webhook::json_body(&self.target.name, alert, seq, console.as_deref()),
            Format::Slack => webhook::slack_body(alert, console.as_deref()),
        };
        let mut headers = self.target.headers.clone();
        headers.push((
            "Baton-Delivery-Id".into(),
            webhook::delivery_id(&self.target.name, alert),
        ));
        let (mut attempt, mut refusals) = (0u32, 0u32);
        loop {
            attempt += 1;
            // Not cut short by shutdown: a request the webhook may have
            // taken is finished and acknowledged, never sent again.
            let result = self
                .client
                .post_json(
                    &self.target.endpoint,
                    &headers,
                    &body,
                    self.routes.request_timeout,
                )
                .await;
            let outcome = outcome_of(result.as_ref());
            if outcome == "refused" {
                refusals += 1;
            }
            self.metrics
                .requests
                .get_or_create(&OutcomeLabel {
                    kind: "webhook",
                    target: self.target.name.clone(),
                    outcome,
                })
                .inc();
            let now = wall_now();
            match webhook::judge(
                result.as_ref(),
                attempt,
                refusals,
                stored_at,
                now,
                &self.routes.retry,
            ) {
                webhook::Verdict::Delivered => {
                    self.metrics.delivered.get_or_create(&self.label).inc();
                    self.metrics.target_up.get_or_create(&self.label).set(1);
                    self.metrics
                        .delivery_latency
                        .get_or_create(&self.label)
                        .observe(now.since(stored_at).as_secs_f64());
                    if attempt > 1 {
                        tracing::info!(webhook = %self.target.name, alert = %alert.id, attempt, "delivered after retries");
                    }
                    return Outcome::Done;
                }
                webhook::Verdict::GiveUp(why) => {
                    self.metrics.given_up.get_or_create(&self.label).inc();
                    tracing::error!(webhook = %self.target.name, alert = %alert.id, seq, "given up: {why}");
                    return Outcome::Done;
                }
                webhook::Verdict::RetryAfter(wait) => {
                    self.metrics.target_up.get_or_create(&self.label).set(0);
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        let why = match &result {
                            Ok(r) => format!("HTTP {}", r.status),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(webhook = %self.target.name, alert = %alert.id, attempt, error = %why, "webhook did not take the alert; retrying");
                    }
                    // Still working on it: no redelivery meanwhile.
                    let _ = msg.ack_with(AckKind::Progress).await;
                    tokio::select! {
                        biased;
                        _ = shutdown.wait() => return Outcome::Stopped,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}
