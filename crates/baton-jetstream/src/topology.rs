//! The streams and buckets Baton uses, created or updated idempotently.
//!
//! Every service calls [`ensure`] at start, so whichever starts first sets
//! things up and the rest find them in place. Replicas are 1 on a single
//! node and 3 on a cluster.

use std::time::Duration;

use async_nats::jetstream::{
    self, kv,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use baton_core::subjects;

/// How the streams and buckets are laid out.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Copies of each stream: 1 on a single node, 3 on a cluster.
    pub replicas: usize,
    /// How long a `Nats-Msg-Id` is remembered for de-duplication of events.
    pub duplicate_window: Duration,
    /// How long alerts are remembered for de-duplication (a restarted
    /// service that re-derives an alert within this window does not page).
    pub alert_duplicate_window: Duration,
    /// Keep events this long (zero = forever). Timelines and backtests read
    /// history from the stream.
    pub events_max_age: Duration,
    /// Keep alerts and dead letters this long.
    pub alerts_max_age: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            replicas: 1,
            duplicate_window: Duration::from_secs(10 * 60),
            alert_duplicate_window: Duration::from_secs(60 * 60),
            events_max_age: Duration::ZERO,
            alerts_max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Why the layout could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create or update {what}: {message}")]
pub struct TopologyError {
    pub what: String,
    pub message: String,
}

impl Topology {
    pub fn events(&self) -> stream::Config {
        stream::Config {
            name: subjects::EVENTS_STREAM.into(),
            description: Some("Baton status events: baton.evt.<task>.<agent>".into()),
            subjects: vec![subjects::EVENTS_ALL.into()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.events_max_age,
            allow_direct: true,
            ..Default::default()
        }
    }

    pub fn context(&self) -> stream::Config {
        stream::Config {
            name: subjects::CONTEXT_STREAM.into(),
            description: Some(
                "Baton decision records: baton.ctx.<workflow>.<author>, append-only".into(),
            ),
            subjects: vec![subjects::CONTEXT_ALL.into()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::New,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Services publish alerts to `baton.raise.<kind>.<task>`; the stream
    /// stores them and republishes each stored one on
    /// `baton.alert.<kind>.<task>`. A retried publish (same `Nats-Msg-Id`)
    /// or a deposed instance's publish (refused by its fence) is not
    /// stored, so it is not republished: subscribers get every alert
    /// notification exactly once.
    pub fn alerts(&self) -> stream::Config {
        stream::Config {
            name: subjects::ALERTS_STREAM.into(),
            description: Some(
                "Baton alerts: stored on baton.raise.<kind>.<task>, republished on baton.alert.<kind>.<task>"
                    .into(),
            ),
            subjects: vec![
                subjects::ALERTS_RAISE_ALL.into(),
                format!("{}.alerts.>", subjects::FENCE_PREFIX),
            ],
            republish: Some(stream::Republish {
                source: subjects::ALERTS_RAISE_ALL.into(),
                destination: subjects::ALERTS_ALL.into(),
                headers_only: false,
            }),
            storage: StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.alert_duplicate_window,
            max_age: self.alerts_max_age,
            allow_direct: true,
            ..Default::default()
        }
    }

    pub fn dlq(&self) -> stream::Config {
        stream::Config {
            name: subjects::DLQ_STREAM.into(),
            description: Some(
                "Baton dead letters: events that could not be decoded or validated".into(),
            ),
            subjects: vec![
                subjects::DLQ_ALL.into(),
                format!("{}.dlq.>", subjects::FENCE_PREFIX),
            ],
            storage: StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.alerts_max_age,
            allow_direct: true,
            ..Default::default()
        }
    }

    fn bucket(&self, bucket: &str, description: &str) -> kv::Config {
        kv::Config {
            bucket: bucket.into(),
            description: description.into(),
            history: 1,
            storage: StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    pub fn tasks_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::TASKS_BUCKET,
            "Baton task state (baton.v1.TaskState), key = task id",
        )
    }

    pub fn services_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::SERVICES_BUCKET,
            "Baton service liveness (baton.v1.ServiceStatus)",
        )
    }

    pub fn silences_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::SILENCES_BUCKET,
            "Baton alert silences (baton.v1.Silence)",
        )
    }

    pub fn checkpoints_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::CHECKPOINTS_BUCKET,
            "Baton snapshot checkpoints: key = consumer, value = BATON_EVENTS sequence",
        )
    }

    pub fn policy_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::POLICY_BUCKET,
            "Baton fold policy (baton.v1.FoldPolicy), written by the orchestrator",
        )
    }

    pub fn leaders_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::LEADERS_BUCKET,
            "Baton leadership leases (baton.v1.Leadership), key = service",
        )
    }

    pub fn detector_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::DETECTOR_BUCKET,
            "Baton stall detector snapshot (baton.v1.TaskState), key = task id",
        )
    }
}

/// Creates or updates every stream and bucket. Safe to call concurrently
/// from several services.
pub async fn ensure(js: &jetstream::Context, topology: &Topology) -> Result<(), TopologyError> {
    for config in [
        topology.events(),
        topology.context(),
        topology.alerts(),
        topology.dlq(),
    ] {
        ensure_stream(js, config).await?;
    }
    for config in [
        topology.tasks_bucket(),
        topology.services_bucket(),
        topology.silences_bucket(),
        topology.detector_bucket(),
        topology.checkpoints_bucket(),
        topology.policy_bucket(),
        topology.leaders_bucket(),
    ] {
        ensure_bucket(js, config).await?;
    }
    Ok(())
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), TopologyError> {
    let name = config.name.clone();
    let mut last = String::new();
    // Two services starting together can race between "not found" and
    // "create"; the second attempt then finds the stream and updates it.
    for _ in 0..3 {
        match js.create_or_update_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(TopologyError {
        what: format!("stream {name}"),
        message: last,
    })
}

async fn ensure_bucket(js: &jetstream::Context, config: kv::Config) -> Result<(), TopologyError> {
    let name = config.bucket.clone();
    let mut last = String::new();
    for _ in 0..3 {
        match js.create_or_update_key_value(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(TopologyError {
        what: format!("KV bucket {name}"),
        message: last,
    })
}
