"""Value types shared by every layer.

Rules:

1. Stdlib only, plus :mod:`exchange.errors`. No I/O, no clock, no logging.
2. Every type here is immutable and validates itself on construction, so a value that exists is
   a value that is well formed. Constructing one from bad input raises :class:`ValueError`;
   code that handles outside input (a manifest, a receipt, a file name) checks with
   ``is_valid`` first, or catches ``ValueError`` and turns it into its own error.
3. Keep it small: a type belongs here only when two layers pass it between them.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["DatasetId", "ReasonCode", "Sha256", "VersionKind"]


class ReasonCode(enum.Enum):
    """Why a file was refused or an incident raised. The values are stable: they go into the
    ledger, reason files, log lines and ``exchange status --json``."""

    # intake refusals (TESTPLAN A)
    EMPTY = "empty"
    TOO_LARGE = "too-large"
    FORMAT_NOT_ALLOWED = "format-not-allowed"
    SCHEMA_MISMATCH = "schema-mismatch"
    ENCODING = "encoding"
    NOT_REGULAR_FILE = "not-regular-file"
    SYMLINK = "symlink"
    HARD_LINK = "hard-link"
    CHANGED = "changed"  # the file changed (size, mtime or inode) while it was being taken
    DUPLICATE = "duplicate"
    NAME_UNSAFE = "name-unsafe"
    PERMISSION = "permission"
    # delivery and hub incidents (TESTPLAN B, C, E)
    POISONED = "poisoned"  # a delivery failed every attempt; its spool copy went to quarantine
    HOST_KEY_MISMATCH = "host-key-mismatch"
    AUTH_FAILED = "auth-failed"
    KEY_MISSING = "key-missing"
    KEY_INVALID = "key-invalid"
    HUB_UNREACHABLE = "hub-unreachable"
    HUB_FULL = "hub-full"
    SIGNATURE_INVALID = "signature-invalid"
    DECRYPT_FAILED = "decrypt-failed"
    REPLAY = "replay"
    UNEXPECTED_FILE = "unexpected-file"
    RECEIPT_REJECTED = "receipt-rejected"
    RECEIPT_OVERDUE = "receipt-overdue"  # no receipt within the agreement's window (C30)


_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Sha256:
    """A SHA-256 digest as 64 lower-case hex digits, the one spelling we store and compare."""

    hex: str

    def __post_init__(self) -> None:
        if not self.is_valid(self.hex):
            raise ValueError("sha256: expected 64 lower-case hex digits")

    @staticmethod
    def is_valid(text: str) -> bool:
        return _HEX64.fullmatch(text) is not None

    @classmethod
    def of_digest(cls, digest: bytes) -> Sha256:
        """From the 32 raw bytes of ``hashlib.sha256(...).digest()``."""
        if len(digest) != 32:
            raise ValueError(f"sha256: expected 32 digest bytes, got {len(digest)}")
        return cls(digest.hex())

    def __str__(self) -> str:
        return self.hex


@dataclass(frozen=True, slots=True)
class DatasetId:
    """A dataset's identity: generated, never derived from a file name, and safe to place in a
    remote name, a log line or a path component as it is (the pattern is an allow-list)."""

    PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"ds-[0-9a-f]{32}")

    value: str

    def __post_init__(self) -> None:
        if not self.is_valid(self.value):
            raise ValueError("dataset id: expected 'ds-' and 32 lower-case hex digits")

    @classmethod
    def is_valid(cls, text: str) -> bool:
        return cls.PATTERN.fullmatch(text) is not None

    @classmethod
    def from_uuid(cls, value: uuid.UUID) -> DatasetId:
        """The shell draws the UUID (``uuid.uuid4()``); pure code never draws randomness."""
        return cls(f"ds-{value.hex}")

    def __str__(self) -> str:
        return self.value


class VersionKind(enum.Enum):
    """How a version of a dataset came to exist; stored in the ledger."""

    REGULAR = "regular"  # dropped in an outbox and taken by intake
    CORRECTION = "correction"  # `exchange correct`: supersedes an earlier version (protocol §8)
    MANUAL = "manual"  # `exchange send`: out of schedule, with a written reason (protocol §3)
