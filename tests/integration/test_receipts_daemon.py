"""Security review M4: the daemon's periodic hub job over a real sshd.

A partner running ``exchange run`` with ``[hub] role = "partner"`` delivers into its own
``outbox/`` on our hub; our daemon (role ``operator``) collects, verifies, files and
acknowledges it, and the partner's daemon takes our receipt. A delivery whose receipt never
arrives within the agreement's window raises exactly one incident, shown by ``exchange
status``, which the late receipt closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import Workspace
from exchange.model import ReasonCode
from tests.support.deliveries import AGREEMENT, Orgs, make_orgs
from tests.support.sshd import Hub
from tests.support.workspace import FAST, DaemonProcess

PARTNER = "southend-uhft"
FILE = "mash referrals 2026-11.csv"
_EXCHANGE = (sys.executable, "-m", "exchange")
DATA = b"referral_id,received_date\nH-2001,2026-11-24\nH-2002,2026-11-25\n"


def _as_hub_partner(workspace: Workspace, window: str | None = None) -> None:
    """``[hub] role = "partner"``: the workspace logs in to essex-cc's hub as its partner."""
    main = workspace.config_dir / "exchange.toml"
    text = main.read_text("utf-8")
    # The init template writes role = "operator" (dd96bd1); older ones wrote no role line.
    if 'role = "operator"' in text:
        text = text.replace('role = "operator"', 'role = "partner"', 1)
    else:
        text = text.replace("[hub]\n", '[hub]\nrole = "partner"\n', 1)
    main.write_text(text, "utf-8")
    if window is not None:
        path = workspace.config_dir / "agreements" / f"{AGREEMENT}.toml"
        text = path.read_text("utf-8")
        path.write_text(
            text.replace('acknowledgement_window = "1d"', f'acknowledgement_window = "{window}"'),
            "utf-8",
        )


def _start(workspace: Workspace) -> DaemonProcess:
    log = workspace.folder / f"daemon-{len(list(workspace.folder.glob('daemon-*.log')))}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*_EXCHANGE, "run", "--config", str(workspace.config_dir), *FAST, "--collect", "0.5"],
            cwd=workspace.folder,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    return DaemonProcess(process, log)


@contextmanager
def _normaliser(hub: Hub) -> Iterator[None]:
    """What ``exchange hub run`` does on a real hub: fix the modes of uploaded files."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.2):
            hub.normalise()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _delivery_state(orgs: Orgs, workspace: Workspace) -> DeliveryState | None:
    with orgs.ledger(workspace) as ledger:
        found = ledger.deliveries()
    return found[0].state if found else None


def _overdue_incidents(orgs: Orgs, workspace: Workspace, open_only: bool) -> list[object]:
    with orgs.ledger(workspace) as ledger:
        return [
            i
            for i in ledger.incidents(open_only=open_only)
            if i.reason is ReasonCode.RECEIPT_OVERDUE
        ]


@pytest.fixture(name="orgs")
def fixture_orgs(tmp_path: Path, hub: Hub) -> Orgs:
    return make_orgs(tmp_path, hub)


@pytest.mark.integration
def test_partner_run_delivers_to_its_outbox_and_our_daemon_files_it(orgs: Orgs) -> None:
    """southend-uhft's daemon uploads into its own outbox/ (not an inbox/ it cannot reach);
    essex-cc's daemon files the dataset and answers; southend-uhft's daemon acknowledges."""
    partner = orgs.partners[PARTNER]
    _as_hub_partner(partner)
    (partner.folder / "outbox" / AGREEMENT / FILE).write_bytes(DATA)
    filed = orgs.cc.folder / "inbox" / PARTNER / AGREEMENT / FILE
    with _normaliser(orgs.hub):
        theirs = _start(partner)
        try:
            theirs.wait_for(
                lambda: _delivery_state(orgs, partner) is DeliveryState.SENT, what="sent"
            )
            outbox = orgs.hub.partner_dir(PARTNER) / "outbox"
            assert 2 == len([p for p in outbox.iterdir() if not p.name.startswith(".")])
            assert [] == list((orgs.hub.partner_dir(PARTNER) / "inbox").iterdir())
            ours = _start(orgs.cc)
            try:
                ours.wait_for(filed.exists, what="filed in our inbox")
                assert DATA == filed.read_bytes()
                theirs.wait_for(
                    lambda: _delivery_state(orgs, partner) is DeliveryState.ACKNOWLEDGED,
                    what="acknowledged",
                )
                ours.wait_for(lambda: not any(outbox.iterdir()), what="outbox emptied")
            finally:
                assert 0 == ours.terminate()
        finally:
            assert 0 == theirs.terminate()
    assert "collect.failed" not in ours.names() + theirs.names()
    assert [] == _overdue_incidents(orgs, partner, open_only=False)


@pytest.mark.integration
def test_overdue_receipt_raises_one_incident_shown_in_status(orgs: Orgs) -> None:
    """With essex-cc's daemon down past the 2-second window, southend-uhft's daemon raises one
    receipt-overdue incident and one warning however often it looks, status shows it and
    exits 1; once the receipt arrives the incident is closed."""
    partner = orgs.partners[PARTNER]
    _as_hub_partner(partner, window="2s")
    (partner.folder / "outbox" / AGREEMENT / FILE).write_bytes(DATA)
    with _normaliser(orgs.hub):
        theirs = _start(partner)
        try:
            theirs.wait_event("receipt.overdue", timeout=60)
            time.sleep(2.5)  # five more collections at --collect 0.5
            (incident,) = _overdue_incidents(orgs, partner, open_only=True)
            assert incident.partner == "essex-cc"  # type: ignore[attr-defined]
            assert incident.occurrences == 1  # type: ignore[attr-defined]
            assert 1 == theirs.names().count("receipt.overdue")

            status = subprocess.run(
                [*_EXCHANGE, "status", "--json", "--config", str(partner.config_dir)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert 1 == status.returncode, status.stderr
            shown = json.loads(status.stdout)["incidents"]
            assert [ReasonCode.RECEIPT_OVERDUE.value] == [i["reason"] for i in shown]

            ours = _start(orgs.cc)
            try:
                theirs.wait_for(
                    lambda: not _overdue_incidents(orgs, partner, open_only=True),
                    what="overdue incident closed",
                )
            finally:
                assert 0 == ours.terminate()
        finally:
            assert 0 == theirs.terminate()
    assert 1 == len(_overdue_incidents(orgs, partner, open_only=False))
    assert 1 == theirs.names().count("receipt.overdue")
