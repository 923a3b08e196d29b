"""The client against a real nats-server and the real Rust orchestrator.

Every outcome is checked in what the services stored: the orchestrator's
record in KV ``baton-tasks`` (decoded ``TaskState``) and the events in
``BATON_EVENTS``, read with plain nats-py, not through the client.
"""

from __future__ import annotations

import asyncio
import json

import nats
import nats.js.errors
import pytest
from conftest import AgentFactory, Services
from support import eventually, kv_state, publish_raw, stored_events, wait_kv

from baton_client import (
    ActRefused,
    AlreadyYours,
    ClaimLost,
    HandleSpent,
    HandoffError,
    InvalidId,
    NoOffer,
    NotAssignee,
    NotForYou,
    OwnershipLost,
    Refused,
    Taken,
    TaskEnded,
    TaskExists,
    TaskStatus,
    UnknownTask,
    pb,
)
from baton_client._transport import Cas, Retry, publish_durable

WORKING = pb.TaskStatus.Value("TASK_STATUS_WORKING")
PENDING = pb.TaskStatus.Value("TASK_STATUS_HANDOFF_PENDING")
COMPLETED = pb.TaskStatus.Value("TASK_STATUS_COMPLETED")
SUBMITTED = pb.TaskStatus.Value("TASK_STATUS_SUBMITTED")


async def test_claim_heartbeat_offer_accept_complete(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"flow-{uid}"
    alice = await connect(f"alice-{uid}", lease=30)
    bob = await connect(f"bob-{uid}", lease=30)
    created = await alice.create_task(task, "wf1", stage="draft", title="Write the intro", heartbeat_within=20)

    owned = await alice.claim(task)
    assert owned.epoch == 1
    state = await wait_kv(nc, task, lambda s: s.owner == alice.id)
    assert (state.owner, state.epoch, state.status) == (alice.id, 1, WORKING)
    assert state.lease.seconds == 30  # the claim's lease

    seq = await owned.heartbeat("outline done", progress=True)
    state = await wait_kv(nc, task, lambda s: s.last_event_seq == seq)
    assert state.HasField("last_progress_at") and state.violations == 0

    offer = await owned.offer_to_agent(bob.id, "s3://docs/intro.md", accept_within=60)
    assert (offer.to_agent, offer.epoch) == (bob.id, 1)
    state = await wait_kv(nc, task, lambda s: s.status == PENDING)
    assert state.owner == alice.id  # accountable until accepted
    assert state.pending_handoff.to_agent == bob.id
    assert state.pending_handoff.from_agent == alice.id
    assert state.pending_handoff.accept_within.seconds == 60

    # A final act spends the handle.
    with pytest.raises(HandleSpent, match="offered to agent"):
        await owned.heartbeat("still here")
    assert owned.is_spent

    taken = await bob.accept_handoff(task)
    assert taken.epoch == 2
    state = await wait_kv(nc, task, lambda s: s.owner == bob.id)
    assert (state.epoch, state.status, state.output_location) == (2, WORKING, "s3://docs/intro.md")
    # The accept carries bob's lease (decision 10), so the detector expects
    # heartbeats at the pace bob sends them.
    assert state.lease.seconds == 30

    done = await taken.complete("s3://docs/intro-final.md", "published")
    state = await wait_kv(nc, task, lambda s: s.status == COMPLETED)
    assert (state.owner, state.epoch, state.outcome) == (bob.id, 2, "published")
    assert state.last_event_seq == done and state.violations == 0
    with pytest.raises(HandleSpent):
        await taken.release("too late")

    # On the wire: Nats-Msg-Id = event id, epochs as held, subject tokens match.
    events = await stored_events(nc, task)
    kinds = [(e.WhichOneof("body"), e.agent_id, e.epoch) for _, _, _, e in events]
    assert kinds == [
        ("created", alice.id, 0),
        ("claimed", alice.id, 0),
        ("heartbeat", alice.id, 1),
        ("handoff_offered", alice.id, 1),
        ("handoff_accepted", bob.id, 0),
        ("completed", bob.id, 2),
    ]
    assert events[0][0] == created
    for _, subject, headers, e in events:
        assert headers["Nats-Msg-Id"] == e.event_id
        assert subject == f"baton.evt.{task}.{e.agent_id}"
        assert e.workflow_id == "wf1" and e.HasField("occurred_at")

    # The client's own view agrees.
    view = await bob.task(task)
    assert view is not None and (view.owner, view.epoch, view.status) == (bob.id, 2, TaskStatus.COMPLETED)
    with pytest.raises(TaskEnded):
        await bob.claim(task)


async def test_eight_concurrent_claimers_one_winner(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"race-{uid}"
    agents = [await connect(f"racer{i}-{uid}") for i in range(8)]
    await agents[0].create_task(task, "wf-race")
    results = await asyncio.gather(*(a.claim(task) for a in agents), return_exceptions=True)
    winners = [(a, r) for a, r in zip(agents, results, strict=True) if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, results
    winner, handle = winners[0]
    assert len(losers) == 7
    for err in losers:
        assert isinstance(err, ClaimLost), repr(err)
        assert (err.task, err.owner, err.epoch) == (task, winner.id, 1)
        assert winner.id in str(err)

    state = await wait_kv(nc, task, lambda s: s.owner != "")
    assert (state.owner, state.epoch, state.status) == (winner.id, 1, WORKING)
    # Compare-and-set kept every losing claim off the stream: no violation.
    events = await stored_events(nc, task)
    assert [e.WhichOneof("body") for *_, e in events] == ["created", "claimed"]
    assert state.violations == 0
    await handle.release("done racing")


async def test_wrong_agent_accepting(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"handoff-{uid}"
    alice = await connect(f"alice-{uid}")
    bob = await connect(f"bob-{uid}")
    carol = await connect(f"carol-{uid}")
    await alice.create_task(task, "wf1")
    with pytest.raises(NoOffer):
        await bob.accept_handoff(task)
    owned = await alice.claim(task)
    with pytest.raises(AlreadyYours):
        await alice.claim(task)
    with pytest.raises(ActRefused):
        await owned.offer_to_agent(alice.id, "s3://x")
    await owned.offer_to_agent(bob.id, "s3://x")

    with pytest.raises(NotForYou) as info:
        await carol.accept_handoff(task)
    assert info.value.recipient == bob.id and info.value.task == task
    with pytest.raises(NotForYou):
        await carol.reject_handoff(task, "not mine")

    # Nothing carol tried reached the stream.
    events = await stored_events(nc, task)
    assert {e.agent_id for *_, e in events} == {alice.id}

    held = await bob.accept_handoff(task)  # keep the handle: dropping it releases
    with pytest.raises(Taken) as taken:
        await carol.accept_handoff(task)
    assert taken.value.owner == bob.id
    state = await wait_kv(nc, task, lambda s: s.owner == bob.id)
    assert state.violations == 0 and state.epoch == 2
    await held.complete("s3://y", "done")


async def test_rejected_offer_returns_to_the_sender(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"reject-{uid}"
    alice = await connect(f"alice-{uid}")
    bob = await connect(f"bob-{uid}")
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)
    await owned.offer_to_stage("review", "s3://draft")
    with pytest.raises(HandoffError, match="own"):
        await alice.reject_handoff(task, "changed my mind")  # would be a violation
    await bob.reject_handoff(task, "not ready")
    state = await wait_kv(nc, task, lambda s: s.status == WORKING and not s.HasField("pending_handoff"))
    assert (state.owner, state.epoch, state.violations) == (alice.id, 1, 0)
    # The sender's old handle is spent; it resumes ownership.
    again = await alice.resume(task)
    assert again.epoch == 1
    await again.complete("s3://final", "done after all")
    await wait_kv(nc, task, lambda s: s.status == COMPLETED)


async def test_claim_errors(connect: AgentFactory, uid: str) -> None:
    alice = await connect(f"alice-{uid}")
    bob = await connect(f"bob-{uid}")
    with pytest.raises(UnknownTask):
        await alice.claim(f"nothing-{uid}")
    with pytest.raises(InvalidId):
        alice.claim("bad.task")
    task = f"assigned-{uid}"
    await alice.create_task(task, "wf1", assignee=alice.id)
    with pytest.raises(NotAssignee) as info:
        await bob.claim(task)
    assert info.value.assignee == alice.id


async def test_context_manager_releases_with_reason_dropped(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"drop-{uid}"
    alice = await connect(f"alice-{uid}")
    await alice.create_task(task, "wf1")
    with pytest.raises(RuntimeError, match="boom"):
        async with alice.claim(task) as owned:
            await owned.heartbeat("working")
            raise RuntimeError("boom")
    state = await wait_kv(nc, task, lambda s: s.status == SUBMITTED and s.epoch == 2)
    assert state.owner == "" and state.violations == 0
    *_, (_, _, _, last) = await stored_events(nc, task)
    assert last.WhichOneof("body") == "released" and last.released.reason == "dropped"
    assert last.epoch == 1
    assert owned.is_spent

    # After a final act inside the block, exit releases nothing.
    async with alice.claim(task) as owned:
        await owned.complete("s3://out", "done")
    await wait_kv(nc, task, lambda s: s.status == COMPLETED)
    events = await stored_events(nc, task)
    assert [e.WhichOneof("body") for *_, e in events][-2:] == ["claimed", "completed"]


async def test_automatic_heartbeats(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"beat-{uid}"
    alice = await connect(f"alice-{uid}", lease=0.6)  # a heartbeat every 0.2 s when idle
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)

    async def beats() -> int:
        return sum(1 for *_, e in await stored_events(nc, task) if e.WhichOneof("body") == "heartbeat")

    async def three_beats() -> bool:
        return await beats() >= 3

    await eventually(three_beats, timeout=10, what="3 automatic heartbeats")
    seq = await owned.release("enough")
    state = await wait_kv(nc, task, lambda s: s.status == SUBMITTED)
    assert state.violations == 0  # every automatic heartbeat came from the owner at its epoch
    # Released: the heartbeat task is gone, so nothing can follow the release.
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("baton-heartbeats")]
    assert (await stored_events(nc, task))[-1][0] == seq


async def test_revoked_owner_gets_ownership_lost(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"revoke-{uid}"
    alice = await connect(f"alice-{uid}")
    ops = await connect(f"ops-{uid}")
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)
    await ops.revoke(task, "stuck")
    with pytest.raises(OwnershipLost) as info:
        await owned.heartbeat("still mine?")
    assert (info.value.owner, info.value.epoch) == (None, 2)
    assert owned.is_lost
    with pytest.raises(OwnershipLost):
        await owned.complete("s3://x", "no")
    state = await wait_kv(nc, task, lambda s: s.epoch == 2)
    assert state.violations == 0  # the lost heartbeat was never published

    # Someone else claims; the old handle stays refused.
    bob = await connect(f"bob-{uid}")
    bobs = await bob.claim(task)
    with pytest.raises(OwnershipLost):
        await owned.release("bye")
    await bobs.release("bye")


async def test_owner_act_retries_after_a_concurrent_event(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"cas-{uid}"
    alice = await connect(f"alice-{uid}")
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)
    # A raw event from someone else moves the task's last sequence; the
    # handle's compare-and-set fails, it re-reads, still owns, retries.
    intruder = pb.Event(
        event_id=f"intruder-{uid}", task_id=task, workflow_id="wf1", agent_id="mallory", epoch=1
    )
    intruder.heartbeat.note = "hi"
    before = owned.last_seq
    await publish_raw(nc, intruder)
    seq = await owned.heartbeat("mine")
    assert seq > before + 1
    state = await wait_kv(nc, task, lambda s: s.last_event_seq == seq)
    assert state.owner == alice.id and state.violations == 1  # only mallory's


async def test_publish_retries_with_the_same_msg_id(services: Services, nc: nats.NATS, uid: str) -> None:
    # A responder that ignores the first two attempts stands in for a
    # JetStream leader election; the third attempt must carry the same id.
    subject = f"test.retry.{uid}"
    seen: list[dict[str, str]] = []

    async def responder(msg: nats.aio.msg.Msg) -> None:
        seen.append(dict(msg.headers or {}))
        if len(seen) >= 3:
            await msg.respond(json.dumps({"stream": "FAKE", "seq": 42}).encode())

    sub = await nc.subscribe(subject, cb=responder)
    await nc.flush()
    client = await nats.connect(services.url)
    try:
        seq = await publish_durable(
            client, subject, b"x", f"id-{uid}", Cas(7, "scope.*"), Retry(budget=10, attempt_timeout=0.3)
        )
    finally:
        await client.close()
        await sub.unsubscribe()
    assert seq == 42
    assert len(seen) == 3
    assert {h["Nats-Msg-Id"] for h in seen} == {f"id-{uid}"}
    assert all(h["Nats-Expected-Last-Subject-Sequence"] == "7" for h in seen)
    assert all(h["Nats-Expected-Last-Subject-Sequence-Subject"] == "scope.*" for h in seen)


async def test_a_retried_publish_is_stored_once(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"dedupe-{uid}"
    alice = await connect(f"alice-{uid}")
    event = alice.event(task, "wf1", 0, created=pb.TaskCreated())
    first = await alice._publish(event, None)
    second = await alice._publish(event, None)  # same Nats-Msg-Id
    assert first == second
    assert len(await stored_events(nc, task)) == 1


async def test_no_stream_is_refused(services: Services, uid: str) -> None:
    client = await nats.connect(services.url)
    try:
        with pytest.raises(Refused, match="no stream"):
            await publish_durable(client, f"nostream.{uid}", b"x", "id", None, Retry(budget=5))
    finally:
        await client.close()


async def test_state_of_a_task_before_the_orchestrator_folded_it(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    # Straight after publishing, KV may not have the task yet; the client
    # folds the events itself and knows the exact state.
    task = f"fresh-{uid}"
    alice = await connect(f"alice-{uid}")
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)
    view = await alice.task(task)
    assert view is not None and (view.owner, view.epoch) == (alice.id, 1)
    await owned.release("bye")
    view = await alice.task(task)
    assert view is not None and view.owner is None and view.epoch == 2
    assert await kv_state(nc, f"missing-{uid}") is None
    assert await alice.task(f"missing-{uid}") is None


async def test_a_dropped_handle_releases_the_task(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    # Like dropping the Rust handle: an agent cannot go silent by accident.
    task = f"gc-{uid}"
    alice = await connect(f"alice-{uid}")
    await alice.create_task(task, "wf1")
    await alice.claim(task)  # the handle is not kept
    state = await wait_kv(nc, task, lambda s: s.epoch == 2)
    assert (state.owner, state.status, state.violations) == ("", SUBMITTED, 0)
    *_, (_, _, _, last) = await stored_events(nc, task)
    assert last.WhichOneof("body") == "released" and last.released.reason == "dropped"


async def test_detached_handle_keeps_the_task(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"detach-{uid}"
    alice = await connect(f"alice-{uid}")
    await alice.create_task(task, "wf1")
    owned = await alice.claim(task)
    owned.detach()
    with pytest.raises(HandleSpent, match="detached"):
        await owned.heartbeat()
    del owned
    # Another process (here: the same agent) resumes and finishes it.
    again = await alice.resume(task)
    assert again.epoch == 1
    await again.complete("s3://z", "resumed")
    state = await wait_kv(nc, task, lambda s: s.status == COMPLETED)
    assert (state.owner, state.epoch) == (alice.id, 1)


async def test_an_impersonating_event_is_ignored_like_the_orchestrator_does(
    connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    # Mallory may publish on baton.evt.*.mallory only; a payload naming
    # another agent goes to the dead-letter stream, and the client's own fold
    # must not believe it either.
    task = f"imp-{uid}"
    alice = await connect(f"alice-{uid}")
    bob = await connect(f"bob-{uid}")
    await alice.create_task(task, "wf1")
    forged = pb.Event(event_id=f"forged-{uid}", task_id=task, workflow_id="wf1", agent_id=alice.id)
    forged.claimed.SetInParent()
    ack = await nc.request(
        f"baton.evt.{task}.mallory-{uid}",
        forged.SerializeToString(),
        timeout=5,
        headers={"Nats-Msg-Id": forged.event_id},
    )
    forged_seq = json.loads(ack.data)["seq"]

    async def dead_lettered() -> bool:
        try:
            msg = await nc.jetstream().get_last_msg("BATON_DLQ", "baton.dlq.subject_mismatch")
        except nats.js.errors.NotFoundError:
            return False
        return forged.SerializeToString() in (msg.data or b"") or forged.event_id.encode() in (msg.data or b"")

    await eventually(dead_lettered, timeout=10, what="the forged event in BATON_DLQ")
    view = await bob.task(task)
    assert view is not None and view.owner is None
    owned = await bob.claim(task)  # the forged claim did not take the task
    assert owned.epoch == 1
    state = await wait_kv(nc, task, lambda s: s.owner == bob.id)
    assert state.epoch == 1 and state.last_event_seq > forged_seq
    await owned.release("done")


async def test_creating_a_task_that_exists_is_refused_before_publishing(
    connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    task = f"again-{uid}"
    alice = await connect(f"alice-{uid}")
    first = await alice.create_task(task, "wf1")
    owned = await alice.claim(task)
    await owned.complete("s3://x", "done")
    # As when the README example runs a second time.
    with pytest.raises(TaskExists) as info:
        await alice.create_task(task, "wf1")
    assert (info.value.task, info.value.status) == (task, "completed")
    assert "already exists" in str(info.value)
    created = [s for s, _, _, e in await stored_events(nc, task) if e.WhichOneof("body") == "created"]
    assert created == [first], "nothing was published the second time"
    state = await wait_kv(nc, task, lambda s: s.status == COMPLETED)
    assert state.violations == 0
