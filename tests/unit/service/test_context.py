"""The daemon's shared pieces: settings validation, the injected clock, crash points, and
the scheduler's wake-up jobs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from exchange.errors import UsageError
from exchange.scheduler import Wakeups
from exchange.service.context import Settings, ShiftedClock, clock_from_env, crash_point


class SteppingClock:
    """A clock whose monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.mono = 100.0

    def now(self) -> datetime:
        return datetime(2000, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono


def test_settings_refuse_nonsense() -> None:
    """Negative intervals, zero attempts and a cap below the base are refused."""
    with pytest.raises(UsageError, match="settle_seconds"):
        Settings(settle_seconds=-1)
    with pytest.raises(UsageError, match="max_attempts"):
        Settings(max_attempts=0)
    with pytest.raises(UsageError, match="retry base"):
        Settings(retry_base_seconds=10, retry_cap_seconds=5)
    assert 30 == Settings().retry_base.total_seconds()


def test_shifted_clock_starts_at_the_given_time_and_runs() -> None:
    """A shifted clock reads its start time, then advances with the monotonic clock."""
    base = SteppingClock()
    start = datetime(2026, 6, 7, 12, 0, tzinfo=UTC)
    clock = ShiftedClock(start, base)
    assert start == clock.now()
    base.mono += 90
    assert datetime(2026, 6, 7, 12, 1, 30, tzinfo=UTC) == clock.now()
    assert 190 == clock.monotonic()


def test_clock_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """EXCHANGE_FAKE_NOW sets the start (naive means UTC); garbage is a usage error."""
    monkeypatch.setenv("EXCHANGE_FAKE_NOW", "2026-06-07T12:00:00")
    now = clock_from_env().now()
    assert datetime(2026, 6, 7, 12, 0, tzinfo=UTC) <= now < datetime(2026, 6, 7, 12, 1, tzinfo=UTC)
    monkeypatch.setenv("EXCHANGE_FAKE_NOW", "next tuesday")
    with pytest.raises(UsageError, match="EXCHANGE_FAKE_NOW"):
        clock_from_env()


def test_crash_point_is_a_no_op_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without EXCHANGE_CRASH_AT, or naming another point, a crash point does nothing."""
    monkeypatch.delenv("EXCHANGE_CRASH_AT", raising=False)
    crash_point("delivery.after_intent")
    monkeypatch.setenv("EXCHANGE_CRASH_AT", "delivery.after_sent")
    crash_point("delivery.after_intent")


def test_wakeups_call_back_on_their_interval() -> None:
    """An interval job calls its callback repeatedly; a non-positive interval adds no job."""
    fired = threading.Event()
    calls: list[int] = []

    def callback() -> None:
        calls.append(1)
        if len(calls) >= 2:
            fired.set()

    wakeups = Wakeups()
    wakeups.every("tick", 0.05, callback)
    wakeups.every("never", 0, callback)
    assert ["tick"] == wakeups.jobs()
    wakeups.start()
    try:
        assert fired.wait(5)
    finally:
        wakeups.stop()
