"""A file store that checks fencing tokens: the storage side of leases.

A lease alone cannot stop a holder that was paused past its ttl (a GC pause,
a laptop lid, a stuck tool call) from writing when it wakes: by then another
agent holds the lease. So every write carries the writer's token
(:attr:`baton_client.Lease.token`) and the store applies one rule
(:class:`baton_client.leases.Fence`): refuse a write whose token is lower
than the highest it saw for that artifact or any name above it. Tokens only
grow, so the late write is refused however late it arrives.

:class:`FencedDir` applies the rule to a directory of files, in the same
on-disk format as the Rust ``baton_agent::fence::FencedDir``, so Python and
Rust processes can share one directory:

- artifact ``drafts/post.md`` is the file ``<dir>/drafts/post.md``;
- the tokens seen are kept beside the data in ``<dir>/.baton-fence``, one
  line ``<token>\\t<name>\\n`` per name, sorted by name;
- every write happens under an exclusive ``flock`` of
  ``<dir>/.baton-fence.lock``, and files are replaced whole (a temporary
  file, synced, renamed).

As in Rust, a name is a file: a name with names under it (a folder leased
as a whole) is a directory, which holds no data itself, so the fence learns
a folder holder's token from its writes to the files under it.

It is blocking I/O: from async code call it with :func:`asyncio.to_thread`::

    store = FencedDir("/srv/drafts-store")
    async with agent.acquire("drafts/post.md") as lease:
        await asyncio.to_thread(store.write, "drafts/post.md", lease.token, b"...")
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from .errors import InvalidArtifactName
from .leases import ArtifactName, Fence

__all__ = ["FencedDir", "TOKENS_FILE", "LOCK_FILE"]

#: The tokens seen, beside the data.
TOKENS_FILE = ".baton-fence"
#: Held with an exclusive ``flock`` while writing.
LOCK_FILE = ".baton-fence.lock"

_TOKEN = re.compile(r"\+?[0-9]+")
_U64_MAX = 2**64 - 1


class FencedDir:
    """A directory whose writes are fenced by lease tokens."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)

    @property
    def dir(self) -> Path:
        return self._dir

    def path_of(self, name: str | ArtifactName) -> Path:
        """Where artifact ``name`` is stored."""
        artifact = _name(name)
        return self._dir.joinpath(*artifact.segments)

    def write(self, name: str | ArtifactName, token: int, data: bytes) -> None:
        """Writes ``data`` as artifact ``name`` if ``token`` is not lower than
        any token seen for it or a name above it; raises
        :class:`~baton_client.errors.StaleToken` otherwise (nothing is
        written). The token and the data are both in place when it returns.

        The new data is written aside first, then the token recorded, then
        the data put in place: a crash in between leaves the old data with
        the new token, which never lets a lower token in afterwards."""
        artifact = _name(name)
        self._dir.mkdir(parents=True, exist_ok=True)
        lock = os.open(self._dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fence = self._load()
            fence.admit(artifact, token)
            path = self.path_of(artifact)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise IsADirectoryError(f"{path}: a folder of other artifacts, not a file")
            staged = _stage(path, bytes(data))
            try:
                lines = "".join(f"{t}\t{a}\n" for a, t in fence.last_seen())
                tokens = self._dir / TOKENS_FILE
                _put(_stage(tokens, lines.encode("utf-8")), tokens)
                _put(staged, path)
            finally:
                staged.unlink(missing_ok=True)
        finally:
            os.close(lock)  # releases the lock

    def fence(self, name: str | ArtifactName, token: int) -> None:
        """Records ``token`` for ``name`` without writing data: a holder of a
        folder (``drafts``) registers its token, so a stale holder of a file
        under it (``drafts/post.md``) is refused from now on. Raises
        :class:`~baton_client.errors.StaleToken` if ``token`` is older than
        one seen."""
        artifact = _name(name)
        self._dir.mkdir(parents=True, exist_ok=True)
        lock = os.open(self._dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fence = self._load()
            fence.admit(artifact, token)
            lines = "".join(f"{t}\t{a}\n" for a, t in fence.last_seen())
            tokens = self._dir / TOKENS_FILE
            _put(_stage(tokens, lines.encode("utf-8")), tokens)
        finally:
            os.close(lock)  # releases the lock

    def read(self, name: str | ArtifactName) -> bytes:
        """Reads artifact ``name`` (no token needed to read)."""
        return self.path_of(name).read_bytes()

    def last_token(self, name: str | ArtifactName) -> int:
        """The highest token seen for ``name`` or a name above it (0 = none)."""
        return self._load().highest_covering(_name(name))

    def tokens(self) -> list[tuple[str, int]]:
        """Every name with the last token seen for it, as stored."""
        return self._load().last_seen()

    def _load(self) -> Fence:
        fence = Fence()
        try:
            text = (self._dir / TOKENS_FILE).read_bytes().decode("utf-8")
        except FileNotFoundError:
            return fence
        # As Rust's str::lines: split on "\n" (a final one is optional) and
        # drop a "\r" right before a "\n".
        lines = text.split("\n")
        last_open = lines.pop() if lines else ""
        ended = [line[:-1] if line.endswith("\r") else line for line in lines]
        for line in ended + ([last_open] if last_open else []):
            token, sep, artifact = line.partition("\t")
            if not sep:
                continue
            if not _TOKEN.fullmatch(token) or int(token) > _U64_MAX:
                raise ValueError(f"{self._dir / TOKENS_FILE}: bad token line {line!r}")
            fence.remember(artifact, int(token))
        return fence


def _name(name: str | ArtifactName) -> ArtifactName:
    artifact = ArtifactName(name)
    if artifact.segments[0] in (TOKENS_FILE, LOCK_FILE):
        raise InvalidArtifactName(artifact.value, f"{artifact.segments[0]} is the fenced store's own file")
    return artifact


def _stage(path: Path, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path``, synced."""
    tmp = path.with_name(f"{path.name}.baton-tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _put(staged: Path, path: Path) -> None:
    """Puts a staged file in place, whole (a rename), and syncs the directory."""
    os.replace(staged, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
