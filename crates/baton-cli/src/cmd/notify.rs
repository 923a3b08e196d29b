//! `baton notify`: the alert router (crate `baton-notify`), configured by a
//! TOML file and/or flags. Flags add targets to the file's and override its
//! settings; a bad file or flag stops it before it starts, naming the field.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use baton_notify::{Format, Routes};
use baton_service::shutdown;
use clap::Args;

use crate::{
    args::NatsArgs,
    cmd::services::{TopologyArgs, duration},
};

/// `baton notify` flags.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Routing file (TOML: [[alertmanager]], [[webhook]], [watchdog], [retry]; see the README)
    #[arg(long, env = "BATON_NOTIFY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Alertmanager base URL, e.g. http://127.0.0.1:9093 (repeat or comma-separate for HA: each gets every alert)
    #[arg(
        long = "alertmanager",
        env = "BATON_NOTIFY_ALERTMANAGER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub alertmanagers: Vec<String>,
    /// Webhook receiving JSON: URL or NAME=URL (NAME names its durable consumer baton-notify-NAME)
    #[arg(
        long = "webhook",
        env = "BATON_NOTIFY_WEBHOOK",
        value_delimiter = ',',
        value_name = "[NAME=]URL"
    )]
    pub webhooks: Vec<String>,
    /// Slack-compatible webhook receiving {"text": ...}: URL or NAME=URL
    #[arg(
        long = "slack-webhook",
        env = "BATON_NOTIFY_SLACK_WEBHOOK",
        value_delimiter = ',',
        value_name = "[NAME=]URL"
    )]
    pub slack_webhooks: Vec<String>,
    /// CA certificates (PEM) to trust for https targets, besides the system's
    #[arg(long, env = "BATON_NOTIFY_TLS_CA", value_name = "FILE")]
    pub https_ca: Option<PathBuf>,
    /// Base URL of the web console, for links in alerts (e.g. http://127.0.0.1:8080)
    #[arg(long, env = "BATON_CONSOLE_URL", value_name = "URL")]
    pub console_url: Option<String>,
    /// Re-send firing alerts to Alertmanager this often [default: 60s, or the file's]
    #[arg(long, env = "BATON_NOTIFY_RESEND_INTERVAL", value_parser = duration)]
    pub resend_interval: Option<Duration>,
    /// Check Baton's liveness and send the watchdog this often [default: 15s, or the file's]
    #[arg(long, env = "BATON_NOTIFY_WATCHDOG_INTERVAL", value_parser = duration)]
    pub watchdog_interval: Option<Duration>,
    /// Do not send the watchdog alert
    #[arg(long, env = "BATON_NOTIFY_NO_WATCHDOG")]
    pub no_watchdog: bool,
    /// First retry after this; doubles up to --retry-max [default: 500ms, or the file's]
    #[arg(long, env = "BATON_NOTIFY_RETRY_INITIAL", value_parser = duration)]
    pub retry_initial: Option<Duration>,
    /// Longest wait between retries [default: 30s, or the file's]
    #[arg(long, env = "BATON_NOTIFY_RETRY_MAX", value_parser = duration)]
    pub retry_max: Option<Duration>,
    /// Serve /metrics and /healthz here (e.g. 127.0.0.1:9466); off when unset
    #[arg(long = "http", env = "BATON_NOTIFY_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Instance name in the liveness record [default: <host>-<pid>]
    #[arg(long, env = "BATON_INSTANCE")]
    pub instance: Option<String>,
    /// How often to write the liveness record
    #[arg(long, env = "BATON_LIVENESS_INTERVAL", default_value = "2s", value_parser = duration)]
    pub liveness_interval: Duration,
}

impl NotifyArgs {
    /// The routes from the file and the flags, validated.
    pub fn routes(&self) -> anyhow::Result<Routes> {
        let mut routes = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read routing file {}", path.display()))?;
                Routes::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Routes::default(),
        };
        for url in self.alertmanagers.iter().filter(|u| !u.is_empty()) {
            routes.add_alertmanager(url)?;
        }
        for spec in self.webhooks.iter().filter(|u| !u.is_empty()) {
            routes.add_webhook(spec, Format::Json)?;
        }
        for spec in self.slack_webhooks.iter().filter(|u| !u.is_empty()) {
            routes.add_webhook(spec, Format::Slack)?;
        }
        if let Some(ca) = &self.https_ca {
            routes.tls_ca = Some(ca.clone());
        }
        if let Some(url) = &self.console_url {
            routes.console_url = Some(url.clone());
        }
        let positive = |flag: &str, d: Option<Duration>| -> anyhow::Result<Option<Duration>> {
            match d {
                Some(d) if d.is_zero() => anyhow::bail!("{flag} must be more than zero"),
                d => Ok(d),
            }
        };
        if let Some(d) = positive("--resend-interval", self.resend_interval)? {
            routes.resend_interval = d;
        }
        if let Some(d) = positive("--watchdog-interval", self.watchdog_interval)? {
            routes.watchdog.interval = d;
        }
        if let Some(d) = positive("--retry-initial", self.retry_initial)? {
            routes.retry.initial = d;
        }
        if let Some(d) = positive("--retry-max", self.retry_max)? {
            routes.retry.max = d;
        }
        if self.no_watchdog {
            routes.watchdog.enabled = false;
        }
        routes.check()?;
        if routes.alertmanagers.is_empty() && routes.webhooks.is_empty() {
            anyhow::bail!(
                "no target: give --alertmanager URL, --webhook URL, --slack-webhook URL or a --config file with [[alertmanager]] / [[webhook]]"
            );
        }
        Ok(routes)
    }

    pub fn config(&self, nats: &NatsArgs) -> anyhow::Result<baton_notify::Config> {
        let mut c = baton_notify::Config::new(nats.options("baton-notify"), self.routes()?);
        c.topology = self.topology.topology();
        c.http_addr = self.http;
        c.instance = self
            .instance
            .clone()
            .unwrap_or_else(baton_orchestrator::default_instance);
        c.liveness_interval = self.liveness_interval;
        Ok(c)
    }
}

/// Runs the router until SIGTERM / ctrl-c.
pub async fn notify(nats: &NatsArgs, args: &NotifyArgs) -> anyhow::Result<()> {
    let config = args.config(nats)?;
    let (alertmanagers, webhooks) = (
        config.routes.alertmanagers.len(),
        config.routes.webhooks.len(),
    );
    let (trigger, shutdown) = shutdown::channel();
    let running = baton_notify::start(config, shutdown)
        .await
        .context("alert router failed to start")?;
    tracing::info!(
        http = ?running.http_addr,
        alertmanagers,
        webhooks,
        "alert router ready"
    );
    crate::cmd::services::until_signal(trigger, running.wait()).await
}
