"""TESTPLAN D31 (issue 9): ``kill -9`` of the real daemon at random moments, over many
iterations, with the restart invariants checked after every kill and the full outcome
checked once the daemon is left to finish (see ``invariants.py``).

Where ``tests/crash`` kills at each NAMED step once, this kills at arbitrary instants while
several files are at different stages, so it also hits the gaps between named steps. The
moments come from a seeded generator; the seed is in every assertion message.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from tests.faults.invariants import assert_all_delivered, assert_restart_invariants
from tests.support.sshd import Hub
from tests.support.workspace import Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration

RECIPIENTS = ("southend-uhft", "essex-police")


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace whose immediate agreement 'mash' goes to both harness partners."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("mash", list(RECIPIENTS))
    return ws


def _all_sent(ws: Workspace, files: int) -> bool:
    with ws.ledger() as ledger:
        states = [d.state for d in ledger.deliveries()]
    return len(states) == files * len(RECIPIENTS) and set(states) == {DeliveryState.SENT}


def _kill_loop(ws: Workspace, iterations: int, files: int, seed: int) -> None:
    rng = random.Random(seed)
    dropped: dict[str, bytes] = {}
    for i in range(iterations):
        # New files keep arriving between crashes, so kills land in intake and in delivery.
        for _ in range(files):
            name = f"extract-{len(dropped):03d}.csv"
            dropped[name] = csv_bytes(rng.randrange(200, 12_000), f"k{seed}-{len(dropped)}")
            ws.drop("mash", name, dropped[name])
        daemon = ws.start()
        moment = rng.uniform(0.3, 3.0)
        time.sleep(moment)
        daemon.kill()
        context = f"seed {seed}, iteration {i}, killed after {moment:.2f}s"
        assert_restart_invariants(ws, RECIPIENTS, context)
    daemon = ws.start()
    try:
        # Ready first: everything may already be delivered, and a SIGTERM before the daemon
        # has installed its handler would end it with the default action.
        daemon.wait_event("daemon.ready", timeout=60)
        daemon.wait_for(
            lambda: all(len(ws.manifests(p)) == len(dropped) for p in RECIPIENTS),
            timeout=120,
            what=f"all delivered (seed {seed})",
        )
        daemon.wait_for(lambda: _all_sent(ws, len(dropped)), 60, f"ledger caught up ({seed})")
    finally:
        assert 0 == daemon.terminate()
    assert_restart_invariants(ws, RECIPIENTS, f"seed {seed}, final")
    assert_all_delivered(ws, RECIPIENTS, dropped, f"seed {seed}, final")


def test_kill_at_random_moments_quick(ws: Workspace) -> None:
    """Four kills at random moments with files arriving in between: after each restart the
    ledger is intact and no delivery is duplicated; in the end every file reached each
    partner exactly once and nothing temporary is left."""
    _kill_loop(ws, iterations=4, files=2, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_kill_at_random_moments_long(ws: Workspace) -> None:
    """The same over 25 kills (the long tier)."""
    _kill_loop(ws, iterations=25, files=2, seed=random.randrange(1 << 30))
