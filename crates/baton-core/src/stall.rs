//! The stall detector's engine: deadlines, alert lifecycle, inhibition and
//! silences, on time passed in.
//!
//! Shaped like a protocol state machine (quinn-proto's `handle_timeout(now)`
//! / `poll_timeout()`): the service feeds it events and the current time and
//! publishes the alerts it returns; the backtester feeds it recorded history
//! on virtual time. Nothing here reads a clock or touches the network.
//!
//! Driving rule: before handing over an event stored at `t`, call
//! `handle_timeout(t - 1ns)`, so an expectation that was due before the
//! event arrived fires even when the event is processed late (backlog,
//! backtest).
//!
//! Broker outages (decision 9): the service tells the engine about windows
//! in which the broker could not store or deliver events
//! ([`Detector::record_outage`]); an expectation's window then counts only
//! the time outside them, so agents are not blamed for an election.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    time::Duration,
};

use crate::{
    alert::{Alert, AlertKind},
    event::{Event, EventMeta},
    expect::{
        Expectation, ExpectationKind, agents_involved, expectations, resolution_summary,
        stall_alert,
    },
    fold::{Disposition, Policy, apply, apply_known},
    ids::{AgentId, StageName, TaskId, WorkflowId},
    rules::Rules,
    task::Task,
    time::Time,
};

/// How long an alert that is firing but not paged (silenced or inhibited)
/// waits before it is looked at again when nothing else wakes it.
const RECHECK: Duration = Duration::from_secs(60);

/// Windows in which the broker could not store or deliver events: time in
/// them does not count against anyone's deadline (decision 9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outages {
    /// Disjoint, in order.
    windows: VecDeque<(Time, Time)>,
}

impl Outages {
    /// Windows kept; the oldest is forgotten first (an expectation armed
    /// before it then counts that outage against its window).
    pub const MAX: usize = 256;

    /// Adds the window `[from, until)`, merged with any it touches.
    pub fn record(&mut self, from: Time, until: Time) {
        if until <= from {
            return;
        }
        let (mut from, mut until) = (from, until);
        let mut kept = VecDeque::with_capacity(self.windows.len() + 1);
        for &(a, b) in &self.windows {
            if b < from || a > until {
                kept.push_back((a, b));
            } else {
                from = from.min(a);
                until = until.max(b);
            }
        }
        let at = kept
            .iter()
            .position(|&(a, _)| a > from)
            .unwrap_or(kept.len());
        kept.insert(at, (from, until));
        while kept.len() > Self::MAX {
            kept.pop_front();
        }
        self.windows = kept;
    }

    /// When a window of `window` starting at `since` ends, counting only
    /// time outside the outages.
    pub fn due(&self, since: Time, window: Duration) -> Time {
        let mut at = since;
        let mut left = window;
        for &(a, b) in &self.windows {
            if b <= at {
                continue;
            }
            let run = a.max(at).since(at);
            if run >= left {
                break;
            }
            left -= run;
            at = b;
        }
        at.saturating_add(left)
    }

    /// When expectation `e` is due.
    pub fn due_of(&self, e: &Expectation) -> Time {
        self.due(e.since.at, e.window)
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// Alerts matching every set field are not paged until `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: String,
    pub task: Option<TaskId>,
    pub kind: Option<AlertKind>,
    pub agent: Option<AgentId>,
    pub until: Time,
    pub created_by: String,
    pub reason: String,
    pub created_at: Time,
}

impl Silence {
    /// Whether this silence mutes `alert` at `now`.
    pub fn mutes(&self, alert: &Alert, now: Time) -> bool {
        now < self.until
            && self
                .task
                .as_ref()
                .is_none_or(|t| alert.task.as_ref() == Some(t))
            && self.kind.is_none_or(|k| k == alert.kind)
            && self.agent.as_ref().is_none_or(|a| alert.agents.contains(a))
    }
}

/// Identity of an expectation, as encoded in its alert id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    kind: ExpectationKind,
    epoch: u64,
    anchor: u64,
}

impl Key {
    fn of(e: &Expectation) -> Key {
        Key {
            kind: e.kind,
            epoch: e.epoch,
            anchor: e.since.seq,
        }
    }
}

/// A missed expectation whose alert is firing.
#[derive(Debug, Clone)]
struct Firing {
    key: Key,
    due: Time,
    agents: Vec<AgentId>,
    /// Notifications sent; 0 = not paged yet (silenced or inhibited).
    sent: u32,
    last_sent: Option<Time>,
    /// When it was last evaluated.
    checked: Time,
}

#[derive(Debug, Clone)]
struct Tracked {
    task: Task,
    firing: Vec<Firing>,
    next_check: Option<Time>,
}

/// Counters a service exposes as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorStats {
    pub fired: u64,
    pub renotified: u64,
    pub resolved: u64,
    pub silenced: u64,
    pub inhibited: u64,
}

/// Tracked tasks, stored compactly: a slab of entries and a small index
/// from id to slot, so the hash table holds 20-byte entries rather than
/// whole tasks, and timers refer to slots.
#[derive(Debug, Default)]
struct Store {
    slots: Vec<Option<Tracked>>,
    free: Vec<u32>,
    index: HashMap<TaskId, u32, foldhash::fast::RandomState>,
}

impl Store {
    fn slot(&self, id: &TaskId) -> Option<u32> {
        self.index.get(id).copied()
    }

    fn get(&self, id: &TaskId) -> Option<&Tracked> {
        self.at(self.slot(id)?)
    }

    fn get_mut(&mut self, id: &TaskId) -> Option<&mut Tracked> {
        let slot = self.slot(id)?;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    fn at(&self, slot: u32) -> Option<&Tracked> {
        self.slots.get(slot as usize)?.as_ref()
    }

    fn insert(&mut self, id: TaskId, tracked: Tracked) {
        if let Some(existing) = self.get_mut(&id) {
            *existing = tracked;
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(tracked);
                slot
            }
            None => {
                self.slots.push(Some(tracked));
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(id, slot);
    }

    fn remove(&mut self, id: &TaskId) -> Option<Tracked> {
        let slot = self.index.remove(id)?;
        self.free.push(slot);
        self.slots.get_mut(slot as usize)?.take()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &Tracked> {
        self.slots.iter().flatten()
    }
}

/// Ids shared by many tasks (workflows, stages, agents) are kept once.
#[derive(Debug, Default)]
struct Interner {
    workflows: HashSet<WorkflowId, foldhash::fast::RandomState>,
    stages: HashSet<StageName, foldhash::fast::RandomState>,
    agents: HashSet<AgentId, foldhash::fast::RandomState>,
}

fn shared<T: Clone + Eq + std::hash::Hash>(
    pool: &mut HashSet<T, foldhash::fast::RandomState>,
    value: &mut T,
) {
    match pool.get(value) {
        Some(existing) => *value = existing.clone(),
        None => {
            pool.insert(value.clone());
        }
    }
}

impl Interner {
    /// Points the task's ids at the shared copies.
    fn share(&mut self, task: &mut Task) {
        shared(&mut self.workflows, &mut task.workflow);
        if let Some(stage) = task.stage.as_mut() {
            shared(&mut self.stages, stage);
        }
        for agent in [
            task.owner.as_mut(),
            task.details
                .as_deref_mut()
                .and_then(|d| d.assignee.as_mut()),
            Some(&mut task.last_event.agent),
        ]
        .into_iter()
        .flatten()
        {
            shared(&mut self.agents, agent);
        }
    }
}

/// The detector's snapshot value for a task that ended (completed, failed,
/// cancelled): the task is no longer tracked, but it is remembered, so a
/// later event for it (a late `TaskCreated`, anything) never makes the
/// detector track it again (decision 10: terminal stays terminal).
pub const ENDED_SNAPSHOT: &[u8] = b"baton.ended";

/// The stall detector's state: tracked tasks, their deadlines, firing alerts.
#[derive(Debug)]
pub struct Detector {
    rules: Rules,
    policy: Policy,
    tasks: Store,
    /// Tasks that ended: never tracked again. An id costs a few dozen bytes,
    /// as a task's record in the orchestrator's KV does.
    ended: HashSet<TaskId, foldhash::fast::RandomState>,
    /// (next check, slot), earliest first.
    schedule: BTreeSet<(Time, u32)>,
    ids: Interner,
    silences: Vec<Silence>,
    stats: DetectorStats,
    outages: Outages,
}

impl Detector {
    pub fn new(rules: Rules, policy: Policy) -> Detector {
        Detector {
            rules,
            policy,
            tasks: Store::default(),
            ended: HashSet::default(),
            schedule: BTreeSet::new(),
            ids: Interner::default(),
            silences: Vec::new(),
            stats: DetectorStats::default(),
            outages: Outages::default(),
        }
    }

    /// The broker could not store or deliver events from `from` until
    /// `until` (decision 9): every expectation's window is extended by the
    /// part of the outage it overlaps. Nothing fires or resolves here; the
    /// next `handle_timeout` judges with the new deadlines.
    pub fn record_outage(&mut self, from: Time, until: Time) {
        self.outages.record(from, until);
        let ids: Vec<TaskId> = self.tasks.values().map(|t| t.task.id.clone()).collect();
        for id in ids {
            let next = self.next_check(&id);
            self.reschedule(&id, next);
        }
    }

    /// The outages recorded so far.
    pub fn outages(&self) -> &Outages {
        &self.outages
    }

    /// Tasks being tracked (not ended).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Alerts currently firing (paged or not).
    pub fn firing_count(&self) -> usize {
        self.tasks.values().map(|t| t.firing.len()).sum()
    }

    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// A tracked task's state.
    pub fn task(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id).map(|t| &t.task)
    }

    /// Whether the task ended (and is therefore not tracked).
    pub fn has_ended(&self, id: &TaskId) -> bool {
        self.ended.contains(id)
    }

    /// Tasks known to have ended.
    pub fn ended_count(&self) -> usize {
        self.ended.len()
    }

    /// The ids of alerts firing for a task.
    pub fn firing_ids(&self, id: &TaskId) -> Vec<String> {
        self.tasks.get(id).map_or_else(Vec::new, |t| {
            t.firing
                .iter()
                .map(|f| firing_id(&t.task.id, f.key))
                .collect()
        })
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.schedule.first().map(|(t, _)| *t)
    }

    /// Replaces the silences. Alerts a lifted silence was muting are paged
    /// at the next `handle_timeout`.
    pub fn set_silences(&mut self, silences: Vec<Silence>, now: Time) {
        self.silences = silences;
        let muted: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.firing.iter().any(|f| f.sent == 0))
            .map(|t| t.task.id.clone())
            .collect();
        for id in muted {
            self.reschedule(&id, Some(now));
        }
    }

    /// Adds a task from a snapshot (restart).
    pub fn restore(&mut self, mut task: Task) {
        if task.status.is_terminal() {
            self.restore_ended(task.id);
            return;
        }
        self.ids.share(&mut task);
        let id = task.id.clone();
        self.tasks.insert(
            id.clone(),
            Tracked {
                task,
                firing: Vec::new(),
                next_check: None,
            },
        );
        let next = self.next_check(&id);
        self.reschedule(&id, next);
    }

    /// Remembers from a snapshot that a task ended ([`ENDED_SNAPSHOT`]).
    pub fn restore_ended(&mut self, id: TaskId) {
        if let Some(slot) = self.tasks.slot(&id) {
            if let Some(next) = self.tasks.at(slot).and_then(|t| t.next_check) {
                self.schedule.remove(&(next, slot));
            }
            self.tasks.remove(&id);
        }
        self.ended.insert(id);
    }

    /// Adopts an alert that was firing before a restart (the latest alert of
    /// its kind for its task in `BATON_ALERTS`), so it is neither paged
    /// again nor forgotten. Returns false if the alert is not a stall alert
    /// of a tracked task.
    pub fn restore_firing(&mut self, alert: &Alert) -> bool {
        let (Some(task_id), Some(key)) = (alert.task.as_ref(), parse_key(alert)) else {
            return false;
        };
        let Some(tracked) = self.tasks.get_mut(task_id) else {
            return false;
        };
        if tracked.firing.iter().any(|f| f.key == key) {
            return true;
        }
        tracked.firing.push(Firing {
            key,
            due: alert.due_at.unwrap_or(alert.observed_at),
            agents: alert.agents.clone(),
            sent: alert.notification + 1,
            last_sent: Some(alert.observed_at),
            checked: alert.observed_at,
        });
        // Same order as a run that never restarted (see `evaluate`).
        tracked.firing.sort_by_key(|f| f.key);
        let id = task_id.clone();
        let next = self.next_check(&id);
        self.reschedule(&id, next);
        true
    }

    /// Folds an event; returns the resolutions it causes.
    pub fn handle_event(&mut self, event: &Event, meta: EventMeta) -> Vec<Alert> {
        let id = &event.task;
        if self.ended.contains(id) {
            // The orchestrator refuses it (after terminal); nothing is
            // expected of an ended task.
            return Vec::new();
        }
        let duplicate = match self.tasks.get_mut(id) {
            Some(tracked) => {
                let outcome = apply_known(&mut tracked.task, event, meta, &self.policy);
                if outcome.disposition != Disposition::Duplicate {
                    self.ids.share(&mut tracked.task);
                }
                outcome.disposition == Disposition::Duplicate
            }
            None => {
                let mut slot = None;
                apply(&mut slot, event, meta, &self.policy);
                let Some(mut task) = slot else {
                    return Vec::new();
                };
                self.ids.share(&mut task);
                self.tasks.insert(
                    id.clone(),
                    Tracked {
                        task,
                        firing: Vec::new(),
                        next_check: None,
                    },
                );
                false
            }
        };
        let mut out = Vec::new();
        if duplicate {
            return out;
        }
        self.resolve_gone(id, meta.stored_at, &mut out);
        if self
            .tasks
            .get(id)
            .is_some_and(|t| t.task.status.is_terminal())
        {
            self.reschedule(id, None);
            self.tasks.remove(id);
            self.ended.insert(id.clone());
            return out;
        }
        let next = self.next_check(id);
        self.reschedule(id, next);
        out
    }

    /// Fires expectations due at or before `now`, re-notifies and re-checks
    /// muted ones; returns the alerts to publish.
    pub fn handle_timeout(&mut self, now: Time) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some((due, slot)) = self.schedule.first().copied() {
            if due > now {
                break;
            }
            self.schedule.remove(&(due, slot));
            let Some(id) = self.tasks.at(slot).map(|t| t.task.id.clone()) else {
                continue;
            };
            if let Some(t) = self.tasks.get_mut(&id) {
                t.next_check = None;
            }
            self.evaluate(&id, now, &mut out);
            let next = self.next_check(&id);
            self.reschedule(&id, next);
        }
        out
    }

    /// Fires everything due up to `until`, each at its own due time: what a
    /// detector that was running all along, caught up, would have published
    /// (the backtester's virtual time). Returns the alerts in order.
    pub fn run_until(&mut self, until: Time) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some(next) = self.poll_timeout().filter(|t| *t <= until) {
            out.extend(self.handle_timeout(next));
            // Everything due at `next` was handled; a timer at or before it
            // again would never advance virtual time.
            if self.poll_timeout().is_some_and(|t| t <= next) {
                debug_assert!(false, "a timer did not advance past {next:?}");
                break;
            }
        }
        out
    }

    /// The tracked tasks (for snapshots).
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().map(|t| &t.task)
    }

    fn evaluate(&mut self, id: &TaskId, now: Time, out: &mut Vec<Alert>) {
        let Some(Tracked { task, firing, .. }) = self.tasks.get_mut(id) else {
            return;
        };
        let renotify = self
            .rules
            .resolve(&task.workflow, task.stage.as_ref())
            .renotify;
        // `expectations` lists an offer's Acceptance before its Start, so an
        // inhibiting alert is always firing before the one it inhibits.
        let outages = &self.outages;
        for e in expectations(task, &self.rules)
            .iter()
            .filter(|e| outages.due_of(e) <= now)
        {
            let due = outages.due_of(e);
            let key = Key::of(e);
            let index = match firing.iter().position(|f| f.key == key) {
                Some(i) => {
                    let f = &firing[i];
                    let again = match (f.sent, f.last_sent, renotify) {
                        (0, _, _) => true,
                        (_, Some(last), Some(every)) => last.saturating_add(every) <= now,
                        _ => false,
                    };
                    if !again {
                        continue;
                    }
                    i
                }
                None => {
                    firing.push(Firing {
                        key,
                        due,
                        agents: agents_involved(task, e.kind),
                        sent: 0,
                        last_sent: None,
                        checked: now,
                    });
                    firing.len() - 1
                }
            };
            let inhibited = e.kind == ExpectationKind::Start
                && task
                    .pending_handoff
                    .as_deref()
                    .is_some_and(|p| p.offered.seq == key.anchor)
                && firing.iter().any(|f| {
                    f.key.kind == ExpectationKind::Acceptance && f.key.anchor == key.anchor
                });
            let f = &mut firing[index];
            f.checked = now;
            let alert = stall_alert(task, e, due, now, f.sent);
            if inhibited {
                self.stats.inhibited += 1;
            } else if self.silences.iter().any(|s| s.mutes(&alert, now)) {
                self.stats.silenced += 1;
            } else {
                if f.sent == 0 {
                    self.stats.fired += 1;
                } else {
                    self.stats.renotified += 1;
                }
                f.sent += 1;
                f.last_sent = Some(now);
                // A resolution names whom the latest notification named.
                f.agents.clone_from(&alert.agents);
                out.push(alert);
            }
        }
        // Resolutions come out in a fixed order, however firing began.
        firing.sort_by_key(|f| f.key);
    }

    /// Resolves firing alerts whose expectation no longer holds.
    fn resolve_gone(&mut self, id: &TaskId, now: Time, out: &mut Vec<Alert>) {
        let Some(tracked) = self.tasks.get_mut(id) else {
            return;
        };
        if tracked.firing.is_empty() {
            return;
        }
        let current = expectations(&tracked.task, &self.rules);
        let task = &tracked.task;
        tracked.firing.retain(|f| {
            if current.iter().any(|e| Key::of(e) == f.key) {
                return true;
            }
            if f.sent > 0 {
                let mut firing = Alert::firing(
                    f.key.kind.alert_kind(),
                    firing_id(&task.id, f.key),
                    Some(task.id.clone()),
                    now,
                );
                firing.workflow = Some(task.workflow.clone());
                firing.stage = task.stage.clone();
                firing.agents = f.agents.clone();
                firing.due_at = Some(f.due);
                firing.epoch = f.key.epoch;
                firing.task_status = Some(task.status);
                firing.last_event = Some(task.last_event.clone());
                let summary = resolution_summary(&firing, Some(task));
                out.push(firing.resolved(now, summary));
                self.stats.resolved += 1;
            }
            false
        });
    }

    /// The next time this task needs looking at.
    fn next_check(&self, id: &TaskId) -> Option<Time> {
        let tracked = self.tasks.get(id)?;
        let task = &tracked.task;
        let renotify = self
            .rules
            .resolve(&task.workflow, task.stage.as_ref())
            .renotify;
        let current = expectations(task, &self.rules);
        let unfired = current
            .iter()
            .filter(|e| !tracked.firing.iter().any(|f| f.key == Key::of(e)))
            .map(|e| self.outages.due_of(e))
            .min();
        // A muted alert (silenced or inhibited) is looked at again when a
        // silence may have ended, or after the re-check interval.
        let muted_recheck = |f: &Firing| {
            let silence_ends = self
                .silences
                .iter()
                .map(|s| s.until)
                .filter(|until| *until > f.checked)
                .min();
            let recheck = f.checked.saturating_add(renotify.unwrap_or(RECHECK));
            silence_ends.map_or(recheck, |s| s.min(recheck))
        };
        let refire = tracked
            .firing
            .iter()
            .filter_map(|f| match (f.sent, f.last_sent) {
                (0, _) => Some(muted_recheck(f)),
                (_, Some(last)) => renotify.map(|r| {
                    let due = last.saturating_add(r);
                    // Its re-notification came due and was muted (it was
                    // evaluated then but not sent): never the same past
                    // instant again, or `handle_timeout` would spin on it.
                    if due <= f.checked {
                        muted_recheck(f)
                    } else {
                        due
                    }
                }),
                (_, None) => None,
            })
            .min();
        match (unfired, refire) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn reschedule(&mut self, id: &TaskId, next: Option<Time>) {
        let Some(slot) = self.tasks.slot(id) else {
            return;
        };
        let Some(tracked) = self.tasks.get_mut(id) else {
            return;
        };
        if tracked.next_check == next {
            return;
        }
        if let Some(old) = tracked.next_check {
            self.schedule.remove(&(old, slot));
        }
        tracked.next_check = next;
        if let Some(next) = next {
            self.schedule.insert((next, slot));
        }
    }
}

fn firing_id(task: &TaskId, key: Key) -> String {
    crate::alert::alert_id(
        key.kind.alert_kind(),
        Some(task),
        key.epoch,
        &format!("s{}", key.anchor),
    )
}

/// Recovers an expectation's identity from its alert id
/// (`<kind>.<task>.e<epoch>.s<anchor>`).
fn parse_key(alert: &Alert) -> Option<Key> {
    let kind = match alert.kind {
        AlertKind::HeartbeatMissed => ExpectationKind::Heartbeat,
        AlertKind::HandoffNotAccepted => ExpectationKind::Acceptance,
        AlertKind::NotStarted => ExpectationKind::Start,
        AlertKind::DeadlineExceeded => ExpectationKind::Deadline,
        AlertKind::NoProgress => ExpectationKind::Progress,
        AlertKind::BlockedTooLong => ExpectationKind::Unblock,
        _ => return None,
    };
    let mut parts = alert.id.rsplitn(3, '.');
    let anchor = parts.next()?.strip_prefix('s')?.parse().ok()?;
    let epoch = parts.next()?.strip_prefix('e')?.parse().ok()?;
    Some(Key {
        kind,
        epoch,
        anchor,
    })
}
