//! `baton leases` (who holds what) and `baton lease <act>` (acquire, renew,
//! release, revoke by hand): artifact leases for operators and for shell
//! scripts acting as agents. Everything goes through the SDK, so the CLI
//! judges leases exactly as every other reader does.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use baton_agent::{Agent, AgentOptions, Lease, LeaseError, LeaseOptions, core::lease::LeaseMode};
use baton_core::{AgentId, TaskId, WorkflowId};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::{
    args::NatsArgs,
    cmd::{common::now, services::duration},
    output::{Color, Table, ago, paint, print_json},
};

#[derive(Debug, Clone, Args)]
pub struct LeasesArgs {
    /// Only this workflow's scope (default: every scope)
    #[arg(long, env = "BATON_WORKFLOW")]
    pub workflow: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub act: LeaseAct,
}

#[derive(Debug, Clone, Subcommand)]
pub enum LeaseAct {
    /// Take a lease (exit 2, naming the holder, when someone else holds it)
    Acquire {
        #[command(flatten)]
        target: Target,
        /// A shared (reader's) lease instead of an exclusive one
        #[arg(long)]
        shared: bool,
        /// How long the lease lives without a renewal
        #[arg(long, env = "BATON_LEASE_TTL", value_parser = duration, default_value = "15s")]
        ttl: Duration,
        /// The task the lease is taken for
        #[arg(long, env = "BATON_TASK")]
        task: Option<String>,
        /// Keep the lease, renewing it, until ctrl-c or SIGTERM, then release
        /// it (without: exit at once and let it lapse at its ttl unless
        /// renewed with `baton lease renew`)
        #[arg(long)]
        hold: bool,
        /// When refused, do not record this agent as waiting for it (by
        /// default it waits for one ttl: `baton leases` shows it, and a
        /// rule's max_hold reports a holder keeping waiters out)
        #[arg(long)]
        no_wait: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Renew a lease this agent holds
    Renew {
        #[command(flatten)]
        target: Target,
    },
    /// Release a lease this agent holds
    Release {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stores: report a write refused for a stale fencing token (the stall
    /// detector raises LEASE_STALE_WRITE); `--agent` is the store
    ReportStale {
        #[command(flatten)]
        target: Target,
        /// The agent whose write was refused, if known
        #[arg(long)]
        writer: Option<String>,
        /// The token the refused write carried
        #[arg(long)]
        token: u64,
        /// The highest token the store had seen for the artifact
        #[arg(long)]
        seen: u64,
    },
    /// Operators: take a lease away from its holder
    Revoke {
        #[command(flatten)]
        target: Target,
        /// The holder whose lease is revoked
        #[arg(long)]
        holder: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The artifact: a path or record key (`drafts/post.md`, `drafts/`)
    pub name: String,
    /// The acting agent (or operator)
    #[arg(long, env = "BATON_AGENT")]
    pub agent: String,
    /// The workflow scope (default: the global scope)
    #[arg(long, env = "BATON_WORKFLOW")]
    pub workflow: Option<String>,
}

impl Target {
    fn workflow(&self) -> anyhow::Result<Option<WorkflowId>> {
        self.workflow
            .as_deref()
            .map(WorkflowId::new)
            .transpose()
            .map_err(Into::into)
    }
}

async fn agent(nats: &NatsArgs, id: &str) -> anyhow::Result<Agent> {
    let mut opts = AgentOptions::new(id, nats.url());
    opts.nats = nats.options("baton-cli");
    Agent::connect(opts).await.context("connecting")
}

/// `baton leases`: every hold and its waiters, as `Agent::leases` reads
/// them (the roots materialised in KV, brought up to date from the stream).
pub async fn leases(nats: &NatsArgs, args: &LeasesArgs) -> anyhow::Result<()> {
    let workflow = args.workflow.as_deref().map(WorkflowId::new).transpose()?;
    let reader = agent(nats, "baton-cli").await?;
    let book = reader.leases(workflow.as_ref()).await?;
    let now = now();
    let holds = baton_core::lease::holds_view(&book, now);
    if args.json {
        print_json(&holds);
        return Ok(());
    }
    if holds.is_empty() {
        println!("no leases held");
        return Ok(());
    }
    let mut table = Table::new(&[
        "ARTIFACT", "SCOPE", "HOLDER", "MODE", "TOKEN", "SINCE", "EXPIRES", "WAITING",
    ]);
    for (artifact, h) in book
        .iter()
        .flat_map(|(a, hs)| hs.iter().map(move |h| (a, h)))
    {
        let expires = if h.expires_at() < now {
            paint(&format!("expired {}", ago(h.expires_at(), now)), Color::Red)
        } else {
            format!("in {}s", h.expires_at().since(now).as_secs())
        };
        table.row(vec![
            artifact.name.to_string(),
            artifact.scope.token().to_string(),
            h.agent.to_string(),
            h.mode.to_string(),
            h.token.to_string(),
            ago(h.since, now),
            expires,
            book.blocked_by(artifact, h, now)
                .map(|(_, w)| format!("{} ({}, since {})", w.agent, w.mode, ago(w.since, now)))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    table.print();
    Ok(())
}

#[derive(Serialize)]
struct GrantedJson {
    artifact: String,
    workflow: Option<String>,
    holder: String,
    mode: String,
    token: u64,
}

#[derive(Serialize)]
struct HeldJson {
    artifact: String,
    workflow: Option<String>,
    held_by: String,
    mode: String,
    since: String,
    expires_at: String,
    token: u64,
}

fn granted(lease: &Lease, holder: &str) -> GrantedJson {
    GrantedJson {
        artifact: lease.artifact().name.to_string(),
        workflow: lease.artifact().scope.workflow().map(ToString::to_string),
        holder: holder.to_string(),
        mode: lease.mode().to_string(),
        token: lease.token(),
    }
}

/// `baton lease <act>`.
pub async fn lease(nats: &NatsArgs, args: &LeaseArgs) -> anyhow::Result<ExitCode> {
    let refused = |e: &dyn std::fmt::Display| {
        eprintln!("refused: {e}");
        Ok(ExitCode::from(2))
    };
    match &args.act {
        LeaseAct::Acquire {
            target,
            shared,
            ttl,
            task,
            hold,
            no_wait,
            json,
        } => {
            let agent = agent(nats, &target.agent).await?;
            let options = LeaseOptions {
                workflow: target.workflow()?,
                ttl: *ttl,
                task: task.as_deref().map(TaskId::new).transpose()?,
                auto_renew: *hold,
                record_wait: !*no_wait,
            };
            let mode = if *shared {
                LeaseMode::Shared
            } else {
                LeaseMode::Exclusive
            };
            match agent.acquire_with(&target.name, mode, options).await {
                Ok(lease) => {
                    if *json {
                        print_json(&granted(&lease, &target.agent));
                    } else {
                        println!(
                            "{} lease on {} granted to {}: token {}",
                            lease.mode(),
                            lease.artifact(),
                            target.agent,
                            lease.token()
                        );
                    }
                    if *hold {
                        tokio::select! {
                            () = baton_service::shutdown::signal() => {
                                lease.release("baton lease acquire --hold stopped").await?;
                            }
                            () = lease.lost() => {
                                eprintln!("error: the lease on {} was lost", target.name);
                                agent.close().await;
                                return Ok(ExitCode::FAILURE);
                            }
                        }
                    } else {
                        lease.detach();
                    }
                    agent.close().await;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ LeaseError::Held { .. }) => {
                    if let (
                        true,
                        LeaseError::Held {
                            artifact,
                            workflow,
                            holder,
                            mode,
                            since,
                            expires_at,
                            token,
                        },
                    ) = (*json, &e)
                    {
                        print_json(&HeldJson {
                            artifact: artifact.clone(),
                            workflow: workflow.as_ref().map(ToString::to_string),
                            held_by: holder.to_string(),
                            mode: mode.to_string(),
                            since: since.to_rfc3339(),
                            expires_at: expires_at.to_rfc3339(),
                            token: *token,
                        });
                    }
                    refused(&e)
                }
                Err(e @ LeaseError::Invalid(_)) => refused(&e),
                Err(e) => Err(e.into()),
            }
        }
        LeaseAct::ReportStale {
            target,
            writer,
            token,
            seen,
        } => {
            let agent = agent(nats, &target.agent).await?;
            let writer = writer.as_deref().map(AgentId::new).transpose()?;
            let stale = baton_core::lease::StaleToken {
                artifact: target.name.clone(),
                token: *token,
                seen: *seen,
            };
            let result = agent
                .report_stale_write(target.workflow()?.as_ref(), writer.as_ref(), &stale)
                .await;
            agent.close().await;
            match result {
                Ok(seq) => {
                    println!("stale write on {} reported (seq {seq})", target.name);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ LeaseError::Invalid(_)) => refused(&e),
                Err(e) => Err(e.into()),
            }
        }
        LeaseAct::Renew { target } => {
            let agent = agent(nats, &target.agent).await?;
            let workflow = target.workflow()?;
            let result = match agent.resume_lease(&target.name, workflow.as_ref()).await {
                Ok(lease) => {
                    let renewed = lease.renew().await;
                    lease.detach();
                    renewed
                }
                Err(e) => Err(e),
            };
            agent.close().await;
            match result {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e @ LeaseError::Broker(_)) => Err(e.into()),
                Err(e) => refused(&e),
            }
        }
        LeaseAct::Release { target, reason } => {
            let agent = agent(nats, &target.agent).await?;
            let workflow = target.workflow()?;
            let result = match agent.resume_lease(&target.name, workflow.as_ref()).await {
                Ok(lease) => lease.release(reason).await.map(|_| ()),
                Err(e) => Err(e),
            };
            agent.close().await;
            match result {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e @ LeaseError::Broker(_)) => Err(e.into()),
                Err(e) => refused(&e),
            }
        }
        LeaseAct::Revoke {
            target,
            holder,
            reason,
        } => {
            let agent = agent(nats, &target.agent).await?;
            let workflow = target.workflow()?;
            let holder = AgentId::new(holder)?;
            let result = agent
                .revoke_lease(&target.name, workflow.as_ref(), &holder, reason)
                .await;
            agent.close().await;
            match result {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e @ LeaseError::Broker(_)) => Err(e.into()),
                Err(e) => refused(&e),
            }
        }
    }
}
