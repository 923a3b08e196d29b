//! The decision record and stale-context detection.
//!
//! Each workflow has one append-only record of decisions (stream
//! `BATON_CONTEXT`); an entry's version is its stream sequence. An agent that
//! claims, accepts, offers or completes while holding a version older than a
//! decision recorded before it acted worked from stale context: that is the
//! "context divergence" failure, and it raises `STALE_CONTEXT` naming what
//! the agent missed.

use std::collections::HashMap;

pub use crate::catalogue::stale_context_alert;

use crate::{
    event::{Event, EventKind, EventMeta},
    ids::{AgentId, WorkflowId},
    time::Time,
};

/// One decision, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    pub workflow: WorkflowId,
    pub author: AgentId,
    pub summary: String,
    pub body: String,
    /// Version of an earlier entry this one replaces (0 = none).
    pub supersedes: u64,
    /// The author's clock; informational.
    pub recorded_at: Option<Time>,
}

/// A recorded decision with its place in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Stream sequence = version.
    pub version: u64,
    /// Broker time it was stored.
    pub stored_at: Time,
    pub author: AgentId,
    pub summary: String,
}

/// The decisions of every workflow, in version order, as far as known.
#[derive(Debug, Clone, Default)]
pub struct DecisionLog {
    workflows: HashMap<WorkflowId, Vec<Decision>>,
    /// Highest stream sequence seen.
    last_seq: u64,
}

/// Whether an event with no context version counts as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingVersion {
    /// An event without a version in a workflow that has a record is stale.
    #[default]
    Stale,
    /// Events without a version are not checked.
    Allow,
}

/// Whether an event of this kind is judged against the decision record:
/// claiming, accepting, offering and completing build on what was decided,
/// so doing one of them while holding an older version is stale context.
/// Heartbeats, blocks, failures, releases and rejections are not judged.
pub fn builds_on_context(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Claimed
            | EventKind::HandoffAccepted
            | EventKind::HandoffOffered
            | EventKind::Completed
    )
}

impl DecisionLog {
    /// Records an entry (stream order; older or repeated sequences are
    /// ignored).
    pub fn record(&mut self, entry: &ContextEntry, seq: u64, stored_at: Time) {
        if seq <= self.last_seq {
            return;
        }
        self.last_seq = seq;
        self.workflows
            .entry(entry.workflow.clone())
            .or_default()
            .push(Decision {
                version: seq,
                stored_at,
                author: entry.author.clone(),
                summary: entry.summary.clone(),
            });
    }

    /// Notes that stream sequence `seq` was seen (e.g. an undecodable entry),
    /// so catching up knows where it stands.
    pub fn skip(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Highest stream sequence seen.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// A workflow's decisions.
    pub fn decisions(&self, workflow: &WorkflowId) -> &[Decision] {
        self.workflows.get(workflow).map_or(&[], Vec::as_slice)
    }

    /// The decisions an event missed: recorded in its workflow before it was
    /// stored, with a version newer than the one it carries. Only claims,
    /// accepts, offers and completions are checked.
    pub fn missed(
        &self,
        event: &Event,
        meta: EventMeta,
        missing: MissingVersion,
    ) -> Vec<&Decision> {
        if !builds_on_context(event.kind()) {
            return Vec::new();
        }
        if event.context_version == 0 && missing == MissingVersion::Allow {
            return Vec::new();
        }
        self.decisions(&event.workflow)
            .iter()
            .filter(|d| d.version > event.context_version && d.stored_at <= meta.stored_at)
            .collect()
    }
}
