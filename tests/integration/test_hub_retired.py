"""Security review L5: a partner removed from the registry, in drop-in mode.

Its Unix account stays (with our GECOS comment) but no hub ``Match User`` block names it any
more, so without a deny block the system sshd would serve it with the system's defaults: no
chroot, no ForceCommand, passwords allowed. The drop-in must deny it outright.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import time
from pathlib import Path

import pytest

from exchange import hubconfig
from tests.support.sshd import Hub, free_port

pytestmark = pytest.mark.integration

REMOVED = "essex-police"


def _sshd_t(config: Path, user: str) -> dict[str, str]:
    result = subprocess.run(
        [str(hubconfig.SSHD), "-T", "-f", str(config), "-C", f"user={user},host=h,addr=192.0.2.7"],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.partition(" ")[::2] for line in result.stdout.splitlines())


def _remove_partner(hub: Hub) -> None:
    remaining = tuple(a for a in hub.spec.accounts if a.login != REMOVED)
    hubconfig.apply_hub(dataclasses.replace(hub.spec, accounts=remaining))


def _system_config(hub: Hub, tmp_path: Path, port: int) -> Path:
    """A permissive system sshd that includes the drop-in first, with its own key file that
    still holds the removed partner's key (an admin's copy, a stale ~/.ssh, ...)."""
    keys = tmp_path / "system-keys"
    keys.mkdir(mode=0o755)
    (keys / REMOVED).write_text(hub.login(REMOVED)[1] + "\n")
    (keys / REMOVED).chmod(0o644)
    main = tmp_path / "system_sshd_config"
    main.write_text(
        f"Include {hub.layout.drop_in}\n"
        f"HostKey {hub.layout.default_host_key}\n"
        f"ListenAddress 127.0.0.1:{port}\n"
        "PidFile none\n"
        "UsePAM no\n"
        "PasswordAuthentication yes\n"
        f"AuthorizedKeysFile {keys}/%u\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    return main


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_drop_in_denies_a_login_removed_from_the_registry(hub: Hub, tmp_path: Path) -> None:
    """sshd -T for the removed login shows it denied with every way in disabled; the logins
    still in the registry and the system's own users are unaffected."""
    _remove_partner(hub)
    main = _system_config(hub, tmp_path, free_port())

    removed = _sshd_t(main, REMOVED)
    kept = _sshd_t(main, "southend-uhft")
    admin = _sshd_t(main, "alice")

    assert removed["denyusers"] == "*"
    assert (removed["pubkeyauthentication"], removed["passwordauthentication"]) == ("no", "no")
    assert removed["kbdinteractiveauthentication"] == "no"
    assert removed["authorizedkeysfile"] == "none"
    assert removed["forcecommand"] == "/usr/sbin/nologin"
    assert "denyusers" not in kept
    assert kept["chrootdirectory"] == str(hub.partner_dir("southend-uhft"))
    assert "denyusers" not in admin and admin["passwordauthentication"] == "yes"
    assert f"Match User {REMOVED}\n" in hub.layout.drop_in.read_text()


def test_removed_login_cannot_log_in_through_the_system_sshd(hub: Hub, tmp_path: Path) -> None:
    """Even with its key still accepted by the system's own key file, the removed partner's
    login is refused (DenyUsers), while a current partner still gets its chrooted sftp."""
    _remove_partner(hub)
    port = free_port()
    main = _system_config(hub, tmp_path, port)
    (tmp_path / "system-keys" / "southend-uhft").write_text(hub.login("southend-uhft")[1] + "\n")
    log = tmp_path / "system-sshd.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(hubconfig.SSHD), "-D", "-e", "-f", str(main)], stderr=sink)
    try:
        system_hub = dataclasses.replace(hub, port=port, known_hosts=tmp_path / "known_hosts")
        system_hub.known_hosts.write_text(f"[127.0.0.1]:{port} {hub.host_public_keys[0]}\n")
        _wait_for_port(port)
        removed = system_hub.sftp_batch(REMOVED, "ls -1 /\n")
        kept = system_hub.sftp_batch("southend-uhft", "ls -1 /\n")
    finally:
        process.terminate()
        process.wait(timeout=10)

    text = log.read_text()
    assert removed.returncode != 0, text
    assert f"User {REMOVED} from 127.0.0.1 not allowed because listed in DenyUsers" in text
    assert f"Accepted publickey for {REMOVED}" not in text
    assert kept.returncode == 0, text
