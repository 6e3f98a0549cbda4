"""Logging: only allow-listed fields reach the output, and outside text cannot break a line."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from exchange import log


def _configured_stream() -> io.StringIO:
    stream = io.StringIO()
    log.configure("info", "json", stream=stream)
    return stream


def test_unknown_fields_are_dropped() -> None:
    """A field not on the allow-list (such as a CSV cell) never reaches the log."""
    stream = _configured_stream()
    structlog.get_logger().info(
        "intake.refused", agreement="mash-referrals", cells=["Jane Doe", "1980-01-01"]
    )
    line = json.loads(stream.getvalue())
    assert line["event"] == "intake.refused"
    assert line["agreement"] == "mash-referrals"
    assert "cells" not in line
    assert "Jane Doe" not in stream.getvalue()


def test_hostile_file_name_is_escaped() -> None:
    """A file name with a newline and an escape sequence stays on one line, escaped."""
    stream = _configured_stream()
    structlog.get_logger().warning("intake.refused", file='bad\nname\x1b[31m".csv')
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert "\x1b" not in text
    assert "bad\\nname\\x1b[31m" in json.loads(text)["file"]


def test_bytes_names_are_escaped() -> None:
    """A non-UTF-8 name from the kernel is rendered with backslash escapes."""
    assert log.escape_bytes(b"caf\xe9.csv") == "caf\\xe9.csv"


def test_level_filter() -> None:
    """Debug lines are not written at info level."""
    stream = _configured_stream()
    structlog.get_logger().debug("noise")
    assert stream.getvalue() == ""


def test_default_stream_follows_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit stream, lines go to the current sys.stderr, not the one at configure time."""
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.configure("info", "json")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger().info("delivery.sent", partner="essex-police")
    assert "delivery.sent" in second.getvalue()
