//! `baton mcp --agent NAME`: an MCP server on stdio for one agent, so an
//! LLM host coordinates through Baton with tools. The server itself is the
//! `baton-mcp` library; this only reads flags.

use std::time::Duration;

use anyhow::Context as _;
use baton_agent::AgentOptions;
use baton_core::StageName;
use clap::Args;

use crate::{args::NatsArgs, cmd::services::duration};

#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    /// The agent this server acts as (one server process per agent identity)
    #[arg(long, env = "BATON_MCP_AGENT", value_name = "ID")]
    pub agent: String,
    /// Stages this agent serves: the tasks it may claim and the stage handoffs it may accept [default: every stage]
    #[arg(
        long,
        env = "BATON_MCP_STAGES",
        value_delimiter = ',',
        value_name = "STAGE"
    )]
    pub stage: Vec<String>,
    /// The lease committed to when claiming or accepting; heartbeats are sent at a third of it
    #[arg(long, env = "BATON_MCP_LEASE", value_parser = duration, default_value = "30s")]
    pub lease: Duration,
}

pub async fn run(nats: &NatsArgs, args: &McpArgs) -> anyhow::Result<()> {
    let stages = args
        .stage
        .iter()
        .map(|s| StageName::new(s).with_context(|| format!("--stage {s:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut agent = AgentOptions::new(args.agent.clone(), nats.url());
    agent.nats = nats.options(&format!("baton-mcp-{}", args.agent));
    agent.lease = args.lease;
    baton_mcp::serve_stdio(baton_mcp::Config { agent, stages }).await?;
    Ok(())
}
