//! A service's materialised state as a snapshot: per-key values in a KV
//! bucket plus a checkpoint, the `BATON_EVENTS` sequence up to which every
//! state change is stored.
//!
//! The checkpoint, not the consumer's ack floor, is where a restarted
//! service resumes: it loads the bucket, re-reads events after the
//! checkpoint, and skips those a key's state already reflects (each state
//! records the last sequence it applied). So acknowledging an event needs
//! only its external effects (alerts, dead letters) to be durable, while
//! state is written in coalesced flushes: under load one KV write per key
//! per flush, however many events touched it.

use async_nats::jetstream::{self, kv};
use baton_core::subjects;

use crate::outbox::{Outbox, Outgoing, StoreError};

/// Reads and writes one service's checkpoint. Writes go through the
/// service's outbox, so they carry its term's fence: a deposed instance
/// cannot move the checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    kv: kv::Store,
    name: String,
    outbox: Option<Outbox>,
}

/// Why the checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {name}: {message}")]
pub struct CheckpointError {
    pub name: String,
    pub message: String,
    /// Refused by a later term's fence.
    pub deposed: bool,
}

impl Checkpoint {
    /// The checkpoint called `name` (the service's consumer name).
    pub async fn open(js: &jetstream::Context, name: &str) -> Result<Checkpoint, CheckpointError> {
        let kv = js
            .get_key_value(subjects::CHECKPOINTS_BUCKET)
            .await
            .map_err(|e| CheckpointError {
                name: name.to_string(),
                message: e.to_string(),
                deposed: false,
            })?;
        Ok(Checkpoint {
            kv,
            name: name.to_string(),
            outbox: None,
        })
    }

    /// The stored sequence (0 = none yet: replay from the start).
    pub async fn load(&self) -> Result<u64, CheckpointError> {
        let value = self.kv.get(&self.name).await.map_err(|e| self.err(e))?;
        match value {
            None => Ok(0),
            Some(bytes) => {
                baton_jetstream::read::parse_checkpoint(&bytes).ok_or_else(|| CheckpointError {
                    name: self.name.clone(),
                    deposed: false,
                    message: format!("unreadable value {:?}", String::from_utf8_lossy(&bytes)),
                })
            }
        }
    }

    /// Records that every state change up to `seq` is stored.
    /// Writes the checkpoint through `outbox` from now on (fenced).
    pub fn writing_through(mut self, outbox: Outbox) -> Checkpoint {
        self.outbox = Some(outbox);
        self
    }

    pub async fn store(&self, seq: u64) -> Result<(), CheckpointError> {
        let Some(outbox) = &self.outbox else {
            return self
                .kv
                .put(&self.name, seq.to_string().into())
                .await
                .map(|_| ())
                .map_err(|e| self.err(e));
        };
        let item = Outgoing::new(
            format!("$KV.{}.{}", subjects::CHECKPOINTS_BUCKET, self.name),
            seq.to_string(),
        );
        outbox.store_one(&item).await.map_err(|e| CheckpointError {
            name: self.name.clone(),
            deposed: matches!(e, StoreError::Deposed),
            message: e.to_string(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError {
            name: self.name.clone(),
            message: e.to_string(),
            deposed: false,
        }
    }
}
