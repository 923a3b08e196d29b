"""Leases on shared artifacts: names, the one read path and the lease fold.

A port of ``baton_core::lease`` and ``baton_core::wire::lease``, with the same
rules, so a Python agent and a Rust agent folding the same stream agree on
who holds what:

- **names** (:class:`ArtifactName`): ``/``-separated segments; one leading
  and one trailing ``/`` are dropped; empty, ``.`` and ``..`` segments,
  control characters, more than 256 bytes or 16 segments are refused. A name
  covers every name under it: ``drafts`` overlaps ``drafts/post.md``.
- **subjects**: ``baton.art.<scope>.<agent>.<path tokens>.~``; each segment
  becomes one token, bytes ``[A-Za-z0-9_-]`` stay and every other byte of its
  UTF-8 becomes ``~XX`` (upper-case hex), and ``~`` ends the path
  (:meth:`ArtifactName.subject_tokens`). The scope is a workflow id or ``_``.
- **the read path** (:func:`validate_lease_event`): a payload over 8192
  bytes, undecodable, with a field out of its limits, or whose scope, agent
  or artifact do not match its subject is refused by every reader.
- **the fold** (:func:`apply` over a :class:`LeaseBook`): an acquisition is
  granted unless another agent holds a live lease on an overlapping name
  (two shared leases never conflict); holds of the event's root that expired
  (``renewed_at + ttl`` before the event's stored time, i.e. broker time)
  are dropped first; every grant takes the next fencing token of its root
  (scope + first segment); taking again what one holds replaces the hold;
  renew, release and hand-over need the sender's hold with its exact token;
  only operators revoke (no operators = anyone); a sweep only drops expired
  holds; an event whose sequence is not newer than the book's last is a
  duplicate.
- **waits** (:class:`Wait`, :meth:`LeaseBook.waiters`,
  :meth:`LeaseBook.blocked_by`): an agent refused an acquisition records
  that it waits, from the event's stored time, for a ttl; waiting again
  keeps its start, a ttl of zero or a grant to it (acquisition, hand-over)
  ends it, and a lapsed wait is dropped with the root's expired holds. A
  wait changes no hold and no token, and is never refused; it lets
  operators see who a hold keeps out, and the stall detector report a
  holder that keeps others out too long (``LEASE_HELD_TOO_LONG``).
- **stale-write reports** (:class:`StaleWrite`): a store tells that it
  refused a write for a stale token; it changes no hold, and the stall
  detector raises ``LEASE_STALE_WRITE``.
- **the fence** (:class:`Fence`): a store refuses a write whose token is
  lower than the highest it saw for that name or any name above it.
- **materialised roots** (:class:`RootState`, :meth:`LeaseBook.root_state`,
  :meth:`LeaseBook.restore_root`): the orchestrator stores each root's part
  of the fold in KV ``baton-leases`` (``baton.v1.LeaseRoot``, stamped with
  the sequence of the root's last event it folded); a reader restores it
  and folds only the root's later events, which gives the same book.

Instants and durations are integers in nanoseconds (broker time since the
UNIX epoch), as in Rust; :func:`utc` turns an instant into a ``datetime``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Union

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.message import DecodeError

from . import pb, subjects
from .errors import InvalidArtifactName, InvalidId, StaleToken
from .ids import agent_id, task_id, workflow_id
from .state import MAX_EVENT_ID_LEN, WireError

__all__ = [
    "MAX_NAME_LEN",
    "MAX_SEGMENTS",
    "MAX_LEASE_BYTES",
    "MAX_REASON",
    "GLOBAL_SCOPE_TOKEN",
    "PATH_END_TOKEN",
    "ArtifactName",
    "Artifact",
    "Root",
    "LeaseMode",
    "Hold",
    "Waiter",
    "Acquire",
    "Renew",
    "Release",
    "HandOver",
    "Revoke",
    "Sweep",
    "Wait",
    "StaleWrite",
    "LeaseBody",
    "LeaseEvent",
    "validate_lease_event",
    "Disposition",
    "Held",
    "NotHolder",
    "WrongToken",
    "NotOperator",
    "SelfHandOver",
    "Refusal",
    "Granted",
    "Renewed",
    "Released",
    "HandedOver",
    "Revoked",
    "Expired",
    "StaleWriteReported",
    "Effect",
    "LeaseOutcome",
    "LeaseBook",
    "RootState",
    "apply",
    "HoldView",
    "WaiterView",
    "holds_view",
    "Fence",
    "utc",
    "rfc3339",
    "parse_broker_time",
]

#: Longest accepted artifact name, in bytes.
MAX_NAME_LEN = 256
#: Most path segments in an artifact name.
MAX_SEGMENTS = 16
#: Largest lease event payload any reader accepts.
MAX_LEASE_BYTES = 8 * 1024
#: Every ``reason`` (released, revoked), in bytes.
MAX_REASON = 2048
#: Subject token of the global scope (no workflow may be called this).
GLOBAL_SCOPE_TOKEN = "_"
#: Subject token that ends an artifact's path, so that a filter on a root
#: (``<root>.>``) also matches the root itself.
PATH_END_TOKEN = "~"

#: The largest instant Rust's ``Time`` holds (nanoseconds).
_TIME_MAX = 2**64 - 2
_U64_MAX = 2**64 - 1
_NANOS = 1_000_000_000
_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_HEX = "0123456789ABCDEF"
_HEX_BYTES = frozenset(_HEX.encode())


# -- time ---------------------------------------------------------------------


def utc(nanos: int) -> datetime:
    """An instant (nanoseconds since the UNIX epoch) as an aware UTC datetime
    (to the microsecond)."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=nanos // 1000)


def rfc3339(nanos: int) -> str:
    """An instant as Rust's ``Time`` shows it: ``2026-01-02T03:04:05.678Z``."""
    return utc(nanos).strftime("%Y-%m-%dT%H:%M:%S.") + f"{(nanos // 1_000_000) % 1000:03d}Z"


_BROKER_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_broker_time(text: str) -> int:
    """The broker's stored time of a message (``Nats-Time-Stamp``, RFC 3339
    with up to nanoseconds) in nanoseconds since the UNIX epoch, exactly."""
    m = _BROKER_TIME.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    base = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    offset = m.group(8)
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        base -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    seconds = (base - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(seconds=1)
    fraction = int((m.group(7) or "").ljust(9, "0"))
    return seconds * _NANOS + fraction


def _time(field: str, t: Timestamp) -> int:
    """A wire timestamp as nanoseconds since the UNIX epoch (Rust's
    ``time_from_wire``: nanos in range, not before 1970, below ``u64::MAX``)."""
    if not 0 <= t.nanos < _NANOS:
        raise WireError(field, f"nanos {t.nanos} out of range")
    nanos = t.seconds * _NANOS + t.nanos
    if t.seconds < 0 or nanos >= _U64_MAX:
        raise WireError(field, "time before 1970")
    return nanos


def _timestamp(nanos: int) -> Timestamp:
    return Timestamp(seconds=nanos // _NANOS, nanos=nanos % _NANOS)


def _ttl_nanos(d: Duration) -> int:
    return min(d.seconds * _NANOS + d.nanos, _U64_MAX)


def _duration(nanos: int) -> Duration:
    return Duration(seconds=nanos // _NANOS, nanos=nanos % _NANOS)


# -- names ------------------------------------------------------------------


def _is_control(c: str) -> bool:
    """Unicode general category Cc (Rust's ``char::is_control``)."""
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F


def _normalise(value: str) -> str:
    if not isinstance(value, str):
        raise InvalidArtifactName(repr(value), f"expected a string, got {type(value).__name__}")

    def fail(reason: str) -> InvalidArtifactName:
        return InvalidArtifactName(value, reason)

    trimmed = value[1:] if value.startswith("/") else value
    trimmed = trimmed[:-1] if trimmed.endswith("/") else trimmed
    if not trimmed:
        raise fail("it is empty")
    try:
        size = len(trimmed.encode("utf-8"))
    except UnicodeEncodeError:
        raise fail("it is not valid UTF-8") from None
    if size > MAX_NAME_LEN:
        raise fail(f"it is longer than {MAX_NAME_LEN} bytes")
    count = 0
    for segment in trimmed.split("/"):
        count += 1
        if segment == "":
            raise fail("it has an empty segment (`//`)")
        if segment in (".", ".."):
            raise fail("`.` and `..` segments are not allowed")
        if any(_is_control(c) for c in segment):
            raise fail("control characters are not allowed")
    if count > MAX_SEGMENTS:
        raise fail(f"it has more than {MAX_SEGMENTS} segments")
    return trimmed


def _escape(segment: str) -> str:
    out = []
    for b in segment.encode("utf-8"):
        if b in _KEEP:
            out.append(chr(b))
        else:
            out.append("~" + _HEX[b >> 4] + _HEX[b & 0xF])
    return "".join(out)


def _unescape(token: str) -> str | None:
    try:
        raw = token.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if not raw:
        return None
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x7E:  # "~"
            hex_ = raw[i + 1 : i + 3]
            # Upper-case hex only: one encoding per byte.
            if len(hex_) != 2 or not all(h in _HEX_BYTES for h in hex_):
                return None
            byte = int(hex_, 16)
            # A byte that would have stayed as it is was not escaped, and
            # "/" separates segments: an escaped one would give "a/b" a
            # second subject, outside the root "a".
            if byte in _KEEP or byte == 0x2F:
                return None
            out.append(byte)
            i += 3
        elif b in _KEEP:
            out.append(b)
            i += 1
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True, order=True, init=False)
class ArtifactName:
    """A normalised artifact name (``baton_core::lease::ArtifactName``):
    ``ArtifactName("/drafts/")`` is ``drafts``. Raises
    :class:`~baton_client.errors.InvalidArtifactName` for a name Rust refuses."""

    value: str

    def __init__(self, value: str | ArtifactName) -> None:
        text = value.value if isinstance(value, ArtifactName) else _normalise(value)
        object.__setattr__(self, "value", text)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"ArtifactName({self.value!r})"

    @property
    def segments(self) -> list[str]:
        """The path segments, first to last."""
        return self.value.split("/")

    @property
    def root(self) -> str:
        """The first segment: every name this one can conflict with starts with it."""
        return self.value.split("/", 1)[0]

    def overlaps(self, other: ArtifactName) -> bool:
        """Whether one name is the other or lies under it (they conflict
        unless both leases are shared)."""
        short, long = (
            (self.value, other.value)
            if len(self.value) <= len(other.value)
            else (other.value, self.value)
        )
        return long == short or (long.startswith(short) and long[len(short)] == "/")

    def subject_tokens(self) -> str:
        """The subject tokens of the path: each segment escaped, joined by
        ``.``, then ``~``: ``drafts/post.md`` -> ``drafts.post~2Emd.~``."""
        return ".".join(_escape(s) for s in self.segments) + "." + PATH_END_TOKEN

    @classmethod
    def from_subject_tokens(cls, tokens: Iterable[str]) -> ArtifactName:
        """The name back from its subject tokens (without the end token);
        refuses anything that is not a name's one encoding (``a`` spelt
        ``~61``, lower-case hex, a lone ``~``)."""
        parts = []
        for token in tokens:
            segment = _unescape(token)
            if segment is None:
                raise InvalidArtifactName(token, "not an escaped path segment")
            parts.append(segment)
        path = "/".join(parts)
        name = cls(path)
        # One encoding per name: not `/a` for `a`. (As in Rust, an escaped
        # `/` inside a token, `a~2Fb`, decodes to a name of more segments.)
        if name.value != path:
            raise InvalidArtifactName(path, "not in normal form")
        return name


@dataclass(frozen=True)
class Root:
    """A root subtree: the unit of compare-and-set and of fencing tokens."""

    #: The workflow of the scope; ``None`` = the global scope.
    workflow: str | None
    #: The first path segment, unescaped.
    segment: str


@dataclass(frozen=True)
class Artifact:
    """An artifact: a name in a scope (a workflow, or everywhere)."""

    name: ArtifactName
    #: The workflow of the scope; ``None`` = the global scope.
    workflow: str | None = None

    @classmethod
    def of(cls, name: str | ArtifactName, workflow: str | None = None) -> Artifact:
        """Validates the name and the workflow id."""
        return cls(ArtifactName(name), None if workflow is None else workflow_id(workflow))

    @property
    def scope_token(self) -> str:
        """The subject token of the scope: the workflow id or ``_``."""
        return GLOBAL_SCOPE_TOKEN if self.workflow is None else self.workflow

    @property
    def root(self) -> Root:
        """The root subtree this artifact lies in: its scope and first segment."""
        return Root(self.workflow, self.name.root)

    def overlaps(self, other: Artifact) -> bool:
        """Whether two artifacts can conflict (same scope, overlapping names)."""
        return self.workflow == other.workflow and self.name.overlaps(other.name)

    def sort_key(self) -> tuple[bool, str, str]:
        """Rust's order: the global scope first, then by workflow, then by name."""
        return (self.workflow is not None, self.workflow or "", self.name.value)

    def __str__(self) -> str:
        return self.name.value if self.workflow is None else f"{self.workflow}:{self.name.value}"


class LeaseMode(str, enum.Enum):
    """One writer (``exclusive``), or many readers (``shared``)."""

    EXCLUSIVE = "exclusive"
    SHARED = "shared"

    def __str__(self) -> str:
        return self.value

    @property
    def wire(self) -> pb.LeaseMode:
        return pb.LEASE_MODE_EXCLUSIVE if self is LeaseMode.EXCLUSIVE else pb.LEASE_MODE_SHARED

    def compatible(self, other: LeaseMode) -> bool:
        """Only two shared leases may overlap."""
        return self is LeaseMode.SHARED and other is LeaseMode.SHARED


# -- events -----------------------------------------------------------------


@dataclass(frozen=True)
class Acquire:
    """Take the lease (or take it again, with a new token, if already held)."""

    mode: LeaseMode
    #: How long the lease lives without a renewal, in nanoseconds (> 0).
    ttl: int
    #: The task the lease is taken for, if any.
    task: str | None = None


@dataclass(frozen=True)
class Renew:
    """Still holding: the lease runs for another ttl from this event's stored time."""


@dataclass(frozen=True)
class Release:
    """Let go."""

    reason: str = ""


@dataclass(frozen=True)
class HandOver:
    """Give the lease to ``to``, who then holds it for ``ttl`` (nanoseconds)."""

    to: str
    ttl: int


@dataclass(frozen=True)
class Revoke:
    """An operator takes the lease away from ``holder``."""

    holder: str
    reason: str = ""


@dataclass(frozen=True)
class Sweep:
    """Time has passed: the root's expired holds are dropped at this event's
    stored time (anyone may send it; it never removes a live hold). The stall
    detector sends one when a hold is past its expiry, so every reader sees
    the lease free without waiting for the next act."""


@dataclass(frozen=True)
class Wait:
    """The sender wants the artifact in ``mode`` and was refused: it waits,
    from this event's stored time, for ``ttl`` nanoseconds (0: it no longer
    waits). A later wait of the sender on the artifact replaces it, keeping
    its start; a grant to it ends it. It changes no hold and no token."""

    mode: LeaseMode
    #: Nanoseconds; 0 ends the wait.
    ttl: int


@dataclass(frozen=True)
class StaleWrite:
    """A store (the sender) refused a write to the artifact by ``writer``
    whose ``token`` is below the ``highest_seen`` for it (the fencing rule).
    It changes no hold; the stall detector reports it (``LEASE_STALE_WRITE``)."""

    #: The agent whose write was refused; ``None`` when the store cannot tell.
    writer: str | None
    #: The token the write carried.
    token: int
    #: The highest token the store had seen for the artifact.
    highest_seen: int


LeaseBody = Union[Acquire, Renew, Release, HandOver, Revoke, Sweep, Wait, StaleWrite]


def _id(check: Callable[[str], str], field: str, value: str) -> str:
    try:
        return check(value)
    except InvalidId as e:
        raise WireError(field, str(e)) from None


def _bounded(field: str, text: str, limit: int) -> str:
    size = len(text.encode("utf-8"))
    if size > limit:
        raise WireError(field, f"is {size} bytes, over its limit of {limit}")
    return text


def _opt_ttl(
    field: str,
    msg: pb.LeaseAcquired | pb.LeaseHandedOver | pb.LeaseWaiting | pb.LeaseHold | pb.LeaseWait,
) -> int:
    """The message's ttl in nanoseconds; 0 when absent or zero (Rust's
    ``duration_from_wire``: ``None``)."""
    if not msg.HasField("ttl"):
        return 0
    d = msg.ttl
    if d.seconds < 0 or d.nanos < 0 or d.nanos >= _NANOS:
        raise WireError(field, "negative or malformed duration")
    return _ttl_nanos(d)


def _ttl(field: str, msg: pb.LeaseAcquired | pb.LeaseHandedOver) -> int:
    nanos = _opt_ttl(field, msg)
    if nanos == 0:
        raise WireError(field, "required, and more than zero")
    return nanos


def _mode(value: int) -> LeaseMode:
    if value == pb.LEASE_MODE_EXCLUSIVE:
        return LeaseMode.EXCLUSIVE
    if value == pb.LEASE_MODE_SHARED:
        return LeaseMode.SHARED
    raise WireError("mode", "must be EXCLUSIVE or SHARED")


@dataclass(frozen=True)
class LeaseEvent:
    """One lease event, as published on ``baton.art.<scope>.<agent>.<path>.~``."""

    event_id: str
    agent: str
    artifact: Artifact
    #: The token the sender holds (0 on an acquisition).
    token: int
    #: The sender's clock (nanoseconds); informational only.
    occurred_at: int | None
    body: LeaseBody

    @property
    def subject(self) -> str:
        """Where the event is published (identity is the subject)."""
        return subjects.lease(self.artifact, self.agent)

    @classmethod
    def from_wire(cls, w: pb.LeaseEvent) -> LeaseEvent:
        """Validates a decoded payload as every reader does (``TryFrom``),
        raising :class:`~baton_client.state.WireError` naming the field."""
        if not w.event_id or len(w.event_id.encode("utf-8")) > MAX_EVENT_ID_LEN:
            raise WireError("event_id", f"required, at most {MAX_EVENT_ID_LEN} bytes")
        workflow = _id(workflow_id, "workflow_id", w.workflow_id) if w.workflow_id else None
        try:
            name = ArtifactName(w.artifact)
        except InvalidArtifactName as e:
            raise WireError("artifact", str(e)) from None
        if name.value != w.artifact:
            raise WireError("artifact", "not in normal form")
        kind = w.WhichOneof("body")
        body: LeaseBody
        if kind == "acquired":
            a = w.acquired
            mode = _mode(a.mode)
            ttl = _ttl("acquired.ttl", a)
            task = _id(task_id, "acquired.task_id", a.task_id) if a.task_id else None
            body = Acquire(mode, ttl, task)
        elif kind == "renewed":
            body = Renew()
        elif kind == "released":
            body = Release(_bounded("released.reason", w.released.reason, MAX_REASON))
        elif kind == "handed_over":
            h = w.handed_over
            to = _id(agent_id, "handed_over.to_agent", h.to_agent)
            body = HandOver(to, _ttl("handed_over.ttl", h))
        elif kind == "revoked":
            r = w.revoked
            holder = _id(agent_id, "revoked.holder", r.holder)
            body = Revoke(holder, _bounded("revoked.reason", r.reason, MAX_REASON))
        elif kind == "swept":
            body = Sweep()
        elif kind == "waiting":
            body = Wait(_mode(w.waiting.mode), _opt_ttl("waiting.ttl", w.waiting))
        elif kind == "stale_write":
            s = w.stale_write
            writer = _id(agent_id, "stale_write.writer", s.writer) if s.writer else None
            body = StaleWrite(writer, s.token, s.highest_seen)
        else:
            raise WireError("body", "required")
        agent = _id(agent_id, "agent_id", w.agent_id)
        occurred_at = _time("occurred_at", w.occurred_at) if w.HasField("occurred_at") else None
        return cls(w.event_id, agent, Artifact(name, workflow), w.token, occurred_at, body)

    def to_wire(self) -> pb.LeaseEvent:
        w = pb.LeaseEvent(
            event_id=self.event_id,
            agent_id=self.agent,
            workflow_id=self.artifact.workflow or "",
            artifact=self.artifact.name.value,
            token=self.token,
        )
        if self.occurred_at is not None:
            w.occurred_at.seconds = self.occurred_at // _NANOS
            w.occurred_at.nanos = self.occurred_at % _NANOS
        b = self.body
        if isinstance(b, Acquire):
            w.acquired.CopyFrom(
                pb.LeaseAcquired(mode=b.mode.wire, ttl=_duration(b.ttl), task_id=b.task or "")
            )
        elif isinstance(b, Renew):
            w.renewed.SetInParent()
        elif isinstance(b, Release):
            w.released.CopyFrom(pb.LeaseReleased(reason=b.reason))
        elif isinstance(b, HandOver):
            w.handed_over.CopyFrom(pb.LeaseHandedOver(to_agent=b.to, ttl=_duration(b.ttl)))
        elif isinstance(b, Sweep):
            w.swept.SetInParent()
        elif isinstance(b, Wait):
            # The ttl is always sent, zero included (as Rust does).
            w.waiting.CopyFrom(pb.LeaseWaiting(mode=b.mode.wire, ttl=_duration(b.ttl)))
        elif isinstance(b, StaleWrite):
            w.stale_write.CopyFrom(
                pb.LeaseStaleWrite(
                    writer=b.writer or "", token=b.token, highest_seen=b.highest_seen
                )
            )
        else:
            w.revoked.CopyFrom(pb.LeaseRevoked(holder=b.holder, reason=b.reason))
        return w

    def encode(self) -> bytes:
        """The wire form (``baton.v1.LeaseEvent``)."""
        return self.to_wire().SerializeToString()


def validate_lease_event(subject: str, data: bytes) -> LeaseEvent:
    """The one read path for lease events (``baton_core::wire::read_lease_event``):
    the bytes stored on ``subject`` become a validated event, or
    :class:`~baton_client.state.WireError` says why every reader refuses
    them: over 8192 bytes (field ``payload``), undecodable (``payload``), a
    field out of its rules (that field), or a scope, agent or artifact that
    is not the subject's (``subject``: identity is the subject)."""
    if len(data) > MAX_LEASE_BYTES:
        raise WireError("payload", f"is {len(data)} bytes, over its limit of {MAX_LEASE_BYTES}")
    try:
        wire = pb.LeaseEvent.FromString(data)
    except DecodeError as e:
        raise WireError("payload", f"cannot decode baton.v1.LeaseEvent: {e}") from None
    event = LeaseEvent.from_wire(wire)
    parsed = subjects.parse_lease(subject)
    if parsed is None:
        raise WireError(
            "subject", f"{subject!r} is not of the form baton.art.<scope>.<agent>.<path>.~"
        )
    scope, agent, path = parsed
    if scope != event.artifact.scope_token:
        raise WireError(
            "subject",
            f"{subject!r}: subject scope {scope!r} but payload workflow_id "
            f"{event.artifact.scope_token!r}",
        )
    if agent != event.agent:
        raise WireError(
            "subject", f"{subject!r}: subject agent {agent!r} but payload agent_id {event.agent!r}"
        )
    try:
        name = ArtifactName.from_subject_tokens(path)
    except InvalidArtifactName as e:
        raise WireError("subject", f"{subject!r}: {e}") from None
    if name != event.artifact.name:
        raise WireError(
            "subject",
            f"{subject!r}: subject artifact {name.value!r} but payload artifact "
            f"{event.artifact.name.value!r}",
        )
    return event


# -- the fold -----------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """One agent's hold on an artifact."""

    agent: str
    mode: LeaseMode
    #: The fencing token of this grant.
    token: int
    #: When it was granted (broker time, nanoseconds).
    since: int
    #: Its last renewal (broker time; the grant counts as one).
    renewed_at: int
    #: Nanoseconds.
    ttl: int
    task: str | None = None

    @property
    def expires_at(self) -> int:
        """The last instant at which the hold is live (nanoseconds)."""
        return min(self.renewed_at + self.ttl, _TIME_MAX)

    def conflicts(self, agent: str, mode: LeaseMode) -> bool:
        """Whether ``agent`` taking an overlapping name in ``mode`` conflicts with it."""
        return self.agent != agent and not self.mode.compatible(mode)


@dataclass(frozen=True)
class Waiter:
    """An agent waiting for an artifact that others hold."""

    agent: str
    #: The mode it asked for.
    mode: LeaseMode
    #: When it began waiting (broker time, nanoseconds; kept across repeated waits).
    since: int
    #: Its last wait event (broker time).
    renewed_at: int
    #: Nanoseconds (above 0: a zero ttl ends the wait).
    ttl: int

    @property
    def expires_at(self) -> int:
        """The last instant at which the wait stands (nanoseconds)."""
        return min(self.renewed_at + self.ttl, _TIME_MAX)


class Disposition(enum.Enum):
    """What happened to a lease event."""

    APPLIED = "applied"
    REFUSED = "refused"
    #: Already applied (its sequence is not newer than the book's last).
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Held:
    """Another agent holds a lease that conflicts with this one."""

    artifact: Artifact
    hold: Hold

    def __str__(self) -> str:
        h = self.hold
        return f"{self.artifact} is held by {h.agent} ({h.mode}, token {h.token}) since {rfc3339(h.since)}"


@dataclass(frozen=True)
class NotHolder:
    """The sender holds no lease on this artifact (never did, or it expired,
    was released, handed over or revoked); for a revocation: ``holder`` holds none."""

    def __str__(self) -> str:
        return "the sender holds no lease on it"


@dataclass(frozen=True)
class WrongToken:
    """The sender holds it, but under another token (Rust's ``StaleToken``)."""

    current: int

    def __str__(self) -> str:
        return f"the sender's token is stale (current token {self.current})"


@dataclass(frozen=True)
class NotOperator:
    """Only operators may revoke."""

    def __str__(self) -> str:
        return "only operators may revoke a lease"


@dataclass(frozen=True)
class SelfHandOver:
    """A hand-over to the holder itself."""

    def __str__(self) -> str:
        return "a lease cannot be handed to its holder"


Refusal = Union[Held, NotHolder, WrongToken, NotOperator, SelfHandOver]


@dataclass(frozen=True)
class Granted:
    artifact: Artifact
    hold: Hold


@dataclass(frozen=True)
class Renewed:
    artifact: Artifact
    agent: str
    token: int


@dataclass(frozen=True)
class Released:
    artifact: Artifact
    agent: str
    token: int


@dataclass(frozen=True)
class HandedOver:
    artifact: Artifact
    from_agent: str
    #: The recipient's new hold.
    hold: Hold


@dataclass(frozen=True)
class Revoked:
    artifact: Artifact
    holder: str
    by: str
    token: int


@dataclass(frozen=True)
class Expired:
    """A hold found expired when a later event of its root arrived."""

    artifact: Artifact
    hold: Hold


@dataclass(frozen=True)
class StaleWriteReported:
    """A store reported a write refused for a stale token (Rust's
    ``LeaseEffect::StaleWrite``; the body is :class:`StaleWrite`)."""

    artifact: Artifact
    #: The sender: the store's agent.
    store: str
    writer: str | None
    token: int
    highest_seen: int
    #: The artifact's holders when the report was folded.
    holders: tuple[Hold, ...]


Effect = Union[Granted, Renewed, Released, HandedOver, Revoked, Expired, StaleWriteReported]


@dataclass
class LeaseOutcome:
    """The result of folding one lease event."""

    disposition: Disposition
    #: Why, when refused.
    refusal: Refusal | None = None
    effects: list[Effect] = dataclasses.field(default_factory=list)

    @property
    def granted_token(self) -> int | None:
        """The token a grant (acquisition or hand-over) gave, if any."""
        for e in self.effects:
            if isinstance(e, (Granted, HandedOver)):
                return e.hold.token
        return None


@dataclass(frozen=True)
class RootState:
    """One root's part of a :class:`LeaseBook`, as the orchestrator
    materialises it in KV ``baton-leases`` (``baton.v1.LeaseRoot``, one value
    per root; ``baton_core::lease::RootState``): its holds and waits, its
    last token, and the sequence of the last event of the root folded in
    (which the book itself does not keep per root).

    A reader restores it (:meth:`LeaseBook.restore_root`) and folds only the
    root's events after :attr:`last_seq`, instead of the root's whole
    history: the result is the same fold."""

    #: The scope's workflow; ``None`` = the global scope.
    workflow: str | None
    #: The first segment of every name in the root (unescaped).
    segment: str
    #: The stream sequence of the last event of the root folded in.
    last_seq: int
    #: The last fencing token granted in the root (0 = none yet).
    last_token: int
    #: Every hold, by artifact, in Rust's order (by name, then as granted).
    holds: tuple[tuple[Artifact, Hold], ...] = ()
    #: Every wait, by artifact, in the same order.
    waits: tuple[tuple[Artifact, Waiter], ...] = ()

    @property
    def root(self) -> Root:
        return Root(self.workflow, self.segment)

    def contains(self, artifact: Artifact) -> bool:
        """Whether ``artifact`` is in this root."""
        return artifact.workflow == self.workflow and artifact.name.root == self.segment

    @classmethod
    def from_wire(cls, w: pb.LeaseRoot) -> RootState:
        """Validates a stored root as Rust does (``TryFrom<pb::LeaseRoot>``):
        every name valid and in the root, ids valid, times present and in
        range; a zero or absent ttl is 0. Raises
        :class:`~baton_client.state.WireError` naming the field."""
        workflow = _id(workflow_id, "workflow_id", w.workflow_id) if w.workflow_id else None

        def artifact(field: str, value: str) -> Artifact:
            try:
                name = ArtifactName(value)
            except InvalidArtifactName as e:
                raise WireError(field, str(e)) from None
            if name.root != w.root:
                raise WireError(field, f"not in root {w.root!r}")
            return Artifact(name, workflow)

        def at(field: str, present: bool, t: Timestamp) -> int:
            if not present:
                raise WireError(field, "required")
            return _time(field, t)

        holds = tuple(
            (
                artifact("holds.artifact", h.artifact),
                Hold(
                    agent=_id(agent_id, "holds.agent_id", h.agent_id),
                    mode=_mode(h.mode),
                    token=h.token,
                    since=at("holds.since", h.HasField("since"), h.since),
                    renewed_at=at("holds.renewed_at", h.HasField("renewed_at"), h.renewed_at),
                    ttl=_opt_ttl("holds.ttl", h),
                    task=_id(task_id, "holds.task_id", h.task_id) if h.task_id else None,
                ),
            )
            for h in w.holds
        )
        waits = tuple(
            (
                artifact("waits.artifact", x.artifact),
                Waiter(
                    agent=_id(agent_id, "waits.agent_id", x.agent_id),
                    mode=_mode(x.mode),
                    since=at("waits.since", x.HasField("since"), x.since),
                    renewed_at=at("waits.renewed_at", x.HasField("renewed_at"), x.renewed_at),
                    ttl=_opt_ttl("waits.ttl", x),
                ),
            )
            for x in w.waits
        )
        return cls(workflow, w.root, w.last_seq, w.last_token, holds, waits)

    def to_wire(self) -> pb.LeaseRoot:
        return pb.LeaseRoot(
            workflow_id=self.workflow or "",
            root=self.segment,
            last_seq=self.last_seq,
            last_token=self.last_token,
            holds=[
                pb.LeaseHold(
                    artifact=a.name.value,
                    agent_id=h.agent,
                    mode=h.mode.wire,
                    token=h.token,
                    since=_timestamp(h.since),
                    renewed_at=_timestamp(h.renewed_at),
                    ttl=_duration(h.ttl),
                    task_id=h.task or "",
                )
                for a, h in self.holds
            ],
            waits=[
                pb.LeaseWait(
                    artifact=a.name.value,
                    agent_id=w.agent,
                    mode=w.mode.wire,
                    since=_timestamp(w.since),
                    renewed_at=_timestamp(w.renewed_at),
                    ttl=_duration(w.ttl),
                )
                for a, w in self.waits
            ],
        )

    @classmethod
    def decode(cls, data: bytes) -> RootState:
        """A stored root from its bytes, or :class:`~baton_client.state.WireError`
        (field ``payload`` when they are not a ``baton.v1.LeaseRoot``)."""
        try:
            wire = pb.LeaseRoot.FromString(data)
        except DecodeError as e:
            raise WireError("payload", f"cannot decode baton.v1.LeaseRoot: {e}") from None
        return cls.from_wire(wire)

    def encode(self) -> bytes:
        """The wire form (``baton.v1.LeaseRoot``), as stored in KV."""
        return self.to_wire().SerializeToString()


class LeaseBook:
    """Every live hold and wait, by artifact, with the last token of each
    root (``baton_core::lease::LeaseBook``). Changes only by :func:`apply`."""

    def __init__(self) -> None:
        self._holds: dict[Artifact, list[Hold]] = {}
        self._waits: dict[Artifact, list[Waiter]] = {}
        self._tokens: dict[Root, int] = {}
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        """The sequence of the last event folded in."""
        return self._last_seq

    def last_token(self, root: Root) -> int:
        """The last fencing token granted in a root (0 = none yet)."""
        return self._tokens.get(root, 0)

    def holds(self, artifact: Artifact) -> tuple[Hold, ...]:
        """The holds on one artifact (not those on names above or below it)."""
        return tuple(self._holds.get(artifact, ()))

    def waiters(self, artifact: Artifact) -> tuple[Waiter, ...]:
        """The agents waiting for one artifact (not for names above or below
        it), live or not: a wait stays here until an event of its root finds
        it lapsed; compare :attr:`Waiter.expires_at` with the time."""
        return tuple(self._waits.get(artifact, ()))

    def iter_waits(self) -> Iterator[tuple[Artifact, tuple[Waiter, ...]]]:
        """Every artifact with its waiters, in Rust's order."""
        for a in sorted(self._waits, key=Artifact.sort_key):
            yield a, tuple(self._waits[a])

    def blocked_by(
        self, artifact: Artifact, hold: Hold, at: int
    ) -> Iterator[tuple[Artifact, Waiter]]:
        """The live waiters at ``at`` that ``hold`` on ``artifact`` keeps out:
        waits on this name, above or below it (same scope), by other agents,
        in a mode that conflicts with the hold's (two shared do not), with
        the name each waits for."""
        for a, waiters in self.iter_waits():
            if not a.overlaps(artifact):
                continue
            for w in waiters:
                if w.expires_at >= at and w.agent != hold.agent and not w.mode.compatible(hold.mode):
                    yield a, w

    def items(self) -> Iterator[tuple[Artifact, tuple[Hold, ...]]]:
        """Every artifact with its holds, in Rust's order. A hold stays here
        until an event of its root finds it expired: compare
        :attr:`Hold.expires_at` with the time."""
        for a in sorted(self._holds, key=Artifact.sort_key):
            yield a, tuple(self._holds[a])

    def expired(self, now: int) -> Iterator[tuple[Artifact, Hold]]:
        """Holds past their expiry at ``now`` (a query; the book changes only by events)."""
        for a, holds in self.items():
            for h in holds:
                if h.expires_at < now:
                    yield a, h

    def root_state(self, artifact: Artifact, last_seq: int) -> RootState:
        """The part of the book in ``artifact``'s root, stamped ``last_seq``
        (what the orchestrator stores for the root)."""
        state = RootState(artifact.workflow, artifact.name.root, last_seq, 0)
        return dataclasses.replace(
            state,
            last_token=self.last_token(state.root),
            holds=tuple(
                (a, h)
                for a in sorted(self._holds, key=Artifact.sort_key)
                if state.contains(a)
                for h in self._holds[a]
            ),
            waits=tuple(
                (a, w)
                for a in sorted(self._waits, key=Artifact.sort_key)
                if state.contains(a)
                for w in self._waits[a]
            ),
        )

    def restore_root(self, state: RootState) -> None:
        """Puts a root's state in place of what the book has of that root
        (holds, waits, last token); holds and waits outside the root are
        ignored. The book's last sequence is not moved: the caller skips the
        root's events up to ``state.last_seq`` itself (another root's events
        may lie between)."""
        for a in [a for a in self._holds if state.contains(a)]:
            del self._holds[a]
        for a in [a for a in self._waits if state.contains(a)]:
            del self._waits[a]
        for a, h in state.holds:
            if state.contains(a):
                self._put_hold(a, h)
        for a, w in state.waits:
            if state.contains(a):
                self._waits.setdefault(a, []).append(w)
        if state.last_token == 0:
            self._tokens.pop(state.root, None)
        else:
            self._tokens[state.root] = state.last_token

    def _in_root(self, artifact: Artifact) -> Iterator[tuple[Artifact, list[Hold]]]:
        root = artifact.name.root
        for a in sorted(self._holds, key=Artifact.sort_key):
            if a.workflow == artifact.workflow and a.name.root == root:
                yield a, self._holds[a]

    def conflicts(
        self, artifact: Artifact, agent: str, mode: LeaseMode, at: int
    ) -> Iterator[tuple[Artifact, Hold]]:
        """The holds of other agents that conflict with ``agent`` taking
        ``artifact`` in ``mode`` at ``at`` (expired holds do not count)."""
        for a, holds in self._in_root(artifact):
            if not a.overlaps(artifact):
                continue
            for h in holds:
                if h.expires_at >= at and h.conflicts(agent, mode):
                    yield a, h

    def _next_token(self, root: Root) -> int:
        token = self._tokens.get(root, 0) + 1
        self._tokens[root] = token
        return token

    def _take_hold(self, artifact: Artifact, agent: str) -> Hold | None:
        holds = self._holds.get(artifact)
        if holds is None:
            return None
        for i, h in enumerate(holds):
            if h.agent == agent:
                del holds[i]
                if not holds:
                    del self._holds[artifact]
                return h
        return None

    def _put_hold(self, artifact: Artifact, hold: Hold) -> None:
        self._holds.setdefault(artifact, []).append(hold)

    def _put_wait(self, artifact: Artifact, agent: str, mode: LeaseMode, ttl: int, at: int) -> None:
        """Records (or replaces, keeping its start) ``agent``'s wait; a zero
        ttl ends it."""
        earlier = self._take_wait(artifact, agent)
        if ttl == 0:
            return
        since = at if earlier is None else earlier.since
        self._waits.setdefault(artifact, []).append(Waiter(agent, mode, since, at, ttl))

    def _take_wait(self, artifact: Artifact, agent: str) -> Waiter | None:
        waits = self._waits.get(artifact)
        if waits is None:
            return None
        for i, w in enumerate(waits):
            if w.agent == agent:
                del waits[i]
                if not waits:
                    del self._waits[artifact]
                return w
        return None

    def _expire_root(self, artifact: Artifact, at: int, effects: list[Effect]) -> None:
        """Drops the holds of the event's root that expired before ``at``
        (and its lapsed waits, which have no effect)."""
        root = artifact.root
        for a in [a for a in self._waits if a.root == root]:
            live_waits = [w for w in self._waits[a] if w.expires_at >= at]
            if live_waits:
                self._waits[a] = live_waits
            else:
                del self._waits[a]
        for a, holds in list(self._in_root(artifact)):
            live = []
            for h in holds:
                if h.expires_at >= at:
                    live.append(h)
                else:
                    effects.append(Expired(a, h))
            if live:
                self._holds[a] = live
            else:
                del self._holds[a]


def apply(
    book: LeaseBook,
    event: LeaseEvent,
    seq: int,
    stored_at: int,
    operators: Iterable[str] = (),
) -> LeaseOutcome:
    """Folds one lease event, stored at sequence ``seq`` at broker time
    ``stored_at`` (nanoseconds), into ``book`` (``baton_core::lease::apply``).

    ``operators`` are the agents allowed to revoke (empty = anyone), from the
    orchestrator's published policy."""
    if seq != 0 and seq <= book._last_seq:
        return LeaseOutcome(Disposition.DUPLICATE)
    book._last_seq = max(book._last_seq, seq)
    at = stored_at
    artifact = event.artifact
    agent = event.agent
    effects: list[Effect] = []
    book._expire_root(artifact, at, effects)

    def refused(reason: Refusal) -> LeaseOutcome:
        return LeaseOutcome(Disposition.REFUSED, reason, effects)

    def own_hold() -> Refusal | None:
        """The sender's own hold, checked against the token it claims."""
        for h in book._holds.get(artifact, ()):
            if h.agent == agent:
                return None if h.token == event.token else WrongToken(h.token)
        return NotHolder()

    body = event.body
    if isinstance(body, Acquire):
        for a, h in book.conflicts(artifact, agent, body.mode, at):
            return refused(Held(a, h))
        # Taking again what it holds replaces its hold; a grant ends its wait.
        book._take_hold(artifact, agent)
        book._take_wait(artifact, agent)
        hold = Hold(
            agent=agent,
            mode=body.mode,
            token=book._next_token(artifact.root),
            since=at,
            renewed_at=at,
            ttl=body.ttl,
            task=body.task,
        )
        book._put_hold(artifact, hold)
        effects.append(Granted(artifact, hold))
    elif isinstance(body, Renew):
        if (why := own_hold()) is not None:
            return refused(why)
        holds = book._holds[artifact]
        for i, h in enumerate(holds):
            if h.agent == agent:
                holds[i] = dataclasses.replace(h, renewed_at=at)
                break
        effects.append(Renewed(artifact, agent, event.token))
    elif isinstance(body, Release):
        if (why := own_hold()) is not None:
            return refused(why)
        book._take_hold(artifact, agent)
        effects.append(Released(artifact, agent, event.token))
    elif isinstance(body, HandOver):
        if body.to == agent:
            return refused(SelfHandOver())
        if (why := own_hold()) is not None:
            return refused(why)
        mode = next(h.mode for h in book._holds[artifact] if h.agent == agent)
        # The recipient must be able to take it: the sender's other holds
        # (on names above or below) count, the one handed over does not.
        for a, h in book.conflicts(artifact, body.to, mode, at):
            if not (a == artifact and h.agent == agent):
                return refused(Held(a, h))
        sent = book._take_hold(artifact, agent)
        if sent is None:  # pragma: no cover - own_hold found it
            return refused(NotHolder())
        # The recipient's own earlier hold on it is replaced, and its wait ends.
        book._take_hold(artifact, body.to)
        book._take_wait(artifact, body.to)
        hold = Hold(
            agent=body.to,
            mode=sent.mode,
            token=book._next_token(artifact.root),
            since=at,
            renewed_at=at,
            ttl=body.ttl,
        )
        book._put_hold(artifact, hold)
        effects.append(HandedOver(artifact, agent, hold))
    elif isinstance(body, Sweep):
        pass  # dropping the root's expired holds (above) is all it does
    elif isinstance(body, Wait):
        book._put_wait(artifact, agent, body.mode, body.ttl, at)
    elif isinstance(body, StaleWrite):
        effects.append(
            StaleWriteReported(
                artifact, agent, body.writer, body.token, body.highest_seen, book.holds(artifact)
            )
        )
    else:
        ops = frozenset(operators)
        if ops and agent not in ops:
            return refused(NotOperator())
        taken = book._take_hold(artifact, body.holder)
        if taken is None:
            return refused(NotHolder())
        effects.append(Revoked(artifact, body.holder, agent, taken.token))
    return LeaseOutcome(Disposition.APPLIED, None, effects)


# -- the operators' view ------------------------------------------------------


@dataclass(frozen=True)
class WaiterView:
    """An agent waiting for a lease, in a :class:`HoldView`."""

    agent: str
    #: The name it waits for: the hold's, or one above or below it.
    artifact: str
    mode: str
    since: str
    expires_at: str


@dataclass(frozen=True)
class HoldView:
    """One hold as operators see it (``baton_core::lease::HoldView``: what
    ``baton leases --json`` and the MCP tool ``list_leases`` print, so
    ``dataclasses.asdict`` of it is the same JSON object): times in RFC
    3339, with the agents it keeps waiting."""

    artifact: str
    #: The scope's workflow; ``None`` for the global scope.
    workflow: str | None
    holder: str
    mode: str
    token: int
    since: str
    renewed_at: str
    expires_at: str
    #: Past its expiry at the time of the view (not yet swept).
    expired: bool
    task: str | None
    #: The live waits this hold keeps out (on this name, above or below it,
    #: in a conflicting mode).
    waiting: list[WaiterView]


def holds_view(book: LeaseBook, now: int) -> list[HoldView]:
    """Every hold of ``book`` with its waiters, as of ``now`` (nanoseconds),
    in Rust's order (``baton_core::lease::holds_view``)."""
    return [
        HoldView(
            artifact=artifact.name.value,
            workflow=artifact.workflow,
            holder=h.agent,
            mode=h.mode.value,
            token=h.token,
            since=rfc3339(h.since),
            renewed_at=rfc3339(h.renewed_at),
            expires_at=rfc3339(h.expires_at),
            expired=h.expires_at < now,
            task=h.task,
            waiting=[
                WaiterView(w.agent, on.name.value, w.mode.value, rfc3339(w.since), rfc3339(w.expires_at))
                for on, w in book.blocked_by(artifact, h, now)
            ],
        )
        for artifact, holds in book.items()
        for h in holds
    ]


# -- fencing ------------------------------------------------------------------


class Fence:
    """The rule a store applies to fenced writes (``baton_core::lease::Fence``):
    refuse a write whose token is lower than the highest seen for that name
    or any name above it, and remember the highest.

    Keep one per store and persist :meth:`last_seen` with the data (as
    :class:`~baton_client.fence.FencedDir` does). Tokens of a root only grow,
    so a paused holder whose lease expired and was granted to someone else
    writes with a token below the new holder's and is refused, however late
    its write arrives."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def admit(self, artifact: str | ArtifactName, token: int) -> None:
        """Admits a write to ``artifact`` with ``token``, or raises
        :class:`~baton_client.errors.StaleToken`. A write to
        ``drafts/post.md`` with token 3 is refused once ``drafts`` was
        written with token 5 (a lease on ``drafts`` covers the post)."""
        name = ArtifactName(artifact)
        seen = self.highest_covering(name)
        if token < seen:
            raise StaleToken(name.value, token, seen)
        self._seen[name.value] = token

    def highest_covering(self, artifact: str | ArtifactName) -> int:
        """The highest token seen for this name or any name above it."""
        name = ArtifactName(artifact)
        highest = 0
        path = ""
        for i, segment in enumerate(name.segments):
            path = segment if i == 0 else f"{path}/{segment}"
            highest = max(highest, self._seen.get(path, 0))
        return highest

    def last_seen(self) -> list[tuple[str, int]]:
        """The last token seen per artifact name, sorted by name (to persist)."""
        return sorted(self._seen.items())

    def remember(self, artifact: str, token: int) -> None:
        """Restores what :meth:`last_seen` returned (keeps the higher token)."""
        self._seen[artifact] = max(self._seen.get(artifact, 0), token)
