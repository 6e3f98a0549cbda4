"""Every CCTV age vector gives its expected result (passphrase-only vectors are counted)."""

from __future__ import annotations

import hashlib
import io

import pytest

from exchange import agefmt
from exchange.errors import ArmorError, HeaderError, NoIdentityMatch, PayloadError
from tests.cctv import CCTV_DIR, Vector, load_all

VECTORS = load_all()
RUNNABLE = [v for v in VECTORS if not v.needs_passphrase and not v.unknown_keys]
#: scrypt is not implemented; these vectors need a passphrase and nothing else.
PASSPHRASE_ONLY = [v for v in VECTORS if v.needs_passphrase]

FAILURES: dict[str, type[Exception]] = {
    "no match": NoIdentityMatch,
    "HMAC failure": agefmt.HeaderMACError,
    "header failure": HeaderError,
    "payload failure": PayloadError,
    "armor failure": ArmorError,
}


def test_vector_set_is_the_pinned_one() -> None:
    """The shared vector folder holds the 143 vectors we pinned, 25 of them passphrase-only."""
    assert CCTV_DIR.is_dir()
    assert len(VECTORS) == 143
    assert len(PASSPHRASE_ONLY) == 25
    assert all(v.name.startswith(("scrypt", "armor_scrypt")) for v in PASSPHRASE_ONLY)
    assert [v.name for v in VECTORS if v.unknown_keys] == []
    assert len(RUNNABLE) == 118


def _decrypt(
    vector: Vector, armored: bool | None
) -> tuple[io.BytesIO, agefmt.DecryptResult | Exception]:
    identities = [agefmt.parse_identity(text) for text in vector.identities]
    out = io.BytesIO()
    try:
        return out, agefmt.decrypt(io.BytesIO(vector.data), out, identities, armored=armored)
    except (HeaderError, PayloadError, NoIdentityMatch, ArmorError) as error:
        return out, error


@pytest.mark.parametrize("vector", RUNNABLE, ids=[v.name for v in RUNNABLE])
def test_cctv_vector(vector: Vector) -> None:
    """Decrypting the vector gives its expected outcome and releases the expected plaintext."""
    out, outcome = _decrypt(vector, armored=vector.armored)
    released = hashlib.sha256(out.getvalue()).hexdigest()
    if vector.expect == "success":
        assert isinstance(outcome, agefmt.DecryptResult), outcome
        assert vector.payload_sha256 == released == outcome.plaintext_sha256
        assert hashlib.sha256(vector.data).hexdigest() == outcome.ciphertext_sha256
        assert len(vector.data) == outcome.ciphertext_size
        return
    expected = FAILURES[vector.expect]
    assert isinstance(outcome, expected), outcome
    if vector.expect == "header failure":
        assert not isinstance(outcome, agefmt.HeaderMACError)
    if vector.expect == "payload failure":
        assert vector.payload_sha256 == released
    else:
        assert out.getvalue() == b""


@pytest.mark.parametrize("vector", RUNNABLE, ids=[v.name for v in RUNNABLE])
def test_cctv_vector_with_armor_detection(vector: Vector) -> None:
    """Detecting armor gives the same outcome as being told, except for garbage before BEGIN."""
    _, told = _decrypt(vector, armored=vector.armored)
    _, detected = _decrypt(vector, armored=None)
    if vector.name == "armor_garbage_leading":
        # Not starting with "-", it is read as a binary file, which it is not either.
        assert isinstance(detected, HeaderError)
        assert isinstance(told, ArmorError)
        return
    assert type(told) is type(detected)
