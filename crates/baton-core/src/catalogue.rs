//! The catalogue of alerts: every fault report Baton raises about a task
//! or a message is built here, with its deterministic id, its fields and
//! its text, so the fold, the detector's engine and the services ask for an
//! alert instead of formatting their own. Texts embed only bounded input
//! (ids, fields within the wire limits); every text is also cut at the wire
//! boundary (`alert::MAX_ALERT_TEXT`).
//!
//! - protocol reports: [`violation_alert`] (ownership), [`unknown_task_alert`],
//!   [`stale_context_alert`], [`malformed_alert`];
//! - stall conditions: [`stall_alert`] and their [`resolution_summary`];
//! - artifact leases: [`lease_expired_alert`], [`lease_held_too_long_alert`],
//!   [`lease_stale_write_alert`];
//! - Baton's own health: [`orchestrator_down_alert`],
//!   [`consumer_stalled_alert`].

use std::{fmt, time::Duration};

use crate::{
    alert::{Alert, AlertKind, alert_id, clip},
    context::Decision,
    event::{Event, EventMeta},
    expect::{Expectation, ExpectationKind, agents_involved},
    fold::{UnknownTaskPolicy, Violation, ViolationReason},
    ids::{AgentId, TaskId, WorkflowId},
    lease::{Artifact, Hold, LeaseMeta, StaleWriteReport, Waiter},
    subjects,
    task::Task,
    time::{Time, human_duration},
};

pub(crate) fn violation_alert(task: &Task, event: &Event, meta: EventMeta, v: &Violation) -> Alert {
    let mut alert = Alert::firing(
        AlertKind::OwnershipViolation,
        alert_id(
            AlertKind::OwnershipViolation,
            Some(&task.id),
            task.epoch,
            &format!("s{}", meta.seq),
        ),
        Some(task.id.clone()),
        meta.stored_at,
    );
    alert.workflow = Some(task.workflow.clone());
    alert.stage = task.stage.clone();
    alert.agents = std::iter::once(v.actor.clone())
        .chain(v.counterpart.clone().filter(|c| *c != v.actor))
        .collect();
    alert.epoch = task.epoch;
    alert.task_status = Some(task.status);
    alert.event_id = Some(event.event_id.clone());
    alert.event_seq = meta.seq;
    alert.last_event = Some(task.last_event.clone());
    alert.expected = match v.reason {
        ViolationReason::NotOwner | ViolationReason::StaleEpoch => format!(
            "{} only from the owner ({}) at epoch {}",
            v.event_kind,
            task.owner.as_ref().map_or("nobody", AgentId::as_str),
            task.epoch
        ),
        _ => format!("no {} in this state", v.event_kind),
    };
    alert.summary = format!(
        "Agent {} sent {} for task {} and it was refused: {}.",
        v.actor, v.event_kind, task.id, v
    );
    alert.detail = format!("BATON_EVENTS seq {}", meta.seq);
    alert
}

pub(crate) fn unknown_task_alert(
    event: &Event,
    meta: EventMeta,
    policy: UnknownTaskPolicy,
) -> Alert {
    let mut alert = Alert::firing(
        AlertKind::UnknownTask,
        alert_id(
            AlertKind::UnknownTask,
            Some(&event.task),
            0,
            &format!("s{}", meta.seq),
        ),
        Some(event.task.clone()),
        meta.stored_at,
    );
    alert.workflow = Some(event.workflow.clone());
    alert.agents = vec![event.agent.clone()];
    alert.expected = format!("a created event for task {} before any other", event.task);
    alert.event_id = Some(event.event_id.clone());
    alert.event_seq = meta.seq;
    alert.summary = match policy {
        UnknownTaskPolicy::Alert => format!(
            "Agent {} sent {} for task {}, which was never created; the event was ignored.",
            event.agent,
            event.kind(),
            event.task
        ),
        UnknownTaskPolicy::AutoCreate => format!(
            "Agent {} sent {} for task {}, which was never created; the task was created from it.",
            event.agent,
            event.kind(),
            event.task
        ),
    };
    alert.detail = format!("BATON_EVENTS seq {}", meta.seq);
    alert
}

/// The `STALE_CONTEXT` alert for an event that missed `missed`.
pub fn stale_context_alert(
    event: &Event,
    meta: EventMeta,
    task: Option<&Task>,
    missed: &[&Decision],
) -> Alert {
    let epoch = task.map_or(event.epoch, |t| t.epoch);
    let mut alert = Alert::firing(
        AlertKind::StaleContext,
        alert_id(
            AlertKind::StaleContext,
            Some(&event.task),
            epoch,
            &format!("s{}", meta.seq),
        ),
        Some(event.task.clone()),
        meta.stored_at,
    );
    alert.workflow = Some(event.workflow.clone());
    alert.stage = task.and_then(|t| t.stage.clone());
    alert.agents = std::iter::once(event.agent.clone())
        .chain(missed.iter().map(|d| d.author.clone()))
        .fold(Vec::new(), |mut v, a| {
            if !v.contains(&a) {
                v.push(a);
            }
            v
        });
    alert.epoch = epoch;
    alert.task_status = task.map(|t| t.status);
    alert.event_id = Some(event.event_id.clone());
    alert.event_seq = meta.seq;
    alert.missed_versions = missed.iter().map(|d| d.version).collect();
    let latest = missed.iter().map(|d| d.version).max().unwrap_or(0);
    alert.expected = format!(
        "{} after reading decision record version {latest} of workflow {}",
        event.kind(),
        event.workflow
    );
    let read = if event.context_version == 0 {
        "without reading the decision record".to_string()
    } else {
        format!("having read version {}", event.context_version)
    };
    let list = missed
        .iter()
        .take(5)
        .map(|d| format!("#{} {:?} by {}", d.version, d.summary, d.author))
        .collect::<Vec<_>>()
        .join(", ");
    let more = if missed.len() > 5 {
        format!(" and {} more", missed.len() - 5)
    } else {
        String::new()
    };
    alert.summary = format!(
        "Agent {} sent {} for task {} {read}, but {} decision(s) were recorded before it acted: {list}{more}. Have it re-read workflow {}'s record and check its work.",
        event.agent,
        event.kind(),
        event.task,
        missed.len(),
        event.workflow
    );
    alert.detail = format!("BATON_EVENTS seq {}", meta.seq);
    alert
}

/// The alert for a missed expectation, due at `due` (its window counted
/// without broker outages, decision 9), observed at `now`.
pub fn stall_alert(task: &Task, e: &Expectation, due: Time, now: Time, notification: u32) -> Alert {
    let kind = e.kind.alert_kind();
    let mut alert = Alert::firing(kind, e.alert_id(&task.id), Some(task.id.clone()), now);
    let late = now.since(due);
    let waited = now.since(e.since.at);
    alert.workflow = Some(task.workflow.clone());
    alert.stage = task.stage.clone();
    alert.agents = agents_involved(task, e.kind);
    alert.due_at = Some(due);
    alert.late_by = Some(late);
    alert.epoch = e.epoch;
    alert.notification = notification;
    alert.task_status = Some(task.status);
    alert.last_event = Some(task.last_event.clone());
    let owner = task.owner.as_ref().map_or("nobody", AgentId::as_str);
    let stage = task
        .stage
        .as_ref()
        .map(|s| format!(" (stage {s})"))
        .unwrap_or_default();
    let window = human_duration(e.window);
    let last = &task.last_event;
    let last_seen = format!(
        "last event: {} from {} at {}",
        last.kind, last.agent, last.at
    );
    let (expected, summary) = match e.kind {
        ExpectationKind::Heartbeat => (
            format!("a heartbeat from {owner} every {window}"),
            format!(
                "Task {}{stage}: owner {owner} has sent no heartbeat for {} (lease {window}); {last_seen}. Check the agent, or revoke the task so another can claim it.",
                task.id,
                human_duration(waited)
            ),
        ),
        ExpectationKind::Progress => (
            format!("progress from {owner} within {window}"),
            format!(
                "Task {}{stage}: owner {owner} is alive but reported no progress for {} (window {window}); {last_seen}.",
                task.id,
                human_duration(waited)
            ),
        ),
        ExpectationKind::Unblock => (
            format!("{owner} to resume within {window} of blocking"),
            format!(
                "Task {}{stage}: owner {owner} has been blocked for {} waiting for input ({:?}); give it what it needs or reassign.",
                task.id,
                human_duration(waited),
                task.blocked_reason()
            ),
        ),
        ExpectationKind::Acceptance => {
            let (from, to, output) = task.pending_handoff.as_deref().map_or_else(
                || (owner.to_string(), "?".to_string(), String::new()),
                |p| {
                    (
                        p.from.to_string(),
                        p.to.to_string(),
                        p.output_location.clone(),
                    )
                },
            );
            let output = if output.is_empty() {
                String::new()
            } else {
                format!(" with output {output}")
            };
            (
                format!("{to} to accept the handoff from {from} within {window}"),
                format!(
                    "Task {}{stage}: {from} offered it to {to}{output} {} ago and nobody accepted (window {window}); the work is stalled between {from} and {to}.",
                    task.id,
                    human_duration(waited)
                ),
            )
        }
        ExpectationKind::Start => {
            let who = match task.pending_handoff.as_deref() {
                Some(p) => format!("{} to start it after {}'s offer", p.to, p.from),
                None => task.assignee().map_or_else(
                    || "an agent to claim it".to_string(),
                    |a| format!("assignee {a} to claim it"),
                ),
            };
            (
                format!("{who} within {window}"),
                format!(
                    "Task {}{stage} has not been started for {} (window {window}): waiting for {who}.",
                    task.id,
                    human_duration(waited)
                ),
            )
        }
        ExpectationKind::Deadline => (
            format!("the task to end within {window} of creation"),
            format!(
                "Task {}{stage} is past its deadline by {} and still {} (owner {owner}); {last_seen}.",
                task.id,
                human_duration(late),
                task.status
            ),
        ),
    };
    alert.expected = expected;
    alert.summary = summary;
    alert
}

/// The one-sentence summary of a resolution.
pub fn resolution_summary(firing: &Alert, task: Option<&Task>) -> String {
    let what = firing.kind.as_str().replace('_', " ");
    match (task, firing.task.as_ref()) {
        (Some(task), Some(id)) if task.status.is_terminal() => {
            format!("Resolved {what} on task {id}: the task is {}.", task.status)
        }
        (Some(task), Some(id)) => format!(
            "Resolved {what} on task {id}: {} from {} arrived.",
            task.last_event.kind, task.last_event.agent
        ),
        (_, Some(id)) => format!("Resolved {what} on task {id}."),
        (_, None) => format!("Resolved {what}."),
    }
}

/// Where a message that could not be used came from, for its
/// `MALFORMED_EVENT` report.
#[derive(Debug, Clone, Copy)]
pub struct Malformed<'a> {
    /// `BATON_EVENTS` or `BATON_CONTEXT`.
    pub stream: &'a str,
    pub seq: u64,
    pub subject: &'a str,
    pub stored_at: Time,
    /// The DLQ subject token (`undecodable`, `too_large`, ...).
    pub reason: &'a str,
}

/// The `MALFORMED_EVENT` report for a message that was dead-lettered: an
/// event (about the task its subject names) or a decision-record entry
/// (about the workflow its subject names; a system alert).
pub fn malformed_alert(m: Malformed<'_>, error: &dyn fmt::Display) -> Alert {
    let (task, agent, workflow, what, anchor) = if m.stream == subjects::CONTEXT_STREAM {
        let tokens = subjects::parse_context(m.subject);
        (
            None,
            tokens.and_then(|(_, a)| AgentId::new(a).ok()),
            tokens.and_then(|(w, _)| WorkflowId::new(w).ok()),
            "decision-record entry",
            format!("ctx{}", m.seq),
        )
    } else {
        let tokens = subjects::parse_event(m.subject);
        (
            tokens.and_then(|(t, _)| TaskId::new(t).ok()),
            tokens.and_then(|(_, a)| AgentId::new(a).ok()),
            None,
            "event",
            format!("s{}", m.seq),
        )
    };
    let mut alert = Alert::firing(
        AlertKind::MalformedEvent,
        alert_id(AlertKind::MalformedEvent, task.as_ref(), 0, &anchor),
        task,
        m.stored_at,
    );
    alert.workflow = workflow;
    alert.agents = agent.into_iter().collect();
    alert.event_seq = m.seq;
    alert.expected = if m.stream == subjects::CONTEXT_STREAM {
        "a valid baton.v1.ContextEntry within its size limits, matching its subject".into()
    } else {
        "a valid baton.v1.Event within its size limits, matching its subject".into()
    };
    alert.detail = format!(
        "BATON_DLQ subject {}, header Baton-Dlq-Source: {}:{}",
        subjects::dlq(m.reason),
        m.stream,
        m.seq
    );
    let subject = clip(m.subject, 256);
    alert.summary = if m.stream == subjects::CONTEXT_STREAM {
        format!(
            "A {what} on {subject} ({} seq {}) was set aside and is skipped by every reader: {error}. Its bytes are in BATON_DLQ; record the decision again correctly.",
            m.stream, m.seq
        )
    } else {
        format!(
            "An {what} on {subject} ({} seq {}) was set aside: {error}. Its bytes are in BATON_DLQ; fix the sender and publish it again.",
            m.stream, m.seq
        )
    };
    alert
}

/// `LEASE_EXPIRED`: `hold`'s holder stopped renewing its lease on
/// `artifact`, which lapsed at its expiry and is free again. A report: one
/// per lapsed grant (the id names artifact, holder and token), raised by
/// the stall detector when the fold drops the hold.
pub fn lease_expired_alert(artifact: &Artifact, hold: &Hold, observed_at: Time) -> Alert {
    let expired_at = hold.expires_at();
    let mut alert = Alert::firing(
        AlertKind::LeaseExpired,
        alert_id(
            AlertKind::LeaseExpired,
            hold.task.as_ref(),
            hold.token,
            &format!("{}:{artifact}:{}", artifact.scope.token(), hold.agent),
        ),
        hold.task.clone(),
        observed_at,
    );
    alert.workflow = artifact.scope.workflow().cloned();
    alert.agents = vec![hold.agent.clone()];
    alert.epoch = hold.token;
    alert.expected = format!(
        "a renewal of the {} lease on {artifact} by {} within {}",
        hold.mode,
        hold.agent,
        human_duration(hold.ttl)
    );
    alert.due_at = Some(expired_at);
    alert.late_by = Some(observed_at.since(expired_at));
    alert.summary = format!(
        "Agent {} held the {} lease on {artifact} (token {}) and stopped renewing it; it expired {} ago and is free again. \
         Check the agent: writes with token {} are refused by fenced stores.",
        hold.agent,
        hold.mode,
        hold.token,
        human_duration(observed_at.since(expired_at)),
        hold.token
    );
    alert.detail = format!("artifact {artifact} (held since {})", hold.since);
    alert
}

/// `LEASE_HELD_TOO_LONG`: `hold`, an exclusive lease on `artifact`, has
/// been held longer than its rule's `limit` while `waiters` wait for it.
/// One report per grant (its id names the token).
pub fn lease_held_too_long_alert(
    artifact: &Artifact,
    hold: &Hold,
    waiters: &[(Artifact, Waiter)],
    limit: Duration,
    now: Time,
) -> Alert {
    let mut alert = Alert::firing(
        AlertKind::LeaseHeldTooLong,
        alert_id(
            AlertKind::LeaseHeldTooLong,
            hold.task.as_ref(),
            hold.token,
            &format!("{artifact}:{}", hold.agent),
        ),
        hold.task.clone(),
        now,
    );
    let due = hold.since.saturating_add(limit);
    alert.workflow = artifact.scope.workflow().cloned();
    alert.agents = std::iter::once(hold.agent.clone())
        .chain(waiters.iter().map(|(_, w)| w.agent.clone()))
        .collect();
    alert.epoch = hold.token;
    alert.expected = format!(
        "the exclusive lease on {artifact} released within {} (its rule's max_hold) while others wait",
        human_duration(limit)
    );
    alert.due_at = Some(due);
    alert.late_by = Some(now.since(due));
    let waiting = waiters
        .iter()
        .map(|(a, w)| {
            let on = if a == artifact {
                String::new()
            } else {
                format!(" on {a}")
            };
            format!(
                "{} ({}{on}, for {})",
                w.agent,
                w.mode,
                human_duration(now.since(w.since))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    alert.summary = format!(
        "Agent {} has held the exclusive lease on {artifact} (token {}) for {}, over its limit of {}, while {waiting} wait{} for it. \
         Ask the holder to release or hand it over, or revoke it (`baton lease revoke`).",
        hold.agent,
        hold.token,
        human_duration(now.since(hold.since)),
        human_duration(limit),
        if waiters.len() == 1 { "s" } else { "" },
    );
    alert.detail = format!("artifact {artifact} (held since {})", hold.since);
    alert
}

/// `LEASE_STALE_WRITE`: a store refused a write to the artifact by a
/// writer carrying a token below the highest it has seen (a holder that
/// lost its lease, expired, revoked or handed over, still writes). `meta`
/// is the report's place in the stream (one alert per report).
pub fn lease_stale_write_alert(report: &StaleWriteReport, meta: LeaseMeta) -> Alert {
    let StaleWriteReport {
        artifact,
        store,
        writer,
        token,
        highest_seen,
        holders,
    } = report;
    let (token, highest_seen, seq) = (*token, *highest_seen, meta.seq);
    let mut alert = Alert::firing(
        AlertKind::LeaseStaleWrite,
        alert_id(
            AlertKind::LeaseStaleWrite,
            None,
            token,
            &format!("{artifact}:s{seq}"),
        ),
        holders.iter().find_map(|h| h.task.clone()),
        meta.stored_at,
    );
    let writer_name = writer
        .as_ref()
        .map_or_else(|| "an unnamed writer".to_string(), |w| format!("agent {w}"));
    alert.workflow = artifact.scope.workflow().cloned();
    alert.agents = writer.iter().cloned().chain([store.clone()]).collect();
    alert.epoch = token;
    alert.expected = format!("writes to {artifact} with a token of at least {highest_seen}");
    alert.event_seq = seq;
    let now_held = if holders.is_empty() {
        "nobody holds it now".to_string()
    } else {
        format!(
            "it is held now by {}",
            holders
                .iter()
                .map(|h| format!("{} (token {})", h.agent, h.token))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    alert.summary = format!(
        "Store {store} refused a write to {artifact} by {writer_name} with token {token}: it has seen token {highest_seen}, so the writer's lease was lost (expired, revoked or handed over) and it still writes; {now_held}. \
         Check the writer: it must stop writing and take the lease again."
    );
    alert.detail = format!("artifact {artifact}");
    alert
}

/// `ORCHESTRATOR_DOWN` (raised by the detector) or `DETECTOR_DOWN` (raised
/// by the orchestrator): no instance of the service has renewed its
/// leadership lease since `seen` (last holder `name`), so none is doing its
/// work — dead, stuck, or cut off from the cluster.
pub fn service_down_alert(kind: AlertKind, name: &str, seen: Time, due: Time, now: Time) -> Alert {
    let mut alert = Alert::firing(
        kind,
        alert_id(
            kind,
            None,
            0,
            &format!("t{}", seen.unix_nanos() / 1_000_000),
        ),
        None,
        now,
    );
    let (service, consequence) = match kind {
        AlertKind::DetectorDown => (
            "stall detector",
            "no deadline is being watched, so stalled tasks raise no alerts",
        ),
        _ => (
            "orchestrator",
            "task state in KV and protocol alerts are not being updated",
        ),
    };
    alert.expected = format!("an active {service} renewing its leadership lease");
    alert.due_at = Some(due);
    alert.late_by = Some(now.since(due));
    alert.summary = format!(
        "No active {service} for {} (last: {name}); {consequence}. Check the {service} processes (`baton status`).",
        human_duration(now.since(seen))
    );
    alert.detail = format!(
        "KV {} key {}",
        crate::subjects::LEADERS_BUCKET,
        match kind {
            AlertKind::DetectorDown => "stall-detector",
            _ => "orchestrator",
        }
    );
    alert
}

/// `ORCHESTRATOR_DOWN`; see [`service_down_alert`].
pub fn orchestrator_down_alert(name: &str, seen: Time, due: Time, now: Time) -> Alert {
    service_down_alert(AlertKind::OrchestratorDown, name, seen, due, now)
}

/// What a stalled consumer looks like, for its report.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerStall {
    /// It holds `max_ack_pending` unacknowledged messages.
    pub at_limit: bool,
    pub num_ack_pending: u64,
    pub num_pending: u64,
    pub delivered_seq: u64,
    /// Its last progress, and the stream sequence it had then delivered.
    pub since: Time,
    pub since_seq: u64,
    pub due: Time,
}

/// `CONSUMER_STALLED` for consumer `name`.
pub fn consumer_stalled_alert(name: &str, c: ConsumerStall, now: Time) -> Alert {
    let mut alert = Alert::firing(
        AlertKind::ConsumerStalled,
        alert_id(
            AlertKind::ConsumerStalled,
            None,
            0,
            &format!("{name}-s{}", c.since_seq),
        ),
        None,
        now,
    );
    alert.expected = format!("consumer {name} to make progress on its pending messages");
    alert.summary = if c.at_limit {
        format!(
            "Consumer {name} holds {} unacknowledged messages, its max_ack_pending: JetStream has stopped delivering to it. Check the service that reads it.",
            c.num_ack_pending
        )
    } else {
        format!(
            "Consumer {name} has {} messages pending and delivered nothing new for {} (stuck at stream seq {}). Check the service that reads it.",
            c.num_pending,
            human_duration(now.since(c.since)),
            c.delivered_seq
        )
    };
    alert.due_at = Some(c.due);
    alert.detail = name.to_string();
    alert
}
