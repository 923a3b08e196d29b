"""`baton mcp` with the official Python MCP SDK as the host, against the real
services: a real nats-server, the real orchestrator and the real stall
detector, each MCP agent a real `baton mcp --agent NAME` process on stdio.

Outcomes are checked in what Baton stored (KV ``baton-tasks``, the event
stream, the alerts stream), read with plain nats-py, not through the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import Services, baton_binary, start_services
from mcp import Client, StdioServerParameters
from support import eventually, kv_state, stored_events, wait_kv

# The secured broker of test_auth (alice and bob, enforced by the server).
from test_auth import secured  # noqa: F401

from baton_client import Agent, pb, subjects

WORKING = pb.TaskStatus.Value("TASK_STATUS_WORKING")
PENDING = pb.TaskStatus.Value("TASK_STATUS_HANDOFF_PENDING")
COMPLETED = pb.TaskStatus.Value("TASK_STATUS_COMPLETED")
SUBMITTED = pb.TaskStatus.Value("TASK_STATUS_SUBMITTED")
HEARTBEAT_MISSED = pb.AlertKind.Value("ALERT_KIND_HEARTBEAT_MISSED")
FIRING = pb.AlertState.Value("ALERT_STATE_FIRING")

HERE = Path(__file__).resolve().parent


async def _wait_liveness(url: str, key: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value("baton-services")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{key} exited with {proc.returncode}")
            try:
                await kv.get(key)
                return
            except nats.js.errors.KeyNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{key} not alive within {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    """nats-server, the orchestrator and the stall detector (HEARTBEAT_MISSED
    comes from the real detector)."""
    tmp = Path(tempfile.mkdtemp(prefix="baton-pytest-mcp-"))
    svc = start_services(tmp)
    try:
        log = open(tmp / "detector.log", "wb")
        detector = subprocess.Popen(
            [
                baton_binary(),
                "--nats", svc.url,
                "stall-detector",
                "--liveness-interval", "200ms",
                "--instance", svc.instance,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        svc.procs.append(detector)
        asyncio.run(_wait_liveness(svc.url, f"stall-detector.{svc.instance}", detector, 30))
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@asynccontextmanager
async def mcp_agent(url: str, agent: str, *args: str) -> AsyncIterator[Client]:
    """A host session with `baton mcp --agent AGENT` on stdio."""
    params = StdioServerParameters(
        command=baton_binary(),
        args=["--nats", url, "mcp", "--agent", agent, *args],
        env={"BATON_LOG": os.environ.get("BATON_LOG", "warn")},
    )
    async with Client(params, read_timeout_seconds=30) as client:
        yield client


# Notices each session was told (they ride along with whichever answer
# comes first after the event, so tests look at all of them).
NOTICES: dict[int, list[str]] = {}


def notices(client: Client) -> list[str]:
    return NOTICES.setdefault(id(client), [])


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, dict[str, Any]]:
    """(is_error, answer): the structured answer, else the text."""
    result = await client.call_tool(tool, arguments)
    if isinstance(result.structured_content, dict):
        notices(client).extend(result.structured_content.get("notices", []))
        return result.is_error, result.structured_content
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return result.is_error, {"text": text}


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    is_error, answer = await call(client, tool, **arguments)
    assert not is_error, f"{tool} failed: {answer}"
    return answer


async def refused(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    is_error, answer = await call(client, tool, **arguments)
    assert is_error, f"{tool} was expected to fail: {answer}"
    return answer


async def test_tools_are_listed_with_schemas(services: Services, uid: str) -> None:
    async with mcp_agent(services.url, f"lister-{uid}") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "list_ready_tasks", "show_task", "create_task", "claim_task", "report_progress",
        "block_task", "offer_handoff", "accept_handoff", "reject_handoff", "complete_task",
        "fail_task", "release_task", "read_decisions", "record_decision",
        "acquire_lease", "release_lease", "list_leases",
    }
    claim = tools["claim_task"]
    assert claim.description and "exactly one wins" in claim.description
    assert claim.input_schema["required"] == ["task_id"]
    assert set(claim.input_schema["properties"]) == {"task_id", "lease_seconds"}
    progress = tools["report_progress"].input_schema
    assert progress["properties"]["progress"]["type"] == "boolean"
    assert sorted(progress["required"]) == ["note", "progress", "task_id"]


async def test_two_agents_race_a_claim_one_owner_the_other_told_who(
    services: Services, nc: nats.NATS, uid: str
) -> None:
    task = f"race-{uid}"
    a, b = f"ann-{uid}", f"ben-{uid}"
    async with mcp_agent(services.url, a) as ann, mcp_agent(services.url, b) as ben:
        await ok(ann, "create_task", task_id=task, workflow=f"wf-{uid}", title="one owner")
        results = await asyncio.gather(
            call(ann, "claim_task", task_id=task), call(ben, "claim_task", task_id=task)
        )
        winners = [(name, r) for name, (err, r) in zip((a, b), results) if not err]
        losers = [(name, r) for name, (err, r) in zip((a, b), results) if err]
        assert len(winners) == 1 and len(losers) == 1, results
        winner, won = winners[0]
        _, lost = losers[0]
        assert won["epoch"] == 1 and won["owner"] == winner
        assert lost["error"] == "claim_lost"
        assert lost["owner"] == winner and lost["epoch"] == 1
        assert winner in lost["message"]
        state = await wait_kv(nc, task, lambda s: s.owner != "")
        assert (state.owner, state.epoch, state.violations) == (winner, 1, 0)
        # Claiming again is idempotent for the owner.
        again = await ok(ann if winner == a else ben, "claim_task", task_id=task)
        assert again["epoch"] == 1 and again.get("already_yours")


async def test_two_agents_race_for_a_file_lease_one_writer_the_other_told_who(
    services: Services, uid: str
) -> None:
    a, b = f"ann-{uid}", f"ben-{uid}"
    path = f"drafts/{uid}/post.md"
    async with mcp_agent(services.url, a) as ann, mcp_agent(services.url, b) as ben:
        results = await asyncio.gather(
            call(ann, "acquire_lease", artifact=path), call(ben, "acquire_lease", artifact=path)
        )
        winners = [(name, r) for name, (err, r) in zip((a, b), results) if not err]
        losers = [(name, r) for name, (err, r) in zip((a, b), results) if err]
        assert len(winners) == 1 and len(losers) == 1, results
        winner, won = winners[0]
        _, lost = losers[0]
        assert won["token"] >= 1 and won["mode"] == "exclusive"
        assert lost["error"] == "lease_held" and lost["holder"] == winner, lost
        # A folder above the file is refused too, naming the holder.
        loser_client = ben if winner == a else ann
        folder = await refused(loser_client, "acquire_lease", artifact=f"drafts/{uid}/", shared=True)
        assert folder["holder"] == winner
        listed = await ok(loser_client, "list_leases")
        mine = [h for h in listed["leases"] if h["artifact"] == path]
        assert [(h["holder"], h["token"]) for h in mine] == [(winner, won["token"])]
        # Released: the other agent gets it, with a higher token.
        winner_client = ann if winner == a else ben
        await ok(winner_client, "release_lease", artifact=path)
        taken = await ok(loser_client, "acquire_lease", artifact=path)
        assert taken["token"] > won["token"]
        await ok(loser_client, "release_lease", artifact=path)


async def test_writer_to_editor_handoff_through_tools(services: Services, nc: nats.NATS, uid: str) -> None:
    task, workflow = f"post-{uid}", f"blog-{uid}"
    writer_id, editor_id = f"writer-{uid}", f"editor-{uid}"
    async with (
        mcp_agent(services.url, writer_id, "--stage", "draft") as writer,
        mcp_agent(services.url, editor_id, "--stage", "review") as editor,
    ):
        await ok(writer, "create_task", task_id=task, workflow=workflow, stage="draft", title="Launch post")
        assert (await ok(writer, "read_decisions", workflow=workflow))["decisions"] == []
        recorded = await ok(writer, "record_decision", workflow=workflow, summary="Use British spelling")
        ready = await ok(writer, "list_ready_tasks")
        assert task in [t["task_id"] for t in ready["claimable"]]

        claimed = await ok(writer, "claim_task", task_id=task)
        assert claimed["epoch"] == 1
        await ok(writer, "report_progress", task_id=task, note="first draft", progress=True)

        # The editor hears of the offer as it happens (2026-07-28 subscriptions/listen).
        async with editor.listen(resource_subscriptions=["baton://agent/ready"]) as sub:
            offer = await ok(
                writer, "offer_handoff", task_id=task, to_agent=editor_id,
                output_location="s3://drafts/post.md", accept_within_seconds=300,
            )
            assert offer["epoch"] == 1
            async with asyncio.timeout(10):
                event = await sub.__anext__()
            assert getattr(event, "uri", None) == "baton://agent/ready"

        state = await wait_kv(nc, task, lambda s: s.status == PENDING)
        assert state.owner == writer_id and state.pending_handoff.to_agent == editor_id
        # The writer gave the task away: it may not act on it now.
        spent = await refused(writer, "report_progress", task_id=task, note="more", progress=True)
        assert spent["error"] == "not_owner"
        pending = await refused(writer, "claim_task", task_id=task)
        assert pending["error"] == "not_allowed" and "offer is pending" in pending["message"]

        # Accepting before reading the decisions would be stale context.
        stale = await refused(editor, "accept_handoff", task_id=task)
        assert stale["error"] == "stale_context"
        assert stale["unread_versions"] == [recorded["version"]]
        assert "British" in stale["message"] and "read_decisions" in stale["message"]

        decisions = await ok(editor, "read_decisions", workflow=workflow)
        assert [d["summary"] for d in decisions["decisions"]] == ["Use British spelling"]
        assert any(writer_id in n and "offered you" in n for n in notices(editor)), notices(editor)
        accepted = await ok(editor, "accept_handoff", task_id=task)
        assert (accepted["owner"], accepted["epoch"]) == (editor_id, 2)
        state = await wait_kv(nc, task, lambda s: s.owner == editor_id)
        assert (state.epoch, state.status, state.output_location) == (2, WORKING, "s3://drafts/post.md")

        shown = await ok(editor, "show_task", task_id=task)
        assert [e["event"] for e in shown["timeline"]] == [
            "created", "claimed", "heartbeat", "handoff_offered", "handoff_accepted",
        ]
        assert [e["epoch_after"] for e in shown["timeline"]][-1] == 2

        done = await ok(editor, "complete_task", task_id=task, output_location="s3://published/post.md", summary="edited")
        assert done["epoch"] == 2
        state = await wait_kv(nc, task, lambda s: s.status == COMPLETED)
        assert (state.owner, state.epoch, state.violations) == (editor_id, 2, 0)
        # Every event the servers sent carried the version read, and no rule was broken.
        events = [e for _, _, _, e in await stored_events(nc, task)]
        assert events[-1].context_version >= recorded["version"]
        # The writer hears that the editor took it.
        async def told() -> bool:
            await ok(writer, "list_ready_tasks")
            return any(editor_id in n and "accepted" in n for n in notices(writer))

        await eventually(told, timeout=10, what="the writer told of the acceptance")

        # Resources: the task's state and the decision record.
        resource = await editor.read_resource(f"baton://tasks/{task}")
        body = json.loads(resource.contents[0].text)
        assert (body["status"], body["owner"], body["epoch"]) == ("completed", editor_id, 2)
        record = await editor.read_resource(f"baton://workflows/{workflow}/decisions")
        assert [d["summary"] for d in json.loads(record.contents[0].text)["decisions"]] == ["Use British spelling"]


async def test_a_quiet_session_keeps_heartbeating(services: Services, nc: nats.NATS, uid: str) -> None:
    task = f"quiet-{uid}"
    async with mcp_agent(services.url, f"quiet-{uid}", "--lease", "1s") as client:
        await ok(client, "create_task", task_id=task, workflow=f"wf-{uid}")
        claimed = await ok(client, "claim_task", task_id=task)
        assert claimed["lease_seconds"] == 1.0
        started = time.monotonic()

        async def beats() -> int:
            return sum(1 for _, _, _, e in await stored_events(nc, task) if e.WhichOneof("body") == "heartbeat")

        # The model calls nothing for several leases; the server heartbeats for it.
        await eventually(lambda: beats_at_least(beats, 6), timeout=20, what="six automatic heartbeats")
        assert time.monotonic() - started >= 1.5  # spread over leases, not a burst
        assert await last_alert(nc, "heartbeat_missed", task) is None
        state = await kv_state(nc, task)
        assert state is not None and state.owner == f"quiet-{uid}" and state.violations == 0
        await ok(client, "release_task", task_id=task, reason="test over")


async def beats_at_least(beats: Any, n: int) -> bool:
    return int(await beats()) >= n


async def last_alert(nc: nats.NATS, kind: str, task: str) -> pb.Alert | None:
    req = {"last_by_subj": subjects.raised(kind, task)}
    msg = await nc.request("$JS.API.DIRECT.GET.BATON_ALERTS", json.dumps(req).encode(), timeout=5)
    if (msg.headers or {}).get("Status") == "404":
        return None
    return pb.Alert.FromString(msg.data)


async def test_a_killed_host_stops_heartbeating_and_the_detector_says_so(
    services: Services, nc: nats.NATS, uid: str
) -> None:
    task, agent = f"killed-{uid}", f"doomed-{uid}"
    creator = await Agent.connect(services.url, f"creator-{uid}")
    try:
        await creator.create_task(task, f"wf-{uid}")
    finally:
        await creator.close()
    lease = 2  # seconds
    host = subprocess.Popen(
        [sys.executable, str(HERE / "mcp_host.py"), baton_binary(), services.url, agent, task, f"{lease}s"],
        stdout=subprocess.PIPE,
    )
    try:
        assert host.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(host.stdout.readline), 30)
        assert line.decode().startswith("claimed 1"), line
        await wait_kv(nc, task, lambda s: s.owner == agent)
        killed_at = time.monotonic()
        host.send_signal(signal.SIGKILL)
        host.wait(timeout=10)

        async def missed() -> bool:
            alert = await last_alert(nc, "heartbeat_missed", task)
            return alert is not None and alert.state == FIRING

        # Heartbeats stop with the host: the real detector raises HEARTBEAT_MISSED
        # once the lease runs out (plus its grace and the last beat's age).
        await eventually(missed, timeout=lease * 3 + 5, what="HEARTBEAT_MISSED")
        # The last heartbeat went out at most a third of the lease before the
        # kill, so the alert is due within the lease of it (plus the
        # detector's grace and a margin for a loaded machine).
        detected_after = time.monotonic() - killed_at
        print(f"HEARTBEAT_MISSED {detected_after:.2f}s after the host was killed (lease {lease}s)")
        assert detected_after < lease + 1.5
        alert = await last_alert(nc, "heartbeat_missed", task)
        assert alert is not None and agent in list(alert.agents)
        # The session ended without a final act: the task was not released.
        state = await kv_state(nc, task)
        assert state is not None and (state.owner, state.status) == (agent, WORKING)

        # A new session of the same agent resumes it.
        async with mcp_agent(services.url, agent, "--lease", f"{lease}s") as client:
            resumed = await ok(client, "claim_task", task_id=task)
            assert resumed["epoch"] == 1 and resumed["resumed"] is True
            await ok(client, "complete_task", task_id=task, output_location="s3://x", summary="recovered")
        await wait_kv(nc, task, lambda s: s.status == COMPLETED)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


async def test_recording_over_an_unread_decision_is_refused_with_the_versions(
    services: Services, uid: str
) -> None:
    workflow = f"wf-{uid}"
    async with mcp_agent(services.url, f"ada-{uid}") as ada, mcp_agent(services.url, f"bo-{uid}") as bo:
        read = await ok(ada, "read_decisions", workflow=workflow)
        await ok(bo, "read_decisions", workflow=workflow)
        first = await ok(bo, "record_decision", workflow=workflow, summary="Ship on Friday")
        answer = await refused(ada, "record_decision", workflow=workflow, summary="Ship on Monday")
        assert answer["error"] == "stale_context"
        assert answer["version_read"] == read["version"]
        assert answer["latest_version"] == first["version"]
        assert answer["unread_versions"] == [first["version"]]
        assert str(first["version"]) in answer["message"] and "Ship on Friday" in answer["message"]
        # Read, reconsider, record: now it is stored.
        await ok(ada, "read_decisions", workflow=workflow)
        second = await ok(ada, "record_decision", workflow=workflow, summary="Ship on Monday", supersedes=first["version"])
        assert second["version"] > first["version"]


async def test_an_operator_revoke_is_reported_on_the_next_call(
    services: Services, nc: nats.NATS, uid: str
) -> None:
    task, agent = f"revoke-{uid}", f"held-{uid}"
    ops = await Agent.connect(services.url, f"ops-{uid}")
    try:
        async with mcp_agent(services.url, agent) as client:
            await ok(client, "create_task", task_id=task, workflow=f"wf-{uid}")
            await ok(client, "claim_task", task_id=task)
            await wait_kv(nc, task, lambda s: s.owner == agent)
            await ops.revoke(task, "reassigned by the on-call")
            await wait_kv(nc, task, lambda s: s.owner == "")
            answer = await refused(client, "report_progress", task_id=task, note="still at it", progress=True)
            assert answer["error"] == "revoked"
            assert f"ops-{uid}" in answer["message"] and "reassigned by the on-call" in answer["message"]
            assert "no longer own" in answer["message"]
            # Nothing was published for the revoked task after the revoke.
            events = [e for _, _, _, e in await stored_events(nc, task)]
            assert events[-1].WhichOneof("body") == "revoked"
    finally:
        await ops.close()


async def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(
    services: Services, uid: str
) -> None:
    async with mcp_agent(services.url, f"sloppy-{uid}") as client:
        missing = await refused(client, "claim_task")
        assert missing["error"] == "invalid_argument"
        assert "missing field `task_id`" in missing["message"]
        assert "task_id (string, required), lease_seconds (number, optional)" in missing["message"]
        wrong_type = await refused(client, "report_progress", task_id="t1", note="x", progress="very")
        assert "expected a boolean" in wrong_type["message"]
        assert "progress (boolean, required)" in wrong_type["message"]
        unknown_field = await refused(client, "claim_task", task_id="t1", owner="me")
        assert "unknown field `owner`" in unknown_field["message"]
        invalid = await refused(client, "show_task", task_id="no spaces allowed")
        assert invalid["error"] == "invalid_argument" and "A-Z" in invalid["message"]
        unknown = await refused(client, "show_task", task_id=f"ghost-{uid}")
        assert unknown["error"] == "unknown_task" and f"ghost-{uid}" in unknown["message"]
        both = await refused(client, "offer_handoff", task_id="t1", to_agent="a", to_stage="s", output_location="x")
        assert both["error"] == "invalid_argument" and "exactly one" in both["message"]
        lease = await refused(client, "claim_task", task_id="t1", lease_seconds=-3)
        assert "lease_seconds" in lease["message"]
        # Still serving.
        ready = await ok(client, "list_ready_tasks")
        assert ready["agent"] == f"sloppy-{uid}"


async def test_a_denied_permission_names_the_identity(secured: Services) -> None:  # noqa: F811
    ids = secured.dir / "ids"
    # bob's server started with alice's credentials: the broker refuses
    # every publish as bob, and the tool says which identity is in use.
    async with mcp_agent(secured.url, "bob", "--nkey", str(ids / "alice.nk")) as client:
        answer = await refused(client, "create_task", task_id=f"t-{secrets.token_hex(3)}", workflow="wf")
        assert answer["error"] == "not_permitted"
        assert "bob" in answer["message"] and "alice.nk" in answer["message"]
        ready = await ok(client, "list_ready_tasks")
        assert ready["agent"] == "bob"


def readme_mcp_servers() -> dict[str, Any]:
    """The `mcpServers` snippet of the README's MCP section."""
    readme = (HERE.parents[2] / "README.md").read_text()
    section = readme[readme.index("## LLM agents over MCP") :]
    block = section[section.index("```json\n") + len("```json\n") :]
    return dict(json.loads(block[: block.index("```")])["mcpServers"])


async def test_the_readme_snippet_starts_a_working_server(services: Services, uid: str) -> None:
    servers = readme_mcp_servers()
    assert set(servers) == {"baton-writer", "baton-editor"}
    entry = servers["baton-writer"]
    assert entry["command"] == "baton"
    env = dict(entry["env"])
    assert env.pop("BATON_NATS_URL") == "nats://127.0.0.1:4222"
    assert env.pop("BATON_NATS_NKEY").endswith("writer.nk")  # this broker enforces no identities
    env["BATON_NATS_URL"] = services.url
    args = [a if a != "writer" else f"writer-{uid}" for a in entry["args"]]
    params = StdioServerParameters(command=baton_binary(), args=args, env=env)
    async with Client(params, read_timeout_seconds=30) as client:
        assert client.instructions and f"writer-{uid}" in client.instructions
        ready = await ok(client, "list_ready_tasks")
        assert (ready["agent"], ready["stages"]) == (f"writer-{uid}", ["draft"])
