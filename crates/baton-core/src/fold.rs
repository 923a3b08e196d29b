//! The task state machine: one event in, the new state and effects out.
//!
//! `apply` implements every ownership rule of DESIGN.md. It never fails and
//! never performs I/O: refusals are data ([`Disposition::Refused`]) and the
//! things a service must do are returned as [`Effect`]s, which the service
//! carries out before it acknowledges the event.
//!
//! Determinism: the result depends only on the slot, the event, its stream
//! metadata and the policy. Idempotence: an event whose sequence is not newer
//! than the task's last seen sequence changes nothing.

use std::fmt;

use crate::catalogue::{unknown_task_alert, violation_alert};

use crate::{
    alert::Alert,
    event::{Event, EventBody, EventKind, EventMeta, HandoffTarget},
    ids::AgentId,
    task::{EventRef, Mark, PendingHandoff, Task, TaskDetails, TaskStatus},
};

/// What to do with events for tasks that were never created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownTaskPolicy {
    /// Ignore the event and raise `UNKNOWN_TASK`.
    #[default]
    Alert,
    /// Create the task from the event, apply the event, and raise
    /// `UNKNOWN_TASK`.
    AutoCreate,
}

/// Configuration the fold depends on. Replaying with the same policy gives
/// the same state.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Agents allowed to revoke and cancel; empty = anyone.
    pub operators: Vec<AgentId>,
    pub unknown_task: UnknownTaskPolicy,
}

impl Policy {
    fn is_operator(&self, agent: &AgentId) -> bool {
        self.operators.is_empty() || self.operators.contains(agent)
    }
}

/// Something the service must carry out for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The task's record changed: store it.
    Persist,
    /// Publish this alert.
    Raise(Box<Alert>),
}

/// What happened to an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// The event changed the task.
    Applied,
    /// The event broke a rule; ownership, epoch and status are unchanged.
    Refused(Violation),
    /// Already applied (its sequence is not newer than the task's last).
    Duplicate,
    /// The task was never created and the policy is to ignore such events.
    UnknownTask,
}

/// The effects of one event; at most a few, kept inline (no allocation on
/// the hot path).
pub type Effects = smallvec::SmallVec<[Effect; 2]>;

/// The result of folding one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub disposition: Disposition,
    pub effects: Effects,
}

impl Outcome {
    fn nothing(disposition: Disposition) -> Outcome {
        Outcome {
            disposition,
            effects: Effects::new(),
        }
    }

    /// The alerts this outcome raises.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Raise(a) => Some(&**a),
            Effect::Persist => None,
        })
    }

    /// Whether the task's record must be stored.
    pub fn must_persist(&self) -> bool {
        self.effects.contains(&Effect::Persist)
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationReason {
    /// Only the owner may send this, and the sender is not the owner.
    NotOwner,
    /// The sender owns the task but under another epoch (a stale token).
    StaleEpoch,
    /// A claim of a task that is already owned.
    AlreadyOwned,
    /// A claim by someone other than the task's assignee.
    NotAssignee,
    /// Accept or reject by someone the pending offer is not for.
    NotRecipient,
    /// Accept or reject with no offer pending.
    NoPendingHandoff,
    /// An offer, or a block, while an offer is pending.
    HandoffPending,
    /// An offer to the sender itself.
    OfferToSelf,
    /// Any event after the task completed, failed or was cancelled.
    AfterTerminal,
    /// Revoke or cancel by an agent that is not a configured operator.
    NotOperator,
    /// Revoke of a task nobody owns.
    NotOwned,
    /// A second `TaskCreated` for an existing task.
    AlreadyExists,
}

/// A refused event: who did what, against whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: ViolationReason,
    pub event_kind: EventKind,
    /// The sender of the refused event.
    pub actor: AgentId,
    /// The other party: the owner, the offer's recipient or the assignee.
    pub counterpart: Option<AgentId>,
    /// The epoch the sender claimed to hold.
    pub held_epoch: u64,
    /// The task's epoch.
    pub current_epoch: u64,
    pub status: TaskStatus,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let other = self
            .counterpart
            .as_ref()
            .map_or_else(|| "nobody".to_string(), AgentId::to_string);
        match self.reason {
            ViolationReason::NotOwner => {
                write!(f, "{} is not the owner (owner: {other})", self.actor)
            }
            ViolationReason::StaleEpoch => write!(
                f,
                "{} holds epoch {} but the task is at epoch {}",
                self.actor, self.held_epoch, self.current_epoch
            ),
            ViolationReason::AlreadyOwned => write!(f, "task is already owned by {other}"),
            ViolationReason::NotAssignee => write!(f, "task is assigned to {other}"),
            ViolationReason::NotRecipient => {
                write!(f, "the pending offer is for {other}, not {}", self.actor)
            }
            ViolationReason::NoPendingHandoff => write!(f, "no handoff is pending"),
            ViolationReason::HandoffPending => {
                write!(f, "a handoff is pending; wait for accept or reject")
            }
            ViolationReason::OfferToSelf => write!(f, "{} offered the task to itself", self.actor),
            ViolationReason::AfterTerminal => write!(f, "task is already {}", self.status),
            ViolationReason::NotOperator => write!(f, "{} is not an operator", self.actor),
            ViolationReason::NotOwned => write!(f, "task is not owned"),
            ViolationReason::AlreadyExists => write!(f, "task already exists"),
        }
    }
}

/// Folds one event into a task slot (`None` = no such task yet).
pub fn apply(slot: &mut Option<Task>, event: &Event, meta: EventMeta, policy: &Policy) -> Outcome {
    if let Some(task) = slot {
        return apply_known(task, event, meta, policy);
    }
    if let EventBody::Created(_) = &event.body {
        *slot = Some(created(event, meta));
        return Outcome {
            disposition: Disposition::Applied,
            effects: smallvec::smallvec![Effect::Persist],
        };
    }
    let alert = unknown_task_alert(event, meta, policy.unknown_task);
    match policy.unknown_task {
        UnknownTaskPolicy::Alert => Outcome {
            disposition: Disposition::UnknownTask,
            effects: smallvec::smallvec![Effect::Raise(Box::new(alert))],
        },
        UnknownTaskPolicy::AutoCreate => {
            let mut task = implicit(event, meta);
            // The implicit record must not count the event as seen yet.
            task.seen_seq = 0;
            let mut outcome = apply_known(&mut task, event, meta, policy);
            outcome.effects.push(Effect::Raise(Box::new(alert)));
            *slot = Some(task);
            outcome
        }
    }
}

/// Folds one event into an existing task.
pub fn apply_known(task: &mut Task, event: &Event, meta: EventMeta, policy: &Policy) -> Outcome {
    if meta.seq <= task.seen_seq {
        return Outcome::nothing(Disposition::Duplicate);
    }
    let mark = Mark {
        at: meta.stored_at,
        seq: meta.seq,
    };
    let result = transition(task, event, mark, policy);
    task.compact();
    task.seen_seq = meta.seq;
    let mut effects: Effects = smallvec::smallvec![Effect::Persist];
    let disposition = match result {
        Ok(()) => {
            task.last_event = EventRef {
                kind: event.kind(),
                agent: event.agent.clone(),
                at: meta.stored_at,
                seq: meta.seq,
            };
            task.updated_at = meta.stored_at;
            task.context_version = task.context_version.max(event.context_version);
            Disposition::Applied
        }
        Err(violation) => {
            task.violations += 1;
            effects.push(Effect::Raise(Box::new(violation_alert(
                task, event, meta, &violation,
            ))));
            Disposition::Refused(violation)
        }
    };
    Outcome {
        disposition,
        effects,
    }
}

fn created(event: &Event, meta: EventMeta) -> Task {
    let EventBody::Created(c) = &event.body else {
        return implicit(event, meta);
    };
    let mut task = implicit(event, meta);
    task.stage = c.stage.clone();
    let details = TaskDetails {
        title: c.title.clone(),
        assignee: c.assignee.clone(),
        windows: c.windows,
        artifacts: c.artifacts.clone(),
        ..TaskDetails::default()
    };
    if details != TaskDetails::default() {
        task.details = Some(Box::new(details));
    }
    task.context_version = event.context_version;
    task
}

/// A task record with nothing but identity, for creation (and auto-create).
fn implicit(event: &Event, meta: EventMeta) -> Task {
    let mark = Mark {
        at: meta.stored_at,
        seq: meta.seq,
    };
    Task {
        id: event.task.clone(),
        workflow: event.workflow.clone(),
        stage: None,
        details: None,
        status: TaskStatus::Submitted,
        owner: None,
        epoch: 0,
        pending_handoff: None,
        context_version: 0,
        lease: None,
        created: mark,
        updated_at: meta.stored_at,
        last_event: EventRef {
            kind: event.kind(),
            agent: event.agent.clone(),
            at: meta.stored_at,
            seq: meta.seq,
        },
        seen_seq: meta.seq,
        last_heartbeat_at: None,
        last_progress_at: None,
        owned_since: None,
        alive_since: None,
        progress_since: None,
        waiting_since: Some(mark),
        blocked_since: None,
        violations: 0,
    }
}

/// Applies the event's rule to the task, or says why it is refused. On
/// refusal the task is untouched.
fn transition(task: &mut Task, event: &Event, at: Mark, policy: &Policy) -> Result<(), Violation> {
    let refuse = |task: &Task, reason, counterpart: Option<&AgentId>| Violation {
        reason,
        event_kind: event.kind(),
        actor: event.agent.clone(),
        counterpart: counterpart.cloned(),
        held_epoch: event.epoch,
        current_epoch: task.epoch,
        status: task.status,
    };
    if task.status.is_terminal() {
        return Err(refuse(
            task,
            ViolationReason::AfterTerminal,
            task.owner.as_ref(),
        ));
    }
    // Every agent event other than claim, accept, reject, create, revoke and
    // cancel must come from the owner holding the current epoch.
    let must_own = || -> Result<(), Violation> {
        match &task.owner {
            Some(owner) if *owner == event.agent && event.epoch == task.epoch => Ok(()),
            Some(owner) if *owner == event.agent => {
                Err(refuse(task, ViolationReason::StaleEpoch, Some(owner)))
            }
            owner => Err(refuse(task, ViolationReason::NotOwner, owner.as_ref())),
        }
    };
    match &event.body {
        EventBody::Created(_) => {
            return Err(refuse(
                task,
                ViolationReason::AlreadyExists,
                task.owner.as_ref(),
            ));
        }
        EventBody::Claimed { heartbeat_within } => {
            if let Some(owner) = &task.owner {
                return Err(refuse(task, ViolationReason::AlreadyOwned, Some(owner)));
            }
            if let Some(assignee) = task.assignee().filter(|a| **a != event.agent) {
                return Err(refuse(task, ViolationReason::NotAssignee, Some(assignee)));
            }
            take_ownership(task, &event.agent, at);
            task.lease = *heartbeat_within;
        }
        EventBody::Heartbeat { progress, .. } => {
            must_own()?;
            task.last_heartbeat_at = Some(at.at);
            task.alive_since = Some(at);
            if *progress {
                task.last_progress_at = Some(at.at);
                task.progress_since = Some(at);
            }
            if task.status == TaskStatus::InputRequired {
                // The owner got its input: work resumes, both clocks restart.
                task.status = TaskStatus::Working;
                task.blocked_since = None;
                task.set_blocked_reason("");
                task.progress_since = Some(at);
            }
        }
        EventBody::Blocked { reason } => {
            must_own()?;
            match task.status {
                TaskStatus::HandoffPending => {
                    return Err(refuse(
                        task,
                        ViolationReason::HandoffPending,
                        task.owner.as_ref(),
                    ));
                }
                TaskStatus::InputRequired => {}
                _ => {
                    task.status = TaskStatus::InputRequired;
                    task.blocked_since = Some(at);
                }
            }
            task.set_blocked_reason(reason);
        }
        EventBody::HandoffOffered {
            to,
            output_location,
            accept_within,
        } => {
            must_own()?;
            if task.status == TaskStatus::HandoffPending {
                return Err(refuse(
                    task,
                    ViolationReason::HandoffPending,
                    task.owner.as_ref(),
                ));
            }
            if *to == HandoffTarget::Agent(event.agent.clone()) {
                return Err(refuse(
                    task,
                    ViolationReason::OfferToSelf,
                    task.owner.as_ref(),
                ));
            }
            task.pending_handoff = Some(Box::new(PendingHandoff {
                from: event.agent.clone(),
                to: to.clone(),
                output_location: output_location.clone(),
                offered: at,
                accept_within: *accept_within,
            }));
            task.status = TaskStatus::HandoffPending;
            task.blocked_since = None;
            task.set_blocked_reason("");
        }
        EventBody::HandoffAccepted { heartbeat_within } => {
            let Some(pending) = task.pending_handoff.as_deref() else {
                return Err(refuse(
                    task,
                    ViolationReason::NoPendingHandoff,
                    task.owner.as_ref(),
                ));
            };
            if !pending.is_for(&event.agent) {
                let recipient = match &pending.to {
                    HandoffTarget::Agent(a) => Some(a),
                    HandoffTarget::Stage(_) => None,
                };
                return Err(refuse(task, ViolationReason::NotRecipient, recipient));
            }
            let pending = task.pending_handoff.take().map(|p| *p);
            if let Some(pending) = pending {
                if let HandoffTarget::Stage(stage) = pending.to {
                    task.stage = Some(stage);
                }
                if !pending.output_location.is_empty() || !task.output_location().is_empty() {
                    task.details_mut().output_location = pending.output_location;
                }
            }
            take_ownership(task, &event.agent, at);
            task.lease = *heartbeat_within;
        }
        EventBody::HandoffRejected { .. } => {
            let Some(pending) = task.pending_handoff.as_deref() else {
                return Err(refuse(
                    task,
                    ViolationReason::NoPendingHandoff,
                    task.owner.as_ref(),
                ));
            };
            let recipient = match &pending.to {
                HandoffTarget::Agent(a) => Some(a),
                HandoffTarget::Stage(_) => None,
            };
            if !pending.is_for(&event.agent) || task.owner.as_ref() == Some(&event.agent) {
                return Err(refuse(task, ViolationReason::NotRecipient, recipient));
            }
            // The sender keeps the task and is working on it again.
            task.pending_handoff = None;
            task.status = TaskStatus::Working;
            task.alive_since = Some(at);
            task.progress_since = Some(at);
        }
        EventBody::Completed {
            output_location,
            summary,
        } => {
            must_own()?;
            if !output_location.is_empty() {
                task.details_mut().output_location = output_location.clone();
            }
            if !summary.is_empty() {
                task.details_mut().outcome = summary.clone();
            }
            end(task, TaskStatus::Completed);
        }
        EventBody::Failed { reason, retryable } => {
            must_own()?;
            if !reason.is_empty() {
                task.details_mut().outcome = reason.clone();
            }
            if *retryable {
                let_go(task, at);
            } else {
                end(task, TaskStatus::Failed);
            }
        }
        EventBody::Released { .. } => {
            must_own()?;
            let_go(task, at);
        }
        EventBody::Revoked { .. } => {
            if !policy.is_operator(&event.agent) {
                return Err(refuse(
                    task,
                    ViolationReason::NotOperator,
                    task.owner.as_ref(),
                ));
            }
            if task.owner.is_none() {
                return Err(refuse(task, ViolationReason::NotOwned, None));
            }
            let_go(task, at);
        }
        EventBody::Cancelled { reason } => {
            if !policy.is_operator(&event.agent) {
                return Err(refuse(
                    task,
                    ViolationReason::NotOperator,
                    task.owner.as_ref(),
                ));
            }
            if !reason.is_empty() {
                task.details_mut().outcome = reason.clone();
            }
            end(task, TaskStatus::Canceled);
        }
    }
    Ok(())
}

/// `agent` becomes the owner: a new epoch, fresh clocks.
fn take_ownership(task: &mut Task, agent: &AgentId, at: Mark) {
    task.owner = Some(agent.clone());
    task.epoch += 1;
    task.status = TaskStatus::Working;
    task.owned_since = Some(at);
    task.alive_since = Some(at);
    task.progress_since = Some(at);
    task.waiting_since = None;
    task.blocked_since = None;
    task.set_blocked_reason("");
}

/// The task is unowned again and waits to be started (a new epoch).
fn let_go(task: &mut Task, at: Mark) {
    task.owner = None;
    task.epoch += 1;
    task.status = TaskStatus::Submitted;
    task.pending_handoff = None;
    task.lease = None;
    task.owned_since = None;
    task.alive_since = None;
    task.progress_since = None;
    task.blocked_since = None;
    task.set_blocked_reason("");
    task.waiting_since = Some(at);
}

/// The task reached a terminal status; the owner stays as owner of record.
fn end(task: &mut Task, status: TaskStatus) {
    task.status = status;
    task.pending_handoff = None;
    task.alive_since = None;
    task.progress_since = None;
    task.blocked_since = None;
    task.waiting_since = None;
}
