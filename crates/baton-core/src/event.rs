//! Status events as domain values: validated ids, typed bodies, no wire types.

use std::{fmt, time::Duration};

use crate::{
    ids::{AgentId, StageName, TaskId, WorkflowId},
    time::Time,
};

/// Where an event sits in the stream: the facts the broker assigned to it.
/// Every rule that depends on order or time uses these, never agent clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta {
    /// Stream sequence in `BATON_EVENTS`.
    pub seq: u64,
    /// The time the broker stored the event.
    pub stored_at: Time,
}

/// One status signal about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id; also the `Nats-Msg-Id`.
    pub event_id: String,
    pub task: TaskId,
    pub workflow: WorkflowId,
    /// The sender.
    pub agent: AgentId,
    /// The fencing token the sender believes it holds (0 = none).
    pub epoch: u64,
    /// Decision-record version the sender read (0 = none).
    pub context_version: u64,
    /// The sender's clock; informational only.
    pub occurred_at: Option<Time>,
    pub body: EventBody,
}

/// Who a handoff is offered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HandoffTarget {
    /// Only this agent may accept.
    Agent(AgentId),
    /// Any agent may accept, and then owns the task in this stage.
    Stage(StageName),
}

impl fmt::Display for HandoffTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffTarget::Agent(a) => write!(f, "agent {a}"),
            HandoffTarget::Stage(s) => write!(f, "stage {s}"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    Created(TaskCreated),
    Claimed {
        /// The lease the claimer commits to.
        heartbeat_within: Option<Duration>,
    },
    Heartbeat {
        note: String,
        /// Output advanced since the previous heartbeat.
        progress: bool,
    },
    Blocked {
        reason: String,
    },
    HandoffOffered {
        to: HandoffTarget,
        output_location: String,
        accept_within: Option<Duration>,
    },
    HandoffAccepted {
        /// The lease the new owner commits to, as on a claim (decision 10).
        heartbeat_within: Option<Duration>,
    },
    HandoffRejected {
        reason: String,
    },
    Completed {
        output_location: String,
        summary: String,
    },
    Failed {
        reason: String,
        retryable: bool,
    },
    Released {
        reason: String,
    },
    Revoked {
        reason: String,
    },
    Cancelled {
        reason: String,
    },
}

/// The body of a `TaskCreated` event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskCreated {
    pub stage: Option<StageName>,
    pub title: String,
    /// Only this agent may claim the task.
    pub assignee: Option<AgentId>,
    pub windows: TaskWindows,
    /// Artifacts the task will write, in its workflow's scope: claiming
    /// it (through an SDK) takes an exclusive lease on each.
    pub artifacts: Vec<crate::lease::ArtifactName>,
}

/// Windows an event states for its task; unset ones come from the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskWindows {
    pub start_within: Option<Duration>,
    pub deadline_within: Option<Duration>,
    pub heartbeat_within: Option<Duration>,
    pub progress_within: Option<Duration>,
}

/// The kind of an event body, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Created,
    Claimed,
    Heartbeat,
    Blocked,
    HandoffOffered,
    HandoffAccepted,
    HandoffRejected,
    Completed,
    Failed,
    Released,
    Revoked,
    Cancelled,
}

impl EventKind {
    /// Every kind, in wire order.
    pub const ALL: [EventKind; 12] = [
        EventKind::Created,
        EventKind::Claimed,
        EventKind::Heartbeat,
        EventKind::Blocked,
        EventKind::HandoffOffered,
        EventKind::HandoffAccepted,
        EventKind::HandoffRejected,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Released,
        EventKind::Revoked,
        EventKind::Cancelled,
    ];

    /// The wire field name of the body, lower snake case (`handoff_offered`).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Claimed => "claimed",
            EventKind::Heartbeat => "heartbeat",
            EventKind::Blocked => "blocked",
            EventKind::HandoffOffered => "handoff_offered",
            EventKind::HandoffAccepted => "handoff_accepted",
            EventKind::HandoffRejected => "handoff_rejected",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Released => "released",
            EventKind::Revoked => "revoked",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// Parses a wire field name (`handoff_offered`; `-` is accepted for `_`).
    pub fn parse(s: &str) -> Option<EventKind> {
        let s = s.replace('-', "_");
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Events that move or end ownership, which the SDK publishes with
    /// compare-and-set and the stale-context check looks at.
    pub const fn changes_ownership(self) -> bool {
        matches!(
            self,
            EventKind::Claimed
                | EventKind::HandoffAccepted
                | EventKind::HandoffOffered
                | EventKind::Completed
                | EventKind::Failed
                | EventKind::Released
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventBody {
    /// The kind of this body.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Created(_) => EventKind::Created,
            EventBody::Claimed { .. } => EventKind::Claimed,
            EventBody::Heartbeat { .. } => EventKind::Heartbeat,
            EventBody::Blocked { .. } => EventKind::Blocked,
            EventBody::HandoffOffered { .. } => EventKind::HandoffOffered,
            EventBody::HandoffAccepted { .. } => EventKind::HandoffAccepted,
            EventBody::HandoffRejected { .. } => EventKind::HandoffRejected,
            EventBody::Completed { .. } => EventKind::Completed,
            EventBody::Failed { .. } => EventKind::Failed,
            EventBody::Released { .. } => EventKind::Released,
            EventBody::Revoked { .. } => EventKind::Revoked,
            EventBody::Cancelled { .. } => EventKind::Cancelled,
        }
    }

    /// A short description for timelines ("to stage review", "progress").
    pub fn describe(&self) -> String {
        match self {
            EventBody::Created(c) => {
                let mut parts = Vec::new();
                if !c.title.is_empty() {
                    parts.push(format!("{:?}", c.title));
                }
                if let Some(stage) = &c.stage {
                    parts.push(format!("stage {stage}"));
                }
                if let Some(a) = &c.assignee {
                    parts.push(format!("assigned to {a}"));
                }
                parts.join(", ")
            }
            EventBody::Claimed { .. } | EventBody::HandoffAccepted { .. } => String::new(),
            EventBody::Heartbeat { note, progress } => match (progress, note.is_empty()) {
                (true, true) => "progress".into(),
                (true, false) => format!("progress: {note}"),
                (false, _) => note.clone(),
            },
            EventBody::HandoffOffered {
                to,
                output_location,
                ..
            } => {
                if output_location.is_empty() {
                    format!("to {to}")
                } else {
                    format!("to {to}, output {output_location}")
                }
            }
            EventBody::Completed {
                output_location,
                summary,
            } => [summary.as_str(), output_location.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            EventBody::Failed { reason, retryable } => {
                if *retryable {
                    format!("retryable: {reason}")
                } else {
                    reason.clone()
                }
            }
            EventBody::Blocked { reason }
            | EventBody::HandoffRejected { reason }
            | EventBody::Released { reason }
            | EventBody::Revoked { reason }
            | EventBody::Cancelled { reason } => reason.clone(),
        }
    }
}

impl Event {
    /// An event with no epoch, no context version and no sender clock.
    pub fn new(
        event_id: impl Into<String>,
        task: TaskId,
        workflow: WorkflowId,
        agent: AgentId,
        body: EventBody,
    ) -> Event {
        Event {
            event_id: event_id.into(),
            task,
            workflow,
            agent,
            epoch: 0,
            context_version: 0,
            occurred_at: None,
            body,
        }
    }

    /// Sets the epoch the sender holds.
    pub fn with_epoch(mut self, epoch: u64) -> Event {
        self.epoch = epoch;
        self
    }

    /// Sets the decision-record version the sender read.
    pub fn with_context_version(mut self, version: u64) -> Event {
        self.context_version = version;
        self
    }

    /// The kind of this event's body.
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }
}
