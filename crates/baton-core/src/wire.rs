//! Conversion between the wire contract (`baton-proto`) and the domain.
//!
//! Wire types stop here: `TryFrom<pb::X>` validates every field and names the
//! one that is wrong; `From<&Domain>` builds the wire form just before bytes
//! leave. Nothing else in the core sees a prost type.

use std::time::Duration;

use baton_proto::{
    prost::{self, Message},
    prost_types, v1 as pb,
};

use crate::{
    alert::{Alert, AlertKind, AlertState, MAX_ALERT_TEXT, Severity, clip},
    context::ContextEntry,
    event::{Event, EventBody, EventKind, HandoffTarget, TaskCreated, TaskWindows},
    fold::{Policy, UnknownTaskPolicy},
    ids::{AgentId, IdError, StageName, TaskId, WorkflowId},
    stall::Silence,
    subjects,
    task::{EventRef, Mark, PendingHandoff, Task, TaskDetails, TaskStatus},
    time::Time,
};

mod lease;
pub use lease::{check_lease_limits, read_lease_event};

/// Longest accepted event id, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 256;

/// Size limits of text fields, in bytes (decision 7). They are written in
/// the proto comments too; every reader enforces them at decode, so any task
/// state, alert, timeline entry or reply built from accepted input fits the
/// broker's max payload (1 MiB by default) with room to spare.
pub mod limits {
    /// `TaskCreated.title`.
    pub const TITLE: usize = 1024;
    /// `Heartbeat.note`.
    pub const NOTE: usize = 1024;
    /// Every `reason` (blocked, rejected, failed, released, revoked,
    /// cancelled).
    pub const REASON: usize = 2048;
    /// Every `output_location` (offer, completion).
    pub const OUTPUT_LOCATION: usize = 2048;
    /// `Completed.summary`.
    pub const SUMMARY: usize = 4096;
    /// `ContextEntry.summary`.
    pub const DECISION_SUMMARY: usize = 1024;
    /// `ContextEntry.body`.
    pub const DECISION_BODY: usize = 64 * 1024;
    /// A whole event payload: the sum of the field limits plus ids, with
    /// margin. Anything larger is refused before it is decoded.
    pub const EVENT_PAYLOAD: usize = 16 * 1024;
    /// A whole lease event payload.
    pub const LEASE_PAYLOAD: usize = 8 * 1024;
    /// A whole decision-record entry payload.
    pub const CONTEXT_PAYLOAD: usize = DECISION_BODY + DECISION_SUMMARY + 1024;
}

/// Most artifacts a task may declare.
pub const MAX_TASK_ARTIFACTS: usize = 16;

/// A task's declared artifacts: valid names in normal form, at most
/// [`MAX_TASK_ARTIFACTS`].
fn artifacts_from_wire(
    field: &str,
    names: &[String],
) -> Result<Vec<crate::lease::ArtifactName>, WireError> {
    if names.len() > MAX_TASK_ARTIFACTS {
        return Err(WireError::field(
            field,
            format!("{} artifacts, at most {MAX_TASK_ARTIFACTS}", names.len()),
        ));
    }
    names
        .iter()
        .map(|n| match crate::lease::ArtifactName::new(n) {
            Ok(name) if name.as_str() == n => Ok(name),
            Ok(name) => Err(WireError::field(
                field,
                format!("{n:?} is not in normal form (write {:?})", name.as_str()),
            )),
            Err(e) => Err(WireError::field(field, e.to_string())),
        })
        .collect()
}

/// Refuses a text field longer than `max` bytes, naming the field.
fn bounded(field: &str, text: String, max: usize) -> Result<String, WireError> {
    within(field, &text, max)?;
    Ok(text)
}

fn within(field: &str, text: &str, max: usize) -> Result<(), WireError> {
    if text.len() > max {
        return Err(WireError::TooLarge {
            field: field.to_string(),
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// Checks an event's text fields against [`limits`]: what every reader
/// refuses at decode, and what a sender checks before publishing, so an
/// over-limit event is an error at the sender rather than a dead letter.
pub fn check_limits(event: &Event) -> Result<(), WireError> {
    if event.event_id.len() > MAX_EVENT_ID_LEN {
        return Err(WireError::field(
            "event_id",
            format!("longer than {MAX_EVENT_ID_LEN} bytes"),
        ));
    }
    match &event.body {
        EventBody::Created(c) => {
            if c.artifacts.len() > MAX_TASK_ARTIFACTS {
                return Err(WireError::field(
                    "created.artifacts",
                    format!(
                        "{} artifacts, at most {MAX_TASK_ARTIFACTS}",
                        c.artifacts.len()
                    ),
                ));
            }
            within("created.title", &c.title, limits::TITLE)
        }
        EventBody::Claimed { .. } | EventBody::HandoffAccepted { .. } => Ok(()),
        EventBody::Heartbeat { note, .. } => within("heartbeat.note", note, limits::NOTE),
        EventBody::Blocked { reason } => within("blocked.reason", reason, limits::REASON),
        EventBody::HandoffOffered {
            output_location, ..
        } => within(
            "handoff_offered.output_location",
            output_location,
            limits::OUTPUT_LOCATION,
        ),
        EventBody::HandoffRejected { reason } => {
            within("handoff_rejected.reason", reason, limits::REASON)
        }
        EventBody::Completed {
            output_location,
            summary,
        } => {
            within(
                "completed.output_location",
                output_location,
                limits::OUTPUT_LOCATION,
            )?;
            within("completed.summary", summary, limits::SUMMARY)
        }
        EventBody::Failed { reason, .. } => within("failed.reason", reason, limits::REASON),
        EventBody::Released { reason } => within("released.reason", reason, limits::REASON),
        EventBody::Revoked { reason } => within("revoked.reason", reason, limits::REASON),
        EventBody::Cancelled { reason } => within("cancelled.reason", reason, limits::REASON),
    }
}

/// Checks a decision-record entry's text fields against [`limits`].
pub fn check_entry_limits(entry: &ContextEntry) -> Result<(), WireError> {
    within("summary", &entry.summary, limits::DECISION_SUMMARY)?;
    within("body", &entry.body, limits::DECISION_BODY)
}

/// Why bytes or a wire message could not become a domain value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a protobuf message of the expected type.
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: prost::DecodeError,
    },
    /// A field is missing or invalid.
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    /// The subject's tokens do not match the payload.
    #[error("subject {subject:?} does not match the payload: {message}")]
    Subject { subject: String, message: String },
    /// A field (or the whole payload) is over its size limit.
    #[error("field `{field}` is {len} bytes, over its limit of {max}")]
    TooLarge {
        field: String,
        len: usize,
        max: usize,
    },
}

impl WireError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        WireError::Field {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A short machine-friendly reason, used as the DLQ subject token.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Decode { .. } => "undecodable",
            WireError::Field { .. } => "invalid",
            WireError::Subject { .. } => "subject_mismatch",
            WireError::TooLarge { .. } => "too_large",
        }
    }
}

fn id<T>(field: &str, r: Result<T, IdError>) -> Result<T, WireError> {
    r.map_err(|e| WireError::field(field, e.to_string()))
}

fn opt_id<T: std::str::FromStr<Err = IdError>>(
    field: &str,
    s: &str,
) -> Result<Option<T>, WireError> {
    if s.is_empty() {
        Ok(None)
    } else {
        id(field, s.parse()).map(Some)
    }
}

/// Wire timestamp to domain time; `None` when unset.
pub fn time_from_wire(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<Time>, WireError> {
    let Some(t) = t else { return Ok(None) };
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| WireError::field(field, format!("nanos {} out of range", t.nanos)))?;
    Time::from_unix(t.seconds, nanos)
        .map(Some)
        .ok_or_else(|| WireError::field(field, "time before 1970"))
}

/// Domain time to wire timestamp.
pub fn time_to_wire(t: Time) -> prost_types::Timestamp {
    let (seconds, nanos) = t.unix_parts();
    prost_types::Timestamp {
        seconds,
        nanos: nanos as i32,
    }
}

fn opt_time(t: Option<Time>) -> Option<prost_types::Timestamp> {
    t.map(time_to_wire)
}

/// Wire duration to domain; unset or zero = `None` (the rules decide).
pub fn duration_from_wire(
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, WireError> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(WireError::field(field, "negative or malformed duration"));
    }
    let d = Duration::new(d.seconds as u64, d.nanos as u32);
    Ok((!d.is_zero()).then_some(d))
}

/// Domain duration to wire.
pub fn duration_to_wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// Bytes to a wire message, naming the message type when they are not one.
fn decode_wire<W: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<W, WireError> {
    W::decode(bytes).map_err(|source| WireError::Decode { what, source })
}

/// The one read path for status events: bytes from `subject` become a
/// validated event or a typed refusal. Every reader (services, query API,
/// CLI, backtester, SDK) calls this, so they all accept and refuse the same
/// events: undecodable bytes, invalid ids, fields over their limits, and an
/// event whose payload ids do not match its subject (decision 6).
pub fn read_event(subject: &str, bytes: &[u8]) -> Result<Event, WireError> {
    let event = decode_event(bytes)?;
    check_subject(&event, subject)?;
    Ok(event)
}

/// Decodes and validates an event payload, without the subject check; for
/// bytes that did not come from a subject (test vectors, fixtures). Readers
/// of the stream use [`read_event`].
pub fn decode_event(bytes: &[u8]) -> Result<Event, WireError> {
    let wire = decode_wire::<pb::Event>("baton.v1.Event", bytes)?;
    // Field limits first, so the refusal names the field; then the whole
    // payload (unknown fields count too).
    let event = Event::try_from(wire)?;
    if bytes.len() > limits::EVENT_PAYLOAD {
        return Err(WireError::TooLarge {
            field: "payload".into(),
            len: bytes.len(),
            max: limits::EVENT_PAYLOAD,
        });
    }
    Ok(event)
}

/// Checks that an event arrived on its own subject
/// (`baton.evt.<task_id>.<agent_id>`).
pub fn check_subject(event: &Event, subject: &str) -> Result<(), WireError> {
    let mismatch = |message: String| WireError::Subject {
        subject: subject.to_string(),
        message,
    };
    let Some((task, agent)) = subjects::parse_event(subject) else {
        return Err(mismatch("not of the form baton.evt.<task>.<agent>".into()));
    };
    if task != event.task.as_str() {
        return Err(mismatch(format!(
            "subject task {task:?} but payload task_id {:?}",
            event.task.as_str()
        )));
    }
    if agent != event.agent.as_str() {
        return Err(mismatch(format!(
            "subject agent {agent:?} but payload agent_id {:?}",
            event.agent.as_str()
        )));
    }
    Ok(())
}

impl TryFrom<pb::Event> for Event {
    type Error = WireError;

    fn try_from(w: pb::Event) -> Result<Self, WireError> {
        if w.event_id.is_empty() {
            return Err(WireError::field(
                "event_id",
                "required (it is also the Nats-Msg-Id)",
            ));
        }
        if w.event_id.len() > MAX_EVENT_ID_LEN {
            return Err(WireError::field(
                "event_id",
                format!("longer than {MAX_EVENT_ID_LEN} bytes"),
            ));
        }
        let task = id("task_id", TaskId::new(&w.task_id))?;
        let workflow = id("workflow_id", WorkflowId::new(&w.workflow_id))?;
        let agent = id("agent_id", AgentId::new(&w.agent_id))?;
        let occurred_at = time_from_wire("occurred_at", w.occurred_at.as_ref())?;
        use pb::event::Body as B;
        let body = match w.body {
            None => {
                return Err(WireError::field(
                    "body",
                    "no body set: exactly one is required",
                ));
            }
            Some(B::Created(c)) => EventBody::Created(TaskCreated {
                artifacts: artifacts_from_wire("created.artifacts", &c.artifacts)?,
                stage: opt_id::<StageName>("created.stage", &c.stage)?,
                title: c.title,
                assignee: opt_id::<AgentId>("created.assignee", &c.assignee)?,
                windows: TaskWindows {
                    start_within: duration_from_wire(
                        "created.start_within",
                        c.start_within.as_ref(),
                    )?,
                    deadline_within: duration_from_wire(
                        "created.deadline_within",
                        c.deadline_within.as_ref(),
                    )?,
                    heartbeat_within: duration_from_wire(
                        "created.heartbeat_within",
                        c.heartbeat_within.as_ref(),
                    )?,
                    progress_within: duration_from_wire(
                        "created.progress_within",
                        c.progress_within.as_ref(),
                    )?,
                },
            }),
            Some(B::Claimed(c)) => EventBody::Claimed {
                heartbeat_within: duration_from_wire(
                    "claimed.heartbeat_within",
                    c.heartbeat_within.as_ref(),
                )?,
            },
            Some(B::Heartbeat(h)) => EventBody::Heartbeat {
                note: h.note,
                progress: h.progress,
            },
            Some(B::Blocked(b)) => EventBody::Blocked { reason: b.reason },
            Some(B::HandoffOffered(o)) => {
                use pb::handoff_offered::Target;
                let to = match o.target {
                    Some(Target::ToAgent(a)) => {
                        HandoffTarget::Agent(id("handoff_offered.to_agent", AgentId::new(a))?)
                    }
                    Some(Target::ToStage(s)) => {
                        HandoffTarget::Stage(id("handoff_offered.to_stage", StageName::new(s))?)
                    }
                    None => {
                        return Err(WireError::field(
                            "handoff_offered.target",
                            "set to_agent or to_stage",
                        ));
                    }
                };
                EventBody::HandoffOffered {
                    to,
                    output_location: o.output_location,
                    accept_within: duration_from_wire(
                        "handoff_offered.accept_within",
                        o.accept_within.as_ref(),
                    )?,
                }
            }
            Some(B::HandoffAccepted(a)) => EventBody::HandoffAccepted {
                heartbeat_within: duration_from_wire(
                    "handoff_accepted.heartbeat_within",
                    a.heartbeat_within.as_ref(),
                )?,
            },
            Some(B::HandoffRejected(r)) => EventBody::HandoffRejected { reason: r.reason },
            Some(B::Completed(c)) => EventBody::Completed {
                output_location: c.output_location,
                summary: c.summary,
            },
            Some(B::Failed(f)) => EventBody::Failed {
                reason: f.reason,
                retryable: f.retryable,
            },
            Some(B::Released(r)) => EventBody::Released { reason: r.reason },
            Some(B::Revoked(r)) => EventBody::Revoked { reason: r.reason },
            Some(B::Cancelled(c)) => EventBody::Cancelled { reason: c.reason },
        };
        let event = Event {
            event_id: w.event_id,
            task,
            workflow,
            agent,
            epoch: w.epoch,
            context_version: w.context_version,
            occurred_at,
            body,
        };
        check_limits(&event)?;
        Ok(event)
    }
}

impl From<&Event> for pb::Event {
    fn from(e: &Event) -> Self {
        use pb::event::Body as B;
        let dur = |d: Option<Duration>| d.map(duration_to_wire);
        let body = match &e.body {
            EventBody::Created(c) => B::Created(pb::TaskCreated {
                stage: c
                    .stage
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                title: c.title.clone(),
                assignee: c
                    .assignee
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                start_within: dur(c.windows.start_within),
                deadline_within: dur(c.windows.deadline_within),
                heartbeat_within: dur(c.windows.heartbeat_within),
                progress_within: dur(c.windows.progress_within),
                artifacts: c.artifacts.iter().map(ToString::to_string).collect(),
            }),
            EventBody::Claimed { heartbeat_within } => B::Claimed(pb::Claimed {
                heartbeat_within: dur(*heartbeat_within),
            }),
            EventBody::Heartbeat { note, progress } => B::Heartbeat(pb::Heartbeat {
                note: note.clone(),
                progress: *progress,
            }),
            EventBody::Blocked { reason } => B::Blocked(pb::Blocked {
                reason: reason.clone(),
            }),
            EventBody::HandoffOffered {
                to,
                output_location,
                accept_within,
            } => B::HandoffOffered(pb::HandoffOffered {
                target: Some(match to {
                    HandoffTarget::Agent(a) => pb::handoff_offered::Target::ToAgent(a.to_string()),
                    HandoffTarget::Stage(s) => pb::handoff_offered::Target::ToStage(s.to_string()),
                }),
                output_location: output_location.clone(),
                accept_within: dur(*accept_within),
            }),
            EventBody::HandoffAccepted { heartbeat_within } => {
                B::HandoffAccepted(pb::HandoffAccepted {
                    heartbeat_within: dur(*heartbeat_within),
                })
            }
            EventBody::HandoffRejected { reason } => B::HandoffRejected(pb::HandoffRejected {
                reason: reason.clone(),
            }),
            EventBody::Completed {
                output_location,
                summary,
            } => B::Completed(pb::Completed {
                output_location: output_location.clone(),
                summary: summary.clone(),
            }),
            EventBody::Failed { reason, retryable } => B::Failed(pb::Failed {
                reason: reason.clone(),
                retryable: *retryable,
            }),
            EventBody::Released { reason } => B::Released(pb::Released {
                reason: reason.clone(),
            }),
            EventBody::Revoked { reason } => B::Revoked(pb::Revoked {
                reason: reason.clone(),
            }),
            EventBody::Cancelled { reason } => B::Cancelled(pb::Cancelled {
                reason: reason.clone(),
            }),
        };
        pb::Event {
            event_id: e.event_id.clone(),
            task_id: e.task.to_string(),
            workflow_id: e.workflow.to_string(),
            agent_id: e.agent.to_string(),
            epoch: e.epoch,
            context_version: e.context_version,
            occurred_at: opt_time(e.occurred_at),
            body: Some(body),
        }
    }
}

impl Event {
    /// The protobuf encoding of this event.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        pb::Event::from(self).encode_to_vec()
    }
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Submitted => pb::TaskStatus::Submitted,
            TaskStatus::Working => pb::TaskStatus::Working,
            TaskStatus::InputRequired => pb::TaskStatus::InputRequired,
            TaskStatus::HandoffPending => pb::TaskStatus::HandoffPending,
            TaskStatus::Completed => pb::TaskStatus::Completed,
            TaskStatus::Failed => pb::TaskStatus::Failed,
            TaskStatus::Canceled => pb::TaskStatus::Canceled,
        }
    }
}

impl TryFrom<pb::TaskStatus> for TaskStatus {
    type Error = WireError;
    fn try_from(s: pb::TaskStatus) -> Result<Self, WireError> {
        Ok(match s {
            pb::TaskStatus::Unspecified => return Err(WireError::field("status", "unspecified")),
            pb::TaskStatus::Submitted => TaskStatus::Submitted,
            pb::TaskStatus::Working => TaskStatus::Working,
            pb::TaskStatus::InputRequired => TaskStatus::InputRequired,
            pb::TaskStatus::HandoffPending => TaskStatus::HandoffPending,
            pb::TaskStatus::Completed => TaskStatus::Completed,
            pb::TaskStatus::Failed => TaskStatus::Failed,
            pb::TaskStatus::Canceled => TaskStatus::Canceled,
        })
    }
}

fn mark_to_wire(m: Option<Mark>) -> (Option<prost_types::Timestamp>, u64) {
    m.map_or((None, 0), |m| (Some(time_to_wire(m.at)), m.seq))
}

fn mark_from_wire(
    field: &str,
    t: Option<&prost_types::Timestamp>,
    seq: u64,
) -> Result<Option<Mark>, WireError> {
    Ok(time_from_wire(field, t)?.map(|at| Mark { at, seq }))
}

impl From<&EventRef> for pb::EventRef {
    fn from(r: &EventRef) -> Self {
        pb::EventRef {
            kind: r.kind.as_str().to_string(),
            agent_id: r.agent.to_string(),
            at: Some(time_to_wire(r.at)),
            seq: r.seq,
        }
    }
}

impl From<&Task> for pb::TaskState {
    fn from(t: &Task) -> Self {
        let dur = |d: Option<Duration>| d.map(duration_to_wire);
        let (waiting_since, waiting_since_seq) = mark_to_wire(t.waiting_since);
        let (owned_since, owned_since_seq) = mark_to_wire(t.owned_since);
        let (blocked_at, blocked_seq) = mark_to_wire(t.blocked_since);
        let (alive_since, alive_since_seq) = mark_to_wire(t.alive_since);
        let (progress_since, progress_since_seq) = mark_to_wire(t.progress_since);
        pb::TaskState {
            task_id: t.id.to_string(),
            workflow_id: t.workflow.to_string(),
            stage: t
                .stage
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            status: pb::TaskStatus::from(t.status) as i32,
            owner: t
                .owner
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            epoch: t.epoch,
            pending_handoff: t.pending_handoff.as_deref().map(|p| pb::PendingHandoff {
                from_agent: p.from.to_string(),
                target: Some(match &p.to {
                    HandoffTarget::Agent(a) => pb::pending_handoff::Target::ToAgent(a.to_string()),
                    HandoffTarget::Stage(s) => pb::pending_handoff::Target::ToStage(s.to_string()),
                }),
                output_location: p.output_location.clone(),
                offered_at: Some(time_to_wire(p.offered.at)),
                accept_by: opt_time(p.accept_by()),
                offered_seq: p.offered.seq,
                accept_within: dur(p.accept_within),
            }),
            output_location: t.output_location().to_string(),
            context_version: t.context_version,
            last_event_seq: t.seen_seq,
            last_event_at: Some(time_to_wire(t.last_event.at)),
            last_heartbeat_at: opt_time(t.last_heartbeat_at),
            last_progress_at: opt_time(t.last_progress_at),
            created_at: Some(time_to_wire(t.created.at)),
            updated_at: Some(time_to_wire(t.updated_at)),
            violations: t.violations,
            title: t.title().to_string(),
            assignee: t.assignee().map(ToString::to_string).unwrap_or_default(),
            start_within: dur(t.windows().start_within),
            deadline_within: dur(t.windows().deadline_within),
            heartbeat_within: dur(t.windows().heartbeat_within),
            progress_within: dur(t.windows().progress_within),
            artifacts: t.artifacts().iter().map(ToString::to_string).collect(),
            lease: dur(t.lease),
            owned_since,
            waiting_since,
            waiting_since_seq,
            blocked_at,
            blocked_reason: t.blocked_reason().to_string(),
            last_event: Some(pb::EventRef::from(&t.last_event)),
            created_seq: t.created.seq,
            outcome: t.outcome().to_string(),
            owned_since_seq,
            blocked_seq,
            alive_since,
            alive_since_seq,
            progress_since,
            progress_since_seq,
        }
    }
}

impl TryFrom<pb::TaskState> for Task {
    type Error = WireError;

    fn try_from(w: pb::TaskState) -> Result<Self, WireError> {
        let dur = |f: &str, d: &Option<prost_types::Duration>| duration_from_wire(f, d.as_ref());
        let status = pb::TaskStatus::try_from(w.status)
            .map_err(|_| WireError::field("status", format!("unknown value {}", w.status)))
            .and_then(TaskStatus::try_from)?;
        let pending_handoff = match w.pending_handoff {
            None => None,
            Some(p) => {
                let to = match p.target {
                    Some(pb::pending_handoff::Target::ToAgent(a)) => {
                        HandoffTarget::Agent(id("pending_handoff.to_agent", AgentId::new(a))?)
                    }
                    Some(pb::pending_handoff::Target::ToStage(s)) => {
                        HandoffTarget::Stage(id("pending_handoff.to_stage", StageName::new(s))?)
                    }
                    None => return Err(WireError::field("pending_handoff.target", "missing")),
                };
                Some(Box::new(PendingHandoff {
                    from: id("pending_handoff.from_agent", AgentId::new(&p.from_agent))?,
                    to,
                    output_location: p.output_location,
                    offered: Mark {
                        at: time_from_wire("pending_handoff.offered_at", p.offered_at.as_ref())?
                            .unwrap_or_default(),
                        seq: p.offered_seq,
                    },
                    accept_within: dur("pending_handoff.accept_within", &p.accept_within)?,
                }))
            }
        };
        let last = w
            .last_event
            .ok_or_else(|| WireError::field("last_event", "missing"))?;
        let last_event = EventRef {
            kind: EventKind::parse(&last.kind).ok_or_else(|| {
                WireError::field("last_event.kind", format!("unknown kind {:?}", last.kind))
            })?,
            agent: id("last_event.agent_id", AgentId::new(&last.agent_id))?,
            at: time_from_wire("last_event.at", last.at.as_ref())?.unwrap_or_default(),
            seq: last.seq,
        };
        let details = TaskDetails {
            title: w.title,
            assignee: opt_id::<AgentId>("assignee", &w.assignee)?,
            windows: TaskWindows {
                start_within: dur("start_within", &w.start_within)?,
                deadline_within: dur("deadline_within", &w.deadline_within)?,
                heartbeat_within: dur("heartbeat_within", &w.heartbeat_within)?,
                progress_within: dur("progress_within", &w.progress_within)?,
            },
            output_location: w.output_location,
            blocked_reason: w.blocked_reason,
            outcome: w.outcome,
            artifacts: artifacts_from_wire("artifacts", &w.artifacts)?,
        };
        Ok(Task {
            id: id("task_id", TaskId::new(&w.task_id))?,
            workflow: id("workflow_id", WorkflowId::new(&w.workflow_id))?,
            stage: opt_id::<StageName>("stage", &w.stage)?,
            details: (details != TaskDetails::default()).then(|| Box::new(details)),
            status,
            owner: opt_id::<AgentId>("owner", &w.owner)?,
            epoch: w.epoch,
            pending_handoff,
            context_version: w.context_version,
            lease: dur("lease", &w.lease)?,
            created: Mark {
                at: time_from_wire("created_at", w.created_at.as_ref())?.unwrap_or_default(),
                seq: w.created_seq,
            },
            updated_at: time_from_wire("updated_at", w.updated_at.as_ref())?.unwrap_or_default(),
            seen_seq: w.last_event_seq.max(last_event.seq),
            last_event,
            last_heartbeat_at: time_from_wire("last_heartbeat_at", w.last_heartbeat_at.as_ref())?,
            last_progress_at: time_from_wire("last_progress_at", w.last_progress_at.as_ref())?,
            owned_since: mark_from_wire("owned_since", w.owned_since.as_ref(), w.owned_since_seq)?,
            alive_since: mark_from_wire("alive_since", w.alive_since.as_ref(), w.alive_since_seq)?,
            progress_since: mark_from_wire(
                "progress_since",
                w.progress_since.as_ref(),
                w.progress_since_seq,
            )?,
            waiting_since: mark_from_wire(
                "waiting_since",
                w.waiting_since.as_ref(),
                w.waiting_since_seq,
            )?,
            blocked_since: mark_from_wire("blocked_at", w.blocked_at.as_ref(), w.blocked_seq)?,
            violations: w.violations,
        })
    }
}

impl Task {
    /// The protobuf encoding of this task's state (the KV value).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        pb::TaskState::from(self).encode_to_vec()
    }

    /// Decodes a KV value.
    pub fn decode(bytes: &[u8]) -> Result<Task, WireError> {
        let wire = decode_wire::<pb::TaskState>("baton.v1.TaskState", bytes)?;
        Task::try_from(wire)
    }
}

impl From<AlertKind> for pb::AlertKind {
    fn from(k: AlertKind) -> Self {
        match k {
            AlertKind::HeartbeatMissed => pb::AlertKind::HeartbeatMissed,
            AlertKind::HandoffNotAccepted => pb::AlertKind::HandoffNotAccepted,
            AlertKind::NotStarted => pb::AlertKind::NotStarted,
            AlertKind::DeadlineExceeded => pb::AlertKind::DeadlineExceeded,
            AlertKind::NoProgress => pb::AlertKind::NoProgress,
            AlertKind::BlockedTooLong => pb::AlertKind::BlockedTooLong,
            AlertKind::OwnershipViolation => pb::AlertKind::OwnershipViolation,
            AlertKind::StaleContext => pb::AlertKind::StaleContext,
            AlertKind::MalformedEvent => pb::AlertKind::MalformedEvent,
            AlertKind::UnknownTask => pb::AlertKind::UnknownTask,
            AlertKind::OrchestratorDown => pb::AlertKind::OrchestratorDown,
            AlertKind::ConsumerStalled => pb::AlertKind::ConsumerStalled,
            AlertKind::DetectorDown => pb::AlertKind::DetectorDown,
            AlertKind::LeaseExpired => pb::AlertKind::LeaseExpired,
            AlertKind::LeaseHeldTooLong => pb::AlertKind::LeaseHeldTooLong,
            AlertKind::LeaseStaleWrite => pb::AlertKind::LeaseStaleWrite,
        }
    }
}

impl TryFrom<pb::AlertKind> for AlertKind {
    type Error = WireError;
    fn try_from(k: pb::AlertKind) -> Result<Self, WireError> {
        AlertKind::ALL
            .into_iter()
            .find(|d| pb::AlertKind::from(*d) == k)
            .ok_or_else(|| WireError::field("kind", "unspecified"))
    }
}

fn severity_to_wire(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

impl From<&Alert> for pb::Alert {
    fn from(a: &Alert) -> Self {
        pb::Alert {
            alert_id: a.id.clone(),
            kind: pb::AlertKind::from(a.kind) as i32,
            state: match a.state {
                AlertState::Firing => pb::AlertState::Firing,
                AlertState::Resolved => pb::AlertState::Resolved,
            } as i32,
            severity: severity_to_wire(a.severity) as i32,
            task_id: a
                .task
                .as_ref()
                .map_or_else(|| subjects::SYSTEM_TOKEN.to_string(), ToString::to_string),
            workflow_id: a
                .workflow
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            stage: a
                .stage
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            agents: a.agents.iter().map(ToString::to_string).collect(),
            expected: clip(&a.expected, MAX_ALERT_TEXT).into_owned(),
            due_at: opt_time(a.due_at),
            observed_at: Some(time_to_wire(a.observed_at)),
            last_event: a.last_event.as_ref().map(|e| pb::LastEvent {
                kind: e.kind.as_str().to_string(),
                agent_id: e.agent.to_string(),
                at: Some(time_to_wire(e.at)),
                seq: e.seq,
            }),
            summary: clip(&a.summary, MAX_ALERT_TEXT).into_owned(),
            resolves: a.resolves.clone().unwrap_or_default(),
            epoch: a.epoch,
            late_by: a.late_by.map(duration_to_wire),
            notification: a.notification,
            task_status: a.task_status.map_or(0, |s| pb::TaskStatus::from(s) as i32),
            missed_versions: a.missed_versions.clone(),
            event_id: a.event_id.clone().unwrap_or_default(),
            event_seq: a.event_seq,
            detail: clip(&a.detail, MAX_ALERT_TEXT).into_owned(),
        }
    }
}

impl TryFrom<pb::Alert> for Alert {
    type Error = WireError;

    fn try_from(w: pb::Alert) -> Result<Self, WireError> {
        let kind = pb::AlertKind::try_from(w.kind)
            .map_err(|_| WireError::field("kind", format!("unknown value {}", w.kind)))
            .and_then(AlertKind::try_from)?;
        let state = match pb::AlertState::try_from(w.state) {
            Ok(pb::AlertState::Firing) => AlertState::Firing,
            Ok(pb::AlertState::Resolved) => AlertState::Resolved,
            _ => {
                return Err(WireError::field(
                    "state",
                    format!("invalid value {}", w.state),
                ));
            }
        };
        let severity = match pb::Severity::try_from(w.severity) {
            Ok(pb::Severity::Info) => Severity::Info,
            Ok(pb::Severity::Warning) => Severity::Warning,
            Ok(pb::Severity::Critical) => Severity::Critical,
            _ => kind.severity(),
        };
        let task = if w.task_id == subjects::SYSTEM_TOKEN || w.task_id.is_empty() {
            None
        } else {
            Some(id("task_id", TaskId::new(&w.task_id))?)
        };
        let last_event = match w.last_event {
            Some(e) if !e.kind.is_empty() => Some(EventRef {
                kind: EventKind::parse(&e.kind).ok_or_else(|| {
                    WireError::field("last_event.kind", format!("unknown kind {:?}", e.kind))
                })?,
                agent: id("last_event.agent_id", AgentId::new(&e.agent_id))?,
                at: time_from_wire("last_event.at", e.at.as_ref())?.unwrap_or_default(),
                seq: e.seq,
            }),
            _ => None,
        };
        let task_status = match pb::TaskStatus::try_from(w.task_status) {
            Ok(pb::TaskStatus::Unspecified) | Err(_) => None,
            Ok(s) => Some(TaskStatus::try_from(s)?),
        };
        Ok(Alert {
            id: w.alert_id,
            kind,
            state,
            severity,
            task,
            workflow: opt_id::<WorkflowId>("workflow_id", &w.workflow_id)?,
            stage: opt_id::<StageName>("stage", &w.stage)?,
            agents: w
                .agents
                .iter()
                .map(|a| id("agents", AgentId::new(a)))
                .collect::<Result<_, _>>()?,
            expected: w.expected,
            due_at: time_from_wire("due_at", w.due_at.as_ref())?,
            observed_at: time_from_wire("observed_at", w.observed_at.as_ref())?.unwrap_or_default(),
            last_event,
            summary: w.summary,
            resolves: (!w.resolves.is_empty()).then_some(w.resolves),
            epoch: w.epoch,
            late_by: duration_from_wire("late_by", w.late_by.as_ref())?,
            notification: w.notification,
            task_status,
            missed_versions: w.missed_versions,
            event_id: (!w.event_id.is_empty()).then_some(w.event_id),
            event_seq: w.event_seq,
            detail: w.detail,
        })
    }
}

impl Alert {
    /// The protobuf encoding of this alert.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        pb::Alert::from(self).encode_to_vec()
    }

    /// Decodes an alert payload.
    pub fn decode(bytes: &[u8]) -> Result<Alert, WireError> {
        let wire = decode_wire::<pb::Alert>("baton.v1.Alert", bytes)?;
        Alert::try_from(wire)
    }
}

/// The one read path for decision-record entries: bytes from `subject`
/// (`baton.ctx.<workflow>.<author>`) become a validated entry or a typed
/// refusal. An entry whose workflow or author does not match its subject is
/// refused, so nobody can record a decision as someone else.
pub fn read_context_entry(subject: &str, bytes: &[u8]) -> Result<ContextEntry, WireError> {
    let entry = ContextEntry::decode(bytes)?;
    let mismatch = |message: String| WireError::Subject {
        subject: subject.to_string(),
        message,
    };
    let Some((workflow, author)) = subjects::parse_context(subject) else {
        return Err(mismatch(
            "not of the form baton.ctx.<workflow>.<author>".into(),
        ));
    };
    if workflow != entry.workflow.as_str() {
        return Err(mismatch(format!(
            "subject workflow {workflow:?} but payload workflow_id {:?}",
            entry.workflow.as_str()
        )));
    }
    if author != entry.author.as_str() {
        return Err(mismatch(format!(
            "subject author {author:?} but payload author {:?}",
            entry.author.as_str()
        )));
    }
    Ok(entry)
}

impl TryFrom<pb::ContextEntry> for ContextEntry {
    type Error = WireError;
    fn try_from(w: pb::ContextEntry) -> Result<Self, WireError> {
        Ok(ContextEntry {
            workflow: id("workflow_id", WorkflowId::new(&w.workflow_id))?,
            author: id("author", AgentId::new(&w.author))?,
            summary: bounded("summary", w.summary, limits::DECISION_SUMMARY)?,
            body: bounded("body", w.body, limits::DECISION_BODY)?,
            supersedes: w.supersedes,
            recorded_at: time_from_wire("recorded_at", w.recorded_at.as_ref())?,
        })
    }
}

impl From<&ContextEntry> for pb::ContextEntry {
    fn from(e: &ContextEntry) -> Self {
        pb::ContextEntry {
            workflow_id: e.workflow.to_string(),
            author: e.author.to_string(),
            summary: e.summary.clone(),
            body: e.body.clone(),
            supersedes: e.supersedes,
            recorded_at: opt_time(e.recorded_at),
        }
    }
}

impl ContextEntry {
    /// The protobuf encoding of this entry.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        pb::ContextEntry::from(self).encode_to_vec()
    }

    /// Decodes an entry payload, without the subject check; readers of the
    /// stream use [`read_context_entry`].
    pub fn decode(bytes: &[u8]) -> Result<ContextEntry, WireError> {
        let wire = decode_wire::<pb::ContextEntry>("baton.v1.ContextEntry", bytes)?;
        let entry = ContextEntry::try_from(wire)?;
        if bytes.len() > limits::CONTEXT_PAYLOAD {
            return Err(WireError::TooLarge {
                field: "payload".into(),
                len: bytes.len(),
                max: limits::CONTEXT_PAYLOAD,
            });
        }
        Ok(entry)
    }
}

impl From<&Policy> for pb::FoldPolicy {
    fn from(p: &Policy) -> Self {
        pb::FoldPolicy {
            operators: p.operators.iter().map(ToString::to_string).collect(),
            unknown_task: match p.unknown_task {
                UnknownTaskPolicy::Alert => pb::UnknownTaskPolicy::Alert,
                UnknownTaskPolicy::AutoCreate => pb::UnknownTaskPolicy::Create,
            } as i32,
            max_event_bytes: limits::EVENT_PAYLOAD as u64,
        }
    }
}

impl TryFrom<pb::FoldPolicy> for Policy {
    type Error = WireError;
    fn try_from(w: pb::FoldPolicy) -> Result<Self, WireError> {
        let unknown_task = match pb::UnknownTaskPolicy::try_from(w.unknown_task) {
            Ok(pb::UnknownTaskPolicy::Unspecified | pb::UnknownTaskPolicy::Alert) => {
                UnknownTaskPolicy::Alert
            }
            Ok(pb::UnknownTaskPolicy::Create) => UnknownTaskPolicy::AutoCreate,
            Err(_) => {
                return Err(WireError::field(
                    "unknown_task",
                    format!("unknown value {}", w.unknown_task),
                ));
            }
        };
        Ok(Policy {
            operators: w
                .operators
                .iter()
                .map(|a| id("operators", AgentId::new(a)))
                .collect::<Result<_, _>>()?,
            unknown_task,
        })
    }
}

impl Policy {
    /// The protobuf encoding of this policy (the `baton-policy` KV value).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        pb::FoldPolicy::from(self).encode_to_vec()
    }

    /// Decodes the `baton-policy` KV value.
    pub fn decode(bytes: &[u8]) -> Result<Policy, WireError> {
        let wire = decode_wire::<pb::FoldPolicy>("baton.v1.FoldPolicy", bytes)?;
        Policy::try_from(wire)
    }
}

impl TryFrom<pb::Silence> for Silence {
    type Error = WireError;
    fn try_from(w: pb::Silence) -> Result<Self, WireError> {
        if w.task_id.is_empty() && w.agent_id.is_empty() && w.kind == 0 {
            return Err(WireError::field(
                "task_id",
                "a silence needs at least one matcher (task, kind or agent); one that matches everything would mute every page",
            ));
        }
        let kind = match pb::AlertKind::try_from(w.kind) {
            Ok(pb::AlertKind::Unspecified) => None,
            Ok(k) => Some(AlertKind::try_from(k)?),
            Err(_) => {
                return Err(WireError::field(
                    "kind",
                    format!("unknown value {}", w.kind),
                ));
            }
        };
        Ok(Silence {
            id: w.silence_id,
            task: opt_id::<TaskId>("task_id", &w.task_id)?,
            kind,
            agent: opt_id::<AgentId>("agent_id", &w.agent_id)?,
            until: time_from_wire("until", w.until.as_ref())?
                .ok_or_else(|| WireError::field("until", "required"))?,
            created_by: w.created_by,
            reason: w.reason,
            created_at: time_from_wire("created_at", w.created_at.as_ref())?.unwrap_or_default(),
        })
    }
}

impl From<&Silence> for pb::Silence {
    fn from(s: &Silence) -> Self {
        pb::Silence {
            silence_id: s.id.clone(),
            task_id: s.task.as_ref().map(ToString::to_string).unwrap_or_default(),
            kind: s.kind.map_or(0, |k| pb::AlertKind::from(k) as i32),
            agent_id: s
                .agent
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            until: Some(time_to_wire(s.until)),
            created_by: s.created_by.clone(),
            reason: s.reason.clone(),
            created_at: Some(time_to_wire(s.created_at)),
        }
    }
}
