"""The daemon in-process over the in-memory hub (``MemoryTransport``): per-partner lanes,
retry pacing and parking, driven by fault knobs instead of a real network. No sshd needed,
but a real ledger file, real folders and a real watcher."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exchange import agefmt
from exchange.clock import SystemClock
from exchange.config import load_config
from exchange.core.delivery import DeliveryState
from exchange.core.naming import DeliveryNames
from exchange.errors import LedgerBusy, PermanentTransportError
from exchange.ledger import Ledger
from exchange.manifest import Manifest
from exchange.model import Sha256, VersionKind
from exchange.service import Daemon, Settings
from exchange.service.intake import Intake
from exchange.transport.memory import MemoryFaults, MemoryHub, MemoryTransport
from exchange.transport.port import AtomicUpload
from tests.support.workspace import Workspace, csv_bytes, make_offline_workspace

FAST = Settings(
    settle_seconds=0.2,
    rescan_seconds=1,
    tick_seconds=0.2,
    grace_seconds=2,
    retry_base_seconds=1,
    retry_cap_seconds=2,
    park_probe_seconds=0.5,
    health_seconds=0.3,
    revalidate_seconds=0.3,
)


class DenyFolder(MemoryTransport):
    """A memory hub connection that refuses uploads into one partner's folder."""

    denied: set[str]

    def open_atomic(self, remote_final: str, *, expected_size: int | None = None) -> AtomicUpload:
        if remote_final.split("/")[0] in self.denied:
            raise PermanentTransportError(f"{remote_final}: permission denied")
        return super().open_atomic(remote_final, expected_size=expected_size)


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path) -> Workspace:
    """An offline workspace with agreement 'mash' to both partners."""
    ws = make_offline_workspace(tmp_path / "ws")
    ws.agreement("mash", ["southend-uhft", "essex-police"])
    return ws


@pytest.fixture(name="memory_hub")
def fixture_memory_hub() -> MemoryHub:
    """An in-memory hub with both partners' inboxes."""
    hub = MemoryHub()
    for partner in ("southend-uhft", "essex-police"):
        hub.mkdirs(f"{partner}/inbox")
    return hub


def run_daemon(ws: Workspace, factory: Callable[[], MemoryTransport]) -> Iterator[Daemon]:
    daemon = Daemon(
        load_config(ws.config_dir), clock=SystemClock(), settings=FAST, transport_factory=factory
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(15)
        assert not thread.is_alive()


def wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def finals(hub: MemoryHub, partner: str) -> list[str]:
    return sorted(p for p in hub.files if p.startswith(f"{partner}/inbox/") and "/." not in p)


def test_hub_down_retries_with_backoff_not_a_storm(ws: Workspace, memory_hub: MemoryHub) -> None:
    """With the hub refusing connections for a while, each partner's lane waits between
    attempts (backoff 1-2 s) instead of hammering it, and delivers when it comes back."""
    faults = MemoryFaults(refuse_connects=10_000)
    gen = run_daemon(ws, lambda: MemoryTransport(memory_hub, faults))
    daemon = next(gen)
    try:
        ws.drop("mash", "a.csv", csv_bytes(2, "down"))
        time.sleep(4.0)
        refused = 10_000 - faults.refuse_connects
        # Two lanes, one attempt per backoff (>= 0.5 s, then >= 1 s): a handful, not hundreds.
        assert 2 <= refused <= 16
        faults.refuse_connects = 0
        wait(lambda: len(finals(memory_hub, "southend-uhft")) == 2)
        wait(lambda: len(finals(memory_hub, "essex-police")) == 2)
    finally:
        gen.close()
    with Ledger.open(ws.root / "state" / "ledger.sqlite3") as ledger:
        assert {DeliveryState.SENT} == {d.state for d in ledger.deliveries()}
    assert daemon.stopped.is_set()


def test_permanent_failure_parks_one_partner_only(ws: Workspace, memory_hub: MemoryHub) -> None:
    """A permanent refusal for southend-uhft parks its deliveries with one incident while
    essex-police is delivered; after the fix the probe delivers southend's too."""
    denied = {"southend-uhft"}

    def factory() -> MemoryTransport:
        transport = DenyFolder(memory_hub)
        transport.denied = denied
        return transport

    gen = run_daemon(ws, factory)
    daemon = next(gen)
    try:
        for i in range(3):
            ws.drop("mash", f"f{i}.csv", csv_bytes(2, f"park{i}"))
        wait(lambda: len(finals(memory_hub, "essex-police")) == 6)
        ledger = daemon.ctx.ledger
        wait(lambda: len(ledger.deliveries(DeliveryState.PARKED)) == 3)
        assert [] == finals(memory_hub, "southend-uhft")
        incidents = ledger.incidents()
        assert 1 == len(incidents)
        assert ("permission", "southend-uhft") == (incidents[0].reason.value, incidents[0].partner)
        denied.clear()
        wait(lambda: len(finals(memory_hub, "southend-uhft")) == 6)
        wait(lambda: {d.state for d in ledger.deliveries()} == {DeliveryState.SENT})
    finally:
        gen.close()


def test_dead_observer_is_restarted_and_files_still_flow(
    ws: Workspace, memory_hub: MemoryHub
) -> None:
    """TESTPLAN D37: the watcher's observer thread dies; the health check restarts it, and a
    file dropped afterwards is delivered."""
    gen = run_daemon(ws, lambda: MemoryTransport(memory_hub))
    daemon = next(gen)
    try:
        wait(lambda: daemon.watcher is not None and daemon.watcher.is_alive())
        assert daemon.watcher is not None
        observer = daemon.watcher._observer
        observer.stop()
        observer.join(5)
        wait(lambda: daemon.watcher is not None and daemon.watcher._observer is not observer)
        wait(lambda: daemon.watcher is not None and daemon.watcher.is_alive())
        ws.drop("mash", "after-restart.csv", csv_bytes(2, "health"))
        wait(lambda: len(finals(memory_hub, "essex-police")) == 2)
    finally:
        gen.close()


def test_outbox_swapped_for_a_link_pauses_that_agreement(
    ws: Workspace, memory_hub: MemoryHub, tmp_path: Path
) -> None:
    """TESTPLAN A2: an outbox replaced by a symbolic link pauses intake for that agreement
    with an incident; nothing dropped through the link is taken."""
    gen = run_daemon(ws, lambda: MemoryTransport(memory_hub))
    daemon = next(gen)
    try:
        wait(lambda: daemon.watcher is not None and daemon.watcher.is_alive())
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        box = ws.outbox("mash")
        box.rename(tmp_path / "old-outbox")
        box.symlink_to(elsewhere)
        wait(lambda: "mash" in daemon.paused)
        (elsewhere / "through-link.csv").write_bytes(csv_bytes(2, "link"))
        time.sleep(1.0)
        ledger = daemon.ctx.ledger
        assert [] == ledger.deliveries()
        assert ["symlink"] == [i.reason.value for i in ledger.incidents()]
    finally:
        gen.close()


def test_correction_is_sent_with_its_supersedes_fields(
    ws: Workspace, memory_hub: MemoryHub
) -> None:
    """A correction recorded in the ledger goes at once (corrections = immediate) with a
    manifest naming the version it supersedes, the complaint and the reason."""
    gen = run_daemon(ws, lambda: MemoryTransport(memory_hub))
    daemon = next(gen)
    try:
        ws.drop("mash", "original.csv", csv_bytes(2, "orig"))
        wait(lambda: len(finals(memory_hub, "southend-uhft")) == 2)
        ledger = daemon.ctx.ledger
        (first, _) = ledger.deliveries()
        source = ws.root / "spool" / "mash" / "corrected"
        source.write_bytes(csv_bytes(2, "fixed"))
        sha = Sha256(hashlib.sha256(source.read_bytes()).hexdigest())
        ledger.add_version(
            dataset=first.dataset,
            sha256=sha,
            size=source.stat().st_size,
            spool_path=str(source),
            kind=VersionKind.CORRECTION,
            reason="age band was wrong for one referral",
            complaint_ref="AC-2026-014",
            supersedes=first.version,
            recipients=[(f"dl-{'a' * 32}", "southend-uhft")],
            now=daemon.ctx.now(),
        )
        wait(lambda: len(finals(memory_hub, "southend-uhft")) == 4)
    finally:
        gen.close()
    identity = agefmt.parse_identity_file(ws.identities["southend-uhft"].read_text())
    stem = DeliveryNames.for_delivery(f"dl-{'a' * 32}")
    sealed = memory_hub.files[f"southend-uhft/inbox/{stem.manifest}"]
    out = io.BytesIO()
    agefmt.decrypt(io.BytesIO(sealed), out, identity)
    signed = out.getvalue()
    manifest = Manifest.decode(signed[: signed.index(b"signature: ")])
    assert manifest.correction is not None
    assert (1, "AC-2026-014", "age band was wrong for one referral") == (
        manifest.correction.supersedes,
        manifest.correction.complaint,
        manifest.correction.reason,
    )
    assert 2 == manifest.dataset_version


def test_busy_ledger_in_the_main_loop_is_survived(
    ws: Workspace, memory_hub: MemoryHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TESTPLAN D38: the ledger reports busy to the main loop twice; the daemon logs it, waits,
    and carries on taking and delivering files."""
    failures = [LedgerBusy("ledger.sqlite3: the ledger is locked by another process")] * 2
    real_poll = Intake.poll

    def flaky_poll(self: Intake) -> float | None:
        if failures:
            raise failures.pop()
        return real_poll(self)

    monkeypatch.setattr(Intake, "poll", flaky_poll)
    gen = run_daemon(ws, lambda: MemoryTransport(memory_hub))
    next(gen)
    try:
        ws.drop("mash", "busy.csv", csv_bytes(2, "busy"))
        wait(lambda: len(finals(memory_hub, "southend-uhft")) == 2)
        assert [] == failures
    finally:
        gen.close()


def test_full_hub_parks_with_hub_full_and_leaves_no_partial(
    ws: Workspace, memory_hub: MemoryHub
) -> None:
    """TESTPLAN C26: writes fail as on a full disk; deliveries are parked with incident
    hub-full, no temporary or final file is left, and freeing space lets them through."""
    faults = MemoryFaults(disk_full=True)
    gen = run_daemon(ws, lambda: MemoryTransport(memory_hub, faults))
    daemon = next(gen)
    try:
        ws.drop("mash", "full.csv", csv_bytes(2, "full"))
        ledger = daemon.ctx.ledger
        wait(lambda: len(ledger.deliveries(DeliveryState.PARKED)) == 2)
        assert {"hub-full"} == {i.reason.value for i in ledger.incidents()}
        assert [] == [p for p in memory_hub.files if "/inbox/" in p]
        faults.disk_full = False
        wait(lambda: {d.state for d in ledger.deliveries()} == {DeliveryState.SENT})
    finally:
        gen.close()
