"""Validation of public key strings found in configuration: each returns a problem or None.

Rule: the cryptographic parsing lives in ``agefmt`` and ``signing``; this module only turns
their refusals into problem strings that the config loader reports against file and key, so
a small-order signing key or a malformed recipient is refused at load, never at first use.
"""

from __future__ import annotations

import io

from exchange import agefmt, signing
from exchange.errors import ExchangeError


def age_recipient_problem(text: str) -> str | None:
    try:
        recipient = agefmt.parse_recipient(text)
    except ExchangeError as error:
        return f"{error.message}; expected the age_recipient from the partner's key card"
    # A key that parses may still be unusable (a low-order X25519 point gives an all-zero
    # shared secret): wrap one throw-away file key to it, as every delivery will.
    try:
        agefmt.encrypt(io.BytesIO(b""), io.BytesIO(), [recipient])
    except Exception:  # noqa: BLE001 - whatever refuses the wrap, the key is the cause
        return (
            "cannot encrypt to this key (a low-order point); "
            "expected the age_recipient from the partner's key card"
        )
    return None


def signing_key_problem(text: str) -> str | None:
    try:
        signing.parse_public_key(text)
    except ExchangeError as error:
        return (
            f"{error.message}; expected 'ed25519:<base64 of 32 bytes>' from the partner's key card"
        )
    return None


def signing_fingerprint(text: str) -> str:
    return signing.parse_public_key(text).fingerprint


def ssh_public_key_problem(text: str, *, host_key: bool = False) -> str | None:
    try:
        signing.parse_ssh_public_key(text, host_key=host_key)
    except ExchangeError as error:
        return f"{error.message}; expected an OpenSSH public key line like 'ssh-ed25519 AAAA...'"
    return None


def host_key_problem(text: str) -> str | None:
    return ssh_public_key_problem(text, host_key=True)
