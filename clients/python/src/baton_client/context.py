"""The shared decision record of a workflow: read before starting, append
when deciding something others depend on.

Append-only: an author records on ``baton.ctx.<workflow>.<author>`` (stream
``BATON_CONTEXT``), and the workflow's record is everything on
``baton.ctx.<workflow>.*``; an entry's version is its stream sequence. An entry
that is undecodable, over a size limit or recorded under another author's name
is skipped (and listed in :attr:`ContextSnapshot.refused`), as every reader
skips it, so one bad entry never makes the record unreadable. After
:meth:`ContextRecord.read`, every event this agent sends in the workflow
carries the version read, so acting on a record that changed since is
detected by the orchestrator (``STALE_CONTEXT``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from google.protobuf.message import DecodeError

from . import pb, subjects
from ._transport import Cas, WrongLastSequence, last_on_subject, publish_durable, read_subject, stream_last_seq
from .errors import ContextInvalid, ContextStale
from .state import MAX_DECISION_BODY, MAX_DECISION_SUMMARY

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["ContextRecord", "ContextSnapshot", "Decision", "RefusedEntry"]


class Decision(NamedTuple):
    """One recorded decision."""

    #: Its version (stream sequence in ``BATON_CONTEXT``).
    version: int
    entry: pb.ContextEntry
    #: When the broker stored it (RFC 3339), if known.
    stored_at: str | None


class RefusedEntry(NamedTuple):
    """An entry every reader skips, and why (the orchestrator dead-letters it)."""

    version: int
    reason: str


@dataclass(frozen=True)
class ContextSnapshot:
    """The record as read: ``version, entries = await record.read()``; the
    entries every reader skipped are in ``.refused``."""

    #: The version read: the ``BATON_CONTEXT`` position up to which every
    #: entry of this workflow is in ``entries`` (0 = nothing recorded anywhere yet).
    version: int
    entries: list[Decision]
    #: Entries skipped: undecodable, over a limit, or under another author's name.
    refused: list[RefusedEntry] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.version, self.entries))


def read_entry(subject: str, data: bytes) -> pb.ContextEntry:
    """The one read path for decision-record entries (``baton_core::wire::
    read_context_entry``): raises :class:`ValueError` naming what is wrong."""
    if len(data) > MAX_DECISION_BODY + MAX_DECISION_SUMMARY + 1024:
        raise ValueError(f"payload is {len(data)} bytes, over the limit")
    try:
        entry = pb.ContextEntry.FromString(data)
    except DecodeError as e:
        raise ValueError(f"cannot decode baton.v1.ContextEntry: {e}") from None
    check_entry(entry)
    tokens = subjects.parse_context(subject)
    if tokens is None:
        raise ValueError(f"subject {subject!r} is not of the form baton.ctx.<workflow>.<author>")
    if tokens != (entry.workflow_id, entry.author):
        raise ValueError(
            f"subject {subject!r} does not match workflow_id {entry.workflow_id!r} "
            f"and author {entry.author!r}"
        )
    return entry


def check_entry(entry: pb.ContextEntry) -> None:
    """Raises :class:`ValueError` if a field is over its size limit."""
    for name, limit in (("summary", MAX_DECISION_SUMMARY), ("body", MAX_DECISION_BODY)):
        size = len(getattr(entry, name).encode("utf-8"))
        if size > limit:
            raise ValueError(f"field `{name}` is {size} bytes, over its limit of {limit}")


class ContextRecord:
    """Handle on one workflow's decision record (from :meth:`Agent.context`)."""

    def __init__(self, agent: Agent, workflow: str) -> None:
        self._agent = agent
        self._workflow = workflow

    @property
    def workflow(self) -> str:
        return self._workflow

    @property
    def subject(self) -> str:
        """The whole record: ``baton.ctx.<workflow>.*``."""
        return subjects.workflow_context(self._workflow)

    async def read(self) -> ContextSnapshot:
        """Reads every entry. From now on this agent's events in the workflow
        carry the version read. Entries every reader refuses are skipped and
        listed in ``refused``."""
        nc = self._agent.nc
        # Everything stored up to here is read below: the version read is at
        # least this position of the stream.
        position = await stream_last_seq(nc, subjects.CONTEXT_STREAM)
        stored = await read_subject(nc, subjects.CONTEXT_STREAM, self.subject, 1)
        entries: list[Decision] = []
        refused: list[RefusedEntry] = []
        for s in stored:
            try:
                entries.append(Decision(s.seq, read_entry(s.subject, s.data), s.time))
            except ValueError as e:
                refused.append(RefusedEntry(s.seq, str(e)))
        version = max([position] + [s.seq for s in stored])
        self._agent._set_context_version(self._workflow, version)
        return ContextSnapshot(version, entries, refused)

    async def latest(self) -> int:
        """Version of the record's last entry (0 = none)."""
        last = await last_on_subject(self._agent.nc, subjects.CONTEXT_STREAM, self.subject)
        return 0 if last is None else last.seq

    async def record(self, summary: str, body: str, supersedes: int | None = None) -> int:
        """Appends a decision; returns its version. Raises :class:`ContextStale`
        if someone recorded a decision since this agent last read the record
        (read again, reconsider, then record)."""
        agent = self._agent
        entry = pb.ContextEntry(
            workflow_id=self._workflow,
            author=agent.id,
            summary=summary,
            body=body,
            supersedes=supersedes or 0,
        )
        entry.recorded_at.FromNanoseconds(time.time_ns())
        try:
            check_entry(entry)
        except ValueError as e:
            raise ContextInvalid(str(e)) from None
        read_version = agent.context_version(self._workflow)
        latest = await self.latest()
        if latest > read_version:
            raise ContextStale(self._workflow, latest)
        # Compare-and-set on the record's subject: a decision recorded between
        # the check above and the append makes this fail instead.
        msg_id = agent._nuid.next().decode()
        try:
            seq = await publish_durable(
                agent.nc,
                subjects.context(self._workflow, agent.id),
                entry.SerializeToString(),
                msg_id,
                Cas(latest, self.subject),
                agent._retry,
                agent._denials,
            )
        except WrongLastSequence as e:
            if e.after_retry:
                # An attempt whose acknowledgement was lost may have been stored.
                mine = await read_subject(agent.nc, subjects.CONTEXT_STREAM, self.subject, latest + 1)
                found = next((s.seq for s in mine if s.msg_id == msg_id), None)
                if found is not None:
                    agent._set_context_version(self._workflow, found)
                    return found
            raise ContextStale(self._workflow, await self.latest()) from None
        agent._set_context_version(self._workflow, seq)
        return seq
