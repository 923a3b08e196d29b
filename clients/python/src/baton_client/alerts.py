"""Alert subscriptions: fault reports as decoded ``baton.v1.Alert`` messages.

Alerts are published on ``baton.alert.<kind>.<task>``, ``<kind>`` being the
``AlertKind`` without its prefix in lower snake case
(``baton.alert.heartbeat_missed.t1``, exactly once per notification), and
stored in ``BATON_ALERTS`` on ``baton.raise.<kind>.<task>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from . import pb, subjects
from .errors import BrokerError
from .ids import task_id as check_task_id

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["AlertSubscription", "alert_kind_token", "parse_alert_kind", "alert_state_token"]

log = logging.getLogger("baton_client")

_KIND_PREFIX = "ALERT_KIND_"


def alert_kind_token(kind: int) -> str:
    """The subject token of an alert kind: ``ownership_violation``."""
    return pb.AlertKind.Name(kind).removeprefix(_KIND_PREFIX).lower()


def alert_state_token(state: int) -> str:
    """An alert state in lower snake case: ``firing``, ``resolved``."""
    return pb.AlertState.Name(state).removeprefix("ALERT_STATE_").lower()


def parse_alert_kind(kind: str | int) -> int:
    """An ``AlertKind`` value from its value, its subject token
    (``ownership_violation``) or its name (``ALERT_KIND_OWNERSHIP_VIOLATION``)."""
    if isinstance(kind, int):
        pb.AlertKind.Name(kind)  # raises ValueError if unknown
        if kind == 0:
            raise ValueError("ALERT_KIND_UNSPECIFIED is not an alert kind")
        return kind
    name = kind.strip().upper().replace("-", "_")
    if not name.startswith(_KIND_PREFIX):
        name = _KIND_PREFIX + name
    try:
        value = int(pb.AlertKind.Value(name))
    except ValueError:
        raise ValueError(f"unknown alert kind {kind!r}") from None
    if value == 0:
        raise ValueError("ALERT_KIND_UNSPECIFIED is not an alert kind")
    return value


class AlertSubscription:
    """Alerts as an async iterator (from :meth:`Agent.subscribe_alerts`).

    Subscribes on first use: ``await`` it, enter it with ``async with``, or
    just iterate. Awaiting (or entering) guarantees the server registered the
    subscription before the call returns, so alerts raised afterwards are not
    missed::

        async with agent.subscribe_alerts(["ownership_violation"], task="t1") as alerts:
            async for alert in alerts:
                print(alert.summary)

        alerts = await agent.subscribe_alerts()   # subscribed now
        alert = await alerts.next(timeout=10)
        await alerts.close()

    Payloads that are not ``baton.v1.Alert`` are skipped (and logged).
    """

    def __init__(
        self,
        agent: Agent,
        kinds: Sequence[str | int] | None = None,
        task: str | None = None,
        *,
        replay: bool = False,
    ) -> None:
        tokens = (
            None
            if kinds is None
            else sorted({alert_kind_token(parse_alert_kind(k)) for k in kinds})
        )
        if task is not None and task != subjects.SYSTEM_TOKEN:
            check_task_id(task)
        self._agent = agent
        self._tokens = tokens
        self._kinds = None if tokens is None else frozenset(tokens)
        self._task_token = "*" if task is None else task
        self._replay = replay
        self._queue: asyncio.Queue[pb.Alert] = asyncio.Queue()
        self._subs: list[Subscription] = []
        self._opened = False
        self._closed = False

    async def open(self) -> AlertSubscription:
        """Subscribes (once); returns ``self``."""
        if self._opened:
            return self
        if self._closed:
            raise BrokerError("the alert subscription is closed")
        self._opened = True
        nc = self._agent.nc
        tokens = self._tokens
        try:
            if self._replay:
                # One ordered consumer keeps the stream's order across kinds;
                # with several kinds, filter here.
                kind = tokens[0] if tokens is not None and len(tokens) == 1 else "*"
                js = nc.jetstream()
                self._subs.append(
                    await js.subscribe(
                        subjects.raised(kind, self._task_token),
                        stream=subjects.ALERTS_STREAM,
                        cb=self._on_msg,
                        ordered_consumer=True,
                        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                    )
                )
            else:
                for token in tokens if tokens is not None else ["*"]:
                    self._subs.append(
                        await nc.subscribe(subjects.alert(token, self._task_token), cb=self._on_msg)
                    )
            await nc.flush()
        except (TimeoutError, nats.errors.Error) as e:
            await self.close()
            raise BrokerError(f"subscribing to alerts: {type(e).__name__}: {e}") from e
        return self

    def __await__(self) -> Generator[Any, None, AlertSubscription]:
        return self.open().__await__()

    async def _on_msg(self, msg: Msg) -> None:
        parsed = subjects.parse_alert(msg.subject)
        if self._kinds is not None and (parsed is None or parsed[0] not in self._kinds):
            return
        try:
            alert = pb.Alert.FromString(msg.data)
        except DecodeError as e:
            log.warning("undecodable alert on %s: %s", msg.subject, e)
            return
        self._queue.put_nowait(alert)

    async def next(self, timeout: float | None = None) -> pb.Alert:
        """The next alert (subscribing first if needed); raises
        :class:`TimeoutError` after ``timeout`` seconds and
        :class:`StopAsyncIteration` once closed and drained."""
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        if not self._opened:
            await self.open()
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no alert within {timeout:g}s") from None

    def __aiter__(self) -> AlertSubscription:
        return self

    async def __anext__(self) -> pb.Alert:
        return await self.next()

    async def close(self) -> None:
        """Unsubscribes."""
        self._closed = True
        subs, self._subs = self._subs, []
        for s in subs:
            try:
                await s.unsubscribe()
            except Exception:  # connection already closed
                pass

    async def __aenter__(self) -> AlertSubscription:
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        kinds = "all" if self._kinds is None else ",".join(sorted(self._kinds))
        return f"AlertSubscription(kinds={kinds}, subs={len(self._subs)})"
