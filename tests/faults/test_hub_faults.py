"""TESTPLAN C26 and C27 with everything real at once: the ``exchange run`` subprocess, a real
sshd hub, a partner inbox on a size-limited tmpfs, and a loopback proxy that stalls.

(The transport alone against a full tmpfs, and the daemon against a fake full hub, are in
``tests/integration``; these check the two meet: the real daemon reads the real server's
``SSH_FX_FAILURE`` for ENOSPC as hub-full.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.invariants import assert_restart_invariants
from tests.support.sshd import Hub
from tests.support.tcpproxy import TcpProxy
from tests.support.workspace import Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration

PARTNER = "southend-uhft"


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace whose agreement 'big' (no column list, 64 MiB cap) goes to southend-uhft."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("big", [PARTNER], fields=None)
    path = ws.config_dir / "agreements" / "big.toml"
    path.write_text(path.read_text().replace('max_size = "1 MiB"', 'max_size = "64 MiB"'))
    return ws


def test_full_hub_disk_parks_the_partner_and_delivers_once_space_returns(ws: Workspace) -> None:
    """The partner's inbox is a 1 MiB tmpfs and the dataset is 3 MiB: the upload fails as
    hub-full, the partner is parked with one hub-full incident, no partial file is left on the
    hub, the daemon stays up; when the tmpfs is removed (space returns) the probe delivers it
    exactly once."""
    inbox = ws.hub.partner_dir(PARTNER) / "inbox"
    data = csv_bytes(2, "hubfull") + os.urandom(3 << 20).hex().encode()[: 3 << 20]
    daemon = ws.start()
    try:
        daemon.wait_event("lane.reconciled")
        with full_inbox(inbox):
            ws.drop("big", "big.csv", data)
            daemon.wait_event("dataset.recorded")
            daemon.wait_for(lambda: _incidents(ws, "hub-full") == 1, 15, "hub-full incident")
            time.sleep(3)  # probes keep failing while full: still one incident, no partial
            assert daemon.process.poll() is None
            assert [] == os.listdir(inbox)
            assert 1 == _incidents(ws, "hub-full")
        daemon.wait_for(lambda: len(ws.manifests(PARTNER)) == 1, 60, "delivered after space")
    finally:
        assert 0 == daemon.terminate()
    assert_restart_invariants(ws, [PARTNER], "hub full")
    (payload,) = [n for n in ws.finals(PARTNER) if not n.endswith(".manifest.age")]
    assert data == ws.decrypt(PARTNER, payload)


@pytest.mark.slow
def test_stalled_hub_mid_upload_is_abandoned_and_retried(ws: Workspace) -> None:
    """The link stops forwarding part-way through an upload without closing: the daemon's
    I/O timeout (60 s) ends the attempt as a transient failure, the daemon stays up, and the
    retry over a working link leaves exactly one complete delivery and no partial."""
    data = csv_bytes(2, "stall") + b"s" * (6 << 20)
    with TcpProxy((ws.hub.host, ws.hub.port)) as proxy:
        main = ws.config_dir / "exchange.toml"
        text = main.read_text("utf-8")
        main.write_text(text.replace(f"port = {ws.hub.port}", f"port = {proxy.port}"), "utf-8")
        daemon = ws.start()
        try:
            daemon.wait_event("lane.reconciled")
            proxy.throttle(512 * 1024)  # slow enough to stall part-way through
            ws.drop("big", "big.csv", data)
            daemon.wait_event("dataset.recorded")
            time.sleep(2)
            proxy.stall()
            daemon.wait_event("delivery.failed", timeout=120)
            assert [] == ws.finals(PARTNER)
            proxy.stall(False)
            proxy.throttle(None)
            daemon.wait_for(lambda: len(ws.manifests(PARTNER)) == 1, 60, "delivered")
        finally:
            assert 0 == daemon.terminate()
    assert_restart_invariants(ws, [PARTNER], "stall")
    names = ws.inbox(PARTNER)
    assert 2 == len(names) and not [n for n in names if n.startswith(".")], names
    (payload,) = [n for n in names if not n.endswith(".manifest.age")]
    assert data == ws.decrypt(PARTNER, payload)


@contextlib.contextmanager
def full_inbox(inbox: Path) -> Iterator[None]:
    """A 1 MiB tmpfs over the partner's inbox, with the folder's owner and mode (sshd checks
    nothing below the chroot, but the daemon login must still be allowed to write)."""
    before = inbox.stat()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inbox)], check=True)
    try:
        os.chown(inbox, before.st_uid, before.st_gid)
        inbox.chmod(before.st_mode & 0o7777)
        yield
    finally:
        if subprocess.run(["umount", str(inbox)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(inbox)], check=True)


def _incidents(ws: Workspace, reason: str) -> int:
    with ws.ledger() as ledger:
        return len([i for i in ledger.incidents() if i.reason.value == reason])


def _descendants(root: int) -> list[int]:
    """Pids of every process below ``root`` (the hub listener's session processes and their
    privilege-separated children): all started by this test's hub."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_hub_stopped_mid_upload_and_started_again(ws: Workspace) -> None:
    """The hub's sshd and its sessions are stopped while a throttled upload is in progress;
    the partner sees no final file while it is down; when sshd is started again on the same
    port the delivery is retried and the partner ends with exactly one complete copy."""
    data = csv_bytes(2, "restart") + b"r" * (4 << 20)
    hub = ws.hub
    with TcpProxy((hub.host, hub.port)) as proxy:
        main = ws.config_dir / "exchange.toml"
        text = main.read_text("utf-8")
        main.write_text(text.replace(f"port = {hub.port}", f"port = {proxy.port}"), "utf-8")
        daemon = ws.start()
        try:
            daemon.wait_event("lane.reconciled")
            proxy.throttle(1 << 20)  # about four seconds for the payload
            ws.drop("big", "big.csv", data)
            daemon.wait_event("dataset.recorded")
            time.sleep(1.5)
            assert hub.process is not None
            sessions = _descendants(hub.process.pid)
            hub.stop()
            for pid in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(2)
            assert [] == ws.finals(PARTNER)
            assert daemon.process.poll() is None
            proxy.throttle(None)
            with hub.log_path.open("ab") as log:
                hub.process = subprocess.Popen(
                    ["/usr/sbin/sshd", "-D", "-e", "-f", str(hub.config_path)],
                    stdout=log,
                    stderr=log,
                )
            daemon.wait_for(lambda: len(ws.manifests(PARTNER)) == 1, 60, "delivered")
            assert sessions, "the upload's sshd session was running"
            assert {"delivery.failed", "delivery.outcome_unknown"} & set(daemon.names())
        finally:
            assert 0 == daemon.terminate()
    assert_restart_invariants(ws, [PARTNER], "hub restarted")
    names = ws.inbox(PARTNER)
    assert 2 == len(names) and not [n for n in names if n.startswith(".")], names
    (payload,) = [n for n in names if not n.endswith(".manifest.age")]
    assert data == ws.decrypt(PARTNER, payload)
