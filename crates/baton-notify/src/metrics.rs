//! The router's metric names, in one place (prefix `baton_notify_`). The
//! project-wide list with meanings is `docs/metrics.md`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// A delivery target: `kind` is `alertmanager` or `webhook`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub kind: &'static str,
    pub target: String,
}

/// A target and the outcome of an attempt: `ok`, `error`, `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub kind: &'static str,
    pub target: String,
    pub outcome: &'static str,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ])
}

/// Every metric the router exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub alerts_read: Counter,
    pub undecodable: Counter,
    pub requests: Family<OutcomeLabel, Counter>,
    pub delivered: Family<TargetLabel, Counter>,
    pub given_up: Family<TargetLabel, Counter>,
    pub filtered: Family<TargetLabel, Counter>,
    pub target_up: Family<TargetLabel, Gauge>,
    pub pending: Family<TargetLabel, Gauge>,
    pub delivery_latency: Family<TargetLabel, Histogram>,
    pub alertmanager_active: Gauge,
    pub alertmanager_firing: Gauge,
    pub watchdog_healthy: Gauge,
    pub alerts_seq: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            alerts_read: Counter::default(),
            undecodable: Counter::default(),
            requests: Family::default(),
            delivered: Family::default(),
            given_up: Family::default(),
            filtered: Family::default(),
            target_up: Family::default(),
            pending: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_buckets),
            alertmanager_active: Gauge::default(),
            alertmanager_firing: Gauge::default(),
            watchdog_healthy: Gauge::default(),
            alerts_seq: Gauge::default(),
        }
    }

    /// Creates a target's series at zero, so that `increase()` sees its
    /// first delivery, refusal or give-up.
    pub fn add_target(&self, label: &TargetLabel) {
        for outcome in ["ok", "error", "refused"] {
            let _ = self.requests.get_or_create(&OutcomeLabel {
                kind: label.kind,
                target: label.target.clone(),
                outcome,
            });
        }
        let _ = self.delivered.get_or_create(label);
        let _ = self.given_up.get_or_create(label);
        let _ = self.target_up.get_or_create(label);
        if label.kind == "webhook" {
            let _ = self.filtered.get_or_create(label);
            let _ = self.pending.get_or_create(label);
        }
        let _ = self.delivery_latency.get_or_create(label);
    }

    /// Registers every metric under `baton_notify_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("baton_notify");
        r.register(
            "alerts_read",
            "Alert notifications read from BATON_ALERTS for Alertmanager",
            self.alerts_read.clone(),
        );
        r.register(
            "undecodable",
            "Messages in BATON_ALERTS that are not a valid baton.v1.Alert (skipped)",
            self.undecodable.clone(),
        );
        r.register(
            "requests",
            "HTTP requests to targets, by outcome (ok, error, refused)",
            self.requests.clone(),
        );
        r.register(
            "delivered",
            "Alert notifications a webhook accepted, or alerts an Alertmanager accepted",
            self.delivered.clone(),
        );
        r.register(
            "given_up",
            "Alert notifications dropped by the give-up rule (refused, or older than give_up_after)",
            self.given_up.clone(),
        );
        r.register(
            "filtered",
            "Alert notifications a webhook's kinds/min_severity leave out",
            self.filtered.clone(),
        );
        r.register(
            "target_up",
            "1 when the target's last request succeeded, 0 when it failed",
            self.target_up.clone(),
        );
        r.register(
            "pending",
            "Alert notifications in BATON_ALERTS not yet delivered to this webhook (its consumer's lag)",
            self.pending.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "From an alert being stored in BATON_ALERTS to a target accepting it",
            self.delivery_latency.clone(),
        );
        r.register(
            "alertmanager_active",
            "Alerts the router keeps telling Alertmanager about (firing, reports, unconfirmed resolutions, watchdog)",
            self.alertmanager_active.clone(),
        );
        r.register(
            "alertmanager_firing",
            "Firing conditions re-sent to Alertmanager",
            self.alertmanager_firing.clone(),
        );
        r.register(
            "watchdog_healthy",
            "1 while every required service is alive and the watchdog alert is sent, 0 otherwise",
            self.watchdog_healthy.clone(),
        );
        r.register(
            "alerts_seq",
            "Last BATON_ALERTS sequence taken in for Alertmanager",
            self.alerts_seq.clone(),
        );
    }
}
