"""The agent: a connection with an identity, and the acts that need no
ownership (create, claim, accept or reject a handoff, operator acts).

The Python counterpart of ``baton_agent::Agent``; the same protocol, the same
compare-and-set, so Python and Rust agents can race for the same task::

    agent = await Agent.connect("nats://127.0.0.1:4222", "writer-1")
    await agent.create_task("t1", "wf1", stage="draft", title="Write the intro")
    async with agent.claim("t1") as owned:       # ClaimLost if someone was faster
        await owned.heartbeat("outline done", progress=True)
        await owned.offer_to_stage("review", "s3://bucket/t1/draft.md")
    await agent.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from nats.nuid import NUID

from . import pb, subjects
from ._transport import (
    Cas,
    Denials,
    Retry,
    WrongLastSequence,
    last_on_subject,
    publish_durable,
    read_subject,
)
from .errors import (
    AlreadyYours,
    BrokerError,
    ClaimLost,
    HandoffError,
    NoOffer,
    NotAssignee,
    NotForYou,
    NotOwned,
    Taken,
    TaskEnded,
    TaskExists,
    UnknownTask,
)
from .identity import read_identity_file
from .ids import agent_id as check_agent_id
from .ids import stage_name, task_id, workflow_id
from .state import MAX_TASK_ARTIFACTS, TaskStatus, TaskView, WireError, apply

if TYPE_CHECKING:
    from .alerts import AlertSubscription
    from .context import ContextRecord
    from .errors import StaleToken
    from .lease_handle import Lease, LeaseRequest
    from .lease_handle import _Shared as _LeaseShared
    from .leases import LeaseBook, LeaseMode
    from .ownership import Ownership, _Shared

__all__ = ["Agent", "OwnershipRequest", "duration"]

log = logging.getLogger("baton_client")

#: Attempts of a compare-and-set act before giving up on a task that keeps changing.
CAS_ATTEMPTS = 8


def duration(seconds: float) -> Duration:
    """A ``google.protobuf.Duration`` of ``seconds`` (rounded to nanoseconds)."""
    if seconds < 0:
        raise ValueError(f"negative duration {seconds}")
    nanos_total = round(seconds * 1e9)
    return Duration(seconds=nanos_total // 1_000_000_000, nanos=nanos_total % 1_000_000_000)


class OwnershipRequest:
    """A claim, acceptance or resumption in flight.

    Await it for the :class:`~baton_client.ownership.Ownership` handle, or use
    it directly as an async context manager: the handle is released with
    reason ``"dropped"`` if the block exits without a final act::

        owned = await agent.claim("t1")
        async with agent.claim("t1") as owned:
            ...
    """

    def __init__(self, start: Callable[[], Awaitable[Ownership]]) -> None:
        self._start = start
        self._handle: Ownership | None = None

    def __await__(self) -> Generator[Any, None, Ownership]:
        return self._start().__await__()

    async def __aenter__(self) -> Ownership:
        self._handle = await self._start()
        return await self._handle.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            await self._handle.__aexit__(exc_type, exc, tb)


class Agent:
    """A connected agent. Create with :meth:`connect`; close with :meth:`close`
    (or use ``async with``)."""

    def __init__(
        self,
        nc: NATS,
        agent_id: str,
        tasks: KeyValue,
        *,
        lease: float,
        retry: Retry,
        operators: frozenset[str],
        denials: Denials | None = None,
    ) -> None:
        self._nc = nc
        #: Publishes the server refused on this connection.
        self._denials = denials or Denials()
        self._id = agent_id
        self._tasks = tasks
        self._policy_kv: Any = None
        self._lease = lease
        self._retry = retry
        self._operators = operators
        self._nuid = NUID()
        #: Decision-record version read per workflow; every event carries it.
        self._read_versions: dict[str, int] = {}
        #: Releases of handles dropped without a final act, awaited by close().
        self._background: set[asyncio.Task[None]] = set()
        #: Handles still acting (heartbeating).
        self._live: set[_Shared] = set()
        #: Artifact leases still held by a handle (renewing).
        self._live_leases: set[_LeaseShared] = set()
        self._closed = False

    # -- connection -------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str],
        agent_id: str,
        *,
        creds: str | os.PathLike[str] | None = None,
        nkey_seed: str | os.PathLike[str] | None = None,
        tls: ssl.SSLContext | None = None,
        inbox_prefix: str | None = None,
        lease: float = 30.0,
        retry: Retry | None = None,
        operators: Sequence[str] = (),
        name: str | None = None,
        connect_timeout: float = 5.0,
    ) -> Agent:
        """Connects as ``agent_id``. The Baton streams and buckets must exist
        (the services create them).

        Args:
            servers: URL(s), a list or comma-separated (``nats://127.0.0.1:4222``).
            agent_id: this agent's id, ``[A-Za-z0-9_-]{1,128}`` starting with a
                letter or digit (:class:`~baton_client.errors.InvalidId` otherwise).
            creds: a ``.creds`` file (JWT + nkey seed; needs the ``nkeys`` package).
            nkey_seed: an nkey seed (``SU...``) or a file holding one, such as
                an identity file from ``baton auth`` (needs the ``nkeys``
                package); its ``# inbox:`` line sets ``inbox_prefix`` when
                that is not given.
            tls: an SSL context (CA, client certificate) for TLS.
            inbox_prefix: where replies go; ``None`` = ``_INBOX``. Use
                :meth:`agent_inbox_prefix` when permissions only let this agent
                subscribe to ``_INBOX_<agent>.>``.
            lease: the lease this agent commits to when claiming, in seconds;
                heartbeats go out automatically at a third of it.
            retry: how long to retry a publish the broker did not acknowledge.
            operators: used only until an orchestrator has published its
                policy (KV ``baton-policy``), which every fold here follows.
            name: connection name shown in server monitoring.
        """
        check_agent_id(agent_id)
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease}")
        server_list = (
            [s.strip() for s in servers.split(",") if s.strip()]
            if isinstance(servers, str)
            else list(servers)
        )
        options: dict[str, Any] = {
            "servers": server_list,
            "name": name or f"baton-agent-{agent_id}",
            "connect_timeout": connect_timeout,
            "allow_reconnect": True,
            # Fail fast when no server answers at first (each server is
            # tried twice), like async-nats; reconnect forever once connected.
            "max_reconnect_attempts": 1,
        }
        if creds is not None:
            options["user_credentials"] = os.fspath(creds)
        if nkey_seed is not None:
            seed = os.fspath(nkey_seed)
            if os.path.isfile(seed):
                identity = read_identity_file(seed)
                options["nkeys_seed_str"] = identity.seed
                if inbox_prefix is None:
                    inbox_prefix = identity.inbox
            else:
                options["nkeys_seed_str"] = seed
        if tls is not None:
            options["tls"] = tls
        if inbox_prefix is not None:
            options["inbox_prefix"] = inbox_prefix

        denials = Denials()

        async def quiet_error(e: Exception) -> None:
            if denials.report(e):
                log.warning("the NATS server refused a publish: %s", e)
            else:
                log.debug("nats: %s", e)

        options["error_cb"] = quiet_error
        try:
            nc = await nats.connect(**options)
        except Exception as e:  # nats-py raises many kinds here
            raise BrokerError(
                f"cannot connect to NATS at {', '.join(server_list)}: {type(e).__name__}: {e}"
            ) from e
        nc.options["max_reconnect_attempts"] = -1
        try:
            kv = await nc.jetstream().key_value(subjects.TASKS_BUCKET)
        except Exception as e:
            await nc.close()
            raise BrokerError(
                f"KV bucket {subjects.TASKS_BUCKET} not found ({type(e).__name__}: {e}): "
                "start the Baton services (or `baton dev`) first"
            ) from e
        return cls(
            nc,
            agent_id,
            kv,
            lease=lease,
            retry=retry or Retry(),
            operators=frozenset(operators),
            denials=denials,
        )

    @staticmethod
    def agent_inbox_prefix(agent_id: str) -> str:
        """``_INBOX_<agent>``: the inbox prefix to pass to :meth:`connect` when
        the server's permissions only let the agent subscribe there."""
        return f"_INBOX_{check_agent_id(agent_id)}"

    @property
    def id(self) -> str:
        """This agent's id."""
        return self._id

    @property
    def nc(self) -> NATS:
        """The underlying nats-py connection."""
        return self._nc

    @property
    def lease(self) -> float:
        """The lease this agent commits to when claiming, in seconds."""
        return self._lease

    async def close(self) -> None:
        """Waits for background releases (of handles dropped without a final
        act), stops the heartbeats of live handles (they keep ownership: the
        stall detector will notice the silence) and the renewals of live
        artifact leases (they lapse at their ttl), and closes the connection."""
        if self._closed:
            return
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for shared in list(self._live):
            shared.stop_heartbeats()
        self._live.clear()
        for lease in list(self._live_leases):
            lease.stop_renewals()
        self._live_leases.clear()
        self._closed = True
        try:
            await self._nc.flush(timeout=2)
        except Exception:  # already gone
            pass
        await self._nc.close()

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- tasks ---------------------------------------------------------------

    async def create_task(
        self,
        task: str,
        workflow: str,
        *,
        stage: str | None = None,
        title: str = "",
        assignee: str | None = None,
        start_within: float | None = None,
        deadline_within: float | None = None,
        heartbeat_within: float | None = None,
        progress_within: float | None = None,
        artifacts: Sequence[str] = (),
    ) -> int:
        """Creates a task (stored once even if retried); returns its stream
        sequence. Windows are in seconds; unset ones come from the stall rules.
        ``artifacts`` are the artifacts the task will write (names as for
        :meth:`acquire`, in the workflow's scope; at most 16): claiming or
        accepting the task takes an exclusive lease on each, all or none.

        Published with compare-and-set on the task's subjects (expected last
        sequence 0): raises :class:`~baton_client.errors.TaskExists` when the
        task exists already, and nothing is stored."""
        from .leases import ArtifactName

        task_id(task)
        workflow_id(workflow)
        if len(artifacts) > MAX_TASK_ARTIFACTS:
            raise ValueError(f"{len(artifacts)} artifacts, at most {MAX_TASK_ARTIFACTS}")
        body = pb.TaskCreated(title=title, artifacts=[ArtifactName(a).value for a in artifacts])
        if stage is not None:
            body.stage = stage_name(stage)
        if assignee is not None:
            body.assignee = check_agent_id(assignee)
        for field, value in (
            ("start_within", start_within),
            ("deadline_within", deadline_within),
            ("heartbeat_within", heartbeat_within),
            ("progress_within", progress_within),
        ):
            if value is not None:
                getattr(body, field).CopyFrom(duration(value))
        event = self.event(task, workflow, 0, created=body)
        seq = await self._publish_cas(event, 0)
        if seq is None:
            try:
                view, _ = await self._current(task)
            except (BrokerError, WireError):  # only the status is missing then
                view = None
            raise TaskExists(task, str(view.status) if view is not None else None)
        return seq

    def claim(self, task: str, *, lease: float | None = None) -> OwnershipRequest:
        """Takes an unowned task. Of several agents claiming at once exactly one
        succeeds; the others get :class:`~baton_client.errors.ClaimLost` naming
        the owner.

        A task that declares artifacts (``create_task(..., artifacts=...)``)
        is claimed only with an exclusive lease on each, taken first (in name
        order, all or none): the handle's ``leases``, released at the task's
        end or handed to the recipient of an agent offer.

        Raises (when awaited) :class:`ClaimLost`, :class:`AlreadyYours`,
        :class:`NotAssignee`, :class:`~baton_client.errors.ArtifactHeld` (an
        artifact is leased by another agent: nothing was taken),
        :class:`UnknownTask`, :class:`TaskEnded` or :class:`BrokerError`.
        """
        task_id(task)
        use = self._lease if lease is None else lease
        if use <= 0:
            raise ValueError(f"lease must be positive, got {use}")
        return OwnershipRequest(lambda: self._claim(task, use))

    async def _claim(self, task: str, lease: float) -> Ownership:
        from .lease_handle import lease_for_task, release_all
        from .ownership import Ownership

        # The task's declared artifacts, leased before the claim is sent (all
        # or none) and released if the claim is not stored.
        leases: list[Lease] | None = None
        try:
            for _ in range(CAS_ATTEMPTS):
                view, last_seq = await self._current(task)
                if view is None:
                    raise UnknownTask(task)
                if view.status.is_terminal:
                    raise TaskEnded(task, str(view.status))
                if view.owner is not None:
                    if view.owner == self._id:
                        raise AlreadyYours(task, view.epoch)
                    raise ClaimLost(task, view.owner, view.epoch)
                if view.assignee is not None and view.assignee != self._id:
                    raise NotAssignee(task, view.assignee)
                if leases is None:
                    leases = await lease_for_task(self, task, view.workflow_id, view.artifacts, lease)
                event = self.event(
                    task, view.workflow_id, 0, claimed=pb.Claimed(heartbeat_within=duration(lease))
                )
                seq = await self._publish_cas(event, last_seq)
                if seq is not None:
                    owned = Ownership._start(
                        self, task, view.workflow_id, view.epoch + 1, seq, lease, leases=leases
                    )
                    leases = None  # the handle has them
                    return owned
                # Someone else's event came first: look again.
            raise BrokerError(
                f"task {task} kept changing while claiming; giving up after {CAS_ATTEMPTS} attempts"
            )
        finally:
            if leases:
                await release_all(leases, "the task was not claimed")

    def resume(self, task: str, *, detached: bool = False) -> OwnershipRequest:
        """Takes over ownership this agent already holds (e.g. after its process
        restarted), with the leases on its declared artifacts that this agent
        still holds. With ``detached`` the handle sends no heartbeats, does not
        release the task when dropped (a process that performs one act and
        exits) and takes up no leases.

        Raises (when awaited) :class:`NotOwned`, :class:`ClaimLost` (someone else
        owns it), :class:`UnknownTask`, :class:`TaskEnded`.
        """
        task_id(task)
        return OwnershipRequest(lambda: self._resume(task, detached))

    async def _resume(self, task: str, detached: bool) -> Ownership:
        from .errors import LeaseNotHeld
        from .lease_handle import resume as resume_lease
        from .leases import Artifact
        from .ownership import Ownership

        view, last_seq = await self._current(task)
        if view is None:
            raise UnknownTask(task)
        if view.status.is_terminal:
            raise TaskEnded(task, str(view.status))
        if view.owner is None:
            raise NotOwned(task)
        if view.owner != self._id:
            raise ClaimLost(task, view.owner, view.epoch)
        lease = view.lease or self._lease
        # The leases on its declared artifacts this agent still holds renew
        # again from now (one that lapsed meanwhile is not taken again:
        # acquire it, and check the store's token).
        leases: list[Lease] = []
        if not detached:
            for name in view.artifacts:
                try:
                    leases.append(
                        await resume_lease(self, Artifact.of(name, view.workflow_id), True)
                    )
                except LeaseNotHeld as e:
                    log.warning("task %s: a declared artifact's lease is not held: %s", task, e)
        return Ownership._start(
            self, task, view.workflow_id, view.epoch, last_seq, lease, detached=detached, leases=leases
        )

    def accept_handoff(self, task: str) -> OwnershipRequest:
        """Accepts the handoff offered to this agent (or to a stage): the agent
        becomes the owner at the next epoch.

        The task's declared artifacts are leased first, as for a claim.

        Raises (when awaited) :class:`NoOffer`, :class:`NotForYou`,
        :class:`Taken`, :class:`~baton_client.errors.ArtifactHeld`,
        :class:`UnknownTask`, :class:`TaskEnded` or :class:`BrokerError`.
        """
        task_id(task)
        return OwnershipRequest(lambda: self._accept(task))

    async def _accept(self, task: str) -> Ownership:
        from .lease_handle import lease_for_task, release_all
        from .ownership import Ownership

        leases: list[Lease] | None = None
        try:
            for _ in range(CAS_ATTEMPTS):
                view, last_seq = await self._current(task)
                view = self._check_offer(task, view)
                if view.owner == self._id:
                    # Not even a stage offer may be accepted by its own sender.
                    raise HandoffError(
                        f"task {task}: the pending offer is this agent's own; it cannot accept it"
                    )
                # The new owner commits to its lease, as a claim does, so the
                # detector expects heartbeats at the pace this client sends them.
                lease = self._lease
                if leases is None:
                    # Handed over with the offer, or free: taken again under a
                    # new token (all or none).
                    leases = await lease_for_task(self, task, view.workflow_id, view.artifacts, lease)
                accepted = pb.HandoffAccepted()
                accepted.heartbeat_within.FromNanoseconds(int(lease * 1e9))
                event = self.event(task, view.workflow_id, 0, handoff_accepted=accepted)
                seq = await self._publish_cas(event, last_seq)
                if seq is not None:
                    owned = Ownership._start(
                        self, task, view.workflow_id, view.epoch + 1, seq, lease, leases=leases
                    )
                    leases = None
                    return owned
            raise BrokerError(
                f"task {task} kept changing while accepting; giving up after {CAS_ATTEMPTS} attempts"
            )
        finally:
            if leases:
                await release_all(leases, "the handoff was not accepted")

    async def reject_handoff(self, task: str, reason: str) -> int:
        """Declines the handoff offered to this agent; the sender keeps the task.
        Returns the rejection's stream sequence."""
        task_id(task)
        for _ in range(CAS_ATTEMPTS):
            view, last_seq = await self._current(task)
            view = self._check_offer(task, view)
            if view.owner == self._id:
                # The fold refuses a rejection from the offer's own sender (a
                # stage offer passes the recipient check): do not publish one.
                raise HandoffError(
                    f"task {task}: the pending offer is this agent's own; it cannot reject it"
                )
            event = self.event(
                task, view.workflow_id, 0, handoff_rejected=pb.HandoffRejected(reason=reason)
            )
            seq = await self._publish_cas(event, last_seq)
            if seq is not None:
                return seq
        raise BrokerError(
            f"task {task} kept changing while rejecting; giving up after {CAS_ATTEMPTS} attempts"
        )

    def _check_offer(self, task: str, view: TaskView | None) -> TaskView:
        if view is None:
            raise UnknownTask(task)
        if view.status.is_terminal:
            raise TaskEnded(task, str(view.status))
        pending = view.pending_handoff
        if pending is None:
            # Accepted by someone else already?
            if (
                view.owner is not None
                and view.owner != self._id
                and view.status == TaskStatus.WORKING
            ):
                raise Taken(task, view.owner)
            raise NoOffer(task)
        if pending.to_agent is not None and pending.to_agent != self._id:
            raise NotForYou(task, pending.to_agent)
        return view

    async def revoke(self, task: str, reason: str) -> int:
        """An operator takes ownership away; the task is unowned again."""
        return await self._operator_act(task, revoked=pb.Revoked(reason=reason))

    async def cancel(self, task: str, reason: str) -> int:
        """An operator cancels the task (terminal)."""
        return await self._operator_act(task, cancelled=pb.Cancelled(reason=reason))

    async def _operator_act(self, task: str, **body: Any) -> int:
        task_id(task)
        for _ in range(CAS_ATTEMPTS):
            view, last_seq = await self._current(task)
            if view is None:
                raise UnknownTask(task)
            if view.status.is_terminal:
                raise TaskEnded(task, str(view.status))
            event = self.event(task, view.workflow_id, 0, **body)
            seq = await self._publish_cas(event, last_seq)
            if seq is not None:
                return seq
        raise BrokerError(f"task {task} kept changing; giving up after {CAS_ATTEMPTS} attempts")

    async def task(self, task: str) -> TaskView | None:
        """The task's exact current state: the stored record plus any events
        after it, folded here. ``None`` if the task does not exist."""
        task_id(task)
        return (await self._current(task))[0]

    async def task_state(self, task: str) -> pb.TaskState | None:
        """The orchestrator's stored record of the task (KV ``baton-tasks``),
        which may trail the event stream slightly. ``None`` if there is none."""
        task_id(task)
        raw = await self._kv_get(task)
        return None if raw is None else pb.TaskState.FromString(raw)

    async def wait_for(
        self,
        task: str,
        predicate: Callable[[TaskView | None], bool],
        timeout: float,
        *,
        poll: float = 0.5,
    ) -> TaskView | None:
        """Waits until ``predicate`` holds for the task's exact state, and
        returns that state. Re-checks whenever the orchestrator rewrites the
        task's record (a KV watch) and at least every ``poll`` seconds (so it
        also works while the orchestrator is down). Raises :class:`TimeoutError`."""
        task_id(task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        watcher = await self._tasks.watch(task)
        try:
            while True:
                view = await self.task(task)
                if predicate(view):
                    return view
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(
                        f"task {task}: condition not met within {timeout:g}s (last state: {view})"
                    )
                try:
                    await watcher.updates(timeout=min(poll, remaining))  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    pass
        finally:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except Exception:
                pass

    # -- artifact leases ------------------------------------------------------

    def acquire(
        self,
        name: str,
        mode: LeaseMode | str = "exclusive",
        *,
        ttl: float = 15.0,
        workflow: str | None = None,
        task: str | None = None,
        auto_renew: bool = True,
        record_wait: bool = True,
    ) -> LeaseRequest:
        """Takes a lease on the artifact ``name`` (a path or record key:
        ``drafts/post.md``; ``drafts/`` covers everything under it), exclusive
        (one writer) or shared (many readers). Of agents racing for an
        exclusive lease exactly one wins; the others get
        :class:`~baton_client.errors.LeaseHeld` naming the holder.

        Args:
            ttl: seconds the lease lives without a renewal; the handle renews
                at a third of it unless ``auto_renew`` is false (then call
                :meth:`Lease.renew <baton_client.Lease.renew>` within each ttl).
            workflow: the scope; ``None`` = the global scope.
            task: the task the lease is taken for, if any.
            record_wait: when refused, record this agent as waiting for the
                artifact, in ``mode``, for one ``ttl`` (best effort; the
                refusal is raised either way): operators see who a hold
                keeps out (:meth:`leases`, ``baton leases``), and a rule's
                ``max_hold`` can report a holder that keeps others out too
                long. An agent that retries keeps waiting (from its first
                refusal); one that gives up stops waiting a ttl later, or at
                once with :meth:`stop_waiting`. False for a mere probe.

        Await the result for a :class:`~baton_client.Lease`, or use it with
        ``async with`` (released when the block exits). Invalid names
        (:class:`~baton_client.errors.InvalidArtifactName`), ids, modes and
        ttls raise at once; when awaited it raises :class:`LeaseHeld`,
        :class:`~baton_client.errors.LeaseRefused` or :class:`BrokerError`.
        """
        from .lease_handle import LeaseRequest, acquire
        from .leases import Artifact, LeaseMode

        artifact = Artifact.of(name, workflow)
        how = LeaseMode(mode)
        if ttl <= 0:
            raise ValueError(f"a lease needs a ttl above zero, got {ttl}")
        if task is not None:
            task_id(task)
        return LeaseRequest(
            lambda: acquire(self, artifact, how, ttl, task, auto_renew, record_wait)
        )

    async def stop_waiting(
        self, name: str, mode: LeaseMode | str = "exclusive", *, workflow: str | None = None
    ) -> int:
        """Ends this agent's wait for ``name`` (recorded by a refused
        :meth:`acquire`), e.g. when it gives up on it, so no hold is reported
        keeping it out. Returns the event's stream sequence."""
        from .lease_handle import stop_waiting
        from .leases import Artifact, LeaseMode

        return await stop_waiting(self, Artifact.of(name, workflow), LeaseMode(mode))

    async def report_stale_write(
        self, refused: StaleToken, *, writer: str | None = None, workflow: str | None = None
    ) -> int:
        """Stores: reports a write refused for a stale token (``refused``, from
        :class:`~baton_client.FencedDir` or :class:`~baton_client.leases.Fence`),
        by ``writer`` if the store knows it. The writer's lease is gone but it
        still writes: the stall detector raises ``LEASE_STALE_WRITE`` naming
        the writer, this store and the artifact's holder now. Returns the
        report's stream sequence."""
        from .lease_handle import report_stale_write
        from .leases import Artifact

        artifact = Artifact.of(refused.artifact, workflow)
        if writer is not None:
            check_agent_id(writer)
        return await report_stale_write(self, artifact, writer, refused)

    def resume_lease(
        self, name: str, workflow: str | None = None, *, auto_renew: bool = True
    ) -> LeaseRequest:
        """Takes up a lease this agent holds: one handed to it, or its own
        from before a restart (while it has not expired). Raises (when
        awaited) :class:`~baton_client.errors.LeaseNotHeld` otherwise."""
        from .lease_handle import LeaseRequest, resume
        from .leases import Artifact

        artifact = Artifact.of(name, workflow)
        return LeaseRequest(lambda: resume(self, artifact, auto_renew))

    async def revoke_lease(
        self, name: str, holder: str, reason: str = "", workflow: str | None = None
    ) -> int:
        """Operators (the published policy's; anyone when it names none):
        takes ``holder``'s lease on ``name`` away. Returns the revocation's
        stream sequence; :class:`~baton_client.errors.LeaseRefused` when this
        agent is not an operator or ``holder`` holds no lease on it."""
        from .lease_handle import revoke
        from .leases import Artifact

        artifact = Artifact.of(name, workflow)
        check_agent_id(holder)
        return await revoke(self, artifact, holder, reason)

    async def leases(self, workflow: str | None = None) -> LeaseBook:
        """Every lease as the stream has them: the fold of ``BATON_ARTIFACTS``
        (or of one workflow's scope), with the agents waiting
        (``LeaseBook.waiters``, ``LeaseBook.blocked_by``; for operators,
        :func:`baton_client.leases.holds_view` is what ``baton leases
        --json`` prints). It starts from the roots the orchestrator
        materialised in KV ``baton-leases`` and folds the events stored
        since its checkpoint, so the answer is the fold of the whole stream
        (the same without an orchestrator, only slower). A hold or wait past
        its expiry stays in the book until an event of its root comes:
        compare ``expires_at`` with the time."""
        from .lease_handle import read_all

        return await read_all(self, None if workflow is None else workflow_id(workflow))

    # -- decision record and alerts ---------------------------------------

    def context(self, workflow: str) -> ContextRecord:
        """The decision record of ``workflow``."""
        from .context import ContextRecord

        return ContextRecord(self, workflow_id(workflow))

    def context_version(self, workflow: str) -> int:
        """The decision-record version this agent has read for ``workflow`` (0 = none)."""
        return self._read_versions.get(workflow, 0)

    def _set_context_version(self, workflow: str, version: int) -> None:
        self._read_versions[workflow] = max(self._read_versions.get(workflow, 0), version)

    def subscribe_alerts(
        self,
        kinds: Sequence[str | int] | None = None,
        task: str | None = None,
        *,
        replay: bool = False,
    ) -> AlertSubscription:
        """Alerts as decoded ``baton.v1.Alert`` messages: an async iterator.

        Args:
            kinds: alert kinds to receive (``"ownership_violation"``,
                ``"ALERT_KIND_OWNERSHIP_VIOLATION"`` or ``pb.AlertKind`` values);
                ``None`` = all.
            task: only alerts about this task (``"_system"`` for alerts about
                Baton itself); ``None`` = all.
            replay: ``False`` = live alerts only (a core NATS subscription on
                ``baton.alert.<kind>.<task>``); ``True`` = every alert stored in
                ``BATON_ALERTS`` first, then live ones (an ordered JetStream
                consumer).

        The subscription is made on first use; ``await`` the result (or enter
        it with ``async with``) to have it registered with the server before
        going on. Invalid kinds or task ids raise at once.
        """
        from .alerts import AlertSubscription

        return AlertSubscription(self, kinds, task, replay=replay)

    # -- events --------------------------------------------------------------

    def event(self, task: str, workflow: str, epoch: int, **body: Any) -> pb.Event:
        """An event from this agent with a fresh id, the decision-record version
        read for ``workflow`` and the current time; ``body`` is one keyword:
        the oneof field and its message (``heartbeat=pb.Heartbeat(...)``)."""
        if len(body) != 1:
            raise ValueError(f"exactly one body is required, got {sorted(body)}")
        (kind, message), = body.items()
        event = pb.Event(
            event_id=self._nuid.next().decode(),
            task_id=task,
            workflow_id=workflow,
            agent_id=self._id,
            epoch=epoch,
            context_version=self.context_version(workflow),
        )
        event.occurred_at.FromNanoseconds(time.time_ns())
        getattr(event, kind).CopyFrom(message)
        return event

    async def _publish(self, event: pb.Event, cas: int | None) -> int:
        """Publishes on the event's subject with ``Nats-Msg-Id`` = event id."""
        return await publish_durable(
            self._nc,
            subjects.event(event.task_id, event.agent_id),
            event.SerializeToString(),
            event.event_id,
            None if cas is None else Cas(cas, subjects.task_events(event.task_id)),
            self._retry,
            self._denials,
        )

    async def _publish_cas(self, event: pb.Event, expected: int) -> int | None:
        """Publishes with compare-and-set against ``expected`` (the task's last
        sequence). ``None`` when another event came first."""
        try:
            return await self._publish(event, expected)
        except WrongLastSequence as e:
            if e.after_retry:
                # An attempt whose acknowledgement was lost may have been stored.
                return await self._find_stored(event.task_id, expected, event.event_id)
            return None

    async def _find_stored(self, task: str, after: int, event_id: str) -> int | None:
        stored = await read_subject(
            self._nc, subjects.EVENTS_STREAM, subjects.task_events(task), after + 1
        )
        return next((s.seq for s in stored if s.msg_id == event_id), None)

    async def _kv_get(self, task: str) -> bytes | None:
        try:
            entry = await self._tasks.get(task)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except nats.errors.Error as e:
            raise BrokerError(f"reading task {task}: {type(e).__name__}: {e}") from e
        return entry.value

    async def policy(self) -> tuple[frozenset[str], bool]:
        """The orchestrator's published fold policy (KV ``baton-policy``):
        the operators (empty = anyone) and whether events of tasks never
        created create them. Falls back to the ``operators`` given to
        :meth:`connect` while no orchestrator has published one."""
        try:
            if self._policy_kv is None:
                self._policy_kv = await self._nc.jetstream().key_value(subjects.POLICY_BUCKET)
            entry = await self._policy_kv.get(subjects.POLICY_KEY)
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
            return self._operators, False
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return self._operators, False
        except nats.errors.Error as e:
            raise BrokerError(f"reading the policy: {type(e).__name__}: {e}") from e
        try:
            published = pb.FoldPolicy.FromString(entry.value or b"")
        except DecodeError as e:
            raise BrokerError(f"the published policy is unreadable: {e}") from e
        return (
            frozenset(published.operators),
            published.unknown_task == pb.UNKNOWN_TASK_POLICY_CREATE,
        )

    async def _current(self, task: str) -> tuple[TaskView | None, int]:
        """The task's exact current state and the sequence of its last event."""
        raw, last, (operators, auto_create) = await asyncio.gather(
            self._kv_get(task),
            last_on_subject(self._nc, subjects.EVENTS_STREAM, subjects.task_events(task)),
            self.policy(),
        )
        view: TaskView | None = None
        if raw is not None:
            try:
                view = TaskView.from_state(pb.TaskState.FromString(raw))
            except (DecodeError, WireError) as e:
                log.warning("task %s: stored state unreadable (%s); folding from the events", task, e)
        known = view.last_event_seq if view is not None else 0
        last_seq = max(last.seq if last is not None else 0, known)
        if last_seq > known:
            tail = await read_subject(
                self._nc, subjects.EVENTS_STREAM, subjects.task_events(task), known + 1
            )
            for stored in tail:
                try:
                    event = pb.Event.FromString(stored.data)
                except DecodeError:
                    continue
                view, _, _ = apply(view, event, stored.seq, stored.subject, operators, auto_create)
            if tail:
                last_seq = max(last_seq, tail[-1].seq)
        return view, last_seq
