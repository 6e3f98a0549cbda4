"""TESTPLAN B15: a configuration file that is not valid TOML (a syntax error or a duplicate key)
is refused with the file and the line named, and the daemon refuses to start on it.

The corpus is generated: for each kind of file (main, partner, agreement) and for several
positions in it, a broken line is inserted, or an existing key line is repeated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.config import load_config
from exchange.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
FILES = ("exchange.toml", "partners/southend-uhft.toml", "agreements/mash-referrals.toml")
BROKEN_LINES = ("= no key", "key = ", "[unclosed", 'title = "no end', "a = 1 b = 2")


def _key_lines(text: str) -> list[int]:
    """1-based numbers of one-line ``key = value`` lines (a scalar value, not an array)."""
    return [
        number
        for number, line in enumerate(text.splitlines(), 1)
        if re.fullmatch(r"[a-z_]+ = [^\[{]+", line)
    ]


def private_copy(folder: Path) -> None:
    """Drop group and other write bits: the loader refuses a config others could change (B21),
    and a checkout made under umask 002 has them."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o022)


def _cases() -> list[tuple[str, str, int]]:
    """(file, kind of damage, 1-based line the damage is on)."""
    cases = []
    for name in FILES:
        lines = (REPO / "config" / name).read_text("utf-8").splitlines()
        for i, _broken in enumerate(BROKEN_LINES):
            cases.append((name, f"syntax-{i}", 1 + (i * 7) % len(lines)))
        keys = _key_lines("\n".join(lines))
        cases.append((name, "duplicate", keys[-1] + 1))
    return cases


def _damage(config: Path, name: str, kind: str, line: int) -> None:
    path = config / name
    lines = path.read_text("utf-8").splitlines()
    if kind == "duplicate":
        # The repeated key goes just after the original: TOML says it may not be redefined.
        lines.insert(line - 1, lines[line - 2])
    else:
        lines.insert(line - 1, BROKEN_LINES[int(kind.split("-")[1])])
    path.write_text("\n".join(lines) + "\n", "utf-8")


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path) -> Path:
    """A copy of the repository's example configuration."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    private_copy(tmp_path / "config")
    return tmp_path / "config"


@pytest.mark.parametrize(("name", "kind", "line"), _cases())
def test_invalid_toml_is_refused_naming_file_and_line(
    config: Path, name: str, kind: str, line: int
) -> None:
    """Each damaged file is refused as invalid TOML, naming that file and the damaged line."""
    _damage(config, name, kind, line)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = [p for p in caught.value.problems if "invalid TOML" in p]
    assert name.split("/")[-1] in problem
    numbers = [int(n) for n in re.findall(r"line (\d+)", problem)]
    assert numbers, problem
    # A syntax error is reported on its line; TOML reports a duplicate key at the repeat.
    assert line == numbers[0], problem


@pytest.mark.parametrize("name", FILES)
def test_daemon_refuses_to_start_on_invalid_toml(config: Path, name: str) -> None:
    """``exchange run`` on a configuration with invalid TOML exits with the config error code
    (3) at once, names the file and writes no state (it never runs half-configured)."""
    _damage(config, name, "syntax-0", 2)
    done = subprocess.run(
        [sys.executable, "-m", "exchange", "run", "--config", str(config)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 3 == done.returncode, done.stderr
    assert name.split("/")[-1] in done.stderr
    assert "invalid TOML" in done.stderr
    assert not (config.parent / "state").exists()
