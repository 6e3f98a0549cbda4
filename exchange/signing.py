"""Ed25519 signing keys, public keys, fingerprints and signatures, plus SSH public keys.

Rules:

1. This module and ``agefmt/_primitives.py`` are the only importers of ``cryptography``.
   Everything here is pure: bytes and strings in, values out; no file I/O, no clock, no logging.
2. A public key is checked when it is built (FORMAT.md §3.1): 32 bytes, a canonical encoding
   (y < p, no "negative zero"), a point on the curve, not of small order and with no small-order
   component. With a small-order key a trivial signature verifies for *any* message, so such a
   key is refused before it can be pinned or used.
3. A signature is 64 bytes whose scalar S is fully reduced (S < L); anything else is refused
   before the curve arithmetic, so there is exactly one accepted encoding per signature
   (FORMAT.md §3.2).
4. Text forms are strict: ``ed25519:<standard base64 of 32 bytes>`` and
   ``SHA256:<unpadded standard base64 of sha256(raw)>``; non-canonical base64 is refused.
5. Every refusal raises :class:`KeyRejected` or :class:`SignatureRejected` carrying a
   :class:`Reason`, the closed vocabulary the daemon records in incidents.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.errors import KeyFileError, SignatureError


class Reason(enum.Enum):
    """Why a key, signature, manifest or receipt was refused (FORMAT.md §7, closed vocabulary)."""

    MALFORMED_KEY = "malformed-key"
    SMALL_ORDER_KEY = "small-order-key"
    MALFORMED_SIGNATURE = "malformed-signature"
    BAD_SIGNATURE = "bad-signature"
    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    NOT_CANONICAL = "not-canonical"
    UNSUPPORTED_VERSION = "unsupported-version"
    UNKNOWN_SIGNER = "unknown-signer"
    KEY_MISMATCH = "key-mismatch"
    WRONG_RECIPIENT = "wrong-recipient"
    AGREEMENT_NOT_SHARED = "agreement-not-shared"
    REPLAY = "replay"
    CIPHERTEXT_MISMATCH = "ciphertext-mismatch"
    PLAINTEXT_MISMATCH = "plaintext-mismatch"
    UNKNOWN_DELIVERY = "unknown-delivery"
    RECEIPT_MISMATCH = "receipt-mismatch"
    DECRYPTION_FAILED = "decryption-failed"


class KeyRejected(KeyFileError):
    """A key (Ed25519 or SSH) is malformed, of a refused kind, or of small order."""

    def __init__(self, message: str, reason: Reason, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class SignatureRejected(SignatureError):
    """A signature is malformed or does not verify with the given key."""

    def __init__(self, message: str, reason: Reason, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


PUBLIC_KEY_PREFIX = "ed25519:"
FINGERPRINT_PREFIX = "SHA256:"
SIGNATURE_SIZE = 64
_KEY_HINT = "ask the partner for its key card again and compare the fingerprint out of band"

# --- Ed25519 point arithmetic, only to vet public keys (RFC 8032 §5.1) ------------------------
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
#: The order of the prime-order subgroup.
L = 2**252 + 27742317777372353535851937790883648493

#: Every 32-byte encoding of a point of small order (dividing 8): the eight points, both sign
#: bits of each y, and the non-canonical y + p forms. A signature (R = identity, S = 0) verifies
#: for any message under most of these, so they are refused by name (FORMAT.md §3.1).
SMALL_ORDER_ENCODINGS: frozenset[bytes] = frozenset(
    bytes.fromhex(h[:62]) + bytes([int(h[62:], 16) | sign])
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y=0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # identity
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p-1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p (=0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p+1 (=1)
    )
    for sign in (0x00, 0x80)
)

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)
_IDENTITY: _Point = (0, 1, 1, 0)


def _add(p: _Point, q: _Point) -> _Point:
    # The unified addition of RFC 8032 §5.1.4: complete for edwards25519, so no special cases.
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _times(point: _Point, scalar: int) -> _Point:
    result = _IDENTITY
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _decode_point(raw: bytes) -> _Point | None:
    """The point a 32-byte encoding names, or None if it is non-canonical or off the curve."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if x == 0 and sign:
        return None  # "negative zero": a second encoding of the same point
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _is_identity(point: _Point) -> bool:
    return point[0] % _P == 0 and (point[1] - point[2]) % _P == 0


def check_public_key_bytes(raw: bytes) -> None:
    """Refuse anything but a canonical encoding of a point of prime order L (FORMAT.md §3.1)."""
    if len(raw) != 32:
        raise KeyRejected(
            f"ed25519 public key: expected 32 bytes, got {len(raw)}",
            Reason.MALFORMED_KEY,
            hint=_KEY_HINT,
        )
    if raw in SMALL_ORDER_ENCODINGS:
        raise KeyRejected(
            "ed25519 public key: small-order point (a trivial signature would verify)",
            Reason.SMALL_ORDER_KEY,
            hint=_KEY_HINT,
        )
    point = _decode_point(raw)
    if point is None:
        raise KeyRejected(
            "ed25519 public key: not a canonical encoding of a curve point",
            Reason.MALFORMED_KEY,
            hint=_KEY_HINT,
        )
    if not _is_identity(_times(point, L)):
        raise KeyRejected(
            "ed25519 public key: point has a small-order component",
            Reason.SMALL_ORDER_KEY,
            hint=_KEY_HINT,
        )


# --- strict base64 ------------------------------------------------------------------------------
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64decode_strict(text: str, *, padded: bool = True) -> bytes | None:
    """Decode standard base64, or None unless ``text`` is the one canonical encoding."""
    if not _B64.fullmatch(text) or (not padded and "=" in text):
        return None
    padding = "=" * (-len(text) % 4) if not padded else ""
    try:
        data = base64.b64decode(text + padding, validate=True)
    except (binascii.Error, ValueError):
        return None
    encoded = base64.b64encode(data).decode("ascii")
    return data if (encoded if padded else encoded.rstrip("=")) == text else None


def fingerprint_of(raw: bytes) -> str:
    """``SHA256:<unpadded base64 of sha256(raw)>``, the form OpenSSH prints."""
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii").rstrip("=")
    return FINGERPRINT_PREFIX + digest


def is_fingerprint(text: str) -> bool:
    """Whether ``text`` is a canonical ``SHA256:...`` fingerprint (32-byte digest)."""
    if not text.startswith(FINGERPRINT_PREFIX):
        return False
    digest = b64decode_strict(text[len(FINGERPRINT_PREFIX) :], padded=False)
    return digest is not None and len(digest) == 32


# --- Ed25519 keys and signatures ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PublicKey:
    """A vetted Ed25519 public key: building one runs :func:`check_public_key_bytes`."""

    raw: bytes

    def __post_init__(self) -> None:
        check_public_key_bytes(self.raw)

    @property
    def text(self) -> str:
        """The key card form ``ed25519:<base64>``."""
        return PUBLIC_KEY_PREFIX + base64.b64encode(self.raw).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """``SHA256:<unpadded base64 of sha256(raw)>``, what partners pin and compare."""
        return fingerprint_of(self.raw)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`SignatureRejected` unless ``signature`` is a valid, canonical one."""
        if len(signature) != SIGNATURE_SIZE:
            raise SignatureRejected(
                f"signature: expected {SIGNATURE_SIZE} bytes, got {len(signature)}",
                Reason.MALFORMED_SIGNATURE,
            )
        # FORMAT.md §3.2: S >= L is the classic malleated second encoding; refuse it ourselves
        # rather than rely on the backend's version.
        if int.from_bytes(signature[32:], "little") >= L:
            raise SignatureRejected(
                "signature: scalar is not reduced (S >= L)", Reason.MALFORMED_SIGNATURE
            )
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            raise SignatureRejected(
                f"signature does not verify with key {self.fingerprint}", Reason.BAD_SIGNATURE
            ) from None


def parse_public_key(text: str) -> PublicKey:
    """Parse ``ed25519:<standard base64 of 32 bytes>`` strictly and vet the key."""
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise KeyRejected(
            "ed25519 public key: expected 'ed25519:<base64>'", Reason.MALFORMED_KEY, hint=_KEY_HINT
        )
    raw = b64decode_strict(text[len(PUBLIC_KEY_PREFIX) :])
    if raw is None:
        raise KeyRejected(
            "ed25519 public key: not canonical base64", Reason.MALFORMED_KEY, hint=_KEY_HINT
        )
    return PublicKey(raw)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key. Its repr never shows key material."""

    _key: Ed25519PrivateKey = field(repr=False)

    @property
    def public_key(self) -> PublicKey:
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return PublicKey(raw)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature (RFC 8032, deterministic) over ``message``."""
        return self._key.sign(message)

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM, the form ``openssl pkeyutl -sign -inkey`` reads."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_signing_key() -> SigningKey:
    """A fresh Ed25519 key from the operating system's CSPRNG (via OpenSSL)."""
    return SigningKey(Ed25519PrivateKey.generate())


def signing_key_from_seed(seed: bytes) -> SigningKey:
    """The key for a 32-byte RFC 8032 seed; for test vectors and tests only."""
    if len(seed) != 32:
        raise KeyRejected(f"ed25519 seed: expected 32 bytes, got {len(seed)}", Reason.MALFORMED_KEY)
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))


def load_signing_key_pem(data: bytes) -> SigningKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key (e.g. ``openssl genpkey`` output)."""
    hint = "the file must hold an unencrypted PKCS#8 PEM Ed25519 key ('exchange keys generate')"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyRejected(
            "signing key: not an unencrypted PKCS#8 PEM private key",
            Reason.MALFORMED_KEY,
            hint=hint,
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyRejected("signing key: not an Ed25519 key", Reason.MALFORMED_KEY, hint=hint)
    return SigningKey(key)


# --- SSH public keys ------------------------------------------------------------------------------
#: Key types accepted for partner logins (only Ed25519) and for pinned hub host keys.
SSH_LOGIN_KEY_TYPES = frozenset({"ssh-ed25519"})
SSH_HOST_KEY_TYPES = frozenset(
    {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"}
)
MIN_RSA_BITS = 3072
_SSH_LINE = re.compile(r"([a-z0-9-]+) ([A-Za-z0-9+/]+={0,2})(?: ([\x20-\x7e]*))?")
_CURVES = {
    "ecdsa-sha2-nistp256": "secp256r1",
    "ecdsa-sha2-nistp384": "secp384r1",
    "ecdsa-sha2-nistp521": "secp521r1",
}
_SSH_HINT = "give one OpenSSH public key line: '<type> <base64> [comment]'"


@dataclass(frozen=True, slots=True)
class SshPublicKey:
    """A parsed OpenSSH public key: its type, wire blob and comment."""

    key_type: str
    blob: bytes
    comment: str = ""

    @property
    def line(self) -> str:
        """The ``authorized_keys`` / ``known_hosts`` form, without a newline."""
        head = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{head} {self.comment}" if self.comment else head

    @property
    def fingerprint(self) -> str:
        """Exactly what ``ssh-keygen -lf`` prints as the fingerprint."""
        return fingerprint_of(self.blob)


def parse_ssh_public_key(line: str, *, host_key: bool = False) -> SshPublicKey:
    """Parse one OpenSSH public key line strictly.

    Only ``ssh-ed25519`` unless ``host_key`` is true, which also allows ECDSA (NIST curves)
    and RSA of at least 3072 bits, the types a stock sshd may offer as host keys.
    """
    text = line.removesuffix("\n")
    match = _SSH_LINE.fullmatch(text)
    if match is None:
        raise KeyRejected("ssh public key: malformed line", Reason.MALFORMED_KEY, hint=_SSH_HINT)
    key_type, b64, comment = match.group(1), match.group(2), match.group(3) or ""
    allowed = SSH_HOST_KEY_TYPES if host_key else SSH_LOGIN_KEY_TYPES
    if key_type not in allowed:
        raise KeyRejected(
            f"ssh public key: type {key_type!r} not accepted (allowed: {', '.join(sorted(allowed))})",
            Reason.MALFORMED_KEY,
            hint="generate an Ed25519 key: ssh-keygen -t ed25519",
        )
    blob = b64decode_strict(b64)
    if blob is None:
        raise KeyRejected(
            "ssh public key: not canonical base64", Reason.MALFORMED_KEY, hint=_SSH_HINT
        )
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {b64}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRejected(
            "ssh public key: blob does not decode", Reason.MALFORMED_KEY, hint=_SSH_HINT
        ) from None
    reencoded = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if reencoded.decode("ascii") != f"{key_type} {b64}":
        raise KeyRejected(
            "ssh public key: blob is not canonical or its type does not match",
            Reason.MALFORMED_KEY,
            hint=_SSH_HINT,
        )
    _check_ssh_key(key_type, key)
    return SshPublicKey(key_type, blob, comment)


def _check_ssh_key(key_type: str, key: object) -> None:
    if key_type == "ssh-ed25519" and isinstance(key, Ed25519PublicKey):
        check_public_key_bytes(
            key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    elif key_type == "ssh-rsa" and isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyRejected(
                f"ssh public key: rsa key of {key.key_size} bits, below {MIN_RSA_BITS}",
                Reason.MALFORMED_KEY,
                hint="pin the hub's ed25519 host key instead",
            )
    elif not (
        isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES.get(key_type)
    ):
        raise KeyRejected(
            f"ssh public key: blob does not hold a {key_type} key", Reason.MALFORMED_KEY
        )


def ssh_fingerprint(line: str) -> str:
    """``SHA256:...`` of an OpenSSH public key line, identical to ``ssh-keygen -lf``."""
    return parse_ssh_public_key(line, host_key=True).fingerprint


def generate_ssh_keypair(comment: str) -> tuple[bytes, str]:
    """A new Ed25519 SSH key: (OpenSSH private key bytes, ``ssh-ed25519 AAAA... comment``)."""
    if not re.fullmatch(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*", comment):
        raise KeyRejected(
            f"ssh key comment {comment!r}: printable ASCII words separated by single spaces",
            Reason.MALFORMED_KEY,
        )
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, f"{public.decode('ascii')} {comment}"
