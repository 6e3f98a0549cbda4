"""Bad deliveries at the partner: nothing is filed, an incident is raised, and a signed rejected
receipt goes back: a version 1 receipt when the manifest itself verified (FORMAT.md §4.4,
§5.1), the rejection of the manifest file (§4.6) to the hub's operator when it did not."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange import keys, pull, receipts
from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import ESSEX_POLICE, create_workspace
from exchange.model import ReasonCode
from exchange.signing import Reason
from tests.support.deliveries import (
    AGREEMENT,
    Made,
    Orgs,
    make_delivery,
    make_orgs,
    seal,
    upload,
)
from tests.support.sshd import Hub

PARTNER = "southend-uhft"


@pytest.fixture(name="orgs")
def fixture_orgs(tmp_path: Path, hub: Hub) -> Orgs:
    return make_orgs(tmp_path, hub)


def _send(orgs: Orgs, **kwargs: object) -> Made:
    """Record and seal a delivery at essex-cc (not uploaded)."""
    with orgs.ledger(orgs.cc) as ledger:
        return make_delivery(orgs.cc.config(), ledger, PARTNER, agreement=AGREEMENT, **kwargs)  # type: ignore[arg-type]


def _upload(orgs: Orgs, made: Made, **kwargs: bytes) -> None:
    transport = orgs.transport("essex-cc")
    with orgs.ledger(orgs.cc) as ledger:
        upload(transport, f"{PARTNER}/inbox", made, ledger, **kwargs)
    transport.close()


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
    orgs.hub.normalise()
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


def _filed(orgs: Orgs) -> list[Path]:
    inbox = orgs.partners[PARTNER].folder / "inbox"
    return [p for p in inbox.rglob("*") if p.is_file()]


def _receipts_on_hub(orgs: Orgs) -> list[str]:
    return sorted(p.name for p in (orgs.hub.partner_dir(PARTNER) / "receipts").iterdir())


def _partner_incidents(orgs: Orgs) -> list[tuple[ReasonCode, object]]:
    with orgs.ledger(orgs.partners[PARTNER]) as ledger:
        return [(i.reason, i.context.get("format_reason")) for i in ledger.incidents()]


def _assert_rejected(orgs: Orgs, made: Made, reason: Reason, incident: ReasonCode) -> None:
    """The partner rejected it with a receipt; the sender verifies that receipt and records the
    delivery as rejected, with an incident on both sides."""
    report = _pull(orgs)
    (outcome,) = report.outcomes
    assert (pull.Result.REJECTED, reason, True) == (
        outcome.result,
        outcome.reason,
        outcome.receipt_sent,
    )
    assert [] == _filed(orgs)
    assert [f"{made.names.stem}.receipt.age"] == _receipts_on_hub(orgs)
    assert [(incident, reason.value)] == _partner_incidents(orgs)
    with orgs.ledger(orgs.partners[PARTNER]) as ledger:
        (row,) = ledger.received("essex-cc")
    assert ("rejected", reason.value, None) == (row.status, row.reason, row.path)
    collected = _collect(orgs)
    assert [receipts.ReceiptResult.REJECTED] == [o.result for o in collected.outcomes]
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.REJECTED == ledger.get_delivery(made.delivery).state
        assert [ReasonCode.RECEIPT_REJECTED] == [i.reason for i in ledger.incidents()]


def _assert_refused(orgs: Orgs, made: Made, reason: Reason, incident: ReasonCode) -> None:
    """The manifest did not verify: nothing filed, no ledger row, an incident, and a signed
    rejection of the manifest file goes to essex-cc, the only party that can write the
    partner's inbox (FORMAT.md §4.6); essex-cc records the delivery rejected, with an incident
    naming the manifest file the partner read."""
    sealed = (orgs.hub.partner_dir(PARTNER) / "inbox" / made.names.manifest).read_bytes()
    report = _pull(orgs)
    (outcome,) = report.outcomes
    assert (pull.Result.REFUSED, reason, True) == (
        outcome.result,
        outcome.reason,
        outcome.receipt_sent,
    )
    assert [] == _filed(orgs)
    assert [f"{made.names.stem}.receipt.age"] == _receipts_on_hub(orgs)
    assert [(incident, reason.value)] == _partner_incidents(orgs)
    with orgs.ledger(orgs.partners[PARTNER]) as ledger:
        assert [] == ledger.received()
    again = _pull(orgs)
    assert [pull.Result.REFUSED] == [o.result for o in again.outcomes]
    assert [f"{made.names.stem}.receipt.age"] == _receipts_on_hub(orgs)
    with orgs.ledger(orgs.partners[PARTNER]) as ledger:
        (kept,) = ledger.incidents()
    assert 2 == kept.occurrences
    collected = _collect(orgs)
    assert [receipts.ReceiptResult.REJECTED] == [o.result for o in collected.outcomes]
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.REJECTED == ledger.get_delivery(made.delivery).state
        (raised,) = ledger.incidents()
    assert (ReasonCode.RECEIPT_REJECTED, reason.value, "yes") == (
        raised.reason,
        raised.context.get("format_reason"),
        raised.context.get("manifest_unverified"),
    )
    assert hashlib.sha256(sealed).hexdigest() == raised.context.get("manifest_file_sha256")
    # Ours when the partner refused the very file essex-cc sealed; not when it was replaced.
    ours = "ours" if sealed == made.sealed_manifest else "not-ours"
    assert ours == raised.context.get("manifest_file")


@pytest.mark.integration
def test_tampered_payload_is_rejected(orgs: Orgs) -> None:
    """One flipped ciphertext byte: the payload hash differs from the signed manifest's."""
    made = _send(orgs)
    tampered = bytearray(made.payload)
    tampered[len(tampered) // 2] ^= 0x01
    _upload(orgs, made, payload=bytes(tampered))
    _assert_rejected(orgs, made, Reason.CIPHERTEXT_MISMATCH, ReasonCode.DECRYPT_FAILED)


@pytest.mark.integration
def test_payload_with_other_plaintext_is_rejected(orgs: Orgs) -> None:
    """A signed manifest whose plaintext hash does not match what decrypts is refused after
    decryption, and the decrypted bytes are not kept."""
    made = _send(orgs, edit_manifest=lambda m: dataclasses.replace(m, plaintext_sha256="0" * 64))
    _upload(orgs, made)
    _assert_rejected(orgs, made, Reason.PLAINTEXT_MISMATCH, ReasonCode.DECRYPT_FAILED)


@pytest.mark.integration
def test_tampered_manifest_is_refused(orgs: Orgs) -> None:
    """A manifest changed after signing (its sequence) fails the signature check."""
    made = _send(orgs)
    altered = made.signed_manifest.replace(
        f"sequence: {made.manifest.sequence}\n".encode(), b"sequence: 99\n"
    )
    recipient = orgs.cc.config().partners[PARTNER].keys.age_recipient
    _upload(orgs, made, sealed_manifest=seal(altered, recipient))
    _assert_refused(orgs, made, Reason.BAD_SIGNATURE, ReasonCode.SIGNATURE_INVALID)


@pytest.mark.integration
def test_manifest_signed_by_another_sender_is_refused(orgs: Orgs, tmp_path: Path) -> None:
    """A manifest that claims essex-cc but was signed with Essex Police's key is refused."""
    police = create_workspace(tmp_path / "police", ESSEX_POLICE, now=datetime.now(UTC))
    made = _send(orgs, signing_key=keys.load_signing_key(police.key_paths))
    _upload(orgs, made)
    _assert_refused(orgs, made, Reason.KEY_MISMATCH, ReasonCode.SIGNATURE_INVALID)


@pytest.mark.integration
def test_manifest_from_an_unknown_sender_is_refused(orgs: Orgs) -> None:
    """A manifest from an organisation the partner has no key for is refused."""
    made = _send(orgs, edit_manifest=lambda m: dataclasses.replace(m, sender="barnardos"))
    _upload(orgs, made)
    _assert_refused(orgs, made, Reason.UNKNOWN_SIGNER, ReasonCode.SIGNATURE_INVALID)


@pytest.mark.integration
def test_manifest_for_another_recipient_is_refused(orgs: Orgs) -> None:
    """A manifest addressed to Essex Police, even if encrypted to us, is not ours to file."""
    made = _send(orgs, edit_manifest=lambda m: dataclasses.replace(m, recipient="essex-police"))
    _upload(orgs, made)
    _assert_refused(orgs, made, Reason.WRONG_RECIPIENT, ReasonCode.UNEXPECTED_FILE)


@pytest.mark.integration
def test_agreement_not_shared_is_rejected(orgs: Orgs) -> None:
    """A verified manifest under an agreement the partner does not hold gets a rejected
    receipt."""
    made = _send(orgs, edit_manifest=lambda m: dataclasses.replace(m, agreement="youth-justice"))
    _upload(orgs, made)
    report = _pull(orgs)
    (outcome,) = report.outcomes
    assert (pull.Result.REJECTED, Reason.AGREEMENT_NOT_SHARED) == (outcome.result, outcome.reason)
    assert [] == _filed(orgs)


@pytest.mark.integration
@pytest.mark.parametrize("back", [0, 1], ids=["same-sequence", "lower-sequence"])
def test_replayed_sequence_is_rejected(orgs: Orgs, back: int) -> None:
    """A new manifest whose sequence is not above the last accepted one (the same, or a
    lower one) is a replay: rejected receipt, nothing filed."""
    _upload(orgs, _send(orgs, plaintext=b"referral_id\nR-1\n"))
    first = _send(orgs)
    _upload(orgs, first)
    assert [pull.Result.FILED] * 2 == [o.result for o in _pull(orgs).outcomes]
    _collect(orgs)
    replay = _send(orgs, sequence=first.manifest.sequence - back, plaintext=b"referral_id\nR-9\n")
    _upload(orgs, replay)
    report = _pull(orgs)
    (outcome,) = report.outcomes
    assert (pull.Result.REJECTED, Reason.REPLAY, True) == (
        outcome.result,
        outcome.reason,
        outcome.receipt_sent,
    )
    inbox = orgs.partners[PARTNER].folder / "inbox" / "essex-cc" / AGREEMENT
    assert 2 == len(list(inbox.iterdir()))
    assert (ReasonCode.REPLAY, "replay") in _partner_incidents(orgs)


@pytest.mark.integration
def test_old_delivery_put_back_by_the_hub_is_not_filed_again(orgs: Orgs, tmp_path: Path) -> None:
    """The hub replaying the exact files of a delivery already received is recognised by
    manifest hash: nothing is filed a second time."""
    made = _send(orgs)
    _upload(orgs, made)
    inbox = orgs.hub.partner_dir(PARTNER) / "inbox"
    saved = tmp_path / "saved"
    shutil.copytree(inbox, saved)
    assert [pull.Result.FILED] == [o.result for o in _pull(orgs).outcomes]
    _collect(orgs)
    assert [] == list(inbox.iterdir())
    for path in saved.iterdir():
        shutil.copy(path, inbox / path.name)
    orgs.hub.normalise()
    report = _pull(orgs)
    assert [pull.Result.DUPLICATE] == [o.result for o in report.outcomes]
    assert 1 == len(_filed(orgs))


@pytest.mark.integration
def test_deliveries_are_taken_in_sequence_order(orgs: Orgs) -> None:
    """Several deliveries listed in random stem order are all filed, none taken for a replay."""
    made = [_send(orgs, plaintext=f"referral_id\nR-{n}\n".encode()) for n in range(4)]
    for item in made:
        _upload(orgs, item)
    report = _pull(orgs)
    assert [pull.Result.FILED] * 4 == [o.result for o in report.outcomes]
    sequences = [o.delivery for o in report.outcomes]
    assert [m.delivery for m in made] == sequences


@pytest.mark.integration
def test_unexpected_files_in_the_inbox_are_incidents(orgs: Orgs) -> None:
    """A file whose name is not a hub name is reported (escaped) and never opened."""
    inbox = orgs.hub.partner_dir(PARTNER) / "inbox"
    (inbox / "readme.txt").write_bytes(b"hello")
    (inbox / "0123456789abcdef0123456789abcdef.exe").write_bytes(b"x")
    orgs.hub.normalise()
    report = _pull(orgs)
    assert [] == list(report.outcomes)
    assert ["0123456789abcdef0123456789abcdef.exe", "readme.txt"] == sorted(report.unexpected)
    assert 2 == len(report.incidents)


@pytest.mark.integration
def test_exchange_pull_exits_1_when_something_was_refused(orgs: Orgs) -> None:
    """The command says what it refused and why, and exits 1 (needs attention)."""
    made = _send(orgs)
    tampered = bytearray(made.payload)
    tampered[-1] ^= 0x01
    _upload(orgs, made, payload=bytes(tampered))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["EXCHANGE_LOG_LEVEL"] = "critical"
    config = str(orgs.partners[PARTNER].config_dir)
    result = subprocess.run(
        [sys.executable, "-m", "exchange", "pull", "--config", config],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert 1 == result.returncode, result.stderr
    assert (
        f"rejected: {made.delivery} from essex-cc under {AGREEMENT} (ciphertext-mismatch); receipt sent"
        in result.stdout
    )
    assert result.stdout.rstrip().endswith(
        "0 filed, 1 rejected, 0 refused, 0 already received; 1 incident(s)"
    )
