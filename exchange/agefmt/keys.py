"""Recipient and identity strings and files, in the formats stock ``age`` uses.

Rules:

1. Recipients are lower-case Bech32 (``age1…``, ``age1pq1…``), identities upper-case
   (``AGE-SECRET-KEY-1…``, ``AGE-SECRET-KEY-PQ-1…``), as ``age-keygen`` writes them.
2. An identity file is the ``age-keygen`` format: one identity per line, ``#`` comments and
   blank lines ignored, LF or CRLF line ends. A recipients file is the same with recipients.
3. Errors are :class:`KeyEncodingError` (a ``KeyFileError``) and never quote a secret: a bad
   identity line is reported by its line number only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from exchange.agefmt import bech32, hybrid, x25519
from exchange.agefmt.header import Stanza
from exchange.errors import KeyFileError

_IDENTITY_HINT = (
    "an identity is one 'AGE-SECRET-KEY-1…' or 'AGE-SECRET-KEY-PQ-1…' line, "
    "as written by age-keygen"
)
_RECIPIENT_HINT = "a recipient is an 'age1…' or 'age1pq1…' public key, as printed by age-keygen -y"


class KeyEncodingError(KeyFileError):
    """A recipient or identity string or file is malformed."""


class Recipient(Protocol):
    """Something a file key can be wrapped to (age's ``Recipient`` interface)."""

    @property
    def kind(self) -> str: ...

    def to_string(self) -> str: ...

    def wrap(self, file_key: bytes) -> list[Stanza]: ...


class Identity(Protocol):
    """Something that may unwrap a file key from a header's stanzas (age's ``Identity``).

    ``unwrap`` returns None when no stanza is addressed to it and raises ``HeaderError`` when
    one is but is malformed.
    """

    @property
    def kind(self) -> str: ...

    def to_string(self) -> str: ...

    def recipient(self) -> Recipient: ...

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None: ...


def generate_x25519_identity() -> x25519.X25519Identity:
    return x25519.generate_x25519_identity()


def generate_hybrid_identity() -> hybrid.HybridIdentity:
    return hybrid.generate_hybrid_identity()


def parse_recipient(text: str) -> Recipient:
    """Parse an ``age1…`` or ``age1pq1…`` recipient."""
    text = text.strip()
    if text.upper().startswith("AGE-SECRET-KEY-"):
        # Never echo it: it is a private key given where a public one belongs.
        raise KeyEncodingError(
            "a secret key (AGE-SECRET-KEY-…) was given where a recipient belongs",
            hint="pass the public key printed by 'age-keygen -y', and keep the secret key private",
        )
    shown = text if len(text) <= 40 else text[:37] + "..."
    try:
        hrp, data = bech32.decode(text)
    except bech32.Bech32Error as error:
        raise KeyEncodingError(
            f"malformed recipient {shown!r}: {error}", hint=_RECIPIENT_HINT
        ) from None
    try:
        if hrp == x25519.RECIPIENT_HRP:
            return x25519.X25519Recipient(data)
        if hrp == hybrid.RECIPIENT_HRP:
            return hybrid.HybridRecipient(data)
    except ValueError as error:
        raise KeyEncodingError(
            f"malformed recipient {shown!r}: {error}", hint=_RECIPIENT_HINT
        ) from None
    if hrp.lower() in (x25519.RECIPIENT_HRP, hybrid.RECIPIENT_HRP):
        raise KeyEncodingError(f"recipient {shown!r} must be lower case", hint=_RECIPIENT_HINT)
    raise KeyEncodingError(
        f"unsupported recipient type {hrp!r} in {shown!r}",
        hint=_RECIPIENT_HINT + " (ssh and plugin recipients are not supported)",
    )


def parse_identity(text: str) -> Identity:
    """Parse an ``AGE-SECRET-KEY-1…`` or ``AGE-SECRET-KEY-PQ-1…`` identity."""
    if text.strip().lower().startswith("age1"):
        raise KeyEncodingError(
            "this is a recipient (public key), not an identity",
            hint=_IDENTITY_HINT + "; recipients go to 'encrypt -r'",
        )
    try:
        hrp, data = bech32.decode(text.strip())
    except bech32.Bech32Error as error:
        raise KeyEncodingError(f"malformed identity: {error}", hint=_IDENTITY_HINT) from None
    try:
        if hrp == x25519.IDENTITY_HRP:
            return x25519.X25519Identity(data)
        if hrp == hybrid.IDENTITY_HRP:
            return hybrid.HybridIdentity(data)
    except ValueError as error:
        raise KeyEncodingError(f"malformed identity: {error}", hint=_IDENTITY_HINT) from None
    if hrp.upper() in (x25519.IDENTITY_HRP, hybrid.IDENTITY_HRP):
        raise KeyEncodingError("identity must be upper case", hint=_IDENTITY_HINT)
    raise KeyEncodingError(
        "unsupported identity type",
        hint=_IDENTITY_HINT + " (ssh and plugin keys are not supported)",
    )


def _lines(text: str) -> list[tuple[int, str]]:
    kept = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip() and not line.startswith("#"):
            kept.append((number, line))
    return kept


def parse_identity_file(text: str, *, source: str = "identity file") -> list[Identity]:
    """Parse an ``age-keygen`` identity file; ``source`` names it in error messages."""
    if text.startswith("age-encryption.org/") or text.lstrip().startswith("-----BEGIN AGE"):
        raise KeyEncodingError(
            f"{source}: passphrase-encrypted identity files are not supported",
            hint="decrypt it with 'age -d' first and keep the result with mode 0600",
        )
    if text.lstrip().startswith("-----BEGIN"):
        raise KeyEncodingError(
            f"{source}: this looks like an SSH or PEM key, not an age identity",
            hint=_IDENTITY_HINT,
        )
    identities: list[Identity] = []
    for number, line in _lines(text):
        try:
            identities.append(parse_identity(line))
        except KeyEncodingError as error:
            raise KeyEncodingError(
                f"{source}: line {number}: {error.message}", hint=error.hint
            ) from None
    if not identities:
        raise KeyEncodingError(f"{source}: no identities found", hint=_IDENTITY_HINT)
    return identities


def parse_recipients_file(text: str, *, source: str = "recipients file") -> list[Recipient]:
    """Parse a recipients file (``age -R``): one recipient per line, ``#`` comments."""
    recipients: list[Recipient] = []
    for number, line in _lines(text):
        try:
            recipients.append(parse_recipient(line))
        except KeyEncodingError as error:
            raise KeyEncodingError(
                f"{source}: line {number}: {error.message}", hint=error.hint
            ) from None
    if not recipients:
        raise KeyEncodingError(f"{source}: no recipients found", hint=_RECIPIENT_HINT)
    return recipients
