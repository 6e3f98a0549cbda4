"""The no-skip plugin turns a skip into a failure when CI asks for it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(("disallow", "expected"), [("1", {"failed": 1}), ("", {"skipped": 1})])
def test_skip_fails_when_disallowed(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    disallow: str,
    expected: dict[str, int],
) -> None:
    """A skipped test counts as failed with EXCHANGE_DISALLOW_SKIP=1 and as skipped otherwise."""
    monkeypatch.setenv("EXCHANGE_DISALLOW_SKIP", disallow)
    pytester.makepyfile("import pytest\n\ndef test_x():\n    pytest.skip('no tool')\n")
    result = pytester.runpytest("-p", "tests.support.noskip")
    result.assert_outcomes(**expected)
