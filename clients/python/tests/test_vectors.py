"""Cross-language vectors (testdata/vectors): Python reads and writes them
byte for byte. crates/baton-core/tests/vectors.rs checks the Rust side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format

from baton_client import pb

PACKAGE = Path(__file__).resolve().parents[1]
VECTORS = PACKAGE.parent.parent / "testdata" / "vectors"
sys.path.insert(0, str(PACKAGE / "tools"))

import make_vectors  # noqa: E402

MANIFEST: dict[str, str] = json.loads((VECTORS / "manifest.json").read_text())


def test_manifest_covers_every_body_kind_and_message() -> None:
    kinds = set()
    targets = set()
    for name, ty in MANIFEST.items():
        if ty == "baton.v1.Event":
            event = pb.Event.FromString((VECTORS / f"{name}.bin").read_bytes())
            kind = event.WhichOneof("body")
            kinds.add(kind)
            if kind == "handoff_offered":
                targets.add(event.handoff_offered.WhichOneof("target"))
    assert kinds == set(pb.BODY_KINDS)
    assert targets == {"to_agent", "to_stage"}
    assert {"baton.v1.TaskState", "baton.v1.Alert", "baton.v1.ContextEntry"} <= set(MANIFEST.values())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_binary_round_trip(name: str) -> None:
    cls = pb.MESSAGE_TYPES[MANIFEST[name]]
    data = (VECTORS / f"{name}.bin").read_bytes()
    msg = cls.FromString(data)
    assert msg.SerializeToString() == data


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_json_parses_to_the_same_bytes(name: str) -> None:
    cls = pb.MESSAGE_TYPES[MANIFEST[name]]
    text = (VECTORS / f"{name}.json").read_text(encoding="utf-8")
    msg = json_format.Parse(text, cls())
    assert msg.SerializeToString() == (VECTORS / f"{name}.bin").read_bytes()
    # and the JSON is the canonical rendering of the message
    assert json_format.MessageToJson(msg, preserving_proto_field_name=True) + "\n" == text


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_most_fields_are_set(name: str) -> None:
    # A vector full of defaults would prove little: defaults are not encoded.
    cls = pb.MESSAGE_TYPES[MANIFEST[name]]
    msg = cls.FromString((VECTORS / f"{name}.bin").read_bytes())
    set_fields = {f.name for f, _ in msg.ListFields()}
    if MANIFEST[name] == "baton.v1.Event":
        assert {"event_id", "task_id", "workflow_id", "agent_id", "context_version", "occurred_at"} <= set_fields
    else:
        assert len(set_fields) >= len(cls.DESCRIPTOR.fields) * 0.7, set_fields


def test_vectors_are_what_the_generator_writes() -> None:
    wanted = make_vectors.files(VECTORS)
    stale = [p.name for p, data in wanted.items() if not p.exists() or p.read_bytes() != data]
    assert not stale, f"run clients/python/tools/make_vectors.py: {stale}"
    on_disk = {p.name for p in VECTORS.iterdir()}
    assert on_disk == {p.name for p in wanted}


def test_vector_events_pass_the_client_validation() -> None:
    from baton_client.state import validate_event

    for name, ty in MANIFEST.items():
        if ty == "baton.v1.Event":
            event = pb.Event.FromString((VECTORS / f"{name}.bin").read_bytes())
            validate_event(event, f"baton.evt.{event.task_id}.{event.agent_id}")
