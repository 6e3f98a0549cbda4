"""Streaming content checks: the file's bytes, fed in chunks while the caller hashes them.

Pure, and constant memory whatever the file size. Verdicts are values: :class:`Accepted` or
:class:`Refused` (re-exported by :mod:`exchange.core.intake`, which decides what to check).

Rules:

1. **No cell value ever appears in a detail.** Column names are named (they are the schema,
   and naming them is what lets an analyst fix the export); encoding faults are reported as
   line and byte offset only. A header that shares no column with the agreement is most
   likely a data row (the header is missing), so its "columns" are counted, not named.
2. **CSV policy**: UTF-8 (a UTF-8 byte order mark is accepted and skipped; UTF-16/32 ones are
   refused), no NUL bytes, line endings LF or CRLF used consistently outside quoted fields (a
   line break inside a quoted cell is data), a header row, and at least one data row unless the
   agreement allows empty extracts. When the agreement lists its fields, the header must hold
   exactly those columns, each once, compared exactly (case and spaces count). A header-only
   file is treated as an empty extract (reason ``empty``), not as a schema mismatch, because its
   columns may be right and ``allow_empty`` is the rule that governs it.
3. **The verdict does not depend on chunking**: the first fault by file offset wins, and a
   decision that needs the next byte (a CR that may start a CRLF) waits for it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from exchange.errors import InvariantError
from exchange.model import ReasonCode

__all__ = [
    "MAX_HEADER_BYTES",
    "Accepted",
    "ContentChecker",
    "CsvChecker",
    "CsvHeaderChecker",
    "Decision",
    "OpaqueChecker",
    "Refused",
    "TextChecker",
    "Utf8Validator",
]

#: A header longer than this is refused rather than buffered: the checker's memory is bounded.
MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Accepted:
    format: str
    empty: bool = False  # an empty extract the agreement allows: sent, and flagged


@dataclass(frozen=True, slots=True)
class Refused:
    reason: ReasonCode
    detail: str  # no file name, no cell value: see the module rules


Decision = Accepted | Refused


class ContentChecker(Protocol):
    """Fed the file's bytes in order, in chunks of any size, while the caller hashes them."""

    def feed(self, chunk: bytes) -> Refused | None:
        """A refusal as soon as one is certain (the caller may stop reading), else None."""

    def finish(self) -> Decision:
        """The decision once every byte was fed."""


def _at(line: int, offset: int) -> str:
    return f"line {line}, byte offset {offset}"


# 0xFF and 0xFE never occur in UTF-8, so a first byte of either is a UTF-16/32 byte order mark
# (or a binary file); one byte decides, so the verdict does not depend on chunking.
_WIDE_BOM_STARTS = (b"\xff", b"\xfe")


def _wide_bom() -> Refused:
    return Refused(
        ReasonCode.ENCODING,
        f"{_at(1, 0)}: utf-16 or utf-32 byte order mark (save the file as csv utf-8)",
    )


class Utf8Validator:
    """Strict UTF-8 and no NUL bytes, over the whole file in constant memory. Faults are
    reported as line and byte offset only."""

    def __init__(self) -> None:
        self._offset = 0  # bytes before self._pending, all valid
        self._line = 1
        self._pending = b""  # an incomplete multi-byte sequence split across chunks (<= 3 bytes)
        self._refused: Refused | None = None
        self.fault_offset: int | None = None  # where the refusal's fault is

    def feed(self, chunk: bytes) -> Refused | None:
        if self._refused is not None:
            return self._refused
        data = self._pending + chunk
        good = len(data)
        bad: int | None = None
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.end == len(data) and error.reason == "unexpected end of data":
                good = error.start
            else:
                bad = error.start
        nul = data.find(b"\x00", 0, good if bad is None else bad)
        self.fault_offset = self._offset + (nul if nul != -1 else bad if bad is not None else 0)
        if nul != -1:
            line = self._line + data.count(b"\n", 0, nul)
            detail = f"{_at(line, self._offset + nul)}: NUL byte (is the file utf-16 or binary?)"
            self._refused = Refused(ReasonCode.ENCODING, detail)
        elif bad is not None and self._offset + bad == 0 and data[:1] in _WIDE_BOM_STARTS:
            self._refused = _wide_bom()
        elif bad is not None:
            line = self._line + data.count(b"\n", 0, bad)
            detail = f"{_at(line, self._offset + bad)}: not valid utf-8 (save the file as utf-8)"
            self._refused = Refused(ReasonCode.ENCODING, detail)
        else:
            self.fault_offset = None
            self._line += data.count(b"\n", 0, good)
            self._offset += good
            self._pending = data[good:]
        return self._refused

    def finish(self) -> Refused | None:
        if self._refused is None and self._pending:
            self.fault_offset = self._offset
            detail = f"{_at(self._line, self._offset)}: the file ends inside a utf-8 sequence"
            self._refused = Refused(ReasonCode.ENCODING, detail)
        return self._refused


_UTF8_BOM = b"\xef\xbb\xbf"
_QUOTE_OR_EOL = re.compile(rb'["\r\n]')
_QUOTE, _CR, _LF = ord('"'), ord("\r"), ord("\n")
_MAX_NAMED = 20


def _show(column: str) -> str:
    escaped = column.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped[:64]}"' + ("..." if len(escaped) > 64 else "")


def _show_all(columns: list[str]) -> str:
    shown = ", ".join(_show(c) for c in columns[:_MAX_NAMED])
    more = len(columns) - _MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def _split_header(text: str) -> list[str] | str:
    """RFC 4180 fields of one header record, or a description of why it is not valid CSV."""
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            parts: list[str] = []
            i += 1
            while True:
                j = text.find('"', i)
                if j < 0:
                    return f"column {len(fields) + 1} has an unterminated quote"
                parts.append(text[i:j])
                if text.startswith('"', j + 1):
                    parts.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            if i < n and text[i] != ",":
                return f"column {len(fields) + 1} has text after its closing quote"
            fields.append("".join(parts))
        else:
            j = text.find(",", i)
            j = n if j < 0 else j
            if '"' in text[i:j]:
                return f"column {len(fields) + 1} has a quote inside an unquoted name"
            fields.append(text[i:j])
            i = j
        if i >= n:
            return fields
        i += 1


def _compare_columns(header: list[str], allowed: tuple[str, ...]) -> Refused | None:
    if not set(header) & set(allowed):
        return Refused(
            ReasonCode.SCHEMA_MISMATCH,
            f"no column matches the agreement (is the header row missing?); the file has "
            f"{len(header)} columns, the agreement lists {len(allowed)}",
        )
    counts = Counter(header)
    duplicates = [c for c, n in counts.items() if n > 1]
    extra = [c for c in counts if c not in allowed]
    missing = [c for c in allowed if c not in counts]
    problems = []
    if extra:
        problems.append(f"columns not in the agreement: {_show_all(extra)}")
    if missing:
        problems.append(f"columns missing: {_show_all(missing)}")
    if duplicates:
        problems.append(f"duplicate columns: {_show_all(duplicates)}")
    if problems:
        return Refused(ReasonCode.SCHEMA_MISMATCH, "; ".join(problems))
    return None


class CsvHeaderChecker:
    """Finds and checks the header record of a CSV streamed in chunks.

    :meth:`feed` returns None until the header record is complete, then its decision (and the
    same decision for every later call). ``header_end`` is then the offset just past the
    header's line terminator, and ``terminator`` that terminator (None if the file ended first).
    """

    def __init__(
        self, allowed_fields: tuple[str, ...] | None, *, max_header_bytes: int = MAX_HEADER_BYTES
    ) -> None:
        self._allowed = allowed_fields
        self._max = max_header_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes before this were looked at for quotes and line breaks
        self._in_quotes = False
        self._decision: Decision | None = None
        self.header_end: int | None = None
        self.terminator: bytes | None = None

    def feed(self, chunk: bytes) -> Decision | None:
        if self._decision is not None:
            return self._decision
        buffer = self._buffer
        buffer += chunk
        position = self._scanned
        while (match := _QUOTE_OR_EOL.search(buffer, position)) is not None:
            found = match.start()
            position = found + 1
            if buffer[found] == _QUOTE:
                self._in_quotes = not self._in_quotes
            elif self._in_quotes:
                continue
            elif buffer[found] == _LF:
                return self._complete(found, b"\n")
            elif found + 1 == len(buffer):
                self._scanned = found  # a CR ending the chunk: is it CRLF? look again next time
                return None
            else:
                return self._complete(found, b"\r\n" if buffer[found + 1] == _LF else b"\r")
        self._scanned = len(buffer)
        if len(buffer) > self._max:
            self._decision = Refused(
                ReasonCode.SCHEMA_MISMATCH,
                f"no end of the header row in the first {self._max} bytes "
                f"(an unterminated quote, or not a csv file)",
            )
        return self._decision

    def finish(self) -> Decision:
        """The decision when the file has ended; a file with no line break is all header."""
        if self._decision is not None:
            return self._decision
        if self._in_quotes:
            self._decision = Refused(
                ReasonCode.SCHEMA_MISMATCH, "the header row has an unterminated quote"
            )
            return self._decision
        if self._scanned < len(self._buffer):  # the file ends with CR
            return self._complete(self._scanned, b"\r")
        self.header_end = len(self._buffer)
        self._decision = self._judge(bytes(self._buffer))
        return self._decision

    def _complete(self, end: int, terminator: bytes) -> Decision:
        self.terminator = terminator
        self.header_end = end + len(terminator)
        self._decision = self._judge(bytes(self._buffer[:end]))
        self._buffer = bytearray()
        return self._decision

    def _judge(self, header: bytes) -> Decision:
        if header[:1] in _WIDE_BOM_STARTS:
            return _wide_bom()
        skip = len(_UTF8_BOM) if header.startswith(_UTF8_BOM) else 0
        nul = header.find(b"\x00")
        if nul != -1:
            line = 1 + header.count(b"\n", 0, nul)
            return Refused(ReasonCode.ENCODING, f"{_at(line, nul)}: NUL byte in the header row")
        try:
            text = header[skip:].decode("utf-8")
        except UnicodeDecodeError as error:
            line = 1 + header.count(b"\n", 0, skip + error.start)
            detail = f"{_at(line, skip + error.start)}: not valid utf-8 (save the file as utf-8)"
            return Refused(ReasonCode.ENCODING, detail)
        if not text:
            return Refused(ReasonCode.SCHEMA_MISMATCH, "the first line is empty; expected a header")
        fields = _split_header(text)
        if isinstance(fields, str):
            return Refused(ReasonCode.SCHEMA_MISMATCH, f"the header row is not valid csv: {fields}")
        if self._allowed is not None:
            refused = _compare_columns(fields, self._allowed)
            if refused is not None:
                return refused
        return Accepted("csv")


_EOL_NAMES = {b"\n": "LF", b"\r\n": "CRLF", b"\r": "a bare CR"}


class CsvChecker:
    """The whole CSV policy (module rule 2) over a stream: encoding, header, line endings
    outside quoted cells, and whether any data row follows the header."""

    def __init__(
        self,
        allowed_fields: tuple[str, ...] | None,
        *,
        allow_empty: bool,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self._allow_empty = allow_empty
        self._utf8 = Utf8Validator()
        self._header = CsvHeaderChecker(allowed_fields, max_header_bytes=max_header_bytes)
        self._in_body = False
        self._offset = 0  # offset of the next chunk's first byte
        self._line = 1  # line number at self._offset
        self._in_quotes = False
        self._cr_pending = False  # the body's previous chunk ended with CR outside quotes
        self._has_rows = False
        self._refused: Refused | None = None

    def feed(self, chunk: bytes) -> Refused | None:
        if self._refused is None:
            self._refused = self._check(chunk)
        self._line += chunk.count(b"\n")
        self._offset += len(chunk)
        return self._refused

    # The first fault by file offset wins, so the verdict is the same however the file is
    # chunked: encoding faults in the header come before the header's own verdict, and in the
    # body an encoding fault and a line-ending fault in one chunk are ordered by offset.

    def _check(self, chunk: bytes) -> Refused | None:
        if self._in_body:
            return self._body(chunk, 0)
        decision = self._header.feed(chunk)
        if decision is None:
            return self._utf8.feed(chunk)
        end = self._header.header_end
        if end is None or end < self._offset:
            raise InvariantError("csv: the header ended before the current chunk")
        split = end - self._offset
        refused = self._utf8.feed(chunk[:split])
        if refused is not None:
            return refused
        if isinstance(decision, Refused):
            return decision
        self._in_body = True
        if self._header.terminator == b"\r":
            return self._eol_fault(b"\r", end - 1, self._line + chunk.count(b"\n", 0, split))
        return self._body(chunk, split)

    def _body(self, chunk: bytes, start: int) -> Refused | None:
        encoding = self._utf8.feed(chunk[start:])
        eol = self._scan_body(chunk, start)
        if encoding is None:
            return None if eol is None else eol[1]
        fault = self._utf8.fault_offset
        if eol is not None and fault is not None and eol[0] < fault:
            return eol[1]
        return encoding

    def _scan_body(self, chunk: bytes, start: int) -> tuple[int, Refused] | None:
        if not self._has_rows and chunk[start:].translate(None, b"\r\n"):
            self._has_rows = True
        if self._cr_pending:  # a CR ended the previous chunk: CRLF or bare CR?
            self._cr_pending = False
            ending = b"\r\n" if chunk.startswith(b"\n") else b"\r"
            if ending != self._header.terminator:
                return self._offset - 1, self._eol_fault(ending, self._offset - 1, self._line)
            start += len(ending) - 1
        if self._clean(chunk, start):
            return None
        for match in _QUOTE_OR_EOL.finditer(chunk, start):
            found = match.start()
            token = chunk[found]
            if token == _QUOTE:
                self._in_quotes = not self._in_quotes
                continue
            if self._in_quotes or (token == _LF and found > start and chunk[found - 1] == _CR):
                continue  # a line break inside a quoted cell, or the LF of a CRLF judged already
            if token == _CR and found + 1 == len(chunk):
                self._cr_pending = True
                continue
            ending = b"\n" if token == _LF else b"\r\n" if chunk[found + 1] == _LF else b"\r"
            if ending != self._header.terminator:
                line = self._line + chunk.count(b"\n", 0, found)
                return self._offset + found, self._eol_fault(ending, self._offset + found, line)
        return None

    def _clean(self, chunk: bytes, start: int) -> bool:
        """The fast path for a chunk with no fault (nearly all of them): split at the quotes and
        check the line endings of the unquoted pieces with C string methods. True if they are
        all the header's (and the quote state is then advanced); False means "scan it
        properly", which finds the exact fault or a CR split across chunks."""
        if chunk.endswith(b"\r"):
            return False
        pieces = chunk[start:].split(b'"')
        crlf = self._header.terminator == b"\r\n"
        inside = self._in_quotes
        for piece in pieces:
            if not inside:
                if crlf:
                    if not piece.count(b"\n") == piece.count(b"\r\n") == piece.count(b"\r"):
                        return False
                elif b"\r" in piece:
                    return False
            inside = not inside
        if len(pieces) % 2 == 0:  # an odd number of quotes
            self._in_quotes = not self._in_quotes
        return True

    def _eol_fault(self, found: bytes, offset: int, line: int) -> Refused:
        expected = _EOL_NAMES.get(self._header.terminator or b"", "none")
        return Refused(
            ReasonCode.ENCODING,
            f"{_at(line, offset)}: a line ends with {_EOL_NAMES[found]}, the header with "
            f"{expected}; line endings must be LF or CRLF throughout",
        )

    def finish(self) -> Decision:
        if self._refused is not None:
            return self._refused
        self._refused = self._utf8.finish()
        if self._refused is not None:
            return self._refused
        if self._cr_pending:
            return self._eol_fault(b"\r", self._offset - 1, self._line)
        if not self._in_body:
            header = self._header.finish()
            if isinstance(header, Refused):
                return header
            if self._header.terminator == b"\r":
                return self._eol_fault(b"\r", self._offset - 1, self._line)
        if not self._has_rows:
            if self._allow_empty:
                return Accepted("csv", empty=True)
            return Refused(ReasonCode.EMPTY, "the file has a header row and no data rows")
        return Accepted("csv")


class TextChecker:
    """Text formats other than CSV (JSON must be UTF-8 by RFC 8259): encoding only."""

    def __init__(self, fmt: str) -> None:
        self._format = fmt
        self._utf8 = Utf8Validator()

    def feed(self, chunk: bytes) -> Refused | None:
        return self._utf8.feed(chunk)

    def finish(self) -> Decision:
        return self._utf8.finish() or Accepted(self._format)


class OpaqueChecker:
    """Binary formats (xlsx and others): nothing to check in the stream."""

    def __init__(self, fmt: str) -> None:
        self._format = fmt

    def feed(self, chunk: bytes) -> Refused | None:
        return None

    def finish(self) -> Decision:
        return Accepted(self._format)
