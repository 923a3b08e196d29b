"""Task state as the client sees it, and a port of the ownership fold.

The orchestrator materialises every task's state into KV ``baton-tasks``
(``baton.v1.TaskState``), but that record may trail the event stream by a
few hundred milliseconds. To know a task's *exact* current state the client
does what the Rust SDK does: it takes the stored record and folds the events
stored after it (``last_event_seq``) with the ownership rules of
``baton_core::fold``.

Only the fields an agent needs are ported: owner, epoch, status, the pending
handoff, stage, assignee, lease and windows. Timers, alerts and the other
bookkeeping stay with the services. Like the orchestrator, events that fail
validation or arrived on a subject that does not match their payload are
skipped, and an event whose sequence is not newer than the task's last one
changes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from . import pb
from .errors import InvalidId
from .ids import agent_id, stage_name, task_id, workflow_id
from .subjects import parse_event

__all__ = [
    "TaskStatus",
    "Offer",
    "TaskView",
    "Disposition",
    "WireError",
    "validate_event",
    "apply",
    "duration_seconds",
]

#: Longest accepted event id, in bytes (as ``baton_core::wire``).
MAX_EVENT_ID_LEN = 256

#: Size limits of text fields in bytes (``baton_core::wire::limits``, written
#: in the proto comments): every reader refuses an event over one.
LIMITS: dict[str, int] = {
    "created.title": 1024,
    "heartbeat.note": 1024,
    "blocked.reason": 2048,
    "handoff_offered.output_location": 2048,
    "handoff_rejected.reason": 2048,
    "completed.output_location": 2048,
    "completed.summary": 4096,
    "failed.reason": 2048,
    "released.reason": 2048,
    "revoked.reason": 2048,
    "cancelled.reason": 2048,
}
#: Largest event payload any reader accepts.
MAX_EVENT_BYTES = 16 * 1024
#: Decision-record entry limits.
MAX_DECISION_SUMMARY = 1024
MAX_DECISION_BODY = 64 * 1024
#: Most artifacts a task may declare (``TaskCreated.artifacts``).
MAX_TASK_ARTIFACTS = 16


class TaskStatus(enum.IntEnum):
    """Lifecycle of a task; values are the wire values of ``baton.v1.TaskStatus``."""

    SUBMITTED = pb.TaskStatus.Value("TASK_STATUS_SUBMITTED")
    WORKING = pb.TaskStatus.Value("TASK_STATUS_WORKING")
    INPUT_REQUIRED = pb.TaskStatus.Value("TASK_STATUS_INPUT_REQUIRED")
    HANDOFF_PENDING = pb.TaskStatus.Value("TASK_STATUS_HANDOFF_PENDING")
    COMPLETED = pb.TaskStatus.Value("TASK_STATUS_COMPLETED")
    FAILED = pb.TaskStatus.Value("TASK_STATUS_FAILED")
    CANCELED = pb.TaskStatus.Value("TASK_STATUS_CANCELED")

    @property
    def is_terminal(self) -> bool:
        """No event may change a task in a terminal status."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED)

    def __str__(self) -> str:
        """Lower snake case, as the Rust CLI shows it (``input_required``)."""
        return self.name.lower()


@dataclass(frozen=True)
class Offer:
    """A handoff offered by the owner and not yet accepted or rejected."""

    from_agent: str
    #: Exactly one of ``to_agent`` and ``to_stage`` is set.
    to_agent: str | None
    to_stage: str | None
    output_location: str
    #: Stream sequence of the offer event.
    offered_seq: int
    #: The acceptance window the offer stated, in seconds.
    accept_within: float | None = None

    def is_for(self, agent: str) -> bool:
        """Whether ``agent`` may accept (or reject) this offer: the named agent,
        or for a stage offer anyone but its sender."""
        if self.to_agent is None:
            return agent != self.from_agent
        return self.to_agent == agent


@dataclass
class TaskView:
    """What the client knows about one task (a subset of ``baton.v1.TaskState``)."""

    task_id: str
    workflow_id: str
    status: TaskStatus
    #: The single owner; kept on terminal tasks as the owner of record.
    owner: str | None = None
    #: Fencing token; increments on every ownership change.
    epoch: int = 0
    pending_handoff: Offer | None = None
    stage: str | None = None
    title: str = ""
    assignee: str | None = None
    output_location: str = ""
    #: Highest decision-record version an applied event carried.
    context_version: int = 0
    #: The owner's lease the task's creation stated, in seconds.
    heartbeat_within: float | None = None
    #: The current owner's lease from its claim, in seconds.
    lease: float | None = None
    #: Stream sequence of the last event seen for the task, applied or refused.
    last_event_seq: int = 0
    #: Events refused for this task.
    violations: int = 0
    outcome: str = ""
    #: The artifacts its creation declared (names in normal form, in the
    #: task's workflow scope).
    artifacts: tuple[str, ...] = ()

    @property
    def active_owner(self) -> str | None:
        """The owner, unless the task has ended."""
        return None if self.status.is_terminal else self.owner

    def copy(self) -> TaskView:
        """A shallow copy (every field is immutable)."""
        return dataclasses.replace(self)

    @classmethod
    def from_state(cls, state: pb.TaskState) -> TaskView:
        """From the orchestrator's record; raises :class:`WireError` when it is
        not one the Rust SDK would accept either."""
        try:
            status = TaskStatus(state.status)
        except ValueError:
            raise WireError("status", f"unknown or unspecified value {state.status}") from None
        if not state.HasField("last_event"):
            raise WireError("last_event", "missing")
        pending: Offer | None = None
        if state.HasField("pending_handoff"):
            p = state.pending_handoff
            target = p.WhichOneof("target")
            if target is None:
                raise WireError("pending_handoff.target", "missing")
            pending = Offer(
                from_agent=_id(agent_id, "pending_handoff.from_agent", p.from_agent),
                to_agent=_id(agent_id, "pending_handoff.to_agent", p.to_agent)
                if target == "to_agent"
                else None,
                to_stage=_id(stage_name, "pending_handoff.to_stage", p.to_stage)
                if target == "to_stage"
                else None,
                output_location=p.output_location,
                offered_seq=p.offered_seq,
                accept_within=_duration(state.pending_handoff, "accept_within"),
            )
        return cls(
            task_id=_id(task_id, "task_id", state.task_id),
            workflow_id=_id(workflow_id, "workflow_id", state.workflow_id),
            status=status,
            owner=_opt_id(agent_id, "owner", state.owner),
            epoch=state.epoch,
            pending_handoff=pending,
            stage=_opt_id(stage_name, "stage", state.stage),
            title=state.title,
            assignee=_opt_id(agent_id, "assignee", state.assignee),
            output_location=state.output_location,
            context_version=state.context_version,
            heartbeat_within=_duration(state, "heartbeat_within"),
            lease=_duration(state, "lease"),
            # Seen (applied or refused): the idempotence mark.
            last_event_seq=max(state.last_event_seq, state.last_event.seq),
            violations=state.violations,
            outcome=state.outcome,
            artifacts=_artifacts("artifacts", state.artifacts),
        )


class WireError(ValueError):
    """A wire message failed the validation ``baton_core::wire`` applies."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"field `{field}`: {message}")


class Disposition(enum.Enum):
    """What folding one event did (``baton_core::Disposition``)."""

    APPLIED = "applied"
    REFUSED = "refused"
    DUPLICATE = "duplicate"
    UNKNOWN_TASK = "unknown_task"
    INVALID = "invalid"


def _id(check: Callable[[str], str], field: str, value: str) -> str:
    try:
        return check(value)
    except InvalidId as e:
        raise WireError(field, str(e)) from None


def _opt_id(check: Callable[[str], str], field: str, value: str) -> str | None:
    return _id(check, field, value) if value else None


def _artifacts(field: str, names: Iterable[str]) -> tuple[str, ...]:
    """A task's declared artifacts: valid names in normal form, at most
    :data:`MAX_TASK_ARTIFACTS` (``baton_core::wire``'s rule)."""
    from .errors import InvalidArtifactName
    from .leases import ArtifactName

    names = tuple(names)
    if len(names) > MAX_TASK_ARTIFACTS:
        raise WireError(field, f"{len(names)} artifacts, at most {MAX_TASK_ARTIFACTS}")
    for n in names:
        try:
            name = ArtifactName(n)
        except InvalidArtifactName as e:
            raise WireError(field, str(e)) from None
        if name.value != n:
            raise WireError(field, f"{n!r} is not in normal form (write {name.value!r})")
    return names


def duration_seconds(d: Duration) -> float | None:
    """A ``google.protobuf.Duration`` in seconds; zero = ``None`` (the rules decide)."""
    seconds, nanos = d.seconds, d.nanos
    if seconds < 0 or nanos < 0 or nanos >= 1_000_000_000:
        raise WireError("duration", "negative or malformed duration")
    if seconds == 0 and nanos == 0:
        return None
    return seconds + nanos / 1e9


def _duration(msg: Message, field: str) -> float | None:
    if not msg.HasField(field):
        return None
    try:
        return duration_seconds(getattr(msg, field))
    except WireError as e:
        raise WireError(field, e.message) from None


def validate_event(event: pb.Event, subject: str | None = None) -> None:
    """Raises :class:`WireError` unless ``event`` is one the orchestrator accepts
    (``baton_core::wire``: ``Event::try_from`` and ``check_subject``)."""
    if not event.event_id:
        raise WireError("event_id", "required (it is also the Nats-Msg-Id)")
    if len(event.event_id.encode("utf-8")) > MAX_EVENT_ID_LEN:
        raise WireError("event_id", f"longer than {MAX_EVENT_ID_LEN} bytes")
    _id(task_id, "task_id", event.task_id)
    _id(workflow_id, "workflow_id", event.workflow_id)
    _id(agent_id, "agent_id", event.agent_id)
    if event.HasField("occurred_at"):
        t = event.occurred_at
        if not 0 <= t.nanos < 1_000_000_000:
            raise WireError("occurred_at", f"nanos {t.nanos} out of range")
        if t.seconds < 0:
            raise WireError("occurred_at", "time before 1970")
    kind = event.WhichOneof("body")
    if kind is None:
        raise WireError("body", "no body set: exactly one is required")
    for name, limit in LIMITS.items():
        body, _, field = name.partition(".")
        if body == kind:
            size = len(getattr(getattr(event, body), field).encode("utf-8"))
            if size > limit:
                raise WireError(name, f"is {size} bytes, over its limit of {limit}")
    if kind == "created":
        c = event.created
        _artifacts("created.artifacts", c.artifacts)
        _opt_id(stage_name, "created.stage", c.stage)
        _opt_id(agent_id, "created.assignee", c.assignee)
        for f in ("start_within", "deadline_within", "heartbeat_within", "progress_within"):
            _duration(c, f)
    elif kind == "claimed":
        _duration(event.claimed, "heartbeat_within")
    elif kind == "handoff_accepted":
        _duration(event.handoff_accepted, "heartbeat_within")
    elif kind == "handoff_offered":
        o = event.handoff_offered
        target = o.WhichOneof("target")
        if target is None:
            raise WireError("handoff_offered.target", "set to_agent or to_stage")
        if target == "to_agent":
            _id(agent_id, "handoff_offered.to_agent", o.to_agent)
        else:
            _id(stage_name, "handoff_offered.to_stage", o.to_stage)
        _duration(o, "accept_within")
    if subject is not None:
        tokens = parse_event(subject)
        if tokens is None:
            raise WireError("subject", f"{subject!r} is not of the form baton.evt.<task>.<agent>")
        if tokens != (event.task_id, event.agent_id):
            raise WireError(
                "subject",
                f"{subject!r} does not match task_id {event.task_id!r} and agent_id {event.agent_id!r}",
            )


def _created(event: pb.Event, seq: int) -> TaskView:
    c = event.created
    return TaskView(
        task_id=event.task_id,
        workflow_id=event.workflow_id,
        status=TaskStatus.SUBMITTED,
        stage=c.stage or None,
        title=c.title,
        assignee=c.assignee or None,
        heartbeat_within=_duration(c, "heartbeat_within"),
        context_version=event.context_version,
        last_event_seq=seq,
        artifacts=tuple(c.artifacts),
    )


def apply(
    view: TaskView | None,
    event: pb.Event,
    seq: int,
    subject: str | None = None,
    operators: frozenset[str] = frozenset(),
    auto_create: bool = False,
) -> tuple[TaskView | None, Disposition, str]:
    """Folds one stored event into a task (``None`` = no such task yet).

    Returns the new view (a copy; ``view`` is not modified), what happened,
    and on refusal why. ``operators`` are the agents allowed to revoke and
    cancel (empty = anyone) and ``auto_create`` whether an event of a task
    never created creates it: the orchestrator's published policy
    (:class:`FoldPolicy`, read by :class:`~baton_client.Agent`).
    """
    try:
        validate_event(event, subject)
    except WireError as e:
        return view, Disposition.INVALID, str(e)
    if view is None:
        if event.WhichOneof("body") == "created":
            return _created(event, seq), Disposition.APPLIED, ""
        if not auto_create:
            return None, Disposition.UNKNOWN_TASK, f"task {event.task_id} was never created"
        # As the orchestrator's AutoCreate: an implicit task, then the event.
        view = TaskView(
            task_id=event.task_id,
            workflow_id=event.workflow_id,
            status=TaskStatus.SUBMITTED,
            last_event_seq=0,
        )
    if seq <= view.last_event_seq:
        return view, Disposition.DUPLICATE, ""
    task = view.copy()
    reason = _transition(task, event, seq, operators)
    if reason is None:
        task.context_version = max(task.context_version, event.context_version)
        task.last_event_seq = seq
        return task, Disposition.APPLIED, ""
    refused = view.copy()
    refused.violations += 1
    refused.last_event_seq = seq
    return refused, Disposition.REFUSED, reason


def _take_ownership(task: TaskView, agent: str) -> None:
    task.owner = agent
    task.epoch += 1
    task.status = TaskStatus.WORKING


def _let_go(task: TaskView) -> None:
    task.owner = None
    task.epoch += 1
    task.status = TaskStatus.SUBMITTED
    task.pending_handoff = None
    task.lease = None


def _end(task: TaskView, status: TaskStatus) -> None:
    task.status = status
    task.pending_handoff = None


def _transition(task: TaskView, event: pb.Event, seq: int, operators: frozenset[str]) -> str | None:
    """Applies the event's rule in place, or returns why it is refused (then
    the caller discards ``task``). The rules of ``baton_core::fold::transition``."""
    actor = event.agent_id
    kind = event.WhichOneof("body")
    if task.status.is_terminal:
        return f"task is already {task.status}"

    def must_own() -> str | None:
        if task.owner == actor and event.epoch == task.epoch:
            return None
        if task.owner == actor:
            return f"{actor} holds epoch {event.epoch} but the task is at epoch {task.epoch}"
        return f"{actor} is not the owner (owner: {task.owner or 'nobody'})"

    if kind == "created":
        return "task already exists"
    if kind == "claimed":
        if task.owner is not None:
            return f"task is already owned by {task.owner}"
        if task.assignee is not None and task.assignee != actor:
            return f"task is assigned to {task.assignee}"
        _take_ownership(task, actor)
        task.lease = _duration(event.claimed, "heartbeat_within")
        return None
    if kind == "heartbeat":
        if (why := must_own()) is not None:
            return why
        if task.status == TaskStatus.INPUT_REQUIRED:
            task.status = TaskStatus.WORKING
        return None
    if kind == "blocked":
        if (why := must_own()) is not None:
            return why
        if task.status == TaskStatus.HANDOFF_PENDING:
            return "a handoff is pending; wait for accept or reject"
        task.status = TaskStatus.INPUT_REQUIRED
        return None
    if kind == "handoff_offered":
        if (why := must_own()) is not None:
            return why
        if task.status == TaskStatus.HANDOFF_PENDING:
            return "a handoff is pending; wait for accept or reject"
        o = event.handoff_offered
        target = o.WhichOneof("target")
        if target == "to_agent" and o.to_agent == actor:
            return f"{actor} offered the task to itself"
        task.pending_handoff = Offer(
            from_agent=actor,
            to_agent=o.to_agent if target == "to_agent" else None,
            to_stage=o.to_stage if target == "to_stage" else None,
            output_location=o.output_location,
            offered_seq=seq,
            accept_within=_duration(o, "accept_within"),
        )
        task.status = TaskStatus.HANDOFF_PENDING
        return None
    if kind == "handoff_accepted":
        pending = task.pending_handoff
        if pending is None:
            return "no handoff is pending"
        if not pending.is_for(actor):
            return f"the pending offer is for {pending.to_agent}, not {actor}"
        task.pending_handoff = None
        if pending.to_stage is not None:
            task.stage = pending.to_stage
        task.output_location = pending.output_location
        _take_ownership(task, actor)
        task.lease = _duration(event.handoff_accepted, "heartbeat_within")
        return None
    if kind == "handoff_rejected":
        pending = task.pending_handoff
        if pending is None:
            return "no handoff is pending"
        if not pending.is_for(actor) or task.owner == actor:
            return f"the pending offer is for {pending.to_agent or 'a stage'}, not {actor}"
        task.pending_handoff = None
        task.status = TaskStatus.WORKING
        return None
    if kind == "completed":
        if (why := must_own()) is not None:
            return why
        if event.completed.output_location:
            task.output_location = event.completed.output_location
        task.outcome = event.completed.summary
        _end(task, TaskStatus.COMPLETED)
        return None
    if kind == "failed":
        if (why := must_own()) is not None:
            return why
        task.outcome = event.failed.reason
        if event.failed.retryable:
            _let_go(task)
        else:
            _end(task, TaskStatus.FAILED)
        return None
    if kind == "released":
        if (why := must_own()) is not None:
            return why
        _let_go(task)
        return None
    if kind == "revoked":
        if operators and actor not in operators:
            return f"{actor} is not an operator"
        if task.owner is None:
            return "task is not owned"
        _let_go(task)
        return None
    if kind == "cancelled":
        if operators and actor not in operators:
            return f"{actor} is not an operator"
        task.outcome = event.cancelled.reason
        _end(task, TaskStatus.CANCELED)
        return None
    return f"unknown body {kind}"  # pragma: no cover - validate_event refuses it
