//! Alerts as domain values, and their deterministic identity.
//!
//! An alert's id is derived from (kind, task, epoch, the expectation or
//! offending event it is about), so every service that derives the same fault
//! derives the same id, and the broker's duplicate window turns a second page
//! into a no-op.

use std::{fmt, time::Duration};

pub use crate::catalogue::{Malformed, malformed_alert};

use crate::{
    ids::{AgentId, StageName, TaskId, WorkflowId},
    subjects,
    task::{EventRef, TaskStatus},
    time::Time,
};

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    HeartbeatMissed,
    HandoffNotAccepted,
    NotStarted,
    DeadlineExceeded,
    NoProgress,
    BlockedTooLong,
    OwnershipViolation,
    StaleContext,
    MalformedEvent,
    UnknownTask,
    OrchestratorDown,
    ConsumerStalled,
    DetectorDown,
    LeaseExpired,
    LeaseHeldTooLong,
    LeaseStaleWrite,
}

impl AlertKind {
    /// Every kind, in wire order.
    pub const ALL: [AlertKind; 16] = [
        AlertKind::HeartbeatMissed,
        AlertKind::HandoffNotAccepted,
        AlertKind::NotStarted,
        AlertKind::DeadlineExceeded,
        AlertKind::NoProgress,
        AlertKind::BlockedTooLong,
        AlertKind::OwnershipViolation,
        AlertKind::StaleContext,
        AlertKind::MalformedEvent,
        AlertKind::UnknownTask,
        AlertKind::OrchestratorDown,
        AlertKind::ConsumerStalled,
        AlertKind::DetectorDown,
        AlertKind::LeaseExpired,
        AlertKind::LeaseHeldTooLong,
        AlertKind::LeaseStaleWrite,
    ];

    /// The kind in lower snake case, as used in alert subjects.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::HeartbeatMissed => "heartbeat_missed",
            AlertKind::HandoffNotAccepted => "handoff_not_accepted",
            AlertKind::NotStarted => "not_started",
            AlertKind::DeadlineExceeded => "deadline_exceeded",
            AlertKind::NoProgress => "no_progress",
            AlertKind::BlockedTooLong => "blocked_too_long",
            AlertKind::OwnershipViolation => "ownership_violation",
            AlertKind::StaleContext => "stale_context",
            AlertKind::MalformedEvent => "malformed_event",
            AlertKind::UnknownTask => "unknown_task",
            AlertKind::OrchestratorDown => "orchestrator_down",
            AlertKind::ConsumerStalled => "consumer_stalled",
            AlertKind::DetectorDown => "detector_down",
            AlertKind::LeaseExpired => "lease_expired",
            AlertKind::LeaseHeldTooLong => "lease_held_too_long",
            AlertKind::LeaseStaleWrite => "lease_stale_write",
        }
    }

    /// Parses `heartbeat_missed`, `HEARTBEAT_MISSED`, `heartbeat-missed` or
    /// `ALERT_KIND_HEARTBEAT_MISSED`.
    pub fn parse(s: &str) -> Option<AlertKind> {
        let s = s.to_ascii_lowercase().replace('-', "_");
        let s = s.strip_prefix("alert_kind_").unwrap_or(&s);
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Stall alerts have a lifecycle (firing, re-notified, resolved);
    /// protocol alerts report one offending event and do not resolve.
    pub const fn is_stall(self) -> bool {
        matches!(
            self,
            AlertKind::HeartbeatMissed
                | AlertKind::HandoffNotAccepted
                | AlertKind::NotStarted
                | AlertKind::DeadlineExceeded
                | AlertKind::NoProgress
                | AlertKind::BlockedTooLong
                | AlertKind::OrchestratorDown
                | AlertKind::ConsumerStalled
                | AlertKind::DetectorDown
        )
    }

    /// Protocol reports (ownership violation, stale context, malformed
    /// event, unknown task) record one offending event: they are never
    /// resolved, so every view shows them as reports of what happened (and
    /// counts recent ones), never as conditions that are still firing.
    pub const fn is_report(self) -> bool {
        !self.is_stall()
    }

    /// How a person should read an alert of this kind: `condition` (firing
    /// until resolved) or `report` (one-shot).
    pub const fn lifecycle(self) -> &'static str {
        if self.is_report() {
            "report"
        } else {
            "condition"
        }
    }

    /// The default severity of this kind.
    pub const fn severity(self) -> Severity {
        match self {
            AlertKind::OwnershipViolation
            | AlertKind::HandoffNotAccepted
            | AlertKind::HeartbeatMissed
            | AlertKind::DeadlineExceeded
            | AlertKind::OrchestratorDown
            | AlertKind::ConsumerStalled
            | AlertKind::DetectorDown => Severity::Critical,
            AlertKind::NotStarted
            | AlertKind::NoProgress
            | AlertKind::BlockedTooLong
            | AlertKind::StaleContext
            | AlertKind::MalformedEvent
            | AlertKind::LeaseExpired
            | AlertKind::LeaseHeldTooLong
            | AlertKind::LeaseStaleWrite => Severity::Warning,
            AlertKind::UnknownTask => Severity::Info,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// How urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Longest `summary`, `expected` or `detail` an alert carries on the wire,
/// in bytes. Texts embed ids (bounded) and event fields (bounded by the
/// wire limits); this cut is the backstop that keeps every alert well
/// inside the broker's max payload whatever a text embeds.
pub const MAX_ALERT_TEXT: usize = 2048;

/// `text` cut to at most `max` bytes on a character boundary, with an
/// ellipsis when cut.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..end]))
}

/// A deterministic alert id: `<kind>.<task>.e<epoch>.<anchor>`.
pub fn alert_id(kind: AlertKind, task: Option<&TaskId>, epoch: u64, anchor: &str) -> String {
    let task = task.map_or(subjects::SYSTEM_TOKEN, TaskId::as_str);
    format!("{}.{task}.e{epoch}.{anchor}", kind.as_str())
}

/// A fault report.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Deterministic id shared by every notification of this fault.
    pub id: String,
    pub kind: AlertKind,
    pub state: AlertState,
    pub severity: Severity,
    /// `None` for alerts about Baton itself.
    pub task: Option<TaskId>,
    pub workflow: Option<WorkflowId>,
    pub stage: Option<StageName>,
    /// The agents involved, most responsible first.
    pub agents: Vec<AgentId>,
    /// What should have happened.
    pub expected: String,
    pub due_at: Option<Time>,
    pub observed_at: Time,
    pub last_event: Option<EventRef>,
    /// One sentence a person can act on.
    pub summary: String,
    /// On a resolution: the firing alert's id.
    pub resolves: Option<String>,
    pub epoch: u64,
    pub late_by: Option<Duration>,
    /// 0 = first notification; k = k-th re-notification.
    pub notification: u32,
    pub task_status: Option<TaskStatus>,
    /// Decision-record versions the agent missed (stale context).
    pub missed_versions: Vec<u64>,
    /// The offending event, for protocol alerts.
    pub event_id: Option<String>,
    pub event_seq: u64,
    /// Where more is to be found.
    pub detail: String,
}

impl Alert {
    /// A firing alert with the kind's default severity and empty details.
    pub fn firing(kind: AlertKind, id: String, task: Option<TaskId>, observed_at: Time) -> Alert {
        Alert {
            id,
            kind,
            state: AlertState::Firing,
            severity: kind.severity(),
            task,
            workflow: None,
            stage: None,
            agents: Vec::new(),
            expected: String::new(),
            due_at: None,
            observed_at,
            last_event: None,
            summary: String::new(),
            resolves: None,
            epoch: 0,
            late_by: None,
            notification: 0,
            task_status: None,
            missed_versions: Vec::new(),
            event_id: None,
            event_seq: 0,
            detail: String::new(),
        }
    }

    /// The `Nats-Msg-Id` of this notification: the id for the first, `.n<k>`
    /// for re-notification k, `.resolved` for the resolution.
    pub fn msg_id(&self) -> String {
        match (self.state, self.notification) {
            (AlertState::Resolved, _) => format!("{}.resolved", self.id),
            (AlertState::Firing, 0) => self.id.clone(),
            (AlertState::Firing, k) => format!("{}.n{k}", self.id),
        }
    }

    /// The core subject subscribers receive this alert on, exactly once:
    /// `baton.alert.<kind>.<task>`.
    pub fn subject(&self) -> String {
        subjects::alert(self.kind, self.task.as_ref())
    }

    /// The subject a service publishes this alert to (`baton.raise.…`):
    /// `BATON_ALERTS` stores it there and republishes it on
    /// [`Alert::subject`] once stored.
    pub fn raise_subject(&self) -> String {
        subjects::raise(self.kind, self.task.as_ref())
    }

    /// Re-notifies this firing alert if `every` has passed since its last
    /// notification: counts the next notification, observed at `now`, and
    /// returns true. `None` = never re-notify.
    pub fn renotify(&mut self, every: Option<Duration>, now: Time) -> bool {
        let due = every.is_some_and(|every| self.observed_at.saturating_add(every) <= now);
        if due {
            self.notification += 1;
            self.observed_at = now;
        }
        due
    }

    /// The resolution of this (firing) alert, observed at `now`.
    pub fn resolved(&self, now: Time, summary: String) -> Alert {
        Alert {
            state: AlertState::Resolved,
            resolves: Some(self.id.clone()),
            observed_at: now,
            summary,
            late_by: None,
            notification: 0,
            ..self.clone()
        }
    }
}

/// An alert as people and scripts read it in JSON: `baton alerts --json`
/// and the webhook body of `baton notify` are this shape, field for field.
pub mod json {
    use serde::Serialize;

    use super::Alert;
    use crate::task::EventRef;

    /// The last event an alert names.
    #[derive(Debug, Clone, Serialize)]
    pub struct EventRefJson {
        pub kind: String,
        pub agent_id: String,
        pub at: String,
        pub seq: u64,
    }

    impl From<&EventRef> for EventRefJson {
        fn from(e: &EventRef) -> EventRefJson {
            EventRefJson {
                kind: e.kind.as_str().to_string(),
                agent_id: e.agent.to_string(),
                at: e.at.to_rfc3339(),
                seq: e.seq,
            }
        }
    }

    /// One alert notification.
    #[derive(Debug, Clone, Serialize)]
    pub struct AlertJson {
        pub alert_id: String,
        pub kind: String,
        pub state: String,
        pub severity: String,
        pub task_id: Option<String>,
        pub workflow_id: Option<String>,
        pub stage: Option<String>,
        pub agents: Vec<String>,
        pub expected: String,
        pub due_at: Option<String>,
        pub observed_at: String,
        /// `condition` (firing until resolved) or `report` (one-shot: never
        /// resolves).
        pub lifecycle: &'static str,
        pub late_by_ms: Option<u128>,
        pub notification: u32,
        pub summary: String,
        pub resolves: Option<String>,
        pub last_event: Option<EventRefJson>,
        pub missed_versions: Vec<u64>,
        pub event_seq: u64,
        pub detail: String,
        /// Stream sequence in BATON_ALERTS.
        pub seq: u64,
    }

    impl AlertJson {
        pub fn from_alert(a: &Alert, seq: u64) -> AlertJson {
            AlertJson {
                alert_id: a.id.clone(),
                kind: a.kind.as_str().to_string(),
                state: a.state.as_str().to_string(),
                severity: a.severity.as_str().to_string(),
                task_id: a.task.as_ref().map(ToString::to_string),
                workflow_id: a.workflow.as_ref().map(ToString::to_string),
                stage: a.stage.as_ref().map(ToString::to_string),
                agents: a.agents.iter().map(ToString::to_string).collect(),
                expected: a.expected.clone(),
                due_at: a.due_at.map(|t| t.to_rfc3339()),
                observed_at: a.observed_at.to_rfc3339(),
                lifecycle: a.kind.lifecycle(),
                late_by_ms: a.late_by.map(|d| d.as_millis()),
                notification: a.notification,
                summary: a.summary.clone(),
                resolves: a.resolves.clone(),
                last_event: a.last_event.as_ref().map(EventRefJson::from),
                missed_versions: a.missed_versions.clone(),
                event_seq: a.event_seq,
                detail: a.detail.clone(),
                seq,
            }
        }
    }
}
