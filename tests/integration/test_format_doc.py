"""docs/FORMAT.md is true: its stock-tool commands run as written, and its tables match the code."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from exchange import agefmt
from exchange.core.naming import DeliveryNames
from exchange.manifest import (
    RECEIPT_REASONS,
    UNVERIFIED_REASONS,
    Manifest,
    SentDelivery,
    Status,
    open_receipt,
    sign_manifest,
)
from exchange.signing import SMALL_ORDER_ENCODINGS, Reason, SigningKey, generate_signing_key
from tests.support.sshd import Hub

FORMAT_MD = Path(__file__).parent.parent.parent / "docs" / "FORMAT.md"
PARTNER = "southend-uhft"
PLAINTEXT = b"case_ref,referral_date,outcome\nC-2001,2026-11-20,no further action\n"


def _section(title_prefix: str) -> str:
    text = FORMAT_MD.read_text(encoding="utf-8")
    start = text.index(f"\n## {title_prefix}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _shell_blocks(section: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def _encrypt(data: bytes, recipient: agefmt.Recipient) -> bytes:
    out = io.BytesIO()
    agefmt.encrypt(io.BytesIO(data), out, [recipient])
    return out.getvalue()


def _decrypt(data: bytes, identity: agefmt.Identity) -> bytes:
    out = io.BytesIO()
    agefmt.decrypt(io.BytesIO(data), out, [identity])
    return out.getvalue()


class _Parties:
    """Fresh keys for the sender (essex-cc) and the partner (southend-uhft)."""

    def __init__(self) -> None:
        self.sender_signing: SigningKey = generate_signing_key()
        self.sender_age = agefmt.generate_x25519_identity()
        self.partner_signing: SigningKey = generate_signing_key()
        self.partner_age = agefmt.generate_x25519_identity()


def _deliver(hub: Hub, parties: _Parties, *, tamper: bool = False) -> tuple[DeliveryNames, str]:
    """Put one delivery in the partner's inbox as the daemon would; (names, manifest hash)."""
    delivery = "dl-" + hashlib.sha256(os.urandom(16)).hexdigest()[:32]
    names = DeliveryNames.for_delivery(delivery)
    ciphertext = _encrypt(PLAINTEXT, parties.partner_age.recipient())
    manifest = Manifest.build(
        delivery=delivery,
        dataset="ds-" + "1" * 32,
        dataset_version=1,
        correction=None,
        sender="essex-cc",
        sender_key=parties.sender_signing.public_key.fingerprint,
        recipient=PARTNER,
        recipient_key=parties.partner_signing.public_key.fingerprint,
        agreement="mash-weekly",
        purpose="Safeguarding children: multi-agency referrals (MASH)",
        legal_basis="Children Act 2004 s.11; UK GDPR Art. 6(1)(e) and 9(2)(g)",
        classification="OFFICIAL-SENSITIVE",
        file_name="mash referrals 2026-11.csv",
        media_type="text/csv",
        plaintext_size=len(PLAINTEXT),
        plaintext_sha256=hashlib.sha256(PLAINTEXT).hexdigest(),
        ciphertext_sha256=hashlib.sha256(ciphertext).hexdigest(),
        created=datetime(2026, 11, 25, 10, 15, tzinfo=UTC),
        retain_until=date(2027, 11, 25),
        sequence=1,
    )
    signed = sign_manifest(manifest, parties.sender_signing)
    if tamper:
        signed = signed.replace(b"sequence: 1\n", b"sequence: 9\n")
    inbox = hub.partner_dir(PARTNER) / "inbox"
    (inbox / names.payload).write_bytes(ciphertext)
    (inbox / names.manifest).write_bytes(_encrypt(signed, parties.partner_age.recipient()))
    hub.normalise()
    return names, hashlib.sha256(signed[: signed.rindex(b"signature: ")]).hexdigest()


def _partner_folder(tmp_path: Path, hub: Hub, parties: _Parties) -> Path:
    work = tmp_path / "partner"
    work.mkdir()
    (work / "key.txt").write_text(parties.partner_age.to_string() + "\n", encoding="ascii")
    (work / "signing-ed25519.pem").write_bytes(parties.partner_signing.to_pem())
    for private in ("key.txt", "signing-ed25519.pem"):
        (work / private).chmod(0o600)
    shutil.copyfile(hub.known_hosts, work / "hub_known_hosts")
    return work


def _run_blocks(
    work: Path, hub: Hub, parties: _Parties, name: str, blocks: list[str]
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "LC_ALL": "C",
        "HUB_HOST": hub.host,
        "HUB_PORT": str(hub.port),
        "HUB_LOGIN": PARTNER,
        "SSH_KEY": str(hub.login(PARTNER)[0]),
        "SENDER_KEY": parties.sender_signing.public_key.text,
        "SENDER_AGE": parties.sender_age.recipient().to_string(),
        "NAME": name,
    }
    script = "\n".join(blocks)
    return subprocess.run(
        ["bash", "-e", "-u", "-o", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.integration
def test_stock_tool_commands_run_as_written(tmp_path: Path, hub: Hub) -> None:
    """FORMAT.md §10's commands, run verbatim, fetch, verify, decrypt and answer a delivery
    that our receipt verifier then accepts."""
    blocks = _shell_blocks(_section("10. Verifying by hand"))
    assert len(blocks) == 6
    parties = _Parties()
    names, manifest_sha = _deliver(hub, parties)
    work = _partner_folder(tmp_path, hub, parties)

    result = _run_blocks(work, hub, parties, names.stem, blocks)

    assert result.returncode == 0, result.stdout + result.stderr
    assert names.manifest in result.stdout
    assert "Signature Verified Successfully" in result.stdout
    assert f"{names.payload}: OK" in result.stdout
    assert "dataset.out: OK" in result.stdout
    assert f"sender-key: {parties.sender_signing.public_key.fingerprint}" in result.stdout
    assert (work / "dataset.out").read_bytes() == PLAINTEXT
    receipt_file = hub.partner_dir(PARTNER) / "receipts" / names.receipt
    signed_receipt = _decrypt(receipt_file.read_bytes(), parties.sender_age)
    opened = open_receipt(
        signed_receipt,
        recipients={PARTNER: parties.partner_signing.public_key},
        me="essex-cc",
        sent=lambda _delivery: SentDelivery(
            PARTNER, "mash-weekly", manifest_sha, hashlib.sha256(PLAINTEXT).hexdigest()
        ),
    )
    assert opened.value.status is Status.ACCEPTED
    assert not [p for p in receipt_file.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.integration
def test_stock_tool_check_refuses_a_tampered_manifest(tmp_path: Path, hub: Hub) -> None:
    """The same commands stop with openssl's failure when a signed field was altered."""
    blocks = _shell_blocks(_section("10. Verifying by hand"))
    parties = _Parties()
    names, _ = _deliver(hub, parties, tamper=True)
    work = _partner_folder(tmp_path, hub, parties)

    result = _run_blocks(work, hub, parties, names.stem, blocks[:3])

    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr


def test_reason_table_matches_the_code() -> None:
    """FORMAT.md §7 lists exactly the Reason codes, and marks exactly the receipt ones (version
    1 receipts, and §4.6 rejections of a manifest that did not verify)."""
    rows = re.findall(r"^\| `([a-z-]+)` \| (yes)? *\|", _section("7. Reason codes"), re.MULTILINE)
    assert {code for code, _ in rows} == {reason.value for reason in Reason}
    assert {code for code, marked in rows if marked} == {r.value for r in RECEIPT_REASONS}
    unverified = re.findall(
        r"^\| `([a-z-]+)` \| (?:yes)? *\| (yes)? *\|", _section("7. Reason codes"), re.MULTILINE
    )
    assert {c for c, marked in unverified if marked} == {r.value for r in UNVERIFIED_REASONS}


def test_small_order_list_matches_the_code() -> None:
    """The 14 encodings printed in FORMAT.md §3.1 are the ones signing refuses by name."""
    printed = re.findall(r"^    ([0-9a-f]{64})  ", _section("3. Keys and signatures"), re.MULTILINE)
    assert {bytes.fromhex(h) for h in printed} == SMALL_ORDER_ENCODINGS
    assert len(printed) == 14
