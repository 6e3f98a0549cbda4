"""The mlkem768x25519 recipient type: stanza shape and the identity's strictness."""

from __future__ import annotations

import io

import pytest

from exchange import agefmt
from exchange.agefmt import header as hdr
from exchange.agefmt.header import Stanza, b64decode, b64encode
from exchange.errors import HeaderError

IDENTITY = agefmt.generate_hybrid_identity()
FILE_KEY = bytes(range(16))


def _stanza() -> Stanza:
    (stanza,) = IDENTITY.recipient().wrap(FILE_KEY)
    return stanza


def _zero_x25519(enc: str) -> str:
    """The same enc with its X25519 half replaced by the all-zero (low-order) point."""
    return b64encode(b64decode(enc, "enc")[:-32] + bytes(32))


def test_stanza_shape_follows_the_spec() -> None:
    """Two arguments (type, 1120-byte enc) and a 32-byte body; it unwraps to the file key."""
    stanza = _stanza()
    assert stanza.args[0] == "mlkem768x25519"
    assert len(stanza.args) == 2
    assert len(b64decode(stanza.args[1], "enc")) == 1120
    assert len(stanza.body) == 32
    assert IDENTITY.unwrap([stanza]) == FILE_KEY


def test_each_wrap_is_fresh() -> None:
    """Two wraps of the same key give different encapsulations."""
    assert _stanza().args[1] != _stanza().args[1]


def test_other_identities_ignore_the_stanza() -> None:
    """Another hybrid identity or an X25519 identity does not match (None), it does not fail."""
    stanza = _stanza()
    assert agefmt.generate_hybrid_identity().unwrap([stanza]) is None
    assert agefmt.generate_x25519_identity().unwrap([stanza]) is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: Stanza((*s.args, "extra"), s.body),
        lambda s: Stanza(s.args[:1], s.body),
        lambda s: Stanza((s.args[0], s.args[1][:-4]), s.body),
        lambda s: Stanza((s.args[0], s.args[1] + "AAAA"), s.body),
        lambda s: Stanza(s.args, s.body + b"\x00"),
        lambda s: Stanza(s.args, s.body[:-1]),
        lambda s: Stanza((s.args[0], _zero_x25519(s.args[1])), s.body),
    ],
    ids=["extra arg", "no enc", "short enc", "long enc", "long body", "short body", "zero x25519"],
)
def test_malformed_stanzas_of_our_type_are_header_errors(mutate: object) -> None:
    """A stanza of our type with a wrong shape or a low-order X25519 share is a HeaderError."""
    with pytest.raises(HeaderError):
        IDENTITY.unwrap([mutate(_stanza())])  # type: ignore[operator]


def test_a_file_mixing_hybrid_and_x25519_stanzas_still_opens() -> None:
    """Decryption accepts a header with both types (CCTV hybrid_and_x25519 expects success)."""
    x = agefmt.generate_x25519_identity()
    stanzas = [*x.recipient().wrap(FILE_KEY), _stanza()]
    data = hdr.encode_header(FILE_KEY, stanzas)
    parsed, _ = hdr.parse(io.BytesIO(data).readline)
    assert IDENTITY.unwrap(parsed.stanzas) == FILE_KEY
    assert x.unwrap(parsed.stanzas) == FILE_KEY
