"""Timers that wake the daemon: the only module that imports apscheduler (3.x).

Rules:

1. Jobs only *wake* things: they call a callback that sets an event or queues a rescan. What
   is due is decided from the ledger (``exchange.service.due``), never from the scheduler's
   memory, so a job that did not run (the daemon was stopped, the machine slept) loses
   nothing and a job that ran twice does nothing twice.
2. Interval jobs only, with ``coalesce=True`` and ``max_instances=1``: missed firings
   collapse into one, and a slow callback is never run concurrently with itself.
3. A callback that raises is logged by apscheduler and the job keeps its schedule; callbacks
   should not raise anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

__all__ = ["Wakeups"]


class Wakeups:
    """A background scheduler of named interval jobs."""

    def __init__(self) -> None:
        self._scheduler: Any = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )

    def every(self, name: str, seconds: float, callback: Callable[[], object]) -> None:
        """Call ``callback`` every ``seconds`` (a non-positive interval adds nothing)."""
        if seconds <= 0:
            return
        self._scheduler.add_job(
            callback, "interval", seconds=seconds, id=name, name=name, replace_existing=True
        )

    def start(self) -> None:
        self._scheduler.start()

    def jobs(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs())

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
