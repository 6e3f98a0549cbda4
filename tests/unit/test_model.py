"""The shared value types validate themselves on construction."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from exchange.model import DatasetId, ReasonCode, Sha256


def test_sha256_of_digest_is_lower_case_hex() -> None:
    """A raw digest becomes the 64-digit lower-case spelling the ledger stores."""
    digest = hashlib.sha256(b"Essex County Council").digest()
    assert hashlib.sha256(b"Essex County Council").hexdigest() == str(Sha256.of_digest(digest))


@pytest.mark.parametrize("text", ["", "A" * 64, "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63])
def test_sha256_rejects_other_spellings(text: str) -> None:
    """Upper case, wrong lengths and non-hex characters are refused."""
    assert not Sha256.is_valid(text)
    with pytest.raises(ValueError, match="sha256"):
        Sha256(text)


def test_sha256_of_digest_rejects_wrong_length() -> None:
    """A digest that is not 32 bytes is refused."""
    with pytest.raises(ValueError, match="32 digest bytes"):
        Sha256.of_digest(b"\x00" * 31)


def test_dataset_id_from_uuid() -> None:
    """A UUID drawn by the shell becomes a path- and log-safe dataset id."""
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert str(DatasetId.from_uuid(value)) == "ds-12345678123456781234567812345678"


@pytest.mark.parametrize("text", ["", "ds-", "ds-" + "A" * 32, "../etc/passwd", "ds-" + "0" * 33])
def test_dataset_id_rejects_anything_else(text: str) -> None:
    """Only the generated shape is a dataset id; names from files never are."""
    assert not DatasetId.is_valid(text)
    with pytest.raises(ValueError, match="dataset id"):
        DatasetId(text)


def test_reason_codes_are_unique_kebab_case() -> None:
    """Reason codes are stable lower-case kebab strings, each used once."""
    values = [code.value for code in ReasonCode]
    assert len(set(values)) == len(values)
    assert all(value == value.lower() and "_" not in value for value in values)
