//! Reading what a stream holds for a subject: a task's events, a workflow's
//! decision record, the latest alert of a kind.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{DeliverPolicy, pull::OrderedConfig},
    },
};
use baton_core::Time;
use bytes::Bytes;
use futures::StreamExt;

/// A message as stored, with the broker's facts about it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub stored_at: Time,
    pub subject: String,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
}

impl Stored {
    /// Whether this is a KV delete or purge marker rather than a value.
    pub fn is_kv_tombstone(&self) -> bool {
        self.headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE")
    }

    /// The `Nats-Msg-Id` it was published with.
    pub fn msg_id(&self) -> Option<&str> {
        self.headers
            .as_ref()?
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str())
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {stream} ({filter}): {message}")]
pub struct ReadError {
    pub stream: String,
    pub filter: String,
    pub message: String,
}

/// Converts a JetStream timestamp to domain time.
pub fn time_of(t: time::OffsetDateTime) -> Time {
    Time::from_unix_nanos(u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0))
}

/// Calls `each` for the messages on `filter` in `stream` that `policy`
/// selects, in stream order, without holding them all in memory, until
/// `each` returns false or nothing is pending. Returns how many it saw.
async fn for_each(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    policy: DeliverPolicy,
    mut each: impl FnMut(Stored) -> bool,
) -> Result<u64, ReadError> {
    let err = |message: String| ReadError {
        stream: stream.to_string(),
        filter: filter.to_string(),
        message,
    };
    let (s, consumer) = ordered_reader(js, stream, filter, policy)
        .await
        .map_err(err)?;
    let mut pending = consumer.cached_info().num_pending;
    let name = consumer.cached_info().name.clone();
    let mut count = 0;
    if pending > 0 {
        let mut messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
        while pending > 0 {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .map_err(|_| err("timed out reading".into()))?;
            let Some(next) = next else { break };
            let msg = next.map_err(|e| err(e.to_string()))?;
            pending = msg.info().map_err(|e| err(e.to_string()))?.pending;
            count += 1;
            if !each(stored_of(&msg).map_err(err)?) {
                break;
            }
        }
    }
    // Ephemeral, but removing it now keeps frequent readers from piling
    // consumers up until their inactivity threshold.
    let _ = s.delete_consumer(&name).await;
    Ok(count)
}

/// Follows `filter` in `stream` live: every stored message in order, then
/// each new one as it is stored. An ordered consumer (the client re-creates
/// it from the last sequence seen after a gap or a lost connection), so a
/// follower never skips or repeats a message; it holds no server state
/// beyond its inactivity threshold when the follower goes away.
pub async fn follow(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Result<impl futures::Stream<Item = Result<Stored, ReadError>> + Send + Unpin + use<>, ReadError>
{
    follow_from(js, stream, filter, 1).await
}

/// [`follow`] from stream sequence `from` on (1 = from the start).
pub async fn follow_from(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    from: u64,
) -> Result<impl futures::Stream<Item = Result<Stored, ReadError>> + Send + Unpin + use<>, ReadError>
{
    let policy = if from <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    };
    let err = {
        let (stream, filter) = (stream.to_string(), filter.to_string());
        move |message: String| ReadError {
            stream: stream.clone(),
            filter: filter.clone(),
            message,
        }
    };
    let (_, consumer) = ordered_reader(js, stream, filter, policy)
        .await
        .map_err(&err)?;
    let messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
    Ok(messages.map(move |next| {
        let msg = next.map_err(|e| err(e.to_string()))?;
        stored_of(&msg).map_err(&err)
    }))
}

/// An ordered consumer on `filter` in `stream`, and the stream.
async fn ordered_reader(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    policy: DeliverPolicy,
) -> Result<
    (
        jetstream::stream::Stream<()>,
        jetstream::consumer::Consumer<OrderedConfig>,
    ),
    String,
> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = s
        .create_consumer(OrderedConfig {
            // Named, so the create request's subject carries the name and
            // the server's permissions can tell it from the services'
            // durable consumers (see `auth`).
            name: Some(format!("baton-read-{}", nuid::next())),
            filter_subject: filter.to_string(),
            deliver_policy: policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok((s, consumer))
}

/// A delivered message as stored, with the broker's facts about it.
fn stored_of(msg: &jetstream::Message) -> Result<Stored, String> {
    let info = msg.info().map_err(|e| e.to_string())?;
    Ok(Stored {
        seq: info.stream_sequence,
        stored_at: time_of(info.published),
        subject: msg.subject.to_string(),
        payload: msg.payload.clone(),
        headers: msg.headers.clone(),
    })
}

/// Reads every message on `filter` in `stream` from sequence `from`
/// (inclusive; 0 or 1 = the beginning), up to `limit` messages, in order.
pub async fn read_subject(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    from: u64,
    limit: Option<usize>,
) -> Result<Vec<Stored>, ReadError> {
    let policy = if from > 1 {
        DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    } else {
        DeliverPolicy::All
    };
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit > 0 {
        for_each(js, stream, filter, policy, |m| {
            out.push(m);
            out.len() < limit
        })
        .await?;
    }
    Ok(out)
}

/// Calls `each` for the latest message of every subject matching `filter`
/// (a KV bucket's current values, the latest alert per kind and task), in
/// stream order, without holding them all in memory. Returns the count.
pub async fn for_each_last_per_subject(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    mut each: impl FnMut(Stored),
) -> Result<u64, ReadError> {
    for_each(js, stream, filter, DeliverPolicy::LastPerSubject, |m| {
        each(m);
        true
    })
    .await
}

/// A checkpoint's stored value (in `baton-checkpoints`): the sequence in
/// decimal. `None` when unreadable.
pub fn parse_checkpoint(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// The checkpoint `name` of `baton-checkpoints`: 0 when there is none yet,
/// `None` when it cannot be read.
pub async fn checkpoint(js: &jetstream::Context, name: &str) -> Option<u64> {
    let kv = js
        .get_key_value(baton_core::subjects::CHECKPOINTS_BUCKET)
        .await
        .ok()?;
    match kv.get(name).await.ok()? {
        None => Some(0),
        Some(bytes) => parse_checkpoint(&bytes),
    }
}

/// Calls `each` with the key and stored value of every current entry of KV
/// bucket `bucket`: deleted and purged keys are left out, and so are the
/// reserved keys (`_…`: a leadership term's fence, decision 8), which are
/// not data. Returns how many values it passed on.
pub async fn for_each_kv_value(
    js: &jetstream::Context,
    bucket: &str,
    mut each: impl FnMut(&str, Stored),
) -> Result<u64, ReadError> {
    let prefix = format!("$KV.{bucket}.");
    let mut passed = 0;
    for_each_last_per_subject(
        js,
        &format!("KV_{bucket}"),
        &format!("{prefix}>"),
        |stored| {
            if stored.is_kv_tombstone() {
                return;
            }
            let Some(key) = stored.subject.strip_prefix(&prefix).map(str::to_owned) else {
                return;
            };
            if baton_core::subjects::is_reserved_key(&key) {
                return;
            }
            passed += 1;
            each(&key, stored);
        },
    )
    .await?;
    Ok(passed)
}

/// Reads the messages on `subject` (wildcards allowed) with sequence in
/// `from..=to`, one direct get each: no consumer is created, so this suits
/// short reads done often (a task's few newest events). Direct gets may be
/// answered by any replica, which can trail the leader slightly.
pub async fn read_range_direct(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Stored>, ReadError> {
    let err = |message: String| ReadError {
        stream: stream.to_string(),
        filter: subject.to_string(),
        message,
    };
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    let mut next = from.max(1);
    while next <= to {
        match s.direct_get_next_for_subject(subject, Some(next)).await {
            Ok(m) if m.sequence <= to => {
                next = m.sequence + 1;
                out.push(Stored {
                    seq: m.sequence,
                    stored_at: time_of(m.time),
                    subject: m.subject.to_string(),
                    payload: m.payload,
                    headers: Some(m.headers),
                });
            }
            Ok(_) => break,
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(err(e.to_string())),
        }
    }
    Ok(out)
}

/// The last message on `subject` (wildcards allowed), if any.
pub async fn last_on_subject(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<Option<Stored>, ReadError> {
    let err = |message: String| ReadError {
        stream: stream.to_string(),
        filter: subject.to_string(),
        message,
    };
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    match s.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(Stored {
            seq: m.sequence,
            stored_at: time_of(m.time),
            subject: m.subject.to_string(),
            payload: m.payload,
            headers: Some(m.headers),
        })),
        Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}
