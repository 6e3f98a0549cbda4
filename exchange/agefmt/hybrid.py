"""The MLKEM768-X25519 hybrid post-quantum recipient type (C2SP age.md, X-Wing).

Rules:

1. The stanza is ``-> mlkem768x25519 <enc>`` with a 32-byte body: HPKE SealBase with KEM
   MLKEM768-X25519, KDF HKDF-SHA256, AEAD ChaCha20Poly1305, info
   ``age-encryption.org/mlkem768x25519`` and an empty aad, all done by ``cryptography``'s HPKE.
2. An identity ignores stanzas whose first argument is not exactly ``mlkem768x25519``; one of
   ours that is malformed (argument count, enc encoding or length, body length, a low-order
   X25519 half of enc) is a :class:`HeaderError`. A failed decapsulation or tag is "not ours".
3. The identity is the 32-byte seed; the ML-KEM key is expanded from it once, on load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from exchange.agefmt import _primitives as prim
from exchange.agefmt import bech32
from exchange.agefmt.header import Stanza, b64decode, b64encode
from exchange.errors import HeaderError

STANZA_TYPE = "mlkem768x25519"
RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "AGE-SECRET-KEY-PQ-"
_INFO = b"age-encryption.org/mlkem768x25519"
FILE_KEY_SIZE = 16
SEED_SIZE = 32


@dataclass(frozen=True, slots=True)
class HybridRecipient:
    """An ``age1pq1…`` public key: ML-KEM-768 encapsulation key || X25519 public key."""

    public: bytes

    kind = "mlkem768x25519"

    def __post_init__(self) -> None:
        if not prim.hybrid_public_key_valid(self.public):
            raise ValueError("not a valid mlkem768x25519 public key")

    def __repr__(self) -> str:
        return f"HybridRecipient({self.to_string()[:24]}…)"

    def to_string(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        enc, ciphertext = prim.hybrid_seal(self.public, file_key, _INFO)
        return [Stanza((STANZA_TYPE, b64encode(enc)), ciphertext)]


@dataclass(frozen=True, slots=True, repr=False)
class HybridIdentity:
    """An ``AGE-SECRET-KEY-PQ-1…`` private key (a 32-byte seed)."""

    seed: bytes
    _key: prim.HybridPrivateKey = field(init=False, compare=False, hash=False)

    kind = "mlkem768x25519"

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise ValueError("an mlkem768x25519 identity is a 32-byte seed")
        object.__setattr__(self, "_key", prim.HybridPrivateKey(self.seed))

    def __repr__(self) -> str:
        return f"HybridIdentity(recipient={self.recipient().to_string()[:24]!r}…)"

    def to_string(self) -> str:
        return bech32.encode(IDENTITY_HRP, self.seed)

    def recipient(self) -> HybridRecipient:
        return HybridRecipient(self._key.public_bytes)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key from the first stanza addressed to us, or None if none is."""
        for stanza in stanzas:
            if stanza.args[0] != STANZA_TYPE:
                continue
            if len(stanza.args) != 2:
                raise HeaderError(
                    "age header: an mlkem768x25519 stanza must have exactly one argument"
                )
            enc = b64decode(stanza.args[1], "the mlkem768x25519 enc")
            if len(enc) != prim.MLKEM768X25519_ENC_SIZE:
                raise HeaderError(
                    f"age header: the mlkem768x25519 enc is not {prim.MLKEM768X25519_ENC_SIZE} "
                    "bytes"
                )
            if len(stanza.body) != FILE_KEY_SIZE + prim.TAG_SIZE:
                raise HeaderError("age header: the mlkem768x25519 stanza body is not 32 bytes")
            try:
                self._key.check_x25519_share(enc)
            except prim.LowOrderPoint:
                raise HeaderError(
                    "age header: the X25519 half of the mlkem768x25519 enc is a low-order point"
                ) from None
            try:
                return self._key.open(enc + stanza.body, _INFO)
            except prim.AuthenticationFailed:
                continue
        return None


def generate_hybrid_identity() -> HybridIdentity:
    return HybridIdentity(prim.random_bytes(SEED_SIZE))
