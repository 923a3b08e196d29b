#!/usr/bin/env python3
"""Writes the cross-language test vectors to ``testdata/vectors/``.

For every vector ``<name>``:

- ``<name>.bin``: the message in binary protobuf, as Python's protobuf
  serializes it (fields in number order, defaults omitted — as prost does);
- ``<name>.json``: ``json_format.MessageToJson(msg, preserving_proto_field_name=True)``
  plus a final newline;
- ``manifest.json``: ``{"<name>": "<full message type>", ...}``.

The vectors are fixed values (no clock, no randomness), so running this
again writes the same bytes. Most fields are non-default so that a decoder
that drops or misnumbers one fails the byte comparison. Every event body kind
is covered, plus one ``TaskState``, one ``Alert`` and one ``ContextEntry``;
they are also valid for the Rust domain (``baton_core``'s ``TryFrom``), so
``crates/baton-core/tests/vectors.rs`` can round-trip them through it.

Checked by ``clients/python/tests/test_vectors.py`` (Python) and
``crates/baton-core/tests/vectors.rs`` (Rust).

Usage::

    python tools/make_vectors.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent / "src"))

from baton_client import pb  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "testdata" / "vectors"

# 2026-11-23T20:54:52.123456789Z and later instants.
T0 = 1_795_467_292


def ts(offset_s: int, nanos: int = 123_456_789) -> Timestamp:
    return Timestamp(seconds=T0 + offset_s, nanos=nanos)


def dur(seconds: int, nanos: int = 0) -> Duration:
    return Duration(seconds=seconds, nanos=nanos)


def event(n: int, agent: str, epoch: int, **body: Message) -> pb.Event:
    """An event of task ``t-42`` in workflow ``wf_docs-7`` with every header set."""
    e = pb.Event(
        event_id=f"01JDX0EVT{n:02d}Q8M2ZK7N4P9RB3",
        task_id="t-42",
        workflow_id="wf_docs-7",
        agent_id=agent,
        epoch=epoch,
        context_version=17 + n,
        occurred_at=ts(n * 60, 100_000_000 + n),
    )
    ((kind, message),) = body.items()
    getattr(e, kind).CopyFrom(message)
    return e


def vectors() -> dict[str, Message]:
    """Name -> message, in a fixed order."""
    v: dict[str, Message] = {}
    v["event_created"] = event(
        1,
        "planner",
        0,
        created=pb.TaskCreated(
            stage="draft",
            title="Write the intro — für alle 🚀",
            assignee="writer-1",
            start_within=dur(300),
            deadline_within=dur(86_400),
            heartbeat_within=dur(30),
            progress_within=dur(900, 500_000_000),
        ),
    )
    v["event_claimed"] = event(2, "writer-1", 0, claimed=pb.Claimed(heartbeat_within=dur(45, 250_000_000)))
    v["event_heartbeat"] = event(3, "writer-1", 1, heartbeat=pb.Heartbeat(note="section 3 of 5", progress=True))
    v["event_blocked"] = event(4, "writer-1", 1, blocked=pb.Blocked(reason="need the style guide"))
    v["event_handoff_offered_agent"] = event(
        5,
        "writer-1",
        1,
        handoff_offered=pb.HandoffOffered(
            to_agent="editor-2",
            output_location="s3://docs/t-42/draft-v1.md",
            accept_within=dur(600),
        ),
    )
    v["event_handoff_offered_stage"] = event(
        6,
        "writer-1",
        1,
        handoff_offered=pb.HandoffOffered(
            to_stage="review",
            output_location="s3://docs/t-42/draft-v2.md",
            accept_within=dur(1_200, 1),
        ),
    )
    v["event_handoff_accepted"] = event(7, "editor-2", 0, handoff_accepted=pb.HandoffAccepted())
    v["event_handoff_rejected"] = event(
        8, "editor-3", 0, handoff_rejected=pb.HandoffRejected(reason="out of office until Monday")
    )
    v["event_completed"] = event(
        9,
        "editor-2",
        2,
        completed=pb.Completed(output_location="s3://docs/t-42/final.md", summary="published"),
    )
    v["event_failed"] = event(10, "editor-2", 2, failed=pb.Failed(reason="source repo gone", retryable=True))
    v["event_released"] = event(11, "editor-2", 3, released=pb.Released(reason="dropped"))
    v["event_revoked"] = event(12, "ops", 0, revoked=pb.Revoked(reason="agent editor-2 is stuck"))
    v["event_cancelled"] = event(13, "ops", 0, cancelled=pb.Cancelled(reason="superseded by t-43"))

    v["task_state"] = pb.TaskState(
        task_id="t-42",
        workflow_id="wf_docs-7",
        stage="review",
        status="TASK_STATUS_HANDOFF_PENDING",
        owner="writer-1",
        epoch=3,
        pending_handoff=pb.PendingHandoff(
            from_agent="writer-1",
            to_agent="editor-2",
            output_location="s3://docs/t-42/draft-v3.md",
            offered_at=ts(500),
            accept_by=ts(1_100),
            offered_seq=57,
            accept_within=dur(600),
        ),
        output_location="s3://docs/t-42/draft-v2.md",
        context_version=19,
        last_event_seq=57,
        last_event_at=ts(500),
        last_heartbeat_at=ts(400, 5),
        last_progress_at=ts(400, 5),
        created_at=ts(0),
        updated_at=ts(500),
        violations=2,
        title="Write the intro — für alle 🚀",
        assignee="writer-1",
        start_within=dur(300),
        deadline_within=dur(86_400),
        heartbeat_within=dur(30),
        progress_within=dur(900, 500_000_000),
        lease=dur(45, 250_000_000),
        owned_since=ts(200),
        waiting_since=None,
        waiting_since_seq=0,
        blocked_at=None,
        blocked_reason="",
        last_event=pb.EventRef(kind="handoff_offered", agent_id="writer-1", at=ts(500), seq=57),
        created_seq=40,
        outcome="",
        owned_since_seq=50,
        blocked_seq=0,
        alive_since=ts(400, 5),
        alive_since_seq=55,
        progress_since=ts(400, 5),
        progress_since_seq=55,
    )

    v["alert"] = pb.Alert(
        alert_id="handoff_not_accepted.t-42.e3.s57",
        kind="ALERT_KIND_HANDOFF_NOT_ACCEPTED",
        state="ALERT_STATE_FIRING",
        severity="SEVERITY_CRITICAL",
        task_id="t-42",
        workflow_id="wf_docs-7",
        stage="review",
        agents=["writer-1", "editor-2"],
        expected="handoff_accepted from agent editor-2",
        due_at=ts(1_100),
        observed_at=ts(1_160, 0),
        last_event=pb.LastEvent(kind="handoff_offered", agent_id="writer-1", at=ts(500), seq=57),
        summary="Agent writer-1 offered task t-42 to editor-2 10m ago and editor-2 has not accepted.",
        resolves="",
        epoch=3,
        late_by=dur(60, 876_543_211),
        notification=2,
        task_status="TASK_STATUS_HANDOFF_PENDING",
        missed_versions=[18, 19, 4_294_967_296],
        event_id="01JDX0EVT05Q8M2ZK7N4P9RB3",
        event_seq=57,
        detail="BATON_EVENTS seq 57",
    )

    v["context_entry"] = pb.ContextEntry(
        workflow_id="wf_docs-7",
        author="planner",
        summary="Use British spelling throughout",
        body="# Decision\n\nAll documents use en-GB.\nQuotes: “curly”.\n",
        supersedes=12,
        recorded_at=ts(30, 999_999_999),
    )
    return v


def render(msg: Message) -> tuple[bytes, str]:
    """The ``.bin`` and ``.json`` contents of a vector."""
    return (
        msg.SerializeToString(deterministic=True),
        json_format.MessageToJson(msg, preserving_proto_field_name=True) + "\n",
    )


def files(out: Path) -> dict[Path, bytes]:
    """Every file of the vector directory with its contents."""
    result: dict[Path, bytes] = {}
    manifest: dict[str, str] = {}
    for name, msg in vectors().items():
        binary, text = render(msg)
        result[out / f"{name}.bin"] = binary
        result[out / f"{name}.json"] = text.encode("utf-8")
        manifest[name] = msg.DESCRIPTOR.full_name
    result[out / "manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs")
    args = parser.parse_args(argv)
    wanted = files(args.out)
    if args.check:
        stale = [str(p) for p, data in wanted.items() if not p.exists() or p.read_bytes() != data]
        extra = [
            str(p)
            for p in sorted(args.out.glob("*"))
            if p.suffix in (".bin", ".json") and p not in wanted
        ]
        if stale or extra:
            print("vectors are stale: " + ", ".join(stale + extra), file=sys.stderr)
            return 1
        print(f"{args.out}: {len(wanted)} files current")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.out.glob("*")):
        if path.suffix in (".bin", ".json") and path not in wanted:
            path.unlink()
    for path, data in wanted.items():
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    print(f"wrote {len(wanted)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
