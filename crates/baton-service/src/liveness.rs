//! A service's liveness record in KV `baton-services`, rewritten every
//! interval. The stall detector raises `ORCHESTRATOR_DOWN` when the
//! orchestrator's record stops changing; `baton status` lists the records.
//!
//! On a graceful stop the record is deleted, so that `baton status` lists
//! only instances that run or died without stopping (a crash leaves its
//! record behind, going stale). A process that stops gracefully awaits
//! [`stopped`] before it exits, so the deletion is not cut short.

use std::{
    sync::{
        Arc, Mutex,
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
    /// The leadership term held; 0 = standby.
    term: Arc<AtomicU64>,
    /// The service runs under a leadership lease (its record says active
    /// or standby); services without one leave the role empty.
    led: Arc<std::sync::atomic::AtomicBool>,
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

    /// This instance became active in `term` (0 = standby again).
    pub fn set_term(&self, term: u64) {
        self.led.store(true, Ordering::Relaxed);
        self.term.store(term, Ordering::Relaxed);
    }

    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }
}

/// Liveness writers of this process: their shutdown signal, and whether
/// they have finished (record deleted, or given up).
static WRITERS: Mutex<Vec<(Shutdown, tokio::sync::watch::Receiver<bool>)>> = Mutex::new(Vec::new());

/// How long a graceful stop waits for the record's deletion.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits (at most `within`) until every liveness writer of this process
/// whose shutdown was triggered has deleted its record. Writers whose
/// shutdown was not triggered (the service stopped on an error) keep their
/// record, which then goes stale: that instance did not stop cleanly.
pub async fn stopped(within: Duration) {
    let waiting: Vec<_> = {
        let mut writers = WRITERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writers.retain(|(_, done)| !*done.borrow());
        writers
            .iter()
            .filter(|(shutdown, _)| shutdown.is_triggered())
            .map(|(_, done)| done.clone())
            .collect()
    };
    let _ = tokio::time::timeout(within, async {
        for mut done in waiting {
            let _ = done.wait_for(|d| *d).await;
        }
    })
    .await;
}

/// Writes the record now and then every `interval` until shutdown, then
/// deletes it.
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
        role: String::new(),
        term: 0,
    };
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    WRITERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((shutdown.clone(), done_rx));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = tick.tick() => {}
            }
            status.reported_at = Some(time_to_wire(wall_now()));
            status.applied_seq = progress.applied_seq();
            status.pending = progress.pending();
            status.term = progress.term();
            status.role = match (progress.led.load(Ordering::Relaxed), status.term) {
                (false, _) => "",
                (true, 0) => "standby",
                (true, _) => "active",
            }
            .into();
            if let Err(e) = kv.put(&key, status.encode_to_vec().into()).await {
                tracing::warn!(error = %e, "could not write liveness record");
            }
        }
        // Stopped on request: this instance is gone, not down.
        match tokio::time::timeout(DELETE_TIMEOUT, kv.delete(&key)).await {
            Ok(Ok(())) => tracing::debug!(key, "liveness record deleted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not delete liveness record"),
            Err(_) => tracing::warn!("timed out deleting liveness record"),
        }
        let _ = done_tx.send(true);
    })
}
