"""What retention would purge now: :mod:`exchange.core.retention` fed from the ledger and the
configuration. Read-only: nothing is deleted here (the daemon's purge step is not built yet;
docs/operations.md, "Retention").

Rules:

1. Each agreement's rule is its ``retention_days``; a delivery left unpulled on the hub is due
   for withdrawal after the same period (there is no separate hub expiry setting yet).
2. Quarantined files are kept :data:`QUARANTINE_RETENTION` (a site-wide period for
   investigations, whatever the agreement).
3. Received datasets count from when they were filed; rejected ones were never filed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from exchange.config import Config
from exchange.core.delivery import DeliveryState
from exchange.core.retention import (
    DeliveryFact,
    FiledDataset,
    HubDelivery,
    PurgePlan,
    QuarantinedFile,
    RetentionRule,
    SpoolCopy,
    due,
)
from exchange.ledger import Delivery, Ledger

__all__ = ["QUARANTINE_RETENTION", "plan"]

QUARANTINE_RETENTION = timedelta(days=90)


def _rules(cfg: Config) -> dict[str, RetentionRule]:
    return {
        a.id: RetentionRule(
            retention=timedelta(days=a.retention_days), hub_expiry=timedelta(days=a.retention_days)
        )
        for a in cfg.agreements.values()
    }


def plan(cfg: Config, ledger: Ledger, now: datetime) -> PurgePlan:
    """Everything due for purging at ``now``."""
    by_version: dict[int, list[Delivery]] = {}
    for delivery in ledger.deliveries():
        by_version.setdefault(delivery.version, []).append(delivery)
    spool = []
    for version_id, deliveries in by_version.items():
        version = ledger.get_version(version_id)
        spool.append(
            SpoolCopy(
                version=version_id,
                agreement=deliveries[0].agreement,
                path=version.spool_path,
                deliveries=tuple(
                    DeliveryFact(d.id, d.state, d.acknowledged_at) for d in deliveries
                ),
            )
        )
    hub = [
        HubDelivery(d.id, d.agreement, d.recipient, d.state, d.sent_at)
        for ds in by_version.values()
        for d in ds
        if d.state is DeliveryState.SENT
    ]
    quarantine = [QuarantinedFile(q.id, q.agreement, q.path, q.at) for q in ledger.quarantined()]
    filed = [
        FiledDataset(r.manifest_hash, r.agreement, r.path, r.at)
        for r in ledger.received()
        if r.path is not None
    ]
    return due(
        now,
        rules=_rules(cfg),
        quarantine_retention=QUARANTINE_RETENTION,
        spool=spool,
        quarantine=quarantine,
        hub=hub,
        filed=filed,
    )
