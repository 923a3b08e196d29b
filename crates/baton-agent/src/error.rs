//! Typed errors: what went wrong, in terms an agent can act on.

use baton_core::{AgentId, IdError, TaskId, TaskStatus};

/// The broker could not be reached, or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Connect(#[from] baton_jetstream::ConnectError),
    /// The server's permissions do not let these credentials publish as
    /// `identity` (the subject's last token): the agent connected with
    /// another identity's credentials. Reported as soon as the server
    /// refuses the publish, not after the ack timeout.
    #[error(
        "not permitted to publish as {identity} (subject {subject}): connect with {identity}'s credentials (`baton auth`)"
    )]
    NotPermitted { identity: String, subject: String },
    #[error(transparent)]
    Publish(baton_jetstream::PublishError),
    #[error(transparent)]
    Read(#[from] baton_jetstream::read::ReadError),
    #[error("{0}")]
    Other(String),
}

impl From<baton_jetstream::PublishError> for BrokerError {
    fn from(e: baton_jetstream::PublishError) -> Self {
        match e {
            baton_jetstream::PublishError::NotPermitted { subject } => BrokerError::NotPermitted {
                identity: subject.rsplit('.').next().unwrap_or_default().to_string(),
                subject,
            },
            e => BrokerError::Publish(e),
        }
    }
}

/// Why an agent could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a task could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The task exists already (events were stored for it): nothing was
    /// published. Task ids are unique for good, even after a task ends.
    #[error("task {task} already exists{}: nothing was published; pick another task id", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Exists {
        task: TaskId,
        /// Its status, when its history could be read.
        status: Option<TaskStatus>,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a claim did not give this agent the task.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another agent owns the task (it may have won the race just now).
    #[error("claim of task {task} lost: it is owned by {owner} (epoch {epoch})")]
    Lost {
        task: TaskId,
        owner: AgentId,
        epoch: u64,
    },
    /// This agent already owns it (e.g. from before a restart); use
    /// [`Agent::resume`](crate::Agent::resume).
    #[error("task {task} is already owned by this agent (epoch {epoch}); use Agent::resume")]
    AlreadyYours { task: TaskId, epoch: u64 },
    #[error("task {task} does not exist: create it first")]
    UnknownTask { task: TaskId },
    /// Nobody owns the task (resume needs this agent to own it).
    #[error("task {task} is not owned by anyone; claim it")]
    NotOwned { task: TaskId },
    #[error("task {task} is {status} and can no longer be claimed")]
    Ended { task: TaskId, status: TaskStatus },
    #[error("task {task} is assigned to {assignee}")]
    NotAssignee { task: TaskId, assignee: AgentId },
    /// An artifact the task declares is leased by another agent: nothing
    /// was taken (no task, no lease).
    #[error("task {task} not claimed: {source}")]
    ArtifactHeld {
        task: TaskId,
        #[source]
        source: Box<crate::lease::LeaseError>,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a handoff could not be accepted or rejected.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("task {task} does not exist")]
    UnknownTask { task: TaskId },
    #[error("task {task} has no pending handoff")]
    NoOffer { task: TaskId },
    /// The offer names another agent.
    #[error("the handoff of task {task} is offered to {recipient}, not to this agent")]
    NotForYou { task: TaskId, recipient: AgentId },
    /// The offer's sender can neither accept nor reject its own offer, not
    /// even a stage offer (the orchestrator would refuse it); it may release
    /// the task instead.
    #[error("task {task} was offered by this agent; it cannot accept or reject its own offer")]
    OwnOffer { task: TaskId },
    /// The offer was accepted by someone else first.
    #[error("the handoff of task {task} was taken by {owner}")]
    Taken { task: TaskId, owner: AgentId },
    #[error("task {task} is {status}")]
    Ended { task: TaskId, status: TaskStatus },
    /// An artifact the task declares is leased by another agent: nothing
    /// was taken (no task, no lease).
    #[error("handoff of task {task} not accepted: {source}")]
    ArtifactHeld {
        task: TaskId,
        #[source]
        source: Box<crate::lease::LeaseError>,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why an act on an owned task failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The task is no longer this agent's (revoked, or taken after a
    /// release); nothing was published.
    #[error("task {task} is no longer owned by this agent (owner: {}, epoch {epoch})", owner.as_ref().map_or("nobody", AgentId::as_str))]
    Lost {
        task: TaskId,
        owner: Option<AgentId>,
        epoch: u64,
    },
    /// The task ended (e.g. an operator cancelled it).
    #[error("task {task} is {status}")]
    Ended { task: TaskId, status: TaskStatus },
    /// Not allowed in the task's state (e.g. blocking while an offer is
    /// pending).
    #[error("not allowed: {0}")]
    Invalid(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a decision-record operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Someone recorded a decision since this agent last read the record:
    /// read it (and reconsider) before recording.
    #[error(
        "the decision record of {workflow} changed since it was read (latest version {latest}); read it again before recording"
    )]
    Stale { workflow: String, latest: u64 },
    /// The entry would be refused by every reader (e.g. over a size limit);
    /// nothing was recorded.
    #[error("decision not recorded: {0}")]
    Invalid(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
