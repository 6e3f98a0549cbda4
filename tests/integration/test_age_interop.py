"""Interop with the stock age 1.1.1 CLI, both ways, over the chunk-boundary sizes.

Stock age 1.1.1 has no hybrid (mlkem768x25519) recipients; hybrid interop is proven by the
CCTV hybrid vectors (tests/unit/agefmt/test_cctv.py) instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest

from exchange import agefmt
from exchange.agefmt.stream import CHUNK
from exchange.errors import NoIdentityMatch

pytestmark = pytest.mark.integration

SIZES = {
    "0": 0,
    "1": 1,
    "64KiB-1": CHUNK - 1,
    "64KiB": CHUNK,
    "64KiB+1": CHUNK + 1,
    "several chunks": 5 * CHUNK + 123,
    "one batch": 16 * CHUNK,
    "one batch + 1": 16 * CHUNK + 1,
    "several MB": 5 * 1024 * 1024 + 7,
}


def age(*args: str | Path, stdin: bytes = b"") -> bytes:
    result = subprocess.run(
        ["age", *map(str, args)], input=stdin, capture_output=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.fixture(name="keygen", scope="module")
def fixture_keygen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An identity file written by stock age-keygen, and its recipient."""
    path = tmp_path_factory.mktemp("keys") / "age-keygen.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return path, recipient


def _ours_encrypt(data: bytes, recipients: list[str], armor: bool = False) -> bytes:
    out = io.BytesIO()
    parsed = [agefmt.parse_recipient(r) for r in recipients]
    result = agefmt.encrypt(io.BytesIO(data), out, parsed, armor=armor)
    assert result.ciphertext_sha256 == hashlib.sha256(out.getvalue()).hexdigest()
    return out.getvalue()


def _ours_decrypt(data: bytes, identity_file: Path) -> bytes:
    out = io.BytesIO()
    identities = agefmt.parse_identity_file(identity_file.read_text())
    result = agefmt.decrypt(io.BytesIO(data), out, identities)
    assert result.plaintext_sha256 == hashlib.sha256(out.getvalue()).hexdigest()
    assert result.ciphertext_sha256 == hashlib.sha256(data).hexdigest()
    return out.getvalue()


def test_age_keygen_identity_file_parses_to_its_recipient(keygen: tuple[Path, str]) -> None:
    """An age-keygen file (with its comment lines) parses to the key age-keygen -y prints."""
    path, recipient = keygen
    (identity,) = agefmt.parse_identity_file(path.read_text())
    assert identity.recipient().to_string() == recipient


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_ours_to_stock_age(tmp_path: Path, keygen: tuple[Path, str], size: int) -> None:
    """Stock age -d decrypts what we encrypt, at every chunk-boundary size."""
    path, recipient = keygen
    data = os.urandom(size)
    encrypted = tmp_path / "f.age"
    encrypted.write_bytes(_ours_encrypt(data, [recipient]))
    assert age("-d", "-i", path, encrypted) == data


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_stock_age_to_ours(keygen: tuple[Path, str], size: int) -> None:
    """We decrypt what stock age -r encrypts, at every chunk-boundary size."""
    path, recipient = keygen
    data = os.urandom(size)
    assert _ours_decrypt(age("-r", recipient, stdin=data), path) == data


@pytest.mark.parametrize("size", [0, 47, 48, CHUNK + 1], ids=["0", "47", "48", "64KiB+1"])
def test_armor_both_ways(tmp_path: Path, keygen: tuple[Path, str], size: int) -> None:
    """age -a output decrypts with ours; our -a output is byte-for-byte age's armor layout."""
    path, recipient = keygen
    data = os.urandom(size)
    armored = age("-a", "-r", recipient, stdin=data)
    assert _ours_decrypt(armored, path) == data
    ours = _ours_encrypt(data, [recipient], armor=True)
    encrypted = tmp_path / "f.age"
    encrypted.write_bytes(ours)
    assert age("-d", "-i", path, encrypted) == data
    # Same layout: line lengths match those of stock age's armor for the same size.
    assert [len(x) for x in ours.split(b"\n")[-4:]] == [len(x) for x in armored.split(b"\n")[-4:]]


def test_multiple_recipients_both_ways(tmp_path: Path) -> None:
    """Files for three recipients open with each key, whichever side encrypted them."""
    keys = []
    for name in ("essex", "thurrock", "southend"):
        path = tmp_path / f"{name}.txt"
        subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
        keys.append((path, age_keygen_y(path)))
    data = os.urandom(3 * CHUNK + 5)
    recipients = [r for _, r in keys]
    ours = tmp_path / "ours.age"
    ours.write_bytes(_ours_encrypt(data, recipients))
    stock = age(*[arg for r in recipients for arg in ("-r", r)], stdin=data)
    for path, _ in keys:
        assert age("-d", "-i", path, ours) == data
        assert _ours_decrypt(stock, path) == data


def age_keygen_y(path: Path) -> str:
    return subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_our_identity_file_works_with_stock_age(tmp_path: Path) -> None:
    """An identity file we write (age-keygen layout, mode 0600) works with age -d -i and -y."""
    identity = agefmt.generate_x25519_identity()
    recipient = identity.recipient().to_string()
    path = tmp_path / "age-identity.txt"
    path.write_text(
        f"# created: 2026-11-25T11:00:00Z\n# public key: {recipient}\n{identity.to_string()}\n"
    )
    path.chmod(0o600)
    assert age_keygen_y(path) == recipient
    data = os.urandom(2 * CHUNK)
    encrypted = tmp_path / "f.age"
    encrypted.write_bytes(_ours_encrypt(data, [recipient]))
    assert age("-d", "-i", path, encrypted) == data
    assert _ours_decrypt(age("-r", recipient, stdin=data), path) == data


def test_wrong_key_is_refused_by_both(tmp_path: Path, keygen: tuple[Path, str]) -> None:
    """A file for one key is refused, by stock age and by us, when opened with another."""
    path, _ = keygen
    other = agefmt.generate_x25519_identity()
    encrypted = tmp_path / "f.age"
    encrypted.write_bytes(_ours_encrypt(b"x", [other.recipient().to_string()]))
    result = subprocess.run(
        ["age", "-d", "-i", str(path), str(encrypted)], capture_output=True, check=False
    )
    assert result.returncode != 0
    with pytest.raises(NoIdentityMatch):
        _ours_decrypt(encrypted.read_bytes(), path)
