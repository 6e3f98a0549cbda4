"""A pytest plugin: with EXCHANGE_DISALLOW_SKIP=1 (as CI sets it) a skipped test fails.

A skip hides a path that was never proven; in CI every stock tool is installed, so a skip
there means something is missing from .ci/run (restic's SkipDisallowed, in pytest form).
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("EXCHANGE_DISALLOW_SKIP") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
    ):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = (
            f"skipped, and skips are not allowed here (EXCHANGE_DISALLOW_SKIP=1): {reason}"
        )
