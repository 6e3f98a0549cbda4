"""``exchange incidents``: list, show and close incidents through the CLI, on a real ledger
file in a real workspace."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange import log
from exchange.cli import main
from exchange.errors import EXIT_CODES
from exchange.ledger import Ledger
from exchange.model import ReasonCode
from tests.support.opskeys import distinct_partner_ssh_keys
from tests.support.workspace import Workspace, make_offline_workspace

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """cli.main binds structlog to the stream captured during the test; put the process's
    real stderr back afterwards, so later in-process daemons do not log to a closed file."""
    yield
    log.configure(stream=sys.__stderr__)


OPENED = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path) -> Workspace:
    """A workspace whose ledger holds a host-key incident (seen twice) and a schema refusal."""
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft", "essex-police"])
    (ws.root / "state").mkdir(exist_ok=True)
    with Ledger.open(ws.root / "state" / "ledger.sqlite3") as ledger:
        for _ in range(2):
            ledger.open_incident(
                reason=ReasonCode.HOST_KEY_MISMATCH,
                now=OPENED,
                partner="southend-uhft",
                context={"host": "127.0.0.1", "fingerprint": "SHA256:abc"},
                dedupe_key="parked:southend-uhft:host-key-mismatch",
            )
        ledger.open_incident(
            reason=ReasonCode.SCHEMA_MISMATCH,
            now=OPENED,
            agreement="mash",
            context={"columns": "nhs_number", "quarantine": 1},
        )
    return ws


def _cli(ws: Workspace, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args[:1], "--config", str(ws.config_dir), *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_lists_open_incidents_as_text(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """The listing has one line per open incident with id, reason, party and occurrences."""
    code, out, _ = _cli(ws, capsys, "incidents")
    assert 0 == code
    assert [
        "#1 [open] host-key-mismatch (partner southend-uhft): opened 2026-06-01 09:30Z, "
        "seen 2 times, last 2026-06-01 09:30Z",
        "#2 [open] schema-mismatch (agreement mash): opened 2026-06-01 09:30Z",
    ] == out.splitlines()


def test_json_listing_carries_context_and_state(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json gives every field, including the context the daemon recorded."""
    code, out, _ = _cli(ws, capsys, "incidents", "--json")
    assert 0 == code
    first, second = json.loads(out)
    assert {
        "id": 1,
        "state": "open",
        "reason": "host-key-mismatch",
        "agreement": None,
        "partner": "southend-uhft",
        "context": {"host": "127.0.0.1", "fingerprint": "SHA256:abc"},
        "occurrences": 2,
        "opened_at": "2026-06-01T09:30:00+00:00",
        "last_seen_at": "2026-06-01T09:30:00+00:00",
        "closed_at": None,
        "close_note": None,
    } == first
    assert ("schema-mismatch", "mash") == (second["reason"], second["agreement"])


def test_close_with_note_then_listings_reflect_it(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Closing keeps the note and the time; the incident leaves the open list but stays in
    --all and in show."""
    code, out, _ = _cli(
        ws, capsys, "incidents", "close", "1", "--note", "host key rotated; confirmed by phone"
    )
    assert (0, "incident 1 closed\n") == (code, out)
    _, out, _ = _cli(ws, capsys, "incidents", "--json")
    assert [2] == [i["id"] for i in json.loads(out)]
    _, out, _ = _cli(ws, capsys, "incidents", "--all", "--json")
    assert [1, 2] == [i["id"] for i in json.loads(out)]
    code, out, _ = _cli(ws, capsys, "incidents", "show", "1", "--json")
    shown = json.loads(out)
    assert (0, "closed", "host key rotated; confirmed by phone") == (
        code,
        shown["state"],
        shown["close_note"],
    )
    assert shown["closed_at"] is not None


def test_show_renders_fields_and_context(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """show prints one 'key: value' line per field and per context entry."""
    code, out, _ = _cli(ws, capsys, "incidents", "show", "2")
    assert 0 == code
    lines = out.splitlines()
    assert "reason: schema-mismatch" in lines
    assert "context.columns: nhs_number" in lines
    assert "close_note: None" not in lines


def test_json_before_the_action_is_kept(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """`incidents --json show 2` prints JSON: the sub-command does not reset the flag."""
    code = main(["incidents", "--config", str(ws.config_dir), "--json", "show", "2"])
    assert (0, 2) == (code, json.loads(capsys.readouterr().out)["id"])


def test_options_after_the_action_are_understood(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """`incidents show 2 --config DIR --json` works like the options given first."""
    code = main(["incidents", "show", "2", "--config", str(ws.config_dir), "--json"])
    assert (0, 2) == (code, json.loads(capsys.readouterr().out)["id"])


@pytest.mark.parametrize(
    ("args", "exit_name", "message"),
    [
        (["show", "99"], "not_found", "incident 99: not in the ledger"),
        (["close", "99", "--note", "x"], "not_found", "incident 99: not in the ledger"),
        (["close", "2", "--note", "   "], "refused", "incident 2: closing needs a note"),
        (["show", "abc"], "usage", "incident id 'abc': expected a positive number"),
        (["close", "2"], "usage", "the following arguments are required: --note"),
    ],
)
def test_bad_requests_fail_with_a_clear_error(
    ws: Workspace,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    exit_name: str,
    message: str,
) -> None:
    """Unknown ids, empty notes and malformed ids exit non-zero with a one-line reason."""
    code, _, err = _cli(ws, capsys, "incidents", *args)
    assert EXIT_CODES[exit_name] == code
    assert f"exchange: error: {message}" == err.splitlines()[0]


def test_closing_twice_is_refused(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """A closed incident cannot be closed again (its first note is never overwritten)."""
    assert 0 == _cli(ws, capsys, "incidents", "close", "2", "--note", "column removed")[0]
    code, _, err = _cli(ws, capsys, "incidents", "close", "2", "--note", "again")
    assert EXIT_CODES["refused"] == code
    assert "incident 2: already closed" in err
    _, out, _ = _cli(ws, capsys, "incidents", "show", "2", "--json")
    assert "column removed" == json.loads(out)["close_note"]


def test_no_open_incidents_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh workspace lists no incidents and exits 0."""
    ws = make_offline_workspace(tmp_path / "fresh")
    distinct_partner_ssh_keys(ws)
    (ws.root / "state").mkdir(exist_ok=True)
    code, out, _ = _cli(ws, capsys, "incidents")
    assert (0, "no open incidents\n") == (code, out)
