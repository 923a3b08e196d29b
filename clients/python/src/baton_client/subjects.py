"""Subject, stream and bucket names (mirrors ``baton_core::subjects``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .leases import Artifact

__all__ = [
    "EVENTS_STREAM",
    "CONTEXT_STREAM",
    "ALERTS_STREAM",
    "DLQ_STREAM",
    "ARTIFACTS_STREAM",
    "ARTIFACTS_ALL",
    "TASKS_BUCKET",
    "SERVICES_BUCKET",
    "POLICY_BUCKET",
    "LEASES_BUCKET",
    "CHECKPOINTS_BUCKET",
    "LEASES_CHECKPOINT",
    "POLICY_KEY",
    "SYSTEM_TOKEN",
    "event",
    "task_events",
    "context",
    "workflow_context",
    "parse_context",
    "alert",
    "raised",
    "parse_event",
    "parse_alert",
    "lease",
    "lease_root",
    "lease_root_key",
    "lease_scope_key_prefix",
    "parse_lease",
]

#: Status events: ``baton.evt.<task>.<agent>``.
EVENTS_STREAM = "BATON_EVENTS"
#: Decision records: ``baton.ctx.<workflow>.<author>``.
CONTEXT_STREAM = "BATON_CONTEXT"
#: Alerts: stored on ``baton.raise.<kind>.<task>`` and republished, once
#: stored, on ``baton.alert.<kind>.<task>`` (each notification exactly once).
ALERTS_STREAM = "BATON_ALERTS"
#: What could not be decoded or validated: ``baton.dlq.<reason>``.
DLQ_STREAM = "BATON_DLQ"
#: Artifact leases: ``baton.art.<scope>.<agent>.<path tokens>.~``.
ARTIFACTS_STREAM = "BATON_ARTIFACTS"
#: Every artifact lease event.
ARTIFACTS_ALL = "baton.art.>"
#: Materialised task state (``baton.v1.TaskState``), key = task id.
TASKS_BUCKET = "baton-tasks"
#: The orchestrator's fold policy (``baton.v1.FoldPolicy``), key :data:`POLICY_KEY`.
POLICY_BUCKET = "baton-policy"
POLICY_KEY = "policy"
#: Service liveness (``baton.v1.ServiceStatus``), key = ``<service>.<instance>``.
SERVICES_BUCKET = "baton-services"
#: Materialised artifact leases (``baton.v1.LeaseRoot``), one value per
#: root, key :func:`lease_root_key`; written by the orchestrator.
LEASES_BUCKET = "baton-leases"
#: How far each service's snapshot is complete: key = its checkpoint's
#: name, value = a stream sequence in decimal.
CHECKPOINTS_BUCKET = "baton-checkpoints"
#: The checkpoint (in :data:`CHECKPOINTS_BUCKET`) of :data:`LEASES_BUCKET`:
#: the ``BATON_ARTIFACTS`` sequence up to which every root is stored there.
LEASES_CHECKPOINT = "baton-orchestrator-leases"
#: Task token of alerts about Baton itself (no task may be called this).
SYSTEM_TOKEN = "_system"


def event(task: str, agent: str) -> str:
    """``baton.evt.<task>.<agent>``"""
    return f"baton.evt.{task}.{agent}"


def task_events(task: str) -> str:
    """``baton.evt.<task>.*``: every event of one task, the compare-and-set scope."""
    return f"baton.evt.{task}.*"


def context(workflow: str, author: str) -> str:
    """``baton.ctx.<workflow>.<author>``: where ``author`` records a decision."""
    return f"baton.ctx.{workflow}.{author}"


def workflow_context(workflow: str) -> str:
    """``baton.ctx.<workflow>.*``: a workflow's whole decision record, and the
    compare-and-set scope of recording in it."""
    return f"baton.ctx.{workflow}.*"


def parse_context(subject: str) -> tuple[str, str] | None:
    """The workflow and author tokens of a decision-record subject, if it is one."""
    prefix = "baton.ctx."
    if not subject.startswith(prefix):
        return None
    workflow, sep, author = subject[len(prefix) :].partition(".")
    if not sep or "." in author:
        return None
    return workflow, author


def alert(kind: str, task: str | None) -> str:
    """``baton.alert.<kind>.<task or _system>``; ``kind`` in lower snake case (or ``*``)."""
    return f"baton.alert.{kind}.{SYSTEM_TOKEN if task is None else task}"


def raised(kind: str, task: str | None) -> str:
    """``baton.raise.<kind>.<task or _system>``: where alerts are stored in
    ``BATON_ALERTS`` (read the stream's history with this; subscribe to
    :func:`alert`)."""
    return f"baton.raise.{kind}.{SYSTEM_TOKEN if task is None else task}"


def parse_event(subject: str) -> tuple[str, str] | None:
    """The task and agent tokens of an event subject, if it is one."""
    prefix = "baton.evt."
    if not subject.startswith(prefix):
        return None
    rest = subject[len(prefix) :]
    task, sep, agent = rest.partition(".")
    if not sep or "." in agent:
        return None
    return task, agent


def parse_alert(subject: str) -> tuple[str, str] | None:
    """The kind and task tokens of an alert subject (``baton.alert.`` as
    received or ``baton.raise.`` as stored), if it is one."""
    for prefix in ("baton.alert.", "baton.raise."):
        if subject.startswith(prefix):
            kind, sep, task = subject[len(prefix) :].partition(".")
            return (kind, task) if sep and "." not in task else None
    return None


def lease(artifact: Artifact, agent: str) -> str:
    """``baton.art.<scope>.<agent>.<path tokens>.~``: where ``agent`` publishes
    its lease events on ``artifact`` (scope ``_`` = global)."""
    return f"baton.art.{artifact.scope_token}.{agent}.{artifact.name.subject_tokens()}"


def lease_root(artifact: Artifact) -> str:
    """``baton.art.<scope>.*.<root token>.>``: every lease event of the
    artifact's root (every name it can conflict with), the compare-and-set
    scope of lease acts."""
    root = artifact.name.subject_tokens().split(".", 1)[0]
    return f"baton.art.{artifact.scope_token}.*.{root}.>"


def lease_scope_key_prefix(workflow: str | None) -> str:
    """``art.<scope token>.``: how every key of a scope's roots in
    :data:`LEASES_BUCKET` starts (``None`` = the global scope, ``_``)."""
    return f"art.{'_' if workflow is None else workflow}."


def lease_root_key(artifact: Artifact) -> str:
    """``art.<scope token>.<root token>``: the key of the artifact's root in
    :data:`LEASES_BUCKET`, the root's subject token with every ``~`` written
    ``=`` (KV keys have no ``~``): ``drafts/post.md`` -> ``art._.drafts``,
    ``my doc`` -> ``art._.my=20doc``."""
    root = artifact.name.subject_tokens().split(".", 1)[0]
    return lease_scope_key_prefix(artifact.workflow) + root.replace("~", "=")


def parse_lease(subject: str) -> tuple[str, str, list[str]] | None:
    """The scope, agent and path tokens (without the end token ``~``) of a
    lease subject, if it is one."""
    prefix = "baton.art."
    if not subject.startswith(prefix):
        return None
    tokens = subject[len(prefix) :].split(".")
    if len(tokens) < 3:
        return None
    scope, agent, path = tokens[0], tokens[1], tokens[2:]
    if path.pop() != "~" or not path:
        return None
    return scope, agent, path
