"""Start-up (and lost-reply) reconciliation of a partner's hub folder, and giving up on a
struck-out delivery.

Rules (docs/DESIGN.md, write-ordering invariants 4, 11, 12):

1. A delivery found ``uploading`` is complete only if a final manifest is on the hub whose
   SHA-256 equals the sealed manifest of one of its recorded attempts (``Ledger.attempts_of``);
   it is then ``sent`` with that attempt's values, nothing uploaded. Sizes are never
   evidence: every attempt's ciphertext has the same size.
2. Otherwise no attempt completed: the final manifest is removed first, then the payload and
   our temporaries (a partner never sees a manifest beside a payload it does not describe),
   and the delivery waits: ``UploadInterrupted`` (a strike) when found at start,
   ``UploadFailed`` when this process lost a reply (``unknown``).
3. A struck-out delivery is ``poisoned`` with an incident; the daemon quarantines its spool
   copy.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import structlog

from exchange.config import Config
from exchange.core import delivery as lifecycle
from exchange.core.delivery import should_poison
from exchange.core.naming import DeliveryNames, Folder, read_name
from exchange.ledger import Attempt, Delivery
from exchange.model import ReasonCode
from exchange.service.context import Context
from exchange.transport import Transport
from exchange.transport.port import RemoteNotFoundError, part_name

_log = structlog.get_logger()


def remote_folder(config: Config) -> Folder:
    """Which hub folder our deliveries go into (``[hub] role``, docs/hub.md): a partner's
    ``inbox/`` on our own hub, our own ``outbox/`` on another organisation's hub."""
    return Folder.OUTBOX if config.hub.is_partner else Folder.INBOX


def remote_dir(config: Config, hub_folder: str) -> str:
    """Where deliveries to the partner with ``hub_folder`` go. As our own hub's daemon login
    (chroot: every partner's folder) ``<hub_folder>/inbox``; as a partner login on another
    organisation's hub (chroot: our own folder) ``outbox``, which only that organisation reads."""
    if config.hub.is_partner:
        return Folder.OUTBOX.value
    return f"{hub_folder}/{Folder.INBOX.value}"


@dataclass(frozen=True, slots=True)
class Reconciled:
    completed: int  # found complete on the hub: now sent
    interrupted: int  # redone: UploadInterrupted recorded
    temporaries_removed: int


def reconcile_partner(
    ctx: Context,
    transport: Transport,
    partner_id: str,
    unknown: frozenset[str] = frozenset(),
) -> Reconciled:
    """Rule 6 for every delivery to ``partner_id`` left ``uploading``, and removal of our
    leftover temporary files in its inbox. ``unknown`` names deliveries this process left
    ``uploading`` after a transport error past a rename request: one found incomplete is a
    transient failure (``UploadFailed``), not a strike. Raises TransportError if the hub
    cannot be asked."""
    partner = ctx.config.partners[partner_id]
    folder = remote_dir(ctx.config, partner.hub_folder)
    kind = remote_folder(ctx.config)
    listing = transport.list(folder, validate=lambda n: read_name(kind, n) is not None)
    removed = 0
    for temp in listing.temporaries:
        if transport.remove(f"{folder}/{temp}"):
            removed += 1
    completed = interrupted = 0
    for delivery in ctx.ledger.deliveries(lifecycle.DeliveryState.UPLOADING, recipient=partner_id):
        names = DeliveryNames.for_delivery(delivery.id)
        found = settle_hub(ctx, transport, delivery, folder)
        now = ctx.now()
        if found is not None:
            ctx.ledger.complete_from_hub(delivery.id, found, now)
            completed += 1
            _log.info(
                "delivery.reconciled",
                delivery=delivery.id,
                recipient=partner_id,
                agreement=delivery.agreement,
                state="sent",
                remote_name=names.payload,
            )
            continue
        if delivery.id in unknown:
            ctx.ledger.apply(
                delivery.id,
                lifecycle.UploadFailed(
                    reason="the reply to a rename was lost and the upload was not complete",
                    retry_at=now,
                ),
                now,
            )
            continue
        struck = ctx.ledger.apply(
            delivery.id,
            lifecycle.UploadInterrupted(
                reason="the attempt was interrupted (found uploading at start)", retry_at=now
            ),
            now,
        )
        poison_if_struck_out(ctx, struck)
        interrupted += 1
        _log.warning(
            "delivery.interrupted",
            delivery=delivery.id,
            recipient=partner_id,
            agreement=delivery.agreement,
            attempts=delivery.attempts,
        )
    return Reconciled(completed, interrupted, removed)


#: A sealed manifest is small (FORMAT.md §4: the body is capped well below this).
MANIFEST_MAX = 64 * 1024


def settle_hub(
    ctx: Context, transport: Transport, delivery: Delivery, folder: str
) -> Attempt | None:
    """Rule 7: the attempt whose sealed manifest is final on the hub for ``delivery``, compared
    by the SHA-256 of the whole file with every attempt the ledger recorded; or None, after
    removing whatever earlier attempts left, the final manifest first and the payload after,
    so a partner never sees a manifest beside a payload it does not describe."""
    names = DeliveryNames.for_delivery(delivery.id)
    manifest_path = f"{folder}/{names.manifest}"
    payload_path = f"{folder}/{names.payload}"
    buffer = io.BytesIO()
    try:
        transport.get(manifest_path, buffer, max_size=MANIFEST_MAX)
    except RemoteNotFoundError:
        pass
    else:
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        for attempt in ctx.ledger.attempts_of(delivery.id):
            if attempt.sealed_sha256 == digest:
                return attempt
        _log.warning(
            "delivery.stale_manifest",
            delivery=delivery.id,
            recipient=delivery.recipient,
            sha256=digest,
        )
    transport.remove(manifest_path)
    transport.remove(payload_path)
    transport.remove(part_name(manifest_path))
    transport.remove(part_name(payload_path))
    return None


def poison_if_struck_out(ctx: Context, delivery: Delivery) -> bool:
    """Give up on a delivery with ``max_attempts`` strikes (the daemon then quarantines the
    spool copy); True if it did."""
    if not should_poison(delivery.strikes, ctx.settings.max_attempts):
        return False
    if not lifecycle.can_step(delivery.state, lifecycle.GaveUp):
        return False
    reason = f"failed {delivery.strikes} attempts without an answer; treated as a poison file"
    ctx.ledger.apply(delivery.id, lifecycle.GaveUp(reason=reason), ctx.now())
    ctx.ledger.open_incident(
        reason=ReasonCode.POISONED,
        now=ctx.now(),
        agreement=delivery.agreement,
        partner=delivery.recipient,
        context={"delivery": delivery.id, "dataset": delivery.dataset.value},
        dedupe_key=f"poisoned:{delivery.id}",
    )
    _log.error(
        "delivery.poisoned",
        delivery=delivery.id,
        recipient=delivery.recipient,
        agreement=delivery.agreement,
        attempts=delivery.strikes,
    )
    return True
