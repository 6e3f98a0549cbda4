"""The only module of ``exchange.agefmt`` that imports ``cryptography``.

Rules:

1. Everything here is a thin, typed wrapper over one ``cryptography`` primitive named by
   C2SP age.md: X25519, HKDF-SHA-256, HMAC-SHA-256, ChaCha20-Poly1305 and, for the hybrid
   recipient, HPKE with the MLKEM768-X25519 KEM. Format logic lives in the other modules.
2. Authentication failures surface as :class:`AuthenticationFailed` (a plain exception, not an
   ``ExchangeError``): callers decide whether that means "not my stanza" or "damaged payload".
3. Randomness comes from :func:`random_bytes` only, so a test can see every use of it.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes, hmac, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

X25519_KEY_SIZE = 32
MLKEM768_PUBLIC_KEY_SIZE = 1184
MLKEM768X25519_PUBLIC_KEY_SIZE = MLKEM768_PUBLIC_KEY_SIZE + X25519_KEY_SIZE
MLKEM768X25519_ENC_SIZE = hpke.KEM.MLKEM768_X25519.enc_length()  # 1088 + 32
MLKEM768_CIPHERTEXT_SIZE = MLKEM768X25519_ENC_SIZE - X25519_KEY_SIZE
TAG_SIZE = 16


class AuthenticationFailed(Exception):
    """An AEAD tag or an HPKE decapsulation did not verify."""


class LowOrderPoint(Exception):
    """An X25519 exchange produced the all-zero shared secret (a low-order or identity point)."""


def random_bytes(size: int) -> bytes:
    """CSPRNG output (age.md: file keys, nonces and ephemeral secrets)."""
    return os.urandom(size)


# --- X25519 -------------------------------------------------------------------------------


def x25519_public(secret: bytes) -> bytes:
    """X25519(secret, basepoint)."""
    key = x25519.X25519PrivateKey.from_private_bytes(secret)
    return key.public_key().public_bytes_raw()


def x25519_shared(secret: bytes, peer: bytes) -> bytes:
    """X25519(secret, peer); refuses the all-zero result as age.md requires."""
    key = x25519.X25519PrivateKey.from_private_bytes(secret)
    try:
        shared = key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    except ValueError as error:  # cryptography refuses an all-zero shared secret itself
        raise LowOrderPoint(str(error)) from error
    if constant_time.bytes_eq(shared, bytes(X25519_KEY_SIZE)):
        raise LowOrderPoint("all-zero shared secret")
    return shared


# --- KDF and MAC ----------------------------------------------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA-256 with 32 bytes of output (age.md "Conventions")."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def hmac_sha256_verify(key: bytes, data: bytes, expected: bytes) -> bool:
    """Constant-time comparison of the HMAC of ``data`` against ``expected``."""
    return constant_time.bytes_eq(hmac_sha256(key, data), expected)


# --- ChaCha20-Poly1305 ----------------------------------------------------------------------


class Aead:
    """ChaCha20-Poly1305 under one key (RFC 7539); the nonce is the caller's business."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)

    def seal(self, nonce: bytes, plaintext: bytes | memoryview) -> bytes:
        return self._aead.encrypt(nonce, plaintext, None)

    def seal_into(self, nonce: bytes, plaintext: bytes | memoryview, out: memoryview) -> None:
        """Encrypt into ``out`` (exactly len(plaintext) + 16 bytes), saving one allocation."""
        self._aead.encrypt_into(nonce, plaintext, None, out)

    def open(self, nonce: bytes, ciphertext: bytes | memoryview) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, None)
        except InvalidTag as error:
            raise AuthenticationFailed("chacha20-poly1305 tag mismatch") from error

    def open_into(self, nonce: bytes, ciphertext: bytes | memoryview, out: memoryview) -> None:
        """Decrypt into ``out`` (exactly len(ciphertext) - 16 bytes)."""
        try:
            self._aead.decrypt_into(nonce, ciphertext, None, out)
        except InvalidTag as error:
            raise AuthenticationFailed("chacha20-poly1305 tag mismatch") from error


# --- MLKEM768-X25519 hybrid HPKE -------------------------------------------------------------

_HPKE_SUITE = hpke.Suite(
    hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305
)


class HybridPrivateKey:
    """An MLKEM768-X25519 decapsulation key expanded from its 32-byte seed.

    The expansion is the one of draft-ietf-hpke-pq / filippo.io/hpke-pq (as in X-Wing):
    SHAKE-256(seed, 96) gives the 64-byte ML-KEM-768 seed (d || z) and the X25519 secret.
    The CCTV hybrid vectors pin it.
    """

    __slots__ = ("_key", "_x25519_secret", "public_bytes")

    def __init__(self, seed: bytes) -> None:
        expanded = hashlib.shake_256(seed).digest(96)
        mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._x25519_secret = expanded[64:]
        x_key = x25519.X25519PrivateKey.from_private_bytes(self._x25519_secret)
        self._key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x_key)
        #: ML-KEM-768 encapsulation key || X25519 public key, 1216 bytes.
        self.public_bytes = (
            mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()
        )

    def check_x25519_share(self, enc: bytes) -> None:
        """Raise LowOrderPoint if the X25519 half of ``enc`` gives the all-zero secret."""
        x25519_shared(self._x25519_secret, enc[MLKEM768_CIPHERTEXT_SIZE:])

    def open(self, enc_and_ciphertext: bytes, info: bytes) -> bytes:
        try:
            return _HPKE_SUITE.decrypt(enc_and_ciphertext, self._key, info=info)
        except (InvalidTag, ValueError) as error:
            raise AuthenticationFailed("hpke open failed") from error


def hybrid_public_key_valid(public: bytes) -> bool:
    """Whether ``public`` is a well-formed ML-KEM-768 || X25519 encapsulation key."""
    try:
        _hybrid_public_key(public)
    except ValueError:
        return False
    return True


def _hybrid_public_key(public: bytes) -> hpke.MLKEM768X25519PublicKey:
    if len(public) != MLKEM768X25519_PUBLIC_KEY_SIZE:
        raise ValueError("wrong length for an mlkem768x25519 public key")
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(public[:MLKEM768_PUBLIC_KEY_SIZE]),
        x25519.X25519PublicKey.from_public_bytes(public[MLKEM768_PUBLIC_KEY_SIZE:]),
    )


def hybrid_seal(public: bytes, plaintext: bytes, info: bytes) -> tuple[bytes, bytes]:
    """HPKE SealBase to ``public``: returns (enc, ciphertext)."""
    sealed = _HPKE_SUITE.encrypt(plaintext, _hybrid_public_key(public), info=info)
    return sealed[:MLKEM768X25519_ENC_SIZE], sealed[MLKEM768X25519_ENC_SIZE:]
