import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextEntry(_message.Message):
    __slots__ = ("workflow_id", "author", "summary", "body", "supersedes", "recorded_at")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    author: str
    summary: str
    body: str
    supersedes: int
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, workflow_id: _Optional[str] = ..., author: _Optional[str] = ..., summary: _Optional[str] = ..., body: _Optional[str] = ..., supersedes: _Optional[int] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
