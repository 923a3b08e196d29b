//! A task's history with the consequence of each event: who owned it and at
//! which epoch after it, and why an event was refused.

use crate::{
    event::{Event, EventMeta},
    fold::{Disposition, Policy, apply},
    ids::AgentId,
    task::{Task, TaskStatus},
};

/// One event of a task and the state after it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub meta: EventMeta,
    pub event: Event,
    /// Owner after the event.
    pub owner: Option<AgentId>,
    /// Epoch after the event.
    pub epoch: u64,
    pub status: Option<TaskStatus>,
    /// Why the event was refused; `None` when applied.
    pub refused: Option<String>,
}

/// Folds a task's events (in stream order) and records the state after each.
pub fn timeline(
    events: impl IntoIterator<Item = (Event, EventMeta)>,
    policy: &Policy,
) -> Vec<TimelineEntry> {
    let mut slot: Option<Task> = None;
    let mut out = Vec::new();
    for (event, meta) in events {
        let outcome = apply(&mut slot, &event, meta, policy);
        let refused = match &outcome.disposition {
            Disposition::Applied => None,
            Disposition::Duplicate => continue,
            Disposition::Refused(v) => Some(v.to_string()),
            Disposition::UnknownTask => Some("task was never created".to_string()),
        };
        out.push(TimelineEntry {
            meta,
            owner: slot.as_ref().and_then(|t| t.owner.clone()),
            epoch: slot.as_ref().map_or(0, |t| t.epoch),
            status: slot.as_ref().map(|t| t.status),
            refused,
            event,
        });
    }
    out
}
