//! Watching the watchers: `ORCHESTRATOR_DOWN` when no orchestrator has
//! renewed its leadership lease for a while ([`baton_core::watch`]),
//! `CONSUMER_STALLED` when a Baton consumer
//! has work pending and makes no progress (or sits at `max_ack_pending`,
//! where JetStream stops delivering without an error). Pure: observations
//! and `now` come in, alerts go out.

use std::{collections::HashMap, time::Duration};

use baton_core::{
    Alert, AlertKind, Time,
    catalogue::{ConsumerStall, consumer_stalled_alert},
    watch::{DownLimits, ServiceWatch},
};

/// What the watch knows about one consumer at one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerObservation {
    /// Messages not yet delivered.
    pub num_pending: u64,
    /// Delivered but not acknowledged.
    pub num_ack_pending: u64,
    pub max_ack_pending: i64,
    /// Last stream sequence delivered.
    pub delivered_seq: u64,
    /// Last stream sequence acknowledged (everything up to it).
    pub ack_floor: u64,
}

#[derive(Debug)]
struct ConsumerTrack {
    last_progress_seq: u64,
    last_progress_at: Time,
    firing: Option<Alert>,
}

/// Limits of the watch.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    /// An orchestrator is down after this many of its own reporting
    /// intervals without a report (and at least `min_silence`).
    pub missed_reports: u32,
    pub min_silence: Duration,
    /// A consumer with pending work and no progress for this long is
    /// stalled.
    pub stall_after: Duration,
    /// Re-notify firing system alerts this often.
    pub renotify: Option<Duration>,
}

impl WatchLimits {
    /// The limits of watching a service's lease.
    pub fn down(&self) -> DownLimits {
        DownLimits {
            missed_reports: self.missed_reports,
            min_silence: self.min_silence,
            renotify: self.renotify,
        }
    }
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            missed_reports: 3,
            min_silence: Duration::from_secs(5),
            stall_after: Duration::from_secs(60),
            renotify: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// The system watch.
#[derive(Debug)]
pub struct SystemWatch {
    limits: WatchLimits,
    orchestrator: ServiceWatch,
    consumers: HashMap<String, ConsumerTrack>,
}

impl SystemWatch {
    pub fn new(limits: WatchLimits) -> SystemWatch {
        SystemWatch {
            limits,
            orchestrator: ServiceWatch::new(AlertKind::OrchestratorDown, limits.down()),
            consumers: HashMap::new(),
        }
    }

    /// An orchestrator instance renewed its lease at `now`.
    pub fn orchestrator_seen(
        &mut self,
        instance: &str,
        interval: Duration,
        now: Time,
    ) -> Vec<Alert> {
        self.orchestrator.seen(instance, interval, now)
    }

    /// Adopts a firing system alert from before a restart.
    pub fn restore(&mut self, alert: Alert) {
        match alert.kind {
            AlertKind::OrchestratorDown => self.orchestrator.restore(alert),
            AlertKind::ConsumerStalled => {
                let name = alert.detail.clone();
                self.consumers.insert(
                    name,
                    ConsumerTrack {
                        last_progress_seq: 0,
                        last_progress_at: alert.observed_at,
                        firing: Some(alert),
                    },
                );
            }
            _ => {}
        }
    }

    /// Fires or re-notifies `ORCHESTRATOR_DOWN` if no instance is fresh.
    pub fn check_orchestrator(&mut self, now: Time) -> Vec<Alert> {
        self.orchestrator.check(now)
    }

    /// Records a consumer check; fires, re-notifies or resolves
    /// `CONSUMER_STALLED`.
    pub fn check_consumer(&mut self, name: &str, o: ConsumerObservation, now: Time) -> Vec<Alert> {
        let track = self
            .consumers
            .entry(name.to_string())
            .or_insert(ConsumerTrack {
                last_progress_seq: o.delivered_seq,
                last_progress_at: now,
                firing: None,
            });
        let progressed = o.delivered_seq != track.last_progress_seq || o.num_pending == 0;
        if progressed {
            track.last_progress_seq = o.delivered_seq;
            track.last_progress_at = now;
        }
        let at_limit = o.max_ack_pending > 0 && o.num_ack_pending >= o.max_ack_pending as u64;
        let stuck =
            o.num_pending > 0 && now.since(track.last_progress_at) >= self.limits.stall_after;
        if !(at_limit || stuck) {
            return match track.firing.take() {
                Some(f) => vec![f.resolved(
                    now,
                    format!("Resolved consumer stalled: {name} is making progress again."),
                )],
                None => Vec::new(),
            };
        }
        if let Some(firing) = &mut track.firing {
            if !firing.renotify(self.limits.renotify, now) {
                return Vec::new();
            }
            return vec![firing.clone()];
        }
        let alert = consumer_stalled_alert(
            name,
            ConsumerStall {
                at_limit,
                num_ack_pending: o.num_ack_pending,
                num_pending: o.num_pending,
                delivered_seq: o.delivered_seq,
                since: track.last_progress_at,
                since_seq: track.last_progress_seq,
                due: track
                    .last_progress_at
                    .saturating_add(self.limits.stall_after),
            },
            now,
        );
        track.firing = Some(alert.clone());
        vec![alert]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::AlertState;

    fn t(secs: u64) -> Time {
        Time::from_unix_millis(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn orchestrator_down_fires_once_and_resolves() {
        let mut w = SystemWatch::new(WatchLimits::default());
        assert!(
            w.check_orchestrator(t(100)).is_empty(),
            "no orchestrator seen: nothing to say"
        );
        w.orchestrator_seen("o1", Duration::from_secs(2), t(0));
        assert!(
            w.check_orchestrator(t(5)).is_empty(),
            "within max(3 x 2s, 5s)"
        );
        let fired = w.check_orchestrator(t(6));
        assert_eq!(fired.len(), 1);
        assert!(
            fired[0].summary.contains("No active orchestrator for 6s"),
            "{}",
            fired[0].summary
        );
        assert!(w.check_orchestrator(t(60)).is_empty(), "paged once");
        let resolved = w.orchestrator_seen("o2", Duration::from_secs(2), t(70));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, AlertState::Resolved);
        assert_eq!(resolved[0].resolves.as_deref(), Some(fired[0].id.as_str()));
    }

    #[test]
    fn a_fresh_instance_covers_a_stale_one() {
        let mut w = SystemWatch::new(WatchLimits::default());
        w.orchestrator_seen("old", Duration::from_secs(2), t(0));
        w.orchestrator_seen("new", Duration::from_secs(2), t(50));
        assert!(w.check_orchestrator(t(52)).is_empty());
    }

    #[test]
    fn a_consumer_without_progress_stalls() {
        let mut w = SystemWatch::new(WatchLimits {
            stall_after: Duration::from_secs(30),
            ..WatchLimits::default()
        });
        let o = |pending, delivered| ConsumerObservation {
            num_pending: pending,
            num_ack_pending: 0,
            max_ack_pending: 1000,
            delivered_seq: delivered,
            ack_floor: delivered,
        };
        assert!(w.check_consumer("c", o(10, 5), t(0)).is_empty());
        assert!(w.check_consumer("c", o(20, 5), t(29)).is_empty());
        let fired = w.check_consumer("c", o(30, 5), t(30));
        assert_eq!(fired.len(), 1);
        assert!(
            fired[0].summary.contains("30 messages pending"),
            "{}",
            fired[0].summary
        );
        let resolved = w.check_consumer("c", o(10, 25), t(31));
        assert_eq!(resolved[0].state, AlertState::Resolved);
    }

    #[test]
    fn a_consumer_at_max_ack_pending_stalls_at_once() {
        let mut w = SystemWatch::new(WatchLimits::default());
        let fired = w.check_consumer(
            "c",
            ConsumerObservation {
                num_pending: 5,
                num_ack_pending: 1000,
                max_ack_pending: 1000,
                delivered_seq: 9,
                ack_floor: 0,
            },
            t(0),
        );
        assert_eq!(fired.len(), 1);
        assert!(fired[0].summary.contains("max_ack_pending"));
    }
}
