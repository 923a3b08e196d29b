"""Identities the server enforces, from the Python client: a real nats-server
runs with the configuration ``baton auth`` generated, the real orchestrator
runs as the service identity, and an agent connects with its identity file.

A publish outside the identity's permissions is refused by the server with a
``-ERR``, never with an acknowledgement; the client must report it as
:class:`~baton_client.NotPermitted` at once, not after the ack timeout.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from conftest import Services, baton_binary, nats_server_binary, wait_path

from baton_client import Agent, NotPermitted, Retry
from baton_client.identity import read_identity_file


async def _wait_orchestrator(url: str, ids: Path, instance: str, proc: subprocess.Popen[bytes]) -> None:
    svc = read_identity_file(ids / "svc.nk")
    nc = await nats.connect(url, nkeys_seed_str=svc.seed, inbox_prefix=svc.inbox)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"orchestrator exited with {proc.returncode}")
            try:
                services = await js.key_value("baton-services")
                await services.get(f"orchestrator.{instance}")
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
                raise TimeoutError("orchestrator not ready within 30s")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def secured() -> Iterator[Services]:
    tmp = Path(tempfile.mkdtemp(prefix="baton-pytest-auth-"))
    ids = tmp / "ids"
    subprocess.run(
        [baton_binary(), "auth", "--dir", str(ids), "--agent", "alice,bob", "--service", "svc"],
        check=True,
        capture_output=True,
    )
    store = tmp / "store"
    store.mkdir()
    # Next to auth.conf, so the include is relative to this file.
    config = ids / "server.conf"
    config.write_text(
        'listen: "127.0.0.1:-1"\n'
        f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n"
        'include "auth.conf"\n'
    )
    server = subprocess.Popen(
        [nats_server_binary(), "-c", str(config), "--ports_file_dir", str(tmp), "-l", str(tmp / "nats.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    instance = f"pytest-{secrets.token_hex(3)}"
    services = Services(url="", dir=tmp, instance=instance, procs=[server])
    try:
        ports = wait_path(tmp, "*.ports", 15, server)
        services.url = json.loads(ports.read_text())["nats"][0]
        log = open(tmp / "orchestrator.log", "wb")
        orchestrator = subprocess.Popen(
            [
                baton_binary(),
                "--nats", services.url,
                "--nkey", str(ids / "svc.nk"),
                "orchestrator",
                "--liveness-interval", "200ms",
                "--instance", instance,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        services.procs.append(orchestrator)
        asyncio.run(_wait_orchestrator(services.url, ids, instance, orchestrator))
    except BaseException:
        logs = services.logs()
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"could not start the secured services:\n{logs}")
    try:
        yield services
    finally:
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_anonymous_clients_are_refused(secured: Services) -> None:
    with pytest.raises(Exception):
        await Agent.connect(secured.url, "alice", connect_timeout=2.0)


async def test_an_agent_acts_with_its_identity_file(secured: Services) -> None:
    # The inbox prefix comes from the file: without it every request times out.
    alice = await Agent.connect(secured.url, "alice", nkey_seed=secured.dir / "ids" / "alice.nk")
    try:
        task = f"t-{secrets.token_hex(4)}"
        await alice.create_task(task, "w")
        async with alice.claim(task) as owned:
            await owned.heartbeat("working")
    finally:
        await alice.close()


async def test_a_refused_publish_is_not_permitted_at_once(secured: Services) -> None:
    posing = await Agent.connect(
        secured.url,
        "bob",
        nkey_seed=secured.dir / "ids" / "alice.nk",
        retry=Retry(budget=30.0, attempt_timeout=5.0),
    )
    try:
        started = time.monotonic()
        with pytest.raises(NotPermitted) as refused:
            await posing.create_task(f"t-{secrets.token_hex(4)}", "w")
        elapsed = time.monotonic() - started
    finally:
        await posing.close()
    assert refused.value.identity == "bob"
    assert "not permitted to publish as bob" in str(refused.value)
    assert elapsed < 1.0, f"reported after {elapsed:.2f}s; the ack timeout is 5s"


async def test_leases_work_under_an_identity_and_posing_is_not_permitted(secured: Services) -> None:
    # An agent's permissions cover its lease subjects (baton.art.*.<agent>.>)
    # and the reads of BATON_ARTIFACTS the client makes (direct gets).
    artifact = f"drafts-{secrets.token_hex(4)}/post.md"
    alice = await Agent.connect(secured.url, "alice", nkey_seed=secured.dir / "ids" / "alice.nk")
    try:
        lease = await alice.acquire(artifact, auto_renew=False)
        assert lease.token == 1
        await lease.renew()
        await lease.release("done")
    finally:
        await alice.close()
    posing = await Agent.connect(
        secured.url,
        "bob",
        nkey_seed=secured.dir / "ids" / "alice.nk",
        retry=Retry(budget=30.0, attempt_timeout=5.0),
    )
    try:
        started = time.monotonic()
        with pytest.raises(NotPermitted) as refused:
            await posing.acquire(artifact)
        elapsed = time.monotonic() - started
    finally:
        await posing.close()
    # The agent token of baton.art.<scope>.<agent>.<path>.~, not the last one.
    assert refused.value.identity == "bob"
    assert elapsed < 1.0, f"reported after {elapsed:.2f}s; the ack timeout is 5s"
