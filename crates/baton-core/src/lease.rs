//! Leases on shared artifacts: files, documents, records.
//!
//! Tasks have one owner; so do the things tasks touch. An agent acquires a
//! lease on a named artifact, **exclusive** (one writer) or **shared** (many
//! readers, no writer), renews it within its ttl, and releases it or hands
//! it to another agent. Names are paths: a lease on `drafts` (or `drafts/`)
//! covers everything under it, so it conflicts with a lease on
//! `drafts/post.md` and the other way round.
//!
//! Like tasks, leases are a deterministic function of an ordered stream of
//! events ([`apply`]); expiry is judged from the broker's stored time of
//! each event, never from a clock. Every event about an artifact lies in
//! its *root subtree* (scope plus first path segment: every name it can
//! conflict with shares both), and the fold of a root's events alone gives
//! the same result for that root as the fold of everything. That is what
//! makes acquisition a compare-and-set: an SDK reads the root's events,
//! decides, and publishes with the root's last sequence as expectation.
//!
//! Every grant (acquire, hand-over) takes the next **fencing token** of its
//! root, so a token is larger than every token granted before it on any
//! name it can conflict with: a store that refuses a write whose token is
//! lower than the last it saw for that name ([`Fence`]) refuses a paused,
//! expired holder's late write.

use std::{collections::BTreeMap, fmt, time::Duration};

use crate::{
    ids::{AgentId, TaskId, WorkflowId},
    time::Time,
};

/// Longest accepted artifact name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most path segments in an artifact name.
pub const MAX_SEGMENTS: usize = 16;
/// Subject token of the global scope (no workflow may be called this).
pub const GLOBAL_SCOPE_TOKEN: &str = "_";
/// Subject token that ends an artifact's path, so that a filter on a root
/// (`<root>.>`) also matches the root itself. No encoded segment is `~`.
pub const PATH_END_TOKEN: &str = "~";

/// Why an artifact name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid artifact name {value:?}: {reason}")]
pub struct ArtifactNameError {
    /// The refused value (truncated to 160 characters).
    pub value: String,
    pub reason: &'static str,
}

/// A normalised artifact name: `/`-separated, non-empty segments.
///
/// One leading and one trailing `/` are dropped (`/srv/a` is `srv/a`,
/// `drafts/` is `drafts`); empty, `.` and `..` segments are refused, so one
/// artifact has one name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactName(String);

impl ArtifactName {
    /// Parses and normalises a name.
    pub fn new(value: &str) -> Result<ArtifactName, ArtifactNameError> {
        let fail = |reason| ArtifactNameError {
            value: value.chars().take(160).collect(),
            reason,
        };
        let trimmed = value.strip_prefix('/').unwrap_or(value);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(fail("it is empty"));
        }
        if trimmed.len() > MAX_NAME_LEN {
            return Err(fail("it is longer than 256 bytes"));
        }
        let mut count = 0;
        for segment in trimmed.split('/') {
            count += 1;
            match segment {
                "" => return Err(fail("it has an empty segment (`//`)")),
                "." | ".." => return Err(fail("`.` and `..` segments are not allowed")),
                s if s.chars().any(char::is_control) => {
                    return Err(fail("control characters are not allowed"));
                }
                _ => {}
            }
        }
        if count > MAX_SEGMENTS {
            return Err(fail("it has more than 16 segments"));
        }
        Ok(ArtifactName(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path segments, first to last.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The first segment: every name this one can conflict with starts
    /// with it.
    pub fn root(&self) -> &str {
        self.segments().next().unwrap_or_default()
    }

    /// Whether one name is the other or lies under it (they conflict
    /// unless both leases are shared).
    pub fn overlaps(&self, other: &ArtifactName) -> bool {
        let (short, long) = if self.0.len() <= other.0.len() {
            (&self.0, &other.0)
        } else {
            (&other.0, &self.0)
        };
        long == short || (long.starts_with(short.as_str()) && long.as_bytes()[short.len()] == b'/')
    }

    /// Whether `other` is this name or lies under it.
    pub fn covers(&self, other: &ArtifactName) -> bool {
        other.0 == self.0
            || (other.0.starts_with(self.0.as_str()) && other.0.as_bytes()[self.0.len()] == b'/')
    }

    /// The subject tokens of the path: each segment escaped, joined by `.`,
    /// then [`PATH_END_TOKEN`]. Bytes in `[A-Za-z0-9_-]` stay; every other
    /// byte of the segment's UTF-8 becomes `~XX` (upper-case hex).
    pub fn subject_tokens(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 4);
        for (i, segment) in self.segments().enumerate() {
            if i > 0 {
                out.push('.');
            }
            escape_segment(segment, &mut out);
        }
        out.push('.');
        out.push_str(PATH_END_TOKEN);
        out
    }

    /// The name back from its subject tokens (without [`PATH_END_TOKEN`]).
    pub fn from_subject_tokens<'a>(
        tokens: impl IntoIterator<Item = &'a str>,
    ) -> Result<ArtifactName, ArtifactNameError> {
        let mut path = String::new();
        for (i, token) in tokens.into_iter().enumerate() {
            if i > 0 {
                path.push('/');
            }
            let segment = unescape_segment(token).ok_or_else(|| ArtifactNameError {
                value: token.chars().take(160).collect(),
                reason: "not an escaped path segment",
            })?;
            path.push_str(&segment);
        }
        let name = ArtifactName::new(&path)?;
        // One encoding per name: `a` may not arrive as `~61`.
        if name.0 != path {
            return Err(ArtifactNameError {
                value: path,
                reason: "not in normal form",
            });
        }
        Ok(name)
    }
}

fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn escape_segment(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment.as_bytes() {
        if keeps(b) {
            out.push(b as char);
        } else {
            out.push('~');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

fn unescape_segment(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'~' => {
                let hex = token.get(i + 1..i + 3)?;
                if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                    return None;
                }
                let b = u8::from_str_radix(hex, 16).ok()?;
                // A byte that would have stayed as it is was not escaped,
                // and `/` separates segments: an escaped one would give
                // `a/b` a second subject, outside the root `a`.
                if keeps(b) || b == b'/' {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if keeps(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Where an artifact name is unique: everywhere, or within one workflow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Global,
    Workflow(WorkflowId),
}

impl Scope {
    /// The subject token: [`GLOBAL_SCOPE_TOKEN`] or the workflow id.
    pub fn token(&self) -> &str {
        match self {
            Scope::Global => GLOBAL_SCOPE_TOKEN,
            Scope::Workflow(w) => w.as_str(),
        }
    }

    pub fn workflow(&self) -> Option<&WorkflowId> {
        match self {
            Scope::Global => None,
            Scope::Workflow(w) => Some(w),
        }
    }
}

/// An artifact: a name in a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Artifact {
    pub scope: Scope,
    pub name: ArtifactName,
}

impl Artifact {
    /// The root subtree this artifact lies in: its scope and first segment.
    pub fn root(&self) -> Root {
        Root {
            scope: self.scope.clone(),
            segment: self.name.root().to_string(),
        }
    }

    /// Whether two artifacts can conflict (same scope, overlapping names).
    pub fn overlaps(&self, other: &Artifact) -> bool {
        self.scope == other.scope && self.name.overlaps(&other.name)
    }
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Global => write!(f, "{}", self.name),
            Scope::Workflow(w) => write!(f, "{w}:{}", self.name),
        }
    }
}

/// A root subtree: the unit of compare-and-set and of fencing tokens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Root {
    pub scope: Scope,
    /// The first path segment, unescaped.
    pub segment: String,
}

/// One writer, or many readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseMode {
    Exclusive,
    Shared,
}

impl LeaseMode {
    fn compatible(self, other: LeaseMode) -> bool {
        self == LeaseMode::Shared && other == LeaseMode::Shared
    }
}

impl fmt::Display for LeaseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseMode::Exclusive => "exclusive",
            LeaseMode::Shared => "shared",
        })
    }
}

/// One lease event, as published on `baton.art.<scope>.<agent>.<path>.~`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseEvent {
    pub event_id: String,
    pub agent: AgentId,
    pub artifact: Artifact,
    /// The token the sender holds (0 on an acquisition).
    pub token: u64,
    /// The sender's clock; informational only.
    pub occurred_at: Option<Time>,
    pub body: LeaseBody,
}

/// What a lease event does.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseBody {
    /// Take the lease (or take it again, with a new token, if already held).
    Acquire {
        mode: LeaseMode,
        ttl: Duration,
        /// The task the lease is taken for, if any.
        task: Option<TaskId>,
    },
    /// Still holding: the lease runs for another ttl from now.
    Renew,
    /// Let go.
    Release { reason: String },
    /// Give the lease to another agent, who then holds it for `ttl`.
    HandOver { to: AgentId, ttl: Duration },
    /// An operator takes the lease away from `holder`.
    Revoke { holder: AgentId, reason: String },
    /// Time has passed: the root's expired holds are dropped at this
    /// event's stored time (anyone may send it; it never removes a live
    /// hold). The stall detector sends one when a hold is past its expiry,
    /// so every reader sees the lease free without waiting for the next act.
    Sweep,
    /// The sender wants the artifact in `mode` and was refused: it waits,
    /// from this event's stored time, for `ttl` (zero: no longer waiting).
    /// A later wait of the sender replaces it; a grant to it ends it.
    Wait { mode: LeaseMode, ttl: Duration },
    /// A store (the sender) refused a write by `writer` whose `token` is
    /// below the `highest_seen` for the artifact. Changes no hold.
    StaleWrite {
        writer: Option<AgentId>,
        token: u64,
        highest_seen: u64,
    },
}

/// One agent's hold on an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub agent: AgentId,
    pub mode: LeaseMode,
    /// The fencing token of this grant.
    pub token: u64,
    /// When it was granted (broker time).
    pub since: Time,
    /// Its last renewal (broker time; the grant counts as one).
    pub renewed_at: Time,
    pub ttl: Duration,
    pub task: Option<TaskId>,
}

impl Hold {
    /// The last instant at which the hold is live.
    pub fn expires_at(&self) -> Time {
        self.renewed_at.saturating_add(self.ttl)
    }

    fn conflicts(&self, agent: &AgentId, mode: LeaseMode) -> bool {
        self.agent != *agent && !self.mode.compatible(mode)
    }
}

/// An agent waiting for an artifact that others hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub agent: AgentId,
    /// The mode it asked for.
    pub mode: LeaseMode,
    /// When it began waiting (broker time; kept across repeated waits).
    pub since: Time,
    /// Its last wait event (broker time).
    pub renewed_at: Time,
    pub ttl: Duration,
}

impl Waiter {
    /// The last instant at which the wait stands.
    pub fn expires_at(&self) -> Time {
        self.renewed_at.saturating_add(self.ttl)
    }
}

/// Stream metadata of a lease event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseMeta {
    pub seq: u64,
    pub stored_at: Time,
}

/// Why a lease event changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// Another agent holds a lease that conflicts with this one.
    Held {
        artifact: Artifact,
        holder: AgentId,
        mode: LeaseMode,
        since: Time,
        token: u64,
    },
    /// The sender holds no lease on this artifact (never did, or it expired,
    /// was released, handed over or revoked).
    NotHolder,
    /// The sender holds it, but under another token.
    StaleToken { current: u64 },
    /// Only operators may revoke.
    NotOperator,
    /// A hand-over to the holder itself.
    SelfHandOver,
}

impl fmt::Display for LeaseRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseRefusal::Held {
                artifact,
                holder,
                mode,
                since,
                token,
            } => write!(
                f,
                "{artifact} is held by {holder} ({mode}, token {token}) since {since}"
            ),
            LeaseRefusal::NotHolder => f.write_str("the sender holds no lease on it"),
            LeaseRefusal::StaleToken { current } => {
                write!(f, "the sender's token is stale (current token {current})")
            }
            LeaseRefusal::NotOperator => f.write_str("only operators may revoke a lease"),
            LeaseRefusal::SelfHandOver => f.write_str("a lease cannot be handed to its holder"),
        }
    }
}

/// What happened to a lease event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDisposition {
    Applied,
    Refused(LeaseRefusal),
    /// Already applied (its sequence is not newer than the book's last).
    Duplicate,
}

/// A change of holders, for the services to store, report or alert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEffect {
    Granted {
        artifact: Artifact,
        hold: Hold,
    },
    Renewed {
        artifact: Artifact,
        agent: AgentId,
        token: u64,
    },
    Released {
        artifact: Artifact,
        agent: AgentId,
        token: u64,
    },
    HandedOver {
        artifact: Artifact,
        from: AgentId,
        hold: Hold,
    },
    Revoked {
        artifact: Artifact,
        holder: AgentId,
        by: AgentId,
        token: u64,
    },
    /// A hold found expired when a later event of its root arrived.
    Expired {
        artifact: Artifact,
        hold: Hold,
    },
    /// A store reported a write refused for a stale token.
    StaleWrite(StaleWriteReport),
}

/// A store's report of a write refused for a stale token, as folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleWriteReport {
    pub artifact: Artifact,
    /// The store (the report's sender).
    pub store: AgentId,
    /// Whose write was refused, if the store knows.
    pub writer: Option<AgentId>,
    /// The token the write carried.
    pub token: u64,
    /// The highest token the store had seen.
    pub highest_seen: u64,
    /// The live holds on the artifact, above or below it, when the report
    /// was folded.
    pub holders: Vec<Hold>,
}

/// The result of folding one lease event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOutcome {
    pub disposition: LeaseDisposition,
    pub effects: Vec<LeaseEffect>,
}

/// Every live hold, by artifact, with the last token of each root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseBook {
    holds: BTreeMap<Artifact, Vec<Hold>>,
    waits: BTreeMap<Artifact, Vec<Waiter>>,
    tokens: BTreeMap<Root, u64>,
    last_seq: u64,
}

impl LeaseBook {
    pub fn new() -> LeaseBook {
        LeaseBook::default()
    }

    /// The sequence of the last event folded in.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The last fencing token granted in a root (0 = none yet).
    pub fn last_token(&self, root: &Root) -> u64 {
        self.tokens.get(root).copied().unwrap_or(0)
    }

    /// The holds on one artifact (not those on names above or below it).
    pub fn holds(&self, artifact: &Artifact) -> &[Hold] {
        self.holds.get(artifact).map_or(&[], Vec::as_slice)
    }

    /// The agents waiting for one artifact (live or not: a wait stays here
    /// until an event of its root finds it lapsed; see
    /// [`Waiter::expires_at`]).
    pub fn waiters(&self, artifact: &Artifact) -> &[Waiter] {
        self.waits.get(artifact).map_or(&[], Vec::as_slice)
    }

    /// Every artifact with its waiters.
    pub fn iter_waits(&self) -> impl Iterator<Item = (&Artifact, &[Waiter])> {
        self.waits.iter().map(|(a, w)| (a, w.as_slice()))
    }

    /// The live waiters at `at` that `hold` on `artifact` keeps out: waits
    /// on this name, above or below it, by other agents, in a mode that
    /// conflicts with the hold's.
    pub fn blocked_by<'a>(
        &'a self,
        artifact: &'a Artifact,
        hold: &'a Hold,
        at: Time,
    ) -> impl Iterator<Item = (&'a Artifact, &'a Waiter)> + 'a {
        let root = artifact.name.root();
        self.waits
            .iter()
            .filter(move |(a, _)| {
                a.scope == artifact.scope
                    && a.name.root() == root
                    && a.name.overlaps(&artifact.name)
            })
            .flat_map(|(a, ws)| ws.iter().map(move |w| (a, w)))
            .filter(move |(_, w)| {
                w.expires_at() >= at && w.agent != hold.agent && !w.mode.compatible(hold.mode)
            })
    }

    /// Every artifact with its holds. A hold stays here until an event of
    /// its root (or [`LeaseBook::expired`]'s caller) finds it expired.
    pub fn iter(&self) -> impl Iterator<Item = (&Artifact, &[Hold])> {
        self.holds.iter().map(|(a, h)| (a, h.as_slice()))
    }

    /// Holds that are past their expiry at `now` (a query: the book changes
    /// only by events, judged by broker time).
    pub fn expired(&self, now: Time) -> impl Iterator<Item = (&Artifact, &Hold)> {
        self.holds
            .iter()
            .flat_map(|(a, hs)| hs.iter().map(move |h| (a, h)))
            .filter(move |(_, h)| h.expires_at() < now)
    }

    /// The holds of other agents that conflict with `agent` taking
    /// `artifact` in `mode` at `at` (expired holds do not count).
    pub fn conflicts<'a>(
        &'a self,
        artifact: &'a Artifact,
        agent: &'a AgentId,
        mode: LeaseMode,
        at: Time,
    ) -> impl Iterator<Item = (&'a Artifact, &'a Hold)> + 'a {
        self.in_root(artifact)
            .filter(move |(a, _)| a.overlaps(artifact))
            .flat_map(|(a, hs)| hs.iter().map(move |h| (a, h)))
            .filter(move |(_, h)| h.expires_at() >= at && h.conflicts(agent, mode))
    }

    fn in_root<'a>(
        &'a self,
        artifact: &'a Artifact,
    ) -> impl Iterator<Item = (&'a Artifact, &'a Vec<Hold>)> + 'a {
        let root = artifact.name.root();
        self.holds
            .iter()
            .filter(move |(a, _)| a.scope == artifact.scope && a.name.root() == root)
    }

    fn next_token(&mut self, root: Root) -> u64 {
        let token = self.tokens.entry(root).or_insert(0);
        *token += 1;
        *token
    }

    fn take_hold(&mut self, artifact: &Artifact, agent: &AgentId) -> Option<Hold> {
        let holds = self.holds.get_mut(artifact)?;
        let at = holds.iter().position(|h| h.agent == *agent)?;
        let hold = holds.remove(at);
        if holds.is_empty() {
            self.holds.remove(artifact);
        }
        Some(hold)
    }

    fn put_hold(&mut self, artifact: &Artifact, hold: Hold) {
        self.holds.entry(artifact.clone()).or_default().push(hold);
    }

    /// Records (or replaces, keeping its start) `agent`'s wait; a zero
    /// ttl ends it.
    fn put_wait(
        &mut self,
        artifact: &Artifact,
        agent: &AgentId,
        mode: LeaseMode,
        ttl: Duration,
        at: Time,
    ) {
        let earlier = self.take_wait(artifact, agent);
        if ttl.is_zero() {
            return;
        }
        let since = earlier.map_or(at, |w| w.since);
        self.waits
            .entry(artifact.clone())
            .or_default()
            .push(Waiter {
                agent: agent.clone(),
                mode,
                since,
                renewed_at: at,
                ttl,
            });
    }

    fn take_wait(&mut self, artifact: &Artifact, agent: &AgentId) -> Option<Waiter> {
        let waits = self.waits.get_mut(artifact)?;
        let at = waits.iter().position(|w| w.agent == *agent)?;
        let wait = waits.remove(at);
        if waits.is_empty() {
            self.waits.remove(artifact);
        }
        Some(wait)
    }

    /// Drops the holds of the event's root that expired before `at` (and
    /// its lapsed waits).
    fn expire_root(&mut self, artifact: &Artifact, at: Time, effects: &mut Vec<LeaseEffect>) {
        let root = artifact.name.root().to_string();
        let scope = artifact.scope.clone();
        self.waits.retain(|a, waits| {
            if a.scope == scope && a.name.root() == root {
                waits.retain(|w| w.expires_at() >= at);
            }
            !waits.is_empty()
        });
        self.holds.retain(|a, holds| {
            if a.scope != scope || a.name.root() != root {
                return true;
            }
            holds.retain(|h| {
                let live = h.expires_at() >= at;
                if !live {
                    effects.push(LeaseEffect::Expired {
                        artifact: a.clone(),
                        hold: h.clone(),
                    });
                }
                live
            });
            !holds.is_empty()
        });
    }
}

/// One root's part of a [`LeaseBook`], as materialised in KV (one value per
/// root): its holds and waits, its last token, and the sequence of the last
/// event of the root folded in (which the book itself does not keep per
/// root; the materialiser does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootState {
    pub scope: Scope,
    /// The first segment of every name in the root.
    pub root: String,
    pub last_seq: u64,
    pub last_token: u64,
    pub holds: Vec<(Artifact, Hold)>,
    pub waits: Vec<(Artifact, Waiter)>,
}

impl RootState {
    /// Whether `artifact` is in this root.
    pub fn contains(&self, artifact: &Artifact) -> bool {
        artifact.scope == self.scope && artifact.name.root() == self.root
    }
}

impl LeaseBook {
    /// The part of the book in `artifact`'s root, stamped `last_seq`.
    pub fn root_state(&self, artifact: &Artifact, last_seq: u64) -> RootState {
        let root = artifact.root();
        let in_root = |a: &&Artifact| a.scope == root.scope && a.name.root() == root.segment;
        RootState {
            last_seq,
            last_token: self.last_token(&root),
            holds: self
                .holds
                .iter()
                .filter(|(a, _)| in_root(a))
                .flat_map(|(a, hs)| hs.iter().map(move |h| (a.clone(), h.clone())))
                .collect(),
            waits: self
                .waits
                .iter()
                .filter(|(a, _)| in_root(a))
                .flat_map(|(a, ws)| ws.iter().map(move |w| (a.clone(), w.clone())))
                .collect(),
            scope: root.scope,
            root: root.segment,
        }
    }

    /// Puts a root's state in place of what the book has of that root.
    /// Holds and waits outside the root are ignored. The book's last
    /// sequence is not moved: the caller skips the root's events up to
    /// `state.last_seq` itself.
    pub fn restore_root(&mut self, state: &RootState) {
        let in_root = |a: &Artifact| state.contains(a);
        self.holds.retain(|a, _| !in_root(a));
        self.waits.retain(|a, _| !in_root(a));
        for (a, h) in state.holds.iter().filter(|(a, _)| in_root(a)) {
            self.put_hold(a, h.clone());
        }
        for (a, w) in state.waits.iter().filter(|(a, _)| in_root(a)) {
            self.waits.entry(a.clone()).or_default().push(w.clone());
        }
        let root = Root {
            scope: state.scope.clone(),
            segment: state.root.clone(),
        };
        if state.last_token == 0 {
            self.tokens.remove(&root);
        } else {
            self.tokens.insert(root, state.last_token);
        }
    }
}

/// Folds one lease event into the book.
///
/// `operators` are the agents allowed to revoke (empty = anyone), as in the
/// task fold's policy.
pub fn apply(
    book: &mut LeaseBook,
    event: &LeaseEvent,
    meta: LeaseMeta,
    operators: &[AgentId],
) -> LeaseOutcome {
    if meta.seq != 0 && meta.seq <= book.last_seq {
        return LeaseOutcome {
            disposition: LeaseDisposition::Duplicate,
            effects: Vec::new(),
        };
    }
    book.last_seq = book.last_seq.max(meta.seq);
    let at = meta.stored_at;
    let artifact = &event.artifact;
    let agent = &event.agent;
    let mut effects = Vec::new();
    book.expire_root(artifact, at, &mut effects);

    let refused = |reason, effects| LeaseOutcome {
        disposition: LeaseDisposition::Refused(reason),
        effects,
    };
    // The sender's own hold, checked against the token it claims.
    let own_hold = |book: &LeaseBook| -> Result<(), LeaseRefusal> {
        match book.holds(artifact).iter().find(|h| h.agent == *agent) {
            None => Err(LeaseRefusal::NotHolder),
            Some(h) if h.token != event.token => Err(LeaseRefusal::StaleToken { current: h.token }),
            Some(_) => Ok(()),
        }
    };

    match &event.body {
        LeaseBody::Acquire { mode, ttl, task } => {
            if let Some((a, h)) = book.conflicts(artifact, agent, *mode, at).next() {
                let reason = LeaseRefusal::Held {
                    artifact: a.clone(),
                    holder: h.agent.clone(),
                    mode: h.mode,
                    since: h.since,
                    token: h.token,
                };
                return refused(reason, effects);
            }
            // Taking again what it holds replaces its hold; a grant ends
            // its wait.
            book.take_hold(artifact, agent);
            book.take_wait(artifact, agent);
            let hold = Hold {
                agent: agent.clone(),
                mode: *mode,
                token: book.next_token(artifact.root()),
                since: at,
                renewed_at: at,
                ttl: *ttl,
                task: task.clone(),
            };
            book.put_hold(artifact, hold.clone());
            effects.push(LeaseEffect::Granted {
                artifact: artifact.clone(),
                hold,
            });
        }
        LeaseBody::Renew => {
            if let Err(reason) = own_hold(book) {
                return refused(reason, effects);
            }
            if let Some(h) = book
                .holds
                .get_mut(artifact)
                .and_then(|hs| hs.iter_mut().find(|h| h.agent == *agent))
            {
                h.renewed_at = at;
            }
            effects.push(LeaseEffect::Renewed {
                artifact: artifact.clone(),
                agent: agent.clone(),
                token: event.token,
            });
        }
        LeaseBody::Release { .. } => {
            if let Err(reason) = own_hold(book) {
                return refused(reason, effects);
            }
            book.take_hold(artifact, agent);
            effects.push(LeaseEffect::Released {
                artifact: artifact.clone(),
                agent: agent.clone(),
                token: event.token,
            });
        }
        LeaseBody::HandOver { to, ttl } => {
            if to == agent {
                return refused(LeaseRefusal::SelfHandOver, effects);
            }
            if let Err(reason) = own_hold(book) {
                return refused(reason, effects);
            }
            let mode = book
                .holds(artifact)
                .iter()
                .find(|h| h.agent == *agent)
                .map_or(LeaseMode::Exclusive, |h| h.mode);
            // The recipient must be able to take it: the sender's other
            // holds (on names above or below) count, the one handed over
            // does not.
            let blocking = book
                .conflicts(artifact, to, mode, at)
                .find(|(a, h)| !(*a == artifact && h.agent == *agent))
                .map(|(a, h)| LeaseRefusal::Held {
                    artifact: a.clone(),
                    holder: h.agent.clone(),
                    mode: h.mode,
                    since: h.since,
                    token: h.token,
                });
            if let Some(reason) = blocking {
                return refused(reason, effects);
            }
            let Some(from) = book.take_hold(artifact, agent) else {
                return refused(LeaseRefusal::NotHolder, effects);
            };
            // The recipient's own earlier hold on it is replaced, and its
            // wait ends.
            book.take_hold(artifact, to);
            book.take_wait(artifact, to);
            let hold = Hold {
                agent: to.clone(),
                mode: from.mode,
                token: book.next_token(artifact.root()),
                since: at,
                renewed_at: at,
                ttl: *ttl,
                task: None,
            };
            book.put_hold(artifact, hold.clone());
            effects.push(LeaseEffect::HandedOver {
                artifact: artifact.clone(),
                from: agent.clone(),
                hold,
            });
        }
        // `expire_root` above did the work.
        LeaseBody::Sweep => {}
        LeaseBody::Wait { mode, ttl } => book.put_wait(artifact, agent, *mode, *ttl, at),
        LeaseBody::StaleWrite {
            writer,
            token,
            highest_seen,
        } => effects.push(LeaseEffect::StaleWrite(StaleWriteReport {
            artifact: artifact.clone(),
            store: agent.clone(),
            writer: writer.clone(),
            token: *token,
            highest_seen: *highest_seen,
            holders: book
                .in_root(artifact)
                .filter(|(a, _)| a.overlaps(artifact))
                .flat_map(|(_, hs)| hs.iter().cloned())
                .collect(),
        })),
        LeaseBody::Revoke { holder, .. } => {
            if !(operators.is_empty() || operators.contains(agent)) {
                return refused(LeaseRefusal::NotOperator, effects);
            }
            let Some(hold) = book.take_hold(artifact, holder) else {
                return refused(LeaseRefusal::NotHolder, effects);
            };
            effects.push(LeaseEffect::Revoked {
                artifact: artifact.clone(),
                holder: holder.clone(),
                by: agent.clone(),
                token: hold.token,
            });
        }
    }
    LeaseOutcome {
        disposition: LeaseDisposition::Applied,
        effects,
    }
}

/// One hold as operators see it (`baton leases --json`, the MCP tool
/// `list_leases`): times in RFC 3339, with the agents it keeps waiting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HoldView {
    pub artifact: String,
    /// The scope's workflow; `None` for the global scope.
    pub workflow: Option<String>,
    pub holder: String,
    pub mode: String,
    pub token: u64,
    pub since: String,
    pub renewed_at: String,
    pub expires_at: String,
    /// Past its expiry at the time of the view (not yet swept).
    pub expired: bool,
    pub task: Option<String>,
    /// The live waits this hold keeps out (on this name, above or below
    /// it, in a conflicting mode).
    pub waiting: Vec<WaiterView>,
}

/// An agent waiting for a lease, in a [`HoldView`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WaiterView {
    pub agent: String,
    /// The name it waits for: the hold's, or one above or below it.
    pub artifact: String,
    pub mode: String,
    pub since: String,
    pub expires_at: String,
}

/// Every hold of the book with its waiters, as of `now`.
pub fn holds_view(book: &LeaseBook, now: Time) -> Vec<HoldView> {
    book.iter()
        .flat_map(|(artifact, holds)| holds.iter().map(move |h| (artifact, h)))
        .map(|(artifact, h)| HoldView {
            artifact: artifact.name.to_string(),
            workflow: artifact.scope.workflow().map(ToString::to_string),
            holder: h.agent.to_string(),
            mode: h.mode.to_string(),
            token: h.token,
            since: h.since.to_rfc3339(),
            renewed_at: h.renewed_at.to_rfc3339(),
            expires_at: h.expires_at().to_rfc3339(),
            expired: h.expires_at() < now,
            task: h.task.as_ref().map(ToString::to_string),
            waiting: book
                .blocked_by(artifact, h, now)
                .map(|(on, w)| WaiterView {
                    agent: w.agent.to_string(),
                    artifact: on.name.to_string(),
                    mode: w.mode.to_string(),
                    since: w.since.to_rfc3339(),
                    expires_at: w.expires_at().to_rfc3339(),
                })
                .collect(),
        })
        .collect()
}

/// What the stall detector does about leases, as data: it folds the leases
/// stream, reports every hold the fold finds expired (`LEASE_EXPIRED`,
/// once per lapsed grant, [`EXPIRY_REPORT_DELAY`] later, and not when a
/// broker outage kept its renewal out) and every stale write a store reports
/// (`LEASE_STALE_WRITE`), asks for a [`LeaseBody::Sweep`] when a hold is
/// past its expiry and no event of its root has come to drop it, so the
/// lease is seen free by every reader, and reports an exclusive hold kept
/// past its rule's `max_hold` while others wait (`LEASE_HELD_TOO_LONG`,
/// once per grant; [`LeaseWatch::due_reports`]).
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    book: LeaseBook,
    operators: Vec<AgentId>,
    sweeper: AgentId,
    /// Expiries older than this when folded are not reported again: within
    /// it, a report's deterministic id makes the broker drop a repeat (the
    /// alerts stream's duplicate window), so a restarted detector replaying
    /// history pages neither twice nor for what it reported long ago.
    report_window: Duration,
    /// Sweeps asked for and not yet seen folded: (artifact, holder, token)
    /// and when it was asked (asked again after [`SWEEP_AGAIN_AFTER`]).
    sweeping: BTreeMap<(Artifact, AgentId, u64), Time>,
    /// `max_hold` limits of exclusive holds.
    rules: crate::rules::Rules,
    /// Grants already reported held too long: (artifact, holder, token).
    overheld: std::collections::BTreeSet<(Artifact, AgentId, u64)>,
    /// Lapse reports waiting out [`EXPIRY_REPORT_DELAY`].
    pending_expiries: Vec<PendingExpiry>,
    /// Broker outages recorded (the newest [`OUTAGES_KEPT`]).
    outages: std::collections::VecDeque<(Time, Time)>,
}

/// A lapse report held back until `release_at`, unless an outage that
/// overlaps the hold's last renewal window is recorded by then.
#[derive(Debug, Clone)]
struct PendingExpiry {
    release_at: Time,
    renewed_at: Time,
    expires_at: Time,
    alert: crate::alert::Alert,
}

/// How long a lapse report waits before it is sent: a broker outage is
/// recorded when the broker answers again, which may be a moment after the
/// first event that shows the lapse is folded (decision 9: the outage, not
/// the holder, kept the renewal out).
pub const EXPIRY_REPORT_DELAY: Duration = Duration::from_secs(2);

/// Outages kept for excusing lapses (older ones cannot matter: a lapse is
/// reported within [`EXPIRY_REPORT_DELAY`] of being folded).
const OUTAGES_KEPT: usize = 64;

/// A sweep not seen folded this long after it was asked for is asked for
/// again (its publish may have failed).
pub const SWEEP_AGAIN_AFTER: Duration = Duration::from_secs(10);

impl LeaseWatch {
    /// `sweeper` is the agent id sweeps are sent as; `operators` as in the
    /// orchestrator's policy.
    pub fn new(sweeper: AgentId, operators: Vec<AgentId>, report_window: Duration) -> LeaseWatch {
        LeaseWatch {
            book: LeaseBook::new(),
            operators,
            sweeper,
            report_window,
            sweeping: Default::default(),
            rules: Default::default(),
            overheld: Default::default(),
            pending_expiries: Vec::new(),
            outages: Default::default(),
        }
    }

    /// A broker outage from `from` to `until` (decision 9): a hold whose
    /// last renewal window (`renewed_at` to its expiry) overlaps it lapsed
    /// because nothing could be stored, so its lapse is not reported. The
    /// fold still drops the hold (every reader judges by broker time); the
    /// holder learns it at its next act and takes the lease again.
    pub fn record_outage(&mut self, from: Time, until: Time) {
        if self.outages.len() == OUTAGES_KEPT {
            self.outages.pop_front();
        }
        self.outages.push_back((from, until));
        self.pending_expiries
            .retain(|p| !(from <= p.expires_at && until >= p.renewed_at));
    }

    fn excused(&self, renewed_at: Time, expires_at: Time) -> bool {
        self.outages
            .iter()
            .any(|&(from, until)| from <= expires_at && until >= renewed_at)
    }

    /// The rules whose `[[leases]]` limits apply.
    pub fn with_rules(mut self, rules: crate::rules::Rules) -> LeaseWatch {
        self.rules = rules;
        self
    }

    pub fn book(&self) -> &LeaseBook {
        &self.book
    }

    /// Folds one stored event; returns the reports due at once (stale
    /// writes; lapses come from [`LeaseWatch::due_reports`]). `now` is the
    /// detector's time, for the report window.
    pub fn handle_event(
        &mut self,
        event: &LeaseEvent,
        meta: LeaseMeta,
        now: Time,
    ) -> Vec<crate::alert::Alert> {
        let outcome = apply(&mut self.book, event, meta, &self.operators);
        let recent = |at: Time| at.saturating_add(self.report_window) >= now;
        let mut reports = Vec::new();
        for effect in &outcome.effects {
            match effect {
                LeaseEffect::Expired { artifact, hold } => {
                    self.sweeping
                        .remove(&(artifact.clone(), hold.agent.clone(), hold.token));
                    if recent(hold.expires_at())
                        && !self.excused(hold.renewed_at, hold.expires_at())
                    {
                        self.pending_expiries.push(PendingExpiry {
                            release_at: now.saturating_add(EXPIRY_REPORT_DELAY),
                            renewed_at: hold.renewed_at,
                            expires_at: hold.expires_at(),
                            alert: crate::catalogue::lease_expired_alert(
                                artifact,
                                hold,
                                meta.stored_at,
                            ),
                        });
                    }
                }
                LeaseEffect::StaleWrite(report) if recent(meta.stored_at) => {
                    reports.push(crate::catalogue::lease_stale_write_alert(report, meta));
                }
                _ => {}
            }
        }
        if !self.overheld.is_empty() {
            let book = &self.book;
            self.overheld.retain(|(a, agent, token)| {
                book.holds(a)
                    .iter()
                    .any(|h| h.agent == *agent && h.token == *token)
            });
        }
        reports
    }

    /// The reports due at `now`: the lapses folded at least
    /// [`EXPIRY_REPORT_DELAY`] ago that no outage excused
    /// (`LEASE_EXPIRED`), and every live exclusive hold older than its
    /// rule's `max_hold` that keeps a live waiter out, once per grant
    /// (`LEASE_HELD_TOO_LONG`).
    pub fn due_reports(&mut self, now: Time) -> Vec<crate::alert::Alert> {
        let mut reports = Vec::new();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_expiries)
            .into_iter()
            .partition(|p| p.release_at <= now);
        self.pending_expiries = waiting;
        reports.extend(due.into_iter().map(|p| p.alert));
        if self.rules.leases.is_empty() {
            return reports;
        }
        for (artifact, holds) in self.book.iter() {
            for hold in holds {
                if hold.mode != LeaseMode::Exclusive || hold.expires_at() < now {
                    continue;
                }
                let Some(limit) = self.rules.max_hold(artifact) else {
                    continue;
                };
                if hold.since.saturating_add(limit) >= now {
                    continue;
                }
                let key = (artifact.clone(), hold.agent.clone(), hold.token);
                if self.overheld.contains(&key) {
                    continue;
                }
                let waiters: Vec<(Artifact, Waiter)> = self
                    .book
                    .blocked_by(artifact, hold, now)
                    .map(|(a, w)| (a.clone(), w.clone()))
                    .collect();
                if waiters.is_empty() {
                    continue;
                }
                reports.push(crate::catalogue::lease_held_too_long_alert(
                    artifact, hold, &waiters, limit, now,
                ));
                self.overheld.insert(key);
            }
        }
        reports
    }

    /// The sweeps to send now: one per root with a hold past its expiry at
    /// `now` (minus nothing: the broker's time of the sweep decides, and a
    /// sweep of a live hold drops nothing) that is not being swept already.
    pub fn due_sweeps(&mut self, now: Time) -> Vec<LeaseEvent> {
        let mut roots = std::collections::BTreeSet::new();
        let mut sweeps = Vec::new();
        let expired: Vec<(Artifact, Hold)> = self
            .book
            .expired(now)
            .map(|(a, h)| (a.clone(), h.clone()))
            .collect();
        for (artifact, hold) in expired {
            let key = (artifact.clone(), hold.agent.clone(), hold.token);
            if self
                .sweeping
                .get(&key)
                .is_some_and(|asked| asked.saturating_add(SWEEP_AGAIN_AFTER) > now)
            {
                continue;
            }
            self.sweeping.insert(key, now);
            if !roots.insert(artifact.root()) {
                continue;
            }
            sweeps.push(LeaseEvent {
                // Deterministic and short: a retry, or another detector
                // instance sweeping the same hold, is stored once.
                event_id: format!(
                    "sweep.t{}.{:016x}",
                    hold.token,
                    fnv1a(&[
                        artifact.scope.token(),
                        artifact.name.as_str(),
                        hold.agent.as_str()
                    ])
                ),
                agent: self.sweeper.clone(),
                artifact,
                token: 0,
                occurred_at: Some(now),
                body: LeaseBody::Sweep,
            });
        }
        sweeps
    }
}

/// FNV-1a over the parts, each followed by a NUL: a stable short digest.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The rule a store applies to fenced writes: refuse a write whose token is
/// lower than the last one seen for that artifact, and remember the highest.
///
/// Keep one `Fence` per store (persist [`Fence::last_seen`] with the data);
/// tokens of a root only grow, so a paused holder whose lease expired and
/// was granted to someone else writes with a token below the new holder's
/// and is refused, however late its write arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    seen: BTreeMap<String, u64>,
}

/// A write refused by a [`Fence`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("write to {artifact} with token {token} refused: token {seen} was seen already")]
pub struct StaleToken {
    pub artifact: String,
    pub token: u64,
    pub seen: u64,
}

impl Fence {
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Admits a write to `artifact` with `token`, or refuses it.
    ///
    /// The check covers the names above the artifact too: a write to
    /// `drafts/post.md` with token 3 is refused once `drafts` was written
    /// with token 5 (a lease on `drafts` covers the post).
    pub fn admit(&mut self, artifact: &ArtifactName, token: u64) -> Result<(), StaleToken> {
        let seen = self.highest_covering(artifact);
        if token < seen {
            return Err(StaleToken {
                artifact: artifact.to_string(),
                token,
                seen,
            });
        }
        self.seen.insert(artifact.as_str().to_string(), token);
        Ok(())
    }

    /// The highest token seen for this name or any name above it.
    pub fn highest_covering(&self, artifact: &ArtifactName) -> u64 {
        let mut path = String::new();
        let mut highest = 0;
        for (i, segment) in artifact.segments().enumerate() {
            if i > 0 {
                path.push('/');
            }
            path.push_str(segment);
            highest = highest.max(self.seen.get(&path).copied().unwrap_or(0));
        }
        highest
    }

    /// The last token seen per artifact name (to persist with the data).
    pub fn last_seen(&self) -> impl Iterator<Item = (&str, u64)> {
        self.seen.iter().map(|(a, t)| (a.as_str(), *t))
    }

    /// Restores what [`Fence::last_seen`] returned.
    pub fn remember(&mut self, artifact: &str, token: u64) {
        let slot = self.seen.entry(artifact.to_string()).or_insert(0);
        *slot = (*slot).max(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ArtifactName {
        ArtifactName::new(s).unwrap()
    }

    #[test]
    fn names_are_normalised_and_bad_ones_refused() {
        assert_eq!(name("/drafts/").as_str(), "drafts");
        assert_eq!(name("drafts/post.md").root(), "drafts");
        for bad in ["", "/", "a//b", "a/./b", "../x", "a\nb"] {
            assert!(ArtifactName::new(bad).is_err(), "{bad:?}");
        }
        assert!(ArtifactName::new(&"a/".repeat(17)).is_err());
        assert!(ArtifactName::new(&"x".repeat(257)).is_err());
    }

    #[test]
    fn overlap_is_by_whole_segments() {
        assert!(name("drafts").overlaps(&name("drafts/post.md")));
        assert!(name("drafts/post.md").overlaps(&name("drafts")));
        assert!(name("drafts/post.md").overlaps(&name("drafts/post.md")));
        assert!(!name("drafts").overlaps(&name("drafts2/post.md")));
        assert!(!name("drafts/a").overlaps(&name("drafts/b")));
    }

    #[test]
    fn subject_tokens_round_trip_and_are_unique() {
        let n = name("drafts/post v2.md/~x/é");
        let tokens = n.subject_tokens();
        assert_eq!(tokens, "drafts.post~20v2~2Emd.~7Ex.~C3~A9.~");
        let back: Vec<&str> = tokens.split('.').collect();
        let back = ArtifactName::from_subject_tokens(back[..back.len() - 1].iter().copied());
        assert_eq!(back.unwrap(), n);
        // `a` spelt `~61`, lower-case hex, a lone `~`, an escaped `/` (a
        // second subject for `a/b`): not the normal form.
        for bad in ["~61", "~2e", "~", "a*b", "a~2Fb"] {
            assert!(ArtifactName::from_subject_tokens([bad]).is_err(), "{bad}");
        }
    }
}
