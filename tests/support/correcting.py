"""Organisations on a harness hub for the correction tests: the sender's real daemon
(``exchange run`` as a subprocess), partners pulling in-process with ``exchange.pull``, the
sender's receipt collector, and the CLI for ``exchange correct``/``corrections``/``holders``.

Rules: everything goes through the real code paths; the only shortcut is that receipts are
collected by calling the daemon's collector (``exchange.receipts``) directly instead of waiting
for its five-minute interval, as ``exchange demo`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from exchange import keys, pull, receipts
from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import Org, Workspace
from exchange.errors import LedgerBusy
from exchange.ledger import Delivery
from tests.support.deliveries import Orgs
from tests.support.workspace import FAST, DaemonProcess

BARNARDOS = Org("barnardos", "Barnardo's", "Z5951768", "safeguarding@barnardos.example")
THURROCK = Org(
    "thurrock-council", "Thurrock Council", "Z6046339", "mash-data@thurrock-council.example"
)
FIELDS = "referral_id,received_date,subject_ref,age_band,concern_category\n"
V1 = (FIELDS + "R-26-0201,2026-11-20,S-3101,11-15,neglect\n"
      "R-26-0202,2026-11-21,S-3102,5-10,emotional harm\n").encode()  # fmt: skip
#: The same referrals with the age band of one corrected after an accuracy complaint.
V2 = (FIELDS + "R-26-0201,2026-11-20,S-3101,11-15,neglect\n"
      "R-26-0202,2026-11-21,S-3102,0-4,emotional harm\n").encode()  # fmt: skip
NAME = "mash-referrals-2026-11.csv"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.update(extra)
    return env


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess against ``workspace``'s configuration."""
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args, "--config", str(workspace.config_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(EXCHANGE_LOG_LEVEL="warning"),
    )


def exchange_json(workspace: Workspace, *args: str, code: int = 0) -> Any:
    result = exchange(workspace, *args, "--json")
    assert code == result.returncode, result.stderr
    return json.loads(result.stdout)


def start_daemon(workspace: Workspace) -> DaemonProcess:
    """``exchange run`` with the fast test pacing, logging JSON to a file."""
    log = workspace.folder / f"daemon-{time.monotonic_ns()}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "exchange", "run", "--config", str(workspace.config_dir),
             *FAST],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=_env(),
        )  # fmt: skip
    return DaemonProcess(process, log)


def deliveries(orgs: Orgs) -> list[Delivery]:
    with orgs.ledger(orgs.cc) as ledger:
        return ledger.deliveries()


def wait(
    check: Callable[[], bool], what: str, timeout: float = 90.0, orgs: Orgs | None = None
) -> None:
    """Poll ``check``; a ledger busy with the daemon's write counts as "not yet". On timeout
    the sender's delivery states are in the message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except LedgerBusy:
            pass
        time.sleep(0.2)
    states = (
        ""
        if orgs is None
        else f": {[(d.recipient, d.version, d.state.value) for d in deliveries(orgs)]}"
    )
    raise AssertionError(f"timed out waiting for {what}{states}")


def pull_at(orgs: Orgs, partner: str) -> pull.PullReport:
    """``exchange pull`` at ``partner``, in-process, with its own keys and hub login."""
    workspace = orgs.partners[partner]
    cfg = workspace.config()
    paths = keys.KeyPaths(cfg.folders.keys)
    transport = orgs.transport(partner)
    try:
        with orgs.ledger(workspace) as ledger:
            return pull.pull(
                cfg,
                ledger,
                transport,
                identities=keys.load_identities(paths),
                signing_key=keys.load_signing_key(paths),
                now=datetime.now(UTC),
            )
    finally:
        transport.close()


def collect(orgs: Orgs) -> receipts.ReceiptReport:
    """The sender's receipt collector, once (after the hub's mode normaliser, as in 'hub run')."""
    orgs.hub.normalise()
    cfg = orgs.cc.config()
    transport = orgs.transport("essex-cc")
    try:
        with orgs.ledger(orgs.cc) as ledger:
            return receipts.collect_receipts(
                cfg,
                ledger,
                transport,
                datetime.now(UTC),
                identities=keys.load_identities(keys.KeyPaths(cfg.folders.keys)),
            )
    finally:
        transport.close()


def withdraw(orgs: Orgs, partner: str, days_ago: int = 40) -> None:
    """Record in the sender's registry that ``partner`` gave notice ``days_ago`` days ago
    (past 28 days: its withdrawal has taken effect, protocol §11)."""
    path = orgs.cc.config_dir / "partners" / f"{partner}.toml"
    notice = date.today() - timedelta(days=days_ago)
    path.write_text(f"withdrawal_notice = {notice.isoformat()}\n" + path.read_text("utf-8"))


def acknowledged(orgs: Orgs, version_id: int) -> dict[str, DeliveryState]:
    return {d.recipient: d.state for d in deliveries(orgs) if d.version == version_id}


__all__ = [
    "BARNARDOS",
    "NAME",
    "THURROCK",
    "V1",
    "V2",
    "acknowledged",
    "collect",
    "deliveries",
    "exchange",
    "exchange_json",
    "pull_at",
    "start_daemon",
    "wait",
    "withdraw",
]
