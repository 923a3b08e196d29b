//! Leases on shared artifacts: the [`Lease`] handle and the acts behind it.
//!
//! An agent acquires a lease on a named artifact (`drafts/post.md`, a
//! record key), exclusive or shared. Every act is a compare-and-set over the
//! artifact's root (scope plus first path segment, which holds every name
//! it can conflict with), and its outcome is read back by folding the
//! root's events with the same [`baton_core::lease::apply`] every reader
//! uses, so the SDK never believes a lease the stream does not grant
//! (expiry is judged by the broker's time, not this machine's). The fold
//! starts from the root as the orchestrator materialised it in KV
//! `baton-leases`, when there is one, and reads only the events after it.
//!
//! The handle renews itself at a third of its ttl; releasing or handing
//! over consume it, dropping a live handle releases the lease. Writes the
//! holder makes carry [`Lease::token`]; a store checks it with
//! [`crate::fence::FencedDir`] or the rule of [`baton_core::lease::Fence`].

use std::{sync::Arc, time::Duration};

use baton_core::{
    AgentId, Time, WorkflowId,
    lease::{
        Artifact, ArtifactName, LeaseBody, LeaseBook, LeaseDisposition, LeaseEffect, LeaseEvent,
        LeaseMeta, LeaseMode, LeaseOutcome, LeaseRefusal, Scope, apply,
    },
    subjects,
    wire::read_lease_event,
};
use baton_jetstream::{Cas, PublishError, publish_durable_watched, read};
use tokio::sync::{Mutex, watch};

use crate::{
    agent::{Agent, wall_clock},
    error::BrokerError,
};

/// Why a lease act did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another agent holds a conflicting lease (on this name, or on one
    /// above or below it).
    #[error(
        "{} is held by {holder} ({mode}, token {token}) since {since}, until at least {expires_at} unless renewed",
        scoped(workflow.as_ref(), artifact)
    )]
    Held {
        /// The name the conflicting lease is on (maybe not the one asked
        /// for: a folder above it, or a file under it).
        artifact: String,
        /// Its scope (`None`: global).
        workflow: Option<WorkflowId>,
        holder: AgentId,
        mode: LeaseMode,
        since: Time,
        expires_at: Time,
        token: u64,
    },
    /// This agent's lease is gone: it expired, was revoked, or was handed
    /// on. Writes with its token are refused by fenced stores.
    #[error("lease on {artifact} (token {token}) is lost: {reason}")]
    Lost {
        artifact: String,
        token: u64,
        reason: String,
    },
    /// This agent holds no lease on the artifact (to resume).
    #[error("{artifact}: this agent holds no lease on it")]
    NotHeld { artifact: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// `w1:drafts/post.md`, or the bare name in the global scope.
fn scoped(workflow: Option<&WorkflowId>, artifact: &str) -> String {
    match workflow {
        Some(w) => format!("{w}:{artifact}"),
        None => artifact.to_string(),
    }
}

/// How to take a lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Where the name is unique: a workflow, or everywhere (the default).
    pub workflow: Option<WorkflowId>,
    /// How long the lease lives without a renewal; the handle renews at a
    /// third of it.
    pub ttl: Duration,
    /// The task the lease is taken for, if any.
    pub task: Option<baton_core::TaskId>,
    /// Renew on its own while the handle lives (the default). Off: the
    /// agent calls [`Lease::renew`] itself within each ttl, e.g. between
    /// an LLM's tool calls.
    pub auto_renew: bool,
    /// On a refusal, record this agent as waiting for the artifact for one
    /// ttl (the default): operators see who waits (`baton leases`), and a
    /// rule's `max_hold` can report a holder that keeps others out. An
    /// agent that retries keeps waiting; one that gives up stops waiting a
    /// ttl later, or at once with [`Agent::stop_waiting`]. Off for a probe.
    pub record_wait: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            workflow: None,
            ttl: Duration::from_secs(15),
            task: None,
            auto_renew: true,
            record_wait: true,
        }
    }
}

/// What this agent knows of a root: the fold of its events up to `book`'s
/// last sequence.
struct RootView {
    book: LeaseBook,
    operators: Vec<AgentId>,
    /// The root's last stored sequence read, refused events included: the
    /// compare-and-set expectation (a malformed event on the root must not
    /// make every later act conflict).
    last_seq: u64,
}

/// Which stored event is this agent's act, when catching up.
#[derive(Clone, Copy)]
enum Mine<'a> {
    /// None of interest (a first read).
    Unknown,
    /// Stored at this sequence (its publish was acknowledged).
    At(u64),
    /// Maybe stored, with this message id (an ack may have been lost).
    MsgId(&'a str),
}

/// The outcome of one act, as the stream judged it.
struct Judged {
    seq: u64,
    outcome: LeaseOutcome,
}

impl RootView {
    async fn read(agent: &Agent, artifact: &Artifact) -> Result<RootView, BrokerError> {
        let js = &agent.inner.js;
        let root = subjects::lease_root(artifact);
        let stored_root = format!(
            "$KV.{}.{}",
            subjects::LEASES_BUCKET,
            subjects::lease_root_key(artifact)
        );
        let leases_stream = format!("KV_{}", subjects::LEASES_BUCKET);
        let (operators, last, materialised) = tokio::join!(
            agent.operators(),
            read::last_on_subject(js, subjects::ARTIFACTS_STREAM, &root),
            read::last_on_subject(js, &leases_stream, &stored_root)
        );
        let mut view = RootView {
            book: LeaseBook::new(),
            operators: operators?,
            last_seq: 0,
        };
        // A root nobody used yet needs no read (and if a replica answered
        // from behind, the compare-and-set says so and the act re-reads).
        if last?.is_some() {
            // Start from the root as the orchestrator stored it (the same
            // fold, with the same published policy), and read only what
            // came after: an act on a root with a long history does not
            // read it all. Without a stored root (no orchestrator, a root
            // too new, a bucket this agent may not read): from the start.
            if let Some(state) = materialised
                .ok()
                .flatten()
                .filter(|s| !s.is_kv_tombstone())
                .and_then(|s| baton_core::lease::RootState::decode(&s.payload).ok())
                .filter(|state| state.contains(artifact))
            {
                view.book.restore_root(&state);
                view.last_seq = state.last_seq;
            }
            view.catch_up(agent, artifact, Mine::Unknown).await?;
        }
        Ok(view)
    }

    /// Folds the root's events after what is known; returns how this
    /// agent's act (`mine`) was judged, if it is among them.
    async fn catch_up(
        &mut self,
        agent: &Agent,
        artifact: &Artifact,
        mine: Mine<'_>,
    ) -> Result<Option<Judged>, BrokerError> {
        let js = &agent.inner.js;
        let root = subjects::lease_root(artifact);
        let from = self.last_seq + 1;
        // After an act, usually only its own event is new: direct gets, no
        // consumer. If a replica answered from behind, read it all.
        let direct = match mine {
            Mine::At(to) => {
                let read = read::read_range_direct(js, subjects::ARTIFACTS_STREAM, &root, from, to)
                    .await?;
                read.last().is_some_and(|s| s.seq == to).then_some(read)
            }
            Mine::Unknown | Mine::MsgId(_) => None,
        };
        let stored = match direct {
            Some(read) => read,
            None => read::read_subject(js, subjects::ARTIFACTS_STREAM, &root, from, None).await?,
        };
        let mut judged = None;
        for s in stored {
            self.last_seq = self.last_seq.max(s.seq);
            // The one read path: forged or malformed events are not part
            // of the history for any reader.
            let Ok(event) = read_lease_event(&s.subject, &s.payload) else {
                continue;
            };
            let meta = LeaseMeta {
                seq: s.seq,
                stored_at: s.stored_at,
            };
            let outcome = apply(&mut self.book, &event, meta, &self.operators);
            let is_mine = match mine {
                Mine::Unknown => false,
                Mine::At(seq) => s.seq == seq,
                Mine::MsgId(id) => s.msg_id() == Some(id),
            };
            if is_mine {
                judged = Some(Judged {
                    seq: s.seq,
                    outcome,
                });
            }
        }
        Ok(judged)
    }
}

fn held(artifact: &Artifact, hold: &baton_core::lease::Hold) -> LeaseError {
    LeaseError::Held {
        artifact: artifact.name.to_string(),
        workflow: artifact.scope.workflow().cloned(),
        holder: hold.agent.clone(),
        mode: hold.mode,
        since: hold.since,
        expires_at: hold.expires_at(),
        token: hold.token,
    }
}

impl Agent {
    /// Takes a lease on `name` (global scope, 15 s ttl, renewed while the
    /// handle lives). Of agents racing for an exclusive lease exactly one
    /// wins; the others get [`LeaseError::Held`] naming the holder.
    pub async fn acquire(&self, name: &str, mode: LeaseMode) -> Result<Lease, LeaseError> {
        self.acquire_with(name, mode, LeaseOptions::default()).await
    }

    /// [`acquire`](Self::acquire) with options.
    pub async fn acquire_with(
        &self,
        name: &str,
        mode: LeaseMode,
        options: LeaseOptions,
    ) -> Result<Lease, LeaseError> {
        let artifact = artifact(name, options.workflow.as_ref())?;
        let record_wait = options.record_wait;
        let ttl = options.ttl;
        let (acquired, wait_fresh) = self.try_acquire(&artifact, mode, options).await;
        if record_wait && !wait_fresh && matches!(acquired, Err(LeaseError::Held { .. })) {
            // Best effort: the refusal stands whether or not the wait is
            // recorded.
            if let Err(e) = self.publish_wait(&artifact, mode, ttl).await {
                tracing::warn!(%artifact, error = %e, "could not record the wait for a lease");
            }
        }
        acquired
    }

    /// Ends this agent's wait for `name` (recorded by a refused
    /// [`acquire`](Self::acquire)), e.g. when it gives up on it.
    pub async fn stop_waiting(
        &self,
        name: &str,
        workflow: Option<&WorkflowId>,
        mode: LeaseMode,
    ) -> Result<u64, LeaseError> {
        let artifact = artifact(name, workflow)?;
        self.publish_wait(&artifact, mode, Duration::ZERO).await
    }

    /// Stores: reports a write refused for a stale token (the fencing rule,
    /// [`crate::fence::FencedDir`] or [`baton_core::lease::Fence`]), by
    /// `writer` if the store knows it. The stall detector raises
    /// `LEASE_STALE_WRITE` naming the writer, the store and the artifact's
    /// holder now. Returns the report's stream sequence.
    pub async fn report_stale_write(
        &self,
        workflow: Option<&WorkflowId>,
        writer: Option<&AgentId>,
        refused: &baton_core::lease::StaleToken,
    ) -> Result<u64, LeaseError> {
        let artifact = artifact(&refused.artifact, workflow)?;
        let body = LeaseBody::StaleWrite {
            writer: writer.cloned(),
            token: refused.token,
            highest_seen: refused.seen,
        };
        self.publish_plain(&artifact, body).await
    }

    async fn publish_wait(
        &self,
        artifact: &Artifact,
        mode: LeaseMode,
        ttl: Duration,
    ) -> Result<u64, LeaseError> {
        self.publish_plain(artifact, LeaseBody::Wait { mode, ttl })
            .await
    }

    /// Publishes a lease event that changes no hold (a wait, a report):
    /// no compare-and-set, as no act depends on its place in the root.
    async fn publish_plain(&self, artifact: &Artifact, body: LeaseBody) -> Result<u64, LeaseError> {
        let event = self.lease_event(artifact, 0, body);
        baton_core::wire::check_lease_limits(&event)
            .map_err(|e| LeaseError::Invalid(e.to_string()))?;
        let ack = publish_durable_watched(
            &self.inner.js,
            Some(&self.inner.denials),
            &subjects::lease(artifact, self.id()),
            event.encode().into(),
            &event.event_id,
            None,
            self.inner.retry,
        )
        .await
        .map_err(BrokerError::from)?;
        Ok(ack.sequence)
    }

    async fn try_acquire(
        &self,
        artifact: &Artifact,
        mode: LeaseMode,
        options: LeaseOptions,
    ) -> (Result<Lease, LeaseError>, bool) {
        let artifact = artifact.clone();
        if options.ttl.is_zero() {
            return (
                Err(LeaseError::Invalid("a lease needs a ttl above zero".into())),
                false,
            );
        }
        let mut view = match RootView::read(self, &artifact).await {
            Ok(view) => view,
            Err(e) => return (Err(e.into()), false),
        };
        // Whether this agent's wait, as the stream has it, still has most
        // of its ttl to run: then a refusal need not record it again (an
        // agent polling for a lease would otherwise write at its polling
        // rate, and every write makes the holder's next act retry).
        let wait_fresh = |view: &RootView| {
            view.book.waiters(&artifact).iter().any(|w| {
                w.agent == *self.id()
                    && w.mode == mode
                    && w.ttl == options.ttl
                    && w.renewed_at.saturating_add(options.ttl / 3) > wall_clock()
            })
        };
        let body = LeaseBody::Acquire {
            mode,
            ttl: options.ttl,
            task: options.task.clone(),
        };
        let event = self.lease_event(&artifact, 0, body);
        for _ in 0..32 {
            // What the stream says now; a hold this clock thinks expired
            // is tried, and the broker's time decides.
            if let Some((on, hold)) = view
                .book
                .conflicts(&artifact, self.id(), mode, wall_clock())
                .next()
            {
                return (Err(held(on, hold)), wait_fresh(&view));
            }
            let published = match self.publish_lease(&event, &mut view, &artifact).await {
                Ok(published) => published,
                Err(e) => return (Err(e), false),
            };
            match published {
                Some(judged) => {
                    let fresh = wait_fresh(&view);
                    let result = match judged.outcome.disposition {
                        LeaseDisposition::Applied => {
                            let token = granted_token(&judged.outcome).unwrap_or_default();
                            Ok(Lease::start(
                                self.clone(),
                                artifact,
                                mode,
                                token,
                                options.ttl,
                                view,
                                options.auto_renew.then_some(Duration::ZERO),
                            ))
                        }
                        LeaseDisposition::Refused(LeaseRefusal::Held {
                            artifact: on,
                            holder,
                            mode,
                            since,
                            token,
                        }) => {
                            let expires_at = view
                                .book
                                .holds(&on)
                                .iter()
                                .find(|h| h.agent == holder)
                                .map_or(since, baton_core::lease::Hold::expires_at);
                            Err(LeaseError::Held {
                                artifact: on.name.to_string(),
                                workflow: on.scope.workflow().cloned(),
                                holder,
                                mode,
                                since,
                                expires_at,
                                token,
                            })
                        }
                        other => Err(LeaseError::Invalid(format!(
                            "acquisition of {artifact} refused: {other:?}"
                        ))),
                    };
                    return (result, fresh);
                }
                // Someone else acted on the root first: look again.
                None => continue,
            }
        }
        (
            Err(LeaseError::Broker(BrokerError::Other(format!(
                "{artifact}: its root kept changing; giving up after 32 attempts"
            )))),
            false,
        )
    }

    /// Takes an exclusive lease on each of a task's declared artifacts, in
    /// name order, all or none: on the first refusal the ones taken are
    /// released and the refusal returned.
    pub(crate) async fn acquire_for_task(
        &self,
        task: &baton_core::TaskId,
        workflow: &WorkflowId,
        names: &[ArtifactName],
        ttl: Duration,
    ) -> Result<Vec<Lease>, LeaseError> {
        let mut names: Vec<&ArtifactName> = names.iter().collect();
        names.sort();
        names.dedup();
        let mut taken = Vec::with_capacity(names.len());
        for name in names {
            let options = LeaseOptions {
                workflow: Some(workflow.clone()),
                ttl,
                task: Some(task.clone()),
                auto_renew: true,
                record_wait: true,
            };
            match self
                .acquire_with(name.as_str(), LeaseMode::Exclusive, options)
                .await
            {
                Ok(lease) => taken.push(lease),
                Err(e) => {
                    release_all(taken, "the task's other artifacts are held").await;
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    /// Takes up a lease this agent already holds: one handed to it, or its
    /// own from before a restart (while it has not expired).
    pub async fn resume_lease(
        &self,
        name: &str,
        workflow: Option<&WorkflowId>,
    ) -> Result<Lease, LeaseError> {
        self.resume_lease_renewing(name, workflow, true).await
    }

    /// [`resume_lease`](Self::resume_lease), renewing on its own or not.
    pub(crate) async fn resume_lease_renewing(
        &self,
        name: &str,
        workflow: Option<&WorkflowId>,
        auto_renew: bool,
    ) -> Result<Lease, LeaseError> {
        let artifact = artifact(name, workflow)?;
        let view = RootView::read(self, &artifact).await?;
        let hold = view
            .book
            .holds(&artifact)
            .iter()
            .find(|h| h.agent == *self.id() && h.expires_at() >= wall_clock())
            .cloned()
            .ok_or_else(|| LeaseError::NotHeld {
                artifact: artifact.to_string(),
            })?;
        Ok(Lease::start(
            self.clone(),
            artifact,
            hold.mode,
            hold.token,
            hold.ttl,
            view,
            auto_renew.then(|| wall_clock().since(hold.renewed_at)),
        ))
    }

    /// Every lease as the stream has them (the fold of `BATON_ARTIFACTS`,
    /// or of one workflow's scope), for operators and dashboards: the roots
    /// the orchestrator materialised in KV `baton-leases`, brought up to
    /// date with the events stored since its checkpoint, so the answer is
    /// the fold of the whole stream (the same without an orchestrator,
    /// only slower). A hold past its expiry stays in the book until an
    /// event of its root comes: compare
    /// [`Hold::expires_at`](baton_core::lease::Hold::expires_at) with the
    /// time.
    pub async fn leases(&self, workflow: Option<&WorkflowId>) -> Result<LeaseBook, LeaseError> {
        let js = &self.inner.js;
        let operators = self.operators().await?;
        // The checkpoint first: every root it covers is stored by then, so
        // a root read after it is at least as new.
        let upto = read::checkpoint(js, subjects::LEASES_CHECKPOINT)
            .await
            .unwrap_or(0);
        let mut book = LeaseBook::new();
        let mut stored_seq: std::collections::BTreeMap<(String, String), u64> = Default::default();
        let mut unreadable = false;
        let scope_prefix =
            workflow.map(|w| subjects::lease_scope_key_prefix(&Scope::Workflow(w.clone())));
        let read = read::for_each_kv_value(js, subjects::LEASES_BUCKET, |key, stored| {
            if scope_prefix.as_deref().is_some_and(|p| !key.starts_with(p)) {
                return;
            }
            match baton_core::lease::RootState::decode(&stored.payload) {
                Ok(state) => {
                    book.restore_root(&state);
                    stored_seq.insert(
                        (state.scope.token().to_string(), state.root.clone()),
                        state.last_seq,
                    );
                }
                // Unreadable: fold everything from the stream instead.
                Err(_) => unreadable = true,
            }
        })
        .await;
        let upto = if read.is_err() || unreadable {
            book = LeaseBook::new();
            stored_seq.clear();
            0
        } else {
            upto
        };
        let filter = match workflow {
            Some(w) => format!("baton.art.{w}.>"),
            None => subjects::ARTIFACTS_ALL.to_string(),
        };
        let tail = read::read_subject(js, subjects::ARTIFACTS_STREAM, &filter, upto + 1, None)
            .await
            .map_err(BrokerError::from)?;
        for s in tail {
            if let Ok(event) = read_lease_event(&s.subject, &s.payload) {
                let key = (
                    event.artifact.scope.token().to_string(),
                    event.artifact.name.root().to_string(),
                );
                if stored_seq.get(&key).is_some_and(|&seen| s.seq <= seen) {
                    continue;
                }
                let meta = LeaseMeta {
                    seq: s.seq,
                    stored_at: s.stored_at,
                };
                apply(&mut book, &event, meta, &operators);
            }
        }
        Ok(book)
    }

    /// Operators: takes `holder`'s lease on `name` away.
    pub async fn revoke_lease(
        &self,
        name: &str,
        workflow: Option<&WorkflowId>,
        holder: &AgentId,
        reason: &str,
    ) -> Result<u64, LeaseError> {
        let artifact = artifact(name, workflow)?;
        let mut view = RootView::read(self, &artifact).await?;
        let body = LeaseBody::Revoke {
            holder: holder.clone(),
            reason: reason.to_string(),
        };
        let event = self.lease_event(&artifact, 0, body);
        for _ in 0..32 {
            if let Some(judged) = self.publish_lease(&event, &mut view, &artifact).await? {
                return match judged.outcome.disposition {
                    LeaseDisposition::Applied => Ok(judged.seq),
                    LeaseDisposition::Refused(r) => Err(LeaseError::Invalid(format!(
                        "revocation of {holder}'s lease on {artifact} refused: {r}"
                    ))),
                    LeaseDisposition::Duplicate => Ok(judged.seq),
                };
            }
        }
        Err(LeaseError::Broker(BrokerError::Other(format!(
            "{artifact}: its root kept changing; giving up after 32 attempts"
        ))))
    }

    fn lease_event(&self, artifact: &Artifact, token: u64, body: LeaseBody) -> LeaseEvent {
        LeaseEvent {
            event_id: nuid::next().to_string(),
            agent: self.id().clone(),
            artifact: artifact.clone(),
            token,
            occurred_at: Some(wall_clock()),
            body,
        }
    }

    /// Publishes with compare-and-set at the view's last sequence, then
    /// folds up to the stored event and returns how it was judged; `None`
    /// when another event came first (the view has caught up; try again).
    async fn publish_lease(
        &self,
        event: &LeaseEvent,
        view: &mut RootView,
        artifact: &Artifact,
    ) -> Result<Option<Judged>, LeaseError> {
        // What every reader would drop is never sent (it would never be
        // judged, and the act would wait for it in vain).
        baton_core::wire::check_lease_limits(event)
            .map_err(|e| LeaseError::Invalid(e.to_string()))?;
        let cas = Cas {
            expected: view.last_seq,
            scope: subjects::lease_root(artifact),
        };
        let published = publish_durable_watched(
            &self.inner.js,
            Some(&self.inner.denials),
            &subjects::lease(artifact, self.id()),
            event.encode().into(),
            &event.event_id,
            Some(&cas),
            self.inner.retry,
        )
        .await;
        match published {
            Ok(ack) => Ok(view
                .catch_up(self, artifact, Mine::At(ack.sequence))
                .await?),
            Err(PublishError::WrongLastSequence { after_retry, .. }) => {
                // An earlier attempt may have been stored with its ack lost:
                // if so, it is among the events read now.
                let mine = if after_retry {
                    Mine::MsgId(&event.event_id)
                } else {
                    Mine::Unknown
                };
                Ok(view.catch_up(self, artifact, mine).await?)
            }
            Err(e) => Err(BrokerError::from(e).into()),
        }
    }
}

/// Releases every lease (a failure is logged: the lease lapses at its ttl).
pub(crate) async fn release_all(leases: Vec<Lease>, reason: &str) {
    for lease in leases {
        let artifact = lease.artifact().to_string();
        if let Err(e) = lease.release(reason).await {
            tracing::warn!(%artifact, error = %e, "could not release a lease; it lapses at its ttl");
        }
    }
}

/// Hands every lease to `to` for `ttl`; a lease that cannot be handed over
/// is released.
pub(crate) async fn hand_over_all(leases: Vec<Lease>, to: &AgentId, ttl: Duration) {
    for lease in leases {
        let artifact = lease.artifact().to_string();
        if let Err(e) = lease.hand_over(to, ttl).await {
            tracing::warn!(%artifact, error = %e, "could not hand a lease over; releasing it");
            if let Some(lease) = e.into_lease() {
                let _ = lease
                    .release("could not be handed over with its task")
                    .await;
            }
        }
    }
}

fn artifact(name: &str, workflow: Option<&WorkflowId>) -> Result<Artifact, LeaseError> {
    let name = ArtifactName::new(name).map_err(|e| LeaseError::Invalid(e.to_string()))?;
    Ok(Artifact {
        scope: workflow.map_or(Scope::Global, |w| Scope::Workflow(w.clone())),
        name,
    })
}

fn granted_token(outcome: &LeaseOutcome) -> Option<u64> {
    outcome.effects.iter().find_map(|e| match e {
        LeaseEffect::Granted { hold, .. } | LeaseEffect::HandedOver { hold, .. } => {
            Some(hold.token)
        }
        _ => None,
    })
}

struct LeaseState {
    view: RootView,
    last_sent: tokio::time::Instant,
    lost: Option<String>,
}

struct Shared {
    agent: Agent,
    artifact: Artifact,
    mode: LeaseMode,
    token: u64,
    ttl: Duration,
    state: Mutex<LeaseState>,
    lost_tx: watch::Sender<bool>,
}

impl Shared {
    fn lost(&self, reason: String) -> LeaseError {
        LeaseError::Lost {
            artifact: self.artifact.to_string(),
            token: self.token,
            reason,
        }
    }

    /// Why this agent's hold is gone, from the effects of the events folded
    /// since it was last seen.
    fn why_lost(&self, outcome: &LeaseOutcome) -> String {
        let me = self.agent.id();
        for effect in &outcome.effects {
            match effect {
                LeaseEffect::Expired { artifact, hold }
                    if *artifact == self.artifact && hold.agent == *me =>
                {
                    return format!("it expired at {}", hold.expires_at());
                }
                _ => {}
            }
        }
        match &outcome.disposition {
            LeaseDisposition::Refused(r) => {
                format!("{r} (expired, revoked or handed on)")
            }
            _ => "it is no longer held".into(),
        }
    }

    async fn act(&self, body: LeaseBody) -> Result<Judged, LeaseError> {
        let mut st = self.state.lock().await;
        if let Some(reason) = &st.lost {
            return Err(self.lost(reason.clone()));
        }
        let event = self.agent.lease_event(&self.artifact, self.token, body);
        for _ in 0..32 {
            let sent = tokio::time::Instant::now();
            let judged = self
                .agent
                .publish_lease(&event, &mut st.view, &self.artifact)
                .await?;
            let Some(judged) = judged else { continue };
            if judged.outcome.disposition == LeaseDisposition::Applied {
                st.last_sent = sent;
                return Ok(judged);
            }
            // Refused for want of the hold: the lease is gone. Refused
            // for anything else (a hand-over the recipient cannot take):
            // the lease is still this agent's.
            if let LeaseDisposition::Refused(LeaseRefusal::Held {
                artifact,
                holder,
                mode,
                since,
                token,
            }) = judged.outcome.disposition
            {
                let expires_at = st
                    .view
                    .book
                    .holds(&artifact)
                    .iter()
                    .find(|h| h.agent == holder)
                    .map_or(since, baton_core::lease::Hold::expires_at);
                return Err(LeaseError::Held {
                    artifact: artifact.name.to_string(),
                    workflow: artifact.scope.workflow().cloned(),
                    holder,
                    mode,
                    since,
                    expires_at,
                    token,
                });
            }
            let reason = self.why_lost(&judged.outcome);
            st.lost = Some(reason.clone());
            self.lost_tx.send_replace(true);
            return Err(self.lost(reason));
        }
        Err(LeaseError::Broker(BrokerError::Other(format!(
            "{}: its root kept changing; giving up after 32 attempts",
            self.artifact
        ))))
    }
}

/// A hand-over that did not happen; if the lease is still this agent's,
/// its handle comes back (renewing again).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct HandOverError {
    #[source]
    pub error: LeaseError,
    lease: Option<Lease>,
}

impl HandOverError {
    /// The handle back, when the lease is still this agent's.
    pub fn into_lease(self) -> Option<Lease> {
        self.lease
    }
}

/// Proof that this agent holds a lease on an artifact under a token.
pub struct Lease {
    shared: Arc<Shared>,
    renewals: Option<tokio::task::JoinHandle<()>>,
    done: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("artifact", &self.shared.artifact)
            .field("mode", &self.shared.mode)
            .field("token", &self.shared.token)
            .finish()
    }
}

impl Lease {
    fn start(
        agent: Agent,
        artifact: Artifact,
        mode: LeaseMode,
        token: u64,
        ttl: Duration,
        view: RootView,
        // Renew on its own, the last renewal this long ago; `None`: the
        // agent renews by hand.
        renewals: Option<Duration>,
    ) -> Lease {
        let renewed_ago = renewals.unwrap_or_default();
        let (lost_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            agent,
            artifact,
            mode,
            token,
            ttl,
            state: Mutex::new(LeaseState {
                view,
                // The renewal schedule runs from the hold's last renewal.
                last_sent: tokio::time::Instant::now()
                    .checked_sub(renewed_ago)
                    .unwrap_or_else(tokio::time::Instant::now),
                lost: None,
            }),
            lost_tx,
        });
        let renewals = renewals.map(|_| tokio::spawn(renew_loop(shared.clone())));
        Lease {
            shared,
            renewals,
            done: false,
        }
    }

    pub fn artifact(&self) -> &Artifact {
        &self.shared.artifact
    }

    pub fn mode(&self) -> LeaseMode {
        self.shared.mode
    }

    /// The fencing token: send it with every write made under this lease.
    pub fn token(&self) -> u64 {
        self.shared.token
    }

    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// Whether the lease is known to be gone.
    pub fn is_lost(&self) -> bool {
        *self.shared.lost_tx.borrow()
    }

    /// Completes when the lease is found to be gone (at a renewal).
    pub async fn lost(&self) {
        let mut rx = self.shared.lost_tx.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Renews now (the handle also renews on its own).
    pub async fn renew(&self) -> Result<(), LeaseError> {
        self.shared.act(LeaseBody::Renew).await.map(|_| ())
    }

    /// Lets go of the lease.
    /// Lets go of the lease. The reason is informational: one over its
    /// limit (2048 bytes) is cut, never a reason to keep the lease.
    pub async fn release(mut self, reason: &str) -> Result<u64, LeaseError> {
        self.stop_renewals();
        self.done = true;
        let reason = baton_core::alert::clip(reason, baton_core::wire::limits::REASON);
        let judged = self
            .shared
            .act(LeaseBody::Release {
                reason: reason.into_owned(),
            })
            .await?;
        Ok(judged.seq)
    }

    /// Gives the lease to `to` (who holds it for `ttl` from now and takes
    /// it up with [`Agent::resume_lease`]); returns the recipient's token.
    /// When the lease is still this agent's after a failure (the recipient
    /// holds a conflicting lease, the broker did not answer, `to` is this
    /// agent), the error gives the handle back.
    pub async fn hand_over(mut self, to: &AgentId, ttl: Duration) -> Result<u64, HandOverError> {
        if to == self.shared.agent.id() {
            return Err(HandOverError {
                error: LeaseError::Invalid("a lease cannot be handed to its own holder".into()),
                lease: Some(self),
            });
        }
        // No renewal may follow the hand-over (it would be refused).
        self.stop_renewals();
        let result = self
            .shared
            .act(LeaseBody::HandOver {
                to: to.clone(),
                ttl,
            })
            .await;
        match result {
            Ok(judged) => {
                self.done = true;
                Ok(granted_token(&judged.outcome).unwrap_or_default())
            }
            Err(error @ LeaseError::Lost { .. }) => {
                self.done = true;
                Err(HandOverError { error, lease: None })
            }
            Err(error) => {
                self.renewals = Some(tokio::spawn(renew_loop(self.shared.clone())));
                Err(HandOverError {
                    error,
                    lease: Some(self),
                })
            }
        }
    }

    /// Stops renewing and does not release on drop: the lease lapses at
    /// its ttl unless another process resumes it.
    pub fn detach(mut self) {
        self.stop_renewals();
        self.done = true;
    }

    fn stop_renewals(&mut self) {
        if let Some(h) = self.renewals.take() {
            h.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_renewals();
        if self.done || self.is_lost() {
            return;
        }
        let shared = self.shared.clone();
        let spawned = self.shared.agent.in_background(async move {
            let released = shared
                .act(LeaseBody::Release {
                    reason: "dropped".into(),
                })
                .await;
            if let Err(e) = released {
                tracing::warn!(artifact = %shared.artifact, error = %e, "could not release a dropped lease");
            }
        });
        if !spawned {
            tracing::warn!(artifact = %self.shared.artifact, "lease dropped outside a runtime; it lapses at its ttl");
        }
    }
}

/// Renews whenever a third of the ttl passed since the last act; stops
/// when the lease is lost.
async fn renew_loop(shared: Arc<Shared>) {
    let every = (shared.ttl / 3).max(Duration::from_millis(50));
    loop {
        let due = shared.state.lock().await.last_sent + every;
        tokio::time::sleep_until(due).await;
        if shared.state.lock().await.last_sent.elapsed() < every {
            continue;
        }
        match shared.act(LeaseBody::Renew).await {
            Ok(_) => {}
            Err(LeaseError::Broker(e)) => {
                tracing::warn!(artifact = %shared.artifact, error = %e, "lease renewal not delivered; retrying");
                shared.state.lock().await.last_sent = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::warn!(artifact = %shared.artifact, error = %e, "stopping lease renewals");
                return;
            }
        }
    }
}
