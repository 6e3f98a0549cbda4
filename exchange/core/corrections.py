"""Corrections (protocol §8): who must receive one, who holds what, and when one is done.

Theory of operation
-------------------

A *correction* is a version of a dataset, of kind ``correction``, that supersedes the
dataset's latest version. It must reach every partner that holds, or may hold, any earlier
version, and only those: a partner that joined the agreement after the dataset went out
never had it and gets nothing. The facts come from the sender's ledger, as values
(:class:`DeliveryFact`, one per delivery of one version to one recipient).

Rule 1 (recipients). A partner holds the dataset when one of its deliveries of an earlier
version is in :data:`~exchange.core.delivery.HOLDING` (``sent``, ``acknowledged``, or
``withdrawn`` from the hub: it may have pulled it first). A partner that has since withdrawn
from the agreement still gets the correction, because it must keep complying for the data it
holds (protocol §11). A partner whose earlier delivery has not left yet (``pending``,
``retry_wait``, ``parked``) gets the correction *instead* (the ledger supersedes the old
delivery, which never leaves), unless it may no longer receive new data; one ``uploading``
now may be about to hold it, so it gets the correction too.

Rule 2 (completion). A correction is complete when every one of its deliveries has a
verified receipt with status ``replaced`` (the partner replaced the version it held), or
``accepted`` (it never held an earlier version on its side and filed this one as new).
A correction with no recipients is complete at once. ``rejected``, ``cancelled`` and
``poisoned`` deliveries are never done: they need ops.

Rule 3 (overdue). The agreement's acknowledgement window runs from the moment the
correction was made, not from when it reached the hub: a partner that is down does not stop
the clock. An incomplete correction older than the window is overdue, and so is each partner
of it that has not acknowledged.

Rule 4 (holdings now). What a partner holds now is the highest version among its holding
deliveries; ``confirmed`` says whether a verified receipt backs it (else it may hold it).

Pure: values in, values out; no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from exchange.core.delivery import HOLDING, DeliveryState
from exchange.errors import InvariantError

__all__ = [
    "DONE_STATUSES",
    "IN_FLIGHT",
    "CorrectionFacts",
    "CorrectionProgress",
    "DeliveryFact",
    "Holding",
    "PartnerProgress",
    "correction_recipients",
    "holdings",
    "open_only",
    "progress",
]

_S = DeliveryState

#: Earlier deliveries that have not reached the hub yet (rule 1).
IN_FLIGHT: frozenset[DeliveryState] = frozenset(
    {_S.PENDING, _S.RETRY_WAIT, _S.PARKED, _S.UPLOADING}
)
#: Receipt statuses that complete a partner's part of a correction (rule 2).
DONE_STATUSES: frozenset[str] = frozenset({"replaced", "accepted"})


@dataclass(frozen=True, slots=True)
class DeliveryFact:
    """One delivery of one version of a dataset, as the ledger records it."""

    delivery: str
    recipient: str
    version: int  # the version number as people count it
    state: DeliveryState
    receipt_status: str | None  # accepted | replaced | rejected, from the verified receipt
    sent_at: datetime | None
    acknowledged_at: datetime | None


def correction_recipients(
    earlier: Iterable[DeliveryFact], may_receive_new: frozenset[str]
) -> tuple[str, ...]:
    """Who a correction goes to (rule 1), sorted. ``earlier`` are the deliveries of the
    versions it corrects; ``may_receive_new`` are the agreement's recipients that may still
    be sent new data (not past a withdrawal)."""
    holding = HOLDING | {_S.UPLOADING}
    chosen = {
        fact.recipient
        for fact in earlier
        if fact.state in holding or (fact.state in IN_FLIGHT and fact.recipient in may_receive_new)
    }
    return tuple(sorted(chosen))


@dataclass(frozen=True, slots=True)
class Holding:
    """What one partner holds of a dataset now (rule 4)."""

    recipient: str
    version: int
    state: DeliveryState
    confirmed: bool  # a verified receipt backs it
    receipt_status: str | None
    since: datetime | None  # when that version reached the hub for it


def holdings(facts: Iterable[DeliveryFact]) -> tuple[Holding, ...]:
    """The version each partner holds now, one row per partner that holds any, sorted by
    partner (rule 4)."""
    best: dict[str, DeliveryFact] = {}
    for fact in facts:
        if fact.state not in HOLDING:
            continue
        current = best.get(fact.recipient)
        if current is None or fact.version > current.version:
            best[fact.recipient] = fact
    return tuple(
        Holding(
            recipient=fact.recipient,
            version=fact.version,
            state=fact.state,
            confirmed=fact.state is _S.ACKNOWLEDGED,
            receipt_status=fact.receipt_status,
            since=fact.sent_at,
        )
        for fact in sorted(best.values(), key=lambda f: f.recipient)
    )


@dataclass(frozen=True, slots=True)
class CorrectionFacts:
    """A correction version and its deliveries, as the ledger records them."""

    dataset: str
    agreement: str
    version: int
    supersedes: int  # the version number it replaces
    complaint: str | None
    reason: str | None
    created_at: datetime
    deliveries: tuple[DeliveryFact, ...]


@dataclass(frozen=True, slots=True)
class PartnerProgress:
    """One partner's part of a correction."""

    recipient: str
    delivery: str
    state: DeliveryState
    receipt_status: str | None
    done: bool
    had_for: timedelta | None  # since the replacement reached the hub for it; None if not yet
    overdue: bool


@dataclass(frozen=True, slots=True)
class CorrectionProgress:
    """Where a correction stands (rules 2 and 3)."""

    facts: CorrectionFacts
    partners: tuple[PartnerProgress, ...]
    complete: bool
    overdue: bool
    age: timedelta  # since the correction was made

    @property
    def done(self) -> tuple[str, ...]:
        return tuple(p.recipient for p in self.partners if p.done)

    @property
    def outstanding(self) -> tuple[str, ...]:
        return tuple(p.recipient for p in self.partners if not p.done)


def _is_done(fact: DeliveryFact) -> bool:
    return fact.state is _S.ACKNOWLEDGED and fact.receipt_status in DONE_STATUSES


def progress(
    facts: CorrectionFacts, acknowledgement_window: timedelta, now: datetime
) -> CorrectionProgress:
    """Where ``facts`` stands at ``now`` (rules 2 and 3)."""
    if acknowledgement_window <= timedelta(0):
        raise InvariantError("corrections: the acknowledgement window must be positive")
    age = now - facts.created_at
    late = age > acknowledgement_window
    partners = []
    for fact in sorted(facts.deliveries, key=lambda f: (f.recipient, f.delivery)):
        done = _is_done(fact)
        partners.append(
            PartnerProgress(
                recipient=fact.recipient,
                delivery=fact.delivery,
                state=fact.state,
                receipt_status=fact.receipt_status,
                done=done,
                had_for=None if fact.sent_at is None else max(now - fact.sent_at, timedelta(0)),
                overdue=late and not done,
            )
        )
    complete = all(p.done for p in partners)
    return CorrectionProgress(
        facts=facts,
        partners=tuple(partners),
        complete=complete,
        overdue=late and not complete,
        age=age,
    )


def open_only(items: Sequence[CorrectionProgress]) -> list[CorrectionProgress]:
    """The corrections still open (not complete), oldest first."""
    return sorted(
        (p for p in items if not p.complete), key=lambda p: (p.facts.created_at, p.facts.dataset)
    )
