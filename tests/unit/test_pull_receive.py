"""The receive path over the in-memory hub: caps, undecryptable manifests, missing payloads,
crash recovery and receipt hand-back, without sshd."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange import agefmt, keys, pull, receipts
from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import ESSEX_CC, SOUTHEND, Workspace, create_workspace
from exchange.ledger import LEDGER_FILENAME, Ledger
from exchange.manifest import UnverifiedRejection
from exchange.signing import Reason
from exchange.transport.memory import MemoryHub, MemoryTransport
from tests.support.deliveries import AGREEMENT, PLAINTEXT, Made, make_delivery, seal

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@dataclass
class Pair:
    cc: Workspace
    partner: Workspace
    cc_ledger: Ledger
    partner_ledger: Ledger
    hub: MemoryHub

    def send(self, **kwargs: object) -> Made:
        """essex-cc makes a delivery and puts it in the partner's inbox (the partner's view)."""
        made = make_delivery(
            self.cc.config(), self.cc_ledger, SOUTHEND.id, agreement=AGREEMENT, now=NOW, **kwargs
        )  # type: ignore[arg-type]
        self.hub.files[f"inbox/{made.names.payload}"] = made.payload
        self.hub.files[f"inbox/{made.names.manifest}"] = made.sealed_manifest
        return made

    def pull(self) -> pull.PullReport:
        paths = self.partner.key_paths
        return pull.pull(
            self.partner.config(),
            self.partner_ledger,
            MemoryTransport(self.hub),
            identities=keys.load_identities(paths),
            signing_key=keys.load_signing_key(paths),
            now=NOW,
        )

    @property
    def filed(self) -> list[Path]:
        return sorted(p for p in (self.partner.folder / "inbox").rglob("*") if p.is_file())


@pytest.fixture(name="pair")
def fixture_pair(tmp_path: Path) -> Iterator[Pair]:
    cc = create_workspace(tmp_path / "cc", ESSEX_CC, now=NOW)
    partner = create_workspace(tmp_path / "partner", SOUTHEND, now=NOW)
    cc.add_partner(partner)
    partner.add_partner(cc)
    cc.add_agreement(AGREEMENT, (SOUTHEND.id,))
    partner.add_agreement(AGREEMENT, (ESSEX_CC.id,))
    hub = MemoryHub()
    hub.mkdirs("inbox")
    hub.mkdirs("receipts")
    with (
        Ledger.open(cc.folder / "state" / LEDGER_FILENAME) as a,
        Ledger.open(partner.folder / "state" / LEDGER_FILENAME) as b,
    ):
        yield Pair(cc, partner, a, b, hub)


def test_files_and_answers(pair: Pair) -> None:
    """The happy path without sshd: filed, one ledger row, one receipt in receipts/."""
    made = pair.send()
    report = pair.pull()
    assert [pull.Result.FILED] == [o.result for o in report.outcomes]
    assert [PLAINTEXT] == [p.read_bytes() for p in pair.filed]
    assert {f"receipts/{made.names.receipt}"} == {
        k for k in pair.hub.files if k.startswith("receipts/")
    }


def test_oversized_manifest_file_is_not_downloaded(pair: Pair) -> None:
    """A manifest file over 64 KiB is refused from its size; nothing is filed."""
    made = pair.send()
    pair.hub.files[f"inbox/{made.names.manifest}"] = b"x" * (64 * 1024 + 1)
    (outcome,) = pair.pull().outcomes
    assert (pull.Result.REFUSED, Reason.TOO_LARGE) == (outcome.result, outcome.reason)
    assert [] == pair.filed


def test_manifest_plaintext_over_the_cap_is_refused(pair: Pair) -> None:
    """A manifest that decrypts to more than 16384 bytes is refused before parsing."""
    made = pair.send()
    recipient = pair.cc.config().partners[SOUTHEND.id].keys.age_recipient
    pair.hub.files[f"inbox/{made.names.manifest}"] = seal(b"y" * 20000, recipient)
    (outcome,) = pair.pull().outcomes
    assert (pull.Result.REFUSED, Reason.TOO_LARGE) == (outcome.result, outcome.reason)


def test_manifest_encrypted_to_someone_else_is_refused(pair: Pair) -> None:
    """A manifest we cannot decrypt is a decryption failure: incident, nothing recorded, and a
    signed rejection of that manifest file (FORMAT.md §4.6) to essex-cc, the only party that
    writes our inbox, naming the file's hash and no claimed delivery."""
    made = pair.send()
    stranger = agefmt.generate_x25519_identity().recipient().to_string()
    sealed = seal(made.signed_manifest, stranger)
    pair.hub.files[f"inbox/{made.names.manifest}"] = sealed
    (outcome,) = pair.pull().outcomes
    assert (pull.Result.REFUSED, Reason.DECRYPTION_FAILED, True) == (
        outcome.result,
        outcome.reason,
        outcome.receipt_sent,
    )
    assert 1 == len(pair.partner_ledger.incidents())
    assert [] == pair.partner_ledger.received()
    plain = io.BytesIO()
    agefmt.decrypt(
        io.BytesIO(pair.hub.files[f"receipts/{made.names.receipt}"]),
        plain,
        keys.load_identities(pair.cc.key_paths),
    )
    body = plain.getvalue()[: plain.getvalue().rindex(b"signature: ")]
    rejection = UnverifiedRejection.decode(body)
    assert (made.names.stem, hashlib.sha256(sealed).hexdigest(), None, "essex-cc") == (
        rejection.hub_name,
        rejection.manifest_file_sha256,
        rejection.claimed_delivery,
        rejection.sender,
    )
    again = pair.pull()
    assert [True] == [o.receipt_sent for o in again.outcomes]
    assert 1 == sum(1 for k in pair.hub.files if k.startswith("receipts/"))


def test_payload_we_cannot_decrypt_is_rejected(pair: Pair) -> None:
    """A payload whose hash matches the signed manifest but that is not encrypted to us is a
    decryption failure with a rejected receipt (the sender made a mistake, not the hub)."""
    stranger = agefmt.generate_x25519_identity().recipient().to_string()
    other = seal(PLAINTEXT, stranger)
    made = pair.send(
        edit_manifest=lambda m: dataclasses.replace(
            m, ciphertext_sha256=hashlib.sha256(other).hexdigest()
        )
    )
    pair.hub.files[f"inbox/{made.names.payload}"] = other
    (outcome,) = pair.pull().outcomes
    assert (pull.Result.REJECTED, Reason.DECRYPTION_FAILED, True) == (
        outcome.result,
        outcome.reason,
        outcome.receipt_sent,
    )
    assert [] == pair.filed


def test_manifest_without_its_payload_waits(pair: Pair) -> None:
    """A manifest whose payload is missing is deferred, not rejected and not answered."""
    made = pair.send()
    del pair.hub.files[f"inbox/{made.names.payload}"]
    (outcome,) = pair.pull().outcomes
    assert pull.Result.DEFERRED == outcome.result
    assert [] == pair.partner_ledger.received()


def test_payload_without_manifest_is_ignored(pair: Pair) -> None:
    """A payload whose manifest has not appeared is an upload in progress: left alone."""
    made = pair.send()
    del pair.hub.files[f"inbox/{made.names.manifest}"]
    report = pair.pull()
    assert ((), ()) == (report.outcomes, report.unexpected)


def test_crash_after_filing_is_repaired_without_a_copy(pair: Pair) -> None:
    """If the dataset was filed but the ledger row never written (a crash), the next run finds
    the same bytes under the name and records that filing instead of making ' (2)'."""
    pair.send()
    target = pair.partner.folder / "inbox" / "essex-cc" / AGREEMENT / "mash referrals 2026-11.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(PLAINTEXT)
    (outcome,) = pair.pull().outcomes
    assert (pull.Result.FILED, target) == (outcome.result, outcome.path)
    assert [target] == pair.filed


def test_receipt_for_a_delivery_still_uploading_waits(pair: Pair) -> None:
    """A genuine receipt for a delivery our ledger still shows as uploading (we crashed
    before recording the rename) is left for the next run, not refused."""
    made = make_delivery(
        pair.cc.config(), pair.cc_ledger, SOUTHEND.id, agreement=AGREEMENT, now=NOW
    )
    pair.hub.files[f"inbox/{made.names.payload}"] = made.payload
    pair.hub.files[f"inbox/{made.names.manifest}"] = made.sealed_manifest
    pair.pull()
    receipt = pair.hub.files.pop(f"receipts/{made.names.receipt}")
    sender_hub = MemoryHub()
    sender_hub.mkdirs(f"{SOUTHEND.id}/receipts")
    sender_hub.mkdirs(f"{SOUTHEND.id}/inbox")
    sender_hub.files[f"{SOUTHEND.id}/receipts/{made.names.receipt}"] = receipt
    cfg = pair.cc.config()
    report = receipts.collect_receipts(
        cfg,
        pair.cc_ledger,
        MemoryTransport(sender_hub),
        NOW,
        identities=keys.load_identities(pair.cc.key_paths),
    )
    assert [receipts.ReceiptResult.DEFERRED] == [o.result for o in report.outcomes]
    assert DeliveryState.UPLOADING == pair.cc_ledger.get_delivery(made.delivery).state
    assert f"{SOUTHEND.id}/receipts/{made.names.receipt}" in sender_hub.files


def test_report_json_is_stable(pair: Pair) -> None:
    """The --json shape lists outcomes, counts and incidents."""
    pair.send()
    data = pair.pull().to_json()
    assert {"outcomes", "unexpected", "truncated", "incidents", "counts"} == set(data)
    assert 1 == data["counts"]["filed"]  # type: ignore[index]
