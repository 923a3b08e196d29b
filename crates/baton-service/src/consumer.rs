//! The durable pull consumer each service reads `BATON_EVENTS` with, and
//! batch reception.
//!
//! Ack policy is `All`: a service acknowledges the last message of a batch
//! once the batch's effects are durable, which acknowledges everything
//! before it (measured ~2x the rate of per-message acks here).
//! `max_ack_pending` is set explicitly: JetStream's default of 1000 silently
//! stalls a consumer that holds more unacknowledged messages.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use baton_core::{EventMeta, Time};
use futures::{FutureExt, StreamExt};

use crate::shutdown::Shutdown;

/// A durable consumer's settings.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: String,
    pub durable: String,
    pub filter: String,
    /// Unacknowledged messages the server delivers before pausing; must
    /// exceed the largest batch.
    pub max_ack_pending: i64,
    /// Redelivery after this long without an ack.
    pub ack_wait: Duration,
    /// Largest batch taken at once.
    pub max_batch: usize,
}

/// Why the consumer could not be set up or read.
#[derive(Debug, thiserror::Error)]
#[error("consumer {durable} on {stream}: {message}")]
pub struct ConsumerError {
    pub stream: String,
    pub durable: String,
    pub message: String,
}

/// Creates the durable consumer, delivering from stream sequence `from`
/// (`None` = from the beginning).
pub async fn ensure_durable_from(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    from: Option<u64>,
) -> Result<PullConsumer, ConsumerError> {
    let err = |message: String| ConsumerError {
        stream: spec.stream.clone(),
        durable: spec.durable.clone(),
        message,
    };
    let stream = js
        .get_stream_no_info(&spec.stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(spec.durable.clone()),
            description: Some(format!("Baton {}", spec.durable)),
            filter_subject: spec.filter.clone(),
            deliver_policy: match from {
                Some(start_sequence) if start_sequence > 1 => {
                    DeliverPolicy::ByStartSequence { start_sequence }
                }
                _ => DeliverPolicy::All,
            },
            ack_policy: AckPolicy::All,
            ack_wait: spec.ack_wait,
            max_ack_pending: spec.max_ack_pending,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| err(e.to_string()))
}

/// Re-creates the durable consumer to deliver from stream sequence `from`.
pub async fn restart_from(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    from: u64,
) -> Result<PullConsumer, ConsumerError> {
    let err = |message: String| ConsumerError {
        stream: spec.stream.clone(),
        durable: spec.durable.clone(),
        message,
    };
    let stream = js
        .get_stream_no_info(&spec.stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    // A missing consumer is fine: it is created below.
    let _ = stream.delete_consumer(&spec.durable).await;
    ensure_durable_from(js, spec, Some(from)).await
}

/// Opens the durable consumer where the service left off: re-created at
/// its ack floor, so events delivered but never acknowledged before a crash
/// come again at once and in order (rather than after `ack_wait`, by which
/// time later events would have overtaken them).
pub async fn resume(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<PullConsumer, ConsumerError> {
    let err = |message: String| ConsumerError {
        stream: spec.stream.clone(),
        durable: spec.durable.clone(),
        message,
    };
    let stream = js
        .get_stream_no_info(&spec.stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    match stream.consumer_info(&spec.durable).await {
        Ok(info) => restart_from(js, spec, info.ack_floor.stream_sequence + 1).await,
        Err(_) => ensure_durable_from(js, spec, None).await,
    }
}

/// Receives messages in batches: waits for the first, then takes whatever
/// else is already buffered, up to `max_batch`.
pub struct Batches {
    messages: pull::Stream,
    max_batch: usize,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl Batches {
    /// Starts pulling from `consumer`.
    pub async fn new(consumer: &PullConsumer, max_batch: usize) -> Result<Batches, ConsumerError> {
        let messages = consumer
            .stream()
            .max_messages_per_batch(max_batch.min(10_000))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| ConsumerError {
                stream: String::new(),
                durable: String::new(),
                message: e.to_string(),
            })?;
        Ok(Batches {
            messages,
            max_batch,
        })
    }

    /// The next batch, or `None` on shutdown. Waits at most `idle` for the
    /// first message and returns an empty batch if none came (so the
    /// caller can do periodic work).
    pub async fn next(
        &mut self,
        idle: Duration,
        shutdown: &mut Shutdown,
    ) -> Option<Vec<jetstream::Message>> {
        let mut batch = Vec::new();
        tokio::select! {
            biased;
            _ = shutdown.wait() => return None,
            first = tokio::time::timeout(idle, self.messages.next()) => match first {
                Err(_) => return Some(batch),
                Ok(None) => return None,
                Ok(Some(Ok(m))) => batch.push(m),
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "consumer stream error");
                    return Some(batch);
                }
            },
        }
        while batch.len() < self.max_batch {
            match self.messages.next().now_or_never() {
                Some(Some(Ok(m))) => batch.push(m),
                Some(Some(Err(e))) => {
                    tracing::warn!(error = %e, "consumer stream error");
                    break;
                }
                _ => break,
            }
        }
        Some(batch)
    }
}

/// The broker's facts about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Stream sequence and stored time.
    pub meta: EventMeta,
    /// Messages pending for the consumer after this one.
    pub pending: u64,
    /// The consumer's delivery sequence: consecutive deliveries have
    /// consecutive numbers, so a jump means a delivery was lost in transit.
    pub consumer_seq: u64,
    /// How many times this message was delivered.
    pub delivered: i64,
}

/// Reads the delivery facts from a JetStream message's reply subject.
pub fn delivery_of(msg: &jetstream::Message) -> Option<Delivery> {
    let info = msg.info().ok()?;
    let stored_at =
        Time::from_unix_nanos(u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0));
    Some(Delivery {
        meta: EventMeta {
            seq: info.stream_sequence,
            stored_at,
        },
        pending: info.pending,
        consumer_seq: info.consumer_sequence,
        delivered: info.delivered,
    })
}
