"""The client's port of the ownership fold.

Unit tests of the rules, then the real check: for a scripted history full of
violations published raw to a real server, the Python fold of the stream
equals the record the Rust orchestrator stored.
"""

from __future__ import annotations

import itertools
from typing import Any

from support import publish_raw, wait_kv

from baton_client import TaskStatus, TaskView, pb
from baton_client.agent import duration
from baton_client.state import Disposition, TaskView as View, apply

_ids = itertools.count(1)


def ev(agent: str, epoch: int = 0, task: str = "t1", **body: Any) -> pb.Event:
    e = pb.Event(
        event_id=f"e{next(_ids)}", task_id=task, workflow_id="wf", agent_id=agent, epoch=epoch
    )
    ((kind, msg),) = body.items()
    getattr(e, kind).CopyFrom(msg)
    return e


def fold(events: list[pb.Event]) -> tuple[View | None, list[Disposition]]:
    view: View | None = None
    out = []
    for seq, e in enumerate(events, start=1):
        view, disposition, _ = apply(view, e, seq, f"baton.evt.{e.task_id}.{e.agent_id}")
        out.append(disposition)
    return view, out


CREATE = dict(created=pb.TaskCreated(stage="draft"))
CLAIM = dict(claimed=pb.Claimed(heartbeat_within=duration(30)))
HB = dict(heartbeat=pb.Heartbeat())


def test_claim_then_second_claim_is_refused() -> None:
    view, d = fold([ev("p", **CREATE), ev("a", **CLAIM), ev("b", **CLAIM)])
    assert d == [Disposition.APPLIED, Disposition.APPLIED, Disposition.REFUSED]
    assert view is not None
    assert (view.owner, view.epoch, view.status, view.violations) == ("a", 1, TaskStatus.WORKING, 1)
    assert view.lease == 30
    assert view.last_event_seq == 3


def test_owner_acts_need_the_current_epoch() -> None:
    view, d = fold([ev("p", **CREATE), ev("a", **CLAIM), ev("a", 0, **HB), ev("b", 1, **HB), ev("a", 1, **HB)])
    assert d[2:] == [Disposition.REFUSED, Disposition.REFUSED, Disposition.APPLIED]
    assert view is not None and view.violations == 2


def test_handoff_to_agent_and_stage() -> None:
    offer_b = dict(handoff_offered=pb.HandoffOffered(to_agent="b", output_location="s3://x"))
    offer_stage = dict(handoff_offered=pb.HandoffOffered(to_stage="review", output_location="s3://y"))
    accept = dict(handoff_accepted=pb.HandoffAccepted())
    view, d = fold(
        [
            ev("p", **CREATE),
            ev("a", **CLAIM),
            ev("a", 1, **offer_b),
            ev("c", **accept),  # not the recipient
            ev("a", 1, **HB),  # owner may still heartbeat while the offer is pending
            ev("b", **accept),
            ev("b", 2, **offer_stage),
            ev("z", **accept),  # anyone may accept a stage offer
        ]
    )
    assert d == [Disposition.APPLIED] * 3 + [Disposition.REFUSED] + [Disposition.APPLIED] * 4
    assert view is not None
    assert (view.owner, view.epoch, view.stage, view.output_location) == ("z", 3, "review", "s3://y")
    assert view.pending_handoff is None and view.status == TaskStatus.WORKING


def test_reject_release_fail_complete_and_terminal() -> None:
    offer_b = dict(handoff_offered=pb.HandoffOffered(to_agent="b"))
    view, d = fold(
        [
            ev("p", **CREATE),
            ev("a", **CLAIM),
            ev("a", 1, **offer_b),
            ev("a", 1, blocked=pb.Blocked(reason="x")),  # refused: offer pending
            ev("b", handoff_rejected=pb.HandoffRejected(reason="busy")),
            ev("a", 1, released=pb.Released(reason="r")),
            ev("b", **CLAIM),
            ev("b", 3, failed=pb.Failed(reason="f", retryable=True)),
            ev("c", **CLAIM),
            ev("c", 5, completed=pb.Completed(output_location="s3://done", summary="ok")),
            ev("c", 5, **HB),  # after terminal
        ]
    )
    assert d == [
        Disposition.APPLIED,
        Disposition.APPLIED,
        Disposition.APPLIED,
        Disposition.REFUSED,
        Disposition.APPLIED,
        Disposition.APPLIED,
        Disposition.APPLIED,
        Disposition.APPLIED,
        Disposition.APPLIED,
        Disposition.APPLIED,
        Disposition.REFUSED,
    ]
    assert view is not None
    assert (view.owner, view.epoch, view.status) == ("c", 5, TaskStatus.COMPLETED)
    assert view.active_owner is None and view.output_location == "s3://done"


def test_invalid_events_and_subject_mismatch_are_skipped() -> None:
    view, _ = fold([ev("p", **CREATE)])
    claim = ev("a", **CLAIM)
    same, d, why = apply(view, claim, 2, "baton.evt.t1.mallory")
    assert d == Disposition.INVALID and "subject" in why and same is view
    bad = ev("a", **CLAIM)
    bad.agent_id = "a.b"
    assert apply(view, bad, 2)[1] == Disposition.INVALID
    nobody = pb.Event(event_id="x", task_id="t1", workflow_id="wf", agent_id="a")
    assert apply(view, nobody, 2)[1] == Disposition.INVALID


def test_unknown_task_and_duplicates() -> None:
    assert apply(None, ev("a", **CLAIM), 1)[1] == Disposition.UNKNOWN_TASK
    view, _ = fold([ev("p", **CREATE), ev("a", **CLAIM)])
    assert apply(view, ev("b", **CLAIM), 2)[1] == Disposition.DUPLICATE


def test_operators() -> None:
    view, _ = fold([ev("p", **CREATE), ev("a", **CLAIM)])
    revoke = ev("x", revoked=pb.Revoked(reason="r"))
    assert apply(view, revoke, 3, operators=frozenset({"ops"}))[1] == Disposition.REFUSED
    after, d, _ = apply(view, revoke, 3)
    assert d == Disposition.APPLIED and after is not None and after.owner is None and after.epoch == 2


async def test_python_fold_matches_the_orchestrator(services: Any, nc: Any, uid: str) -> None:
    task = f"fold-{uid}"
    offer = dict(handoff_offered=pb.HandoffOffered(to_agent="bob", output_location="s3://o"))
    history = [
        ev("planner", task=task, created=pb.TaskCreated(stage="draft", assignee="alice")),
        ev("mallory", task=task, **CLAIM),  # not the assignee
        ev("alice", task=task, **CLAIM),
        ev("mallory", 1, task=task, **HB),  # not the owner
        ev("alice", 0, task=task, **HB),  # stale epoch
        ev("alice", 1, task=task, blocked=pb.Blocked(reason="input")),
        ev("alice", 1, task=task, **HB),
        ev("alice", 1, task=task, **offer),
        ev("carol", task=task, handoff_accepted=pb.HandoffAccepted()),  # not the recipient
        ev("bob", task=task, handoff_rejected=pb.HandoffRejected(reason="busy")),
        ev("alice", 1, task=task, **offer),
        ev("bob", task=task, handoff_accepted=pb.HandoffAccepted()),
        ev("bob", 2, task=task, handoff_offered=pb.HandoffOffered(to_stage="review")),
        ev("zed", task=task, handoff_accepted=pb.HandoffAccepted()),
        ev("zed", 3, task=task, failed=pb.Failed(reason="retry me", retryable=True)),
        ev("planner", task=task, created=pb.TaskCreated()),  # exists already
    ]
    view: TaskView | None = None
    last = 0
    for e in history:
        last = await publish_raw(nc, e)
        view, _, _ = apply(view, e, last, f"baton.evt.{task}.{e.agent_id}")
    stored = await wait_kv(nc, task, lambda s: s.last_event_seq == last)
    expected = TaskView.from_state(stored)
    assert view == expected
    assert (view.owner, view.epoch, view.status, view.stage) == (None, 4, TaskStatus.SUBMITTED, "review")
    assert view.violations == 5
