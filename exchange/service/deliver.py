"""One delivery to one partner (reconciliation of its hub folder: :mod:`.reconcile`).

Rules (docs/DESIGN.md, write-ordering invariants 3-5, 11, 12; FORMAT.md §6.3):

1. Intent first: ``uploading`` with the deterministic remote name is committed before the
   first byte is encrypted (crash point ``delivery.after_intent``).
2. The spool copy is encrypted straight into the atomic upload of ``<stem>.age``: no
   ciphertext touches the local disk, and the SHA-256 of what went to the hub is computed in
   the same pass. The plaintext hash is not recomputed for the manifest: it is the version's,
   taken once at intake; the encryptor's own hash of the spool copy must equal it, or the
   attempt fails (a spool copy that changed is never sent).
3. Before the payload's rename, the ciphertext digest and the manifest hash are committed
   (``record_ciphertext``); then the payload is renamed, then the signed manifest, encrypted to
   the same recipient, is uploaded to ``<stem>.manifest.age`` the same way. The manifest's
   presence under its final name means the delivery is complete.
4. Only after the manifest's rename is the delivery ``sent``.
5. The only age recipient ever used is the one configured for the delivery's recipient, looked
   up from the partner's configuration at the moment of encryption, and the partner must be a
   recipient of the delivery's agreement (TESTPLAN E42). The daemon has no other key source.
6. Reconciliation of a delivery found ``uploading`` (at start, or after a lost reply) is
   :mod:`exchange.service.reconcile`: by the hash of the final manifest, never by sizes.
7. An error after a rename was requested (the payload's or the manifest's) leaves the outcome
   unknown: :class:`OutcomeUnknown`, the delivery stays ``uploading`` and the lane reconciles
   before anything else. A retry settles the hub first the same way: a final manifest of an
   earlier attempt makes it ``sent``; otherwise the final manifest is removed before the
   payload, and both before a new payload is renamed in.
8. The partner's recipient is trial-wrapped and the manifest's configured text is checked
   before the intent: an unusable key or agreement text parks the partner with an incident
   (``RecipientKeyError``, ``ManifestFieldError``), never a strike.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import BinaryIO, cast

import structlog

from exchange import agefmt
from exchange.core import delivery as lifecycle
from exchange.core.naming import DeliveryNames
from exchange.errors import ExchangeError, InvariantError, PermanentTransportError
from exchange.ledger import Delivery
from exchange.log import escape_bytes
from exchange.manifest import Correction, Manifest, sign_manifest
from exchange.model import VersionKind
from exchange.service.context import Context, crash_point
from exchange.service.reconcile import remote_dir, settle_hub
from exchange.transport import Transport
from exchange.transport.port import AtomicWriter

_log = structlog.get_logger()

#: Media types by format (FORMAT.md §4.2 grammar: lower case, no parameters).
MEDIA_TYPES = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
    "txt": "text/plain",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "parquet": "application/vnd.apache.parquet",
}


class Abandoned(Exception):
    """The grace period after SIGTERM ran out during an upload; it was given up cleanly."""


class SpoolMismatch(ExchangeError):
    """The spool copy no longer has the content recorded at intake: never sent."""

    default_hint = "the spool copy was altered; investigate, the delivery will be quarantined"


class RecipientKeyError(ExchangeError):
    """The partner's age recipient in its configuration cannot be used."""

    default_hint = "fix [keys] age_recipient in config/partners/<id>.toml, then restart"


class ManifestFieldError(ExchangeError):
    """A value from the configuration (an agreement's purpose, legal basis or classification)
    cannot go into a manifest (FORMAT.md §4.2): never sent, never a strike."""

    default_hint = (
        "fix the agreement's text in config/agreements/<id>.toml, run 'exchange config check', "
        "then restart"
    )


class OutcomeUnknown(Exception):
    """An error after a rename was requested: the file may be final on the hub or not. The
    delivery stays ``uploading``; reconciliation decides by the manifest's hash (rule 7)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Sent:
    delivery: Delivery
    duration: timedelta


class _Guarded:
    """An AtomicWriter that gives up at the next write once the daemon abandons uploads,
    and carries the mid-upload crash point."""

    def __init__(self, inner: AtomicWriter, ctx: Context) -> None:
        self._inner = inner
        self._ctx = ctx
        self._writes = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._ctx.abandon.is_set():
            raise Abandoned("upload abandoned at shutdown")
        count = self._inner.write(data)
        self._writes += 1
        # After the first write: the encryptor sends a small file (header and all) in one.
        if self._writes == 1:
            crash_point("delivery.mid_upload")
        return count

    @property
    def bytes_written(self) -> int:
        return self._inner.bytes_written


def _file_name(raw: bytes) -> str:
    # Intake refused names that are not safe UTF-8, so this decodes; be strict anyway.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvariantError(f"dataset name {escape_bytes(raw)} is not UTF-8") from None


def deliver_one(ctx: Context, transport: Transport, delivery: Delivery) -> Sent:
    """Make one attempt (rules 1-5, 7, 8). Raises TransportError, RecipientKeyError,
    ManifestFieldError, OutcomeUnknown, Abandoned, or anything a bug raises; the caller turns
    that into the right ledger event."""
    cfg = ctx.config
    agreement = cfg.agreements[delivery.agreement]
    partner = cfg.partners[delivery.recipient]
    if partner.id not in agreement.recipients:
        raise InvariantError(f"delivery {delivery.id}: {partner.id} is not a recipient")
    recipient = _usable_recipient(partner.id, partner.keys.age_recipient)
    version = ctx.ledger.get_version(delivery.version)
    dataset = ctx.ledger.get_dataset(delivery.dataset)
    names = DeliveryNames.for_delivery(delivery.id)
    folder = remote_dir(cfg, partner.hub_folder)
    payload_path = f"{folder}/{names.payload}"
    manifest_path = f"{folder}/{names.manifest}"

    correction = None
    if version.kind is VersionKind.CORRECTION and version.supersedes is not None:
        earlier = ctx.ledger.get_version(version.supersedes)
        correction = Correction(
            supersedes=earlier.number,
            complaint=version.complaint_ref or "none given",
            reason=version.reason or "correction",
        )
    fields: dict[str, object] = {
        "delivery": delivery.id,
        "dataset": delivery.dataset.value,
        "dataset_version": version.number,
        "correction": correction,
        "sender": cfg.organisation.id,
        "sender_key": ctx.signing_key.public_key.fingerprint,
        "recipient": partner.id,
        "recipient_key": partner.keys.signing_key_fingerprint,
        "agreement": agreement.id,
        "purpose": agreement.purpose,
        "legal_basis": "; ".join(agreement.legal_basis),
        "classification": agreement.classification,
        "file_name": _file_name(dataset.original_name),
        "media_type": MEDIA_TYPES.get(
            _extension(dataset.original_name), "application/octet-stream"
        ),
    }
    # Rule 8: the fields that come from configuration are checked before the intent, so an
    # agreement text a manifest cannot carry parks the delivery instead of striking it.
    _check_fields(delivery, fields, version.size, version.sha256.hex, agreement.retention_days)

    started = time.monotonic()
    current = ctx.ledger.begin_upload(delivery.id, names.payload, ctx.now())
    crash_point("delivery.after_intent")
    if current.sequence is None:
        raise InvariantError(f"delivery {delivery.id}: no sequence after begin_upload")
    if current.attempts > 1:
        # Rule 7: a retry first settles what earlier attempts left under the final names.
        found = settle_hub(ctx, transport, current, folder)
        if found is not None:
            sent = ctx.ledger.complete_from_hub(delivery.id, found, ctx.now())
            _log.info("delivery.reconciled", delivery=delivery.id, state="sent")
            return Sent(sent, timedelta(0))

    upload = transport.open_atomic(payload_path)
    renaming = False
    try:
        # The spool is ours (0700), but a link there is never followed all the same.
        spool_fd = os.open(version.spool_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(spool_fd, "rb") as plain, upload as raw_writer:
            writer = _Guarded(raw_writer, ctx)
            result = agefmt.encrypt(plain, cast(BinaryIO, writer), [recipient])
            if result.plaintext_sha256 != version.sha256.hex:
                raise SpoolMismatch(
                    f"{version.spool_path}: content differs from the recorded sha256 "
                    f"{version.sha256}"
                )
            created = ctx.now()
            manifest = Manifest.build(
                created=created,
                plaintext_size=result.plaintext_size,
                plaintext_sha256=result.plaintext_sha256,
                ciphertext_sha256=result.ciphertext_sha256,
                retain_until=_retain_until(created.date(), agreement.retention_days),
                sequence=current.sequence,
                **fields,
            )
            signed = sign_manifest(manifest, ctx.signing_key)
            manifest_hash = _sha256(manifest.encode())
            sealed = io.BytesIO()
            agefmt.encrypt(io.BytesIO(signed), sealed, [recipient])
            ctx.ledger.record_ciphertext(
                delivery.id,
                ciphertext_sha256=result.ciphertext_sha256,
                size=result.ciphertext_size,
                manifest_hash=manifest_hash,
                sealed_sha256=_sha256(sealed.getvalue()),
                now=ctx.now(),
            )
            crash_point("delivery.before_rename")
            # From here on the rename may have happened whatever the transport says.
            renaming = True
        crash_point("delivery.after_payload_rename")
        transport.put_atomic(io.BytesIO(sealed.getvalue()), manifest_path)
    except Exception as error:
        # A permanent transport error is the server's answer (no space, permission): the
        # operation it answers did not happen, so the outcome is known. Only a lost answer
        # (a transient error, or anything that is not the server's word) leaves it unknown.
        if renaming and not isinstance(error, PermanentTransportError):
            raise OutcomeUnknown(error) from error
        raise
    crash_point("delivery.after_rename")
    duration = timedelta(seconds=time.monotonic() - started)
    sent = ctx.ledger.apply(
        delivery.id,
        lifecycle.UploadCompleted(
            ciphertext_sha256=result.ciphertext_sha256,
            size=result.ciphertext_size,
            duration=duration,
            manifest_hash=manifest_hash,
        ),
        ctx.now(),
    )
    crash_point("delivery.after_sent")
    return Sent(sent, duration)


def _usable_recipient(partner_id: str, text: str) -> agefmt.Recipient:
    """The partner's age recipient, trial-wrapped once so a key that parses but cannot be
    used (a low-order X25519 point) parks the partner instead of striking each delivery."""
    where = f"config/partners/{partner_id}.toml: keys.age_recipient"
    try:
        recipient = agefmt.parse_recipient(text)
        agefmt.encrypt(io.BytesIO(b""), io.BytesIO(), [recipient])
    except agefmt.KeyEncodingError as error:
        raise RecipientKeyError(f"{where}: {error.message}") from None
    except Exception as error:  # noqa: BLE001 - any failure to wrap to this key is the key's
        raise RecipientKeyError(f"{where}: cannot encrypt to it ({error})") from None
    return recipient


def _check_fields(
    delivery: Delivery,
    fields: dict[str, object],
    size: int,
    sha256: str,
    retention_days: int,
) -> None:
    """Build a throw-away manifest with this attempt's fields and stand-in digests: a field
    the manifest refuses is a configuration problem (ManifestFieldError), found before the
    intent is recorded."""
    created = datetime(2000, 1, 1, tzinfo=UTC)
    try:
        Manifest.build(
            created=created,
            plaintext_size=size,
            plaintext_sha256=sha256,
            ciphertext_sha256="0" * 64,
            retain_until=_retain_until(created.date(), retention_days),
            sequence=max(delivery.sequence or 1, 1),
            **fields,
        )
    except ValueError as error:
        raise ManifestFieldError(
            f"config/agreements/{delivery.agreement}.toml: cannot go into a manifest: {error}"
        ) from None


def _extension(raw: bytes) -> str:
    _, dot, ext = raw.rpartition(b".")
    return ext.decode("ascii", "replace").lower() if dot else ""


def _retain_until(created: date, days: int) -> date:
    return created + timedelta(days=days)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
