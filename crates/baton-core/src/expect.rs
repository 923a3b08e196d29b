//! Expectations: the signals a task's state says must arrive, and by when.
//!
//! One definition shared by the stall detector, the backtester and the CLI:
//! given a task and the rules, which events are expected, from whom, and
//! their due times. An expectation's identity (kind, epoch, anchor) is what
//! an alert about it is named after, so a new heartbeat (a new anchor) ends
//! the old expectation and resolves its alert.

use std::time::Duration;

use crate::{
    alert::{Alert, AlertKind, alert_id},
    event::HandoffTarget,
    ids::{AgentId, TaskId},
    rules::Rules,
    task::{Mark, Task, TaskStatus},
    time::{Time, human_duration},
};

/// What is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpectationKind {
    /// A heartbeat from the owner (its lease).
    Heartbeat,
    /// The recipient accepts a pending offer.
    Acceptance,
    /// Someone starts the task (claims it, or accepts the pending offer).
    Start,
    /// The task ends.
    Deadline,
    /// A heartbeat with progress from the owner.
    Progress,
    /// The owner resumes after a block.
    Unblock,
}

impl ExpectationKind {
    /// The alert raised when this expectation is missed.
    pub const fn alert_kind(self) -> AlertKind {
        match self {
            ExpectationKind::Heartbeat => AlertKind::HeartbeatMissed,
            ExpectationKind::Acceptance => AlertKind::HandoffNotAccepted,
            ExpectationKind::Start => AlertKind::NotStarted,
            ExpectationKind::Deadline => AlertKind::DeadlineExceeded,
            ExpectationKind::Progress => AlertKind::NoProgress,
            ExpectationKind::Unblock => AlertKind::BlockedTooLong,
        }
    }
}

/// One expected signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    pub kind: ExpectationKind,
    /// The event that armed it (its time and sequence).
    pub since: Mark,
    pub window: Duration,
    /// Task epoch the expectation belongs to (0 for the task-wide deadline).
    pub epoch: u64,
}

impl Expectation {
    /// When the expected signal is due.
    pub fn due(&self) -> Time {
        self.since.at.saturating_add(self.window)
    }

    /// The id of the alert raised when this expectation is missed.
    pub fn alert_id(&self, task: &TaskId) -> String {
        alert_id(
            self.kind.alert_kind(),
            Some(task),
            self.epoch,
            &format!("s{}", self.since.seq),
        )
    }
}

/// At most three expectations hold at once (e.g. heartbeat, progress,
/// deadline), so they live inline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    items: [Option<Expectation>; 3],
}

impl Expectations {
    fn push(&mut self, e: Expectation) {
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some(e);
        }
    }

    /// Iterates over the expectations.
    pub fn iter(&self) -> impl Iterator<Item = &Expectation> {
        self.items.iter().flatten()
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<Time> {
        self.iter().map(Expectation::due).min()
    }
}

/// The expectations `task`'s state implies under `rules`.
pub fn expectations(task: &Task, rules: &Rules) -> Expectations {
    let mut out = Expectations::default();
    if task.status.is_terminal() {
        return out;
    }
    let here = rules.resolve(&task.workflow, task.stage.as_ref());
    let expect =
        |out: &mut Expectations, kind, since: Option<Mark>, window: Option<Duration>, epoch| {
            if let (Some(since), Some(window)) = (since, window) {
                out.push(Expectation {
                    kind,
                    since,
                    window,
                    epoch,
                });
            }
        };
    match task.status {
        TaskStatus::Submitted => expect(
            &mut out,
            ExpectationKind::Start,
            task.waiting_since,
            task.windows().start_within.or(here.start),
            task.epoch,
        ),
        TaskStatus::Working => {
            let lease = task
                .lease
                .or(task.windows().heartbeat_within)
                .or(here.heartbeat);
            expect(
                &mut out,
                ExpectationKind::Heartbeat,
                task.alive_since,
                lease,
                task.epoch,
            );
            let progress = task.windows().progress_within.or(here.progress);
            expect(
                &mut out,
                ExpectationKind::Progress,
                task.progress_since,
                progress,
                task.epoch,
            );
        }
        TaskStatus::InputRequired => expect(
            &mut out,
            ExpectationKind::Unblock,
            task.blocked_since,
            here.blocked,
            task.epoch,
        ),
        TaskStatus::HandoffPending => {
            if let Some(p) = task.pending_handoff.as_deref() {
                let next = match &p.to {
                    HandoffTarget::Stage(stage) => rules.resolve(&task.workflow, Some(stage)),
                    HandoffTarget::Agent(_) => here,
                };
                expect(
                    &mut out,
                    ExpectationKind::Acceptance,
                    Some(p.offered),
                    p.accept_within.or(next.accept),
                    task.epoch,
                );
                expect(
                    &mut out,
                    ExpectationKind::Start,
                    Some(p.offered),
                    next.start,
                    task.epoch,
                );
            }
        }
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Canceled => {}
    }
    expect(
        &mut out,
        ExpectationKind::Deadline,
        Some(task.created),
        task.windows().deadline_within.or(here.deadline),
        0,
    );
    out
}

/// The agents an expectation concerns, most responsible first.
pub fn agents_involved(task: &Task, kind: ExpectationKind) -> Vec<AgentId> {
    let mut agents = Vec::new();
    match (kind, task.pending_handoff.as_deref()) {
        (ExpectationKind::Acceptance | ExpectationKind::Start, Some(p)) => {
            if let HandoffTarget::Agent(to) = &p.to {
                agents.push(to.clone());
            }
            agents.push(p.from.clone());
        }
        (ExpectationKind::Start, None) => agents.extend(task.assignee().cloned()),
        _ => agents.extend(task.owner.clone()),
    }
    agents.dedup();
    agents
}

/// The alert for a missed expectation, observed at `now`.
pub fn stall_alert(task: &Task, e: &Expectation, now: Time, notification: u32) -> Alert {
    let kind = e.kind.alert_kind();
    let mut alert = Alert::firing(kind, e.alert_id(&task.id), Some(task.id.clone()), now);
    let due = e.due();
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
