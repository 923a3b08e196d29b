//! The leadership lease and the fences that make it safe (decision 8).
//!
//! Several instances of a service may run; one is active. Being active is a
//! lease in KV `baton-leaders` (key = service), taken and renewed with
//! compare-and-set on the key's revision, exactly like a task claim:
//!
//! - **Take**: `create` when the key is absent; `update` over the holder's
//!   revision when the holder released it, or when this standby has watched
//!   the same revision for the holder's `ttl` without a change. A standby
//!   counts only time during which it could read the key, so a broker
//!   outage does not make every standby pounce the moment it ends.
//! - **Renew**: `update` over our own last revision. A refusal means someone
//!   else holds it now: we were deposed.
//! - **Release** on a graceful stop: the key is updated to "no holder", so a
//!   standby takes over at its next look instead of after `ttl`.
//!
//! A lease alone cannot stop a deposed leader that was paused (GC, SIGSTOP,
//! a partition) from writing when it resumes: the broker can only refuse a
//! write by what is in the write's own stream. So each new term writes a
//! **fence** into every stream the service writes to
//! (`baton.fence.<stream>.<service>`, or the reserved KV key
//! `_fence.<service>`), with compare-and-set and only if no later term has
//! fenced it, and every write of the term is checked against it:
//!
//! - in a stream the service writes alone (its own KV snapshot bucket), a
//!   **chain**: each write expects the stream's last sequence
//!   (`Nats-Expected-Last-Sequence`), starting at the fence. Any write by
//!   another instance breaks the chain. Chained writes pipeline on a
//!   cluster (2,000 in flight measured here), so the state flushes stay fast;
//!   [`FenceTarget::chain`] streams are written only by the outbox's
//!   `SoleWriter`.
//! - in a shared stream (alerts, dead letters, checkpoints), a **subject
//!   fence**: each write carries `Nats-Expected-Last-Subject-Sequence(-Subject)`
//!   naming the fence. On a cluster the stream leader refuses two such
//!   writes in flight at once (10164), so they are written one at a time
//!   and a refusal is checked against the fence ([`still_fenced`]) before
//!   it counts as deposition.
//!
//! Once a later term has fenced a stream, the broker refuses every write of
//! the earlier one there, which is how a deposed instance learns it at the
//! latest.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        kv::{self, CreateErrorKind, UpdateErrorKind},
        message::PublishMessage,
    },
};
use baton_core::{Time, subjects, wire::time_to_wire};
use baton_proto::{prost::Message, v1 as pb};
use tokio::time::Instant;

/// Header naming the subject whose last sequence a publish expects.
const EXPECTED_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
const EXPECTED_SEQ_HEADER: &str = "Nats-Expected-Last-Subject-Sequence";

/// Why a lease or fence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    /// The broker did not answer (or answered with an error): try again.
    #[error("leadership lease of {service}: broker unavailable: {message}")]
    Unavailable { service: String, message: String },
    /// A stored lease or fence could not be read.
    #[error("leadership lease of {service}: unreadable value: {message}")]
    Unreadable { service: String, message: String },
}

/// What one look at the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    /// We hold it now, in `term`.
    Won { term: u64 },
    /// Another instance holds it.
    Held { holder: String, term: u64 },
}

/// What a renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Someone else holds it (or it was released over our head).
    Lost {
        holder: String,
        term: u64,
    },
}

#[derive(Debug, Clone)]
struct Held {
    revision: u64,
    term: u64,
    acquired_at: Time,
}

/// The leadership lease of one service instance.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    service: String,
    instance: String,
    ttl: Duration,
    held: Option<Held>,
    /// A standby's view of the holder: the revision it saw, and since when
    /// (this process's monotonic clock) it has seen nothing else.
    watching: Option<(u64, Instant)>,
}

impl Lease {
    /// Opens the lease of `service` for `instance`; `ttl` is how long a
    /// standby waits for a renewal before taking over.
    pub async fn open(
        js: &jetstream::Context,
        service: &str,
        instance: &str,
        ttl: Duration,
    ) -> Result<Lease, LeadershipError> {
        let kv = js
            .get_key_value(subjects::LEADERS_BUCKET)
            .await
            .map_err(|e| unavailable(service, e))?;
        Ok(Lease {
            kv,
            service: service.to_string(),
            instance: instance.to_string(),
            ttl,
            held: None,
            watching: None,
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The term held, if any.
    pub fn term(&self) -> Option<u64> {
        self.held.as_ref().map(|h| h.term)
    }

    fn value(&self, term: u64, acquired_at: Time, now: Time) -> pb::Leadership {
        pb::Leadership {
            service: self.service.clone(),
            instance: self.instance.clone(),
            term,
            acquired_at: Some(time_to_wire(acquired_at)),
            renewed_at: Some(time_to_wire(now)),
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// One look at the lease: takes it if it is free, released, or its
    /// holder has not renewed it for its ttl while we watched. `wall` is for
    /// the record only; expiry is judged on the monotonic clock.
    pub async fn campaign(&mut self, wall: Time) -> Result<Campaign, LeadershipError> {
        if let Some(term) = self.term() {
            return Ok(Campaign::Won { term });
        }
        let entry = match self.timed(self.kv.entry(&self.service)).await {
            Ok(Ok(entry)) => entry,
            Ok(Err(e)) => return Err(self.lost_sight(e)),
            Err(e) => return Err(self.lost_sight(e)),
        };
        let current = match &entry {
            Some(e) if e.operation == kv::Operation::Put => Some((
                e.revision,
                pb::Leadership::decode(e.value.clone()).map_err(|err| {
                    LeadershipError::Unreadable {
                        service: self.service.clone(),
                        message: err.to_string(),
                    }
                })?,
            )),
            // Deleted or purged: free, but its revision must be matched.
            Some(e) => Some((e.revision, pb::Leadership::default())),
            None => None,
        };
        let (expected, next_term) = match current {
            None => (None, 1),
            Some((revision, lease)) => {
                let free = lease.instance.is_empty() || lease.instance == self.instance;
                let expired = match self.watching {
                    Some((seen, since)) if seen == revision => {
                        let ttl = Duration::from_millis(lease.ttl_ms.max(1));
                        since.elapsed() >= ttl
                    }
                    _ => {
                        self.watching = Some((revision, Instant::now()));
                        false
                    }
                };
                if !(free || expired) {
                    return Ok(Campaign::Held {
                        holder: lease.instance,
                        term: lease.term,
                    });
                }
                (Some(revision), lease.term + 1)
            }
        };
        let value = self.value(next_term, wall, wall).encode_to_vec();
        let taken = match expected {
            None => self
                .timed(self.kv.create(&self.service, value.into()))
                .await
                .map(|r| {
                    r.map_err(|e| match e.kind() {
                        CreateErrorKind::AlreadyExists => None,
                        _ => Some(e.to_string()),
                    })
                }),
            Some(revision) => self
                .timed(self.kv.update(&self.service, value.into(), revision))
                .await
                .map(|r| {
                    r.map_err(|e| match e.kind() {
                        UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(e.to_string()),
                    })
                }),
        };
        match taken {
            Ok(Ok(revision)) => {
                self.watching = None;
                self.held = Some(Held {
                    revision,
                    term: next_term,
                    acquired_at: wall,
                });
                Ok(Campaign::Won { term: next_term })
            }
            // Someone else was faster: look again next time.
            Ok(Err(None)) => {
                self.watching = None;
                Ok(Campaign::Held {
                    holder: String::new(),
                    term: next_term,
                })
            }
            Ok(Err(Some(message))) => Err(self.lost_sight(message)),
            Err(e) => Err(self.lost_sight(e)),
        }
    }

    /// Renews the lease we hold.
    pub async fn renew(&mut self, wall: Time) -> Result<Renewal, LeadershipError> {
        let Some(held) = self.held.clone() else {
            return Ok(Renewal::Lost {
                holder: String::new(),
                term: 0,
            });
        };
        let value = self
            .value(held.term, held.acquired_at, wall)
            .encode_to_vec();
        match self
            .timed(self.kv.update(&self.service, value.into(), held.revision))
            .await
        {
            Ok(Ok(revision)) => {
                if let Some(h) = &mut self.held {
                    h.revision = revision;
                }
                Ok(Renewal::Renewed)
            }
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                self.held = None;
                let (holder, term) = self.holder().await.unwrap_or_default();
                Ok(Renewal::Lost { holder, term })
            }
            Ok(Err(e)) => Err(unavailable(&self.service, e)),
            Err(e) => Err(unavailable(&self.service, e)),
        }
    }

    /// Gives the lease up (a graceful stop): a standby takes it at its next
    /// look. Does nothing if we do not hold it.
    pub async fn release(&mut self) -> Result<(), LeadershipError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let value = pb::Leadership {
            instance: String::new(),
            ..self.value(held.term, held.acquired_at, held.acquired_at)
        };
        match self
            .timed(
                self.kv
                    .update(&self.service, value.encode_to_vec().into(), held.revision),
            )
            .await
        {
            // Lost meanwhile: nothing to give up.
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
            Ok(Err(e)) => Err(unavailable(&self.service, e)),
            Err(e) => Err(unavailable(&self.service, e)),
        }
    }

    /// Forgets the lease without touching the broker (we learned from a
    /// refused write that a later term exists).
    pub fn abandon(&mut self) {
        self.held = None;
        self.watching = None;
    }

    /// The current holder and term, as stored.
    pub async fn holder(&self) -> Option<(String, u64)> {
        let entry = self
            .timed(self.kv.entry(&self.service))
            .await
            .ok()?
            .ok()??;
        let lease = pb::Leadership::decode(entry.value).ok()?;
        Some((lease.instance, lease.term))
    }

    /// Lost sight of the holder: start watching afresh next time.
    fn lost_sight(&mut self, e: impl std::fmt::Display) -> LeadershipError {
        self.watching = None;
        unavailable(&self.service, e)
    }

    async fn timed<F: std::future::IntoFuture>(
        &self,
        f: F,
    ) -> Result<F::Output, tokio::time::error::Elapsed> {
        tokio::time::timeout(op_timeout(self.ttl), f).await
    }
}

/// Each lease operation gets this long: well inside the ttl.
fn op_timeout(ttl: Duration) -> Duration {
    (ttl / 2).max(Duration::from_millis(200))
}

fn unavailable(service: &str, e: impl std::fmt::Display) -> LeadershipError {
    LeadershipError::Unavailable {
        service: service.to_string(),
        message: e.to_string(),
    }
}

/// A stream a service writes to, and where its fence lives in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceTarget {
    /// The stream's name (`BATON_ALERTS`, `KV_baton-tasks`).
    pub stream: String,
    /// Every publish subject starting with this goes to the stream.
    pub covers: String,
    /// The fence's subject in the stream.
    pub fence_subject: String,
    /// Only this service writes the stream: writes are chained on the
    /// stream's last sequence (see the module doc) instead of naming the
    /// fence subject.
    pub chain: bool,
}

impl FenceTarget {
    /// The fence of `service` in the shared KV bucket `bucket`: the
    /// reserved key `_fence.<service>`.
    pub fn bucket(bucket: &str, service: &str) -> FenceTarget {
        FenceTarget {
            stream: format!("KV_{bucket}"),
            covers: format!("$KV.{bucket}."),
            fence_subject: format!("$KV.{bucket}.{}{service}", subjects::FENCE_KEY_PREFIX),
            chain: false,
        }
    }

    /// The fence of `service` in KV bucket `bucket`, which only it writes:
    /// its writes are chained from the fence.
    pub fn sole_bucket(bucket: &str, service: &str) -> FenceTarget {
        FenceTarget {
            chain: true,
            ..FenceTarget::bucket(bucket, service)
        }
    }

    /// The fence of `service` in `BATON_ALERTS`, covering `baton.raise.`.
    pub fn alerts(service: &str) -> FenceTarget {
        FenceTarget {
            stream: subjects::ALERTS_STREAM.into(),
            covers: "baton.raise.".into(),
            fence_subject: subjects::fence("alerts", service),
            chain: false,
        }
    }

    /// The fence of `service` in `BATON_DLQ`, covering `baton.dlq.`.
    pub fn dlq(service: &str) -> FenceTarget {
        FenceTarget {
            stream: subjects::DLQ_STREAM.into(),
            covers: "baton.dlq.".into(),
            fence_subject: subjects::fence("dlq", service),
            chain: false,
        }
    }
}

/// A fence raised for a term: writes to `covers` carry `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub target: FenceTarget,
    pub seq: u64,
}

/// Every fence of one term: the headers its writes carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fences {
    pub term: u64,
    fences: Vec<Fence>,
}

impl Fences {
    /// No fences: writes are not fenced (tools, tests of one instance).
    pub fn none() -> Fences {
        Fences::default()
    }

    /// The fence a publish to `subject` must carry, if any.
    pub fn for_subject(&self, subject: &str) -> Option<&Fence> {
        self.fences
            .iter()
            .find(|f| subject.starts_with(&f.target.covers) && subject != f.target.fence_subject)
    }

    /// The subject fence a publish to `subject` carries, if any (chained
    /// streams are fenced by their writer, not by headers per subject).
    pub fn subject_fence(&self, subject: &str) -> Option<&Fence> {
        self.for_subject(subject).filter(|f| !f.target.chain)
    }

    /// Where the chain of a chained stream starts (the fence's sequence).
    pub fn chain_start(&self, stream: &str) -> Option<u64> {
        self.fences
            .iter()
            .find(|f| f.target.chain && f.target.stream == stream)
            .map(|f| f.seq)
    }

    /// Adds the subject-fence headers for `subject` to `headers`; true if
    /// fenced that way.
    pub fn apply(&self, subject: &str, headers: &mut HeaderMap) -> bool {
        match self.subject_fence(subject) {
            Some(f) => {
                headers.insert(EXPECTED_SEQ_HEADER, f.seq.to_string().as_str());
                headers.insert(EXPECTED_SUBJECT_HEADER, f.target.fence_subject.as_str());
                true
            }
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Fence> {
        self.fences.iter()
    }
}

/// Why fences could not be raised.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// A later (or concurrent) term fenced the stream: we are not leader.
    #[error("{stream} is fenced by term {term} of {holder}: this instance is not the leader")]
    Superseded {
        stream: String,
        holder: String,
        term: u64,
    },
    #[error("cannot raise the fence in {stream}: {message}")]
    Unavailable { stream: String, message: String },
}

/// Raises this term's fence in every target stream, in order. Each fence
/// is written with compare-and-set on its subject, and only if the fence
/// there belongs to an earlier term.
pub async fn raise_fences(
    js: &jetstream::Context,
    lease: &pb::Leadership,
    targets: &[FenceTarget],
) -> Result<Fences, FenceError> {
    let mut fences = Vec::with_capacity(targets.len());
    for target in targets {
        let err = |message: String| FenceError::Unavailable {
            stream: target.stream.clone(),
            message,
        };
        let stream = js
            .get_stream_no_info(&target.stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        let last = match stream
            .get_last_raw_message_by_subject(&target.fence_subject)
            .await
        {
            Ok(m) => Some(m),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                None
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let expected = match &last {
            Some(m) => {
                if let Ok(prior) = pb::Leadership::decode(m.payload.clone())
                    && prior.term >= lease.term
                    && prior.instance != lease.instance
                {
                    return Err(FenceError::Superseded {
                        stream: target.stream.clone(),
                        holder: prior.instance,
                        term: prior.term,
                    });
                }
                m.sequence
            }
            None => 0,
        };
        let msg = PublishMessage::build()
            .payload(lease.encode_to_vec().into())
            .expected_last_subject_sequence(expected);
        let ack = js
            .send_publish(target.fence_subject.clone(), msg)
            .await
            .map_err(|e| err(e.to_string()))?
            .await;
        match ack {
            Ok(ack) => fences.push(Fence {
                target: target.clone(),
                seq: ack.sequence,
            }),
            Err(e) if crate::publish::is_wrong_last_sequence(&e) => {
                return Err(FenceError::Superseded {
                    stream: target.stream.clone(),
                    holder: String::new(),
                    term: lease.term,
                });
            }
            Err(e) => return Err(err(e.to_string())),
        }
    }
    Ok(Fences {
        term: lease.term,
        fences,
    })
}

/// Whether `fence` is still the last fence in its stream: a write refused
/// while it is was refused for another reason (on a cluster, another
/// fenced write in flight), not because a later term took over.
pub async fn still_fenced(js: &jetstream::Context, fence: &Fence) -> Result<bool, FenceError> {
    let err = |message: String| FenceError::Unavailable {
        stream: fence.target.stream.clone(),
        message,
    };
    let stream = js
        .get_stream_no_info(&fence.target.stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    match stream
        .get_last_raw_message_by_subject(&fence.target.fence_subject)
        .await
    {
        Ok(m) => Ok(m.sequence == fence.seq),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(false)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The lease record of a term, as fences carry it.
pub fn term_record(service: &str, instance: &str, term: u64, now: Time) -> pb::Leadership {
    pb::Leadership {
        service: service.to_string(),
        instance: instance.to_string(),
        term,
        acquired_at: Some(time_to_wire(now)),
        renewed_at: Some(time_to_wire(now)),
        ttl_ms: 0,
    }
}
