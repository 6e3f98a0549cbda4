"""Logging: the only module that calls ``structlog.configure``.

Rules:

1. Events have stable, dotted, lower-case names (``intake.refused``, ``delivery.sent``) and
   carry ids, sizes, hashes and reason codes as fields. docs/operations.md lists them.
2. No personal data: a ``redact`` processor drops every field that is not on the allow-list
   below, so a careless ``log.info(..., row=cells)`` never reaches the journal.
3. Text that came from outside (file names, remote names) is escaped to printable ASCII, so a
   name with a newline or an escape sequence cannot forge or break a log line.
4. JSON lines when stdout is not a terminal (journald, files); a console renderer on a
   terminal. Logs go to stderr so that command output on stdout stays clean for scripts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

#: Fields that may appear in a log line. Anything else is dropped by ``redact``.
ALLOWED_FIELDS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "agreement",
        "partner",
        "recipient",
        "sender",
        "dataset",
        "version",
        "delivery",
        "incident",
        "reason",
        "reason_code",
        "detail",
        "columns",
        "size",
        "bytes",
        "sha256",
        "ciphertext_sha256",
        "remote_name",
        "file",
        "path",
        "attempt",
        "attempts",
        "retry_at",
        "duration_s",
        "state",
        "from_state",
        "to_state",
        "count",
        "error",
        "hint",
        "host",
        "port",
        "fingerprint",
        "next_run",
        "pid",
        "signal",
        "exc_info",
    }
)

#: Fields whose values came from outside and must be escaped.
_ESCAPED_FIELDS = frozenset({"file", "path", "remote_name", "detail", "error", "columns"})


def escape_text(value: str) -> str:
    """Printable ASCII only: anything else becomes a backslash escape.

    Undecodable bytes (carried as surrogate escapes, see ``escape_bytes``) come out as
    ``\\xNN``, other characters as ``\\n``, ``\\xNN``, ``\\uNNNN`` like ``repr``.
    """
    out = []
    for char in value:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def escape_bytes(value: bytes) -> str:
    """A file name as the kernel gave it (any bytes) rendered safely."""
    return escape_text(value.decode("utf-8", errors="surrogateescape"))


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Drop fields not on the allow-list and escape outside text."""
    for key in list(event_dict):
        if key not in ALLOWED_FIELDS:
            del event_dict[key]
            continue
        value = event_dict[key]
        if key in _ESCAPED_FIELDS:
            if isinstance(value, bytes):
                event_dict[key] = escape_bytes(value)
            elif isinstance(value, str):
                event_dict[key] = escape_text(value)
            elif isinstance(value, (list, tuple)):
                event_dict[key] = [escape_text(str(item)) for item in value]
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing.

    Binding the stream at configure time would keep a replaced stream (a test's capture, a
    closed pipe) for every later log line of the process.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process."""
    out: Any = stream if stream is not None else _CurrentStderr()
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger()
