"""``exchange retention``: what the agreements' retention makes due, from a real ledger, with
the clock moved forward through EXCHANGE_FAKE_NOW; nothing is deleted."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exchange import log
from exchange.cli import main
from exchange.core import delivery as lc
from exchange.ledger import Ledger
from exchange.model import DatasetId, ReasonCode, Sha256
from tests.support.opskeys import distinct_partner_ssh_keys
from tests.support.workspace import Workspace, make_offline_workspace

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put structlog back on the real stderr after cli.main bound it to the captured one."""
    yield
    log.configure(stream=sys.__stderr__)


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path) -> Workspace:
    """Agreement 'mash' (retention 90 days): dataset A sent to and acknowledged by
    southend-uhft on day 1; dataset B sent on day 2 and never collected; a file quarantined
    on day 0."""
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft"])
    (ws.root / "state").mkdir(exist_ok=True)
    with Ledger.open(ws.root / "state" / "ledger.sqlite3") as ledger:
        for name, day, acknowledged in (("a", 1, True), ("b", 2, False)):
            delivery = str(uuid.uuid4())
            ledger.record_intake(
                dataset=DatasetId.from_uuid(uuid.uuid4()),
                agreement="mash",
                original_name=f"{name}.csv".encode(),
                sha256=Sha256(hashlib.sha256(name.encode()).hexdigest()),
                size=10,
                spool_path=f"spool/mash/{name}",
                recipients=[(delivery, "southend-uhft")],
                now=T0,
            )
            ledger.begin_upload(delivery, f"{name}.age", T0 + day * DAY)
            manifest = hashlib.sha256(name.encode() + b"m").hexdigest()
            ledger.apply(
                delivery,
                lc.UploadCompleted("c" * 64, 9, timedelta(0), manifest),
                T0 + day * DAY,
            )
            if acknowledged:
                ledger.record_receipt(
                    delivery, lc.ReceiptAccepted(manifest, "accepted"), T0 + day * DAY
                )
        ledger.record_quarantine(
            agreement="mash",
            original_name=b"bad.csv",
            path=str(ws.root / "quarantine" / "mash" / "bad.csv"),
            reason=ReasonCode.SCHEMA_MISMATCH,
            detail="columns: nhs_number",
            sha256=None,
            size=5,
            incident=None,
            now=T0,
        )
    return ws


def _due(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, day: int
) -> list[tuple[str, str]]:
    monkeypatch.setenv("EXCHANGE_FAKE_NOW", (T0 + day * DAY).isoformat())
    assert 0 == main(["retention", "--json", "--config", str(ws.config_dir)])
    return [(d["kind"], d["path"] or d["key"]) for d in json.loads(capsys.readouterr().out)["due"]]


def test_due_items_appear_as_the_clock_moves_and_nothing_is_deleted(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quarantine is due after 90 days, the uncollected delivery 90 days after it was sent,
    the acknowledged spool copy 90 days after its receipt; the unacknowledged copy never."""
    quarantined = str(ws.root / "quarantine" / "mash" / "bad.csv")
    with Ledger.open(ws.root / "state" / "ledger.sqlite3") as ledger:
        uncollected = ledger.deliveries(lc.DeliveryState.SENT)[0].id
    assert [] == _due(ws, capsys, monkeypatch, 89)
    assert [("quarantine", quarantined)] == _due(ws, capsys, monkeypatch, 90)
    assert [("quarantine", quarantined), ("spool", "spool/mash/a")] == _due(
        ws, capsys, monkeypatch, 91
    )
    assert [
        ("quarantine", quarantined),
        ("spool", "spool/mash/a"),
        ("hub", uncollected),
    ] == _due(ws, capsys, monkeypatch, 92)
    assert _due(ws, capsys, monkeypatch, 92) == _due(ws, capsys, monkeypatch, 5000)
    with Ledger.open(ws.root / "state" / "ledger.sqlite3") as ledger:
        assert 2 == len(ledger.deliveries())
        assert 1 == len(ledger.quarantined())


def test_text_output_says_nothing_is_due(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before anything is due the text listing says so."""
    monkeypatch.setenv("EXCHANGE_FAKE_NOW", (T0 + 10 * DAY).isoformat())
    assert 0 == main(["retention", "--config", str(ws.config_dir)])
    assert "nothing is due for purging\n" == capsys.readouterr().out
