"""``exchange correct`` / ``corrections`` / ``holders`` against a real workspace and ledger
(no hub needed): the intake checks, who is chosen, next-run timing, overdue warnings and
the errors a user can make."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exchange import corrections
from exchange.config import load_config
from exchange.core import delivery as lifecycle
from exchange.core.delivery import DeliveryState
from exchange.errors import NotFoundError, RefusedError, UsageError
from exchange.ledger import Ledger, Version
from exchange.model import DatasetId, Sha256
from tests.support.sshd import make_client_key
from tests.support.workspace import CSV_FIELDS, Workspace, csv_bytes, make_offline_workspace

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PARTNERS = ("southend-uhft", "essex-police", "barnardos")


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path) -> Workspace:
    ws = make_offline_workspace(tmp_path / "ws", PARTNERS)
    ws.agreement("mash", PARTNERS)
    # Each organisation has its own hub key (config refuses one shared by two partners).
    for partner in PARTNERS:
        _private, line = make_client_key(tmp_path, partner)
        path = ws.config_dir / "partners" / f"{partner}.toml"
        text = path.read_text("utf-8").splitlines()
        text = [
            f'ssh_public_key = "{" ".join(line.split()[:2])}"'
            if row.startswith("ssh_public_key")
            else row
            for row in text
        ]
        path.write_text("\n".join(text) + "\n", "utf-8")
    return ws


def _ledger(ws: Workspace) -> Ledger:
    return Ledger.open(ws.root / "state" / "ledger.sqlite3")


def _v1(ws: Workspace, ledger: Ledger, states: dict[str, DeliveryState]) -> Version:
    """Version 1 with one delivery per partner in ``states``, moved there through the table."""
    data = csv_bytes(3, "v1")
    spool = ws.root / "spool" / "v1.csv"
    spool.write_bytes(data)
    version = ledger.record_intake(
        dataset=DatasetId("ds-" + "4" * 32),
        agreement="mash",
        original_name=b"referrals.csv",
        sha256=Sha256(hashlib.sha256(data).hexdigest()),
        size=len(data),
        spool_path=str(spool),
        recipients=[(f"dl-{i:032x}", p) for i, p in enumerate(states)],
        now=T0,
    )
    for i, (partner, state) in enumerate(states.items()):
        delivery = f"dl-{i:032x}"
        if state is DeliveryState.PENDING:
            continue
        ledger.begin_upload(delivery, f"{i:032x}.age", T0)
        if state is DeliveryState.UPLOADING:
            continue
        done = lifecycle.UploadCompleted("c" * 64, 99, timedelta(seconds=1), f"{i:064x}")
        ledger.apply(delivery, done, T0)
        if state is DeliveryState.ACKNOWLEDGED:
            ledger.record_receipt(delivery, lifecycle.ReceiptAccepted(f"{i:064x}", "accepted"), T0)
        assert partner and state is ledger.get_delivery(delivery).state
    return version


def _revised(tmp_path: Path, data: bytes | None = None) -> Path:
    path = tmp_path / "revised.csv"
    path.write_bytes(csv_bytes(3, "v2") if data is None else data)
    return path


def test_recipients_are_the_holders_and_an_unsent_partner_gets_it_instead(
    ws: Workspace, tmp_path: Path
) -> None:
    """Acknowledged and sent partners get the correction; a partner whose v1 is still pending
    gets the correction instead of v1 (v1's delivery is superseded, it never leaves)."""
    cfg = load_config(ws.config_dir)
    with _ledger(ws) as ledger:
        v1 = _v1(
            ws,
            ledger,
            {
                "southend-uhft": DeliveryState.ACKNOWLEDGED,
                "essex-police": DeliveryState.SENT,
                "barnardos": DeliveryState.PENDING,
            },
        )
        done = corrections.correct(
            cfg, ledger, v1.dataset.value, _revised(tmp_path),
            complaint="CMP-7", reason="wrong age band", now=T0 + timedelta(hours=1),
        )  # fmt: skip
        assert ("barnardos", "essex-police", "southend-uhft") == done.recipients
        assert ("immediate", 2, 1) == (done.timing, done.version.number, done.superseded.number)
        pending = ledger.get_delivery(f"dl-{2:032x}")
        assert DeliveryState.SUPERSEDED is pending.state
        spooled = Path(done.version.spool_path)
        assert 0o400 == spooled.stat().st_mode & 0o777
        assert csv_bytes(3, "v2") == spooled.read_bytes()


def test_next_run_agreement_reports_its_timing(ws: Workspace, tmp_path: Path) -> None:
    """Under corrections = "next-run" the correction is recorded to wait for the next run."""
    ws.agreement("mash", PARTNERS, extra='corrections = "next-run"\n')
    cfg = load_config(ws.config_dir)
    with _ledger(ws) as ledger:
        v1 = _v1(ws, ledger, {"southend-uhft": DeliveryState.SENT})
        done = corrections.correct(
            cfg, ledger, v1.dataset.value, _revised(tmp_path),
            complaint="CMP-8", reason="wrong subject", now=T0,
        )  # fmt: skip
    assert "next-run" == done.timing


def test_a_correction_file_is_checked_like_any_intake(ws: Workspace, tmp_path: Path) -> None:
    """A column the agreement does not allow is refused before anything is recorded."""
    cfg = load_config(ws.config_dir)
    bad = csv_bytes(2, "x").replace(CSV_FIELDS[-1].encode(), b"nhs_number")
    with _ledger(ws) as ledger:
        v1 = _v1(ws, ledger, {"southend-uhft": DeliveryState.SENT})
        with pytest.raises(RefusedError, match="schema-mismatch"):
            corrections.correct(
                cfg, ledger, v1.dataset.value, _revised(tmp_path, bad),
                complaint="CMP-9", reason="x", now=T0,
            )  # fmt: skip
        with pytest.raises(NotFoundError, match="no such file"):
            corrections.correct(
                cfg, ledger, v1.dataset.value, tmp_path / "missing.csv",
                complaint="CMP-9", reason="x", now=T0,
            )  # fmt: skip
        with pytest.raises(UsageError, match="complaint"):
            corrections.correct(
                cfg, ledger, v1.dataset.value, _revised(tmp_path),
                complaint="C" * 101, reason="x", now=T0,
            )  # fmt: skip
        with pytest.raises(NotFoundError, match="no version 7"):
            corrections.correct(
                cfg, ledger, v1.dataset.value, _revised(tmp_path),
                complaint="CMP-9", reason="x", now=T0, supersedes=7,
            )  # fmt: skip
        assert [1] == [v.number for v in ledger.versions_of(v1.dataset)]


def test_overdue_correction_is_logged_and_needs_attention(ws: Workspace, tmp_path: Path) -> None:
    """Past the one-day acknowledgement window the correction is overdue: a warning per
    outstanding partner, exit 1 from 'exchange corrections' and 'exchange status'."""
    cfg = load_config(ws.config_dir)
    with _ledger(ws) as ledger:
        v1 = _v1(ws, ledger, {"southend-uhft": DeliveryState.SENT})
        corrections.correct(
            cfg, ledger, v1.dataset.value, _revised(tmp_path),
            complaint="CMP-10", reason="wrong date", now=T0,
        )  # fmt: skip
        with capture_logs() as logs:
            items = corrections.open_corrections(cfg, ledger, T0 + timedelta(days=2))
            assert 1 == corrections.log_overdue(items)
    assert ["correction.overdue"] == [e["event"] for e in logs]
    assert "southend-uhft" == logs[0]["recipient"]
    later = (T0 + timedelta(days=2)).isoformat()
    listed = ws.exchange("corrections", "--json", EXCHANGE_FAKE_NOW=later)
    assert 1 == listed.returncode
    (item,) = json.loads(listed.stdout)["corrections"]
    assert (True, ["southend-uhft"]) == (item["overdue"], item["outstanding"])
    status = ws.exchange("status", "--json", EXCHANGE_FAKE_NOW=later)
    assert 1 == status.returncode
    assert any("overdue" in line for line in json.loads(status.stdout)["attention"])
    text = ws.exchange("corrections", EXCHANGE_FAKE_NOW=later)
    assert "OVERDUE" in text.stdout


def test_holders_text_and_unknown_dataset(ws: Workspace) -> None:
    """'exchange holders' lists each partner's version; an unknown id exits 10 with a hint."""
    with _ledger(ws) as ledger:
        v1 = _v1(
            ws,
            ledger,
            {"southend-uhft": DeliveryState.ACKNOWLEDGED, "essex-police": DeliveryState.SENT},
        )
    shown = ws.exchange("holders", v1.dataset.value)
    assert 0 == shown.returncode
    assert "southend-uhft: version 1; confirmed by receipt" in shown.stdout
    assert "essex-police: version 1; sent, not yet confirmed" in shown.stdout
    missing = ws.exchange("holders", "ds-" + "9" * 32)
    assert 10 == missing.returncode and "hint:" in missing.stderr


def test_a_dataset_may_be_named_by_the_file_name_it_was_sent_under(
    ws: Workspace, tmp_path: Path
) -> None:
    """One dataset under that name: it is corrected; two: refused, listing both ids."""
    cfg = load_config(ws.config_dir)
    with _ledger(ws) as ledger:
        v1 = _v1(ws, ledger, {"southend-uhft": DeliveryState.SENT})
        done = corrections.correct(
            cfg, ledger, "referrals.csv", _revised(tmp_path),
            complaint="CMP-11", reason="wrong band", now=T0,
        )  # fmt: skip
        assert v1.dataset == done.version.dataset
        data = csv_bytes(4, "next-month")
        other = ledger.record_intake(
            dataset=DatasetId("ds-" + "5" * 32),
            agreement="mash",
            original_name=b"referrals.csv",
            sha256=Sha256(hashlib.sha256(data).hexdigest()),
            size=len(data),
            spool_path=str(tmp_path / "other.csv"),
            recipients=[("dl-" + "e" * 32, "southend-uhft")],
            now=T0 + timedelta(days=1),
        )
        with pytest.raises(RefusedError, match="2 datasets were sent under that name") as caught:
            corrections.holders(ledger, "referrals.csv")
        assert v1.dataset.value in caught.value.message
        assert other.dataset.value in caught.value.message
