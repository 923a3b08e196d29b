"""Fixtures: a real nats-server and the real Rust orchestrator per test module.

Each module that uses ``services`` gets its own ``nats-server`` (JetStream,
loopback, a free port chosen by the server with ``-p -1`` and read back from
its ports file, its own store directory) and its own ``baton orchestrator``,
which creates the streams and buckets and folds events into KV
``baton-tasks``. Readiness is observed, never assumed: the fixture waits for
the ports file, then for the orchestrator's liveness record in KV
``baton-services``.

Binaries: ``$BATON_NATS_SERVER`` or ``scripts/ensure-nats-server``; ``$BATON_BIN``
or ``target/debug/baton`` (built with ``cargo build -p baton-cli`` when
missing).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from baton_client import Agent

REPO = Path(__file__).resolve().parents[3]


def nats_server_binary() -> str:
    if env := os.environ.get("BATON_NATS_SERVER"):
        return env
    out = subprocess.run(
        [str(REPO / "scripts" / "ensure-nats-server")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def baton_binary() -> str:
    if env := os.environ.get("BATON_BIN"):
        return env
    # Where cargo puts it: CARGO_TARGET_DIR (relative to the repo) or target/.
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    binary = (target if target.is_absolute() else REPO / target) / "debug" / "baton"
    if not binary.exists():
        subprocess.run(["cargo", "build", "-p", "baton-cli"], cwd=REPO, check=True)
    return str(binary)


def wait_path(pattern_dir: Path, glob: str, timeout: float, proc: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(pattern_dir.glob(glob))
        if found and found[0].stat().st_size > 0:
            return found[0]
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before writing {glob}")
        time.sleep(0.02)
    raise TimeoutError(f"{glob} did not appear in {pattern_dir} within {timeout}s")


@dataclass
class Services:
    """A running nats-server with the Baton orchestrator."""

    url: str
    dir: Path
    instance: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.procs.clear()

    def logs(self) -> str:
        parts = []
        for name in ("nats.log", "orchestrator.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


async def _wait_orchestrator(url: str, instance: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"orchestrator exited with {proc.returncode}")
            try:
                services = await js.key_value("baton-services")
                await services.get(f"orchestrator.{instance}")
                await js.key_value("baton-tasks")
                return
            except (
                nats.js.errors.NotFoundError,
                nats.js.errors.ServiceUnavailableError,
                nats.js.errors.NoStreamResponseError,
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
            ):
                pass  # not there yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"orchestrator not ready within {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


def start_services(tmp: Path) -> Services:
    """Starts nats-server and the orchestrator in ``tmp``; the caller stops them."""
    store = tmp / "store"
    store.mkdir()
    server = subprocess.Popen(
        [
            nats_server_binary(),
            "-js",
            "-a", "127.0.0.1",
            "-p", "-1",
            "-sd", str(store),
            "--ports_file_dir", str(tmp),
            "-l", str(tmp / "nats.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    instance = f"pytest-{secrets.token_hex(3)}"
    services = Services(url="", dir=tmp, instance=instance, procs=[server])
    try:
        ports = wait_path(tmp, "*.ports", 15, server)
        url = json.loads(ports.read_text())["nats"][0]
        services.url = url
        log = open(tmp / "orchestrator.log", "wb")
        orchestrator = subprocess.Popen(
            [
                baton_binary(),
                "--nats", url,
                "orchestrator",
                "--liveness-interval", "200ms",
                "--instance", instance,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        services.procs.append(orchestrator)
        asyncio.run(_wait_orchestrator(url, instance, orchestrator, 30))
    except Exception as e:
        logs = services.logs()
        services.stop()
        raise RuntimeError(f"could not start the services ({e}):\n{logs}") from e
    except BaseException:
        services.stop()
        raise
    return services


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    tmp = Path(tempfile.mkdtemp(prefix="baton-pytest-"))
    svc = start_services(tmp)
    try:
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def uid() -> str:
    """A fresh id suffix, so tests in one module never share tasks."""
    return secrets.token_hex(4)


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def connect(services: Services) -> AsyncIterator[AgentFactory]:
    """``await connect("a1", lease=...)``: an agent on the module's server,
    closed after the test."""
    agents: list[Agent] = []

    async def make(agent_id: str, **kwargs: Any) -> Agent:
        agent = await Agent.connect(services.url, agent_id, **kwargs)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.close()


@pytest.fixture
async def nc(services: Services) -> AsyncIterator[nats.NATS]:
    """A plain nats-py connection, for checks that bypass the client library."""
    conn = await nats.connect(services.url)
    yield conn
    await conn.close()
