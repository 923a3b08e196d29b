#!/usr/bin/env python3
"""A Python agent for cross-language scenarios, driven by a test in another
language (the Rust end-to-end tests) through its command line and stdout.

    python agent.py --nats URL --agent ID <command> [options]

Commands (each prints JSON lines on stdout, flushed):

``claim --task T``
    Claims T and prints ``{"ok":true,"epoch":N}``, or
    ``{"ok":false,"error":"ClaimLost","owner":"X","epoch":N}`` when another
    agent owns it. Keeps nothing: the process exits still owning the task, with
    no heartbeats and no release (the handle is detached).
``work --task T --to AGENT [--output LOC]``
    Claims T, sends one heartbeat with progress, offers T to AGENT; prints
    ``{"ok":true,"epoch":N,"offered_seq":S}``.
``relay --task T --to AGENT [--timeout 30] [--output LOC]``
    Waits for a handoff of T offered to this agent (or to a stage), accepts
    it, sends one heartbeat with progress and offers T on to AGENT (with the
    output location it received unless ``--output``); prints
    ``{"ok":true,"accepted_epoch":N,"offered_seq":S}``.
``alerts --kind K --task T --count N [--timeout 60] [--replay]``
    Subscribes to ``baton.alert.<K>.<T>`` (``*`` for any), prints
    ``{"ready":true}`` once the subscription is registered with the server,
    then one line per alert: ``{"alert_id","kind","state","task_id","agents",
    "summary"}`` (kind and state in lower snake case); exits after N.

Exit status: 0 when the command reached a protocol outcome (success, or a
typed Baton refusal such as ``ClaimLost``, printed as ``{"ok":false,
"error":<class>,...}``); 1 with a message on stderr for anything unexpected
(broker unavailable, no offer within the timeout, ...); 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

try:
    import baton_client  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from baton_client import (
    Agent,
    BatonError,
    ClaimError,
    ContextError,
    HandoffError,
    OwnershipError,
    TaskView,
    alert_kind_token,
    alert_state_token,
)

#: Errors that are outcomes of the protocol, reported as JSON with exit 0.
OUTCOMES = (ClaimError, HandoffError, OwnershipError, ContextError)


class Unexpected(Exception):
    """The scenario could not run as asked (reported on stderr, exit 1)."""


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def outcome(err: BatonError) -> dict[str, Any]:
    """A typed error as a JSON object: its class and public fields."""
    out: dict[str, Any] = {"ok": False, "error": type(err).__name__}
    for key in ("task", "owner", "epoch", "recipient", "assignee", "status", "latest", "how"):
        if hasattr(err, key):
            out[key] = getattr(err, key)
    out["message"] = str(err)
    return out


async def cmd_claim(agent: Agent, args: argparse.Namespace) -> None:
    owned = await agent.claim(args.task)
    owned.detach()  # exit holding the task: no heartbeats, no release
    emit({"ok": True, "epoch": owned.epoch})


async def cmd_work(agent: Agent, args: argparse.Namespace) -> None:
    owned = await agent.claim(args.task)
    await owned.heartbeat(f"worked on by {agent.id}", progress=True)
    output = args.output or f"mem://{args.task}/{agent.id}"
    offer = await owned.offer_to_agent(args.to, output)
    emit({"ok": True, "epoch": owned.epoch, "offered_seq": offer.seq})


async def cmd_relay(agent: Agent, args: argparse.Namespace) -> None:
    def offered_to_me(view: TaskView | None) -> bool:
        return (
            view is not None
            and view.pending_handoff is not None
            and view.pending_handoff.is_for(agent.id)
            and view.owner != agent.id
        )

    try:
        view = await agent.wait_for(args.task, offered_to_me, timeout=args.timeout)
    except TimeoutError as e:
        raise Unexpected(
            f"relay: no handoff of {args.task} offered to {agent.id} within {args.timeout:g}s ({e})"
        ) from None
    assert view is not None and view.pending_handoff is not None
    received = view.pending_handoff.output_location
    owned = await agent.accept_handoff(args.task)
    await owned.heartbeat(f"relayed by {agent.id}", progress=True)
    offer = await owned.offer_to_agent(args.to, args.output or received or f"mem://{args.task}/{agent.id}")
    emit({"ok": True, "accepted_epoch": owned.epoch, "offered_seq": offer.seq})


async def cmd_alerts(agent: Agent, args: argparse.Namespace) -> None:
    kinds = None if args.kind == "*" else [args.kind]
    task = None if args.task == "*" else args.task
    async with await agent.subscribe_alerts(kinds, task, replay=args.replay) as alerts:
        emit({"ready": True})
        for _ in range(args.count):
            try:
                alert = await alerts.next(timeout=args.timeout)
            except TimeoutError:
                raise Unexpected(
                    f"alerts: fewer than {args.count} alerts within {args.timeout:g}s each"
                ) from None
            emit(
                {
                    "alert_id": alert.alert_id,
                    "kind": alert_kind_token(alert.kind),
                    "state": alert_state_token(alert.state),
                    "task_id": alert.task_id,
                    "agents": list(alert.agents),
                    "summary": alert.summary,
                }
            )


COMMANDS = {"claim": cmd_claim, "work": cmd_work, "relay": cmd_relay, "alerts": cmd_alerts}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="A Baton agent in Python, for cross-language scenarios.")
    p.add_argument("--nats", default=os.environ.get("BATON_NATS_URL", "nats://127.0.0.1:4222"), help="server URL(s)")
    p.add_argument("--agent", required=True, help="this agent's id")
    p.add_argument("--lease", type=float, default=30.0, help="lease in seconds (default 30)")
    p.add_argument("--creds", help="NATS credentials file")
    p.add_argument("--nkey", help="nkey seed or a file holding one")
    p.add_argument("--agent-inbox", action="store_true", help="use the inbox prefix _INBOX_<agent>")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("claim", help="claim a task and exit holding it")
    c.add_argument("--task", required=True)
    w = sub.add_parser("work", help="claim, heartbeat with progress, offer to --to")
    w.add_argument("--task", required=True)
    w.add_argument("--to", required=True, help="the agent to offer the task to")
    w.add_argument("--output", help="output location to offer (default mem://<task>/<agent>)")
    r = sub.add_parser("relay", help="accept a handoff, heartbeat, offer it on to --to")
    r.add_argument("--task", required=True)
    r.add_argument("--to", required=True, help="the agent to offer the task to")
    r.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the offer (default 30)")
    r.add_argument("--output", help="output location to offer (default: the one received)")
    a = sub.add_parser("alerts", help="print N alerts as JSON lines")
    a.add_argument("--kind", required=True, help="alert kind in lower snake case, or *")
    a.add_argument("--task", required=True, help="task id, _system, or *")
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each alert (default 60)")
    a.add_argument("--replay", action="store_true", help="stored alerts first (BATON_ALERTS), then live ones")
    return p


async def run(args: argparse.Namespace) -> int:
    agent = await Agent.connect(
        args.nats,
        args.agent,
        creds=args.creds,
        nkey_seed=args.nkey,
        lease=args.lease,
        inbox_prefix=Agent.agent_inbox_prefix(args.agent) if args.agent_inbox else None,
    )
    try:
        await COMMANDS[args.command](agent, args)
        return 0
    except OUTCOMES as e:
        emit(outcome(e))
        return 0
    finally:
        await agent.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except Unexpected as e:
        print(e, file=sys.stderr)
        return 1
    except (BatonError, ValueError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
