//! The Rust agent SDK for Baton.
//!
//! An agent connects with an id, reads its workflow's decision record,
//! claims a task, and receives an [`Ownership`] handle: the only way to send
//! owner events. Claims and every owner event are published with
//! JetStream's per-task compare-and-set, so of agents racing for a task
//! exactly one wins and the rest get [`ClaimError::Lost`] naming the owner;
//! an agent that lost its task finds out at its next event. The handle
//! heartbeats on its own; offering a handoff, completing, failing and
//! releasing consume it, so an agent that gave a task away cannot touch it
//! again, and dropping a live handle releases the task rather than going
//! silent. Every event carries the epoch held and the decision-record
//! version read.
//!
//! This crate never installs a tracing subscriber; it logs through
//! `tracing` and leaves the choice to the application.
//!
//! # The whole flow
//!
//! ```no_run
//! use std::time::Duration;
//! use baton_agent::{Agent, AgentOptions, NewTask};
//! use baton_core::{AgentId, TaskId, WorkflowId};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "nats://127.0.0.1:4222";
//! let editor = Agent::connect(AgentOptions::new("editor", url)).await?;
//! let reviewer = Agent::connect(AgentOptions::new("reviewer", url)).await?;
//! let blog = WorkflowId::new("blog")?;
//! let task = TaskId::new("post-42")?;
//!
//! // Read the shared decisions before starting; record new ones.
//! let record = editor.context(&blog);
//! let decisions = record.read().await?;
//! println!("{} decisions so far", decisions.decisions.len());
//! record.record("Use British spelling", "All posts use en-GB.", None).await?;
//!
//! // Create and claim: exactly one claimer wins.
//! editor.create_task(NewTask::new("post-42", "blog")?.stage("draft")?.title("Launch post")).await?;
//! let draft = editor.claim(&task).await?;
//! draft.heartbeat("outline done", true).await?;
//!
//! // Hand off: the handle is consumed, the editor cannot touch the task now.
//! let offer = draft
//!     .offer_to_agent(&AgentId::new("reviewer")?, "s3://drafts/post-42.md", Some(Duration::from_secs(300)))
//!     .await?;
//! println!("offered at seq {}", offer.seq);
//!
//! // The recipient accepts (and now owns the task at the next epoch), then completes.
//! reviewer.context(&blog).read().await?;
//! let review = reviewer.accept_handoff(&task).await?;
//! assert_eq!(review.epoch(), 2);
//! review.complete("s3://published/post-42.md", "reviewed and published").await?;
//!
//! editor.close().await;
//! reviewer.close().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`Agent`]: connect, create, claim, accept or reject handoffs, read a
//!   task's exact state.
//! - [`Ownership`]: owner events; consumed by the final acts.
//! - [`Lease`]: a lease on a shared artifact (a file, a record), with the
//!   fencing token its writes carry; [`fence::FencedDir`] is a file store
//!   that checks it.
//! - [`ContextRecord`]: a workflow's decision record.
//! - [`Pipeline`]: many events with acknowledgements in flight, for bulk.
//! - [`error`]: typed errors.

mod agent;
pub mod context;
pub mod error;
pub mod fence;
pub mod lease;
mod ownership;
pub mod pipeline;

pub use agent::{Agent, AgentOptions, NewTask, wall_clock};
pub use context::{ContextRecord, Decision, RefusedEntry, Snapshot};
pub use error::{
    AgentError, BrokerError, ClaimError, ContextError, CreateError, HandoffError, OwnershipError,
};
pub use lease::{HandOverError, Lease, LeaseError, LeaseOptions};
pub use ownership::{ActError, Offer, Ownership};
pub use pipeline::{Flushed, Pipeline};

pub use baton_core as core;
pub use baton_jetstream::NatsOptions;
