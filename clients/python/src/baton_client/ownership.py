"""The ownership handle: the only way to send owner events.

An :class:`Ownership` exists only after a successful claim, acceptance or
resumption. While it lives it sends heartbeats on its own whenever a third of
the lease passed without any event from it. Every event carries the epoch the
handle holds and the decision-record version the agent read for the
workflow, and is published with compare-and-set against the last sequence
the handle knows: if another event came first the task is re-read, and the
act retried while this agent still owns the task, or refused with
:class:`~baton_client.errors.OwnershipLost` otherwise.

After a final act (offer, complete, fail, release) the handle is spent: every
further use raises :class:`~baton_client.errors.HandleSpent`. A handle used as
an async context manager releases the task with reason ``"dropped"`` when
the block exits without a final act, so an agent cannot go silent by
accident; so does a live handle that is garbage-collected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import pb
from .errors import (
    ActRefused,
    BrokerError,
    HandleSpent,
    OwnershipError,
    OwnershipLost,
    TaskEnded,
    UnknownTask,
)
from .ids import agent_id as check_agent_id
from .ids import stage_name

from .agent import CAS_ATTEMPTS, duration

if TYPE_CHECKING:
    from .agent import Agent
    from .lease_handle import Lease

__all__ = ["Ownership", "OfferSent"]

log = logging.getLogger("baton_client")

#: Body kinds after which the handle is spent.
_FINAL = frozenset({"handoff_offered", "completed", "failed", "released"})


@dataclass(frozen=True)
class OfferSent:
    """A handoff offer in flight: the sender is accountable until the recipient accepts."""

    task: str
    #: Exactly one of ``to_agent`` and ``to_stage`` is set.
    to_agent: str | None
    to_stage: str | None
    #: Stream sequence of the offer event.
    seq: int
    #: The epoch the offer was sent with.
    epoch: int


class _Shared:
    """The handle's state, shared with its heartbeat task (so the handle
    itself can be garbage-collected while heartbeats run)."""

    def __init__(
        self, agent: Agent, task: str, workflow: str, epoch: int, last_seq: int, lease: float
    ) -> None:
        self.agent = agent
        self.task = task
        self.workflow = workflow
        self.epoch = epoch
        self.lease = lease
        #: Sequence of the task's last event this handle knows of (the
        #: compare-and-set expectation for the next act).
        self.last_seq = last_seq
        self.last_sent = asyncio.get_running_loop().time()
        self.lock = asyncio.Lock()
        #: Why the handle can no longer act, once it cannot.
        self.spent: str | None = None
        #: Set once ownership is known to be gone.
        self.lost: OwnershipError | None = None
        self.heartbeats: asyncio.Task[None] | None = None
        #: No heartbeats, no release when dropped (``Agent.resume(detached=True)``).
        self.detached = False
        #: Leases on the task's declared artifacts, taken with the claim or
        #: acceptance: they go with the task (released at its end, handed to
        #: the recipient of an agent offer, released when ownership is lost
        #: or the handle dropped).
        self.leases: list[Lease] = []

    def stop_heartbeats(self) -> None:
        hb = self.heartbeats
        self.heartbeats = None
        if hb is not None and hb is not asyncio.current_task():
            hb.cancel()

    def finish(self, how: str) -> None:
        """The handle acts no more."""
        if self.spent is None:
            self.spent = how
        self.stop_heartbeats()
        self.agent._live.discard(self)

    def refusal(self) -> OwnershipError | None:
        if self.lost is not None:
            return self.lost
        if self.spent is not None:
            return HandleSpent(self.task, self.spent)
        return None

    async def act(self, final: str | None = None, **body: Any) -> int:
        """Publishes an owner event with compare-and-set; on conflict re-reads
        the task and retries while this agent still owns it. ``final`` names
        the final act; the handle is spent once it succeeded (or ownership is
        found gone)."""
        agent = self.agent
        async with self.lock:
            refused = self.refusal()
            if refused is not None:
                raise refused
            for _ in range(CAS_ATTEMPTS):
                event = agent.event(self.task, self.workflow, self.epoch, **body)
                seq = await agent._publish_cas(event, self.last_seq)
                if seq is not None:
                    self.last_seq = seq
                    self.last_sent = asyncio.get_running_loop().time()
                    if final is not None:
                        self.finish(final)
                        await self.settle_leases(body)
                    return seq
                # Another event came first: is the task still ours?
                view, last_seq = await agent._current(self.task)
                if view is None:
                    raise UnknownTask(self.task)
                if view.owner == agent.id and view.epoch == self.epoch and not view.status.is_terminal:
                    self.last_seq = last_seq
                    continue
                err: OwnershipError
                if view.status.is_terminal:
                    err = TaskEnded(self.task, str(view.status))
                else:
                    err = OwnershipLost(self.task, view.owner, view.epoch)
                self.lost = err
                self.finish("ownership lost")
                await self.settle_leases({})
                raise err
        raise BrokerError(
            f"task {self.task} kept changing; giving up after {CAS_ATTEMPTS} attempts"
        )

    async def settle_leases(self, body: dict[str, Any]) -> None:
        """The artifacts go with the task: handed to the recipient of an
        agent offer (for at least the lease), released otherwise."""
        from .lease_handle import hand_over_all, release_all

        leases, self.leases = self.leases, []
        if not leases:
            return
        offer = body.get("handoff_offered")
        if isinstance(offer, pb.HandoffOffered) and offer.WhichOneof("target") == "to_agent":
            within = offer.accept_within.ToNanoseconds() / 1e9 if offer.HasField("accept_within") else 0.0
            await hand_over_all(leases, offer.to_agent, max(within, self.lease))
        else:
            await release_all(leases, "the task was handed on or ended")

    async def heartbeat_loop(self) -> None:
        """Sends a heartbeat whenever a third of the lease passed without any
        event from this handle; stops when the handle can no longer act."""
        every = max(self.lease / 3, 0.05)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self.last_sent + every - loop.time()))
            if loop.time() - self.last_sent < every:
                continue
            try:
                await self.act(heartbeat=pb.Heartbeat())
            except BrokerError as e:
                log.warning("task %s: heartbeat not delivered (%s); retrying", self.task, e)
                self.last_sent = loop.time()
            except OwnershipError as e:
                if not isinstance(e, HandleSpent):
                    log.warning("task %s: stopping heartbeats: %s", self.task, e)
                return

    async def release_dropped(self) -> None:
        try:
            await self.act(final="released (dropped)", released=pb.Released(reason="dropped"))
        except OwnershipError as e:
            log.info("task %s: not released on drop: %s", self.task, e)
        except Exception as e:
            log.warning("task %s: could not release a dropped task: %s", self.task, e)


class Ownership:
    """Proof that this agent owns a task at an epoch. Obtain it from
    :meth:`Agent.claim`, :meth:`Agent.accept_handoff` or :meth:`Agent.resume`."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared

    @classmethod
    def _start(
        cls,
        agent: Agent,
        task: str,
        workflow: str,
        epoch: int,
        last_seq: int,
        lease: float,
        *,
        detached: bool = False,
        leases: Sequence[Lease] = (),
    ) -> Ownership:
        shared = _Shared(agent, task, workflow, epoch, last_seq, lease)
        # A detached handle acts, but sends no heartbeats and is not released
        # when dropped.
        shared.detached = detached
        shared.leases = list(leases)
        if not detached:
            shared.heartbeats = asyncio.get_running_loop().create_task(
                shared.heartbeat_loop(), name=f"baton-heartbeats-{task}"
            )
            agent._live.add(shared)
        return cls(shared)

    # -- facts ----------------------------------------------------------------

    @property
    def task(self) -> str:
        return self._shared.task

    @property
    def workflow(self) -> str:
        return self._shared.workflow

    @property
    def epoch(self) -> int:
        """The fencing token this handle holds."""
        return self._shared.epoch

    @property
    def lease(self) -> float:
        """The lease in seconds; heartbeats go out at a third of it."""
        return self._shared.lease

    @property
    def last_seq(self) -> int:
        """Sequence of the task's last event this handle knows of."""
        return self._shared.last_seq

    @property
    def leases(self) -> tuple[Lease, ...]:
        """The leases on the task's declared artifacts this handle holds
        (taken with the claim or acceptance); writes to them carry their
        :attr:`~baton_client.Lease.token`."""
        return tuple(self._shared.leases)

    @property
    def is_lost(self) -> bool:
        """Whether ownership is known to be gone (revoked, taken, cancelled)."""
        return self._shared.lost is not None

    @property
    def is_spent(self) -> bool:
        """Whether the handle can no longer act (final act done, detached, or lost)."""
        return self._shared.spent is not None

    def __repr__(self) -> str:
        s = self._shared
        state = f", spent={s.spent!r}" if s.spent else ""
        return f"Ownership(task={s.task!r}, epoch={s.epoch}{state})"

    # -- acts -----------------------------------------------------------------

    async def heartbeat(self, note: str = "", progress: bool = False) -> int:
        """Reports liveness; ``progress`` = output advanced since the last one.
        Returns the event's stream sequence."""
        return await self._shared.act(heartbeat=pb.Heartbeat(note=note, progress=progress))

    async def block(self, reason: str) -> int:
        """Reports that the task waits for input; heartbeat expectations pause.
        A later heartbeat resumes work."""
        return await self._shared.act(blocked=pb.Blocked(reason=reason))

    async def offer_to_agent(
        self, agent: str, output_location: str, accept_within: float | None = None
    ) -> OfferSent:
        """Offers the task to ``agent`` (final act). The sender stays accountable
        until the recipient accepts, but this handle can no longer act."""
        check_agent_id(agent)
        if agent == self._shared.agent.id:
            raise ActRefused(f"task {self.task}: an agent cannot offer a task to itself")
        body = pb.HandoffOffered(to_agent=agent, output_location=output_location)
        return await self._offer(body, accept_within, f"offered to agent {agent}")

    async def offer_to_stage(
        self, stage: str, output_location: str, accept_within: float | None = None
    ) -> OfferSent:
        """Offers the task to any agent of ``stage`` (final act)."""
        stage_name(stage)
        body = pb.HandoffOffered(to_stage=stage, output_location=output_location)
        return await self._offer(body, accept_within, f"offered to stage {stage}")

    async def _offer(
        self, body: pb.HandoffOffered, accept_within: float | None, how: str
    ) -> OfferSent:
        if accept_within is not None:
            body.accept_within.CopyFrom(duration(accept_within))
        epoch = self.epoch
        seq = await self._shared.act(final=how, handoff_offered=body)
        return OfferSent(
            task=self.task,
            to_agent=body.to_agent or None,
            to_stage=body.to_stage or None,
            seq=seq,
            epoch=epoch,
        )

    async def complete(self, output_location: str, summary: str) -> int:
        """Completes the task (terminal, final act)."""
        return await self._shared.act(
            final="completed",
            completed=pb.Completed(output_location=output_location, summary=summary),
        )

    async def fail(self, reason: str, retryable: bool = False) -> int:
        """Gives up (final act): terminal unless ``retryable``, in which case the
        task is unowned again."""
        return await self._shared.act(
            final="failed", failed=pb.Failed(reason=reason, retryable=retryable)
        )

    async def release(self, reason: str) -> int:
        """Lets go of the task (final act); it is unowned again."""
        return await self._shared.act(final="released", released=pb.Released(reason=reason))

    def detach(self) -> None:
        """Keeps ownership but stops automatic heartbeats and the release on
        drop: for handing ownership over to another process (a later
        :meth:`Agent.resume`) or a process that exits holding the task. The
        leases on its artifacts are detached too (a resume takes them up)."""
        self._shared.finish("detached")
        leases, self._shared.leases = self._shared.leases, []
        for lease in leases:
            lease.detach()

    # -- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> Ownership:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shared = self._shared
        if shared.spent is not None or shared.lost is not None or shared.detached:
            shared.stop_heartbeats()
            return
        try:
            await shared.act(final="released (dropped)", released=pb.Released(reason="dropped"))
        except (OwnershipLost, TaskEnded, HandleSpent):
            pass  # not ours (any more): nothing to release
        except Exception as e:
            shared.finish("release on exit failed")
            if exc is None:
                raise
            log.warning("task %s: could not release on exit: %s", shared.task, e)

    def __del__(self) -> None:
        shared = getattr(self, "_shared", None)
        if shared is None or shared.spent is not None or shared.lost is not None or shared.detached:
            return
        # Never go silent: a dropped handle releases the task.
        agent = shared.agent
        shared.stop_heartbeats()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("task %s: ownership dropped outside a running loop; not released", shared.task)
            return
        if agent._closed:
            return
        task = loop.create_task(shared.release_dropped(), name=f"baton-release-{shared.task}")
        agent._background.add(task)
        task.add_done_callback(agent._background.discard)
