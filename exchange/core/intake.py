"""Intake decisions: is this outbox entry a dataset we may take, under this agreement?

Pure: the caller (the service, through fsutil) stats and reads; this module only looks at the
values it is given and returns :class:`Accepted` or :class:`Refused`. A refusal is a value,
never an exception: the caller moves the file to quarantine with the reason and raises an
incident, and nothing is deleted.

Rules:

1. **Names are data.** Hidden and temporary names (dotfiles, ``*.part``, ``*.tmp``, ``~$*``)
   are not candidates at all (:func:`is_candidate_name`); the rest are checked, and a name
   that is not valid UTF-8, holds a control or invisible character, or starts with ``-`` is
   refused as ``name-unsafe``. No detail string ever contains the file name: names can carry
   personal data ("smith-jane-referral.csv") and details go to logs and reason files.
2. **No cell value ever appears in a detail** either (see :mod:`exchange.core.textcheck`,
   which holds the streaming content checks and the CSV policy).
3. **Checks run cheapest and most security-relevant first**: file type, link count, name,
   format, size; then the content, streamed in chunks by the caller while it hashes, so a
   multi-gigabyte file is checked in constant memory.
4. **Formats are extensions**: a file's format is its lower-cased extension, which must be in
   the agreement's ``formats``; ``content_checker`` picks the streaming check for it.
"""

from __future__ import annotations

import enum
import stat
import unicodedata
from dataclasses import dataclass

from exchange.core.textcheck import (
    MAX_HEADER_BYTES,
    Accepted,
    ContentChecker,
    CsvChecker,
    CsvHeaderChecker,
    Decision,
    OpaqueChecker,
    Refused,
    TextChecker,
    Utf8Validator,
)
from exchange.errors import InvariantError
from exchange.model import ReasonCode

# The verdicts and checkers are re-exported: callers need only this module.
__all__ = [
    "MAX_HEADER_BYTES",
    "Accepted",
    "Candidate",
    "ContentChecker",
    "CsvChecker",
    "CsvHeaderChecker",
    "Decision",
    "FileKind",
    "IntakeRules",
    "Refused",
    "Utf8Validator",
    "check_name",
    "content_checker",
    "decide",
    "is_candidate_name",
]


@dataclass(frozen=True, slots=True)
class IntakeRules:
    """What an agreement allows, as the config loader builds it."""

    formats: tuple[str, ...]  # lower-case file extensions without the dot: ("csv", "xlsx")
    allowed_fields: tuple[str, ...] | None  # None: the agreement does not constrain columns
    max_size_bytes: int
    allow_empty: bool

    def __post_init__(self) -> None:
        if not self.formats or any(f != f.lower() or not f.isalnum() for f in self.formats):
            raise ValueError("intake rules: formats must be lower-case extensions without dots")
        if self.max_size_bytes < 1:
            raise ValueError("intake rules: max_size_bytes must be positive")
        fields = self.allowed_fields
        if fields is not None and (not fields or len(set(fields)) != len(fields)):
            raise ValueError("intake rules: allowed_fields must be non-empty and unique")


class FileKind(enum.Enum):
    REGULAR = "regular"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"
    CHAR_DEVICE = "char-device"
    BLOCK_DEVICE = "block-device"
    OTHER = "other"

    @classmethod
    def from_mode(cls, mode: int) -> FileKind:
        """From an ``lstat``/``fstat`` ``st_mode`` (pure bit tests, no I/O)."""
        tests = (
            (stat.S_ISLNK, cls.SYMLINK),
            (stat.S_ISREG, cls.REGULAR),
            (stat.S_ISDIR, cls.DIRECTORY),
            (stat.S_ISFIFO, cls.FIFO),
            (stat.S_ISSOCK, cls.SOCKET),
            (stat.S_ISCHR, cls.CHAR_DEVICE),
            (stat.S_ISBLK, cls.BLOCK_DEVICE),
        )
        return next((kind for test, kind in tests if test(mode)), cls.OTHER)


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the caller learned from ``lstat`` on the directory entry."""

    name: bytes | str  # the raw entry name; str only if it came from a str listing
    size: int  # st_size: the apparent size, so a sparse 100 GB file counts as 100 GB
    kind: FileKind
    nlink: int


# --- names ------------------------------------------------------------------------------------

_TEMP_SUFFIXES = (b".part", b".tmp")
# Cc control, Cf format (bidi overrides, zero-width), Cs lone surrogate, Co private use,
# Zl/Zp line and paragraph separators: each can hide or spoof part of a name on screen.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _name_bytes(name: bytes | str) -> bytes | None:
    if isinstance(name, bytes):
        return name
    try:
        # A str listing maps undecodable bytes to lone surrogates; this maps them back.
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def is_candidate_name(name: bytes | str) -> bool:
    """False for names that are never datasets: hidden files and writers' temporary files.
    They stay in the outbox untouched, so a file being copied in is not taken half-written."""
    raw = _name_bytes(name)
    if raw is None:
        return True  # not hidden or temporary by any spelling; check_name refuses it
    lowered = raw.lower()
    return not (raw.startswith((b".", b"~$")) or lowered.endswith(_TEMP_SUFFIXES))


def check_name(name: bytes | str) -> Refused | None:
    """A refusal if the name is unsafe to store, show or handle; None if it is fine."""
    raw = _name_bytes(name)
    if raw is None:
        return Refused(ReasonCode.NAME_UNSAFE, "file name holds an unpaired surrogate")
    if not raw or len(raw) > 255 or b"/" in raw or b"\x00" in raw:
        return Refused(ReasonCode.NAME_UNSAFE, "file name is empty, too long or holds / or NUL")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Refused(
            ReasonCode.NAME_UNSAFE, f"file name is not valid utf-8 at byte offset {error.start}"
        )
    if text.startswith("-"):
        return Refused(ReasonCode.NAME_UNSAFE, "file name starts with '-'")
    for position, char in enumerate(text):
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            return Refused(
                ReasonCode.NAME_UNSAFE,
                f"file name holds a control or invisible character U+{ord(char):04X} "
                f"at character {position + 1}",
            )
    return None


def _extension(raw: bytes) -> str | None:
    stem, dot, ext = raw.rpartition(b".")
    if not dot or not stem:
        return None
    return ext.decode("utf-8", "replace").lower()


# --- the metadata decision --------------------------------------------------------------------


def decide(rules: IntakeRules, candidate: Candidate) -> Decision:
    """Accept or refuse a candidate from its directory entry alone, before opening it.

    ``Accepted`` here means "worth reading": for text formats the caller then streams the
    content through :func:`content_checker` and takes that checker's decision.
    """
    if not is_candidate_name(candidate.name):
        raise InvariantError("intake: decide() called for a hidden or temporary name")
    if candidate.kind is FileKind.SYMLINK:
        return Refused(ReasonCode.SYMLINK, "the entry is a symbolic link; links are not followed")
    if candidate.kind is not FileKind.REGULAR:
        return Refused(
            ReasonCode.NOT_REGULAR_FILE, f"the entry is a {candidate.kind.value}, not a file"
        )
    if candidate.nlink != 1:
        return Refused(
            ReasonCode.HARD_LINK,
            f"the file has {candidate.nlink} hard links; only a file with one link is taken",
        )
    refused = check_name(candidate.name)
    if refused is not None:
        return refused
    raw = _name_bytes(candidate.name)
    ext = _extension(raw) if raw is not None else None
    allowed = ", ".join(rules.formats)
    if ext is None:
        return Refused(
            ReasonCode.FORMAT_NOT_ALLOWED, f"file name has no extension; allowed: {allowed}"
        )
    if ext not in rules.formats:
        shown = f"'.{ext}'" if len(ext) <= 10 and ext.isalnum() else "its extension"
        return Refused(
            ReasonCode.FORMAT_NOT_ALLOWED, f"format {shown} is not allowed; allowed: {allowed}"
        )
    if candidate.size == 0:
        if rules.allow_empty:
            return Accepted(ext, empty=True)
        return Refused(ReasonCode.EMPTY, "the file is empty (0 bytes)")
    if candidate.size > rules.max_size_bytes:
        return Refused(
            ReasonCode.TOO_LARGE,
            f"the file is {candidate.size} bytes; the agreement allows at most "
            f"{rules.max_size_bytes}",
        )
    return Accepted(ext)


# --- which content checker -------------------------------------------------------------------

_TEXT_FORMATS = frozenset({"json", "jsonl", "ndjson", "txt", "tsv", "xml"})


def content_checker(rules: IntakeRules, accepted: Accepted) -> ContentChecker:
    """The streaming checker for a file :func:`decide` accepted."""
    if accepted.format == "csv":
        return CsvChecker(rules.allowed_fields, allow_empty=rules.allow_empty)
    if accepted.format in _TEXT_FORMATS:
        return TextChecker(accepted.format)
    return OpaqueChecker(accepted.format)
