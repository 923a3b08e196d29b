//! A service's liveness record in KV `baton-services`, rewritten every
//! interval. The stall detector raises `ORCHESTRATOR_DOWN` when the
//! orchestrator's record stops changing; `baton status` lists the records.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::kv;
use baton_core::{Time, wire::time_to_wire};
use baton_proto::{prost::Message, v1 as pb};

use crate::shutdown::Shutdown;

/// The KV key of a service instance: `<service>.<instance>`.
pub fn key(service: &str, instance: &str) -> String {
    format!("{service}.{instance}")
}

/// Wall-clock now, for records people read (never for deadlines).
pub fn wall_now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Time::from_unix_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Progress the service reports with its liveness.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    applied_seq: Arc<AtomicU64>,
    pending: Arc<AtomicU64>,
}

impl Progress {
    pub fn set(&self, applied_seq: u64, pending: u64) {
        self.applied_seq.store(applied_seq, Ordering::Relaxed);
        self.pending.store(pending, Ordering::Relaxed);
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Relaxed)
    }

    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }
}

/// Writes the record now and then every `interval` until shutdown.
pub fn spawn(
    kv: kv::Store,
    service: &str,
    instance: &str,
    http_addr: Option<String>,
    interval: Duration,
    progress: Progress,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let key = key(service, instance);
    let mut status = pb::ServiceStatus {
        service: service.to_string(),
        instance: instance.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: Some(time_to_wire(wall_now())),
        reported_at: None,
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        applied_seq: 0,
        pending: 0,
        http_addr: http_addr.unwrap_or_default(),
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tick.tick() => {}
            }
            status.reported_at = Some(time_to_wire(wall_now()));
            status.applied_seq = progress.applied_seq();
            status.pending = progress.pending();
            if let Err(e) = kv.put(&key, status.encode_to_vec().into()).await {
                tracing::warn!(error = %e, "could not write liveness record");
            }
        }
    })
}
