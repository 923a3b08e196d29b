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
    consumer: PullConsumer,
    messages: pull::Stream,
    max_batch: usize,
    /// When the last message (or the last check) came.
    quiet_since: tokio::time::Instant,
}

/// A consumer quiet this long is asked whether it has work pending; if it
/// has, its pull is started again (a pull can sit silent after the client
/// moved to another node of the cluster, e.g. when its node was cut off).
const QUIET_CHECK: Duration = Duration::from_secs(10);

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
        let messages = Self::pull(consumer, max_batch).await?;
        Ok(Batches {
            consumer: consumer.clone(),
            messages,
            max_batch,
            quiet_since: tokio::time::Instant::now(),
        })
    }

    async fn pull(
        consumer: &PullConsumer,
        max_batch: usize,
    ) -> Result<pull::Stream, ConsumerError> {
        consumer
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
            })
    }

    /// After a quiet stretch: if the consumer has messages pending that
    /// never arrived, pull again.
    async fn check_quiet(&mut self) {
        if self.quiet_since.elapsed() < QUIET_CHECK {
            return;
        }
        self.quiet_since = tokio::time::Instant::now();
        let pending = match self.consumer.info().await {
            Ok(info) => info.num_pending,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the consumer for pending work");
                return;
            }
        };
        if pending == 0 {
            return;
        }
        tracing::warn!(
            pending,
            "the consumer has work pending but nothing arrived; pulling again"
        );
        match Self::pull(&self.consumer, self.max_batch).await {
            Ok(messages) => self.messages = messages,
            Err(e) => tracing::warn!(error = %e, "could not pull again; retrying later"),
        }
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
                Err(_) => {
                    self.check_quiet().await;
                    return Some(batch);
                }
                Ok(None) => return None,
                Ok(Some(Ok(m))) => {
                    self.quiet_since = tokio::time::Instant::now();
                    batch.push(m);
                }
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
    parse_ack_subject(msg.reply.as_deref()?)
}

/// Parses a JetStream ack subject (ADR-15), in its original form
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<nanos>.<pending>`
/// or with domain and account hash after `ACK` (and possibly more tokens at
/// the end). Done here rather than with `Message::info`, which builds a
/// calendar date from the timestamp: this runs once per event and the
/// services only need the numbers.
pub fn parse_ack_subject(reply: &str) -> Option<Delivery> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens = [""; 12];
    let mut count = 0;
    for token in rest.split('.') {
        if count == tokens.len() {
            break;
        }
        tokens[count] = token;
        count += 1;
    }
    // The numbers start after stream and consumer, and after domain and
    // account hash in the longer form.
    let numbers = match count {
        7 => &tokens[2..7],
        n if n >= 9 => &tokens[4..9],
        _ => return None,
    };
    let number = |t: &str| -> Option<u64> {
        if t.is_empty() || t.len() > 20 {
            return None;
        }
        t.bytes().try_fold(0u64, |n, b| {
            let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
            n.checked_mul(10)?.checked_add(u64::from(digit))
        })
    };
    Some(Delivery {
        meta: EventMeta {
            seq: number(numbers[1])?,
            stored_at: Time::from_unix_nanos(number(numbers[3])?),
        },
        pending: number(numbers[4])?,
        consumer_seq: number(numbers[2])?,
        delivered: i64::try_from(number(numbers[0])?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_ack_subject_forms() {
        let expected = Delivery {
            meta: EventMeta {
                seq: 42,
                stored_at: Time::from_unix_nanos(1_700_000_000_123_456_789),
            },
            pending: 7,
            consumer_seq: 40,
            delivered: 2,
        };
        assert_eq!(
            parse_ack_subject("$JS.ACK.BATON_EVENTS.orchestrator.2.42.40.1700000000123456789.7"),
            Some(expected)
        );
        assert_eq!(
            parse_ack_subject(
                "$JS.ACK._.ACCHASH.BATON_EVENTS.orchestrator.2.42.40.1700000000123456789.7.tok"
            ),
            Some(expected)
        );
        assert_eq!(
            parse_ack_subject(
                "$JS.ACK.hub.ACCHASH.BATON_EVENTS.orchestrator.2.42.40.1700000000123456789.7.tok.more.x"
            ),
            Some(expected)
        );
    }

    #[test]
    fn refuses_what_is_not_an_ack_subject() {
        for bad in [
            "",
            "_INBOX.abc",
            "$JS.ACK.S.C.1.2.3",
            "$JS.ACK.S.C.1.2.3.4.x",
            "$JS.ACK.S.C.1.-2.3.4.5",
            "$JS.ACK.S.C.1.99999999999999999999999.3.4.5",
            "$JS.ACK.S.C.1..3.4.5",
        ] {
            assert_eq!(parse_ack_subject(bad), None, "{bad:?}");
        }
    }
}
