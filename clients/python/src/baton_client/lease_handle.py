"""Artifact leases for agents: the :class:`Lease` handle and the acts behind it.

The Python counterpart of ``baton_agent::lease``, against the same stream
(``BATON_ARTIFACTS``) with the same rules, so Python and Rust agents can
race for the same artifacts. An agent acquires a lease on a named artifact
(``drafts/post.md``, a record key), exclusive or shared::

    async with agent.acquire("drafts/post.md") as lease:   # LeaseHeld if taken
        store.write("drafts/post.md", lease.token, data)   # a FencedDir

Every act is a compare-and-set over the artifact's *root* (scope plus first
path segment, which holds every name it can conflict with:
``baton.art.<scope>.*.<root token>.>``, expected last sequence = the last
one read there). Its outcome is then read back: the root's events up to and
including the one just stored are folded with :func:`baton_client.leases.apply`,
as every reader folds them, so the client never believes a lease the stream
does not grant. Expiry is judged by the broker's stored times; this
machine's clock only decides whether trying is worth it. The fold starts
from the root as the orchestrator materialised it in KV ``baton-leases``,
when there is one, and reads only the events after it.

The handle renews itself at a third of its ttl (unless ``auto_renew=False``:
then the agent calls :meth:`Lease.renew` itself within each ttl). Releasing
or handing over spends it; leaving its ``async with`` block, or dropping a
live handle, releases the lease.

Events that change no hold (a refused acquirer's wait, a store's report of
a stale write) are published without compare-and-set: no act depends on
their place in the root, and a wait must not fail because the root moved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import subjects
from ._transport import (
    Cas,
    WrongLastSequence,
    checkpoint,
    kv_values,
    last_on_subject,
    publish_durable,
    read_subject,
)
from .errors import (
    ArtifactHeld,
    BrokerError,
    LeaseError,
    LeaseHeld,
    LeaseLost,
    LeaseNotHeld,
    LeaseRefused,
    StaleToken,
)
from .ids import agent_id as check_agent_id
from .leases import (
    Acquire,
    Artifact,
    Disposition,
    Expired,
    Granted,
    HandedOver,
    HandOver,
    Held,
    Hold,
    LeaseBody,
    LeaseBook,
    LeaseEvent,
    LeaseMode,
    LeaseOutcome,
    NotHolder,
    Release,
    Released,
    Renew,
    Revoke,
    Revoked,
    Root,
    RootState,
    StaleWrite,
    Wait,
    apply,
    parse_broker_time,
    rfc3339,
    utc,
    validate_lease_event,
)
from .state import WireError

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["Lease", "LeaseRequest"]

log = logging.getLogger("baton_client")

#: Attempts of a compare-and-set lease act before giving up on a root that
#: keeps changing (as the Rust SDK).
LEASE_CAS_ATTEMPTS = 32
#: How long to wait for a stored event to be readable (a replica may trail).
READ_BACK_WITHIN = 5.0
#: Outcomes of this agent's own events a view keeps, by event id.
_KEEP_OUTCOMES = 64

_NANOS = 1_000_000_000


def _nanos(seconds: float) -> int:
    return round(seconds * _NANOS)


def _held(artifact: Artifact, hold: Hold) -> LeaseHeld:
    return LeaseHeld(
        artifact.name.value,
        hold.agent,
        hold.mode.value,
        utc(hold.since),
        utc(hold.expires_at),
        hold.token,
        artifact.workflow,
    )


class _RootView:
    """What this agent knows of a root: the fold of its events up to ``seen``."""

    def __init__(self, agent: Agent, artifact: Artifact, operators: frozenset[str]) -> None:
        self.agent = agent
        self.artifact = artifact
        self.filter = subjects.lease_root(artifact)
        self.operators = operators
        self.book = LeaseBook()
        #: The last sequence read on the root, valid event or not: the
        #: compare-and-set expectation of the next act.
        self.seen = 0
        #: How this agent's holds ended: (artifact, token) -> why.
        self.ended: dict[tuple[Artifact, int], str] = {}
        #: How this agent's own events were judged: event id -> (seq, outcome).
        self.judged: dict[str, tuple[int, LeaseOutcome]] = {}

    @classmethod
    async def read(cls, agent: Agent, artifact: Artifact) -> _RootView:
        """The root as it is now: the policy's operators, and the fold of the
        root's events, from the root as the orchestrator stored it when
        there is one (``baton_agent::lease::RootView::read``)."""
        (operators, _), last, materialised = await asyncio.gather(
            agent.policy(),
            last_on_subject(agent.nc, subjects.ARTIFACTS_STREAM, subjects.lease_root(artifact)),
            _stored_root(agent, artifact),
        )
        view = cls(agent, artifact, operators)
        # A root nobody used yet needs no read (and if a replica answered
        # from behind, the compare-and-set says so and the act re-reads).
        if last is not None:
            # Start from the root as the orchestrator stored it (the same
            # fold, with the same published policy), and read only what came
            # after: an act on a root with a long history does not read it
            # all. Without a stored root (no orchestrator, a root too new, a
            # bucket this agent may not read): from the start.
            if materialised is not None:
                view.book.restore_root(materialised)
                view.seen = materialised.last_seq
            await view.catch_up()
        return view

    async def catch_up(self) -> None:
        """Folds the root's events stored after what is known."""
        stored = await read_subject(
            self.agent.nc, subjects.ARTIFACTS_STREAM, self.filter, self.seen + 1
        )
        me = self.agent.id
        for s in stored:
            if s.seq <= self.seen:
                continue
            self.seen = s.seq
            # The one read path: forged or malformed events are not part of
            # the history for any reader.
            try:
                event = validate_lease_event(s.subject, s.data)
            except WireError:
                continue
            if s.time is None:
                raise BrokerError(f"{s.subject} (seq {s.seq}): the broker gave no stored time")
            try:
                at = parse_broker_time(s.time)
            except ValueError as e:
                raise BrokerError(f"{s.subject} (seq {s.seq}): {e}") from None
            # This agent's hold on the event's artifact, which a grant replaces.
            before = {
                event.artifact: h.token for h in self.book.holds(event.artifact) if h.agent == me
            }
            outcome = apply(self.book, event, s.seq, at, self.operators)
            self._note(event, outcome, before)
            if event.agent == me and event.event_id not in self.judged:
                self.judged[event.event_id] = (s.seq, outcome)
                while len(self.judged) > _KEEP_OUTCOMES:
                    del self.judged[next(iter(self.judged))]

    def _note(self, event: LeaseEvent, outcome: LeaseOutcome, before: dict[Artifact, int]) -> None:
        """Remembers why a hold of this agent ended, for :class:`LeaseLost`."""
        me = self.agent.id
        for e in outcome.effects:
            if isinstance(e, Expired) and e.hold.agent == me:
                self.ended[(e.artifact, e.hold.token)] = f"it expired at {rfc3339(e.hold.expires_at)}"
            elif isinstance(e, Revoked) and e.holder == me:
                why = f": {event.body.reason}" if isinstance(event.body, Revoke) and event.body.reason else ""
                self.ended[(e.artifact, e.token)] = f"revoked by {e.by}{why}"
            elif isinstance(e, Released) and e.agent == me:
                self.ended[(e.artifact, e.token)] = "released"
            elif isinstance(e, HandedOver):
                if e.from_agent == me:
                    self.ended[(e.artifact, event.token)] = f"handed over to {e.hold.agent}"
                elif e.hold.agent == me and e.artifact in before:
                    # Unless it had expired first (an effect before this one).
                    self.ended.setdefault(
                        (e.artifact, before[e.artifact]),
                        f"replaced by a hand-over from {e.from_agent} (token {e.hold.token})",
                    )
            elif isinstance(e, Granted) and e.hold.agent == me and e.artifact in before:
                self.ended.setdefault(
                    (e.artifact, before[e.artifact]),
                    f"taken again by this agent (token {e.hold.token})",
                )

    async def publish(self, event: LeaseEvent) -> tuple[int, LeaseOutcome] | None:
        """Publishes with compare-and-set at :attr:`seen`, then folds up to the
        stored event and returns how the stream judged it; ``None`` when
        another event came first (the view has caught up: try again)."""
        try:
            seq = await _send(self.agent, event, Cas(self.seen, self.filter))
        except WrongLastSequence as e:
            await self.catch_up()
            # An earlier attempt may have been stored with its ack lost: if
            # so, it is in what was read now.
            return self.judged.get(event.event_id) if e.after_retry else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_BACK_WITHIN
        while True:
            await self.catch_up()
            if self.seen >= seq:
                break
            if loop.time() > deadline:
                raise BrokerError(
                    f"{self.artifact}: the event stored at {seq} was not readable within "
                    f"{READ_BACK_WITHIN:g}s"
                )
            await asyncio.sleep(0.02)
        judged = self.judged.get(event.event_id)
        if judged is None:
            raise BrokerError(
                f"{self.artifact}: the event stored at {seq} is not one readers accept"
            )
        return judged


async def _stored_root(agent: Agent, artifact: Artifact) -> RootState | None:
    """``artifact``'s root as the orchestrator stored it in KV
    ``baton-leases`` (one direct get), if it is there, readable and that
    root's; ``None`` otherwise, and on any failure to read it (the caller
    folds the root from its start)."""
    bucket = subjects.LEASES_BUCKET
    try:
        stored = await last_on_subject(
            agent.nc, f"KV_{bucket}", f"$KV.{bucket}.{subjects.lease_root_key(artifact)}"
        )
    except BrokerError:
        return None
    if stored is None or stored.is_kv_tombstone:
        return None
    try:
        state = RootState.decode(stored.data)
    except WireError:
        return None
    return state if state.contains(artifact) else None


async def _send(agent: Agent, event: LeaseEvent, cas: Cas | None) -> int:
    """Publishes ``event`` on its subject (durably, retried with its id);
    returns its stream sequence."""
    return await publish_durable(
        agent.nc, event.subject, event.encode(), event.event_id, cas, agent._retry, agent._denials
    )


async def publish_plain(agent: Agent, artifact: Artifact, body: LeaseBody) -> int:
    """Publishes an event that changes no hold (a :class:`Wait`, a
    :class:`StaleWrite`) without compare-and-set; returns its stream
    sequence. Refused here, as every act, if every reader would refuse it."""
    return await _send(agent, _checked(agent, artifact, 0, body), None)


def _checked(agent: Agent, artifact: Artifact, token: int, body: LeaseBody) -> LeaseEvent:
    """A new event from ``agent``, refused here (nothing published) when
    every reader would refuse it (a reason over its limit)."""
    event = LeaseEvent(
        event_id=agent._nuid.next().decode(),
        agent=agent.id,
        artifact=artifact,
        token=token,
        occurred_at=time.time_ns(),
        body=body,
    )
    try:
        validate_lease_event(event.subject, event.encode())
    except WireError as e:
        raise LeaseRefused(artifact.name.value, f"not published: {e}", artifact.workflow) from None
    return event


async def acquire(
    agent: Agent,
    artifact: Artifact,
    mode: LeaseMode,
    ttl: float,
    task: str | None,
    auto_renew: bool,
    record_wait: bool = True,
) -> Lease:
    """Takes the lease; when refused (:class:`LeaseHeld`) and ``record_wait``,
    records this agent as waiting for it, in ``mode``, for ``ttl``."""
    return await _try_acquire(agent, artifact, mode, ttl, task, auto_renew, record_wait)


async def _refused(
    agent: Agent,
    view: _RootView,
    artifact: Artifact,
    mode: LeaseMode,
    ttl: float,
    record_wait: bool,
    error: LeaseHeld,
) -> LeaseHeld:
    """``error``, after recording this agent's wait if asked and its wait in
    the stream does not still have most of its ttl to run (an agent polling
    for a lease would otherwise write at its polling rate, and every write
    makes the holder's next act retry)."""
    ttl_ns = _nanos(ttl)
    fresh = any(
        w.agent == agent.id
        and w.mode == mode
        and w.ttl == ttl_ns
        and w.renewed_at + ttl_ns // 3 > time.time_ns()
        for w in view.book.waiters(artifact)
    )
    if record_wait and not fresh:
        # Best effort: the refusal stands whether or not the wait is
        # recorded (it lapses at its ttl anyway).
        try:
            await publish_plain(agent, artifact, Wait(mode, ttl_ns))
        except Exception as e:
            log.warning("could not record the wait for a lease on %s: %s", artifact, e)
    return error


async def stop_waiting(agent: Agent, artifact: Artifact, mode: LeaseMode) -> int:
    """Ends this agent's wait for ``artifact`` (a wait with ttl 0); returns
    its stream sequence."""
    return await publish_plain(agent, artifact, Wait(mode, 0))


async def report_stale_write(
    agent: Agent, artifact: Artifact, writer: str | None, refused: StaleToken
) -> int:
    """Reports, as the store ``agent``, the write to ``artifact`` its fence
    ``refused`` (by ``writer`` if known); returns the report's stream sequence."""
    return await publish_plain(agent, artifact, StaleWrite(writer, refused.token, refused.seen))


async def _try_acquire(
    agent: Agent,
    artifact: Artifact,
    mode: LeaseMode,
    ttl: float,
    task: str | None,
    auto_renew: bool,
    record_wait: bool,
) -> Lease:
    view = await _RootView.read(agent, artifact)
    event = _checked(agent, artifact, 0, Acquire(mode, _nanos(ttl), task))
    for _ in range(LEASE_CAS_ATTEMPTS):
        # What the stream says now; a hold this clock thinks expired is
        # tried, and the broker's time decides.
        for on, hold in view.book.conflicts(artifact, agent.id, mode, time.time_ns()):
            raise await _refused(agent, view, artifact, mode, ttl, record_wait, _held(on, hold))
        judged = await view.publish(event)
        if judged is None:
            continue  # someone else acted on the root first: look again
        _, outcome = judged
        if outcome.disposition is Disposition.APPLIED:
            token = outcome.granted_token or 0
            return Lease._start(agent, artifact, mode, token, _nanos(ttl), view, auto_renew)
        if isinstance(outcome.refusal, Held):
            held = _held(outcome.refusal.artifact, outcome.refusal.hold)
            raise await _refused(agent, view, artifact, mode, ttl, record_wait, held)
        raise LeaseRefused(
            artifact.name.value, f"acquisition refused: {outcome.refusal}", artifact.workflow
        )
    raise BrokerError(
        f"{artifact}: its root kept changing; giving up after {LEASE_CAS_ATTEMPTS} attempts"
    )


async def resume(agent: Agent, artifact: Artifact, auto_renew: bool) -> Lease:
    view = await _RootView.read(agent, artifact)
    now = time.time_ns()
    for hold in view.book.holds(artifact):
        if hold.agent == agent.id and hold.expires_at >= now:
            break
    else:
        raise LeaseNotHeld(artifact.name.value, artifact.workflow)
    # Renew on the hold's schedule, not from now: it may be due already.
    age = max(0, now - hold.renewed_at) / _NANOS
    last_sent = asyncio.get_running_loop().time() - age
    return Lease._start(
        agent, artifact, hold.mode, hold.token, hold.ttl, view, auto_renew, last_sent=last_sent
    )


async def revoke(agent: Agent, artifact: Artifact, holder: str, reason: str) -> int:
    view = await _RootView.read(agent, artifact)
    name, workflow = artifact.name.value, artifact.workflow
    if view.operators and agent.id not in view.operators:
        raise LeaseRefused(name, f"{agent.id} is not an operator; only operators may revoke", workflow)
    event = _checked(agent, artifact, 0, Revoke(holder, reason))
    for _ in range(LEASE_CAS_ATTEMPTS):
        if not any(h.agent == holder for h in view.book.holds(artifact)):
            raise LeaseRefused(name, f"{holder} holds no lease on it", workflow)
        judged = await view.publish(event)
        if judged is None:
            continue
        seq, outcome = judged
        if outcome.disposition is Disposition.APPLIED:
            return seq
        why = (
            f"{holder} holds no lease on it"
            if isinstance(outcome.refusal, NotHolder)
            else str(outcome.refusal)
        )
        raise LeaseRefused(name, f"revocation of {holder}'s lease refused: {why}", workflow)
    raise BrokerError(
        f"{artifact}: its root kept changing; giving up after {LEASE_CAS_ATTEMPTS} attempts"
    )


async def lease_checkpoint(agent: Agent) -> int:
    """The ``BATON_ARTIFACTS`` sequence up to which every root is stored in
    KV ``baton-leases`` (checkpoint ``baton-orchestrator-leases``); 0 when
    there is none or it cannot be read."""
    return await checkpoint(agent.nc, subjects.LEASES_CHECKPOINT) or 0


async def read_all(agent: Agent, workflow: str | None) -> LeaseBook:
    """The fold of ``BATON_ARTIFACTS`` (or of one workflow's scope), from the
    roots the orchestrator materialised in KV ``baton-leases`` brought up to
    date with the events stored since its checkpoint
    (``baton_agent::Agent::leases``): the same book as folding the whole
    stream, without reading its whole history. Without an orchestrator, or
    when any stored root of the scope is unreadable, the whole stream is
    folded."""
    operators, _ = await agent.policy()
    # The checkpoint first: every root it covers is stored by then, so a
    # root read after it is at least as new.
    upto = await lease_checkpoint(agent)
    book = LeaseBook()
    # Per root: the last sequence its stored state has; the root's events
    # up to it are in the book already (a root may be stored beyond the
    # checkpoint: written, then the checkpoint not yet).
    stored_seq: dict[Root, int] = {}
    prefix = None if workflow is None else subjects.lease_scope_key_prefix(workflow)
    try:
        for key, stored in await kv_values(agent.nc, subjects.LEASES_BUCKET):
            if prefix is not None and not key.startswith(prefix):
                continue
            state = RootState.decode(stored.data)
            book.restore_root(state)
            stored_seq[state.root] = state.last_seq
    except (BrokerError, WireError):
        # A root unreadable, or the bucket: fold everything from the stream.
        book = LeaseBook()
        stored_seq.clear()
        upto = 0
    scope = subjects.ARTIFACTS_ALL if workflow is None else f"baton.art.{workflow}.>"
    for s in await read_subject(agent.nc, subjects.ARTIFACTS_STREAM, scope, upto + 1):
        try:
            event = validate_lease_event(s.subject, s.data)
        except WireError:
            continue
        seen = stored_seq.get(event.artifact.root)
        if seen is not None and s.seq <= seen:
            continue
        if s.time is None:
            raise BrokerError(f"{s.subject} (seq {s.seq}): the broker gave no stored time")
        apply(book, event, s.seq, parse_broker_time(s.time), operators)
    return book


async def lease_for_task(
    agent: Agent, task: str, workflow: str, names: Iterable[str], ttl: float
) -> list[Lease]:
    """Takes an exclusive lease on each of a task's declared artifacts, in
    name order, all or none: on the first refusal the ones taken are released
    and :class:`~baton_client.errors.ArtifactHeld` raised (a broker failure
    is raised as it is)."""
    taken: list[Lease] = []
    try:
        for name in sorted(set(names)):
            artifact = Artifact.of(name, workflow)
            taken.append(await acquire(agent, artifact, LeaseMode.EXCLUSIVE, ttl, task, True))
    except LeaseError as e:
        await release_all(taken, "the task's other artifacts are held")
        raise ArtifactHeld(task, e) from None
    except BaseException:
        await release_all(taken, "the task's other artifacts are held")
        raise
    return taken


async def release_all(leases: Iterable[Lease], reason: str) -> None:
    """Releases every lease (a failure is logged: the lease lapses at its ttl)."""
    for lease in leases:
        try:
            await lease.release(reason)
        except LeaseLost:
            pass  # gone already
        except Exception as e:
            log.warning("could not release the lease on %s (%s); it lapses at its ttl", lease.artifact, e)


async def hand_over_all(leases: Iterable[Lease], to: str, ttl: float) -> None:
    """Hands every lease to ``to`` for ``ttl`` seconds (a failure is logged:
    the lease lapses at its ttl)."""
    for lease in leases:
        try:
            await lease.hand_over(to, ttl)
        except LeaseLost:
            pass
        except Exception as e:
            log.warning("could not hand the lease on %s over (%s); it lapses at its ttl", lease.artifact, e)


class _Shared:
    """The handle's state, shared with its renewal task (so the handle itself
    can be garbage-collected while renewals run)."""

    def __init__(
        self,
        agent: Agent,
        artifact: Artifact,
        mode: LeaseMode,
        token: int,
        ttl: int,
        view: _RootView,
        last_sent: float,
    ) -> None:
        self.agent = agent
        self.artifact = artifact
        self.mode = mode
        self.token = token
        #: Nanoseconds.
        self.ttl = ttl
        self.view = view
        self.last_sent = last_sent
        self.lock = asyncio.Lock()
        #: Why the lease is gone, once the stream says so.
        self.lost: str | None = None
        self.lost_event = asyncio.Event()
        #: How this handle ended (released, handed over, detached).
        self.spent: str | None = None
        self.renewals: asyncio.Task[None] | None = None

    def error(self, reason: str) -> LeaseLost:
        return LeaseLost(self.artifact.name.value, self.token, reason, self.artifact.workflow)

    def stop_renewals(self) -> None:
        task = self.renewals
        self.renewals = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def finish(self, how: str) -> None:
        """The handle acts no more."""
        if self.spent is None:
            self.spent = how
        self.stop_renewals()
        self.agent._live_leases.discard(self)

    def refusal(self) -> LeaseLost | None:
        if self.lost is not None:
            return self.error(self.lost)
        if self.spent is not None:
            return self.error(f"this handle is spent ({self.spent})")
        return None

    def why_lost(self, outcome: LeaseOutcome) -> str:
        """Why this agent's hold is gone, from what the view folded."""
        known = self.view.ended.get((self.artifact, self.token))
        if known is not None:
            return known
        if outcome.refusal is not None:
            return f"{outcome.refusal} (expired, revoked or handed on)"
        return "it is no longer held"

    async def act(self, body: LeaseBody) -> tuple[int, LeaseOutcome]:
        """Publishes a holder's act with compare-and-set; on conflict folds
        the root's new events and tries again. A refusal means the hold is
        gone: the handle is lost."""
        async with self.lock:
            refused = self.refusal()
            if refused is not None:
                raise refused
            event = _checked(self.agent, self.artifact, self.token, body)
            loop = asyncio.get_running_loop()
            for _ in range(LEASE_CAS_ATTEMPTS):
                sent = loop.time()
                judged = await self.view.publish(event)
                if judged is None:
                    continue
                if judged[1].disposition is Disposition.APPLIED:
                    self.last_sent = sent
                    return judged
                # Refused for a conflict (a hand-over the recipient cannot
                # take): the lease is still this agent's.
                refusal = judged[1].refusal
                if isinstance(refusal, Held):
                    raise _held(refusal.artifact, refusal.hold)
                reason = self.why_lost(judged[1])
                self.lost = reason
                self.lost_event.set()
                self.finish("lost")
                raise self.error(reason)
        raise BrokerError(
            f"{self.artifact}: its root kept changing; giving up after {LEASE_CAS_ATTEMPTS} attempts"
        )

    async def renew_loop(self) -> None:
        """Renews whenever a third of the ttl passed since the last act; stops
        when the lease is lost or the handle spent."""
        every = max(self.ttl / _NANOS / 3, 0.05)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self.last_sent + every - loop.time()))
            if loop.time() - self.last_sent < every:
                continue
            try:
                await self.act(Renew())
            except BrokerError as e:
                log.warning("lease on %s: renewal not delivered (%s); retrying", self.artifact, e)
                self.last_sent = loop.time()
            except LeaseError as e:
                if self.spent is None or self.lost is not None:
                    log.warning("lease on %s: stopping renewals: %s", self.artifact, e)
                return

    async def release_dropped(self) -> None:
        try:
            await self.act(Release("dropped"))
            self.finish("released (dropped)")
        except LeaseLost as e:
            log.info("lease on %s: not released on drop: %s", self.artifact, e)
        except Exception as e:
            log.warning("lease on %s: could not release a dropped lease: %s", self.artifact, e)


class Lease:
    """Proof that this agent holds a lease on an artifact under a fencing
    token. Obtain it from :meth:`Agent.acquire <baton_client.Agent.acquire>`
    or :meth:`Agent.resume_lease <baton_client.Agent.resume_lease>`."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared

    @classmethod
    def _start(
        cls,
        agent: Agent,
        artifact: Artifact,
        mode: LeaseMode,
        token: int,
        ttl: int,
        view: _RootView,
        auto_renew: bool,
        *,
        last_sent: float | None = None,
    ) -> Lease:
        loop = asyncio.get_running_loop()
        shared = _Shared(
            agent, artifact, mode, token, ttl, view, loop.time() if last_sent is None else last_sent
        )
        if auto_renew:
            shared.renewals = loop.create_task(
                shared.renew_loop(), name=f"baton-lease-renewals-{artifact}"
            )
        agent._live_leases.add(shared)
        return cls(shared)

    # -- facts ----------------------------------------------------------------

    @property
    def artifact(self) -> str:
        """The artifact's name, normalised (``drafts/`` is ``drafts``)."""
        return self._shared.artifact.name.value

    @property
    def workflow(self) -> str | None:
        """The scope: a workflow, or ``None`` for the global scope."""
        return self._shared.artifact.workflow

    @property
    def mode(self) -> LeaseMode:
        return self._shared.mode

    @property
    def token(self) -> int:
        """The fencing token: send it with every write made under this lease."""
        return self._shared.token

    @property
    def ttl(self) -> float:
        """How long the lease lives without a renewal, in seconds."""
        return self._shared.ttl / _NANOS

    @property
    def is_lost(self) -> bool:
        """Whether the lease is known to be gone (found at a renewal or act)."""
        return self._shared.lost is not None

    @property
    def is_spent(self) -> bool:
        """Whether the handle can no longer act (released, handed over,
        detached, or lost)."""
        return self._shared.spent is not None

    def __repr__(self) -> str:
        s = self._shared
        state = f", spent={s.spent!r}" if s.spent else ""
        return f"Lease(artifact={str(s.artifact)!r}, mode={s.mode.value!r}, token={s.token}{state})"

    async def lost(self) -> None:
        """Completes when the lease is found to be gone (at a renewal)."""
        await self._shared.lost_event.wait()

    # -- acts -----------------------------------------------------------------

    async def renew(self) -> int:
        """Renews now: the lease runs for another ttl from the renewal's
        stored time. Returns its stream sequence. Raises
        :class:`~baton_client.errors.LeaseLost` if the lease is gone
        (expired, revoked, handed on)."""
        seq, _ = await self._shared.act(Renew())
        return seq

    async def release(self, reason: str = "") -> int:
        """Lets go of the lease (the handle is spent); returns the release's
        stream sequence."""
        shared = self._shared
        refused = shared.refusal()
        if refused is not None:
            raise refused
        shared.stop_renewals()
        seq, _ = await shared.act(Release(reason))
        shared.finish("released")
        return seq

    async def hand_over(self, to_agent: str, ttl: float | None = None) -> int:
        """Gives the lease to ``to_agent``, who holds it for ``ttl`` seconds
        from now (default: this lease's ttl) and takes it up with
        :meth:`Agent.resume_lease <baton_client.Agent.resume_lease>`. The
        handle is spent; returns the recipient's (new, higher) token."""
        shared = self._shared
        check_agent_id(to_agent)
        if to_agent == shared.agent.id:
            raise LeaseRefused(
                self.artifact, "a lease cannot be handed to its holder", self.workflow
            )
        seconds = self.ttl if ttl is None else ttl
        if seconds <= 0:
            raise ValueError(f"ttl must be positive, got {seconds}")
        refused = shared.refusal()
        if refused is not None:
            raise refused
        renewing = shared.renewals is not None
        shared.stop_renewals()
        try:
            _, outcome = await shared.act(HandOver(to_agent, _nanos(seconds)))
        except LeaseHeld:
            # The recipient cannot take it (it would conflict with another
            # of this agent's holds): still ours, renewing again.
            if renewing:
                shared.renewals = asyncio.get_running_loop().create_task(
                    shared.renew_loop(), name=f"baton-lease-renewals-{shared.artifact}"
                )
            raise
        shared.finish(f"handed over to {to_agent}")
        return outcome.granted_token or 0

    def detach(self) -> None:
        """Stops renewing and does not release when dropped: the lease lapses
        at its ttl unless another process resumes it."""
        self._shared.finish("detached")

    # -- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shared = self._shared
        if shared.spent is not None or shared.lost is not None:
            shared.stop_renewals()
            return
        shared.stop_renewals()
        try:
            await shared.act(Release("dropped"))
            shared.finish("released (dropped)")
        except LeaseLost:
            pass  # gone already: nothing to release
        except Exception as e:
            shared.finish("release on exit failed")
            if exc is None:
                raise
            log.warning("lease on %s: could not release on exit: %s", shared.artifact, e)

    def __del__(self) -> None:
        shared = getattr(self, "_shared", None)
        if shared is None or shared.spent is not None or shared.lost is not None:
            return
        # Never hold on by accident: a dropped handle releases the lease.
        agent = shared.agent
        shared.stop_renewals()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("lease on %s dropped outside a running loop; it lapses at its ttl", shared.artifact)
            return
        if agent._closed:
            return
        task = loop.create_task(shared.release_dropped(), name=f"baton-lease-release-{shared.artifact}")
        agent._background.add(task)
        task.add_done_callback(agent._background.discard)


class LeaseRequest:
    """An acquisition in flight. Await it for the :class:`Lease`, or use it
    as an async context manager, which releases the lease when the block
    exits (unless it was released, handed over or detached)::

        lease = await agent.acquire("drafts/post.md")
        async with agent.acquire("drafts/post.md", "shared") as lease:
            ...
    """

    def __init__(self, start: Callable[[], Awaitable[Lease]]) -> None:
        self._start = start
        self._lease: Lease | None = None

    def __await__(self) -> Generator[Any, None, Lease]:
        return self._start().__await__()

    async def __aenter__(self) -> Lease:
        self._lease = await self._start()
        return self._lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lease is not None:
            await self._lease.__aexit__(exc_type, exc, tb)
