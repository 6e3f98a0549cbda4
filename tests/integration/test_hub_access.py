"""TESTPLAN F51 and issue 4: key-only SFTP logins, no shell, no forwarding, no TTY, strict kex."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import HubFactory
from tests.support.sshd import Hub, free_port, make_client_key

pytestmark = pytest.mark.integration


def test_no_shell_or_command(hub: Hub) -> None:
    """A command request runs internal-sftp instead, so no shell command ever executes."""
    marker = hub.root / "pwned"

    result = hub.ssh("southend-uhft", command=["id;", "touch", str(marker)])

    assert "uid=" not in result.stdout
    assert not marker.exists()
    assert "forced-command (config) 'internal-sftp" in hub.log_text()


def test_no_tty(hub: Hub) -> None:
    """PermitTTY no: a pseudo-terminal request is refused."""
    result = hub.ssh("southend-uhft", "-tt", command=["id"])

    assert "PTY allocation request failed" in result.stderr
    assert "uid=" not in result.stdout


def test_no_stdio_forwarding(hub: Hub) -> None:
    """DisableForwarding: ssh -W (a direct-tcpip channel) is administratively prohibited."""
    result = hub.ssh("southend-uhft", "-W", f"127.0.0.1:{hub.port}")

    assert result.returncode != 0
    assert "administratively prohibited" in result.stderr


def test_no_remote_forwarding(hub: Hub) -> None:
    """DisableForwarding: ssh -R is refused by the server."""
    result = hub.ssh(
        "southend-uhft",
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        f"127.0.0.1:{free_port()}:127.0.0.1:22",
    )

    assert result.returncode != 0
    assert "remote port forwarding failed" in result.stderr


def test_no_local_forwarding(hub: Hub) -> None:
    """ssh -N -L: the local listener opens but the hub refuses the tunnel; no bytes come back."""
    local_port = free_port()
    argv = ["ssh", *hub.ssh_options("southend-uhft"), "-p", str(hub.port), "-N"]
    argv += ["-L", f"127.0.0.1:{local_port}:127.0.0.1:{hub.port}", f"southend-uhft@{hub.host}"]
    client = subprocess.Popen(argv, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        received = _probe(local_port)
    finally:
        client.terminate()
        _, stderr = client.communicate(timeout=10)

    assert received == b""
    assert "administratively prohibited" in stderr


def _probe(port: int) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                return sock.recv(64)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_no_password_or_keyboard_interactive(hub: Hub) -> None:
    """Without a key, the server offers publickey only: no password prompt is possible."""
    result = hub.ssh(
        "southend-uhft",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        command=["true"],
    )

    assert result.returncode == 255
    assert "Permission denied (publickey)." in result.stderr


def test_wrong_key_is_refused(hub: Hub, tmp_path: Path) -> None:
    """A partner's login accepts only its pinned key, not another partner's nor a fresh one."""
    stranger, _ = make_client_key(tmp_path, "stranger")
    police_key, _ = hub.login("essex-police")

    for key in (stranger, police_key):
        argv = ["sftp", "-b", "-", *hub.ssh_options("southend-uhft", key), "-P", str(hub.port)]
        result = subprocess.run(
            [*argv, f"southend-uhft@{hub.host}"],
            input="pwd\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "Permission denied (publickey)" in result.stderr


def test_unknown_login_and_root_are_refused(hub: Hub) -> None:
    """Only hub logins are allowed (AllowUsers); root and others are refused even with a key."""
    for user in ("root", "nobody", "sshd"):
        argv = ["ssh", *hub.ssh_options("southend-uhft"), "-p", str(hub.port)]
        result = subprocess.run(
            [*argv, "-l", user, hub.host, "true"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 255
        assert re.search(rf"User {user} (from 127.0.0.1 )?not allowed because", hub.log_text())

    assert "User root from 127.0.0.1 not allowed because not listed in AllowUsers" in (
        hub.log_text()
    )


def test_strict_kex_is_offered_and_no_weak_algorithm(hub: Hub) -> None:
    """The server KEXINIT offers kex-strict-s-v00@openssh.com, AEAD ciphers only, no SHA-1."""
    result = hub.ssh("southend-uhft", "-vv", command=["true"])

    proposal = result.stderr.split("peer server KEXINIT proposal", 1)[1]
    lines = dict(
        line.removeprefix("debug2: ").split(": ", 1)
        for line in proposal.splitlines()[1:9]
        if ": " in line
    )
    assert "kex-strict-s-v00@openssh.com" in lines["KEX algorithms"].split(",")
    assert lines["host key algorithms"] == "ssh-ed25519"
    assert (
        lines["ciphers ctos"]
        == "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com"
    )
    for name in ("KEX algorithms", "ciphers ctos", "MACs ctos"):
        assert "cbc" not in lines[name]
        assert "sha1" not in lines[name]
    assert "kex: server->client cipher: chacha20-poly1305@openssh.com" in result.stderr


def test_withdrawn_partner_cannot_log_in_but_keeps_its_folder(hub_factory: HubFactory) -> None:
    """A disabled (withdrawn) login is refused while its folder and files stay on the hub."""
    hub = hub_factory(disabled=["essex-police"])
    kept = hub.partner_dir("essex-police") / "inbox"

    refused = hub.sftp_batch("essex-police", "pwd\n")
    other = hub.sftp_batch("southend-uhft", "pwd\n")
    daemon = hub.sftp_batch(hub.organisation, "ls /essex-police/inbox\n")

    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    assert (other.returncode, daemon.returncode) == (0, 0)
    assert kept.is_dir()


def test_max_auth_tries_ends_the_connection(hub: Hub, tmp_path: Path) -> None:
    """After MaxAuthTries failed keys the server drops the connection."""
    keys = [make_client_key(tmp_path, f"k{i}")[0] for i in range(5)]
    argv = ["ssh", "-F", "/dev/null", "-o", f"UserKnownHostsFile={hub.known_hosts}"]
    argv += ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-p", str(hub.port)]
    for key in keys:
        argv += ["-i", str(key)]

    result = subprocess.run(
        [*argv, f"southend-uhft@{hub.host}", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 255
    assert "Too many authentication failures" in result.stderr + hub.log_text()


def test_max_startups_sheds_a_flood_of_unauthenticated_connections(hub: Hub) -> None:
    """70 idle pre-auth connections: the first 10 get a banner, never more than 60 are served
    at once (MaxStartups 10:30:60), and a real login works again once the flood is gone."""
    sockets = [socket.create_connection((hub.host, hub.port), timeout=5) for _ in range(70)]
    try:
        answers = [_first_bytes(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()

    served = [answer.startswith(b"SSH-2.0-") for answer in answers]
    assert all(served[:10])
    assert sum(served) <= 60
    for _ in range(50):
        result = hub.sftp_batch("southend-uhft", "pwd\n")
        if result.returncode == 0:
            break
        time.sleep(0.1)
    assert result.returncode == 0, result.stderr


def _first_bytes(sock: socket.socket) -> bytes:
    try:
        return sock.recv(64)
    except (ConnectionResetError, TimeoutError):
        return b""
