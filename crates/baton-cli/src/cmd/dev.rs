//! `baton dev`: everything needed to try Baton on one machine, in one
//! process tree: a local nats-server with JetStream (or an existing server
//! via `--nats`), the streams and buckets, and the services. Stops
//! everything it started on ctrl-c.

use std::{net::TcpListener, path::PathBuf, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream;
use baton_service::shutdown;
use baton_testkit::{NatsServer, ServerOptions};
use clap::Args;

use crate::{args::NatsArgs, cmd::services::TopologyArgs};

/// `baton dev` flags.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Keep the server's JetStream data in DIR [default: a temporary directory, removed on exit]
    #[arg(long, env = "BATON_DEV_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Client port for the local server (a free one is used if it is taken)
    #[arg(long, env = "BATON_DEV_PORT", default_value_t = 4222)]
    pub port: u16,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Also run simulated agents that play each failure mode and show Baton catching it
    #[arg(long)]
    pub demo: bool,
    /// Stall rules for the detector (TOML; see `baton rules check`)
    #[arg(long, env = "BATON_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,
    #[command(flatten)]
    pub auth: DevAuthArgs,
}

/// `baton dev --auth`: the server enforces identities.
#[derive(Debug, Clone, Args)]
pub struct DevAuthArgs {
    /// Enforce identities: provision them (as `baton auth` does) in <data>/auth, run nats-server with them and the services as the service identity
    #[arg(long = "auth", env = "BATON_DEV_AUTH")]
    pub enabled: bool,
    /// With --auth: agent identities to provision (an operator `operator` and a viewer `viewer` are always made)
    #[arg(
        long = "auth-agent",
        env = "BATON_DEV_AUTH_AGENTS",
        value_name = "ID",
        value_delimiter = ',',
        default_value = "agent-1"
    )]
    pub agents: Vec<String>,
}

/// Provisions the dev identities under `data` (or a temporary directory).
fn dev_auth(
    args: &DevAuthArgs,
    data: Option<&std::path::Path>,
) -> anyhow::Result<(crate::cmd::auth::Provisioned, Option<tempfile::TempDir>)> {
    use baton_jetstream::auth::Role;
    let (dir, temp) = match data {
        Some(d) => (d.join("auth"), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("baton-dev-auth-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut wanted = vec![
        (Role::Service, "baton".to_string()),
        (Role::Operator, "operator".to_string()),
        (Role::Viewer, "viewer".to_string()),
    ];
    wanted.extend(
        args.agents
            .iter()
            .map(|a| (Role::Agent, a.trim().to_string())),
    );
    let wanted: Vec<_> = wanted
        .into_iter()
        .filter(|(_, n)| !dir.join(format!("{n}.nk")).exists())
        .collect();
    Ok((crate::cmd::auth::provision(&dir, &wanted)?, temp))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Runs until ctrl-c.
pub async fn run(nats: &NatsArgs, args: &DevArgs) -> anyhow::Result<()> {
    let mut server = None;
    let mut nats = nats.clone();
    let mut auth = None;
    if args.auth.enabled {
        if nats.url.is_some() {
            anyhow::bail!("--auth starts its own nats-server: it cannot be used with --nats");
        }
        if let Some(dir) = &args.data {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --data {}", dir.display()))?;
        }
        let provisioned = dev_auth(&args.auth, args.data.as_deref())?;
        nats.nkey = provisioned.0.get("baton").map(|i| i.file.clone());
        auth = Some(provisioned);
    }
    let nats = &nats;
    let url = match &nats.url {
        Some(url) => url.clone(),
        None => {
            if let Some(dir) = &args.data {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create --data {}", dir.display()))?;
            }
            let port = port_is_free(args.port).then_some(args.port);
            if port.is_none() {
                eprintln!("Port {} is taken; using a free port instead.", args.port);
            }
            let s = NatsServer::start_with(ServerOptions {
                name: Some("baton-dev".into()),
                store_dir: args.data.clone(),
                port,
                monitoring: true,
                include: auth.as_ref().map(|a| a.0.config.clone()),
                ready_nkey: auth
                    .as_ref()
                    .and_then(|a| a.0.get("baton"))
                    .map(|i| (i.seed.clone(), baton_jetstream::auth::inbox_prefix(&i.name))),
                ..ServerOptions::default()
            })
            .await
            .context("cannot start nats-server")?;
            let url = s.url();
            server = Some(s);
            url
        }
    };
    let options = nats.options_for(&url, "baton-dev");
    let client = options.connect().await?;
    let js = jetstream::new(client.clone());
    let topology = args.topology.topology();
    baton_jetstream::ensure(&js, &topology).await?;

    let (trigger, shutdown) = shutdown::channel();
    let mut orch_config = baton_orchestrator::Config::new(options.clone());
    orch_config.topology = topology.clone();
    orch_config.http_addr = Some(([127, 0, 0, 1], 0).into());
    orch_config.instance = "dev".into();
    let orchestrator = baton_orchestrator::start(orch_config, shutdown.clone())
        .await
        .context("orchestrator failed to start")?;
    let mut det_config = baton_stall::Config::new(options.clone());
    det_config.topology = topology.clone();
    det_config.rules = crate::cmd::services::load_rules(args.rules.as_deref())?;
    det_config.watch.renotify = det_config.rules.defaults.renotify;
    det_config.http_addr = Some(([127, 0, 0, 1], 0).into());
    det_config.instance = "dev".into();
    let detector = baton_stall::start(det_config, shutdown.clone())
        .await
        .context("stall detector failed to start")?;

    let data = match (&server, &args.data) {
        (None, _) => "an existing server".to_string(),
        (Some(_), Some(dir)) => format!("data kept in {}", dir.display()),
        (Some(s), None) => format!("data in {} (removed on exit)", s.store_dir().display()),
    };
    let http = |a: Option<std::net::SocketAddr>| {
        a.map_or_else(|| "off".to_string(), |a| format!("http://{a}/metrics"))
    };
    eprintln!(
        "\nBaton dev is running.\n\
         \n  NATS           {url}   ({data})\
         \n  orchestrator   {}\
         \n  detector       {}\
         \n\nConnect agents and the CLI with --nats {url} (or BATON_NATS_URL={url}).\
         \nTry, in another terminal:\
         \n  baton --nats {url} status\
         \n  baton --nats {url} tasks\
         \n  baton --nats {url} alerts --follow\
         \n\nCtrl-C stops everything.\n",
        http(orchestrator.http_addr),
        http(detector.http_addr),
    );

    if let Some((provisioned, _)) = &auth {
        eprintln!(
            "Identities are enforced (server config {}); connect as one with --nkey FILE:",
            provisioned.config.display()
        );
        for i in &provisioned.identities {
            eprintln!(
                "  {:<9} {:<16} {}",
                i.role.as_str(),
                i.name,
                i.file.display()
            );
        }
        eprintln!(
            "Add an agent: baton auth --dir {} --agent NAME, then nats-server --signal reload={}\n",
            provisioned
                .config
                .parent()
                .map_or_else(String::new, |d| d.display().to_string()),
            server
                .as_ref()
                .and_then(NatsServer::pid)
                .unwrap_or_default(),
        );
    }

    if args.demo {
        let options = options.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::cmd::demo::run(&options).await {
                eprintln!("demo failed: {e:#}");
            }
        });
    }
    let mut orchestrator = Box::pin(orchestrator.wait());
    let mut detector = Box::pin(detector.wait());
    let failed = tokio::select! {
        _ = shutdown::signal() => None,
        result = &mut orchestrator => Some(result.map_err(anyhow::Error::from).context("orchestrator stopped")),
        result = &mut detector => Some(result.map_err(anyhow::Error::from).context("stall detector stopped")),
    };
    eprintln!("\nStopping ...");
    trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = (&mut orchestrator).await;
        let _ = (&mut detector).await;
    })
    .await;
    drop(client);
    if let Some(mut s) = server {
        s.stop();
    }
    eprintln!("Stopped.");
    match failed {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}
