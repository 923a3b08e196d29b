"""The checked-in generated code is what scripts/gen-python produces now."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACKAGE / "tools"))

import gen_proto  # noqa: E402


def test_generated_code_is_current(tmp_path: Path) -> None:
    fresh = tmp_path / "_pb"
    written = gen_proto.generate(fresh)
    assert any(p.name == "event_pb2.py" for p in written)
    stale = gen_proto.differences(fresh, gen_proto.DEFAULT_OUT)
    assert not stale, f"run scripts/gen-python: {stale} differ from a fresh generation"


def test_every_proto_file_is_generated() -> None:
    protos = {Path(p).stem for p in gen_proto.proto_files(gen_proto.DEFAULT_PROTO_ROOT)}
    assert {"event", "task", "alert", "context", "service"} <= protos
    generated = {p.name for p in (gen_proto.DEFAULT_OUT / "baton" / "v1").glob("*_pb2.py")}
    assert generated == {f"{p}_pb2.py" for p in protos}


def test_generated_imports_are_package_relative() -> None:
    for path in (gen_proto.DEFAULT_OUT / "baton" / "v1").glob("*_pb2.py*"):
        text = path.read_text()
        assert "from baton.v1 import" not in text, path


def test_a_proto_change_is_noticed(tmp_path: Path) -> None:
    # The comparison is meaningful: a changed .proto gives different code.
    root = tmp_path / "proto"
    (root / "baton" / "v1").mkdir(parents=True)
    for src in (gen_proto.DEFAULT_PROTO_ROOT / "baton" / "v1").glob("*.proto"):
        text = src.read_text()
        if src.name == "context.proto":
            text = text.replace("uint64 supersedes = 5;", "uint64 supersedes = 5;\n  string extra = 7;")
        (root / "baton" / "v1" / src.name).write_text(text)
    out = tmp_path / "_pb"
    gen_proto.generate(out, root)
    assert "baton/v1/context_pb2.py" in gen_proto.differences(out, gen_proto.DEFAULT_OUT)
