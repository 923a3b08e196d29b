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

class LeaseMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_MODE_UNSPECIFIED: _ClassVar[LeaseMode]
    LEASE_MODE_EXCLUSIVE: _ClassVar[LeaseMode]
    LEASE_MODE_SHARED: _ClassVar[LeaseMode]
LEASE_MODE_UNSPECIFIED: LeaseMode
LEASE_MODE_EXCLUSIVE: LeaseMode
LEASE_MODE_SHARED: LeaseMode

class LeaseEvent(_message.Message):
    __slots__ = ("event_id", "agent_id", "workflow_id", "artifact", "token", "occurred_at", "acquired", "renewed", "released", "handed_over", "revoked", "swept", "waiting", "stale_write")
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
    WAITING_FIELD_NUMBER: _ClassVar[int]
    STALE_WRITE_FIELD_NUMBER: _ClassVar[int]
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
    waiting: LeaseWaiting
    stale_write: LeaseStaleWrite
    def __init__(self, event_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., artifact: _Optional[str] = ..., token: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acquired: _Optional[_Union[LeaseAcquired, _Mapping]] = ..., renewed: _Optional[_Union[LeaseRenewed, _Mapping]] = ..., released: _Optional[_Union[LeaseReleased, _Mapping]] = ..., handed_over: _Optional[_Union[LeaseHandedOver, _Mapping]] = ..., revoked: _Optional[_Union[LeaseRevoked, _Mapping]] = ..., swept: _Optional[_Union[LeaseSwept, _Mapping]] = ..., waiting: _Optional[_Union[LeaseWaiting, _Mapping]] = ..., stale_write: _Optional[_Union[LeaseStaleWrite, _Mapping]] = ...) -> None: ...

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

class LeaseWaiting(_message.Message):
    __slots__ = ("mode", "ttl")
    MODE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    mode: LeaseMode
    ttl: _duration_pb2.Duration
    def __init__(self, mode: _Optional[_Union[LeaseMode, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LeaseStaleWrite(_message.Message):
    __slots__ = ("writer", "token", "highest_seen")
    WRITER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_SEEN_FIELD_NUMBER: _ClassVar[int]
    writer: str
    token: int
    highest_seen: int
    def __init__(self, writer: _Optional[str] = ..., token: _Optional[int] = ..., highest_seen: _Optional[int] = ...) -> None: ...

class LeaseRevoked(_message.Message):
    __slots__ = ("holder", "reason")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    holder: str
    reason: str
    def __init__(self, holder: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class LeaseRoot(_message.Message):
    __slots__ = ("workflow_id", "root", "last_seq", "last_token", "holds", "waits")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    WAITS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    root: str
    last_seq: int
    last_token: int
    holds: _containers.RepeatedCompositeFieldContainer[LeaseHold]
    waits: _containers.RepeatedCompositeFieldContainer[LeaseWait]
    def __init__(self, workflow_id: _Optional[str] = ..., root: _Optional[str] = ..., last_seq: _Optional[int] = ..., last_token: _Optional[int] = ..., holds: _Optional[_Iterable[_Union[LeaseHold, _Mapping]]] = ..., waits: _Optional[_Iterable[_Union[LeaseWait, _Mapping]]] = ...) -> None: ...

class LeaseHold(_message.Message):
    __slots__ = ("artifact", "agent_id", "mode", "token", "since", "renewed_at", "ttl", "task_id")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    RENEWED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    agent_id: str
    mode: LeaseMode
    token: int
    since: _timestamp_pb2.Timestamp
    renewed_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    task_id: str
    def __init__(self, artifact: _Optional[str] = ..., agent_id: _Optional[str] = ..., mode: _Optional[_Union[LeaseMode, str]] = ..., token: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., renewed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., task_id: _Optional[str] = ...) -> None: ...

class LeaseWait(_message.Message):
    __slots__ = ("artifact", "agent_id", "mode", "since", "renewed_at", "ttl")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    RENEWED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    agent_id: str
    mode: LeaseMode
    since: _timestamp_pb2.Timestamp
    renewed_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, artifact: _Optional[str] = ..., agent_id: _Optional[str] = ..., mode: _Optional[_Union[LeaseMode, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., renewed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
