"""The package as a user installs it: ``pip install ./clients/python`` builds
a wheel with the typed package and the generated code, and leaves nothing
behind in the source tree (no ``build/``, no ``*.egg-info``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]
# Made by the development environment and test runs, not by a build.
NOT_BUILD_FILES = {".venv", ".mypy_cache", ".pytest_cache", "__pycache__"}


def tree() -> set[str]:
    """Every path under the package directory, except the development venv
    and caches."""
    found = set()
    for path in PKG.rglob("*"):
        rel = path.relative_to(PKG)
        if not NOT_BUILD_FILES.intersection(rel.parts):
            found.add(rel.as_posix())
    return found


def pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_pip_install_builds_a_wheel_and_leaves_the_tree_clean(tmp_path: Path) -> None:
    before = tree()
    pip("install", "--no-deps", "--no-compile", "--target", str(tmp_path / "site"), str(PKG))
    pip("wheel", "--no-deps", "-w", str(tmp_path / "wheels"), str(PKG))
    left = sorted(tree() - before)
    assert not left, f"building left files in the source tree: {left}"

    installed = tmp_path / "site" / "baton_client"
    assert (installed / "py.typed").is_file()
    assert (installed / "_pb" / "baton" / "v1" / "event_pb2.pyi").is_file()

    (wheel,) = (tmp_path / "wheels").glob("baton_client-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = z.read(metadata).decode()
    assert "baton_client/_pb/baton/v1/event_pb2.py" in names
    assert not any("__pycache__" in n for n in names), names
    assert "Requires-Dist: nats-py==2.16.0" in meta
    assert "Apache-2.0" in meta
