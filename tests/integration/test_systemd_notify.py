"""The daemon speaks sd_notify to a NOTIFY_SOCKET the test provides: READY=1 after start-up,
WATCHDOG=1 only while healthy, STOPPING=1 on shutdown. In-process over the memory hub, so the
watcher thread can be killed under it."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange import log
from exchange.clock import SystemClock
from exchange.config import load_config
from exchange.service import Daemon, Settings
from exchange.transport.memory import MemoryHub, MemoryTransport
from tests.support.opskeys import distinct_partner_ssh_keys
from tests.support.workspace import make_offline_workspace

pytestmark = pytest.mark.integration

#: The health check (which would restart a dead watcher) is kept out of the way, so the test
#: sees what the watchdog does while the watcher is dead.
SETTINGS = Settings(
    settle_seconds=0.3,
    tick_seconds=0.5,
    rescan_seconds=2,
    health_seconds=3600,
    grace_seconds=2,
)
WATCHDOG_USEC = 400_000  # a ping due every 0.2 s; the main loop looks at least every 0.5 s


class Receiver:
    """systemd's side of the notify socket: collects datagrams as lists of lines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)

    def collect(self, seconds: float) -> list[list[str]]:
        found = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                found.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue
        return found

    def wait_for(self, line: str, seconds: float = 20.0) -> list[list[str]]:
        found: list[list[str]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found += self.collect(0.1)
            if any(line in message for message in found):
                return found
        raise AssertionError(f"no {line} within {seconds} s; got {found}")


@pytest.fixture(name="receiver")
def fixture_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A notify socket named in NOTIFY_SOCKET, with WATCHDOG_USEC asking for pings."""
    log.configure(stream=sys.__stderr__)  # whatever an earlier in-process CLI test bound
    receiver = Receiver(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield receiver
    finally:
        receiver.sock.close()


def test_ready_then_watchdog_only_while_healthy_then_stopping(
    tmp_path: Path, receiver: Receiver
) -> None:
    """READY=1 comes once start-up is done; WATCHDOG=1 follows every interval; once the
    watcher's observer thread is dead no WATCHDOG=1 is sent (so systemd would restart the
    service); STOPPING=1 comes on stop."""
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft", "essex-police"])
    hub = MemoryHub()
    for partner in ("southend-uhft", "essex-police"):
        hub.mkdirs(f"{partner}/inbox")
    daemon = Daemon(
        load_config(ws.config_dir),
        clock=SystemClock(),
        settings=SETTINGS,
        transport_factory=lambda: MemoryTransport(hub),
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        first = receiver.wait_for("READY=1")
        ready = next(m for m in first if "READY=1" in m)
        assert ["READY=1", "STATUS=watching 1 outboxes; 2 partner lanes"] == ready
        assert daemon.watcher is not None and daemon.watcher.healthy()
        healthy = receiver.collect(2.0)
        assert len([m for m in healthy if m == ["WATCHDOG=1"]]) >= 3

        observer = daemon.watcher._observer  # kill the thread under the daemon
        assert observer is not None
        observer.stop()
        observer.join(5)
        assert not daemon.watcher.healthy()
        receiver.collect(0.6)  # a ping decided just before the kill may still be in flight
        assert [] == [m for m in receiver.collect(2.0) if "WATCHDOG=1" in m]
    finally:
        daemon.stop()
        thread.join(15)
    assert not thread.is_alive()
    assert ["STOPPING=1", "STATUS=stopping (requested)"] in receiver.wait_for("STOPPING=1")


def test_no_watchdog_pings_when_systemd_asks_for_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without WATCHDOG_USEC the daemon sends READY=1 and STOPPING=1 but no WATCHDOG=1."""
    log.configure(stream=sys.__stderr__)
    receiver = Receiver(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft"])
    hub = MemoryHub()
    hub.mkdirs("southend-uhft/inbox")
    daemon = Daemon(
        load_config(ws.config_dir),
        clock=SystemClock(),
        settings=SETTINGS,
        transport_factory=lambda: MemoryTransport(hub),
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        seen = receiver.wait_for("READY=1")
        seen += receiver.collect(0.5)
    finally:
        daemon.stop()
        thread.join(15)
        seen += receiver.wait_for("STOPPING=1")
        receiver.sock.close()
    assert [] == [m for m in seen if "WATCHDOG=1" in m]


def test_bad_configuration_never_reports_ready(tmp_path: Path) -> None:
    """`exchange run` with a broken agreement file exits 3 naming the file and sends no
    READY=1, so a Type=notify unit fails at start instead of running half-configured
    (TESTPLAN B15)."""
    receiver = Receiver(tmp_path / "notify")
    ws = make_offline_workspace(tmp_path / "ws")
    distinct_partner_ssh_keys(ws)
    ws.agreement("mash", ["southend-uhft"])
    (ws.config_dir / "agreements" / "mash.toml").write_text('title = "unterminated\n', "utf-8")
    try:
        result = ws.exchange("run", NOTIFY_SOCKET=str(tmp_path / "notify"))
        seen = receiver.collect(0.5)
    finally:
        receiver.sock.close()
    assert 3 == result.returncode
    assert "agreements/mash.toml" in result.stderr
    assert [] == seen
