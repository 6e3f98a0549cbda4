"""The daemon under bad input and faults (TESTPLAN A, C, D): the real ``exchange run`` as a
subprocess against a real sshd hub."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest

from exchange import signing
from exchange.core.delivery import DeliveryState
from tests.support.sshd import Hub
from tests.support.tcpproxy import TcpProxy
from tests.support.workspace import Workspace, csv_bytes, make_workspace, write_partner

pytestmark = pytest.mark.integration


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace whose immediate agreement 'mash' goes to both harness partners."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("mash", ["southend-uhft", "essex-police"])
    return ws


def _bad_inputs(ws: Workspace, tmp: Path) -> dict[str, str]:
    """Create TESTPLAN A's refusals in the outbox; returns name -> expected reason code."""
    box = ws.outbox("mash")
    secret = tmp / "outside.csv"
    secret.write_bytes(csv_bytes(1, "outside"))
    (box / "link.csv").symlink_to(secret)
    os.mkfifo(box / "pipe.csv")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(box / "sock.csv"))
    server.close()
    (box / "folder.csv").mkdir()
    elsewhere = tmp / "hard.csv"
    elsewhere.write_bytes(csv_bytes(1, "hard"))
    os.link(elsewhere, box / "hardlink.csv")
    (box / "empty.csv").write_bytes(b"")
    (box / "extra.csv").write_bytes(csv_bytes(1, "x").replace(b"concern_category", b"NHS_number"))
    (box / "latin1.csv").write_bytes(csv_bytes(1, "l") + "caf\xe9\n".encode("latin-1"))
    (box / "big.csv").write_bytes(csv_bytes(1, "big") + b"x" * (2 << 20))
    (box / "report.xlsx").write_bytes(b"PK\x03\x04 not allowed here")
    (box / "-leading-dash.csv").write_bytes(csv_bytes(1, "dash"))
    (box / b"bad\nname.csv".decode()).write_bytes(csv_bytes(1, "nl"))
    return {
        "link.csv": "symlink",
        "pipe.csv": "not-regular-file",
        "sock.csv": "not-regular-file",
        "folder.csv": "not-regular-file",
        "hardlink.csv": "hard-link",
        "empty.csv": "empty",
        "extra.csv": "schema-mismatch",
        "latin1.csv": "encoding",
        "big.csv": "too-large",
        "report.xlsx": "format-not-allowed",
        "-leading-dash.csv": "name-unsafe",
        "bad\nname.csv": "name-unsafe",
    }


def test_refusals_are_quarantined_and_the_daemon_keeps_going(ws: Workspace, tmp_path: Path) -> None:
    """Every TESTPLAN A refusal ends in quarantine with its reason and an incident, the
    daemon keeps running, and a good file dropped afterwards is still delivered."""
    expected = _bad_inputs(ws, tmp_path)
    daemon = ws.start()
    try:
        with ws.ledger() as ledger:
            daemon.wait_for(lambda: len(ledger.quarantined()) == len(expected), 30, "quarantine")
            got = {q.original_name.decode(): q.reason.value for q in ledger.quarantined()}
            assert expected == got
            assert len(expected) == len(ledger.incidents())
        ws.drop("mash", "good.csv", csv_bytes(3, "good"))
        daemon.wait_event("delivery.sent", 2)
        assert daemon.process.poll() is None
    finally:
        assert 0 == daemon.terminate()
    assert [] == os.listdir(ws.outbox("mash"))
    refused = [e for e in daemon.events() if e["event"] == "intake.refused"]
    assert len(expected) == len(refused)
    # File names are escaped in log lines: the newline never splits a line.
    assert any(e["file"] == "bad\\nname.csv" for e in refused)
    result = ws.exchange("status", "--json")
    assert 1 == result.returncode
    report = json.loads(result.stdout)
    assert len(expected) == len(report["quarantined"]) == len(report["incidents"])


def test_duplicate_content_is_flagged_not_resent(ws: Workspace) -> None:
    """The same content dropped again is quarantined as a duplicate with an incident and
    each partner still has exactly one delivery."""
    data = csv_bytes(3, "dup")
    daemon = ws.start()
    try:
        ws.drop("mash", "first.csv", data)
        daemon.wait_event("delivery.sent", 2)
        ws.drop("mash", "again.csv", data)
        with ws.ledger() as ledger:
            daemon.wait_for(lambda: len(ledger.quarantined()) == 1, 30, "duplicate")
            (record,) = ledger.quarantined()
            assert "duplicate" == record.reason.value
            assert ["duplicate"] == [i.reason.value for i in ledger.incidents()]
    finally:
        assert 0 == daemon.terminate()
    for partner in ("southend-uhft", "essex-police"):
        assert 1 == len(ws.manifests(partner))


def test_broken_partner_is_parked_and_delivered_after_the_fix(ws: Workspace) -> None:
    """With southend-uhft's inbox unwritable, essex-police is delivered at once; southend's
    delivery is parked with one incident, probed without a storm, and delivered once the
    folder is fixed."""
    inbox = ws.hub.partner_dir("southend-uhft") / "inbox"
    mode = stat.S_IMODE(inbox.stat().st_mode)
    inbox.chmod(0o2550)
    daemon = ws.start()
    try:
        ws.drop("mash", "referrals.csv", csv_bytes(3, "broken"))
        daemon.wait_for(lambda: len(ws.manifests("essex-police")) == 1, 30, "police delivered")
        daemon.wait_event("delivery.parked")
        assert [] == ws.finals("southend-uhft")
        with ws.ledger() as ledger:
            (incident,) = ledger.incidents()
            assert ("permission", "southend-uhft") == (incident.reason.value, incident.partner)
        inbox.chmod(mode)
        daemon.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, 30, "southend delivered")
    finally:
        inbox.chmod(mode)
        assert 0 == daemon.terminate()
    parked = daemon.names().count("delivery.parked")
    assert 1 <= parked <= 6  # probes back off: 1 s, 2 s, 4 s ...
    with ws.ledger() as ledger:
        assert {DeliveryState.SENT} == {d.state for d in ledger.deliveries()}


def test_sigterm_during_upload_leaves_no_final_partial(ws: Workspace) -> None:
    """SIGTERM while a large upload runs, with no grace: the upload is abandoned, its
    temporary file removed, no final name exists, the daemon exits 0, and a restart sends it."""
    ws.agreement("bulk", ["southend-uhft"], extra="", fields=None)
    text = (ws.config_dir / "agreements" / "bulk.toml").read_text()
    (ws.config_dir / "agreements" / "bulk.toml").write_text(
        text.replace('max_size = "1 MiB"', 'max_size = "1 GiB"')
    )
    data = csv_bytes(2, "bulk") + b"y" * (300 << 20)
    inbox = ws.hub.partner_dir("southend-uhft") / "inbox"
    daemon = ws.start("--grace", "0")
    try:
        ws.drop("bulk", "bulk.csv", data)
        daemon.wait_for(lambda: any(n.endswith(".part") for n in os.listdir(inbox)), 60, ".part")
        daemon.process.send_signal(signal.SIGTERM)
        assert 0 == daemon.wait_dead(60)
    finally:
        daemon.kill()
    assert [] == os.listdir(inbox)
    assert "delivery.abandoned" in daemon.names()
    with ws.ledger() as ledger:
        (delivery,) = ledger.deliveries()
        assert DeliveryState.RETRY_WAIT is delivery.state
    again = ws.start()
    try:
        again.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, 120, "delivered")
    finally:
        assert 0 == again.terminate()


def test_sigterm_during_upload_finishes_within_grace(ws: Workspace) -> None:
    """SIGTERM while an upload runs, with a generous grace period: the upload completes, the
    delivery is sent, and the daemon exits 0."""
    ws.agreement("bulk", ["southend-uhft"], extra="", fields=None)
    text = (ws.config_dir / "agreements" / "bulk.toml").read_text()
    (ws.config_dir / "agreements" / "bulk.toml").write_text(
        text.replace('max_size = "1 MiB"', 'max_size = "1 GiB"')
    )
    data = csv_bytes(2, "grace") + b"g" * (40 << 20)
    inbox = ws.hub.partner_dir("southend-uhft") / "inbox"
    daemon = ws.start("--grace", "60")
    try:
        ws.drop("bulk", "bulk.csv", data)
        daemon.wait_for(lambda: any(n.endswith(".part") for n in os.listdir(inbox)), 60, ".part")
        daemon.process.send_signal(signal.SIGTERM)
        assert 0 == daemon.wait_dead(90)
    finally:
        daemon.kill()
    assert "delivery.abandoned" not in daemon.names()
    assert 1 == len(ws.manifests("southend-uhft"))
    assert not [n for n in os.listdir(inbox) if n.startswith(".")]
    with ws.ledger() as ledger:
        (delivery,) = ledger.deliveries()
        assert DeliveryState.SENT is delivery.state


def test_poison_file_is_quarantined_after_max_attempts(ws: Workspace) -> None:
    """A delivery whose worker dies on every attempt is poisoned after --max-attempts
    strikes and its spool copy moved to quarantine with an incident."""
    ws.agreement("health", ["southend-uhft"])
    ws.drop("health", "poison.csv", csv_bytes(3, "poison"))
    for _ in range(2):  # attempt 1 dies; at restart strike 1, attempt 2 dies
        crashing = ws.start("--max-attempts", "2", EXCHANGE_CRASH_AT="delivery.mid_upload")
        assert -signal.SIGKILL == crashing.wait_dead(60), crashing.tail()
    daemon = ws.start("--max-attempts", "2")
    try:
        with ws.ledger() as ledger:
            daemon.wait_for(
                lambda: [q.reason.value for q in ledger.quarantined()] == ["poisoned"], 30, "poison"
            )
            (delivery,) = ledger.deliveries()
            assert DeliveryState.POISONED is delivery.state
            assert {"poisoned"} == {i.reason.value for i in ledger.incidents()}
    finally:
        assert 0 == daemon.terminate()
    assert [] == os.listdir(ws.root / "spool" / "health")
    assert [] == ws.finals("southend-uhft")


def test_config_swap_encrypts_only_to_the_configured_key(ws: Workspace) -> None:
    """TESTPLAN E42: after a partner's key is re-pinned in its partner file, new deliveries
    open with the new key only; the old key opens only what was sent before."""
    ws.agreement("health", ["southend-uhft"])
    daemon = ws.start()
    try:
        ws.drop("health", "before.csv", csv_bytes(2, "before"))
        daemon.wait_event("delivery.sent")
    finally:
        assert 0 == daemon.terminate()
    old_identity = ws.identities["southend-uhft"]
    (before,) = [n for n in ws.finals("southend-uhft") if not n.endswith(".manifest.age")]
    new_dir = ws.root / "new-identities"
    new_dir.mkdir()
    new_identity = write_partner(ws, "southend-uhft", new_dir)
    daemon = ws.start()
    try:
        ws.drop("health", "after.csv", csv_bytes(2, "after"))
        daemon.wait_event("delivery.sent")
    finally:
        assert 0 == daemon.terminate()
    (after,) = [
        n for n in ws.finals("southend-uhft") if not n.endswith(".manifest.age") and n != before
    ]
    ws.identities["southend-uhft"] = new_identity
    assert csv_bytes(2, "after") == ws.decrypt("southend-uhft", after)
    with pytest.raises(AssertionError, match="no identity matched"):
        ws.decrypt("southend-uhft", before)
    ws.identities["southend-uhft"] = old_identity
    with pytest.raises(AssertionError, match="no identity matched"):
        ws.decrypt("southend-uhft", after)


def _through_proxy(ws: Workspace, proxy: TcpProxy) -> None:
    main = ws.config_dir / "exchange.toml"
    text = main.read_text("utf-8")
    main.write_text(text.replace(f"port = {ws.hub.port}", f"port = {proxy.port}"), "utf-8")


def test_hub_down_then_back_delivers_without_a_storm(ws: Workspace) -> None:
    """TESTPLAN C23: with the hub unreachable the file waits and each lane retries on a
    backoff (a handful of attempts, not a busy loop); when the hub is back it is delivered."""
    with TcpProxy((ws.hub.host, ws.hub.port)) as proxy:
        _through_proxy(ws, proxy)
        proxy.down()
        daemon = ws.start()
        try:
            ws.drop("mash", "waiting.csv", csv_bytes(3, "down"))
            daemon.wait_event("dataset.recorded")
            time.sleep(4.0)
            unavailable = daemon.names().count("lane.hub_unavailable")
            assert 2 <= unavailable <= 12  # two lanes, 1-2 s apart
            assert [] == ws.finals("southend-uhft")
            proxy.up()
            daemon.wait_for(
                lambda: all(len(ws.manifests(p)) == 1 for p in ("southend-uhft", "essex-police")),
                30,
                "delivered after the hub came back",
            )
        finally:
            assert 0 == daemon.terminate()


def test_connection_cut_mid_upload_is_retried_to_one_final_file(ws: Workspace) -> None:
    """TESTPLAN C24: the connection is reset part-way through the payload; the attempt fails
    as transient, is retried, and the partner ends with exactly one complete delivery."""
    ws.agreement("health", ["southend-uhft"], fields=None)
    text = (ws.config_dir / "agreements" / "health.toml").read_text()
    (ws.config_dir / "agreements" / "health.toml").write_text(
        text.replace('max_size = "1 MiB"', 'max_size = "64 MiB"')
    )
    data = csv_bytes(2, "cut") + b"z" * (8 << 20)
    with TcpProxy((ws.hub.host, ws.hub.port)) as proxy:
        _through_proxy(ws, proxy)
        daemon = ws.start()
        try:
            daemon.wait_event("lane.reconciled", 2)
            proxy.cut_at(proxy.upstream_total + (2 << 20))
            ws.drop("health", "big.csv", data)
            daemon.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, 60, "delivered")
            assert "delivery.failed" in daemon.names()
        finally:
            assert 0 == daemon.terminate()
    names = ws.inbox("southend-uhft")
    assert 2 == len(names) and not [n for n in names if n.startswith(".")], names
    (payload,) = [n for n in names if not n.endswith(".manifest.age")]
    assert data == ws.decrypt("southend-uhft", payload)


def test_changed_host_key_parks_everything_with_one_incident(tmp_path: Path, hub: Hub) -> None:
    """TESTPLAN C25: the hub presents a key that is not pinned; nothing is uploaded, every
    partner's deliveries are parked, and one host-key-mismatch incident is open (no re-pin)."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("mash", ["southend-uhft", "essex-police"])
    other = signing.generate_ssh_keypair("impostor@hub")[1]
    main = ws.config_dir / "exchange.toml"
    pinned = json.dumps(hub.host_public_keys)
    main.write_text(main.read_text("utf-8").replace(pinned, json.dumps([other])), "utf-8")
    daemon = ws.start()
    try:
        ws.drop("mash", "referrals.csv", csv_bytes(2, "hostkey"))
        with ws.ledger() as ledger:
            daemon.wait_for(
                lambda: len(ledger.deliveries(DeliveryState.PARKED)) == 2, 30, "both parked"
            )
            time.sleep(2.0)  # probes come and fail again without opening more incidents
            (incident,) = ledger.incidents()
            assert ("host-key-mismatch", None) == (incident.reason.value, incident.partner)
    finally:
        assert 0 == daemon.terminate()
    assert [] == ws.inbox("southend-uhft") == ws.inbox("essex-police")
    assert json.dumps([other]) in main.read_text("utf-8")
