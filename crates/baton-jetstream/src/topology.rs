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

    /// Artifact leases: every act on every lease, kept (who held what is
    /// the fold of this stream). Direct gets serve the SDKs' reads of a
    /// root's events.
    pub fn artifacts(&self) -> stream::Config {
        stream::Config {
            name: subjects::ARTIFACTS_STREAM.into(),
            description: Some("Baton artifact leases: baton.art.<scope>.<agent>.<path>.~".into()),
            subjects: vec![subjects::ARTIFACTS_ALL.into()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::New,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
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

    pub fn leases_bucket(&self) -> kv::Config {
        self.bucket(
            subjects::LEASES_BUCKET,
            "Baton artifact leases (baton.v1.LeaseRoot), key = <scope>.<root>, written by the orchestrator",
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
        topology.artifacts(),
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
        topology.leases_bucket(),
    ] {
        ensure_bucket(js, config).await?;
    }
    Ok(())
}

/// How long [`ensure`] keeps trying one stream or bucket: a cluster that
/// is still electing its leaders answers late or not at all.
const ENSURE_PATIENCE: Duration = Duration::from_secs(60);

/// The first attempt's wait for an answer; doubled on each retry up to
/// [`MAX_ATTEMPT_WAIT`]. On a 3-node cluster, two services creating the
/// same stream at once can leave one request unanswered (seen with
/// nats-server 2.15: the create is applied, its reply never arrives), so a
/// short first wait and a retry, which finds the stream and updates it,
/// beat waiting out the client's request timeout.
const FIRST_ATTEMPT_WAIT: Duration = Duration::from_millis(500);
const MAX_ATTEMPT_WAIT: Duration = Duration::from_secs(8);

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), TopologyError> {
    let name = config.name.clone();
    patiently(&format!("stream {name}"), || {
        let config = config.clone();
        async move {
            js.create_or_update_stream(config)
                .await
                .map(drop)
                .map_err(|e| {
                    use jetstream::context::CreateStreamErrorKind as Kind;
                    let transient = matches!(e.kind(), Kind::TimedOut | Kind::JetStreamUnavailable);
                    (e.to_string(), transient)
                })
        }
    })
    .await
}

async fn ensure_bucket(js: &jetstream::Context, config: kv::Config) -> Result<(), TopologyError> {
    let name = config.bucket.clone();
    patiently(&format!("KV bucket {name}"), || {
        let config = config.clone();
        async move {
            js.create_or_update_key_value(config)
                .await
                .map(drop)
                .map_err(|e| {
                    use jetstream::context::CreateKeyValueErrorKind as Kind;
                    let text = e.to_string();
                    // The bucket's stream errors come as text only.
                    let transient = matches!(e.kind(), Kind::TimedOut)
                        || text.contains("timed out")
                        || text.contains("unavailable");
                    (text, transient)
                })
        }
    })
    .await
}

/// Runs an idempotent create-or-update until it succeeds, saying what it
/// waits for. Unanswered requests (and "JetStream unavailable") are retried
/// until [`ENSURE_PATIENCE`] runs out; any other refusal three times, as
/// two services starting together race between "not found" and "create"
/// (the retry finds the object and updates it), so that a real mistake
/// (3 replicas on a single server, say) is reported at once.
async fn patiently<F, Fut>(what: &str, mut attempt: F) -> Result<(), TopologyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), (String, bool)>>,
{
    let deadline = tokio::time::Instant::now() + ENSURE_PATIENCE;
    let mut wait = FIRST_ATTEMPT_WAIT;
    let mut refusals = 0;
    loop {
        let last = match tokio::time::timeout(wait, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err((e, transient))) => {
                refusals += usize::from(!transient);
                e
            }
            Err(_) => format!("no answer within {wait:?}"),
        };
        if refusals >= 3 {
            return Err(TopologyError {
                what: what.to_string(),
                message: last,
            });
        }
        if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
            return Err(TopologyError {
                what: what.to_string(),
                message: format!("{last} (still failing after {ENSURE_PATIENCE:?})"),
            });
        }
        tracing::warn!(%what, error = %last, "JetStream not ready to set up {what}; trying again");
        tokio::time::sleep(Duration::from_millis(50)).await;
        wait = (wait * 2).min(MAX_ATTEMPT_WAIT);
    }
}
