//! The state of one task, as the fold derives it.

use std::{fmt, time::Duration};

use crate::{
    event::{EventKind, HandoffTarget, TaskWindows},
    ids::{AgentId, StageName, TaskId, WorkflowId},
    time::Time,
};

/// Lifecycle of a task (A2A mapping in `proto/baton/v1/task.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskStatus {
    /// Created or unowned again; nobody works on it.
    Submitted,
    /// An owner works on it.
    Working,
    /// The owner is blocked, waiting for input.
    InputRequired,
    /// The owner offered it on and waits for the recipient.
    HandoffPending,
    Completed,
    Failed,
    Canceled,
}

impl TaskStatus {
    /// Every status, in wire order.
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Submitted,
        TaskStatus::Working,
        TaskStatus::InputRequired,
        TaskStatus::HandoffPending,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Canceled,
    ];

    /// No event may change a task in a terminal status.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Canceled
        )
    }

    /// Lower snake case name (`input_required`), as the CLI shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Submitted => "submitted",
            TaskStatus::Working => "working",
            TaskStatus::InputRequired => "input_required",
            TaskStatus::HandoffPending => "handoff_pending",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
        }
    }

    /// Parses a name as [`TaskStatus::as_str`] gives it (`-` for `_` and
    /// upper case accepted).
    pub fn parse(s: &str) -> Option<TaskStatus> {
        let s = s.to_ascii_lowercase().replace('-', "_");
        let s = s.strip_prefix("task_status_").unwrap_or(&s);
        TaskStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in the stream: broker time and sequence of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub at: Time,
    pub seq: u64,
}

/// The last event seen for a task, applied or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub kind: EventKind,
    pub agent: AgentId,
    pub at: Time,
    pub seq: u64,
}

/// An offer made by the owner and not yet accepted or rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingHandoff {
    pub from: AgentId,
    pub to: HandoffTarget,
    pub output_location: String,
    /// The offer event.
    pub offered: Mark,
    /// The window the offer stated, if any.
    pub accept_within: Option<Duration>,
}

impl PendingHandoff {
    /// `offered_at + accept_within`, when the offer stated a window.
    pub fn accept_by(&self) -> Option<Time> {
        self.accept_within
            .map(|w| self.offered.at.saturating_add(w))
    }

    /// Whether `agent` may accept (or reject) this offer: the named agent,
    /// or for a stage offer any agent but the sender (who still owns the
    /// task and may not hand it to itself).
    pub fn is_for(&self, agent: &AgentId) -> bool {
        match &self.to {
            HandoffTarget::Agent(to) => to == agent,
            HandoffTarget::Stage(_) => *agent != self.from,
        }
    }
}

/// The parts of a task's record that many tasks leave empty, kept out of
/// line so a tracked task stays small (the stall detector holds a million).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskDetails {
    pub title: String,
    /// Only this agent may claim.
    pub assignee: Option<AgentId>,
    /// Windows the task's creation stated.
    pub windows: TaskWindows,
    /// Artifacts its creation declared.
    pub artifacts: Vec<crate::lease::ArtifactName>,
    pub output_location: String,
    pub blocked_reason: String,
    /// Why the task ended.
    pub outcome: String,
}

/// Everything known about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub workflow: WorkflowId,
    pub stage: Option<StageName>,
    /// Title, assignee, stated windows, output location, block reason,
    /// outcome; `None` while all are empty.
    pub details: Option<Box<TaskDetails>>,
    pub status: TaskStatus,
    /// The single owner. Kept on terminal tasks as the owner of record.
    pub owner: Option<AgentId>,
    /// Fencing token; increments on every ownership change.
    pub epoch: u64,
    pub pending_handoff: Option<Box<PendingHandoff>>,
    /// Highest decision-record version an applied event carried.
    pub context_version: u64,
    /// The current owner's lease, if its claim stated one.
    pub lease: Option<Duration>,
    pub created: Mark,
    /// Last event that changed this state.
    pub updated_at: Time,
    /// The last event that was applied (a refused event never counts as
    /// what last happened to a task).
    pub last_event: EventRef,
    /// Stream sequence of the last event seen, applied or refused: the
    /// idempotence mark (an event at or below it is a redelivery).
    pub seen_seq: u64,
    pub last_heartbeat_at: Option<Time>,
    pub last_progress_at: Option<Time>,
    /// When the current owner took the task.
    pub owned_since: Option<Mark>,
    /// The owner's liveness clock runs from here: claim, acceptance,
    /// heartbeat, resumption after a block or a rejected offer.
    pub alive_since: Option<Mark>,
    /// The progress clock runs from here: claim, acceptance, a heartbeat
    /// with progress, resumption.
    pub progress_since: Option<Mark>,
    /// Unowned and waiting to be started since (creation, release, revoke,
    /// retryable failure).
    pub waiting_since: Option<Mark>,
    /// Blocked since, while `InputRequired`.
    pub blocked_since: Option<Mark>,
    /// Events refused for this task.
    pub violations: u64,
}

impl Task {
    /// The artifacts the task's creation declared.
    pub fn artifacts(&self) -> &[crate::lease::ArtifactName] {
        self.details.as_deref().map_or(&[], |d| &d.artifacts)
    }

    pub fn title(&self) -> &str {
        self.details.as_deref().map_or("", |d| &d.title)
    }

    pub fn assignee(&self) -> Option<&AgentId> {
        self.details.as_deref().and_then(|d| d.assignee.as_ref())
    }

    /// Windows the task's creation stated.
    pub fn windows(&self) -> TaskWindows {
        self.details
            .as_deref()
            .map_or_else(TaskWindows::default, |d| d.windows)
    }

    /// Output of the latest accepted handoff or completion.
    pub fn output_location(&self) -> &str {
        self.details.as_deref().map_or("", |d| &d.output_location)
    }

    pub fn blocked_reason(&self) -> &str {
        self.details.as_deref().map_or("", |d| &d.blocked_reason)
    }

    /// Why the task ended.
    pub fn outcome(&self) -> &str {
        self.details.as_deref().map_or("", |d| &d.outcome)
    }

    /// The details, created empty on first write.
    pub fn details_mut(&mut self) -> &mut TaskDetails {
        self.details.get_or_insert_with(Box::default)
    }

    /// Drops the details box if everything in it is empty again.
    pub fn compact(&mut self) {
        if self
            .details
            .as_deref()
            .is_some_and(|d| *d == TaskDetails::default())
        {
            self.details = None;
        }
    }

    /// Sets the block reason (without allocating to clear an empty one).
    pub fn set_blocked_reason(&mut self, reason: &str) {
        if reason.is_empty() && self.blocked_reason().is_empty() {
            return;
        }
        self.details_mut().blocked_reason = reason.to_string();
    }

    /// Sequence of the last event seen for this task, applied or refused.
    pub fn last_seq(&self) -> u64 {
        self.seen_seq
    }

    /// The owner, unless the task has ended.
    pub fn active_owner(&self) -> Option<&AgentId> {
        if self.status.is_terminal() {
            None
        } else {
            self.owner.as_ref()
        }
    }
}
