"""``exchange audit sync / verify / export`` through the CLI, on a real ledger file and a real
audit log in a workspace's state folder."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exchange import log
from exchange.cli import main
from exchange.core import delivery as lc
from exchange.errors import EXIT_CODES
from exchange.ledger import Ledger
from exchange.model import DatasetId, ReasonCode, Sha256, VersionKind
from tests.support.opskeys import distinct_partner_ssh_keys
from tests.support.workspace import Workspace, make_offline_workspace

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """cli.main binds structlog to the stream captured during the test; put the process's
    real stderr back afterwards, so later in-process daemons do not log to a closed file."""
    yield
    log.configure(stream=sys.__stderr__)


T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _sha(text: str) -> Sha256:
    return Sha256(hashlib.sha256(text.encode()).hexdigest())


def _deliver(ledger: Ledger, *, name: bytes, recipients: tuple[str, ...], at: datetime) -> None:
    """A dataset taken at ``at`` and sent to each recipient a minute later."""
    ids = [str(uuid.uuid4()) for _ in recipients]
    ledger.record_intake(
        dataset=DatasetId.from_uuid(uuid.uuid4()),
        agreement="mash",
        original_name=name,
        sha256=_sha(name.decode()),
        size=1234,
        spool_path=f"spool/{name.decode()}",
        recipients=list(zip(ids, recipients, strict=True)),
        now=at,
    )
    for delivery_id in ids:
        ledger.begin_upload(delivery_id, f"{delivery_id}.age", at + timedelta(minutes=1))
        ledger.apply(
            delivery_id,
            lc.UploadCompleted("c" * 64, 2000, timedelta(seconds=1), uuid.uuid4().hex * 2),
            at + timedelta(minutes=1),
        )


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path) -> Workspace:
    """A workspace whose ledger holds two datasets sent under 'mash' (on 1 and 3 June), a
    manual send with a reason, and an incident opened then closed."""
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft", "essex-police"])
    (ws.root / "state").mkdir(exist_ok=True)
    with Ledger.open(ws.root / "state" / "ledger.sqlite3") as ledger:
        _deliver(ledger, name=b"referrals-may.csv", recipients=("southend-uhft",), at=T0)
        _deliver(
            ledger,
            name=b"referrals-june.csv",
            recipients=("southend-uhft", "essex-police"),
            at=T0 + timedelta(days=2),
        )
        manual = str(uuid.uuid4())
        ledger.record_intake(
            dataset=DatasetId.from_uuid(uuid.uuid4()),
            agreement="mash",
            original_name=b"urgent.csv",
            sha256=_sha("urgent"),
            size=99,
            spool_path="spool/urgent",
            recipients=[(manual, "essex-police")],
            now=T0 + timedelta(days=3),
            kind=VersionKind.MANUAL,
            reason="strategy meeting on child A brought forward",
            override_note="consent overridden: risk of significant harm",
        )
        ledger.begin_upload(manual, "m.age", T0 + timedelta(days=3))
        ledger.apply(
            manual,
            lc.UploadCompleted("d" * 64, 200, timedelta(seconds=1), "e" * 64),
            T0 + timedelta(days=3),
        )
        incident = ledger.open_incident(
            reason=ReasonCode.HOST_KEY_MISMATCH, now=T0, partner="southend-uhft"
        )
        ledger.close_incident(incident.id, "hub rebuilt; key confirmed by phone", T0)
    return ws


def _cli(ws: Workspace, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", *args, "--config", str(ws.config_dir)])
    return code, capsys.readouterr().out


def _log(ws: Workspace) -> Path:
    return ws.root / "state" / "audit.jsonl"


def test_sync_logs_every_ledger_record_once(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """sync appends one line per ledger record (versions, delivery events, incident opened and
    closed); a second sync adds nothing; the log then verifies."""
    code, out = _cli(ws, capsys, "sync", "--json")
    # 3 versions; 4 deliveries x 3 events (created, uploading, sent); incident opened + closed
    assert (0, {"added": 3 + 4 * 3 + 2}) == (code, json.loads(out))
    assert (0, {"added": 0}) == (lambda r: (r[0], json.loads(r[1])))(
        _cli(ws, capsys, "sync", "--json")
    )
    kinds = [json.loads(line)["kind"] for line in _log(ws).read_bytes().splitlines()]
    assert 1 == kinds.count("incident.closed")
    assert 3 == kinds.count("dataset.version")
    code, out = _cli(ws, capsys, "verify", "--json")
    report = json.loads(out)
    assert (0, True, 17, 0) == (
        code,
        report["ok"],
        report["lines"],
        report["ledger_records_not_logged"],
    )


def test_new_ledger_events_are_appended_after_the_old(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records added to the ledger after a sync are appended, chained to the existing head."""
    _cli(ws, capsys, "sync")
    before = _log(ws).read_bytes()
    with Ledger.open(ws.root / "state" / "ledger.sqlite3") as ledger:
        ledger.open_incident(reason=ReasonCode.UNEXPECTED_FILE, now=T0 + timedelta(days=9))
    assert 0 == _cli(ws, capsys, "sync")[0]
    after = _log(ws).read_bytes()
    assert after.startswith(before)
    assert "incident.opened" == json.loads(after.splitlines()[-1])["kind"]
    assert (0, True) == (lambda r: (r[0], json.loads(r[1])["ok"]))(
        _cli(ws, capsys, "verify", "--json")
    )


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap"])
def test_tampering_is_reported_at_the_line_and_blocks_sync(
    ws: Workspace, capsys: pytest.CaptureFixture[str], tamper: str
) -> None:
    """An edited, deleted or swapped line makes verify exit 1 naming line 5, and sync refuses
    to append to the damaged log."""
    _cli(ws, capsys, "sync")
    lines = _log(ws).read_bytes().splitlines(keepends=True)
    if tamper == "edit":
        lines[4] = lines[4].replace(b"southend-uhft", b"essex-police")
        if b"essex-police" not in lines[4]:
            lines[4] = lines[4].replace(b'"kind":"', b'"kind":"x')
    elif tamper == "delete":
        del lines[4]
    else:
        lines[4], lines[5] = lines[5], lines[4]
    _log(ws).write_bytes(b"".join(lines))
    code, out = _cli(ws, capsys, "verify")
    assert EXIT_CODES["attention"] == code
    assert out.startswith("audit log damaged at line 5: ")
    assert "lines 1-4 are intact" in out
    code = main(["audit", "sync", "--config", str(ws.config_dir)])
    assert EXIT_CODES["ledger"] == code
    assert "line 5" in capsys.readouterr().err


def test_cut_off_tail_is_caught_by_an_anchor(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Removing the last lines leaves a valid chain, but verify with the head kept elsewhere
    (--anchor LINE:HASH) fails, and plain verify says ledger records are missing from it."""
    _cli(ws, capsys, "sync")
    _, out = _cli(ws, capsys, "verify", "--json")
    head = json.loads(out)
    lines = _log(ws).read_bytes().splitlines(keepends=True)
    _log(ws).write_bytes(b"".join(lines[:-2]))
    code, out = _cli(ws, capsys, "verify")
    assert 0 == code
    assert "2 ledger records are not in the log yet" in out
    code, out = _cli(ws, capsys, "verify", "--anchor", f"{head['lines']}:{head['head']}")
    assert EXIT_CODES["attention"] == code
    assert out.startswith(f"audit log damaged at line {head['lines']}: anchored line missing")


def test_export_says_what_went_to_whom_when_and_why(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """export --since lists each delivery sent on or after the date with the agreement, its
    legal basis and purpose, the partner's name, and the reason and consent note of a manual
    send; earlier deliveries are left out."""
    code, out = _cli(ws, capsys, "export", "--since", "2026-06-02", "--json")
    assert 0 == code
    rows = json.loads(out)
    assert [
        ("2026-06-03T09:01:00+00:00", "essex-police", "referrals-june.csv", "regular"),
        ("2026-06-03T09:01:00+00:00", "southend-uhft", "referrals-june.csv", "regular"),
        ("2026-06-04T09:00:00+00:00", "essex-police", "urgent.csv", "manual"),
    ] == [(r["at"], r["partner"], r["file_name"], r["kind"]) for r in rows]
    first = rows[0]
    assert {
        "direction": "sent",
        "agreement": "mash",
        "agreement_title": "Test agreement mash",
        "legal_basis": ["Children Act 2004, s.11"],
        "partner_name": "Essex Police",
        "state": "sent",
        "classification": "OFFICIAL-SENSITIVE",
    }.items() <= first.items()
    assert ("strategy meeting on child A brought forward", "consent overridden: risk of "
            "significant harm") == (rows[2]["reason"], rows[2]["override_note"])  # fmt: skip
    code, text = _cli(ws, capsys, "export", "--since", "2026-06-04")
    assert 0 == code
    assert [
        "2026-06-04 09:00Z sent to Essex Police (essex-police): dataset "
        + rows[2]["dataset"]
        + " version 1",
        f"  file: urgent.csv (99 bytes, sha256 {_sha('urgent').hex})",
        "  agreement: mash: Test agreement mash",
        "  legal basis: Children Act 2004, s.11",
        "  classification: OFFICIAL-SENSITIVE; data: referral details",
        "  purpose: Protect children at risk by sharing referrals with partners.",
        "  manual: strategy meeting on child A brought forward",
        "  consent overridden: consent overridden: risk of significant harm",
        "  state: sent",
    ] == text.splitlines()


def test_export_rejects_a_malformed_date(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """--since takes YYYY-MM-DD; anything else is a usage error naming the value."""
    code = main(["audit", "export", "--since", "last week", "--config", str(ws.config_dir)])
    assert EXIT_CODES["usage"] == code
    assert "--since 'last week': expected a date as YYYY-MM-DD" in capsys.readouterr().err


def test_ledger_edited_behind_its_back_is_reported(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """With its append-only triggers dropped, a ledger whose recorded reason was rewritten and
    whose incident was deleted no longer matches the audit log: verify exits 1 and names
    both records and their audit lines."""
    _cli(ws, capsys, "sync")
    lines = [json.loads(line) for line in _log(ws).read_bytes().splitlines()]
    manual_line = 1 + next(
        i for i, r in enumerate(lines) if r["kind"] == "dataset.version" and r["data"]["reason"]
    )
    opened, closed = (
        1 + next(i for i, r in enumerate(lines) if r["kind"] == kind)
        for kind in ("incident.opened", "incident.closed")
    )
    assert opened < closed
    raw = sqlite3.connect(ws.root / "state" / "ledger.sqlite3")
    with raw:
        raw.execute("DROP TRIGGER versions_no_update")
        raw.execute("DROP TRIGGER incidents_no_delete")
        raw.execute("UPDATE versions SET reason = 'routine' WHERE reason IS NOT NULL")
        raw.execute("DELETE FROM incidents")
    raw.close()
    code, out = _cli(ws, capsys, "verify")
    assert EXIT_CODES["attention"] == code
    altered = [line for line in out.splitlines() if line.startswith("ledger altered")]
    assert sorted(
        [
            f"ledger altered: {lines[manual_line - 1]['key']} (audit line {manual_line}) "
            "differs in the ledger",
            f"ledger altered: incident:1:opened (audit line {opened}) no longer in the ledger",
            f"ledger altered: incident:1:closed (audit line {closed}) no longer in the ledger",
        ]
    ) == sorted(altered)
