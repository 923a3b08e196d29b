//! `baton console`: the web console (`baton_console`) until ctrl-c.
//! Reads with the connection's identity (a viewer is enough); silences
//! alerts only with an operator identity (`--operator-nkey`) or, on a
//! server without identities, `--operator`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use baton_console::{Config, OperatorAccess};
use baton_jetstream::{NatsOptions, auth::IdentityFile, auth::Role};
use baton_service::shutdown;
use clap::Args;

use crate::args::NatsArgs;

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// Serve the console on this address (port 0: a free one)
    #[arg(long, env = "BATON_CONSOLE_LISTEN", default_value = baton_console::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// An operator identity file (nkey, from `baton auth`) to silence alerts from the page with; reads still use --nkey/--creds [default: read-only]
    #[arg(long, env = "BATON_CONSOLE_OPERATOR_NKEY", value_name = "FILE")]
    pub operator_nkey: Option<PathBuf>,
    /// An operator credentials file (.creds), instead of --operator-nkey
    #[arg(
        long,
        env = "BATON_CONSOLE_OPERATOR_CREDS",
        value_name = "FILE",
        conflicts_with = "operator_nkey"
    )]
    pub operator_creds: Option<PathBuf>,
    /// Silence with the reading connection itself (a server without identities, e.g. plain `baton dev`)
    #[arg(
        long,
        env = "BATON_CONSOLE_OPERATOR",
        conflicts_with_all = ["operator_nkey", "operator_creds"]
    )]
    pub operator: bool,
    /// Who silences are made by [default: the operator identity's name, else $USER]
    #[arg(long = "as", env = "BATON_CONSOLE_AS", value_name = "NAME")]
    pub name: Option<String>,
}

/// How `--operator-nkey` / `--operator-creds` / `--operator` translate.
fn operator_access(nats: &NatsArgs, args: &ConsoleArgs) -> anyhow::Result<OperatorAccess> {
    let default_name = || {
        args.name
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into())
    };
    if args.operator {
        return Ok(OperatorAccess::SameConnection {
            name: default_name(),
        });
    }
    let mut options: NatsOptions = nats.options("baton-console-operator");
    let name = if let Some(file) = &args.operator_nkey {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --operator-nkey {}", file.display()))?;
        let id = IdentityFile::parse(&text)
            .with_context(|| format!("--operator-nkey {}", file.display()))?;
        if let Some(role) = id.role
            && role != Role::Operator
        {
            bail!(
                "--operator-nkey {} is a {} identity, not an operator's: it may not write silences",
                file.display(),
                role.as_str()
            );
        }
        options.creds_file = None;
        options.nkey_seed_file = Some(file.clone());
        args.name.clone().or(id.name).unwrap_or_else(default_name)
    } else if let Some(file) = &args.operator_creds {
        options.nkey_seed_file = None;
        options.creds_file = Some(file.clone());
        default_name()
    } else {
        return Ok(OperatorAccess::None);
    };
    Ok(OperatorAccess::Identity {
        nats: options,
        name,
    })
}

/// Runs the console until SIGTERM / ctrl-c.
pub async fn console(nats: &NatsArgs, args: &ConsoleArgs) -> anyhow::Result<()> {
    let mut config = Config::new(nats.options("baton-console"));
    config.listen = args.listen;
    config.operator = operator_access(nats, args)?;
    let (trigger, shutdown) = shutdown::channel();
    let running = baton_console::start(config, shutdown)
        .await
        .context("console failed to start")?;
    eprintln!("Baton console: {}", running.url());
    shutdown::signal().await;
    trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), running.wait()).await;
    Ok(())
}

/// The console `baton dev` runs at `listen` (`off`: none; a free port when
/// that one is taken): as the viewer and operator identities with `--auth`,
/// otherwise with the dev connection, which may also silence.
pub async fn start_for_dev(
    listen: &str,
    nats: &NatsArgs,
    url: &str,
    auth: Option<&crate::cmd::auth::DevAuth>,
    shutdown: shutdown::Shutdown,
) -> anyhow::Result<Option<baton_console::Running>> {
    if listen.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let mut addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--console {listen:?}: expected ADDR:PORT or off"))?;
    if std::net::TcpListener::bind(addr).is_err() {
        eprintln!(
            "Console port {} is taken; using a free port instead.",
            addr.port()
        );
        addr.set_port(0);
    }
    let with_identity = |name: &str| -> anyhow::Result<NatsOptions> {
        let mut o = nats.options_for(url, &format!("baton-console-{name}"));
        let id = auth
            .and_then(|a| a.provisioned.get(name))
            .with_context(|| format!("no {name} identity provisioned"))?;
        o.creds_file = None;
        o.nkey_seed_file = Some(id.file.clone());
        Ok(o)
    };
    let mut config = Config::new(nats.options_for(url, "baton-console"));
    config.listen = addr;
    config.operator = OperatorAccess::SameConnection {
        name: "operator".into(),
    };
    if auth.is_some() {
        config.nats = with_identity("viewer")?;
        config.operator = OperatorAccess::Identity {
            nats: with_identity("operator")?,
            name: "operator".into(),
        };
    }
    let running = baton_console::start(config, shutdown)
        .await
        .context("console failed to start")?;
    Ok(Some(running))
}
