"""Watching real outbox folders: events for dropped files, rescans that account for every file
when events are lost (inotify overflow, a stopped observer), and recovery from a dead observer."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from exchange.watcher import CandidateName, CandidateQueue, OutboxWatcher

pytestmark = pytest.mark.integration

MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


@pytest.fixture(name="outboxes")
def fixture_outboxes(tmp_path: Path) -> dict[str, Path]:
    folders = {"essex-cp": tmp_path / "essex-cp", "thurrock-asc": tmp_path / "thurrock-asc"}
    for folder in folders.values():
        folder.mkdir()
    return folders


@pytest.fixture(name="watcher")
def fixture_watcher(outboxes: dict[str, Path]) -> Iterator[OutboxWatcher]:
    watcher = OutboxWatcher(outboxes)
    watcher.start()
    yield watcher
    watcher.stop()


def _collect(
    queue: CandidateQueue, wanted: set[CandidateName], timeout: float = 5.0
) -> set[CandidateName]:
    """Take candidates off the queue until ``wanted`` are all seen or the time is up."""
    seen: set[CandidateName] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= seen and (left := deadline - time.monotonic()) > 0:
        item = queue.get(timeout=left)
        if item is not None:
            seen.add(item)
    return seen


def _wait_until(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


class TestEvents:
    def test_dropped_file_arrives_as_a_candidate(
        self, watcher: OutboxWatcher, outboxes: dict[str, Path]
    ) -> None:
        """A file written into an outbox is queued with its agreement and byte name."""
        (outboxes["thurrock-asc"] / "referrals.csv").write_bytes(b"case_id\n1\n")
        wanted = CandidateName("thurrock-asc", b"referrals.csv")
        assert wanted in _collect(watcher.queue, {wanted})
        assert watcher.healthy()

    def test_renamed_into_place_arrives_and_temporary_names_do_not(
        self, watcher: OutboxWatcher, outboxes: dict[str, Path]
    ) -> None:
        """A .part upload renamed to its final name is queued under the final name only;
        hidden names and files in sub-folders are never queued."""
        folder = outboxes["essex-cp"]
        (folder / ".hidden.csv").write_bytes(b"x")
        (folder / "~$lock.csv").write_bytes(b"x")
        (folder / "sub").mkdir()
        (folder / "sub" / "inner.csv").write_bytes(b"x")
        (folder / "upload.csv.part").write_bytes(b"case_id\n1\n")
        (folder / "upload.csv.part").rename(folder / "upload.csv")
        wanted = CandidateName("essex-cp", b"upload.csv")
        seen = _collect(watcher.queue, {wanted})
        time.sleep(0.2)
        seen |= set(watcher.queue.drain())
        assert {wanted} == seen

    def test_non_utf8_name_is_queued_as_bytes(
        self, watcher: OutboxWatcher, outboxes: dict[str, Path]
    ) -> None:
        """A name with undecodable bytes reaches the queue as the exact bytes."""
        name = b"r\xe9f\xff.csv"
        (outboxes["essex-cp"] / os.fsdecode(name)).write_bytes(b"x")
        wanted = CandidateName("essex-cp", name)
        assert wanted in _collect(watcher.queue, {wanted})

    def test_queue_holds_each_candidate_once(self) -> None:
        """Repeated events for one file, and a rescan on top, queue it once until taken off."""
        queue = CandidateQueue()
        item = CandidateName("essex-cp", b"slow.csv")
        assert [queue.put(item) for _ in range(3)] == [True, False, False]
        assert len(queue) == 1
        assert item == queue.get(timeout=0)
        assert queue.get(timeout=0) is None
        assert queue.put(item)


class TestLostEvents:
    @pytest.mark.timeout(60)
    def test_burst_with_a_tiny_inotify_queue_is_accounted_for_by_rescan(
        self, outboxes: dict[str, Path]
    ) -> None:
        """With max_queued_events lowered to 16 (as root, restored after), a burst of 2,000
        files overflows the kernel queue; events miss files and the rescan lists all 2,000."""
        folder = outboxes["essex-cp"]
        original = MAX_QUEUED.read_text()
        try:
            MAX_QUEUED.write_text("16")
            watcher = OutboxWatcher(outboxes)
            watcher.start()  # a new inotify instance takes the lowered limit
        finally:
            MAX_QUEUED.write_text(original)
        try:
            names = {b"f%04d.csv" % i for i in range(2000)}
            for name in names:
                (folder / name.decode()).write_bytes(b"x")
            time.sleep(0.5)
            from_events = {c.name for c in watcher.queue.drain()}
            assert len(from_events) < len(names)  # events really were lost
            assert names == {c.name for c in watcher.rescan() if c.agreement == "essex-cp"}
            assert names == {c.name for c in watcher.queue.drain()}
        finally:
            watcher.stop()
        assert original == MAX_QUEUED.read_text()

    def test_files_dropped_while_stopped_are_found_by_rescan(
        self, watcher: OutboxWatcher, outboxes: dict[str, Path]
    ) -> None:
        """With the observer stopped, 1,000 new files produce no events and a rescan finds each."""
        watcher.stop()
        assert not watcher.healthy()
        for index in range(1000):
            (outboxes["thurrock-asc"] / f"r{index}.csv").write_bytes(b"x")
        assert len(watcher.queue) == 0
        found = watcher.rescan()
        assert 1000 == len(found) == len(watcher.queue)

    def test_unlistable_outbox_is_logged_and_the_others_still_scanned(
        self, outboxes: dict[str, Path], tmp_path: Path
    ) -> None:
        """A missing outbox folder does not stop the rescan of the others."""
        (outboxes["essex-cp"] / "a.csv").write_bytes(b"x")
        watcher = OutboxWatcher({**outboxes, "gone": tmp_path / "gone"})
        with capture_logs() as logs:
            found = watcher.rescan()
        assert [CandidateName("essex-cp", b"a.csv")] == found
        assert [e["event"] for e in logs] == ["watcher.rescan_failed"]


class _Exploding(FileSystemEventHandler):
    """A third-party-style handler that raises, which ends a watchdog observer thread."""

    def dispatch(self, event: FileSystemEvent) -> None:
        raise RuntimeError("handler bug")


class TestFailures:
    def test_our_handler_swallows_its_own_errors(
        self, watcher: OutboxWatcher, outboxes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception inside the handler is logged as watcher.handler_failed and the
        observer keeps running: the next file still arrives."""
        real_put = watcher.queue.put
        calls: list[CandidateName] = []

        def failing_put(item: CandidateName) -> bool:
            calls.append(item)
            if len(calls) == 1:
                raise OSError("simulated")
            return real_put(item)

        monkeypatch.setattr(watcher.queue, "put", failing_put)
        with capture_logs() as logs:
            (outboxes["essex-cp"] / "first.csv").write_bytes(b"x")
            assert _wait_until(lambda: watcher.handler_failures >= 1)
            (outboxes["essex-cp"] / "second.csv").write_bytes(b"x")
            wanted = CandidateName("essex-cp", b"second.csv")
            assert wanted in _collect(watcher.queue, {wanted})
        assert watcher.healthy()
        assert "watcher.handler_failed" in [e["event"] for e in logs]

    @pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
    def test_dead_observer_is_seen_and_restarted_without_losing_files(
        self, watcher: OutboxWatcher, outboxes: dict[str, Path]
    ) -> None:
        """When a raising handler kills the observer thread, healthy() turns false; restart()
        brings events back and its rescan queues the file dropped while it was dead."""
        folder = outboxes["essex-cp"]
        watcher._observer.schedule(_Exploding(), str(folder), recursive=False)
        (folder / "kills-it.csv").write_bytes(b"x")
        assert _wait_until(lambda: not watcher.healthy())
        watcher.queue.drain()
        (folder / "while-dead.csv").write_bytes(b"x")
        assert watcher.restart() >= 2
        (folder / "after.csv").write_bytes(b"x")
        wanted = {
            CandidateName("essex-cp", b"kills-it.csv"),
            CandidateName("essex-cp", b"while-dead.csv"),
            CandidateName("essex-cp", b"after.csv"),
        }
        assert wanted <= _collect(watcher.queue, wanted)
        assert watcher.healthy()
