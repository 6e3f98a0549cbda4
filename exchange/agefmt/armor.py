"""ASCII armor: strict RFC 7468 PEM with the label "AGE ENCRYPTED FILE" (C2SP age.md).

Rules:

1. The writer emits exactly what stock ``age -a`` emits: the BEGIN line, base64 lines of 64
   columns (the last one shorter, or full when the data is a multiple of 48 bytes), the END
   line, each ended by LF.
2. The reader accepts only that canonical form, with two allowances from the spec: LF or CRLF
   line ends, and whitespace (at most :data:`MAX_WHITESPACE` bytes) before the BEGIN line
   and after the END line. Everything else (headers, checksums, short or long lines,
   non-canonical base64, trailing garbage) is an :class:`ArmorError`, because a lax armor
   parser makes armored files malleable.
3. Both stream: memory is bounded by one read block whatever the file size.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from exchange.errors import ArmorError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
BYTES_PER_LINE = COLUMNS // 4 * 3
MAX_WHITESPACE = 1024
_WHITESPACE = b" \t\r\n"
_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_READ_BLOCK = 64 * 1024

Read = Callable[[int], bytes]
Write = Callable[[bytes], object]


class ArmorWriter:
    """Armors what is written to it; :meth:`close` writes the last line and the END line."""

    __slots__ = ("_pending", "_write")

    def __init__(self, write: Write) -> None:
        self._write = write
        self._pending = b""
        write(BEGIN + b"\n")

    def write(self, data: bytes | bytearray) -> None:
        data = self._pending + bytes(data)
        # Keep at least one byte back, so the last line is written by close() even when the
        # data is a multiple of 48 bytes (it is then a full line).
        whole = (len(data) - 1) // BYTES_PER_LINE * BYTES_PER_LINE if data else 0
        if whole:
            self._write(_lines(data[:whole]))
        self._pending = data[whole:]

    def close(self) -> None:
        if self._pending:
            self._write(_lines(self._pending))
        self._pending = b""
        self._write(END + b"\n")


def _lines(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i : i + COLUMNS] + b"\n" for i in range(0, len(text), COLUMNS))


class ArmorReader:
    """Decodes an armored stream; ``read(n)`` returns up to n bytes, b"" at the end."""

    __slots__ = ("_buf", "_decoded", "_ended", "_read", "_started")

    def __init__(self, read: Read, prefix: bytes = b"") -> None:
        self._read = read
        self._buf = bytearray(prefix)
        self._decoded = bytearray()
        self._started = False
        self._ended = False

    def read(self, size: int) -> bytes:
        while len(self._decoded) < size and not self._ended:
            self._decode_some()
        out = bytes(self._decoded[:size])
        del self._decoded[:size]
        return out

    def _fill(self) -> bool:
        more = self._read(_READ_BLOCK)
        self._buf += more
        return bool(more)

    def _line(self) -> bytes | None:
        """The next line without its LF or CRLF, or None at end of input."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line.removesuffix(b"\r")
            if len(self._buf) > MAX_WHITESPACE + len(BEGIN) + 2:
                raise ArmorError("armor: line too long")
            if not self._fill():
                if not self._buf:
                    return None
                line = bytes(self._buf)
                self._buf.clear()
                return line.removesuffix(b"\r")

    def _start(self) -> None:
        skipped = 0
        last_skipped = b"\n"
        while True:
            if not self._buf and not self._fill():
                raise ArmorError("armor: no BEGIN line")
            stripped = self._buf.lstrip(_WHITESPACE)
            if len(stripped) < len(self._buf):
                last_skipped = bytes(self._buf[len(self._buf) - len(stripped) - 1 :][:1])
            skipped += len(self._buf) - len(stripped)
            if skipped > MAX_WHITESPACE:
                raise ArmorError("armor: too much whitespace before the BEGIN line")
            self._buf = stripped
            if stripped:
                break
        # Whitespace is allowed around the block, not inside it: the BEGIN line starts a line.
        line = self._line()
        if last_skipped != b"\n":
            line = None
        if line != BEGIN:
            raise ArmorError("armor: the first line is not '-----BEGIN AGE ENCRYPTED FILE-----'")
        self._started = True

    def _decode_some(self) -> None:
        if not self._started:
            self._start()
        line = self._line()
        if line is None:
            raise ArmorError("armor: the file ends without the END line")
        if line == END:
            self._finish()
            return
        if len(line) > COLUMNS or len(line) % 4 or not line or not _LINE.fullmatch(line):
            raise ArmorError("armor: a line is not canonical 64-column base64")
        try:
            data = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise ArmorError("armor: a line is not valid base64") from None
        if base64.b64encode(data) != line:
            raise ArmorError("armor: a line is not canonical base64")
        self._decoded += data
        if len(data) < BYTES_PER_LINE:
            if self._line() != END:
                raise ArmorError("armor: a short line that is not followed by the END line")
            self._finish()

    def _finish(self) -> None:
        self._ended = True
        trailing = len(self._buf)
        while trailing <= MAX_WHITESPACE and self._fill():
            trailing = len(self._buf)
        if self._buf.strip(_WHITESPACE):
            raise ArmorError("armor: data after the END line")
        if trailing > MAX_WHITESPACE:
            raise ArmorError("armor: too much whitespace after the END line")
        self._buf.clear()
