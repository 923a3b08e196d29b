"""Typed errors: what went wrong, in terms an agent can act on.

Every error derives from :class:`BatonError`. The hierarchy mirrors the Rust
SDK (``baton_agent::error``):

- :class:`InvalidId` (also a :class:`ValueError`): an id is not a subject token.
- :class:`BrokerError`: NATS could not be reached or refused a request
  (:class:`Unavailable`, :class:`Refused`, :class:`NotPermitted`).
- :class:`CreateError`: a task could not be created (:class:`TaskExists`).
- :class:`ClaimError`: a claim did not give this agent the task
  (:class:`ClaimLost`, :class:`AlreadyYours`, :class:`NotAssignee`, ...).
- :class:`HandoffError`: a handoff could not be accepted or rejected
  (:class:`NoOffer`, :class:`NotForYou`, :class:`Taken`, ...).
- :class:`OwnershipError`: an act on an owned task failed
  (:class:`OwnershipLost`, :class:`HandleSpent`, :class:`ActRefused`, ...).
- :class:`ContextError`: a decision-record operation failed
  (:class:`ContextStale`, :class:`ContextInvalid`).

:class:`UnknownTask` and :class:`TaskEnded` can happen in claims, handoffs
and owner acts alike, so they derive from all three of those bases.
"""

from __future__ import annotations

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
    "NoOffer",
    "NotForYou",
    "Taken",
    "OwnershipLost",
    "HandleSpent",
    "ActRefused",
    "ContextStale",
    "ContextInvalid",
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
        self.identity = subject.rsplit(".", 1)[-1]
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
