"""The wire contract (protobuf package ``baton.v1``), generated from ``proto/``.

Re-exports the generated message and enum classes under short names::

    from baton_client import pb
    event = pb.Event(event_id="e1", task_id="t1", ...)
    state = pb.TaskState.FromString(kv_value)

The modules themselves are ``event_pb2``, ``task_pb2``, ``alert_pb2``,
``context_pb2``, ``service_pb2`` and ``lease_pb2`` (regenerate with
``scripts/gen-python``).
"""

from __future__ import annotations

from ._pb.baton.v1 import alert_pb2, context_pb2, event_pb2, lease_pb2, service_pb2, task_pb2
from ._pb.baton.v1.alert_pb2 import Alert, AlertKind, AlertState, LastEvent, Severity
from ._pb.baton.v1.context_pb2 import ContextEntry
from ._pb.baton.v1.event_pb2 import (
    Blocked,
    Cancelled,
    Claimed,
    Completed,
    Event,
    Failed,
    HandoffAccepted,
    HandoffOffered,
    HandoffRejected,
    Heartbeat,
    Released,
    Revoked,
    TaskCreated,
)
from ._pb.baton.v1.lease_pb2 import (
    LEASE_MODE_EXCLUSIVE,
    LEASE_MODE_SHARED,
    LEASE_MODE_UNSPECIFIED,
    LeaseAcquired,
    LeaseEvent,
    LeaseHandedOver,
    LeaseHold,
    LeaseMode,
    LeaseReleased,
    LeaseRenewed,
    LeaseRevoked,
    LeaseRoot,
    LeaseStaleWrite,
    LeaseSwept,
    LeaseWait,
    LeaseWaiting,
)
from ._pb.baton.v1.service_pb2 import (
    UNKNOWN_TASK_POLICY_ALERT,
    UNKNOWN_TASK_POLICY_CREATE,
    FoldPolicy,
    GetTaskRequest,
    GetTaskResponse,
    ListTasksRequest,
    ListTasksResponse,
    ServiceStatus,
    Silence,
    TimelineEntry,
    TimelineRequest,
    TimelineResponse,
)
from ._pb.baton.v1.task_pb2 import EventRef, PendingHandoff, TaskState, TaskStatus

__all__ = [
    "alert_pb2",
    "context_pb2",
    "event_pb2",
    "lease_pb2",
    "service_pb2",
    "task_pb2",
    "Alert",
    "AlertKind",
    "AlertState",
    "LastEvent",
    "Severity",
    "ContextEntry",
    "Blocked",
    "Cancelled",
    "Claimed",
    "Completed",
    "Event",
    "Failed",
    "HandoffAccepted",
    "HandoffOffered",
    "HandoffRejected",
    "Heartbeat",
    "Released",
    "Revoked",
    "TaskCreated",
    "LEASE_MODE_EXCLUSIVE",
    "LEASE_MODE_SHARED",
    "LEASE_MODE_UNSPECIFIED",
    "LeaseAcquired",
    "LeaseEvent",
    "LeaseHandedOver",
    "LeaseHold",
    "LeaseMode",
    "LeaseReleased",
    "LeaseRenewed",
    "LeaseRevoked",
    "LeaseRoot",
    "LeaseStaleWrite",
    "LeaseSwept",
    "LeaseWait",
    "LeaseWaiting",
    "FoldPolicy",
    "UNKNOWN_TASK_POLICY_ALERT",
    "UNKNOWN_TASK_POLICY_CREATE",
    "GetTaskRequest",
    "GetTaskResponse",
    "ListTasksRequest",
    "ListTasksResponse",
    "ServiceStatus",
    "Silence",
    "TimelineEntry",
    "TimelineRequest",
    "TimelineResponse",
    "EventRef",
    "PendingHandoff",
    "TaskState",
    "TaskStatus",
    "BODY_KINDS",
    "MESSAGE_TYPES",
]

#: The ``Event.body`` oneof field names, in field-number order.
BODY_KINDS: tuple[str, ...] = (
    "created",
    "claimed",
    "heartbeat",
    "blocked",
    "handoff_offered",
    "handoff_accepted",
    "handoff_rejected",
    "completed",
    "failed",
    "released",
    "revoked",
    "cancelled",
)

#: Full protobuf name -> generated class, for every top-level message.
MESSAGE_TYPES = {
    cls.DESCRIPTOR.full_name: cls
    for module in (event_pb2, task_pb2, alert_pb2, context_pb2, service_pb2, lease_pb2)
    for cls in (getattr(module, name) for name in module.DESCRIPTOR.message_types_by_name)
}
