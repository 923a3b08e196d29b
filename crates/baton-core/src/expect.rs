//! Expectations: the signals a task's state says must arrive, and by when.
//!
//! One definition shared by the stall detector, the backtester and the CLI:
//! given a task and the rules, which events are expected, from whom, and
//! their due times. An expectation's identity (kind, epoch, anchor) is what
//! an alert about it is named after, so a new heartbeat (a new anchor) ends
//! the old expectation and resolves its alert.

use std::time::Duration;

pub use crate::catalogue::{resolution_summary, stall_alert};

use crate::{
    alert::{AlertKind, alert_id},
    event::HandoffTarget,
    ids::{AgentId, TaskId},
    rules::Rules,
    task::{Mark, Task, TaskStatus},
    time::Time,
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
