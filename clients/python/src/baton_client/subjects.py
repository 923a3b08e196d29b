"""Subject, stream and bucket names (mirrors ``baton_core::subjects``)."""

from __future__ import annotations

__all__ = [
    "EVENTS_STREAM",
    "CONTEXT_STREAM",
    "ALERTS_STREAM",
    "DLQ_STREAM",
    "TASKS_BUCKET",
    "SERVICES_BUCKET",
    "SYSTEM_TOKEN",
    "event",
    "task_events",
    "context",
    "alert",
    "parse_event",
    "parse_alert",
]

#: Status events: ``baton.evt.<task>.<agent>``.
EVENTS_STREAM = "BATON_EVENTS"
#: Decision records: ``baton.ctx.<workflow>``.
CONTEXT_STREAM = "BATON_CONTEXT"
#: Alerts: ``baton.alert.<kind>.<task>``.
ALERTS_STREAM = "BATON_ALERTS"
#: What could not be decoded or validated: ``baton.dlq.<reason>``.
DLQ_STREAM = "BATON_DLQ"
#: Materialised task state (``baton.v1.TaskState``), key = task id.
TASKS_BUCKET = "baton-tasks"
#: Service liveness (``baton.v1.ServiceStatus``), key = ``<service>.<instance>``.
SERVICES_BUCKET = "baton-services"
#: Task token of alerts about Baton itself (no task may be called this).
SYSTEM_TOKEN = "_system"


def event(task: str, agent: str) -> str:
    """``baton.evt.<task>.<agent>``"""
    return f"baton.evt.{task}.{agent}"


def task_events(task: str) -> str:
    """``baton.evt.<task>.*``: every event of one task, the compare-and-set scope."""
    return f"baton.evt.{task}.*"


def context(workflow: str) -> str:
    """``baton.ctx.<workflow>``"""
    return f"baton.ctx.{workflow}"


def alert(kind: str, task: str | None) -> str:
    """``baton.alert.<kind>.<task or _system>``; ``kind`` in lower snake case (or ``*``)."""
    return f"baton.alert.{kind}.{SYSTEM_TOKEN if task is None else task}"


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
    """The kind and task tokens of an alert subject, if it is one."""
    prefix = "baton.alert."
    if not subject.startswith(prefix):
        return None
    kind, sep, task = subject[len(prefix) :].partition(".")
    return (kind, task) if sep else None
