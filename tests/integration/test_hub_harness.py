"""The sshd test harness itself: it starts a real hub that stock OpenSSH clients can use."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import HubFactory
from tests.support.sshd import HarnessError, Hub, output_lines, require_root

pytestmark = pytest.mark.integration


def test_partner_sees_only_its_own_folder(hub: Hub) -> None:
    """A partner logs in with stock sftp and its root holds exactly inbox, outbox and receipts."""
    result = hub.sftp_batch("southend-uhft", "pwd\nls -1a /\n")

    assert result.returncode == 0, result.stderr
    assert output_lines(result) == [
        "Remote working directory: /",
        "/.",
        "/..",
        "/inbox",
        "/outbox",
        "/receipts",
    ]


def test_daemon_sees_every_partner_folder(hub: Hub) -> None:
    """The organisation's daemon login is chrooted to the data root and sees one folder per partner."""
    result = hub.sftp_batch("essex-cc", "ls -1 /\n")

    assert result.returncode == 0, result.stderr
    assert sorted(output_lines(result)) == ["/essex-police", "/southend-uhft"]


def test_hub_object_describes_the_running_server(hub: Hub) -> None:
    """The fixture yields the address, pinned host keys, known_hosts and per-login keys."""
    with socket.create_connection((hub.host, hub.port), timeout=5) as sock:
        banner = sock.recv(64)

    assert banner.startswith(b"SSH-2.0-OpenSSH_")
    assert hub.host == "127.0.0.1"
    assert [line.split()[0] for line in hub.host_public_keys] == ["ssh-ed25519"]
    assert f"[127.0.0.1]:{hub.port} {hub.host_public_keys[0]}\n" == hub.known_hosts.read_text()
    key_path, public_line = hub.login("essex-police")
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert public_line.startswith("ssh-ed25519 AAAA")
    assert hub.partner_dir("essex-police") == hub.root / "data" / "essex-police"
    assert "Server listening on 127.0.0.1 port" in hub.log_text()


def test_factory_starts_a_hub_with_more_partners(hub_factory: HubFactory) -> None:
    """hub_factory builds a hub with any set of partners, each with its own chrooted folder."""
    hub = hub_factory(partners=["southend-uhft", "essex-police", "thurrock-council"])

    result = hub.sftp_batch("thurrock-council", "ls -1 /\n")

    assert result.returncode == 0, result.stderr
    assert (hub.partner_dir("thurrock-council") / "inbox").is_dir()


def test_hub_is_stopped_after_the_context(hub_factory: HubFactory) -> None:
    """Leaving the fixture stops sshd and removes the hub folder."""
    hub = hub_factory()
    hub.stop()

    assert hub.process is not None
    assert hub.process.poll() is not None
    with pytest.raises(OSError), socket.create_connection((hub.host, hub.port), timeout=2):
        pass


def test_sftp_log_relays_file_level_operations(hub_factory: HubFactory, tmp_path: Path) -> None:
    """With sftp_log, internal-sftp's file-level log lines reach log_text(), tagged by login."""
    hub = hub_factory(sftp_log=True)
    (hub.partner_dir("southend-uhft") / "inbox" / "d1.age").write_bytes(b"x")

    result = hub.sftp_batch("southend-uhft", f"get inbox/d1.age {tmp_path / 'd1'}\n")

    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 5
    while "sftp southend-uhft: internal-sftp" not in hub.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.search(
        r'sftp southend-uhft: internal-sftp\[\d+\]: open "/inbox/d1.age" flags READ', hub.log_text()
    )


def test_module_scoped_hub_serves_too(hub_module: Hub) -> None:
    """hub_module is the same kind of hub, shared by the tests of one module."""
    result = hub_module.sftp_batch("essex-police", "pwd\n")

    assert result.returncode == 0, result.stderr
    assert output_lines(result) == ["Remote working directory: /"]


def test_harness_fails_loudly_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root the harness raises with the reason; it never skips."""
    monkeypatch.setattr("os.geteuid", lambda: 1000)

    with pytest.raises(HarnessError, match="must run as root"):
        require_root()
