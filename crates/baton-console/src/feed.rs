//! Keeps the [`Model`] current from NATS, reading only what a viewer may
//! read: KV `baton-tasks` (a watch: every task's state, then each change),
//! `BATON_ALERTS` (the latest notification per kind and task, then each new
//! one), KV `baton-silences`, KV `baton-services`, `BATON_CONTEXT` (the
//! version of each workflow's decision record), and stream and consumer
//! info, polled. Each feed re-subscribes after an error and reports the
//! problem on the health page meanwhile.
//!
//! Every change wakes the flusher, which waits a short coalescing window,
//! takes the model's delta and hands it to the live clients.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    kv,
};
use baton_core::{Alert, Task, subjects, wire::read_context_entry};
use baton_jetstream::{read::time_of, silences};
use baton_proto::{prost::Message, v1 as pb};
use baton_service::shutdown::Shutdown;
use futures::StreamExt;
use tokio::sync::{Notify, broadcast};

use crate::model::{
    ConsumerJson, Delta, Model, SERVICE_STATUS_FIELDS, ServiceRecord, StreamJson, unknown_fields,
};

/// The model, shared by the feeds and the HTTP handlers.
pub type Shared = Arc<Mutex<Model>>;

/// Locks the model (a panicked holder leaves it usable).
pub fn lock(model: &Shared) -> std::sync::MutexGuard<'_, Model> {
    model
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long the flusher gathers changes before sending them: short enough
/// that a card turns red well within a second of its alert, long enough
/// that a burst of changes goes out as one message.
pub const COALESCE: Duration = Duration::from_millis(50);

/// How often stream and consumer sizes are read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Wait before re-subscribing after a feed failed.
const RETRY: Duration = Duration::from_secs(1);

/// Starts every feed and the flusher.
pub fn start(
    js: jetstream::Context,
    model: Shared,
    deltas: broadcast::Sender<Arc<Delta>>,
    shutdown: Shutdown,
) {
    let changed = Arc::new(Notify::new());
    spawn_feed("tasks", &js, &model, &changed, &shutdown, tasks);
    spawn_feed("alerts", &js, &model, &changed, &shutdown, alerts);
    spawn_feed("silences", &js, &model, &changed, &shutdown, silences_feed);
    spawn_feed("services", &js, &model, &changed, &shutdown, services);
    spawn_feed(
        "decision records",
        &js,
        &model,
        &changed,
        &shutdown,
        context,
    );
    spawn_feed("streams", &js, &model, &changed, &shutdown, streams);
    tokio::spawn(flush(model, changed, deltas, shutdown));
}

type FeedFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs `feed` until shutdown, again after each failure.
fn spawn_feed(
    name: &'static str,
    js: &jetstream::Context,
    model: &Shared,
    changed: &Arc<Notify>,
    shutdown: &Shutdown,
    feed: fn(jetstream::Context, Shared, Arc<Notify>) -> FeedFuture,
) {
    let (js, model, changed, mut shutdown) =
        (js.clone(), model.clone(), changed.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            let result = tokio::select! {
                _ = shutdown.wait() => return,
                r = feed(js.clone(), model.clone(), changed.clone()) => r,
            };
            let why = match result {
                Ok(()) => "ended".to_string(),
                Err(e) => e,
            };
            tracing::warn!(feed = name, problem = %why, "console feed failed; retrying");
            lock(&model).set_problem(name, Some(why));
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    });
}

async fn flush(
    model: Shared,
    changed: Arc<Notify>,
    deltas: broadcast::Sender<Arc<Delta>>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = changed.notified() => {}
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(COALESCE) => {}
        }
        let now = crate::now();
        let delta = lock(&model).take_delta(now);
        if !delta.is_empty() {
            // No receivers is fine: nobody is looking.
            let _ = deltas.send(Arc::new(delta));
        }
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Watches a KV bucket from its current values on, calling `each` for
/// every entry.
async fn watch_kv(
    js: &jetstream::Context,
    bucket: &str,
    mut each: impl FnMut(kv::Entry),
) -> Result<(), String> {
    let store = js
        .get_key_value(bucket)
        .await
        .map_err(|e| format!("KV {bucket}: {e}"))?;
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(|e| format!("watching KV {bucket}: {e}"))?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| format!("watching KV {bucket}: {e}"))?;
        // Reserved keys (the services' fences) are no data.
        if !subjects::is_reserved_key(&entry.key) {
            each(entry);
        }
    }
    Ok(())
}

fn is_put(entry: &kv::Entry) -> bool {
    entry.operation == kv::Operation::Put
}

fn tasks(js: jetstream::Context, model: Shared, changed: Arc<Notify>) -> FeedFuture {
    Box::pin(async move {
        let mut first = true;
        watch_kv(&js, subjects::TASKS_BUCKET, |entry| {
            let mut m = lock(&model);
            if first {
                m.set_problem("tasks", None);
                first = false;
            }
            if is_put(&entry) {
                match Task::decode(&entry.value) {
                    Ok(t) => m.put_task(t),
                    Err(e) => {
                        tracing::debug!(key = %entry.key, error = %e, "undecodable task state");
                    }
                }
            } else {
                m.remove_task(&entry.key);
            }
            drop(m);
            changed.notify_one();
        })
        .await
    })
}

fn silences_feed(js: jetstream::Context, model: Shared, changed: Arc<Notify>) -> FeedFuture {
    Box::pin(async move {
        watch_kv(&js, subjects::SILENCES_BUCKET, |entry| {
            let silence = is_put(&entry)
                .then(|| silences::decode(&entry.value))
                .flatten();
            let mut m = lock(&model);
            m.set_problem("silences", None);
            m.put_silence(&entry.key, silence);
            drop(m);
            changed.notify_one();
        })
        .await
    })
}

fn services(js: jetstream::Context, model: Shared, changed: Arc<Notify>) -> FeedFuture {
    Box::pin(async move {
        watch_kv(&js, subjects::SERVICES_BUCKET, |entry| {
            let record = is_put(&entry)
                .then(|| pb::ServiceStatus::decode(entry.value.clone()).ok())
                .flatten()
                .map(|status| ServiceRecord {
                    status,
                    stored_at: time_of(entry.created),
                    unknown: unknown_fields(&entry.value, &SERVICE_STATUS_FIELDS),
                });
            let mut m = lock(&model);
            m.set_problem("services", None);
            m.put_service(&entry.key, record);
            drop(m);
            changed.notify_one();
        })
        .await
    })
}

/// Reads `stream` from `policy` on, calling `each` with subject,
/// sequence, stored time and payload of every message: live, or (`live` =
/// false) until it has read what the stream held when it started.
async fn follow(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    policy: DeliverPolicy,
    live: bool,
    mut each: impl FnMut(&str, u64, baton_core::Time, &[u8]),
) -> Result<(), String> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| format!("{stream}: {e}"))?;
    let consumer = s
        .create_consumer(OrderedConfig {
            // Named in the create subject, as the viewer role requires.
            name: Some(format!("baton-console-{}", nuid::next())),
            filter_subject: filter.to_string(),
            deliver_policy: policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading {stream}: {e}"))?;
    if !live && consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("reading {stream}: {e}"))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| format!("reading {stream}: {e}"))?;
        let info = msg.info().map_err(text)?;
        let (seq, at) = (info.stream_sequence, time_of(info.published));
        each(msg.subject.as_str(), seq, at, &msg.payload);
        if !live && info.pending == 0 {
            return Ok(());
        }
    }
    Ok(())
}

/// The latest notification of every alert subject, then every new one;
/// alongside, once, the last hour's notifications, for the fault reports
/// that recent resolutions resolve.
fn alerts(js: jetstream::Context, model: Shared, changed: Arc<Notify>) -> FeedFuture {
    Box::pin(async move {
        lock(&model).set_problem("alerts", None);
        let put = |subject: &str, seq: u64, _: baton_core::Time, payload: &[u8]| {
            if let Ok(a) = Alert::decode(payload) {
                lock(&model).put_alert(subject, a, seq);
                changed.notify_one();
            }
        };
        let since = crate::now().saturating_sub(crate::model::RESOLVED_WINDOW);
        let start_time =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since.unix_nanos()))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let current = follow(
            &js,
            subjects::ALERTS_STREAM,
            subjects::ALERTS_RAISE_ALL,
            DeliverPolicy::LastPerSubject,
            true,
            put,
        );
        let recent = follow(
            &js,
            subjects::ALERTS_STREAM,
            subjects::ALERTS_RAISE_ALL,
            DeliverPolicy::ByStartTime { start_time },
            false,
            put,
        );
        let (current, recent) = futures::join!(current, recent);
        recent.and(current)
    })
}

fn context(js: jetstream::Context, model: Shared, changed: Arc<Notify>) -> FeedFuture {
    Box::pin(async move {
        lock(&model).set_problem("decision records", None);
        follow(
            &js,
            subjects::CONTEXT_STREAM,
            subjects::CONTEXT_ALL,
            DeliverPolicy::All,
            true,
            |subject, seq, _, payload| {
                // Entries every reader refuses are no decisions.
                if let Ok(entry) = read_context_entry(subject, payload) {
                    lock(&model).put_decision(entry.workflow.as_str(), seq);
                    changed.notify_one();
                }
            },
        )
        .await
    })
}

/// The streams whose sizes the health page shows.
const STREAMS: [&str; 4] = [
    subjects::EVENTS_STREAM,
    subjects::CONTEXT_STREAM,
    subjects::ALERTS_STREAM,
    subjects::DLQ_STREAM,
];

fn streams(js: jetstream::Context, model: Shared, _changed: Arc<Notify>) -> FeedFuture {
    Box::pin(async move {
        loop {
            let mut streams = Vec::new();
            let mut consumers = Vec::new();
            for name in STREAMS {
                let s = js
                    .get_stream(name)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                // Fetched with its info: one request per stream.
                let info = s.cached_info();
                streams.push(StreamJson {
                    stream: name.to_string(),
                    messages: info.state.messages,
                    bytes: info.state.bytes,
                    first_seq: info.state.first_sequence,
                    last_seq: info.state.last_sequence,
                    consumers: info.state.consumer_count,
                });
                if name == subjects::EVENTS_STREAM {
                    // The durable consumers (the services'); readers'
                    // ephemeral ones come and go.
                    let mut list = s.consumers();
                    while let Some(c) = list.next().await {
                        let c = c.map_err(|e| format!("consumers of {name}: {e}"))?;
                        if c.config.durable_name.is_some() {
                            consumers.push(ConsumerJson {
                                stream: name.to_string(),
                                consumer: c.name.clone(),
                                pending: c.num_pending,
                                ack_pending: c.num_ack_pending,
                                delivered_seq: c.delivered.stream_sequence,
                                ack_floor: c.ack_floor.stream_sequence,
                            });
                        }
                    }
                }
            }
            consumers.sort_by(|a, b| a.consumer.cmp(&b.consumer));
            {
                let mut m = lock(&model);
                m.set_streams(streams, consumers);
                m.set_problem("streams", None);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
}
