"""The web console (``baton console``) in real headless Chromium.

The stack is real and secured: a nats-server enforcing the identities
``baton auth`` provisions, the orchestrator and the stall detector as the
service identity, and two consoles reading as the viewer identity: one with
an operator identity for silences, one read-only. Agents are real clients
(this package), each with its own identity; one agent is a separate process
that dies holding a task, so its heartbeats stop.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver``,
installed by ``scripts/ensure-chromium`` (run by the fixture; it fails, and
so do these tests, when they cannot be installed: they never skip).
Screenshots of every view go to ``<target>/console-screenshots/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from conftest import REPO, baton_binary, nats_server_binary, wait_path
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from baton_client import Agent, pb
from baton_client.identity import read_identity_file

AGENTS = ["planner", "writer", "editor", "crasher", "mallory"]
RENOTIFY = 1.0  # seconds; the stall rules' re-notification interval here


def target_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    return target if target.is_absolute() else REPO / target


SHOTS = target_dir() / "console-screenshots"


@dataclass
class Stack:
    url: str
    dir: Path
    console: str = ""  # operator console, http://host:port/
    readonly: str = ""  # read-only console
    detector_metrics: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ids(self, name: str) -> Path:
        return self.dir / "ids" / f"{name}.nk"

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
        for path in sorted(self.dir.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    async def connect(self, name: str) -> nats.NATS:
        identity = read_identity_file(self.ids(name))
        return await nats.connect(self.url, nkeys_seed_str=identity.seed, inbox_prefix=identity.inbox)

    async def agent(self, name: str) -> Agent:
        return await Agent.connect(self.url, name, nkey_seed=self.ids(name))


def console_address(stack: Stack, name: str, proc: subprocess.Popen[bytes]) -> str:
    """The console prints its address once it serves."""
    log = stack.dir / f"{name}.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("Baton console: "):
                return line.removeprefix("Baton console: ").strip()
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{stack.logs()}")
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not start within 30s:\n{stack.logs()}")


async def _wait_services(stack: Stack, instance: str) -> None:
    nc = await stack.connect("viewer")
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        while True:
            for proc in stack.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a service exited with {proc.returncode}")
            try:
                services = await js.key_value("baton-services")
                await services.get(f"orchestrator.{instance}")
                entry = await services.get(f"stall-detector.{instance}")
                assert entry.value is not None
                status = pb.ServiceStatus.FromString(entry.value)
                stack.detector_metrics = f"http://{status.http_addr}/metrics"
                return
            except (
                nats.js.errors.NotFoundError,
                nats.js.errors.ServiceUnavailableError,
                nats.js.errors.NoStreamResponseError,
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
            ):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("services not ready within 30s")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="baton-pytest-console-"))
    baton = baton_binary()
    ids = tmp / "ids"
    subprocess.run(
        [baton, "auth", "--dir", str(ids), "--service", "svc", "--operator", "ops",
         "--viewer", "viewer", "--agent", ",".join(AGENTS)],
        check=True,
        capture_output=True,
    )
    store = tmp / "store"
    store.mkdir()
    config = ids / "server.conf"
    config.write_text(
        'listen: "127.0.0.1:-1"\n'
        f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n"
        'include "auth.conf"\n'
    )
    rules = tmp / "rules.toml"
    rules.write_text(f'[defaults]\nrenotify = "{int(RENOTIFY)}s"\n')
    stack = Stack(url="", dir=tmp)
    stack.procs.append(
        subprocess.Popen(
            [nats_server_binary(), "-c", str(config), "--ports_file_dir", str(tmp), "-l", str(tmp / "nats.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    instance = f"pytest-{secrets.token_hex(3)}"
    try:
        ports = wait_path(tmp, "*.ports", 15, stack.procs[0])
        stack.url = json.loads(ports.read_text())["nats"][0]
        svc = ["--nats", stack.url, "--nkey", str(stack.ids("svc"))]
        stack.spawn("orchestrator", baton, *svc, "orchestrator", "--liveness-interval", "200ms",
                    "--instance", instance)
        stack.spawn("detector", baton, *svc, "stall-detector", "--liveness-interval", "200ms",
                    "--instance", instance, "--rules", str(rules), "--http", "127.0.0.1:0")
        asyncio.run(_wait_services(stack, instance))
        viewer = ["--nats", stack.url, "--nkey", str(stack.ids("viewer"))]
        op = stack.spawn("console", baton, *viewer, "console", "--listen", "127.0.0.1:0",
                         "--operator-nkey", str(stack.ids("ops")))
        ro = stack.spawn("console-readonly", baton, *viewer, "console", "--listen", "127.0.0.1:0")
        stack.console = console_address(stack, "console", op)
        stack.readonly = console_address(stack, "console-readonly", ro)
    except BaseException:
        logs = stack.logs()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"could not start the stack:\n{logs}")
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and chromium-driver, installed when missing."""
    out = subprocess.run([str(REPO / "scripts" / "ensure-chromium")], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(
            "headless Chromium is needed for the console tests and could not be set up "
            f"(scripts/ensure-chromium exited {out.returncode}):\n{out.stderr}",
            pytrace=False,
        )
    chromium, driver = out.stdout.strip().splitlines()[-2:]
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver, log_output=str(target_dir() / "chromedriver.log"))
    b = webdriver.Chrome(options=options, service=service)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield b
    finally:
        b.quit()


def console_errors(browser: WebDriver) -> list[dict[str, Any]]:
    """Console messages of level SEVERE (errors) since the last call."""
    return [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


async def wait_js(browser: WebDriver, script: str, timeout: float = 10.0, what: str = "condition") -> Any:
    """Evaluates ``script`` (a JS expression) until truthy; returns its value.
    Polls (without blocking the event loop between polls) until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.execute_script(f"return ({script});")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


def shot(browser: WebDriver, name: str) -> None:
    path = SHOTS / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"could not save {path}"


def http_json(url: str, data: dict[str, Any] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url)
    if data is not None:
        req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {url}")


CRASHING_AGENT = textwrap.dedent("""
    import asyncio, os, sys
    from baton_client import Agent

    async def main() -> None:
        url, nkey, task = sys.argv[1:4]
        agent = await Agent.connect(url, "crasher", nkey_seed=nkey)
        await agent.claim(task, lease=1.0)
        print("claimed", flush=True)
        os._exit(0)  # dies holding the task: no heartbeat, no release

    asyncio.run(main())
""")


async def stored_alert_time_ms(nc: nats.NATS, subject: str, notification: int = 0) -> int:
    """Broker time (ms) of the first alert on ``subject`` with this notification number."""
    seq = 1
    while True:
        msg = await nc.request("$JS.API.DIRECT.GET.BATON_ALERTS",
                               json.dumps({"seq": seq, "next_by_subj": subject}).encode(), timeout=5)
        headers = dict(msg.headers or {})
        assert headers.get("Status") != "404", f"no alert on {subject}"
        alert = pb.Alert.FromString(msg.data)
        if alert.notification == notification and alert.state == pb.AlertState.Value("ALERT_STATE_FIRING"):
            stamp = headers["Nats-Time-Stamp"]  # RFC 3339 with nanoseconds
            from datetime import datetime
            whole, _, frac = stamp.rstrip("Z").partition(".")
            t = datetime.fromisoformat(whole + "+00:00").timestamp()
            return int(t * 1000 + int((frac + "000")[:3]))
        seq = int(headers["Nats-Sequence"]) + 1


# ---------------------------------------------------------------- the tests


async def test_every_view_loads_without_console_errors(stack: Stack, browser: WebDriver) -> None:
    browser.get(stack.console + "#/pipeline")
    await wait_js(browser, "document.querySelector('#live.on')", what="live feed connected")
    for view, ready in [
        ("pipeline", "document.querySelector('#board, #workflows')"),
        ("alerts", "document.querySelector('#silence-form')"),
        ("health", "document.querySelector('#services')"),
    ]:
        browser.get(stack.console + "#/" + view)
        await wait_js(browser, ready, what=f"{view} view rendered")
    # The operator console says so; buttons are live there.
    assert "operator: ops" in browser.find_element(By.ID, "operator").text
    errors = console_errors(browser)
    assert errors == [], errors


async def test_a_task_created_by_an_agent_appears_live(stack: Stack, browser: WebDriver) -> None:
    uid = secrets.token_hex(3)
    wf, task = f"blog-{uid}", f"post-{uid}"
    planner = await stack.agent("planner")
    writer = await stack.agent("writer")
    try:
        await planner.context(wf).record("Publish on Tuesday", "Launch post goes out Tuesday 9:00.")
        browser.get(stack.console + f"#/pipeline/{wf}")
        await wait_js(browser, "document.querySelector('#live.on')", what="live feed connected")
        await planner.create_task(task, wf, stage="draft", title="Launch post")
        card = f"document.querySelector('[data-task=\"{task}\"]')"
        await wait_js(browser, card, what="the new task's card")
        owned = await writer.claim(task)
        await wait_js(browser, f"{card} && {card}.textContent.includes('owner writer')", what="owner on the card")
        await owned.offer_to_agent("editor", "s3://drafts/launch.md")
        text = await wait_js(browser, f"{card} && {card}.querySelector('[data-handoff]') && {card}.textContent",
                             what="pending handoff on the card")
        assert "writer → editor" in text and "waiting" in text
        shot(browser, "pipeline")
        assert console_errors(browser) == []
    finally:
        await writer.close()
        await planner.close()


async def test_a_missed_heartbeat_turns_the_card_red_and_an_operator_silences_it(
    stack: Stack, browser: WebDriver
) -> None:
    uid = secrets.token_hex(3)
    wf, task = f"ops-{uid}", f"job-{uid}"
    subject = f"baton.alert.heartbeat_missed.{task}"  # as subscribers get it
    stored = f"baton.raise.heartbeat_missed.{task}"  # as BATON_ALERTS stores it
    planner = await stack.agent("planner")
    nc = await stack.connect("viewer")
    notifications: list[int] = []

    async def on_alert(msg: Any) -> None:
        a = pb.Alert.FromString(msg.data)
        if a.state == pb.AlertState.Value("ALERT_STATE_FIRING"):
            notifications.append(a.notification)

    sub = await nc.subscribe(subject, cb=on_alert)
    try:
        await planner.create_task(task, wf, stage="build", title="Nightly build")
        browser.get(stack.console + f"#/pipeline/{wf}")
        card = f"document.querySelector('[data-task=\"{task}\"]')"
        await wait_js(browser, f"document.querySelector('#live.on') && {card}", what="the task's card")
        # Records, in the page, when the card first turns red.
        browser.execute_script(f"""
            window.__red = null;
            new MutationObserver(() => {{
                const el = {card};
                if (!window.__red && el && el.dataset.stalled === 'true') window.__red = Date.now();
            }}).observe(document.getElementById('view'), {{subtree: true, childList: true, attributes: true}});
        """)
        crasher = subprocess.run(
            [sys.executable, "-c", CRASHING_AGENT, stack.url, str(stack.ids("crasher")), task],
            capture_output=True, text=True, timeout=60,
        )
        assert crasher.returncode == 0 and "claimed" in crasher.stdout, crasher.stderr
        red_ms = await wait_js(browser, "window.__red", timeout=15, what="the card turned red")
        alert_ms = await stored_alert_time_ms(nc, stored)
        lag = red_ms - alert_ms
        print(f"card red {lag} ms after the alert was stored")
        assert lag < 1000, f"the card turned red {lag} ms after the alert"
        assert browser.execute_script(f"return {card}.textContent").count("heartbeat_missed") == 1
        shot(browser, "pipeline-stalled")

        # The detector re-notifies while it fires.
        deadline = time.monotonic() + 10
        while max(notifications, default=0) < 1:
            assert time.monotonic() < deadline, f"no re-notification: {notifications}"
            await asyncio.sleep(0.05)

        # The read-only console shows the alert, but may not silence it.
        browser.get(stack.readonly + "#/alerts")
        row = f"document.querySelector('tr[data-task=\"{task}\"][data-kind=\"heartbeat_missed\"]')"
        await wait_js(browser, row, what="the alert in the read-only console")
        button = browser.find_element(By.CSS_SELECTOR, f'tr[data-task="{task}"] button[data-silence-task]')
        assert not button.is_enabled()
        assert "operator" in (button.get_attribute("title") or "")
        assert "read-only" in browser.find_element(By.ID, "readonly").text
        status, body = http_json(stack.readonly + "api/silences", {"task": task, "for": "1h"})
        assert status == 403 and "read-only" in body["error"], body
        shot(browser, "alerts-readonly")

        # The operator silences it from the page.
        browser.get(stack.console + "#/alerts")
        await wait_js(browser, row, what="the alert in the operator console")
        shot(browser, "alerts")
        silenced_before = metric(stack.detector_metrics, "baton_stall_silenced")
        browser.find_element(By.CSS_SELECTOR, f'tr[data-task="{task}"] button[data-silence-task]').click()
        await wait_js(browser, f"document.querySelector('#silences') && "
                               f"document.querySelector('#silences').textContent.includes('{task}')",
                      what="the silence listed")
        # Once the detector withholds a notification, it has the silence;
        # from then on nothing more is paged, while more come due.
        deadline = time.monotonic() + 10
        while metric(stack.detector_metrics, "baton_stall_silenced") < silenced_before + 1:
            assert time.monotonic() < deadline, "the detector never withheld a notification"
            await asyncio.sleep(0.05)
        paged = len(notifications)
        due_again = metric(stack.detector_metrics, "baton_stall_silenced") + 2
        deadline = time.monotonic() + 10 * RENOTIFY
        while metric(stack.detector_metrics, "baton_stall_silenced") < due_again:
            assert time.monotonic() < deadline, "no further re-notification came due"
            await asyncio.sleep(0.05)
        assert len(notifications) == paged, f"re-notified while silenced: {notifications}"
        await wait_js(browser, f"{row} && {row}.textContent.includes('silenced')", what="the alert shown silenced")
        shot(browser, "alerts-silenced")
        assert console_errors(browser) == []
    finally:
        await sub.unsubscribe()
        await nc.close()
        await planner.close()


async def test_the_task_page_shows_a_refused_event_and_why(stack: Stack, browser: WebDriver) -> None:
    uid = secrets.token_hex(3)
    wf, task = f"docs-{uid}", f"guide-{uid}"
    planner = await stack.agent("planner")
    editor = await stack.agent("editor")
    mallory = await stack.connect("mallory")
    try:
        v1 = await planner.context(wf).record("Use British spelling", "Colour, not color.")
        await planner.create_task(task, wf, stage="edit", title="User guide")
        owned = await editor.claim(task)
        await owned.heartbeat("chapter 1", progress=True)
        v2 = await planner.context(wf).record("Add a glossary", "Every term in one place.")
        # Another agent, as itself, sends a heartbeat for a task it does not own.
        rogue = pb.Event(event_id=f"rogue-{uid}", task_id=task, workflow_id=wf, agent_id="mallory", epoch=1)
        rogue.heartbeat.note = "I own this now"
        ack = await mallory.request(f"baton.evt.{task}.mallory", rogue.SerializeToString(), timeout=5,
                                    headers={"Nats-Msg-Id": rogue.event_id})
        assert "error" not in json.loads(ack.data)

        browser.get(stack.console + f"#/task/{task}")
        refused = "document.querySelector('#timeline tr[data-refused=\"true\"]')"
        text = await wait_js(browser, f"{refused} && {refused}.textContent", what="the refused event")
        assert "mallory" in text and "refused:" in text
        assert "editor" in text, text  # why: the owner is someone else
        # Owner and epoch after each event.
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#timeline tbody tr')].map(r => r.textContent)")
        assert len(rows) == 4, rows  # created, claimed, heartbeat, the refused one
        assert "claimed" in rows[1] and "editor" in rows[1]
        # The decision record, with the version the task's events carried.
        decisions = browser.find_element(By.ID, "decisions").text
        assert "Use British spelling" in decisions and "Add a glossary" in decisions
        shot(browser, "task")
        # The same page as JSON, for scripts.
        status, page = http_json(stack.console + f"api/tasks/{task}")
        assert status == 200
        assert [e["refused"] is not None for e in page["timeline"]] == [False, False, False, True]
        assert "not the owner" in page["timeline"][3]["refused"] or "owner" in page["timeline"][3]["refused"]
        assert page["timeline"][0]["context_version"] == v1  # the planner read v1 before creating
        read = page["task"]["context_version"]
        assert page["context"]["version"] == v2 and read in (v1, v2)
        assert f"{read} ◀ read" in decisions, decisions
        await owned.complete("s3://guide.md", "done")
        assert console_errors(browser) == []
    finally:
        await mallory.close()
        await editor.close()
        await planner.close()


async def test_health_shows_services_streams_and_consumers(stack: Stack, browser: WebDriver) -> None:
    browser.get(stack.console + "#/health")
    text = await wait_js(browser, "document.querySelector('#services') && document.querySelector('#consumers') "
                                  "&& document.querySelector('#view').textContent", what="health view")
    for expected in ("orchestrator", "stall-detector", "alive", "BATON_EVENTS", "baton-orchestrator",
                     "baton-stall-detector", "role", "active"):
        assert expected in text, expected
    shot(browser, "health")
    assert console_errors(browser) == []


async def test_ten_thousand_tasks_render_only_what_is_shown(stack: Stack, browser: WebDriver) -> None:
    uid = secrets.token_hex(3)
    wf = f"big-{uid}"
    stages = ["plan", "draft", "review", "edit", "publish"]
    nc = await stack.connect("planner")
    writer = await stack.agent("writer")
    try:
        for i in range(10_000):
            ev = pb.Event(event_id=f"{wf}-{i}", task_id=f"{wf}-{i:05d}", workflow_id=wf, agent_id="planner")
            ev.created.stage = stages[i % len(stages)]
            ev.created.title = f"Article {i}"
            await nc.publish(f"baton.evt.{ev.task_id}.planner", ev.SerializeToString(),
                             headers={"Nats-Msg-Id": ev.event_id})
        await nc.flush()
        deadline = time.monotonic() + 120
        while True:
            _, workflows = http_json(stack.console + "api/workflows")
            if any(w["id"] == wf and w["tasks"] == 10_000 for w in workflows):
                break
            assert time.monotonic() < deadline, f"10,000 tasks never reached the console: {workflows}"
            await asyncio.sleep(0.1)

        started = time.monotonic()
        browser.get(stack.console + f"#/pipeline/{wf}")
        await wait_js(browser, "document.querySelectorAll('.card').length === 250", what="5 columns of 50 cards")
        print(f"pipeline of 10,000 tasks rendered in {time.monotonic() - started:.2f}s")
        columns = browser.execute_script(
            "return [...document.querySelectorAll('.column')].map(c => [c.dataset.column, c.querySelectorAll('.card').length, c.querySelector('[data-more]').textContent])")
        assert [c[1] for c in columns] == [50] * 5, columns
        assert all(c[2].startswith("1950 more") for c in columns), columns

        # One change among 10,000: its column is redrawn, the others are not.
        task = f"{wf}-00000"
        other = next(c[0] for c in columns if c[0] != stages[0])
        browser.execute_script(
            f"document.querySelector('[data-column=\"{other}\"] .card').__untouched = true")
        owned = await writer.claim(task)  # kept: a dropped handle releases the task
        card = f"document.querySelector('[data-task=\"{task}\"]')"
        await wait_js(browser, f"{card} && {card}.textContent.includes('owner writer')", what="the claim on its card")
        assert browser.execute_script(
            f"return document.querySelector('[data-column=\"{other}\"] .card').__untouched === true"
        ), "an untouched column was redrawn"
        shot(browser, "pipeline-10k")
        assert console_errors(browser) == []
        await owned.complete("s3://article-0", "done")
    finally:
        await writer.close()
        await nc.close()
