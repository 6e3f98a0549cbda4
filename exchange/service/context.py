"""What every part of the daemon shares: its settings, the open ledger, keys, the clock, and
the named crash points.

Rules:

1. Crash points are no-ops unless ``EXCHANGE_CRASH_AT`` names one (tests only): then the
   process kills itself with ``SIGKILL`` at that step, exactly like ``kill -9``, so the
   restart tests see what a power cut or an OOM kill would leave (docs/DESIGN.md,
   "Write-ordering invariants"). ``EXCHANGE_CRASH_SKIP=N`` lets the first N passes through
   that point go by, so a test can crash on the second delivery rather than the first.
2. ``EXCHANGE_FAKE_NOW`` (an ISO time, tests only) starts the wall clock at that instant; it
   then advances with the monotonic clock. Nothing else in exchange reads it.
3. Every name in :data:`CRASH_POINTS` appears in docs/DESIGN.md; a test keeps them in step.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from exchange.clock import Clock, SystemClock
from exchange.config import Config
from exchange.errors import UsageError
from exchange.ledger import Ledger
from exchange.outbox import CRASH_POINTS as OUTBOX_CRASH_POINTS
from exchange.signing import SigningKey

#: The daemon's own crash points, in the order a delivery reaches them (the outbox package
#: names the intake and quarantine ones).
DELIVERY_CRASH_POINTS: Final = (
    "intake.after_ledger_commit",  # dataset, version and deliveries committed; original kept
    "schedule.after_run_recorded",  # a run that fell due is in the ledger, not yet done
    "delivery.after_intent",  # `uploading` committed; nothing on the hub yet
    "delivery.mid_upload",  # part of the payload written to its temporary name
    "delivery.before_rename",  # ciphertext digest and manifest hash committed; payload .part
    "delivery.after_payload_rename",  # payload under its final name, no manifest yet
    "delivery.after_rename",  # manifest under its final name: complete on the hub
    "delivery.after_sent",  # `sent` committed
)
#: Crash points of the commands that spool a copy themselves (``exchange send``).
COMMAND_CRASH_POINTS: Final = (
    "send.after_spool_temp",  # the plaintext copy complete under its temporary name
)
CRASH_POINTS: Final = (*OUTBOX_CRASH_POINTS, *DELIVERY_CRASH_POINTS, *COMMAND_CRASH_POINTS)

_crash_lock = threading.Lock()
_crash_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here like ``kill -9`` if ``EXCHANGE_CRASH_AT`` names this point (module rule 1)."""
    wanted = os.environ.get("EXCHANGE_CRASH_AT")
    if not wanted or wanted != name:
        return
    with _crash_lock:
        seen = _crash_passes.get(name, 0)
        _crash_passes[name] = seen + 1
    if seen < int(os.environ.get("EXCHANGE_CRASH_SKIP", "0")):
        return
    os.kill(os.getpid(), signal.SIGKILL)


class ShiftedClock:
    """A wall clock that starts at a given instant and runs at real speed (module rule 2)."""

    def __init__(self, start: datetime, base: Clock | None = None) -> None:
        self._base = base or SystemClock()
        self._start = start
        self._mono = self._base.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._base.monotonic() - self._mono)

    def monotonic(self) -> float:
        return self._base.monotonic()


def clock_from_env() -> Clock:
    """The system clock, or a shifted one when ``EXCHANGE_FAKE_NOW`` is set (tests)."""
    text = os.environ.get("EXCHANGE_FAKE_NOW")
    if not text:
        return SystemClock()
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"EXCHANGE_FAKE_NOW: not an ISO time: {text!r}") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return ShiftedClock(start)


@dataclass(frozen=True, slots=True)
class Settings:
    """How the daemon paces itself. The defaults suit production; tests shorten them."""

    #: A file must look the same for this long (monotonic seconds) before it is taken.
    settle_seconds: float = 5.0
    #: Full rescan of every outbox (the source of truth; events are only a hint).
    rescan_seconds: float = 60.0
    #: The reconciler runs at least this often even when nothing wakes it.
    tick_seconds: float = 10.0
    #: Health check of the watcher.
    health_seconds: float = 30.0
    #: On SIGTERM, how long an upload in progress may take to finish before it is abandoned.
    grace_seconds: float = 20.0
    #: Attempts that die without an answer before a delivery is poisoned (TESTPLAN D39).
    max_attempts: int = 3
    #: Backoff for transient failures: the first wait and the cap (core.delivery policy).
    retry_base_seconds: float = 30.0
    retry_cap_seconds: float = 3600.0
    #: A parked partner is probed with one delivery after this long, doubling up to the cap.
    park_probe_seconds: float = 900.0
    #: Receipt collection, when a collector is plugged in.
    receipts_seconds: float = 300.0
    #: Check that each outbox path still leads to the folder held open (TESTPLAN A2).
    revalidate_seconds: float = 3600.0

    def __post_init__(self) -> None:
        for name in (
            "settle_seconds",
            "rescan_seconds",
            "tick_seconds",
            "health_seconds",
            "grace_seconds",
            "retry_base_seconds",
            "retry_cap_seconds",
            "park_probe_seconds",
            "receipts_seconds",
            "revalidate_seconds",
        ):
            if getattr(self, name) < 0:
                raise UsageError(f"daemon setting {name}: must not be negative")
        if self.max_attempts < 1:
            raise UsageError("daemon setting max_attempts: must be at least 1")
        if self.retry_cap_seconds < self.retry_base_seconds or self.retry_base_seconds <= 0:
            raise UsageError("daemon settings: need 0 < retry base <= retry cap")

    @property
    def retry_base(self) -> timedelta:
        return timedelta(seconds=self.retry_base_seconds)

    @property
    def retry_cap(self) -> timedelta:
        return timedelta(seconds=self.retry_cap_seconds)


@dataclass(frozen=True, slots=True)
class Context:
    """The daemon's shared, thread-safe parts (the ledger serialises its own use)."""

    config: Config
    ledger: Ledger
    clock: Clock
    settings: Settings
    signing_key: SigningKey
    rng: random.Random
    stopping: threading.Event
    #: Set after the grace period: uploads in progress give up at their next write.
    abandon: threading.Event

    def now(self) -> datetime:
        return self.clock.now()
