"""exchange.signing against the stock tools: ssh-keygen fingerprints and openssl Ed25519."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from exchange import signing

pytestmark = pytest.mark.integration


def _run(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(args, input=stdin, capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    ("key_type", "bits"), [("ed25519", None), ("ecdsa", "256"), ("ecdsa", "521"), ("rsa", "3072")]
)
def test_ssh_fingerprint_matches_ssh_keygen(
    tmp_path: Path, key_type: str, bits: str | None
) -> None:
    """ssh_fingerprint gives exactly the fingerprint ssh-keygen -lf prints, for each host key type."""
    key = tmp_path / "key"
    extra = ["-b", bits] if bits else []
    _run("ssh-keygen", "-q", "-t", key_type, *extra, "-N", "", "-C", "hub@essex", "-f", str(key))
    line = (tmp_path / "key.pub").read_text()
    listed = _run("ssh-keygen", "-lf", str(tmp_path / "key.pub")).decode().split()
    assert listed[1] == signing.ssh_fingerprint(line)


def test_generated_ssh_key_works_with_ssh_keygen(tmp_path: Path) -> None:
    """ssh-keygen reads our OpenSSH private key and derives the same public key and fingerprint."""
    private, public = signing.generate_ssh_keypair("thurrock-council@hub")
    key = tmp_path / "hub-ssh-ed25519"
    key.write_bytes(private)
    key.chmod(0o600)
    derived = _run("ssh-keygen", "-y", "-f", str(key)).decode().split()
    assert public.split()[:2] == derived[:2]
    (tmp_path / "k.pub").write_text(public + "\n")
    listed = _run("ssh-keygen", "-lf", str(tmp_path / "k.pub")).decode().split()
    assert listed[1] == signing.ssh_fingerprint(public)


def test_openssl_key_signs_and_ours_verifies(tmp_path: Path) -> None:
    """A key from 'openssl genpkey' loads, and openssl's signature verifies with our code."""
    pem = tmp_path / "k.pem"
    _run("openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem))
    key = signing.load_signing_key_pem(pem.read_bytes())
    message = tmp_path / "m"
    message.write_bytes(b"exchange-receipt/v1\n")
    signature = _run(
        "openssl", "pkeyutl", "-sign", "-inkey", str(pem), "-rawin", "-in", str(message)
    )
    key.public_key.verify(message.read_bytes(), signature)
    assert signature == key.sign(message.read_bytes())


def test_our_key_signs_and_openssl_verifies(tmp_path: Path) -> None:
    """Our PKCS#8 PEM key and signature are accepted by openssl pkeyutl -verify."""
    key = signing.generate_signing_key()
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.to_pem())
    public = tmp_path / "p.pem"
    _run("openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(public))
    message = tmp_path / "m"
    message.write_bytes(b"exchange-manifest/v1\n")
    sig = tmp_path / "sig"
    sig.write_bytes(key.sign(message.read_bytes()))
    out = _run(
        "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin",
        "-in", str(message), "-sigfile", str(sig),
    )  # fmt: skip
    assert b"Signature Verified Successfully" in out
