//! The agent: a connection with an identity, and the acts that do not need
//! ownership (create, claim, accept or reject a handoff).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, kv, publish::PublishAck};
use baton_core::{
    AgentId, Event, EventBody, EventMeta, HandoffTarget, StageName, Task, TaskCreated, TaskId,
    TaskStatus, TaskWindows, WorkflowId, apply, subjects, wire::read_event,
};
use baton_jetstream::{
    Cas, Denials, NatsOptions, PublishError, Retry, publish_durable_watched, read,
};

use crate::{
    context::ContextRecord,
    error::{AgentError, BrokerError, ClaimError, CreateError, HandoffError},
    ownership::Ownership,
    pipeline::Pipeline,
};

/// How an agent connects and behaves.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The agent's id: `[A-Za-z0-9_-]{1,128}`.
    pub agent_id: String,
    /// How to reach NATS (URL, credentials, nkey, TLS, inbox prefix).
    pub nats: NatsOptions,
    /// The lease this agent commits to when claiming; heartbeats are sent
    /// automatically at a third of it.
    pub lease: Duration,
    /// How long to retry a publish the broker did not acknowledge.
    pub retry: Retry,
}

impl AgentOptions {
    /// Options for `agent_id` on `nats_url`, with a 30 s lease.
    pub fn new(agent_id: impl Into<String>, nats_url: impl Into<String>) -> AgentOptions {
        let agent_id = agent_id.into();
        let mut nats = NatsOptions::new(nats_url);
        nats.name = Some(format!("baton-agent-{agent_id}"));
        AgentOptions {
            agent_id,
            nats,
            lease: Duration::from_secs(30),
            retry: Retry::default(),
        }
    }

    /// Replies go to `_INBOX_<agent>` instead of `_INBOX`: needed when the
    /// server's permissions only let this agent subscribe there. An
    /// identity file from `baton auth` (`nats.nkey_seed_file`) sets this
    /// by itself.
    pub fn with_agent_inbox(mut self) -> AgentOptions {
        self.nats.inbox_prefix = Some(format!("_INBOX_{}", self.agent_id));
        self
    }
}

/// A task to create.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub task: TaskId,
    pub workflow: WorkflowId,
    pub stage: Option<StageName>,
    pub title: String,
    /// Only this agent may claim it.
    pub assignee: Option<AgentId>,
    pub windows: TaskWindows,
    /// Artifacts the task will write (in the workflow's scope): claiming
    /// or accepting it takes an exclusive lease on each, all or none.
    pub artifacts: Vec<baton_core::lease::ArtifactName>,
}

impl NewTask {
    /// A task with an id and a workflow (validated).
    pub fn new(task: &str, workflow: &str) -> Result<NewTask, baton_core::IdError> {
        Ok(NewTask {
            task: TaskId::new(task)?,
            workflow: WorkflowId::new(workflow)?,
            stage: None,
            title: String::new(),
            assignee: None,
            windows: TaskWindows::default(),
            artifacts: Vec::new(),
        })
    }

    /// Declares an artifact the task will write (see
    /// [`NewTask::artifacts`]).
    pub fn artifact(mut self, name: &str) -> Result<NewTask, baton_core::lease::ArtifactNameError> {
        self.artifacts
            .push(baton_core::lease::ArtifactName::new(name)?);
        Ok(self)
    }

    pub fn stage(mut self, stage: &str) -> Result<NewTask, baton_core::IdError> {
        self.stage = Some(StageName::new(stage)?);
        Ok(self)
    }

    pub fn title(mut self, title: impl Into<String>) -> NewTask {
        self.title = title.into();
        self
    }

    pub fn assignee(mut self, agent: &str) -> Result<NewTask, baton_core::IdError> {
        self.assignee = Some(AgentId::new(agent)?);
        Ok(self)
    }

    pub fn windows(mut self, windows: TaskWindows) -> NewTask {
        self.windows = windows;
        self
    }
}

pub(crate) struct Inner {
    pub(crate) id: AgentId,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// Publishes the server refused on this connection.
    pub(crate) denials: Denials,
    tasks: kv::Store,
    /// KV `baton-policy`, opened once (`None`: no orchestrator ever ran
    /// here, so the default policy holds).
    policy: Option<kv::Store>,
    pub(crate) lease: Duration,
    pub(crate) retry: Retry,
    /// Decision-record version read per workflow; every event carries it.
    read_versions: Mutex<HashMap<WorkflowId, u64>>,
    /// Releases sent by dropped handles, awaited by `close`.
    pub(crate) background: Mutex<tokio::task::JoinSet<()>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("id", &self.id).finish()
    }
}

/// A connected agent. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
}

impl Agent {
    /// Connects as `options.agent_id`. The Baton streams must exist (the
    /// services create them).
    pub async fn connect(options: AgentOptions) -> Result<Agent, AgentError> {
        let id = AgentId::new(&options.agent_id)?;
        let (client, denials) = options
            .nats
            .connect_watched()
            .await
            .map_err(BrokerError::from)?;
        let js = jetstream::new(client.clone());
        let tasks = js
            .get_key_value(subjects::TASKS_BUCKET)
            .await
            .map_err(|e| {
                BrokerError::Other(format!(
                    "KV bucket {} not found ({e}): start the Baton services (or `baton dev`) first",
                    subjects::TASKS_BUCKET
                ))
            })?;
        let policy = js.get_key_value(subjects::POLICY_BUCKET).await.ok();
        Ok(Agent {
            inner: Arc::new(Inner {
                id,
                client,
                js,
                denials,
                tasks,
                policy,
                lease: options.lease,
                retry: options.retry,
                read_versions: Mutex::new(HashMap::new()),
                background: Mutex::new(tokio::task::JoinSet::new()),
            }),
        })
    }

    /// The operators of the orchestrator's published policy (who may
    /// revoke; empty = anyone), so the SDK judges as the services do.
    pub(crate) async fn operators(&self) -> Result<Vec<AgentId>, BrokerError> {
        match &self.inner.policy {
            Some(store) => baton_jetstream::policy::read_from(store)
                .await
                .map(|p| p.map(|p| p.operators).unwrap_or_default())
                .map_err(|e| BrokerError::Other(format!("reading the policy: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    /// Runs `work` in the background, awaited by [`Agent::close`]: what a
    /// dropped handle still owes (a release). False outside a runtime, where
    /// nothing can run.
    pub(crate) fn in_background(
        &self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        self.inner
            .background
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .spawn_on(work, &runtime);
        true
    }

    /// This agent's id.
    pub fn id(&self) -> &AgentId {
        &self.inner.id
    }

    /// The underlying NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The server's refusals of this connection's publishes, for publishing
    /// outside the SDK with [`baton_jetstream::publish_durable_watched`].
    pub fn denials(&self) -> &baton_jetstream::Denials {
        &self.inner.denials
    }

    /// Waits for background work (releases of dropped handles) and flushes
    /// the connection. Call before the process exits.
    pub async fn close(&self) {
        loop {
            let next = {
                let mut set = self
                    .inner
                    .background
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                std::mem::take(&mut *set)
            };
            if next.is_empty() {
                break;
            }
            next.join_all().await;
        }
        let _ = self.inner.client.flush().await;
    }

    /// Creates a task (stored once even if retried); returns its stream
    /// sequence. Published with compare-and-set on the task's subjects
    /// (expected last sequence 0), so a task that exists already is refused
    /// by the broker with [`CreateError::Exists`] and nothing is stored.
    pub async fn create_task(&self, new: NewTask) -> Result<u64, CreateError> {
        let event = self.event(
            &new.task,
            &new.workflow,
            0,
            EventBody::Created(TaskCreated {
                stage: new.stage,
                title: new.title,
                assignee: new.assignee,
                windows: new.windows,
                artifacts: new.artifacts,
            }),
        );
        let task = event.task.clone();
        match self.publish_cas(&event, 0).await? {
            Some(seq) => Ok(seq),
            None => {
                let status = self
                    .current(&task)
                    .await
                    .ok()
                    .and_then(|(t, _)| t)
                    .map(|t| t.status);
                Err(CreateError::Exists { task, status })
            }
        }
    }

    /// Takes an unowned task. Of several agents claiming at once exactly
    /// one succeeds; the others get [`ClaimError::Lost`] naming the owner.
    pub async fn claim(&self, task: &TaskId) -> Result<Ownership, ClaimError> {
        self.claim_with_lease(task, self.inner.lease).await
    }

    /// [`claim`](Self::claim) with a specific lease.
    pub async fn claim_with_lease(
        &self,
        task: &TaskId,
        lease: Duration,
    ) -> Result<Ownership, ClaimError> {
        // The task's declared artifacts, leased before the claim is sent
        // (all or none) and released if the claim is not stored.
        let mut leases: Option<Vec<crate::Lease>> = None;
        let result = self.claim_leasing(task, lease, &mut leases).await;
        match result {
            Ok(owned) => Ok(owned.with_leases(leases.unwrap_or_default())),
            Err(e) => {
                if let Some(taken) = leases {
                    crate::lease::release_all(taken, "the task was not claimed").await;
                }
                Err(e)
            }
        }
    }

    async fn claim_leasing(
        &self,
        task: &TaskId,
        lease: Duration,
        leases: &mut Option<Vec<crate::Lease>>,
    ) -> Result<Ownership, ClaimError> {
        for _ in 0..8 {
            let (state, last_seq) = self.current(task).await?;
            let Some(state) = state else {
                return Err(ClaimError::UnknownTask { task: task.clone() });
            };
            if state.status.is_terminal() {
                return Err(ClaimError::Ended {
                    task: task.clone(),
                    status: state.status,
                });
            }
            if let Some(owner) = &state.owner {
                return Err(if *owner == self.inner.id {
                    ClaimError::AlreadyYours {
                        task: task.clone(),
                        epoch: state.epoch,
                    }
                } else {
                    ClaimError::Lost {
                        task: task.clone(),
                        owner: owner.clone(),
                        epoch: state.epoch,
                    }
                });
            }
            if let Some(assignee) = state.assignee().filter(|a| **a != self.inner.id) {
                return Err(ClaimError::NotAssignee {
                    task: task.clone(),
                    assignee: assignee.clone(),
                });
            }
            if leases.is_none() {
                let taken = self
                    .acquire_for_task(task, &state.workflow, state.artifacts(), lease)
                    .await
                    .map_err(|source| match source {
                        crate::LeaseError::Broker(e) => ClaimError::Broker(e),
                        source => ClaimError::ArtifactHeld {
                            task: task.clone(),
                            source: Box::new(source),
                        },
                    })?;
                *leases = Some(taken);
            }
            let event = self.event(
                task,
                &state.workflow,
                0,
                EventBody::Claimed {
                    heartbeat_within: Some(lease),
                },
            );
            match self.publish_cas(&event, last_seq).await? {
                Some(seq) => {
                    return Ok(Ownership::start(
                        self.clone(),
                        task.clone(),
                        state.workflow,
                        state.epoch + 1,
                        seq,
                        lease,
                    ));
                }
                // Someone else's event came first: look again.
                None => continue,
            }
        }
        Err(ClaimError::Broker(BrokerError::Other(format!(
            "task {task} kept changing while claiming; giving up after 8 attempts"
        ))))
    }

    /// Takes over ownership this agent already holds (e.g. after its
    /// process restarted). Heartbeats resume from now, and so do the
    /// renewals of the leases on the task's declared artifacts that this
    /// agent still holds (one that lapsed meanwhile is not taken again:
    /// acquire it, and check the store's token).
    pub async fn resume(&self, task: &TaskId) -> Result<Ownership, ClaimError> {
        let (state, last_seq) = self.held(task).await?;
        let lease = state.lease.unwrap_or(self.inner.lease);
        let leases = self.task_leases(task, &state, true).await?;
        Ok(Ownership::start(
            self.clone(),
            task.clone(),
            state.workflow,
            state.epoch,
            last_seq,
            lease,
        )
        .with_leases(leases))
    }

    /// Like [`resume`](Self::resume), but the handle sends no heartbeats and
    /// does not release the task when dropped: for a process that performs
    /// one act and exits while ownership continues (a shell-script agent).
    pub async fn resume_detached(&self, task: &TaskId) -> Result<Ownership, ClaimError> {
        let (state, last_seq) = self.held(task).await?;
        let lease = state.lease.unwrap_or(self.inner.lease);
        // Not renewing on their own either: the handle's heartbeats renew
        // them, its final act releases or hands them over.
        let leases = self.task_leases(task, &state, false).await?;
        Ok(Ownership::detached(
            self.clone(),
            task.clone(),
            state.workflow,
            state.epoch,
            last_seq,
            lease,
        )
        .with_leases(leases))
    }

    /// The leases this agent still holds on a task's declared artifacts.
    async fn task_leases(
        &self,
        task: &TaskId,
        state: &Task,
        auto_renew: bool,
    ) -> Result<Vec<crate::Lease>, ClaimError> {
        let mut leases = Vec::new();
        for name in state.artifacts() {
            match self
                .resume_lease_renewing(name.as_str(), Some(&state.workflow), auto_renew)
                .await
            {
                Ok(held) => leases.push(held),
                Err(crate::LeaseError::Broker(e)) => return Err(ClaimError::Broker(e)),
                Err(e) => {
                    tracing::warn!(%task, artifact = %name, error = %e, "a declared artifact's lease is not held")
                }
            }
        }
        Ok(leases)
    }

    /// The task's state, if this agent owns it.
    async fn held(&self, task: &TaskId) -> Result<(Task, u64), ClaimError> {
        let (state, last_seq) = self.current(task).await?;
        let Some(state) = state else {
            return Err(ClaimError::UnknownTask { task: task.clone() });
        };
        if state.status.is_terminal() {
            return Err(ClaimError::Ended {
                task: task.clone(),
                status: state.status,
            });
        }
        match &state.owner {
            Some(owner) if *owner == self.inner.id => Ok((state, last_seq)),
            Some(owner) => Err(ClaimError::Lost {
                task: task.clone(),
                owner: owner.clone(),
                epoch: state.epoch,
            }),
            None => Err(ClaimError::NotOwned { task: task.clone() }),
        }
    }

    /// An operator takes ownership away; the task is unowned again.
    pub async fn revoke(&self, task: &TaskId, reason: &str) -> Result<u64, ClaimError> {
        self.operator_act(
            task,
            EventBody::Revoked {
                reason: reason.to_string(),
            },
        )
        .await
    }

    /// An operator cancels the task (terminal).
    pub async fn cancel(&self, task: &TaskId, reason: &str) -> Result<u64, ClaimError> {
        self.operator_act(
            task,
            EventBody::Cancelled {
                reason: reason.to_string(),
            },
        )
        .await
    }

    async fn operator_act(&self, task: &TaskId, body: EventBody) -> Result<u64, ClaimError> {
        for _ in 0..8 {
            let (state, last_seq) = self.current(task).await?;
            let Some(state) = state else {
                return Err(ClaimError::UnknownTask { task: task.clone() });
            };
            if state.status.is_terminal() {
                return Err(ClaimError::Ended {
                    task: task.clone(),
                    status: state.status,
                });
            }
            let event = self.event(task, &state.workflow, 0, body.clone());
            if let Some(seq) = self.publish_cas(&event, last_seq).await? {
                return Ok(seq);
            }
        }
        Err(ClaimError::Broker(BrokerError::Other(format!(
            "task {task} kept changing; giving up after 8 attempts"
        ))))
    }

    /// Accepts the handoff offered to this agent (or to a stage): the agent
    /// becomes the owner at the next epoch.
    pub async fn accept_handoff(&self, task: &TaskId) -> Result<Ownership, HandoffError> {
        let mut leases: Option<Vec<crate::Lease>> = None;
        match self.accept_leasing(task, &mut leases).await {
            Ok(owned) => Ok(owned.with_leases(leases.unwrap_or_default())),
            Err(e) => {
                if let Some(taken) = leases {
                    crate::lease::release_all(taken, "the handoff was not accepted").await;
                }
                Err(e)
            }
        }
    }

    async fn accept_leasing(
        &self,
        task: &TaskId,
        leases: &mut Option<Vec<crate::Lease>>,
    ) -> Result<Ownership, HandoffError> {
        for _ in 0..8 {
            let (state, last_seq) = self.current(task).await?;
            let state = self.check_offer(task, state)?;
            if state
                .pending_handoff
                .as_deref()
                .is_some_and(|p| p.from == self.inner.id)
            {
                return Err(HandoffError::OwnOffer { task: task.clone() });
            }
            // The new owner commits to its lease, as a claim does, so the
            // detector expects heartbeats at the pace the SDK sends them.
            let lease = self.inner.lease;
            if leases.is_none() {
                // Handed over with the offer, or free: taken again under
                // a new token (all or none).
                let taken = self
                    .acquire_for_task(task, &state.workflow, state.artifacts(), lease)
                    .await
                    .map_err(|source| match source {
                        crate::LeaseError::Broker(e) => HandoffError::Broker(e),
                        source => HandoffError::ArtifactHeld {
                            task: task.clone(),
                            source: Box::new(source),
                        },
                    })?;
                *leases = Some(taken);
            }
            let event = self.event(
                task,
                &state.workflow,
                0,
                EventBody::HandoffAccepted {
                    heartbeat_within: Some(lease),
                },
            );
            if let Some(seq) = self.publish_cas(&event, last_seq).await? {
                return Ok(Ownership::start(
                    self.clone(),
                    task.clone(),
                    state.workflow,
                    state.epoch + 1,
                    seq,
                    lease,
                ));
            }
        }
        Err(HandoffError::Broker(BrokerError::Other(format!(
            "task {task} kept changing while accepting; giving up after 8 attempts"
        ))))
    }

    /// Declines the handoff offered to this agent; the sender keeps the task.
    pub async fn reject_handoff(&self, task: &TaskId, reason: &str) -> Result<(), HandoffError> {
        for _ in 0..8 {
            let (state, last_seq) = self.current(task).await?;
            let state = self.check_offer(task, state)?;
            if state.owner.as_ref() == Some(&self.inner.id) {
                return Err(HandoffError::OwnOffer { task: task.clone() });
            }
            let event = self.event(
                task,
                &state.workflow,
                0,
                EventBody::HandoffRejected {
                    reason: reason.to_string(),
                },
            );
            if self.publish_cas(&event, last_seq).await?.is_some() {
                return Ok(());
            }
        }
        Err(HandoffError::Broker(BrokerError::Other(format!(
            "task {task} kept changing while rejecting; giving up after 8 attempts"
        ))))
    }

    fn check_offer(&self, task: &TaskId, state: Option<Task>) -> Result<Task, HandoffError> {
        let Some(state) = state else {
            return Err(HandoffError::UnknownTask { task: task.clone() });
        };
        if state.status.is_terminal() {
            return Err(HandoffError::Ended {
                task: task.clone(),
                status: state.status,
            });
        }
        let Some(pending) = state.pending_handoff.as_deref() else {
            // Accepted by someone else already?
            return Err(match (&state.owner, state.status) {
                (Some(owner), TaskStatus::Working) if *owner != self.inner.id => {
                    HandoffError::Taken {
                        task: task.clone(),
                        owner: owner.clone(),
                    }
                }
                _ => HandoffError::NoOffer { task: task.clone() },
            });
        };
        if let HandoffTarget::Agent(to) = &pending.to
            && *to != self.inner.id
        {
            return Err(HandoffError::NotForYou {
                task: task.clone(),
                recipient: to.clone(),
            });
        }
        Ok(state)
    }

    /// The task's current state, exactly: the stored snapshot plus any
    /// events after it, folded here. `None` if the task does not exist.
    pub async fn task(&self, task: &TaskId) -> Result<Option<Task>, BrokerError> {
        Ok(self.current(task).await?.0)
    }

    /// Every task's state as the orchestrator last stored it (KV
    /// `baton-tasks`), for listing what there is to do. A listing can trail
    /// the stream by a flush; [`task`](Self::task) is exact, and claims and
    /// acceptances judge the exact state anyway.
    pub async fn tasks(&self) -> Result<Vec<Task>, BrokerError> {
        let mut tasks = Vec::new();
        read::for_each_kv_value(&self.inner.js, subjects::TASKS_BUCKET, |_, stored| {
            if let Ok(task) = Task::decode(&stored.payload) {
                tasks.push(task);
            }
        })
        .await?;
        Ok(tasks)
    }

    /// The task's history with the state after each event (owner, epoch,
    /// status, why an event was refused), folded here from the stream with
    /// the orchestrator's policy through the one read path. Empty when the
    /// task has no events.
    pub async fn timeline(
        &self,
        task: &TaskId,
    ) -> Result<Vec<baton_core::timeline::TimelineEntry>, BrokerError> {
        let scope = subjects::task_events(task);
        let (stored, policy) = tokio::join!(
            read::read_subject(&self.inner.js, subjects::EVENTS_STREAM, &scope, 0, None,),
            self.policy(),
        );
        let events = stored?.into_iter().filter_map(|s| {
            let event = read_event(&s.subject, &s.payload).ok()?;
            Some((
                event,
                EventMeta {
                    seq: s.seq,
                    stored_at: s.stored_at,
                },
            ))
        });
        Ok(baton_core::timeline::timeline(events, &policy?))
    }

    /// The orchestrator's published fold policy (the default when none).
    async fn policy(&self) -> Result<baton_core::Policy, BrokerError> {
        match &self.inner.policy {
            Some(store) => baton_jetstream::policy::read_from(store)
                .await
                .map(Option::unwrap_or_default)
                .map_err(|e| BrokerError::Other(format!("reading the policy: {e}"))),
            None => Ok(baton_core::Policy::default()),
        }
    }

    /// The lease this agent commits to when claiming or accepting.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// The decision record of `workflow`.
    pub fn context(&self, workflow: &WorkflowId) -> ContextRecord {
        ContextRecord::new(self.clone(), workflow.clone())
    }

    /// A pipelined publisher for bulk use (many acknowledgements in flight).
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone(), 4096)
    }

    /// The decision-record version this agent has read for `workflow`.
    pub fn context_version(&self, workflow: &WorkflowId) -> u64 {
        self.inner
            .read_versions
            .lock()
            .map(|m| m.get(workflow).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Declares that this agent has read `workflow`'s decision record up to
    /// `version` (e.g. in an earlier process, as `baton emit
    /// --context-version` does). Events carry the highest version declared
    /// or read.
    pub fn assume_context_version(&self, workflow: &WorkflowId, version: u64) {
        self.set_context_version(workflow, version);
    }

    pub(crate) fn set_context_version(&self, workflow: &WorkflowId, version: u64) {
        if let Ok(mut m) = self.inner.read_versions.lock() {
            let v = m.entry(workflow.clone()).or_insert(0);
            *v = (*v).max(version);
        }
    }

    /// An event from this agent, carrying the decision-record version read.
    pub fn event(
        &self,
        task: &TaskId,
        workflow: &WorkflowId,
        epoch: u64,
        body: EventBody,
    ) -> Event {
        let mut e = Event::new(
            nuid::next().to_string(),
            task.clone(),
            workflow.clone(),
            self.inner.id.clone(),
            body,
        )
        .with_epoch(epoch)
        .with_context_version(self.context_version(workflow));
        e.occurred_at = Some(wall_clock());
        e
    }

    /// Publishes on the event's subject, `Nats-Msg-Id` = event id.
    pub(crate) async fn publish(
        &self,
        event: &Event,
        cas: Option<u64>,
    ) -> Result<PublishAck, PublishError> {
        let subject = subjects::event(&event.task, &event.agent);
        baton_core::wire::check_limits(event).map_err(|e| PublishError::Invalid {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
        let cas = cas.map(|expected| Cas {
            expected,
            scope: subjects::task_events(&event.task),
        });
        publish_durable_watched(
            &self.inner.js,
            Some(&self.inner.denials),
            &subject,
            event.encode_to_vec().into(),
            &event.event_id,
            cas.as_ref(),
            self.inner.retry,
        )
        .await
    }

    /// Publishes with compare-and-set against `expected` (the task's last
    /// sequence). `Ok(None)` when another event came first.
    pub(crate) async fn publish_cas(
        &self,
        event: &Event,
        expected: u64,
    ) -> Result<Option<u64>, BrokerError> {
        match self.publish(event, Some(expected)).await {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(PublishError::WrongLastSequence { after_retry, .. }) => {
                // An attempt whose ack was lost may have been stored.
                if after_retry {
                    return self
                        .find_stored(&event.task, expected, &event.event_id)
                        .await;
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The sequence of event `event_id` of `task`, if stored after `after`.
    async fn find_stored(
        &self,
        task: &TaskId,
        after: u64,
        event_id: &str,
    ) -> Result<Option<u64>, BrokerError> {
        let stored = read::read_range_direct(
            &self.inner.js,
            subjects::EVENTS_STREAM,
            &subjects::task_events(task),
            after + 1,
            u64::MAX,
        )
        .await?;
        Ok(stored
            .iter()
            .find(|s| s.msg_id() == Some(event_id))
            .map(|s| s.seq))
    }

    /// The task's exact current state and the sequence of its last event.
    ///
    /// Reads are direct gets, which on a cluster any replica may answer,
    /// and a replica can be a moment behind the leader: a task another
    /// agent created an instant ago may not be there yet. So "no such task"
    /// is asked again a few times (about 0.4 s in all) before it is
    /// believed. (A stale answer about a task that exists is caught by the
    /// compare-and-set of the act itself, which the callers retry.)
    pub(crate) async fn current(&self, task: &TaskId) -> Result<(Option<Task>, u64), BrokerError> {
        let mut wait = Duration::from_millis(25);
        for _ in 0..4 {
            let found = self.current_once(task).await?;
            if found.0.is_some() || found.1 > 0 {
                return Ok(found);
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        self.current_once(task).await
    }

    async fn current_once(&self, task: &TaskId) -> Result<(Option<Task>, u64), BrokerError> {
        let scope = subjects::task_events(task);
        let (snapshot, last, policy) = tokio::join!(
            self.inner.tasks.get(task.as_str()),
            read::last_on_subject(&self.inner.js, subjects::EVENTS_STREAM, &scope),
            async {
                match &self.inner.policy {
                    Some(store) => baton_jetstream::policy::read_from(store)
                        .await
                        .map(Option::unwrap_or_default),
                    None => Ok(baton_core::Policy::default()),
                }
            },
        );
        let last_seq = last?.map_or(0, |s| s.seq);
        let mut slot = match snapshot {
            Ok(Some(bytes)) => Task::decode(&bytes).ok(),
            Ok(None) => None,
            Err(e) => return Err(BrokerError::Other(format!("reading task {task}: {e}"))),
        };
        let known = slot.as_ref().map_or(0, Task::last_seq);
        if last_seq > known {
            // Usually a few events the orchestrator has not stored yet.
            let tail = read::read_range_direct(
                &self.inner.js,
                subjects::EVENTS_STREAM,
                &scope,
                known + 1,
                last_seq,
            )
            .await?;
            // The orchestrator's policy (operators, unknown tasks), so the
            // SDK never believes what the orchestrator refuses.
            let policy =
                policy.map_err(|e| BrokerError::Other(format!("reading the policy: {e}")))?;
            for stored in tail {
                // The one read path, as the orchestrator's: an event over a
                // limit or whose subject does not match its payload (a
                // forgery, or a broken client) is not part of the history.
                if let Ok(event) = read_event(&stored.subject, &stored.payload) {
                    apply(
                        &mut slot,
                        &event,
                        EventMeta {
                            seq: stored.seq,
                            stored_at: stored.stored_at,
                        },
                        &policy,
                    );
                }
            }
        }
        // The snapshot may come from a replica that is ahead of the one
        // that answered the direct get.
        let last_seq = last_seq.max(slot.as_ref().map_or(0, Task::last_seq));
        Ok((slot, last_seq))
    }
}

/// This machine's clock, for the informational times the SDK stamps on
/// what it sends (`occurred_at`, `recorded_at`) and for pre-checks the
/// broker's time then decides.
pub fn wall_clock() -> baton_core::Time {
    baton_core::Time::from_unix_nanos(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        )
        .unwrap_or(0),
    )
}
