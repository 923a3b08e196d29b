//! An MCP server for one Baton agent: LLM sessions that act through tools
//! coordinate through Baton without SDK code.
//!
//! `baton mcp --agent NAME` runs it on stdio, or with `--http ADDR` on the
//! MCP streamable HTTP transport at `http://ADDR/mcp` for hosts that take
//! a URL; one process per agent identity either way (with that identity's
//! credentials where the broker enforces them). It speaks the protocol for
//! the model through the Rust SDK (`baton-agent`), so the model cannot get
//! it wrong: claims and ownership events with compare-and-set, the epoch
//! held, the decision-record version read carried on every event (and
//! acting on unread decisions refused), idempotent retries with one event
//! id, and heartbeats sent while the host is there and the agent holds a
//! task. Progress stays the model's own signal.
//!
//! When the host goes without a final act (a stdio host exited, crashed or
//! was killed; an HTTP host deleted its last session, or made no exchange
//! for the keep-alive with none open), heartbeats stop and the tasks stay
//! owned: the stall detector raises `HEARTBEAT_MISSED` as for any agent
//! that went silent, and the agent resumes a task with `claim_task` (over
//! HTTP, any act on it does).
//!
//! # Layout
//!
//! - [`desk`]: the agent's acts and what it holds, without MCP types.
//! - [`explain`]: refusals that say what happened and what to do.
//! - [`server`]: tools, resources and notifications on `rmcp`.
//! - [`http`]: the streamable HTTP endpoint (hyper in front of rmcp's
//!   tower service): address, token, `Host`/`Origin` checks, shutdown.
//! - [`presence`]: whether an HTTP host is still there (pure).
//! - `follow`: what other agents do, as it happens (offers, revokes).
//!
//! `rmcp` is used with the `server`, `macros`, `transport-io` (stdio) and
//! `transport-streamable-http-server` features; HTTP/1.1 by `hyper`. No
//! TLS and no OAuth in the build: a bearer token guards the HTTP endpoint
//! when configured, and a TLS proxy goes in front beyond one machine.

pub mod desk;
pub mod explain;
mod follow;
pub mod http;
pub mod presence;
pub mod server;

use std::sync::Arc;

use baton_agent::{Agent, AgentOptions};
use baton_core::StageName;
use rmcp::ServiceExt as _;

pub use desk::Desk;
pub use http::{HttpOptions, HttpServer};
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
    #[error("{0}")]
    Config(String),
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
