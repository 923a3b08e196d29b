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
    pub auth: crate::cmd::auth::DevAuthArgs,
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Runs until ctrl-c.
pub async fn run(nats: &NatsArgs, args: &DevArgs) -> anyhow::Result<()> {
    let mut server = None;
    let auth = crate::cmd::auth::DevAuth::setup(&args.auth, nats, args.data.as_deref())?;
    let mut nats = nats.clone();
    if let Some(a) = &auth {
        nats.nkey = Some(a.service().file.clone());
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
                include: auth.as_ref().map(|a| a.provisioned.config.clone()),
                ready_nkey: auth.as_ref().map(crate::cmd::auth::DevAuth::ready_nkey),
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

    if let Some(a) = &auth {
        a.print(server.as_ref().and_then(NatsServer::pid));
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
