"""Artifact leases: the port of the names, the read path and the fold (unit
tests of the Rust rules), the fenced file store, and the SDK against the real
services: racing acquirers (Python alone, and Python with the Rust CLI),
conflicts by mode and by hierarchy, a silent holder lapsing and its late
write refused, hand-over, revocation under the published policy, forged and
malformed events, the Python fold of the stream agreeing with the Rust one
(``baton leases``), the Rust stall detector's sweep, tasks that declare
the artifacts they write, refused acquirers recorded as waiting, stores
reporting stale writes, and the roots the Rust orchestrator materialises in
KV ``baton-leases`` (the same fold as Python's, and where the operators'
view and every act start from).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from conftest import AgentFactory, Services, baton_binary
from support import eventually

from baton_client import (
    Agent,
    ArtifactHeld,
    ArtifactName,
    FencedDir,
    InvalidArtifactName,
    Lease,
    LeaseHeld,
    LeaseLost,
    LeaseMode,
    LeaseNotHeld,
    LeaseRefused,
    StaleToken,
    pb,
    subjects,
)
from baton_client.leases import (
    Acquire,
    Artifact,
    Disposition,
    Expired,
    Fence,
    Granted,
    HandOver,
    Held,
    Hold,
    HoldView,
    LeaseBook,
    LeaseEvent,
    NotHolder,
    NotOperator,
    Release,
    Renew,
    Revoke,
    Root,
    RootState,
    SelfHandOver,
    StaleWrite,
    StaleWriteReported,
    Sweep,
    Wait,
    Waiter,
    WaiterView,
    WrongToken,
    apply,
    holds_view,
    parse_broker_time,
    rfc3339,
    validate_lease_event,
)
from baton_client import lease_handle
from baton_client._transport import Stored, kv_values, parse_checkpoint
from baton_client.state import TaskView, WireError, validate_event

S = 1_000_000_000  # nanoseconds per second
EX, SH = LeaseMode.EXCLUSIVE, LeaseMode.SHARED


def name(s: str) -> ArtifactName:
    return ArtifactName(s)


# -- names and subjects ---------------------------------------------------------


def test_names_are_normalised_and_bad_ones_refused() -> None:
    assert name("/drafts/").value == "drafts"
    assert name("drafts/post.md").root == "drafts"
    assert name("/srv/a").value == "srv/a"
    assert name("a/" * 15 + "a").segments == ["a"] * 16
    for bad, why in [
        ("", "empty"),
        ("/", "empty"),
        ("a//b", "empty segment"),
        ("a/./b", "`.` and `..`"),
        ("../x", "`.` and `..`"),
        ("a\nb", "control"),
        ("a\x85b", "control"),
        ("a/" * 17, "more than 16 segments"),
        ("x" * 257, "longer than 256 bytes"),
        ("é" * 129, "longer than 256 bytes"),  # 258 bytes of UTF-8
    ]:
        with pytest.raises(InvalidArtifactName) as refused:
            ArtifactName(bad)
        assert why in refused.value.reason, (bad, refused.value)
        assert isinstance(refused.value, ValueError)
    assert name("x" * 256).value == "x" * 256


def test_overlap_is_by_whole_segments() -> None:
    assert name("drafts").overlaps(name("drafts/post.md"))
    assert name("drafts/post.md").overlaps(name("drafts"))
    assert name("drafts/post.md").overlaps(name("drafts/post.md"))
    assert not name("drafts").overlaps(name("drafts2/post.md"))
    assert not name("drafts/a").overlaps(name("drafts/b"))
    assert not name("drafts/a").overlaps(name("drafts/ab"))
    # Same name, different scopes: no overlap.
    assert not Artifact.of("drafts").overlaps(Artifact.of("drafts", "w1"))


def test_subject_tokens_round_trip_and_are_unique() -> None:
    n = name("drafts/post v2.md/~x/é")
    tokens = n.subject_tokens()
    assert tokens == "drafts.post~20v2~2Emd.~7Ex.~C3~A9.~"
    back = tokens.split(".")
    assert back[-1] == "~"
    assert ArtifactName.from_subject_tokens(back[:-1]) == n
    # `a` spelt `~61`, lower-case hex, a lone `~`, a byte that is not a
    # subject character, invalid UTF-8: not the normal form.
    for bad in ["~61", "~2e", "~", "~2", "a*b", "~C3", "a~ZZ"]:
        with pytest.raises(InvalidArtifactName):
            ArtifactName.from_subject_tokens([bad])
    with pytest.raises(InvalidArtifactName):
        ArtifactName.from_subject_tokens([])
    # An escaped "/" would give "a/b" a second subject, outside root "a".
    for slash in ["~2Fa", "a~2Fb"]:
        with pytest.raises(InvalidArtifactName):
            ArtifactName.from_subject_tokens([slash])
    # Every byte that is not [A-Za-z0-9_-] is escaped, so no token holds a
    # subject separator or wildcard.
    for s in ["a.b", "a*b", "a>b", "a b", "a~b", "ü"]:
        t = name(s).subject_tokens()[:-2]
        assert not set(t) & set(".*> "), t
        assert ArtifactName.from_subject_tokens([t]).value == s


def test_lease_subjects_and_the_root_filter() -> None:
    post = Artifact.of("drafts/post.md", "w1")
    assert subjects.lease(post, "editor") == "baton.art.w1.editor.drafts.post~2Emd.~"
    assert subjects.lease_root(post) == "baton.art.w1.*.drafts.>"
    top = Artifact.of("x")
    assert subjects.lease(top, "editor") == "baton.art._.editor.x.~"
    assert subjects.lease_root(Artifact.of("drafts/post.md")) == "baton.art._.*.drafts.>"
    assert subjects.parse_lease("baton.art.w1.editor.drafts.post~2Emd.~") == (
        "w1",
        "editor",
        ["drafts", "post~2Emd"],
    )
    for not_one in ["baton.art.w1.editor.~", "baton.art.w1.editor.x", "baton.art.w1", "baton.evt.t.a"]:
        assert subjects.parse_lease(not_one) is None, not_one


# -- the read path ----------------------------------------------------------------


_ids = itertools.count(1)


def event(agent: str, artifact: str, body: Any, token: int = 0, workflow: str | None = None) -> LeaseEvent:
    return LeaseEvent(
        event_id=f"e{next(_ids)}-{os.urandom(4).hex()}",
        agent=agent,
        artifact=Artifact.of(artifact, workflow),
        token=token,
        occurred_at=None,
        body=body,
    )


def acq(mode: LeaseMode = EX, ttl: float = 5) -> Acquire:
    return Acquire(mode, int(ttl * S))


def test_a_lease_event_reads_back_from_its_own_subject_only() -> None:
    e = event("editor", "drafts/post.md", acq(), workflow="w1")
    subject = e.subject
    assert subject == "baton.art.w1.editor.drafts.post~2Emd.~"
    assert validate_lease_event(subject, e.encode()) == e
    for forged in [
        "baton.art.w1.publisher.drafts.post~2Emd.~",
        "baton.art._.editor.drafts.post~2Emd.~",
        "baton.art.w1.editor.drafts.other~2Emd.~",
        "baton.art.w1.editor.drafts.post~2Emd",
        "baton.art.w1.editor.drafts.post~2emd.~",
    ]:
        with pytest.raises(WireError) as refused:
            validate_lease_event(forged, e.encode())
        assert refused.value.field == "subject", (forged, refused.value)
    g = event("editor", "x", Release("done"))
    assert validate_lease_event("baton.art._.editor.x.~", g.encode()) == g
    # Every body kind survives the wire.
    for body in [
        Renew(),
        Release("r"),
        HandOver("publisher", 3 * S),
        Revoke("editor", "stuck"),
        Acquire(SH, S, "t1"),
        Sweep(),
        Wait(SH, 3 * S),
        Wait(EX, 0),
        StaleWrite("editor", 3, 5),
        StaleWrite(None, 0, 1),
    ]:
        e2 = event("ops", "drafts", body, token=4)
        assert validate_lease_event(e2.subject, e2.encode()) == e2
    # As Rust sends it: the wait's ttl is on the wire even when zero.
    assert event("a", "x", Wait(EX, 0)).to_wire().waiting.HasField("ttl")


def test_the_read_path_refuses_what_every_reader_refuses() -> None:
    good = event("a", "x", acq()).to_wire()
    subject = "baton.art._.a.x.~"

    def refused(w: pb.LeaseEvent) -> WireError:
        with pytest.raises(WireError) as e:
            validate_lease_event(subject, w.SerializeToString())
        return e.value

    no_ttl = pb.LeaseEvent()
    no_ttl.CopyFrom(good)
    no_ttl.acquired.ClearField("ttl")
    assert refused(no_ttl).field == "acquired.ttl"
    zero = pb.LeaseEvent()
    zero.CopyFrom(good)
    zero.acquired.ttl.seconds = 0
    assert refused(zero).field == "acquired.ttl"
    no_mode = pb.LeaseEvent()
    no_mode.CopyFrom(good)
    no_mode.acquired.mode = pb.LEASE_MODE_UNSPECIFIED
    assert refused(no_mode).field == "mode"
    not_normal = pb.LeaseEvent()
    not_normal.CopyFrom(good)
    not_normal.artifact = "/x"
    assert refused(not_normal).field == "artifact"
    no_body = pb.LeaseEvent(event_id="e", agent_id="a", artifact="x")
    assert refused(no_body).field == "body"
    no_id = pb.LeaseEvent()
    no_id.CopyFrom(good)
    no_id.event_id = ""
    assert refused(no_id).field == "event_id"
    long_reason = pb.LeaseEvent(
        event_id="e", agent_id="a", artifact="x", released=pb.LeaseReleased(reason="r" * 2049)
    )
    assert refused(long_reason).field == "released.reason"
    bad_agent = pb.LeaseEvent()
    bad_agent.CopyFrom(good)
    bad_agent.agent_id = "_a"
    with pytest.raises(WireError) as e:
        validate_lease_event("baton.art._._a.x.~", bad_agent.SerializeToString())
    assert e.value.field == "agent_id"
    # A wait: a mode it asks for, a ttl that is absent (0: no longer
    # waiting) or not negative; a stale write's writer: none or an agent id.
    waiting = pb.LeaseEvent(
        event_id="e", agent_id="a", artifact="x", waiting=pb.LeaseWaiting(mode=pb.LEASE_MODE_SHARED)
    )
    assert validate_lease_event(subject, waiting.SerializeToString()).body == Wait(SH, 0)
    waiting.waiting.mode = pb.LEASE_MODE_UNSPECIFIED
    assert refused(waiting).field == "mode"
    waiting.waiting.mode = pb.LEASE_MODE_EXCLUSIVE
    waiting.waiting.ttl.seconds = -1
    assert refused(waiting).field == "waiting.ttl"
    stale = pb.LeaseEvent(
        event_id="e", agent_id="a", artifact="x", stale_write=pb.LeaseStaleWrite(writer="", token=2)
    )
    assert validate_lease_event(subject, stale.SerializeToString()).body == StaleWrite(None, 2, 0)
    stale.stale_write.writer = "_w"
    assert refused(stale).field == "stale_write.writer"
    with pytest.raises(WireError) as e:
        validate_lease_event(subject, b"\x00" * 8193)
    assert e.value.field == "payload" and "8192" in e.value.message
    with pytest.raises(WireError) as e:
        validate_lease_event(subject, b"\xff\xff\xff")
    assert e.value.field == "payload"


# -- the fold ---------------------------------------------------------------------


class Stream:
    """Events folded one by one at given broker times, as a reader folds them."""

    def __init__(self, operators: tuple[str, ...] = ()) -> None:
        self.book = LeaseBook()
        self.seq = 0
        self.operators = operators

    def __call__(self, at: float, e: LeaseEvent) -> Any:
        self.seq += 1
        return apply(self.book, e, self.seq, int(at * S), self.operators)


def test_of_two_acquisitions_the_first_wins_and_the_second_names_it() -> None:
    fold = Stream()
    first = fold(0, event("a", "drafts/post.md", acq()))
    assert first.disposition is Disposition.APPLIED
    assert first.granted_token == 1
    second = fold(0.1, event("b", "drafts/post.md", acq()))
    assert second.disposition is Disposition.REFUSED
    assert isinstance(second.refusal, Held)
    assert (second.refusal.hold.agent, second.refusal.hold.token) == ("a", 1)
    assert str(second.refusal.artifact) == "drafts/post.md"
    (hold,) = fold.book.holds(Artifact.of("drafts/post.md"))
    assert (hold.agent, hold.mode, hold.since, hold.expires_at) == ("a", EX, 0, 5 * S)


def test_modes_conflict_unless_both_shared() -> None:
    fold = Stream()
    assert fold(0, event("r1", "doc", acq(SH))).disposition is Disposition.APPLIED
    r2 = fold(0, event("r2", "doc", acq(SH)))
    assert r2.disposition is Disposition.APPLIED and r2.granted_token == 2
    w = fold(0, event("w", "doc", acq(EX)))
    assert isinstance(w.refusal, Held) and w.refusal.hold.agent == "r1"
    fold(0, event("r1", "doc", Release(), token=1))
    w = fold(0, event("w", "doc", acq(EX)))
    assert isinstance(w.refusal, Held) and w.refusal.hold.agent == "r2"
    fold(0, event("r2", "doc", Release(), token=2))
    assert fold(0, event("w", "doc", acq(EX))).granted_token == 3
    r = fold(0, event("r1", "doc", acq(SH)))
    assert isinstance(r.refusal, Held) and r.refusal.hold.agent == "w"


def test_folders_and_files_conflict_in_both_orders_and_roots_and_scopes_are_apart() -> None:
    fold = Stream()
    assert fold(0, event("a", "drafts", acq())).granted_token == 1
    below = fold(0, event("b", "drafts/post.md", acq(SH)))
    assert isinstance(below.refusal, Held) and str(below.refusal.artifact) == "drafts"
    # Another root, another scope: unaffected, with their own tokens.
    assert fold(0, event("b", "drafts2/post.md", acq())).granted_token == 1
    assert fold(0, event("b", "drafts", acq(), workflow="w1")).granted_token == 1
    fold(0, event("a", "drafts", Release(), token=1))
    assert fold(0, event("b", "drafts/post.md", acq())).granted_token == 2
    above = fold(0, event("a", "drafts/", acq(SH)))
    assert isinstance(above.refusal, Held) and str(above.refusal.artifact) == "drafts/post.md"
    # A sibling does not conflict.
    assert fold(0, event("a", "drafts/other.md", acq())).granted_token == 3
    # The same agent may hold names above and below its own.
    assert fold(0, event("b", "drafts/post.md/v2", acq())).disposition is Disposition.APPLIED


def test_expiry_is_judged_by_stored_time_and_only_within_the_root() -> None:
    fold = Stream()
    fold(0, event("a", "doc/x", acq(ttl=1)))
    fold(0, event("a", "other", acq(ttl=1)))
    # Live at exactly renewed_at + ttl ...
    at_edge = fold(1.0, event("b", "doc/x", acq()))
    assert isinstance(at_edge.refusal, Held)
    assert not any(isinstance(e, Expired) for e in at_edge.effects)
    # ... expired a nanosecond later: dropped before judging, a higher token.
    fold.seq += 1
    late = apply(fold.book, event("b", "doc", acq()), fold.seq, 1 * S + 1)
    assert late.disposition is Disposition.APPLIED
    assert [type(e) for e in late.effects] == [Expired, Granted]
    assert late.granted_token == 2
    # The expired hold of another root stays until an event of its root.
    assert [h.agent for h in fold.book.holds(Artifact.of("other"))] == ["a"]
    assert [(str(a), h.agent) for a, h in fold.book.expired(2 * S)] == [("other", "a")]
    # The old holder cannot renew, release or hand over any more.
    assert isinstance(fold(2, event("a", "doc/x", Renew(), token=1)).refusal, NotHolder)


def test_a_renewal_extends_from_its_stored_time() -> None:
    fold = Stream()
    fold(0, event("a", "doc", acq(ttl=1)))
    assert fold(0.9, event("a", "doc", Renew(), token=1)).disposition is Disposition.APPLIED
    held = fold(1.5, event("b", "doc", acq()))
    assert isinstance(held.refusal, Held)
    assert held.refusal.hold.expires_at == int(1.9 * S)
    assert fold(2.0, event("b", "doc", acq())).granted_token == 2


def test_holder_acts_need_the_exact_token_and_taking_again_replaces() -> None:
    fold = Stream()
    fold(0, event("a", "doc", acq()))
    again = fold(1, event("a", "doc", acq(SH)))
    assert again.granted_token == 2
    (hold,) = fold.book.holds(Artifact.of("doc"))
    assert (hold.token, hold.mode, hold.since) == (2, SH, 1 * S)
    stale = fold(1, event("a", "doc", Renew(), token=1))
    assert stale.disposition is Disposition.REFUSED and stale.refusal == WrongToken(2)
    assert isinstance(fold(1, event("b", "doc", Release(), token=2)).refusal, NotHolder)
    assert isinstance(fold(1, event("b", "doc", HandOver("c", S), token=2)).refusal, NotHolder)
    # A hold on the folder is not a hold on the file.
    assert isinstance(fold(1, event("a", "doc/x", Renew(), token=2)).refusal, NotHolder)
    assert fold(1, event("a", "doc", Release("done"), token=2)).disposition is Disposition.APPLIED
    assert fold.book.holds(Artifact.of("doc")) == ()
    assert isinstance(fold(1, event("a", "doc", Release(), token=2)).refusal, NotHolder)


def test_a_hand_over_gives_the_recipient_a_new_token() -> None:
    fold = Stream()
    fold(0, event("a", "doc", acq(SH)))
    assert fold(0, event("a", "doc", HandOver("a", S), token=1)).refusal == SelfHandOver()
    moved = fold(0, event("a", "doc", HandOver("b", 3 * S), token=1))
    assert moved.granted_token == 2
    (hold,) = fold.book.holds(Artifact.of("doc"))
    assert (hold.agent, hold.mode, hold.ttl) == ("b", SH, 3 * S)
    assert isinstance(fold(0, event("a", "doc", Renew(), token=1)).refusal, NotHolder)
    assert fold(2.9, event("b", "doc", Renew(), token=2)).disposition is Disposition.APPLIED


def test_a_hand_over_that_would_break_exclusivity_is_refused() -> None:
    # The sender holds the folder and a file in it: handing the folder away
    # would leave two exclusive holders of the file.
    fold = Stream()
    fold(0, event("a", "h", acq()))
    fold(0, event("a", "h/x", acq()))
    out = fold(1, event("a", "h", HandOver("b", S), token=1))
    assert isinstance(out.refusal, Held), out
    assert fold.book.holds(Artifact.of("h"))[0].agent == "a"


def test_only_operators_revoke_and_no_operators_means_anyone() -> None:
    fold = Stream(operators=("ops",))
    fold(0, event("a", "doc", acq()))
    assert fold(0, event("b", "doc", Revoke("a", "mine now"))).refusal == NotOperator()
    assert isinstance(fold(0, event("ops", "doc", Revoke("c"))).refusal, NotHolder)
    assert fold(0, event("ops", "doc", Revoke("a", "stuck"))).disposition is Disposition.APPLIED
    assert fold(0, event("b", "doc", acq())).granted_token == 2
    anyone = Stream()
    anyone(0, event("a", "doc", acq()))
    assert anyone(0, event("b", "doc", Revoke("a"))).disposition is Disposition.APPLIED


def test_a_sweep_drops_the_expired_holds_of_its_root_and_never_a_live_one() -> None:
    fold = Stream()
    fold(0, event("a", "doc/x", acq(ttl=1)))
    fold(0, event("b", "doc/y", acq(ttl=10)))
    fold(0, event("c", "other", acq(ttl=1)))
    early = fold(0.5, event("detector", "doc", Sweep()))
    assert early.disposition is Disposition.APPLIED and early.effects == []
    swept = fold(2, event("detector", "doc", Sweep()))
    assert swept.disposition is Disposition.APPLIED
    assert [(type(e), e.hold.agent) for e in swept.effects if isinstance(e, Expired)] == [(Expired, "a")]
    assert [(str(a), h.agent) for a, hs in fold.book.items() for h in hs] == [("doc/y", "b"), ("other", "c")]
    assert isinstance(fold(2, event("a", "doc/x", Renew(), token=1)).refusal, NotHolder)


def test_a_refused_agent_waits_keeping_its_start_until_granted_or_withdrawn() -> None:
    fold = Stream()
    post, drafts = Artifact.of("drafts/post.md"), Artifact.of("drafts")
    fold(0, event("editor", "drafts/post.md", acq(ttl=60)))
    assert isinstance(fold(1, event("reader", "drafts/post.md", acq(SH))).refusal, Held)
    waited = fold(1, event("reader", "drafts/post.md", Wait(SH, 30 * S)))
    assert waited.disposition is Disposition.APPLIED and waited.effects == []
    assert fold.book.waiters(post) == (Waiter("reader", SH, 1 * S, 1 * S, 30 * S),)
    # Waiting again replaces the wait (its mode, ttl and last time) but
    # keeps its start.
    fold(10, event("reader", "drafts/post.md", Wait(EX, 20 * S)))
    assert fold.book.waiters(post) == (Waiter("reader", EX, 1 * S, 10 * S, 20 * S),)
    assert fold.book.waiters(post)[0].expires_at == 30 * S
    # Waits change no hold and no token.
    assert [(h.agent, h.token) for h in fold.book.holds(post)] == [("editor", 1)]
    assert fold.book.last_token(post.root) == 1
    # Granted, its wait ends (only on that artifact: its wait on the folder stays).
    fold(11, event("reader", "drafts", Wait(SH, 30 * S)))
    fold(12, event("editor", "drafts/post.md", Release(), token=1))
    assert fold(12, event("reader", "drafts/post.md", acq(SH))).granted_token == 2
    assert fold.book.waiters(post) == ()
    assert [w.agent for w in fold.book.waiters(drafts)] == ["reader"]
    # A ttl of zero withdraws (and withdrawing what is not there is no error).
    assert fold(13, event("reader", "drafts", Wait(SH, 0))).disposition is Disposition.APPLIED
    assert fold.book.waiters(drafts) == ()
    assert fold(13, event("reader", "drafts", Wait(SH, 0))).disposition is Disposition.APPLIED
    # A hand-over to a waiting agent ends its wait.
    fold(14, event("publisher", "drafts/post.md", Wait(EX, 30 * S)))
    fold(14, event("other", "drafts/post.md", Wait(EX, 30 * S)))
    assert fold(15, event("reader", "drafts/post.md", HandOver("publisher", 5 * S), token=2)).granted_token == 3
    assert [w.agent for w in fold.book.waiters(post)] == ["other"]
    # A wait that starts again after it ended starts from its new time.
    fold(16, event("reader", "drafts/post.md", Wait(SH, 30 * S)))
    assert [(w.agent, w.since) for w in fold.book.waiters(post)] == [("other", 14 * S), ("reader", 16 * S)]
    assert [(str(a), len(ws)) for a, ws in fold.book.iter_waits()] == [("drafts/post.md", 2)]


def test_lapsed_waits_are_dropped_by_a_later_event_of_their_root_only() -> None:
    fold = Stream()
    fold(0, event("a", "doc/x", Wait(EX, 1 * S)))
    fold(0, event("a", "other", Wait(EX, 1 * S)))
    fold(0, event("a", "doc/x", Wait(EX, 1 * S), workflow="w1"))
    # Standing at exactly renewed_at + ttl ...
    fold(1, event("b", "doc/y", Sweep()))
    assert [w.agent for w in fold.book.waiters(Artifact.of("doc/x"))] == ["a"]
    # ... lapsed a nanosecond later: dropped, with no effect, by any event
    # of the root (a sweep here); other roots and scopes keep theirs.
    fold.seq += 1
    late = apply(fold.book, event("b", "doc/y", Sweep()), fold.seq, 1 * S + 1)
    assert late.disposition is Disposition.APPLIED and late.effects == []
    assert fold.book.waiters(Artifact.of("doc/x")) == ()
    assert [str(a) for a, _ in fold.book.iter_waits()] == ["other", "w1:doc/x"]
    # A lapsed wait still in the book keeps nobody out.
    fold(2, event("c", "other", acq()))
    (hold,) = fold.book.holds(Artifact.of("other"))
    assert fold.book.waiters(Artifact.of("other")) == ()  # the grant's event dropped it
    fold(3, event("a", "other", Wait(EX, 1 * S)))
    assert [w.agent for _, w in fold.book.blocked_by(Artifact.of("other"), hold, 4 * S)] == ["a"]
    assert list(fold.book.blocked_by(Artifact.of("other"), hold, 4 * S + 1)) == []
    assert [w.agent for w in fold.book.waiters(Artifact.of("other"))] == ["a"]


def test_a_hold_keeps_out_the_conflicting_waits_on_its_name_above_and_below() -> None:
    fold = Stream()
    post = Artifact.of("drafts/post.md")
    fold(0, event("editor", "drafts/post.md", acq()))
    for who, what, mode, workflow in [
        ("publisher", "drafts", EX, None),  # a folder above the file
        ("reader", "drafts/post.md", SH, None),  # shared against exclusive
        ("editor", "drafts", EX, None),  # the holder's own wait
        ("sibling", "drafts/other.md", EX, None),
        ("elsewhere", "drafts2", EX, None),  # another root
        ("scoped", "drafts/post.md", EX, "w1"),  # another scope
        ("below", "drafts/post.md/v2", SH, None),  # a name under the file
    ]:
        fold(1, event(who, what, Wait(mode, 30 * S), workflow=workflow))
    (hold,) = fold.book.holds(post)
    blocked = [(str(a), w.agent, w.mode) for a, w in fold.book.blocked_by(post, hold, 2 * S)]
    assert blocked == [
        ("drafts", "publisher", EX),
        ("drafts/post.md", "reader", SH),
        ("drafts/post.md/v2", "below", SH),
    ]
    # Shared holds keep out exclusive waits, never shared ones.
    fold(0, event("r1", "notes", acq(SH)))
    fold(1, event("r2", "notes/a", Wait(SH, 30 * S)))
    fold(1, event("w", "notes", Wait(EX, 30 * S)))
    (shared,) = fold.book.holds(Artifact.of("notes"))
    assert [w.agent for _, w in fold.book.blocked_by(Artifact.of("notes"), shared, 2 * S)] == ["w"]


def test_the_operators_view_lists_each_hold_with_the_waits_it_keeps_out() -> None:
    fold = Stream()
    fold(0, event("editor", "drafts/post.md", Acquire(EX, 10 * S, "t1"), workflow="blog"))
    fold(1, event("reader", "drafts", Wait(SH, 30 * S), workflow="blog"))
    fold(2, event("reader", "drafts", Wait(SH, 30 * S), workflow="blog"))
    fold(2, event("r", "notes", acq(SH, ttl=1)))
    notes, post = holds_view(fold.book, 5 * S)
    assert notes == HoldView(
        artifact="notes",
        workflow=None,
        holder="r",
        mode="shared",
        token=1,
        since=rfc3339(2 * S),
        renewed_at=rfc3339(2 * S),
        expires_at=rfc3339(3 * S),
        expired=True,
        task=None,
        waiting=[],
    ), "the global scope first, then by workflow"
    assert (post.artifact, post.workflow, post.holder, post.task, post.expired) == (
        "drafts/post.md",
        "blog",
        "editor",
        "t1",
        False,
    )
    assert post.waiting == [WaiterView("reader", "drafts", "shared", rfc3339(1 * S), rfc3339(32 * S))]
    # Field for field the JSON of `baton leases --json`.
    assert list(dataclasses.asdict(post)) == [
        "artifact", "workflow", "holder", "mode", "token", "since", "renewed_at",
        "expires_at", "expired", "task", "waiting",
    ]
    assert dataclasses.asdict(post)["waiting"][0]["agent"] == "reader"


def test_a_stale_write_report_changes_no_hold_and_names_the_holders() -> None:
    fold = Stream()
    fold(0, event("editor", "drafts/post.md", acq()))
    out = fold(1, event("store", "drafts/post.md", StaleWrite("old-editor", 0, 1)))
    assert out.disposition is Disposition.APPLIED
    (hold,) = fold.book.holds(Artifact.of("drafts/post.md"))
    assert out.effects == [
        StaleWriteReported(Artifact.of("drafts/post.md"), "store", "old-editor", 0, 1, (hold,))
    ]
    assert fold.book.last_token(Artifact.of("drafts").root) == 1
    # Nobody holds it: reported all the same, by a store that cannot name the writer.
    out = fold(2, event("store", "other", StaleWrite(None, 3, 4)))
    assert out.effects == [StaleWriteReported(Artifact.of("other"), "store", None, 3, 4, ())]


def test_a_task_declares_at_most_16_artifacts_in_normal_form() -> None:
    def created(*names: str) -> pb.Event:
        e = pb.Event(event_id="e1", task_id="t1", workflow_id="wf", agent_id="p")
        e.created.artifacts.extend(names)
        return e

    validate_event(created("drafts/post.md", "assets"), "baton.evt.t1.p")
    for bad in [created("/drafts/"), created("a//b"), created(*[f"f{i}" for i in range(17)])]:
        with pytest.raises(WireError) as refused:
            validate_event(bad, "baton.evt.t1.p")
        assert refused.value.field == "created.artifacts"
    state = pb.TaskState(task_id="t1", workflow_id="wf", status=pb.TaskStatus.Value("TASK_STATUS_SUBMITTED"))
    state.last_event.seq = 1
    state.artifacts.extend(["drafts/post.md"])
    assert TaskView.from_state(state).artifacts == ("drafts/post.md",)
    state.artifacts.append("./x")
    with pytest.raises(WireError):
        TaskView.from_state(state)


def test_an_event_already_folded_is_a_duplicate() -> None:
    book = LeaseBook()
    e = event("a", "doc", acq())
    assert apply(book, e, 7, 0).granted_token == 1
    again = apply(book, event("b", "doc", acq()), 7, 10 * S)
    assert again.disposition is Disposition.DUPLICATE
    assert apply(book, e, 3, 0).disposition is Disposition.DUPLICATE
    assert [h.agent for h in book.holds(Artifact.of("doc"))] == ["a"]
    assert book.last_seq == 7 and book.last_token(Artifact.of("doc").root) == 1


# -- materialised roots (KV baton-leases) ------------------------------------------


def every_act() -> list[tuple[float, LeaseEvent]]:
    """A history of two roots of the global scope and one of a workflow,
    with every kind of event (broker times in seconds; sequences 1, 2, ...)."""
    return [
        (0, event("a", "docs/x", acq(ttl=10))),
        (0.1, event("b", "docs/y", acq(SH, 10))),
        (0.2, event("c", "docs/y", acq(SH, 10))),
        (0.3, event("c", "docs", Wait(SH, 30 * S))),
        (0.4, event("b", "docs/x", Wait(EX, 5 * S))),
        (0.5, event("a", "docs/z", acq(ttl=60), workflow="w1")),
        (1, event("a", "docs/x", Renew(), token=1)),
        (2, event("a", "docs/x", HandOver("b", 10 * S), token=1)),
        (2.5, event("c", "tmp", acq(ttl=1))),
        (3, event("c", "docs/y", Revoke("b", "tidy"))),
        (3.2, event("d", "docs/z", Wait(EX, 5 * S), workflow="w1")),
        (4, event("a", "tmp", acq(ttl=5))),
        (4.1, event("c", "tmp", Renew(), token=1)),
        (5, event("b", "docs/x", Release(), token=4)),
        (5.5, event("d", "docs/x", acq(ttl=30))),
        (6, event("store", "docs/x", StaleWrite("a", 1, 5))),
        (7, event("d", "docs/z", Wait(EX, 0), workflow="w1")),
        (20, event("e", "docs/q", Sweep())),
        (20.5, event("e", "docs/q", acq())),
        (21, event("a", "tmp", acq(SH, 5))),
    ]


def one_per_root(script: list[tuple[float, LeaseEvent]]) -> list[Artifact]:
    """An artifact of each root the script uses, in order of first use."""
    seen: dict[Root, Artifact] = {}
    for _, e in script:
        seen.setdefault(e.artifact.root, e.artifact)
    return list(seen.values())


def facts(book: LeaseBook, roots: list[Artifact]) -> Any:
    """Everything a book says of the roots: holds, waits, last tokens."""
    return (
        list(book.items()),
        list(book.iter_waits()),
        [book.root_state(a, 0) for a in roots],
    )


def stored_then_folded_on(script: list[tuple[float, LeaseEvent]], cuts: dict[Root, int]) -> LeaseBook:
    """What a reader of KV baton-leases gets (``Agent.leases``): each root as
    stored after the first ``cuts[root]`` events of the script (encoded and
    decoded), restored, then the events after the checkpoint (the lowest
    cut) folded, skipping in each root those its stored state has."""
    book = LeaseBook()
    stored_seq: dict[Root, int] = {}
    for artifact in one_per_root(script):
        cut = cuts[artifact.root]
        before = Stream()
        for at, e in script[:cut]:
            before(at, e)
        last = max((i for i, (_, e) in enumerate(script[:cut], 1) if e.artifact.root == artifact.root), default=0)
        state = before.book.root_state(artifact, last)
        decoded = RootState.decode(state.encode())
        assert decoded == state
        book.restore_root(decoded)
        stored_seq[artifact.root] = last
    upto = min(cuts.values())
    for seq, (at, e) in enumerate(script[upto:], upto + 1):
        if seq > stored_seq[e.artifact.root]:
            apply(book, e, seq, int(at * S))
    return book


def test_a_root_stored_restored_and_folded_on_is_the_uninterrupted_fold() -> None:
    script = every_act()
    roots = one_per_root(script)
    assert len(roots) == 3
    whole = Stream()
    for at, e in script:
        whole(at, e)
    want = facts(whole.book, roots)
    # What the whole fold has, so the comparison means something: holds,
    # waits and tokens in every root.
    assert [(a.name.value, a.workflow, h.agent, h.token) for a, hs in whole.book.items() for h in hs] == [
        ("docs/q", None, "e", 6),
        ("docs/x", None, "d", 5),
        ("tmp", None, "a", 3),
        ("docs/z", "w1", "a", 1),
    ]
    assert [(a.name.value, [w.agent for w in ws]) for a, ws in whole.book.iter_waits()] == [("docs", ["c"])]
    n = len(script)
    for k in range(n + 1):
        # Every root stored at the same point, and roots stored ahead of
        # the checkpoint by different amounts (a crash between a root's
        # write and the checkpoint's), in both orders.
        for spread in (0, 3, -3):
            cuts = {
                a.root: max(0, min(n, k + spread * i)) for i, a in enumerate(roots)
            }
            got = stored_then_folded_on(script, cuts)
            assert facts(got, roots) == want, cuts
    # A stored root replaces what the book had of that root, and nothing
    # else; a root with no token yet has none after it.
    book = Stream()
    for at, e in script:
        book(at, e)
    early = Stream()
    for at, e in script[:3]:
        early(at, e)
    docs, w1_docs, tmp = roots
    assert (tmp.name.value, w1_docs.workflow) == ("tmp", "w1")
    state = early.book.root_state(docs, 3)
    assert [h.token for _, h in state.holds] == [1, 2, 3] and state.last_token == 3
    book.book.restore_root(state)
    assert book.book.root_state(docs, 3) == state
    assert book.book.root_state(tmp, 0) == whole.book.root_state(tmp, 0)
    assert book.book.root_state(w1_docs, 0) == whole.book.root_state(w1_docs, 0)
    book.book.restore_root(RootState(None, "tmp", 4, 0))
    assert book.book.last_token(tmp.root) == 0 and book.book.holds(tmp) == ()
    # Holds and waits that are not the root's are ignored.
    stray = dataclasses.replace(state, segment="tmp")
    book.book.restore_root(stray)
    assert book.book.root_state(tmp, 0) == RootState(None, "tmp", 0, 3)
    assert book.book.root_state(docs, 3) == state
    # The book's own last sequence does not move.
    assert book.book.last_seq == n


def test_a_stored_root_is_read_as_rust_reads_it() -> None:
    artifact = Artifact.of("my docs/x", "w1")
    assert subjects.lease_root_key(artifact) == "art.w1.my=20docs"
    assert subjects.lease_root_key(Artifact.of("drafts/post.md")) == "art._.drafts"
    assert subjects.lease_scope_key_prefix(None) == "art._."
    assert subjects.lease_scope_key_prefix("w1") == "art.w1."
    hold = pb.LeaseHold(
        artifact="my docs/x", agent_id="a", mode=pb.LEASE_MODE_EXCLUSIVE, token=7, task_id="t1"
    )
    hold.since.seconds, hold.renewed_at.seconds, hold.renewed_at.nanos = 10, 11, 5
    hold.ttl.seconds = 3
    wait = pb.LeaseWait(artifact="my docs", agent_id="b", mode=pb.LEASE_MODE_SHARED)
    wait.since.seconds = wait.renewed_at.seconds = 12
    good = pb.LeaseRoot(workflow_id="w1", root="my docs", last_seq=40, last_token=7, holds=[hold], waits=[wait])
    state = RootState.decode(good.SerializeToString())
    assert state == RootState(
        "w1",
        "my docs",
        40,
        7,
        ((artifact, Hold("a", EX, 7, 10 * S, 11 * S + 5, 3 * S, "t1")),),
        # A zero or absent ttl is 0 (a lapsed wait, dropped by the next event).
        ((Artifact.of("my docs", "w1"), Waiter("b", SH, 12 * S, 12 * S, 0)),),
    )
    assert state.contains(artifact) and not state.contains(Artifact.of("my docs/x"))
    assert RootState.decode(state.encode()) == state
    # Names are normalised (as Rust's ArtifactName::new does).
    slashed = pb.LeaseRoot()
    slashed.CopyFrom(good)
    slashed.holds[0].artifact = "/my docs/x/"
    assert RootState.decode(slashed.SerializeToString()) == state

    def refused(change: Any) -> WireError:
        bad = pb.LeaseRoot()
        bad.CopyFrom(good)
        change(bad)
        with pytest.raises(WireError) as e:
            RootState.decode(bad.SerializeToString())
        return e.value

    assert refused(lambda r: setattr(r.holds[0], "artifact", "other/x")).field == "holds.artifact"
    assert refused(lambda r: setattr(r.waits[0], "artifact", "a//b")).field == "waits.artifact"
    assert refused(lambda r: setattr(r, "workflow_id", "_w")).field == "workflow_id"
    assert refused(lambda r: setattr(r.holds[0], "agent_id", "")).field == "holds.agent_id"
    assert refused(lambda r: setattr(r.holds[0], "task_id", "_t")).field == "holds.task_id"
    assert refused(lambda r: setattr(r.waits[0], "mode", pb.LEASE_MODE_UNSPECIFIED)).field == "mode"
    missing = refused(lambda r: r.holds[0].ClearField("since"))
    assert (missing.field, missing.message) == ("holds.since", "required")
    assert refused(lambda r: r.waits[0].ClearField("renewed_at")).field == "waits.renewed_at"
    assert refused(lambda r: setattr(r.holds[0].renewed_at, "nanos", -1)).field == "holds.renewed_at"
    assert refused(lambda r: setattr(r.waits[0].since, "seconds", -1)).field == "waits.since"
    assert refused(lambda r: setattr(r.holds[0].ttl, "seconds", -1)).field == "holds.ttl"
    with pytest.raises(WireError) as e:
        RootState.decode(b"\xff\xff\xff")
    assert e.value.field == "payload"


# -- fencing ----------------------------------------------------------------------


def test_the_fence_refuses_tokens_below_the_name_or_a_name_above() -> None:
    fence = Fence()
    fence.admit("drafts/post.md", 3)
    fence.admit("drafts/post.md", 3)  # the same holder again
    with pytest.raises(StaleToken) as refused:
        fence.admit("drafts/post.md", 2)
    assert (refused.value.artifact, refused.value.token, refused.value.seen) == ("drafts/post.md", 2, 3)
    fence.admit("drafts", 5)
    with pytest.raises(StaleToken):
        fence.admit("drafts/post.md", 4)  # the folder's lease covers the post
    fence.admit("drafts/post.md", 6)
    fence.admit("drafts/other.md", 5)
    # A name below does not cover the names above it.
    fence.admit("drafts", 5)
    assert fence.highest_covering("drafts/post.md") == 6
    assert fence.highest_covering("drafts/new.md") == 5
    assert fence.highest_covering("drafts2") == 0


def test_the_fenced_dir_keeps_data_and_tokens_in_the_shared_format(tmp_path: Path) -> None:
    store = FencedDir(tmp_path / "store")
    store.write("drafts/post.md", 3, b"v1")
    store.write("/drafts2/", 2, b"two")
    store.write("a b/é", 7, b"x")
    store.write("Zed", 1, b"z")
    root = tmp_path / "store"
    assert (root / "drafts" / "post.md").read_bytes() == b"v1"
    assert (root / "drafts2").read_bytes() == b"two"
    assert store.read("drafts/post.md") == b"v1"
    assert (root / ".baton-fence.lock").exists()
    # One line "<token>\t<name>\n" per name, sorted by name as bytes (as
    # Rust's BTreeMap: "Z" < "a", "drafts/" < "drafts2").
    assert (root / ".baton-fence").read_bytes() == (
        "1\tZed\n7\ta b/é\n3\tdrafts/post.md\n2\tdrafts2\n".encode()
    )
    with pytest.raises(StaleToken) as refused:
        store.write("drafts/post.md", 2, b"late")
    assert refused.value.seen == 3
    assert store.read("drafts/post.md") == b"v1"
    store.write("drafts/post.md", 4, b"v2")
    assert store.read("drafts/post.md") == b"v2"
    # A folder of artifacts holds no data itself: refused, nothing recorded.
    with pytest.raises(IsADirectoryError):
        store.write("drafts", 9, b"folder")
    assert store.last_token("drafts") == 0
    # No temporary files left behind.
    assert sorted(p.name for p in root.iterdir()) == [
        ".baton-fence",
        ".baton-fence.lock",
        "Zed",
        "a b",
        "drafts",
        "drafts2",
    ]
    assert os.listdir(root / "drafts") == ["post.md"]
    with pytest.raises(InvalidArtifactName):
        store.write(".baton-fence", 9, b"clobber")


def test_the_fenced_dir_reads_tokens_written_by_the_rust_store(tmp_path: Path) -> None:
    # What baton_agent::fence::FencedDir writes: format!("{token}\t{artifact}\n")
    # in BTreeMap (byte) order, beside the data.
    (tmp_path / ".baton-fence").write_bytes(b"5\tdrafts\n9\tdrafts/post.md\n12\trecords/42\n")
    store = FencedDir(tmp_path)
    assert store.last_token("drafts/post.md") == 9
    assert store.last_token("drafts/other.md") == 5
    assert store.last_token("records/42/x") == 12
    assert store.last_token("elsewhere") == 0
    with pytest.raises(StaleToken):
        store.write("drafts/new.md", 4, b"x")
    store.write("drafts/new.md", 5, b"x")
    assert (tmp_path / ".baton-fence").read_bytes() == (
        b"5\tdrafts\n5\tdrafts/new.md\n9\tdrafts/post.md\n12\trecords/42\n"
    )
    (tmp_path / ".baton-fence").write_bytes(b"x\tdrafts\n")
    with pytest.raises(ValueError, match="bad token line"):
        store.last_token("drafts")


WRITER = """
import sys
from baton_client import FencedDir
store, who, count = FencedDir(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    store.write(f"{who}/n{i}", i + 1, b"x")
"""


def test_writers_in_several_processes_lose_no_token(tmp_path: Path) -> None:
    # Each write reads, changes and replaces the token file under the lock:
    # without it, concurrent writers would drop each other's lines.
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{i}", "30"])
        for i in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    tokens = dict(FencedDir(tmp_path).tokens())
    assert len(tokens) == 120
    assert all(tokens[f"w{i}/n{j}"] == j + 1 for i in range(4) for j in range(30))


# -- against the real services ----------------------------------------------------


async def stored_on(nc: nats.NATS, subject: str) -> list[tuple[int, str, LeaseEvent | None]]:
    """Every message on ``subject`` in BATON_ARTIFACTS, read with raw direct
    gets (not the client library): (seq, subject, event or None if unreadable)."""
    out: list[tuple[int, str, LeaseEvent | None]] = []
    seq = 1
    while True:
        req = {"seq": seq, "next_by_subj": subject}
        msg = await nc.request(
            "$JS.API.DIRECT.GET.BATON_ARTIFACTS", json.dumps(req).encode(), timeout=5
        )
        headers = dict(msg.headers or {})
        if headers.get("Status") == "404":
            return out
        assert "Status" not in headers, headers
        s = int(headers["Nats-Sequence"])
        try:
            e: LeaseEvent | None = validate_lease_event(headers["Nats-Subject"], msg.data)
        except WireError:
            e = None
        out.append((s, headers["Nats-Subject"], e))
        seq = s + 1


async def acquire_once_free(agent: Agent, artifact: str, **kwargs: Any) -> tuple[Lease, list[str]]:
    """Acquires until granted: the lease it waits for is expected to lapse."""
    deadline = time.monotonic() + 30
    refusals: list[str] = []
    while True:
        try:
            return await agent.acquire(artifact, **kwargs), refusals
        except LeaseHeld as held:
            refusals.append(held.holder)
        assert time.monotonic() < deadline, f"{artifact} never became free; refused by {refusals}"
        await asyncio.sleep(0.1)


async def test_sixteen_racing_exclusive_acquirers_one_holder_the_rest_told_who(
    connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    agents = await asyncio.gather(*(connect(f"a{i}-{uid}") for i in range(16)))
    artifact = f"race-{uid}/post.md"
    results = await asyncio.gather(
        *(a.acquire(artifact, auto_renew=False) for a in agents), return_exceptions=True
    )
    winners = [(a, r) for a, r in zip(agents, results) if isinstance(r, Lease)]
    assert len(winners) == 1, results
    winner, lease = winners[0]
    assert (lease.token, lease.artifact, lease.mode) == (1, artifact, EX)
    for r in results:
        if not isinstance(r, Lease):
            assert isinstance(r, LeaseHeld), repr(r)
            assert (r.artifact, r.holder, r.token, r.mode) == (artifact, winner.id, 1, "exclusive")
            assert r.expires_at > r.since
    # The compare-and-set kept the losers' acquisitions out of the stream;
    # each loser recorded that it waits, as it asked, for one ttl.
    stored = await stored_on(nc, f"baton.art._.*.race-{uid}.>")
    acquired = [e for _, _, e in stored if e is not None and isinstance(e.body, Acquire)]
    assert [e.agent for e in acquired] == [winner.id], stored
    waits = sorted((e.agent, e.body) for _, _, e in stored if e is not None and isinstance(e.body, Wait))
    assert waits == sorted((a.id, Wait(EX, 15 * S)) for a in agents if a is not winner), stored
    assert len(stored) == 16
    await lease.release("done")


async def test_modes_and_folders_conflict_in_both_orders_and_readers_share(
    connect: AgentFactory, uid: str
) -> None:
    editor = await connect(f"editor-{uid}")
    researcher = await connect(f"researcher-{uid}")
    reader2 = await connect(f"reader2-{uid}")
    d = f"drafts-{uid}"
    post = f"{d}/post.md"

    # Exclusive first, then shared: refused, naming the editor.
    edit = await editor.acquire(post)
    with pytest.raises(LeaseHeld) as held:
        await researcher.acquire(post, "shared")
    assert (held.value.artifact, held.value.holder) == (post, editor.id)
    # A folder above the file: refused too.
    with pytest.raises(LeaseHeld) as held:
        await researcher.acquire(f"{d}/", "shared")
    assert (held.value.artifact, held.value.holder) == (post, editor.id)
    # Released: now several readers hold it together.
    await edit.release("revised")
    r1 = await researcher.acquire(post, "shared")
    r2 = await reader2.acquire(post, LeaseMode.SHARED)
    assert r2.token > r1.token
    # Shared first, then exclusive: refused.
    with pytest.raises(LeaseHeld) as held:
        await editor.acquire(post, "exclusive")
    assert held.value.artifact == post and held.value.mode == "shared"
    await r1.release("read")
    await r2.release("read")

    # A folder, then a file in it.
    folder = await editor.acquire(d)
    with pytest.raises(LeaseHeld) as held:
        await researcher.acquire(f"{d}/other.md")
    assert (held.value.artifact, held.value.holder) == (d, editor.id)
    # Another root is unaffected.
    elsewhere = await researcher.acquire(f"published-{uid}/post.md")
    assert elsewhere.token == 1
    await folder.release("done")
    # A file, then the folder above it.
    file = await researcher.acquire(f"{d}/other.md")
    with pytest.raises(LeaseHeld) as held:
        await editor.acquire(f"{d}/")
    assert (held.value.artifact, held.value.holder) == (f"{d}/other.md", researcher.id)
    await file.release("done")
    await elsewhere.release("done")
    # With everything released the folder is free again, with the next token.
    async with editor.acquire(f"/{d}/") as again:
        assert again.artifact == d and again.token == 6
    # Leaving the block released it.
    async with researcher.acquire(d) as after:
        assert after.token == 7


async def test_a_silent_holder_lapses_the_next_holder_gets_a_higher_token_and_the_late_write_is_refused(
    connect: AgentFactory, uid: str, tmp_path: Path
) -> None:
    store = FencedDir(tmp_path / "store")
    post = f"drafts-{uid}/post.md"
    editor = await connect(f"editor-{uid}")
    publisher = await connect(f"publisher-{uid}")

    # The editor renews by hand, then goes quiet (a stuck tool call).
    stuck = await editor.acquire(post, ttl=1.0, auto_renew=False)
    store.write(post, stuck.token, b"draft v1")
    await stuck.renew()

    published, refusals = await acquire_once_free(publisher, post)
    assert refusals and set(refusals) == {editor.id}, refusals
    assert published.token > stuck.token
    store.write(post, published.token, b"published v1")

    # The editor wakes up: its renewal says the lease is gone, and its late
    # write with the old token is refused by the store.
    with pytest.raises(LeaseLost) as lost:
        await stuck.renew()
    assert (lost.value.artifact, lost.value.token) == (post, stuck.token)
    assert "expired" in lost.value.reason, lost.value.reason
    assert stuck.is_lost
    await asyncio.wait_for(stuck.lost(), 1)
    with pytest.raises(LeaseLost):
        await stuck.release("too late")
    with pytest.raises(StaleToken) as stale:
        store.write(post, stuck.token, b"draft v2, late")
    assert stale.value.seen == published.token
    assert store.read(post) == b"published v1"
    # A fresh store object sees the same tokens (they live beside the data).
    reopened = FencedDir(tmp_path / "store")
    assert reopened.last_token(post) == published.token
    with pytest.raises(StaleToken):
        reopened.write(post, stuck.token, b"again")
    await published.release("published")


async def test_a_renewing_holder_keeps_its_lease_past_its_ttl(connect: AgentFactory, uid: str) -> None:
    holder = await connect(f"holder-{uid}")
    other = await connect(f"other-{uid}")
    doc = f"doc-{uid}"
    lease = await holder.acquire(doc, ttl=0.6)
    deadline = time.monotonic() + 2.0  # more than three ttls
    refused = 0
    while time.monotonic() < deadline:
        with pytest.raises(LeaseHeld) as held:
            await other.acquire(doc)
        assert held.value.token == lease.token
        refused += 1
        await asyncio.sleep(0.1)
    assert refused > 5 and not lease.is_lost
    await lease.release("done")
    got = await other.acquire(doc)
    assert got.token == lease.token + 1
    await got.release("done")


async def test_a_lease_handed_over_moves_with_a_new_token_and_a_dropped_one_is_released(
    connect: AgentFactory, uid: str
) -> None:
    editor = await connect(f"editor-{uid}")
    publisher = await connect(f"publisher-{uid}")
    outsider = await connect(f"outsider-{uid}")
    post = f"drafts-{uid}/post.md"

    edit = await editor.acquire(post)
    first = edit.token
    with pytest.raises(LeaseRefused):
        await edit.hand_over(editor.id, 15)  # nothing published, still held
    token = await edit.hand_over(publisher.id, 15)
    assert token > first and edit.is_spent
    with pytest.raises(LeaseHeld) as held:
        await outsider.acquire(post)
    assert held.value.holder == publisher.id
    with pytest.raises(LeaseNotHeld):
        await editor.resume_lease(post)
    taken = await publisher.resume_lease(post)
    assert (taken.token, taken.mode, taken.ttl) == (token, EX, 15)

    # Dropping a live handle releases it: the outsider gets it.
    del taken
    got, _ = await acquire_once_free(outsider, post)
    assert got.token > token
    await got.release("done")


async def test_a_hand_over_the_recipient_cannot_take_leaves_the_lease_with_its_holder(
    connect: AgentFactory, uid: str
) -> None:
    editor = await connect(f"editor-{uid}")
    publisher = await connect(f"publisher-{uid}")
    folder = f"h-{uid}"
    held = await editor.acquire(folder)
    inner = await editor.acquire(f"{folder}/x")
    # Handing the folder away would leave two exclusive holders of the file.
    with pytest.raises(LeaseHeld) as refused:
        await held.hand_over(publisher.id, 15)
    assert refused.value.holder == editor.id
    assert not held.is_lost
    await held.renew()  # still the editor's
    await inner.release("done")
    token = await held.hand_over(publisher.id, 15)
    assert token > held.token


async def test_an_operator_revokes_under_the_published_policy(
    connect: AgentFactory, services: Services, nc: nats.NATS, uid: str
) -> None:
    holder = await connect(f"holder-{uid}")
    ops = await connect(f"ops-{uid}")
    mallory = await connect(f"mallory-{uid}")
    doc = f"doc-{uid}"
    # The orchestrator's policy names operators. (A reader reads the policy
    # when it starts folding a root, so it is set before the lease is taken.)
    kv = await nc.jetstream().key_value(subjects.POLICY_BUCKET)
    published = (await kv.get(subjects.POLICY_KEY)).value
    assert published is not None
    policy = pb.FoldPolicy.FromString(published)
    policy.operators[:] = [ops.id]
    await kv.put(subjects.POLICY_KEY, policy.SerializeToString())
    try:
        lease = await holder.acquire(doc, auto_renew=False)
        with pytest.raises(LeaseRefused, match="not an operator"):
            await mallory.revoke_lease(doc, holder.id, "mine now")
        # Published anyway by a client that skips the checks: every reader's
        # fold refuses it, and the holder keeps its lease.
        forged = event(mallory.id, doc, Revoke(holder.id, "mine now"))
        ack = await nc.request(forged.subject, forged.encode(), timeout=5, headers={"Nats-Msg-Id": forged.event_id})
        assert "error" not in json.loads(ack.data)
        await lease.renew()
        with pytest.raises(LeaseRefused, match="holds no lease"):
            await ops.revoke_lease(doc, mallory.id, "no such holder")
        await ops.revoke_lease(doc, holder.id, "stuck")
        with pytest.raises(LeaseLost) as lost:
            await lease.renew()
        assert lost.value.reason == f"revoked by {ops.id}: stuck"
        got = await mallory.acquire(doc)
        assert got.token == lease.token + 1
        await got.release("done")
    finally:
        await kv.put(subjects.POLICY_KEY, published)


async def test_malformed_and_forged_events_on_a_root_are_ignored(
    connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    editor = await connect(f"editor-{uid}")
    root = f"forged-{uid}"
    # A forgery: mallory's subject, the editor's name in the payload.
    forged = event(f"editor-{uid}", f"{root}/post.md", acq(ttl=600))
    subject = f"baton.art._.mallory-{uid}.{root}.post~2Emd.~"
    for payload in (forged.encode(), b"\x00garbage"):
        ack = await nc.request(subject, payload, timeout=5, headers={"Nats-Msg-Id": os.urandom(8).hex()})
        assert "error" not in json.loads(ack.data)
    # The root's last message is one no reader accepts: the compare-and-set
    # expects it all the same, and the acquisition is the root's first grant.
    lease = await editor.acquire(f"{root}/post.md")
    assert lease.token == 1
    stored = await stored_on(nc, f"baton.art._.*.{root}.>")
    assert [e is None for _, _, e in stored] == [True, True, False]
    await lease.release("done")


def baton_cli(url: str, *args: str) -> list[str]:
    return [baton_binary(), "--nats", url, *args]


def cli_acquire(url: str, agent: str, artifact: str, *more: str) -> tuple[int, dict[str, Any]]:
    """``baton lease acquire --json`` as a shell-script agent would run it
    (blocking: run it in a thread)."""
    done = subprocess.run(
        baton_cli(url, "lease", "acquire", artifact, "--agent", agent, "--json", *more),
        capture_output=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )
    try:
        printed = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"baton lease acquire printed no JSON; exit {done.returncode}, "
            f"stdout {done.stdout!r}, stderr {done.stderr!r}"
        ) from None
    return done.returncode, printed


async def test_python_and_cli_acquirers_race_one_holder_overall_the_rest_told_who(
    connect: AgentFactory, services: Services, nc: nats.NATS, uid: str
) -> None:
    artifact = f"records-{uid}/42"
    agents = await asyncio.gather(*(connect(f"py{i}-{uid}") for i in range(8)))
    # The CLI processes start from threads, so this loop is free to start
    # the Python acquirers as soon as the first CLI process talks to
    # JetStream (its connection's first request): from there a CLI
    # acquisition takes a few milliseconds, as long as a Python one.
    cli_started = asyncio.Event()

    async def seen(_: Any) -> None:
        cli_started.set()

    sub = await nc.subscribe("$JS.API.>", cb=seen)
    await nc.flush()
    cli = [
        asyncio.ensure_future(asyncio.to_thread(cli_acquire, services.url, f"cli{i}-{uid}", artifact))
        for i in range(8)
    ]
    started = asyncio.ensure_future(cli_started.wait())
    # (If no request is seen, e.g. a CLI process failed at once, the race
    # below is still one, if less tight.)
    await asyncio.wait([started, *cli], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    await sub.unsubscribe()
    py = await asyncio.gather(
        *(a.acquire(artifact, auto_renew=False) for a in agents), return_exceptions=True
    )
    cli_results = await asyncio.gather(*cli)

    winners = [j["holder"] for code, j in cli_results if code == 0]
    winners += [a.id for a, r in zip(agents, py) if isinstance(r, Lease)]
    assert len(winners) == 1, (cli_results, py)
    winner = winners[0]
    for code, j in cli_results:
        if code == 0:
            assert (j["artifact"], j["mode"], j["token"], j["workflow"]) == (artifact, "exclusive", 1, None), j
        else:
            assert code == 2, f"a refusal exits 2: {j}"
            assert (j["artifact"], j["held_by"], j["token"], j["mode"]) == (artifact, winner, 1, "exclusive"), j
    for r in py:
        if isinstance(r, Lease):
            assert r.token == 1
        else:
            assert isinstance(r, LeaseHeld) and r.holder == winner and r.token == 1, repr(r)
    # One acquisition stored; the losers, Python and Rust alike, wait.
    stored = await stored_on(nc, f"baton.art._.*.records-{uid}.>")
    events = [e for _, _, e in stored]
    assert all(e is not None for e in events), stored
    assert [e.agent for e in events if e is not None and isinstance(e.body, Acquire)] == [winner], stored
    waiting = sorted(e.agent for e in events if e is not None and isinstance(e.body, Wait))
    everyone = [a.id for a in agents] + [f"cli{i}-{uid}" for i in range(8)]
    assert waiting == sorted(a for a in everyone if a != winner), stored
    for r in py:
        if isinstance(r, Lease):
            await r.release("done")


async def test_the_python_fold_of_the_stream_is_the_rust_one(
    connect: AgentFactory, services: Services, uid: str
) -> None:
    workflow = f"wf-{uid}"
    a = await connect(f"a-{uid}")
    b = await connect(f"b-{uid}")
    c = await connect(f"c-{uid}")
    # A history with every act: grants, a shared pair, a hand-over, a
    # release, a revocation, an expiry, a refusal stored by the fold.
    # (Handles are kept: a dropped one would release its lease.)
    x = await a.acquire("docs/x", workflow=workflow, auto_renew=False)
    y1 = await b.acquire("docs/y", "shared", workflow=workflow, ttl=60, auto_renew=False)
    y2 = await c.acquire("docs/y", "shared", workflow=workflow, ttl=60, auto_renew=False)
    assert (x.token, y1.token, y2.token) == (1, 2, 3)
    assert await x.hand_over(b.id, 60) == 4
    short = await c.acquire("tmp", workflow=workflow, ttl=0.5, auto_renew=False)
    gone = await a.acquire("notes", workflow=workflow, auto_renew=False)
    await gone.release("done")
    await c.revoke_lease("docs/y", b.id, "tidy", workflow=workflow)
    elsewhere = await a.acquire("elsewhere", ttl=60, auto_renew=False)  # the global scope
    late, _ = await acquire_once_free(a, "tmp", workflow=workflow, ttl=60, auto_renew=False)
    assert (short.token, late.token) == (1, 2)
    with pytest.raises(LeaseLost):
        await short.renew()  # stored, refused by every fold
    # Waits: on the file b holds, on the folder above it (shared: kept out
    # by b's exclusive hold, not by c's shared one), one withdrawn, and
    # the ones `acquire_once_free` recorded, ended by its grant.
    with pytest.raises(LeaseHeld):
        await c.acquire("docs/x", workflow=workflow, ttl=90)
    with pytest.raises(LeaseHeld):
        await a.acquire("docs", "shared", workflow=workflow, ttl=90)
    with pytest.raises(LeaseHeld):
        await c.acquire("tmp", workflow=workflow)
    await c.stop_waiting("tmp", workflow=workflow)

    book = await a.leases(workflow)
    python = [dataclasses.asdict(v) for v in holds_view(book, time.time_ns())]
    done = await asyncio.create_subprocess_exec(
        *baton_cli(services.url, "leases", "--workflow", workflow, "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, err
    rust = json.loads(out)
    assert python == rust
    assert [(h["artifact"], h["holder"], h["token"]) for h in python] == [
        ("docs/x", b.id, 4),
        ("docs/y", c.id, 3),
        ("tmp", a.id, 2),
    ], python
    assert [[(w["agent"], w["artifact"], w["mode"]) for w in h["waiting"]] for h in python] == [
        [(a.id, "docs", "shared"), (c.id, "docs/x", "exclusive")],
        [],
        [],
    ], python
    assert not elsewhere.is_lost and not y1.is_spent


async def folded_from_the_stream(
    nc: nats.NATS, subject: str, operators: frozenset[str]
) -> tuple[LeaseBook, list[tuple[int, LeaseEvent]]]:
    """The Python fold of every event on ``subject`` in BATON_ARTIFACTS from
    its start, read with raw direct gets; and the events (seq, valid event)."""
    book = LeaseBook()
    events: list[tuple[int, LeaseEvent]] = []
    seq = 1
    while True:
        req = {"seq": seq, "next_by_subj": subject}
        msg = await nc.request("$JS.API.DIRECT.GET.BATON_ARTIFACTS", json.dumps(req).encode(), timeout=5)
        headers = dict(msg.headers or {})
        if headers.get("Status") == "404":
            return book, events
        assert "Status" not in headers, headers
        seq = int(headers["Nats-Sequence"])
        try:
            e = validate_lease_event(headers["Nats-Subject"], msg.data)
        except WireError:
            e = None
        if e is not None:
            apply(book, e, seq, parse_broker_time(headers["Nats-Time-Stamp"]), operators)
            events.append((seq, e))
        seq += 1


async def kv_root(nc: nats.NATS, key: str) -> RootState | None:
    """The root the orchestrator stored under ``key`` in KV baton-leases
    (raw direct get), decoded by the Python client."""
    msg = await nc.request(
        "$JS.API.DIRECT.GET.KV_baton-leases",
        json.dumps({"last_by_subj": f"$KV.baton-leases.{key}"}).encode(),
        timeout=5,
    )
    headers = dict(msg.headers or {})
    if headers.get("Status") == "404":
        return None
    assert "Status" not in headers and "KV-Operation" not in headers, headers
    return RootState.decode(msg.data)


async def leases_checkpoint(nc: nats.NATS) -> int:
    """How far the orchestrator stored every root (raw direct get)."""
    msg = await nc.request(
        "$JS.API.DIRECT.GET.KV_baton-checkpoints",
        json.dumps({"last_by_subj": "$KV.baton-checkpoints.baton-orchestrator-leases"}).encode(),
        timeout=5,
    )
    headers = dict(msg.headers or {})
    return 0 if headers.get("Status") == "404" else int(msg.data)


class StreamReads:
    """Records where the client's lease reads of BATON_ARTIFACTS start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        real = lease_handle.read_subject

        async def spy(nc: nats.NATS, stream: str, subject: str, from_seq: int = 1, **kw: Any) -> list[Stored]:
            self.calls.append((subject, from_seq))
            return await real(nc, stream, subject, from_seq, **kw)

        monkeypatch.setattr(lease_handle, "read_subject", spy)

    def take(self) -> list[tuple[str, int]]:
        calls, self.calls = self.calls, []
        return calls


async def test_a_buckets_values_leave_out_deleted_purged_and_reserved_keys(
    nc: nats.NATS, uid: str
) -> None:
    # How the operators' view reads KV baton-leases, on a bucket of its own.
    bucket = f"test-{uid}"
    # As Baton creates its buckets: one value per key, direct gets allowed.
    kv = await nc.jetstream().create_key_value(bucket=bucket, history=1, direct=True)
    try:
        for k, v in [("art._.a", b"1"), ("art._.b", b"2"), ("_fence", b"f"), ("art._.c", b"3")]:
            await kv.put(k, v)
        await kv.delete("art._.b")
        await kv.purge("art._.c")
        await kv.put("art._.a", b"1 again")
        await kv.put("art._.d", b"4")
        values = await kv_values(nc, bucket)
        assert [(k, s.data) for k, s in values] == [("art._.a", b"1 again"), ("art._.d", b"4")]
    finally:
        await nc.jetstream().delete_key_value(bucket)
    assert [parse_checkpoint(v) for v in (b"42", b" 42\n", b"+7", b"", b"4_2", b"-1", b"x", b"\xff")] == [
        42, 42, 7, None, None, None, None, None,
    ]
    assert parse_checkpoint(str(2**64).encode()) is None


async def test_leases_and_acts_start_from_the_roots_the_orchestrator_stored(
    connect: AgentFactory, nc: nats.NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The orchestrator (the module's services) materialises every root in
    # KV baton-leases. A root whose first segment is escaped (`.`), so the
    # key (`~` written `=`) is checked against the one Rust writes.
    workflow = f"wf-{uid}"
    a = await connect(f"a-{uid}")
    b = await connect(f"b-{uid}")
    c = await connect(f"c-{uid}")
    root = "docs.v2"
    key = f"art.{workflow}.docs=2Ev2"
    x_name = f"{root}/x"
    x = Artifact.of(x_name, workflow)
    assert subjects.lease_root_key(x) == key
    operators, _ = await a.policy()
    # A history: grants (one exclusive, two shared), a wait, another root
    # with a release and a grant again, the global scope, and a malformed
    # event last on the root (every fold skips it, the orchestrator too).
    held = await a.acquire(x_name, workflow=workflow, ttl=60, auto_renew=False)
    y1 = await b.acquire(f"{root}/y", "shared", workflow=workflow, ttl=60, auto_renew=False)
    y2 = await c.acquire(f"{root}/y", "shared", workflow=workflow, ttl=60, auto_renew=False)
    assert (held.token, y1.token, y2.token) == (1, 2, 3)
    with pytest.raises(LeaseHeld):
        await b.acquire(root, "shared", workflow=workflow, ttl=90)
    notes = await b.acquire("notes", workflow=workflow, ttl=60, auto_renew=False)
    await notes.release("done")
    notes = await b.acquire("notes", workflow=workflow, ttl=60, auto_renew=False)
    assert notes.token == 2
    elsewhere = await c.acquire(f"g-{uid}", ttl=60, auto_renew=False)
    ack = await nc.request(
        f"baton.art.{workflow}.c-{uid}.docs~2Ev2.x.~",
        b"\x00garbage",
        timeout=5,
        headers={"Nats-Msg-Id": os.urandom(8).hex()},
    )
    garbage = int(json.loads(ack.data)["seq"])
    scope = f"baton.art.{workflow}.>"
    whole, events = await folded_from_the_stream(nc, scope, operators)
    in_root = [seq for seq, e in events if e.artifact.root == x.root]
    assert len(in_root) == 4 and in_root[-1] < garbage

    async def stored_up_to(seq: int) -> bool:
        return await leases_checkpoint(nc) >= seq

    await eventually(lambda: stored_up_to(garbage), what="the leases checkpoint past the history")
    # The stored root is the Python fold of the root's events: the Rust
    # orchestrator's fold and this one agree.
    stored = await kv_root(nc, key)
    assert stored is not None
    assert stored == whole.root_state(x, in_root[-1])
    assert [(on.name.value, h.agent, h.token) for on, h in stored.holds] == [
        (x_name, a.id, 1),
        (f"{root}/y", b.id, 2),
        (f"{root}/y", c.id, 3),
    ]
    assert [(on.name.value, w.agent) for on, w in stored.waits] == [(root, b.id)]
    assert stored.last_token == 3
    notes_root = await kv_root(nc, f"art.{workflow}.notes")
    assert notes_root is not None and notes_root.last_token == 2

    # The operators' view: the stored roots plus the stream after the
    # checkpoint (none of the history read again) is the whole fold.
    reads = StreamReads(monkeypatch)
    roots = one_per_root([(0, e) for _, e in events])
    book = await a.leases(workflow)
    assert facts(book, roots) == facts(whole, roots)
    ((subject, start),) = reads.take()
    assert subject == scope and start > garbage
    everywhere, all_events = await folded_from_the_stream(nc, "baton.art.>", operators)
    all_roots = one_per_root([(0, e) for _, e in all_events])
    assert facts(await a.leases(), all_roots) == facts(everywhere, all_roots)
    assert reads.take()[0][1] > garbage
    # A checkpoint behind the stored roots (a crash between a root's write
    # and the checkpoint's): the events a stored root has are skipped.
    async def no_checkpoint(agent: Agent) -> int:
        return 0

    with monkeypatch.context() as m:
        m.setattr(lease_handle, "lease_checkpoint", no_checkpoint)
        assert facts(await a.leases(workflow), roots) == facts(whole, roots)
    assert reads.take() == [(scope, 1)]
    # One unreadable root of the scope: none is trusted, the whole stream
    # is folded.
    real_values = lease_handle.kv_values

    async def with_junk(nc: nats.NATS, bucket: str) -> list[tuple[str, Stored]]:
        junk = Stored(seq=1, subject=f"$KV.{bucket}.art.{workflow}.junk", data=b"\xff\xff")
        return [*await real_values(nc, bucket), (f"art.{workflow}.junk", junk)]

    with monkeypatch.context() as m:
        m.setattr(lease_handle, "kv_values", with_junk)
        assert facts(await a.leases(workflow), roots) == facts(whole, roots)
    assert reads.take() == [(scope, 1)]

    # An act on the root starts from the stored root and reads only what
    # came after it (the malformed event): the refusal names the holder.
    with pytest.raises(LeaseHeld) as refused:
        await c.acquire(x_name, workflow=workflow, record_wait=False)
    assert (refused.value.holder, refused.value.token) == (a.id, 1)
    (read,) = reads.take()
    assert read == (subjects.lease_root(x), in_root[-1] + 1)
    # Released, and stored again: the next grant takes the root's next
    # token, judged from the stored root (last token 3).
    released = await held.release("done")
    await eventually(lambda: stored_up_to(released), what="the release stored")
    reads.take()
    lease = await c.acquire(x_name, workflow=workflow, ttl=60, auto_renew=False)
    assert lease.token == 4
    (read, *_) = reads.take()
    assert read[0] == subjects.lease_root(x) and read[1] > released
    after, _ = await folded_from_the_stream(nc, scope, operators)
    assert [(h.agent, h.token) for h in after.holds(x)] == [(c.id, 4)]
    assert facts(await a.leases(workflow), roots) == facts(after, roots)
    for kept in (y1, y2, notes, lease, elsewhere):
        assert not kept.is_lost
        await kept.release("done")


def holders(book: LeaseBook) -> list[tuple[str, str]]:
    return [(a.name.value, h.agent) for a, hs in book.items() for h in hs]


async def test_a_task_claimed_with_declared_artifacts_leases_them_all_or_none_and_its_end_frees_them(
    connect: AgentFactory, uid: str
) -> None:
    planner = await connect(f"planner-{uid}")
    editor = await connect(f"editor-{uid}")
    publisher = await connect(f"publisher-{uid}")
    designer = await connect(f"designer-{uid}")
    blog = f"blog-{uid}"
    revise, publish = f"revise-{uid}", f"publish-{uid}"
    await planner.create_task(revise, blog, artifacts=["drafts/post.md", "/assets/logo.png"])
    await planner.create_task(publish, blog, artifacts=["drafts/post.md"])
    view = await planner.task(revise)
    assert view is not None and view.artifacts == ("drafts/post.md", "assets/logo.png")

    # A designer holds the whole drafts folder: the editor's claim takes
    # nothing, neither the task nor the logo it leased first (artifacts are
    # taken in name order, and given back on the first refusal).
    drafts = await designer.acquire("drafts/", workflow=blog)
    with pytest.raises(ArtifactHeld) as held:
        await editor.claim(revise)
    assert (held.value.holder, held.value.artifact, held.value.task) == (designer.id, "drafts", revise)
    assert isinstance(held.value.source, LeaseHeld)
    assert holders(await editor.leases(blog)) == [("drafts", designer.id)], "no partial leases"
    view = await editor.task(revise)
    assert view is not None and view.owner is None

    # Freed: the claim takes the task and both files.
    await drafts.release("done")
    revising = await editor.claim(revise)
    assert sorted(lease.artifact for lease in revising.leases) == ["assets/logo.png", "drafts/post.md"]
    assert all(lease.workflow == blog and lease.mode is EX for lease in revising.leases)
    # The publisher's task needs the draft the editor is revising.
    with pytest.raises(ArtifactHeld) as held:
        await publisher.claim(publish)
    assert held.value.holder == editor.id
    view = await publisher.task(publish)
    assert view is not None and view.owner is None

    # Completing the task frees its artifacts for the publisher.
    await revising.complete("drafts/post.md", "revised")
    assert holders(await editor.leases(blog)) == []
    publishing = await publisher.claim(publish)
    assert len(publishing.leases) == 1 and publishing.leases[0].token > 1
    await publishing.complete("https://blog", "published")
    assert holders(await editor.leases(blog)) == []


async def test_an_offer_to_an_agent_hands_the_artifacts_over_and_a_resume_takes_them_up(
    connect: AgentFactory, uid: str
) -> None:
    planner = await connect(f"planner-{uid}")
    writer = await connect(f"writer-{uid}")
    reviewer = await connect(f"reviewer-{uid}")
    outsider = await connect(f"outsider-{uid}")
    wf, task = f"wf-{uid}", f"report-{uid}"
    await planner.create_task(task, wf, artifacts=["out/report.md"])
    owned = await writer.claim(task)
    (written,) = owned.leases
    await owned.offer_to_agent(reviewer.id, "out/report.md", accept_within=60)
    # While the offer is pending the recipient holds the artifact.
    with pytest.raises(LeaseHeld) as held:
        await outsider.acquire("out/report.md", workflow=wf)
    assert held.value.holder == reviewer.id and held.value.token > written.token
    assert written.is_spent
    accepted = await reviewer.accept_handoff(task)
    (reviewing,) = accepted.leases
    assert reviewing.token > held.value.token  # taken again under a new token
    # A detached handle keeps the task and the lease for a later process.
    accepted.detach()
    resumed = await reviewer.resume(task)
    (again,) = resumed.leases
    assert again.token == reviewing.token
    await resumed.release("done")
    got = await outsider.acquire("out/report.md", workflow=wf)
    assert got.token == reviewing.token + 1
    await got.release("done")


async def test_a_lease_taken_with_the_cli_keeps_a_python_agent_from_claiming_the_task(
    connect: AgentFactory, services: Services, uid: str
) -> None:
    planner = await connect(f"planner-{uid}")
    worker = await connect(f"worker-{uid}")
    wf, task = f"wf-{uid}", f"t-{uid}"
    await planner.create_task(task, wf, artifacts=["records/7"])
    code, printed = await asyncio.to_thread(
        cli_acquire, services.url, f"script-{uid}", "records/7", "--workflow", wf, "--ttl", "1s"
    )
    assert code == 0, printed
    with pytest.raises(ArtifactHeld) as held:
        await worker.claim(task)
    assert held.value.holder == f"script-{uid}"
    # The script does not renew: once its lease lapses the claim goes through.
    deadline = time.monotonic() + 30
    while True:
        try:
            owned = await worker.claim(task)
            break
        except ArtifactHeld:
            assert time.monotonic() < deadline, "the CLI's lease never lapsed"
            await asyncio.sleep(0.1)
    (lease,) = owned.leases
    assert lease.token == printed["token"] + 1
    await owned.complete("records/7", "done")


@contextlib.asynccontextmanager
async def stall_detector(services: Services, nc: nats.NATS, uid: str, tmp_path: Path) -> AsyncIterator[None]:
    """The Rust stall detector, live (its liveness record written), for the
    block; stopped gracefully after it (so the next one leads at once)."""
    (tmp_path / "rules.toml").write_text("")
    instance = f"d-{uid}"
    with open(tmp_path / "detector.log", "wb") as log:
        detector = subprocess.Popen(
            baton_cli(
                services.url,
                "stall-detector",
                "--rules", str(tmp_path / "rules.toml"),
                "--instance", instance,
                "--liveness-interval", "200ms",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        live = await nc.jetstream().key_value(subjects.SERVICES_BUCKET)
        deadline = time.monotonic() + 30
        while True:
            try:
                await live.get(f"stall-detector.{instance}")
                break
            except nats.js.errors.KeyNotFoundError:
                assert detector.poll() is None, (tmp_path / "detector.log").read_text()
                assert time.monotonic() < deadline, "the detector never reported live"
                await asyncio.sleep(0.05)
        yield
    finally:
        detector.terminate()
        detector.wait(timeout=30)


async def stored_alerts(nc: nats.NATS, subject: str) -> list[pb.Alert]:
    """Every alert stored on ``subject`` in BATON_ALERTS (raw direct gets)."""
    out = []
    seq = 1
    while True:
        req = {"seq": seq, "next_by_subj": subject}
        msg = await nc.request("$JS.API.DIRECT.GET.BATON_ALERTS", json.dumps(req).encode(), timeout=5)
        headers = dict(msg.headers or {})
        if headers.get("Status") == "404":
            return out
        assert "Status" not in headers, headers
        out.append(pb.Alert.FromString(msg.data))
        seq = int(headers["Nats-Sequence"]) + 1


async def test_the_detectors_sweep_of_a_lapsed_lease_is_folded_here_too(
    connect: AgentFactory, services: Services, nc: nats.NATS, uid: str, tmp_path: Path
) -> None:
    # The Rust stall detector follows BATON_ARTIFACTS: when a hold is past its
    # expiry it publishes a LeaseSwept and reports LEASE_EXPIRED. The Python
    # fold must read the sweep as the Rust one does.
    async with stall_detector(services, nc, uid, tmp_path):
        editor = await connect(f"editor-{uid}")
        blog = f"blog-{uid}"
        stuck = await editor.acquire("drafts/post.md", workflow=blog, ttl=1.0, auto_renew=False)
        # Nothing else happens on the root: the detector's sweep comes.
        deadline = time.monotonic() + 60
        while True:
            stored = await stored_on(nc, f"baton.art.{blog}.*.drafts.>")
            sweeps = [e for _, _, e in stored if e is not None and isinstance(e.body, Sweep)]
            if sweeps:
                break
            assert time.monotonic() < deadline, f"no sweep came: {stored}"
            await asyncio.sleep(0.1)
        assert sweeps[0].agent != editor.id
        # Every reader, this one too, sees the lease free without another act.
        assert holders(await editor.leases(blog)) == []
        with pytest.raises(LeaseLost) as lost:
            await stuck.renew()
        assert "expired" in lost.value.reason, lost.value.reason
        # The lapse is reported once, naming the holder and the lapsed token,
        # a moment after the sweep (the detector holds a lapse report back
        # for 2 s, so that a broker outage recorded late can excuse it).
        # (Other tests' lapses are reported on the same subject.)
        deadline = time.monotonic() + 15
        while True:
            alerts = [
                a
                for a in await stored_alerts(nc, subjects.raised("lease_expired", None))
                if editor.id in a.agents
            ]
            if alerts:
                break
            assert time.monotonic() < deadline, "the lapse was never reported"
            await asyncio.sleep(0.1)
        (alert,) = alerts
        assert list(alert.agents) == [editor.id] and alert.epoch == stuck.token
        assert "drafts/post.md" in alert.detail


# -- waits and stale-write reports against the real services ----------------------


async def test_a_refused_acquirer_is_seen_waiting_until_it_stops_or_is_granted(
    connect: AgentFactory, nc: nats.NATS, uid: str
) -> None:
    holder = await connect(f"holder-{uid}")
    waiter = await connect(f"waiter-{uid}")
    prober = await connect(f"prober-{uid}")
    wf = f"wf-{uid}"
    post = Artifact.of("drafts/post.md", wf)
    root = f"baton.art.{wf}.*.drafts.>"
    lease = await holder.acquire("drafts/post.md", workflow=wf, ttl=60, auto_renew=False)
    with pytest.raises(LeaseHeld) as held:
        await waiter.acquire("drafts/post.md", "shared", workflow=wf, ttl=20)
    assert held.value.holder == holder.id
    # The refusal was recorded as a wait, in the mode and for the ttl asked,
    # which the fold of the stream shows the hold keeping out.
    book = await prober.leases(wf)
    (first,) = book.waiters(post)
    assert (first.agent, first.mode, first.ttl, first.since) == (waiter.id, SH, 20 * S, first.renewed_at)
    (view,) = holds_view(book, time.time_ns())
    assert (view.holder, [(w.agent, w.artifact, w.mode) for w in view.waiting]) == (
        holder.id,
        [(waiter.id, "drafts/post.md", "shared")],
    )
    assert [h.token for h in book.holds(post)] == [lease.token] and book.last_token(post.root) == lease.token
    # Refused again at once: still waiting, since the first refusal, and the
    # wait is not written again while most of its ttl is left (a polling
    # agent does not write at its polling rate).
    before = await stored_on(nc, root)
    with pytest.raises(LeaseHeld):
        await waiter.acquire("drafts/post.md", "shared", workflow=wf, ttl=20)
    assert await stored_on(nc, root) == before
    (again,) = (await prober.leases(wf)).waiters(post)
    assert again == first
    # A probe leaves no trace.
    before = await stored_on(nc, root)
    with pytest.raises(LeaseHeld):
        await prober.acquire("drafts/post.md", workflow=wf, record_wait=False)
    assert await stored_on(nc, root) == before
    # Giving up: no longer waiting.
    seq = await waiter.stop_waiting("drafts/post.md", "shared", workflow=wf)
    last_seq, _, last = (await stored_on(nc, root))[-1]
    assert last_seq == seq and last is not None and last.agent == waiter.id and last.body == Wait(SH, 0)
    assert (await prober.leases(wf)).waiters(post) == ()
    # Waiting again, then granted: the grant ends the wait.
    with pytest.raises(LeaseHeld):
        await waiter.acquire("drafts/post.md", workflow=wf)
    assert [w.agent for w in (await prober.leases(wf)).waiters(post)] == [waiter.id]
    await lease.release("done")
    got = await waiter.acquire("drafts/post.md", workflow=wf, auto_renew=False)
    book = await prober.leases(wf)
    assert book.waiters(post) == () and [h.agent for h in book.holds(post)] == [waiter.id]
    await got.release("done")


async def test_a_stores_stale_write_report_is_read_by_every_reader_and_changes_no_hold(
    connect: AgentFactory, nc: nats.NATS, uid: str, tmp_path: Path
) -> None:
    editor = await connect(f"editor-{uid}")
    publisher = await connect(f"publisher-{uid}")
    keeper = await connect(f"store-{uid}")
    wf = f"wf-{uid}"
    store = FencedDir(tmp_path / "store")
    first = await editor.acquire("drafts/post.md", workflow=wf, auto_renew=False)
    store.write("drafts/post.md", first.token, b"v1")
    await first.release("done")
    second = await publisher.acquire("drafts/post.md", workflow=wf, auto_renew=False)
    store.write("drafts/post.md", second.token, b"v2")
    # The editor writes on with its old token: the store refuses and reports it.
    with pytest.raises(StaleToken) as refused:
        store.write("drafts/post.md", first.token, b"late")
    named = await keeper.report_stale_write(refused.value, writer=editor.id, workflow=wf)
    unnamed = await keeper.report_stale_write(refused.value, workflow=wf)
    with pytest.raises(ValueError):
        await keeper.report_stale_write(refused.value, writer="_nobody", workflow=wf)
    stored = await stored_on(nc, f"baton.art.{wf}.*.drafts.>")
    reports = [
        (seq, e.agent, str(e.artifact), e.body)
        for seq, _, e in stored
        if e is not None and isinstance(e.body, StaleWrite)
    ]
    assert reports == [
        (named, keeper.id, f"{wf}:drafts/post.md", StaleWrite(editor.id, first.token, second.token)),
        (unnamed, keeper.id, f"{wf}:drafts/post.md", StaleWrite(None, first.token, second.token)),
    ]
    assert all(e is not None for _, _, e in stored), "every stored event is one readers accept"
    # Folded (with the broker's times), the reports change no hold and no token.
    book = await keeper.leases(wf)
    assert holders(book) == [("drafts/post.md", publisher.id)]
    assert book.last_token(Artifact.of("drafts", wf).root) == second.token
    await second.renew()
    await second.release("done")


async def test_the_detector_reports_a_stale_write_a_python_store_sent(
    connect: AgentFactory, services: Services, nc: nats.NATS, uid: str, tmp_path: Path
) -> None:
    # The Rust reader of the report: the stall detector raises
    # LEASE_STALE_WRITE naming the writer, the store and the holder now.
    async with stall_detector(services, nc, uid, tmp_path):
        holder = await connect(f"holder-{uid}")
        keeper = await connect(f"store-{uid}")
        wf = f"wf-{uid}"
        lease = await holder.acquire("drafts/post.md", workflow=wf, ttl=60, auto_renew=False)
        late = StaleToken("drafts/post.md", 0, lease.token)
        seq = await keeper.report_stale_write(late, writer=f"ghost-{uid}", workflow=wf)
        deadline = time.monotonic() + 30
        while True:
            alerts = [
                a
                for a in await stored_alerts(nc, subjects.raised("lease_stale_write", None))
                if a.event_seq == seq and a.workflow_id == wf
            ]
            if alerts:
                break
            assert time.monotonic() < deadline, "no LEASE_STALE_WRITE came"
            await asyncio.sleep(0.1)
        (alert,) = alerts
        assert alert.kind == pb.AlertKind.Value("ALERT_KIND_LEASE_STALE_WRITE")
        assert alert.severity == pb.Severity.Value("SEVERITY_WARNING")
        assert list(alert.agents) == [f"ghost-{uid}", keeper.id] and alert.epoch == 0
        assert f"held now by {holder.id} (token {lease.token})" in alert.summary, alert.summary
        assert alert.detail == f"artifact {wf}:drafts/post.md"
        await lease.release("done")


def test_a_folder_holder_fences_the_files_under_it_without_writing_data(tmp_path: Path) -> None:
    store = FencedDir(tmp_path)
    store.write("drafts/post.md", 3, b"v1")
    store.fence("drafts", 5)  # someone now holds all of drafts
    with pytest.raises(StaleToken):
        store.write("drafts/post.md", 3, b"late")
    assert store.read("drafts/post.md") == b"v1"
    with pytest.raises(StaleToken):
        store.fence("drafts", 4)
