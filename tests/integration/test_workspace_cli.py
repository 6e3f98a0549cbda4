"""The foundation end to end through the real command line: init, keys, config check.

Each test runs ``python -m exchange`` in a subprocess, as a user or a script would, and checks
exit codes, output and the files left behind; stock ssh-keygen, age and openssl confirm that
our key files are what they claim to be.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "config"

pytestmark = pytest.mark.integration


def exchange(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EXCHANGE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        input=None if stdin is None else stdin.decode(),
        timeout=60,
        check=False,
    )


@pytest.fixture(name="workspace")
def fixture_workspace(tmp_path: Path) -> Path:
    """A workspace made by 'exchange init', with keys generated."""
    result = exchange("init", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    workspace = tmp_path / "w"
    result = exchange("keys", "generate", cwd=workspace)
    assert result.returncode == 0, result.stderr
    return workspace


def test_init_keys_show_check(workspace: Path) -> None:
    """init, keys generate, keys show and config check succeed in a fresh workspace."""
    show = exchange("keys", "show", cwd=workspace)
    assert show.returncode == 0, show.stderr
    assert "[keys]" in show.stdout and 'age_recipient = "age1' in show.stdout
    check = exchange("config", "check", cwd=workspace)
    assert check.returncode == 0, check.stderr
    assert "configuration valid: essex-cc (Essex County Council)" in check.stdout
    assert "keys ok" in check.stdout
    assert "no hub host key pinned yet" in check.stdout


def test_private_files_are_0600_in_0700_folder(workspace: Path) -> None:
    """Every private key file is mode 0600 and the keys folder 0700."""
    keys = workspace / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("age-identity.txt", "signing-ed25519.pem", "hub-ssh-ed25519"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    for name in ("spool", "quarantine", "inbox", "state"):
        assert stat.S_IMODE((workspace / name).stat().st_mode) == 0o700, name


@pytest.mark.parametrize("name", ["age-identity.txt", "signing-ed25519.pem", "hub-ssh-ed25519"])
def test_group_readable_key_is_refused(workspace: Path, name: str) -> None:
    """A private key made group-readable is refused with the chmod fix in the hint."""
    (workspace / "keys" / name).chmod(0o640)
    result = exchange("keys", "show", cwd=workspace)
    assert result.returncode == 4
    assert name in result.stderr
    assert "exchange: hint:" in result.stderr and "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_symlinked_key_is_refused(workspace: Path) -> None:
    """A private key file that is a symlink is refused, like OpenSSH StrictModes."""
    keys = workspace / "keys"
    (keys / "signing-ed25519.pem").rename(keys / "real.pem")
    (keys / "signing-ed25519.pem").symlink_to(keys / "real.pem")
    result = exchange("keys", "show", cwd=workspace)
    assert result.returncode == 4
    assert "signing-ed25519.pem" in result.stderr and "Traceback" not in result.stderr


def test_generate_never_overwrites(workspace: Path) -> None:
    """A second generate is refused; with --force the old keys are retired, not deleted."""
    before = (workspace / "keys" / "age-identity.txt").read_bytes()
    again = exchange("keys", "generate", cwd=workspace)
    assert again.returncode == 4
    assert "--force" in again.stderr
    assert before == (workspace / "keys" / "age-identity.txt").read_bytes()
    forced = exchange("keys", "generate", "--force", cwd=workspace)
    assert forced.returncode == 0, forced.stderr
    retired = list((workspace / "keys" / "retired").glob("age-identity.txt.*"))
    assert len(retired) == 1
    assert before == retired[0].read_bytes()
    assert before != (workspace / "keys" / "age-identity.txt").read_bytes()


def test_key_card_matches_stock_tools(workspace: Path, tmp_path: Path) -> None:
    """The card's fingerprints and keys agree with ssh-keygen, openssl and age reading our files."""
    card = exchange("keys", "show", "--json", cwd=workspace)
    assert card.returncode == 0, card.stderr
    import json

    values = json.loads(card.stdout)
    keys = workspace / "keys"
    ssh = subprocess.run(
        ["ssh-keygen", "-lf", str(keys / "hub-ssh-ed25519.pub")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert values["ssh_fingerprint"] == ssh.stdout.split()[1]
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(keys / "signing-ed25519.pem"), "-pubout", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert values["signing_key"] == "ed25519:" + base64.b64encode(der[-32:]).decode()
    plaintext = b"referral_id,received_date\nR-1,2026-11-25\n"
    encrypted = subprocess.run(
        ["age", "-r", values["age_recipient"]], input=plaintext, capture_output=True, check=True
    ).stdout
    decrypted = subprocess.run(
        ["age", "-d", "-i", str(keys / "age-identity.txt")],
        input=encrypted,
        capture_output=True,
        check=True,
    ).stdout
    assert plaintext == decrypted


def _example_workspace(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "config")
    return tmp_path


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "agreements/mash-referrals.toml",
            "purpose =",
            "purpse =",
            "config/agreements/mash-referrals.toml: purpse: unknown key",
        ),
        (
            "agreements/mash-referrals.toml",
            '"essex-police"]',
            '"essex-polic"]',
            "config/agreements/mash-referrals.toml: recipients[1]: unknown partner 'essex-polic'",
        ),
        (
            "agreements/missing-children-weekly.toml",
            '"0 7 * * MON"',
            '"0 7 * * MONDAYS"',
            "config/agreements/missing-children-weekly.toml: schedule.cron: invalid cron expression",
        ),
    ],
)
def test_bad_config_through_cli(
    tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    """A misspelled key, an unknown partner and a bad cron each exit 3 naming file and key, no traceback."""
    workspace = _example_workspace(tmp_path)
    path = workspace / "config" / file
    path.write_text(path.read_text().replace(old, new, 1))
    result = exchange("config", "check", cwd=workspace)
    assert result.returncode == 3
    assert f"exchange: error: {expected}" in result.stderr
    assert "exchange: hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_example_config_checks(tmp_path: Path) -> None:
    """The repository's example configuration passes config check, with one line per agreement."""
    workspace = _example_workspace(tmp_path)
    result = exchange("config", "check", "--json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    assert {"mash-referrals", "missing-children-weekly"} == {a["id"] for a in report["agreements"]}
    assert not report["keys_ok"]  # the example ships public keys only


def test_config_flag_and_env(tmp_path: Path) -> None:
    """--config and $EXCHANGE_CONFIG both select the configuration folder."""
    workspace = _example_workspace(tmp_path)
    by_flag = exchange(
        "config", "check", "--config", str(workspace / "config"), cwd=tmp_path.parent
    )
    assert by_flag.returncode == 0, by_flag.stderr
    env = {**os.environ, "EXCHANGE_CONFIG": str(workspace / "config")}
    by_env = subprocess.run(
        [sys.executable, "-m", "exchange", "config", "check"],
        cwd=tmp_path.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert by_env.returncode == 0, by_env.stderr


def test_init_refuses_existing_workspace(workspace: Path) -> None:
    """init never overwrites an existing workspace's configuration."""
    result = exchange("init", str(workspace), cwd=workspace)
    assert result.returncode == 2
    assert "a workspace already exists here" in result.stderr
