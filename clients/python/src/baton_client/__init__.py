"""Baton client for Python: single ownership, status signals and a shared
decision record for multi-agent systems on NATS JetStream.

The same protocol as the Rust SDK (``baton-agent``), against the same
services, so Python and Rust agents can hand tasks to each other::

    import asyncio
    from baton_client import Agent, ClaimLost

    async def main() -> None:
        async with await Agent.connect("nats://127.0.0.1:4222", "py-writer") as agent:
            await agent.create_task("t1", "wf1", stage="draft")
            try:
                async with agent.claim("t1") as owned:
                    await owned.heartbeat("outline done", progress=True)
                    await owned.offer_to_stage("review", "s3://bucket/t1/draft.md")
            except ClaimLost as lost:
                print(f"{lost.owner} was faster")

    asyncio.run(main())

Artifact leases (one writer or many readers on a file, document or record,
with a fencing token stores check)::

    async with agent.acquire("drafts/post.md") as lease:   # LeaseHeld if taken
        FencedDir("/srv/store").write("drafts/post.md", lease.token, b"...")

Modules: :mod:`~baton_client.agent`, :mod:`~baton_client.ownership`,
:mod:`~baton_client.context`, :mod:`~baton_client.alerts`,
:mod:`~baton_client.errors`, :mod:`~baton_client.state` (the fold port),
:mod:`~baton_client.leases` (artifact names and the lease fold),
:mod:`~baton_client.lease_handle` (the lease handle),
:mod:`~baton_client.fence` (a fenced file store),
:mod:`~baton_client.pb` (generated wire types), :mod:`~baton_client.ids`,
:mod:`~baton_client.subjects`.
"""

from . import errors, leases, pb, subjects
from ._transport import Retry
from .agent import Agent, OwnershipRequest, duration
from .alerts import AlertSubscription, alert_kind_token, alert_state_token, parse_alert_kind
from .context import ContextRecord, ContextSnapshot, Decision
from .errors import (
    ActRefused,
    AlreadyYours,
    ArtifactHeld,
    BatonError,
    BrokerError,
    ClaimError,
    ClaimLost,
    ContextInvalid,
    ContextError,
    ContextStale,
    CreateError,
    HandleSpent,
    HandoffError,
    InvalidArtifactName,
    InvalidId,
    LeaseError,
    LeaseHeld,
    LeaseLost,
    LeaseNotHeld,
    LeaseRefused,
    NoOffer,
    NotAssignee,
    NotForYou,
    NotOwned,
    OwnershipError,
    OwnershipLost,
    NotPermitted,
    Refused,
    StaleToken,
    Taken,
    TaskEnded,
    TaskExists,
    Unavailable,
    UnknownTask,
)
from .fence import FencedDir
from .ids import validate_id
from .lease_handle import Lease, LeaseRequest
from .leases import ArtifactName, LeaseMode
from .ownership import OfferSent, Ownership
from .state import Offer, TaskStatus, TaskView

__version__ = "0.1.0"

__all__ = [
    "errors",
    "leases",
    "pb",
    "subjects",
    "Retry",
    "Agent",
    "OwnershipRequest",
    "duration",
    "AlertSubscription",
    "alert_kind_token",
    "alert_state_token",
    "parse_alert_kind",
    "ContextRecord",
    "ContextSnapshot",
    "Decision",
    "ActRefused",
    "AlreadyYours",
    "ArtifactHeld",
    "BatonError",
    "BrokerError",
    "ClaimError",
    "ClaimLost",
    "ContextInvalid",
    "ContextError",
    "ContextStale",
    "CreateError",
    "HandleSpent",
    "HandoffError",
    "InvalidArtifactName",
    "InvalidId",
    "LeaseError",
    "LeaseHeld",
    "LeaseLost",
    "LeaseNotHeld",
    "LeaseRefused",
    "NoOffer",
    "NotAssignee",
    "NotForYou",
    "NotOwned",
    "NotPermitted",
    "OwnershipError",
    "OwnershipLost",
    "Refused",
    "StaleToken",
    "Taken",
    "TaskEnded",
    "TaskExists",
    "Unavailable",
    "UnknownTask",
    "validate_id",
    "FencedDir",
    "Lease",
    "LeaseRequest",
    "ArtifactName",
    "LeaseMode",
    "OfferSent",
    "Ownership",
    "Offer",
    "TaskStatus",
    "TaskView",
]
