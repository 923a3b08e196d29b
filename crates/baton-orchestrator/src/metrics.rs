//! The orchestrator's metric names, in one place.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label of per-kind alert counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Every metric the orchestrator exports (prefix `baton_orchestrator_`).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub events_applied: Counter,
    pub violations: Counter,
    pub duplicates: Counter,
    pub unknown_task: Counter,
    pub dead_lettered: Counter,
    pub alerts: Family<KindLabel, Counter>,
    pub kv_writes: Counter,
    pub flushes: Counter,
    pub flush_fallbacks: Counter,
    pub outbox_retries: Counter,
    pub consumer_pending: Gauge,
    pub tasks: Gauge,
    pub applied_seq: Gauge,
    pub apply_latency: Histogram,
    pub batch_size: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            events_applied: Counter::default(),
            violations: Counter::default(),
            duplicates: Counter::default(),
            unknown_task: Counter::default(),
            dead_lettered: Counter::default(),
            alerts: Family::default(),
            kv_writes: Counter::default(),
            flushes: Counter::default(),
            flush_fallbacks: Counter::default(),
            outbox_retries: Counter::default(),
            consumer_pending: Gauge::default(),
            tasks: Gauge::default(),
            applied_seq: Gauge::default(),
            apply_latency: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            batch_size: Histogram::new([1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]),
        }
    }

    /// Registers every metric under `baton_orchestrator_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("baton_orchestrator");
        r.register(
            "events_applied",
            "Events that changed a task",
            self.events_applied.clone(),
        );
        r.register(
            "violations",
            "Events refused by the ownership rules (each raised OWNERSHIP_VIOLATION)",
            self.violations.clone(),
        );
        r.register(
            "duplicates",
            "Redelivered events skipped as already applied",
            self.duplicates.clone(),
        );
        r.register(
            "unknown_task",
            "Events for tasks never created",
            self.unknown_task.clone(),
        );
        r.register(
            "dead_lettered",
            "Messages that could not be decoded or validated, moved to BATON_DLQ",
            self.dead_lettered.clone(),
        );
        r.register("alerts", "Alerts published, by kind", self.alerts.clone());
        r.register(
            "kv_writes",
            "Task states written to KV baton-tasks",
            self.kv_writes.clone(),
        );
        r.register(
            "flushes",
            "State flushes: touched task states written to KV, then the checkpoint",
            self.flushes.clone(),
        );
        r.register(
            "flush_fallbacks",
            "State flushes that could not prove their one-acknowledgement delivery and wrote again with an acknowledgement per task",
            self.flush_fallbacks.clone(),
        );
        r.register(
            "outbox_retries",
            "Publishes retried before they were acknowledged",
            self.outbox_retries.clone(),
        );
        r.register(
            "consumer_pending",
            "Events in BATON_EVENTS not yet delivered to the orchestrator",
            self.consumer_pending.clone(),
        );
        r.register("tasks", "Tasks known", self.tasks.clone());
        r.register(
            "applied_seq",
            "Last BATON_EVENTS sequence made durable",
            self.applied_seq.clone(),
        );
        r.register(
            "apply_latency_seconds",
            "From an event's stored time to its effects being durable",
            self.apply_latency.clone(),
        );
        r.register(
            "batch_size",
            "Events per durable batch",
            self.batch_size.clone(),
        );
    }
}
