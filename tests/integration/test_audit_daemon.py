"""The daemon mirrors its ledger into the audit log as it works (in-process, memory hub)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from exchange import audit
from exchange import log as log_mod
from exchange.clock import SystemClock
from exchange.config import load_config
from exchange.service import Daemon, Settings
from exchange.transport.memory import MemoryHub, MemoryTransport
from tests.support.opskeys import distinct_partner_ssh_keys
from tests.support.workspace import csv_bytes, make_offline_workspace

pytestmark = pytest.mark.integration


def test_daemon_appends_ledger_events_to_the_audit_log(tmp_path: Path) -> None:
    """A dataset taken and delivered by the daemon shows up in state/audit.jsonl (version,
    then the delivery's events up to sent) and the log verifies."""
    log_mod.configure(stream=sys.__stderr__)  # whatever an earlier in-process CLI test bound
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft"])
    hub = MemoryHub()
    hub.mkdirs("southend-uhft/inbox")
    settings = Settings(settle_seconds=0.3, tick_seconds=0.5, rescan_seconds=1, health_seconds=0.5)
    daemon = Daemon(
        load_config(ws.config_dir),
        clock=SystemClock(),
        settings=settings,
        transport_factory=lambda: MemoryTransport(hub),
    )
    log = ws.root / "state" / audit.AUDIT_FILE
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        ws.drop("mash", "referrals-june.csv", csv_bytes(3, "audit"))
        deadline = time.monotonic() + 30
        kinds: list[str] = []
        while "delivery.sent" not in kinds and time.monotonic() < deadline:
            time.sleep(0.2)
            if log.exists():
                kinds = [json.loads(line)["kind"] for line in log.read_bytes().splitlines()]
    finally:
        daemon.stop()
        thread.join(15)
    assert ["dataset.version", "delivery.pending", "delivery.uploading", "delivery.sent"] == kinds
    assert audit.verify(log).ok
