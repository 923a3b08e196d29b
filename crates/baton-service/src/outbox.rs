//! Makes a batch's effects durable before the batch is acknowledged.
//!
//! Every KV write, alert and dead letter of a batch is published pipelined
//! (a window of acknowledgements in flight, which is ~20x faster here than
//! one round trip each) and retried until the broker has acknowledged all of
//! them. Alerts and dead letters carry a `Nats-Msg-Id`, so a retry is stored
//! once. The caller acknowledges its consumer only after `deliver` returns.
//!
//! An outbox of an active instance carries its term's
//! [`Fences`](baton_jetstream::leadership::Fences): every write to a fenced
//! stream names the fence, and a write the broker refuses because a later
//! term fenced the stream ends the delivery with [`Interrupted::Deposed`]
//! (never retried: this instance is no longer the leader).
//!
//! [`SoleWriter`] is the faster path for a stream only this process writes
//! to (the orchestrator's task states): it needs one acknowledgement per
//! delivery instead of one per message, and proves from stream sequences
//! that every message was stored.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{self, context::PublishErrorKind, message::PublishMessage},
};
use baton_jetstream::leadership::Fences;
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use std::sync::Arc;

use crate::http::Health;
use crate::shutdown::Shutdown;

/// Acknowledgements in flight at once; below async-nats' default
/// `max_ack_inflight` (5000) so a batch never waits on its own permits.
pub const WINDOW: usize = 4096;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
    /// `Nats-Msg-Id`, for messages that must be stored once.
    pub msg_id: Option<String>,
}

impl Outgoing {
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Outgoing {
        Outgoing {
            subject: subject.into(),
            payload: payload.into(),
            headers: None,
            msg_id: None,
        }
    }

    pub fn with_msg_id(mut self, id: impl Into<String>) -> Outgoing {
        self.msg_id = Some(id.into());
        self
    }

    pub fn with_headers(mut self, headers: HeaderMap) -> Outgoing {
        self.headers = Some(headers);
        self
    }

    /// The headers to publish with: the item's own and its fence's.
    fn headers_with(&self, fences: &Fences) -> Option<HeaderMap> {
        let mut headers = self.headers.clone().unwrap_or_default();
        let fenced = fences.apply(&self.subject, &mut headers);
        (fenced || self.headers.is_some()).then_some(headers)
    }

    fn message(&self, fences: &Fences) -> PublishMessage {
        // `headers` first: the builder's `headers()` replaces what
        // `message_id()` set.
        let mut msg = PublishMessage::build();
        if let Some(h) = self.headers_with(fences) {
            msg = msg.headers(h);
        }
        let msg = msg.payload(self.payload.clone());
        match &self.msg_id {
            Some(id) => msg.message_id(id.as_str()),
            None => msg,
        }
    }
}

/// Why a delivery did not store everything; nothing may be acked, and no
/// checkpoint may move past it (decision 7).
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    /// Shutdown was requested while messages were unacknowledged.
    #[error("delivery interrupted by shutdown with {pending} message(s) unacknowledged")]
    Shutdown { pending: usize },
    /// A message is larger than the broker accepts: it can never be stored.
    /// The size limits on input make this a bug, so it stops the service
    /// loudly instead of being skipped.
    #[error("a message on {subject} ({len} bytes) is larger than the broker accepts; not stored")]
    TooLarge { subject: String, len: usize },
    /// The broker refused a fenced write: a later leadership term fenced
    /// the stream, so this instance is deposed and must stop writing.
    #[error("a write to {subject} was refused by the fence of a later leadership term: deposed")]
    Deposed { subject: String },
}

/// Why a single store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("refused by the fence of a later leadership term: deposed")]
    Deposed,
    #[error("{0}")]
    Failed(String),
}

/// What a delivery took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub published: usize,
    /// Attempts that failed and were retried.
    pub retries: usize,
    /// A [`SoleWriter`] could not prove its fast delivery and published
    /// everything again with an acknowledgement each.
    pub fell_back: bool,
}

/// Publishes batches of messages until all are acknowledged.
#[derive(Debug, Clone)]
pub struct Outbox {
    js: jetstream::Context,
    /// Told when effects keep failing to be stored, so `/healthz` says so
    /// while the outbox is still retrying.
    health: Option<Health>,
    /// The fences of the term this outbox writes for.
    fences: Arc<Fences>,
    /// Set once the broker refused a fenced write (shared by clones).
    deposed: Arc<std::sync::atomic::AtomicBool>,
}

/// The `/healthz` condition an outbox reports under.
pub const HEALTH_CONDITION: &str = "outbox";

/// How long deliveries may keep failing before the service reports itself
/// unhealthy (a leader election takes a few seconds; longer is an outage).
const UNHEALTHY_AFTER: Duration = Duration::from_secs(5);

impl Outbox {
    pub fn new(js: jetstream::Context) -> Outbox {
        Outbox {
            js,
            health: None,
            fences: Arc::new(Fences::none()),
            deposed: Arc::default(),
        }
    }

    /// Whether a write of this outbox (or a clone) was refused by a later
    /// term's fence.
    pub fn was_deposed(&self) -> bool {
        self.deposed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fences every write with `fences` (the active term's).
    pub fn fenced(mut self, fences: Arc<Fences>) -> Outbox {
        self.fences = fences;
        self
    }

    /// The broker context this outbox publishes with.
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Stores one message, once (no retry): for writes that are retried by
    /// being written again later, such as checkpoints.
    pub async fn store_one(&self, item: &Outgoing) -> Result<(), StoreError> {
        let ack = self
            .js
            .send_publish(item.subject.clone(), item.message(&self.fences))
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?
            .await;
        match ack {
            Ok(_) => Ok(()),
            Err(e) if self.refused_by_fence(&item.subject, &e) => Err(StoreError::Deposed),
            Err(e) => Err(StoreError::Failed(e.to_string())),
        }
    }

    fn refused_by_fence(&self, subject: &str, e: &jetstream::context::PublishError) -> bool {
        let refused = baton_jetstream::publish::is_wrong_last_sequence(e)
            && self.fences.for_subject(subject).is_some();
        if refused {
            self.deposed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        refused
    }

    /// Reports deliveries that keep failing to `health` (`/healthz`).
    pub fn reporting_to(mut self, health: Health) -> Outbox {
        self.health = Some(health);
        self
    }

    fn report(&self, problem: Option<String>) {
        if let Some(h) = &self.health {
            h.set_condition(HEALTH_CONDITION, problem);
        }
    }

    /// Publishes every item and waits for every acknowledgement, retrying
    /// failures with backoff. Returns early only on shutdown.
    pub async fn deliver(
        &self,
        items: &[Outgoing],
        shutdown: &Shutdown,
    ) -> Result<Delivered, Interrupted> {
        let mut stats = Delivered {
            published: items.len(),
            ..Delivered::default()
        };
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut backoff = Duration::from_millis(50);
        let since = tokio::time::Instant::now();
        loop {
            let failed = self.publish_all(items, &pending).await;
            if failed.is_empty() {
                if stats.retries > 0 {
                    self.report(None);
                }
                return Ok(stats);
            }
            let mut retry = Vec::with_capacity(failed.len());
            for (i, err) in failed {
                if self.refused_by_fence(&items[i].subject, &err) {
                    tracing::warn!(subject = %items[i].subject, "write refused by a later term's fence: deposed");
                    return Err(Interrupted::Deposed {
                        subject: items[i].subject.clone(),
                    });
                }
                if err.kind() == PublishErrorKind::MaxPayloadExceeded {
                    tracing::error!(subject = %items[i].subject, error = %err, "message larger than the broker accepts; not stored");
                    self.report(Some(format!(
                        "a message on {} is larger than the broker accepts",
                        items[i].subject
                    )));
                    return Err(Interrupted::TooLarge {
                        subject: items[i].subject.clone(),
                        len: items[i].payload.len(),
                    });
                }
                if retry.is_empty() {
                    tracing::warn!(subject = %items[i].subject, error = %err, "publish not acknowledged; retrying");
                    if since.elapsed() >= UNHEALTHY_AFTER {
                        self.report(Some(format!(
                            "effects not stored for {}s: {err}",
                            since.elapsed().as_secs()
                        )));
                    }
                }
                retry.push(i);
            }
            stats.retries += retry.len();
            if shutdown.is_triggered() {
                return Err(Interrupted::Shutdown {
                    pending: retry.len(),
                });
            }
            let mut s = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = s.wait() => return Err(Interrupted::Shutdown { pending: retry.len() }),
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            pending = retry;
        }
    }

    async fn publish_all(
        &self,
        items: &[Outgoing],
        which: &[usize],
    ) -> Vec<(usize, jetstream::context::PublishError)> {
        let mut failed = Vec::new();
        let mut inflight = FuturesUnordered::new();
        for &i in which {
            if inflight.len() >= WINDOW
                && let Some((j, Err(e))) = inflight.next().await
            {
                failed.push((j, e));
            }
            match self
                .js
                .send_publish(items[i].subject.clone(), items[i].message(&self.fences))
                .await
            {
                Ok(ack) => inflight.push(async move { (i, ack.await.map(|_| ())) }),
                Err(e) => failed.push((i, e)),
            }
        }
        while let Some((j, result)) = inflight.next().await {
            if let Err(e) = result {
                failed.push((j, e));
            }
        }
        failed
    }
}

/// Delivers to a stream that only this process writes to, with one
/// acknowledgement per delivery instead of one per message.
///
/// Every message but the last is published without a reply subject (no
/// acknowledgement to produce, send, parse and match), the last one with an
/// acknowledgement. JetStream gives stored messages consecutive sequence
/// numbers, so if the last one's sequence is exactly the stream's previous
/// last sequence plus the number of messages, every one of them was stored.
/// Anything else (a message the broker did not store, another writer, a
/// failed publish) falls back to [`Outbox::deliver`], which publishes them
/// all again and waits for each acknowledgement: the fast path never loses
/// a write, it only saves work when it can prove it may.
///
/// Measured here for 100k KV writes: 0.28 s instead of 0.53 s.
#[derive(Debug)]
pub struct SoleWriter {
    stream: String,
    /// The stream's last sequence after our previous delivery; `None` =
    /// ask the stream first.
    last_seq: Option<u64>,
}

impl SoleWriter {
    /// A writer to `stream`, whose subjects every delivered message must
    /// be on.
    pub fn new(stream: impl Into<String>) -> SoleWriter {
        SoleWriter {
            stream: stream.into(),
            last_seq: None,
        }
    }

    /// Stores every item, as [`Outbox::deliver`] does.
    pub async fn deliver(
        &mut self,
        outbox: &Outbox,
        items: &[Outgoing],
        shutdown: &Shutdown,
    ) -> Result<Delivered, Interrupted> {
        if items.is_empty() {
            return Ok(Delivered::default());
        }
        match self.deliver_unacknowledged(outbox, items).await {
            Ok(last_seq) => {
                self.last_seq = Some(last_seq);
                return Ok(Delivered {
                    published: items.len(),
                    ..Delivered::default()
                });
            }
            Err(why) => {
                tracing::warn!(stream = %self.stream, reason = %why, "fast delivery not proven; publishing again with an acknowledgement each");
                self.last_seq = None;
            }
        }
        let mut delivered = outbox.deliver(items, shutdown).await?;
        delivered.fell_back = true;
        Ok(delivered)
    }

    /// The stream's last sequence after storing `items`, if it proves
    /// that every item was stored.
    async fn deliver_unacknowledged(
        &self,
        outbox: &Outbox,
        items: &[Outgoing],
    ) -> Result<u64, String> {
        let before = match self.last_seq {
            Some(seq) => seq,
            None => {
                let stream = outbox
                    .js
                    .get_stream(&self.stream)
                    .await
                    .map_err(|e| format!("cannot read stream {}: {e}", self.stream))?;
                stream.cached_info().state.last_sequence
            }
        };
        let Some((last, rest)) = items.split_last() else {
            return Ok(before);
        };
        let client = outbox.js.client();
        for item in rest {
            let sent = match item.headers_with(&outbox.fences) {
                Some(h) => {
                    client
                        .publish_with_headers(item.subject.clone(), h, item.payload.clone())
                        .await
                }
                None => {
                    client
                        .publish(item.subject.clone(), item.payload.clone())
                        .await
                }
            };
            sent.map_err(|e| format!("publish to {}: {e}", item.subject))?;
        }
        let ack = outbox
            .js
            .send_publish(last.subject.clone(), last.message(&outbox.fences))
            .await
            .map_err(|e| format!("publish to {}: {e}", last.subject))?
            .await
            .map_err(|e| format!("publish to {}: {e}", last.subject))?;
        let expected = before + items.len() as u64;
        if ack.stream == self.stream && ack.sequence == expected {
            Ok(ack.sequence)
        } else {
            Err(format!(
                "{} stored the last of {} messages at sequence {}, expected {} in {}",
                ack.stream,
                items.len(),
                ack.sequence,
                expected,
                self.stream
            ))
        }
    }
}
