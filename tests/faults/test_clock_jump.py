"""TESTPLAN D35: the wall clock jumps forward one day, then back one hour, between runs of the
real daemon (``EXCHANGE_FAKE_NOW``: each run's clock starts there and goes at real speed).

Expected: no burst of duplicate sends (a scheduled run is recorded once per due time in the
ledger, and a sent delivery is never sent again); the daily run that the forward jump makes
due happens once; after the backward jump that run is not repeated; immediate deliveries
keep working and manifests carry the clock's time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from tests.faults.invariants import assert_restart_invariants
from tests.support.sshd import Hub
from tests.support.workspace import Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration

PARTNER = "southend-uhft"
DAILY = 'frequency = "cron"\ncron = "0 7 * * *"'
START = datetime.fromisoformat("2026-06-10T09:00:00+00:00")  # Wednesday, 10:00 in London


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace with a daily 07:00 agreement and an immediate one, both to southend-uhft."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("daily", [PARTNER], schedule=DAILY)
    ws.agreement("now", [PARTNER])
    return ws


def _runs(events: list[dict[str, object]]) -> list[object]:
    return [e["next_run"] for e in events if e["event"] == "schedule.run"]


def test_clock_forward_a_day_then_back_an_hour_sends_nothing_twice(ws: Workspace) -> None:
    """Forward one day: Thursday's 07:00 run happens once and delivers the waiting file; back
    one hour: no run is repeated and nothing already sent is sent again; each file reaches
    the partner exactly once."""
    daemon = ws.start(EXCHANGE_FAKE_NOW=START.isoformat())
    try:
        ws.drop("daily", "daily.csv", csv_bytes(3, "daily"))
        ws.drop("now", "first.csv", csv_bytes(3, "first"))
        daemon.wait_for(lambda: len(ws.manifests(PARTNER)) == 1, 30, "immediate delivery")
        daemon.wait_event("dataset.recorded", 2)
        time.sleep(1.5)  # three delivery cycles: the daily file must wait for 07:00
        assert 1 == len(ws.manifests(PARTNER))
    finally:
        assert 0 == daemon.terminate()
    assert_restart_invariants(ws, [PARTNER], "after the first run")

    forward = START + timedelta(days=1)
    daemon = ws.start(EXCHANGE_FAKE_NOW=forward.isoformat())
    try:
        daemon.wait_for(lambda: len(ws.manifests(PARTNER)) == 2, 30, "daily delivery")
        time.sleep(1.5)
        assert ["2026-06-11T07:00:00+01:00"] == _runs(daemon.events())
    finally:
        assert 0 == daemon.terminate()
    assert_restart_invariants(ws, [PARTNER], "after the jump forward")

    back = forward - timedelta(hours=1)
    daemon = ws.start(EXCHANGE_FAKE_NOW=back.isoformat())
    try:
        ws.drop("now", "second.csv", csv_bytes(3, "second"))
        daemon.wait_for(lambda: len(ws.manifests(PARTNER)) == 3, 30, "immediate after jump")
        time.sleep(1.5)
        assert [] == _runs(daemon.events())
        assert 1 == daemon.names().count("delivery.sent")
    finally:
        assert 0 == daemon.terminate()
    assert_restart_invariants(ws, [PARTNER], "after the jump back")

    assert 3 == len(ws.manifests(PARTNER))
    assert 6 == len(ws.finals(PARTNER))
    with ws.ledger() as ledger:
        deliveries = ledger.deliveries()
        assert 3 == len(deliveries)
        assert {DeliveryState.SENT} == {d.state for d in deliveries}
        assert all(1 == d.attempts for d in deliveries)
        sent_days = sorted(d.sent_at.date().isoformat() for d in deliveries if d.sent_at)
    # Sent times follow the clock each run had: Wednesday, then Thursday twice.
    assert ["2026-06-10", "2026-06-11", "2026-06-11"] == sent_days
