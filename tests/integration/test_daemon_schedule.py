"""Schedules, release windows, out-of-schedule sends and bursts, with the real ``exchange run``
(time injected with ``EXCHANGE_FAKE_NOW``: the daemon's clock starts there and runs at real
speed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from exchange.model import VersionKind
from tests.support.sshd import Hub
from tests.support.workspace import Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration

WEEKLY = 'frequency = "cron"\ncron = "0 7 * * MON"'
WINDOWED = (
    'frequency = "immediate"\n\n[[schedule.release_windows]]\n'
    'days = ["mon", "tue", "wed", "thu", "fri"]\nhours = "08:00-18:00"'
)
SUNDAY = "2026-06-07T12:00:00+00:00"
WEDNESDAY = "2026-06-10T09:00:00+00:00"  # Monday 8 June 07:00 fell due in between


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace with a weekly agreement and a release-windowed one, both to southend-uhft."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("weekly", ["southend-uhft"], schedule=WEEKLY)
    ws.agreement("windowed", ["southend-uhft"], schedule=WINDOWED)
    return ws


def test_weekly_run_missed_while_stopped_is_done_once_at_start(ws: Workspace) -> None:
    """A file taken on Sunday waits for Monday's run; the daemon is down over Monday; at the
    next start that run is recorded once and the file delivered once; a later start with two
    more missed Mondays records one run, not a burst."""
    daemon = ws.start(EXCHANGE_FAKE_NOW=SUNDAY)
    try:
        ws.drop("weekly", "week23.csv", csv_bytes(3, "week"))
        daemon.wait_event("dataset.recorded")
        time.sleep(1.5)  # three delivery cycles
        assert [] == ws.finals("southend-uhft")
    finally:
        assert 0 == daemon.terminate()
    daemon = ws.start(EXCHANGE_FAKE_NOW=WEDNESDAY)
    try:
        daemon.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, 30, "delivered")
        runs = [e for e in daemon.events() if e["event"] == "schedule.run"]
        assert ["2026-06-08T07:00:00+01:00"] == [e["next_run"] for e in runs]
    finally:
        assert 0 == daemon.terminate()
    daemon = ws.start(EXCHANGE_FAKE_NOW="2026-06-24T09:00:00+00:00")
    try:
        daemon.wait_event("daemon.ready")
        time.sleep(1.0)
        runs = [e for e in daemon.events() if e["event"] == "schedule.run"]
        assert ["2026-06-22T07:00:00+01:00"] == [e["next_run"] for e in runs]
    finally:
        assert 0 == daemon.terminate()
    assert 1 == len(ws.manifests("southend-uhft"))


def test_file_dropped_outside_the_release_window_waits_for_it(ws: Workspace) -> None:
    """Dropped on a Saturday under a weekday 08:00-18:00 window, a file is taken but not sent;
    on Monday morning it goes."""
    daemon = ws.start(EXCHANGE_FAKE_NOW="2026-06-06T10:00:00+00:00")
    try:
        ws.drop("windowed", "saturday.csv", csv_bytes(2, "sat"))
        daemon.wait_event("dataset.recorded")
        time.sleep(1.5)
        assert [] == ws.finals("southend-uhft")
    finally:
        assert 0 == daemon.terminate()
    daemon = ws.start(EXCHANGE_FAKE_NOW="2026-06-08T06:30:00+00:00")  # 07:30 BST: still closed
    try:
        daemon.wait_event("daemon.ready")
        time.sleep(1.5)
        assert [] == ws.finals("southend-uhft")
    finally:
        assert 0 == daemon.terminate()
    daemon = ws.start(EXCHANGE_FAKE_NOW="2026-06-08T09:00:00+00:00")  # 10:00 BST: open
    try:
        daemon.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, 30, "delivered")
    finally:
        assert 0 == daemon.terminate()


def test_send_goes_out_of_schedule_with_its_reason(ws: Workspace, tmp_path: Path) -> None:
    """'exchange send' under the weekly agreement on a Sunday is delivered at once by the
    running daemon; the reason and the consent-override note are in the ledger, and the file
    given is left where it was."""
    source = tmp_path / "urgent.csv"
    source.write_bytes(csv_bytes(2, "urgent"))
    daemon = ws.start(EXCHANGE_FAKE_NOW=SUNDAY)
    try:
        result = ws.exchange(
            "send",
            str(source),
            "--agreement",
            "weekly",
            "--reason",
            "child at immediate risk; strategy meeting today",
            "--override-consent",
            "consent not sought: would place the child at risk",
            "--json",
            EXCHANGE_FAKE_NOW=SUNDAY,
        )
        assert 0 == result.returncode, result.stderr
        sent = json.loads(result.stdout)
        assert "manual" == sent["kind"]
        daemon.wait_for(lambda: len(ws.manifests("southend-uhft")) == 1, 30, "delivered")
    finally:
        assert 0 == daemon.terminate()
    assert source.exists()
    with ws.ledger() as ledger:
        (delivery,) = ledger.deliveries()
        assert DeliveryState.SENT is delivery.state
        version = ledger.get_version(delivery.version)
        assert VersionKind.MANUAL is version.kind
        assert "child at immediate risk; strategy meeting today" == version.reason
        assert "consent not sought: would place the child at risk" == version.override_note


def test_send_refuses_a_file_the_agreement_does_not_allow(ws: Workspace, tmp_path: Path) -> None:
    """A file with a column outside the agreement is refused by 'exchange send' (exit 11),
    naming the reason, and nothing is recorded."""
    source = tmp_path / "wide.csv"
    source.write_bytes(csv_bytes(1, "w").replace(b"concern_category", b"DOB"))
    result = ws.exchange("send", str(source), "--agreement", "weekly", "--reason", "urgent")
    assert 11 == result.returncode
    assert "schema-mismatch" in result.stderr
    assert source.exists()
    status = ws.exchange("status", "--json")
    assert 0 == status.returncode, status.stdout
    assert [] == json.loads(status.stdout)["failures"]


MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


def _burst(ws: Workspace, count: int, timeout: float, *, small_queue: bool = False) -> None:
    ws.agreement("yearly", ["southend-uhft"], schedule='frequency = "cron"\ncron = "0 0 1 1 *"')
    original = MAX_QUEUED.read_text()
    if small_queue:
        # Lowered only while the daemon creates its inotify instance (which keeps the limit
        # it was created with), then restored, as tests/integration/test_watcher.py does.
        MAX_QUEUED.write_text("16")
    try:
        daemon = ws.start("--rescan", "1")
        daemon.wait_event("watcher.started")
    finally:
        MAX_QUEUED.write_text(original)
    try:
        daemon.wait_event("daemon.ready")
        box = ws.outbox("yearly")
        for i in range(count):
            (box / f"burst-{i:05d}.csv").write_bytes(csv_bytes(1, f"b{i}"))
        with ws.ledger() as ledger:
            daemon.wait_for(
                lambda: len(ledger.deliveries()) == count, timeout, f"{count} datasets recorded"
            )
        daemon.wait_for(lambda: os.listdir(box) == [], 30, "outbox empty")
    finally:
        assert 0 == daemon.terminate()
    with ws.ledger() as ledger:
        assert count == len({d.dataset for d in ledger.deliveries()})
        assert [] == ledger.quarantined()


def test_burst_of_files_all_accounted_for(ws: Workspace) -> None:
    """500 files written at once are all taken: one dataset each, none lost, outbox empty."""
    _burst(ws, 500, 120)


def test_burst_of_5000_files(ws: Workspace) -> None:
    """5,000 files written at once, with the daemon's inotify queue limited to 16 events, are
    all taken: the rescan finds what the overflowing events lost (TESTPLAN A14, D36)."""
    _burst(ws, 5000, 480, small_queue=True)
