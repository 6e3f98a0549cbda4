"""Receipts at the sender (TESTPLAN 44, 46, 49, 52): only a receipt that verifies against the
partner's pinned key and the delivery it names acknowledges anything; the rest are incidents."""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exchange import keys, receipts
from exchange.core.delivery import DeliveryState
from exchange.manifest import Receipt, Status, sign_receipt
from exchange.model import ReasonCode
from exchange.signing import SigningKey, generate_signing_key
from tests.support.deliveries import AGREEMENT, Made, Orgs, make_delivery, make_orgs, seal, upload
from tests.support.sshd import Hub

PARTNER = "southend-uhft"
POLICE = "essex-police"


@dataclasses.dataclass
class Sent:
    orgs: Orgs
    made: Made

    @property
    def receipts_dir(self) -> Path:
        return self.orgs.hub.partner_dir(PARTNER) / "receipts"

    def receipt(self, **changes: object) -> Receipt:
        m = self.made.manifest
        base = Receipt(
            delivery=m.delivery,
            manifest_sha256=self.made.manifest_hash,
            plaintext_sha256=m.plaintext_sha256,
            status=Status.ACCEPTED,
            reason=None,
            time=datetime.now(UTC).replace(microsecond=0),
            sender="essex-cc",
            recipient=m.recipient,
            recipient_key=m.recipient_key,
            agreement=m.agreement,
        )
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def partner_key(self, partner: str = PARTNER) -> SigningKey:
        ws = self.orgs.partners[partner]
        return keys.load_signing_key(ws.key_paths)

    def place(self, signed: bytes, name: str | None = None) -> Path:
        """Put a receipt (sealed to essex-cc) in the partner's receipts folder, as root."""
        recipient = keys.key_card(self.orgs.cc.key_paths, "essex-cc").age_recipient
        path = self.receipts_dir / (name or f"{self.made.names.stem}.receipt.age")
        path.write_bytes(seal(signed, recipient))
        self.orgs.hub.normalise()
        return path

    def collect(self, *, normalise: bool = True) -> receipts.ReceiptReport:
        cfg = self.orgs.cc.config()
        if normalise:
            self.orgs.hub.normalise()
        transport = self.orgs.transport("essex-cc")
        try:
            with self.orgs.ledger(self.orgs.cc) as ledger:
                return receipts.collect_receipts(
                    cfg,
                    ledger,
                    transport,
                    datetime.now(UTC),
                    identities=keys.load_identities(keys.KeyPaths(cfg.folders.keys)),
                )
        finally:
            transport.close()

    def state(self) -> DeliveryState:
        with self.orgs.ledger(self.orgs.cc) as ledger:
            return ledger.get_delivery(self.made.delivery).state

    def incidents(self) -> list[tuple[ReasonCode, object]]:
        with self.orgs.ledger(self.orgs.cc) as ledger:
            return [(i.reason, i.context.get("format_reason")) for i in ledger.incidents()]


def _deliver(orgs: Orgs, partner: str = PARTNER) -> Made:
    transport = orgs.transport("essex-cc")
    plaintext = f"referral_id\nR-{partner}\n".encode()
    with orgs.ledger(orgs.cc) as ledger:
        made = make_delivery(
            orgs.cc.config(), ledger, partner, agreement=AGREEMENT, plaintext=plaintext
        )
        upload(transport, f"{partner}/inbox", made, ledger)
    transport.close()
    return made


def _sign_raw(receipt: Receipt, key: SigningKey) -> bytes:
    """Sign without the fingerprint check sign_receipt makes (a forger does not make it)."""
    body = receipt.encode()
    return body + b"signature: " + base64.b64encode(key.sign(body)) + b"\n"


@pytest.fixture(name="sent")
def fixture_sent(tmp_path: Path, hub: Hub) -> Iterator[Sent]:
    from exchange.demo.workspaces import ESSEX_POLICE, SOUTHEND

    orgs = make_orgs(tmp_path, hub, (SOUTHEND, ESSEX_POLICE))
    yield Sent(orgs, _deliver(orgs))


def _assert_forged(sent: Sent, reason: str, incident: ReasonCode) -> None:
    report = sent.collect()
    assert [(receipts.ReceiptResult.FORGED, reason)] == [
        (o.result, o.reason) for o in report.outcomes
    ]
    assert DeliveryState.SENT == sent.state()
    assert [(incident, reason)] == sent.incidents()
    assert 2 == len(list((sent.orgs.hub.partner_dir(PARTNER) / "inbox").iterdir()))


@pytest.mark.integration
def test_genuine_receipt_acknowledges(sent: Sent) -> None:
    """The control: a receipt signed with the partner's pinned key acknowledges the delivery."""
    sent.place(sign_receipt(sent.receipt(), sent.partner_key()))
    report = sent.collect()
    assert [receipts.ReceiptResult.ACKNOWLEDGED] == [o.result for o in report.outcomes]
    assert DeliveryState.ACKNOWLEDGED == sent.state()
    assert [] == list(sent.receipts_dir.iterdir())


@pytest.mark.integration
def test_receipt_signed_by_an_unknown_key(sent: Sent) -> None:
    """A receipt naming the partner's fingerprint but signed by another key is a forgery."""
    sent.place(_sign_raw(sent.receipt(), generate_signing_key()))
    _assert_forged(sent, "bad-signature", ReasonCode.SIGNATURE_INVALID)


@pytest.mark.integration
def test_receipt_naming_an_unknown_key(sent: Sent) -> None:
    """A receipt signed by a key that is not the pinned one, and saying so, is refused."""
    other = generate_signing_key()
    receipt = sent.receipt(recipient_key=other.public_key.fingerprint)
    sent.place(sign_receipt(receipt, other))
    _assert_forged(sent, "key-mismatch", ReasonCode.SIGNATURE_INVALID)


@pytest.mark.integration
def test_receipt_over_another_manifest(sent: Sent) -> None:
    """A valid signature over a receipt for another manifest hash changes nothing."""
    sent.place(sign_receipt(sent.receipt(manifest_sha256="e" * 64), sent.partner_key()))
    _assert_forged(sent, "receipt-mismatch", ReasonCode.UNEXPECTED_FILE)


@pytest.mark.integration
def test_receipt_for_a_delivery_never_made(sent: Sent) -> None:
    """A receipt for a delivery id we never used is refused."""
    receipt = sent.receipt(delivery="dl-" + "7" * 32)
    sent.place(sign_receipt(receipt, sent.partner_key()))
    _assert_forged(sent, "unknown-delivery", ReasonCode.UNEXPECTED_FILE)


@pytest.mark.integration
def test_receipt_for_another_partners_delivery(sent: Sent) -> None:
    """southend-uhft cannot acknowledge a delivery made to essex-police, and essex-police's
    own genuine receipt does not count when it turns up in southend-uhft's folder."""
    police = _deliver(sent.orgs, POLICE)
    m = police.manifest
    mine = sent.receipt(
        delivery=m.delivery,
        manifest_sha256=police.manifest_hash,
        plaintext_sha256=m.plaintext_sha256,
    )
    sent.place(sign_receipt(mine, sent.partner_key()), f"{police.names.stem}.receipt.age")
    report = sent.collect()
    assert ["receipt-mismatch"] == [o.reason for o in report.outcomes]
    for name in os.listdir(sent.receipts_dir):
        (sent.receipts_dir / name).unlink()
    theirs = dataclasses.replace(
        mine,
        recipient=POLICE,
        recipient_key=sent.partner_key(POLICE).public_key.fingerprint,
    )
    sent.place(sign_receipt(theirs, sent.partner_key(POLICE)), f"{police.names.stem}.receipt.age")
    report = sent.collect()
    assert ["unknown-signer"] == [o.reason for o in report.outcomes]
    with sent.orgs.ledger(sent.orgs.cc) as ledger:
        assert DeliveryState.SENT == ledger.get_delivery(police.delivery).state


@pytest.mark.integration
def test_receipt_under_another_deliverys_name(sent: Sent) -> None:
    """A genuine receipt stored under a name that is not its delivery's is not used."""
    sent.place(sign_receipt(sent.receipt(), sent.partner_key()), f"{'ab' * 16}.receipt.age")
    _assert_forged(sent, "receipt-mismatch", ReasonCode.UNEXPECTED_FILE)


@pytest.mark.integration
def test_malformed_and_non_canonical_receipts(sent: Sent) -> None:
    """Garbage, and a receipt whose fields are out of order, are refused before any key use."""
    sent.place(b"exchange-receipt/v1\nstatus: accepted\nsignature: AAAA\n")
    report = sent.collect()
    assert ["malformed-signature"] == [o.reason for o in report.outcomes]
    signed = sign_receipt(sent.receipt(), sent.partner_key())
    lines = signed.split(b"\n")
    lines[1], lines[2] = lines[2], lines[1]
    sent.place(b"\n".join(lines))
    report = sent.collect()
    assert ["not-canonical"] == [o.reason for o in report.outcomes]
    assert DeliveryState.SENT == sent.state()


@pytest.mark.integration
def test_receipt_not_encrypted_to_us(sent: Sent) -> None:
    """A receipt file we cannot decrypt is a decryption failure, nothing more."""
    path = sent.receipts_dir / f"{sent.made.names.stem}.receipt.age"
    path.write_bytes(sign_receipt(sent.receipt(), sent.partner_key()))
    sent.orgs.hub.normalise()
    _assert_forged(sent, "decryption-failed", ReasonCode.DECRYPT_FAILED)


@pytest.mark.integration
def test_oversized_receipts(sent: Sent) -> None:
    """A 1 GiB file is refused from its listed size without being read; a receipt whose
    plaintext exceeds 4096 bytes is refused before parsing."""
    huge = sent.receipts_dir / f"{sent.made.names.stem}.receipt.age"
    with huge.open("wb") as file:
        file.truncate(1 << 30)
    sent.orgs.hub.normalise()
    _assert_forged(sent, "too-large", ReasonCode.UNEXPECTED_FILE)
    huge.unlink()
    sent.place(sign_receipt(sent.receipt(), sent.partner_key()) + b"x" * 5000)
    report = sent.collect()
    assert ["too-large"] == [o.reason for o in report.outcomes]
    assert DeliveryState.SENT == sent.state()


@pytest.mark.integration
def test_second_valid_receipt_adds_nothing(sent: Sent) -> None:
    """A second, differently worded but valid receipt for the same manifest hash is a
    duplicate: one receipt row, one acknowledgement (TESTPLAN 46)."""
    sent.place(sign_receipt(sent.receipt(), sent.partner_key()))
    sent.collect()
    with sent.orgs.ledger(sent.orgs.cc) as ledger:
        before = ledger.events(sent.made.delivery)
    later = sent.receipt(time=datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1))
    sent.place(sign_receipt(later, sent.partner_key()))
    report = sent.collect()
    assert [receipts.ReceiptResult.DUPLICATE] == [o.result for o in report.outcomes]
    with sent.orgs.ledger(sent.orgs.cc) as ledger:
        assert before == ledger.events(sent.made.delivery)
    assert DeliveryState.ACKNOWLEDGED == sent.state()


@pytest.mark.integration
def test_flooded_receipts_folder(sent: Sent, monkeypatch: pytest.MonkeyPatch) -> None:
    """More entries than the cap: an incident, the capped part is still processed, and a
    name with a newline is reported escaped, never used (TESTPLAN 52)."""
    monkeypatch.setattr(receipts, "MAX_ENTRIES", 20)
    for n in range(30):
        (sent.receipts_dir / f"{n:032x}.receipt.age").write_bytes(b"junk")
    (sent.receipts_dir / "evil\nname.receipt.age").write_bytes(b"junk")
    sent.orgs.hub.normalise()
    report = sent.collect()
    assert report.truncated
    assert 20 == len(report.outcomes) + len(report.unexpected)
    assert DeliveryState.SENT == sent.state()
    with sent.orgs.ledger(sent.orgs.cc) as ledger:
        assert any(i.dedupe_key == f"flooded:{PARTNER}/receipts" for i in ledger.incidents())


@pytest.mark.integration
def test_receipt_links_are_refused(tmp_path: Path, hub_factory: object) -> None:
    """On a hub that lets partners make links (the negative control of TESTPLAN 49), a
    symlink receipt is refused from the listing, and a hard link to another file is read as
    the file it is (SFTP v3 shows no link count), which is no receipt for us: neither
    acknowledges anything."""
    from exchange.demo.workspaces import SOUTHEND

    open_hub = hub_factory(links_denied=False)  # type: ignore[operator]
    orgs = make_orgs(tmp_path / "orgs", open_hub, (SOUTHEND,))
    made = _deliver(orgs)
    stem = made.names.stem
    result = open_hub.sftp_batch(
        PARTNER,
        f"symlink /inbox/{stem}.manifest.age /receipts/{stem}.receipt.age\n",
    )
    assert 0 == result.returncode, result.stderr
    probe = Sent(orgs, made)
    report = probe.collect()
    assert [f"{stem}.receipt.age"] == list(report.unexpected)
    assert DeliveryState.SENT == probe.state()
    (probe.receipts_dir / f"{stem}.receipt.age").unlink()
    # Linux's protected_hardlinks stops the partner linking the daemon's inbox files, so it
    # links a file of its own: something it uploaded to its outbox.
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a receipt")
    other = "0" * 32
    result = open_hub.sftp_batch(
        PARTNER,
        f"put {junk} /outbox/{other}.age\nln /outbox/{other}.age /receipts/{stem}.receipt.age\n",
    )
    assert 0 == result.returncode, result.stderr
    report = probe.collect()
    assert ["decryption-failed"] == [o.reason for o in report.outcomes]
    assert DeliveryState.SENT == probe.state()
    assert 2 == len(probe.incidents())


@pytest.mark.integration
def test_unacknowledged_deliveries_are_reported_after_the_window(sent: Sent) -> None:
    """A delivery without a receipt is overdue once its agreement's window (1 day) passed."""
    cfg = sent.orgs.cc.config()
    warnings: list[tuple[str, dict[str, object]]] = []
    with sent.orgs.ledger(sent.orgs.cc) as ledger:
        now = datetime.now(UTC)
        assert [] == receipts.overdue_deliveries(cfg, ledger, now)
        late = receipts.overdue_deliveries(
            cfg, ledger, now + timedelta(days=2), warn=lambda e, **kw: warnings.append((e, kw))
        )
    assert [sent.made.delivery] == [o.delivery for o in late]
    assert [("receipt.overdue", sent.made.delivery)] == [(e, kw["delivery"]) for e, kw in warnings]


@pytest.mark.integration
def test_unreadable_receipt_waits_for_the_normaliser(sent: Sent) -> None:
    """A receipt the partner uploaded as 0600 cannot be read by the daemon until the hub's
    normaliser runs: it is left for the next run, with no incident, and then acknowledges."""
    path = sent.place(sign_receipt(sent.receipt(), sent.partner_key()))
    path.chmod(0o600)
    report = sent.collect(normalise=False)
    assert [receipts.ReceiptResult.DEFERRED] == [o.result for o in report.outcomes]
    assert ([], DeliveryState.SENT) == (sent.incidents(), sent.state())
    report = sent.collect()  # collect() normalises first, as 'exchange hub run' does
    assert [receipts.ReceiptResult.ACKNOWLEDGED] == [o.result for o in report.outcomes]
