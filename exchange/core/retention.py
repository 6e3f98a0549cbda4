"""Retention: what is due for purging, decided from ledger facts, agreements and ``now``.

Protocol §7 and the DPA: nothing is kept longer than the agreement allows. This module only
decides; the shell deletes, records each purge in the ledger and logs it. (The daemon does not
call it yet; see docs/operations.md, "Retention".)

Rules:

1. Pure: values in, a :class:`PurgePlan` out. No paths are touched, the clock is ``now``.
2. A spool copy is due once *every* delivery of its version is settled (acknowledged, or
   superseded or cancelled before it was ever sent), at least one was acknowledged, and the
   agreement's retention has passed since the last acknowledgement. A delivery still pending,
   on the hub, parked, rejected, poisoned or withdrawn keeps the copy: it may be needed for a
   retry, an investigation or a correction.
3. A quarantined file is due once the quarantine retention has passed since it was
   quarantined (a site-wide setting: ops need time to investigate, whatever the agreement).
4. A delivery still unacknowledged on the hub (state ``sent``) past the agreement's hub
   expiry is due for withdrawal from the hub; the shell also warns and opens an incident,
   since the partner never collected personal data meant for it.
5. On the partner side a filed dataset is due once the agreement's retention has passed since
   it was filed.
6. No rule for an agreement (no longer configured) means nothing of it is due: deleting
   what we cannot judge is worse than keeping it a little longer; ops see it in the plan's
   ``unjudged``.
7. "Due" is ``due_at <= now``, so moving the clock forward only ever adds items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from exchange.core.delivery import DeliveryState

__all__ = [
    "DeliveryFact",
    "Due",
    "FiledDataset",
    "HubDelivery",
    "PurgePlan",
    "QuarantinedFile",
    "RetentionRule",
    "SpoolCopy",
    "due",
]

#: A delivery in one of these states never needs the spool copy again.
SETTLED = frozenset({DeliveryState.ACKNOWLEDGED, DeliveryState.SUPERSEDED, DeliveryState.CANCELLED})


@dataclass(frozen=True, slots=True)
class RetentionRule:
    retention: timedelta  # agreement retention_days
    hub_expiry: timedelta  # how long a delivery may wait unpulled on the hub


@dataclass(frozen=True, slots=True)
class DeliveryFact:
    id: str
    state: DeliveryState
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class SpoolCopy:
    version: int
    agreement: str
    path: str
    deliveries: tuple[DeliveryFact, ...]


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    id: int
    agreement: str
    path: str
    at: datetime


@dataclass(frozen=True, slots=True)
class HubDelivery:
    delivery: str
    agreement: str
    recipient: str
    state: DeliveryState
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class FiledDataset:
    manifest_hash: str
    agreement: str
    path: str
    filed_at: datetime


@dataclass(frozen=True, slots=True)
class Due:
    """One thing to purge: ``key`` says which (a version id, quarantine id, delivery id or
    manifest hash), ``reason`` why, ``due_at`` since when."""

    kind: str  # spool | quarantine | hub | filed
    key: str
    agreement: str
    path: str | None
    due_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class PurgePlan:
    due: tuple[Due, ...]
    unjudged: tuple[str, ...]  # agreements with records but no rule

    def of_kind(self, kind: str) -> tuple[Due, ...]:
        return tuple(d for d in self.due if d.kind == kind)


def _spool_due_at(copy: SpoolCopy, rule: RetentionRule) -> datetime | None:
    if not copy.deliveries or any(d.state not in SETTLED for d in copy.deliveries):
        return None
    acknowledged = [d.acknowledged_at for d in copy.deliveries if d.acknowledged_at is not None]
    if not acknowledged:
        return None  # never received by anyone: keep for ops to decide
    return max(acknowledged) + rule.retention


def due(
    now: datetime,
    *,
    rules: Mapping[str, RetentionRule],
    quarantine_retention: timedelta,
    spool: Iterable[SpoolCopy] = (),
    quarantine: Iterable[QuarantinedFile] = (),
    hub: Iterable[HubDelivery] = (),
    filed: Iterable[FiledDataset] = (),
) -> PurgePlan:
    """Everything due for purging at ``now`` (module rules 2-7), oldest first."""
    found: list[Due] = []
    unjudged: set[str] = set()
    for copy in spool:
        rule = rules.get(copy.agreement)
        if rule is None:
            unjudged.add(copy.agreement)
            continue
        at = _spool_due_at(copy, rule)
        if at is not None and at <= now:
            found.append(
                Due("spool", str(copy.version), copy.agreement, copy.path, at,
                    "every recipient acknowledged and the retention period passed")
            )  # fmt: skip
    for item in quarantine:
        at = item.at + quarantine_retention
        if at <= now:
            found.append(
                Due("quarantine", str(item.id), item.agreement, item.path, at,
                    "quarantine retention passed")
            )  # fmt: skip
    for delivery in hub:
        rule = rules.get(delivery.agreement)
        if rule is None:
            unjudged.add(delivery.agreement)
            continue
        if delivery.state is not DeliveryState.SENT or delivery.sent_at is None:
            continue
        at = delivery.sent_at + rule.hub_expiry
        if at <= now:
            found.append(
                Due("hub", delivery.delivery, delivery.agreement, None, at,
                    f"not collected by {delivery.recipient} before the hub expiry")
            )  # fmt: skip
    for dataset in filed:
        rule = rules.get(dataset.agreement)
        if rule is None:
            unjudged.add(dataset.agreement)
            continue
        at = dataset.filed_at + rule.retention
        if at <= now:
            found.append(
                Due("filed", dataset.manifest_hash, dataset.agreement, dataset.path, at,
                    "the agreement's retention period passed since filing")
            )  # fmt: skip
    found.sort(key=lambda d: (d.due_at, d.kind, d.key))
    return PurgePlan(tuple(found), tuple(sorted(unjudged)))
