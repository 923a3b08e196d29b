//! `baton context <workflow>`: the decision record, and recording to it.

use baton_agent::{Agent, AgentOptions};
use baton_core::WorkflowId;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::{
    args::NatsArgs,
    output::{Table, print_json},
};

#[derive(Debug, Clone, Args)]
pub struct ContextArgs {
    /// The workflow
    pub workflow: String,
    #[command(subcommand)]
    pub action: Option<ContextAction>,
    /// Print JSON
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ContextAction {
    /// Append a decision (refused if the record changed since it was read here)
    Record {
        /// Who decided (an agent id)
        #[arg(long = "as", value_name = "AGENT")]
        author: String,
        /// One line: what was decided
        #[arg(long)]
        summary: String,
        /// The full decision
        #[arg(long, default_value = "")]
        body: String,
        /// Version of an earlier decision this one replaces
        #[arg(long)]
        supersedes: Option<u64>,
    },
}

#[derive(Serialize)]
struct EntryJson {
    version: u64,
    stored_at: String,
    author: String,
    summary: String,
    body: String,
    supersedes: Option<u64>,
}

pub async fn context(nats: &NatsArgs, args: &ContextArgs) -> anyhow::Result<()> {
    let workflow = WorkflowId::new(&args.workflow)?;
    let reader = match &args.action {
        Some(ContextAction::Record { author, .. }) => author.clone(),
        None => "baton-cli".to_string(),
    };
    let mut opts = AgentOptions::new(reader, nats.url());
    opts.nats = nats.options("baton-cli");
    let agent = Agent::connect(opts).await?;
    let record = agent.context(&workflow);
    let snapshot = record.read().await?;
    if let Some(ContextAction::Record {
        summary,
        body,
        supersedes,
        ..
    }) = &args.action
    {
        let version = record.record(summary, body, *supersedes).await?;
        if args.json {
            print_json(
                &serde_json::json!({ "workflow": workflow.to_string(), "version": version }),
            );
        } else {
            println!("Recorded decision {version} in {workflow}.");
        }
        return Ok(());
    }
    if args.json {
        let entries: Vec<EntryJson> = snapshot
            .decisions
            .iter()
            .map(|d| EntryJson {
                version: d.version,
                stored_at: d.stored_at.to_rfc3339(),
                author: d.entry.author.to_string(),
                summary: d.entry.summary.clone(),
                body: d.entry.body.clone(),
                supersedes: (d.entry.supersedes > 0).then_some(d.entry.supersedes),
            })
            .collect();
        print_json(
            &serde_json::json!({ "workflow": workflow.to_string(), "version": snapshot.version, "entries": entries }),
        );
        return Ok(());
    }
    if snapshot.decisions.is_empty() {
        println!("No decisions recorded for {workflow} yet.");
        return Ok(());
    }
    let mut table = Table::new(&["VERSION", "TIME", "AUTHOR", "SUPERSEDES", "SUMMARY"]);
    for d in &snapshot.decisions {
        table.row(vec![
            d.version.to_string(),
            d.stored_at.to_rfc3339(),
            d.entry.author.to_string(),
            if d.entry.supersedes > 0 {
                d.entry.supersedes.to_string()
            } else {
                "-".into()
            },
            d.entry.summary.clone(),
        ]);
    }
    table.print();
    println!(
        "\nversion {} (agents carry this as context_version after reading)",
        snapshot.version
    );
    Ok(())
}
