"""Two organisations over a real sshd hub: a delivery is pulled, filed, acknowledged, cleaned up."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange import agefmt, keys, pull, receipts
from exchange.core.delivery import DeliveryState
from tests.integration.test_format_doc import _section, _shell_blocks
from tests.support.deliveries import AGREEMENT, PLAINTEXT, Orgs, make_delivery, make_orgs, upload
from tests.support.sshd import Hub

PARTNER = "southend-uhft"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(name="orgs")
def fixture_orgs(tmp_path: Path, hub: Hub) -> Orgs:
    return make_orgs(tmp_path, hub)


def _deliver(orgs: Orgs, **kwargs: object) -> tuple[str, str]:
    """essex-cc sends one dataset to southend-uhft; returns (delivery id, hub stem)."""
    cfg = orgs.cc.config()
    transport = orgs.transport("essex-cc")
    with orgs.ledger(orgs.cc) as ledger:
        made = make_delivery(cfg, ledger, PARTNER, agreement=AGREEMENT, **kwargs)  # type: ignore[arg-type]
        upload(transport, f"{PARTNER}/inbox", made, ledger)
    transport.close()
    return made.delivery, made.names.stem


def _pull(orgs: Orgs) -> pull.PullReport:
    cfg = orgs.partners[PARTNER].config()
    paths = keys.KeyPaths(cfg.folders.keys)
    transport = orgs.transport(PARTNER)
    with orgs.ledger(orgs.partners[PARTNER]) as ledger:
        report = pull.pull(
            cfg,
            ledger,
            transport,
            identities=keys.load_identities(paths),
            signing_key=keys.load_signing_key(paths),
            now=datetime.now(UTC),
        )
    transport.close()
    return report


def _collect(orgs: Orgs) -> receipts.ReceiptReport:
    cfg = orgs.cc.config()
    transport = orgs.transport("essex-cc")
    with orgs.ledger(orgs.cc) as ledger:
        report = receipts.collect_receipts(
            cfg,
            ledger,
            transport,
            datetime.now(UTC),
            identities=keys.load_identities(keys.KeyPaths(cfg.folders.keys)),
        )
    transport.close()
    return report


@pytest.mark.integration
def test_delivery_is_filed_acknowledged_and_removed(orgs: Orgs) -> None:
    """A delivery ends filed at the partner with identical bytes, the sender's ledger says
    acknowledged, and the hub holds nothing of it any more."""
    delivery, stem = _deliver(orgs)
    report = _pull(orgs)
    assert [pull.Result.FILED] == [o.result for o in report.outcomes]
    filed = report.outcomes[0].path
    assert filed is not None
    partner_root = orgs.partners[PARTNER].folder
    assert partner_root / "inbox" / "essex-cc" / AGREEMENT / "mash referrals 2026-11.csv" == filed
    assert PLAINTEXT == filed.read_bytes()
    assert 0o700 == stat.S_IMODE(filed.parent.stat().st_mode)
    assert [] == list((partner_root / "inbox" / ".incoming").iterdir())
    assert report.outcomes[0].receipt_sent
    receipts_dir = orgs.hub.partner_dir(PARTNER) / "receipts"
    assert [f"{stem}.receipt.age"] == sorted(p.name for p in receipts_dir.iterdir())
    with orgs.ledger(orgs.partners[PARTNER]) as ledger:
        (row,) = ledger.received("essex-cc")
    assert ("accepted", delivery, str(filed)) == (row.status, row.delivery, row.path)

    orgs.hub.normalise()
    collected = _collect(orgs)
    assert [receipts.ReceiptResult.ACKNOWLEDGED] == [o.result for o in collected.outcomes]
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.ACKNOWLEDGED == ledger.get_delivery(delivery).state
        assert [] == ledger.incidents()
    assert [] == list(receipts_dir.iterdir())
    assert [] == list((orgs.hub.partner_dir(PARTNER) / "inbox").iterdir())


@pytest.mark.integration
def test_a_second_pull_files_nothing_twice(orgs: Orgs) -> None:
    """Pulling again before the sender cleaned up recognises the delivery by manifest hash:
    nothing is filed twice and no receipt is uploaded again while one is on the hub."""
    _deliver(orgs)
    first = _pull(orgs)
    again = _pull(orgs)
    assert [pull.Result.DUPLICATE] == [o.result for o in again.outcomes]
    assert not again.outcomes[0].receipt_sent
    folder = orgs.partners[PARTNER].folder / "inbox" / "essex-cc" / AGREEMENT
    assert [first.outcomes[0].path] == list(folder.iterdir())


@pytest.mark.integration
def test_a_lost_receipt_is_sent_again(orgs: Orgs) -> None:
    """If our receipt vanished from the hub before the sender took it, the next pull
    uploads the same receipt again (rebuilt from the ledger, byte for byte)."""
    _deliver(orgs)
    _pull(orgs)
    receipt = next((orgs.hub.partner_dir(PARTNER) / "receipts").iterdir())
    original = receipt.read_bytes()
    receipt.unlink()
    again = _pull(orgs)
    assert again.outcomes[0].receipt_sent
    resent = orgs.hub.partner_dir(PARTNER) / "receipts" / receipt.name
    identities = keys.load_identities(orgs.cc.key_paths)

    def opened(sealed: bytes) -> bytes:
        out = io.BytesIO()
        agefmt.decrypt(io.BytesIO(sealed), out, identities)
        return out.getvalue()

    assert opened(original) == opened(resent.read_bytes())


@pytest.mark.integration
def test_same_file_name_twice_never_overwrites(orgs: Orgs) -> None:
    """Two datasets with the same original name are both kept: the second gets ' (2)'."""
    _deliver(orgs)
    _deliver(orgs, plaintext=PLAINTEXT + b"R-1003,2026-11-22,S-1,5-10,neglect,low,essex-cc\n")
    report = _pull(orgs)
    paths = sorted(str(o.path.name) for o in report.outcomes if o.path is not None)
    assert ["mash referrals 2026-11 (2).csv", "mash referrals 2026-11.csv"] == paths
    digests = {hashlib.sha256(o.path.read_bytes()).hexdigest() for o in report.outcomes if o.path}
    assert 2 == len(digests)


@pytest.mark.integration
def test_exchange_pull_command(orgs: Orgs) -> None:
    """``exchange pull --json`` at the partner files the delivery and exits 0."""
    delivery, _stem = _deliver(orgs)
    env = {**os.environ, "EXCHANGE_LOG_LEVEL": "warning"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange",
            "pull",
            "--json",
            "--config",
            str(orgs.partners[PARTNER].config_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert 0 == result.returncode, result.stderr
    data = json.loads(result.stdout)
    (outcome,) = data["pull"]["outcomes"]
    assert ("filed", delivery, True) == (
        outcome["result"],
        outcome["delivery"],
        outcome["receipt_sent"],
    )


@pytest.mark.integration
def test_partner_without_exchange_uses_stock_tools(orgs: Orgs, tmp_path: Path) -> None:
    """A partner with only sftp, age, openssl and coreutils fetches, verifies, decrypts and
    answers a delivery made by exchange, running FORMAT.md §10's commands as written (the
    blocks test_format_doc runs), and the sender's collector accepts that receipt."""
    delivery, stem = _deliver(orgs)
    partner = orgs.partners[PARTNER]
    work = tmp_path / "by-hand"
    work.mkdir()
    shutil.copyfile(partner.key_paths.age_identity, work / "key.txt")
    shutil.copyfile(partner.key_paths.signing_key, work / "signing-ed25519.pem")
    for private in ("key.txt", "signing-ed25519.pem"):
        (work / private).chmod(0o600)
    shutil.copyfile(orgs.hub.known_hosts, work / "hub_known_hosts")
    card = orgs.cc.card()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "LC_ALL": "C",
        "HUB_HOST": orgs.hub.host,
        "HUB_PORT": str(orgs.hub.port),
        "HUB_LOGIN": PARTNER,
        "SSH_KEY": str(partner.key_paths.ssh_key),
        "SENDER_KEY": card.signing_key,
        "SENDER_AGE": card.age_recipient,
        "NAME": stem,
    }
    script = "\n".join(_shell_blocks(_section("10. Verifying by hand")))
    result = subprocess.run(
        ["bash", "-e", "-u", "-o", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "Signature Verified Successfully" in result.stdout
    assert PLAINTEXT == (work / "dataset.out").read_bytes()
    orgs.hub.normalise()
    collected = _collect(orgs)
    assert [receipts.ReceiptResult.ACKNOWLEDGED] == [o.result for o in collected.outcomes]
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.ACKNOWLEDGED == ledger.get_delivery(delivery).state
