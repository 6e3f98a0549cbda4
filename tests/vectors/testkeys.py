"""TEST-ONLY keys and sample documents for the manifest/receipt tests and vectors.

Every private key here is derived from a public label and printed in the repository: it
protects nothing and must never be pinned for a real partner.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

from exchange.manifest import Correction, Manifest, Party, Peer, Receipt, SentDelivery, Status
from exchange.signing import SigningKey, signing_key_from_seed


def test_only_key(label: str) -> SigningKey:
    """A deterministic Ed25519 key: seed = SHA-256("exchange TEST-ONLY key: " + label)."""
    return signing_key_from_seed(
        hashlib.sha256(b"exchange TEST-ONLY key: " + label.encode()).digest()
    )


SENDER = "essex-cc"
RECIPIENT = "southend-uhft"
OTHER = "essex-police"
AGREEMENT = "mash-weekly"
SENDER_KEY = test_only_key(SENDER)
RECIPIENT_KEY = test_only_key(RECIPIENT)
OTHER_KEY = test_only_key(OTHER)
PLAINTEXT = b"case_ref,referral_date,outcome\nC-1001,2026-11-02,strategy discussion\n"
#: Stand-in for the age file; vectors bind to its hash, not its content.
CIPHERTEXT = b"age-encryption.org/v1 stand-in for the tests\n"


def sample_manifest(**changes: object) -> Manifest:
    """A valid manifest from essex-cc to southend-uhft; keyword arguments override fields."""
    values: dict[str, object] = {
        "delivery": "dl-5f0c1d2e3a4b59687786950a1b2c3d4e",
        "dataset": "ds-9a8b7c6d5e4f30211203f4e5d6c7b8a9",
        "dataset_version": 3,
        "correction": Correction(
            supersedes=2,
            complaint="CR-2026-0042",
            reason="Date of referral corrected after an accuracy complaint (protocol §8)",
        ),
        "sender": SENDER,
        "sender_key": SENDER_KEY.public_key.fingerprint,
        "recipient": RECIPIENT,
        "recipient_key": RECIPIENT_KEY.public_key.fingerprint,
        "agreement": AGREEMENT,
        "purpose": "Safeguarding children: multi-agency referrals (MASH)",
        "legal_basis": "Children Act 2004 s.11; UK GDPR Art. 6(1)(e) and 9(2)(g)",
        "classification": "OFFICIAL-SENSITIVE",
        "file_name": "mash referrals 2026-11.csv",
        "media_type": "text/csv",
        "plaintext_size": len(PLAINTEXT),
        "plaintext_sha256": hashlib.sha256(PLAINTEXT).hexdigest(),
        "ciphertext_sha256": hashlib.sha256(CIPHERTEXT).hexdigest(),
        "created": datetime(2026, 11, 25, 10, 15, 0, tzinfo=UTC),
        "retain_until": date(2027, 11, 25),
        "sequence": 42,
    }
    values.update(changes)
    return Manifest(**values)  # type: ignore[arg-type]


def me() -> Party:
    """The recipient southend-uhft as a Party."""
    return Party(RECIPIENT, RECIPIENT_KEY.public_key.fingerprint)


def senders(
    last_sequence: int | None = 41, agreements: tuple[str, ...] = (AGREEMENT,)
) -> dict[str, Peer]:
    """southend-uhft's view of its senders: essex-cc (and essex-police, for other agreements)."""
    return {
        SENDER: Peer(SENDER, SENDER_KEY.public_key, frozenset(agreements), last_sequence),
        OTHER: Peer(OTHER, OTHER_KEY.public_key, frozenset({"police-dv"}), None),
    }


def sample_receipt(manifest_sha256: str, **changes: object) -> Receipt:
    """southend-uhft's receipt accepting the sample manifest; keyword arguments override."""
    values: dict[str, object] = {
        "delivery": "dl-5f0c1d2e3a4b59687786950a1b2c3d4e",
        "manifest_sha256": manifest_sha256,
        "plaintext_sha256": hashlib.sha256(PLAINTEXT).hexdigest(),
        "status": Status.REPLACED,
        "reason": None,
        "time": datetime(2026, 11, 25, 10, 20, 5, tzinfo=UTC),
        "sender": SENDER,
        "recipient": RECIPIENT,
        "recipient_key": RECIPIENT_KEY.public_key.fingerprint,
        "agreement": AGREEMENT,
    }
    values.update(changes)
    return Receipt(**values)  # type: ignore[arg-type]


def sent_record(manifest_sha256: str) -> SentDelivery:
    """What essex-cc's ledger holds for the sample delivery."""
    return SentDelivery(
        RECIPIENT, AGREEMENT, manifest_sha256, hashlib.sha256(PLAINTEXT).hexdigest()
    )
