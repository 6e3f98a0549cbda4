"""Loader for the CCTV age test vectors (C2SP CCTV, age/testdata), provided as shared data.

Each vector file is a ``key: value`` header, an empty line, then an age file (zlib-compressed
when ``compressed: zlib``). The vectors live beside the checkout in
``../shared/testdata/cctv-age/`` and are read from there, never copied into the repository.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

CCTV_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata" / "cctv-age"

#: The header keys the vector format defines (SOURCE.md); a file with any other is ignored.
KNOWN_KEYS = frozenset(
    {"expect", "payload", "file key", "identity", "passphrase", "armored", "compressed", "comment"}
)
#: The closed vocabulary of ``expect:``.
EXPECTATIONS = frozenset(
    {"success", "no match", "HMAC failure", "header failure", "payload failure", "armor failure"}
)


@dataclass(frozen=True, slots=True)
class Vector:
    name: str
    expect: str
    payload_sha256: str | None
    file_key: str | None
    identities: tuple[str, ...]
    passphrases: tuple[str, ...]
    armored: bool
    comment: str | None
    unknown_keys: tuple[str, ...]
    data: bytes

    @property
    def needs_passphrase(self) -> bool:
        """Only a passphrase (scrypt) can open it: we do not implement scrypt recipients."""
        return bool(self.passphrases) and not self.identities


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        raise ValueError(f"{path}: no empty line after the vector header")
    fields: dict[str, list[str]] = {}
    for line in head.decode("utf-8").split("\n"):
        key, colon, value = line.partition(": ")
        if not colon:
            raise ValueError(f"{path}: malformed header line {line!r}")
        fields.setdefault(key, []).append(value)
    compressed = fields.get("compressed", [None])[0]
    if compressed == "zlib":
        body = zlib.decompress(body)
    elif compressed is not None:
        raise ValueError(f"{path}: unknown compression {compressed!r}")
    (expect,) = fields["expect"]
    if expect not in EXPECTATIONS:
        raise ValueError(f"{path}: unknown expectation {expect!r}")
    return Vector(
        name=path.name,
        expect=expect,
        payload_sha256=fields.get("payload", [None])[0],
        file_key=fields.get("file key", [None])[0],
        identities=tuple(fields.get("identity", [])),
        passphrases=tuple(fields.get("passphrase", [])),
        armored=fields.get("armored", ["no"])[0] == "yes",
        comment=fields.get("comment", [None])[0],
        unknown_keys=tuple(sorted(set(fields) - KNOWN_KEYS)),
        data=body,
    )


def load_all() -> list[Vector]:
    """Every vector, sorted by name; SOURCE.md is not a vector."""
    return [load(p) for p in sorted(CCTV_DIR.iterdir()) if p.name != "SOURCE.md"]
