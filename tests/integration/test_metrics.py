"""exchange.metrics: a Prometheus endpoint on loopback, scraped over HTTP, with figures taken
from a real ledger file."""

from __future__ import annotations

import hashlib
import http.client
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exchange.clock import Clock
from exchange.core import delivery as lc
from exchange.errors import EXIT_CODES, UsageError
from exchange.ledger import Ledger
from exchange.metrics import MetricsServer
from exchange.model import DatasetId, ReasonCode, Sha256
from tests.support.opskeys import distinct_partner_ssh_keys
from tests.support.sshd import free_port
from tests.support.workspace import make_offline_workspace

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)


class FixedClock:
    """A clock stopped at NOW."""

    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0


def _take(ledger: Ledger, name: str, recipients: tuple[str, ...], at: datetime) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in recipients]
    ledger.record_intake(
        dataset=DatasetId.from_uuid(uuid.uuid4()),
        agreement="mash",
        original_name=name.encode(),
        sha256=Sha256(hashlib.sha256(name.encode()).hexdigest()),
        size=10,
        spool_path=f"spool/{name}",
        recipients=list(zip(ids, recipients, strict=True)),
        now=at,
    )
    return ids


@pytest.fixture(name="ledger")
def fixture_ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger with one dataset sent to both partners at 09:05, one queued since 09:30 for
    southend-uhft, one parked for essex-police, and an open host-key incident."""
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        for delivery_id in _take(ledger, "a.csv", ("southend-uhft", "essex-police"), T0):
            ledger.begin_upload(delivery_id, f"{delivery_id}.age", T0)
            sent = T0 + timedelta(minutes=5)
            ledger.apply(
                delivery_id,
                lc.UploadCompleted("c" * 64, 9, timedelta(0), uuid.uuid4().hex * 2),
                sent,
            )
        _take(ledger, "b.csv", ("southend-uhft",), T0 + timedelta(minutes=30))
        (parked,) = _take(ledger, "c.csv", ("essex-police",), T0 + timedelta(minutes=40))
        ledger.apply(parked, lc.Parked("host key changed"), T0 + timedelta(minutes=41))
        ledger.open_incident(reason=ReasonCode.HOST_KEY_MISMATCH, now=T0, partner="essex-police")
        yield ledger


def _scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


def test_scrape_reports_ledger_figures(ledger: Ledger) -> None:
    """A scrape gives deliveries by state, failures, queue depth, the oldest queued age, the
    last success per partner and open incidents, as the ledger says."""
    clock: Clock = FixedClock()
    server = MetricsServer(ledger, clock).start()
    try:
        status, content_type, text = _scrape(server.port)
    finally:
        server.stop()
    assert (200, "text/plain; version=0.0.4; charset=utf-8") == (status, content_type)
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    sent = (T0 + timedelta(minutes=5)).timestamp()
    assert {
        'exchange_deliveries{agreement="mash",partner="essex-police",state="parked"}': "1",
        'exchange_deliveries{agreement="mash",partner="essex-police",state="sent"}': "1",
        'exchange_deliveries{agreement="mash",partner="southend-uhft",state="pending"}': "1",
        'exchange_deliveries{agreement="mash",partner="southend-uhft",state="sent"}': "1",
        'exchange_delivery_failures{partner="essex-police"}': "1",
        'exchange_delivery_failures{partner="southend-uhft"}': "0",
        "exchange_queue_depth": "2",
        "exchange_oldest_queued_age_seconds": "5400.000",
        'exchange_last_success_timestamp_seconds{partner="essex-police"}': f"{sent:.3f}",
        'exchange_last_success_timestamp_seconds{partner="southend-uhft"}': f"{sent:.3f}",
        'exchange_open_incidents{reason="host-key-mismatch"}': "1",
        "exchange_open_incidents_total": "1",
        "exchange_quarantined_files": "0",
    } == samples
    assert "# TYPE exchange_queue_depth gauge" in text.splitlines()


def test_only_the_metrics_path_is_served(ledger: Ledger) -> None:
    """Any other path is 404."""
    server = MetricsServer(ledger, FixedClock()).start()
    try:
        assert 404 == _scrape(server.port, "/")[0]
        assert 404 == _scrape(server.port, "/ledger.sqlite3")[0]
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "localhost.example"])  # noqa: S104 - refused
def test_non_loopback_addresses_are_refused(ledger: Ledger, host: str) -> None:
    """The endpoint never binds anything but a loopback address."""
    with pytest.raises(UsageError, match="only a loopback address is allowed"):
        MetricsServer(ledger, FixedClock(), host=host)


def test_metrics_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`exchange metrics --listen 127.0.0.1:PORT` serves the workspace's ledger figures and
    exits 0 on SIGTERM; a non-loopback address is refused before anything is served."""
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft"])
    (ws.root / "state").mkdir(exist_ok=True)
    refused = ws.exchange("metrics", "--listen", "0.0.0.0:9464")
    assert EXIT_CODES["usage"] == refused.returncode
    assert "only a loopback address is allowed" in refused.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exchange", "metrics", "--listen", f"127.0.0.1:{port}",
         "--config", str(ws.config_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert f"serving metrics on http://127.0.0.1:{port}/metrics\n" == process.stdout.readline()
        status, _, text = _scrape(port)
        assert (200, True) == (status, "exchange_queue_depth 0" in text.splitlines())
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert 0 == process.returncode, err
