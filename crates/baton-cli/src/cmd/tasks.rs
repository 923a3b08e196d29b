//! `baton tasks` and `baton task <id>`.

use anyhow::bail;
use baton_core::{TaskId, TaskStatus};
use baton_proto::v1 as pb;
use clap::Args;
use serde::Serialize;

use crate::{
    args::NatsArgs,
    cmd::common::{connect, now},
    output::{Color, Table, TaskJson, ago, is_tty, paint, print_json},
};

/// `baton tasks` filters.
#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// Only this status (submitted, working, input_required, handoff_pending, completed, failed, canceled; `cancelled` as the event is spelled works too)
    #[arg(long, env = "BATON_TASKS_STATUS")]
    pub status: Option<String>,
    /// Only tasks owned by this agent
    #[arg(long, env = "BATON_TASKS_OWNER")]
    pub owner: Option<String>,
    /// Only tasks of this workflow
    #[arg(long, env = "BATON_TASKS_WORKFLOW")]
    pub workflow: Option<String>,
    /// Only tasks in this stage
    #[arg(long, env = "BATON_TASKS_STAGE")]
    pub stage: Option<String>,
    /// Only tasks with a firing stall alert
    #[arg(long)]
    pub stalled: bool,
    /// Also list ended tasks (completed, failed, canceled) when no --status is given
    #[arg(long)]
    pub all: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// A status as `baton tasks` shows it; the event's spelling `cancelled`
/// is accepted for `canceled`.
fn parse_status(s: &str) -> Option<TaskStatus> {
    if s.eq_ignore_ascii_case("cancelled") {
        return Some(TaskStatus::Canceled);
    }
    TaskStatus::parse(s)
}

pub async fn tasks(nats: &NatsArgs, args: &TasksArgs) -> anyhow::Result<()> {
    let status = match &args.status {
        Some(s) => match parse_status(s) {
            Some(s) => Some(s),
            None => bail!(
                "unknown status {s:?}: use one of {}",
                TaskStatus::ALL.map(TaskStatus::as_str).join(", ")
            ),
        },
        None => None,
    };
    let conn = connect(nats).await?;
    conn.require_baton().await?;
    let (mut all, live) = conn.all_tasks().await?;
    let firing = conn.firing_by_task().await?;
    all.retain(|t| {
        status.map_or(args.all || !t.status.is_terminal(), |s| t.status == s)
            && args
                .owner
                .as_ref()
                .is_none_or(|o| t.owner.as_ref().is_some_and(|x| x.as_str() == o))
            && args
                .workflow
                .as_ref()
                .is_none_or(|w| t.workflow.as_str() == w)
            && args
                .stage
                .as_ref()
                .is_none_or(|s| t.stage.as_ref().is_some_and(|x| x.as_str() == s))
            && (!args.stalled || firing.contains_key(t.id.as_str()))
    });
    all.sort_by(|a, b| a.id.cmp(&b.id));
    if args.json {
        let out: Vec<TaskJson> = all
            .iter()
            .map(|t| {
                let ids = firing
                    .get(t.id.as_str())
                    .map(|v| v.iter().map(|a| a.id.clone()).collect())
                    .unwrap_or_default();
                TaskJson::from_task(t, ids)
            })
            .collect();
        print_json(&out);
        return Ok(());
    }
    if !live {
        eprintln!(
            "{}",
            paint(
                "(no orchestrator answered: showing KV baton-tasks, which may lag)",
                Color::Dim
            )
        );
    }
    if all.is_empty() {
        println!("No tasks match.");
        return Ok(());
    }
    let now = now();
    let mut table = Table::new(&[
        "TASK",
        "STATUS",
        "OWNER",
        "EPOCH",
        "STAGE",
        "WORKFLOW",
        "LAST EVENT",
        "ALERTS",
    ]);
    for t in &all {
        let alerts = firing
            .get(t.id.as_str())
            .map(|v| {
                v.iter()
                    .map(|a| a.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let status_color = match t.status {
            TaskStatus::Completed => Some(Color::Green),
            TaskStatus::Failed | TaskStatus::Canceled => Some(Color::Dim),
            TaskStatus::InputRequired | TaskStatus::HandoffPending => Some(Color::Yellow),
            _ => None,
        };
        table.row_colored(vec![
            (t.id.to_string(), None),
            (t.status.to_string(), status_color),
            (
                t.owner.as_ref().map_or("-".into(), ToString::to_string),
                None,
            ),
            (t.epoch.to_string(), None),
            (
                t.stage.as_ref().map_or("-".into(), ToString::to_string),
                None,
            ),
            (t.workflow.to_string(), None),
            (
                format!(
                    "{} by {}, {}",
                    t.last_event.kind,
                    t.last_event.agent,
                    ago(t.last_event.at, now)
                ),
                None,
            ),
            (alerts.clone(), (!alerts.is_empty()).then_some(Color::Red)),
        ]);
    }
    table.print();
    Ok(())
}

/// `baton task <id>`.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    /// The task id
    pub task: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct TimelineRow {
    seq: u64,
    stored_at: String,
    agent_id: String,
    kind: String,
    event_epoch: u64,
    owner_after: Option<String>,
    epoch_after: u64,
    status_after: String,
    refused: Option<String>,
    detail: String,
}

#[derive(Serialize)]
struct TaskDetail {
    task: Option<TaskJson>,
    timeline: Vec<TimelineRow>,
    firing_alerts: Vec<crate::output::AlertJson>,
}

pub async fn task(nats: &NatsArgs, args: &TaskArgs) -> anyhow::Result<()> {
    let id = TaskId::new(&args.task)?;
    let conn = connect(nats).await?;
    conn.require_baton().await?;
    let state = conn.task(&id).await?;
    let timeline = timeline(&conn, &id).await?;
    if state.is_none() && timeline.is_empty() {
        bail!("unknown task {id}: no state and no events (check the id, or `baton tasks --all`)");
    }
    let firing: Vec<_> = conn
        .firing_alerts()
        .await?
        .into_iter()
        .filter(|(a, _)| a.task.as_ref() == Some(&id))
        .collect();
    if args.json {
        print_json(&TaskDetail {
            task: state.as_ref().map(|t| {
                TaskJson::from_task(t, firing.iter().map(|(a, _)| a.id.clone()).collect())
            }),
            timeline,
            firing_alerts: firing
                .iter()
                .map(|(a, s)| crate::output::AlertJson::from_alert(a, *s))
                .collect(),
        });
        return Ok(());
    }
    let now = now();
    if let Some(t) = &state {
        println!(
            "{} {}",
            paint(&format!("Task {}", t.id), Color::Bold),
            if t.title().is_empty() {
                String::new()
            } else {
                format!("— {}", t.title())
            }
        );
        println!(
            "  status {}   owner {}   epoch {}   stage {}   workflow {}",
            t.status,
            t.owner.as_ref().map_or("-".into(), ToString::to_string),
            t.epoch,
            t.stage.as_ref().map_or("-".into(), ToString::to_string),
            t.workflow
        );
        if let Some(p) = t.pending_handoff.as_deref() {
            let by = p
                .accept_by()
                .map(|b| format!(", accept by {b}"))
                .unwrap_or_default();
            println!(
                "  handoff pending: {} -> {} (output {}){by}",
                p.from, p.to, p.output_location
            );
        }
        if !t.output_location().is_empty() {
            println!("  output {}", t.output_location());
        }
        println!(
            "  created {}   last event {} by {} {}   violations {}",
            ago(t.created.at, now),
            t.last_event.kind,
            t.last_event.agent,
            ago(t.last_event.at, now),
            t.violations
        );
    }
    println!();
    let mut table = Table::new(&[
        "SEQ",
        "TIME",
        "AGENT",
        "EVENT",
        "EPOCH",
        "OWNER AFTER",
        "EPOCH AFTER",
        "NOTE",
    ]);
    for row in &timeline {
        let note = match &row.refused {
            Some(why) => (format!("REFUSED: {why}"), Some(Color::Red)),
            None => (row.detail.clone(), None),
        };
        table.row_colored(vec![
            (row.seq.to_string(), None),
            (row.stored_at.clone(), None),
            (row.agent_id.clone(), None),
            (row.kind.clone(), None),
            (row.event_epoch.to_string(), None),
            (row.owner_after.clone().unwrap_or_else(|| "-".into()), None),
            (row.epoch_after.to_string(), None),
            note,
        ]);
    }
    table.print();
    if !firing.is_empty() {
        println!();
        println!("{}", paint("Firing alerts:", Color::Bold));
        for (a, _) in &firing {
            println!("  {} {}", paint(a.kind.as_str(), Color::Red), a.summary);
        }
    } else if is_tty() {
        println!("\nNo firing alerts.");
    }
    Ok(())
}

/// The task's timeline from the orchestrator, or folded here from the
/// stream when no orchestrator answers.
async fn timeline(
    conn: &crate::cmd::common::Conn,
    id: &TaskId,
) -> anyhow::Result<Vec<TimelineRow>> {
    let req = pb::TimelineRequest {
        task_id: id.to_string(),
        limit: 0,
    };
    if let Some(resp) = conn
        .api::<_, pb::TimelineResponse>("task.timeline", &req)
        .await
    {
        return Ok(resp
            .entries
            .into_iter()
            .map(|e| TimelineRow {
                seq: e.seq,
                stored_at: baton_core::wire::time_from_wire("stored_at", e.stored_at.as_ref())
                    .ok()
                    .flatten()
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                agent_id: e.agent_id,
                kind: e.kind,
                event_epoch: e.event_epoch,
                owner_after: (!e.owner.is_empty()).then_some(e.owner),
                epoch_after: e.epoch,
                status_after: pb::TaskStatus::try_from(e.status)
                    .ok()
                    .and_then(|s| TaskStatus::try_from(s).ok())
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                refused: (!e.violation.is_empty()).then_some(e.violation),
                detail: e.detail,
            })
            .collect());
    }
    let stored = baton_jetstream::read::read_subject(
        &conn.js,
        baton_core::subjects::EVENTS_STREAM,
        &baton_core::subjects::task_events(id),
        0,
        None,
    )
    .await?;
    let policy = baton_jetstream::policy::read_or_default(&conn.js).await?;
    let events = stored.iter().filter_map(|s| {
        let e = baton_core::wire::read_event(&s.subject, &s.payload).ok()?;
        Some((
            e,
            baton_core::EventMeta {
                seq: s.seq,
                stored_at: s.stored_at,
            },
        ))
    });
    Ok(baton_core::timeline::timeline(events, &policy)
        .into_iter()
        .map(|e| TimelineRow {
            seq: e.meta.seq,
            stored_at: e.meta.stored_at.to_rfc3339(),
            agent_id: e.event.agent.to_string(),
            kind: e.event.kind().as_str().to_string(),
            event_epoch: e.event.epoch,
            owner_after: e.owner.map(|o| o.to_string()),
            epoch_after: e.epoch,
            status_after: e.status.map(|s| s.to_string()).unwrap_or_default(),
            refused: e.refused,
            detail: e.event.body.describe(),
        })
        .collect())
}
