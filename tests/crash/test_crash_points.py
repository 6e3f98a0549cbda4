"""TESTPLAN D31: ``kill -9`` at every named crash point, then a restart, leaves every dataset
in exactly one consistent state (docs/DESIGN.md, "Write-ordering invariants").

The daemon kills itself with SIGKILL at the named step (``EXCHANGE_CRASH_AT``); the restart
runs without it. Checked after the restart: each recipient has exactly one payload and one
manifest under final names and no temporary file; the ledger passes ``PRAGMA
integrity_check`` (``Ledger.open``) and its event chain; one dataset, one version, one
delivery per recipient, all ``sent``; no plaintext outside the spool (outbox empty, no
leftover temporaries in spool or quarantine).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from exchange.service import CRASH_POINTS
from tests.support.sshd import Hub
from tests.support.workspace import Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration

RECIPIENTS = ("southend-uhft", "essex-police")
DELIVERY_PATH = [
    "intake.after_validate",
    "intake.after_spool_write",
    "intake.after_spool_copy",
    "intake.after_ledger_commit",
    "intake.before_outbox_unlink",
    "intake.after_outbox_unlink",
    "delivery.after_intent",
    "delivery.mid_upload",
    "delivery.before_rename",
    "delivery.after_payload_rename",
    "delivery.after_rename",
    "delivery.after_sent",
]


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace whose immediate agreement 'mash' goes to both harness partners."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("mash", list(RECIPIENTS))
    return ws


def assert_consistent(ws: Workspace, data: bytes) -> None:
    """The invariants of the module docstring."""
    for partner in RECIPIENTS:
        names = ws.inbox(partner)
        assert not [n for n in names if n.startswith(".")], names
        assert 1 == len(ws.manifests(partner)), names
        payloads = [n for n in names if not n.endswith(".manifest.age")]
        assert 1 == len(payloads), names
        assert data == ws.decrypt(partner, payloads[0])
    with ws.ledger() as ledger:
        assert ledger.verify_chain() is None
        deliveries = ledger.deliveries()
        assert sorted(RECIPIENTS) == sorted(d.recipient for d in deliveries)
        assert {DeliveryState.SENT} == {d.state for d in deliveries}
        assert 1 == len({d.dataset for d in deliveries})
        assert 1 == len(ledger.versions_of(deliveries[0].dataset))
        assert [] == ledger.quarantined()
    assert [] == os.listdir(ws.outbox("mash"))
    spool = os.listdir(ws.root / "spool" / "mash")
    assert 1 == len(spool) and not spool[0].startswith("."), spool
    quarantine = ws.root / "quarantine" / "mash"
    assert [] == (os.listdir(quarantine) if quarantine.exists() else [])


def test_every_named_point_is_covered() -> None:
    """Each crash point of the delivery path is in the daemon's list, and the list has no
    point this module leaves untested."""
    others = {
        "quarantine.after_reason_file",
        "quarantine.after_move",
        "schedule.after_run_recorded",
        "send.after_spool_temp",
    }
    assert set(CRASH_POINTS) == set(DELIVERY_PATH) | others


@pytest.mark.parametrize("point", DELIVERY_PATH)
def test_kill_at_point_then_restart(ws: Workspace, point: str) -> None:
    """Killed with SIGKILL at the point, restarted: the file reaches each recipient exactly
    once and the ledger, spool and hub agree."""
    data = csv_bytes(40, point)
    crashing = ws.start(EXCHANGE_CRASH_AT=point)
    ws.drop("mash", "referrals.csv", data)
    assert -signal.SIGKILL == crashing.wait_dead(60), crashing.tail()
    daemon = ws.start()
    try:
        daemon.wait_for(
            lambda: all(len(ws.manifests(p)) == 1 for p in RECIPIENTS), 60, "both delivered"
        )
        with ws.ledger() as ledger:
            daemon.wait_for(
                lambda: {d.state for d in ledger.deliveries()} == {DeliveryState.SENT}, 30, "sent"
            )
        daemon.wait_for(lambda: os.listdir(ws.outbox("mash")) == [], 30, "outbox emptied")
    finally:
        assert 0 == daemon.terminate()
    assert_consistent(ws, data)


@pytest.mark.parametrize("point", ["quarantine.after_reason_file", "quarantine.after_move"])
def test_kill_while_quarantining(ws: Workspace, point: str) -> None:
    """Killed while moving a refused file to quarantine: after a restart the file is in
    quarantine once, with one reason file, one ledger record and one incident."""
    bad = b"referral_id,NHS_number\nR-1,9434765919\n"
    crashing = ws.start(EXCHANGE_CRASH_AT=point)
    ws.drop("mash", "extra-column.csv", bad)
    assert -signal.SIGKILL == crashing.wait_dead(60), crashing.tail()
    daemon = ws.start()
    try:
        with ws.ledger() as ledger:
            daemon.wait_for(lambda: len(ledger.quarantined()) == 1, 30, "quarantine recorded")
        daemon.wait_for(lambda: os.listdir(ws.outbox("mash")) == [], 30, "outbox emptied")
    finally:
        assert 0 == daemon.terminate()
    names = sorted(os.listdir(ws.root / "quarantine" / "mash"))
    entries = [n for n in names if not n.endswith(".reason.json")]
    assert 1 == len(entries), names
    assert f"{entries[0]}.reason.json" in names
    # A crash after the reason file and before the move leaves that reason file without an
    # entry (the outbox package's documented leftover; it holds no content).
    orphans = [n for n in names if n.endswith(".reason.json") and n != f"{entries[0]}.reason.json"]
    assert len(orphans) == (1 if point == "quarantine.after_reason_file" else 0), names
    with ws.ledger() as ledger:
        (record,) = ledger.quarantined()
        assert "schema-mismatch" == record.reason.value
        assert [record.incident] == [i.id for i in ledger.incidents()]
        assert [] == ledger.deliveries()


def test_kill_after_run_recorded(tmp_path: Path, hub: Hub) -> None:
    """Killed right after a missed weekly run was recorded: the restart marks it done and the
    waiting file is delivered once; no run is left undone and no second run is recorded."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("weekly", ["southend-uhft"], schedule='frequency = "cron"\ncron = "0 7 * * MON"')
    sunday, wednesday = "2026-06-07T12:00:00+00:00", "2026-06-10T09:00:00+00:00"
    daemon = ws.start(EXCHANGE_FAKE_NOW=sunday)
    try:
        ws.drop("weekly", "week.csv", csv_bytes(3, "run"))
        daemon.wait_event("dataset.recorded")
    finally:
        assert 0 == daemon.terminate()
    crashing = ws.start(
        EXCHANGE_FAKE_NOW=wednesday, EXCHANGE_CRASH_AT="schedule.after_run_recorded"
    )
    assert -signal.SIGKILL == crashing.wait_dead(60), crashing.tail()
    with ws.ledger() as ledger:
        assert 1 == len(ledger.runs_not_done())
    daemon = ws.start(EXCHANGE_FAKE_NOW=wednesday)
    try:
        daemon.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, 30, "delivered")
        assert "schedule.run" not in daemon.names()
    finally:
        assert 0 == daemon.terminate()
    with ws.ledger() as ledger:
        assert [] == ledger.runs_not_done()
        last = ledger.last_run("weekly")
        assert last is not None and "2026-06-08T06:00:00+00:00" == last.due_at.isoformat()
    assert 2 == len(ws.finals("southend-uhft"))


def test_design_doc_names_every_crash_point() -> None:
    """docs/DESIGN.md's write-ordering section names every crash point the code has."""
    design = (Path(__file__).resolve().parents[2] / "docs" / "DESIGN.md").read_text("utf-8")
    section = design[design.index("## Write-ordering invariants") :]
    assert [] == [point for point in CRASH_POINTS if f"`{point}`" not in section]


def test_kill_during_send_leaves_no_plaintext_temporary_after_restart(
    ws: Workspace, tmp_path: Path
) -> None:
    """``exchange send`` killed with SIGKILL after spooling its plaintext copy under the
    temporary name: the next daemon start removes it, and nothing was recorded or sent."""
    source = tmp_path / "urgent-referrals.csv"
    source.write_bytes(csv_bytes(40, "urgent"))
    spool = ws.root / "spool" / "mash"
    killed = ws.exchange(
        "send",
        str(source),
        "--agreement",
        "mash",
        "--reason",
        "urgent referral",
        EXCHANGE_CRASH_AT="send.after_spool_temp",
    )
    assert -signal.SIGKILL == killed.returncode, killed.stderr
    left = os.listdir(spool)
    assert 1 == len(left) and left[0].startswith(".tmp-send-"), left
    daemon = ws.start()
    try:
        daemon.wait_for(lambda: os.listdir(spool) == [], 30, "temporary removed")
    finally:
        assert 0 == daemon.terminate()
    assert [] == os.listdir(spool)
    with ws.ledger() as ledger:
        assert [] == ledger.deliveries()
