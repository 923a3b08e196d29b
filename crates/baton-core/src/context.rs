//! The decision record and stale-context detection.
//!
//! Each workflow has one append-only record of decisions (stream
//! `BATON_CONTEXT`); an entry's version is its stream sequence. An agent that
//! claims, accepts, offers or completes while holding a version older than a
//! decision recorded before it acted worked from stale context: that is the
//! "context divergence" failure, and it raises `STALE_CONTEXT` naming what
//! the agent missed.

use std::collections::HashMap;

use crate::{
    alert::{Alert, AlertKind, alert_id},
    event::{Event, EventKind, EventMeta},
    ids::{AgentId, WorkflowId},
    task::Task,
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
        if !matches!(
            event.kind(),
            EventKind::Claimed
                | EventKind::HandoffAccepted
                | EventKind::HandoffOffered
                | EventKind::Completed
        ) {
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

/// The `STALE_CONTEXT` alert for an event that missed `missed`.
pub fn stale_context_alert(
    event: &Event,
    meta: EventMeta,
    task: Option<&Task>,
    missed: &[&Decision],
) -> Alert {
    let epoch = task.map_or(event.epoch, |t| t.epoch);
    let mut alert = Alert::firing(
        AlertKind::StaleContext,
        alert_id(
            AlertKind::StaleContext,
            Some(&event.task),
            epoch,
            &format!("s{}", meta.seq),
        ),
        Some(event.task.clone()),
        meta.stored_at,
    );
    alert.workflow = Some(event.workflow.clone());
    alert.stage = task.and_then(|t| t.stage.clone());
    alert.agents = std::iter::once(event.agent.clone())
        .chain(missed.iter().map(|d| d.author.clone()))
        .fold(Vec::new(), |mut v, a| {
            if !v.contains(&a) {
                v.push(a);
            }
            v
        });
    alert.epoch = epoch;
    alert.task_status = task.map(|t| t.status);
    alert.event_id = Some(event.event_id.clone());
    alert.event_seq = meta.seq;
    alert.missed_versions = missed.iter().map(|d| d.version).collect();
    let latest = missed.iter().map(|d| d.version).max().unwrap_or(0);
    alert.expected = format!(
        "{} after reading decision record version {latest} of workflow {}",
        event.kind(),
        event.workflow
    );
    let read = if event.context_version == 0 {
        "without reading the decision record".to_string()
    } else {
        format!("having read version {}", event.context_version)
    };
    let list = missed
        .iter()
        .take(5)
        .map(|d| format!("#{} {:?} by {}", d.version, d.summary, d.author))
        .collect::<Vec<_>>()
        .join(", ");
    let more = if missed.len() > 5 {
        format!(" and {} more", missed.len() - 5)
    } else {
        String::new()
    };
    alert.summary = format!(
        "Agent {} sent {} for task {} {read}, but {} decision(s) were recorded before it acted: {list}{more}. Have it re-read workflow {}'s record and check its work.",
        event.agent,
        event.kind(),
        event.task,
        missed.len(),
        event.workflow
    );
    alert.detail = format!("BATON_EVENTS seq {}", meta.seq);
    alert
}
