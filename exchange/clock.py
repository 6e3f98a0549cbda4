"""Time as a value passed in: the ``Clock`` port and the one implementation that reads the clock.

Rule: nothing but :class:`SystemClock` reads the time. The pure core takes ``now`` as an
argument; the shell gets it from an injected ``Clock``, so tests move time with a fake clock
instead of sleeping, and stability checks use the monotonic clock, which a wall-clock jump
cannot move (TESTPLAN D35).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences mean anything."""
        ...


class SystemClock:
    """The real clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
