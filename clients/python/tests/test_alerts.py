"""Alerts raised by the Rust orchestrator reach Python subscribers."""

from __future__ import annotations

import asyncio

import nats
import pytest
from conftest import AgentFactory
from support import publish_raw

from baton_client import alert_kind_token, alert_state_token, parse_alert_kind, pb

OWNERSHIP_VIOLATION = pb.AlertKind.Value("ALERT_KIND_OWNERSHIP_VIOLATION")
UNKNOWN_TASK = pb.AlertKind.Value("ALERT_KIND_UNKNOWN_TASK")


def test_kind_names() -> None:
    assert alert_kind_token(OWNERSHIP_VIOLATION) == "ownership_violation"
    assert parse_alert_kind("ownership_violation") == OWNERSHIP_VIOLATION
    assert parse_alert_kind("ALERT_KIND_OWNERSHIP_VIOLATION") == OWNERSHIP_VIOLATION
    assert parse_alert_kind("heartbeat-missed") == pb.AlertKind.Value("ALERT_KIND_HEARTBEAT_MISSED")
    assert parse_alert_kind(OWNERSHIP_VIOLATION) == OWNERSHIP_VIOLATION
    assert alert_state_token(pb.AlertState.Value("ALERT_STATE_FIRING")) == "firing"
    for bad in ("nope", "unspecified", 0, 999):
        with pytest.raises(ValueError):
            parse_alert_kind(bad)


async def test_ownership_violation_alert(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"viol-{uid}"
    alice = await connect(f"alice-{uid}")
    watcher = await connect(f"ops-{uid}")
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)

    async with watcher.subscribe_alerts(["ownership_violation"], task=task) as alerts:
        # A client that skips the SDK sends a heartbeat for a task it does not own.
        rogue = pb.Event(
            event_id=f"rogue-{uid}", task_id=task, workflow_id="wf1", agent_id=f"mallory-{uid}", epoch=1
        )
        rogue.heartbeat.note = "I am the owner now"
        seq = await publish_raw(nc, rogue)
        alert = await alerts.next(timeout=15)

    assert alert.kind == OWNERSHIP_VIOLATION
    assert alert.state == pb.AlertState.Value("ALERT_STATE_FIRING")
    assert alert.task_id == task and alert.workflow_id == "wf1"
    assert list(alert.agents) == [f"mallory-{uid}", alice.id]  # actor, then owner
    assert alert.event_id == rogue.event_id and alert.event_seq == seq
    assert alert.epoch == 1
    assert f"mallory-{uid}" in alert.summary and alert.alert_id

    # The same alert is stored in BATON_ALERTS: a replaying subscriber sees it.
    async with await watcher.subscribe_alerts([OWNERSHIP_VIOLATION], task=task, replay=True) as replay:
        again = await replay.next(timeout=15)
    assert again.alert_id == alert.alert_id
    await owned.complete("s3://x", "done")


async def test_several_kinds_and_all_tasks(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    alice = await connect(f"alice-{uid}")
    kinds = ["unknown_task", "ownership_violation"]
    live = await alice.subscribe_alerts(kinds)
    try:
        ghost = pb.Event(event_id=f"ghost-{uid}", task_id=f"ghost-{uid}", workflow_id="wf1", agent_id=alice.id)
        ghost.heartbeat.SetInParent()
        await publish_raw(nc, ghost)  # a task that was never created
        while True:
            alert = await live.next(timeout=15)
            assert alert_kind_token(alert.kind) in kinds
            if alert.task_id == f"ghost-{uid}":
                break
        assert alert.kind == UNKNOWN_TASK and list(alert.agents) == [alice.id]
    finally:
        await live.close()

    # Replay with several kinds filters on the client; order is the stream's.
    seen = []
    replay = alice.subscribe_alerts(kinds, replay=True)
    async with asyncio.timeout(15):
        async for a in replay:  # subscribes on first use
            assert alert_kind_token(a.kind) in kinds
            seen.append(a.task_id)
            if a.task_id == f"ghost-{uid}":
                break
    await replay.close()
    assert seen[-1] == f"ghost-{uid}"
