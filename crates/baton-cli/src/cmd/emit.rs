//! `baton emit <kind>`: publish an event by hand, so a shell script can act
//! as an agent. Ownership events go through the SDK (compare-and-set,
//! typed refusals); `--raw` publishes exactly what is asked, to show what
//! the orchestrator catches.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use baton_agent::{Agent, AgentOptions, ClaimError, CreateError, NewTask};
use baton_core::{
    AgentId, Event, EventBody, EventKind, HandoffTarget, StageName, TaskCreated, TaskId,
    TaskWindows, WorkflowId, subjects,
};
use baton_jetstream::{Retry, publish_durable_watched};
use clap::Args;
use serde::Serialize;

use crate::{args::NatsArgs, cmd::services::duration, output::print_json};

#[derive(Debug, Clone, Args)]
pub struct EmitArgs {
    /// Event kind: created, claimed, heartbeat, blocked, handoff_offered, handoff_accepted, handoff_rejected, completed, failed, released, revoked, cancelled
    pub kind: String,
    /// The task the event is about
    #[arg(long, env = "BATON_TASK")]
    pub task: String,
    /// The sending agent (or operator)
    #[arg(long, env = "BATON_AGENT")]
    pub agent: String,
    /// The workflow (required for `created`; otherwise read from the task)
    #[arg(long, env = "BATON_WORKFLOW")]
    pub workflow: Option<String>,
    /// Publish as given, without the SDK's checks (demonstrates what the orchestrator catches)
    #[arg(long)]
    pub raw: bool,
    /// With --raw: the epoch the sender claims to hold
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// The decision-record version the sender read [default: the record's version now, read as the SDKs do; 0 = none]
    #[arg(long, env = "BATON_CONTEXT_VERSION", value_name = "N")]
    pub context_version: Option<u64>,
    /// created: stage
    #[arg(long, help_heading = "For created")]
    pub stage: Option<String>,
    /// created: title
    #[arg(long, help_heading = "For created", default_value = "")]
    pub title: String,
    /// created: only this agent may claim
    #[arg(long, help_heading = "For created")]
    pub assignee: Option<String>,
    /// created: an artifact the task will write (repeatable); claiming it through the SDK leases each
    #[arg(long, help_heading = "For created", value_name = "NAME")]
    pub artifact: Vec<String>,
    /// created: must be claimed within
    #[arg(long, help_heading = "For created", value_parser = duration)]
    pub start_within: Option<Duration>,
    /// created: must end within
    #[arg(long, help_heading = "For created", value_parser = duration)]
    pub deadline_within: Option<Duration>,
    /// created: owner heartbeat lease
    #[arg(long, help_heading = "For created", value_parser = duration)]
    pub heartbeat_within: Option<Duration>,
    /// created: progress must advance within
    #[arg(long, help_heading = "For created", value_parser = duration)]
    pub progress_within: Option<Duration>,
    /// claimed: the lease committed to
    #[arg(long, help_heading = "For claimed", value_parser = duration, default_value = "30s")]
    pub lease: Duration,
    /// heartbeat: a note
    #[arg(long, help_heading = "For heartbeat", default_value = "")]
    pub note: String,
    /// heartbeat: output advanced
    #[arg(long, help_heading = "For heartbeat")]
    pub progress: bool,
    /// handoff_offered: recipient agent
    #[arg(
        long,
        help_heading = "For handoff_offered",
        conflicts_with = "to_stage"
    )]
    pub to_agent: Option<String>,
    /// handoff_offered: recipient stage
    #[arg(long, help_heading = "For handoff_offered")]
    pub to_stage: Option<String>,
    /// handoff_offered / completed: where the output is
    #[arg(
        long,
        help_heading = "For handoff_offered and completed",
        default_value = ""
    )]
    pub output: String,
    /// handoff_offered: must be accepted within
    #[arg(long, help_heading = "For handoff_offered", value_parser = duration)]
    pub accept_within: Option<Duration>,
    /// completed: summary
    #[arg(long, help_heading = "For completed", default_value = "")]
    pub summary: String,
    /// blocked / handoff_rejected / failed / released / revoked / cancelled: why
    #[arg(
        long,
        help_heading = "For blocked, handoff_rejected, failed, released, revoked, cancelled",
        default_value = ""
    )]
    pub reason: String,
    /// failed: the task may be claimed again
    #[arg(long, help_heading = "For failed")]
    pub retryable: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Emitted {
    task: String,
    kind: String,
    agent: String,
    seq: u64,
    epoch: Option<u64>,
}

impl EmitArgs {
    fn body(&self, kind: EventKind) -> anyhow::Result<EventBody> {
        Ok(match kind {
            EventKind::Created => EventBody::Created(TaskCreated {
                stage: self.stage.as_deref().map(StageName::new).transpose()?,
                title: self.title.clone(),
                assignee: self.assignee.as_deref().map(AgentId::new).transpose()?,
                windows: self.windows(),
                artifacts: self
                    .artifact
                    .iter()
                    .map(|a| baton_core::lease::ArtifactName::new(a))
                    .collect::<Result<_, _>>()?,
            }),
            EventKind::Claimed => EventBody::Claimed {
                heartbeat_within: Some(self.lease),
            },
            EventKind::Heartbeat => EventBody::Heartbeat {
                note: self.note.clone(),
                progress: self.progress,
            },
            EventKind::Blocked => EventBody::Blocked {
                reason: self.reason.clone(),
            },
            EventKind::HandoffOffered => EventBody::HandoffOffered {
                to: match (&self.to_agent, &self.to_stage) {
                    (Some(a), _) => HandoffTarget::Agent(AgentId::new(a)?),
                    (None, Some(s)) => HandoffTarget::Stage(StageName::new(s)?),
                    (None, None) => bail!("handoff_offered needs --to-agent or --to-stage"),
                },
                output_location: self.output.clone(),
                accept_within: self.accept_within,
            },
            EventKind::HandoffAccepted => EventBody::HandoffAccepted {
                heartbeat_within: None,
            },
            EventKind::HandoffRejected => EventBody::HandoffRejected {
                reason: self.reason.clone(),
            },
            EventKind::Completed => EventBody::Completed {
                output_location: self.output.clone(),
                summary: self.summary.clone(),
            },
            EventKind::Failed => EventBody::Failed {
                reason: self.reason.clone(),
                retryable: self.retryable,
            },
            EventKind::Released => EventBody::Released {
                reason: self.reason.clone(),
            },
            EventKind::Revoked => EventBody::Revoked {
                reason: self.reason.clone(),
            },
            EventKind::Cancelled => EventBody::Cancelled {
                reason: self.reason.clone(),
            },
        })
    }

    fn windows(&self) -> TaskWindows {
        TaskWindows {
            start_within: self.start_within,
            deadline_within: self.deadline_within,
            heartbeat_within: self.heartbeat_within,
            progress_within: self.progress_within,
        }
    }
}

/// Exit code 2 = refused by the protocol (claim lost, not the owner, ...).
pub async fn emit(nats: &NatsArgs, args: &EmitArgs) -> anyhow::Result<ExitCode> {
    // `canceled`, as the task status is spelled, works too.
    let kind_name = if args.kind.eq_ignore_ascii_case("canceled") {
        "cancelled"
    } else {
        args.kind.as_str()
    };
    let kind = EventKind::parse(kind_name).with_context(|| {
        format!(
            "unknown event kind {:?}: use one of {}",
            args.kind,
            EventKind::ALL.map(EventKind::as_str).join(", ")
        )
    })?;
    let task = TaskId::new(&args.task)?;
    let body = args.body(kind)?;
    let mut opts = AgentOptions::new(args.agent.clone(), nats.url());
    opts.nats = nats.options(&format!("baton-emit-{}", args.agent));
    opts.lease = args.lease;
    let agent = Agent::connect(opts).await?;
    let workflow = match (&args.workflow, kind) {
        (Some(w), _) => WorkflowId::new(w)?,
        (None, EventKind::Created) => bail!("created needs --workflow"),
        (None, _) => agent
            .task(&task)
            .await?
            .map(|t| t.workflow)
            .with_context(|| {
                format!("unknown task {task}: create it first (or pass --workflow with --raw)")
            })?,
    };
    // The version the sender read: as given, or the record's version now
    // (read as any SDK agent reads it before acting), so that a shell
    // script is not taken for an agent acting on an old record.
    let context_version = match args.context_version {
        Some(v) => v,
        None => {
            agent
                .context(&workflow)
                .read()
                .await
                .with_context(|| format!("reading the decision record of {workflow}"))?
                .version
        }
    };
    agent.assume_context_version(&workflow, context_version);
    let report = |seq: u64, epoch: Option<u64>| {
        let e = Emitted {
            task: task.to_string(),
            kind: kind.as_str().into(),
            agent: args.agent.clone(),
            seq,
            epoch,
        };
        if args.json {
            print_json(&e);
        } else {
            let epoch = epoch.map(|e| format!(", epoch {e}")).unwrap_or_default();
            println!(
                "Stored {} for task {} from {} at seq {}{epoch}.",
                e.kind, e.task, e.agent, e.seq
            );
        }
    };
    if args.raw {
        let event = Event::new(
            nuid::next().to_string(),
            task.clone(),
            workflow,
            AgentId::new(&args.agent)?,
            body,
        )
        .with_epoch(args.epoch)
        .with_context_version(context_version);
        let js = async_nats::jetstream::new(agent.client().clone());
        // Watched: a publish the server's permissions refuse is an error at
        // once, not after the retry budget.
        let ack = publish_durable_watched(
            &js,
            Some(agent.denials()),
            &subjects::event(&event.task, &event.agent),
            event.encode_to_vec().into(),
            &event.event_id,
            None,
            Retry::default(),
        )
        .await?;
        report(ack.sequence, Some(args.epoch));
        return Ok(ExitCode::SUCCESS);
    }
    let refused = |e: &dyn std::fmt::Display| {
        eprintln!("refused: {e}");
        Ok(ExitCode::from(2))
    };
    let seq_epoch = match body {
        EventBody::Created(c) => {
            let new = NewTask {
                task: task.clone(),
                workflow,
                stage: c.stage,
                title: c.title,
                assignee: c.assignee,
                windows: c.windows,
                artifacts: c.artifacts,
            };
            match agent.create_task(new).await {
                Ok(seq) => (seq, None),
                Err(e @ CreateError::Exists { .. }) => return refused(&e),
                Err(e) => return Err(e.into()),
            }
        }
        EventBody::Claimed { .. } => match agent.claim_with_lease(&task, args.lease).await {
            Ok(owned) => {
                let epoch = owned.epoch();
                owned.detach();
                (0, Some(epoch))
            }
            Err(
                e @ (ClaimError::Lost { .. }
                | ClaimError::AlreadyYours { .. }
                | ClaimError::NotAssignee { .. }
                | ClaimError::Ended { .. }
                | ClaimError::UnknownTask { .. }),
            ) => return refused(&e),
            Err(e) => return Err(e.into()),
        },
        EventBody::HandoffAccepted { .. } => match agent.accept_handoff(&task).await {
            Ok(owned) => {
                let epoch = owned.epoch();
                owned.detach();
                (0, Some(epoch))
            }
            Err(e @ baton_agent::HandoffError::Broker(_)) => return Err(e.into()),
            Err(e) => return refused(&e),
        },
        EventBody::HandoffRejected { reason } => match agent.reject_handoff(&task, &reason).await {
            Ok(()) => (0, None),
            Err(e @ baton_agent::HandoffError::Broker(_)) => return Err(e.into()),
            Err(e) => return refused(&e),
        },
        EventBody::Revoked { reason } => match agent.revoke(&task, &reason).await {
            Ok(seq) => (seq, None),
            Err(e @ ClaimError::Broker(_)) => return Err(e.into()),
            Err(e) => return refused(&e),
        },
        EventBody::Cancelled { reason } => match agent.cancel(&task, &reason).await {
            Ok(seq) => (seq, None),
            Err(e @ ClaimError::Broker(_)) => return Err(e.into()),
            Err(e) => return refused(&e),
        },
        body => {
            let owned = match agent.resume_detached(&task).await {
                Ok(o) => o,
                Err(e @ ClaimError::Broker(_)) => return Err(e.into()),
                Err(e) => return refused(&owner_only(&task, kind, &e)),
            };
            let epoch = Some(owned.epoch());
            let result = match body {
                EventBody::Heartbeat { note, progress } => {
                    owned.heartbeat(&note, progress).await.map(|()| 0)
                }
                EventBody::Blocked { reason } => owned.block(&reason).await.map(|()| 0),
                EventBody::HandoffOffered {
                    to,
                    output_location,
                    accept_within,
                } => owned
                    .offer(to, &output_location, accept_within)
                    .await
                    .map(|o| o.seq)
                    .map_err(|e| e.error),
                EventBody::Completed {
                    output_location,
                    summary,
                } => owned
                    .complete(&output_location, &summary)
                    .await
                    .map_err(|e| e.error),
                EventBody::Failed { reason, retryable } => {
                    owned.fail(&reason, retryable).await.map_err(|e| e.error)
                }
                EventBody::Released { reason } => owned.release(&reason).await.map_err(|e| e.error),
                _ => unreachable!("handled above"),
            };
            match result {
                Ok(seq) => (seq, epoch),
                Err(e @ baton_agent::OwnershipError::Broker(_)) => return Err(e.into()),
                Err(e) => return refused(&e),
            }
        }
    };
    // Acts whose SDK call does not return the sequence: look it up.
    let seq = match seq_epoch.0 {
        0 => agent.task(&task).await?.map_or(0, |t| t.last_seq()),
        s => s,
    };
    report(seq, seq_epoch.1);
    agent.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Why an owner-only act (heartbeat, block, offer, complete, fail, release)
/// was refused before publishing, in terms of that act and the rule.
fn owner_only(task: &TaskId, kind: EventKind, e: &ClaimError) -> String {
    match e {
        ClaimError::Lost { owner, epoch, .. } => format!(
            "{kind} for task {task} refused: only the owner may send it, and the owner is {owner} (epoch {epoch}); use --raw to send it anyway"
        ),
        ClaimError::NotOwned { .. } => format!(
            "{kind} for task {task} refused: only the owner may send it, and nobody owns the task (claim it first)"
        ),
        ClaimError::Ended { status, .. } => format!(
            "{kind} for task {task} refused: the task is already {status}, and nothing may follow its end"
        ),
        other => format!("{kind} for task {task} refused: {other}"),
    }
}
