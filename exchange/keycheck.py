"""Validation of public key strings found in configuration: each returns a problem or None.

Rule: these functions only judge text (the config loader reports what they return against
the file and key); the cryptographic parsing lives in ``agefmt`` and ``signing``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

_AGE_RECIPIENT = re.compile(r"^age1(pq1)?[02-9ac-hj-np-z]{20,}$")
_SIGNING_PREFIX = "ed25519:"


def age_recipient_problem(text: str) -> str | None:
    if not _AGE_RECIPIENT.match(text):
        return (
            "expected an age recipient starting 'age1' or 'age1pq1' (from the partner's key card)"
        )
    return None


def _signing_raw(text: str) -> bytes | None:
    if not text.startswith(_SIGNING_PREFIX):
        return None
    try:
        raw = base64.b64decode(text[len(_SIGNING_PREFIX) :], validate=True)
    except binascii.Error:
        return None
    return raw if len(raw) == 32 else None


def signing_key_problem(text: str) -> str | None:
    if _signing_raw(text) is None:
        return (
            "expected 'ed25519:' followed by the base64 of 32 bytes (from the partner's key card)"
        )
    return None


def signing_fingerprint(text: str) -> str:
    raw = _signing_raw(text)
    if raw is None:
        raise ValueError("not a signing key")
    digest = hashlib.sha256(raw).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def ssh_public_key_problem(text: str) -> str | None:
    parts = text.split()
    allowed = (
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "rsa-sha2-512",
        "ssh-rsa",
    )
    if len(parts) < 2 or parts[0] not in allowed:
        return "expected an OpenSSH public key line like 'ssh-ed25519 AAAA...'"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        return "the key's base64 is damaged; copy the whole line again from the key card"
    if not blob[4:].startswith(parts[0].encode()) and parts[0] != "rsa-sha2-512":
        return "the key's type does not match its data; copy the whole line again from the key card"
    return None
