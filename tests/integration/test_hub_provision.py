"""TESTPLAN F53 and issue 4 item 1: the provisioned tree and the generated sshd configuration."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from exchange import hubconfig
from exchange.errors import PrerequisiteError
from exchange.hubconfig import HubAccount, HubLayout
from tests.support.sshd import Hub, free_port, output_lines

pytestmark = pytest.mark.integration


def _sshd_t(config: Path, user: str) -> dict[str, str]:
    """``sshd -T`` for a connection by ``user``: the effective settings, key -> value."""
    result = subprocess.run(
        [
            str(hubconfig.SSHD),
            "-T",
            "-f",
            str(config),
            "-C",
            f"user={user},host=hub.example,addr=192.0.2.7",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    settings: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        settings[key] = f"{settings[key]}\n{value}" if key in settings else value
    return settings


def _assert_hardened(settings: dict[str, str]) -> None:
    expected = {
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "permitrootlogin": "no",
        "pubkeyauthentication": "yes",
        "permittty": "no",
        "permittunnel": "no",
        "allowtcpforwarding": "no",
        "allowagentforwarding": "no",
        "allowstreamlocalforwarding": "no",
        "x11forwarding": "no",
        "authenticationmethods": "publickey",
        "maxauthtries": "3",
        "pubkeyacceptedalgorithms": "ssh-ed25519,sk-ssh-ed25519@openssh.com",
    }
    assert {key: settings[key] for key in expected} == expected
    for key in ("ciphers", "macs", "kexalgorithms"):
        assert "cbc" not in settings[key]
        assert "sha1" not in settings[key]
    assert settings["ciphers"] == ",".join(hubconfig.CIPHERS)
    assert settings["macs"] == ",".join(hubconfig.MACS)
    assert settings["kexalgorithms"] == ",".join(hubconfig.KEX_ALGORITHMS)


def test_sshd_t_for_a_partner(hub: Hub) -> None:
    """sshd -T of the standalone config, for a partner: chroot, forced internal-sftp, hardening."""
    settings = _sshd_t(hub.config_path, "southend-uhft")

    _assert_hardened(settings)
    assert settings["chrootdirectory"] == str(hub.partner_dir("southend-uhft"))
    assert settings["forcecommand"] == (
        "internal-sftp -d / -P symlink,hardlink,setstat,fsetstat,lsetstat -u 0027 -l INFO"
    )
    assert settings["authorizedkeysfile"] == f"{hub.layout.authorized_keys_dir}/%u"
    assert settings["allowusers"].split("\n") == ["essex-cc", "southend-uhft", "essex-police"]
    assert settings["logingracetime"] == "30"
    assert settings["maxstartups"] == "10:30:60"
    assert settings["disableforwarding"] == "yes"
    assert settings["listenaddress"] == f"127.0.0.1:{hub.port}"


def test_sshd_t_for_the_daemon(hub: Hub) -> None:
    """The daemon login is chrooted to the data root and may not make links either."""
    settings = _sshd_t(hub.config_path, "essex-cc")

    _assert_hardened(settings)
    assert settings["chrootdirectory"] == str(hub.layout.data)
    assert settings["forcecommand"] == "internal-sftp -d / -P symlink,hardlink -u 0027 -l INFO"


def _system_config(hub: Hub, tmp_path: Path) -> Path:
    """A Debian-like system sshd_config that includes the drop-in first and allows passwords."""
    main = tmp_path / "system_sshd_config"
    main.write_text(
        f"Include {hub.layout.drop_in}\n"
        f"HostKey {hub.layout.default_host_key}\n"
        "PasswordAuthentication yes\n"
        "KbdInteractiveAuthentication yes\n"
        "UsePAM yes\n"
    )
    return main


def test_drop_in_for_the_system_sshd(hub: Hub, tmp_path: Path) -> None:
    """The drop-in, included by a Debian-style main config, hardens hub logins only."""
    main = _system_config(hub, tmp_path)

    partner = _sshd_t(main, "southend-uhft")
    admin = _sshd_t(main, "alice")

    _assert_hardened(partner)
    assert partner["chrootdirectory"] == str(hub.partner_dir("southend-uhft"))
    assert partner["forcecommand"].startswith("internal-sftp -d / -P symlink,hardlink")
    # Other logins of the system keep their own settings (apart from the algorithms).
    assert (admin["passwordauthentication"], admin["chrootdirectory"]) == ("yes", "none")
    assert "forcecommand" not in admin or admin["forcecommand"] == "none"


def test_chroot_paths_satisfy_sshd(hub: Hub) -> None:
    """Every component of every chroot is a root-owned directory writable by root only."""
    chroots = [hub.layout.data, *(hub.partner_dir(p.folder) for p in hub.spec.partners)]
    for chroot in chroots:
        for component in [chroot, *chroot.parents]:
            info = component.lstat()
            assert stat.S_ISDIR(info.st_mode), component
            assert info.st_uid == 0, component
            assert info.st_mode & 0o022 == 0, component


def test_tree_matches_the_directory_plan(hub: Hub) -> None:
    """Owners, groups and modes on disk are exactly those of directory_plan()."""
    for entry in hubconfig.directory_plan(hub.spec):
        info = entry.path.lstat()
        actual = (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name)
        assert (actual, stat.S_IMODE(info.st_mode)) == ((entry.owner, entry.group), entry.mode)


def test_authorized_keys_are_root_owned_with_restrict(hub: Hub) -> None:
    """Each login's authorized_keys is root-owned 0644, outside every chroot, keys restricted."""
    path = hub.layout.authorized_keys_dir / "southend-uhft"
    info = path.stat()
    key_type, blob = hub.login("southend-uhft")[1].split()[:2]

    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o644)
    assert not path.is_relative_to(hub.layout.data)
    assert f"restrict {key_type} {blob} exchange:southend-uhft" in path.read_text().splitlines()


def test_reprovisioning_is_idempotent_and_repairs_drift(hub: Hub) -> None:
    """Running provision again changes nothing, repairs modes, and sshd keeps serving."""
    files = [hub.config_path, hub.layout.drop_in, hub.layout.authorized_keys_dir / "essex-cc"]
    before = {path: (path.read_text(), path.stat().st_mtime_ns) for path in files}
    inbox = hub.partner_dir("essex-police") / "inbox"
    inbox.chmod(0o2777)

    report = hubconfig.apply_hub(hub.spec)

    assert report.created_users == ()
    assert {path: (path.read_text(), path.stat().st_mtime_ns) for path in files} == before
    assert stat.S_IMODE(inbox.stat().st_mode) == 0o2750
    assert hub.sftp_batch("essex-police", "ls inbox\n").returncode == 0


def test_disabling_a_partner_empties_its_keys_and_keeps_its_folder(
    hub: Hub, tmp_path: Path
) -> None:
    """Re-provisioning with a withdrawn partner disables the login but keeps the folder."""
    withdrawn = tuple(
        replace(a, enabled=False) if a.login == "essex-police" else a for a in hub.spec.accounts
    )
    spec = replace(hub.spec, accounts=withdrawn)

    report = hubconfig.apply_hub(spec)

    keys = (hub.layout.authorized_keys_dir / "essex-police").read_text()
    settings = _sshd_t(hub.config_path, "essex-police")
    system = _sshd_t(_system_config(hub, tmp_path), "essex-police")
    assert report.disabled == ("essex-police",)
    assert "ssh-ed25519" not in keys
    assert settings["denyusers"] == "essex-police"
    assert "essex-police" not in settings["allowusers"]
    assert (system["pubkeyauthentication"], system["authorizedkeysfile"]) == ("no", "none")
    assert (hub.partner_dir("essex-police") / "inbox").is_dir()


def test_foreign_unix_user_is_never_taken_over(hub: Hub) -> None:
    """A partner whose login names an existing non-hub user (e.g. 'mail') is refused."""
    existing = next(
        p.pw_name
        for p in pwd.getpwall()
        if p.pw_gecos != hubconfig.GECOS
        and p.pw_name.isalpha()
        and p.pw_name not in ("root", "daemon", "bin", "sys", "nobody", "sshd")
    )
    key = hub.login("southend-uhft")[1]
    spec = replace(hub.spec, accounts=(*hub.spec.accounts, HubAccount(existing, existing, (key,))))

    with pytest.raises(PrerequisiteError, match=f"unix user '{existing}' already exists"):
        hubconfig.apply_hub(spec)

    assert not HubLayout(hub.root).partner_dir(existing).exists()


def test_a_link_in_place_of_a_folder_is_refused(hub: Hub, tmp_path: Path) -> None:
    """If a hub folder has been replaced by a symlink, provisioning refuses instead of following it."""
    outbox = hub.partner_dir("essex-police") / "outbox"
    outbox.rmdir()
    outbox.symlink_to(tmp_path)

    with pytest.raises(PrerequisiteError, match="expected a directory"):
        hubconfig.apply_hub(hub.spec)

    assert stat.S_IMODE(tmp_path.stat().st_mode) != 0o2770
    assert os.path.islink(outbox)


def test_drop_in_serves_partners_through_a_system_style_sshd(hub: Hub, tmp_path: Path) -> None:
    """A second sshd whose main config only includes the drop-in chroots partners the same way."""
    port = free_port()
    main = tmp_path / "system_sshd_config"
    main.write_text(
        f"Include {hub.layout.drop_in}\n"
        f"HostKey {hub.layout.default_host_key}\n"
        f"ListenAddress 127.0.0.1:{port}\n"
        "PidFile none\n"
        "UsePAM no\n"
        # Debian's default; a subsystem must exist for ForceCommand to take over the request.
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    log = tmp_path / "system-sshd.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(hubconfig.SSHD), "-D", "-e", "-f", str(main)], stderr=sink)
    try:
        system_hub = dataclasses.replace(hub, port=port, known_hosts=tmp_path / "known_hosts")
        system_hub.known_hosts.write_text(f"[127.0.0.1]:{port} {hub.host_public_keys[0]}\n")
        _wait_for_port(port)
        partner = system_hub.sftp_batch("southend-uhft", "ls -1 /\n")
        link = system_hub.sftp_batch("southend-uhft", "symlink inbox receipts/x\n")
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert partner.returncode == 0, log.read_text()
    assert output_lines(partner) == ["/inbox", "/outbox", "/receipts"]
    assert link.returncode != 0
    assert "Accepted publickey for southend-uhft" in log.read_text()


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


def test_partner_dropped_from_the_registry_loses_its_keys(hub: Hub) -> None:
    """Re-provisioning without a partner removes its authorized_keys and its login, keeps its
    folder, and the partner can no longer log in."""
    remaining = tuple(a for a in hub.spec.accounts if a.login != "essex-police")
    hubconfig.apply_hub(dataclasses.replace(hub.spec, accounts=remaining))
    reload_sshd = hub.process
    assert reload_sshd is not None
    reload_sshd.send_signal(signal.SIGHUP)
    _wait_for_port(hub.port)

    result = hub.sftp_batch("essex-police", "pwd\n")

    assert not (hub.layout.authorized_keys_dir / "essex-police").exists()
    assert "essex-police" not in _sshd_t(hub.config_path, "essex-police")["allowusers"]
    assert result.returncode != 0
    assert (hub.partner_dir("essex-police") / "inbox").is_dir()


def test_existing_group_without_user_is_not_taken_over(hub: Hub) -> None:
    """A partner whose login names an existing group (but no user) is refused, not merged."""
    name = "exch-grp-only"
    if subprocess.run(["getent", "group", name], capture_output=True, check=False).returncode:
        subprocess.run(["groupadd", "--system", name], check=True)
    key = hub.login("southend-uhft")[1]
    spec = dataclasses.replace(
        hub.spec, accounts=(*hub.spec.accounts, HubAccount(name, name, (key,)))
    )

    with pytest.raises(PrerequisiteError, match=f"useradd {name} failed"):
        hubconfig.apply_hub(spec)

    with pytest.raises(KeyError):
        pwd.getpwnam(name)
