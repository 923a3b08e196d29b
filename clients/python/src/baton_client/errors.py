"""Typed errors: what went wrong, in terms an agent can act on.

Every error derives from :class:`BatonError`. The hierarchy mirrors the Rust
SDK (``baton_agent::error``):

- :class:`InvalidId` (also a :class:`ValueError`): an id is not a subject token.
- :class:`BrokerError`: NATS could not be reached or refused a request
  (:class:`Unavailable`, :class:`Refused`, :class:`NotPermitted`).
- :class:`CreateError`: a task could not be created (:class:`TaskExists`).
- :class:`ClaimError`: a claim did not give this agent the task
  (:class:`ClaimLost`, :class:`AlreadyYours`, :class:`NotAssignee`,
  :class:`ArtifactHeld`, ...).
- :class:`HandoffError`: a handoff could not be accepted or rejected
  (:class:`NoOffer`, :class:`NotForYou`, :class:`Taken`, ...).
- :class:`OwnershipError`: an act on an owned task failed
  (:class:`OwnershipLost`, :class:`HandleSpent`, :class:`ActRefused`, ...).
- :class:`ContextError`: a decision-record operation failed
  (:class:`ContextStale`, :class:`ContextInvalid`).
- :class:`LeaseError`: an artifact-lease act did not do what was asked
  (:class:`LeaseHeld`, :class:`LeaseLost`, :class:`LeaseNotHeld`,
  :class:`LeaseRefused`); :class:`InvalidArtifactName` (also a
  :class:`ValueError`): a name that is not an artifact name.
- :class:`StaleToken`: a fenced store refused a write made with an old
  fencing token (the writer's lease is gone).

:class:`UnknownTask` and :class:`TaskEnded` can happen in claims, handoffs
and owner acts alike, so they derive from all three of those bases.
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "BatonError",
    "InvalidId",
    "BrokerError",
    "Unavailable",
    "Refused",
    "CreateError",
    "TaskExists",
    "NotPermitted",
    "ClaimError",
    "HandoffError",
    "OwnershipError",
    "ContextError",
    "UnknownTask",
    "TaskEnded",
    "ClaimLost",
    "AlreadyYours",
    "NotOwned",
    "NotAssignee",
    "ArtifactHeld",
    "NoOffer",
    "NotForYou",
    "Taken",
    "OwnershipLost",
    "HandleSpent",
    "ActRefused",
    "ContextStale",
    "ContextInvalid",
    "InvalidArtifactName",
    "LeaseError",
    "LeaseHeld",
    "LeaseLost",
    "LeaseNotHeld",
    "LeaseRefused",
    "StaleToken",
]


class BatonError(Exception):
    """Base class of every error this package raises."""


class InvalidId(BatonError, ValueError):
    """An id is not ``[A-Za-z0-9_-]{1,128}`` starting with a letter or digit.

    Attributes:
        what: which kind of id ("task id", "agent id", ...).
        value: the refused value (truncated to 160 characters).
        reason: what is wrong with it.
    """

    def __init__(self, what: str, value: str, reason: str) -> None:
        self.what = what
        self.value = value[:160]
        self.reason = reason
        super().__init__(f"invalid {what} {self.value!r}: {reason}")


# -- broker -----------------------------------------------------------------


class BrokerError(BatonError):
    """The broker could not be reached, or refused a request."""


class Unavailable(BrokerError):
    """No acknowledgement within the retry budget (timeouts, no responders)."""

    def __init__(self, subject: str, attempts: int, budget: float, last: str) -> None:
        self.subject = subject
        self.attempts = attempts
        self.budget = budget
        self.last = last
        super().__init__(
            f"no acknowledgement for {subject} after {attempts} attempts in {budget:g}s: {last}"
        )


class Refused(BrokerError):
    """The broker refused the message for good (no stream, too large, ...)."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"the broker refused the message on {subject}: {reason}")


class NotPermitted(BrokerError):
    """The server's permissions do not let these credentials publish on
    ``subject``: the agent connected with another identity's credentials.
    ``identity`` is the id the subject names (its last token). Raised as soon
    as the server refuses the publish, not after the acknowledgement timeout."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        tokens = subject.split(".")
        # Lease subjects name the agent in the middle:
        # baton.art.<scope>.<agent>.<path>.~
        if len(tokens) > 4 and tokens[:2] == ["baton", "art"]:
            self.identity = tokens[3]
        else:
            self.identity = tokens[-1]
        super().__init__(
            f"not permitted to publish as {self.identity} (subject {subject}): "
            f"connect with {self.identity}'s credentials (`baton auth`)"
        )


# -- bases --------------------------------------------------------------------


class CreateError(BatonError):
    """A task could not be created."""


class ClaimError(BatonError):
    """A claim (or resume) did not give this agent the task."""


class HandoffError(BatonError):
    """A handoff could not be accepted or rejected."""


class OwnershipError(BatonError):
    """An act on an owned task failed."""


class ContextError(BatonError):
    """A decision-record operation failed."""


# -- shared ---------------------------------------------------------------


class UnknownTask(ClaimError, HandoffError, OwnershipError):
    """The task does not exist (create it first)."""

    def __init__(self, task: str) -> None:
        self.task = task
        super().__init__(f"task {task} does not exist: create it first")


class TaskEnded(ClaimError, HandoffError, OwnershipError):
    """The task is completed, failed or canceled.

    Attributes:
        status: the terminal status, lower snake case ("completed").
    """

    def __init__(self, task: str, status: str) -> None:
        self.task = task
        self.status = status
        super().__init__(f"task {task} is {status}")


# -- creation -------------------------------------------------------------


class TaskExists(CreateError):
    """The task exists already: nothing was published. Task ids are unique for
    good, even after a task ends.

    Attributes:
        status: its status in lower snake case ("completed"), or ``None`` when
            its history could not be read.
    """

    def __init__(self, task: str, status: str | None) -> None:
        self.task = task
        self.status = status
        detail = f" ({status})" if status else ""
        super().__init__(
            f"task {task} already exists{detail}: nothing was published; pick another task id"
        )


# -- claims ---------------------------------------------------------------


class ClaimLost(ClaimError):
    """Another agent owns the task (it may have won the race just now)."""

    def __init__(self, task: str, owner: str, epoch: int) -> None:
        self.task = task
        self.owner = owner
        self.epoch = epoch
        super().__init__(f"claim of task {task} lost: it is owned by {owner} (epoch {epoch})")


class AlreadyYours(ClaimError):
    """This agent already owns the task (e.g. from before a restart): use ``resume``."""

    def __init__(self, task: str, epoch: int) -> None:
        self.task = task
        self.epoch = epoch
        super().__init__(
            f"task {task} is already owned by this agent (epoch {epoch}); use Agent.resume"
        )


class NotOwned(ClaimError):
    """Nobody owns the task (``resume`` needs this agent to own it)."""

    def __init__(self, task: str) -> None:
        self.task = task
        super().__init__(f"task {task} is not owned by anyone; claim it")


class NotAssignee(ClaimError):
    """The task is assigned to another agent."""

    def __init__(self, task: str, assignee: str) -> None:
        self.task = task
        self.assignee = assignee
        super().__init__(f"task {task} is assigned to {assignee}")


class ArtifactHeld(ClaimError, HandoffError):
    """An artifact the task declares (``TaskCreated.artifacts``) is leased by
    another agent: nothing was taken, neither the task nor any lease (a
    claim or acceptance leases all of them, or none).

    Attributes:
        source: why the lease was not granted (usually :class:`LeaseHeld`,
            naming the holder).
        holder: the holder, when ``source`` names one.
        artifact: the artifact refused.
    """

    def __init__(self, task: str, source: LeaseError) -> None:
        self.task = task
        self.source = source
        self.holder: str | None = getattr(source, "holder", None)
        self.artifact: str = getattr(source, "artifact", "")
        super().__init__(f"task {task} not taken: {source}")


# -- handoffs -------------------------------------------------------------


class NoOffer(HandoffError):
    """No handoff is pending on the task."""

    def __init__(self, task: str) -> None:
        self.task = task
        super().__init__(f"task {task} has no pending handoff")


class NotForYou(HandoffError):
    """The pending offer names another agent."""

    def __init__(self, task: str, recipient: str) -> None:
        self.task = task
        self.recipient = recipient
        super().__init__(
            f"the handoff of task {task} is offered to {recipient}, not to this agent"
        )


class Taken(HandoffError):
    """The offer was accepted by someone else first."""

    def __init__(self, task: str, owner: str) -> None:
        self.task = task
        self.owner = owner
        super().__init__(f"the handoff of task {task} was taken by {owner}")


# -- ownership ------------------------------------------------------------


class OwnershipLost(OwnershipError):
    """The task is no longer this agent's (revoked, or taken after a release).

    Nothing was published. ``owner`` is ``None`` when nobody owns it now.
    """

    def __init__(self, task: str, owner: str | None, epoch: int) -> None:
        self.task = task
        self.owner = owner
        self.epoch = epoch
        super().__init__(
            f"task {task} is no longer owned by this agent "
            f"(owner: {owner or 'nobody'}, epoch {epoch})"
        )


class HandleSpent(OwnershipError):
    """The ownership handle was used after a final act (offer, complete, fail,
    release), after ``detach``, or after ownership was found lost."""

    def __init__(self, task: str, how: str) -> None:
        self.task = task
        self.how = how
        super().__init__(f"the ownership handle of task {task} is spent ({how}); it cannot act")


class ActRefused(OwnershipError):
    """Not allowed in the task's state (e.g. blocking while an offer is pending,
    offering the task to oneself). Nothing was published."""


# -- decision record --------------------------------------------------------


class ContextStale(ContextError):
    """Someone recorded a decision since this agent last read the record.

    Read it again (and reconsider) before recording.
    """

    def __init__(self, workflow: str, latest: int) -> None:
        self.workflow = workflow
        self.latest = latest
        super().__init__(
            f"the decision record of {workflow} changed since it was read "
            f"(latest version {latest}); read it again before recording"
        )


class ContextInvalid(ContextError):
    """The entry would be refused by every reader (e.g. over a size limit);
    nothing was recorded."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"decision not recorded: {message}")


# -- artifact leases -------------------------------------------------------


class InvalidArtifactName(BatonError, ValueError):
    """Not an artifact name (``baton_core::lease::ArtifactName``): empty,
    longer than 256 bytes or 16 segments, with an empty, ``.`` or ``..``
    segment or a control character; or subject tokens that are not a name's
    one encoding.

    Attributes:
        value: the refused value (truncated to 160 characters).
        reason: what is wrong with it.
    """

    def __init__(self, value: str, reason: str) -> None:
        self.value = value[:160]
        self.reason = reason
        super().__init__(f"invalid artifact name {self.value!r}: {reason}")


class LeaseError(BatonError):
    """An artifact-lease act did not do what was asked."""


def _scoped(artifact: str, workflow: str | None) -> str:
    return artifact if workflow is None else f"{workflow}:{artifact}"


def _instant(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class LeaseHeld(LeaseError):
    """Another agent holds a conflicting lease: on this name, or on one above
    or below it (a lease on ``drafts`` covers ``drafts/post.md``). Nothing of
    this agent's is held.

    Attributes:
        artifact: the name the conflicting lease is on (maybe not the one
            asked for: a folder above it, or a file under it).
        holder: the agent holding it.
        mode: its mode, ``"exclusive"`` or ``"shared"``.
        since: when it was granted (broker time, UTC).
        expires_at: when it lapses unless renewed (broker time, UTC).
        token: its fencing token.
        workflow: the scope (``None`` = the global scope).
    """

    def __init__(
        self,
        artifact: str,
        holder: str,
        mode: str,
        since: datetime,
        expires_at: datetime,
        token: int,
        workflow: str | None = None,
    ) -> None:
        self.artifact = artifact
        self.holder = holder
        self.mode = mode
        self.since = since
        self.expires_at = expires_at
        self.token = token
        self.workflow = workflow
        super().__init__(
            f"{_scoped(artifact, workflow)} is held by {holder} ({mode}, token {token}) "
            f"since {_instant(since)}, until at least {_instant(expires_at)} unless renewed"
        )


class LeaseLost(LeaseError):
    """This agent's lease is gone: it expired, was revoked, handed on or
    released. Writes with its token are refused by fenced stores.

    Attributes:
        artifact: the lease's name.
        token: the fencing token that no longer counts.
        reason: what happened to it, as far as the stream tells.
        workflow: the scope (``None`` = the global scope).
    """

    def __init__(self, artifact: str, token: int, reason: str, workflow: str | None = None) -> None:
        self.artifact = artifact
        self.token = token
        self.reason = reason
        self.workflow = workflow
        super().__init__(f"lease on {_scoped(artifact, workflow)} (token {token}) is lost: {reason}")


class LeaseNotHeld(LeaseError):
    """This agent holds no (live) lease on the artifact, so there is nothing
    to resume."""

    def __init__(self, artifact: str, workflow: str | None = None) -> None:
        self.artifact = artifact
        self.workflow = workflow
        super().__init__(f"{_scoped(artifact, workflow)}: this agent holds no lease on it")


class LeaseRefused(LeaseError):
    """A lease act that every reader would refuse: by this client before
    publishing (a reason over its limit, a hand-over to oneself, a
    revocation by an agent that is not an operator), or by the fold of the
    stream. ``reason`` says which."""

    def __init__(self, artifact: str, reason: str, workflow: str | None = None) -> None:
        self.artifact = artifact
        self.reason = reason
        self.workflow = workflow
        super().__init__(f"{_scoped(artifact, workflow)}: {reason}")


class StaleToken(BatonError):
    """A fenced store refused a write: a higher token than the writer's was
    seen already for the artifact or a name above it, so the writer's lease
    is gone (``baton_core::lease::StaleToken``).

    Attributes:
        artifact: the name written to.
        token: the writer's token.
        seen: the highest token the store has seen for it.
    """

    def __init__(self, artifact: str, token: int, seen: int) -> None:
        self.artifact = artifact
        self.token = token
        self.seen = seen
        super().__init__(
            f"write to {artifact} with token {token} refused: token {seen} was seen already"
        )
