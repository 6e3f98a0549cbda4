"""The outbox's vocabulary: outcomes, errors, crash point names. See the package docstring."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from exchange.errors import ExchangeError
from exchange.model import ReasonCode, Sha256

#: Named steps where the crash tests kill the process (docs/DESIGN.md, TESTPLAN D31), in the
#: order they are reached.
CRASH_POINTS: Final = (
    "intake.after_validate",  # content streamed and judged; spool temp written, not fsynced
    "intake.after_spool_write",  # spool temp complete and read-only, before its fsync
    "intake.after_spool_copy",  # spool copy renamed and spool directory fsynced (durable)
    "intake.before_outbox_unlink",  # identity re-checked, original about to be unlinked
    "intake.after_outbox_unlink",  # unlinked, outbox directory fsynced
    "quarantine.after_reason_file",  # reason file durable, entry not yet moved
    "quarantine.after_move",  # entry renamed into quarantine, both directories fsynced
)

CrashPoint = Callable[[str], None]

_log = structlog.get_logger()


def no_crash(_name: str) -> None:
    """The default crash hook: production code never crashes on purpose."""


class OutboxError(ExchangeError):
    """An outbox, spool or quarantine directory cannot be used as configured."""

    default_hint = "check the folder paths in config/exchange.toml and that the folders exist"


class OutboxMoved(OutboxError):
    """A folder path no longer leads to the directory opened at start-up (TESTPLAN A2)."""

    default_hint = (
        "someone replaced the folder or a parent with a link or another directory; intake for "
        "this agreement is paused: restore the folder, check for tampering, then restart"
    )


Identity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


@dataclass(frozen=True, slots=True)
class Taken:
    """The spool copy is durable; the original is still in the outbox until
    :meth:`Outbox.remove_original` (write-ordering invariant 1)."""

    agreement: str
    original_name: bytes
    spool_path: Path
    sha256: Sha256
    size: int
    format: str
    empty: bool  # an empty extract the agreement allows: sent, and flagged
    already_spooled: bool  # identical content was already in the spool (a retake after a crash)
    identity: Identity  # of the original, so removal can check it is still the same file


@dataclass(frozen=True, slots=True)
class Quarantined:
    """The entry was moved into quarantine, beside its reason file."""

    agreement: str
    original_name: bytes
    path: Path  # where the entry now is
    reason_path: Path
    reason: ReasonCode
    detail: str  # names columns and offsets, never a cell value or the file name
    size: int | None  # None for what is not a regular file
    sha256: Sha256 | None  # known when the whole content was read


class SkipReason(enum.Enum):
    NOT_CANDIDATE = "not-candidate"  # hidden or temporary name: not ours to touch
    VANISHED = "vanished"  # the entry went away before we got to it


@dataclass(frozen=True, slots=True)
class Skipped:
    """Nothing to do and nothing to report."""

    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Retry:
    """Left in place; try again later (after a backoff, and with an incident, for
    ``PERMISSION`` or a local I/O failure)."""

    reason: ReasonCode | None  # CHANGED, PERMISSION, or None for a local I/O failure
    detail: str


@dataclass(frozen=True, slots=True)
class Removed:
    """The original is gone from the outbox and the removal is durable."""

    agreement: str
    original_name: bytes
    was_present: bool  # False: it was already gone (a retry after a crash past the unlink)


Outcome = Taken | Quarantined | Skipped | Retry


def defer(agreement: str, raw: bytes, reason: ReasonCode | None, detail: str) -> Retry:
    """Log ``intake.deferred`` and return the :class:`Retry` that says so."""
    _log.warning(
        "intake.deferred",
        agreement=agreement,
        file=raw,
        reason_code=None if reason is None else reason.value,
        detail=detail,
    )
    return Retry(reason, detail)
