"""Id validation, the same rule as the Rust core (``baton_core::ids``).

Task, agent, workflow ids and stage names are NATS subject tokens, so they
are refused before anything is published unless they match
``[A-Za-z0-9_-]{1,128}`` and start with a letter or digit (a leading ``_`` is
reserved: ``_system`` is the task token of alerts about Baton itself).
"""

from __future__ import annotations

from .errors import InvalidId

__all__ = [
    "MAX_ID_LEN",
    "validate_id",
    "task_id",
    "agent_id",
    "workflow_id",
    "stage_name",
    "is_valid_id",
]

#: Longest accepted id, in bytes (UTF-8, as Rust counts).
MAX_ID_LEN = 128


def _allowed(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "_-"


def validate_id(what: str, value: str) -> str:
    """Returns ``value`` if it is a valid id, else raises :class:`InvalidId`.

    The checks run in the Rust order (empty, too long, bad character, bad
    start) so both sides give the same reason for the same value.
    """
    if not isinstance(value, str):
        raise InvalidId(what, repr(value), f"expected a string, got {type(value).__name__}")
    if not value:
        raise InvalidId(what, value, "it is empty")
    if len(value.encode("utf-8")) > MAX_ID_LEN:
        raise InvalidId(what, value, f"it is longer than {MAX_ID_LEN} bytes")
    for c in value:
        if not _allowed(c):
            raise InvalidId(
                what,
                value,
                f"character {c!r} is not allowed (use A-Z, a-z, 0-9, '_' and '-')",
            )
    if value[0] in "_-":
        raise InvalidId(what, value, "it must start with a letter or digit")
    return value


def is_valid_id(value: str) -> bool:
    """Whether ``value`` is a valid id (of any kind)."""
    try:
        validate_id("id", value)
    except InvalidId:
        return False
    return True


def task_id(value: str) -> str:
    """Validates a task id."""
    return validate_id("task id", value)


def agent_id(value: str) -> str:
    """Validates an agent id."""
    return validate_id("agent id", value)


def workflow_id(value: str) -> str:
    """Validates a workflow id."""
    return validate_id("workflow id", value)


def stage_name(value: str) -> str:
    """Validates a stage name."""
    return validate_id("stage", value)
