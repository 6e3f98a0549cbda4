"""Inbound datasets (issue 6 item 3): a partner sends to us through its ``outbox/`` on our hub;
we verify, file and acknowledge in its ``inbox/``; it verifies our receipt and cleans up."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange import keys, pull, receipts
from exchange.core.delivery import DeliveryState
from tests.support.deliveries import AGREEMENT, Orgs, make_delivery, make_orgs, upload
from tests.support.sshd import Hub

PARTNER = "southend-uhft"
DATA = b"referral_id,received_date\nH-2001,2026-11-24\n"


@pytest.fixture(name="orgs")
def fixture_orgs(tmp_path: Path, hub: Hub) -> Orgs:
    return make_orgs(tmp_path, hub)


def _inbound(orgs: Orgs) -> pull.PullReport:
    cfg = orgs.cc.config()
    paths = keys.KeyPaths(cfg.folders.keys)
    transport = orgs.transport("essex-cc")
    orgs.hub.normalise()
    try:
        with orgs.ledger(orgs.cc) as ledger:
            return pull.collect_inbound(
                cfg,
                ledger,
                transport,
                identities=keys.load_identities(paths),
                signing_key=keys.load_signing_key(paths),
                now=datetime.now(UTC),
            )
    finally:
        transport.close()


@pytest.mark.integration
def test_partner_sends_to_us_through_its_outbox(orgs: Orgs) -> None:
    """southend-uhft's delivery in its outbox is filed at essex-cc, our receipt lands in its
    inbox, its receipt collection acknowledges and removes its delivery, and our next pass
    removes the receipt it could not delete itself."""
    partner = orgs.partners[PARTNER]
    partner_cfg = partner.config()
    transport = orgs.transport(PARTNER)
    with orgs.ledger(partner) as ledger:
        made = make_delivery(partner_cfg, ledger, "essex-cc", agreement=AGREEMENT, plaintext=DATA)
        upload(transport, "outbox", made, ledger)

    report = _inbound(orgs)
    (outcome,) = report.outcomes
    assert (pull.Result.FILED, PARTNER, True) == (
        outcome.result,
        outcome.sender,
        outcome.receipt_sent,
    )
    filed = orgs.cc.folder / "inbox" / PARTNER / AGREEMENT / "mash referrals 2026-11.csv"
    assert filed == outcome.path
    assert DATA == filed.read_bytes()
    hub_dir = orgs.hub.partner_dir(PARTNER)
    assert [f"{made.names.stem}.receipt.age"] == [p.name for p in (hub_dir / "inbox").iterdir()]

    again = _inbound(orgs)
    assert [pull.Result.DUPLICATE] == [o.result for o in again.outcomes]

    orgs.hub.normalise()
    with orgs.ledger(partner) as ledger:
        collected = receipts.collect_receipts(
            partner_cfg,
            ledger,
            transport,
            datetime.now(UTC),
            identities=keys.load_identities(partner.key_paths),
            routes=receipts.partner_routes(),
        )
        assert [receipts.ReceiptResult.ACKNOWLEDGED] == [o.result for o in collected.outcomes]
        assert DeliveryState.ACKNOWLEDGED == ledger.get_delivery(made.delivery).state
    transport.close()
    assert [] == list((hub_dir / "outbox").iterdir())
    assert 1 == len(list((hub_dir / "inbox").iterdir()))

    last = _inbound(orgs)
    assert [] == list(last.outcomes)
    assert [] == list((hub_dir / "inbox").iterdir())


@pytest.mark.integration
def test_outbox_manifest_from_another_partner_is_refused(orgs: Orgs, tmp_path: Path) -> None:
    """In southend-uhft's outbox only southend-uhft can be the sender: a manifest signed as
    essex-police (placed there by root) is refused as from an unknown signer."""
    from exchange.demo.workspaces import ESSEX_POLICE, SOUTHEND

    more = make_orgs(tmp_path / "more", orgs.hub, (SOUTHEND, ESSEX_POLICE))
    police = more.partners["essex-police"]
    with more.ledger(police) as ledger:
        made = make_delivery(police.config(), ledger, "essex-cc", agreement=AGREEMENT)
    outbox = more.hub.partner_dir(PARTNER) / "outbox"
    (outbox / made.names.payload).write_bytes(made.payload)
    (outbox / made.names.manifest).write_bytes(made.sealed_manifest)
    cfg = more.cc.config()
    transport = more.transport("essex-cc")
    more.hub.normalise()
    with more.ledger(more.cc) as ledger:
        report = pull.collect_inbound(
            cfg,
            ledger,
            transport,
            identities=keys.load_identities(more.cc.key_paths),
            signing_key=keys.load_signing_key(more.cc.key_paths),
            now=datetime.now(UTC),
        )
    transport.close()
    assert [(pull.Result.REFUSED, "unknown-signer")] == [
        (o.result, o.reason.value if o.reason else None) for o in report.outcomes
    ]
    assert not (more.cc.folder / "inbox" / "essex-police").exists()


@pytest.mark.integration
def test_unreadable_inbound_upload_waits_for_the_normaliser(orgs: Orgs) -> None:
    """A partner upload still 0600 is skipped without an incident, then filed once the hub's
    normaliser has made it readable."""
    partner = orgs.partners[PARTNER]
    with orgs.ledger(partner) as ledger:
        made = make_delivery(
            partner.config(), ledger, "essex-cc", agreement=AGREEMENT, plaintext=DATA
        )
    outbox = orgs.hub.partner_dir(PARTNER) / "outbox"
    for name, data in (
        (made.names.payload, made.payload),
        (made.names.manifest, made.sealed_manifest),
    ):
        (outbox / name).write_bytes(data)
        (outbox / name).chmod(0o600)
    cfg = orgs.cc.config()
    transport = orgs.transport("essex-cc")
    with orgs.ledger(orgs.cc) as ledger:
        for readable in ((), (made.names.manifest,)):  # neither, then only the manifest
            for name in readable:
                (outbox / name).chmod(0o640)
            report = pull.collect_inbound(
                cfg,
                ledger,
                transport,
                identities=keys.load_identities(orgs.cc.key_paths),
                signing_key=keys.load_signing_key(orgs.cc.key_paths),
                now=datetime.now(UTC),
            )
            assert [pull.Result.DEFERRED] == [o.result for o in report.outcomes]
            assert [] == ledger.incidents()
            assert [] == ledger.received()
    transport.close()
    assert [pull.Result.FILED] == [o.result for o in _inbound(orgs).outcomes]
