//! Subject, stream and bucket names: the one place they are spelled out.

use crate::{
    alert::AlertKind,
    ids::{AgentId, TaskId, WorkflowId},
};

/// Status events: `baton.evt.<task>.<agent>`.
pub const EVENTS_STREAM: &str = "BATON_EVENTS";
/// Decision records: `baton.ctx.<workflow>.<author>`.
pub const CONTEXT_STREAM: &str = "BATON_CONTEXT";
/// Alerts: `baton.alert.<kind>.<task>`.
pub const ALERTS_STREAM: &str = "BATON_ALERTS";
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
/// How far each service's snapshot is complete: key = consumer name, value
/// = the `BATON_EVENTS` sequence up to which every state change is stored.
pub const CHECKPOINTS_BUCKET: &str = "baton-checkpoints";

/// Every status event.
pub const EVENTS_ALL: &str = "baton.evt.>";
/// Every decision-record entry.
pub const CONTEXT_ALL: &str = "baton.ctx.>";
/// Every alert.
pub const ALERTS_ALL: &str = "baton.alert.>";
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

/// The kind and task tokens of an alert subject, if it is one.
pub fn parse_alert(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("baton.alert.")?;
    rest.split_once('.')
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
    }
}
