//! Lease events on the wire (`baton.v1.LeaseEvent`), and their one read path.

use baton_proto::{prost::Message, prost_types, v1 as pb};

use super::{
    MAX_EVENT_ID_LEN, WireError, bounded, decode_wire, duration_from_wire, duration_to_wire, id,
    limits, opt_id, opt_time, time_from_wire,
};
use crate::{
    ids::WorkflowId,
    lease::{Artifact, ArtifactName, GLOBAL_SCOPE_TOKEN, LeaseBody, LeaseEvent, LeaseMode, Scope},
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
