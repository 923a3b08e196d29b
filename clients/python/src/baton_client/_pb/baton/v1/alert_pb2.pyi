import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from baton_client._pb.baton.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlertKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_KIND_UNSPECIFIED: _ClassVar[AlertKind]
    ALERT_KIND_HEARTBEAT_MISSED: _ClassVar[AlertKind]
    ALERT_KIND_HANDOFF_NOT_ACCEPTED: _ClassVar[AlertKind]
    ALERT_KIND_NOT_STARTED: _ClassVar[AlertKind]
    ALERT_KIND_DEADLINE_EXCEEDED: _ClassVar[AlertKind]
    ALERT_KIND_NO_PROGRESS: _ClassVar[AlertKind]
    ALERT_KIND_BLOCKED_TOO_LONG: _ClassVar[AlertKind]
    ALERT_KIND_OWNERSHIP_VIOLATION: _ClassVar[AlertKind]
    ALERT_KIND_STALE_CONTEXT: _ClassVar[AlertKind]
    ALERT_KIND_MALFORMED_EVENT: _ClassVar[AlertKind]
    ALERT_KIND_UNKNOWN_TASK: _ClassVar[AlertKind]
    ALERT_KIND_ORCHESTRATOR_DOWN: _ClassVar[AlertKind]
    ALERT_KIND_CONSUMER_STALLED: _ClassVar[AlertKind]
    ALERT_KIND_DETECTOR_DOWN: _ClassVar[AlertKind]
    ALERT_KIND_LEASE_EXPIRED: _ClassVar[AlertKind]
    ALERT_KIND_LEASE_HELD_TOO_LONG: _ClassVar[AlertKind]
    ALERT_KIND_LEASE_STALE_WRITE: _ClassVar[AlertKind]

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_FIRING: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]
ALERT_KIND_UNSPECIFIED: AlertKind
ALERT_KIND_HEARTBEAT_MISSED: AlertKind
ALERT_KIND_HANDOFF_NOT_ACCEPTED: AlertKind
ALERT_KIND_NOT_STARTED: AlertKind
ALERT_KIND_DEADLINE_EXCEEDED: AlertKind
ALERT_KIND_NO_PROGRESS: AlertKind
ALERT_KIND_BLOCKED_TOO_LONG: AlertKind
ALERT_KIND_OWNERSHIP_VIOLATION: AlertKind
ALERT_KIND_STALE_CONTEXT: AlertKind
ALERT_KIND_MALFORMED_EVENT: AlertKind
ALERT_KIND_UNKNOWN_TASK: AlertKind
ALERT_KIND_ORCHESTRATOR_DOWN: AlertKind
ALERT_KIND_CONSUMER_STALLED: AlertKind
ALERT_KIND_DETECTOR_DOWN: AlertKind
ALERT_KIND_LEASE_EXPIRED: AlertKind
ALERT_KIND_LEASE_HELD_TOO_LONG: AlertKind
ALERT_KIND_LEASE_STALE_WRITE: AlertKind
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_FIRING: AlertState
ALERT_STATE_RESOLVED: AlertState
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity

class LastEvent(_message.Message):
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

class Alert(_message.Message):
    __slots__ = ("alert_id", "kind", "state", "severity", "task_id", "workflow_id", "stage", "agents", "expected", "due_at", "observed_at", "last_event", "summary", "resolves", "epoch", "late_by", "notification", "task_status", "missed_versions", "event_id", "event_seq", "detail")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RESOLVES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LATE_BY_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    TASK_STATUS_FIELD_NUMBER: _ClassVar[int]
    MISSED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQ_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    kind: AlertKind
    state: AlertState
    severity: Severity
    task_id: str
    workflow_id: str
    stage: str
    agents: _containers.RepeatedScalarFieldContainer[str]
    expected: str
    due_at: _timestamp_pb2.Timestamp
    observed_at: _timestamp_pb2.Timestamp
    last_event: LastEvent
    summary: str
    resolves: str
    epoch: int
    late_by: _duration_pb2.Duration
    notification: int
    task_status: _task_pb2.TaskStatus
    missed_versions: _containers.RepeatedScalarFieldContainer[int]
    event_id: str
    event_seq: int
    detail: str
    def __init__(self, alert_id: _Optional[str] = ..., kind: _Optional[_Union[AlertKind, str]] = ..., state: _Optional[_Union[AlertState, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., task_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., stage: _Optional[str] = ..., agents: _Optional[_Iterable[str]] = ..., expected: _Optional[str] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_event: _Optional[_Union[LastEvent, _Mapping]] = ..., summary: _Optional[str] = ..., resolves: _Optional[str] = ..., epoch: _Optional[int] = ..., late_by: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., notification: _Optional[int] = ..., task_status: _Optional[_Union[_task_pb2.TaskStatus, str]] = ..., missed_versions: _Optional[_Iterable[int]] = ..., event_id: _Optional[str] = ..., event_seq: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...
