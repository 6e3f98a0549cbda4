"""Outbox watching: file events and full rescans turned into candidate names on a queue.

Layer 2: the only module that imports ``watchdog``. It makes no decisions beyond leaving out
hidden and temporary names (:func:`exchange.core.intake.is_candidate_name`) and entries of
sub-directories (watches are not recursive). Whether a candidate is stable, taken or refused
is decided by the service with :mod:`exchange.core.stability` and :mod:`exchange.outbox`.

Rules:

1. **The rescan is the source of truth; events are a hint.** The kernel drops inotify events
   when its queue overflows (watchdog then only logs a warning) and a watcher that is down
   sees nothing. The service calls :meth:`OutboxWatcher.rescan` periodically and after every
   :meth:`OutboxWatcher.restart`; events only make the common case fast.
2. **The handler never raises.** An exception escaping a watchdog handler ends the observer
   thread for good and silently. :class:`_Handler` catches everything (the one place besides
   the service loop where ``except Exception`` is allowed), logs ``watcher.handler_failed``
   and counts it. In case the observer dies anyway, :meth:`OutboxWatcher.healthy` reports
   it, so the health loop can :meth:`~OutboxWatcher.restart` it and withhold ``WATCHDOG=1``.
3. **Bounded memory.** :class:`CandidateQueue` holds each (agreement, name) at most once
   until it is taken off, so a burst of events for one slowly written file, or a rescan
   repeating what events already reported, does not grow it: its size is bounded by the
   number of distinct entries in the outboxes.
4. Names are bytes, exactly as the kernel gave them (any bytes but ``/`` and NUL).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from exchange.core.intake import is_candidate_name

__all__ = ["CandidateName", "CandidateQueue", "OutboxWatcher"]

_log = structlog.get_logger()

#: Event types that can mean "a file appeared or got new content". Deletions, opens and
#: read-only closes cannot make a file ready.
_INTERESTING = frozenset({"created", "modified", "closed", "moved"})


@dataclass(frozen=True, slots=True)
class CandidateName:
    """An entry worth looking at in one agreement's outbox."""

    agreement: str
    name: bytes


class CandidateQueue:
    """A thread-safe FIFO that holds each candidate at most once until it is taken off."""

    def __init__(self) -> None:
        self._items: deque[CandidateName] = deque()
        self._present: set[CandidateName] = set()
        self._ready = threading.Condition()

    def put(self, item: CandidateName) -> bool:
        """Queue ``item``; False if it was already waiting."""
        with self._ready:
            if item in self._present:
                return False
            self._present.add(item)
            self._items.append(item)
            self._ready.notify()
            return True

    def get(self, timeout: float | None = None) -> CandidateName | None:
        """The oldest candidate, waiting up to ``timeout`` seconds; None if none came."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            self._present.discard(item)
            return item

    def drain(self) -> list[CandidateName]:
        """Everything waiting, oldest first, without blocking."""
        with self._ready:
            items = list(self._items)
            self._items.clear()
            self._present.clear()
            return items

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)


class _Handler(FileSystemEventHandler):
    """Turns one outbox's events into candidates. Never raises (module rule 2)."""

    def __init__(self, agreement: str, directory: str, watcher: OutboxWatcher) -> None:
        super().__init__()
        self._agreement = agreement
        self._directory = directory
        self._watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception as error:  # noqa: BLE001 - an escaping exception kills the observer
            with contextlib.suppress(Exception):  # not even a failing log call may escape
                self._watcher._handler_failed(self._agreement, error)

    def _handle(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in _INTERESTING:
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        if not path:
            return
        where = Path(os.fsdecode(path))
        if str(where.parent) != self._directory:
            return  # moved out of the outbox, or not directly inside it
        name = os.fsencode(where.name)
        if is_candidate_name(name):
            self._watcher.queue.put(CandidateName(self._agreement, name))


class OutboxWatcher:
    """Watches every agreement's outbox (not recursively) and feeds :attr:`queue`.

    ``start()`` once, ``rescan()`` periodically, ``healthy()`` from the health loop and
    ``restart()`` when it is not; ``stop()`` at shutdown. Methods are safe to call from the
    service's threads; the observer thread only ever touches :attr:`queue`.
    """

    def __init__(self, outboxes: Mapping[str, Path], queue: CandidateQueue | None = None) -> None:
        self.outboxes = dict(outboxes)
        self.queue = queue if queue is not None else CandidateQueue()
        self.handler_failures = 0
        self._observer: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start watching. Events for files that already exist are not produced: call
        :meth:`rescan` after starting."""
        with self._lock:
            if self._observer is not None:
                return
            observer = Observer()
            for agreement, path in self.outboxes.items():
                directory = str(Path(os.fsdecode(path)).absolute())
                observer.schedule(_Handler(agreement, directory, self), directory, recursive=False)
            observer.daemon = True
            observer.start()
            self._observer = observer
        _log.info("watcher.started", count=len(self.outboxes))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the observer thread and its inotify readers; safe to call twice."""
        with self._lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout)

    def is_alive(self) -> bool:
        """True while the observer thread and every per-folder reader thread run."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        emitters = observer.emitters
        return len(emitters) == len(self.outboxes) and all(e.is_alive() for e in emitters)

    def healthy(self) -> bool:
        """What the health loop asks before it sends ``WATCHDOG=1``."""
        return self.is_alive()

    def restart(self) -> int:
        """Replace a dead (or live) observer with a new one, then rescan, since events were
        lost while it was down. Returns how many candidates the rescan queued."""
        self.stop()
        self.start()
        _log.warning("watcher.restarted", count=len(self.outboxes))
        return len(self.rescan())

    def rescan(self) -> list[CandidateName]:
        """List every outbox (module rule 1), queue each candidate not already waiting, and
        return all of them (for ``StabilityTracker.retain``). A folder that cannot be listed
        is logged and left out; the outbox revalidation raises the incident for it."""
        found: list[CandidateName] = []
        for agreement, path in self.outboxes.items():
            try:
                names = os.listdir(os.fsencode(path))  # noqa: PTH208 - bytes names, as given
            except OSError as error:
                _log.error(
                    "watcher.rescan_failed", agreement=agreement, path=str(path), error=str(error)
                )
                continue
            found.extend(CandidateName(agreement, n) for n in sorted(names) if is_candidate_name(n))
        for candidate in found:
            self.queue.put(candidate)
        return found

    def _handler_failed(self, agreement: str, error: Exception) -> None:
        self.handler_failures += 1
        _log.error(
            "watcher.handler_failed",
            agreement=agreement,
            error=f"{type(error).__name__}: {error}",
            count=self.handler_failures,
        )
