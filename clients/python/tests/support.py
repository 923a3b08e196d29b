"""Helpers for the tests: read what the services stored, bypassing the client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import nats
import nats.errors
import nats.js.errors

from baton_client import pb


async def kv_state(nc: nats.NATS, task: str) -> pb.TaskState | None:
    """The orchestrator's record of ``task`` in KV ``baton-tasks``."""
    kv = await nc.jetstream().key_value("baton-tasks")
    try:
        entry = await kv.get(task)
    except nats.js.errors.KeyNotFoundError:
        return None
    assert entry.value is not None
    return pb.TaskState.FromString(entry.value)


async def wait_kv(
    nc: nats.NATS,
    task: str,
    predicate: Callable[[pb.TaskState], bool],
    timeout: float = 10.0,
) -> pb.TaskState:
    """Waits (watching the KV key) until the stored record satisfies ``predicate``."""
    kv = await nc.jetstream().key_value("baton-tasks")
    watcher = await kv.watch(task)
    deadline = time.monotonic() + timeout
    last: pb.TaskState | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"KV record of {task} never matched; last: {last}")
            try:
                entry = await watcher.updates(timeout=remaining)
            except nats.errors.TimeoutError:
                continue
            if entry is None or entry.value is None or entry.operation is not None:
                continue
            last = pb.TaskState.FromString(entry.value)
            if predicate(last):
                return last
    finally:
        await watcher.stop()


async def stored_events(nc: nats.NATS, task: str) -> list[tuple[int, str, dict[str, str], pb.Event]]:
    """Every stored event of ``task``: (seq, subject, headers, event)."""
    out = []
    seq = 1
    while True:
        req = {"seq": seq, "next_by_subj": f"baton.evt.{task}.*"}
        msg = await nc.request("$JS.API.DIRECT.GET.BATON_EVENTS", json.dumps(req).encode(), timeout=5)
        headers = dict(msg.headers or {})
        if headers.get("Status") == "404":
            return out
        assert "Status" not in headers, headers
        s = int(headers["Nats-Sequence"])
        out.append((s, headers["Nats-Subject"], headers, pb.Event.FromString(msg.data)))
        seq = s + 1


async def publish_raw(nc: nats.NATS, event: pb.Event) -> int:
    """Publishes an event as a client that skips the SDK would: no checks, no
    compare-and-set. Returns its stream sequence."""
    msg = await nc.request(
        f"baton.evt.{event.task_id}.{event.agent_id}",
        event.SerializeToString(),
        timeout=5,
        headers={"Nats-Msg-Id": event.event_id},
    )
    ack = json.loads(msg.data)
    assert "error" not in ack, ack
    return int(ack["seq"])


async def eventually(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Re-evaluates an async ``check`` until it returns truthy (for conditions
    with no event to watch). Polls; it does not assume a fixed delay suffices."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)
