//! Subject, stream and bucket names: the one place they are spelled out.

use crate::{
    alert::AlertKind,
    ids::{AgentId, TaskId, WorkflowId},
    lease::Artifact,
};

/// Status events: `baton.evt.<task>.<agent>`.
pub const EVENTS_STREAM: &str = "BATON_EVENTS";
/// Decision records: `baton.ctx.<workflow>.<author>`.
pub const CONTEXT_STREAM: &str = "BATON_CONTEXT";
/// Alerts: stored on `baton.raise.<kind>.<task>` and republished, once
/// stored, on `baton.alert.<kind>.<task>`.
pub const ALERTS_STREAM: &str = "BATON_ALERTS";
/// Artifact leases: `baton.art.<scope>.<agent>.<path tokens>.~`.
pub const ARTIFACTS_STREAM: &str = "BATON_ARTIFACTS";
/// What could not be decoded or validated: `baton.dlq.<reason>`.
pub const DLQ_STREAM: &str = "BATON_DLQ";
/// Materialised task state, key = task id.
pub const TASKS_BUCKET: &str = "baton-tasks";
/// Service liveness, key = `<service>.<instance>`.
pub const SERVICES_BUCKET: &str = "baton-services";
/// Silences, key = silence id.
pub const SILENCES_BUCKET: &str = "baton-silences";
/// The orchestrator's fold policy (`baton.v1.FoldPolicy`), key [`POLICY_KEY`].
pub const POLICY_BUCKET: &str = "baton-policy";
/// The one key of [`POLICY_BUCKET`].
pub const POLICY_KEY: &str = "policy";
/// The stall detector's own snapshot of task state, key = task id.
pub const DETECTOR_BUCKET: &str = "baton-detector";
/// The services' leadership leases (`baton.v1.Leadership`), key = service.
pub const LEADERS_BUCKET: &str = "baton-leaders";
/// Materialised artifact leases (`baton.v1.LeaseRoot`), one value per
/// root, key [`lease_root_key`]; written by the orchestrator.
pub const LEASES_BUCKET: &str = "baton-leases";
/// The checkpoint (in [`CHECKPOINTS_BUCKET`]) of [`LEASES_BUCKET`]: the
/// `BATON_ARTIFACTS` sequence up to which every root is stored there.
pub const LEASES_CHECKPOINT: &str = "baton-orchestrator-leases";
/// How far each service's snapshot is complete: key = consumer name, value
/// = the `BATON_EVENTS` sequence up to which every state change is stored.
pub const CHECKPOINTS_BUCKET: &str = "baton-checkpoints";

/// Every status event.
pub const EVENTS_ALL: &str = "baton.evt.>";
/// Every artifact lease event.
pub const ARTIFACTS_ALL: &str = "baton.art.>";
/// Every decision-record entry.
pub const CONTEXT_ALL: &str = "baton.ctx.>";
/// Every alert, as subscribers receive it: `BATON_ALERTS` republishes each
/// stored alert here, so a subscriber sees each alert notification exactly
/// once, however often a service retried publishing it.
pub const ALERTS_ALL: &str = "baton.alert.>";
/// Where services publish alerts, and the subjects `BATON_ALERTS` stores
/// them under (read the stream's history with this filter).
pub const ALERTS_RAISE_ALL: &str = "baton.raise.>";
/// Fence subjects (decision 8): `baton.fence.<stream>.<service>` in each
/// stream a service writes to, written once per leadership term.
pub const FENCE_PREFIX: &str = "baton.fence";
/// Prefix of the reserved KV keys that hold fences (`_fence.<service>`);
/// no task id starts with `_`, so readers of a bucket skip these keys.
pub const FENCE_KEY_PREFIX: &str = "_fence.";
/// Every dead letter.
pub const DLQ_ALL: &str = "baton.dlq.>";
/// Query API prefix of the orchestrator.
pub const API_PREFIX: &str = "baton.api.v1";

/// Task token of alerts about Baton itself (no task may be called this).
pub const SYSTEM_TOKEN: &str = "_system";

/// Durable consumer of the orchestrator on `BATON_EVENTS`.
pub const ORCHESTRATOR_CONSUMER: &str = "baton-orchestrator";
/// Durable consumer of the stall detector on `BATON_EVENTS`.
pub const DETECTOR_CONSUMER: &str = "baton-stall-detector";

/// `baton.evt.<task>.<agent>`
pub fn event(task: &TaskId, agent: &AgentId) -> String {
    format!("baton.evt.{task}.{agent}")
}

/// `baton.evt.<task>.*`: every event of one task, the compare-and-set scope.
pub fn task_events(task: &TaskId) -> String {
    format!("baton.evt.{task}.*")
}

/// `baton.art.<scope>.<agent>.<path tokens>.~`: where `agent` publishes
/// its lease events on `artifact`.
pub fn lease(artifact: &Artifact, agent: &AgentId) -> String {
    format!(
        "baton.art.{}.{agent}.{}",
        artifact.scope.token(),
        artifact.name.subject_tokens()
    )
}

/// `baton.art.<scope>.*.<root token>.>`: every lease event of the
/// artifact's root (every name it can conflict with), the compare-and-set
/// scope of lease acts.
pub fn lease_root(artifact: &Artifact) -> String {
    let tokens = artifact.name.subject_tokens();
    let root = tokens.split('.').next().unwrap_or_default();
    format!("baton.art.{}.*.{root}.>", artifact.scope.token())
}

/// `art.<scope token>.<root token>`, with `~` written `=` (KV keys have no
/// `~`, and `=` is never in an escaped token; the `art.` keeps the global
/// scope's `_` from starting the key, which would make it a reserved key):
/// the key of a root in [`LEASES_BUCKET`].
pub fn lease_root_key(artifact: &Artifact) -> String {
    let tokens = artifact.name.subject_tokens();
    let root = tokens.split('.').next().unwrap_or_default();
    format!(
        "{}{}",
        lease_scope_key_prefix(&artifact.scope),
        root.replace('~', "=")
    )
}

/// `art.<scope token>.`: how every key of a scope's roots in
/// [`LEASES_BUCKET`] starts.
pub fn lease_scope_key_prefix(scope: &crate::lease::Scope) -> String {
    format!("art.{}.", scope.token())
}

/// The scope, agent and path tokens (without the end token) of a lease
/// subject, if it is one.
pub fn parse_lease(subject: &str) -> Option<(&str, &str, Vec<&str>)> {
    let rest = subject.strip_prefix("baton.art.")?;
    let mut tokens = rest.split('.');
    let scope = tokens.next()?;
    let agent = tokens.next()?;
    let mut path: Vec<&str> = tokens.collect();
    (path.pop()? == crate::lease::PATH_END_TOKEN && !path.is_empty())
        .then_some((scope, agent, path))
}

/// `baton.ctx.<workflow>.<author>`: where `author` records a decision.
pub fn context(workflow: &WorkflowId, author: &AgentId) -> String {
    format!("baton.ctx.{workflow}.{author}")
}

/// `baton.ctx.<workflow>.*`: a workflow's whole decision record, and the
/// compare-and-set scope of recording in it.
pub fn workflow_context(workflow: &WorkflowId) -> String {
    format!("baton.ctx.{workflow}.*")
}

/// The workflow and author tokens of a decision-record subject, if it is one.
pub fn parse_context(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("baton.ctx.")?;
    let (workflow, author) = rest.split_once('.')?;
    (!author.contains('.')).then_some((workflow, author))
}

/// `baton.alert.<kind>.<task or _system>`
pub fn alert(kind: AlertKind, task: Option<&TaskId>) -> String {
    format!(
        "baton.alert.{}.{}",
        kind.as_str(),
        task.map_or(SYSTEM_TOKEN, TaskId::as_str)
    )
}

/// `baton.raise.<kind>.<task or _system>`: where an alert is published to
/// `BATON_ALERTS`, which republishes it on [`alert`] once stored.
pub fn raise(kind: AlertKind, task: Option<&TaskId>) -> String {
    format!(
        "baton.raise.{}.{}",
        kind.as_str(),
        task.map_or(SYSTEM_TOKEN, TaskId::as_str)
    )
}

/// `baton.fence.<stream>.<service>`: the fence subject of `service` in a
/// stream (`stream` is a short name such as `alerts`).
pub fn fence(stream: &str, service: &str) -> String {
    format!("{FENCE_PREFIX}.{stream}.{service}")
}

/// Whether a KV key is reserved (a fence), not data.
pub fn is_reserved_key(key: &str) -> bool {
    key.starts_with('_')
}

/// `baton.dlq.<reason>`
pub fn dlq(reason: &str) -> String {
    format!("baton.dlq.{reason}")
}

/// The task and agent tokens of an event subject, if it is one.
pub fn parse_event(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("baton.evt.")?;
    let (task, agent) = rest.split_once('.')?;
    (!agent.contains('.')).then_some((task, agent))
}

/// The kind and task tokens of an alert subject (`baton.alert.…` as
/// received, or `baton.raise.…` as stored), if it is one.
pub fn parse_alert(subject: &str) -> Option<(&str, &str)> {
    let rest = subject
        .strip_prefix("baton.alert.")
        .or_else(|| subject.strip_prefix("baton.raise."))?;
    let (kind, task) = rest.split_once('.')?;
    (!task.contains('.')).then_some((kind, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let task = TaskId::new("t1").expect("valid");
        let agent = AgentId::new("a1").expect("valid");
        assert_eq!(event(&task, &agent), "baton.evt.t1.a1");
        assert_eq!(parse_event("baton.evt.t1.a1"), Some(("t1", "a1")));
        assert_eq!(parse_event("baton.evt.t1.a1.x"), None);
        assert_eq!(parse_event("baton.evt.t1"), None);
        let workflow = WorkflowId::new("w1").expect("valid");
        assert_eq!(context(&workflow, &agent), "baton.ctx.w1.a1");
        assert_eq!(workflow_context(&workflow), "baton.ctx.w1.*");
        assert_eq!(parse_context("baton.ctx.w1.a1"), Some(("w1", "a1")));
        assert_eq!(parse_context("baton.ctx.w1"), None);
        assert_eq!(parse_context("baton.ctx.w1.a1.x"), None);
        assert_eq!(
            alert(AlertKind::HeartbeatMissed, Some(&task)),
            "baton.alert.heartbeat_missed.t1"
        );
        assert_eq!(
            alert(AlertKind::OrchestratorDown, None),
            "baton.alert.orchestrator_down._system"
        );
        assert_eq!(
            parse_alert("baton.alert.not_started.t1"),
            Some(("not_started", "t1"))
        );
        assert_eq!(
            raise(AlertKind::HeartbeatMissed, Some(&task)),
            "baton.raise.heartbeat_missed.t1"
        );
        assert_eq!(
            parse_alert("baton.raise.not_started.t1"),
            Some(("not_started", "t1"))
        );
        assert_eq!(parse_alert("baton.fence.alerts.orchestrator"), None);
        assert_eq!(
            fence("alerts", "orchestrator"),
            "baton.fence.alerts.orchestrator"
        );
        assert!(is_reserved_key("_fence.orchestrator"));
        assert!(!is_reserved_key("t1"));
    }
}
