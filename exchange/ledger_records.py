"""The ledger's records, and how rows become records.

Rules:

1. Every record is a frozen dataclass; callers of :mod:`exchange.ledger` get these, never rows.
2. Each ``*_SELECT`` and its ``*_from_row`` are a pair: they change together or not at all.
3. Times are stored as fixed-width UTC text (:func:`to_text`), so text order is time order;
   a naive datetime is a bug and raises.
4. No ``sqlite3`` here: :mod:`exchange.ledger` is its only importer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from exchange.core.delivery import DeliveryState
from exchange.errors import InvariantError, LedgerError, RefusedError
from exchange.model import DatasetId, ReasonCode, Sha256, VersionKind

__all__ = [
    "ATTEMPT_SELECT",
    "DELIVERY_SELECT",
    "INCIDENT_SELECT",
    "QUARANTINE_SELECT",
    "RECEIVED_SELECT",
    "VERSION_SELECT",
    "Attempt",
    "Dataset",
    "Delivery",
    "DeliveryEvent",
    "DuplicateContent",
    "Incident",
    "LedgerFull",
    "QuarantineRecord",
    "Received",
    "Run",
    "StatusRow",
    "Version",
    "attempt_from_row",
    "delivery_from_row",
    "from_opt_text",
    "from_text",
    "incident_from_row",
    "quarantine_from_row",
    "received_from_row",
    "to_text",
    "version_from_row",
]


class LedgerFull(LedgerError):
    """The disk under the ledger is full; the write was rolled back."""

    transient = True
    default_hint = "free space on the disk holding the state directory; the work is retried"


class DuplicateContent(RefusedError):
    """The same content was already taken under this agreement (TESTPLAN A13)."""

    default_hint = "this is a duplicate; declare it a correction with 'exchange correct'"

    def __init__(self, message: str, *, existing: Version) -> None:
        super().__init__(message)
        self.existing = existing


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dataset:
    id: DatasetId
    agreement: str
    original_name: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Version:
    id: int  # the ledger's row id; ``number`` is the version as people count it
    dataset: DatasetId
    number: int
    sha256: Sha256
    size: int
    spool_path: str
    kind: VersionKind
    supersedes: int | None
    complaint_ref: str | None
    reason: str | None
    override_note: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    version: int
    dataset: DatasetId
    agreement: str
    recipient: str
    state: DeliveryState
    attempts: int  # attempts begun (intent recorded); drives the backoff
    strikes: int  # attempts that died without an answer; drives poisoning
    next_attempt_at: datetime | None
    remote_name: str | None
    sequence: int | None  # per recipient, fresh for every attempt, so it rises in upload order
    ciphertext_sha256: str | None
    size: int | None
    duration: timedelta | None
    manifest_hash: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's upload as recorded before its payload was renamed: what a manifest found
    on the hub is compared with (``sealed_sha256`` is the hash of the whole sealed file)."""

    delivery: str
    sequence: int
    ciphertext_sha256: str
    size: int
    manifest_hash: str
    sealed_sha256: str
    at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    id: int
    delivery: str
    from_state: DeliveryState | None  # None for the creation row
    to_state: DeliveryState
    event: str
    reason: str | None
    at: datetime
    chain: str


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    opened_at: datetime
    reason: ReasonCode
    agreement: str | None
    partner: str | None
    context: Mapping[str, str | int | bool | None]
    dedupe_key: str | None
    occurrences: int
    last_seen_at: datetime
    closed_at: datetime | None
    close_note: str | None


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    id: int
    agreement: str
    original_name: bytes
    path: str
    reason: ReasonCode
    detail: str
    sha256: Sha256 | None
    size: int | None
    incident: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Received:
    """One manifest this organisation processed as a recipient (exchange pull, inbound)."""

    manifest_hash: str
    sender: str
    delivery: str
    agreement: str
    dataset: DatasetId
    dataset_version: int
    sequence: int
    supersedes: int | None  # the version a correction replaces (protocol §8)
    status: str  # accepted | replaced | rejected, as in the receipt we sent
    reason: str | None  # the FORMAT.md §7 code when rejected
    path: str | None  # where the dataset was filed; None when rejected
    plaintext_sha256: str | None
    size: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Run:
    agreement: str
    due_at: datetime
    done_at: datetime | None


@dataclass(frozen=True, slots=True)
class StatusRow:
    agreement: str
    recipient: str
    state: DeliveryState
    count: int
    last_sent_at: datetime | None


# --- rows and times ----------------------------------------------------------------------


def to_text(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvariantError("ledger: naive datetime; pass an aware one (clock.now())")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def from_opt_text(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


DELIVERY_SELECT = """
    SELECT dl.id, dl.version, v.dataset, d.agreement, dl.recipient, dl.state, dl.attempts,
           dl.strikes, dl.next_attempt_at, dl.remote_name, dl.sequence, dl.ciphertext_sha256,
           dl.size, dl.duration_ms, dl.manifest_hash, dl.last_error, dl.created_at,
           dl.updated_at, dl.sent_at, dl.acknowledged_at
    FROM deliveries dl JOIN versions v ON v.id = dl.version JOIN datasets d ON d.id = v.dataset
"""
VERSION_SELECT = """
    SELECT v.id, v.dataset, v.number, v.sha256, v.size, v.spool_path, v.kind, v.supersedes,
           v.complaint_ref, v.reason, v.override_note, v.created_at
    FROM versions v
"""
INCIDENT_SELECT = """
    SELECT id, opened_at, reason, agreement, partner, context, dedupe_key, occurrences,
           last_seen_at, closed_at, close_note
    FROM incidents
"""


RECEIVED_SELECT = """
    SELECT manifest_hash, sender, delivery, agreement, dataset, dataset_version, sequence,
           supersedes, status, reason, path, plaintext_sha256, size, at
    FROM received
"""


QUARANTINE_SELECT = """
    SELECT id, agreement, original_name, path, reason, detail, sha256, size, incident, at
    FROM quarantine
"""


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=row[0],
        version=row[1],
        dataset=DatasetId(row[2]),
        agreement=row[3],
        recipient=row[4],
        state=DeliveryState(row[5]),
        attempts=row[6],
        strikes=row[7],
        next_attempt_at=from_opt_text(row[8]),
        remote_name=row[9],
        sequence=row[10],
        ciphertext_sha256=row[11],
        size=row[12],
        duration=None if row[13] is None else timedelta(milliseconds=row[13]),
        manifest_hash=row[14],
        last_error=row[15],
        created_at=from_text(row[16]),
        updated_at=from_text(row[17]),
        sent_at=from_opt_text(row[18]),
        acknowledged_at=from_opt_text(row[19]),
    )


def version_from_row(row: Sequence[Any]) -> Version:
    return Version(
        id=row[0],
        dataset=DatasetId(row[1]),
        number=row[2],
        sha256=Sha256(row[3]),
        size=row[4],
        spool_path=row[5],
        kind=VersionKind(row[6]),
        supersedes=row[7],
        complaint_ref=row[8],
        reason=row[9],
        override_note=row[10],
        created_at=from_text(row[11]),
    )


def incident_from_row(row: Sequence[Any]) -> Incident:
    return Incident(
        id=row[0],
        opened_at=from_text(row[1]),
        reason=ReasonCode(row[2]),
        agreement=row[3],
        partner=row[4],
        context=json.loads(row[5]),
        dedupe_key=row[6],
        occurrences=row[7],
        last_seen_at=from_text(row[8]),
        closed_at=from_opt_text(row[9]),
        close_note=row[10],
    )


def quarantine_from_row(row: Sequence[Any]) -> QuarantineRecord:
    return QuarantineRecord(
        id=row[0],
        agreement=row[1],
        original_name=bytes(row[2]),
        path=row[3],
        reason=ReasonCode(row[4]),
        detail=row[5],
        sha256=None if row[6] is None else Sha256(row[6]),
        size=row[7],
        incident=row[8],
        at=from_text(row[9]),
    )


def received_from_row(row: Sequence[Any]) -> Received:
    return Received(
        manifest_hash=row[0],
        sender=row[1],
        delivery=row[2],
        agreement=row[3],
        dataset=DatasetId(row[4]),
        dataset_version=row[5],
        sequence=row[6],
        supersedes=row[7],
        status=row[8],
        reason=row[9],
        path=row[10],
        plaintext_sha256=row[11],
        size=row[12],
        at=from_text(row[13]),
    )


ATTEMPT_SELECT = """
    SELECT delivery, sequence, ciphertext_sha256, size, manifest_hash, sealed_sha256, at
    FROM attempts
"""


def attempt_from_row(row: Sequence[Any]) -> Attempt:
    return Attempt(
        delivery=row[0],
        sequence=row[1],
        ciphertext_sha256=row[2],
        size=row[3],
        manifest_hash=row[4],
        sealed_sha256=row[5],
        at=from_text(row[6]),
    )
