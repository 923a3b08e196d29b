//! What the console knows, kept in memory, and the views it serves.
//!
//! The feed (`feed`) puts what NATS says into a [`Model`]; the HTTP side
//! asks it for views (a workflow's board, the alerts, the health page) and
//! for the deltas of what changed since the last flush. Nothing here does
//! I/O or reads a clock: `now` is an argument, so every view is a function
//! of what was fed in and can be tested without a server.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use baton_core::{Alert, AlertState, HandoffTarget, Task, Time, stall::Silence, task::EventRef};
use baton_proto::v1 as pb;
use serde::Serialize;

/// The column finished tasks (completed, failed, canceled) go to.
pub const FINISHED: &str = "finished";
/// The column of tasks without a stage.
pub const NO_STAGE: &str = "(no stage)";

/// How long a resolved alert stays in the "recently resolved" list.
pub const RESOLVED_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long a protocol report stays in the list.
pub const REPORTS_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Most entries of each alert list.
pub const MAX_LISTED: usize = 500;

/// Time as the API shows it (RFC 3339, milliseconds, UTC).
fn ts(t: Time) -> String {
    t.to_rfc3339()
}

fn opt_ts(t: Option<Time>) -> Option<String> {
    t.map(ts)
}

/// The last event of a task or an alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventJson {
    pub kind: String,
    pub agent: String,
    pub at: String,
    pub seq: u64,
}

impl From<&EventRef> for EventJson {
    fn from(e: &EventRef) -> Self {
        EventJson {
            kind: e.kind.as_str().to_string(),
            agent: e.agent.to_string(),
            at: ts(e.at),
            seq: e.seq,
        }
    }
}

/// A pending handoff: sender → recipient, since when.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HandoffJson {
    pub from: String,
    /// `agent` or `stage`.
    pub to_kind: &'static str,
    pub to: String,
    pub offered_at: String,
    pub accept_by: Option<String>,
    pub output_location: String,
}

/// A firing alert as a card shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CardAlert {
    pub kind: String,
    pub id: String,
    pub since: String,
    pub silenced: bool,
}

/// A task as the pipeline shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Card {
    pub id: String,
    pub workflow: String,
    pub stage: Option<String>,
    /// The board column: the stage, `(no stage)`, or `finished`.
    pub column: String,
    pub title: String,
    pub status: &'static str,
    pub owner: Option<String>,
    pub epoch: u64,
    pub created_at: String,
    pub updated_at: String,
    pub last_event: EventJson,
    pub handoff: Option<HandoffJson>,
    /// Firing conditions (stall alerts) about this task.
    pub alerts: Vec<CardAlert>,
    /// A stall alert is firing: the card is red.
    pub stalled: bool,
    pub violations: u64,
    pub context_version: u64,
    /// Order within a column, ascending: stalled first, then waiting
    /// handoffs, blocked, working, unstarted; the longest quiet first.
    /// Finished tasks: the most recent first.
    pub rank: u64,
}

fn column_of(task: &Task) -> String {
    if task.status.is_terminal() {
        FINISHED.to_string()
    } else {
        task.stage
            .as_ref()
            .map_or_else(|| NO_STAGE.to_string(), ToString::to_string)
    }
}

fn rank(task: &Task, stalled: bool) -> u64 {
    use baton_core::TaskStatus as S;
    const SPAN: u64 = 10_000_000_000_000; // > any unix time in ms for centuries
    let at = task.last_event.at.unix_nanos() / 1_000_000;
    let group = match (stalled, task.status) {
        (_, s) if s.is_terminal() => return 9 * SPAN + (SPAN - 1 - at.min(SPAN - 1)),
        (true, _) => 0,
        (_, S::HandoffPending) => 1,
        (_, S::InputRequired) => 2,
        (_, S::Working) => 3,
        _ => 4,
    };
    group * SPAN + at.min(SPAN - 1)
}

/// One alert notification as the API shows it (the fault report).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertJson {
    pub id: String,
    pub kind: String,
    /// `condition` (fires, then resolves) or `report` (one-shot).
    pub lifecycle: &'static str,
    pub state: &'static str,
    pub severity: &'static str,
    pub task: Option<String>,
    pub workflow: Option<String>,
    pub stage: Option<String>,
    pub agents: Vec<String>,
    pub expected: String,
    pub due_at: Option<String>,
    pub observed_at: String,
    pub last_event: Option<EventJson>,
    pub summary: String,
    pub notification: u32,
    pub epoch: u64,
    pub detail: String,
    /// Its stream sequence in `BATON_ALERTS`.
    pub seq: u64,
    /// The active silence muting it, if any.
    pub silenced_by: Option<String>,
    /// On a resolution: the fault report it resolves (the latest firing
    /// notification), when the console has seen it.
    pub fired: Option<Box<AlertJson>>,
}

fn alert_json(a: &Alert, seq: u64, silenced_by: Option<String>) -> AlertJson {
    AlertJson {
        fired: None,
        id: a.id.clone(),
        kind: a.kind.as_str().to_string(),
        lifecycle: a.kind.lifecycle(),
        state: a.state.as_str(),
        severity: a.severity.as_str(),
        task: a.task.as_ref().map(ToString::to_string),
        workflow: a.workflow.as_ref().map(ToString::to_string),
        stage: a.stage.as_ref().map(ToString::to_string),
        agents: a.agents.iter().map(ToString::to_string).collect(),
        expected: a.expected.clone(),
        due_at: opt_ts(a.due_at),
        observed_at: ts(a.observed_at),
        last_event: a.last_event.as_ref().map(EventJson::from),
        summary: a.summary.clone(),
        notification: a.notification,
        epoch: a.epoch,
        detail: a.detail.clone(),
        seq,
        silenced_by,
    }
}

/// A silence as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SilenceJson {
    pub id: String,
    pub task: Option<String>,
    pub kind: Option<String>,
    pub agent: Option<String>,
    pub until: String,
    pub active: bool,
    pub created_by: String,
    pub reason: String,
    pub created_at: String,
}

pub fn silence_json(s: &Silence, now: Time) -> SilenceJson {
    SilenceJson {
        id: s.id.clone(),
        task: s.task.as_ref().map(ToString::to_string),
        kind: s.kind.map(|k| k.as_str().to_string()),
        agent: s.agent.as_ref().map(ToString::to_string),
        until: ts(s.until),
        active: s.until > now,
        created_by: s.created_by.clone(),
        reason: s.reason.clone(),
        created_at: ts(s.created_at),
    }
}

/// A service instance from its liveness record (KV `baton-services`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceJson {
    pub key: String,
    pub service: String,
    pub instance: String,
    pub version: String,
    /// `active` (holds the service's leadership lease) or `standby`;
    /// `None` for records without a role (services before high availability).
    pub role: Option<String>,
    /// The leadership term an active instance holds (0 on standby).
    pub term: u64,
    pub started_at: Option<String>,
    /// When the broker stored the record.
    pub reported_at: String,
    pub interval_ms: u64,
    pub applied_seq: u64,
    pub pending: u64,
    pub http_addr: String,
    /// Reported within three of its intervals (at least 5 s).
    pub alive: bool,
    /// Fields of the record this console does not know (newer services),
    /// by field number, as found on the wire.
    pub other_fields: BTreeMap<String, String>,
}

/// A liveness record as stored.
#[derive(Debug, Clone)]
pub struct ServiceRecord {
    pub status: pb::ServiceStatus,
    pub stored_at: Time,
    pub unknown: BTreeMap<u32, String>,
}

fn service_json(key: &str, r: &ServiceRecord, now: Time) -> ServiceJson {
    let s = &r.status;
    let allowed = std::time::Duration::from_millis(s.interval_ms.max(1) * 3)
        .max(std::time::Duration::from_secs(5));
    let role = (!s.role.is_empty()).then(|| s.role.clone());
    ServiceJson {
        key: key.to_string(),
        service: s.service.clone(),
        instance: s.instance.clone(),
        version: s.version.clone(),
        role,
        term: s.term,
        started_at: s
            .started_at
            .as_ref()
            .and_then(|t| {
                u32::try_from(t.nanos)
                    .ok()
                    .and_then(|n| Time::from_unix(t.seconds, n))
            })
            .map(ts),
        reported_at: ts(r.stored_at),
        interval_ms: s.interval_ms,
        applied_seq: s.applied_seq,
        pending: s.pending,
        http_addr: s.http_addr.clone(),
        alive: now.since(r.stored_at) <= allowed,
        other_fields: r
            .unknown
            .iter()
            .map(|(n, v)| (format!("field {n}"), v.clone()))
            .collect(),
    }
}

/// Fields of a protobuf message with numbers not in `known`, as text:
/// varints as numbers, length-delimited fields as UTF-8 text when they
/// are, else as a byte count. Lets the health page show what a newer
/// service writes before this console knows the field.
pub fn unknown_fields(bytes: &[u8], known: &[u32]) -> BTreeMap<u32, String> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < bytes.len() {
        let Some(tag) = varint(bytes, &mut i) else {
            break;
        };
        let (number, wire) = ((tag >> 3) as u32, tag & 7);
        let value = match wire {
            0 => varint(bytes, &mut i).map(|v| v.to_string()),
            1 => {
                i += 8;
                (i <= bytes.len()).then(|| "(64-bit value)".to_string())
            }
            2 => varint(bytes, &mut i).and_then(|len| {
                let end = i.checked_add(usize::try_from(len).ok()?)?;
                let field = bytes.get(i..end)?;
                i = end;
                Some(match std::str::from_utf8(field) {
                    Ok(s) => s.to_string(),
                    Err(_) => format!("({} bytes)", field.len()),
                })
            }),
            5 => {
                i += 4;
                (i <= bytes.len()).then(|| "(32-bit value)".to_string())
            }
            _ => None,
        };
        let Some(value) = value else { break };
        if !known.contains(&number) {
            out.insert(number, value);
        }
    }
    out
}

/// The field numbers of `ServiceStatus` this console knows.
pub const SERVICE_STATUS_FIELDS: [u32; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// Stream sizes, as last polled.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamJson {
    pub stream: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub consumers: usize,
}

/// A durable consumer's lag, as last polled.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsumerJson {
    pub stream: String,
    pub consumer: String,
    /// Messages not yet delivered to it: its lag.
    pub pending: u64,
    pub ack_pending: usize,
    pub delivered_seq: u64,
    pub ack_floor: u64,
}

/// A workflow in the list above the board.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkflowJson {
    pub id: String,
    pub tasks: usize,
    pub active: usize,
    pub stalled: usize,
    /// Its decision record's version (0 = no record).
    pub context_version: u64,
    pub decisions: u64,
}

/// One board column's numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnSummary {
    pub column: String,
    pub total: usize,
    pub stalled: usize,
    pub by_status: BTreeMap<&'static str, usize>,
}

/// A board column: its numbers and its first cards.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Column {
    #[serde(flatten)]
    pub summary: ColumnSummary,
    pub cards: Vec<Card>,
}

/// A workflow's pipeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Board {
    pub now: String,
    pub workflow: Option<String>,
    pub workflows: Vec<WorkflowJson>,
    pub columns: Vec<Column>,
    /// Cards per column sent (more exist when a column's total is larger).
    pub limit: usize,
}

/// What changed since the last flush, for the live feeds.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// Changed tasks, by workflow.
    pub cards: BTreeMap<String, Vec<Card>>,
    /// Removed tasks (KV deletes), by workflow.
    pub removed: BTreeMap<String, Vec<String>>,
    /// The columns of every workflow that changed.
    pub columns: BTreeMap<String, Vec<ColumnSummary>>,
    /// Alerts that changed (new notifications, resolutions).
    pub alerts: Vec<AlertJson>,
    pub silences_changed: bool,
    pub workflows: Option<Vec<WorkflowJson>>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
            && self.removed.is_empty()
            && self.alerts.is_empty()
            && !self.silences_changed
            && self.workflows.is_none()
    }
}

#[derive(Debug, Clone)]
struct StoredAlert {
    alert: Alert,
    seq: u64,
    /// On a resolution: the firing notification it resolves, and its seq.
    fired: Option<Box<(Alert, u64)>>,
}

impl StoredAlert {
    fn json(&self, silenced_by: Option<String>) -> AlertJson {
        let mut json = alert_json(&self.alert, self.seq, silenced_by);
        json.fired = self
            .fired
            .as_deref()
            .map(|(a, seq)| Box::new(alert_json(a, *seq, None)));
        json
    }
}

/// Everything the console knows.
#[derive(Debug, Default)]
pub struct Model {
    tasks: HashMap<String, Task>,
    by_workflow: HashMap<String, HashSet<String>>,
    /// Per workflow and stage, the earliest stream sequence at which a task
    /// was seen entering it: the pipeline's order of stages.
    stage_entry: HashMap<(String, String), u64>,
    /// Latest notification per alert subject (kind, task).
    alerts: HashMap<String, StoredAlert>,
    /// Subjects of firing conditions, by task.
    firing_by_task: HashMap<String, BTreeSet<String>>,
    last_alert: Option<StoredAlert>,
    silences: HashMap<String, Silence>,
    services: BTreeMap<String, ServiceRecord>,
    /// Decision-record version and entry count per workflow.
    context: BTreeMap<String, (u64, u64)>,
    streams: Vec<StreamJson>,
    consumers: Vec<ConsumerJson>,
    /// Problems reading NATS, by feed, shown on the health page.
    problems: BTreeMap<&'static str, String>,
    dirty_tasks: HashSet<String>,
    removed: Vec<(String, String)>,
    dirty_alerts: Vec<String>,
    silences_changed: bool,
    workflows_changed: bool,
}

impl Model {
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// A task's state changed (KV `baton-tasks`).
    pub fn put_task(&mut self, task: Task) {
        let id = task.id.to_string();
        let workflow = task.workflow.to_string();
        if let Some(stage) = &task.stage {
            // A task enters its first stage when created, a later one with
            // the event that moved it there.
            let entered = match self.tasks.get(&id).map(|old| old.stage.as_ref()) {
                None => Some(task.created.seq),
                Some(old) if old == Some(stage) => None, // recorded when it entered
                Some(_) => Some(task.last_event.seq),
            };
            if let Some(entered) = entered {
                let e = self
                    .stage_entry
                    .entry((workflow.clone(), stage.to_string()))
                    .or_insert(u64::MAX);
                *e = (*e).min(entered);
            }
        }
        let set = self.by_workflow.entry(workflow).or_default();
        if set.insert(id.clone()) && set.len() == 1 {
            self.workflows_changed = true;
        }
        self.dirty_tasks.insert(id.clone());
        self.tasks.insert(id, task);
    }

    /// A task's state was deleted from KV.
    pub fn remove_task(&mut self, id: &str) {
        if let Some(t) = self.tasks.remove(id) {
            let workflow = t.workflow.to_string();
            if let Some(set) = self.by_workflow.get_mut(&workflow) {
                set.remove(id);
                if set.is_empty() {
                    self.by_workflow.remove(&workflow);
                    self.workflows_changed = true;
                }
            }
            self.dirty_tasks.remove(id);
            self.removed.push((workflow, id.to_string()));
        }
    }

    /// An alert notification was stored on `subject` at `seq`. The latest
    /// notification per subject is the alert's state; an older one (a
    /// replay) only fills in the fault report a resolution resolves.
    pub fn put_alert(&mut self, subject: &str, alert: Alert, seq: u64) {
        if let Some(current) = self.alerts.get_mut(subject)
            && current.seq >= seq
        {
            if current.alert.state == AlertState::Resolved
                && alert.state == AlertState::Firing
                && current.alert.resolves.as_deref() == Some(alert.id.as_str())
                && current.fired.as_ref().is_none_or(|f| f.1 < seq)
            {
                current.fired = Some(Box::new((alert, seq)));
                self.dirty_alerts.push(subject.to_string());
            }
            return;
        }
        if let Some(task) = &alert.task {
            let task = task.to_string();
            let firing = self.firing_by_task.entry(task.clone()).or_default();
            let changed = if alert.kind.is_stall() && alert.state == AlertState::Firing {
                firing.insert(subject.to_string())
            } else {
                firing.remove(subject)
            };
            if firing.is_empty() {
                self.firing_by_task.remove(&task);
            }
            if changed && self.tasks.contains_key(&task) {
                self.dirty_tasks.insert(task);
            }
        }
        let previous = self.alerts.remove(subject);
        let fired = match (&alert.state, previous) {
            (AlertState::Resolved, Some(p))
                if p.alert.state == AlertState::Firing
                    && alert.resolves.as_deref() == Some(p.alert.id.as_str()) =>
            {
                Some(Box::new((p.alert, p.seq)))
            }
            _ => None,
        };
        let stored = StoredAlert { alert, seq, fired };
        if self.last_alert.as_ref().is_none_or(|l| l.seq < seq) {
            self.last_alert = Some(stored.clone());
        }
        self.alerts.insert(subject.to_string(), stored);
        self.dirty_alerts.push(subject.to_string());
    }

    /// A silence was stored (or changed).
    pub fn put_silence(&mut self, key: &str, silence: Option<Silence>) {
        match silence {
            Some(s) => self.silences.insert(key.to_string(), s),
            None => self.silences.remove(key),
        };
        self.silences_changed = true;
        // Cards show whether their alerts are silenced.
        let tasks: Vec<String> = self.firing_by_task.keys().cloned().collect();
        for t in tasks {
            if self.tasks.contains_key(&t) {
                self.dirty_tasks.insert(t);
            }
        }
    }

    pub fn put_service(&mut self, key: &str, record: Option<ServiceRecord>) {
        match record {
            Some(r) => self.services.insert(key.to_string(), r),
            None => self.services.remove(key),
        };
    }

    /// A decision was recorded for `workflow` at `version`.
    pub fn put_decision(&mut self, workflow: &str, version: u64) {
        let e = self.context.entry(workflow.to_string()).or_default();
        e.0 = e.0.max(version);
        e.1 += 1;
        self.workflows_changed = true;
    }

    pub fn set_streams(&mut self, streams: Vec<StreamJson>, consumers: Vec<ConsumerJson>) {
        self.streams = streams;
        self.consumers = consumers;
    }

    /// Sets (`Some`) or clears a feed's problem.
    pub fn set_problem(&mut self, feed: &'static str, problem: Option<String>) {
        match problem {
            Some(p) => self.problems.insert(feed, p),
            None => self.problems.remove(feed),
        };
    }

    pub fn problems(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|(feed, p)| format!("{feed}: {p}"))
            .collect()
    }

    fn silenced_by(&self, alert: &Alert, now: Time) -> Option<String> {
        let mut ids: Vec<&Silence> = self
            .silences
            .values()
            .filter(|s| s.mutes(alert, now))
            .collect();
        ids.sort_by(|a, b| a.id.cmp(&b.id));
        ids.first().map(|s| s.id.clone())
    }

    /// A task as a card.
    pub fn card(&self, task: &Task, now: Time) -> Card {
        let id = task.id.to_string();
        let alerts: Vec<CardAlert> = self
            .firing_by_task
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|subject| self.alerts.get(subject))
            .map(|a| CardAlert {
                kind: a.alert.kind.as_str().to_string(),
                id: a.alert.id.clone(),
                since: ts(a.alert.due_at.unwrap_or(a.alert.observed_at)),
                silenced: self.silenced_by(&a.alert, now).is_some(),
            })
            .collect();
        let stalled = !alerts.is_empty() && !task.status.is_terminal();
        Card {
            id,
            workflow: task.workflow.to_string(),
            stage: task.stage.as_ref().map(ToString::to_string),
            column: column_of(task),
            title: task.title().to_string(),
            status: task.status.as_str(),
            owner: task.owner.as_ref().map(ToString::to_string),
            epoch: task.epoch,
            created_at: ts(task.created.at),
            updated_at: ts(task.updated_at),
            last_event: EventJson::from(&task.last_event),
            handoff: task.pending_handoff.as_deref().map(|h| {
                let (to_kind, to) = match &h.to {
                    HandoffTarget::Agent(a) => ("agent", a.to_string()),
                    HandoffTarget::Stage(s) => ("stage", s.to_string()),
                };
                HandoffJson {
                    from: h.from.to_string(),
                    to_kind,
                    to,
                    offered_at: ts(h.offered.at),
                    accept_by: opt_ts(h.accept_by()),
                    output_location: h.output_location.clone(),
                }
            }),
            alerts,
            stalled,
            violations: task.violations,
            context_version: task.context_version,
            rank: rank(task, stalled),
        }
    }

    fn stalled(&self, task: &Task) -> bool {
        !task.status.is_terminal() && self.firing_by_task.contains_key(task.id.as_str())
    }

    /// The workflows, busiest first.
    pub fn workflows(&self) -> Vec<WorkflowJson> {
        let mut names: BTreeSet<&str> = self.by_workflow.keys().map(String::as_str).collect();
        names.extend(self.context.keys().map(String::as_str));
        let mut out: Vec<WorkflowJson> = names
            .into_iter()
            .map(|w| {
                let ids = self.by_workflow.get(w);
                let tasks = ids
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.tasks.get(id));
                let (mut total, mut active, mut stalled) = (0, 0, 0);
                for t in tasks {
                    total += 1;
                    if !t.status.is_terminal() {
                        active += 1;
                    }
                    if self.stalled(t) {
                        stalled += 1;
                    }
                }
                let (context_version, decisions) = self.context.get(w).copied().unwrap_or((0, 0));
                WorkflowJson {
                    id: w.to_string(),
                    tasks: total,
                    active,
                    stalled,
                    context_version,
                    decisions,
                }
            })
            .collect();
        out.sort_by(|a, b| b.active.cmp(&a.active).then_with(|| a.id.cmp(&b.id)));
        out
    }

    fn workflow_tasks<'a>(&'a self, workflow: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_workflow
            .get(workflow)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// A workflow's columns: its stages in pipeline order, then tasks with
    /// no stage, then finished ones. A stage comes before another when a
    /// task was seen entering it earlier (work enters a pipeline at its
    /// first stage and moves on).
    pub fn columns(&self, workflow: &str) -> Vec<ColumnSummary> {
        let mut stages: BTreeMap<String, ColumnSummary> = BTreeMap::new();
        for t in self.workflow_tasks(workflow) {
            let column = column_of(t);
            let summary = stages
                .entry(column.clone())
                .or_insert_with(|| ColumnSummary {
                    column,
                    total: 0,
                    stalled: 0,
                    by_status: BTreeMap::new(),
                });
            summary.total += 1;
            if self.stalled(t) {
                summary.stalled += 1;
            }
            *summary.by_status.entry(t.status.as_str()).or_default() += 1;
        }
        let mut out: Vec<ColumnSummary> = stages.into_values().collect();
        let place = |c: &ColumnSummary| match c.column.as_str() {
            FINISHED => (2, 0),
            NO_STAGE => (1, 0),
            stage => (
                0,
                self.stage_entry
                    .get(&(workflow.to_string(), stage.to_string()))
                    .copied()
                    .unwrap_or(u64::MAX),
            ),
        };
        out.sort_by(|a, b| {
            place(a)
                .cmp(&place(b))
                .then_with(|| a.column.cmp(&b.column))
        });
        out
    }

    /// A workflow's board with the first `limit` cards of each column
    /// (the busiest workflow when none is given).
    pub fn board(&self, workflow: Option<&str>, limit: usize, now: Time) -> Board {
        let workflows = self.workflows();
        let workflow = workflow
            .map(str::to_string)
            .or_else(|| workflows.first().map(|w| w.id.clone()));
        let mut columns = Vec::new();
        if let Some(w) = &workflow {
            // Cards only for what is sent: rank every task (cheap), build
            // cards for each column's first `limit`.
            let mut by_column: HashMap<String, Vec<(u64, &Task)>> = HashMap::new();
            for t in self.workflow_tasks(w) {
                by_column
                    .entry(column_of(t))
                    .or_default()
                    .push((rank(t, self.stalled(t)), t));
            }
            for summary in self.columns(w) {
                let mut ranked = by_column.remove(&summary.column).unwrap_or_default();
                let order = |a: &(u64, &Task), b: &(u64, &Task)| {
                    a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id))
                };
                if ranked.len() > limit && limit > 0 {
                    ranked.select_nth_unstable_by(limit - 1, order);
                    ranked.truncate(limit);
                }
                ranked.sort_by(order);
                ranked.truncate(limit);
                let cards = ranked.into_iter().map(|(_, t)| self.card(t, now)).collect();
                columns.push(Column { summary, cards });
            }
        }
        Board {
            now: ts(now),
            workflow,
            workflows,
            columns,
            limit,
        }
    }

    /// Tasks for scripts: filtered, in id order, paged by id.
    pub fn list_tasks(&self, filter: &TaskFilter, now: Time) -> (Vec<Card>, usize) {
        let matches = |t: &Task| {
            filter
                .workflow
                .as_deref()
                .is_none_or(|w| t.workflow.as_str() == w)
                && filter
                    .stage
                    .as_deref()
                    .is_none_or(|s| t.stage.as_ref().is_some_and(|st| st.as_str() == s))
                && filter.status.is_none_or(|s| t.status == s)
                && filter
                    .owner
                    .as_deref()
                    .is_none_or(|o| t.owner.as_ref().is_some_and(|a| a.as_str() == o))
                && (!filter.stalled || self.stalled(t))
        };
        let mut ids: Vec<&String> = match &filter.workflow {
            Some(w) => self.by_workflow.get(w).into_iter().flatten().collect(),
            None => self.tasks.keys().collect(),
        };
        ids.sort();
        let mut total = 0;
        let mut out = Vec::new();
        for id in ids {
            let Some(t) = self.tasks.get(id) else {
                continue;
            };
            if !matches(t) {
                continue;
            }
            total += 1;
            if filter.after.as_deref().is_some_and(|a| id.as_str() <= a)
                || out.len() >= filter.limit
            {
                continue;
            }
            out.push(self.card(t, now));
        }
        (out, total)
    }

    /// Alerts: conditions firing now, conditions resolved within the last
    /// hour, protocol reports of the last day; newest first.
    pub fn alerts(&self, now: Time) -> AlertsView {
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        let mut reports = Vec::new();
        for a in self.alerts.values() {
            let json = || a.json(self.silenced_by(&a.alert, now));
            if a.alert.kind.is_report() {
                if now.since(a.alert.observed_at) <= REPORTS_WINDOW {
                    reports.push(json());
                }
            } else if a.alert.state == AlertState::Firing {
                firing.push(json());
            } else if now.since(a.alert.observed_at) <= RESOLVED_WINDOW {
                resolved.push(json());
            }
        }
        for list in [&mut firing, &mut resolved, &mut reports] {
            list.sort_by_key(|a| std::cmp::Reverse(a.seq));
            list.truncate(MAX_LISTED);
        }
        let mut silences: Vec<SilenceJson> = self
            .silences
            .values()
            .map(|s| silence_json(s, now))
            .collect();
        silences.sort_by(|a, b| b.active.cmp(&a.active).then_with(|| a.until.cmp(&b.until)));
        AlertsView {
            now: ts(now),
            firing,
            resolved,
            reports,
            silences,
        }
    }

    /// The alerts about one task (firing, resolved, reports), newest first.
    pub fn task_alerts(&self, task: &str, now: Time) -> Vec<AlertJson> {
        let mut out: Vec<AlertJson> = self
            .alerts
            .values()
            .filter(|a| a.alert.task.as_ref().is_some_and(|t| t.as_str() == task))
            .map(|a| a.json(self.silenced_by(&a.alert, now)))
            .collect();
        out.sort_by_key(|a| std::cmp::Reverse(a.seq));
        out
    }

    pub fn health(&self, now: Time) -> HealthView {
        HealthView {
            now: ts(now),
            services: self
                .services
                .iter()
                .map(|(k, r)| service_json(k, r, now))
                .collect(),
            streams: self.streams.clone(),
            consumers: self.consumers.clone(),
            last_alert: self
                .last_alert
                .as_ref()
                .map(|a| a.json(self.silenced_by(&a.alert, now))),
            workflows: self.workflows(),
            tasks: self.tasks.len(),
            firing: self
                .alerts
                .values()
                .filter(|a| !a.alert.kind.is_report() && a.alert.state == AlertState::Firing)
                .count(),
            problems: self.problems(),
        }
    }

    /// Takes what changed since the last call.
    pub fn take_delta(&mut self, now: Time) -> Delta {
        let mut delta = Delta::default();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for id in std::mem::take(&mut self.dirty_tasks) {
            if let Some(t) = self.tasks.get(&id) {
                let card = self.card(t, now);
                touched.insert(card.workflow.clone());
                delta
                    .cards
                    .entry(card.workflow.clone())
                    .or_default()
                    .push(card);
            }
        }
        for (workflow, id) in std::mem::take(&mut self.removed) {
            touched.insert(workflow.clone());
            delta.removed.entry(workflow).or_default().push(id);
        }
        for w in touched {
            let columns = self.columns(&w);
            delta.columns.insert(w, columns);
        }
        let mut seen = HashSet::new();
        for subject in std::mem::take(&mut self.dirty_alerts) {
            if seen.insert(subject.clone())
                && let Some(a) = self.alerts.get(&subject)
            {
                delta.alerts.push(a.json(self.silenced_by(&a.alert, now)));
            }
        }
        delta.silences_changed = std::mem::take(&mut self.silences_changed);
        // Workflow counts move with every card change; send them when the
        // set of workflows changed or any card did.
        if std::mem::take(&mut self.workflows_changed) || !delta.cards.is_empty() {
            delta.workflows = Some(self.workflows());
        }
        delta
    }
}

/// Filters of `/api/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub workflow: Option<String>,
    pub stage: Option<String>,
    pub status: Option<baton_core::TaskStatus>,
    pub owner: Option<String>,
    pub stalled: bool,
    pub after: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    pub now: String,
    pub firing: Vec<AlertJson>,
    pub resolved: Vec<AlertJson>,
    pub reports: Vec<AlertJson>,
    pub silences: Vec<SilenceJson>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub now: String,
    pub services: Vec<ServiceJson>,
    pub streams: Vec<StreamJson>,
    pub consumers: Vec<ConsumerJson>,
    pub last_alert: Option<AlertJson>,
    pub workflows: Vec<WorkflowJson>,
    pub tasks: usize,
    pub firing: usize,
    /// What the console could not read, if anything.
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{AgentId, EventKind, TaskId, TaskStatus, WorkflowId, task::Mark};

    fn task(id: &str, stage: &str, created: u64, last: u64) -> Task {
        let at = Time::from_unix_millis(created);
        let mark = Mark { at, seq: created };
        Task {
            id: TaskId::new(id).unwrap(),
            workflow: WorkflowId::new("w").unwrap(),
            stage: Some(baton_core::StageName::new(stage).unwrap()),
            details: None,
            status: TaskStatus::Submitted,
            owner: None,
            epoch: 0,
            pending_handoff: None,
            context_version: 0,
            lease: None,
            created: mark,
            updated_at: at,
            last_event: EventRef {
                kind: EventKind::Created,
                agent: AgentId::new("p").unwrap(),
                at,
                seq: last,
            },
            seen_seq: last,
            last_heartbeat_at: None,
            last_progress_at: None,
            owned_since: None,
            alive_since: None,
            progress_since: None,
            waiting_since: None,
            blocked_since: None,
            violations: 0,
        }
    }

    #[test]
    fn stages_are_ordered_by_when_work_entered_them() {
        let mut m = Model::default();
        m.put_task(task("t1", "draft", 1, 1));
        m.put_task(task("t2", "draft", 2, 2));
        // t1 moves on to review; draft keeps t2; a new task lands in draft.
        m.put_task(task("t1", "review", 1, 5));
        m.put_task(task("t3", "draft", 6, 6));
        // "publish" sorts before "review" by name, not by flow.
        m.put_task(task("t2", "publish", 2, 9));
        let order: Vec<String> = m.columns("w").into_iter().map(|c| c.column).collect();
        assert_eq!(order, ["draft", "review", "publish"]);
        let board = m.board(Some("w"), 1, Time::from_unix_millis(10));
        assert_eq!(board.columns[0].summary.total, 1);
        assert_eq!(board.columns[0].cards.len(), 1);
    }

    #[test]
    fn unknown_fields_are_found_and_known_ones_skipped() {
        let s = pb::ServiceStatus {
            service: "orchestrator".into(),
            instance: "a".into(),
            interval_ms: 2000,
            role: "standby".into(),
            ..Default::default()
        };
        let mut bytes = baton_proto::prost::Message::encode_to_vec(&s);
        // What a newer service might add: field 12, length-delimited
        // "zone-a"; field 13, varint 7.
        bytes.extend_from_slice(&[0x62, 6]);
        bytes.extend_from_slice(b"zone-a");
        bytes.extend_from_slice(&[0x68, 7]);
        let unknown = unknown_fields(&bytes, &SERVICE_STATUS_FIELDS);
        assert_eq!(unknown.get(&12).map(String::as_str), Some("zone-a"));
        assert_eq!(unknown.get(&13).map(String::as_str), Some("7"));
        assert_eq!(unknown.len(), 2);
        let record = ServiceRecord {
            status: s,
            stored_at: Time::from_unix_millis(1000),
            unknown,
        };
        let json = service_json("orchestrator.a", &record, Time::from_unix_millis(2000));
        assert_eq!(json.role.as_deref(), Some("standby"));
        assert_eq!(
            json.other_fields.get("field 12").map(String::as_str),
            Some("zone-a")
        );
        assert!(json.alive);
        // Garbage never panics.
        let _ = unknown_fields(&[0xff, 0xff, 0xff], &[]);
        let _ = unknown_fields(&[0x0a, 0xff, 0x01], &[]);
    }
}
