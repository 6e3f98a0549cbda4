"""The ``new_workspace`` fixture gives a workspace in which keys generate and config check pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.cli import main


def test_fixture_workspace_is_usable(
    new_workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """keys generate and config check succeed in the fixture's workspace, as the README promises."""
    monkeypatch.chdir(new_workspace)
    assert 0 == main(["keys", "generate"])
    assert 0 == main(["config", "check"])
    assert "keys ok" in capsys.readouterr().out
