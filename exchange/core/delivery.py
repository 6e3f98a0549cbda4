"""The delivery lifecycle: one table, one step function, and the retry policy.

Theory of operation
-------------------

A *delivery* is one version of one dataset on its way to one recipient. It is created
``pending`` when the version is taken into the spool, one per recipient of the agreement, and
from then on it changes state only through :func:`step`, which looks the pair
``(state, type(event))`` up in :data:`TRANSITIONS`. A pair that is not in the table is a bug in
the caller, never bad input, so :func:`step` raises :class:`~exchange.errors.InvariantError`
(h11 ``_state.py``, "Rule 1": the table is the whole truth; nothing else moves a delivery).
The ledger calls :func:`step` before it writes, so an illegal transition leaves no trace.

The states, and what must be true of the world in each:

``pending``
    Waiting for its schedule (or its release window) to make it due. Nothing on the hub.
``uploading``
    The intent is recorded: the ledger holds the deterministic remote name *before* the first
    byte is encrypted, so a crash leaves a delivery that a restart knows to look for. The
    envelope is encrypted straight into the upload (no ciphertext on local disk), so there is
    no separate "encrypting" state. A partial file may exist on the hub under a temporary name,
    never under the final one.
``sent``
    The remote rename succeeded: the final name exists on the hub with the recorded
    ciphertext hash. Write-ordering: a delivery *must not* reach ``sent`` before the rename.
``retry_wait``
    The last attempt failed for a reason that may go away (hub down, timeout, a crash while
    uploading). ``next_attempt_at`` says when to try again (:func:`next_attempt_at`).
``parked``
    A failure that retrying will not fix (host key mismatch, the partner's key missing or
    invalid). The partner's deliveries stop, an incident is raised, and only ops resume it:
    no retry storm.
``acknowledged``
    The partner's signed receipt (status accepted or replaced) was verified. Terminal.
``rejected``
    The partner's verified receipt says it refused the delivery. Terminal; an incident.
``withdrawn``
    Retention removed the unacknowledged file from the hub. A verified receipt can still
    arrive for it (the partner may have pulled just before), and the ledger must then record
    that the partner holds it, because corrections go to every holder.
``poisoned``
    The delivery failed every attempt in a way that points at the file, not the network (the
    worker died mid-attempt ``max_attempts`` times); the spool copy goes to quarantine. Terminal.
``superseded``
    A correction replaced this version before it ever left. Terminal; the correction's own
    delivery carries the data.
``cancelled``
    It will not be sent: the agreement expired or the partner's withdrawal took effect before
    it left, or ops cancelled it. Terminal.

A delivery in ``uploading`` cannot be superseded or cancelled: the attempt must first resolve
into ``sent`` or a failure, because only then do we know whether the partner can see it.

The retry policy is here too, as pure functions of values: exponential backoff with "equal
jitter" (half the delay fixed, half random) capped, so a hub that is down sees a bounded
trickle of attempts and a crowd of deliveries does not retry in lock step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from exchange.errors import InvariantError

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "HOLDING",
    "TERMINAL",
    "TRANSITIONS",
    "Cancelled",
    "DeliveryState",
    "Event",
    "GaveUp",
    "Parked",
    "ReceiptAccepted",
    "ReceiptRejected",
    "RemovedFromHub",
    "Resumed",
    "Superseded",
    "UploadCompleted",
    "UploadFailed",
    "UploadInterrupted",
    "UploadStarted",
    "can_step",
    "event_name",
    "mermaid_diagram",
    "next_attempt_at",
    "should_poison",
    "step",
]


class DeliveryState(enum.Enum):
    """Where one delivery is. Values are stored in the ledger: never rename one."""

    PENDING = "pending"
    UPLOADING = "uploading"
    SENT = "sent"
    RETRY_WAIT = "retry_wait"
    PARKED = "parked"
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    POISONED = "poisoned"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"


# --- events: facts that happened to a delivery ------------------------------------------------
# Each carries the data the ledger records with the transition; step() looks only at its type.


@dataclass(frozen=True, slots=True)
class UploadStarted:
    """Intent: an attempt begins, to this deterministic remote name (recorded before acting)."""

    remote_name: str


@dataclass(frozen=True, slots=True)
class UploadCompleted:
    """The remote rename to the final name succeeded."""

    ciphertext_sha256: str
    size: int
    duration: timedelta
    manifest_hash: str


@dataclass(frozen=True, slots=True)
class UploadFailed:
    """A transient failure (the transport said ``transient``); try again at ``retry_at``."""

    reason: str
    retry_at: datetime


@dataclass(frozen=True, slots=True)
class UploadInterrupted:
    """Found ``uploading`` at start with no final name on the hub: the worker died mid-attempt.
    Counts as a strike towards poisoning, unlike :class:`UploadFailed`."""

    reason: str
    retry_at: datetime


@dataclass(frozen=True, slots=True)
class Parked:
    """A permanent failure: host key mismatch, missing or invalid key. Needs ops."""

    reason: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """Ops fixed the cause of a park; the delivery waits for its schedule again."""

    note: str


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The poison rule fired (:func:`should_poison`); the spool copy goes to quarantine."""

    reason: str


@dataclass(frozen=True, slots=True)
class ReceiptAccepted:
    """A verified receipt with status accepted or replaced."""

    manifest_hash: str
    status: str


@dataclass(frozen=True, slots=True)
class ReceiptRejected:
    """A verified receipt with status rejected."""

    manifest_hash: str
    reason: str


@dataclass(frozen=True, slots=True)
class RemovedFromHub:
    """Retention removed the unacknowledged file from the partner's hub folder."""

    reason: str


@dataclass(frozen=True, slots=True)
class Superseded:
    """A correction replaced this version before it was sent."""

    by_version: int


@dataclass(frozen=True, slots=True)
class Cancelled:
    """It will not be sent: expiry, withdrawal, or an ops decision."""

    reason: str


Event = (
    UploadStarted
    | UploadCompleted
    | UploadFailed
    | UploadInterrupted
    | Parked
    | Resumed
    | GaveUp
    | ReceiptAccepted
    | ReceiptRejected
    | RemovedFromHub
    | Superseded
    | Cancelled
)

_S = DeliveryState

#: The whole lifecycle. docs/DESIGN.md shows it as a diagram generated by :func:`mermaid_diagram`,
#: and a test fails when the two drift apart.
TRANSITIONS: dict[tuple[DeliveryState, type[Event]], DeliveryState] = {
    (_S.PENDING, UploadStarted): _S.UPLOADING,
    (_S.PENDING, Parked): _S.PARKED,
    (_S.PENDING, GaveUp): _S.POISONED,
    (_S.PENDING, Superseded): _S.SUPERSEDED,
    (_S.PENDING, Cancelled): _S.CANCELLED,
    (_S.UPLOADING, UploadCompleted): _S.SENT,
    (_S.UPLOADING, UploadFailed): _S.RETRY_WAIT,
    (_S.UPLOADING, UploadInterrupted): _S.RETRY_WAIT,
    (_S.UPLOADING, Parked): _S.PARKED,
    (_S.UPLOADING, GaveUp): _S.POISONED,
    (_S.RETRY_WAIT, UploadStarted): _S.UPLOADING,
    (_S.RETRY_WAIT, Parked): _S.PARKED,
    (_S.RETRY_WAIT, GaveUp): _S.POISONED,
    (_S.RETRY_WAIT, Superseded): _S.SUPERSEDED,
    (_S.RETRY_WAIT, Cancelled): _S.CANCELLED,
    (_S.PARKED, Resumed): _S.PENDING,
    (_S.PARKED, Superseded): _S.SUPERSEDED,
    (_S.PARKED, Cancelled): _S.CANCELLED,
    (_S.SENT, ReceiptAccepted): _S.ACKNOWLEDGED,
    (_S.SENT, ReceiptRejected): _S.REJECTED,
    (_S.SENT, RemovedFromHub): _S.WITHDRAWN,
    (_S.WITHDRAWN, ReceiptAccepted): _S.ACKNOWLEDGED,
    (_S.WITHDRAWN, ReceiptRejected): _S.REJECTED,
}

#: States with no way out. A delivery here is finished; status never waits on it.
TERMINAL: frozenset[DeliveryState] = frozenset(
    state for state in DeliveryState if not any(src is state for src, _ in TRANSITIONS)
)

#: Where a partner may hold (or have held) the data: corrections go to these.
HOLDING: frozenset[DeliveryState] = frozenset({_S.SENT, _S.ACKNOWLEDGED, _S.WITHDRAWN})


def event_name(event: Event | type[Event]) -> str:
    """The stable name of an event type, as the ledger's event log records it."""
    cls = event if isinstance(event, type) else type(event)
    return cls.__name__


def can_step(state: DeliveryState, event: Event | type[Event]) -> bool:
    """Whether ``event`` is legal in ``state``; for callers handling outside input (a receipt
    for a delivery in the wrong state is an incident, not a bug)."""
    cls = event if isinstance(event, type) else type(event)
    return (state, cls) in TRANSITIONS


def step(state: DeliveryState, event: Event) -> DeliveryState:
    """The state after ``event``; raises InvariantError for a pair the table does not have."""
    try:
        return TRANSITIONS[(state, type(event))]
    except KeyError:
        raise InvariantError(
            f"delivery: illegal transition {event_name(event)} in state {state.value}",
        ) from None


# --- retry policy -----------------------------------------------------------------------------

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)


class RandomSource(Protocol):
    """What the policy needs from randomness; ``random.Random`` fits, tests pass a fixed one."""

    def random(self) -> float: ...


def backoff_delay(
    attempts: int,
    rng: RandomSource,
    *,
    base: timedelta = BACKOFF_BASE,
    cap: timedelta = BACKOFF_CAP,
) -> timedelta:
    """The wait after ``attempts`` failed attempts: the ceiling doubles from ``base`` up to
    ``cap``, and the wait is drawn from ``[ceiling / 2, ceiling]``."""
    if attempts < 1:
        raise InvariantError(f"backoff: attempts must be at least 1, got {attempts}")
    if base <= timedelta(0) or cap < base:
        raise InvariantError("backoff: need 0 < base <= cap")
    # The exponent is clamped so that a delivery retried for months cannot overflow timedelta.
    ceiling = min(cap, base * (1 << min(attempts - 1, 40)))
    fraction = rng.random()
    if not 0.0 <= fraction < 1.0:
        raise InvariantError(f"backoff: random source returned {fraction!r}, outside [0, 1)")
    return ceiling / 2 + (ceiling / 2) * fraction


def next_attempt_at(
    attempts: int,
    now: datetime,
    rng: RandomSource,
    *,
    base: timedelta = BACKOFF_BASE,
    cap: timedelta = BACKOFF_CAP,
) -> datetime:
    """When to try again after ``attempts`` failed attempts, measured from ``now``."""
    return now + backoff_delay(attempts, rng, base=base, cap=cap)


def should_poison(strikes: int, max_attempts: int) -> bool:
    """Whether to give up on a delivery: ``strikes`` counts attempts that ended without an
    answer from the transport (the worker died mid-attempt), which points at the file. Plain
    transient failures (hub down) are not strikes: a long outage must not quarantine data."""
    if max_attempts < 1:
        raise InvariantError(f"poison: max_attempts must be at least 1, got {max_attempts}")
    return strikes >= max_attempts


# --- the diagram in docs/DESIGN.md ------------------------------------------------------------


def mermaid_diagram() -> str:
    """The table as a Mermaid ``stateDiagram-v2``, one line per transition in table order;
    docs/DESIGN.md embeds exactly this text."""
    lines = ["stateDiagram-v2", f"    [*] --> {_S.PENDING.value}"]
    for (source, event), target in TRANSITIONS.items():
        lines.append(f"    {source.value} --> {target.value}: {event_name(event)}")
    lines.extend(f"    {state.value} --> [*]" for state in DeliveryState if state in TERMINAL)
    return "\n".join(lines) + "\n"
