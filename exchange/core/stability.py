"""When is a file in the outbox finished? The stability rule, as pure decisions.

A file is taken only once it has looked the same for ``settle_seconds`` on the monotonic
clock (issue 5, TESTPLAN A7 and D35). The caller stats the entry (``lstat``/``fstatat``,
never following a link) whenever it likes: on a file event, on a rescan, on a timer. It hands
each stat here as an :class:`Observation` together with a monotonic timestamp, and gets back
:class:`Stable` or :class:`Pending` (with the monotonic time at which it is worth looking again).

Rules:

1. **Pure.** No stat, no clock, no logging: timestamps are passed in. They must come from a
   monotonic clock (``Clock.monotonic()``), so a wall-clock jump, forward or back, can neither
   make a growing file look old nor hold a finished one back.
2. **Any difference restarts the wait.** Size, modification time, change time, inode and device
   are compared. The change time matters because a writer can put back the modification time
   (``cp -p``, ``rsync -t``, ``touch -r``) but not the change time; the inode because a
   writer that saves by "write a temporary file, rename it over" produces a new inode.
3. **Two looks, ``settle_seconds`` apart, are needed.** A single observation is never stable,
   even for an old file, because an old mtime says nothing about whether a writer still holds
   the file open (a writer that pauses for a long time and then appends is only caught by
   watching it). The first look after start-up therefore costs one settle period.
4. A timestamp earlier than the last one (a caller mixing clocks) is a bug: it raises
   :class:`~exchange.errors.InvariantError` rather than guessing.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from exchange.errors import InvariantError

__all__ = [
    "Observation",
    "Pending",
    "StabilityTracker",
    "Stable",
    "Track",
    "Verdict",
    "assess",
]


class _StatLike(Protocol):
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_dev(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Observation:
    """What one ``lstat`` of the entry showed; equal observations mean "unchanged"."""

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int = 0
    device: int = 0

    @classmethod
    def of(cls, info: _StatLike) -> Observation:
        """From an ``os.stat_result`` (a value; this does not stat anything)."""
        return cls(info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, info.st_dev)


@dataclass(frozen=True, slots=True)
class Track:
    """What is remembered about one entry: the last observation and since when it held."""

    observation: Observation
    since: float  # monotonic time of the first look that saw ``observation``
    last_seen: float  # monotonic time of the latest look


@dataclass(frozen=True, slots=True)
class Stable:
    """Unchanged for at least the settle time: take it now."""

    since: float


@dataclass(frozen=True, slots=True)
class Pending:
    """Not yet: look again at ``ready_at`` (monotonic) or on the next event."""

    ready_at: float
    changed: bool  # True when this look was the first or saw a difference


Verdict = Stable | Pending


def assess(
    track: Track | None, observation: Observation, now: float, settle_seconds: float
) -> tuple[Track, Verdict]:
    """One look at an entry: the new track to remember and the verdict (module rules 2-4)."""
    if settle_seconds < 0:
        raise InvariantError("stability: settle_seconds must not be negative")
    if track is not None and now < track.last_seen:
        raise InvariantError(
            f"stability: monotonic time went backwards ({now} < {track.last_seen}); "
            "is the wall clock being passed in?"
        )
    if track is None or track.observation != observation:
        fresh = Track(observation, since=now, last_seen=now)
        return fresh, Pending(ready_at=now + settle_seconds, changed=True)
    updated = Track(observation, since=track.since, last_seen=now)
    if now - track.since >= settle_seconds:
        return updated, Stable(since=track.since)
    return updated, Pending(ready_at=track.since + settle_seconds, changed=False)


K = TypeVar("K", bound=Hashable)


class StabilityTracker(Generic[K]):
    """The tracks of every entry being watched, keyed by the caller's key
    (``(agreement, name)`` in the daemon). Not thread-safe: one owner calls it.

    Memory is bounded by the entries present: call :meth:`forget` when an entry was taken,
    quarantined or vanished, and :meth:`retain` after a full rescan with the keys it listed.
    """

    def __init__(self, settle_seconds: float) -> None:
        if settle_seconds < 0:
            raise InvariantError("stability: settle_seconds must not be negative")
        self.settle_seconds = settle_seconds
        self._tracks: dict[K, Track] = {}

    def observe(self, key: K, observation: Observation, now: float) -> Verdict:
        """Record one look at ``key`` taken at monotonic time ``now``."""
        track, verdict = assess(self._tracks.get(key), observation, now, self.settle_seconds)
        self._tracks[key] = track
        return verdict

    def forget(self, key: K) -> None:
        """Drop the track of an entry that is gone; a later file of that name starts afresh."""
        self._tracks.pop(key, None)

    def retain(self, keys: Iterable[K]) -> None:
        """Keep only the tracks of ``keys`` (the entries a full rescan found)."""
        keep = set(keys)
        for key in [k for k in self._tracks if k not in keep]:
            del self._tracks[key]

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, key: object) -> bool:
        return key in self._tracks
