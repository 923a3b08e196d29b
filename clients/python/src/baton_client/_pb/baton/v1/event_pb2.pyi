import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("event_id", "task_id", "workflow_id", "agent_id", "epoch", "context_version", "occurred_at", "created", "claimed", "heartbeat", "blocked", "handoff_offered", "handoff_accepted", "handoff_rejected", "completed", "failed", "released", "revoked", "cancelled")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_OFFERED_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_REJECTED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    task_id: str
    workflow_id: str
    agent_id: str
    epoch: int
    context_version: int
    occurred_at: _timestamp_pb2.Timestamp
    created: TaskCreated
    claimed: Claimed
    heartbeat: Heartbeat
    blocked: Blocked
    handoff_offered: HandoffOffered
    handoff_accepted: HandoffAccepted
    handoff_rejected: HandoffRejected
    completed: Completed
    failed: Failed
    released: Released
    revoked: Revoked
    cancelled: Cancelled
    def __init__(self, event_id: _Optional[str] = ..., task_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., epoch: _Optional[int] = ..., context_version: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created: _Optional[_Union[TaskCreated, _Mapping]] = ..., claimed: _Optional[_Union[Claimed, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., blocked: _Optional[_Union[Blocked, _Mapping]] = ..., handoff_offered: _Optional[_Union[HandoffOffered, _Mapping]] = ..., handoff_accepted: _Optional[_Union[HandoffAccepted, _Mapping]] = ..., handoff_rejected: _Optional[_Union[HandoffRejected, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ..., released: _Optional[_Union[Released, _Mapping]] = ..., revoked: _Optional[_Union[Revoked, _Mapping]] = ..., cancelled: _Optional[_Union[Cancelled, _Mapping]] = ...) -> None: ...

class TaskCreated(_message.Message):
    __slots__ = ("stage", "title", "assignee", "start_within", "deadline_within", "heartbeat_within", "progress_within", "artifacts")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_FIELD_NUMBER: _ClassVar[int]
    START_WITHIN_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_WITHIN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_WITHIN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_WITHIN_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    title: str
    assignee: str
    start_within: _duration_pb2.Duration
    deadline_within: _duration_pb2.Duration
    heartbeat_within: _duration_pb2.Duration
    progress_within: _duration_pb2.Duration
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stage: _Optional[str] = ..., title: _Optional[str] = ..., assignee: _Optional[str] = ..., start_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., deadline_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeat_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., progress_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., artifacts: _Optional[_Iterable[str]] = ...) -> None: ...

class Claimed(_message.Message):
    __slots__ = ("heartbeat_within",)
    HEARTBEAT_WITHIN_FIELD_NUMBER: _ClassVar[int]
    heartbeat_within: _duration_pb2.Duration
    def __init__(self, heartbeat_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("note", "progress")
    NOTE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    note: str
    progress: bool
    def __init__(self, note: _Optional[str] = ..., progress: _Optional[bool] = ...) -> None: ...

class Blocked(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class HandoffOffered(_message.Message):
    __slots__ = ("to_agent", "to_stage", "output_location", "accept_within")
    TO_AGENT_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_WITHIN_FIELD_NUMBER: _ClassVar[int]
    to_agent: str
    to_stage: str
    output_location: str
    accept_within: _duration_pb2.Duration
    def __init__(self, to_agent: _Optional[str] = ..., to_stage: _Optional[str] = ..., output_location: _Optional[str] = ..., accept_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HandoffAccepted(_message.Message):
    __slots__ = ("heartbeat_within",)
    HEARTBEAT_WITHIN_FIELD_NUMBER: _ClassVar[int]
    heartbeat_within: _duration_pb2.Duration
    def __init__(self, heartbeat_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HandoffRejected(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ("output_location", "summary")
    OUTPUT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    output_location: str
    summary: str
    def __init__(self, output_location: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("reason", "retryable")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    retryable: bool
    def __init__(self, reason: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class Released(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Revoked(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Cancelled(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...
