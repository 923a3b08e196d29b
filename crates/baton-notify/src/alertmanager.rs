//! What Alertmanager is told, as pure data: Baton alerts become Alertmanager
//! API v2 alerts, and the [`Book`] holds the set Alertmanager must keep
//! hearing about.
//!
//! Alertmanager identifies an alert by its labels, and forgets (resolves)
//! one it stops hearing about once its `endsAt` passes. So:
//!
//! - **Labels are stable**: `alertname` (the kind, e.g. `HEARTBEAT_MISSED`),
//!   `task` (`_system` for Baton itself), `workflow`, `stage`, `severity`,
//!   `agents`, and `alert_id` (Baton's deterministic id, the same for every
//!   notification of one fault), all derived from the fault, never from
//!   when it was seen. A restarted router re-derives the same labels, so
//!   Alertmanager sees the same alert, not a second one.
//! - **Firing conditions are re-sent** every `resend_interval` with
//!   `endsAt` = now + 4 x `resend_interval` (as Prometheus does): if the
//!   router dies, Alertmanager resolves them by itself a few intervals
//!   later, and the watchdog's silence says why.
//! - **Resolutions** are sent with `endsAt` = the time Baton resolved the
//!   alert, until every Alertmanager has accepted them (or Alertmanager
//!   would have expired the alert anyway).
//! - **Reports** (ownership violation, stale context, malformed event,
//!   unknown task) never resolve in Baton: they are sent once with `endsAt`
//!   = observed + `report_ttl`, so they page and then expire.
//! - The **watchdog** is an entry like any other, refreshed while Baton is
//!   healthy and left to expire when it is not.
//!
//! Each entry remembers, per Alertmanager, whether its latest version was
//! accepted there, so a down Alertmanager gets exactly what changed once it
//! is back (and everything at the next full re-send).

use std::{collections::BTreeMap, time::Duration};

use baton_core::{Alert, AlertState, Time, subjects};
use serde::Serialize;

/// One alert as Alertmanager's API v2 takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// The `alertname` of the watchdog.
pub const WATCHDOG_NAME: &str = "BatonWatchdog";
/// The book key of the watchdog (no alert id looks like this).
const WATCHDOG_KEY: &str = "_watchdog";

/// The `alertname` of a Baton alert kind: its wire name without prefix,
/// as the docs and the CLI write it (`HEARTBEAT_MISSED`).
pub fn alertname(kind: baton_core::AlertKind) -> String {
    kind.as_str().to_ascii_uppercase()
}

/// The stable labels of an alert.
pub fn labels(alert: &Alert) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".into(), alertname(alert.kind));
    l.insert(
        "task".into(),
        alert
            .task
            .as_ref()
            .map_or_else(|| subjects::SYSTEM_TOKEN.to_string(), ToString::to_string),
    );
    if let Some(w) = &alert.workflow {
        l.insert("workflow".into(), w.to_string());
    }
    if let Some(s) = &alert.stage {
        l.insert("stage".into(), s.to_string());
    }
    l.insert("severity".into(), alert.severity.as_str().into());
    if !alert.agents.is_empty() {
        let agents: Vec<&str> = alert.agents.iter().map(|a| a.as_str()).collect();
        l.insert("agents".into(), agents.join(","));
    }
    // A resolution carries the firing alert's id in `resolves`.
    let id = alert.resolves.as_deref().unwrap_or(&alert.id);
    l.insert("alert_id".into(), id.to_string());
    l.insert("source".into(), "baton".into());
    l
}

/// The annotations of an alert: what a person reads.
pub fn annotations(alert: &Alert, console: Option<&str>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".into(), alert.summary.clone());
    if !alert.expected.is_empty() {
        a.insert("expected".into(), alert.expected.clone());
    }
    if let Some(due) = alert.due_at {
        a.insert("due".into(), due.to_rfc3339());
    }
    if let Some(e) = &alert.last_event {
        a.insert(
            "last_event".into(),
            format!("{} from {} at {} (seq {})", e.kind, e.agent, e.at, e.seq),
        );
    }
    if !alert.detail.is_empty() {
        a.insert("detail".into(), alert.detail.clone());
    }
    if let Some(link) = console {
        a.insert("console".into(), link.to_string());
    }
    a
}

/// When the fault began: when it became due, or when it was observed.
fn starts(alert: &Alert) -> Time {
    alert.due_at.unwrap_or(alert.observed_at)
}

#[derive(Debug, Clone)]
struct Entry {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: Time,
    /// `None`: firing until resolved (endsAt is set at each send).
    ends_at: Option<Time>,
    resolved: bool,
    generator_url: Option<String>,
    /// Bumped on every change; a confirmation of an older version does not
    /// count.
    version: u64,
    /// Per target: the version it accepted last.
    accepted: Vec<u64>,
}

/// A batch for one target: the alerts, and what to confirm once accepted.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub alerts: Vec<AmAlert>,
    keys: Vec<(String, u64)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// The batch cut into requests of at most `max` alerts.
    pub fn chunks(self, max: usize) -> Vec<Batch> {
        let max = max.max(1);
        let mut out = Vec::new();
        let mut alerts = self.alerts.into_iter();
        let mut keys = self.keys.into_iter();
        loop {
            let a: Vec<AmAlert> = alerts.by_ref().take(max).collect();
            if a.is_empty() {
                return out;
            }
            let k = keys.by_ref().take(a.len()).collect();
            out.push(Batch { alerts: a, keys: k });
        }
    }
}

/// What the router tells every Alertmanager, and which of them has heard it.
#[derive(Debug, Clone)]
pub struct Book {
    entries: BTreeMap<String, Entry>,
    targets: usize,
    resend: Duration,
    report_ttl: Duration,
    next_version: u64,
}

impl Book {
    pub fn new(targets: usize, resend: Duration, report_ttl: Duration) -> Book {
        Book {
            entries: BTreeMap::new(),
            targets,
            resend,
            report_ttl,
            next_version: 1,
        }
    }

    /// How far ahead a firing condition's `endsAt` is put: Alertmanager
    /// resolves it by itself when no re-send comes for this long.
    pub fn horizon(&self) -> Duration {
        self.resend * 4
    }

    /// Takes in one alert notification; `console` is its link. Returns
    /// whether anything is to be sent.
    pub fn apply(&mut self, alert: &Alert, console: Option<&str>, now: Time) -> bool {
        let key = alert.resolves.clone().unwrap_or_else(|| alert.id.clone());
        let annotations = annotations(alert, console);
        let version = self.bump();
        if alert.kind.is_report() {
            let ends = alert.observed_at.saturating_add(self.report_ttl);
            if ends <= now || self.entries.contains_key(&key) {
                // Expired already, or this very report was taken in before
                // (a report does not change once made).
                return false;
            }
            self.insert(key, alert, annotations, Some(ends), false, console, version);
            return true;
        }
        match alert.state {
            AlertState::Firing => match self.entries.get_mut(&key) {
                Some(e) if !e.resolved => {
                    e.annotations = annotations;
                    e.version = version;
                }
                _ => self.insert(key, alert, annotations, None, false, console, version),
            },
            AlertState::Resolved => {
                let ended = alert.observed_at;
                if ended.saturating_add(self.horizon()) <= now {
                    // Alertmanager has expired it by itself by now.
                    self.entries.remove(&key);
                    return false;
                }
                match self.entries.get_mut(&key) {
                    Some(e) => {
                        e.annotations = annotations;
                        e.ends_at = Some(ended);
                        e.resolved = true;
                        e.version = version;
                    }
                    None => {
                        self.insert(key, alert, annotations, Some(ended), true, console, version)
                    }
                }
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        key: String,
        alert: &Alert,
        annotations: BTreeMap<String, String>,
        ends_at: Option<Time>,
        resolved: bool,
        console: Option<&str>,
        version: u64,
    ) {
        self.entries.insert(
            key,
            Entry {
                labels: labels(alert),
                annotations,
                starts_at: starts(alert),
                ends_at,
                resolved,
                generator_url: console.map(str::to_string),
                version,
                accepted: vec![0; self.targets],
            },
        );
    }

    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Sets the watchdog: `Some(summary)` while Baton is healthy (refreshed:
    /// sent again with `endsAt` = now + `ttl`), `None` when it is not (not
    /// sent any more: Alertmanager lets it expire, and the dead-man's switch
    /// behind it pages).
    pub fn watchdog(
        &mut self,
        healthy: Option<String>,
        since: Time,
        ttl: Duration,
        console: Option<&str>,
        now: Time,
    ) {
        let Some(summary) = healthy else {
            self.entries.remove(WATCHDOG_KEY);
            return;
        };
        let version = self.bump();
        let mut labels = BTreeMap::new();
        labels.insert("alertname".into(), WATCHDOG_NAME.into());
        labels.insert("task".into(), subjects::SYSTEM_TOKEN.into());
        labels.insert("severity".into(), "none".into());
        labels.insert("source".into(), "baton".into());
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".into(), summary);
        annotations.insert(
            "description".into(),
            "Fires all the time while Baton is healthy. Route it to a dead-man's switch that pages when it stops arriving.".into(),
        );
        let accepted = self
            .entries
            .get(WATCHDOG_KEY)
            .map_or_else(|| vec![0; self.targets], |e| e.accepted.clone());
        self.entries.insert(
            WATCHDOG_KEY.into(),
            Entry {
                labels,
                annotations,
                starts_at: since,
                ends_at: Some(now.saturating_add(ttl)),
                resolved: false,
                generator_url: console.map(str::to_string),
                version,
                accepted,
            },
        );
    }

    /// What target `target` should be sent now: everything it has not
    /// accepted in its latest version, or (`full`) everything active.
    pub fn batch(&self, target: usize, full: bool, now: Time) -> Batch {
        let mut batch = Batch::default();
        for (key, e) in &self.entries {
            let behind = e.accepted.get(target).is_none_or(|v| *v < e.version);
            if !(full || behind) {
                continue;
            }
            if full && e.resolved && !behind {
                // Accepted there already; nothing to refresh.
                continue;
            }
            let ends = e
                .ends_at
                .unwrap_or_else(|| now.saturating_add(self.horizon()));
            batch.alerts.push(AmAlert {
                labels: e.labels.clone(),
                annotations: e.annotations.clone(),
                starts_at: e.starts_at.to_rfc3339(),
                ends_at: ends.to_rfc3339(),
                generator_url: e.generator_url.clone(),
            });
            batch.keys.push((key.clone(), e.version));
        }
        batch
    }

    /// Records that `target` accepted `batch`; resolutions every target has
    /// accepted are forgotten.
    pub fn accepted(&mut self, target: usize, batch: &Batch) {
        for (key, version) in &batch.keys {
            if let Some(e) = self.entries.get_mut(key)
                && let Some(v) = e.accepted.get_mut(target)
            {
                *v = (*v).max(*version);
            }
        }
        self.entries
            .retain(|_, e| !(e.resolved && e.accepted.iter().all(|v| *v >= e.version)));
    }

    /// Forgets what Alertmanager has expired by itself: reports past their
    /// `endsAt`, resolutions older than the horizon, a lapsed watchdog.
    pub fn expire(&mut self, now: Time) {
        let horizon = self.horizon();
        self.entries.retain(|_, e| match e.ends_at {
            None => true,
            Some(ends) if e.resolved => ends.saturating_add(horizon) > now,
            Some(ends) => ends > now,
        });
    }

    /// Firing conditions (not reports, not the watchdog).
    pub fn firing(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.ends_at.is_none() && !e.resolved)
            .count()
    }

    /// Every entry (firing, reports, unconfirmed resolutions, watchdog).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{AgentId, AlertKind, TaskId, WorkflowId};

    fn t(secs: u64) -> Time {
        Time::from_unix_millis(1_800_000_000_000 + secs * 1000)
    }

    fn firing(notification: u32, at: u64) -> Alert {
        let mut a = Alert::firing(
            AlertKind::HeartbeatMissed,
            "heartbeat_missed.t1.e1.s2".into(),
            Some(TaskId::new("t1").expect("id")),
            t(at),
        );
        a.workflow = Some(WorkflowId::new("w").expect("id"));
        a.agents = vec![AgentId::new("a1").expect("id")];
        a.due_at = Some(t(10));
        a.summary = format!("no heartbeat (notification {notification})");
        a.notification = notification;
        a
    }

    fn book() -> Book {
        Book::new(2, Duration::from_secs(60), Duration::from_secs(3600))
    }

    #[test]
    fn labels_are_the_fault_not_the_notification() {
        let a = firing(0, 11);
        let again = firing(3, 500);
        assert_eq!(labels(&a), labels(&again));
        let resolved = a.resolved(t(600), "back".into());
        assert_eq!(labels(&a), labels(&resolved));
        let l = labels(&a);
        assert_eq!(l["alertname"], "HEARTBEAT_MISSED");
        assert_eq!(l["task"], "t1");
        assert_eq!(l["agents"], "a1");
        assert_eq!(l["severity"], "critical");
        assert!(!l.contains_key("stage"));
    }

    #[test]
    fn firing_then_resolved_reaches_every_target_once() {
        let mut b = book();
        assert!(b.apply(&firing(0, 11), Some("http://c/#/task/t1"), t(11)));
        let batch = b.batch(0, false, t(11));
        assert_eq!(batch.alerts.len(), 1);
        assert_eq!(batch.alerts[0].starts_at, t(10).to_rfc3339());
        assert_eq!(batch.alerts[0].ends_at, t(11 + 240).to_rfc3339());
        b.accepted(0, &batch);
        assert!(
            b.batch(0, false, t(12)).is_empty(),
            "nothing new for target 0"
        );
        assert_eq!(
            b.batch(1, false, t(12)).alerts.len(),
            1,
            "target 1 still owed"
        );
        // A full re-send refreshes the firing alert's endsAt.
        let full = b.batch(0, true, t(71));
        assert_eq!(full.alerts[0].ends_at, t(71 + 240).to_rfc3339());
        // Resolved: sent to both, then forgotten once both accepted.
        let r = firing(0, 11).resolved(t(100), "back".into());
        assert!(b.apply(&r, None, t(100)));
        let b0 = b.batch(0, false, t(100));
        assert_eq!(b0.alerts[0].ends_at, t(100).to_rfc3339());
        b.accepted(0, &b0);
        assert_eq!(b.len(), 1, "target 1 has not heard of the resolution");
        let b1 = b.batch(1, false, t(100));
        b.accepted(1, &b1);
        assert!(b.is_empty());
    }

    #[test]
    fn a_change_while_sending_is_not_lost() {
        let mut b = book();
        b.apply(&firing(0, 11), None, t(11));
        let batch = b.batch(0, false, t(11));
        b.apply(&firing(0, 11).resolved(t(20), "back".into()), None, t(20));
        b.accepted(0, &batch);
        let next = b.batch(0, false, t(21));
        assert_eq!(next.alerts.len(), 1);
        assert_eq!(next.alerts[0].ends_at, t(20).to_rfc3339());
    }

    #[test]
    fn reports_expire_and_old_resolutions_are_skipped() {
        let mut b = book();
        let mut v = Alert::firing(
            AlertKind::OwnershipViolation,
            "ownership_violation.t1.e1.s9".into(),
            Some(TaskId::new("t1").expect("id")),
            t(0),
        );
        v.summary = "refused".into();
        assert!(b.apply(&v, None, t(1)));
        assert!(
            !b.apply(&v, None, t(2)),
            "the same report again changes nothing"
        );
        assert_eq!(
            b.batch(0, false, t(2)).alerts[0].ends_at,
            t(3600).to_rfc3339()
        );
        b.expire(t(3601));
        assert!(b.is_empty());
        assert!(!b.apply(&v, None, t(4000)), "an expired report is not sent");
        let old = firing(0, 11).resolved(t(100), "back".into());
        assert!(!b.apply(&old, None, t(100 + 240)));
    }

    #[test]
    fn the_watchdog_is_refreshed_while_healthy_and_lapses_when_not() {
        let mut b = book();
        b.watchdog(Some("ok".into()), t(0), Duration::from_secs(45), None, t(0));
        let batch = b.batch(0, false, t(0));
        assert_eq!(batch.alerts[0].labels["alertname"], WATCHDOG_NAME);
        assert_eq!(batch.alerts[0].labels["task"], "_system");
        assert_eq!(batch.alerts[0].ends_at, t(45).to_rfc3339());
        b.accepted(0, &batch);
        b.watchdog(
            Some("ok".into()),
            t(0),
            Duration::from_secs(45),
            None,
            t(15),
        );
        assert_eq!(
            b.batch(0, false, t(15)).alerts[0].ends_at,
            t(60).to_rfc3339()
        );
        b.watchdog(None, t(0), Duration::from_secs(45), None, t(30));
        assert!(b.batch(0, true, t(30)).is_empty());
    }
}
