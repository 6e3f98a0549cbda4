"""Corrections over a real sshd hub with real ledgers (issue 7, protocol §8): the revised
dataset reaches every partner that holds an earlier version, including one that has since
withdrawn, and no partner that never had it; each replaces the old data on its side, and the
correction is complete only when every receipt is verified."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import ESSEX_CC, ESSEX_POLICE, SOUTHEND, create_workspace
from exchange.pull import Result
from tests.conftest import HubFactory
from tests.support.correcting import (
    BARNARDOS,
    NAME,
    THURROCK,
    V1,
    V2,
    collect,
    deliveries,
    exchange,
    exchange_json,
    pull_at,
    start_daemon,
    wait,
    withdraw,
)
from tests.support.deliveries import AGREEMENT, Orgs, make_orgs

pytestmark = pytest.mark.integration

HOLDERS = ["barnardos", "essex-police", "southend-uhft"]


def _send_v1(orgs: Orgs) -> tuple[str, dict[str, Path]]:
    """The daemon delivers V1 to the three partners; each pulls it; receipts are verified.
    Returns the dataset id and each partner's filed path."""
    daemon = start_daemon(orgs.cc)
    try:
        outbox = orgs.cc.folder / "outbox" / AGREEMENT
        (outbox / f".{NAME}.tmp").write_bytes(V1)
        (outbox / f".{NAME}.tmp").rename(outbox / NAME)
        wait(
            lambda: [DeliveryState.SENT] * 3 == [d.state for d in deliveries(orgs)],
            "version 1 sent to three partners",
            orgs=orgs,
        )
    finally:
        assert 0 == daemon.terminate()
    filed = {}
    for partner in HOLDERS:
        (outcome,) = pull_at(orgs, partner).outcomes
        assert Result.FILED == outcome.result and outcome.path is not None
        assert V1 == outcome.path.read_bytes()
        filed[partner] = outcome.path
    collect(orgs)
    assert {DeliveryState.ACKNOWLEDGED} == {d.state for d in deliveries(orgs)}
    return deliveries(orgs)[0].dataset.value, filed


def _join(orgs: Orgs, tmp_path: Path) -> None:
    """Thurrock Council joins the agreement after version 1 went out."""
    thurrock = create_workspace(tmp_path / THURROCK.id, THURROCK, now=datetime.now(UTC))
    thurrock.use_ssh_key(*orgs.hub.login(THURROCK.id))
    thurrock.pin_hub(orgs.hub.host, orgs.hub.port, THURROCK.id, list(orgs.hub.host_public_keys))
    orgs.cc.add_partner(thurrock)
    thurrock.add_partner(orgs.cc)
    thurrock.add_agreement(AGREEMENT, (ESSEX_CC.id,))
    orgs.cc.add_agreement(AGREEMENT, (*HOLDERS, THURROCK.id))
    orgs.partners[THURROCK.id] = thurrock


def _correction(orgs: Orgs, **flags: bool) -> dict[str, Any] | None:
    args = ["corrections", *(["--all"] if flags.get("all") else [])]
    found = exchange_json(orgs.cc, *args)["corrections"]
    assert len(found) <= 1
    return found[0] if found else None


def test_correction_replaces_v1_at_every_holder_and_skips_the_late_joiner(
    tmp_path: Path, hub_factory: HubFactory
) -> None:
    """v1 goes to three partners; one withdraws, a fourth joins; the correction goes to the
    three holders only, each replaces v1 in place (v1 moved aside), and the correction is
    complete only once all three 'replaced' receipts are verified."""
    hub = hub_factory(partners=[SOUTHEND.id, ESSEX_POLICE.id, BARNARDOS.id, THURROCK.id])
    orgs = make_orgs(tmp_path, hub, (SOUTHEND, ESSEX_POLICE, BARNARDOS))
    dataset, filed = _send_v1(orgs)
    withdraw(orgs, ESSEX_POLICE.id)
    _join(orgs, tmp_path)

    revised = tmp_path / "revised.csv"
    revised.write_bytes(V2)
    done = exchange_json(
        orgs.cc, "correct", dataset, str(revised),
        "--complaint", "CMP-2026-0042", "--reason", "age band of R-26-0202 was wrong",
    )  # fmt: skip
    assert (2, 1, HOLDERS) == (done["version"], done["supersedes"], done["recipients"])
    assert V2 == revised.read_bytes()  # the file given is read, never moved
    opened = _correction(orgs)
    assert opened is not None
    assert (HOLDERS, [], False) == (
        opened["outstanding"],
        opened["acknowledged"],
        opened["complete"],
    )

    daemon = start_daemon(orgs.cc)
    try:
        wait(
            lambda: (
                [DeliveryState.SENT] * 3
                == [d.state for d in deliveries(orgs) if d.version != deliveries(orgs)[0].version]
            ),
            "the correction sent to the three holders",
            orgs=orgs,
        )
    finally:
        assert 0 == daemon.terminate()
    assert [] == os.listdir(hub.partner_dir(THURROCK.id) / "inbox")

    for partner in (SOUTHEND.id, ESSEX_POLICE.id):
        (outcome,) = pull_at(orgs, partner).outcomes
        assert (Result.FILED, filed[partner]) == (outcome.result, outcome.path)
    collect(orgs)
    halfway = _correction(orgs)
    assert halfway is not None and not halfway["complete"]
    assert (["barnardos"], ["essex-police", "southend-uhft"]) == (
        halfway["outstanding"],
        halfway["acknowledged"],
    )

    pull_at(orgs, BARNARDOS.id)
    collect(orgs)
    assert _correction(orgs) is None
    finished = _correction(orgs, all=True)
    assert finished is not None and finished["complete"]
    assert {"replaced"} == {p["receipt"] for p in finished["partners"]}

    for partner in HOLDERS:
        path = filed[partner]
        assert V2 == path.read_bytes()
        assert [".superseded", NAME] == sorted(os.listdir(path.parent))
        assert V1 == (path.parent / ".superseded" / f"{dataset}-v1" / NAME).read_bytes()
        with orgs.ledger(orgs.partners[partner]) as ledger:
            assert ["accepted", "replaced"] == [
                r.status for r in sorted(ledger.received(), key=lambda r: r.dataset_version)
            ]
    assert () == pull_at(orgs, THURROCK.id).outcomes
    assert not (orgs.partners[THURROCK.id].folder / "inbox" / ESSEX_CC.id).exists()

    holders = exchange_json(orgs.cc, "holders", dataset)
    assert [(p, 2, True) for p in HOLDERS] == [
        (h["partner"], h["version"], h["confirmed"]) for h in holders["holders"]
    ]
    text = exchange(orgs.cc, "holders", dataset)
    assert 0 == text.returncode and "thurrock" not in text.stdout


@pytest.mark.integration
def test_correction_of_an_unknown_dataset_or_an_older_version_is_refused(
    tmp_path: Path, hub_factory: HubFactory
) -> None:
    """Unknown dataset: exit 10 (not found); a version that is not the latest: exit 11
    (refused); nothing is recorded either way, and the error names the dataset."""
    hub = hub_factory(partners=[SOUTHEND.id])
    orgs = make_orgs(tmp_path, hub, (SOUTHEND,))
    daemon = start_daemon(orgs.cc)
    try:
        outbox = orgs.cc.folder / "outbox" / AGREEMENT
        (outbox / NAME).write_bytes(V1)
        wait(lambda: len(deliveries(orgs)) == 1, "version 1 recorded", orgs=orgs)
    finally:
        assert 0 == daemon.terminate()
    dataset = deliveries(orgs)[0].dataset.value
    revised = tmp_path / "revised.csv"
    revised.write_bytes(V2)
    flags = ("--complaint", "CMP-2026-0043", "--reason", "wrong subject reference")

    unknown = exchange(orgs.cc, "correct", "ds-" + "0" * 32, str(revised), *flags)
    assert 10 == unknown.returncode
    assert "ds-" + "0" * 32 in unknown.stderr and "not in the ledger" in unknown.stderr
    assert 10 == exchange(orgs.cc, "correct", "referrals.csv", str(revised), *flags).returncode

    assert 0 == exchange(orgs.cc, "correct", dataset, str(revised), *flags).returncode
    again = tmp_path / "again.csv"
    again.write_bytes(V2.replace(b"0-4", b"5-10"))
    older = exchange(orgs.cc, "correct", dataset, str(again), *flags, "--supersedes", "1")
    assert 11 == older.returncode
    assert "version 1 is not the latest version (2)" in older.stderr
    assert "hint:" in older.stderr
    same = exchange(orgs.cc, "correct", dataset, str(revised), *flags)
    assert 11 == same.returncode and "identical to version 2" in same.stderr
    with orgs.ledger(orgs.cc) as ledger:
        assert [1, 2] == [v.number for v in ledger.versions_of(deliveries(orgs)[0].dataset)]
