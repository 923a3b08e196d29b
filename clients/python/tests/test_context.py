"""The decision record: read, record, stale, and the version events carry."""

from __future__ import annotations

import nats
import pytest
from conftest import AgentFactory
from support import stored_events, wait_kv

from baton_client import ContextStale, pb


async def test_read_record_stale(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    wf = f"wf-{uid}"
    alice = await connect(f"alice-{uid}")
    bob = await connect(f"bob-{uid}")
    a_record = alice.context(wf)
    b_record = bob.context(wf)

    version, entries = await a_record.read()
    assert entries == []
    assert alice.context_version(wf) == version
    await b_record.read()

    v1 = await a_record.record("Use British spelling", "All documents use en-GB.")
    assert v1 > version
    assert alice.context_version(wf) == v1

    # Bob read before alice recorded: his decision would ignore hers.
    with pytest.raises(ContextStale) as info:
        await b_record.record("Use American spelling", "en-US everywhere")
    assert info.value.latest == v1 and info.value.workflow == wf

    version, entries = await b_record.read()
    assert version >= v1
    assert [(d.version, d.entry.author, d.entry.summary) for d in entries] == [
        (v1, alice.id, "Use British spelling")
    ]
    assert entries[0].entry.workflow_id == wf and entries[0].entry.HasField("recorded_at")
    v2 = await b_record.record("Use American spelling after all", "en-US", supersedes=v1)
    assert v2 > v1
    _, entries = await a_record.read()
    assert [d.entry.supersedes for d in entries] == [0, v1]
    assert await a_record.latest() == v2

    # The record is what a plain reader of the stream sees.
    msg = await nc.jetstream().get_last_msg("BATON_CONTEXT", f"baton.ctx.{wf}.{bob.id}")
    assert msg.seq == v2
    assert pb.ContextEntry.FromString(msg.data).author == bob.id


async def test_events_carry_the_version_read(connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    wf = f"wf-{uid}"
    task = f"ctx-{uid}"
    alice = await connect(f"alice-{uid}")
    await alice.create_task(task, wf)  # nothing read yet: version 0
    record = alice.context(wf)
    await record.read()
    version = await record.record("Scope", "Only the intro")
    owned = await alice.claim(task)
    await owned.heartbeat("working")
    await owned.complete("s3://out", "done")
    events = await stored_events(nc, task)
    assert [(e.WhichOneof("body"), e.context_version) for *_, e in events] == [
        ("created", 0),
        ("claimed", version),
        ("heartbeat", version),
        ("completed", version),
    ]
    state = await wait_kv(nc, task, lambda s: s.status == pb.TaskStatus.Value("TASK_STATUS_COMPLETED"))
    assert state.context_version == version


async def test_version_read_covers_other_workflows(connect: AgentFactory, uid: str) -> None:
    # The version read is the stream position, which later entries of other
    # workflows move on: reading an empty record after them still reports it.
    alice = await connect(f"alice-{uid}")
    other = alice.context(f"other-{uid}")
    await other.read()
    v = await other.record("x", "y")
    version, entries = await alice.context(f"empty-{uid}").read()
    assert entries == [] and version >= v


async def test_a_bad_or_forged_entry_is_skipped_not_fatal(
    connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    wf = f"wf-{uid}"
    alice = await connect(f"alice-{uid}")
    record = alice.context(wf)
    await record.read()
    good = await record.record("Use British spelling", "en-GB")
    js = nc.jetstream()
    # Bytes that are no ContextEntry, and an entry claiming alice wrote it
    # published under mallory's name.
    junk = (await js.publish(f"baton.ctx.{wf}.mallory", b"\xff\xff not protobuf")).seq
    forged = pb.ContextEntry(workflow_id=wf, author=alice.id, summary="Use American spelling")
    forged_seq = (await js.publish(f"baton.ctx.{wf}.mallory", forged.SerializeToString())).seq
    snapshot = await record.read()
    version, entries = snapshot
    assert [d.version for d in entries] == [good]
    assert [r.version for r in snapshot.refused] == [junk, forged_seq]
    assert "does not match" in snapshot.refused[1].reason
    assert version >= forged_seq
    # The record stays writable after the bad entries.
    assert await record.record("Scope", "intro only") > forged_seq
