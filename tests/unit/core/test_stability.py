"""The stability rule: a file is taken only after looking the same for the settle time, on
monotonic timestamps passed in (no sleeping, no clock)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.stability import (
    Observation,
    Pending,
    StabilityTracker,
    Stable,
    Track,
    assess,
)
from exchange.errors import InvariantError

SETTLE = 5.0
KEY = ("essex-cp", b"referrals.csv")


def _obs(
    size: int = 100, mtime_ns: int = 1_000, inode: int = 42, ctime_ns: int = 1_000
) -> Observation:
    return Observation(size=size, mtime_ns=mtime_ns, inode=inode, ctime_ns=ctime_ns, device=1)


@pytest.fixture(name="tracker")
def fixture_tracker() -> StabilityTracker[tuple[str, bytes]]:
    return StabilityTracker(SETTLE)


class TestAssess:
    def test_first_look_is_never_stable(self) -> None:
        """A single observation is pending, however old the file, until a second look agrees."""
        track, verdict = assess(None, _obs(), 100.0, SETTLE)
        assert Pending(ready_at=105.0, changed=True) == verdict
        assert Track(_obs(), since=100.0, last_seen=100.0) == track

    def test_unchanged_for_the_settle_time_is_stable(self) -> None:
        """Two equal looks exactly settle_seconds apart make the file stable."""
        track, _ = assess(None, _obs(), 100.0, SETTLE)
        _, verdict = assess(track, _obs(), 105.0, SETTLE)
        assert Stable(since=100.0) == verdict

    def test_unchanged_but_too_soon_is_pending_with_the_original_deadline(self) -> None:
        """An equal look before the settle time keeps the deadline of the first look."""
        track, _ = assess(None, _obs(), 100.0, SETTLE)
        track, verdict = assess(track, _obs(), 103.0, SETTLE)
        assert Pending(ready_at=105.0, changed=False) == verdict
        assert track.since == 100.0

    @pytest.mark.parametrize(
        "changed",
        [
            _obs(size=101),
            _obs(mtime_ns=2_000),
            _obs(mtime_ns=500),  # mtime moved backwards (touch -d, an extract tool): still a change
            _obs(inode=43),
            _obs(ctime_ns=9_000),  # mtime put back by cp -p / rsync -t, ctime cannot be
        ],
    )
    def test_any_difference_restarts_the_wait(self, changed: Observation) -> None:
        """A change in size, mtime, inode or ctime resets the settle period to start now."""
        track, _ = assess(None, _obs(), 100.0, SETTLE)
        _, verdict = assess(track, changed, 104.0, SETTLE)
        assert Pending(ready_at=109.0, changed=True) == verdict

    def test_zero_settle_time_still_needs_two_looks(self) -> None:
        """With settle 0 the second equal look is stable, the first is not."""
        track, first = assess(None, _obs(), 1.0, 0.0)
        _, second = assess(track, _obs(), 1.0, 0.0)
        assert isinstance(first, Pending)
        assert Stable(since=1.0) == second

    def test_time_going_backwards_is_a_bug(self) -> None:
        """A timestamp before the last look means a wall clock was passed in: it raises."""
        track, _ = assess(None, _obs(), 100.0, SETTLE)
        with pytest.raises(InvariantError, match="backwards"):
            assess(track, _obs(), 99.0, SETTLE)

    def test_negative_settle_time_is_a_bug(self) -> None:
        """A negative settle time is refused."""
        with pytest.raises(InvariantError):
            assess(None, _obs(), 1.0, -1.0)

    def test_observation_of_a_stat_result(self) -> None:
        """Observation.of copies size, mtime, ctime, inode and device from a stat result."""
        info = os.stat_result((0o100600, 7, 3, 1, 0, 0, 123, 0, 0, 0, 1, 2, 3))
        assert Observation(123, info.st_mtime_ns, 7, info.st_ctime_ns, 3) == Observation.of(info)


class TestTracker:
    def test_slow_writer_over_thirty_seconds_is_not_taken(
        self, tracker: StabilityTracker[tuple[str, bytes]]
    ) -> None:
        """A writer appending every 2 s for 30 s, looked at every second, is never stable while
        it writes, and becomes stable one settle period after its last append."""
        size, verdicts = 0, []
        for second in range(31):
            if second % 2 == 0:
                size += 1000
            obs = _obs(size=size, mtime_ns=size, ctime_ns=size)
            verdicts.append(tracker.observe(KEY, obs, float(second)))
        assert not any(isinstance(v, Stable) for v in verdicts)
        final = _obs(size=size, mtime_ns=size, ctime_ns=size)
        assert isinstance(tracker.observe(KEY, final, 34.0), Pending)
        assert Stable(since=30.0) == tracker.observe(KEY, final, 35.0)

    def test_close_and_reopen_resets_the_wait(
        self, tracker: StabilityTracker[tuple[str, bytes]]
    ) -> None:
        """A writer that pauses, then reopens and appends, restarts the settle period."""
        tracker.observe(KEY, _obs(size=100), 0.0)
        assert isinstance(tracker.observe(KEY, _obs(size=100), 4.0), Pending)
        assert Pending(9.5, True) == tracker.observe(KEY, _obs(size=200), 4.5)
        assert isinstance(tracker.observe(KEY, _obs(size=200), 9.0), Pending)
        assert Stable(since=4.5) == tracker.observe(KEY, _obs(size=200), 9.5)

    def test_wall_clock_jump_cannot_affect_it(
        self, tracker: StabilityTracker[tuple[str, bytes]]
    ) -> None:
        """Only the monotonic timestamps count: mtimes a day ahead or an hour behind the wall
        clock do not make a file stable early or late."""
        day_ahead = _obs(mtime_ns=86_400 * 10**9)
        tracker.observe(KEY, day_ahead, 10.0)
        assert isinstance(tracker.observe(KEY, day_ahead, 14.9), Pending)
        assert isinstance(tracker.observe(KEY, day_ahead, 15.0), Stable)

    def test_keys_are_independent_and_forget_starts_afresh(
        self, tracker: StabilityTracker[tuple[str, bytes]]
    ) -> None:
        """Each key has its own track; a forgotten key needs two looks again."""
        other = ("essex-cp", b"other.csv")
        tracker.observe(KEY, _obs(), 0.0)
        tracker.observe(other, _obs(), 3.0)
        assert isinstance(tracker.observe(KEY, _obs(), 5.0), Stable)
        assert isinstance(tracker.observe(other, _obs(), 5.0), Pending)
        tracker.forget(KEY)
        assert KEY not in tracker
        assert isinstance(tracker.observe(KEY, _obs(), 20.0), Pending)

    def test_retain_bounds_memory_to_the_listed_keys(
        self, tracker: StabilityTracker[tuple[str, bytes]]
    ) -> None:
        """After a rescan, tracks of entries that vanished are dropped."""
        for index in range(100):
            tracker.observe(("essex-cp", b"f%d.csv" % index), _obs(), 0.0)
        tracker.retain([KEY, ("essex-cp", b"f1.csv")])
        assert len(tracker) == 1
        assert ("essex-cp", b"f1.csv") in tracker

    def test_negative_settle_time_is_refused(self) -> None:
        """A tracker cannot be built with a negative settle time."""
        with pytest.raises(InvariantError):
            StabilityTracker[str](-0.1)

    @given(
        looks=st.lists(
            st.tuples(st.floats(0, 10, allow_nan=False), st.integers(0, 3)), min_size=1, max_size=30
        )
    )
    def test_stable_only_after_settle_time_of_sameness(
        self, looks: list[tuple[float, int]]
    ) -> None:
        """For any sequence of looks, Stable is returned exactly when the current observation
        was first seen at least settle_seconds earlier and not changed since."""
        tracker = StabilityTracker[str](SETTLE)
        now, since, previous = 0.0, 0.0, None
        for step, size in looks:
            now += step
            verdict = tracker.observe("k", _obs(size=size), now)
            if size != previous:
                since, previous = now, size
                assert isinstance(verdict, Pending)
            else:
                assert isinstance(verdict, Stable) == (now - since >= SETTLE)
