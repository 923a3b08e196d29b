//! The stall detector's metric names, in one place.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label of per-kind alert counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabel {
    pub kind: String,
    pub state: String,
}

/// Every metric the detector exports (prefix `baton_stall_`).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub events: Counter,
    pub alerts: Family<AlertLabel, Counter>,
    pub silenced: Gauge,
    pub inhibited: Gauge,
    pub tracked_tasks: Gauge,
    pub firing: Gauge,
    pub consumer_pending: Gauge,
    pub applied_seq: Gauge,
    /// From an expectation's due time to its alert being stored.
    pub alert_latency: Histogram,
    pub snapshot_writes: Counter,
    /// Broker outages seen by the probe (deadlines extended by each).
    pub outages: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            events: Counter::default(),
            alerts: Family::default(),
            silenced: Gauge::default(),
            inhibited: Gauge::default(),
            tracked_tasks: Gauge::default(),
            firing: Gauge::default(),
            consumer_pending: Gauge::default(),
            applied_seq: Gauge::default(),
            alert_latency: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            snapshot_writes: Counter::default(),
            outages: Counter::default(),
        }
    }

    /// Registers every metric under `baton_stall_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("baton_stall");
        r.register("events", "Events folded", self.events.clone());
        r.register(
            "alerts",
            "Alert notifications published, by kind and state",
            self.alerts.clone(),
        );
        r.register(
            "silenced",
            "Notifications withheld by a silence (evaluations)",
            self.silenced.clone(),
        );
        r.register(
            "inhibited",
            "Notifications withheld by inhibition (evaluations)",
            self.inhibited.clone(),
        );
        r.register(
            "tracked_tasks",
            "Tasks with expectations being tracked",
            self.tracked_tasks.clone(),
        );
        r.register("firing", "Alerts firing now", self.firing.clone());
        r.register(
            "consumer_pending",
            "Events not yet delivered to the detector",
            self.consumer_pending.clone(),
        );
        r.register(
            "applied_seq",
            "Last BATON_EVENTS sequence in the detector's snapshot",
            self.applied_seq.clone(),
        );
        r.register(
            "broker_outages",
            "Broker outages the detector saw (its probe got no answer); deadlines are extended by each (decision 9)",
            self.outages.clone(),
        );
        r.register(
            "alert_latency_seconds",
            "From an expectation's due time to its alert being stored",
            self.alert_latency.clone(),
        );
        r.register(
            "snapshot_writes",
            "Task states written to KV baton-detector",
            self.snapshot_writes.clone(),
        );
    }
}
