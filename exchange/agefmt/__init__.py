"""age v1 (C2SP age.md) on ``cryptography``: X25519 and MLKEM768-X25519 recipients, armor.

The public API other modules use. Everything here is pure: it reads and writes the file
objects it is given and never opens paths, logs or reads the clock. ``_primitives`` is the
only module that imports ``cryptography``.
"""

from __future__ import annotations

from exchange.agefmt.codec import (
    DecryptResult,
    EncryptResult,
    decrypt,
    encrypt,
    encrypt_fanout,
)
from exchange.agefmt.header import HeaderMACError
from exchange.agefmt.hybrid import HybridIdentity, HybridRecipient
from exchange.agefmt.keys import (
    Identity,
    KeyEncodingError,
    Recipient,
    generate_hybrid_identity,
    generate_x25519_identity,
    parse_identity,
    parse_identity_file,
    parse_recipient,
    parse_recipients_file,
)
from exchange.agefmt.x25519 import X25519Identity, X25519Recipient

__all__ = [
    "DecryptResult",
    "EncryptResult",
    "HeaderMACError",
    "HybridIdentity",
    "HybridRecipient",
    "Identity",
    "KeyEncodingError",
    "Recipient",
    "X25519Identity",
    "X25519Recipient",
    "decrypt",
    "encrypt",
    "encrypt_fanout",
    "generate_hybrid_identity",
    "generate_x25519_identity",
    "parse_identity",
    "parse_identity_file",
    "parse_recipient",
    "parse_recipients_file",
]
