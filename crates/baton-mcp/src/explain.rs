//! Refusals a model can act on: every way an act can fail, said as what
//! happened and what to do next, with the facts (owner, epoch, versions,
//! identity) as fields too.
//!
//! These become tool errors (`isError: true`), never protocol errors, so a
//! host shows them to the model and the server keeps serving.

use baton_agent::{BrokerError, ClaimError, ContextError, Decision, HandoffError};
use baton_core::{AgentId, EventBody, EventKind, IdError, Task, TaskId, TaskStatus, WorkflowId};
use serde_json::{Value, json};

/// Why a tool did not do what was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// A stable token for programs (`claim_lost`, `stale_context`, ...).
    pub code: &'static str,
    /// What happened and what to do, for the model.
    pub message: String,
    /// The facts, as fields.
    pub details: Value,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>, details: Value) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            details,
        }
    }

    /// The refusal as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "error": self.code, "message": self.message });
        if let (Some(out), Some(details)) = (v.as_object_mut(), self.details.as_object()) {
            for (k, val) in details {
                out.insert(k.clone(), val.clone());
            }
        }
        v
    }
}

pub fn invalid_id(e: IdError) -> Refusal {
    Refusal::new(
        "invalid_argument",
        format!(
            "{e}. Ids are 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-', starting with a letter or digit."
        ),
        json!({}),
    )
}

pub fn invalid_argument(message: impl Into<String>) -> Refusal {
    Refusal::new("invalid_argument", message, json!({}))
}

pub fn unknown_task(task: &TaskId) -> Refusal {
    Refusal::new(
        "unknown_task",
        format!(
            "task {task} does not exist: check the id (list_ready_tasks lists what there is), or create it with create_task."
        ),
        json!({ "task_id": task.as_str() }),
    )
}

pub fn exists(task: &TaskId, status: Option<TaskStatus>) -> Refusal {
    Refusal::new(
        "task_exists",
        format!(
            "task {task} already exists{}: nothing was created. Task ids are unique for good; pick another id, or show_task to see this one.",
            status.map(|s| format!(" ({s})")).unwrap_or_default()
        ),
        json!({ "task_id": task.as_str(), "status": status.map(|s| s.to_string()) }),
    )
}

pub fn claim(e: ClaimError) -> Refusal {
    let message = e.to_string();
    match e {
        ClaimError::Lost { task, owner, epoch } => Refusal::new(
            "claim_lost",
            format!(
                "claim of task {task} lost: it is owned by {owner} (epoch {epoch}). Do not work on it; pick another task with list_ready_tasks."
            ),
            json!({ "task_id": task.as_str(), "owner": owner.as_str(), "epoch": epoch }),
        ),
        ClaimError::UnknownTask { task } => unknown_task(&task),
        ClaimError::Ended { task, status } => Refusal::new(
            "task_ended",
            format!("task {task} is {status} and can no longer be claimed."),
            json!({ "task_id": task.as_str(), "status": status.to_string() }),
        ),
        ClaimError::NotAssignee { task, assignee } => Refusal::new(
            "not_assignee",
            format!("task {task} is assigned to {assignee}; only that agent may claim it."),
            json!({ "task_id": task.as_str(), "assignee": assignee.as_str() }),
        ),
        ClaimError::NotOwned { task } => Refusal::new(
            "not_owned",
            format!("task {task} is not owned by anyone: claim it first."),
            json!({ "task_id": task.as_str() }),
        ),
        ClaimError::AlreadyYours { task, epoch } => Refusal::new(
            "already_yours",
            message,
            json!({ "task_id": task.as_str(), "epoch": epoch }),
        ),
        ClaimError::ArtifactHeld { task, source } => artifact_held(&task, &source, "claimed"),
        ClaimError::Broker(e) => Refusal::new("broker", e.to_string(), json!({})),
    }
}

/// A task's declared artifact is leased by another agent: nothing was
/// taken.
fn artifact_held(task: &TaskId, source: &baton_agent::LeaseError, act: &str) -> Refusal {
    let holder = match source {
        baton_agent::LeaseError::Held {
            artifact, holder, ..
        } => json!({ "artifact": artifact, "holder": holder.as_str() }),
        _ => json!({}),
    };
    Refusal::new(
        "artifact_held",
        format!(
            "task {task} was not {act}: {source}. Nothing was taken (no task, no lease); wait for the holder or pick another task."
        ),
        json!({ "task_id": task.as_str(), "lease": holder }),
    )
}

pub fn lease(e: baton_agent::LeaseError) -> Refusal {
    use baton_agent::LeaseError as L;
    let message = e.to_string();
    match e {
        L::Held {
            artifact,
            workflow,
            holder,
            mode,
            since,
            expires_at,
            token,
        } => Refusal::new(
            "lease_held",
            format!(
                "{message}. Do not write to it; wait for {holder} to release it (or for it to expire) and try again, or work on something else."
            ),
            json!({
                "artifact": artifact, "workflow": workflow.as_ref().map(WorkflowId::as_str),
                "holder": holder.as_str(), "mode": mode.to_string(),
                "since": since.to_rfc3339(), "expires_at": expires_at.to_rfc3339(), "token": token,
            }),
        ),
        L::Lost {
            artifact, token, ..
        } => Refusal::new(
            "lease_lost",
            format!(
                "{message}. Stop writing to it: writes with token {token} are refused; acquire it again."
            ),
            json!({ "artifact": artifact, "token": token }),
        ),
        L::NotHeld { artifact } => {
            Refusal::new("lease_not_held", message, json!({ "artifact": artifact }))
        }
        L::Invalid(_) => Refusal::new("invalid_argument", message, json!({})),
        L::Broker(e) => Refusal::new("broker", e.to_string(), json!({})),
    }
}

pub fn handoff(e: HandoffError) -> Refusal {
    let message = e.to_string();
    match e {
        HandoffError::UnknownTask { task } => unknown_task(&task),
        HandoffError::NoOffer { task } => Refusal::new(
            "no_offer",
            format!(
                "task {task} has no pending handoff: nothing to accept or reject (show_task tells its state)."
            ),
            json!({ "task_id": task.as_str() }),
        ),
        HandoffError::NotForYou { task, recipient } => Refusal::new(
            "not_for_you",
            format!("the handoff of task {task} is offered to {recipient}, not to you."),
            json!({ "task_id": task.as_str(), "recipient": recipient.as_str() }),
        ),
        HandoffError::OwnOffer { task } => Refusal::new(
            "own_offer",
            format!(
                "you offered task {task} yourself: you cannot accept or reject your own offer."
            ),
            json!({ "task_id": task.as_str() }),
        ),
        HandoffError::Taken { task, owner } => Refusal::new(
            "handoff_taken",
            format!(
                "the handoff of task {task} was already accepted by {owner}: it owns the task now."
            ),
            json!({ "task_id": task.as_str(), "owner": owner.as_str() }),
        ),
        HandoffError::Ended { task, status } => Refusal::new(
            "task_ended",
            format!("task {task} is {status}."),
            json!({ "task_id": task.as_str(), "status": status.to_string() }),
        ),
        HandoffError::ArtifactHeld { task, source } => artifact_held(&task, &source, "accepted"),
        HandoffError::Broker(_) => Refusal::new("broker", message, json!({})),
    }
}

pub fn context(workflow: &WorkflowId, e: ContextError) -> Refusal {
    match e {
        ContextError::Invalid(why) => Refusal::new(
            "invalid_argument",
            format!("decision not recorded in {workflow}: {why}"),
            json!({ "workflow": workflow.as_str() }),
        ),
        e => Refusal::new(
            "context",
            e.to_string(),
            json!({ "workflow": workflow.as_str() }),
        ),
    }
}

/// The broker could not do it; a refused permission names the identity.
pub fn broker(e: BrokerError, me: &AgentId, identity: &str) -> Refusal {
    match e {
        BrokerError::NotPermitted {
            identity: as_id,
            subject,
        } => Refusal::new(
            "not_permitted",
            format!(
                "the NATS server refused to let this server publish as {as_id} (subject {subject}): this server runs as agent {me} with {identity}, and those credentials do not carry {as_id}'s permissions. Start `baton mcp --agent {me}` with {me}'s identity file (`--nkey`, from `baton auth --agent {me}`)."
            ),
            json!({ "agent": me.as_str(), "credentials": identity, "subject": subject }),
        ),
        e => Refusal::new(
            "broker",
            format!(
                "Baton's broker did not answer as expected: {e}. Nothing is known to have changed; retrying the same call is safe."
            ),
            json!({}),
        ),
    }
}

fn decision_list(decisions: &[Decision]) -> (String, Value) {
    let text = decisions
        .iter()
        .map(|d| {
            format!(
                "{} by {} (\"{}\")",
                d.version, d.entry.author, d.entry.summary
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let value = decisions
        .iter()
        .map(|d| json!({ "version": d.version, "author": d.entry.author.as_str(), "summary": d.entry.summary }))
        .collect();
    (text, value)
}

/// Recording over a decision not read yet.
pub fn stale_record(workflow: &WorkflowId, read: u64, latest: u64, unread: &[Decision]) -> Refusal {
    let (text, list) = decision_list(unread);
    let versions: Vec<u64> = unread.iter().map(|d| d.version).collect();
    Refusal::new(
        "stale_context",
        format!(
            "decision not recorded: the decision record of {workflow} changed since you read it (you read version {read}; it is at version {latest}). Unread: {}. Call read_decisions with workflow {workflow}, reconsider your decision in their light, then record it again.",
            if text.is_empty() {
                format!("up to version {latest}")
            } else {
                text
            }
        ),
        json!({ "workflow": workflow.as_str(), "version_read": read, "latest_version": latest, "unread_versions": versions, "unread": list }),
    )
}

/// An act that would build on decisions not read yet.
pub fn unread_decisions(
    workflow: &WorkflowId,
    read: u64,
    unread: &[Decision],
    kind: EventKind,
) -> Refusal {
    let (text, list) = decision_list(unread);
    let versions: Vec<u64> = unread.iter().map(|d| d.version).collect();
    Refusal::new(
        "stale_context",
        format!(
            "not done: workflow {workflow} has decisions you have not read: {text}. You read version {read}; {} now would act on stale context (Baton raises STALE_CONTEXT). Call read_decisions with workflow {workflow}, then retry.",
            kind.as_str()
        ),
        json!({ "workflow": workflow.as_str(), "version_read": read, "unread_versions": versions, "unread": list }),
    )
}

/// What happened to a task this agent no longer holds.
pub fn loss(me: &AgentId, t: &Task, last: Option<(AgentId, EventBody)>) -> String {
    let task = &t.id;
    match last {
        Some((by, EventBody::Revoked { reason })) if t.owner.as_ref() != Some(me) => format!(
            "task {task} was revoked by {by} ({reason}); you no longer own it. Stop working on it and do not publish its output."
        ),
        Some((by, EventBody::Cancelled { reason })) => {
            format!("task {task} was cancelled by {by} ({reason}). Stop working on it.")
        }
        _ => match (&t.owner, t.status) {
            (_, s) if s.is_terminal() => format!("task {task} is {s}."),
            (Some(owner), TaskStatus::HandoffPending) if owner == me => format!(
                "you offered task {task} and the offer is pending: you may not act on it until the recipient rejects it."
            ),
            (Some(owner), _) if owner == me => {
                format!(
                    "task {task} is yours at epoch {}, held by another session of yours.",
                    t.epoch
                )
            }
            (Some(owner), _) => format!(
                "task {task} is owned by {owner} (epoch {}). You do not own it; do not work on it.",
                t.epoch
            ),
            (None, _) => format!(
                "task {task} is not owned by anyone ({}); claim_task it before acting.",
                t.status
            ),
        },
    }
}

/// Acting on a task this agent does not hold.
pub fn not_yours(me: &AgentId, t: &Task, last: Option<(AgentId, EventBody)>) -> Refusal {
    let revoked =
        matches!(&last, Some((_, EventBody::Revoked { .. }))) && t.owner.as_ref() != Some(me);
    let code = if revoked {
        "revoked"
    } else if t.status.is_terminal() {
        "task_ended"
    } else {
        "not_owner"
    };
    let by = last.as_ref().map(|(a, _)| a.as_str().to_string());
    Refusal::new(
        code,
        loss(me, t, last),
        json!({
            "task_id": t.id.as_str(),
            "owner": t.owner.as_ref().map(AgentId::as_str),
            "epoch": t.epoch,
            "status": t.status.to_string(),
            "last_act_by": by,
        }),
    )
}

pub fn invalid_act(task: &TaskId, why: &str) -> Refusal {
    Refusal::new(
        "not_allowed",
        format!("not allowed on task {task}: {why}"),
        json!({ "task_id": task.as_str() }),
    )
}
