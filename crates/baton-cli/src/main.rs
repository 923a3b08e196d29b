#![allow(clippy::print_stdout, clippy::print_stderr)]
//! `baton`: the coordination layer's one binary.
//!
//! - `baton dev`: a local broker with the services, for trying Baton out.
//! - `baton orchestrator`, `baton stall-detector`: the services.
//! - operator commands: `tasks`, `task`, `alerts`, `context`, `emit`,
//!   `silence`, `status`, `rules`.

mod args;
mod dev;
mod services;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use args::NatsArgs;

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Coordination for multi-agent systems on NATS JetStream: single ownership, mandatory status signals, stall alerts, a shared decision record.",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    nats: NatsArgs,
    /// Log filter (e.g. info, baton=debug)
    #[arg(long, env = "BATON_LOG", global = true)]
    log: Option<String>,
    /// Log as JSON lines
    #[arg(long, env = "BATON_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local NATS server with the Baton services until ctrl-c
    Dev(dev::DevArgs),
    /// Run the orchestrator: derive task state and ownership from events
    Orchestrator(services::OrchestratorArgs),
}

fn init_logging(cli: &Cli, default: &str) {
    let filter = cli.log.clone().map(EnvFilter::new).unwrap_or_else(|| {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("{default},async_nats=warn")))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Dev(_) | Command::Orchestrator(_) => "info",
    };
    init_logging(&cli, default_log);
    // On two cores the broker needs the other one: a single-threaded
    // runtime measured faster than the multi-threaded one here.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Dev(args) => dev::run(&cli.nats, args).await,
            Command::Orchestrator(args) => services::orchestrator(&cli.nats, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
