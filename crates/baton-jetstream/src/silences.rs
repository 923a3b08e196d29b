//! Silences in KV `baton-silences`: adding, ending and listing them.
//!
//! Every operator surface (the CLI's `baton silence`, the web console) goes
//! through these functions, so a silence made anywhere is checked the same
//! way and stored the same way, and the stall detector, which watches the
//! bucket, honours it by the same rules (`baton_core::stall::Silence::mutes`).

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use baton_core::{AgentId, AlertKind, TaskId, Time, stall::Silence, subjects, wire::time_to_wire};
use baton_proto::{prost::Message, v1 as pb};

use crate::read;

/// What an operator asks for: mute alerts matching every given field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSilence {
    pub task: Option<String>,
    /// An alert kind as `AlertKind::parse` reads it (`heartbeat_missed`).
    pub kind: Option<String>,
    pub agent: Option<String>,
    /// How long; more than zero.
    pub duration: Duration,
    pub reason: String,
    /// Who silenced.
    pub by: String,
}

/// Why a silence could not be made, ended or read.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence needs at least one of task, kind, agent (muting everything is not allowed)")]
    NoMatcher,
    #[error("a silence must last longer than 0s (e.g. 30m)")]
    ZeroLength,
    #[error("unknown alert kind {kind:?}: use one of {known}")]
    UnknownKind { kind: String, known: String },
    #[error("invalid {field}: {source}")]
    Id {
        field: &'static str,
        source: baton_core::IdError,
    },
    #[error("no silence {0:?}")]
    NotFound(String),
    #[error("silence {id:?} is stored but invalid: {message}")]
    Invalid { id: String, message: String },
    #[error("KV {bucket}: {message}", bucket = subjects::SILENCES_BUCKET)]
    Store { message: String },
}

fn store_err(e: impl std::fmt::Display) -> SilenceError {
    SilenceError::Store {
        message: e.to_string(),
    }
}

impl NewSilence {
    /// Checks the request and makes the silence (id `s<nuid>`), starting at
    /// `now`. Pure: nothing is stored.
    pub fn build(&self, now: Time) -> Result<Silence, SilenceError> {
        fn given(s: &Option<String>) -> Option<&str> {
            s.as_deref().filter(|s| !s.is_empty())
        }
        let (task, kind, agent) = (given(&self.task), given(&self.kind), given(&self.agent));
        if task.is_none() && kind.is_none() && agent.is_none() {
            return Err(SilenceError::NoMatcher);
        }
        if self.duration.is_zero() {
            return Err(SilenceError::ZeroLength);
        }
        let kind = kind
            .map(|k| {
                AlertKind::parse(k).ok_or_else(|| SilenceError::UnknownKind {
                    kind: k.to_string(),
                    known: AlertKind::ALL.map(AlertKind::as_str).join(", "),
                })
            })
            .transpose()?;
        Ok(Silence {
            id: format!("s{}", nuid::next()),
            task: task
                .map(TaskId::new)
                .transpose()
                .map_err(|source| SilenceError::Id {
                    field: "task",
                    source,
                })?,
            kind,
            agent: agent
                .map(AgentId::new)
                .transpose()
                .map_err(|source| SilenceError::Id {
                    field: "agent",
                    source,
                })?,
            until: now.saturating_add(self.duration),
            created_by: self.by.clone(),
            reason: self.reason.clone(),
            created_at: now,
        })
    }
}

async fn bucket(js: &jetstream::Context) -> Result<kv::Store, SilenceError> {
    js.get_key_value(subjects::SILENCES_BUCKET)
        .await
        .map_err(store_err)
}

/// Stores a silence (the detector picks it up from its watch).
pub async fn add(js: &jetstream::Context, silence: &Silence) -> Result<(), SilenceError> {
    bucket(js)
        .await?
        .put(
            &silence.id,
            pb::Silence::from(silence).encode_to_vec().into(),
        )
        .await
        .map(|_| ())
        .map_err(store_err)
}

/// Ends silence `id` at `now` (its `until` becomes `now`; the record stays,
/// so `list` can show it ended). Returns the silence as stored before.
pub async fn expire(js: &jetstream::Context, id: &str, now: Time) -> Result<Silence, SilenceError> {
    let kv = bucket(js).await?;
    // A key that is not a valid KV key cannot name a silence.
    let Some(bytes) = kv.get(id).await.ok().flatten() else {
        return Err(SilenceError::NotFound(id.to_string()));
    };
    let mut s = pb::Silence::decode(bytes).map_err(|e| SilenceError::Invalid {
        id: id.to_string(),
        message: e.to_string(),
    })?;
    let before = Silence::try_from(s.clone()).map_err(|e| SilenceError::Invalid {
        id: id.to_string(),
        message: e.to_string(),
    })?;
    s.until = Some(time_to_wire(now));
    kv.put(id, s.encode_to_vec().into())
        .await
        .map_err(store_err)?;
    Ok(before)
}

/// Every stored silence that decodes (ended ones too), soonest end first.
pub async fn list(js: &jetstream::Context) -> Result<Vec<Silence>, SilenceError> {
    let mut list = Vec::new();
    read::for_each_kv_value(js, subjects::SILENCES_BUCKET, |_, stored| {
        if let Some(s) = decode(&stored.payload) {
            list.push(s);
        }
    })
    .await
    .map_err(store_err)?;
    list.sort_by_key(|s| s.until);
    Ok(list)
}

/// A stored silence, if it is valid (every reader skips invalid ones, as
/// the detector does).
pub fn decode(bytes: &[u8]) -> Option<Silence> {
    pb::Silence::decode(bytes)
        .ok()
        .and_then(|s| Silence::try_from(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> NewSilence {
        NewSilence {
            task: Some("t1".into()),
            duration: Duration::from_secs(60),
            by: "ops".into(),
            ..NewSilence::default()
        }
    }

    #[test]
    fn builds_a_silence_from_now() {
        let now = Time::from_unix_millis(1_000);
        let s = req().build(now).unwrap();
        assert_eq!(s.task.unwrap().as_str(), "t1");
        assert_eq!(s.until, Time::from_unix_millis(61_000));
        assert!(s.id.starts_with('s'));
    }

    #[test]
    fn refuses_what_the_detector_would_refuse() {
        let now = Time::from_unix_millis(0);
        let none = NewSilence {
            task: Some(String::new()),
            ..req()
        };
        assert!(matches!(none.build(now), Err(SilenceError::NoMatcher)));
        let zero = NewSilence {
            duration: Duration::ZERO,
            ..req()
        };
        assert!(matches!(zero.build(now), Err(SilenceError::ZeroLength)));
        let kind = NewSilence {
            kind: Some("nope".into()),
            ..req()
        };
        assert!(matches!(
            kind.build(now),
            Err(SilenceError::UnknownKind { .. })
        ));
        let bad = NewSilence {
            task: Some("a b".into()),
            ..req()
        };
        assert!(matches!(bad.build(now), Err(SilenceError::Id { .. })));
    }
}
