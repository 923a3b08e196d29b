//! An MCP server for one Baton agent: LLM sessions that act through tools
//! coordinate through Baton without SDK code.
//!
//! `baton mcp --agent NAME` runs it on stdio, one process per agent
//! identity (with that identity's credentials where the broker enforces
//! them). It speaks the protocol for the model through the Rust SDK
//! (`baton-agent`), so the model cannot get it wrong: claims and ownership
//! events with compare-and-set, the epoch held, the decision-record version
//! read carried on every event (and acting on unread decisions refused),
//! idempotent retries with one event id, and heartbeats sent while the MCP
//! session lasts and the agent holds a task. Progress stays the model's
//! own signal.
//!
//! When the session ends without a final act (the host exited, crashed or
//! was killed), heartbeats stop and the tasks stay owned: the stall
//! detector raises `HEARTBEAT_MISSED` as for any agent that went silent,
//! and a new session of the same agent resumes them with `claim_task`.
//!
//! # Layout
//!
//! - [`desk`]: the agent's acts and what it holds, without MCP types.
//! - [`explain`]: refusals that say what happened and what to do.
//! - [`server`]: tools, resources and notifications on `rmcp`.
//! - `follow`: what other agents do, as it happens (offers, revokes).
//!
//! `rmcp` is used with the `server`, `macros` and `transport-io` features
//! only (stdio): no HTTP stack, TLS or OAuth in the build.

pub mod desk;
pub mod explain;
mod follow;
pub mod server;

use std::sync::Arc;

use baton_agent::{Agent, AgentOptions};
use baton_core::StageName;
use rmcp::ServiceExt as _;

pub use desk::Desk;
pub use server::BatonMcp;

/// How to run the server for one agent.
#[derive(Debug, Clone)]
pub struct Config {
    /// The agent, its connection (credentials included) and its lease.
    pub agent: AgentOptions,
    /// The stages this agent serves (empty: every stage).
    pub stages: Vec<StageName>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error(transparent)]
    Agent(#[from] baton_agent::AgentError),
    #[error("the MCP session could not start: {0}")]
    Start(String),
    #[error("the MCP session failed: {0}")]
    Session(String),
}

/// A one-line description of the credentials in use, for refusals.
fn identity(options: &AgentOptions) -> String {
    let nats = &options.nats;
    match (&nats.nkey_seed_file, &nats.creds_file) {
        (Some(f), _) => format!("the nkey identity file {}", f.display()),
        (None, Some(f)) => format!("the credentials file {}", f.display()),
        (None, None) if nats.user.is_some() => "a user and password".to_string(),
        (None, None) => "no credentials (an anonymous connection)".to_string(),
    }
}

/// Connects as the agent and starts following what others do.
pub async fn start(config: Config) -> Result<Arc<Desk>, McpError> {
    let identity = identity(&config.agent);
    let agent = Agent::connect(config.agent).await?;
    let desk = Arc::new(Desk::new(agent, config.stages, identity));
    tokio::spawn(follow::run(desk.clone()));
    Ok(desk)
}

/// Serves one MCP session on stdin/stdout until the host closes it; then
/// stops heartbeating (without releasing) and returns.
pub async fn serve_stdio(config: Config) -> Result<(), McpError> {
    let desk = start(config).await?;
    let handler = BatonMcp::new(desk.clone());
    handler.spawn_legacy_notifier();
    let running = handler
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    let ended = running.waiting().await;
    desk.detach_all().await;
    match ended {
        Ok(reason) => {
            tracing::info!(?reason, "MCP session ended");
            Ok(())
        }
        Err(e) => Err(McpError::Session(e.to_string())),
    }
}
