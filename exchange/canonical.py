"""The canonical text encoding shared by manifests and receipts (FORMAT.md §4.1, §4.2).

Rules:

1. A body is ASCII only: a magic line, then ``name: value`` lines, each ending in LF, names in
   strictly ascending byte order (so no duplicates), no other characters (no CR, no tab).
2. Every value type has exactly one spelling; the ``check_*`` helpers validate Python values
   (raising ValueError naming the field) and the ``encode_*``/``decode_*`` pairs convert.
   Decoders are strict, and ``manifest`` additionally re-encodes every decoded document and
   compares bytes, so a lenient corner here cannot become a second accepted encoding.
3. Free text is UTF-8, percent-encoded: bytes 0x21-0x7E except ``%`` are literal, a space is
   literal unless it is the first or last byte, every other byte is ``%XX`` with upper-case
   hex. Control, bidi-override and line-separator characters are refused outright.

Pure: stdlib only, no I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from exchange.signing import is_fingerprint

PARTY_ID = re.compile(r"[a-z][a-z0-9-]{1,30}")  # config.py's ID_PATTERN
DELIVERY_ID = re.compile(r"dl-[0-9a-f]{32}")  # core/naming.py's DELIVERY_ID
DATASET_ID = re.compile(r"ds-[0-9a-f]{32}")  # model.DatasetId
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
HUB_NAME = re.compile(r"[0-9a-f]{32}")  # core/naming.py's hub stem (FORMAT.md §6.1)
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
FIELD_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_UINT = re.compile(r"0|[1-9][0-9]{0,18}")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_PERCENT = re.compile(r"(?:[\x20-\x24\x26-\x7e]|%[0-9A-F]{2})+")
UINT_MAX = 2**63 - 1

#: Byte caps on decoded text (UTF-8).
TEXT_MAX = 1000
COMPLAINT_MAX = 100
CLASSIFICATION_MAX = 64
FILE_NAME_MAX = 255  # Linux NAME_MAX

#: Code points refused in any text value: C0 and C1 controls and DEL, bidi embeddings,
#: overrides, isolates and marks (the "Trojan Source" characters), line and paragraph
#: separators, and the byte-order mark.
FORBIDDEN_CODE_POINTS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]"
)


class BodyError(ValueError):
    """A body does not follow the grammar; ``reason`` is a :class:`~exchange.signing.Reason`
    value."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- checks on Python values --------------------------------------------------------------------
def check_pattern(name: str, value: object, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"{name}: does not match {pattern.pattern}")


def check_uint(name: str, value: object, *, minimum: int) -> None:
    if type(value) is not int or not minimum <= value <= UINT_MAX:
        raise ValueError(f"{name}: expected an integer from {minimum} to 2^63-1")


def check_fingerprint(name: str, value: object) -> None:
    if not isinstance(value, str) or not is_fingerprint(value):
        raise ValueError(f"{name}: expected 'SHA256:' and 43 base64 characters")


def check_text(name: str, value: object, max_bytes: int) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected non-empty text")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{name}: not encodable as UTF-8 (lone surrogate)") from None
    if size > max_bytes:
        raise ValueError(f"{name}: longer than {max_bytes} bytes")
    found = FORBIDDEN_CODE_POINTS.search(value)
    if found is not None:
        raise ValueError(f"{name}: forbidden character U+{ord(found.group()):04X}")


def check_file_name(name: str, value: object) -> None:
    """A dataset's original file name: text, at most 255 bytes, no '/', not '.' or '..'."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text")
    check_text(name, value, FILE_NAME_MAX)
    if "/" in value or value in {".", ".."}:
        raise ValueError(f"{name}: must be a single file name, not a path")


def check_time(name: str, value: object) -> None:
    if not isinstance(value, datetime) or value.tzinfo is not UTC or value.microsecond != 0:
        raise ValueError(f"{name}: expected a UTC datetime in whole seconds")


def check_date(name: str, value: object) -> None:
    if not isinstance(value, date) or isinstance(value, datetime):
        raise ValueError(f"{name}: expected a date")


# --- value encodings ---------------------------------------------------------------------------
def encode_text(value: str) -> str:
    raw = value.encode("utf-8")
    last = len(raw) - 1
    return "".join(
        chr(b) if (0x21 <= b <= 0x7E and b != 0x25) or (b == 0x20 and 0 < i < last) else f"%{b:02X}"
        for i, b in enumerate(raw)
    )


def decode_text(value: str) -> str:
    if _PERCENT.fullmatch(value) is None:
        raise ValueError("text: not percent-encoded as specified")
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "%":
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(value[i]))
            i += 1
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("text: not valid UTF-8") from None
    if encode_text(text) != value:
        raise ValueError("text: not in its canonical percent-encoding")
    return text


def decode_uint(value: str) -> int:
    if _UINT.fullmatch(value) is None or int(value) > UINT_MAX:
        raise ValueError("integer: expected decimal digits without leading zeros, below 2^63")
    return int(value)


def encode_time(value: datetime) -> str:
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"
    )


def decode_time(value: str) -> datetime:
    match = _TIME.fullmatch(value)
    if match is None:
        raise ValueError("time: expected YYYY-MM-DDTHH:MM:SSZ")
    year, month, day, hour, minute, second = (int(p) for p in match.groups())
    return datetime(
        year, month, day, hour, minute, second, tzinfo=UTC
    )  # ValueError for 2026-02-30 and 24:00:00


def decode_date(value: str) -> date:
    match = _DATE.fullmatch(value)
    if match is None:
        raise ValueError("date: expected YYYY-MM-DD")
    return date(*(int(p) for p in match.groups()))


# --- bodies ----------------------------------------------------------------------------------------
def encode_body(magic: str, fields: dict[str, str]) -> bytes:
    names = list(fields)
    if names != sorted(names) or len(set(names)) != len(names):
        raise ValueError("fields: not in ascending order")  # a bug in the caller's field table
    lines = [magic, *(f"{name}: {value}" for name, value in fields.items())]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_body(
    body: bytes, magic: str, required: frozenset[str], optional: frozenset[str]
) -> dict[str, str]:
    """Split a body into name → raw value, enforcing the line grammar and the field set."""
    if re.fullmatch(rb"[\x20-\x7e\n]*", body) is None:
        raise BodyError("only printable ASCII and LF are allowed", "malformed")
    if not body.endswith(b"\n"):
        raise BodyError("the last line does not end in LF", "malformed")
    lines = body.decode("ascii").split("\n")[:-1]
    if lines[0] != magic:
        family = magic.split("/")[0] + "/"
        if lines[0].startswith(family):
            raise BodyError(f"unsupported version {lines[0][:40]!r}", "unsupported-version")
        raise BodyError(f"the first line must be {magic!r}", "malformed")
    fields: dict[str, str] = {}
    previous = ""
    for number, line in enumerate(lines[1:], start=2):
        name, separator, value = line.partition(": ")
        if not separator or FIELD_NAME.fullmatch(name) is None or not value:
            raise BodyError(f"line {number}: expected 'name: value'", "malformed")
        if name not in required and name not in optional:
            raise BodyError(f"line {number}: unknown field {name!r}", "malformed")
        if name <= previous:
            raise BodyError(f"line {number}: {name!r} duplicated or out of order", "not-canonical")
        fields[name] = value
        previous = name
    missing = sorted(required - fields.keys())
    if missing:
        raise BodyError(f"missing field(s): {', '.join(missing)}", "malformed")
    return fields
