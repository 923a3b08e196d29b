#![allow(clippy::print_stdout, clippy::print_stderr)]
//! `baton`: the coordination layer's one binary.
//!
//! - `baton dev`: a local broker with the services, for trying Baton out.
//! - `baton orchestrator`, `baton stall-detector`: the services.
//! - `baton notify`: the alert router (Alertmanager, webhooks, watchdog).
//! - operator commands: `tasks`, `task`, `alerts`, `context`, `emit`,
//!   `silence`, `status`, `rules`.
//! - `baton auth`: NATS identities and the server config enforcing them.

mod args;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use args::NatsArgs;

// The services allocate per event (decoded messages, ids that do not fit
// inline): mimalloc made orchestrator ingest ~25% faster than the system
// allocator here (`cargo bench -p baton-orchestrator --bench ingest`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[arg(long, env = "BATON_LOG", global = true, help_heading = "Logging")]
    log: Option<String>,
    /// Log as JSON lines
    #[arg(long, env = "BATON_LOG_JSON", global = true, help_heading = "Logging")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run; variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local NATS server with the Baton services until ctrl-c
    Dev(cmd::dev::DevArgs),
    /// Run the orchestrator: derive task state and ownership from events
    Orchestrator(cmd::services::OrchestratorArgs),
    /// Run the stall detector: alert on expected events that never arrive
    StallDetector(cmd::services::DetectorArgs),
    /// Run the alert router: deliver alerts to Alertmanager and webhooks, and send a watchdog while Baton is healthy
    Notify(cmd::notify::NotifyArgs),
    /// Run the demo agents against running Baton services (as `baton dev --demo` does)
    Demo,
    /// List tasks
    Tasks(cmd::tasks::TasksArgs),
    /// Show one task: state, timeline, firing alerts
    Task(cmd::tasks::TaskArgs),
    /// Show alerts, firing and resolved (--follow for live)
    Alerts(cmd::alerts::AlertsArgs),
    /// Who holds which artifact lease (files, records), since when, until when
    Leases(cmd::leases::LeasesArgs),
    /// Acquire, renew, release or revoke an artifact lease by hand
    Lease(cmd::leases::LeaseArgs),
    /// Show or append to a workflow's decision record
    Context(cmd::context::ContextArgs),
    /// Publish an event by hand (a shell script as an agent)
    Emit(cmd::emit::EmitArgs),
    /// Mute alerts for a while
    Silence(cmd::silence::SilenceArgs),
    /// Is Baton healthy? Services, streams, consumers, task counts, firing alerts (exit 0 healthy, 1 degraded, 2 down)
    Status(cmd::status::StatusArgs),
    /// Check stall rules, or backtest them on recorded history
    Rules(cmd::rules::RulesArgs),
    /// Dead letters: list, show (headers, hex), re-drive to the events stream
    Dlq(cmd::dlq::DlqArgs),
    /// Serve the web console: pipeline, alerts, task timelines, health (live)
    Console(cmd::console::ConsoleArgs),
    /// Provision NATS identities (agent, operator, service, viewer) and the server config that enforces them
    #[command(long_about = cmd::auth::LONG_ABOUT)]
    Auth(cmd::auth::AuthArgs),
    /// Serve MCP on stdio for one agent: LLM hosts coordinate through Baton with tools
    Mcp(cmd::mcp::McpArgs),
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
    output::exit_quietly_on_broken_pipe();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Dev(args) = &mut cli.command {
        args.keep_own_nats(matches.subcommand_matches("dev"));
    }
    let default_log = match cli.command {
        Command::Dev(_)
        | Command::Orchestrator(_)
        | Command::StallDetector(_)
        | Command::Notify(_)
        | Command::Console(_) => "info",
        _ => "warn",
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
        let nats = &cli.nats;
        let done = match &cli.command {
            Command::Dev(args) => cmd::dev::run(nats, args).await,
            Command::Orchestrator(args) => cmd::services::orchestrator(nats, args).await,
            Command::StallDetector(args) => cmd::services::detector(nats, args).await,
            Command::Notify(args) => cmd::notify::notify(nats, args).await,
            Command::Demo => cmd::demo::run(&nats.options("baton-demo")).await,
            Command::Tasks(args) => cmd::tasks::tasks(nats, args).await,
            Command::Task(args) => cmd::tasks::task(nats, args).await,
            Command::Alerts(args) => cmd::alerts::alerts(nats, args).await,
            Command::Context(args) => cmd::context::context(nats, args).await,
            Command::Leases(args) => cmd::leases::leases(nats, args).await,
            Command::Lease(args) => return cmd::leases::lease(nats, args).await,
            Command::Emit(args) => return cmd::emit::emit(nats, args).await,
            Command::Silence(args) => cmd::silence::silence(nats, args).await,
            Command::Status(args) => return Ok(cmd::status::status(nats, args).await),
            Command::Rules(args) => cmd::rules::rules(nats, args).await,
            Command::Dlq(args) => return cmd::dlq::dlq(nats, args).await,
            Command::Console(args) => cmd::console::console(nats, args).await,
            Command::Auth(args) => cmd::auth::auth(args),
            Command::Mcp(args) => cmd::mcp::run(nats, args).await,
        };
        done.map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
