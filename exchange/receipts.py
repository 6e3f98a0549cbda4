"""The sending side of receipts: collect, verify, acknowledge, clean up, and chase the missing.

Rules (FORMAT.md §5.2 is the order of checks):

1. Everything in a receipts folder is hostile. Names pass the allow-list of
   :mod:`exchange.core.naming`; the listing is capped at :data:`MAX_ENTRIES` and one run
   opens at most :data:`MAX_PER_RUN` receipts per folder (TESTPLAN 52); a file over 64 KiB is
   never downloaded, a plaintext over 4096 bytes never parsed; links and special files are
   refused by the transport (TESTPLAN 49: ``lstat`` and the opened handle are both checked).
2. A receipt counts only if it is signed by the pinned key of the partner whose folder it is
   in, is addressed to us, names a delivery we made to that partner under that agreement,
   with that manifest hash and (unless rejected) that plaintext hash, and lies under the hub
   name of that delivery. Anything else is an incident and changes nothing: the delivery
   stays unacknowledged and the file stays on the hub for ops to look at.
3. A verified receipt is recorded once per manifest hash (a second valid signature encoding
   changes nothing, TESTPLAN 46). Then the delivery's files are removed from the partner's
   folder (manifest first, so a reader never sees a manifest without its payload), and the
   receipt last: a crash in between leaves the receipt, and the next run repeats the removal.
   A partner reading its own ``inbox/`` cannot delete there; the hub's owner removes its
   receipt once the delivery it answers is gone from the partner's ``outbox/``.
4. A rejection of a manifest that did not verify (FORMAT.md §4.6, ``exchange-receipt/v2``)
   counts only if signed by the pinned key of the partner whose folder it is in (the folder,
   not the document, says who that is), addressed to us, lying under the hub name it names,
   and that hub name is the one of a delivery we made to that partner (and a claimed delivery,
   if given, is that delivery). Then the delivery is recorded ``rejected`` with an incident
   naming the reason, the manifest file hash the partner read, whether that is a manifest
   file we sealed (``manifest_file``: ``ours`` / ``not-ours``, from the ledger's attempts),
   and the delivery it claimed. A rejection naming a hub name we never wrote there is an incident only: something
   else put a manifest file in that folder.
5. Deliveries not acknowledged within their agreement's acknowledgement window are returned
   by :func:`overdue_deliveries`. :func:`raise_overdue` (the daemon's periodic job) opens one
   ``receipt-overdue`` incident and logs one ``receipt.overdue`` warning per such delivery,
   once in the delivery's life (a closed incident is not reopened), and closes the incident
   itself when the receipt arrives after all.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, cast

from exchange import agefmt, signing
from exchange.config import Config
from exchange.core import delivery as lifecycle
from exchange.core.delivery import DeliveryState
from exchange.core.naming import DeliveryNames, FileKind, Folder, hub_stem, read_name
from exchange.errors import FormatError, NotFoundError, PermanentTransportError, TransportError
from exchange.ledger import Delivery, Ledger
from exchange.log import get_logger
from exchange.manifest import (
    RECEIPT_MAX_SIZE,
    ManifestRejected,
    Receipt,
    SentDelivery,
    Status,
    UnverifiedRejection,
    is_unverified_rejection,
    open_receipt,
    open_unverified_rejection,
)
from exchange.model import ReasonCode
from exchange.signing import Reason, SignatureRejected
from exchange.transport import (
    CappedSink,
    RemoteEntry,
    RemoteNotFoundError,
    RemoteRefusedEntry,
    RemoteTooLargeError,
    Transport,
)

__all__ = [
    "DOCUMENT_FILE_MAX",
    "MAX_ENTRIES",
    "MAX_PER_RUN",
    "Overdue",
    "ReceiptOutcome",
    "ReceiptReport",
    "ReceiptResult",
    "ReceiptRoute",
    "collect_receipts",
    "hub_routes",
    "overdue_deliveries",
    "partner_routes",
    "raise_overdue",
]

#: FORMAT.md §6.4: a receipt file larger than this is not downloaded.
DOCUMENT_FILE_MAX = 64 * 1024
#: Entries one listing of a receipts folder may return.
MAX_ENTRIES = 5000
#: Receipts opened per folder per run; the rest wait for the next run.
MAX_PER_RUN = 500
#: Used when a delivery's agreement is no longer configured.
DEFAULT_ACK_WINDOW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ReceiptRoute:
    """Where one partner's receipts for our deliveries lie, and where those deliveries lie."""

    #: The partner whose receipts these are; None: any configured partner (a partner
    #: reading its own ``inbox/``, where only the hub's owner can write).
    partner: str | None
    receipts: str
    receipts_folder: Folder
    deliveries: str
    #: Whether we may delete a processed receipt. Not in a partner's own ``inbox/``, which it
    #: can only read: the hub's owner removes its receipts there once we removed the delivery.
    remove_receipt: bool = True


def hub_routes(config: Config) -> list[ReceiptRoute]:
    """Our hub: each partner's ``receipts/``, answering deliveries in its ``inbox/``."""
    return [
        ReceiptRoute(p.id, f"{p.hub_folder}/receipts", Folder.RECEIPTS, f"{p.hub_folder}/inbox")
        for p in config.partners.values()
    ]


def partner_routes() -> list[ReceiptRoute]:
    """A partner's own hub folder: receipts in ``inbox/`` for what it sent from ``outbox/``."""
    return [ReceiptRoute(None, "inbox", Folder.INBOX, "outbox", remove_receipt=False)]


class ReceiptResult(enum.Enum):
    ACKNOWLEDGED = "acknowledged"  # verified accepted/replaced receipt; delivery acknowledged
    REJECTED = "rejected"  # verified receipt saying the partner refused it (an incident)
    DUPLICATE = "duplicate"  # this manifest hash was recorded before; cleaned up again
    FORGED = "forged"  # failed verification: incident, nothing changed
    DEFERRED = "deferred"  # the delivery cannot take a receipt yet; left for the next run


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    name: str
    result: ReceiptResult
    partner: str | None = None
    delivery: str | None = None
    reason: str | None = None
    incident: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "result": self.result.value,
            "partner": self.partner,
            "delivery": self.delivery,
            "reason": self.reason,
            "incident": self.incident,
        }


@dataclass(frozen=True, slots=True)
class ReceiptReport:
    outcomes: tuple[ReceiptOutcome, ...] = ()
    unexpected: tuple[str, ...] = ()
    truncated: bool = False
    incidents: tuple[int, ...] = ()

    def count(self, result: ReceiptResult) -> int:
        return sum(1 for o in self.outcomes if o.result is result)

    def to_json(self) -> dict[str, object]:
        return {
            "outcomes": [o.to_json() for o in self.outcomes],
            "unexpected": list(self.unexpected),
            "truncated": self.truncated,
            "incidents": list(self.incidents),
            "counts": {r.value: self.count(r) for r in ReceiptResult},
        }


@dataclass(frozen=True, slots=True)
class Overdue:
    delivery: str
    agreement: str
    recipient: str
    sent_at: datetime
    due_by: datetime


_FORGERY_REASONS: Mapping[Reason, ReasonCode] = {
    Reason.BAD_SIGNATURE: ReasonCode.SIGNATURE_INVALID,
    Reason.MALFORMED_SIGNATURE: ReasonCode.SIGNATURE_INVALID,
    Reason.KEY_MISMATCH: ReasonCode.SIGNATURE_INVALID,
    Reason.UNKNOWN_SIGNER: ReasonCode.SIGNATURE_INVALID,
    Reason.DECRYPTION_FAILED: ReasonCode.DECRYPT_FAILED,
}


class _Forged(Exception):  # a control-flow value; never leaves this module
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Collector:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        transport: Transport,
        identities: Sequence[agefmt.Identity],
        now: datetime,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.transport = transport
        self.identities = identities
        self.now = now
        self.log = get_logger()
        self._stems: dict[str, str] | None = None  # hub name → delivery id, built on demand

    def sent(self, delivery_id: str) -> SentDelivery | None:
        try:
            delivery = self.ledger.get_delivery(delivery_id)
        except NotFoundError:
            return None
        if delivery.manifest_hash is None:
            return None
        version = self.ledger.get_version(delivery.version)
        return SentDelivery(
            delivery.recipient, delivery.agreement, delivery.manifest_hash, version.sha256.hex
        )

    def made_under(self, stem: str) -> tuple[Delivery, SentDelivery] | None:
        """The delivery whose hub name is ``stem``, if we made one (rule 4). The ledger keys
        deliveries by id, so the hub names are computed once per run, not once per file (a
        folder full of rejections of unknown names costs one pass over the ledger)."""
        if self._stems is None:
            self._stems = {hub_stem(d.id): d.id for d in self.ledger.deliveries()}
        delivery_id = self._stems.get(stem)
        if delivery_id is None:
            return None
        sent = self.sent(delivery_id)
        return None if sent is None else (self.ledger.get_delivery(delivery_id), sent)

    def folder_owner(self, route: ReceiptRoute) -> tuple[str, signing.PublicKey]:
        """The one partner entitled to write this receipts folder (rule 4)."""
        keys = self.keys(route)
        if len(keys) != 1:
            raise _Forged(
                Reason.UNKNOWN_SIGNER, "the folder of this rejection belongs to no single partner"
            )
        ((partner, key),) = keys.items()
        return partner, key

    def keys(self, route: ReceiptRoute) -> dict[str, signing.PublicKey]:
        return {
            p.id: signing.parse_public_key(p.keys.signing_key)
            for p in self.config.partners.values()
            if route.partner is None or p.id == route.partner
        }

    def incident(self, reason: ReasonCode, key: str, partner: str | None, **context: str) -> int:
        return self.ledger.open_incident(
            reason=reason, now=self.now, partner=partner, context=context, dedupe_key=key
        ).id

    def collect(self, route: ReceiptRoute) -> ReceiptReport:
        listing = self.transport.list(
            route.receipts,
            validate=lambda name: read_name(route.receipts_folder, name) is not None,
            max_entries=MAX_ENTRIES,
        )
        incidents: list[int] = []
        unexpected = tuple(entry.name for entry in listing.refused)
        for name in unexpected:
            self.log.error("receipt.unexpected_file", path=f"{route.receipts}/{name}")
            incidents.append(
                self.incident(
                    ReasonCode.UNEXPECTED_FILE,
                    f"unexpected:{route.receipts}:{name}",
                    route.partner,
                    folder=route.receipts,
                    name=name,
                )
            )
        if listing.truncated:
            self.log.error("receipt.folder_flooded", path=route.receipts, count=MAX_ENTRIES)
            incidents.append(
                self.incident(
                    ReasonCode.UNEXPECTED_FILE,
                    f"flooded:{route.receipts}",
                    route.partner,
                    folder=route.receipts,
                    detail=f"more than {MAX_ENTRIES} entries",
                )
            )
        receipts = []
        for entry in listing.entries:
            hub_file = read_name(route.receipts_folder, entry.name)
            if (
                hub_file is not None
                and hub_file.kind is FileKind.RECEIPT
                and not hub_file.temporary
            ):
                receipts.append((hub_file.stem, entry))
        outcomes = [self.one(route, stem, entry) for stem, entry in receipts[:MAX_PER_RUN]]
        incidents += [o.incident for o in outcomes if o.incident is not None]
        return ReceiptReport(tuple(outcomes), unexpected, listing.truncated, tuple(incidents))

    def one(self, route: ReceiptRoute, stem: str, entry: RemoteEntry) -> ReceiptOutcome:
        remote = f"{route.receipts}/{entry.name}"
        try:
            signed = self.fetch(remote, entry)
            if is_unverified_rejection(signed):
                return self.unverified(route, stem, entry, remote, signed)
            opened = open_receipt(
                signed, recipients=self.keys(route), me=self.config.organisation.id, sent=self.sent
            )
            if hub_stem(opened.value.delivery) != stem:
                raise _Forged(Reason.RECEIPT_MISMATCH, "receipt lies under another delivery's name")
        except RemoteNotFoundError:
            return ReceiptOutcome(entry.name, ReceiptResult.DEFERRED, route.partner)
        except PermanentTransportError as error:
            # docs/hub.md: a partner's upload may be unreadable (0600) until the hub's
            # normaliser runs; try again next run, never stop the collection on it.
            self.log.warning("receipt.unreadable", remote_name=remote, error=error.message)
            return ReceiptOutcome(entry.name, ReceiptResult.DEFERRED, route.partner)
        except (ManifestRejected, SignatureRejected, _Forged) as error:
            return self.forged(route, entry, remote, error.reason, str(error))
        receipt = opened.value
        delivery = self.ledger.get_delivery(receipt.delivery)
        event: lifecycle.ReceiptAccepted | lifecycle.ReceiptRejected
        if receipt.status is Status.REJECTED:
            reason_text = receipt.reason.value if receipt.reason is not None else "unknown"
            event = lifecycle.ReceiptRejected(receipt.manifest_sha256, reason_text)
        else:
            event = lifecycle.ReceiptAccepted(receipt.manifest_sha256, receipt.status.value)
        return self.record(route, stem, entry, remote, receipt, delivery, event)

    def forged(
        self, route: ReceiptRoute, entry: RemoteEntry, remote: str, reason: Reason, detail: str
    ) -> ReceiptOutcome:
        incident = self.incident(
            _FORGERY_REASONS.get(reason, ReasonCode.UNEXPECTED_FILE),
            f"receipt:{remote}:{reason.value}",
            route.partner,
            name=entry.name,
            format_reason=reason.value,
        )
        self.log.error(
            "receipt.refused",
            partner=route.partner,
            remote_name=remote,
            reason_code=reason.value,
            detail=detail,
            incident=incident,
        )
        return ReceiptOutcome(
            entry.name, ReceiptResult.FORGED, route.partner, None, reason.value, incident
        )

    def unverified(
        self, route: ReceiptRoute, stem: str, entry: RemoteEntry, remote: str, signed: bytes
    ) -> ReceiptOutcome:
        """Rule 4: a partner's rejection of a manifest file it could not verify."""
        partner, key = self.folder_owner(route)
        found: list[Delivery] = []

        def made(hub_name: str) -> SentDelivery | None:
            hit = self.made_under(hub_name)
            if hit is None:
                return None
            found.append(hit[0])
            return hit[1]

        opened = open_unverified_rejection(
            signed, signer=partner, key=key, me=self.config.organisation.id, made=made
        )
        rejection = opened.value
        if rejection.hub_name != stem:
            raise _Forged(Reason.RECEIPT_MISMATCH, "rejection lies under another delivery's name")
        delivery = found[-1]
        if delivery.manifest_hash is None:  # made_under only returns deliveries with one
            raise _Forged(Reason.UNKNOWN_DELIVERY, "delivery has no manifest")
        event = lifecycle.ReceiptRejected(delivery.manifest_hash, rejection.reason.value)
        return self.record(route, stem, entry, remote, rejection, delivery, event)

    def record(
        self,
        route: ReceiptRoute,
        stem: str,
        entry: RemoteEntry,
        remote: str,
        receipt: Receipt | UnverifiedRejection,
        delivery: Delivery,
        event: lifecycle.ReceiptAccepted | lifecycle.ReceiptRejected,
    ) -> ReceiptOutcome:
        if not self.recordable(delivery, event):
            self.log.warning("receipt.deferred", delivery=delivery.id, state=delivery.state.value)
            return ReceiptOutcome(
                entry.name, ReceiptResult.DEFERRED, receipt.recipient, delivery.id
            )
        updated, new = self.ledger.record_receipt(delivery.id, event, self.now)
        raised: int | None = None
        if isinstance(event, lifecycle.ReceiptRejected) and new:
            context = {"delivery": delivery.id, "format_reason": event.reason}
            if isinstance(receipt, UnverifiedRejection):
                # The partner could not verify the manifest file it read. Whether that was a
                # file we sealed (our keys or configuration disagree with the partner's) or one
                # put there by someone else (replaced on the hub) is the first thing ops need.
                ours = {a.sealed_sha256 for a in self.ledger.attempts_of(delivery.id)}
                context |= {
                    "manifest_unverified": "yes",
                    "manifest_file_sha256": receipt.manifest_file_sha256,
                    "manifest_file": (
                        "ours" if receipt.manifest_file_sha256 in ours else "not-ours"
                    ),
                    "claimed_delivery": receipt.claimed_delivery or "none",
                }
            raised = self.incident(
                ReasonCode.RECEIPT_REJECTED,
                f"receipt-rejected:{delivery.id}",
                receipt.recipient,
                **context,
            )
        self.clean_up(route, stem, remote)
        result = (
            ReceiptResult.DUPLICATE
            if not new
            else ReceiptResult.REJECTED
            if isinstance(event, lifecycle.ReceiptRejected)
            else ReceiptResult.ACKNOWLEDGED
        )
        self.log.info(
            "receipt.verified",
            partner=receipt.recipient,
            delivery=delivery.id,
            state=updated.state.value,
            reason=None if receipt.reason is None else receipt.reason.value,
            unverified=isinstance(receipt, UnverifiedRejection),
            incident=raised,
        )
        return ReceiptOutcome(
            entry.name, result, receipt.recipient, delivery.id, event_reason(event), raised
        )

    def recordable(
        self, delivery: Delivery, event: lifecycle.ReceiptAccepted | lifecycle.ReceiptRejected
    ) -> bool:
        """Whether the ledger can take this receipt now: already recorded (a duplicate), or
        the delivery is in a state that accepts one. A receipt for a delivery still recorded
        as uploading (we crashed before noting the rename) waits for the next run."""
        return delivery.acknowledged_at is not None or lifecycle.can_step(delivery.state, event)

    def fetch(self, remote: str, entry: RemoteEntry) -> bytes:
        if entry.size > DOCUMENT_FILE_MAX:
            raise _Forged(Reason.TOO_LARGE, f"receipt file of {entry.size} bytes")
        raw = CappedSink(DOCUMENT_FILE_MAX)
        try:
            self.transport.get(remote, cast(BinaryIO, raw), max_size=DOCUMENT_FILE_MAX)
        except RemoteTooLargeError:
            raise _Forged(Reason.TOO_LARGE, "receipt file over 64 KiB") from None
        except RemoteRefusedEntry:
            raise _Forged(Reason.MALFORMED, "receipt is a link or special file") from None
        plain = CappedSink(RECEIPT_MAX_SIZE)
        try:
            agefmt.decrypt(io.BytesIO(bytes(raw.data)), cast(BinaryIO, plain), self.identities)
        except FormatError as error:
            raise _Forged(Reason.DECRYPTION_FAILED, error.message) from None
        if plain.overflow:
            raise _Forged(Reason.TOO_LARGE, f"receipt over {RECEIPT_MAX_SIZE} bytes")
        return bytes(plain.data)

    def clean_up(self, route: ReceiptRoute, stem: str, remote: str) -> None:
        names = DeliveryNames(stem)
        try:
            for name in (names.manifest, names.payload):
                self.transport.remove(f"{route.deliveries}/{name}")
            if route.remove_receipt:
                self.transport.remove(remote)
        except TransportError as error:
            self.log.warning("receipt.cleanup_deferred", remote_name=remote, error=error.message)


def event_reason(event: lifecycle.ReceiptAccepted | lifecycle.ReceiptRejected) -> str | None:
    return event.reason if isinstance(event, lifecycle.ReceiptRejected) else None


def collect_receipts(
    config: Config,
    ledger: Ledger,
    transport: Transport,
    now: datetime,
    *,
    identities: Sequence[agefmt.Identity],
    routes: Sequence[ReceiptRoute] | None = None,
) -> ReceiptReport:
    """Collect and verify receipts (default: every partner's folder on our hub)."""
    collector = _Collector(config, ledger, transport, identities, now)
    outcomes: list[ReceiptOutcome] = []
    unexpected: list[str] = []
    incidents: list[int] = []
    truncated = False
    for route in hub_routes(config) if routes is None else routes:
        try:
            report = collector.collect(route)
        except RemoteNotFoundError:
            get_logger().warning("receipt.folder_missing", partner=route.partner)
            continue
        outcomes += report.outcomes
        unexpected += report.unexpected
        incidents += report.incidents
        truncated = truncated or report.truncated
    return ReceiptReport(tuple(outcomes), tuple(unexpected), truncated, tuple(incidents))


def overdue_deliveries(
    config: Config,
    ledger: Ledger,
    now: datetime,
    *,
    warn: Callable[..., object] | None = None,
) -> list[Overdue]:
    """Deliveries sent but not acknowledged within their agreement's window (logged)."""
    log = warn if warn is not None else get_logger().warning
    found = []
    for delivery in ledger.deliveries(DeliveryState.SENT):
        if delivery.sent_at is None:
            continue
        agreement = config.agreements.get(delivery.agreement)
        window = agreement.acknowledgement_window if agreement else DEFAULT_ACK_WINDOW
        due_by = delivery.sent_at + window
        if due_by < now:
            found.append(
                Overdue(
                    delivery.id, delivery.agreement, delivery.recipient, delivery.sent_at, due_by
                )
            )
            log(
                "receipt.overdue",
                delivery=delivery.id,
                agreement=delivery.agreement,
                recipient=delivery.recipient,
            )
    return found


#: Dedupe key prefix of the incident raised for a delivery whose receipt is overdue.
OVERDUE_KEY = "receipt-overdue:"


def raise_overdue(config: Config, ledger: Ledger, now: datetime) -> list[Overdue]:
    """Rule 5: an incident and a warning for each delivery newly found overdue (returned);
    an overdue incident whose delivery is no longer waiting for its receipt is closed."""
    log = get_logger()
    waiting = {d.id for d in ledger.deliveries(DeliveryState.SENT)}
    raised: set[str] = set()
    for incident in ledger.incidents(open_only=False):
        key = incident.dedupe_key or ""
        if not key.startswith(OVERDUE_KEY):
            continue
        delivery = key.removeprefix(OVERDUE_KEY)
        raised.add(delivery)
        if incident.closed_at is None and delivery not in waiting:
            ledger.close_incident(incident.id, "receipt arrived or delivery no longer sent", now)
    new: list[Overdue] = []
    for item in overdue_deliveries(config, ledger, now, warn=lambda *_a, **_k: None):
        if item.delivery in raised:
            continue
        incident_id = ledger.open_incident(
            reason=ReasonCode.RECEIPT_OVERDUE,
            now=now,
            agreement=item.agreement,
            partner=item.recipient,
            context={
                "delivery": item.delivery,
                "sent_at": item.sent_at.isoformat(),
                "due_by": item.due_by.isoformat(),
            },
            dedupe_key=OVERDUE_KEY + item.delivery,
        ).id
        log.warning(
            "receipt.overdue",
            delivery=item.delivery,
            agreement=item.agreement,
            recipient=item.recipient,
            incident=incident_id,
        )
        new.append(item)
    return new
