//! Publishing to a stream until the broker acknowledges, with the same
//! `Nats-Msg-Id` on every attempt so a retry is stored once.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, ErrorCode, context::PublishErrorKind, message::PublishMessage, publish::PublishAck,
    },
};
use bytes::Bytes;

use crate::connect::{Denials, Denied};

/// The header that scopes `Nats-Expected-Last-Subject-Sequence` to a
/// wildcard subject (server 2.11+); async-nats has no builder method for it.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// Compare-and-set: store only if the last message on `scope` has sequence
/// `expected` (0 = there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cas {
    pub expected: u64,
    pub scope: String,
}

/// How long to keep trying.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Give up after this long in total (leader elections take seconds).
    pub budget: Duration,
    /// Wait this long for one acknowledgement.
    pub attempt_timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            budget: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a publish did not get stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The compare-and-set precondition failed. `after_retry` means an
    /// earlier attempt of this very message may have been stored (its ack
    /// was lost), so the caller should look before concluding it lost.
    #[error("compare-and-set failed: {detail}")]
    WrongLastSequence { detail: String, after_retry: bool },
    /// The broker did not acknowledge within the budget.
    #[error("no acknowledgement for {subject} after {attempts} attempts in {budget:?}: {last}")]
    Unavailable {
        subject: String,
        attempts: u32,
        budget: Duration,
        last: String,
    },
    /// The server's permissions for these credentials do not allow
    /// publishing on `subject` (it reported a permissions violation and
    /// dropped the message).
    #[error(
        "not permitted to publish on {subject}: the server's permissions for these credentials do not allow it"
    )]
    NotPermitted { subject: String },
    /// The broker refused the message for good (e.g. no stream for the
    /// subject, message too large).
    #[error("the broker refused the message on {subject}: {reason}")]
    Refused { subject: String, reason: String },
    /// Not published: every reader would refuse it (e.g. a field over its
    /// size limit), so publishing it would only make a dead letter.
    #[error("not published on {subject}: {reason}")]
    Invalid { subject: String, reason: String },
}

/// Publishes `payload` to `subject` with `Nats-Msg-Id: msg_id` (and an
/// optional compare-and-set) and waits for the acknowledgement, retrying
/// transient failures with the same id.
pub async fn publish_durable(
    js: &jetstream::Context,
    subject: &str,
    payload: Bytes,
    msg_id: &str,
    cas: Option<&Cas>,
    retry: Retry,
) -> Result<PublishAck, PublishError> {
    publish_durable_watched(js, None, subject, payload, msg_id, cas, retry).await
}

/// [`publish_durable`], and when the server reports on `denials` (from
/// [`NatsOptions::connect_watched`](crate::NatsOptions::connect_watched))
/// that it refused a publish to `subject`, fails at once with
/// [`PublishError::NotPermitted`] instead of waiting for an ack that never
/// comes.
pub async fn publish_durable_watched(
    js: &jetstream::Context,
    denials: Option<&Denials>,
    subject: &str,
    payload: Bytes,
    msg_id: &str,
    cas: Option<&Cas>,
    retry: Retry,
) -> Result<PublishAck, PublishError> {
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    let mut backoff = Duration::from_millis(20);
    loop {
        attempts += 1;
        let mut headers = HeaderMap::new();
        if let Some(cas) = cas {
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, cas.scope.as_str());
        }
        // `headers` first: the builder's `headers()` replaces what the other
        // methods set.
        let mut msg = PublishMessage::build()
            .headers(headers)
            .payload(payload.clone())
            .message_id(msg_id);
        if let Some(cas) = cas {
            msg = msg.expected_last_subject_sequence(cas.expected);
        }
        // Watch before sending, so a refusal cannot slip by unseen.
        let mut refusals = denials.map(Denials::watch);
        let acked = tokio::time::timeout(retry.attempt_timeout, async {
            js.send_publish(subject.to_string(), msg).await?.await
        });
        let outcome = tokio::select! {
            outcome = acked => outcome,
            () = refused(refusals.as_mut(), subject) => {
                return Err(PublishError::NotPermitted { subject: subject.to_string() });
            }
        };
        let err = match outcome {
            Ok(Ok(ack)) => return Ok(ack),
            Ok(Err(e)) => e,
            Err(_) => jetstream::context::PublishError::new(PublishErrorKind::TimedOut),
        };
        // On a cluster the stream leader refuses a compare-and-set that
        // conflicts with a write still being replicated with 10164 instead
        // of 10071 (same meaning), and one it cannot judge yet with 10163.
        let code = jetstream_code(&err);
        let conflict = is_wrong_last_sequence(&err);
        let not_ready = code == Some(ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY);
        match err.kind() {
            _ if conflict => {
                return Err(PublishError::WrongLastSequence {
                    detail: err.to_string(),
                    after_retry: attempts > 1,
                });
            }
            PublishErrorKind::StreamNotFound if no_stream_for(js, subject).await => {
                return Err(PublishError::Refused {
                    subject: subject.to_string(),
                    reason: "no stream stores this subject: start the Baton services (or \
                             `baton dev`), which create the streams"
                        .into(),
                });
            }
            PublishErrorKind::TimedOut
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending => {}
            _ if not_ready => {}
            _ => {
                return Err(PublishError::Refused {
                    subject: subject.to_string(),
                    reason: err.to_string(),
                });
            }
        }
        if started.elapsed() + backoff >= retry.budget {
            return Err(PublishError::Unavailable {
                subject: subject.to_string(),
                attempts,
                budget: retry.budget,
                last: err.to_string(),
            });
        }
        tracing::debug!(subject, attempts, error = %err, "publish not acknowledged; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The JetStream error code behind a publish error, if the server sent one.
/// Whether the broker refused a publish because an expected last
/// sequence did not match: error 10071, or 10164 (what a publish with
/// `Nats-Expected-Last-Subject-Sequence-Subject` gets, and what a cluster's
/// stream leader answers for a conflict with a write still in flight).
pub fn is_wrong_last_sequence(err: &jetstream::context::PublishError) -> bool {
    err.kind() == PublishErrorKind::WrongLastSequence
        || jetstream_code(err) == Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
}

fn jetstream_code(err: &jetstream::context::PublishError) -> Option<ErrorCode> {
    std::error::Error::source(err)?
        .downcast_ref::<jetstream::Error>()
        .map(jetstream::Error::error_code)
}

/// Resolves when `refusals` reports a refused publish to `subject`; never
/// without a watch.
async fn refused(refusals: Option<&mut tokio::sync::broadcast::Receiver<Denied>>, subject: &str) {
    let Some(rx) = refusals else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(Denied::Publish(s)) if s == subject => return,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await;
            }
        }
    }
}

/// Whether JetStream answers that no stream stores `subject` (as opposed to
/// not answering at all, as during a leader election).
async fn no_stream_for(js: &jetstream::Context, subject: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), js.stream_by_subject(subject)).await,
        Ok(Err(e)) if e.to_string().contains("not found") || e.to_string().contains("no stream")
    )
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream;
    use baton_testkit::NatsCluster;

    use super::*;

    /// On a 3-node cluster, two compare-and-set publishes racing for the
    /// same scope (two agents claiming one task) end with one stored and
    /// the other told it lost, never refused: the stream leader answers a
    /// conflict with a write still in flight with 10164, not 10071.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_compare_and_set_on_a_cluster_is_one_win_one_conflict() {
        let cluster = NatsCluster::start(3).await.expect("cluster");
        let client = async_nats::connect(cluster.urls()).await.expect("connect");
        let js = jetstream::new(client);
        js.create_stream(stream::Config {
            name: "CAS".into(),
            subjects: vec!["cas.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("R3 stream");
        for round in 0..40 {
            let cas = Cas {
                expected: 0,
                scope: format!("cas.t{round}.*"),
            };
            let claim = |who: &str| {
                let subject = format!("cas.t{round}.{who}");
                let id = format!("{who}-{round}");
                let js = js.clone();
                let cas = cas.clone();
                async move {
                    publish_durable(
                        &js,
                        &subject,
                        Bytes::from_static(b"claim"),
                        &id,
                        Some(&cas),
                        Retry::default(),
                    )
                    .await
                }
            };
            let (a, b) = tokio::join!(claim("a"), claim("b"));
            match (&a, &b) {
                (Ok(_), Err(PublishError::WrongLastSequence { .. }))
                | (Err(PublishError::WrongLastSequence { .. }), Ok(_)) => {}
                _ => panic!("round {round}: expected one win and one conflict, got {a:?} / {b:?}"),
            }
        }
    }
}
