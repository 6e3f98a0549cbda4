"""Signed manifests and receipts: value types, canonical encoding, signing and verification.

Rules (docs/FORMAT.md §4 and §5 are normative; this module follows them):

1. Bytes in, values out. No I/O, no clock, no logging: the caller passes the time, the keys,
   the agreements it shares, the last accepted sequence and the payload hashes it computed.
2. One encoding per value. A document is ASCII: a magic line, ``name: value`` lines in strictly
   ascending order of name, and a final ``signature:`` line. Decoders re-encode what they
   parsed and refuse the input unless the bytes are identical, so ``encode(decode(b)) == b``
   for every ``b`` that decodes, and no second spelling of a document can be signed or hashed.
3. Free text (file name, purpose, legal basis, classification, correction reason) is UTF-8,
   percent-encoded for every byte outside printable ASCII (and ``%``, and a leading or trailing
   space), and must not contain control, bidi or line-separator characters. The file name is
   never a path: recipients must not use it as one without their own allow-list.
4. The signature is Ed25519 over the exact bytes before the ``signature:`` line; the manifest
   hash that receipts and the ledger use is SHA-256 of those same bytes, so a second signature
   over the same manifest is the same manifest (TESTPLAN 46).
5. Verification happens in the order of FORMAT.md §5 and every refusal raises
   :class:`ManifestRejected` or :class:`~exchange.signing.SignatureRejected` with a
   :class:`~exchange.signing.Reason`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Generic, TypeVar

from exchange import canonical as tc
from exchange.errors import InvariantError, ManifestError
from exchange.signing import (
    SIGNATURE_SIZE,
    PublicKey,
    Reason,
    SignatureRejected,
    SigningKey,
    b64decode_strict,
)

__all__ = [
    "MANIFEST_MAGIC",
    "MANIFEST_MAX_SIZE",
    "RECEIPT_MAGIC",
    "RECEIPT_MAX_SIZE",
    "RECEIPT_REASONS",
    "UNVERIFIED_MAGIC",
    "UNVERIFIED_REASONS",
    "Correction",
    "Manifest",
    "ManifestRejected",
    "Opened",
    "Party",
    "Peer",
    "Reason",
    "Receipt",
    "SentDelivery",
    "Status",
    "UnverifiedRejection",
    "check_payload",
    "is_unverified_rejection",
    "open_manifest",
    "open_receipt",
    "open_unverified_rejection",
    "sign_manifest",
    "sign_receipt",
    "sign_unverified_rejection",
    "signed_body",
]

MANIFEST_MAGIC = "exchange-manifest/v1"
RECEIPT_MAGIC = "exchange-receipt/v1"
#: FORMAT.md §4.6: the rejection of a manifest that did not verify. Receipt version 2, because
#: its fields are not those of version 1 (a version 1 decoder refuses it as
#: ``unsupported-version``); every other receipt is still written as version 1.
UNVERIFIED_MAGIC = "exchange-receipt/v2"
#: Hard caps on a signed document (FORMAT.md §4.5), checked before anything is parsed.
MANIFEST_MAX_SIZE = 16 * 1024
RECEIPT_MAX_SIZE = 4 * 1024


class ManifestRejected(ManifestError):
    """A manifest or receipt is malformed, not canonical, or fails a binding check."""

    def __init__(self, message: str, reason: Reason, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class Status(enum.Enum):
    """What the recipient did with a delivery (FORMAT.md §4.4)."""

    ACCEPTED = "accepted"
    REPLACED = "replaced"  # accepted, and it replaced the version it supersedes (protocol §8)
    REJECTED = "rejected"


#: The reason codes a receipt may carry with ``status: rejected`` (FORMAT.md §7).
RECEIPT_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.DECRYPTION_FAILED,
        Reason.MALFORMED,
        Reason.NOT_CANONICAL,
        Reason.UNSUPPORTED_VERSION,
        Reason.TOO_LARGE,
        Reason.KEY_MISMATCH,
        Reason.MALFORMED_SIGNATURE,
        Reason.BAD_SIGNATURE,
        Reason.WRONG_RECIPIENT,
        Reason.AGREEMENT_NOT_SHARED,
        Reason.REPLAY,
        Reason.CIPHERTEXT_MISMATCH,
        Reason.PLAINTEXT_MISMATCH,
    }
)


#: The reason codes of a rejection of a manifest that did not verify (FORMAT.md §4.6, §7):
#: every refusal of §5.1 steps 1-7 that the recipient can name without trusting the manifest.
UNVERIFIED_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.DECRYPTION_FAILED,
        Reason.MALFORMED,
        Reason.NOT_CANONICAL,
        Reason.UNSUPPORTED_VERSION,
        Reason.TOO_LARGE,
        Reason.UNKNOWN_SIGNER,
        Reason.KEY_MISMATCH,
        Reason.MALFORMED_SIGNATURE,
        Reason.BAD_SIGNATURE,
        Reason.WRONG_RECIPIENT,
    }
)


@dataclass(frozen=True, slots=True)
class Correction:
    """Protocol §8: this version replaces an earlier one after an accuracy complaint."""

    supersedes: int
    complaint: str
    reason: str

    def __post_init__(self) -> None:
        tc.check_uint("supersedes", self.supersedes, minimum=1)
        tc.check_text("supersedes-complaint", self.complaint, tc.COMPLAINT_MAX)
        tc.check_text("supersedes-reason", self.reason, tc.TEXT_MAX)


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one delivery is, who sent it to whom, and why (FORMAT.md §4.3)."""

    delivery: str
    dataset: str
    dataset_version: int
    correction: Correction | None
    sender: str
    sender_key: str
    recipient: str
    recipient_key: str
    agreement: str
    purpose: str
    legal_basis: str
    classification: str
    file_name: str
    media_type: str
    plaintext_size: int
    plaintext_sha256: str
    ciphertext_sha256: str
    created: datetime
    retain_until: date
    sequence: int

    def __post_init__(self) -> None:
        tc.check_pattern("delivery", self.delivery, tc.DELIVERY_ID)
        tc.check_pattern("dataset", self.dataset, tc.DATASET_ID)
        tc.check_uint("dataset-version", self.dataset_version, minimum=1)
        if self.correction is not None and self.correction.supersedes >= self.dataset_version:
            raise ValueError("supersedes: must be lower than dataset-version")
        for name in ("sender", "recipient", "agreement"):
            tc.check_pattern(name, getattr(self, name), tc.PARTY_ID)
        tc.check_fingerprint("sender-key", self.sender_key)
        tc.check_fingerprint("recipient-key", self.recipient_key)
        tc.check_text("purpose", self.purpose, tc.TEXT_MAX)
        tc.check_text("legal-basis", self.legal_basis, tc.TEXT_MAX)
        tc.check_text("classification", self.classification, tc.CLASSIFICATION_MAX)
        tc.check_file_name("file-name", self.file_name)
        tc.check_pattern("media-type", self.media_type, tc.MEDIA_TYPE)
        tc.check_uint("plaintext-size", self.plaintext_size, minimum=0)
        tc.check_pattern("plaintext-sha256", self.plaintext_sha256, tc.SHA256_HEX)
        tc.check_pattern("ciphertext-sha256", self.ciphertext_sha256, tc.SHA256_HEX)
        tc.check_time("created", self.created)
        tc.check_date("retain-until", self.retain_until)
        if self.retain_until < self.created.date():
            raise ValueError("retain-until: before the creation date")
        tc.check_uint("sequence", self.sequence, minimum=1)

    @classmethod
    def build(cls, *, created: datetime, **values: object) -> Manifest:
        """Build from keyword values; ``created`` is converted to UTC, whole seconds."""
        when = created.astimezone(UTC).replace(microsecond=0)
        return cls(created=when, **values)  # type: ignore[arg-type]

    def fields(self) -> dict[str, str]:
        """The field lines as name → encoded value, in canonical (ascending) order."""
        out = {
            "agreement": self.agreement,
            "ciphertext-sha256": self.ciphertext_sha256,
            "classification": tc.encode_text(self.classification),
            "created": tc.encode_time(self.created),
            "dataset": self.dataset,
            "dataset-version": str(self.dataset_version),
            "delivery": self.delivery,
            "file-name": tc.encode_text(self.file_name),
            "legal-basis": tc.encode_text(self.legal_basis),
            "media-type": self.media_type,
            "plaintext-sha256": self.plaintext_sha256,
            "plaintext-size": str(self.plaintext_size),
            "purpose": tc.encode_text(self.purpose),
            "recipient": self.recipient,
            "recipient-key": self.recipient_key,
            "retain-until": self.retain_until.isoformat(),
            "sender": self.sender,
            "sender-key": self.sender_key,
            "sequence": str(self.sequence),
        }
        if self.correction is not None:
            out["supersedes"] = str(self.correction.supersedes)
            out["supersedes-complaint"] = tc.encode_text(self.correction.complaint)
            out["supersedes-reason"] = tc.encode_text(self.correction.reason)
        return out

    def encode(self) -> bytes:
        """The canonical body: the exact bytes that are signed and hashed."""
        return tc.encode_body(MANIFEST_MAGIC, self.fields())

    @classmethod
    def decode(cls, body: bytes) -> Manifest:
        """Parse a canonical body strictly; anything else raises :class:`ManifestRejected`."""
        raw = _parse(body, MANIFEST_MAGIC, _MANIFEST_REQUIRED, _MANIFEST_OPTIONAL)
        correction_fields = [n for n in _MANIFEST_OPTIONAL if n in raw]
        if correction_fields and len(correction_fields) != len(_MANIFEST_OPTIONAL):
            raise _malformed("supersedes, supersedes-complaint, supersedes-reason: all or none")

        def build() -> Manifest:
            correction = None
            if correction_fields:
                correction = Correction(
                    supersedes=tc.decode_uint(raw["supersedes"]),
                    complaint=tc.decode_text(raw["supersedes-complaint"]),
                    reason=tc.decode_text(raw["supersedes-reason"]),
                )
            return cls(
                delivery=raw["delivery"],
                dataset=raw["dataset"],
                dataset_version=tc.decode_uint(raw["dataset-version"]),
                correction=correction,
                sender=raw["sender"],
                sender_key=raw["sender-key"],
                recipient=raw["recipient"],
                recipient_key=raw["recipient-key"],
                agreement=raw["agreement"],
                purpose=tc.decode_text(raw["purpose"]),
                legal_basis=tc.decode_text(raw["legal-basis"]),
                classification=tc.decode_text(raw["classification"]),
                file_name=tc.decode_text(raw["file-name"]),
                media_type=raw["media-type"],
                plaintext_size=tc.decode_uint(raw["plaintext-size"]),
                plaintext_sha256=raw["plaintext-sha256"],
                ciphertext_sha256=raw["ciphertext-sha256"],
                created=tc.decode_time(raw["created"]),
                retain_until=tc.decode_date(raw["retain-until"]),
                sequence=tc.decode_uint(raw["sequence"]),
            )

        return _canonical(body, build)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The recipient's signed statement of what it did with a delivery (FORMAT.md §4.4)."""

    delivery: str
    manifest_sha256: str
    plaintext_sha256: str | None
    status: Status
    reason: Reason | None
    time: datetime
    sender: str
    recipient: str
    recipient_key: str
    agreement: str

    def __post_init__(self) -> None:
        tc.check_pattern("delivery", self.delivery, tc.DELIVERY_ID)
        tc.check_pattern("manifest-sha256", self.manifest_sha256, tc.SHA256_HEX)
        if self.plaintext_sha256 is not None:
            tc.check_pattern("plaintext-sha256", self.plaintext_sha256, tc.SHA256_HEX)
        elif self.status is not Status.REJECTED:
            raise ValueError("plaintext-sha256: required unless the status is rejected")
        if not isinstance(self.status, Status):
            raise ValueError("status: not a Status")
        if (self.status is Status.REJECTED) != (self.reason is not None):
            raise ValueError("reason: required with status rejected, and only then")
        if self.reason is not None and self.reason not in RECEIPT_REASONS:
            raise ValueError(f"reason: {self.reason.value!r} is not a receipt reason code")
        tc.check_time("time", self.time)
        for name in ("sender", "recipient", "agreement"):
            tc.check_pattern(name, getattr(self, name), tc.PARTY_ID)
        tc.check_fingerprint("recipient-key", self.recipient_key)

    @classmethod
    def for_delivery(
        cls,
        opened: Opened[Manifest],
        *,
        status: Status,
        time: datetime,
        plaintext_sha256: str | None,
        reason: Reason | None = None,
    ) -> Receipt:
        """The receipt a recipient writes for a manifest it opened."""
        manifest = opened.value
        return cls(
            delivery=manifest.delivery,
            manifest_sha256=opened.sha256,
            plaintext_sha256=plaintext_sha256,
            status=status,
            reason=reason,
            time=time.astimezone(UTC).replace(microsecond=0),
            sender=manifest.sender,
            recipient=manifest.recipient,
            recipient_key=manifest.recipient_key,
            agreement=manifest.agreement,
        )

    def fields(self) -> dict[str, str]:
        out = {
            "agreement": self.agreement,
            "delivery": self.delivery,
            "manifest-sha256": self.manifest_sha256,
        }
        if self.plaintext_sha256 is not None:
            out["plaintext-sha256"] = self.plaintext_sha256
        if self.reason is not None:
            out["reason"] = self.reason.value
        out |= {
            "recipient": self.recipient,
            "recipient-key": self.recipient_key,
            "sender": self.sender,
            "status": self.status.value,
            "time": tc.encode_time(self.time),
        }
        return out

    def encode(self) -> bytes:
        return tc.encode_body(RECEIPT_MAGIC, self.fields())

    @classmethod
    def decode(cls, body: bytes) -> Receipt:
        raw = _parse(body, RECEIPT_MAGIC, _RECEIPT_REQUIRED, _RECEIPT_OPTIONAL)

        def build() -> Receipt:
            reason = raw.get("reason")
            return cls(
                delivery=raw["delivery"],
                manifest_sha256=raw["manifest-sha256"],
                plaintext_sha256=raw.get("plaintext-sha256"),
                status=Status(raw["status"]),
                reason=None if reason is None else Reason(reason),
                time=tc.decode_time(raw["time"]),
                sender=raw["sender"],
                recipient=raw["recipient"],
                recipient_key=raw["recipient-key"],
                agreement=raw["agreement"],
            )

        return _canonical(body, build)


@dataclass(frozen=True, slots=True)
class UnverifiedRejection:
    """A recipient's signed refusal of a manifest file that did not verify (FORMAT.md §4.6).

    Nothing in it comes from the manifest's verified content, since there is none: it names the
    file by its hub name and the SHA-256 of the sealed file as received, and is addressed to
    the party the hub folder binds (the only one entitled to write there), not to whoever the
    manifest claims. ``claimed_delivery`` is what the manifest said, unverified, and only when
    that id gives back the hub name.
    """

    hub_name: str
    manifest_file_sha256: str
    claimed_delivery: str | None
    reason: Reason
    time: datetime
    sender: str
    recipient: str
    recipient_key: str

    def __post_init__(self) -> None:
        tc.check_pattern("hub-name", self.hub_name, tc.HUB_NAME)
        tc.check_pattern("manifest-file-sha256", self.manifest_file_sha256, tc.SHA256_HEX)
        if self.claimed_delivery is not None:
            tc.check_pattern("claimed-delivery", self.claimed_delivery, tc.DELIVERY_ID)
            if _hub_name(self.claimed_delivery) != self.hub_name:
                raise ValueError("claimed-delivery: its hub name is not hub-name")
        if self.reason not in UNVERIFIED_REASONS:
            raise ValueError(f"reason: {self.reason!r} is not a reason for an unverified manifest")
        tc.check_time("time", self.time)
        for name in ("sender", "recipient"):
            tc.check_pattern(name, getattr(self, name), tc.PARTY_ID)
        tc.check_fingerprint("recipient-key", self.recipient_key)

    @property
    def status(self) -> Status:
        return Status.REJECTED

    def fields(self) -> dict[str, str]:
        out = {}
        if self.claimed_delivery is not None:
            out["claimed-delivery"] = self.claimed_delivery
        return out | {
            "hub-name": self.hub_name,
            "manifest-file-sha256": self.manifest_file_sha256,
            "reason": self.reason.value,
            "recipient": self.recipient,
            "recipient-key": self.recipient_key,
            "sender": self.sender,
            "status": Status.REJECTED.value,
            "time": tc.encode_time(self.time),
        }

    def encode(self) -> bytes:
        return tc.encode_body(UNVERIFIED_MAGIC, self.fields())

    @classmethod
    def decode(cls, body: bytes) -> UnverifiedRejection:
        raw = _parse(body, UNVERIFIED_MAGIC, _UNVERIFIED_REQUIRED, ("claimed-delivery",))

        def build() -> UnverifiedRejection:
            if raw["status"] != Status.REJECTED.value:
                raise ValueError("status: must be rejected")
            return cls(
                hub_name=raw["hub-name"],
                manifest_file_sha256=raw["manifest-file-sha256"],
                claimed_delivery=raw.get("claimed-delivery"),
                reason=Reason(raw["reason"]),
                time=tc.decode_time(raw["time"]),
                sender=raw["sender"],
                recipient=raw["recipient"],
                recipient_key=raw["recipient-key"],
            )

        return _canonical(body, build)


def _hub_name(delivery_id: str) -> str:
    # FORMAT.md §6.1 (core/naming.hub_stem; repeated here so this module stays free of core).
    return hashlib.sha256(b"exchange/v1 hub name\n" + delivery_id.encode("ascii")).hexdigest()[:32]


_MANIFEST_OPTIONAL = ("supersedes", "supersedes-complaint", "supersedes-reason")
_MANIFEST_REQUIRED = frozenset(
    {
        "agreement", "ciphertext-sha256", "classification", "created", "dataset",
        "dataset-version", "delivery", "file-name", "legal-basis", "media-type",
        "plaintext-sha256", "plaintext-size", "purpose", "recipient", "recipient-key",
        "retain-until", "sender", "sender-key", "sequence",
    }
)  # fmt: skip
_RECEIPT_OPTIONAL = ("plaintext-sha256", "reason")
_RECEIPT_REQUIRED = frozenset(
    {"agreement", "delivery", "manifest-sha256", "recipient", "recipient-key", "sender", "status",
     "time"}
)  # fmt: skip

_UNVERIFIED_REQUIRED = frozenset(
    {"hub-name", "manifest-file-sha256", "reason", "recipient", "recipient-key", "sender",
     "status", "time"}
)  # fmt: skip

_Doc = TypeVar("_Doc", Manifest, Receipt, UnverifiedRejection)


def _malformed(message: str) -> ManifestRejected:
    return ManifestRejected(message, Reason.MALFORMED)


def _parse(
    body: bytes, magic: str, required: frozenset[str], optional: tuple[str, ...]
) -> dict[str, str]:
    try:
        return tc.parse_body(body, magic, required, frozenset(optional))
    except tc.BodyError as error:
        raise ManifestRejected(str(error), Reason(error.reason)) from None


def _canonical(body: bytes, build: Callable[[], _Doc]) -> _Doc:
    try:
        value = build()
    except ValueError as error:
        raise _malformed(str(error)) from None
    if value.encode() != body:
        raise ManifestRejected("a value is not in its canonical encoding", Reason.NOT_CANONICAL)
    return value


# --- signed documents ------------------------------------------------------------------------------
_SIGNATURE_PREFIX = b"signature: "


@dataclass(frozen=True, slots=True)
class Opened(Generic[_Doc]):
    """A verified document and the SHA-256 (hex) of its signed body, used to dedupe and bind."""

    value: _Doc
    sha256: str


@dataclass(frozen=True, slots=True)
class Party:
    """This organisation as a recipient: its id and its Ed25519 key fingerprint."""

    id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Peer:
    """What this organisation knows about a partner that sends it deliveries."""

    id: str
    key: PublicKey  # pinned from the partner's configuration
    agreements: frozenset[str]  # the agreements under which this partner sends to us
    last_sequence: int | None  # the highest sequence accepted from it, None before the first


@dataclass(frozen=True, slots=True)
class SentDelivery:
    """What the sender recorded about a delivery, to check the receipt against."""

    recipient: str
    agreement: str
    manifest_sha256: str
    plaintext_sha256: str


def _sign(body: bytes, key: SigningKey, expected_fingerprint: str) -> bytes:
    if key.public_key.fingerprint != expected_fingerprint:
        raise InvariantError(
            "signing key does not match the fingerprint written in the document",
            hint="the document was built with another key's fingerprint",
        )
    signature = base64.b64encode(key.sign(body))
    return body + _SIGNATURE_PREFIX + signature + b"\n"


def sign_manifest(manifest: Manifest, key: SigningKey) -> bytes:
    """The signed manifest file: the canonical body, then ``signature: <base64>`` (§4.5)."""
    return _sign(manifest.encode(), key, manifest.sender_key)


def sign_receipt(receipt: Receipt, key: SigningKey) -> bytes:
    """The signed receipt file, signed by the recipient of the delivery (§4.5)."""
    return _sign(receipt.encode(), key, receipt.recipient_key)


def sign_unverified_rejection(rejection: UnverifiedRejection, key: SigningKey) -> bytes:
    """The signed rejection of a manifest that did not verify (§4.6), signed by us."""
    return _sign(rejection.encode(), key, rejection.recipient_key)


def signed_body(signed: bytes) -> bytes:
    """The body of a signed document: everything before its last line (FORMAT.md §4.3).
    The caller has checked that ``signed`` ends in LF."""
    return signed[: signed.rfind(b"\n", 0, len(signed) - 1) + 1]


def _split(signed: bytes, max_size: int) -> tuple[bytes, bytes]:
    """(body, signature) of a signed document, checking size and the signature line (§5 1-2)."""
    if len(signed) > max_size:
        raise ManifestRejected(
            f"document of {len(signed)} bytes exceeds the {max_size}-byte cap", Reason.TOO_LARGE
        )
    if not signed.endswith(b"\n"):
        raise _malformed("the last line does not end in LF")
    body = signed_body(signed)
    last = signed[len(body) : -1]
    if not last.startswith(_SIGNATURE_PREFIX) or not body:
        raise _malformed("the last line must be 'signature: <base64>'")
    signature = b64decode_strict(last[len(_SIGNATURE_PREFIX) :].decode("ascii", "replace"))
    if signature is None or len(signature) != SIGNATURE_SIZE:
        raise SignatureRejected(
            "signature: not the canonical base64 of 64 bytes", Reason.MALFORMED_SIGNATURE
        )
    return body, signature


def _verify_signer(name: str, claimed_key: str, key: PublicKey, body: bytes, sig: bytes) -> None:
    if claimed_key != key.fingerprint:
        raise ManifestRejected(
            f"{name}: key {claimed_key} is not the pinned {key.fingerprint}",
            Reason.KEY_MISMATCH,
            hint="the partner may have rotated its key; confirm the new fingerprint out of band",
        )
    key.verify(body, sig)


def open_manifest(signed: bytes, *, senders: Mapping[str, Peer], me: Party) -> Opened[Manifest]:
    """Decode and verify a signed manifest in the order of FORMAT.md §5.

    Checks size, grammar, canonical form, the sender's pinned key and signature, that it is
    addressed to ``me`` (id and key fingerprint), that the agreement is one the sender shares
    with us, and that its sequence is above the last accepted one. The payload hashes are
    checked later by :func:`check_payload`, once the payload has been hashed or decrypted.
    """
    body, signature = _split(signed, MANIFEST_MAX_SIZE)
    manifest = Manifest.decode(body)
    peer = senders.get(manifest.sender)
    if peer is None:
        raise ManifestRejected(
            f"sender {manifest.sender!r} is not a partner", Reason.UNKNOWN_SIGNER
        )
    _verify_signer("sender-key", manifest.sender_key, peer.key, body, signature)
    if manifest.recipient != me.id or manifest.recipient_key != me.fingerprint:
        raise ManifestRejected(
            f"addressed to {manifest.recipient} ({manifest.recipient_key}), not to us",
            Reason.WRONG_RECIPIENT,
        )
    if manifest.agreement not in peer.agreements:
        raise ManifestRejected(
            f"agreement {manifest.agreement!r} is not shared with {peer.id}",
            Reason.AGREEMENT_NOT_SHARED,
        )
    if peer.last_sequence is not None and manifest.sequence <= peer.last_sequence:
        raise ManifestRejected(
            f"sequence {manifest.sequence} is not above the last accepted {peer.last_sequence}",
            Reason.REPLAY,
        )
    return Opened(manifest, hashlib.sha256(body).hexdigest())


def check_payload(
    manifest: Manifest,
    *,
    ciphertext_sha256: str | None = None,
    plaintext_sha256: str | None = None,
    plaintext_size: int | None = None,
) -> None:
    """Compare the hashes the caller computed with the manifest's (FORMAT.md §5 step 10)."""
    if ciphertext_sha256 is not None and ciphertext_sha256 != manifest.ciphertext_sha256:
        raise ManifestRejected(
            "the payload file's sha256 differs from the manifest's", Reason.CIPHERTEXT_MISMATCH
        )
    if plaintext_size is not None and plaintext_size != manifest.plaintext_size:
        raise ManifestRejected(
            "the decrypted size differs from the manifest's", Reason.PLAINTEXT_MISMATCH
        )
    if plaintext_sha256 is not None and plaintext_sha256 != manifest.plaintext_sha256:
        raise ManifestRejected(
            "the decrypted sha256 differs from the manifest's", Reason.PLAINTEXT_MISMATCH
        )


def open_receipt(
    signed: bytes,
    *,
    recipients: Mapping[str, PublicKey],
    me: str,
    sent: Callable[[str], SentDelivery | None],
) -> Opened[Receipt]:
    """Decode and verify a signed receipt (FORMAT.md §5.2) for a delivery we sent.

    ``recipients`` maps partner id → pinned key; ``sent`` looks a delivery id up in the ledger.
    """
    body, signature = _split(signed, RECEIPT_MAX_SIZE)
    receipt = Receipt.decode(body)
    key = recipients.get(receipt.recipient)
    if key is None:
        raise ManifestRejected(
            f"receipt signer {receipt.recipient!r} is not a partner", Reason.UNKNOWN_SIGNER
        )
    _verify_signer("recipient-key", receipt.recipient_key, key, body, signature)
    if receipt.sender != me:
        raise ManifestRejected(
            f"receipt is addressed to {receipt.sender!r}, not to us", Reason.WRONG_RECIPIENT
        )
    record = sent(receipt.delivery)
    if record is None:
        raise ManifestRejected(
            f"receipt for unknown delivery {receipt.delivery}", Reason.UNKNOWN_DELIVERY
        )
    if (record.recipient, record.agreement) != (receipt.recipient, receipt.agreement):
        raise ManifestRejected(
            f"receipt from {receipt.recipient} under {receipt.agreement} for a delivery sent to "
            f"{record.recipient} under {record.agreement}",
            Reason.RECEIPT_MISMATCH,
        )
    if receipt.manifest_sha256 != record.manifest_sha256:
        raise ManifestRejected("receipt names another manifest", Reason.RECEIPT_MISMATCH)
    if (
        receipt.status is not Status.REJECTED
        and receipt.plaintext_sha256 != record.plaintext_sha256
    ):
        raise ManifestRejected("receipt names another plaintext", Reason.RECEIPT_MISMATCH)
    return Opened(receipt, hashlib.sha256(body).hexdigest())


def is_unverified_rejection(signed: bytes) -> bool:
    """Whether a decrypted receipt file is the §4.6 shape (its magic line), to pick its opener;
    either opener refuses a document of the other shape."""
    return signed.startswith(UNVERIFIED_MAGIC.encode("ascii") + b"\n")


def open_unverified_rejection(
    signed: bytes,
    *,
    signer: str,
    key: PublicKey,
    me: str,
    made: Callable[[str], SentDelivery | None],
) -> Opened[UnverifiedRejection]:
    """Decode and verify the rejection of a manifest that did not verify (FORMAT.md §5.3).

    ``signer`` and ``key`` are the partner whose hub folder the receipt was found in: the only
    party entitled to answer a manifest file in that folder. ``made`` looks a hub name up among
    the deliveries we made to that partner.
    """
    body, signature = _split(signed, RECEIPT_MAX_SIZE)
    rejection = UnverifiedRejection.decode(body)
    if rejection.recipient != signer:
        raise ManifestRejected(
            f"rejection signed as {rejection.recipient!r} found in {signer!r}'s folder",
            Reason.UNKNOWN_SIGNER,
        )
    _verify_signer("recipient-key", rejection.recipient_key, key, body, signature)
    if rejection.sender != me:
        raise ManifestRejected(
            f"rejection is addressed to {rejection.sender!r}, not to us", Reason.WRONG_RECIPIENT
        )
    record = made(rejection.hub_name)
    if record is None:
        raise ManifestRejected(
            f"rejection of hub name {rejection.hub_name}, which names no delivery we made",
            Reason.UNKNOWN_DELIVERY,
        )
    if record.recipient != signer:
        raise ManifestRejected(
            f"rejection from {signer} of a delivery made to {record.recipient}",
            Reason.RECEIPT_MISMATCH,
        )
    return Opened(rejection, hashlib.sha256(body).hexdigest())
