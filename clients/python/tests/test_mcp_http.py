"""`baton mcp --http` with the official Python MCP SDK's streamable HTTP
client as the host, against the real services: a real nats-server, the real
orchestrator and stall detector (the `services` fixture of test_mcp), each
MCP agent a real `baton mcp --agent NAME --http 127.0.0.1:0` process whose
URL is read from its stderr.

Outcomes are checked in what Baton stored (KV ``baton-tasks``, the event
stream, the alerts stream), read with plain nats-py, not through the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
from conftest import Services, baton_binary
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from support import eventually, kv_state, stored_events, wait_kv

# The module's services (with the real stall detector) and the tool-call
# helpers of the stdio tests.
from test_mcp import COMPLETED, FIRING, WORKING, last_alert, notices, ok, refused, services  # noqa: F401

from baton_client import Agent

HERE = Path(__file__).resolve().parent


@dataclass
class HttpServer:
    """A running `baton mcp --http` process."""

    url: str
    proc: subprocess.Popen[str]
    stderr: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.stderr[-50:])


@contextmanager
def http_server(nats_url: str, agent: str, *args: str) -> Iterator[HttpServer]:
    """`baton mcp --agent AGENT --http 127.0.0.1:0 ARGS`, until the test ends
    (then SIGTERM)."""
    proc = subprocess.Popen(
        [baton_binary(), "--nats", nats_url, "mcp", "--agent", agent, "--http", "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BATON_LOG": os.environ.get("BATON_LOG", "warn")},
    )
    lines: list[str] = []
    url: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if not url and " at http://" in line:
                url.append(line.rsplit(" at ", 1)[1].strip())
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(30) or not url:
            raise RuntimeError(f"baton mcp --http did not print its URL:\n{''.join(lines)}")
        yield HttpServer(url=url[0], proc=proc, stderr=lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)


@asynccontextmanager
async def http_client(url: str, token: str | None = None) -> AsyncIterator[Client]:
    """A host session over streamable HTTP (the SDK's default negotiation)."""
    if token is None:
        async with Client(url, read_timeout_seconds=30) as client:
            yield client
        return
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client:
            yield client


def raw_post(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of a bare `initialize` POST (no MCP client)."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        }
    ).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


async def test_tools_over_http_end_to_end(services: Services, nc: nats.NATS, uid: str) -> None:
    task, other = f"http-{uid}", f"kept-{uid}"
    ann, ben = f"ann-{uid}", f"ben-{uid}"
    with http_server(services.url, ann) as a, http_server(services.url, ben) as b:
        assert a.url.startswith("http://127.0.0.1:") and a.url.endswith("/mcp")
        async with http_client(a.url) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"create_task", "claim_task", "complete_task"} <= tools
            await ok(client, "create_task", task_id=task, workflow=f"wf-{uid}", title="over HTTP")
            claimed = await ok(client, "claim_task", task_id=task)
            assert (claimed["owner"], claimed["epoch"]) == (ann, 1)
            state = await wait_kv(nc, task, lambda s: s.owner == ann)
            assert state.epoch == 1
            # Another agent's server: the refusal is a tool error naming the owner.
            async with http_client(b.url) as other_client:
                lost = await refused(other_client, "claim_task", task_id=task)
                assert lost["error"] == "claim_lost" and lost["owner"] == ann
                assert ann in lost["message"]
            done = await ok(client, "complete_task", task_id=task, output_location="s3://out", summary="done")
            assert done["epoch"] == 1
            state = await wait_kv(nc, task, lambda s: s.status == COMPLETED)
            assert (state.owner, state.epoch, state.violations) == (ann, 1, 0)
            # A task held when the server stops gracefully stays owned.
            await ok(client, "create_task", task_id=other, workflow=f"wf-{uid}")
            await ok(client, "claim_task", task_id=other)
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=15) == 0, a.log()
    state = await kv_state(nc, other)
    assert state is not None and (state.owner, state.status) == (ann, WORKING)
    events = [e.WhichOneof("body") for _, _, _, e in await stored_events(nc, other)]
    assert "released" not in events


async def test_an_offer_reaches_the_http_client_as_a_notification(services: Services, uid: str) -> None:
    task, workflow = f"offer-{uid}", f"wf-{uid}"
    writer_id, editor_id = f"writer-{uid}", f"editor-{uid}"
    with http_server(services.url, writer_id) as w, http_server(services.url, editor_id) as e:
        async with http_client(w.url) as writer, http_client(e.url) as editor:
            await ok(writer, "create_task", task_id=task, workflow=workflow)
            await ok(writer, "read_decisions", workflow=workflow)
            await ok(writer, "claim_task", task_id=task)
            async with editor.listen(resource_subscriptions=["baton://agent/ready"]) as sub:
                await ok(writer, "offer_handoff", task_id=task, to_agent=editor_id, output_location="s3://draft")
                async with asyncio.timeout(10):
                    event = await sub.__anext__()
                assert getattr(event, "uri", None) == "baton://agent/ready"
            ready = await ok(editor, "list_ready_tasks")
            assert task in [t["task_id"] for t in ready["offered_to_you"]]
            assert any(writer_id in n and "offered you" in n for n in notices(editor)), notices(editor)


async def beats(nc: nats.NATS, task: str) -> int:
    return sum(1 for _, _, _, e in await stored_events(nc, task) if e.WhichOneof("body") == "heartbeat")


async def test_a_quiet_host_with_a_stream_open_keeps_heartbeating(
    services: Services, nc: nats.NATS, uid: str
) -> None:
    task, agent = f"quiet-{uid}", f"quiet-{uid}"
    with http_server(services.url, agent, "--lease", "1s", "--http-keep-alive", "1s") as server:
        async with http_client(server.url) as client:
            await ok(client, "create_task", task_id=task, workflow=f"wf-{uid}")
            await ok(client, "claim_task", task_id=task)
            async with client.listen(resource_subscriptions=[f"baton://tasks/{task}"]):
                started = time.monotonic()

                async def six() -> bool:
                    return await beats(nc, task) >= 6

                # No calls for several keep-alives: the open stream keeps the host present.
                await eventually(six, timeout=20, what="six automatic heartbeats")
                assert time.monotonic() - started >= 1.5
                assert await last_alert(nc, "heartbeat_missed", task) is None
            await ok(client, "release_task", task_id=task, reason="test over")


async def test_a_killed_http_host_stops_heartbeating_and_the_detector_says_so(
    services: Services, nc: nats.NATS, uid: str
) -> None:
    task, agent = f"killed-{uid}", f"doomed-{uid}"
    creator = await Agent.connect(services.url, f"creator-{uid}")
    try:
        await creator.create_task(task, f"wf-{uid}")
    finally:
        await creator.close()
    lease, keep_alive = 2, 1  # seconds
    with http_server(services.url, agent, "--lease", f"{lease}s", "--http-keep-alive", f"{keep_alive}s") as server:
        host = subprocess.Popen(
            [sys.executable, str(HERE / "mcp_http_host.py"), server.url, task],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert host.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(host.stdout.readline), 30)
            assert line.startswith("claimed 1"), line
            line = await asyncio.wait_for(asyncio.to_thread(host.stdout.readline), 30)
            assert line.startswith("listening"), line
            await wait_kv(nc, task, lambda s: s.owner == agent)
            # Alive with its stream open: heartbeats go on past the keep-alive.
            before = await beats(nc, task)

            async def more() -> bool:
                return await beats(nc, task) >= before + 4

            await eventually(more, timeout=15, what="heartbeats while the host listens")
            killed_at = time.monotonic()
            host.send_signal(signal.SIGKILL)  # its session and stream never closed
            host.wait(timeout=10)

            async def missed() -> bool:
                alert = await last_alert(nc, "heartbeat_missed", task)
                return alert is not None and alert.state == FIRING

            await eventually(missed, timeout=keep_alive + lease * 3 + 10, what="HEARTBEAT_MISSED")
            detected_after = time.monotonic() - killed_at
            print(f"HEARTBEAT_MISSED {detected_after:.2f}s after the HTTP host was killed "
                  f"(keep-alive {keep_alive}s, lease {lease}s)")
            # The stream's end is seen at once, then the keep-alive, then the lease.
            assert detected_after < keep_alive + lease + 2.5, server.log()
            alert = await last_alert(nc, "heartbeat_missed", task)
            assert alert is not None and agent in list(alert.agents)
            # Heartbeats stopped without releasing: the task is still the agent's.
            state = await kv_state(nc, task)
            assert state is not None and (state.owner, state.status) == (agent, WORKING)
            # The same server is still serving: a new host resumes the task.
            async with http_client(server.url) as client:
                resumed = await ok(client, "claim_task", task_id=task)
                assert resumed["epoch"] == 1 and resumed["resumed"] is True
                await ok(client, "complete_task", task_id=task, output_location="s3://x", summary="recovered")
            await wait_kv(nc, task, lambda s: s.status == COMPLETED)
        finally:
            if host.poll() is None:
                host.kill()
                host.wait()


async def test_a_foreign_origin_or_host_is_refused(services: Services, uid: str) -> None:
    with http_server(services.url, f"guarded-{uid}") as server:
        port = server.url.split(":")[2].split("/")[0]
        assert raw_post(server.url, {}) == 200  # the same request, from a host (no Origin)
        assert raw_post(server.url, {"Origin": "http://evil.example"}) == 403
        assert raw_post(server.url, {"Origin": f"http://localhost:{port}"}) == 403  # none allowed by default
        assert raw_post(server.url, {"Host": f"evil.example:{port}"}) == 403  # DNS rebinding
        assert raw_post(server.url.replace("/mcp", "/other"), {}) == 404
        # Still serving a real client.
        async with http_client(server.url) as client:
            assert (await ok(client, "list_ready_tasks"))["agent"] == f"guarded-{uid}"
    with http_server(services.url, f"browser-{uid}", "--http-allowed-origin", "http://localhost:6274") as server:
        assert raw_post(server.url, {"Origin": "http://localhost:6274"}) == 200
        assert raw_post(server.url, {"Origin": "http://localhost:6275"}) == 403


async def test_without_the_token_every_request_is_refused(services: Services, uid: str, tmp_path: Path) -> None:
    token = f"tok-{uid}-{os.urandom(8).hex()}"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with http_server(services.url, f"locked-{uid}", "--http-token-file", str(token_file)) as server:
        assert raw_post(server.url, {}) == 401
        assert raw_post(server.url, {"Authorization": "Bearer wrong"}) == 401
        assert raw_post(server.url, {"Authorization": f"Basic {token}"}) == 401
        assert raw_post(server.url, {"Authorization": f"Bearer {token}"}) == 200
        async with http_client(server.url, token=token) as client:
            assert (await ok(client, "list_ready_tasks"))["agent"] == f"locked-{uid}"


def test_a_non_loopback_address_is_refused_without_the_flag(services: Services, uid: str) -> None:
    out = subprocess.run(
        [baton_binary(), "--nats", services.url, "mcp", "--agent", f"open-{uid}", "--http", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "not a loopback address" in out.stderr and "--http-allow-remote" in out.stderr, out.stderr
