//! The detector's own view of the broker (decision 9): a probe asks the
//! event stream for its state every [`PROBE_EVERY`]. While it cannot get an
//! answer — a leader election, a partition that cut this detector off, a
//! dead node it was connected to — agents cannot store events either, so
//! the detector does not judge deadlines past the last moment it knew the
//! broker was serving ([`BrokerView::judge_until`]); when answers come back,
//! the silent stretch is recorded as an outage and every deadline it
//! overlaps is extended by it ([`baton_core::stall::Detector::record_outage`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use baton_core::{Time, subjects};
use tokio::sync::mpsc;

use crate::Clock;
use baton_service::shutdown::Shutdown;

/// How often the probe asks.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long an answer may take before the broker counts as not serving.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadlines are judged at most this far past the last answer: the probe's
/// own period plus slack, so a healthy broker costs no alert latency.
pub const JUDGE_AHEAD: Duration = Duration::from_millis(600);

/// What the probe knows, shared with the detector loop.
#[derive(Debug, Clone)]
pub struct BrokerView {
    last_ok: Arc<AtomicU64>,
    /// An outage was reported and the detector has not recorded it yet:
    /// the limit stays where it was until it has, so nothing is judged
    /// against the deadlines the outage is about to extend.
    pending: Arc<AtomicBool>,
}

impl BrokerView {
    /// Deadlines may be judged up to this time.
    pub fn judge_until(&self) -> Time {
        Time::from_unix_nanos(self.last_ok.load(Ordering::Relaxed)).saturating_add(JUDGE_AHEAD)
    }

    /// The detector recorded the outage that ended at `until`.
    pub fn recorded(&self, until: Time) {
        self.last_ok.store(until.unix_nanos(), Ordering::Relaxed);
        self.pending.store(false, Ordering::Release);
    }
}

/// Starts the probe; outages (from the last answer before the silence to
/// the first answer after it) arrive on the returned channel.
pub fn spawn_probe(
    js: jetstream::Context,
    clock: Clock,
    mut shutdown: Shutdown,
) -> (BrokerView, mpsc::UnboundedReceiver<(Time, Time)>) {
    let view = BrokerView {
        last_ok: Arc::new(AtomicU64::new(clock.now().unix_nanos())),
        pending: Arc::default(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = view.clone();
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            // Asking for the stream's state needs its leader: no leader, no
            // answer (and no stored events either).
            let answered =
                tokio::time::timeout(PROBE_TIMEOUT, js.get_stream(subjects::EVENTS_STREAM)).await;
            let now = clock.now();
            match answered {
                Ok(Ok(_)) => {
                    let last = Time::from_unix_nanos(shared.last_ok.load(Ordering::Relaxed));
                    if failing {
                        failing = false;
                        tracing::warn!(
                            silent_ms = now.since(last).as_millis() as u64,
                            "the broker answers again; deadlines are extended by the outage"
                        );
                        shared.pending.store(true, Ordering::Release);
                        let _ = tx.send((last, now));
                    } else if !shared.pending.load(Ordering::Acquire) {
                        shared.last_ok.store(now.unix_nanos(), Ordering::Relaxed);
                    }
                }
                _ => {
                    if !failing {
                        tracing::warn!(
                            "the broker does not answer; deadlines are not judged until it does"
                        );
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    });
    (view, rx)
}
