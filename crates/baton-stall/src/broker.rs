//! The detector's own view of the broker (decision 9): a probe asks the
//! event stream for its state every [`PROBE_EVERY`]. While it cannot get an
//! answer — a leader election, a partition that cut this detector off, a
//! dead node it was connected to — agents cannot store events either, so
//! the detector does not judge deadlines past the last moment it knew the
//! broker was serving ([`BrokerView::judge_until`]); when answers come back,
//! the silent stretch is recorded as an outage and every deadline it
//! overlaps is extended by it ([`baton_core::stall::Detector::record_outage`]).
//!
//! The probe runs for the whole life of the process, active or standing
//! by, and keeps the outages it saw: a standby that takes over because the
//! broker's troubles kept the old leader from renewing its lease starts its
//! term knowing the outage, instead of blaming agents for it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use baton_core::{Time, subjects};
use std::{collections::VecDeque, sync::Mutex};

use tokio::sync::watch;

use crate::Clock;
use baton_service::shutdown::Shutdown;

/// How often the probe asks.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long an answer may take before the broker counts as not serving.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadlines are judged at most this far past the last answer: the probe's
/// own period plus slack, so a healthy broker costs no alert latency.
pub const JUDGE_AHEAD: Duration = Duration::from_millis(600);

/// Outages kept for terms that begin later; older ones are forgotten (a
/// deadline armed before them then counts them, as the core's own bound).
const KEPT_OUTAGES: usize = 256;

/// What the probe knows, shared with the detector loop of each term.
#[derive(Debug, Clone)]
pub struct BrokerView {
    last_ok: Arc<AtomicU64>,
    /// An outage was reported and the detector has not recorded it yet:
    /// the limit stays where it was until it has, so nothing is judged
    /// against the deadlines the outage is about to extend.
    pending: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    /// The events stream's last sequence at the last answer.
    stream_last_seq: Arc<AtomicU64>,
    /// How many outages were seen so far (wakes the active loop).
    seen: Arc<watch::Sender<usize>>,
}

#[derive(Debug, Default)]
struct History {
    windows: VecDeque<(Time, Time)>,
    /// Outages forgotten from the front.
    forgotten: usize,
}

impl BrokerView {
    /// Deadlines may be judged up to this time.
    pub fn judge_until(&self) -> Time {
        Time::from_unix_nanos(self.last_ok.load(Ordering::Relaxed)).saturating_add(JUDGE_AHEAD)
    }

    /// The detector recorded the outage that ended at `until`.
    pub fn recorded(&self, until: Time) {
        // Never backwards: a term replaying old outages must not pull the
        // limit back to when they ended.
        self.last_ok
            .fetch_max(until.unix_nanos(), Ordering::Relaxed);
        self.pending.store(false, Ordering::Release);
    }

    /// The outages seen from the `from`-th on (those still kept), and the
    /// number seen in all: pass it as `from` next time.
    pub fn outages_since(&self, from: usize) -> (Vec<(Time, Time)>, usize) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let total = history.forgotten + history.windows.len();
        let skip = from.saturating_sub(history.forgotten);
        (history.windows.iter().skip(skip).copied().collect(), total)
    }

    /// The events stream's last sequence when the broker last answered: a
    /// detector that has folded less has events stored that it was not yet
    /// delivered (its consumer stalled, e.g. after its node died), and must
    /// not judge deadlines by the clock until they arrive.
    pub fn stream_last_seq(&self) -> u64 {
        self.stream_last_seq.load(Ordering::Relaxed)
    }

    /// Changes when an outage is seen.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.seen.subscribe()
    }

    fn push(&self, window: (Time, Time)) {
        let total = {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            history.windows.push_back(window);
            if history.windows.len() > KEPT_OUTAGES {
                history.windows.pop_front();
                history.forgotten += 1;
            }
            history.forgotten + history.windows.len()
        };
        self.pending.store(true, Ordering::Release);
        self.seen.send_replace(total);
    }
}

/// Starts the probe for the life of the process (until `shutdown`);
/// outages (from the last answer before the silence to the first answer
/// after it) are kept in the returned view.
pub fn spawn_probe(js: jetstream::Context, clock: Clock, mut shutdown: Shutdown) -> BrokerView {
    let view = BrokerView {
        last_ok: Arc::new(AtomicU64::new(clock.now().unix_nanos())),
        pending: Arc::default(),
        history: Arc::default(),
        stream_last_seq: Arc::default(),
        seen: Arc::new(watch::channel(0).0),
    };
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
                Ok(Ok(stream)) => {
                    shared
                        .stream_last_seq
                        .store(stream.cached_info().state.last_sequence, Ordering::Relaxed);
                    let last = Time::from_unix_nanos(shared.last_ok.load(Ordering::Relaxed));
                    if failing {
                        failing = false;
                        tracing::warn!(
                            silent_ms = now.since(last).as_millis() as u64,
                            "the broker answers again; deadlines are extended by the outage"
                        );
                        shared.push((last, now));
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
    view
}
