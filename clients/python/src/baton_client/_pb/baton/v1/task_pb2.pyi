import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_SUBMITTED: _ClassVar[TaskStatus]
    TASK_STATUS_WORKING: _ClassVar[TaskStatus]
    TASK_STATUS_INPUT_REQUIRED: _ClassVar[TaskStatus]
    TASK_STATUS_HANDOFF_PENDING: _ClassVar[TaskStatus]
    TASK_STATUS_COMPLETED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_CANCELED: _ClassVar[TaskStatus]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_SUBMITTED: TaskStatus
TASK_STATUS_WORKING: TaskStatus
TASK_STATUS_INPUT_REQUIRED: TaskStatus
TASK_STATUS_HANDOFF_PENDING: TaskStatus
TASK_STATUS_COMPLETED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_CANCELED: TaskStatus

class PendingHandoff(_message.Message):
    __slots__ = ("from_agent", "to_agent", "to_stage", "output_location", "offered_at", "accept_by", "offered_seq", "accept_within")
    FROM_AGENT_FIELD_NUMBER: _ClassVar[int]
    TO_AGENT_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    OFFERED_AT_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_BY_FIELD_NUMBER: _ClassVar[int]
    OFFERED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_WITHIN_FIELD_NUMBER: _ClassVar[int]
    from_agent: str
    to_agent: str
    to_stage: str
    output_location: str
    offered_at: _timestamp_pb2.Timestamp
    accept_by: _timestamp_pb2.Timestamp
    offered_seq: int
    accept_within: _duration_pb2.Duration
    def __init__(self, from_agent: _Optional[str] = ..., to_agent: _Optional[str] = ..., to_stage: _Optional[str] = ..., output_location: _Optional[str] = ..., offered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accept_by: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offered_seq: _Optional[int] = ..., accept_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EventRef(_message.Message):
    __slots__ = ("kind", "agent_id", "at", "seq")
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    kind: str
    agent_id: str
    at: _timestamp_pb2.Timestamp
    seq: int
    def __init__(self, kind: _Optional[str] = ..., agent_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seq: _Optional[int] = ...) -> None: ...

class TaskState(_message.Message):
    __slots__ = ("task_id", "workflow_id", "stage", "status", "owner", "epoch", "pending_handoff", "output_location", "context_version", "last_event_seq", "last_event_at", "last_heartbeat_at", "last_progress_at", "created_at", "updated_at", "violations", "title", "assignee", "start_within", "deadline_within", "heartbeat_within", "progress_within", "lease", "owned_since", "waiting_since", "waiting_since_seq", "blocked_at", "blocked_reason", "last_event", "created_seq", "outcome", "owned_since_seq", "blocked_seq", "alive_since", "alive_since_seq", "progress_since", "progress_since_seq", "artifacts")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PENDING_HANDOFF_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_PROGRESS_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_FIELD_NUMBER: _ClassVar[int]
    START_WITHIN_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_WITHIN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_WITHIN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_WITHIN_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    OWNED_SINCE_FIELD_NUMBER: _ClassVar[int]
    WAITING_SINCE_FIELD_NUMBER: _ClassVar[int]
    WAITING_SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_AT_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OWNED_SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ALIVE_SINCE_FIELD_NUMBER: _ClassVar[int]
    ALIVE_SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_SINCE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    workflow_id: str
    stage: str
    status: TaskStatus
    owner: str
    epoch: int
    pending_handoff: PendingHandoff
    output_location: str
    context_version: int
    last_event_seq: int
    last_event_at: _timestamp_pb2.Timestamp
    last_heartbeat_at: _timestamp_pb2.Timestamp
    last_progress_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    violations: int
    title: str
    assignee: str
    start_within: _duration_pb2.Duration
    deadline_within: _duration_pb2.Duration
    heartbeat_within: _duration_pb2.Duration
    progress_within: _duration_pb2.Duration
    lease: _duration_pb2.Duration
    owned_since: _timestamp_pb2.Timestamp
    waiting_since: _timestamp_pb2.Timestamp
    waiting_since_seq: int
    blocked_at: _timestamp_pb2.Timestamp
    blocked_reason: str
    last_event: EventRef
    created_seq: int
    outcome: str
    owned_since_seq: int
    blocked_seq: int
    alive_since: _timestamp_pb2.Timestamp
    alive_since_seq: int
    progress_since: _timestamp_pb2.Timestamp
    progress_since_seq: int
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., stage: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., owner: _Optional[str] = ..., epoch: _Optional[int] = ..., pending_handoff: _Optional[_Union[PendingHandoff, _Mapping]] = ..., output_location: _Optional[str] = ..., context_version: _Optional[int] = ..., last_event_seq: _Optional[int] = ..., last_event_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_progress_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., violations: _Optional[int] = ..., title: _Optional[str] = ..., assignee: _Optional[str] = ..., start_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., deadline_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeat_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., progress_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., owned_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waiting_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waiting_since_seq: _Optional[int] = ..., blocked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., blocked_reason: _Optional[str] = ..., last_event: _Optional[_Union[EventRef, _Mapping]] = ..., created_seq: _Optional[int] = ..., outcome: _Optional[str] = ..., owned_since_seq: _Optional[int] = ..., blocked_seq: _Optional[int] = ..., alive_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alive_since_seq: _Optional[int] = ..., progress_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress_since_seq: _Optional[int] = ..., artifacts: _Optional[_Iterable[str]] = ...) -> None: ...
