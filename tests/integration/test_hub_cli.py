"""``exchange hub provision`` and ``exchange hub run`` end to end, from a real workspace."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from exchange import cli, hubconfig
from exchange.hubconfig import HubLayout
from tests.support.sshd import HUB_BASE, free_port, make_client_key, require_root

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARTNERS = ("southend-uhft", "essex-police")


@pytest.fixture(name="workspace")
def fixture_workspace(tmp_path: Path) -> Path:
    """A workspace made by 'exchange init' + 'keys generate', with two partners whose hub
    keys are fresh client keys (private halves in tmp_path/clients)."""
    require_root()
    folder = tmp_path / "ws"
    assert cli.main(["init", str(folder)]) == 0
    assert cli.main(["keys", "generate", "--config", str(folder / "config")]) == 0
    clients = tmp_path / "clients"
    clients.mkdir()
    for partner in PARTNERS:
        _, public = make_client_key(clients, partner)
        text = (REPO / "config" / "partners" / f"{partner}.toml").read_text()
        text = re.sub(r'ssh_public_key = "[^"]*"', f'ssh_public_key = "{public}"', text)
        (folder / "config" / "partners" / f"{partner}.toml").write_text(text)
    return folder


@pytest.fixture(name="hub_root")
def fixture_hub_root() -> Iterator[Path]:
    """An empty hub folder under a root-owned parent, removed afterwards."""
    require_root()
    HUB_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cli-", dir=HUB_BASE)) / "hub"
    root.parent.chmod(0o755)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


def _withdraw(workspace: Path, partner: str, notice: date) -> None:
    path = workspace / "config" / "partners" / f"{partner}.toml"
    text = path.read_text().replace(
        "\n[keys]", f"withdrawal_notice = {notice.isoformat()}\n\n[keys]"
    )
    path.write_text(text)


def test_provision_builds_the_hub_from_the_registry(
    workspace: Path, hub_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """provision makes one folder and login per partner plus our daemon login, and prints the
    host key to pin."""
    code = cli.main(
        ["hub", "provision", "--root", str(hub_root), "--config", str(workspace / "config")]
    )

    output = capsys.readouterr().out
    layout = HubLayout(hub_root)
    assert code == 0
    for partner in PARTNERS:
        assert (layout.partner_dir(partner) / "inbox").is_dir()
        key = (workspace.parent / "clients" / f"{partner}_ed25519.pub").read_text().split()[1]
        assert key in (layout.authorized_keys_dir / partner).read_text()
    own = (workspace / "keys" / "hub-ssh-ed25519.pub").read_text().split()[1]
    assert own in (layout.authorized_keys_dir / "essex-cc").read_text()
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", f"{layout.default_host_key}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert fingerprint in output
    assert "ssh-ed25519 AAAA" in output


def test_provision_twice_is_idempotent(
    workspace: Path, hub_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second provision run leaves the generated files byte for byte as they were."""
    argv = ["hub", "provision", "--root", str(hub_root), "--config", str(workspace / "config")]
    assert cli.main(argv) == 0
    layout = HubLayout(hub_root)
    files = [layout.sshd_config, layout.drop_in, layout.default_host_key]
    before = [path.read_bytes() for path in files]

    assert cli.main(argv) == 0

    assert [path.read_bytes() for path in files] == before
    assert "created unix login" not in capsys.readouterr().out.split("hub provisioned", 2)[2]


def test_withdrawal_disables_the_login_after_28_days(
    workspace: Path, hub_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A notice 28 days old disables the login (folder kept); a notice 27 days old does not."""
    _withdraw(workspace, "essex-police", date.today() - timedelta(days=28))
    _withdraw(workspace, "southend-uhft", date.today() - timedelta(days=27))

    code = cli.main(
        ["hub", "provision", "--root", str(hub_root), "--config", str(workspace / "config")]
    )

    layout = HubLayout(hub_root)
    config = layout.sshd_config.read_text()
    assert code == 0
    assert "login essex-police disabled" in capsys.readouterr().out
    assert "DenyUsers essex-police\n" in config
    assert "ssh-ed25519" not in (layout.authorized_keys_dir / "essex-police").read_text()
    assert "ssh-ed25519" in (layout.authorized_keys_dir / "southend-uhft").read_text()
    assert (layout.partner_dir("essex-police") / "inbox").is_dir()


def test_refuses_when_not_root(
    workspace: Path,
    hub_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not root: a clear prerequisite error (exit 9), nothing created."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    for action in (["provision"], ["run", "--listen", "127.0.0.1:2222"]):
        code = cli.main(
            ["hub", *action, "--root", str(hub_root), "--config", str(workspace / "config")]
        )
        assert code == 9
        assert "must be provisioned and run as root" in capsys.readouterr().err

    assert not hub_root.exists()


def test_run_refuses_without_sshd(
    workspace: Path,
    hub_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No /usr/sbin/sshd: exit 9 and a hint naming the openssh-server package."""
    monkeypatch.setattr(hubconfig.spec, "SSHD", Path("/nonexistent/sbin/sshd"))

    code = cli.main(
        [
            "hub",
            "run",
            "--listen",
            "127.0.0.1:2222",
            "--root",
            str(hub_root),
            "--config",
            str(workspace / "config"),
        ]
    )

    err = capsys.readouterr().err
    assert code == 9
    assert "error: /nonexistent/sbin/sshd not found" in err
    assert "install the openssh-server package" in err


@pytest.mark.parametrize(
    ("mode", "problem"),
    [(0o700, "hub logins cannot pass through this folder"), (0o775, "not writable by group")],
)
def test_provision_refuses_a_root_sshd_would_reject(
    workspace: Path,
    hub_root: Path,
    capsys: pytest.CaptureFixture[str],
    mode: int,
    problem: str,
) -> None:
    """A parent folder that is group-writable or not searchable is refused before any change."""
    hub_root.parent.chmod(mode)

    code = cli.main(
        ["hub", "provision", "--root", str(hub_root), "--config", str(workspace / "config")]
    )

    assert code == 9
    assert problem in capsys.readouterr().err
    assert not hub_root.exists()


@pytest.mark.parametrize("listen", ["2222", "127.0.0.1:", "127.0.0.1:99999", "::1:22"])
def test_run_refuses_a_bad_listen_address(
    workspace: Path, hub_root: Path, capsys: pytest.CaptureFixture[str], listen: str
) -> None:
    """--listen must be ADDR:PORT (or [V6]:PORT): a usage error, exit 2."""
    code = cli.main(["hub", "run", "--listen", listen, "--root", str(hub_root)])

    assert code == 2
    assert "--listen" in capsys.readouterr().err


def _wait_for_banner(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(32).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("exchange hub run did not start sshd")


def test_run_serves_partners_normalises_modes_and_stops_on_sigterm(
    workspace: Path, hub_root: Path, tmp_path: Path
) -> None:
    """hub run starts sshd with the pinned-key fingerprint printed, partners log in with stock
    sftp, a 0600 upload becomes readable by the daemon, file operations are logged, and
    SIGTERM ends it with exit 0, leaving no log sockets behind."""
    port = free_port()
    argv = [sys.executable, "-m", "exchange", "hub", "run", "--listen", f"127.0.0.1:{port}"]
    argv += ["--root", str(hub_root), "--config", str(workspace / "config")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_banner(port, process)
        public = (
            HubLayout(hub_root).default_host_key.parent / "ssh_host_ed25519_key.pub"
        ).read_text()
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(public.split()[:2])}\n")
        receipt = tmp_path / "r1.sig"
        receipt.write_bytes(b"signed receipt\n")
        receipt.chmod(0o600)
        put = _sftp(
            known_hosts,
            port,
            "essex-police",
            tmp_path / "clients",
            f"put {receipt} receipts/r1.sig\n",
        )
        collected = tmp_path / "collected"
        got = None
        for _ in range(50):
            got = _sftp(
                known_hosts,
                port,
                "essex-cc",
                workspace / "keys",
                f"get /essex-police/receipts/r1.sig {collected}\n",
            )
            if got.returncode == 0:
                break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)

    assert put.returncode == 0, (put.stderr, err)
    assert got is not None and got.returncode == 0, got
    assert collected.read_bytes() == b"signed receipt\n"
    assert process.returncode == 0, err
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(HubLayout(hub_root).default_host_key) + ".pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert fingerprint in out
    assert "Received signal 15; terminating." in err
    assert re.search(
        r'sftp essex-cc: internal-sftp\[\d+\]: open "/essex-police/receipts/r1.sig"', err
    )
    assert not (HubLayout(hub_root).partner_dir("essex-police") / "dev").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def _sftp(
    known_hosts: Path, port: int, login: str, key_dir: Path, commands: str
) -> subprocess.CompletedProcess[str]:
    key = key_dir / ("hub-ssh-ed25519" if login == "essex-cc" else f"{login}_ed25519")
    argv = ["sftp", "-b", "-", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes"]
    argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", "BatchMode=yes", "-P", str(port), f"{login}@127.0.0.1"]
    return subprocess.run(
        argv, input=commands, capture_output=True, text=True, timeout=60, check=False
    )


def test_run_passes_sighup_to_sshd_and_keeps_serving(workspace: Path, hub_root: Path) -> None:
    """SIGHUP makes sshd re-read its config; hub run keeps going and still exits 0 on SIGTERM."""
    port = free_port()
    argv = [sys.executable, "-m", "exchange", "hub", "run", "--listen", f"127.0.0.1:{port}"]
    argv += ["--root", str(hub_root), "--config", str(workspace / "config")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_banner(port, process)
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        _wait_for_banner(port, process)
        still_running = process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)

    assert still_running
    assert "Received SIGHUP; restarting." in err
    assert process.returncode == 0, err


def test_run_fails_clearly_when_the_address_is_taken(workspace: Path, hub_root: Path) -> None:
    """If sshd cannot bind, hub run ends with exit 9 and sshd's own reason on stderr."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "exchange", "hub", "run", "--listen", f"127.0.0.1:{port}"]
        argv += ["--root", str(hub_root), "--config", str(workspace / "config")]

        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 9
    assert "Address already in use" in result.stderr
    assert "exchange: error: sshd exited by itself" in result.stderr
