"""The shared decision record of a workflow: read before starting, append
when deciding something others depend on.

Append-only, one subject per workflow (``baton.ctx.<workflow>`` in stream
``BATON_CONTEXT``); an entry's version is its stream sequence. After
:meth:`ContextRecord.read`, every event this agent sends in the workflow
carries the version read, so acting on a record that changed since is
detected by the orchestrator (``STALE_CONTEXT``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

from google.protobuf.message import DecodeError

from . import pb, subjects
from ._transport import Cas, WrongLastSequence, last_on_subject, publish_durable, read_subject, stream_last_seq
from .errors import ContextCorrupt, ContextStale

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["ContextRecord", "ContextSnapshot", "Decision"]


class Decision(NamedTuple):
    """One recorded decision."""

    #: Its version (stream sequence in ``BATON_CONTEXT``).
    version: int
    entry: pb.ContextEntry
    #: When the broker stored it (RFC 3339), if known.
    stored_at: str | None


class ContextSnapshot(NamedTuple):
    """The record as read: ``version, entries = await record.read()``."""

    #: The version read: the ``BATON_CONTEXT`` position up to which every
    #: entry of this workflow is in ``entries`` (0 = nothing recorded anywhere yet).
    version: int
    entries: list[Decision]


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
        return subjects.context(self._workflow)

    async def read(self) -> ContextSnapshot:
        """Reads every entry. From now on this agent's events in the workflow
        carry the version read. Raises :class:`ContextCorrupt` for an entry
        that is not a ``baton.v1.ContextEntry``."""
        nc = self._agent.nc
        # Everything stored up to here is read below: the version read is at
        # least this position of the stream.
        position = await stream_last_seq(nc, subjects.CONTEXT_STREAM)
        stored = await read_subject(nc, subjects.CONTEXT_STREAM, self.subject, 1)
        entries: list[Decision] = []
        for s in stored:
            try:
                entry = pb.ContextEntry.FromString(s.data)
            except DecodeError as e:
                raise ContextCorrupt(s.seq, str(e)) from None
            entries.append(Decision(s.seq, entry, s.time))
        version = max(position, entries[-1].version if entries else 0)
        self._agent._set_context_version(self._workflow, version)
        return ContextSnapshot(version, entries)

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
                self.subject,
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
