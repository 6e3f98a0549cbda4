"""Bech32 (BIP 173) as age uses it: no length limit on the data part.

Rules:

1. A string is all lower case or all upper case; the checksum is computed over the lower-case
   form. :func:`decode` returns the HRP exactly as written, so callers can insist on the case
   age uses (``age1…`` lower, ``AGE-SECRET-KEY-1…`` upper).
2. Decoding is strict: the 5-to-8-bit conversion refuses non-zero padding and a padding of
   five bits or more, so every byte string has exactly one encoding.
3. Errors are :class:`Bech32Error` (a ``ValueError``); the key parsers turn them into
   ``KeyFileError`` with the context the user needs.
"""

from __future__ import annotations

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6


class Bech32Error(ValueError):
    """A malformed Bech32 string."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & max_value):
        raise Bech32Error("invalid padding in the data part")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under ``hrp``; the result has the case of ``hrp``."""
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise Bech32Error("mixed-case human-readable part")
    lower = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(lower), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]
    text = lower + "1" + "".join(_CHARSET[v] for v in values + checksum)
    return text.upper() if hrp.upper() == hrp and hrp.lower() != hrp else text


def decode(text: str) -> tuple[str, bytes]:
    """Return (hrp as written, data) or raise :class:`Bech32Error`."""
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixed case")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise Bech32Error("character outside the printable ASCII range")
    lower = text.lower()
    separator = lower.rfind("1")
    if separator < 1 or separator + _CHECKSUM_LEN + 1 > len(lower):
        raise Bech32Error("separator '1' missing or misplaced")
    hrp = lower[:separator]
    try:
        values = [_CHARSET_REV[c] for c in lower[separator + 1 :]]
    except KeyError as error:
        raise Bech32Error(f"invalid character {error.args[0]!r} in the data part") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise Bech32Error("checksum mismatch")
    data = bytes(_convert_bits(values[:-_CHECKSUM_LEN], 5, 8, pad=False))
    return text[:separator], data
