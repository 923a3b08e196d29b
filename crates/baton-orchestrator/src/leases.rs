//! Materialised artifact leases: the orchestrator follows `BATON_ARTIFACTS`
//! with the one lease fold ([`baton_core::lease::apply`]) and stores each
//! root's state (`baton.v1.LeaseRoot`) in KV `baton-leases`, so operators
//! and dashboards read who holds what, and who waits, with one KV read
//! instead of folding the stream's whole history.
//!
//! It runs in every term of leadership, beside the task ingest, and its
//! writes go through the term's outbox (fenced: a deposed instance cannot
//! write). A checkpoint (`baton-orchestrator-leases`) records the stream
//! sequence up to which every root is stored; a new term loads the stored
//! roots and follows the stream from the checkpoint, skipping in each root
//! the events its stored state already has, so nothing is applied twice
//! after a crash between a root's write and the checkpoint.

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream;
use baton_core::{
    AgentId,
    lease::{Artifact, LeaseBook, LeaseMeta, RootState, apply},
    subjects,
    wire::read_lease_event,
};
use baton_jetstream::read;
use baton_service::{
    http::Health,
    outbox::{Outbox, Outgoing},
    shutdown::Shutdown,
    snapshot::Checkpoint,
};
use futures::StreamExt;

/// The checkpoint key of the materialised leases.
pub const CHECKPOINT: &str = subjects::LEASES_CHECKPOINT;

/// The health condition set while the leases cannot be followed or stored.
pub const HEALTH_CONDITION: &str = "leases";

/// Changed roots are stored at most this long after their event.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Starts materialising leases until `shutdown` (the term's end). Returns
/// once the stored roots are loaded and the follower is set up.
pub async fn spawn(
    js: jetstream::Context,
    outbox: Outbox,
    operators: Vec<AgentId>,
    health: Health,
    shutdown: Shutdown,
) -> Result<(), String> {
    health.set_condition(HEALTH_CONDITION, None);
    let checkpoint = Checkpoint::open(&js, CHECKPOINT)
        .await
        .map_err(|e| e.to_string())?
        .writing_through(outbox.clone());
    let upto = checkpoint.load().await.map_err(|e| e.to_string())?;
    let mut book = LeaseBook::new();
    let mut stored_seq: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut bad = 0usize;
    read::for_each_kv_value(
        &js,
        subjects::LEASES_BUCKET,
        |key, stored| match RootState::decode(&stored.payload) {
            Ok(state) => {
                book.restore_root(&state);
                stored_seq.insert(
                    (state.scope.token().to_string(), state.root.clone()),
                    state.last_seq,
                );
            }
            Err(e) => {
                bad += 1;
                tracing::warn!(key, error = %e, "unreadable lease root in KV");
            }
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    // An unreadable root cannot be resumed: every root is rebuilt from the
    // start of the stream.
    let from = if bad > 0 {
        tracing::warn!(bad, "rebuilding the materialised leases from the stream");
        book = LeaseBook::new();
        stored_seq.clear();
        1
    } else {
        upto + 1
    };
    let events = read::follow_from(
        &js,
        subjects::ARTIFACTS_STREAM,
        subjects::ARTIFACTS_ALL,
        from,
    )
    .await
    .map_err(|e| e.to_string())?;
    let materialiser = Materialiser {
        book,
        stored_seq,
        operators,
        checkpoint,
        outbox,
        health,
        dirty: BTreeMap::new(),
        folded: from - 1,
        stored: upto,
    };
    tokio::spawn(materialiser.run(events, shutdown));
    Ok(())
}

struct Materialiser {
    book: LeaseBook,
    /// Per root (scope token, first segment): the last sequence its stored
    /// state has; events up to it are skipped.
    stored_seq: BTreeMap<(String, String), u64>,
    operators: Vec<AgentId>,
    checkpoint: Checkpoint,
    outbox: Outbox,
    health: Health,
    /// Roots changed since the last flush: an artifact of each, and the
    /// sequence of its last event.
    dirty: BTreeMap<(String, String), (Artifact, u64)>,
    /// The last stream sequence folded (or skipped).
    folded: u64,
    /// The checkpoint's sequence.
    stored: u64,
}

impl Materialiser {
    async fn run(
        mut self,
        mut events: impl futures::Stream<Item = Result<read::Stored, read::ReadError>> + Unpin,
        shutdown: Shutdown,
    ) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ended = shutdown.clone();
        loop {
            tokio::select! {
                biased;
                () = ended.wait() => break,
                // Before the next event: a backlog does not hold the
                // flushes back.
                _ = tick.tick() => {
                    if !self.flush(&shutdown).await {
                        break;
                    }
                }
                next = events.next() => match next {
                    Some(Ok(stored)) => self.fold(&stored),
                    Some(Err(e)) => tracing::warn!(error = %e, "reading the leases stream"),
                    None => {
                        self.health.set_condition(HEALTH_CONDITION, Some("the follower of BATON_ARTIFACTS ended; restart the orchestrator".into()));
                        break;
                    }
                },
            }
        }
    }

    /// Folds one stored event (an unreadable or forged one is skipped, as
    /// every reader skips it; it still moves the checkpoint).
    fn fold(&mut self, stored: &read::Stored) {
        self.folded = stored.seq;
        let Ok(event) = read_lease_event(&stored.subject, &stored.payload) else {
            return;
        };
        let key = (
            event.artifact.scope.token().to_string(),
            event.artifact.name.root().to_string(),
        );
        if self.stored_seq.get(&key).is_some_and(|&s| stored.seq <= s) {
            return;
        }
        let meta = LeaseMeta {
            seq: stored.seq,
            stored_at: stored.stored_at,
        };
        apply(&mut self.book, &event, meta, &self.operators);
        self.dirty.insert(key, (event.artifact, stored.seq));
    }

    /// Stores every changed root, then the checkpoint; false when the term
    /// is over (deposed or shut down).
    async fn flush(&mut self, shutdown: &Shutdown) -> bool {
        if self.folded == self.stored {
            return true;
        }
        let roots: Vec<((String, String), RootState)> = self
            .dirty
            .iter()
            .map(|(key, (artifact, seq))| (key.clone(), self.book.root_state(artifact, *seq)))
            .collect();
        let out: Vec<Outgoing> = self
            .dirty
            .values()
            .zip(&roots)
            .map(|((artifact, _), (_, state))| {
                Outgoing::new(
                    format!(
                        "$KV.{}.{}",
                        subjects::LEASES_BUCKET,
                        subjects::lease_root_key(artifact)
                    ),
                    state.encode(),
                )
            })
            .collect();
        if let Err(e) = self.outbox.deliver(&out, shutdown).await {
            // The term's end (shut down, deposed) is no fault of this
            // instance's health; anything else (a root too large) is.
            if !(shutdown.is_triggered() || self.outbox.was_deposed()) {
                tracing::error!(error = %e, "materialised leases not stored; they stay behind until the next term");
                self.health.set_condition(
                    HEALTH_CONDITION,
                    Some(format!("materialised leases not stored: {e}")),
                );
            }
            return false;
        }
        for (key, state) in roots {
            self.stored_seq.insert(key, state.last_seq);
        }
        self.dirty.clear();
        let upto = self.folded;
        if let Err(e) = self.checkpoint.store(upto).await {
            tracing::warn!(error = %e, "lease checkpoint not stored");
            return !e.deposed;
        }
        self.stored = upto;
        self.health.set_condition(HEALTH_CONDITION, None);
        true
    }
}
