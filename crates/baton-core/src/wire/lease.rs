//! Lease events on the wire (`baton.v1.LeaseEvent`), and their one read path.

use baton_proto::{prost::Message, prost_types, v1 as pb};

use super::{
    MAX_EVENT_ID_LEN, WireError, bounded, decode_wire, duration_from_wire, duration_to_wire, id,
    limits, opt_id, opt_time, time_from_wire,
};
use crate::{
    ids::WorkflowId,
    lease::{
        Artifact, ArtifactName, GLOBAL_SCOPE_TOKEN, Hold, LeaseBody, LeaseEvent, LeaseMode,
        RootState, Scope, Waiter,
    },
    subjects,
};

/// The one read path for lease events: bytes from `subject` become a
/// validated event or a typed refusal. The subject's scope, agent and path
/// must be the payload's (identity is the subject).
pub fn read_lease_event(subject: &str, bytes: &[u8]) -> Result<LeaseEvent, WireError> {
    if bytes.len() > limits::LEASE_PAYLOAD {
        return Err(WireError::TooLarge {
            field: "payload".into(),
            len: bytes.len(),
            max: limits::LEASE_PAYLOAD,
        });
    }
    let event = LeaseEvent::decode(bytes)?;
    let mismatch = |message: String| WireError::Subject {
        subject: subject.to_string(),
        message,
    };
    let Some((scope, agent, path)) = subjects::parse_lease(subject) else {
        return Err(mismatch(
            "not of the form baton.art.<scope>.<agent>.<path>.~".into(),
        ));
    };
    if scope != event.artifact.scope.token() {
        return Err(mismatch(format!(
            "subject scope {scope:?} but payload workflow_id {:?}",
            event.artifact.scope.token()
        )));
    }
    if agent != event.agent.as_str() {
        return Err(mismatch(format!(
            "subject agent {agent:?} but payload agent_id {:?}",
            event.agent.as_str()
        )));
    }
    match ArtifactName::from_subject_tokens(path) {
        Ok(name) if name == event.artifact.name => Ok(event),
        Ok(name) => Err(mismatch(format!(
            "subject artifact {name:?} but payload artifact {:?}",
            event.artifact.name
        ))),
        Err(e) => Err(mismatch(e.to_string())),
    }
}

/// Checks a lease event against what every reader accepts (ids, reason
/// sizes, the whole payload), so a sender refuses before publishing what
/// would be dropped by every reader.
pub fn check_lease_limits(event: &LeaseEvent) -> Result<(), WireError> {
    LeaseEvent::decode(&event.encode()).map(|_| ())?;
    let len = event.encode().len();
    if len > limits::LEASE_PAYLOAD {
        return Err(WireError::TooLarge {
            field: "payload".into(),
            len,
            max: limits::LEASE_PAYLOAD,
        });
    }
    Ok(())
}

impl LeaseEvent {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        pb::LeaseEvent::from(self).encode_to_vec()
    }

    /// Decodes and validates a payload, without the subject check (readers
    /// of the stream use [`read_lease_event`]).
    pub fn decode(bytes: &[u8]) -> Result<LeaseEvent, WireError> {
        let wire = decode_wire::<pb::LeaseEvent>("baton.v1.LeaseEvent", bytes)?;
        LeaseEvent::try_from(wire)
    }
}

fn mode_from_wire(mode: i32) -> Result<LeaseMode, WireError> {
    match pb::LeaseMode::try_from(mode) {
        Ok(pb::LeaseMode::Exclusive) => Ok(LeaseMode::Exclusive),
        Ok(pb::LeaseMode::Shared) => Ok(LeaseMode::Shared),
        _ => Err(WireError::field("mode", "must be EXCLUSIVE or SHARED")),
    }
}

fn mode_to_wire(mode: LeaseMode) -> pb::LeaseMode {
    match mode {
        LeaseMode::Exclusive => pb::LeaseMode::Exclusive,
        LeaseMode::Shared => pb::LeaseMode::Shared,
    }
}

impl TryFrom<pb::LeaseEvent> for LeaseEvent {
    type Error = WireError;

    fn try_from(w: pb::LeaseEvent) -> Result<Self, WireError> {
        if w.event_id.is_empty() || w.event_id.len() > MAX_EVENT_ID_LEN {
            return Err(WireError::field(
                "event_id",
                format!("required, at most {MAX_EVENT_ID_LEN} bytes"),
            ));
        }
        let scope = match opt_id::<WorkflowId>("workflow_id", &w.workflow_id)? {
            Some(workflow) => Scope::Workflow(workflow),
            None => Scope::Global,
        };
        let name = ArtifactName::new(&w.artifact)
            .map_err(|e| WireError::field("artifact", e.to_string()))?;
        if name.as_str() != w.artifact {
            return Err(WireError::field("artifact", "not in normal form"));
        }
        let ttl = |field: &str, d: Option<&prost_types::Duration>| {
            duration_from_wire(field, d)?
                .ok_or_else(|| WireError::field(field, "required, and more than zero"))
        };
        use pb::lease_event::Body as B;
        let body = match w.body {
            Some(B::Acquired(a)) => LeaseBody::Acquire {
                mode: mode_from_wire(a.mode)?,
                ttl: ttl("acquired.ttl", a.ttl.as_ref())?,
                task: opt_id("acquired.task_id", &a.task_id)?,
            },
            Some(B::Renewed(_)) => LeaseBody::Renew,
            Some(B::Released(r)) => LeaseBody::Release {
                reason: bounded("released.reason", r.reason, limits::REASON)?,
            },
            Some(B::HandedOver(h)) => LeaseBody::HandOver {
                to: id("handed_over.to_agent", h.to_agent.parse())?,
                ttl: ttl("handed_over.ttl", h.ttl.as_ref())?,
            },
            Some(B::Revoked(r)) => LeaseBody::Revoke {
                holder: id("revoked.holder", r.holder.parse())?,
                reason: bounded("revoked.reason", r.reason, limits::REASON)?,
            },
            Some(B::Swept(_)) => LeaseBody::Sweep,
            Some(B::Waiting(w)) => LeaseBody::Wait {
                mode: mode_from_wire(w.mode)?,
                ttl: duration_from_wire("waiting.ttl", w.ttl.as_ref())?.unwrap_or_default(),
            },
            Some(B::StaleWrite(s)) => LeaseBody::StaleWrite {
                writer: opt_id("stale_write.writer", &s.writer)?,
                token: s.token,
                highest_seen: s.highest_seen,
            },
            None => return Err(WireError::field("body", "required")),
        };
        Ok(LeaseEvent {
            event_id: w.event_id,
            agent: id("agent_id", w.agent_id.parse())?,
            artifact: Artifact { scope, name },
            token: w.token,
            occurred_at: time_from_wire("occurred_at", w.occurred_at.as_ref())?,
            body,
        })
    }
}

impl From<&LeaseEvent> for pb::LeaseEvent {
    fn from(e: &LeaseEvent) -> Self {
        use pb::lease_event::Body as B;
        let body = match &e.body {
            LeaseBody::Acquire { mode, ttl, task } => B::Acquired(pb::LeaseAcquired {
                mode: mode_to_wire(*mode) as i32,
                ttl: Some(duration_to_wire(*ttl)),
                task_id: task.as_ref().map(|t| t.to_string()).unwrap_or_default(),
            }),
            LeaseBody::Renew => B::Renewed(pb::LeaseRenewed {}),
            LeaseBody::Release { reason } => B::Released(pb::LeaseReleased {
                reason: reason.clone(),
            }),
            LeaseBody::HandOver { to, ttl } => B::HandedOver(pb::LeaseHandedOver {
                to_agent: to.to_string(),
                ttl: Some(duration_to_wire(*ttl)),
            }),
            LeaseBody::Revoke { holder, reason } => B::Revoked(pb::LeaseRevoked {
                holder: holder.to_string(),
                reason: reason.clone(),
            }),
            LeaseBody::Sweep => B::Swept(pb::LeaseSwept {}),
            LeaseBody::Wait { mode, ttl } => B::Waiting(pb::LeaseWaiting {
                mode: mode_to_wire(*mode) as i32,
                ttl: Some(duration_to_wire(*ttl)),
            }),
            LeaseBody::StaleWrite {
                writer,
                token,
                highest_seen,
            } => B::StaleWrite(pb::LeaseStaleWrite {
                writer: writer.as_ref().map(|w| w.to_string()).unwrap_or_default(),
                token: *token,
                highest_seen: *highest_seen,
            }),
        };
        pb::LeaseEvent {
            event_id: e.event_id.clone(),
            agent_id: e.agent.to_string(),
            workflow_id: e
                .artifact
                .scope
                .workflow()
                .map(|w| w.to_string())
                .unwrap_or_default(),
            artifact: e.artifact.name.to_string(),
            token: e.token,
            occurred_at: opt_time(e.occurred_at),
            body: Some(body),
        }
    }
}

impl RootState {
    /// The wire form (`baton.v1.LeaseRoot`), as stored in KV.
    pub fn encode(&self) -> Vec<u8> {
        pb::LeaseRoot::from(self).encode_to_vec()
    }

    /// Decodes a stored root; every name must be in the root.
    pub fn decode(bytes: &[u8]) -> Result<RootState, WireError> {
        RootState::try_from(decode_wire::<pb::LeaseRoot>("baton.v1.LeaseRoot", bytes)?)
    }
}

impl From<&RootState> for pb::LeaseRoot {
    fn from(r: &RootState) -> Self {
        pb::LeaseRoot {
            workflow_id: r
                .scope
                .workflow()
                .map(|w| w.to_string())
                .unwrap_or_default(),
            root: r.root.clone(),
            last_seq: r.last_seq,
            last_token: r.last_token,
            holds: r
                .holds
                .iter()
                .map(|(a, h)| pb::LeaseHold {
                    artifact: a.name.to_string(),
                    agent_id: h.agent.to_string(),
                    mode: mode_to_wire(h.mode) as i32,
                    token: h.token,
                    since: Some(super::time_to_wire(h.since)),
                    renewed_at: Some(super::time_to_wire(h.renewed_at)),
                    ttl: Some(duration_to_wire(h.ttl)),
                    task_id: h.task.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                })
                .collect(),
            waits: r
                .waits
                .iter()
                .map(|(a, w)| pb::LeaseWait {
                    artifact: a.name.to_string(),
                    agent_id: w.agent.to_string(),
                    mode: mode_to_wire(w.mode) as i32,
                    since: Some(super::time_to_wire(w.since)),
                    renewed_at: Some(super::time_to_wire(w.renewed_at)),
                    ttl: Some(duration_to_wire(w.ttl)),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::LeaseRoot> for RootState {
    type Error = WireError;

    fn try_from(w: pb::LeaseRoot) -> Result<Self, WireError> {
        let scope = match opt_id::<WorkflowId>("workflow_id", &w.workflow_id)? {
            Some(workflow) => Scope::Workflow(workflow),
            None => Scope::Global,
        };
        let artifact = |field: &str, name: &str| -> Result<Artifact, WireError> {
            let name =
                ArtifactName::new(name).map_err(|e| WireError::field(field, e.to_string()))?;
            if name.root() != w.root {
                return Err(WireError::field(field, format!("not in root {:?}", w.root)));
            }
            Ok(Artifact {
                scope: scope.clone(),
                name,
            })
        };
        let at = |field: &str, t: Option<&prost_types::Timestamp>| {
            time_from_wire(field, t)?.ok_or_else(|| WireError::field(field, "required"))
        };
        let holds = w
            .holds
            .iter()
            .map(|h| {
                Ok((
                    artifact("holds.artifact", &h.artifact)?,
                    Hold {
                        agent: id("holds.agent_id", h.agent_id.parse())?,
                        mode: mode_from_wire(h.mode)?,
                        token: h.token,
                        since: at("holds.since", h.since.as_ref())?,
                        renewed_at: at("holds.renewed_at", h.renewed_at.as_ref())?,
                        ttl: duration_from_wire("holds.ttl", h.ttl.as_ref())?.unwrap_or_default(),
                        task: opt_id("holds.task_id", &h.task_id)?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        let waits = w
            .waits
            .iter()
            .map(|x| {
                Ok((
                    artifact("waits.artifact", &x.artifact)?,
                    Waiter {
                        agent: id("waits.agent_id", x.agent_id.parse())?,
                        mode: mode_from_wire(x.mode)?,
                        since: at("waits.since", x.since.as_ref())?,
                        renewed_at: at("waits.renewed_at", x.renewed_at.as_ref())?,
                        ttl: duration_from_wire("waits.ttl", x.ttl.as_ref())?.unwrap_or_default(),
                    },
                ))
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(RootState {
            scope,
            root: w.root,
            last_seq: w.last_seq,
            last_token: w.last_token,
            holds,
            waits,
        })
    }
}

// The global scope's token can never be a workflow id (ids start with a
// letter or digit), so a subject's scope token is unambiguous.
const _: () = assert!(GLOBAL_SCOPE_TOKEN.as_bytes()[0] == b'_');

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ids::AgentId;

    fn event(agent: &str, scope: Scope, name: &str) -> LeaseEvent {
        LeaseEvent {
            event_id: "e1".into(),
            agent: AgentId::new(agent).unwrap(),
            artifact: Artifact {
                scope,
                name: ArtifactName::new(name).unwrap(),
            },
            token: 0,
            occurred_at: None,
            body: LeaseBody::Acquire {
                mode: LeaseMode::Exclusive,
                ttl: Duration::from_secs(5),
                task: None,
            },
        }
    }

    #[test]
    fn a_lease_event_reads_back_from_its_own_subject_only() {
        let w1 = Scope::Workflow(WorkflowId::new("w1").unwrap());
        let e = event("editor", w1.clone(), "drafts/post.md");
        let subject = subjects::lease(&e.artifact, &e.agent);
        assert_eq!(subject, "baton.art.w1.editor.drafts.post~2Emd.~");
        assert_eq!(read_lease_event(&subject, &e.encode()).unwrap(), e);
        for forged in [
            "baton.art.w1.publisher.drafts.post~2Emd.~",
            "baton.art._.editor.drafts.post~2Emd.~",
            "baton.art.w1.editor.drafts.other~2Emd.~",
            "baton.art.w1.editor.drafts.post~2Emd",
        ] {
            let err = read_lease_event(forged, &e.encode()).unwrap_err();
            assert_eq!(err.reason(), "subject_mismatch", "{forged}: {err}");
        }
        let global = event("editor", Scope::Global, "x");
        let subject = subjects::lease(&global.artifact, &global.agent);
        assert_eq!(subject, "baton.art._.editor.x.~");
        assert_eq!(
            read_lease_event(&subject, &global.encode()).unwrap(),
            global
        );
    }

    #[test]
    fn the_root_filter_covers_the_root_and_everything_under_it() {
        let e = event("a", Scope::Global, "drafts/post.md");
        assert_eq!(subjects::lease_root(&e.artifact), "baton.art._.*.drafts.>");
    }

    #[test]
    fn a_lease_without_a_ttl_or_mode_is_refused() {
        let mut w = pb::LeaseEvent::from(&event("a", Scope::Global, "x"));
        if let Some(pb::lease_event::Body::Acquired(a)) = &mut w.body {
            a.ttl = None;
        }
        let err = LeaseEvent::try_from(w.clone()).unwrap_err();
        assert!(err.to_string().contains("acquired.ttl"), "{err}");
        if let Some(pb::lease_event::Body::Acquired(a)) = &mut w.body {
            a.ttl = Some(duration_to_wire(Duration::from_secs(1)));
            a.mode = 0;
        }
        assert!(LeaseEvent::try_from(w).is_err());
        let big = vec![0u8; limits::LEASE_PAYLOAD + 1];
        assert_eq!(
            read_lease_event("baton.art._.a.x.~", &big)
                .unwrap_err()
                .reason(),
            "too_large"
        );
    }
}
