//! `baton mcp --agent NAME`: an MCP server for one agent, on stdio or (with
//! `--http ADDR`) on the streamable HTTP transport, so an LLM host
//! coordinates through Baton with tools. The server itself is the
//! `baton-mcp` library; this only reads flags.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use baton_agent::AgentOptions;
use baton_core::StageName;
use baton_service::shutdown;
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
    /// Serve the MCP streamable HTTP transport at http://ADDR/mcp instead of stdio (port 0: a free port; the URL is printed to stderr)
    #[arg(long, env = "BATON_MCP_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Allow --http on an address that is not loopback (use with --http-token-file, behind a TLS proxy)
    #[arg(long, env = "BATON_MCP_HTTP_ALLOW_REMOTE", requires = "http")]
    pub http_allow_remote: bool,
    /// A file holding a bearer token every HTTP request must carry (Authorization: Bearer <token>)
    #[arg(
        long,
        env = "BATON_MCP_HTTP_TOKEN_FILE",
        value_name = "FILE",
        requires = "http"
    )]
    pub http_token_file: Option<PathBuf>,
    /// Over HTTP, heartbeats go on this long after the host's last exchange while it has none open (no tool call, no notification stream)
    #[arg(long, env = "BATON_MCP_HTTP_KEEP_ALIVE", value_parser = duration, default_value = "60s")]
    pub http_keep_alive: Duration,
    /// Origins allowed to call over HTTP (e.g. http://localhost:6274); requests with any other Origin header are refused [default: none]
    #[arg(
        long,
        env = "BATON_MCP_HTTP_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub http_allowed_origin: Vec<String>,
    /// Host names (or host:port) HTTP requests may name besides the loopback names and the listening address
    #[arg(
        long,
        env = "BATON_MCP_HTTP_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub http_allowed_host: Vec<String>,
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
    let config = baton_mcp::Config { agent, stages };
    let Some(listen) = args.http else {
        baton_mcp::serve_stdio(config).await?;
        return Ok(());
    };
    let mut http = baton_mcp::HttpOptions::new(listen);
    http.allow_remote = args.http_allow_remote;
    http.keep_alive = args.http_keep_alive;
    http.allowed_origins = args.http_allowed_origin.clone();
    http.allowed_hosts = args.http_allowed_host.clone();
    if let Some(file) = &args.http_token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("--http-token-file {}", file.display()))?;
        let token = token.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "--http-token-file {}: the file is empty",
            file.display()
        );
        http.token = Some(token.to_string());
    }
    // Loudly, whatever the log level.
    for warning in http.check()? {
        eprintln!("{warning}");
    }
    let server = baton_mcp::http::bind(config, http).await?;
    eprintln!("baton mcp: agent {} at {}", args.agent, server.url());
    server.run(shutdown::signal()).await?;
    Ok(())
}
