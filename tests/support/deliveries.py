"""Deliveries made the way FORMAT.md says a sender makes them, for the receiving-side tests.

Until the daemon's delivery code is used here, this helper plays the sender: it records the
delivery in the sender's ledger (intake, intent with a fresh sequence, ciphertext, sent),
seals the payload and the signed manifest to the recipient with ``exchange.agefmt``, and
uploads both with the real transport, payload first and manifest last (§6.3). Tampering
knobs let a test break exactly one thing.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from exchange import agefmt, keys
from exchange.config import Config
from exchange.core import delivery as lifecycle
from exchange.core.naming import DeliveryNames, delivery_id_from_hex
from exchange.demo.workspaces import ESSEX_CC, SOUTHEND, Org, Workspace, create_workspace
from exchange.ledger import LEDGER_FILENAME, Ledger
from exchange.manifest import Manifest, sign_manifest
from exchange.model import DatasetId, Sha256
from exchange.signing import SigningKey
from exchange.transport import SftpSettings, SftpTransport, Transport
from tests.support.sshd import Hub

PLAINTEXT = (
    b"referral_id,received_date,subject_ref,age_band,concern_category,risk_level,lead_agency\n"
    b"R-1001,2026-11-20,S-5521,11-15,neglect,medium,essex-cc\n"
    b"R-1002,2026-11-21,S-7730,0-4,domestic abuse,high,essex-police\n"
)


def seal(data: bytes, recipient: str) -> bytes:
    out = io.BytesIO()
    agefmt.encrypt(io.BytesIO(data), out, [agefmt.parse_recipient(recipient)])
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Made:
    """One delivery as it went to the hub."""

    delivery: str
    names: DeliveryNames
    manifest: Manifest
    signed_manifest: bytes
    manifest_hash: str
    payload: bytes
    sealed_manifest: bytes
    plaintext: bytes


def make_delivery(
    sender: Config,
    ledger: Ledger,
    recipient: str,
    *,
    agreement: str,
    plaintext: bytes = PLAINTEXT,
    file_name: str = "mash referrals 2026-11.csv",
    now: datetime | None = None,
    signing_key: SigningKey | None = None,
    edit_manifest: Callable[[Manifest], Manifest] | None = None,
    sequence: int | None = None,
) -> Made:
    """Record and seal one delivery from ``sender`` to ``recipient`` (nothing uploaded yet).

    ``signing_key`` signs with another key (a forgery); ``edit_manifest`` changes fields
    before signing; ``sequence`` overrides the ledger's number (a replay).
    """
    now = now or datetime.now(UTC)
    paths = keys.KeyPaths(sender.folders.keys)
    key = signing_key or keys.load_signing_key(paths)
    partner = sender.partners[recipient]
    delivery = delivery_id_from_hex(secrets.token_hex(16))
    names = DeliveryNames.for_delivery(delivery)
    digest = hashlib.sha256(plaintext).hexdigest()
    version = ledger.record_intake(
        dataset=DatasetId.from_uuid(uuid.uuid4()),
        agreement=agreement,
        original_name=file_name.encode(),
        sha256=Sha256(digest),
        size=len(plaintext),
        spool_path=f"spool/{digest}",
        recipients=[(delivery, recipient)],
        now=now,
    )
    started = ledger.begin_upload(delivery, names.payload, now)
    payload = seal(plaintext, partner.keys.age_recipient)
    agreement_cfg = sender.agreements[agreement]
    manifest = Manifest.build(
        delivery=delivery,
        dataset=version.dataset.value,
        dataset_version=version.number,
        correction=None,
        sender=sender.organisation.id,
        sender_key=key.public_key.fingerprint,
        recipient=recipient,
        recipient_key=partner.keys.signing_key_fingerprint,
        agreement=agreement,
        purpose=agreement_cfg.purpose,
        legal_basis="; ".join(agreement_cfg.legal_basis),
        classification=agreement_cfg.classification,
        file_name=file_name,
        media_type="text/csv",
        plaintext_size=len(plaintext),
        plaintext_sha256=digest,
        ciphertext_sha256=hashlib.sha256(payload).hexdigest(),
        created=now,
        retain_until=date.today() + timedelta(days=agreement_cfg.retention_days),
        sequence=sequence if sequence is not None else started.sequence,
    )
    if edit_manifest is not None:
        manifest = edit_manifest(manifest)
    signed = sign_manifest(manifest, key)
    body = signed[: signed.rindex(b"signature: ")]
    manifest_hash = hashlib.sha256(body).hexdigest()
    sealed = seal(signed, partner.keys.age_recipient)
    ledger.record_ciphertext(
        delivery,
        ciphertext_sha256=manifest.ciphertext_sha256,
        size=len(payload),
        manifest_hash=manifest_hash,
        sealed_sha256=hashlib.sha256(sealed).hexdigest(),
        now=now,
    )
    return Made(delivery, names, manifest, signed, manifest_hash, payload, sealed, plaintext)


def upload(
    transport: Transport,
    folder: str,
    made: Made,
    ledger: Ledger | None = None,
    *,
    payload: bytes | None = None,
    sealed_manifest: bytes | None = None,
    now: datetime | None = None,
) -> None:
    """Put the delivery in ``folder`` (e.g. ``southend-uhft/inbox``), payload first, then mark
    it sent in ``ledger``. ``payload``/``sealed_manifest`` replace the real bytes (tampering)."""
    body = made.payload if payload is None else payload
    transport.put_atomic(io.BytesIO(body), f"{folder}/{made.names.payload}")
    doc = made.sealed_manifest if sealed_manifest is None else sealed_manifest
    transport.put_atomic(io.BytesIO(doc), f"{folder}/{made.names.manifest}")
    if ledger is not None:
        ledger.apply(
            made.delivery,
            lifecycle.UploadCompleted(
                ciphertext_sha256=made.manifest.ciphertext_sha256,
                size=len(made.payload),
                duration=timedelta(milliseconds=5),
                manifest_hash=made.manifest_hash,
            ),
            now or datetime.now(UTC),
        )


# --- organisations on a test hub ---------------------------------------------------------------

AGREEMENT = "mash-referrals"


@dataclass
class Orgs:
    """essex-cc (owns the hub) and its partners, each with a workspace wired to the hub."""

    hub: Hub
    cc: Workspace
    partners: dict[str, Workspace]

    def transport(self, login: str) -> SftpTransport:
        return SftpTransport(
            SftpSettings(
                host=self.hub.host,
                port=self.hub.port,
                login=login,
                key_path=self.hub.login(login)[0],
                host_keys=tuple(self.hub.host_public_keys),
                connect_timeout=10,
                io_timeout=30,
            )
        )

    def ledger(self, workspace: Workspace) -> Ledger:
        return Ledger.open(workspace.folder / "state" / LEDGER_FILENAME)


def make_orgs(tmp_path: Path, hub: Hub, partners: tuple[Org, ...] = (SOUTHEND,)) -> Orgs:
    """Workspaces for essex-cc and ``partners`` that know each other's key cards, share
    :data:`AGREEMENT`, and log in to ``hub`` with the harness's keys."""
    now = datetime.now(UTC)
    cc = create_workspace(tmp_path / ESSEX_CC.id, ESSEX_CC, now=now)
    others = {org.id: create_workspace(tmp_path / org.id, org, now=now) for org in partners}
    for workspace in (cc, *others.values()):
        workspace.use_ssh_key(*hub.login(workspace.org.id))
        workspace.pin_hub(hub.host, hub.port, workspace.org.id, list(hub.host_public_keys))
    for partner in others.values():
        cc.add_partner(partner)
        partner.add_partner(cc)
        partner.add_agreement(AGREEMENT, (ESSEX_CC.id,))
    cc.add_agreement(AGREEMENT, tuple(others))
    return Orgs(hub, cc, others)
