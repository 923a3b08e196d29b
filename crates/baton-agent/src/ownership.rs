//! The ownership handle: the only way to send owner events.
//!
//! An [`Ownership`] exists only after a successful claim or acceptance. It
//! sends heartbeats on its own while it lives. Offering a handoff,
//! completing, failing and releasing take the handle by value, so after
//! giving a task away the compiler stops the agent from touching it:
//!
//! ```compile_fail
//! # async fn f(agent: baton_agent::Agent, task: baton_core::TaskId) -> Result<(), Box<dyn std::error::Error>> {
//! let owned = agent.claim(&task).await?;
//! owned.complete("s3://out.md", "done").await?;
//! owned.heartbeat("still here", false).await?; // error[E0382]: use of moved value
//! # Ok(()) }
//! ```
//!
//! Dropping a live handle without a final act releases the task with reason
//! "dropped": an agent cannot go silent by accident.

use std::{sync::Arc, time::Duration};

use baton_core::{AgentId, EventBody, HandoffTarget, StageName, TaskId, WorkflowId};
use tokio::sync::{Mutex, watch};

use crate::{
    agent::Agent,
    error::{BrokerError, OwnershipError},
};

struct HandleState {
    /// Sequence of the task's last event this handle knows of (the
    /// compare-and-set expectation for the next act).
    last_seq: u64,
    last_sent: tokio::time::Instant,
    /// Set once ownership is known to be gone.
    lost: Option<(Option<AgentId>, u64, Option<baton_core::TaskStatus>)>,
}

struct Shared {
    agent: Agent,
    task: TaskId,
    workflow: WorkflowId,
    epoch: u64,
    lease: Duration,
    state: Mutex<HandleState>,
    lost_tx: watch::Sender<bool>,
}

impl Shared {
    fn lost_error(
        &self,
        lost: &(Option<AgentId>, u64, Option<baton_core::TaskStatus>),
    ) -> OwnershipError {
        match lost.2 {
            Some(status) => OwnershipError::Ended {
                task: self.task.clone(),
                status,
            },
            None => OwnershipError::Lost {
                task: self.task.clone(),
                owner: lost.0.clone(),
                epoch: lost.1,
            },
        }
    }

    /// Publishes an owner event with compare-and-set; on conflict re-reads
    /// the task and retries while this agent still owns it.
    async fn act(&self, body: EventBody) -> Result<u64, OwnershipError> {
        let mut st = self.state.lock().await;
        if let Some(lost) = &st.lost {
            return Err(self.lost_error(lost));
        }
        for _ in 0..8 {
            let event = self
                .agent
                .event(&self.task, &self.workflow, self.epoch, body.clone());
            if let Some(seq) = self.agent.publish_cas(&event, st.last_seq).await? {
                st.last_seq = seq;
                st.last_sent = tokio::time::Instant::now();
                return Ok(seq);
            }
            // Another event came first: is the task still ours?
            let (state, last_seq) = self.agent.current(&self.task).await?;
            match state {
                Some(t)
                    if t.owner.as_ref() == Some(&self.agent.inner.id)
                        && t.epoch == self.epoch
                        && !t.status.is_terminal() =>
                {
                    st.last_seq = last_seq;
                }
                Some(t) => {
                    let terminal = t.status.is_terminal().then_some(t.status);
                    let lost = (t.owner.clone(), t.epoch, terminal);
                    let err = self.lost_error(&lost);
                    st.lost = Some(lost);
                    self.lost_tx.send_replace(true);
                    return Err(err);
                }
                None => {
                    return Err(OwnershipError::Invalid(format!(
                        "task {} no longer exists",
                        self.task
                    )));
                }
            }
        }
        Err(OwnershipError::Broker(BrokerError::Other(format!(
            "task {} kept changing; giving up after 8 attempts",
            self.task
        ))))
    }
}

/// Proof that this agent owns a task at an epoch.
pub struct Ownership {
    shared: Arc<Shared>,
    heartbeats: Option<tokio::task::JoinHandle<()>>,
    /// Set once a final act succeeded: nothing to release on drop.
    done: bool,
    /// Leases on the task's declared artifacts, taken with the claim or
    /// acceptance; they go with the task (released at its end, handed to
    /// the recipient of an agent offer) and are released if it is dropped.
    leases: Vec<crate::Lease>,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("task", &self.shared.task)
            .field("epoch", &self.shared.epoch)
            .finish()
    }
}

/// A consuming act failed. If ownership is intact (e.g. the broker did not
/// answer), the handle is given back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ActError {
    #[source]
    pub error: OwnershipError,
    ownership: Option<Ownership>,
}

impl ActError {
    /// The handle back, when the task is still this agent's.
    pub fn into_ownership(self) -> Option<Ownership> {
        self.ownership
    }

    /// The error and, when the task is still this agent's, the handle.
    pub fn into_parts(self) -> (OwnershipError, Option<Ownership>) {
        (self.error, self.ownership)
    }
}

/// A handoff offer in flight: the sender is accountable until the
/// recipient accepts.
#[derive(Debug)]
pub struct Offer {
    pub task: TaskId,
    pub to: HandoffTarget,
    /// Stream sequence of the offer event.
    pub seq: u64,
    pub epoch: u64,
}

impl Ownership {
    pub(crate) fn start(
        agent: Agent,
        task: TaskId,
        workflow: WorkflowId,
        epoch: u64,
        last_seq: u64,
        lease: Duration,
    ) -> Ownership {
        Self::new(agent, task, workflow, epoch, last_seq, lease, false)
    }

    /// A handle without automatic heartbeats that does not release on drop,
    /// for a process that performs one act and exits (a shell script step).
    pub(crate) fn detached(
        agent: Agent,
        task: TaskId,
        workflow: WorkflowId,
        epoch: u64,
        last_seq: u64,
        lease: Duration,
    ) -> Ownership {
        Self::new(agent, task, workflow, epoch, last_seq, lease, true)
    }

    fn new(
        agent: Agent,
        task: TaskId,
        workflow: WorkflowId,
        epoch: u64,
        last_seq: u64,
        lease: Duration,
        detached: bool,
    ) -> Ownership {
        let (lost_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            agent,
            task,
            workflow,
            epoch,
            lease,
            state: Mutex::new(HandleState {
                last_seq,
                last_sent: tokio::time::Instant::now(),
                lost: None,
            }),
            lost_tx,
        });
        let heartbeats = (!detached).then(|| tokio::spawn(heartbeat_loop(shared.clone())));
        Ownership {
            shared,
            heartbeats,
            done: detached,
            leases: Vec::new(),
        }
    }

    /// Gives the handle the leases taken for its task.
    pub(crate) fn with_leases(mut self, leases: Vec<crate::Lease>) -> Ownership {
        self.leases = leases;
        self
    }

    /// The leases on the task's declared artifacts that this handle holds;
    /// writes to them carry [`Lease::token`](crate::Lease::token).
    pub fn leases(&self) -> &[crate::Lease] {
        &self.leases
    }

    pub fn task(&self) -> &TaskId {
        &self.shared.task
    }

    pub fn workflow(&self) -> &WorkflowId {
        &self.shared.workflow
    }

    /// The fencing token this handle holds.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// The lease; heartbeats go out at a third of it.
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// Whether ownership is known to be gone (revoked, cancelled).
    pub fn is_lost(&self) -> bool {
        *self.shared.lost_tx.borrow()
    }

    /// Completes when ownership is found to be gone.
    pub async fn lost(&self) {
        let mut rx = self.shared.lost_tx.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Keeps ownership but stops automatic heartbeats and the release on
    /// drop: for handing ownership over to another process (a later
    /// `Agent::resume`), e.g. a shell-script agent that acts in steps.
    pub fn detach(mut self) {
        self.stop_heartbeats();
        self.done = true;
        for lease in std::mem::take(&mut self.leases) {
            lease.detach();
        }
    }

    /// Reports liveness; `progress` = output advanced since the last one.
    /// The leases on the task's declared artifacts are renewed with it (a
    /// lease that is gone is logged: writes under it would be refused).
    pub async fn heartbeat(&self, note: &str, progress: bool) -> Result<(), OwnershipError> {
        self.shared
            .act(EventBody::Heartbeat {
                note: note.to_string(),
                progress,
            })
            .await?;
        for lease in &self.leases {
            if let Err(e) = lease.renew().await {
                tracing::warn!(task = %self.shared.task, artifact = %lease.artifact(), error = %e, "a declared artifact's lease could not be renewed");
            }
        }
        Ok(())
    }

    /// Reports that the task waits for input; heartbeat expectations pause.
    /// A later heartbeat resumes work.
    pub async fn block(&self, reason: &str) -> Result<(), OwnershipError> {
        self.shared
            .act(EventBody::Blocked {
                reason: reason.to_string(),
            })
            .await
            .map(|_| ())
    }

    /// Offers the task to an agent. The handle is consumed: the sender stays
    /// accountable (alerts name it) until the recipient accepts, but may no
    /// longer act on the task.
    pub async fn offer_to_agent(
        self,
        to: &AgentId,
        output_location: &str,
        accept_within: Option<Duration>,
    ) -> Result<Offer, ActError> {
        self.offer(
            HandoffTarget::Agent(to.clone()),
            output_location,
            accept_within,
        )
        .await
    }

    /// Offers the task to any agent of `stage`.
    pub async fn offer_to_stage(
        self,
        stage: &StageName,
        output_location: &str,
        accept_within: Option<Duration>,
    ) -> Result<Offer, ActError> {
        self.offer(
            HandoffTarget::Stage(stage.clone()),
            output_location,
            accept_within,
        )
        .await
    }

    /// Offers the task on (see [`offer_to_agent`](Self::offer_to_agent)).
    pub async fn offer(
        self,
        to: HandoffTarget,
        output_location: &str,
        accept_within: Option<Duration>,
    ) -> Result<Offer, ActError> {
        let body = EventBody::HandoffOffered {
            to: to.clone(),
            output_location: output_location.to_string(),
            accept_within,
        };
        let task = self.shared.task.clone();
        let epoch = self.shared.epoch;
        self.finish(body).await.map(|seq| Offer {
            task,
            to,
            seq,
            epoch,
        })
    }

    /// Completes the task (terminal).
    pub async fn complete(self, output_location: &str, summary: &str) -> Result<u64, ActError> {
        self.finish(EventBody::Completed {
            output_location: output_location.to_string(),
            summary: summary.to_string(),
        })
        .await
    }

    /// Gives up: terminal unless `retryable`, in which case the task is
    /// unowned again.
    pub async fn fail(self, reason: &str, retryable: bool) -> Result<u64, ActError> {
        self.finish(EventBody::Failed {
            reason: reason.to_string(),
            retryable,
        })
        .await
    }

    /// Lets go of the task; it is unowned again.
    pub async fn release(self, reason: &str) -> Result<u64, ActError> {
        self.finish(EventBody::Released {
            reason: reason.to_string(),
        })
        .await
    }

    /// A final act: on success the handle is spent; on a broker failure it
    /// is handed back.
    async fn finish(mut self, body: EventBody) -> Result<u64, ActError> {
        match self.shared.act(body.clone()).await {
            Ok(seq) => {
                self.done = true;
                self.stop_heartbeats();
                // The artifacts go with the task.
                let leases = std::mem::take(&mut self.leases);
                match body {
                    EventBody::HandoffOffered {
                        to: HandoffTarget::Agent(to),
                        accept_within,
                        ..
                    } => {
                        let ttl = accept_within
                            .unwrap_or(self.shared.lease)
                            .max(self.shared.lease);
                        crate::lease::hand_over_all(leases, &to, ttl).await;
                    }
                    _ => crate::lease::release_all(leases, "the task was handed on or ended").await,
                }
                Ok(seq)
            }
            Err(error @ OwnershipError::Broker(_)) => Err(ActError {
                error,
                ownership: Some(self),
            }),
            Err(error) => {
                self.done = true;
                self.stop_heartbeats();
                // The task is no longer this agent's: neither are its
                // artifacts.
                let leases = std::mem::take(&mut self.leases);
                crate::lease::release_all(leases, "the task is no longer this agent's").await;
                Err(ActError {
                    error,
                    ownership: None,
                })
            }
        }
    }

    fn stop_heartbeats(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        self.stop_heartbeats();
        if self.done {
            // A detached handle (a shell-script step) leaves the task and
            // its leases to the next step; a finished one has none left.
            for lease in std::mem::take(&mut self.leases) {
                lease.detach();
            }
            return;
        }
        if self.is_lost() {
            // The task is gone: its leases go with it (dropped handles
            // release).
            return;
        }
        // Never go silent: a dropped handle releases the task.
        let shared = self.shared.clone();
        let spawned = self.shared.agent.in_background(async move {
            let result = shared
                .act(EventBody::Released {
                    reason: "dropped".into(),
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(task = %shared.task, error = %e, "could not release a dropped task");
            }
        });
        if !spawned {
            tracing::warn!(task = %self.shared.task, "ownership dropped outside a runtime; the task was not released");
        }
    }
}

/// Sends a heartbeat whenever a third of the lease passed without any
/// event from this handle; stops when ownership is lost.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = (shared.lease / 3).max(Duration::from_millis(50));
    loop {
        let due = shared.state.lock().await.last_sent + every;
        tokio::time::sleep_until(due).await;
        let idle = shared.state.lock().await.last_sent.elapsed() >= every;
        if !idle {
            continue;
        }
        match shared
            .act(EventBody::Heartbeat {
                note: String::new(),
                progress: false,
            })
            .await
        {
            Ok(_) => {}
            Err(OwnershipError::Broker(e)) => {
                tracing::warn!(task = %shared.task, error = %e, "heartbeat not delivered; retrying");
                shared.state.lock().await.last_sent = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::warn!(task = %shared.task, error = %e, "stopping heartbeats");
                return;
            }
        }
    }
}
