"""Invariants the fault tests check after every restart (TESTPLAN D31, docs/DESIGN.md).

Rules:

1. ``assert_restart_invariants`` holds at ANY moment after a crash, before recovery: the ledger
   opens (``PRAGMA integrity_check``) and its event chain verifies; no delivery row is
   duplicated; no partner holds two final payloads for one delivery; no final name on the hub
   that the ledger does not know; no plaintext temporary outside the spool.
2. ``assert_all_delivered`` holds once the daemon has caught up: every dropped file reached
   every recipient exactly once, byte for byte, and no temporary is left anywhere.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping

from exchange.core.delivery import DeliveryState
from exchange.core.naming import Folder, read_name
from tests.support.workspace import Workspace


def assert_restart_invariants(ws: Workspace, recipients: Iterable[str], context: str) -> None:
    with ws.ledger() as ledger:
        assert ledger.verify_chain() is None, context
        deliveries = ledger.deliveries()
    pairs = collections.Counter((d.version, d.recipient) for d in deliveries)
    assert all(n == 1 for n in pairs.values()), f"{context}: duplicate delivery rows {pairs}"
    known = {d.remote_name for d in deliveries if d.remote_name}
    for partner in recipients:
        stems: collections.Counter[tuple[str, object]] = collections.Counter()
        for name in ws.finals(partner):
            found = read_name(Folder.INBOX, name)
            assert found is not None, f"{context}: unexpected hub name {name!r}"
            stems[(found.stem, found.kind)] += 1
            if not name.endswith(".manifest.age"):
                assert name in known, f"{context}: {name} on the hub is not in the ledger"
        assert all(n == 1 for n in stems.values()), f"{context}: {stems}"
    for folder in ("outbox",):
        for entry in (ws.root / folder).rglob(".*"):
            raise AssertionError(f"{context}: plaintext temporary {entry} outside the spool")


def assert_all_delivered(
    ws: Workspace, recipients: Iterable[str], dropped: Mapping[str, bytes], context: str
) -> None:
    recipients = list(recipients)
    with ws.ledger() as ledger:
        deliveries = ledger.deliveries()
    assert len(dropped) * len(recipients) == len(deliveries), context
    assert {DeliveryState.SENT} == {d.state for d in deliveries}, context
    for partner in recipients:
        names = ws.inbox(partner)
        assert not [n for n in names if n.startswith(".")], f"{context}: temporaries {names}"
        payloads = [n for n in names if not n.endswith(".manifest.age")]
        assert len(dropped) == len(ws.manifests(partner)), f"{context}: {names}"
        got = sorted(ws.decrypt(partner, n) for n in payloads)
        assert sorted(dropped.values()) == got, f"{context}: {partner} contents differ"
    assert [] == sorted(p.name for p in (ws.root / "outbox").rglob("*") if p.is_file()), context
