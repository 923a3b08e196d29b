"""The README's example, run as a newcomer runs it: it must end on its own
(not wait silently after the work succeeded), and a second run must work
too (task ids are unique for good, so the example picks a new one)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nats
from conftest import Services
from support import wait_kv

from baton_client import pb

README = Path(__file__).resolve().parents[1] / "README.md"
COMPLETED = pb.TaskStatus.Value("TASK_STATUS_COMPLETED")


def example() -> str:
    """The first Python block of the README's Example section."""
    text = README.read_text()
    section = text[text.index("## Example") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the Example section"
    return match.group(1)


async def test_the_readme_example_ends_and_can_run_twice(services: Services, nc: nats.NATS, tmp_path: Path) -> None:
    code = example()
    assert "nats://127.0.0.1:4222" in code
    script = tmp_path / "example.py"
    script.write_text(code.replace("nats://127.0.0.1:4222", services.url))
    for run in (1, 2):
        try:
            done = subprocess.run(
                [sys.executable, str(script)], capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"run {run}: the example did not end within 60 s: {e.stdout!r}") from e
        assert done.returncode == 0, f"run {run}: {done.stdout}\n{done.stderr}"
        found = re.search(r"^(intro-[0-9a-f]+) completed$", done.stdout, re.M)
        assert found, f"run {run}: {done.stdout}"
        state = await wait_kv(nc, found.group(1), lambda s: s.status == COMPLETED)
        assert state.violations == 0
