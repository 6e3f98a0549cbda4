"""The age v1 header: grammar, canonical base64 and the header MAC (C2SP age.md "Header").

Rules:

1. Parsing is strict: a header is accepted only if serialising what was parsed gives back
   the same bytes. Anything the ABNF does not allow is a :class:`HeaderError`.
2. The parser reads one line at a time through a ``readline(limit)`` callable and never
   reads past the MAC line, so the payload that follows stays in the stream. Lines and the
   whole header are bounded (:data:`MAX_LINE`, :data:`MAX_HEADER`) so a hostile file cannot
   make us buffer without limit.
3. This module knows nothing about recipient types: stanzas are (arguments, body) values.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exchange.agefmt import _primitives as prim
from exchange.errors import HeaderError

VERSION_LINE = b"age-encryption.org/v1\n"
_INTRO = b"age-encryption.org/"
_STANZA_PREFIX = b"-> "
_MAC_PREFIX = b"--- "
_MAC_MARK = b"---"
COLUMNS = 64
MAC_SIZE = 32
#: Longest header line we read (a hybrid stanza's argument line is about 1,510 bytes).
MAX_LINE = 16 * 1024
#: Largest header we read: far above any real header, small enough to hold in memory.
MAX_HEADER = 1024 * 1024

_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_VCHAR_ARG = re.compile(r"[\x21-\x7e]+")

ReadLine = Callable[[int], bytes]


class HeaderMACError(HeaderError):
    """The header is well formed but its MAC does not verify under the unwrapped file key."""

    default_hint = (
        "the header was altered after encryption, or a stanza was forged; "
        "ask the sender to send the file again"
    )


def b64encode(data: bytes) -> str:
    """Canonical unpadded standard base64 (age.md "Conventions")."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str | bytes, what: str) -> bytes:
    """Decode canonical unpadded base64; anything else is a :class:`HeaderError`."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if not _B64_CHARS.fullmatch(raw) or len(raw) % 4 == 1:
        raise HeaderError(f"age header: {what} is not valid unpadded base64")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise HeaderError(f"age header: {what} is not valid unpadded base64") from None
    if base64.b64encode(data).rstrip(b"=") != raw:
        raise HeaderError(f"age header: {what} is not canonical base64")
    return data


@dataclass(frozen=True, slots=True)
class Stanza:
    """One recipient stanza: its arguments (type first) and its decoded body."""

    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        if not self.args or not all(_VCHAR_ARG.fullmatch(a) for a in self.args):
            raise ValueError("stanza arguments must be one or more runs of printable ASCII")
        lines = [b"-> " + " ".join(self.args).encode("ascii")]
        text = b64encode(self.body).encode("ascii")
        # The body always ends with a line shorter than 64 columns, possibly empty.
        lines.extend(text[i : i + COLUMNS] for i in range(0, len(text) - len(text) % COLUMNS, 64))
        lines.append(text[len(text) - len(text) % COLUMNS :])
        return b"\n".join(lines) + b"\n"


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header: its stanzas and the MAC it carries."""

    stanzas: tuple[Stanza, ...]
    mac: bytes

    def encode(self) -> bytes:
        return encode_without_mac(self.stanzas) + b" " + b64encode(self.mac).encode() + b"\n"


def encode_without_mac(stanzas: Sequence[Stanza]) -> bytes:
    """The bytes the MAC covers: version line, stanzas and the ``---`` mark."""
    return VERSION_LINE + b"".join(s.encode() for s in stanzas) + _MAC_MARK


def mac_key(file_key: bytes) -> bytes:
    return prim.hkdf_sha256(file_key, b"", b"header")


def compute_mac(file_key: bytes, covered: bytes) -> bytes:
    return prim.hmac_sha256(mac_key(file_key), covered)


def verify_mac(file_key: bytes, covered: bytes, mac: bytes) -> None:
    if not prim.hmac_sha256_verify(mac_key(file_key), covered, mac):
        raise HeaderMACError("age header: the header mac does not verify")


def encode_header(file_key: bytes, stanzas: Sequence[Stanza]) -> bytes:
    """A complete header for ``stanzas``, MAC'd under ``file_key``."""
    covered = encode_without_mac(stanzas)
    return covered + b" " + b64encode(compute_mac(file_key, covered)).encode() + b"\n"


class _Lines:
    """Line reader with the size limits and a running copy of the raw bytes."""

    def __init__(self, readline: ReadLine) -> None:
        self._readline = readline
        self.raw = bytearray()
        self.number = 0

    def next(self) -> bytes:
        """The next line without its LF; a missing LF (end of input) is an error."""
        line = self._readline(MAX_LINE + 1)
        self.number += 1
        if not line:
            raise HeaderError(f"age header: file ends at line {self.number}, before the mac")
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE:
                raise HeaderError(f"age header: line {self.number} is longer than {MAX_LINE}")
            raise HeaderError(f"age header: file ends in line {self.number}, before the mac")
        self.raw += line
        if len(self.raw) > MAX_HEADER:
            raise HeaderError(f"age header: longer than {MAX_HEADER} bytes")
        return line[:-1]


def parse(readline: ReadLine) -> tuple[Header, bytes]:
    """Read one header; return it and the exact bytes its MAC covers."""
    lines = _Lines(readline)
    first = lines.next()
    if first + b"\n" != VERSION_LINE:
        if first.startswith(_INTRO):
            raise HeaderError(
                "age header: unsupported version "
                f"{first[len(_INTRO) :].decode('ascii', 'replace')!r}",
                hint="this file needs a newer age implementation than age v1",
            )
        raise HeaderError("age header: the file does not start with 'age-encryption.org/v1'")
    stanzas: list[Stanza] = []
    line = lines.next()
    while True:
        if line.startswith(_STANZA_PREFIX) or line == b"->":
            stanza, line = _parse_stanza(line, lines)
            stanzas.append(stanza)
            continue
        if line.startswith(_MAC_PREFIX):
            break
        raise HeaderError(f"age header: line {lines.number} is neither a stanza nor the mac")
    if not stanzas:
        raise HeaderError("age header: no recipient stanza")
    encoded_mac = line[len(_MAC_PREFIX) :]
    if len(encoded_mac) != 43:
        raise HeaderError("age header: the mac line is malformed")
    mac = b64decode(encoded_mac, "the mac")
    covered = bytes(lines.raw[: -len(line) - 1]) + _MAC_MARK
    return Header(tuple(stanzas), mac), covered


def _parse_stanza(arg_line: bytes, lines: _Lines) -> tuple[Stanza, bytes]:
    """Parse a stanza starting at ``arg_line``; return it and the line after it."""
    number = lines.number
    fields = arg_line.split(b" ")[1:]
    if not fields:
        raise HeaderError(f"age header: stanza at line {number} has no arguments")
    args: list[str] = []
    for field in fields:
        text = field.decode("ascii", "replace")
        if not _VCHAR_ARG.fullmatch(text):
            raise HeaderError(f"age header: stanza at line {number} has an empty or bad argument")
        args.append(text)
    body_lines: list[bytes] = []
    while True:
        line = lines.next()
        if len(line) > COLUMNS or not _B64_CHARS.fullmatch(line):
            raise HeaderError(f"age header: line {lines.number} is not a stanza body line")
        body_lines.append(line)
        if len(line) < COLUMNS:
            break
    body = b64decode(b"".join(body_lines), f"the body of the stanza at line {number}")
    return Stanza(tuple(args), body), lines.next()
