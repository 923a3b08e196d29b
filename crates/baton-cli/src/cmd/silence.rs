//! `baton silence`: mute alerts by task, kind and/or agent for a while.
//! Silences live in KV `baton-silences`; the stall detector honours them.
//! The logic is `baton_jetstream::silences`, shared with the web console.

use std::time::Duration;

use anyhow::bail;
use baton_core::stall::Silence;
use baton_jetstream::silences::{self, NewSilence, SilenceError};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::{
    args::NatsArgs,
    cmd::{
        common::{connect, now},
        services::duration,
    },
    output::{Table, ago, print_json},
};

/// A silence's length: a duration of more than zero (a zero-length
/// silence would mute nothing and look as if it did).
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err("a silence must last longer than 0s (e.g. --for 30m)".into());
    }
    Ok(d)
}

#[derive(Debug, Clone, Args)]
pub struct SilenceArgs {
    #[command(subcommand)]
    pub action: SilenceAction,
    /// Print JSON
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SilenceAction {
    /// Mute alerts matching every given field
    Add {
        /// Mutes alerts about this task
        #[arg(long)]
        task: Option<String>,
        /// Alert kind, e.g. heartbeat_missed
        #[arg(long)]
        kind: Option<String>,
        /// Mutes alerts naming this agent
        #[arg(long)]
        agent: Option<String>,
        /// How long (more than zero), e.g. 30m, 2h
        #[arg(long = "for", env = "BATON_SILENCE_FOR", value_parser = positive_duration, default_value = "1h")]
        duration: Duration,
        /// Why (shown by `baton silence list`)
        #[arg(long, env = "BATON_SILENCE_REASON", default_value = "")]
        reason: String,
        /// Who silenced
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// List silences (active ones; --all includes ended ones)
    List {
        /// Include silences that have ended
        #[arg(long)]
        all: bool,
    },
    /// End a silence now
    Expire {
        /// The silence's id (from `baton silence list`)
        id: String,
    },
}

#[derive(Serialize)]
struct SilenceJson {
    id: String,
    task: Option<String>,
    kind: Option<String>,
    agent: Option<String>,
    until: String,
    active: bool,
    created_by: String,
    reason: String,
}

pub async fn silence(nats: &NatsArgs, args: &SilenceArgs) -> anyhow::Result<()> {
    let conn = connect(nats).await?;
    conn.require_baton().await?;
    let now = now();
    match &args.action {
        SilenceAction::Add {
            task,
            kind,
            agent,
            duration,
            reason,
            by,
        } => {
            let s = NewSilence {
                task: task.clone(),
                kind: kind.clone(),
                agent: agent.clone(),
                duration: *duration,
                reason: reason.clone(),
                by: by.clone(),
            }
            .build(now)
            .map_err(|e| match e {
                SilenceError::NoMatcher => anyhow::anyhow!(
                    "a silence needs at least one of --task, --kind, --agent (muting everything is not allowed)"
                ),
                e => e.into(),
            })?;
            silences::add(&conn.js, &s).await?;
            if args.json {
                print_json(&to_json(&s, now));
            } else {
                println!("Silence {} active until {}.", s.id, s.until);
            }
        }
        SilenceAction::List { all } => {
            let mut list = silences::list(&conn.js).await?;
            list.retain(|s| *all || s.until > now);
            if args.json {
                print_json(&list.iter().map(|s| to_json(s, now)).collect::<Vec<_>>());
            } else if list.is_empty() {
                println!("No active silences.");
            } else {
                let mut table =
                    Table::new(&["ID", "TASK", "KIND", "AGENT", "UNTIL", "BY", "REASON"]);
                for s in &list {
                    table.row(vec![
                        s.id.clone(),
                        s.task.as_ref().map_or("*".into(), ToString::to_string),
                        s.kind.map_or("*".into(), |k| k.to_string()),
                        s.agent.as_ref().map_or("*".into(), ToString::to_string),
                        if s.until > now {
                            format!(
                                "{} (in {})",
                                s.until,
                                baton_core::time::human_duration(s.until.since(now))
                            )
                        } else {
                            format!("ended {}", ago(s.until, now))
                        },
                        s.created_by.clone(),
                        s.reason.clone(),
                    ]);
                }
                table.print();
            }
        }
        SilenceAction::Expire { id } => {
            match silences::expire(&conn.js, id, now).await {
                Err(SilenceError::NotFound(_)) => {
                    bail!("no silence {id:?} (see `baton silence list --all`)")
                }
                other => other?,
            };
            if args.json {
                print_json(&serde_json::json!({ "id": id, "expired": true }));
            } else {
                println!("Silence {id} ended.");
            }
        }
    }
    Ok(())
}

fn to_json(s: &Silence, now: baton_core::Time) -> SilenceJson {
    SilenceJson {
        id: s.id.clone(),
        task: s.task.as_ref().map(ToString::to_string),
        kind: s.kind.map(|k| k.to_string()),
        agent: s.agent.as_ref().map(ToString::to_string),
        until: s.until.to_rfc3339(),
        active: s.until > now,
        created_by: s.created_by.clone(),
        reason: s.reason.clone(),
    }
}
