"""TESTPLAN 45: a correction made before the original's receipt came back. The partner pulls
both in one run, in sequence order: v1 is filed, then replaced by v2; both receipts are
verified, v1's 'accepted' and v2's 'replaced', and the correction completes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import SOUTHEND
from exchange.pull import Result
from tests.support.correcting import (
    NAME,
    V1,
    V2,
    collect,
    deliveries,
    exchange_json,
    pull_at,
    start_daemon,
    wait,
)
from tests.support.deliveries import AGREEMENT, make_orgs
from tests.support.sshd import Hub

pytestmark = pytest.mark.integration


def test_correction_before_the_original_receipt_keeps_both_in_order(
    tmp_path: Path, hub: Hub
) -> None:
    """v1 and v2 both wait on the hub; one pull files v1 then replaces it with v2."""
    orgs = make_orgs(tmp_path, hub, (SOUTHEND,))
    daemon = start_daemon(orgs.cc)
    try:
        (orgs.cc.folder / "outbox" / AGREEMENT / NAME).write_bytes(V1)
        wait(
            lambda: [DeliveryState.SENT] == [d.state for d in deliveries(orgs)],
            "version 1 sent",
            orgs=orgs,
        )
        dataset = deliveries(orgs)[0].dataset.value
        revised = tmp_path / "revised.csv"
        revised.write_bytes(V2)
        exchange_json(
            orgs.cc, "correct", dataset, str(revised),
            "--complaint", "CMP-2026-0045", "--reason", "age band of R-26-0202 was wrong",
        )  # fmt: skip
        wait(
            lambda: [DeliveryState.SENT] * 2 == [d.state for d in deliveries(orgs)],
            "the correction sent while v1 is unacknowledged",
            orgs=orgs,
        )
    finally:
        assert 0 == daemon.terminate()
    first, second = pull_at(orgs, SOUTHEND.id).outcomes
    assert ([1, 2], [Result.FILED] * 2) == (
        [first.dataset_version, second.dataset_version],
        [first.result, second.result],
    )
    assert first.path == second.path and first.path is not None
    assert V2 == first.path.read_bytes()
    assert [".superseded", NAME] == sorted(os.listdir(first.path.parent))
    with orgs.ledger(orgs.partners[SOUTHEND.id]) as ledger:
        assert ["accepted", "replaced"] == [
            r.status for r in sorted(ledger.received(), key=lambda r: r.dataset_version)
        ]
    collect(orgs)
    assert [DeliveryState.ACKNOWLEDGED] * 2 == [d.state for d in deliveries(orgs)]
    assert [] == exchange_json(orgs.cc, "corrections")["corrections"]
    (done,) = exchange_json(orgs.cc, "corrections", "--all")["corrections"]
    assert (True, ["replaced"]) == (done["complete"], [p["receipt"] for p in done["partners"]])
