"""Identity files written by ``baton auth``.

A file holds a few ``# key: value`` lines (``name``, ``role``, ``inbox``) and
the identity's nkey seed (the first line starting with ``SU``), the same
format the Rust side reads (``baton_jetstream::auth::IdentityFile``). A file
holding only a seed is valid too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import BrokerError


@dataclass(frozen=True)
class IdentityFile:
    """What an identity file says."""

    seed: str
    name: str | None = None
    role: str | None = None
    #: The inbox prefix the identity may subscribe to (``_INBOX_<name>``).
    inbox: str | None = None


def parse_identity(text: str) -> IdentityFile:
    """Parses an identity file's text; :class:`ValueError` without a seed."""
    fields: dict[str, str] = {}
    seed = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        elif line.startswith("SU") and seed is None:
            seed = line
    if seed is None:
        raise ValueError("no nkey seed (a line starting with SU) in the file")
    return IdentityFile(seed=seed, name=fields.get("name"), role=fields.get("role"), inbox=fields.get("inbox"))


def read_identity_file(path: str | os.PathLike[str]) -> IdentityFile:
    """Reads an identity file, or raises :class:`BrokerError` saying why not."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_identity(f.read())
    except (OSError, ValueError) as e:
        raise BrokerError(f"nkey seed file {os.fspath(path)}: {e}") from e
