"""The error hierarchy and the exit-code table.

Rules:

1. Every error the user can cause or fix is an :class:`ExchangeError` subclass. It carries a
   lower-case message with no trailing period that names the file and key or the path, and a
   ``hint`` that says what to do. ``cli.main`` is the only place that renders them.
2. ``transient`` says whether retrying the same action later may succeed; retry loops read it
   and nothing else.
3. ``show_traceback`` is true only for :class:`InvariantError`: a bug, never the user's doing.
4. Exit codes are fixed here, once, and pinned by ``tests/unit/test_exit_codes.py``.

An intake refusal is a value, not an exception: it ends in quarantine and never reaches here.
"""

from __future__ import annotations

from typing import ClassVar


class ExchangeError(Exception):
    """Base class. Abstract: raise a subclass."""

    exit_code: ClassVar[int] = 1
    transient: ClassVar[bool] = False
    show_traceback: ClassVar[bool] = False
    default_hint: ClassVar[str | None] = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        if type(self) is ExchangeError:
            raise TypeError("ExchangeError is abstract: raise one of its subclasses")
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class UsageError(ExchangeError):
    """Bad flags or arguments on the command line."""

    exit_code = 2
    default_hint = "run the command with --help to see its usage"


class ConfigError(ExchangeError):
    """The configuration is invalid. ``problems`` holds every problem found, not only the first."""

    exit_code = 3
    default_hint = "fix the listed keys, then run 'exchange config check' again"

    def __init__(self, problems: list[str] | str, *, hint: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if not self.problems:
            raise InvariantError("ConfigError raised with no problems")
        count = len(self.problems)
        summary = self.problems[0] if count == 1 else f"{count} problems in the configuration"
        super().__init__(summary, hint=hint)


class KeyFileError(ExchangeError):
    """A key file is missing, has unsafe permissions, a bad encoding or a wrong fingerprint."""

    exit_code = 4


class FormatError(ExchangeError):
    """An age file, manifest or receipt is malformed or fails verification."""

    exit_code = 5


class HeaderError(FormatError):
    """The age header is malformed or its MAC does not verify."""

    default_hint = "the file is damaged or is not an age file; ask the sender to send it again"


class PayloadError(FormatError):
    """The age payload is truncated, damaged or has trailing data."""

    default_hint = "the file was damaged or cut short in transit; ask the sender to send it again"


class NoIdentityMatch(FormatError):
    """None of the identities given can open the file."""

    default_hint = "check that the file was encrypted to the public key of the identity you passed"


class ArmorError(FormatError):
    """ASCII armor is malformed."""

    default_hint = (
        "the armored file was altered (line endings, wrapping or padding); get a fresh copy"
    )


class ManifestError(FormatError):
    """A manifest or receipt is malformed, not canonical, or does not match what it describes."""


class SignatureError(FormatError):
    """A signature does not verify with the pinned key."""

    default_hint = "the data was altered or not signed by the key pinned for that partner"


class TransportError(ExchangeError):
    """Talking to the hub failed. Abstract: raise the transient or permanent subclass."""

    exit_code = 6


class TransientTransportError(TransportError):
    """A failure that may go away: timeout, refused or reset connection."""

    exit_code = 75  # EX_TEMPFAIL
    transient = True
    default_hint = "the hub may be down or unreachable; the work stays queued and is retried"


class PermanentTransportError(TransportError):
    """A failure that retrying will not fix: host key mismatch, auth, permission, disk full."""

    exit_code = 6


class HostKeyError(PermanentTransportError):
    """The hub's host key is unknown or changed: possible interception."""

    default_hint = (
        "do not re-pin the key without confirming its fingerprint with the hub's operator "
        "out of band; this has been recorded as an incident"
    )


class LedgerError(ExchangeError):
    """The ledger cannot be used."""

    exit_code = 7


class LedgerBusy(LedgerError):
    """The ledger is locked by another process."""

    exit_code = 75
    transient = True
    default_hint = "another exchange process holds the ledger; wait or stop it"


class LedgerCorrupt(LedgerError):
    """The ledger fails its integrity check; it is left untouched."""

    default_hint = "restore the ledger from backup (see docs/operations.md); it was not modified"


class PrerequisiteError(ExchangeError):
    """Something the command needs from the system is missing (a program, a privilege)."""

    exit_code = 9


class NotFoundError(ExchangeError):
    """A dataset, delivery, incident or file named on the command line does not exist."""

    exit_code = 10


class RefusedError(ExchangeError):
    """A request that is well formed but not allowed (e.g. correcting a superseded version)."""

    exit_code = 11


class InvariantError(ExchangeError):
    """An internal invariant was broken: a bug."""

    exit_code = 70  # EX_SOFTWARE
    show_traceback = True
    default_hint = "this is a bug in exchange; please report it with the log lines above"


#: Every exit code the CLI can return, pinned by a test. 1 is "needs attention" from
#: ``exchange status`` and failed demo steps, 130 an interrupt.
EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "attention": 1,
    "usage": UsageError.exit_code,
    "config": ConfigError.exit_code,
    "key_file": KeyFileError.exit_code,
    "format": FormatError.exit_code,
    "transport_permanent": PermanentTransportError.exit_code,
    "ledger": LedgerError.exit_code,
    "prerequisite": PrerequisiteError.exit_code,
    "not_found": NotFoundError.exit_code,
    "refused": RefusedError.exit_code,
    "invariant": InvariantError.exit_code,
    "transient": TransientTransportError.exit_code,
    "interrupted": 130,
}
