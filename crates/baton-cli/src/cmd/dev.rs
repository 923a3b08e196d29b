//! `baton dev`: everything needed to try Baton on one machine, in one
//! process tree: a local nats-server with JetStream (or a local 3-node
//! JetStream cluster with `--cluster 3`, or an existing server via
//! `--nats`), the streams and buckets, and the services. Stops everything it
//! started on ctrl-c / SIGTERM.

use std::{net::TcpListener, path::PathBuf, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream;
use baton_nats_server::{ClusterOptions, NatsCluster, NatsServer, ServerOptions};
use baton_service::shutdown;
use clap::{ArgMatches, Args, builder::TypedValueParser as _, parser::ValueSource};

use crate::{args::NatsArgs, cmd::services::TopologyArgs};

/// `baton dev` flags.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Use this existing NATS server instead of starting one. Only this flag (or
    /// BATON_DEV_NATS_URL) does that: BATON_NATS_URL, which the banner suggests
    /// exporting for the other commands, is ignored here [default: start a local server]
    // Same id as the global `--nats`, so that this one replaces it for
    // `baton dev` (its own help and env var); see `keep_own_nats`.
    #[arg(id = "url", long = "nats", env = DEV_NATS_ENV, value_name = "URL")]
    pub nats: Option<String>,
    /// Start a local JetStream cluster of N nodes (1, 3 or 5) instead of one
    /// server; streams and buckets then keep 3 replicas
    #[arg(long, env = "BATON_DEV_CLUSTER", value_name = "N", default_value_t = 1,
          value_parser = clap::builder::PossibleValuesParser::new(["1", "3", "5"])
              .map(|s| s.parse::<u8>().unwrap_or(1)))]
    pub cluster: u8,
    /// Keep the server's JetStream data in DIR (a cluster: DIR/n1, DIR/n2, ...) [default: a temporary directory, removed on exit]
    #[arg(long, env = "BATON_DEV_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Client port for the local server (a cluster: its first node; the others get free ports); a free one is used if it is taken
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
    /// Serve the web console here (a free port when this one is taken; `off`: no console)
    #[arg(long, env = "BATON_DEV_CONSOLE", value_name = "ADDR", default_value = baton_console::DEFAULT_LISTEN)]
    pub console: String,
}

/// `baton dev`'s own env var for `--nats`.
const DEV_NATS_ENV: &str = "BATON_DEV_NATS_URL";

impl DevArgs {
    /// Drops a `--nats` value that came from `BATON_NATS_URL`. clap hands a
    /// global flag's value down to a subcommand's argument of the same id,
    /// so an exported `BATON_NATS_URL` shows up here as if it were ours;
    /// only the command line and `BATON_DEV_NATS_URL` count for `baton dev`.
    pub fn keep_own_nats(&mut self, matches: Option<&ArgMatches>) {
        let source = matches.and_then(|m| m.value_source("url"));
        let own = match source {
            Some(ValueSource::CommandLine) => true,
            // Ours wins over the global one when both are set.
            Some(ValueSource::EnvVariable) => std::env::var_os(DEV_NATS_ENV).is_some(),
            _ => false,
        };
        if !own {
            self.nats = None;
        }
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// What `baton dev` started (stopped on drop). One per run: size does not
/// matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Local {
    Server(NatsServer),
    Cluster(NatsCluster),
}

impl Local {
    async fn start(
        args: &DevArgs,
        auth: Option<&crate::cmd::auth::DevAuth>,
    ) -> anyhow::Result<Local> {
        if let Some(dir) = &args.data {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --data {}", dir.display()))?;
        }
        let port = (args.port != 0 && port_is_free(args.port)).then_some(args.port);
        if port.is_none() && args.port != 0 {
            eprintln!("Port {} is taken; using a free port instead.", args.port);
        }
        if args.cluster > 1 {
            if auth.is_some() {
                anyhow::bail!(
                    "--auth with --cluster is not supported yet: use --auth on one server, or a cluster without auth"
                );
            }
            let cluster = NatsCluster::start_with(ClusterOptions {
                size: usize::from(args.cluster),
                // Stable names: a kept --data dir knows its peers by name.
                name: Some("baton-dev".into()),
                store_root: args.data.clone(),
                first_port: port,
                monitoring: true,
            })
            .await
            .context("cannot start the nats-server cluster")?;
            return Ok(Local::Cluster(cluster));
        }
        let server = NatsServer::start_with(ServerOptions {
            name: Some("baton-dev".into()),
            store_dir: args.data.clone(),
            port,
            monitoring: true,
            include: auth.map(|a| a.provisioned.config.clone()),
            ready_nkey: auth.map(crate::cmd::auth::DevAuth::ready_nkey),
            ..ServerOptions::default()
        })
        .await
        .context("cannot start nats-server")?;
        Ok(Local::Server(server))
    }

    fn url(&self) -> String {
        match self {
            Local::Server(s) => s.url(),
            Local::Cluster(c) => c.url(),
        }
    }

    fn describe(&self, data: Option<&PathBuf>) -> String {
        match (self, data) {
            (Local::Server(_), Some(dir)) => format!("one server; data kept in {}", dir.display()),
            (Local::Server(s), None) => format!(
                "one server; data in {}, removed on exit",
                s.store_dir().display()
            ),
            (Local::Cluster(c), Some(dir)) => format!(
                "a {}-node JetStream cluster; data kept in {}/n1 ...",
                c.len(),
                dir.display()
            ),
            (Local::Cluster(c), None) => format!(
                "a {}-node JetStream cluster; data in temporary directories, removed on exit",
                c.len()
            ),
        }
    }

    fn stop(&mut self) {
        match self {
            Local::Server(s) => s.stop(),
            Local::Cluster(c) => c.stop(),
        }
    }
}

/// Runs until ctrl-c / SIGTERM.
pub async fn run(nats: &NatsArgs, args: &DevArgs) -> anyhow::Result<()> {
    let mut local = None;
    let auth = crate::cmd::auth::DevAuth::setup(&args.auth, nats, args.data.as_deref())?;
    let mut nats = nats.clone();
    if let Some(a) = &auth {
        nats.nkey = Some(a.service().file.clone());
    }
    let nats = &nats;
    let url = match &args.nats {
        Some(url) => url.clone(),
        None => {
            let started = Local::start(args, auth.as_ref()).await?;
            let url = started.url();
            local = Some(started);
            url
        }
    };
    let options = nats.options_for(&url, "baton-dev");
    let client = options.connect().await?;
    let js = jetstream::new(client.clone());
    let mut topology = args.topology.topology();
    if args.cluster > 1 && args.nats.is_none() {
        topology.replicas = topology.replicas.max(3);
    }
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

    let console = crate::cmd::console::start_for_dev(
        &args.console,
        nats,
        &url,
        auth.as_ref(),
        shutdown.clone(),
    )
    .await?;

    let data = match &local {
        None => "an existing server".to_string(),
        Some(l) => l.describe(args.data.as_ref()),
    };
    let http = |a: Option<std::net::SocketAddr>| {
        a.map_or_else(|| "off".to_string(), |a| format!("http://{a}/metrics"))
    };
    // The command that works as printed: scripts/dev passes its wrapper
    // (scripts/baton); otherwise this very binary.
    let cli = std::env::var("BATON_DEV_CLI").unwrap_or_else(|_| {
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "baton".into())
    });
    eprintln!(
        "\nBaton dev is running.\n\
         \n  NATS           {url}   ({data})\
         \n  orchestrator   {}\
         \n  detector       {}\
         \n  console        {}\
         \n\nConnect agents and the CLI with --nats {url} (or BATON_NATS_URL={url}).\
         \nTry, in another terminal:\
         \n  {cli} --nats {url} status\
         \n  {cli} --nats {url} tasks\
         \n  {cli} --nats {url} alerts --follow\
         \n\nCtrl-C stops everything.\n",
        http(orchestrator.http_addr),
        http(detector.http_addr),
        console
            .as_ref()
            .map_or_else(|| "off".to_string(), baton_console::Running::url),
    );

    if let Some(a) = &auth {
        a.print(match &local {
            Some(Local::Server(s)) => s.pid(),
            _ => None,
        });
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
    // Liveness records of cleanly stopped services are deleted, so status
    // does not list them as down (matters with an existing server).
    baton_service::liveness::stopped(Duration::from_secs(3)).await;
    drop(client);
    if let Some(mut l) = local {
        l.stop();
    }
    eprintln!("Stopped.");
    match failed {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}
