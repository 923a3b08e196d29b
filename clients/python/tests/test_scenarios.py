"""The scenario CLI (scenarios/agent.py) as a driver in another language uses
it: separate processes, JSON lines on stdout, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import nats
from conftest import AgentFactory, Services
from support import publish_raw, wait_kv

from baton_client import pb

SCRIPT = Path(__file__).resolve().parents[1] / "scenarios" / "agent.py"


async def spawn(services: Services, agent: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--nats",
        services.url,
        "--agent",
        agent,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert proc.returncode is not None
    return proc.returncode, lines, err.decode()


async def test_claim_race_between_processes(services: Services, connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"procrace-{uid}"
    creator = await connect(f"creator-{uid}")
    await creator.create_task(task, "wf1")
    procs = [await spawn(services, f"p{i}-{uid}", "claim", "--task", task) for i in range(4)]
    results = [await finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in results), results
    outputs = [lines[0] for _, lines, _ in results]
    assert all(len(lines) == 1 for _, lines, _ in results)
    winners = [i for i, o in enumerate(outputs) if o["ok"]]
    assert len(winners) == 1, outputs
    winner = f"p{winners[0]}-{uid}"
    assert outputs[winners[0]] == {"ok": True, "epoch": 1}
    for i, o in enumerate(outputs):
        if i != winners[0]:
            assert (o["ok"], o["error"], o["owner"], o["epoch"]) == (False, "ClaimLost", winner, 1)
    # The winner exited holding the task: nothing released it.
    state = await wait_kv(nc, task, lambda s: s.owner != "")
    assert (state.owner, state.epoch, state.violations) == (winner, 1, 0)
    view = await creator.task(task)
    assert view is not None and view.owner == winner and view.epoch == 1


async def test_work_then_two_relays(services: Services, connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"relay-{uid}"
    a, b, c, d = (f"{n}-{uid}" for n in "abcd")
    driver = await connect(f"driver-{uid}")
    await driver.create_task(task, "wf1")
    relay_b = await spawn(services, b, "relay", "--task", task, "--to", c)
    relay_c = await spawn(services, c, "relay", "--task", task, "--to", d)
    code, lines, err = await finish(await spawn(services, a, "work", "--task", task, "--to", b, "--output", "s3://v1"))
    assert code == 0, err
    assert lines[0]["ok"] and lines[0]["epoch"] == 1
    code_b, lines_b, err_b = await finish(relay_b)
    code_c, lines_c, err_c = await finish(relay_c)
    assert (code_b, code_c) == (0, 0), (err_b, err_c)
    assert lines_b[0]["accepted_epoch"] == 2 and lines_b[0]["ok"]
    assert lines_c[0]["accepted_epoch"] == 3 and lines_c[0]["ok"]
    pending = pb.TaskStatus.Value("TASK_STATUS_HANDOFF_PENDING")
    state = await wait_kv(nc, task, lambda s: s.owner == c and s.status == pending)
    assert state.pending_handoff.to_agent == d
    assert state.pending_handoff.output_location == "s3://v1"  # passed on as received
    assert (state.epoch, state.violations) == (3, 0)
    dee = await connect(d)
    owned = await dee.accept_handoff(task)
    assert owned.epoch == 4
    await owned.complete("s3://final", "relayed through two processes")


async def test_alerts_command(services: Services, connect: AgentFactory, nc: nats.NATS, uid: str) -> None:
    task = f"alerts-{uid}"
    owner = await connect(f"owner-{uid}")
    await owner.create_task(task, "wf1")
    held = await owner.claim(task)
    proc = await spawn(
        services, f"watch-{uid}", "alerts", "--kind", "ownership_violation", "--task", task, "--count", "1"
    )
    assert proc.stdout is not None
    ready = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert json.loads(ready) == {"ready": True}
    rogue = pb.Event(event_id=f"rogue-{uid}", task_id=task, workflow_id="wf1", agent_id=f"rogue-{uid}", epoch=1)
    rogue.completed.summary = "not mine to complete"
    await publish_raw(nc, rogue)
    code, lines, err = await finish(proc)
    assert code == 0, err
    assert len(lines) == 1
    alert = lines[0]
    assert set(alert) == {"alert_id", "kind", "state", "task_id", "agents", "summary"}
    assert (alert["kind"], alert["state"], alert["task_id"]) == ("ownership_violation", "firing", task)
    assert alert["agents"] == [f"rogue-{uid}", owner.id]
    await held.release("done")


async def test_unexpected_errors_exit_non_zero(services: Services, connect: AgentFactory, uid: str) -> None:
    task = f"nooffer-{uid}"
    creator = await connect(f"creator-{uid}")
    await creator.create_task(task, "wf1")
    code, lines, err = await finish(
        await spawn(services, f"r-{uid}", "relay", "--task", task, "--to", "x", "--timeout", "0.3")
    )
    assert code == 1 and lines == [] and "no handoff" in err
    code, lines, err = await finish(await spawn(services, "bad.id", "claim", "--task", task))
    assert code == 1 and "InvalidId" in err and "agent id" in err
    # A typed refusal is an outcome, not an error.
    code, lines, err = await finish(await spawn(services, f"c-{uid}", "claim", "--task", f"missing-{uid}"))
    assert code == 0 and lines[0]["ok"] is False and lines[0]["error"] == "UnknownTask"
