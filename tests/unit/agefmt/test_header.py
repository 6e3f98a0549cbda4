"""The age header: strict grammar, canonical base64, MAC, and malleability properties."""

from __future__ import annotations

import io

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exchange.agefmt import header as hdr
from exchange.errors import HeaderError
from tests.cctv import load_all

FILE_KEY = b"YELLOW SUBMARINE"


def _header_bytes(data: bytes) -> bytes | None:
    """The header part of an age file (through the MAC line), if it has one."""
    end = data.find(b"\n--- ")
    if end < 0:
        return None
    newline = data.find(b"\n", end + 1)
    return data[: newline + 1] if newline >= 0 else None


SEEDS = sorted(
    {
        h
        for v in load_all()
        if not v.armored and (h := _header_bytes(v.data)) is not None and h.startswith(b"age")
    }
)


def _parse(data: bytes) -> tuple[hdr.Header, bytes]:
    return hdr.parse(io.BytesIO(data).readline)


arg = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
stanzas = st.lists(
    st.builds(
        hdr.Stanza, st.lists(arg, min_size=1, max_size=4).map(tuple), st.binary(max_size=300)
    ),
    min_size=1,
    max_size=5,
)


@given(stanzas=stanzas)
def test_encode_then_parse_round_trips(stanzas: list[hdr.Stanza]) -> None:
    """parse(encode(header)) == header, and the MAC verifies over the covered bytes."""
    data = hdr.encode_header(FILE_KEY, stanzas)
    parsed, covered = _parse(data)
    assert parsed.stanzas == tuple(stanzas)
    assert covered == hdr.encode_without_mac(stanzas)
    hdr.verify_mac(FILE_KEY, covered, parsed.mac)
    assert parsed.encode() == data


@pytest.mark.parametrize("seed", SEEDS, ids=range(len(SEEDS)))
def test_vector_headers_that_parse_re_encode_identically(seed: bytes) -> None:
    """Every CCTV header that parses is re-encoded byte for byte (no two encodings)."""
    try:
        parsed, _ = _parse(seed)
    except HeaderError:
        return
    assert parsed.encode() == seed


@given(
    seed=st.sampled_from(SEEDS),
    position=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
    mode=st.sampled_from(["replace", "insert", "delete"]),
)
@example(seed=SEEDS[0], position=0, value=0x41, mode="replace")
def test_mutated_headers_either_fail_or_re_encode_identically(
    seed: bytes, position: int, value: int, mode: str
) -> None:
    """Any one-byte mutation either fails to parse or parses to something that re-encodes
    to exactly the bytes read: the header is not malleable (age FuzzMalleability)."""
    i = position % len(seed)
    if mode == "replace":
        data = seed[:i] + bytes([value]) + seed[i + 1 :]
    elif mode == "insert":
        data = seed[:i] + bytes([value]) + seed[i:]
    else:
        data = seed[:i] + seed[i + 1 :]
    stream = io.BytesIO(data)
    try:
        parsed, _ = hdr.parse(stream.readline)
    except HeaderError:
        return
    assert parsed.encode() == data[: stream.tell()]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "file ends at line 1"),
        (b"age-encryption.org/v2\n", "unsupported version"),
        (b"AGE-ENCRYPTION.ORG/v1\n", "does not start with"),
        (b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n", "no recipient stanza"),
        (b"age-encryption.org/v1\n-> X25519 abc\n", "file ends at line 3"),
        (b"age-encryption.org/v1\n->\n\n--- " + b"A" * 43 + b"\n", "no arguments"),
        (b"age-encryption.org/v1\n-> a  b\n\n--- " + b"A" * 43 + b"\n", "bad argument"),
        (b"age-encryption.org/v1\n-> a\xff\n\n--- " + b"A" * 43 + b"\n", "bad argument"),
        (b"age-encryption.org/v1\n-> a\nAAA=\n--- " + b"A" * 43 + b"\n", "not a stanza body"),
        (b"age-encryption.org/v1\n-> a\nAB\n--- " + b"A" * 43 + b"\n", "not canonical"),
        (b"age-encryption.org/v1\n-> a\nA\n--- " + b"A" * 43 + b"\n", "not valid unpadded"),
        (b"age-encryption.org/v1\n-> a\n" + b"A" * 65 + b"\n", "not a stanza body"),
        (b"age-encryption.org/v1\n-> a\n\n--- " + b"A" * 42 + b"\n", "mac line is malformed"),
        (b"age-encryption.org/v1\n-> a\n\n--- " + b"A" * 42 + b"B\n", "not canonical"),
        (b"age-encryption.org/v1\n-> a\n\n---" + b"A" * 43 + b"\n", "neither a stanza"),
        (b"age-encryption.org/v1\n-> a\n\n--- " + b"A" * 43, "before the mac"),
        (b"age-encryption.org/v1\n" + b"-> " + b"a" * hdr.MAX_LINE + b"\n", "longer than"),
    ],
)
def test_malformed_headers_are_refused(data: bytes, message: str) -> None:
    """Each grammar violation is a HeaderError whose message says what is wrong."""
    with pytest.raises(HeaderError, match=message):
        _parse(data)


def test_header_size_is_bounded() -> None:
    """A header with endless stanzas is refused once it passes MAX_HEADER bytes."""
    stanza = b"-> grease\n" + b"A" * 64 + b"\n\n"
    data = b"age-encryption.org/v1\n" + stanza * (hdr.MAX_HEADER // len(stanza) + 1)
    with pytest.raises(HeaderError, match="longer than"):
        _parse(data)


def test_parse_stops_at_the_mac_line() -> None:
    """The parser leaves the payload unread in the stream."""
    data = hdr.encode_header(FILE_KEY, [hdr.Stanza(("X25519", "abc"), b"body")])
    stream = io.BytesIO(data + b"PAYLOAD")
    hdr.parse(stream.readline)
    assert stream.read() == b"PAYLOAD"


def test_mac_mismatch_is_a_header_mac_error() -> None:
    """A MAC computed under another file key is refused as HeaderMACError."""
    stanzas = [hdr.Stanza(("X25519", "abc"), b"body")]
    parsed, covered = _parse(hdr.encode_header(b"another file key", stanzas))
    with pytest.raises(hdr.HeaderMACError):
        hdr.verify_mac(FILE_KEY, covered, parsed.mac)


def test_stanza_body_of_exactly_48_bytes_ends_with_an_empty_line() -> None:
    """A body whose base64 fills whole 64-column lines is followed by an empty final line."""
    encoded = hdr.Stanza(("t",), bytes(48)).encode()
    assert encoded == b"-> t\n" + b"A" * 64 + b"\n\n"
