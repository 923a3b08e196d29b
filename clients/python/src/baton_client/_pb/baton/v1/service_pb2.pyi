import datetime

from baton_client._pb.baton.v1 import alert_pb2 as _alert_pb2
from baton_client._pb.baton.v1 import task_pb2 as _task_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UnknownTaskPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_TASK_POLICY_UNSPECIFIED: _ClassVar[UnknownTaskPolicy]
    UNKNOWN_TASK_POLICY_ALERT: _ClassVar[UnknownTaskPolicy]
    UNKNOWN_TASK_POLICY_CREATE: _ClassVar[UnknownTaskPolicy]
UNKNOWN_TASK_POLICY_UNSPECIFIED: UnknownTaskPolicy
UNKNOWN_TASK_POLICY_ALERT: UnknownTaskPolicy
UNKNOWN_TASK_POLICY_CREATE: UnknownTaskPolicy

class ServiceStatus(_message.Message):
    __slots__ = ("service", "instance", "version", "started_at", "reported_at", "interval_ms", "applied_seq", "pending", "http_addr", "role", "term")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDR_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    version: str
    started_at: _timestamp_pb2.Timestamp
    reported_at: _timestamp_pb2.Timestamp
    interval_ms: int
    applied_seq: int
    pending: int
    http_addr: str
    role: str
    term: int
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval_ms: _Optional[int] = ..., applied_seq: _Optional[int] = ..., pending: _Optional[int] = ..., http_addr: _Optional[str] = ..., role: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class Leadership(_message.Message):
    __slots__ = ("service", "instance", "term", "acquired_at", "renewed_at", "ttl_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_FIELD_NUMBER: _ClassVar[int]
    RENEWED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    term: int
    acquired_at: _timestamp_pb2.Timestamp
    renewed_at: _timestamp_pb2.Timestamp
    ttl_ms: int
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., term: _Optional[int] = ..., acquired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., renewed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class FoldPolicy(_message.Message):
    __slots__ = ("operators", "unknown_task", "max_event_bytes")
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_TASK_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    operators: _containers.RepeatedScalarFieldContainer[str]
    unknown_task: UnknownTaskPolicy
    max_event_bytes: int
    def __init__(self, operators: _Optional[_Iterable[str]] = ..., unknown_task: _Optional[_Union[UnknownTaskPolicy, str]] = ..., max_event_bytes: _Optional[int] = ...) -> None: ...

class Silence(_message.Message):
    __slots__ = ("silence_id", "task_id", "kind", "agent_id", "until", "created_by", "reason", "created_at")
    SILENCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    silence_id: str
    task_id: str
    kind: _alert_pb2.AlertKind
    agent_id: str
    until: _timestamp_pb2.Timestamp
    created_by: str
    reason: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, silence_id: _Optional[str] = ..., task_id: _Optional[str] = ..., kind: _Optional[_Union[_alert_pb2.AlertKind, str]] = ..., agent_id: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task", "error")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.TaskState
    error: str
    def __init__(self, task: _Optional[_Union[_task_pb2.TaskState, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("status", "owner", "workflow_id", "stage", "limit", "after_task_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    status: _task_pb2.TaskStatus
    owner: str
    workflow_id: str
    stage: str
    limit: int
    after_task_id: str
    def __init__(self, status: _Optional[_Union[_task_pb2.TaskStatus, str]] = ..., owner: _Optional[str] = ..., workflow_id: _Optional[str] = ..., stage: _Optional[str] = ..., limit: _Optional[int] = ..., after_task_id: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "truncated", "total", "error")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.TaskState]
    truncated: bool
    total: int
    error: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[_task_pb2.TaskState, _Mapping]]] = ..., truncated: _Optional[bool] = ..., total: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class TimelineRequest(_message.Message):
    __slots__ = ("task_id", "limit")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    limit: int
    def __init__(self, task_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class TimelineEntry(_message.Message):
    __slots__ = ("seq", "stored_at", "agent_id", "kind", "event_epoch", "owner", "epoch", "status", "violation", "detail", "event_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    stored_at: _timestamp_pb2.Timestamp
    agent_id: str
    kind: str
    event_epoch: int
    owner: str
    epoch: int
    status: _task_pb2.TaskStatus
    violation: str
    detail: str
    event_id: str
    def __init__(self, seq: _Optional[int] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_id: _Optional[str] = ..., kind: _Optional[str] = ..., event_epoch: _Optional[int] = ..., owner: _Optional[str] = ..., epoch: _Optional[int] = ..., status: _Optional[_Union[_task_pb2.TaskStatus, str]] = ..., violation: _Optional[str] = ..., detail: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class TimelineResponse(_message.Message):
    __slots__ = ("entries", "error", "truncated")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[TimelineEntry]
    error: str
    truncated: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[TimelineEntry, _Mapping]]] = ..., error: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...
