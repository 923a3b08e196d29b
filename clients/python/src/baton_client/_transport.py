"""JetStream plumbing: durable publishing with compare-and-set, and reads.

This is the Python counterpart of ``baton_jetstream::{publish, read}``. It
talks to the JetStream API with plain requests so every header is under
control:

- :func:`publish_durable` sends ``Nats-Msg-Id`` (so a retried publish is
  stored once) and, for compare-and-set, ``Nats-Expected-Last-Subject-Sequence``
  plus ``Nats-Expected-Last-Subject-Sequence-Subject`` (server 2.11+). Transient
  failures (timeouts, no responders, a JetStream leader election) are retried
  with the same id until a budget runs out.
- :class:`Denials` collects the publishes the server refused on a connection
  (``-ERR 'Permissions Violation for Publish to ...'``, which nats-py hands to
  its ``error_cb``, never to the request), so :func:`publish_durable` fails at
  once with :class:`~baton_client.errors.NotPermitted` instead of timing out.
- :func:`last_on_subject` is a direct get ``last_by_subj`` (wildcards allowed).
- :func:`read_subject` reads every message on a subject from a sequence on,
  with batched direct gets (``next_by_subj`` + ``batch``).
- :func:`kv_values` reads every current value of a KV bucket, and
  :func:`checkpoint` one service's checkpoint, with the same direct gets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from . import subjects
from .errors import BrokerError, NotPermitted, Refused, Unavailable

log = logging.getLogger("baton_client")

JS_API = "$JS.API"
#: JetStream error code of a failed ``Nats-Expected-Last-*`` precondition.
WRONG_LAST_SEQUENCE = 10071
#: The header that scopes the expected last subject sequence to a wildcard.
EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
MSG_ID = "Nats-Msg-Id"
#: The header that marks a KV delete or purge.
KV_OPERATION = "KV-Operation"

_TRANSIENT = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
)


@dataclass(frozen=True)
class Retry:
    """How long to keep trying a publish the broker did not acknowledge."""

    #: Give up after this long in total, in seconds (leader elections take seconds).
    budget: float = 30.0
    #: Wait this long for one acknowledgement, in seconds.
    attempt_timeout: float = 5.0


@dataclass(frozen=True)
class Cas:
    """Compare-and-set: store only if the last message on ``scope`` has
    sequence ``expected`` (0 = there is none)."""

    expected: int
    scope: str


@dataclass(frozen=True)
class Stored:
    """A message as stored, with the broker's facts about it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: The broker's stored time (RFC 3339), if it said.
    time: str | None = None

    @property
    def msg_id(self) -> str | None:
        """The ``Nats-Msg-Id`` it was published with."""
        return self.headers.get(MSG_ID)

    @property
    def is_kv_tombstone(self) -> bool:
        """Whether it is a KV delete or purge marker (header ``KV-Operation``
        ``DEL`` or ``PURGE``), not a value."""
        return self.headers.get(KV_OPERATION) in ("DEL", "PURGE")


class WrongLastSequence(Exception):
    """The compare-and-set precondition failed.

    ``after_retry`` means an earlier attempt of this very message may have
    been stored (its acknowledgement was lost), so the caller should look
    before concluding it lost.
    """

    def __init__(self, detail: str, after_retry: bool) -> None:
        self.detail = detail
        self.after_retry = after_retry
        super().__init__(f"compare-and-set failed: {detail}")


_PUBLISH_DENIED = "permissions violation for publish to "
_SUBSCRIBE_DENIED = "permissions violation for subscription to "


def parse_denial(message: str) -> tuple[str, str] | None:
    """``("publish" | "subscribe", subject)`` from a server error such as
    ``Permissions Violation for Publish to "baton.evt.t1.bob"``. nats-py
    lower-cases the server's error text, so the subject comes back lower-case."""
    lower = message.lower()
    for kind, marker in (("publish", _PUBLISH_DENIED), ("subscribe", _SUBSCRIBE_DENIED)):
        at = lower.find(marker)
        if at >= 0:
            return kind, lower[at + len(marker) :].strip().strip("'\"")
    return None


class Denials:
    """Publishes the server refused on one connection, for the publishes
    waiting on them. Feed it every error nats-py reports (``error_cb``)."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    def report(self, error: BaseException | str) -> bool:
        """Takes a server error; ``True`` if it was a refused publish."""
        denial = parse_denial(str(error))
        if denial is None or denial[0] != "publish":
            return False
        for fut in self._waiting.pop(denial[1], set()):
            if not fut.done():
                fut.set_result(None)
        return True

    def watch(self, subject: str) -> asyncio.Future[None]:
        """A future that completes when a publish to ``subject`` is refused."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(subject.lower(), set()).add(fut)
        return fut

    def forget(self, subject: str, fut: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(subject.lower())
        if waiting is not None:
            waiting.discard(fut)
            if not waiting:
                del self._waiting[subject.lower()]


async def _request(
    nc: NATS,
    subject: str,
    payload: bytes,
    timeout: float,
    headers: dict[str, str],
    denials: Denials | None,
) -> Msg:
    """``nc.request``, or :class:`NotPermitted` as soon as ``denials`` reports
    that the server refused the publish."""
    if denials is None:
        return await nc.request(subject, payload, timeout=timeout, headers=headers)
    refused = denials.watch(subject)
    request = asyncio.ensure_future(nc.request(subject, payload, timeout=timeout, headers=headers))
    either: set[asyncio.Future[Msg] | asyncio.Future[None]] = {request, refused}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if refused.done() and not request.done():
            request.cancel()
            raise NotPermitted(subject)
        return request.result()
    finally:
        denials.forget(subject, refused)
        if not request.done():
            request.cancel()


def _headers(msg: Msg) -> dict[str, str]:
    return {str(k): str(v) for k, v in (msg.headers or {}).items()}


async def publish_durable(
    nc: NATS,
    subject: str,
    payload: bytes,
    msg_id: str,
    cas: Cas | None = None,
    retry: Retry = Retry(),
    denials: Denials | None = None,
) -> int:
    """Publishes to a stream and waits for the acknowledgement; returns the
    stream sequence. Retries transient failures with the same ``msg_id``.

    Raises :class:`~baton_client.errors.NotPermitted` as soon as ``denials``
    (the connection's refusals) reports the publish refused,
    :class:`WrongLastSequence` when ``cas`` failed, :class:`Refused` when
    the broker refused the message for good and :class:`Unavailable` when no
    acknowledgement came within the budget.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = 0
    backoff = 0.02
    while True:
        attempts += 1
        headers = {MSG_ID: msg_id}
        if cas is not None:
            headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(cas.expected)
            headers[EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT] = cas.scope
        last: str
        try:
            reply = await _request(nc, subject, payload, retry.attempt_timeout, headers, denials)
        except nats.errors.NoRespondersError:
            if await _no_stream_for(nc, subject):
                raise Refused(
                    subject,
                    "no stream stores this subject: start the Baton services "
                    "(or `baton dev`), which create the streams",
                ) from None
            last = "no responders (JetStream unavailable?)"
        except _TRANSIENT as e:
            last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        except nats.errors.Error as e:
            raise BrokerError(f"publishing to {subject}: {type(e).__name__}: {e}") from e
        else:
            try:
                resp: dict[str, Any] = json.loads(reply.data)
            except ValueError:
                raise Refused(subject, f"not a JetStream acknowledgement: {reply.data[:200]!r}") from None
            err = resp.get("error")
            if err is None:
                if "seq" not in resp:
                    raise Refused(subject, f"acknowledgement without a sequence: {resp}")
                return int(resp["seq"])
            description = str(err.get("description", err))
            if err.get("err_code") == WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(description, after_retry=attempts > 1)
            if err.get("code") != 503:
                raise Refused(subject, description)
            last = description
        elapsed = loop.time() - started
        if elapsed + backoff >= retry.budget:
            raise Unavailable(subject, attempts, retry.budget, last)
        log.debug("publish to %s not acknowledged (%s); retrying", subject, last)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 1.0)


async def _no_stream_for(nc: NATS, subject: str) -> bool:
    """Whether JetStream answers that no stream stores ``subject`` (as opposed
    to not answering at all, as during a leader election)."""
    try:
        reply = await nc.request(
            f"{JS_API}.STREAM.NAMES", json.dumps({"subject": subject}).encode(), timeout=2.0
        )
        resp = json.loads(reply.data)
    except (TimeoutError, nats.errors.Error, ValueError):
        return False
    return "error" not in resp and not resp.get("streams")


def _stored_from(msg: Msg) -> Stored:
    headers = _headers(msg)
    return Stored(
        seq=int(headers["Nats-Sequence"]),
        subject=headers["Nats-Subject"],
        data=bytes(msg.data),
        headers=headers,
        time=headers.get("Nats-Time-Stamp"),
    )


async def last_on_subject(nc: NATS, stream: str, subject: str, timeout: float = 5.0) -> Stored | None:
    """The last message on ``subject`` (wildcards allowed) in ``stream``, if any."""
    try:
        reply = await nc.request(
            f"{JS_API}.DIRECT.GET.{stream}",
            json.dumps({"last_by_subj": subject}).encode(),
            timeout=timeout,
        )
    except nats.errors.Error as e:
        raise BrokerError(f"reading the last message of {subject} in {stream}: {type(e).__name__}: {e}") from e
    headers = _headers(reply)
    status = headers.get("Status")
    if status == "404":
        return None
    if status:
        raise BrokerError(
            f"reading the last message of {subject} in {stream}: status {status} "
            f"{headers.get('Description', '')}".rstrip()
        )
    return _stored_from(reply)


async def read_subject(
    nc: NATS,
    stream: str,
    subject: str,
    from_seq: int = 1,
    batch: int = 256,
    timeout: float = 5.0,
) -> list[Stored]:
    """Every message on ``subject`` (wildcards allowed) in ``stream`` from
    sequence ``from_seq`` (inclusive) on, in order."""
    out: list[Stored] = []
    seq = max(from_seq, 1)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        while True:
            request = {"seq": seq, "next_by_subj": subject, "batch": batch}
            await nc.publish(f"{JS_API}.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
            pending = 0
            got = 0
            while True:
                try:
                    msg = await sub.next_msg(timeout=timeout)
                except nats.errors.TimeoutError:
                    raise BrokerError(f"timed out reading {subject} in {stream} from {seq}") from None
                headers = _headers(msg)
                status = headers.get("Status")
                if status == "404":  # nothing (more) at or after seq
                    return out
                if status == "204":  # end of this batch
                    break
                if status:
                    raise BrokerError(
                        f"reading {subject} in {stream}: status {status} {headers.get('Description', '')}".rstrip()
                    )
                stored = _stored_from(msg)
                out.append(stored)
                got += 1
                pending = int(headers.get("Nats-Num-Pending", "0") or 0)
            if got == 0 or pending == 0:
                return out
            seq = out[-1].seq + 1
    except nats.errors.Error as e:
        raise BrokerError(f"reading {subject} in {stream}: {type(e).__name__}: {e}") from e
    finally:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass


async def stream_last_seq(nc: NATS, stream: str, timeout: float = 5.0) -> int:
    """The stream's last sequence (0 when it never stored anything)."""
    try:
        reply = await nc.request(f"{JS_API}.STREAM.INFO.{stream}", b"", timeout=timeout)
        resp = json.loads(reply.data)
    except (nats.errors.Error, ValueError) as e:
        raise BrokerError(f"stream info of {stream}: {type(e).__name__}: {e}") from e
    if "error" in resp:
        raise BrokerError(f"stream info of {stream}: {resp['error'].get('description', resp['error'])}")
    return int(resp.get("state", {}).get("last_seq", 0))


async def kv_values(nc: NATS, bucket: str) -> list[tuple[str, Stored]]:
    """Every current entry of KV bucket ``bucket``, as (key, stored value),
    in stream order: deleted and purged keys are left out, and so are the
    reserved keys (``_...``: a leadership term's fence), which are not data
    (``baton_jetstream::read::for_each_kv_value``).

    The bucket's stream is read from its start with direct gets (no
    consumer, as every read here): Baton's buckets keep one value per key,
    so that is the last value of each key; a key written again during the
    read shows up again later, and its last value wins."""
    prefix = f"$KV.{bucket}."
    last: dict[str, Stored] = {}
    for stored in await read_subject(nc, f"KV_{bucket}", f"{prefix}>", 1):
        key = stored.subject[len(prefix) :]
        # Moved to the end: the order is that of each key's last value.
        last.pop(key, None)
        last[key] = stored
    return [
        (key, stored)
        for key, stored in last.items()
        if not stored.is_kv_tombstone and not key.startswith("_")
    ]


def parse_checkpoint(data: bytes) -> int | None:
    """A checkpoint's stored value (in ``baton-checkpoints``): the sequence
    in decimal; ``None`` when unreadable (``baton_jetstream::read::parse_checkpoint``)."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    # Rust's u64 parse: ASCII digits, an optional leading `+`, in range
    # (Python's int() would also take `_` separators and other digits).
    digits = text[1:] if text.startswith("+") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(digits)
    return value if value < 2**64 else None


async def checkpoint(nc: NATS, name: str) -> int | None:
    """The checkpoint ``name`` of KV ``baton-checkpoints``: 0 when there is
    none yet (or it was deleted), ``None`` when it cannot be read
    (``baton_jetstream::read::checkpoint``)."""
    bucket = subjects.CHECKPOINTS_BUCKET
    try:
        stored = await last_on_subject(nc, f"KV_{bucket}", f"$KV.{bucket}.{name}")
    except BrokerError:
        return None
    if stored is None or stored.is_kv_tombstone:
        return 0
    return parse_checkpoint(stored.data)
