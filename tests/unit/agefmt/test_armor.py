"""ASCII armor: canonical writer, strict streaming reader."""

from __future__ import annotations

import base64
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.agefmt.armor import BEGIN, END, MAX_WHITESPACE, ArmorReader, ArmorWriter
from exchange.errors import ArmorError


def _armor(data: bytes, splits: list[int] | None = None) -> bytes:
    out = io.BytesIO()
    writer = ArmorWriter(out.write)
    position = 0
    for size in splits or []:
        writer.write(data[position : position + size])
        position += size
    writer.write(data[position:])
    writer.close()
    return out.getvalue()


def _dearmor(text: bytes, read_size: int = 1 << 20) -> bytes:
    reader = ArmorReader(io.BytesIO(text).read)
    parts = []
    while part := reader.read(read_size):
        parts.append(part)
    return b"".join(parts)


@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 96, 1000])
def test_writer_emits_canonical_pem(size: int) -> None:
    """64-column lines, a shorter (or full) last line, LF endings, BEGIN and END lines."""
    data = bytes(range(256)) * 4
    data = data[:size]
    lines = _armor(data).split(b"\n")
    assert lines[0] == BEGIN
    assert lines[-2:] == [END, b""]
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1])
    assert b"".join(body) == base64.b64encode(data)


@given(data=st.binary(max_size=2000), splits=st.lists(st.integers(0, 300), max_size=10))
def test_round_trip_whatever_the_write_sizes(data: bytes, splits: list[int]) -> None:
    """dearmor(armor(x)) == x however the writes were split, and the text is canonical."""
    text = _armor(data, splits)
    assert text == _armor(data)
    assert _dearmor(text, read_size=7) == data


def test_crlf_line_endings_are_accepted() -> None:
    """CRLF line ends decode to the same bytes (the spec allows both)."""
    data = bytes(range(200))
    assert _dearmor(_armor(data).replace(b"\n", b"\r\n")) == data


def test_whitespace_around_the_block_is_accepted_within_limits() -> None:
    """Blank lines before BEGIN and after END are fine; more than 1 KiB of them is not."""
    text = _armor(b"Southend University Hospital")
    assert _dearmor(b"\n \t\r\n" + text + b"\n\n  \n") == b"Southend University Hospital"
    with pytest.raises(ArmorError, match="too much whitespace before"):
        _dearmor(b"\n" * (MAX_WHITESPACE + 1) + text)
    with pytest.raises(ArmorError, match="too much whitespace after"):
        _dearmor(text + b" " * (MAX_WHITESPACE + 1))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: b"  " + t, "first line"),
        (lambda t: t.replace(BEGIN + b"\n", BEGIN + b" \n"), "first line"),
        (lambda t: t.replace(BEGIN + b"\n", BEGIN + b"\n\n"), "not canonical"),
        (lambda t: t.replace(END, END + b"x"), "not followed by the END line"),
        (lambda t: t.replace(END, b""), "not followed by the END line"),
        (lambda t: t.replace(b"\n" + END, b""), "not followed by the END line"),
        (lambda t: t.replace(b"=\n", b"\n"), "not canonical"),
        (lambda t: t + b"garbage", "data after the END"),
        (lambda t: t.replace(b"\n", b" \n", 2).replace(BEGIN + b" ", BEGIN), "not canonical"),
    ],
)
def test_non_canonical_armor_is_refused(mutate: object, message: str) -> None:
    """Every deviation from canonical armor is an ArmorError."""
    text = _armor(bytes(range(100)))
    with pytest.raises(ArmorError, match=message):
        _dearmor(mutate(text))  # type: ignore[operator]


def test_empty_armor_decodes_to_nothing() -> None:
    """BEGIN followed by END is valid armor of zero bytes (the age header then fails)."""
    assert _dearmor(_armor(b"")) == b""


def test_a_line_without_newline_is_bounded() -> None:
    """A huge line with no newline is refused instead of being buffered whole."""
    with pytest.raises(ArmorError, match="too long"):
        _dearmor(BEGIN + b"\n" + b"A" * 100_000)


def test_full_lines_then_end_of_input_is_refused() -> None:
    """Whole 64-column lines followed by the end of input (no END line) are refused."""
    text = _armor(bytes(96)).replace(END + b"\n", b"")
    with pytest.raises(ArmorError, match="ends without the END line"):
        _dearmor(text)
