//! The shared decision record of a workflow: read before starting, append
//! when deciding something others depend on. Append-only; a version is a
//! stream sequence.

use baton_core::{
    AgentId, Time, WorkflowId, context::ContextEntry, subjects, wire::read_context_entry,
};
use baton_jetstream::{Cas, PublishError, publish_durable_watched, read};

use crate::{
    agent::Agent,
    error::{BrokerError, ContextError},
};

/// One recorded decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Its version (stream sequence).
    pub version: u64,
    /// When the broker stored it.
    pub stored_at: Time,
    pub entry: ContextEntry,
}

/// The record as read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The version read: the decision-record stream position up to which
    /// every entry of this workflow is in `decisions` (0 = nothing recorded
    /// anywhere yet).
    pub version: u64,
    pub decisions: Vec<Decision>,
    /// Entries every reader skips (undecodable, over a limit, or recorded
    /// under another author's name); the orchestrator dead-letters and
    /// reports each once. They never make the record unreadable.
    pub refused: Vec<RefusedEntry>,
}

/// A decision-record entry that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEntry {
    pub version: u64,
    pub reason: String,
}

/// Handle on one workflow's decision record.
#[derive(Debug, Clone)]
pub struct ContextRecord {
    agent: Agent,
    workflow: WorkflowId,
}

impl ContextRecord {
    pub(crate) fn new(agent: Agent, workflow: WorkflowId) -> ContextRecord {
        ContextRecord { agent, workflow }
    }

    /// Reads every entry. From now on this agent's events in the workflow
    /// carry the version read, so acting on a record that changes later is
    /// detected (`STALE_CONTEXT`).
    pub async fn read(&self) -> Result<Snapshot, ContextError> {
        // Everything stored up to here is read below: the version read is
        // at least this position of the stream.
        let position = self.stream_position().await?;
        let stored = read::read_subject(
            &self.agent.inner.js,
            subjects::CONTEXT_STREAM,
            &subjects::workflow_context(&self.workflow),
            0,
            None,
        )
        .await
        .map_err(BrokerError::from)?;
        let mut snapshot = Snapshot::default();
        for s in stored {
            snapshot.version = s.seq;
            match read_context_entry(&s.subject, &s.payload) {
                Ok(entry) => snapshot.decisions.push(Decision {
                    version: s.seq,
                    stored_at: s.stored_at,
                    entry,
                }),
                Err(e) => snapshot.refused.push(RefusedEntry {
                    version: s.seq,
                    reason: e.to_string(),
                }),
            }
        }
        snapshot.version = snapshot.version.max(position);
        self.agent
            .set_context_version(&self.workflow, snapshot.version);
        Ok(snapshot)
    }

    /// The entries recorded after version `after` (0 = all), without
    /// marking anything as read: for showing an agent what it missed
    /// (its next events still carry the version it actually read).
    pub async fn peek(&self, after: u64) -> Result<Snapshot, ContextError> {
        let position = self.stream_position().await?;
        let stored = read::read_subject(
            &self.agent.inner.js,
            subjects::CONTEXT_STREAM,
            &subjects::workflow_context(&self.workflow),
            after + 1,
            None,
        )
        .await
        .map_err(BrokerError::from)?;
        let mut snapshot = Snapshot {
            version: after,
            ..Snapshot::default()
        };
        for s in stored {
            snapshot.version = s.seq;
            match read_context_entry(&s.subject, &s.payload) {
                Ok(entry) => snapshot.decisions.push(Decision {
                    version: s.seq,
                    stored_at: s.stored_at,
                    entry,
                }),
                Err(e) => snapshot.refused.push(RefusedEntry {
                    version: s.seq,
                    reason: e.to_string(),
                }),
            }
        }
        snapshot.version = snapshot.version.max(position);
        Ok(snapshot)
    }

    /// The decisions recorded since this agent last read the record (none
    /// when it is up to date), without marking them as read.
    pub async fn unread(&self) -> Result<Vec<Decision>, ContextError> {
        let read = self.agent.context_version(&self.workflow);
        if self.latest().await? <= read {
            return Ok(Vec::new());
        }
        Ok(self.peek(read).await?.decisions)
    }

    /// The workflow this record belongs to.
    pub fn workflow(&self) -> &WorkflowId {
        &self.workflow
    }

    async fn stream_position(&self) -> Result<u64, ContextError> {
        let mut stream = self
            .agent
            .inner
            .js
            .get_stream(subjects::CONTEXT_STREAM)
            .await
            .map_err(|e| BrokerError::Other(e.to_string()))?;
        Ok(stream
            .info()
            .await
            .map_err(|e| BrokerError::Other(e.to_string()))?
            .state
            .last_sequence)
    }

    /// Appends a decision; returns its version. Refused with
    /// [`ContextError::Stale`] if someone recorded a decision since this
    /// agent last read the record: decide again with what they decided.
    pub async fn record(
        &self,
        summary: &str,
        body: &str,
        supersedes: Option<u64>,
    ) -> Result<u64, ContextError> {
        let entry = ContextEntry {
            workflow: self.workflow.clone(),
            author: self.agent.id().clone(),
            summary: summary.to_string(),
            body: body.to_string(),
            supersedes: supersedes.unwrap_or(0),
            recorded_at: Some(crate::agent::wall_clock()),
        };
        baton_core::wire::check_entry_limits(&entry)
            .map_err(|e| ContextError::Invalid(e.to_string()))?;
        let read_version = self.agent.context_version(&self.workflow);
        let latest = self.latest().await?;
        if latest > read_version {
            return Err(ContextError::Stale {
                workflow: self.workflow.to_string(),
                latest,
            });
        }
        // Compare-and-set on the record's subject: a decision recorded
        // between our check and our append makes this fail instead.
        let cas = Cas {
            expected: latest,
            scope: subjects::workflow_context(&self.workflow),
        };
        let msg_id = nuid::next().to_string();
        match publish_durable_watched(
            &self.agent.inner.js,
            Some(&self.agent.inner.denials),
            &subjects::context(&self.workflow, self.agent.id()),
            entry.encode_to_vec().into(),
            &msg_id,
            Some(&cas),
            self.agent.inner.retry,
        )
        .await
        {
            Ok(ack) => {
                self.agent.set_context_version(&self.workflow, ack.sequence);
                Ok(ack.sequence)
            }
            Err(PublishError::WrongLastSequence { .. }) => Err(ContextError::Stale {
                workflow: self.workflow.to_string(),
                latest: self.latest().await?,
            }),
            Err(e) => Err(ContextError::Broker(e.into())),
        }
    }

    /// Version of the record's last entry (0 = none).
    pub async fn latest(&self) -> Result<u64, ContextError> {
        Ok(read::last_on_subject(
            &self.agent.inner.js,
            subjects::CONTEXT_STREAM,
            &subjects::workflow_context(&self.workflow),
        )
        .await
        .map_err(BrokerError::from)?
        .map_or(0, |s| s.seq))
    }

    /// The author of an entry, for display.
    pub fn author_of(decision: &Decision) -> &AgentId {
        &decision.entry.author
    }
}
