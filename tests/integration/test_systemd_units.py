"""The shipped systemd files, checked by systemd's own tools: ``systemd-analyze verify`` and
``security``, ``systemd-sysusers`` and ``systemd-tmpfiles``, all against a scratch root so
nothing on this machine changes.

The tools come with Debian's ``systemd`` package. They are required, not optional: a machine
without them fails these tests rather than skipping them (CI installs the package).
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from exchange.ops import WORKSPACE_FOLDERS

pytestmark = pytest.mark.integration

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found is not None, f"{name} is missing: install Debian's 'systemd' package"
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text("utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture(name="scratch_root")
def fixture_scratch_root(tmp_path: Path) -> Path:
    """A root with the system's stock units, our units installed, and a stand-in executable at
    each ExecStart/ExecReload path (verify checks that they exist and are executable)."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    installed = root / "etc/systemd/system"
    installed.mkdir(parents=True)
    for unit in UNITS.glob("*.service"):
        shutil.copyfile(unit, installed / unit.name)
        for key in ("ExecStart", "ExecReload"):
            for command in _settings(unit).get(key, []):
                program = root / command.split()[0].lstrip("-@:+!").lstrip("/")
                program.parent.mkdir(parents=True, exist_ok=True)
                program.write_text("#!/bin/sh\nexit 0\n", "utf-8")
                program.chmod(0o755)
    return root


@pytest.mark.parametrize(
    "name", ["exchange.service", "exchange-hub.service", "exchange-metrics.service"]
)
def test_unit_passes_systemd_analyze_verify_without_warnings(scratch_root: Path, name: str) -> None:
    """systemd-analyze verify accepts the unit as shipped, with no warning about any key."""
    result = _run(
        _tool("systemd-analyze"), "verify", f"--root={scratch_root}", f"/etc/systemd/system/{name}"
    )
    assert (0, "", "") == (result.returncode, result.stdout, result.stderr)


def test_verify_would_catch_a_missing_executable(scratch_root: Path) -> None:
    """The verify check above is real: without the ExecStart program it fails."""
    (scratch_root / "opt/exchange/bin/exchange").unlink()
    result = _run(
        _tool("systemd-analyze"),
        "verify",
        f"--root={scratch_root}",
        "/etc/systemd/system/exchange.service",
    )
    assert 0 != result.returncode
    assert "/opt/exchange/bin/exchange is not executable" in result.stderr


@pytest.mark.parametrize("name", ["exchange.service", "exchange-metrics.service"])
def test_unit_exposure_is_at_most_two(name: str) -> None:
    """systemd-analyze security rates the daemon (and the metrics) unit 2.0 or lower
    (offline, as shipped)."""
    result = _run(_tool("systemd-analyze"), "security", "--offline=yes", str(UNITS / name))
    assert 0 == result.returncode, result.stderr
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d)", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_daemon_unit_speaks_notify_and_never_dumps_core() -> None:
    """The daemon unit is Type=notify with a watchdog, restarts on failure, runs as its own
    user, writes only to the workspace and allows no core dumps."""
    settings = _settings(UNITS / "exchange.service")
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "Restart": ["on-failure"],
        "LimitCORE": ["0"],
        "User": ["exchange"],
        "ProtectSystem": ["strict"],
        "ReadWritePaths": ["/srv/exchange"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
    }
    assert expected == {key: settings.get(key) for key in expected}
    assert settings["WatchdogSec"] != ["0"]


def test_sysusers_snippet_creates_the_service_user(tmp_path: Path) -> None:
    """systemd-sysusers makes a system user and group 'exchange' with no login shell."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        (root / "etc" / name).write_text("", "utf-8")
    result = _run(
        _tool("systemd-sysusers"), f"--root={root}", str(UNITS / "exchange.sysusers.conf")
    )
    assert 0 == result.returncode, result.stderr
    (user,) = (root / "etc/passwd").read_text("utf-8").splitlines()
    name, _, uid, gid, _, home, shell = user.split(":")
    assert ("exchange", "/srv/exchange", "/usr/sbin/nologin") == (name, home, shell)
    assert int(uid) < 1000  # a system user
    assert [f"exchange:x:{gid}:"] == (root / "etc/group").read_text("utf-8").splitlines()


def test_tmpfiles_snippet_creates_the_workspace_with_private_modes(tmp_path: Path) -> None:
    """systemd-tmpfiles creates the workspace folders with the modes `exchange init` uses;
    keys, spool, quarantine, inbox and state are for the service user only."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("exchange:x:990:990::/srv/exchange:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("exchange:x:990:\n")
    result = _run(
        _tool("systemd-tmpfiles"),
        f"--root={root}",
        "--create",
        str(UNITS / "exchange.tmpfiles.conf"),
    )
    assert 0 == result.returncode, result.stderr
    workspace = root / "srv/exchange"
    modes = {
        str(p.relative_to(workspace)): stat.S_IMODE(p.stat().st_mode)
        for p in [workspace, *workspace.rglob("*")]
    }
    assert {".": 0o750, **WORKSPACE_FOLDERS} == modes
    assert {990} == {p.stat().st_uid for p in [workspace, *workspace.rglob("*")]}
