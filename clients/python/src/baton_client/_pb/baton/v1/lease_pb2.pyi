import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_MODE_UNSPECIFIED: _ClassVar[LeaseMode]
    LEASE_MODE_EXCLUSIVE: _ClassVar[LeaseMode]
    LEASE_MODE_SHARED: _ClassVar[LeaseMode]
LEASE_MODE_UNSPECIFIED: LeaseMode
LEASE_MODE_EXCLUSIVE: LeaseMode
LEASE_MODE_SHARED: LeaseMode

class LeaseEvent(_message.Message):
    __slots__ = ("event_id", "agent_id", "workflow_id", "artifact", "token", "occurred_at", "acquired", "renewed", "released", "handed_over", "revoked", "swept")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    HANDED_OVER_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    SWEPT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    agent_id: str
    workflow_id: str
    artifact: str
    token: int
    occurred_at: _timestamp_pb2.Timestamp
    acquired: LeaseAcquired
    renewed: LeaseRenewed
    released: LeaseReleased
    handed_over: LeaseHandedOver
    revoked: LeaseRevoked
    swept: LeaseSwept
    def __init__(self, event_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., artifact: _Optional[str] = ..., token: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acquired: _Optional[_Union[LeaseAcquired, _Mapping]] = ..., renewed: _Optional[_Union[LeaseRenewed, _Mapping]] = ..., released: _Optional[_Union[LeaseReleased, _Mapping]] = ..., handed_over: _Optional[_Union[LeaseHandedOver, _Mapping]] = ..., revoked: _Optional[_Union[LeaseRevoked, _Mapping]] = ..., swept: _Optional[_Union[LeaseSwept, _Mapping]] = ...) -> None: ...

class LeaseAcquired(_message.Message):
    __slots__ = ("mode", "ttl", "task_id")
    MODE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    mode: LeaseMode
    ttl: _duration_pb2.Duration
    task_id: str
    def __init__(self, mode: _Optional[_Union[LeaseMode, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., task_id: _Optional[str] = ...) -> None: ...

class LeaseRenewed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseReleased(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class LeaseHandedOver(_message.Message):
    __slots__ = ("to_agent", "ttl")
    TO_AGENT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    to_agent: str
    ttl: _duration_pb2.Duration
    def __init__(self, to_agent: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LeaseSwept(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseRevoked(_message.Message):
    __slots__ = ("holder", "reason")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    holder: str
    reason: str
    def __init__(self, holder: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
