"""exchange.audit: the hash chain over audit lines names the line where any edit, removal or
reordering happened (pure: lines built in memory)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from exchange.audit import GENESIS, Entry, chain, verify_lines

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _entries(count: int) -> list[Entry]:
    return [
        Entry(
            START + timedelta(minutes=i),
            "delivery.sent",
            f"event:{i + 1}",
            {"delivery": f"dl-{i}", "recipient": "southend-uhft", "agreement": "mash"},
        )
        for i in range(count)
    ]


def _log(count: int) -> list[bytes]:
    return chain(_entries(count))


logs = st.integers(min_value=2, max_value=12).flatmap(
    lambda n: st.tuples(st.just(_log(n)), st.integers(min_value=1, max_value=n))
)


def test_intact_log_verifies_and_reports_its_head() -> None:
    """An untouched log is intact; the head is the last line's hash and chain() continues it."""
    lines = _log(5)
    report = verify_lines(lines)
    assert (True, 5) == (report.ok, report.lines)
    assert json.loads(lines[-1])["hash"] == report.head
    more = chain(_entries(2), seq=5, prev=report.head)
    assert verify_lines(lines + more).ok


def test_empty_log_is_intact() -> None:
    """No lines is a valid (empty) log whose head is the genesis value."""
    report = verify_lines([])
    assert (True, 0, GENESIS) == (report.ok, report.lines, report.head)


@given(logs, st.data())
def test_any_byte_changed_in_a_line_is_detected_at_that_line(
    log: tuple[list[bytes], int], data: st.DataObject
) -> None:
    """Changing any one byte of line k (other than its newline) is reported at line k."""
    lines, k = log
    line = bytearray(lines[k - 1])
    at = data.draw(st.integers(min_value=0, max_value=len(line) - 2))
    new = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != line[at]))
    line[at] = new
    edited = [*lines[: k - 1], *bytes(line).splitlines(keepends=True), *lines[k:]]
    report = verify_lines(edited)
    assert report.problem is not None
    assert (k, k - 1) == (report.problem.line, report.lines)


@given(logs)
def test_a_value_edited_in_a_line_is_detected_at_that_line(log: tuple[list[bytes], int]) -> None:
    """Editing a field's value (keeping valid canonical JSON) fails that line's own hash."""
    lines, k = log
    record = json.loads(lines[k - 1])
    record["data"]["recipient"] = "essex-police"
    edited = list(lines)
    edited[k - 1] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    report = verify_lines(edited)
    assert report.problem is not None
    assert (k, "content does not match its hash") == (report.problem.line, report.problem.what)


@given(logs)
def test_a_removed_line_is_detected_where_it_was(log: tuple[list[bytes], int]) -> None:
    """Deleting line k is reported at line k; deleting the last line needs the anchor."""
    lines, k = log
    removed = lines[: k - 1] + lines[k:]
    report = verify_lines(removed)
    if k < len(lines):
        assert report.problem is not None
        assert k == report.problem.line
        assert "removed or reordered" in report.problem.what
    else:
        assert report.ok  # a cut-off tail is a valid shorter chain ...
        anchored = verify_lines(removed, [(k, json.loads(lines[k - 1])["hash"])])
        assert anchored.problem is not None  # ... which the anchor kept elsewhere exposes
        assert k == anchored.problem.line


@given(logs)
def test_swapped_lines_are_detected_at_the_first_of_them(log: tuple[list[bytes], int]) -> None:
    """Swapping line k with the line after it (or before it, for the last) is reported at the
    earlier of the two positions."""
    lines, k = log
    i = k - 1 if k < len(lines) else k - 2
    swapped = list(lines)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    report = verify_lines(swapped)
    assert report.problem is not None
    assert i + 1 == report.problem.line


@given(logs)
def test_a_rehashed_edit_breaks_the_next_line_or_the_anchor(log: tuple[list[bytes], int]) -> None:
    """An edit whose own hash is recomputed is caught at the next line; on the last line it
    is caught by an anchor of the original head."""
    lines, k = log
    entries = _entries(len(lines))
    forged = Entry(entries[k - 1].at, "delivery.sent", entries[k - 1].key, {"forged": True})
    prev = GENESIS if k == 1 else json.loads(lines[k - 2])["hash"]
    edited = [*lines[: k - 1], *chain([forged], seq=k - 1, prev=prev), *lines[k:]]
    head = json.loads(lines[-1])["hash"]
    report = verify_lines(edited, [(len(lines), head)])
    assert report.problem is not None
    assert min(k + 1, len(lines)) == report.problem.line


def test_torn_last_line_is_reported() -> None:
    """A line without its newline (a crash mid-append) is reported, not silently accepted."""
    lines = _log(3)
    report = verify_lines([*lines[:2], lines[2][:-10]])
    assert report.problem is not None
    assert (3, "incomplete line (no newline)") == (report.problem.line, report.problem.what)


def test_anchor_on_a_line_that_is_not_there_is_reported() -> None:
    """An anchor beyond the end of the log means lines were cut off."""
    report = verify_lines(_log(3), [(7, "a" * 64)])
    assert report.problem is not None
    assert 7 == report.problem.line
