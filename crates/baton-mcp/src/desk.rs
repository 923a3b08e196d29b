//! The agent's desk: everything one MCP server does for its agent, without
//! any MCP types, so the acts read as the protocol they carry out.
//!
//! Every act goes through the Rust SDK (`baton-agent`): claims and owner
//! events with compare-and-set, the epoch held by an [`Ownership`] handle,
//! the decision-record version carried on every event, idempotent publish
//! retries with one event id, heartbeats sent by the handle while it lives.
//! The desk adds what a model calling tools needs on top: the handles kept
//! between calls (one per task held), refusals that say what to do next, a
//! gate that stops acting on decisions the agent has not read, and notices
//! of what happened to its tasks since its last call.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex as SyncMutex,
    time::Duration,
};

use baton_agent::{Agent, ClaimError, ContextError, HandoffError, NewTask, OwnershipError};
use baton_core::{
    AgentId, EventBody, EventKind, HandoffTarget, StageName, Task, TaskId, TaskStatus, TaskWindows,
    WorkflowId, context::builds_on_context,
};
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast};

use crate::explain::{self, Refusal};

/// Notices kept for a model that does not call (the oldest go first).
const MAX_NOTICES: usize = 100;

/// What changed, for the notifications a host may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A task's state changed in a way that matters to this agent.
    Task(TaskId),
    /// The tasks ready for this agent changed (an offer arrived).
    Ready,
}

/// What the desk holds for one agent identity.
#[derive(Debug)]
pub struct Desk {
    agent: Agent,
    stages: Vec<StageName>,
    /// Which credentials this server uses, for permission refusals.
    identity: String,
    /// The ownership handles of the tasks held: their heartbeats run while
    /// they are here.
    held: Mutex<HashMap<TaskId, baton_agent::Ownership>>,
    /// Tasks this agent offered and that are not accepted yet.
    offered: SyncMutex<HashSet<TaskId>>,
    /// A task's workflow never changes: remembered once read.
    workflows: SyncMutex<HashMap<TaskId, WorkflowId>>,
    /// Workflows whose decision record this agent read.
    read_workflows: SyncMutex<HashSet<WorkflowId>>,
    /// Artifact leases held, by (workflow scope, normalised name): renewed
    /// while they are here.
    leases: Mutex<HashMap<(Option<WorkflowId>, String), baton_agent::Lease>>,
    /// What happened since the model's last call, told with the next one.
    notices: SyncMutex<Vec<String>>,
    changes: broadcast::Sender<Change>,
}

/// A tool's answer: a JSON value, or a refusal the model can act on.
pub type Outcome = Result<Value, Refusal>;

/// An owner act that keeps the handle.
#[derive(Debug, Clone, Copy)]
enum OwnerAct<'a> {
    Heartbeat { note: &'a str, progress: bool },
    Block { reason: &'a str },
}

/// Where a handoff goes.
#[derive(Debug, Clone)]
pub enum Target {
    Agent(String),
    Stage(String),
}

/// The fields of a task to create.
#[derive(Debug, Clone, Default)]
pub struct Creation {
    pub task_id: String,
    pub workflow: String,
    pub stage: Option<String>,
    pub title: Option<String>,
    pub assignee: Option<String>,
    pub start_within: Option<Duration>,
    pub deadline_within: Option<Duration>,
    pub heartbeat_within: Option<Duration>,
    pub progress_within: Option<Duration>,
}

impl Desk {
    /// A desk for `agent`, serving tasks of `stages` (all stages when empty).
    pub fn new(agent: Agent, stages: Vec<StageName>, identity: String) -> Desk {
        Desk {
            agent,
            stages,
            identity,
            held: Mutex::new(HashMap::new()),
            offered: SyncMutex::new(HashSet::new()),
            workflows: SyncMutex::new(HashMap::new()),
            read_workflows: SyncMutex::new(HashSet::new()),
            leases: Mutex::new(HashMap::new()),
            notices: SyncMutex::new(Vec::new()),
            changes: broadcast::channel(256).0,
        }
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    pub fn me(&self) -> &AgentId {
        self.agent.id()
    }

    pub fn stages(&self) -> &[StageName] {
        &self.stages
    }

    /// Changes from now on.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub(crate) fn changed(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// Queues a notice for the model's next call.
    pub(crate) fn notice(&self, text: String) {
        tracing::info!(agent = %self.me(), notice = %text, "notice");
        let mut notices = lock(&self.notices);
        // A model that stops calling does not make the server grow.
        if notices.len() >= MAX_NOTICES {
            notices.remove(0);
        }
        notices.push(text);
    }

    /// The notices queued since the last call, oldest first.
    pub fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.notices))
    }

    /// The tasks this server holds now.
    pub async fn held_tasks(&self) -> Vec<TaskId> {
        let mut v: Vec<_> = self.held.lock().await.keys().cloned().collect();
        v.sort();
        v
    }

    /// The workflows this server has touched (for listing resources).
    pub fn known_workflows(&self) -> Vec<WorkflowId> {
        let mut set: HashSet<WorkflowId> = lock(&self.workflows).values().cloned().collect();
        set.extend(lock(&self.read_workflows).iter().cloned());
        let mut v: Vec<_> = set.into_iter().collect();
        v.sort();
        v
    }

    /// Stops every handle's heartbeats without releasing: the session
    /// ended without a final act, so the tasks stay this agent's and the
    /// stall detector raises `HEARTBEAT_MISSED` when the lease runs out,
    /// exactly as for a crashed agent. A new session resumes them with
    /// `claim_task`.
    pub async fn detach_all(&self) {
        self.detach_held_if(|| true).await;
        self.agent.close().await;
    }

    /// Stops every handle's heartbeats without releasing (as
    /// [`Desk::detach_all`]) while the agent stays connected, if `still`
    /// holds once the handles are locked: over HTTP the host left, but may
    /// come back, and its next act on a task (or `claim_task`) takes it up
    /// again. `still` is checked under the lock so that a task claimed by
    /// a request that began after it keeps its heartbeats. Returns how many
    /// tasks stopped heartbeating.
    pub async fn detach_held_if(&self, still: impl FnOnce() -> bool) -> usize {
        let mut guard = self.held.lock().await;
        if !still() {
            return 0;
        }
        let held = std::mem::take(&mut *guard);
        drop(guard);
        let n = held.len();
        for (task, handle) in held {
            tracing::info!(%task, "session ended: heartbeats stop, the task stays owned");
            handle.detach();
        }
        n
    }

    // ---- reading ------------------------------------------------------

    /// Tasks ready for this agent: offered to it (or to one of its stages),
    /// unowned in its stages, and the ones it holds.
    pub async fn list_ready(&self) -> Outcome {
        let tasks = self.agent.tasks().await.map_err(|e| self.broker(e))?;
        let me = self.me();
        let mut offered = Vec::new();
        let mut claimable = Vec::new();
        let mut yours = Vec::new();
        let held = self.held.lock().await;
        for t in &tasks {
            self.remember(t);
            if t.status.is_terminal() {
                continue;
            }
            if t.owner.as_ref() == Some(me) {
                if t.status != TaskStatus::HandoffPending {
                    yours.push(self.summary(t, held.contains_key(&t.id)));
                }
                continue;
            }
            if let Some(p) = t.pending_handoff.as_deref() {
                let for_me = match &p.to {
                    HandoffTarget::Agent(a) => a == me,
                    HandoffTarget::Stage(s) => p.from != *me && self.serves(Some(s)),
                };
                if for_me {
                    offered.push(self.summary(t, false));
                }
                continue;
            }
            if t.owner.is_none()
                && t.status == TaskStatus::Submitted
                && t.assignee().is_none_or(|a| a == me)
                && self.serves(t.stage.as_ref())
            {
                claimable.push(self.summary(t, false));
            }
        }
        Ok(json!({
            "agent": me.as_str(),
            "stages": self.stages.iter().map(StageName::as_str).collect::<Vec<_>>(),
            "offered_to_you": offered,
            "claimable": claimable,
            "yours": yours,
            "hint": "accept_handoff takes an offered task; claim_task takes a claimable one. Read the workflow's decisions (read_decisions) before either.",
        }))
    }

    fn serves(&self, stage: Option<&StageName>) -> bool {
        self.stages.is_empty() || stage.is_some_and(|s| self.stages.contains(s))
    }

    /// A task's exact state and its timeline.
    pub async fn show_task(&self, task_id: &str) -> Outcome {
        let task = parse_task(task_id)?;
        let (state, timeline) = tokio::join!(self.agent.task(&task), self.agent.timeline(&task));
        let state = state.map_err(|e| self.broker(e))?;
        let Some(state) = state else {
            return Err(explain::unknown_task(&task));
        };
        self.remember(&state);
        let held = self.held.lock().await.contains_key(&task);
        let mut out = self.summary(&state, held);
        let timeline = timeline.map_err(|e| self.broker(e))?;
        out["timeline"] = timeline
            .iter()
            .map(|e| {
                json!({
                    "seq": e.meta.seq,
                    "stored_at": e.meta.stored_at.to_rfc3339(),
                    "agent": e.event.agent.as_str(),
                    "event": e.event.kind().as_str(),
                    "detail": e.event.body.describe(),
                    "epoch_sent": e.event.epoch,
                    "owner_after": e.owner.as_ref().map(AgentId::as_str),
                    "epoch_after": e.epoch,
                    "status_after": e.status.map(|s| s.to_string()),
                    "refused": e.refused,
                })
            })
            .collect();
        Ok(out)
    }

    /// One task as the model sees it.
    pub fn summary(&self, t: &Task, held: bool) -> Value {
        let pending = t.pending_handoff.as_deref().map(|p| {
            let (to_agent, to_stage) = match &p.to {
                HandoffTarget::Agent(a) => (Some(a.as_str()), None),
                HandoffTarget::Stage(s) => (None, Some(s.as_str())),
            };
            json!({
                "from": p.from.as_str(),
                "to_agent": to_agent,
                "to_stage": to_stage,
                "output_location": p.output_location,
                "offered_at": p.offered.at.to_rfc3339(),
                "accept_by": p.accept_by().map(|t| t.to_rfc3339()),
            })
        });
        let optional = |s: &str| (!s.is_empty()).then(|| s.to_string());
        json!({
            "task_id": t.id.as_str(),
            "workflow": t.workflow.as_str(),
            "stage": t.stage.as_ref().map(StageName::as_str),
            "title": t.title(),
            "status": t.status.to_string(),
            "owner": t.owner.as_ref().map(AgentId::as_str),
            "epoch": t.epoch,
            "assignee": t.assignee().map(AgentId::as_str),
            "pending_handoff": pending,
            "output_location": optional(t.output_location()),
            "blocked_reason": optional(t.blocked_reason()),
            "outcome": optional(t.outcome()),
            "lease_seconds": t.lease.map(|l| l.as_secs_f64()),
            "context_version": t.context_version,
            "last_event": {
                "event": t.last_event.kind.as_str(),
                "agent": t.last_event.agent.as_str(),
                "at": t.last_event.at.to_rfc3339(),
                "seq": t.last_event.seq,
            },
            "held_by_this_session": held,
        })
    }

    /// The decision record, marked as read: from now on this agent's events
    /// in the workflow carry its version.
    pub async fn read_decisions(&self, workflow: &str) -> Outcome {
        let workflow = parse_workflow(workflow)?;
        let snapshot = self
            .agent
            .context(&workflow)
            .read()
            .await
            .map_err(|e| self.context_error(&workflow, e))?;
        lock(&self.read_workflows).insert(workflow.clone());
        Ok(decisions_json(&workflow, &snapshot))
    }

    /// The decision record without marking it read (for resources).
    pub async fn peek_decisions(&self, workflow: &WorkflowId) -> Outcome {
        let snapshot = self
            .agent
            .context(workflow)
            .peek(0)
            .await
            .map_err(|e| self.context_error(workflow, e))?;
        let mut out = decisions_json(workflow, &snapshot);
        out["version_you_read"] = json!(self.agent.context_version(workflow));
        Ok(out)
    }

    /// Appends a decision; refused when the record changed since it was
    /// read, naming the versions.
    pub async fn record_decision(
        &self,
        workflow: &str,
        summary: &str,
        body: &str,
        supersedes: Option<u64>,
    ) -> Outcome {
        let workflow = parse_workflow(workflow)?;
        let record = self.agent.context(&workflow);
        match record.record(summary, body, supersedes).await {
            Ok(version) => Ok(json!({
                "workflow": workflow.as_str(),
                "version": version,
                "recorded": true,
            })),
            Err(ContextError::Stale { latest, .. }) => {
                let read = self.agent.context_version(&workflow);
                let unread = record.unread().await.unwrap_or_default();
                Err(explain::stale_record(&workflow, read, latest, &unread))
            }
            Err(e) => Err(self.context_error(&workflow, e)),
        }
    }

    // ---- acts -----------------------------------------------------------

    pub async fn create(&self, c: Creation) -> Outcome {
        let mut new = NewTask::new(&c.task_id, &c.workflow).map_err(explain::invalid_id)?;
        if let Some(stage) = &c.stage {
            new = new.stage(stage).map_err(explain::invalid_id)?;
        }
        if let Some(assignee) = &c.assignee {
            new = new.assignee(assignee).map_err(explain::invalid_id)?;
        }
        if let Some(title) = &c.title {
            new = new.title(title.clone());
        }
        new = new.windows(TaskWindows {
            start_within: c.start_within,
            deadline_within: c.deadline_within,
            heartbeat_within: c.heartbeat_within,
            progress_within: c.progress_within,
        });
        let (task, workflow) = (new.task.clone(), new.workflow.clone());
        match self.agent.create_task(new).await {
            Ok(seq) => {
                lock(&self.workflows).insert(task.clone(), workflow.clone());
                Ok(json!({
                    "task_id": task.as_str(),
                    "workflow": workflow.as_str(),
                    "seq": seq,
                    "created": true,
                }))
            }
            Err(baton_agent::CreateError::Exists { task, status }) => {
                Err(explain::exists(&task, status))
            }
            Err(baton_agent::CreateError::Broker(e)) => Err(self.broker(e)),
        }
    }

    /// Claims a task (or resumes one this agent already owns).
    pub async fn claim(&self, task_id: &str, lease: Option<Duration>) -> Outcome {
        let task = parse_task(task_id)?;
        if let Some(out) = self.already_held(&task).await {
            return Ok(out);
        }
        let workflow = self.workflow_of(&task).await?;
        self.gate_context(&workflow, EventKind::Claimed).await?;
        let lease = lease.unwrap_or(self.agent.lease());
        let (handle, resumed) = match self.agent.claim_with_lease(&task, lease).await {
            Ok(h) => (h, false),
            Err(ClaimError::AlreadyYours { .. }) if self.offer_pending(&task).await => {
                return Err(explain::invalid_act(
                    &task,
                    "you offered this task and the offer is pending: you stay accountable, but may act on it again only if the recipient rejects it",
                ));
            }
            Err(ClaimError::AlreadyYours { .. }) => match self.agent.resume(&task).await {
                Ok(h) => (h, true),
                Err(e) => return Err(self.claim_error(e)),
            },
            Err(e) => return Err(self.claim_error(e)),
        };
        Ok(self.hold(handle, resumed).await)
    }

    async fn offer_pending(&self, task: &TaskId) -> bool {
        matches!(self.agent.task(task).await, Ok(Some(t)) if t.status == TaskStatus::HandoffPending)
    }

    async fn already_held(&self, task: &TaskId) -> Option<Value> {
        let held = self.held.lock().await;
        let h = held.get(task).filter(|h| !h.is_lost())?;
        Some(json!({
            "task_id": task.as_str(),
            "workflow": h.workflow().as_str(),
            "epoch": h.epoch(),
            "already_yours": true,
            "heartbeats": heartbeat_text(h.lease()),
        }))
    }

    async fn hold(&self, handle: baton_agent::Ownership, resumed: bool) -> Value {
        let out = json!({
            "task_id": handle.task().as_str(),
            "workflow": handle.workflow().as_str(),
            "owner": self.me().as_str(),
            "epoch": handle.epoch(),
            "lease_seconds": handle.lease().as_secs_f64(),
            "resumed": resumed,
            "context_version": self.agent.context_version(handle.workflow()),
            "heartbeats": heartbeat_text(handle.lease()),
        });
        lock(&self.workflows).insert(handle.task().clone(), handle.workflow().clone());
        lock(&self.offered).remove(handle.task());
        self.held.lock().await.insert(handle.task().clone(), handle);
        out
    }

    /// Accepts the handoff offered to this agent or its stage.
    pub async fn accept(&self, task_id: &str) -> Outcome {
        let task = parse_task(task_id)?;
        let workflow = self.workflow_of(&task).await?;
        self.gate_context(&workflow, EventKind::HandoffAccepted)
            .await?;
        match self.agent.accept_handoff(&task).await {
            Ok(handle) => Ok(self.hold(handle, false).await),
            Err(e) => Err(self.handoff_error(e)),
        }
    }

    pub async fn reject(&self, task_id: &str, reason: &str) -> Outcome {
        let task = parse_task(task_id)?;
        match self.agent.reject_handoff(&task, reason).await {
            Ok(()) => Ok(json!({ "task_id": task.as_str(), "rejected": true })),
            Err(e) => Err(self.handoff_error(e)),
        }
    }

    /// A heartbeat with the agent's own progress signal.
    pub async fn progress(&self, task_id: &str, note: &str, progress: bool) -> Outcome {
        let task = parse_task(task_id)?;
        let epoch = self
            .with_held(&task, OwnerAct::Heartbeat { note, progress })
            .await?;
        Ok(json!({
            "task_id": task.as_str(),
            "epoch": epoch,
            "reported": if progress { "progress" } else { "alive, no progress" },
        }))
    }

    pub async fn block(&self, task_id: &str, reason: &str) -> Outcome {
        let task = parse_task(task_id)?;
        let epoch = self.with_held(&task, OwnerAct::Block { reason }).await?;
        Ok(json!({
            "task_id": task.as_str(),
            "epoch": epoch,
            "status": "input_required",
            "next": "report_progress resumes work once the input is there",
        }))
    }

    pub async fn offer(
        &self,
        task_id: &str,
        to: Target,
        output_location: &str,
        accept_within: Option<Duration>,
    ) -> Outcome {
        let task = parse_task(task_id)?;
        let target = match &to {
            Target::Agent(a) => HandoffTarget::Agent(AgentId::new(a).map_err(explain::invalid_id)?),
            Target::Stage(s) => {
                HandoffTarget::Stage(StageName::new(s).map_err(explain::invalid_id)?)
            }
        };
        let out = self
            .final_act(&task, EventKind::HandoffOffered, |h| async move {
                h.offer(target, output_location, accept_within)
                    .await
                    .map(|offer| offer.seq)
            })
            .await?;
        lock(&self.offered).insert(task.clone());
        let (to_agent, to_stage) = match to {
            Target::Agent(a) => (Some(a), None),
            Target::Stage(s) => (None, Some(s)),
        };
        Ok(json!({
            "task_id": task.as_str(),
            "offered_to_agent": to_agent,
            "offered_to_stage": to_stage,
            "output_location": output_location,
            "seq": out.0,
            "epoch": out.1,
            "note": "You stay accountable until the recipient accepts, but may not act on the task now. If it is rejected the task comes back to you and heartbeats resume.",
        }))
    }

    pub async fn complete(&self, task_id: &str, output_location: &str, summary: &str) -> Outcome {
        let task = parse_task(task_id)?;
        let (seq, epoch) = self
            .final_act(&task, EventKind::Completed, |h| async move {
                h.complete(output_location, summary).await
            })
            .await?;
        Ok(json!({ "task_id": task.as_str(), "status": "completed", "seq": seq, "epoch": epoch }))
    }

    pub async fn fail(&self, task_id: &str, reason: &str, retryable: bool) -> Outcome {
        let task = parse_task(task_id)?;
        let (seq, epoch) = self
            .final_act(&task, EventKind::Failed, |h| async move {
                h.fail(reason, retryable).await
            })
            .await?;
        Ok(json!({
            "task_id": task.as_str(),
            "status": if retryable { "submitted (unowned, may be claimed again)" } else { "failed" },
            "seq": seq,
            "epoch": epoch,
        }))
    }

    pub async fn release(&self, task_id: &str, reason: &str) -> Outcome {
        let task = parse_task(task_id)?;
        let (seq, epoch) = self
            .final_act(&task, EventKind::Released, |h| async move {
                h.release(reason).await
            })
            .await?;
        Ok(
            json!({ "task_id": task.as_str(), "status": "submitted (unowned)", "seq": seq, "epoch": epoch }),
        )
    }

    // ---- artifact leases ------------------------------------------------

    /// Takes a lease on an artifact (exclusive unless `shared`); it is
    /// renewed while this session lasts, until released.
    pub async fn acquire_lease(
        &self,
        artifact: &str,
        workflow: Option<&str>,
        shared: bool,
        ttl: Option<Duration>,
    ) -> Outcome {
        let workflow = workflow
            .map(WorkflowId::new)
            .transpose()
            .map_err(explain::invalid_id)?;
        let mode = if shared {
            baton_agent::core::lease::LeaseMode::Shared
        } else {
            baton_agent::core::lease::LeaseMode::Exclusive
        };
        let mut options = baton_agent::LeaseOptions {
            workflow: workflow.clone(),
            ..baton_agent::LeaseOptions::default()
        };
        if let Some(ttl) = ttl {
            options.ttl = ttl;
        }
        let lease = self
            .agent
            .acquire_with(artifact, mode, options)
            .await
            .map_err(|e| self.lease_error(e))?;
        let answer = json!({
            "artifact": lease.artifact().name.as_str(),
            "workflow": workflow.as_ref().map(WorkflowId::as_str),
            "mode": lease.mode().to_string(),
            "token": lease.token(),
            "ttl_seconds": lease.ttl().as_secs_f64(),
            "note": "renewed for you while this session lasts; send the token with every write you make to the artifact",
        });
        let key = (workflow, lease.artifact().name.to_string());
        if let Some(old) = self.leases.lock().await.insert(key, lease) {
            // Taken again: the new grant replaced it on the broker.
            old.detach();
        }
        Ok(answer)
    }

    /// Releases a lease this session holds.
    pub async fn release_lease(&self, artifact: &str, workflow: Option<&str>) -> Outcome {
        let workflow = workflow
            .map(WorkflowId::new)
            .transpose()
            .map_err(explain::invalid_id)?;
        let name = baton_agent::core::lease::ArtifactName::new(artifact)
            .map_err(|e| explain::invalid_argument(e.to_string()))?;
        let held = self
            .leases
            .lock()
            .await
            .remove(&(workflow.clone(), name.to_string()));
        let lease = match held {
            Some(lease) => lease,
            None => self
                .agent
                .resume_lease(name.as_str(), workflow.as_ref())
                .await
                .map_err(|e| self.lease_error(e))?,
        };
        let token = lease.token();
        lease
            .release("released by the agent")
            .await
            .map_err(|e| self.lease_error(e))?;
        Ok(json!({ "artifact": name.as_str(), "released": true, "token": token }))
    }

    /// Every lease held in a scope (or everywhere), as the stream has them.
    pub async fn list_leases(&self, workflow: Option<&str>) -> Outcome {
        let workflow = workflow
            .map(WorkflowId::new)
            .transpose()
            .map_err(explain::invalid_id)?;
        let book = self
            .agent
            .leases(workflow.as_ref())
            .await
            .map_err(|e| self.lease_error(e))?;
        let holds = baton_core::lease::holds_view(&book, baton_agent::wall_clock());
        Ok(json!({ "leases": holds }))
    }

    fn lease_error(&self, e: baton_agent::LeaseError) -> Refusal {
        match e {
            baton_agent::LeaseError::Broker(e) => self.broker(e),
            e => explain::lease(e),
        }
    }

    // ---- plumbing -------------------------------------------------------

    /// Runs an owner act on the held handle (taking over ownership this
    /// agent has but no handle for, e.g. after a restart or a rejected
    /// offer).
    async fn with_held(&self, task: &TaskId, act: OwnerAct<'_>) -> Result<u64, Refusal> {
        self.adopt(task).await?;
        let held = self.held.lock().await;
        let Some(handle) = held.get(task) else {
            drop(held);
            return Err(self.not_held(task).await);
        };
        let epoch = handle.epoch();
        let result = match act {
            OwnerAct::Heartbeat { note, progress } => handle.heartbeat(note, progress).await,
            OwnerAct::Block { reason } => handle.block(reason).await,
        };
        drop(held);
        match result {
            Ok(()) => Ok(epoch),
            Err(e) => Err(self.ownership_error(task, e).await),
        }
    }

    /// A final act: the handle leaves the map; on a broker failure it is put
    /// back (ownership intact). Returns (seq, epoch).
    async fn final_act<F, Fut>(
        &self,
        task: &TaskId,
        kind: EventKind,
        act: F,
    ) -> Result<(u64, u64), Refusal>
    where
        F: FnOnce(baton_agent::Ownership) -> Fut,
        Fut: std::future::Future<Output = Result<u64, baton_agent::ActError>>,
    {
        self.adopt(task).await?;
        let handle = self.held.lock().await.remove(task);
        let Some(handle) = handle else {
            return Err(self.not_held(task).await);
        };
        if builds_on_context(kind)
            && let Err(refusal) = self.gate_context(handle.workflow(), kind).await
        {
            self.held.lock().await.insert(task.clone(), handle);
            return Err(refusal);
        }
        let epoch = handle.epoch();
        match act(handle).await {
            Ok(seq) => Ok((seq, epoch)),
            Err(e) => {
                let (error, handle) = e.into_parts();
                if let Some(handle) = handle {
                    self.held.lock().await.insert(task.clone(), handle);
                }
                Err(self.ownership_error(task, error).await)
            }
        }
    }

    /// Makes sure a task this agent owns has a handle here.
    async fn adopt(&self, task: &TaskId) -> Result<(), Refusal> {
        {
            let mut held = self.held.lock().await;
            match held.get(task) {
                Some(h) if !h.is_lost() => return Ok(()),
                Some(_) => {
                    if let Some(h) = held.remove(task) {
                        h.detach();
                    }
                }
                None => {}
            }
        }
        let state = self.agent.task(task).await.map_err(|e| self.broker(e))?;
        match state {
            Some(t)
                if t.owner.as_ref() == Some(self.me())
                    && t.status != TaskStatus::HandoffPending
                    && !t.status.is_terminal() =>
            {
                match self.agent.resume(task).await {
                    Ok(h) => {
                        self.hold(h, true).await;
                        Ok(())
                    }
                    Err(e) => Err(self.claim_error(e)),
                }
            }
            Some(_) => Ok(()),
            None => Err(explain::unknown_task(task)),
        }
    }

    /// Why this agent cannot act on `task`.
    async fn not_held(&self, task: &TaskId) -> Refusal {
        match self.agent.task(task).await {
            Ok(Some(t)) => explain::not_yours(self.me(), &t, self.last_act(task).await),
            Ok(None) => explain::unknown_task(task),
            Err(e) => self.broker(e),
        }
    }

    /// The task's last applied event (for saying who revoked or cancelled).
    async fn last_act(&self, task: &TaskId) -> Option<(AgentId, EventBody)> {
        let timeline = self.agent.timeline(task).await.ok()?;
        timeline
            .into_iter()
            .rev()
            .find(|e| e.refused.is_none())
            .map(|e| (e.event.agent, e.event.body))
    }

    async fn ownership_error(&self, task: &TaskId, e: OwnershipError) -> Refusal {
        match e {
            OwnershipError::Lost { .. } | OwnershipError::Ended { .. } => {
                if let Some(h) = self.held.lock().await.remove(task) {
                    h.detach();
                }
                self.not_held(task).await
            }
            OwnershipError::Invalid(why) => explain::invalid_act(task, &why),
            OwnershipError::Broker(e) => self.broker(e),
        }
    }

    fn claim_error(&self, e: ClaimError) -> Refusal {
        match e {
            ClaimError::Broker(e) => self.broker(e),
            e => explain::claim(e),
        }
    }

    fn handoff_error(&self, e: HandoffError) -> Refusal {
        match e {
            HandoffError::Broker(e) => self.broker(e),
            e => explain::handoff(e),
        }
    }

    fn context_error(&self, workflow: &WorkflowId, e: ContextError) -> Refusal {
        match e {
            ContextError::Broker(e) => self.broker(e),
            e => explain::context(workflow, e),
        }
    }

    fn broker(&self, e: baton_agent::BrokerError) -> Refusal {
        explain::broker(e, self.me(), &self.identity)
    }

    /// Refuses an act that would build on decisions not read yet.
    async fn gate_context(&self, workflow: &WorkflowId, kind: EventKind) -> Result<(), Refusal> {
        if !builds_on_context(kind) {
            return Ok(());
        }
        let unread = self
            .agent
            .context(workflow)
            .unread()
            .await
            .map_err(|e| self.context_error(workflow, e))?;
        if unread.is_empty() {
            return Ok(());
        }
        Err(explain::unread_decisions(
            workflow,
            self.agent.context_version(workflow),
            &unread,
            kind,
        ))
    }

    async fn workflow_of(&self, task: &TaskId) -> Result<WorkflowId, Refusal> {
        if let Some(w) = lock(&self.workflows).get(task) {
            return Ok(w.clone());
        }
        match self.agent.task(task).await.map_err(|e| self.broker(e))? {
            Some(t) => {
                self.remember(&t);
                Ok(t.workflow)
            }
            None => Err(explain::unknown_task(task)),
        }
    }

    fn remember(&self, t: &Task) {
        lock(&self.workflows)
            .entry(t.id.clone())
            .or_insert_with(|| t.workflow.clone());
    }

    // ---- what others did ------------------------------------------------

    /// Called for every event another agent published: tells this agent
    /// what concerns it (an offer for it, its task revoked, its offer
    /// accepted or rejected) and keeps the handles true to the state.
    pub async fn observe(&self, event: &baton_core::Event) {
        if event.agent == *self.me() {
            return;
        }
        let task = &event.task;
        let me = self.me();
        match &event.body {
            EventBody::HandoffOffered {
                to,
                output_location,
                ..
            } => {
                let for_me = match to {
                    HandoffTarget::Agent(a) => a == me,
                    HandoffTarget::Stage(s) => self.serves(Some(s)),
                };
                if for_me {
                    lock(&self.workflows).insert(task.clone(), event.workflow.clone());
                    self.notice(format!(
                        "{} offered you task {task} (workflow {}), output at {output_location}: read_decisions, then accept_handoff or reject_handoff.",
                        event.agent, event.workflow
                    ));
                    self.changed(Change::Ready);
                    self.changed(Change::Task(task.clone()));
                }
                return;
            }
            EventBody::HandoffAccepted { .. } if lock(&self.offered).remove(task) => {
                self.notice(format!(
                    "{} accepted your handoff of task {task}: it owns the task now and you are no longer accountable for it.",
                    event.agent
                ));
                self.changed(Change::Task(task.clone()));
                return;
            }
            EventBody::HandoffRejected { reason } if lock(&self.offered).remove(task) => {
                let back = match self.agent.resume(task).await {
                    Ok(h) => {
                        self.hold(h, true).await;
                        "it is yours again and heartbeats resumed"
                    }
                    Err(_) => "the task did not come back to you",
                };
                self.notice(format!(
                    "{} rejected your handoff of task {task} ({reason}): {back}.",
                    event.agent
                ));
                self.changed(Change::Task(task.clone()));
                return;
            }
            _ => {}
        }
        // Anything else someone did to a task held here: is it still ours?
        let epoch = match self.held.lock().await.get(task) {
            Some(h) => h.epoch(),
            None => return,
        };
        let state = match self.agent.task(task).await {
            Ok(Some(t)) => t,
            _ => return,
        };
        if state.owner.as_ref() == Some(me) && state.epoch == epoch && !state.status.is_terminal() {
            return;
        }
        if let Some(h) = self.held.lock().await.remove(task) {
            h.detach();
        }
        let why = explain::loss(me, &state, Some((event.agent.clone(), event.body.clone())));
        self.notice(format!("You lost task {task}: {why}"));
        self.changed(Change::Task(task.clone()));
    }

    /// Called for every alert: firing ones about this agent or its tasks
    /// are told with the next call.
    pub async fn observe_alert(&self, alert: &baton_core::Alert) {
        if alert.state != baton_core::AlertState::Firing {
            return;
        }
        let about_me = alert.agents.iter().any(|a| a == self.me());
        let held = match &alert.task {
            Some(t) => self.held.lock().await.contains_key(t),
            None => false,
        };
        if about_me || held {
            self.notice(format!("Alert {}: {}", alert.kind.as_str(), alert.summary));
            if let Some(t) = &alert.task {
                self.changed(Change::Task(t.clone()));
            }
        }
    }
}

fn heartbeat_text(lease: Duration) -> String {
    format!(
        "sent automatically every {:.1}s while this MCP session lives (lease {:.1}s); report_progress when your output advances",
        (lease / 3).as_secs_f64(),
        lease.as_secs_f64()
    )
}

fn decisions_json(workflow: &WorkflowId, snapshot: &baton_agent::Snapshot) -> Value {
    json!({
        "workflow": workflow.as_str(),
        "version": snapshot.version,
        "decisions": snapshot.decisions.iter().map(|d| json!({
            "version": d.version,
            "author": d.entry.author.as_str(),
            "summary": d.entry.summary,
            "body": d.entry.body,
            "supersedes": (d.entry.supersedes > 0).then_some(d.entry.supersedes),
            "recorded_at": d.stored_at.to_rfc3339(),
        })).collect::<Vec<_>>(),
        "skipped_entries": snapshot.refused.iter().map(|r| json!({
            "version": r.version,
            "why": r.reason,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn parse_task(id: &str) -> Result<TaskId, Refusal> {
    TaskId::new(id).map_err(explain::invalid_id)
}

pub(crate) fn parse_workflow(id: &str) -> Result<WorkflowId, Refusal> {
    WorkflowId::new(id).map_err(explain::invalid_id)
}

fn lock<T>(m: &SyncMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
