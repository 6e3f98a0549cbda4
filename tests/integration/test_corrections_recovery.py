"""A partner that is down while a correction goes out gets it when it recovers, and the
correction shows that partner outstanding until its 'replaced' receipt is verified (issue 7)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import ESSEX_POLICE, SOUTHEND
from exchange.pull import Result
from tests.support.correcting import (
    NAME,
    V1,
    V2,
    collect,
    deliveries,
    exchange,
    exchange_json,
    pull_at,
    start_daemon,
    wait,
)
from tests.support.deliveries import AGREEMENT, Orgs, make_orgs
from tests.support.sshd import Hub

pytestmark = pytest.mark.integration
PARTNERS = (SOUTHEND.id, ESSEX_POLICE.id)


def _states(orgs: Orgs, version: int) -> dict[str, DeliveryState]:
    return {d.recipient: d.state for d in deliveries(orgs) if d.version == version}


def test_partner_down_during_correction_gets_it_on_recovery(tmp_path: Path, hub: Hub) -> None:
    """With southend-uhft's hub inbox unwritable the correction reaches essex-police only and
    southend's is parked and listed outstanding; once the folder is fixed the daemon delivers
    it, southend replaces v1, and the correction completes."""
    orgs = make_orgs(tmp_path, hub, (SOUTHEND, ESSEX_POLICE))
    inbox = hub.partner_dir(SOUTHEND.id) / "inbox"
    mode = stat.S_IMODE(inbox.stat().st_mode)
    daemon = start_daemon(orgs.cc)
    try:
        outbox = orgs.cc.folder / "outbox" / AGREEMENT
        (outbox / NAME).write_bytes(V1)
        wait(lambda: len(deliveries(orgs)) == 2, "version 1 recorded", orgs=orgs)
        first = deliveries(orgs)[0]
        wait(
            lambda: {DeliveryState.SENT} == set(_states(orgs, first.version).values()),
            "version 1 sent",
            orgs=orgs,
        )
        filed = {}
        for partner in PARTNERS:
            (outcome,) = pull_at(orgs, partner).outcomes
            assert Result.FILED == outcome.result and outcome.path is not None
            filed[partner] = outcome.path
        collect(orgs)

        inbox.chmod(0o2550)  # the hub will not take files for southend-uhft: it is "down"
        revised = tmp_path / "revised.csv"
        revised.write_bytes(V2)
        exchange_json(
            orgs.cc, "correct", first.dataset.value, str(revised),
            "--complaint", "CMP-2026-0044", "--reason", "age band of R-26-0202 was wrong",
        )  # fmt: skip
        second = max(d.version for d in deliveries(orgs))
        wait(
            lambda: DeliveryState.SENT == _states(orgs, second).get(ESSEX_POLICE.id),
            "police",
            orgs=orgs,
        )
        daemon.wait_event("delivery.parked")
        pull_at(orgs, ESSEX_POLICE.id)
        collect(orgs)
        (item,) = exchange_json(orgs.cc, "corrections")["corrections"]
        southend = next(p for p in item["partners"] if p["partner"] == SOUTHEND.id)
        assert ([SOUTHEND.id], [ESSEX_POLICE.id]) == (item["outstanding"], item["acknowledged"])
        assert (False, None) == (southend["done"], southend["had_for_seconds"])
        assert southend["state"] in ("parked", "pending", "retry_wait", "uploading")  # probes retry
        status = json.loads(exchange(orgs.cc, "status", "--json").stdout)
        assert [[SOUTHEND.id]] == [c["outstanding"] for c in status["corrections"]]
        text = exchange(orgs.cc, "corrections")
        assert 0 == text.returncode
        assert f"{SOUTHEND.id}: not acknowledged" in text.stdout
        assert V1 == filed[SOUTHEND.id].read_bytes()

        inbox.chmod(mode)  # recovery
        wait(
            lambda: DeliveryState.SENT == _states(orgs, second).get(SOUTHEND.id),
            "southend",
            orgs=orgs,
        )
    finally:
        inbox.chmod(mode)
        assert 0 == daemon.terminate()
    (outcome,) = pull_at(orgs, SOUTHEND.id).outcomes
    assert (Result.FILED, filed[SOUTHEND.id]) == (outcome.result, outcome.path)
    assert V2 == filed[SOUTHEND.id].read_bytes()
    assert [".superseded", NAME] == sorted(os.listdir(filed[SOUTHEND.id].parent))
    collect(orgs)
    assert [] == exchange_json(orgs.cc, "corrections")["corrections"]
    assert {DeliveryState.ACKNOWLEDGED} == set(_states(orgs, second).values())
