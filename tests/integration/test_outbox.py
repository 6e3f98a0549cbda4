"""Taking files from a real outbox folder: spool copy or quarantine, for every TESTPLAN A case
about the outbox (links, special files, names, sizes, encodings, columns, changes, permissions)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exchange.clock import SystemClock
from exchange.core.intake import IntakeRules
from exchange.core.stability import StabilityTracker, Stable
from exchange.errors import InvariantError
from exchange.model import ReasonCode, Sha256
from exchange.outbox import (
    CRASH_POINTS,
    Outbox,
    OutboxError,
    OutboxMoved,
    Quarantined,
    Removed,
    Retry,
    Skipped,
    SkipReason,
    Taken,
)
from exchange.outbox import _outbox as outbox_module

pytestmark = pytest.mark.integration

AGREEMENT = "essex-cp"
FIELDS = ("case_id", "agency", "referral_date")
RULES = IntakeRules(
    formats=("csv",), allowed_fields=FIELDS, max_size_bytes=1_000_000, allow_empty=False
)
GOOD = b"case_id,agency,referral_date\r\n1042,Essex Police,2026-11-02\r\n1043,Barnardo's,2026-11-03\r\n"
SAFE_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-%")


class FixedClock:
    """A wall clock stuck at one instant, so two refusals collide on the timestamp."""

    def now(self) -> datetime:
        return datetime(2026, 11, 25, 9, 30, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture(name="workspace")
def fixture_workspace(tmp_path: Path) -> Path:
    (tmp_path / "outbox" / AGREEMENT).mkdir(parents=True)
    (tmp_path / "spool").mkdir()
    (tmp_path / "quarantine").mkdir()
    return tmp_path


@pytest.fixture(name="outbox_dir")
def fixture_outbox_dir(workspace: Path) -> Path:
    return workspace / "outbox" / AGREEMENT


@pytest.fixture(name="box")
def fixture_box(workspace: Path) -> Iterator[Outbox]:
    with _open(workspace) as box:
        yield box


def _open(workspace: Path, clock: object = None, agreement: str = AGREEMENT) -> Outbox:
    return Outbox(
        agreement,
        workspace / "outbox" / agreement,
        workspace / "spool",
        workspace / "quarantine",
        clock=clock or SystemClock(),  # type: ignore[arg-type]
    )


def _drop(directory: Path, name: bytes | str, data: bytes) -> bytes:
    raw = os.fsencode(name)
    _write(directory, raw, data)
    return raw


def _write(directory: Path, raw: bytes, data: bytes) -> None:
    fd = os.open(
        os.path.join(os.fsencode(directory), raw), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644
    )
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _entries(directory: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(directory)))


def _reason(result: Quarantined) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(result.reason_path.read_bytes())
    return loaded


def _refused(
    box: Outbox, outbox_dir: Path, name: bytes | str, data: bytes, reason: ReasonCode
) -> Quarantined:
    raw = _drop(outbox_dir, name, data)
    result = box.take(raw, RULES)
    assert isinstance(result, Quarantined), result
    assert reason == result.reason
    assert _entries(outbox_dir) == []
    return result


class TestTaking:
    def test_good_file_is_spooled_durably_then_removed(self, box: Outbox, outbox_dir: Path) -> None:
        """A valid CSV becomes spool/<agreement>/<sha256>, read-only, and the original is removed
        only by remove_original."""
        _drop(outbox_dir, "referrals.csv", GOOD)
        with capture_logs() as logs:
            taken = box.take(b"referrals.csv", RULES)
        assert isinstance(taken, Taken)
        sha = Sha256(hashlib.sha256(GOOD).hexdigest())
        assert (sha, len(GOOD), "csv", False, False) == (
            taken.sha256,
            taken.size,
            taken.format,
            taken.empty,
            taken.already_spooled,
        )
        assert box.spool_dir / sha.hex == taken.spool_path
        assert taken.spool_path.read_bytes() == GOOD
        assert stat.S_IMODE(taken.spool_path.stat().st_mode) == 0o400
        assert _entries(outbox_dir) == [b"referrals.csv"]
        assert [sha.hex.encode()] == _entries(box.spool_dir)
        assert [entry["event"] for entry in logs] == ["intake.accepted"]
        assert Removed(AGREEMENT, b"referrals.csv", was_present=True) == box.remove_original(taken)
        assert _entries(outbox_dir) == []

    def test_crash_points_come_in_write_order(self, box: Outbox, outbox_dir: Path) -> None:
        """The named crash points fire in the order of the write-ordering invariant."""
        _drop(outbox_dir, "referrals.csv", GOOD)
        seen: list[str] = []
        taken = box.take(b"referrals.csv", RULES, crash_point=seen.append)
        assert isinstance(taken, Taken)
        box.remove_original(taken, crash_point=seen.append)
        assert [p for p in CRASH_POINTS if p.startswith("intake.")] == seen

    def test_kill_after_spool_write_leaves_only_a_temp_that_start_up_removes(
        self, box: Outbox, outbox_dir: Path
    ) -> None:
        """A process killed before the spool fsync leaves the original in the outbox and a
        temporary file that remove_stale_temps clears; the file is then taken normally."""
        _drop(outbox_dir, "referrals.csv", GOOD)

        def die(point: str) -> None:
            if point == "intake.after_spool_write":
                os._exit(0)

        _in_child(lambda: box.take(b"referrals.csv", RULES, crash_point=die))
        assert _entries(outbox_dir) == [b"referrals.csv"]
        assert all(name.startswith(b".tmp-") for name in _entries(box.spool_dir))
        assert box.remove_stale_temps() == 1
        assert _entries(box.spool_dir) == []
        assert isinstance(box.take(b"referrals.csv", RULES), Taken)

    def test_retake_after_crash_reuses_the_spool_copy(self, box: Outbox, outbox_dir: Path) -> None:
        """A crash after the spool copy is durable leaves the original; taking it again reuses
        the same spool file and says so."""
        _drop(outbox_dir, "referrals.csv", GOOD)

        def die(point: str) -> None:
            if point == "intake.after_spool_copy":
                os._exit(0)

        _in_child(lambda: box.take(b"referrals.csv", RULES, crash_point=die))
        again = box.take(b"referrals.csv", RULES)
        assert isinstance(again, Taken)
        assert again.already_spooled
        assert [again.sha256.hex.encode()] == _entries(box.spool_dir)

    def test_remove_original_of_an_entry_already_gone(self, box: Outbox, outbox_dir: Path) -> None:
        """Removing an original that a previous run already unlinked is reported, not an error."""
        _drop(outbox_dir, "referrals.csv", GOOD)
        taken = box.take(b"referrals.csv", RULES)
        assert isinstance(taken, Taken)
        (outbox_dir / "referrals.csv").unlink()
        assert Removed(AGREEMENT, b"referrals.csv", was_present=False) == box.remove_original(taken)

    def test_hidden_and_temporary_names_are_not_touched(
        self, box: Outbox, outbox_dir: Path
    ) -> None:
        """Dotfiles, *.part, *.tmp and ~$ names are neither listed nor taken."""
        for name in (".hidden.csv", "upload.csv.part", "x.TMP", "~$referrals.csv"):
            _drop(outbox_dir, name, GOOD)
            assert Skipped(SkipReason.NOT_CANDIDATE) == box.take(name, RULES)
        _drop(outbox_dir, "referrals.csv", GOOD)
        assert box.names() == [b"referrals.csv"]
        assert box.names() == [b"referrals.csv"]  # listing by descriptor twice sees the same
        assert len(_entries(outbox_dir)) == 5

    def test_vanished_entry_is_skipped(self, box: Outbox) -> None:
        """A name that is gone by the time it is taken is skipped."""
        assert Skipped(SkipReason.VANISHED) == box.take(b"gone.csv", RULES)
        assert box.observe(b"gone.csv") is None


class TestLinksAndSpecialFiles:
    @pytest.mark.timeout(20)
    def test_symlink_to_a_fifo_outside_is_moved_and_its_target_never_opened(
        self, box: Outbox, outbox_dir: Path, workspace: Path
    ) -> None:
        """A link to a FIFO outside (opening it would block forever) is quarantined as a link."""
        fifo = workspace / "secret-fifo"
        os.mkfifo(fifo)
        (outbox_dir / "a.csv").symlink_to(fifo)
        result = box.take(b"a.csv", RULES)
        assert isinstance(result, Quarantined)
        assert result.reason == ReasonCode.SYMLINK
        assert result.path.is_symlink()
        assert fifo == result.path.readlink()
        assert stat.S_ISFIFO(fifo.lstat().st_mode)
        assert {k: _reason(result)[k] for k in ("reason", "size", "sha256")} == {
            "reason": "symlink",
            "size": None,
            "sha256": None,
        }

    def test_symlink_into_another_agreement_is_quarantined(
        self, box: Outbox, outbox_dir: Path, workspace: Path
    ) -> None:
        """ln -s ../other-agreement/x.csv is refused as a link; the other file stays put."""
        other = workspace / "outbox" / "other-agreement"
        other.mkdir()
        (other / "x.csv").write_bytes(GOOD)
        (outbox_dir / "x.csv").symlink_to("../other-agreement/x.csv")
        result = box.take(b"x.csv", RULES)
        assert isinstance(result, Quarantined)
        assert result.reason == ReasonCode.SYMLINK
        assert (other / "x.csv").read_bytes() == GOOD
        assert _entries(box.spool_dir) == []

    @pytest.mark.timeout(20)
    @pytest.mark.parametrize("kind", ["fifo", "socket", "directory", "char-device", "block-device"])
    def test_special_files_named_like_datasets_are_quarantined_without_blocking(
        self, box: Outbox, outbox_dir: Path, kind: str
    ) -> None:
        """A FIFO, socket, directory or device named *.csv is moved to quarantine unopened."""
        path = outbox_dir / "data.csv"
        held = None
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "socket":
            held = socket.socket(socket.AF_UNIX)
            held.bind(str(path))
        elif kind == "directory":
            path.mkdir()
            (path / "inner.csv").write_bytes(GOOD)
        elif kind == "char-device":
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        else:
            os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 0))
        try:
            result = box.take(b"data.csv", RULES)
        finally:
            if held is not None:
                held.close()
        assert isinstance(result, Quarantined)
        assert result.reason == ReasonCode.NOT_REGULAR_FILE
        assert kind in result.detail
        assert _entries(outbox_dir) == []
        assert not stat.S_ISREG(result.path.lstat().st_mode)

    def test_hard_link_is_quarantined_and_the_other_link_kept(
        self, box: Outbox, outbox_dir: Path, workspace: Path
    ) -> None:
        """A file with two links is refused; the file elsewhere is untouched."""
        elsewhere = workspace / "elsewhere.csv"
        elsewhere.write_bytes(GOOD)
        os.link(elsewhere, outbox_dir / "linked.csv")
        result = box.take(b"linked.csv", RULES)
        assert isinstance(result, Quarantined)
        assert result.reason == ReasonCode.HARD_LINK
        assert elsewhere.read_bytes() == GOOD
        assert elsewhere.stat().st_nlink == 2

    def test_outbox_swapped_for_a_symlink_is_detected_and_not_followed(
        self, box: Outbox, outbox_dir: Path, workspace: Path
    ) -> None:
        """After the outbox folder is replaced by a link, the held descriptor still reads the
        original directory and revalidate raises OutboxMoved."""
        box.revalidate()
        decoy = workspace / "decoy"
        decoy.mkdir()
        (decoy / "planted.csv").write_bytes(GOOD)
        outbox_dir.rename(workspace / "outbox" / "moved-away")
        outbox_dir.symlink_to(decoy)
        with pytest.raises(OutboxMoved, match="symbolic link"):
            box.revalidate()
        assert Skipped(SkipReason.VANISHED) == box.take(b"planted.csv", RULES)
        assert box.names() == []

    def test_parent_swapped_is_detected(self, box: Outbox, workspace: Path) -> None:
        """A parent folder replaced by another directory makes revalidate raise."""
        (workspace / "outbox").rename(workspace / "outbox.old")
        (workspace / "outbox" / AGREEMENT).mkdir(parents=True)
        with pytest.raises(OutboxMoved, match="different directory"):
            box.revalidate()

    def test_start_up_refuses_a_symlinked_or_missing_outbox(self, workspace: Path) -> None:
        """Opening an outbox that is a link, is missing, or has an unsafe id fails clearly."""
        (workspace / "outbox" / "linked").symlink_to(workspace / "outbox" / AGREEMENT)
        with pytest.raises(OutboxError, match="symbolic link"):
            _open(workspace, agreement="linked")
        with pytest.raises(OutboxError, match="does not exist"):
            _open(workspace, agreement="missing")
        with pytest.raises(OutboxError, match="not safe"):
            _open(workspace, agreement="../x")


class TestContent:
    def test_empty_file_is_quarantined(self, box: Outbox, outbox_dir: Path) -> None:
        """A 0-byte file is refused as empty."""
        _refused(box, outbox_dir, "empty.csv", b"", ReasonCode.EMPTY)

    def test_empty_file_is_taken_and_flagged_when_allowed(
        self, workspace: Path, outbox_dir: Path
    ) -> None:
        """An agreement allowing empty extracts takes a 0-byte file, flagged empty."""
        rules = IntakeRules(("csv",), FIELDS, 1000, allow_empty=True)
        _drop(outbox_dir, "empty.csv", b"")
        with _open(workspace) as box:
            taken = box.take(b"empty.csv", rules)
        assert isinstance(taken, Taken)
        assert (taken.empty, taken.size) == (True, 0)

    def test_sparse_file_over_the_cap_is_refused_before_reading(
        self, box: Outbox, outbox_dir: Path
    ) -> None:
        """A sparse file with a 100 GB apparent size is refused from its size alone: no hash,
        quickly, and it stays sparse in quarantine."""
        with (outbox_dir / "huge.csv").open("wb") as file:
            file.truncate(100 * 10**9)
        started = time.monotonic()
        result = box.take(b"huge.csv", RULES)
        assert time.monotonic() - started < 2
        assert isinstance(result, Quarantined)
        assert (
            result.reason,
            result.size,
            result.sha256,
        ) == (ReasonCode.TOO_LARGE, 100 * 10**9, None)
        assert result.path.stat().st_blocks == 0

    def test_format_not_allowed(self, box: Outbox, outbox_dir: Path) -> None:
        """A file of a format the agreement does not list is refused."""
        _refused(box, outbox_dir, "referrals.xlsx", b"PK\x03\x04", ReasonCode.FORMAT_NOT_ALLOWED)

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (
                b"case_id,agency,referral_date\n1042,Zo\xeb Carter,2026-11-02\n",
                "line 2, byte offset 36",
            ),
            ("case_id,agency,referral_date\n1,Essex Police,x\n".encode("utf-16"), "utf-16"),
            (b"case_id,agency,referral_date\n1042,Essex\x00Police,2026-11-02\n", "NUL"),
            (
                b"case_id,agency,referral_date\r\n1,Essex Police,x\n2,Barnardo's,y\r\n",
                "line endings",
            ),
        ],
        ids=["latin-1", "utf-16-bom", "nul", "mixed-line-endings"],
    )
    def test_bad_encodings_are_quarantined_naming_offsets_only(
        self, box: Outbox, outbox_dir: Path, data: bytes, fragment: str
    ) -> None:
        """Latin-1, UTF-16, NUL bytes and mixed line endings are refused with a line and byte
        offset, never a cell value, in the result and the reason file."""
        result = _refused(box, outbox_dir, "referrals.csv", data, ReasonCode.ENCODING)
        assert fragment in result.detail
        text = result.reason_path.read_text()
        for cell in ("Zo", "Carter", "Essex", "Barnardo"):
            assert cell not in text
        assert stat.S_IMODE(result.reason_path.stat().st_mode) == 0o600

    @pytest.mark.parametrize(
        ("header", "fragment"),
        [
            (b"case_id,agency,referral_date,NHS_number", 'not in the agreement: "NHS_number"'),
            (b"case_id,agency,referral_dt", 'columns missing: "referral_date"'),
            (b"case_id,agency,referral_date,agency", 'duplicate columns: "agency"'),
            (b"case_id,agency", 'columns missing: "referral_date"'),
        ],
        ids=["extra", "renamed", "duplicate", "missing"],
    )
    def test_columns_not_matching_the_agreement_are_quarantined(
        self, box: Outbox, outbox_dir: Path, header: bytes, fragment: str
    ) -> None:
        """Extra, renamed, duplicate or missing columns are refused as schema-mismatch, naming
        the columns and never a cell value."""
        data = header + b"\n1042,Essex Police,2026-11-02,9434765919\n"
        result = _refused(box, outbox_dir, "referrals.csv", data, ReasonCode.SCHEMA_MISMATCH)
        assert fragment in result.detail
        assert b"9434765919" not in result.reason_path.read_bytes()

    def test_header_only_is_empty(self, box: Outbox, outbox_dir: Path) -> None:
        """A file with the right header and no rows is refused as empty, with its hash."""
        result = _refused(
            box, outbox_dir, "referrals.csv", b"case_id,agency,referral_date\n", ReasonCode.EMPTY
        )
        assert result.sha256 is not None


class TestNames:
    @pytest.mark.parametrize(
        "name",
        [
            b"new\nline.csv",
            b"carriage\rreturn.csv",
            b"bell\x07.csv",
            b"-rf.csv",
            b"\xff\xfe latin.csv",
            "zero\u200bwidth.csv".encode(),
        ],
        ids=["newline", "cr", "control", "leading-dash", "non-utf8", "zero-width"],
    )
    def test_hostile_names_are_quarantined_under_a_safe_name(
        self, box: Outbox, outbox_dir: Path, name: bytes
    ) -> None:
        """Unsafe names are refused; the quarantine name is allow-listed ASCII and the reason
        file keeps the exact original bytes as hex."""
        with capture_logs() as logs:
            result = _refused(box, outbox_dir, name, GOOD, ReasonCode.NAME_UNSAFE)
        assert set(result.path.name) <= SAFE_CHARS
        assert name.hex() == _reason(result)["original_name_hex"]
        assert name == result.original_name
        assert [(name, "name-unsafe")] == [(e["file"], e["reason_code"]) for e in logs]

    def test_255_byte_name_is_taken(self, box: Outbox, outbox_dir: Path) -> None:
        """A name of the maximum length is a valid dataset name."""
        name = b"r" * 251 + b".csv"
        _drop(outbox_dir, name, GOOD)
        assert isinstance(box.take(name, RULES), Taken)

    def test_255_byte_name_refused_fits_in_quarantine(self, box: Outbox, outbox_dir: Path) -> None:
        """A refused 255-byte name gets a quarantine name and reason name within NAME_MAX."""
        result = _refused(
            box,
            outbox_dir,
            b"r" * 251 + b".csv",
            b"wrong,header\n1,2\n",
            ReasonCode.SCHEMA_MISMATCH,
        )
        assert len(result.reason_path.name) <= 255

    def test_same_name_same_instant_gets_a_unique_quarantine_name(
        self, workspace: Path, outbox_dir: Path
    ) -> None:
        """Two refusals of the same name at the same instant never overwrite each other."""
        with _open(workspace, clock=FixedClock()) as box:
            first = _refused(box, outbox_dir, "x.csv", b"", ReasonCode.EMPTY)
            second = _refused(box, outbox_dir, "x.csv", b"", ReasonCode.EMPTY)
        assert first.path != second.path
        assert len(_entries(box.quarantine_dir)) == 4


class TestChanges:
    def test_slowly_written_file_is_not_taken_until_stable(
        self, box: Outbox, outbox_dir: Path
    ) -> None:
        """A writer appending every 0.1 s for 1 s is only taken once stable, and complete."""
        rows = [b"%d,Essex Police,2026-11-02\n" % i for i in range(10)]
        path = outbox_dir / "slow.csv"
        path.write_bytes(b"case_id,agency,referral_date\n")
        finished = threading.Event()

        def writer() -> None:
            for row in rows:
                time.sleep(0.1)
                with path.open("ab") as file:
                    file.write(row)
            finished.set()

        thread = threading.Thread(target=writer)
        thread.start()
        tracker: StabilityTracker[bytes] = StabilityTracker(0.4)
        try:
            while True:
                observation = box.observe(b"slow.csv")
                assert observation is not None
                if isinstance(tracker.observe(b"slow.csv", observation, time.monotonic()), Stable):
                    break
                time.sleep(0.05)
            assert finished.is_set()
            taken = box.take(b"slow.csv", RULES)
        finally:
            thread.join()
        assert isinstance(taken, Taken)
        assert path.read_bytes() == taken.spool_path.read_bytes()

    @pytest.mark.parametrize("how", ["append", "replace", "rewrite-in-place", "truncate"])
    def test_file_changed_while_being_read_is_not_taken(
        self, box: Outbox, outbox_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
    ) -> None:
        """Appending to, renaming over, or rewriting the file during the read abandons the
        attempt: Retry(CHANGED), nothing in the spool, nothing quarantined."""
        path = outbox_dir / "referrals.csv"
        path.write_bytes(GOOD)
        real_read = os.read
        done = []

        def meddling_read(fd: int, size: int) -> bytes:
            if not done:
                done.append(True)
                if how == "append":
                    with path.open("ab") as file:
                        file.write(b"1044,Thurrock Council,2026-11-04\r\n")
                elif how == "replace":
                    (outbox_dir / ".new").write_bytes(GOOD)
                    (outbox_dir / ".new").rename(path)
                elif how == "truncate":
                    os.truncate(path, 10)
                else:
                    with path.open("r+b") as file:
                        file.write(b"CASE")
            return real_read(fd, size)

        monkeypatch.setattr(outbox_module.os, "read", meddling_read)
        result = box.take(b"referrals.csv", RULES)
        monkeypatch.undo()
        assert isinstance(result, Retry)
        assert result.reason == ReasonCode.CHANGED
        assert _entries(box.spool_dir) == []
        assert _entries(box.quarantine_dir) == []
        assert _entries(outbox_dir) == [b"referrals.csv"]

    def test_file_replaced_after_taking_is_not_removed(self, box: Outbox, outbox_dir: Path) -> None:
        """If the name holds a new file when the original is to be removed, the new file stays."""
        path = outbox_dir / "referrals.csv"
        path.write_bytes(GOOD)
        taken = box.take(b"referrals.csv", RULES)
        assert isinstance(taken, Taken)
        path.unlink()
        path.write_bytes(GOOD + b"1044,Thurrock Council,2026-11-04\r\n")
        result = box.remove_original(taken)
        assert isinstance(result, Retry)
        assert result.reason == ReasonCode.CHANGED
        assert path.exists()

    def test_same_content_twice_has_the_same_hash_and_goes_to_quarantine_as_duplicate(
        self, box: Outbox, outbox_dir: Path
    ) -> None:
        """The same bytes under another name hash the same; the caller's duplicate verdict
        moves the original to quarantine and keeps the spool copy."""
        _drop(outbox_dir, "monday.csv", GOOD)
        first = box.take(b"monday.csv", RULES)
        assert isinstance(first, Taken)
        box.remove_original(first)
        _drop(outbox_dir, "tuesday.csv", GOOD)
        second = box.take(b"tuesday.csv", RULES)
        assert isinstance(second, Taken)
        assert (first.sha256, True) == (second.sha256, second.already_spooled)
        result = box.quarantine_original(
            second, ReasonCode.DUPLICATE, "same content as an earlier dataset"
        )
        assert isinstance(result, Quarantined)
        assert second.sha256.hex == _reason(result)["sha256"]
        assert first.spool_path.read_bytes() == GOOD
        assert _entries(outbox_dir) == []


class TestPermissions:
    def test_unreadable_file_is_left_in_place_and_reported(
        self, box: Outbox, outbox_dir: Path
    ) -> None:
        """A mode-000 file, taken by a non-root uid (a forked child that drops to nobody with
        setresuid, since root ignores mode bits), is Retry(PERMISSION) on every attempt and
        left untouched; it can be quarantined on purpose afterwards."""
        path = outbox_dir / "locked.csv"
        path.write_bytes(GOOD)
        path.chmod(0)
        outbox_dir.chmod(0o755)

        def as_nobody() -> object:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            return [box.take(b"locked.csv", RULES) for _ in range(3)]

        results = _in_child(as_nobody)
        reason = ReasonCode.PERMISSION
        assert [("Retry", reason)] * 3 == [(type(r).__name__, r.reason) for r in results]  # type: ignore[attr-defined]
        assert stat.S_IMODE(path.stat().st_mode) == 0
        assert [] == _entries(box.spool_dir) == _entries(box.quarantine_dir)
        moved = box.quarantine(b"locked.csv", reason, "unreadable for a week")
        assert isinstance(moved, Quarantined)
        assert _entries(outbox_dir) == []


def _in_child(work: Callable[[], object]) -> object:
    """Run ``work`` in a forked child; return its pickled result (None if it exited early)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            result = work()
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(result, pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pickle.loads(data) if data else None  # noqa: S301 - our own child


class TestReconcile:
    def test_quarantined_entries_are_read_back_from_their_reason_files(
        self, box: Outbox, outbox_dir: Path
    ) -> None:
        """After a crash past the move, quarantined() lists each entry with its reason; a
        reason file left without its entry (a crash before the move) is not listed."""
        first = _refused(box, outbox_dir, b"bad\xff.csv", GOOD, ReasonCode.NAME_UNSAFE)
        second = _refused(box, outbox_dir, "empty.csv", b"", ReasonCode.EMPTY)
        _drop(outbox_dir, "again.csv", b"")

        def die(point: str) -> None:
            if point == "quarantine.after_reason_file":
                os._exit(0)

        _in_child(lambda: box.take(b"again.csv", RULES, crash_point=die))
        assert _entries(outbox_dir) == [b"again.csv"]
        assert sorted([first, second], key=lambda q: q.path) == box.quarantined()

    def test_poisoned_spool_copy_goes_to_quarantine(self, box: Outbox, outbox_dir: Path) -> None:
        """A spool copy can be moved to quarantine with its hash; nothing is deleted."""
        _drop(outbox_dir, "referrals.csv", GOOD)
        taken = box.take(b"referrals.csv", RULES)
        assert isinstance(taken, Taken)
        result = box.quarantine_spool(taken.sha256, ReasonCode.POISONED, "failed 5 attempts")
        assert isinstance(result, Quarantined)
        assert (taken.sha256, len(GOOD)) == (result.sha256, result.size)
        assert result.path.read_bytes() == GOOD
        assert _entries(box.spool_dir) == []
        assert Skipped(SkipReason.VANISHED) == box.quarantine_spool(
            taken.sha256, ReasonCode.POISONED, "again"
        )


@pytest.mark.parametrize("name", [b"sub/x.csv", b"../x.csv", b"", b".."])
def test_a_name_that_is_not_one_entry_is_a_bug(box: Outbox, name: bytes) -> None:
    """A caller passing a path rather than an entry name is stopped before any I/O."""
    with pytest.raises(InvariantError):
        box.take(name, RULES)
    with pytest.raises(InvariantError):
        box.quarantine(name, ReasonCode.PERMISSION, "x")


_RSS_PROBE = """
import resource, sys
from pathlib import Path
from exchange.clock import SystemClock
from exchange.core.intake import IntakeRules
from exchange.outbox import Outbox, Taken
root = Path(sys.argv[1])
rules = IntakeRules(("csv",), ("case_id", "agency", "referral_date"), 1 << 40, False)
box = Outbox("essex-cp", root / "outbox" / "essex-cp", root / "spool", root / "quarantine",
             clock=SystemClock())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = box.take(b"big.csv", rules)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(type(result).__name__, before, after)
"""


def test_a_large_file_streams_in_constant_memory(workspace: Path, outbox_dir: Path) -> None:
    """Taking a 128 MiB CSV (below the cap) raises the peak RSS of a fresh process by less
    than 16 MiB: the content is streamed once, never held whole."""
    row = b"1042,Essex Police,2026-11-02\n"
    block = row * ((1 << 20) // len(row))
    with (outbox_dir / "big.csv").open("wb") as file:
        file.write(b"case_id,agency,referral_date\n")
        for _ in range(128):
            file.write(block)
    result = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(workspace)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    kind, before, after = result.stdout.decode().split()[-3:]
    assert kind == "Taken"
    assert int(after) - int(before) < 16 * 1024  # ru_maxrss is in KiB on Linux
