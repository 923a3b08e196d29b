//! `baton orchestrator`: the services as subcommands, configured by flags
//! and environment.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use baton_core::{
    AgentId, Policy, UnknownTaskPolicy, context::MissingVersion, rules::parse_duration,
};
use baton_jetstream::Topology;
use baton_service::shutdown;
use clap::{Args, ValueEnum};

use crate::args::NatsArgs;

/// Stream layout flags shared by the services.
#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Stream and bucket replicas: 1 on a single node, 3 on a cluster
    #[arg(long, env = "BATON_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// How long event ids are remembered for de-duplication
    #[arg(long, env = "BATON_DUPLICATE_WINDOW", default_value = "10m", value_parser = duration)]
    pub duplicate_window: Duration,
}

impl TopologyArgs {
    pub fn topology(&self) -> Topology {
        Topology {
            replicas: usize::from(self.replicas),
            duplicate_window: self.duplicate_window,
            ..Topology::default()
        }
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h`.
pub fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UnknownTask {
    /// Ignore the event and raise UNKNOWN_TASK
    Alert,
    /// Create the task from the event and raise UNKNOWN_TASK
    Create,
}

/// The fold's policy from `--operators` and `--unknown-task` (the two
/// services must agree on it).
fn policy(operators: &[String], unknown_task: UnknownTask) -> anyhow::Result<Policy> {
    Ok(Policy {
        operators: operators
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| AgentId::new(o).with_context(|| "--operators"))
            .collect::<anyhow::Result<_>>()?,
        unknown_task: match unknown_task {
            UnknownTask::Alert => UnknownTaskPolicy::Alert,
            UnknownTask::Create => UnknownTaskPolicy::AutoCreate,
        },
    })
}

/// `baton orchestrator` flags.
#[derive(Debug, Clone, Args)]
pub struct OrchestratorArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Serve /metrics and /healthz here (e.g. 127.0.0.1:9464); off when unset
    #[arg(long = "http", env = "BATON_ORCHESTRATOR_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// What to do with events for tasks never created
    #[arg(long, env = "BATON_UNKNOWN_TASK", value_enum, default_value = "alert")]
    pub unknown_task: UnknownTask,
    /// Agent ids allowed to revoke and cancel (comma-separated); anyone when empty
    #[arg(long, env = "BATON_OPERATORS", value_delimiter = ',')]
    pub operators: Vec<String>,
    /// Do not treat an event without a context version as stale
    #[arg(long, env = "BATON_ALLOW_MISSING_CONTEXT_VERSION")]
    pub allow_missing_context_version: bool,
    /// Under load, KV state lags the stream by at most this
    #[arg(long, env = "BATON_MAX_LAG", default_value = "250ms", value_parser = duration)]
    pub max_lag: Duration,
    /// While replaying a backlog, write KV state this often
    #[arg(long, env = "BATON_CATCH_UP_LAG", default_value = "5s", value_parser = duration)]
    pub catch_up_lag: Duration,
    /// Most events taken in one batch
    #[arg(long, env = "BATON_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Instance name in the liveness record [default: <host>-<pid>]
    #[arg(long, env = "BATON_INSTANCE")]
    pub instance: Option<String>,
    /// How often to write the liveness record
    #[arg(long, env = "BATON_LIVENESS_INTERVAL", default_value = "2s", value_parser = duration)]
    pub liveness_interval: Duration,
    /// Leadership lease: a standby takes over after the active instance has
    /// not renewed it (crashed, stuck or cut off) for this long
    #[arg(long, env = "BATON_LEASE_TTL", default_value = "5s", value_parser = duration)]
    pub lease_ttl: Duration,
}

impl OrchestratorArgs {
    pub fn config(&self, nats: &NatsArgs) -> anyhow::Result<baton_orchestrator::Config> {
        let mut c = baton_orchestrator::Config::new(nats.options("baton-orchestrator"));
        c.topology = self.topology.topology();
        c.http_addr = self.http;
        c.policy = policy(&self.operators, self.unknown_task)?;
        c.missing_context_version = if self.allow_missing_context_version {
            MissingVersion::Allow
        } else {
            MissingVersion::Stale
        };
        if self.max_batch == 0 {
            bail!("--max-batch must be at least 1");
        }
        c.max_batch = self.max_batch;
        c.max_lag = self.max_lag;
        c.catch_up_lag = self.catch_up_lag;
        if let Some(i) = &self.instance {
            c.instance = i.clone();
        }
        c.liveness_interval = self.liveness_interval;
        c.lease_ttl = lease_ttl(self.lease_ttl)?;
        Ok(c)
    }
}

/// A lease ttl a lease can work with.
fn lease_ttl(ttl: Duration) -> anyhow::Result<Duration> {
    if ttl < Duration::from_millis(200) {
        bail!("--lease-ttl must be at least 200ms (it is renewed every quarter of it)");
    }
    Ok(ttl)
}

/// Runs the orchestrator until SIGTERM / ctrl-c.
pub async fn orchestrator(nats: &NatsArgs, args: &OrchestratorArgs) -> anyhow::Result<()> {
    let config = args.config(nats)?;
    let (trigger, shutdown) = shutdown::channel();
    let running = baton_orchestrator::start(config, shutdown)
        .await
        .context("orchestrator failed to start")?;
    tracing::info!(
        http = ?running.http_addr,
        restored_tasks = running.restored_tasks,
        startup_ms = running.startup.as_millis() as u64,
        "orchestrator ready"
    );
    until_signal(trigger, running.wait()).await
}

/// Runs a started service until it stops on its own or SIGTERM / ctrl-c
/// asks it to; then waits for its graceful stop, including the deletion of
/// its liveness record (a clean stop is not "down").
pub async fn until_signal<E>(
    trigger: shutdown::Trigger,
    running: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut wait = Box::pin(running);
    tokio::select! {
        _ = shutdown::signal() => {
            tracing::info!("shutting down");
            trigger.trigger();
            let result = wait.await;
            baton_service::liveness::stopped(Duration::from_secs(3)).await;
            result?;
        }
        result = &mut wait => result?,
    }
    Ok(())
}

/// Reads and validates a rules file, or explains exactly what is wrong.
pub fn load_rules(path: Option<&std::path::Path>) -> anyhow::Result<baton_core::rules::Rules> {
    let Some(path) = path else {
        return Ok(baton_core::rules::Rules::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read rules file {}", path.display()))?;
    baton_core::rules::Rules::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `baton stall-detector` flags.
#[derive(Debug, Clone, Args)]
pub struct DetectorArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Stall rules (TOML; see `baton rules check`)
    #[arg(long, env = "BATON_RULES", value_name = "FILE")]
    pub rules: Option<std::path::PathBuf>,
    /// Serve /metrics and /healthz here (e.g. 127.0.0.1:9465); off when unset
    #[arg(long = "http", env = "BATON_DETECTOR_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Judge an expectation this long after it is due (events in flight)
    #[arg(long, env = "BATON_GRACE", default_value = "100ms", value_parser = duration)]
    pub grace: Duration,
    /// Agent ids allowed to revoke and cancel (must match the orchestrator's)
    #[arg(long, env = "BATON_OPERATORS", value_delimiter = ',')]
    pub operators: Vec<String>,
    /// What to do with events for tasks never created (must match the orchestrator's)
    #[arg(long, env = "BATON_UNKNOWN_TASK", value_enum, default_value = "alert")]
    pub unknown_task: UnknownTask,
    /// A consumer with pending events and no progress for this long is stalled
    #[arg(long, env = "BATON_CONSUMER_STALL_AFTER", default_value = "60s", value_parser = duration)]
    pub consumer_stall_after: Duration,
    /// How often to check consumers
    #[arg(long, env = "BATON_CONSUMER_CHECK_INTERVAL", default_value = "5s", value_parser = duration)]
    pub consumer_check_interval: Duration,
    /// Instance name in the liveness record [default: <host>-<pid>]
    #[arg(long, env = "BATON_INSTANCE")]
    pub instance: Option<String>,
    /// How often to write the liveness record
    #[arg(long, env = "BATON_LIVENESS_INTERVAL", default_value = "2s", value_parser = duration)]
    pub liveness_interval: Duration,
    /// Leadership lease: a standby takes over after the active instance has
    /// not renewed it (crashed, stuck or cut off) for this long
    #[arg(long, env = "BATON_LEASE_TTL", default_value = "5s", value_parser = duration)]
    pub lease_ttl: Duration,
}

impl DetectorArgs {
    pub fn config(&self, nats: &NatsArgs) -> anyhow::Result<baton_stall::Config> {
        let mut c = baton_stall::Config::new(nats.options("baton-stall-detector"));
        c.topology = self.topology.topology();
        c.rules = load_rules(self.rules.as_deref())?;
        c.http_addr = self.http;
        c.grace = self.grace;
        c.policy = policy(&self.operators, self.unknown_task)?;
        c.watch.stall_after = self.consumer_stall_after;
        c.watch.renotify = c.rules.defaults.renotify;
        c.consumer_check_interval = self.consumer_check_interval;
        c.instance = self
            .instance
            .clone()
            .unwrap_or_else(baton_orchestrator::default_instance);
        c.liveness_interval = self.liveness_interval;
        c.lease_ttl = lease_ttl(self.lease_ttl)?;
        Ok(c)
    }
}

/// Runs the stall detector until SIGTERM / ctrl-c.
pub async fn detector(nats: &NatsArgs, args: &DetectorArgs) -> anyhow::Result<()> {
    let config = args.config(nats)?;
    let (trigger, shutdown) = shutdown::channel();
    let running = baton_stall::start(config, shutdown)
        .await
        .context("stall detector failed to start")?;
    tracing::info!(
        http = ?running.http_addr,
        restored_tasks = running.restored_tasks,
        restored_alerts = running.restored_alerts,
        startup_ms = running.startup.as_millis() as u64,
        "stall detector ready"
    );
    until_signal(trigger, running.wait()).await
}
