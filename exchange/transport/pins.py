"""Pinned hub host keys: parsing the config lines and matching what the server presents.

Rules:

1. A pin is an OpenSSH public key line, ``"<type> <base64 blob> [comment]"``, exactly as
   ``ssh-keyscan`` or ``/etc/ssh/ssh_host_*_key.pub`` print it. The blob's own type string must
   match the declared type; anything else is a configuration error, never a guess.
2. Matching compares the whole public key blob, not a fingerprint: no truncation, no
   collision games. Fingerprints (``SHA256:...``, as ``ssh-keygen -lf`` prints) are only for
   messages to humans.
3. There is no "trust on first use" and no way to add a key at run time.
4. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from exchange.errors import ConfigError

#: Host key types we accept a pin for, in preference order: the same list as
#: ``signing.SSH_HOST_KEY_TYPES`` (what ``exchange config check`` accepts), so a configuration
#: that passes the check also connects. Our own hub's provisioning generates Ed25519 keys; the
#: others are for a partner's hub run on a stock sshd.
ACCEPTED_TYPES: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
#: The SSH host key algorithms that prove each pinned key type. An RSA key is only ever
#: accepted with SHA-2 signatures (never the SHA-1 ``ssh-rsa`` signature algorithm).
_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
#: Same floor as ``signing.MIN_RSA_BITS``.
MIN_RSA_BITS = 3072


@dataclass(frozen=True, slots=True)
class HostKeyPin:
    """One pinned host public key."""

    key_type: str
    blob: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)


def fingerprint(blob: bytes) -> str:
    """The OpenSSH SHA256 fingerprint of a public key blob."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def _blob_type(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length > 64 or len(blob) < 4 + length:
        return None
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def _rsa_bits(blob: bytes) -> int:
    """Bits of the modulus of an ``ssh-rsa`` blob (string type, mpint e, mpint n); 0 if torn."""
    offset = 0
    fields: list[bytes] = []
    for _ in range(3):
        if len(blob) < offset + 4:
            return 0
        (length,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if len(blob) < offset + length:
            return 0
        fields.append(blob[offset : offset + length])
        offset += length
    return int.from_bytes(fields[2], "big").bit_length() if offset == len(blob) else 0


def parse_pin(line: str, *, where: str = "hub.host_keys") -> HostKeyPin:
    """Parse one pinned key line; raise :class:`ConfigError` naming ``where`` if it is bad."""
    fields = line.split()
    if len(fields) < 2:
        raise ConfigError(f"{where}: expected '<type> <base64>', got {line[:40]!r}")
    key_type, encoded = fields[0], fields[1]
    if key_type not in ACCEPTED_TYPES:
        raise ConfigError(
            f"{where}: host key type {key_type!r} is not accepted; "
            f"use one of {', '.join(ACCEPTED_TYPES)}"
        )
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: {key_type} key is not valid base64") from None
    if _blob_type(blob) != key_type:
        raise ConfigError(f"{where}: key blob does not hold a {key_type} key")
    if key_type == "ssh-rsa" and _rsa_bits(blob) < MIN_RSA_BITS:
        raise ConfigError(
            f"{where}: rsa host key below {MIN_RSA_BITS} bits",
            hint="pin the hub's ed25519 host key instead",
        )
    return HostKeyPin(key_type, blob)


def parse_pins(
    lines: tuple[str, ...] | list[str], *, where: str = "hub.host_keys"
) -> tuple[HostKeyPin, ...]:
    """Parse every pinned line; at least one is required."""
    if not lines:
        raise ConfigError(
            f"{where}: no pinned host keys",
            hint="ask the hub's operator for its host key fingerprints and pin them",
        )
    return tuple(parse_pin(line, where=f"{where}[{i}]") for i, line in enumerate(lines))


def host_key_algorithms(pins: tuple[HostKeyPin, ...]) -> tuple[str, ...]:
    """The host key algorithms to offer, in preference order: only those proving a pinned key
    type, so the server presents a pinned key or the handshake fails."""
    pinned = {pin.key_type for pin in pins}
    return tuple(alg for t in ACCEPTED_TYPES if t in pinned for alg in _ALGORITHMS[t])


def matches(pins: tuple[HostKeyPin, ...], key_type: str, blob: bytes) -> bool:
    """True if the presented key is one of the pins."""
    return any(pin.key_type == key_type and pin.blob == blob for pin in pins)
