"""Receipt version 2, the rejection of a manifest that did not verify (FORMAT.md §4.6, §5.3):
one encoding, only its own shape, and an opener bound to the folder's partner."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.naming import hub_stem
from exchange.manifest import (
    RECEIPT_REASONS,
    UNVERIFIED_REASONS,
    ManifestRejected,
    Receipt,
    SentDelivery,
    UnverifiedRejection,
    is_unverified_rejection,
    open_receipt,
    open_unverified_rejection,
    sign_unverified_rejection,
)
from exchange.signing import Reason, SignatureRejected
from tests.vectors import testkeys as tk

DELIVERY = tk.sample_manifest().delivery
STEM = hub_stem(DELIVERY)
SENT = SentDelivery(tk.RECIPIENT, tk.AGREEMENT, "a" * 64, "b" * 64)
WHEN = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


def _rejection(**changes: object) -> UnverifiedRejection:
    values: dict[str, object] = {
        "hub_name": STEM,
        "manifest_file_sha256": hashlib.sha256(b"sealed").hexdigest(),
        "claimed_delivery": DELIVERY,
        "reason": Reason.BAD_SIGNATURE,
        "time": WHEN,
        "sender": tk.SENDER,
        "recipient": tk.RECIPIENT,
        "recipient_key": tk.RECIPIENT_KEY.public_key.fingerprint,
    } | changes
    return UnverifiedRejection(**values)  # type: ignore[arg-type]


def _open(signed: bytes, made: SentDelivery | None = SENT, signer: str = tk.RECIPIENT) -> str:
    return open_unverified_rejection(
        signed,
        signer=signer,
        key=tk.RECIPIENT_KEY.public_key,
        me=tk.SENDER,
        made=lambda name: made if name == STEM else None,
    ).value.hub_name


@given(
    claimed=st.booleans(),
    reason=st.sampled_from(sorted(UNVERIFIED_REASONS, key=lambda r: r.value)),
    seconds=st.integers(min_value=0, max_value=10**8),
)
def test_round_trip(claimed: bool, reason: Reason, seconds: int) -> None:
    """Every rejection encodes to one body that decodes back to it, under the v2 magic."""
    when = datetime.fromtimestamp(1_700_000_000 + seconds, UTC)
    value = _rejection(claimed_delivery=DELIVERY if claimed else None, reason=reason, time=when)
    body = value.encode()
    assert body.startswith(b"exchange-receipt/v2\n")
    assert value == UnverifiedRejection.decode(body)
    assert is_unverified_rejection(sign_unverified_rejection(value, tk.RECIPIENT_KEY))


def test_reasons_are_those_a_recipient_can_name_without_a_verified_manifest() -> None:
    """unknown-signer is added to the v1 receipt reasons; replay, agreement and payload
    checks, which need a verified manifest, are not v2 reasons."""
    assert Reason.UNKNOWN_SIGNER in UNVERIFIED_REASONS
    assert (
        not {
            Reason.REPLAY,
            Reason.AGREEMENT_NOT_SHARED,
            Reason.CIPHERTEXT_MISMATCH,
            Reason.PLAINTEXT_MISMATCH,
        }
        & UNVERIFIED_REASONS
    )
    assert UNVERIFIED_REASONS - {Reason.UNKNOWN_SIGNER} <= RECEIPT_REASONS
    with pytest.raises(ValueError, match="reason"):
        _rejection(reason=Reason.REPLAY)


def test_claimed_delivery_must_give_back_the_hub_name() -> None:
    """A claim whose hub name differs is never written (and never decoded)."""
    with pytest.raises(ValueError, match="claimed-delivery"):
        _rejection(claimed_delivery="dl-" + "e" * 32)


def test_valid_rejection_opens() -> None:
    """Signed by the folder's partner, addressed to us, naming a delivery made to it."""
    assert STEM == _open(sign_unverified_rejection(_rejection(), tk.RECIPIENT_KEY))


@pytest.mark.parametrize(
    ("made", "signer", "reason"),
    [
        (None, tk.RECIPIENT, Reason.UNKNOWN_DELIVERY),
        (dataclasses.replace(SENT, recipient=tk.OTHER), tk.RECIPIENT, Reason.RECEIPT_MISMATCH),
        (SENT, tk.OTHER, Reason.UNKNOWN_SIGNER),
    ],
    ids=["hub-name-never-used", "delivery-to-another-partner", "found-in-another-folder"],
)
def test_binding_failures(made: SentDelivery | None, signer: str, reason: Reason) -> None:
    """The sender checks the signer against the folder and the hub name against its ledger."""
    signed = sign_unverified_rejection(_rejection(), tk.RECIPIENT_KEY)
    with pytest.raises(ManifestRejected) as raised:
        _open(signed, made, signer)
    assert reason is raised.value.reason


def test_tampering_breaks_the_signature() -> None:
    """Any changed byte of the body fails the signature."""
    signed = sign_unverified_rejection(_rejection(), tk.RECIPIENT_KEY)
    altered = signed.replace(b"reason: bad-signature", b"reason: key-mismatch")
    with pytest.raises(SignatureRejected) as raised:
        _open(altered)
    assert Reason.BAD_SIGNATURE is raised.value.reason


def test_a_v1_decoder_reports_unsupported_version() -> None:
    """A version 1 receipt opener refuses a v2 document as another version, not as a
    receipt it could record."""
    signed = sign_unverified_rejection(_rejection(), tk.RECIPIENT_KEY)
    with pytest.raises(ManifestRejected) as raised:
        open_receipt(
            signed,
            recipients={tk.RECIPIENT: tk.RECIPIENT_KEY.public_key},
            me=tk.SENDER,
            sent=lambda _d: SENT,
        )
    assert Reason.UNSUPPORTED_VERSION is raised.value.reason
    with pytest.raises(ManifestRejected) as raised:
        Receipt.decode(_rejection().encode())
    assert Reason.UNSUPPORTED_VERSION is raised.value.reason
