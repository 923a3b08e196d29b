"""Ids are validated with the Rust rule, with the same reasons."""

from __future__ import annotations

import pytest

from baton_client import Agent, InvalidId
from baton_client.ids import MAX_ID_LEN, agent_id, is_valid_id, task_id, workflow_id


@pytest.mark.parametrize("ok", ["t1", "A", "draft-42", "a_b-C9", "9lives", "x" * MAX_ID_LEN])
def test_accepts_subject_tokens(ok: str) -> None:
    assert task_id(ok) == ok
    assert is_valid_id(ok)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "it is empty"),
        ("a.b", "character '.' is not allowed"),
        ("a b", "character ' ' is not allowed"),
        ("a*", "character '*' is not allowed"),
        ("a>", "character '>' is not allowed"),
        ("é", "character 'é' is not allowed"),
        ("_system", "it must start with a letter or digit"),
        ("-x", "it must start with a letter or digit"),
        ("x" * (MAX_ID_LEN + 1), "it is longer than 128 bytes"),
        # 65 two-byte characters: 130 bytes, too long before the bad character
        ("é" * 65, "it is longer than 128 bytes"),
    ],
)
def test_refuses_with_the_rust_reason(value: str, reason: str) -> None:
    with pytest.raises(InvalidId) as info:
        agent_id(value)
    assert reason in info.value.reason
    assert info.value.what == "agent id"
    assert isinstance(info.value, ValueError)
    assert not is_valid_id(value)


def test_message_names_the_value_and_the_rule() -> None:
    with pytest.raises(InvalidId) as info:
        task_id("my.task")
    assert str(info.value) == (
        "invalid task id 'my.task': character '.' is not allowed (use A-Z, a-z, 0-9, '_' and '-')"
    )


def test_workflow_ids_too() -> None:
    with pytest.raises(InvalidId):
        workflow_id("wf.1")


async def test_connect_refuses_a_bad_agent_id_before_connecting() -> None:
    # No server is listening there: the id check must come first.
    with pytest.raises(InvalidId, match="agent id"):
        await Agent.connect("nats://127.0.0.1:1", "bad.agent")


def test_agent_inbox_prefix() -> None:
    assert Agent.agent_inbox_prefix("a1") == "_INBOX_a1"
    with pytest.raises(InvalidId):
        Agent.agent_inbox_prefix("a.1")


async def test_connect_to_nothing_is_a_broker_error() -> None:
    import asyncio

    from baton_client import BrokerError

    async with asyncio.timeout(20):
        with pytest.raises(BrokerError, match="cannot connect"):
            await Agent.connect("nats://127.0.0.1:1", "a1", connect_timeout=1)
