//! Watching the watchers (decision 8): is some instance of a service doing
//! its work? The orchestrator and the stall detector each renew a
//! leadership lease only while their loop makes progress, so "no renewal
//! for a while" means dead, stuck, or cut off — and a standby taking over
//! renews it again. The detector watches the orchestrator's lease
//! (`ORCHESTRATOR_DOWN`), the orchestrator the detector's
//! (`DETECTOR_DOWN`). Pure: renewals and `now` come in, alerts go out.

use std::{collections::HashMap, time::Duration};

use crate::{Alert, AlertKind, Time, catalogue::service_down_alert};

/// When a watched service counts as down.
#[derive(Debug, Clone, Copy)]
pub struct DownLimits {
    /// Down after this many of its own renewal intervals without one (and
    /// at least `min_silence`): a takeover after a crash fits in it.
    pub missed_reports: u32,
    pub min_silence: Duration,
    /// Re-notify while down this often.
    pub renotify: Option<Duration>,
}

impl Default for DownLimits {
    fn default() -> Self {
        DownLimits {
            missed_reports: 3,
            min_silence: Duration::from_secs(5),
            renotify: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// Watches one service through the reports (lease renewals) of its
/// instances.
#[derive(Debug)]
pub struct ServiceWatch {
    kind: AlertKind,
    limits: DownLimits,
    /// When each instance last reported (the watcher's clock) and its
    /// reporting interval.
    seen: HashMap<String, (Time, Duration)>,
    firing: Option<Alert>,
}

impl ServiceWatch {
    /// `kind` is the alert raised when the service is down
    /// (`ORCHESTRATOR_DOWN` or `DETECTOR_DOWN`).
    pub fn new(kind: AlertKind, limits: DownLimits) -> ServiceWatch {
        ServiceWatch {
            kind,
            limits,
            seen: HashMap::new(),
            firing: None,
        }
    }

    pub fn kind(&self) -> AlertKind {
        self.kind
    }

    /// Instance `instance` reported at `now`; resolves a firing alert.
    pub fn seen(&mut self, instance: &str, interval: Duration, now: Time) -> Vec<Alert> {
        self.seen.insert(instance.to_string(), (now, interval));
        match self.firing.take() {
            Some(firing) => vec![firing.resolved(
                now,
                format!(
                    "Resolved {}: instance {instance} is active again.",
                    self.kind.as_str().replace('_', " ")
                ),
            )],
            None => Vec::new(),
        }
    }

    /// Adopts a firing alert of this kind from before a restart.
    pub fn restore(&mut self, alert: Alert) {
        if alert.kind == self.kind {
            self.firing = Some(alert);
        }
    }

    /// Whether this watch's alert is firing.
    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    /// Fires or re-notifies if no instance reported recently enough.
    /// Nothing is said before the first report: a service that never ran
    /// is not "down" (`baton status` shows it missing).
    pub fn check(&mut self, now: Time) -> Vec<Alert> {
        let freshest = self
            .seen
            .iter()
            .map(|(name, (seen, interval))| {
                let allowed = (*interval * self.limits.missed_reports).max(self.limits.min_silence);
                (name, *seen, seen.saturating_add(allowed))
            })
            .max_by_key(|(_, _, due)| *due);
        let Some((name, seen, due)) = freshest else {
            return Vec::new();
        };
        if now < due {
            return Vec::new();
        }
        if let Some(firing) = &mut self.firing {
            if !firing.renotify(self.limits.renotify, now) {
                return Vec::new();
            }
            firing.late_by = Some(now.since(due));
            return vec![firing.clone()];
        }
        let alert = service_down_alert(self.kind, name, seen, due, now);
        self.firing = Some(alert.clone());
        vec![alert]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AlertState;

    fn t(secs: u64) -> Time {
        Time::from_unix_millis(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn down_fires_once_and_resolves() {
        let mut w = ServiceWatch::new(AlertKind::DetectorDown, DownLimits::default());
        assert!(w.check(t(100)).is_empty(), "never seen: nothing to say");
        w.seen("d1", Duration::from_secs(1), t(0));
        assert!(w.check(t(4)).is_empty(), "within max(3 x 1s, 5s)");
        let fired = w.check(t(5));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].kind, AlertKind::DetectorDown);
        assert!(
            fired[0].summary.contains("No active stall detector for 5s"),
            "{}",
            fired[0].summary
        );
        assert!(w.check(t(60)).is_empty(), "paged once");
        let resolved = w.seen("d2", Duration::from_secs(1), t(70));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, AlertState::Resolved);
        assert_eq!(resolved[0].resolves.as_deref(), Some(fired[0].id.as_str()));
    }

    #[test]
    fn a_takeover_within_the_limit_is_not_down() {
        let mut w = ServiceWatch::new(AlertKind::OrchestratorDown, DownLimits::default());
        w.seen("old", Duration::from_secs(1), t(0));
        w.seen("new", Duration::from_secs(1), t(4));
        assert!(w.check(t(8)).is_empty());
    }

    #[test]
    fn the_same_silence_gives_the_same_alert_id_in_every_watcher() {
        // Two orchestrator instances watching the detector, one after the
        // other (a failover), derive the same id: the stream stores it once.
        let mut a = ServiceWatch::new(AlertKind::DetectorDown, DownLimits::default());
        let mut b = ServiceWatch::new(AlertKind::DetectorDown, DownLimits::default());
        a.seen("d1", Duration::from_secs(1), t(0));
        b.seen("d1", Duration::from_secs(1), t(0));
        assert_eq!(a.check(t(9))[0].id, b.check(t(12))[0].id);
    }
}
