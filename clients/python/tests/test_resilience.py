"""Transient broker failures: a publish is retried with the same Nats-Msg-Id
and stored once. The server is really paused (SIGSTOP), not simulated."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import nats
from conftest import AgentFactory, Services
from support import eventually, stored_events, wait_kv

from baton_client import Retry


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (SIGSTOP takes effect per
    thread, asynchronously)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue  # the thread went away
    return bool(states) and all(state in "tT" for state in states)


async def test_heartbeat_survives_a_paused_server(
    services: Services, connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    task = f"pause-{uid}"
    alice = await connect(f"alice-{uid}", retry=Retry(budget=30, attempt_timeout=0.4))
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)
    server = services.procs[0]
    os.kill(server.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: stopped(server.pid), timeout=10, what="the server stopped")
        beat = asyncio.create_task(owned.heartbeat("through the outage", progress=True))
        # Not done across several attempt timeouts: the client is retrying.
        done, _ = await asyncio.wait({beat}, timeout=1.5)
        assert not done
    finally:
        os.kill(server.pid, signal.SIGCONT)
    seq = await asyncio.wait_for(beat, 30)
    events = await stored_events(nc, task)
    beats = [(s, e) for s, _, _, e in events if e.WhichOneof("body") == "heartbeat"]
    assert len(beats) == 1, beats  # several attempts, stored once
    assert beats[0][0] == seq and beats[0][1].heartbeat.note == "through the outage"
    state = await wait_kv(nc, task, lambda s: s.last_event_seq == seq, timeout=20)
    assert state.violations == 0 and state.owner == alice.id
    await owned.complete("s3://x", "done")


async def test_create_whose_ack_was_lost_succeeds_once(
    services: Services, connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    """The first attempt is stored while its acknowledgement is late (the
    server is paused): the retry, refused by the compare-and-set, finds its
    own event and succeeds."""
    task = f"pause-create-{uid}"
    alice = await connect(f"alice-{uid}", retry=Retry(budget=30, attempt_timeout=0.4))
    server = services.procs[0]
    os.kill(server.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: stopped(server.pid), timeout=10, what="the server stopped")
        create = asyncio.create_task(alice.create_task(task, "wf1"))
        done, _ = await asyncio.wait({create}, timeout=1.5)
        assert not done
    finally:
        os.kill(server.pid, signal.SIGCONT)
    seq = await asyncio.wait_for(create, 30)
    events = await stored_events(nc, task)
    assert [s for s, _, _, _ in events] == [seq]  # several attempts, stored once
    state = await wait_kv(nc, task, lambda s: s.last_event_seq == seq, timeout=20)
    assert state.violations == 0
