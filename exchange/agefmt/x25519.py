"""The X25519 recipient type (C2SP age.md "The X25519 recipient type").

Rules:

1. An identity ignores stanzas whose first argument is not exactly ``X25519``; a stanza that
   is ours but malformed (argument count, share encoding or length, body length, a low-order
   share) is a :class:`HeaderError`, not "no match", exactly as the spec requires.
2. The body length is checked before decryption (partitioning-oracle mitigation).
3. Secrets never appear in ``repr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exchange.agefmt import _primitives as prim
from exchange.agefmt import bech32
from exchange.agefmt.header import Stanza, b64decode, b64encode
from exchange.errors import HeaderError

STANZA_TYPE = "X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
_INFO = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)
FILE_KEY_SIZE = 16


@dataclass(frozen=True, slots=True)
class X25519Recipient:
    """An ``age1…`` public key."""

    public: bytes

    kind = "x25519"

    def __post_init__(self) -> None:
        if len(self.public) != prim.X25519_KEY_SIZE:
            raise ValueError("an X25519 recipient is 32 bytes")

    def to_string(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = prim.random_bytes(32)
        share = prim.x25519_public(ephemeral)
        shared = prim.x25519_shared(ephemeral, self.public)
        wrap_key = prim.hkdf_sha256(shared, share + self.public, _INFO)
        body = prim.Aead(wrap_key).seal(_ZERO_NONCE, file_key)
        return [Stanza((STANZA_TYPE, b64encode(share)), body)]


@dataclass(frozen=True, slots=True, repr=False)
class X25519Identity:
    """An ``AGE-SECRET-KEY-1…`` private key."""

    secret: bytes

    kind = "x25519"

    def __post_init__(self) -> None:
        if len(self.secret) != prim.X25519_KEY_SIZE:
            raise ValueError("an X25519 identity is 32 bytes")

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient().to_string()!r})"

    def to_string(self) -> str:
        return bech32.encode(IDENTITY_HRP, self.secret)

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(prim.x25519_public(self.secret))

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key from the first stanza addressed to us, or None if none is."""
        ours = self.recipient().public
        for stanza in stanzas:
            if stanza.args[0] != STANZA_TYPE:
                continue
            if len(stanza.args) != 2:
                raise HeaderError("age header: an X25519 stanza must have exactly one argument")
            share = b64decode(stanza.args[1], "the X25519 share")
            if len(share) != prim.X25519_KEY_SIZE:
                raise HeaderError("age header: the X25519 share is not 32 bytes")
            if len(stanza.body) != FILE_KEY_SIZE + prim.TAG_SIZE:
                raise HeaderError("age header: the X25519 stanza body is not 32 bytes")
            try:
                shared = prim.x25519_shared(self.secret, share)
            except prim.LowOrderPoint:
                raise HeaderError("age header: the X25519 share is a low-order point") from None
            wrap_key = prim.hkdf_sha256(shared, share + ours, _INFO)
            try:
                return prim.Aead(wrap_key).open(_ZERO_NONCE, stanza.body)
            except prim.AuthenticationFailed:
                continue
        return None


def generate_x25519_identity() -> X25519Identity:
    return X25519Identity(prim.random_bytes(32))
