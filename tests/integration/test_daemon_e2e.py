"""The daemon end to end: the real ``exchange run`` as a subprocess, a real sshd hub, a real
ledger file and real folders; stock ``age`` decrypts what partners received."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from exchange.manifest import Manifest
from tests.support.sshd import Hub
from tests.support.workspace import Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace with agreement 'health-only' to southend-uhft and 'mash' to both partners."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("health-only", ["southend-uhft"])
    ws.agreement("mash", ["southend-uhft", "essex-police"])
    return ws


def test_dropped_file_reaches_each_recipient_once(ws: Workspace) -> None:
    """A dropped file becomes one payload and one manifest per recipient, each decrypting
    with that partner's key to the original bytes; a partner outside the agreement gets
    nothing and the outbox is emptied."""
    data = csv_bytes(5, "e2e")
    daemon = ws.start()
    try:
        ws.drop("health-only", "referrals-may.csv", data)
        daemon.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, what="delivery")
        daemon.wait_event("delivery.sent")
    finally:
        assert daemon.terminate() == 0
    finals = ws.finals("southend-uhft")
    assert 2 == len(finals)
    payload = next(n for n in finals if not n.endswith(".manifest.age"))
    assert data == ws.decrypt("southend-uhft", payload)
    signed = ws.decrypt("southend-uhft", ws.manifests("southend-uhft")[0])
    body = signed[: signed.index(b"signature: ")]
    manifest = Manifest.decode(body)
    assert ("health-only", "southend-uhft", "referrals-may.csv") == (
        manifest.agreement,
        manifest.recipient,
        manifest.file_name,
    )
    assert [] == ws.inbox("essex-police")
    assert [] == list(ws.outbox("health-only").iterdir())
    with ws.ledger() as ledger:
        (delivery,) = ledger.deliveries()
        assert DeliveryState.SENT is delivery.state
        assert delivery.remote_name == payload
        assert (
            delivery.size
            == (ws.hub.partner_dir("southend-uhft") / "inbox" / payload).stat().st_size
        )


def test_two_recipients_each_decrypt_only_their_own(ws: Workspace) -> None:
    """Under a two-partner agreement each partner's files open with its own key and not
    with the other partner's (the daemon encrypts to the configured key only)."""
    data = csv_bytes(4, "two")
    daemon = ws.start()
    try:
        ws.drop("mash", "mash.csv", data)
        daemon.wait_event("delivery.sent", 2)
    finally:
        assert daemon.terminate() == 0
    for partner, other in (("southend-uhft", "essex-police"), ("essex-police", "southend-uhft")):
        (payload,) = [n for n in ws.finals(partner) if not n.endswith(".manifest.age")]
        assert data == ws.decrypt(partner, payload)
        ws.identities[partner], saved = ws.identities[other], ws.identities[partner]
        with pytest.raises(AssertionError, match="no identity matched"):
            ws.decrypt(partner, payload)
        ws.identities[partner] = saved


def test_status_json_shape_and_exit_code(ws: Workspace) -> None:
    """status --json lists agreements, partners and deliveries, exiting 0 when all is well."""
    daemon = ws.start()
    try:
        ws.drop("health-only", "a.csv", csv_bytes(2, "st"))
        daemon.wait_event("delivery.sent")
    finally:
        assert daemon.terminate() == 0
    result = ws.exchange("status", "--json")
    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    assert {
        "agreements",
        "partners",
        "failures",
        "quarantined",
        "incidents",
        "corrections",
        "attention",
        "needs_attention",
        "generated_at",
    } == set(report)
    southend = next(p for p in report["partners"] if p["id"] == "southend-uhft")
    assert {"sent": 1} == southend["states"]
    assert southend["last_delivery"]["agreement"] == "health-only"
    assert report["needs_attention"] is False


def test_status_text_needs_attention_after_a_refusal(ws: Workspace) -> None:
    """After a refused file, plain 'exchange status' names the quarantined file's reason and
    the open incident, and exits 1 for monitoring."""
    daemon = ws.start()
    try:
        ws.drop("health-only", "wide.csv", csv_bytes(1, "w").replace(b"age_band", b"DOB"))
        daemon.wait_event("intake.refused")
    finally:
        assert daemon.terminate() == 0
    result = ws.exchange("status")
    assert 1 == result.returncode, result.stderr
    assert "(schema-mismatch)" in result.stdout
    assert "incident 1: schema-mismatch" in result.stdout
    assert result.stdout.rstrip().endswith("needs attention")


def test_run_refuses_to_start_without_a_pinned_host_key(tmp_path: Path, hub: Hub) -> None:
    """With no hub host key pinned, 'exchange run' exits 3 naming hub.host_keys, with a hint,
    and never connects."""
    ws = make_workspace(tmp_path / "unpinned", hub, pin=False)
    ws.agreement("health-only", ["southend-uhft"])
    result = ws.exchange("run", timeout=60)
    assert 3 == result.returncode
    assert "hub.host_keys" in result.stderr and "exchange: hint:" in result.stderr
    assert "Traceback" not in result.stderr
