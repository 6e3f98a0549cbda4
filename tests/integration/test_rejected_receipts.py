"""Rejections of a manifest that did not verify (FORMAT.md §4.6, §5.3) over a real sshd hub:
answered to the party the folder binds, recorded by the sender only for a delivery it made
there, and forged ones change nothing."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange import keys, pull, receipts
from exchange.core.delivery import DeliveryState
from exchange.core.naming import DeliveryNames, delivery_id_from_hex, hub_stem
from exchange.demo.workspaces import ESSEX_POLICE, SOUTHEND, Workspace
from exchange.manifest import UnverifiedRejection, sign_unverified_rejection
from exchange.model import ReasonCode
from exchange.signing import Reason
from tests.support.deliveries import AGREEMENT, Made, Orgs, make_delivery, make_orgs, seal, upload
from tests.support.sshd import Hub

PARTNER = "southend-uhft"
POLICE = "essex-police"


@pytest.fixture(name="orgs")
def fixture_orgs(tmp_path: Path, hub: Hub) -> Orgs:
    return make_orgs(tmp_path, hub, (SOUTHEND, ESSEX_POLICE))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _send_to_partner(orgs: Orgs) -> Made:
    """essex-cc delivers one dataset into southend-uhft's inbox, recorded as sent."""
    transport = orgs.transport("essex-cc")
    with orgs.ledger(orgs.cc) as ledger:
        made = make_delivery(orgs.cc.config(), ledger, PARTNER, agreement=AGREEMENT)
        upload(transport, f"{PARTNER}/inbox", made, ledger)
    transport.close()
    return made


def _rejection(signer: Workspace, stem: str, *, claims: str | None = None, **changes: str) -> bytes:
    """A §4.6 rejection by ``signer`` (its own key unless ``recipient_key`` says otherwise),
    sealed to essex-cc."""
    key = keys.load_signing_key(signer.key_paths)
    values: dict[str, object] = {
        "hub_name": stem,
        "manifest_file_sha256": hashlib.sha256(b"whatever was read").hexdigest(),
        "claimed_delivery": claims,
        "reason": Reason.BAD_SIGNATURE,
        "time": _now(),
        "sender": "essex-cc",
        "recipient": signer.org.id,
        "recipient_key": key.public_key.fingerprint,
    } | changes
    signed = sign_unverified_rejection(UnverifiedRejection(**values), key)  # type: ignore[arg-type]
    return seal(signed, signer.config().partners["essex-cc"].keys.age_recipient)


def _drop_receipt(orgs: Orgs, folder: str, name: str, data: bytes) -> None:
    """Put a receipt file in a hub folder as root would (then the hub's normaliser runs)."""
    (orgs.hub.partner_dir(PARTNER) / folder / name).write_bytes(data)
    orgs.hub.normalise()


def _collect_at_cc(orgs: Orgs) -> receipts.ReceiptReport:
    cfg = orgs.cc.config()
    transport = orgs.transport("essex-cc")
    orgs.hub.normalise()
    with orgs.ledger(orgs.cc) as ledger:
        report = receipts.collect_receipts(
            cfg,
            ledger,
            transport,
            datetime.now(UTC),
            identities=keys.load_identities(orgs.cc.key_paths),
        )
    transport.close()
    return report


def _inbound(orgs: Orgs) -> pull.PullReport:
    cfg = orgs.cc.config()
    transport = orgs.transport("essex-cc")
    orgs.hub.normalise()
    with orgs.ledger(orgs.cc) as ledger:
        report = pull.collect_inbound(
            cfg,
            ledger,
            transport,
            identities=keys.load_identities(orgs.cc.key_paths),
            signing_key=keys.load_signing_key(orgs.cc.key_paths),
            now=datetime.now(UTC),
        )
    transport.close()
    return report


def _collect_at_partner(orgs: Orgs) -> receipts.ReceiptReport:
    partner = orgs.partners[PARTNER]
    transport = orgs.transport(PARTNER)
    orgs.hub.normalise()
    with orgs.ledger(partner) as ledger:
        report = receipts.collect_receipts(
            partner.config(),
            ledger,
            transport,
            datetime.now(UTC),
            identities=keys.load_identities(partner.key_paths),
            routes=receipts.partner_routes(),
        )
    transport.close()
    return report


def _forged(report: receipts.ReceiptReport) -> list[tuple[receipts.ReceiptResult, str | None]]:
    return [(o.result, o.reason) for o in report.outcomes]


@pytest.mark.integration
@pytest.mark.parametrize("as_partner", [False, True], ids=["as-itself", "as-southend"])
def test_rejection_signed_by_another_partner_changes_nothing(orgs: Orgs, as_partner: bool) -> None:
    """A rejection in southend-uhft's receipts folder signed with Essex Police's key (as Essex
    Police, or claiming to be southend-uhft) is forged: the delivery stays sent, an incident."""
    made = _send_to_partner(orgs)
    police = orgs.partners[POLICE]
    changes = {"recipient": PARTNER} if as_partner else {}
    forged = _rejection(police, made.names.stem, claims=made.delivery, **changes)
    _drop_receipt(orgs, "receipts", made.names.receipt, forged)
    report = _collect_at_cc(orgs)
    expected = Reason.KEY_MISMATCH if as_partner else Reason.UNKNOWN_SIGNER
    assert [(receipts.ReceiptResult.FORGED, expected.value)] == _forged(report)
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.SENT == ledger.get_delivery(made.delivery).state
        (incident,) = ledger.incidents()
    assert (ReasonCode.SIGNATURE_INVALID, expected.value) == (
        incident.reason,
        incident.context.get("format_reason"),
    )
    assert made.names.manifest in {
        p.name for p in (orgs.hub.partner_dir(PARTNER) / "inbox").iterdir()
    }


@pytest.mark.integration
def test_rejection_of_a_hub_name_never_used_changes_nothing(orgs: Orgs) -> None:
    """southend-uhft's valid signature on a rejection of a hub name essex-cc never wrote is an
    incident only: the real delivery stays sent."""
    made = _send_to_partner(orgs)
    stranger = hub_stem(delivery_id_from_hex(secrets.token_hex(16)))
    rejection = _rejection(orgs.partners[PARTNER], stranger)
    _drop_receipt(orgs, "receipts", DeliveryNames(stranger).receipt, rejection)
    report = _collect_at_cc(orgs)
    assert [(receipts.ReceiptResult.FORGED, Reason.UNKNOWN_DELIVERY.value)] == _forged(report)
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.SENT == ledger.get_delivery(made.delivery).state
        assert [ReasonCode.UNEXPECTED_FILE] == [i.reason for i in ledger.incidents()]


@pytest.mark.integration
def test_rejection_under_another_hub_name_changes_nothing(orgs: Orgs) -> None:
    """A valid rejection of our delivery's hub name, lying under another name, is refused."""
    made = _send_to_partner(orgs)
    rejection = _rejection(orgs.partners[PARTNER], made.names.stem)
    other = hub_stem(delivery_id_from_hex(secrets.token_hex(16)))
    _drop_receipt(orgs, "receipts", DeliveryNames(other).receipt, rejection)
    report = _collect_at_cc(orgs)
    assert [(receipts.ReceiptResult.FORGED, Reason.RECEIPT_MISMATCH.value)] == _forged(report)
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.SENT == ledger.get_delivery(made.delivery).state


@pytest.mark.integration
def test_rejection_of_a_delivery_to_another_partner_changes_nothing(orgs: Orgs) -> None:
    """southend-uhft cannot reject, by hub name, a delivery essex-cc made to Essex Police."""
    transport = orgs.transport("essex-cc")
    with orgs.ledger(orgs.cc) as ledger:
        made = make_delivery(orgs.cc.config(), ledger, POLICE, agreement=AGREEMENT)
        upload(transport, f"{POLICE}/inbox", made, ledger)
    transport.close()
    rejection = _rejection(orgs.partners[PARTNER], made.names.stem, claims=made.delivery)
    _drop_receipt(orgs, "receipts", made.names.receipt, rejection)
    report = _collect_at_cc(orgs)
    assert [(receipts.ReceiptResult.FORGED, Reason.RECEIPT_MISMATCH.value)] == _forged(report)
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.SENT == ledger.get_delivery(made.delivery).state


@pytest.mark.integration
def test_a_genuine_rejection_is_recorded_once(orgs: Orgs) -> None:
    """southend-uhft's rejection of our delivery's manifest file marks it rejected with one
    incident naming the file hash and the claim; the files are cleaned up, a copy put back
    later is a duplicate and raises nothing more."""
    made = _send_to_partner(orgs)
    rejection = _rejection(orgs.partners[PARTNER], made.names.stem, claims=made.delivery)
    _drop_receipt(orgs, "receipts", made.names.receipt, rejection)
    report = _collect_at_cc(orgs)
    assert [(receipts.ReceiptResult.REJECTED, "bad-signature")] == _forged(report)
    with orgs.ledger(orgs.cc) as ledger:
        assert DeliveryState.REJECTED == ledger.get_delivery(made.delivery).state
        (incident,) = ledger.incidents()
    assert (ReasonCode.RECEIPT_REJECTED, made.delivery, "yes") == (
        incident.reason,
        incident.context.get("claimed_delivery"),
        incident.context.get("manifest_unverified"),
    )
    hub_dir = orgs.hub.partner_dir(PARTNER)
    assert [] == list((hub_dir / "inbox").iterdir())
    assert [] == list((hub_dir / "receipts").iterdir())
    _drop_receipt(orgs, "receipts", made.names.receipt, rejection)
    again = _collect_at_cc(orgs)
    assert [receipts.ReceiptResult.DUPLICATE] == [o.result for o in again.outcomes]
    with orgs.ledger(orgs.cc) as ledger:
        assert 1 == len(ledger.incidents())


@pytest.mark.integration
def test_inbound_tampered_manifest_is_rejected_to_the_partner(orgs: Orgs) -> None:
    """A manifest in southend-uhft's outbox altered after signing: essex-cc files nothing and
    answers southend-uhft (whose outbox it is) with a rejection in its inbox; southend-uhft's
    own collection marks its delivery rejected and removes it; essex-cc then removes its
    rejection."""
    partner = orgs.partners[PARTNER]
    partner_cfg = partner.config()
    transport = orgs.transport(PARTNER)
    with orgs.ledger(partner) as ledger:
        made = make_delivery(partner_cfg, ledger, "essex-cc", agreement=AGREEMENT)
        altered = made.signed_manifest.replace(b"media-type: text/csv", b"media-type: text/html")
        sealed = seal(altered, partner_cfg.partners["essex-cc"].keys.age_recipient)
        upload(transport, "outbox", made, ledger, sealed_manifest=sealed)
    transport.close()

    report = _inbound(orgs)
    (outcome,) = report.outcomes
    assert (pull.Result.REFUSED, Reason.BAD_SIGNATURE, True, None) == (
        outcome.result,
        outcome.reason,
        outcome.receipt_sent,
        outcome.sender,
    )
    assert [] == [p for p in (orgs.cc.folder / "inbox").rglob("*") if p.is_file()]
    hub_dir = orgs.hub.partner_dir(PARTNER)
    assert [made.names.receipt] == [p.name for p in (hub_dir / "inbox").iterdir()]

    collected = _collect_at_partner(orgs)
    assert [(receipts.ReceiptResult.REJECTED, "bad-signature")] == _forged(collected)
    with orgs.ledger(partner) as ledger:
        assert DeliveryState.REJECTED == ledger.get_delivery(made.delivery).state
        (incident,) = ledger.incidents()
    assert (hashlib.sha256(sealed).hexdigest(), "not-ours") == (
        incident.context.get("manifest_file_sha256"),
        incident.context.get("manifest_file"),
    )
    assert [] == list((hub_dir / "outbox").iterdir())

    assert [] == list(_inbound(orgs).outcomes)
    assert [] == list((hub_dir / "inbox").iterdir())


@pytest.mark.integration
def test_another_partners_manifest_in_an_outbox_is_an_incident_for_its_owner(orgs: Orgs) -> None:
    """Essex Police's manifest put in southend-uhft's outbox (by root) is answered to
    southend-uhft, the folder's owner, whose collection finds no delivery of its own under that
    hub name: an incident, nothing else changes."""
    police = orgs.partners[POLICE]
    with orgs.ledger(police) as ledger:
        made = make_delivery(police.config(), ledger, "essex-cc", agreement=AGREEMENT)
    outbox = orgs.hub.partner_dir(PARTNER) / "outbox"
    (outbox / made.names.payload).write_bytes(made.payload)
    (outbox / made.names.manifest).write_bytes(made.sealed_manifest)

    (outcome,) = _inbound(orgs).outcomes
    assert (pull.Result.REFUSED, Reason.UNKNOWN_SIGNER, True) == (
        outcome.result,
        outcome.reason,
        outcome.receipt_sent,
    )
    collected = _collect_at_partner(orgs)
    assert [(receipts.ReceiptResult.FORGED, Reason.UNKNOWN_DELIVERY.value)] == _forged(collected)
    with orgs.ledger(orgs.partners[PARTNER]) as ledger:
        assert [ReasonCode.UNEXPECTED_FILE] == [i.reason for i in ledger.incidents()]
        assert [] == ledger.deliveries()
