"""The ledger's receiving side: one row per processed manifest, and the last accepted sequence."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange.errors import InvariantError
from exchange.ledger import LEDGER_FILENAME, Ledger, Received
from exchange.model import DatasetId

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture(name="ledger")
def fixture_ledger(tmp_path: Path) -> Iterator[Ledger]:
    (tmp_path / "state").mkdir()
    with Ledger.open(tmp_path / "state" / LEDGER_FILENAME) as ledger:
        yield ledger


def received(sequence: int, status: str = "accepted", digest: str = "a") -> Received:
    rejected = status == "rejected"
    return Received(
        manifest_hash=digest * 64,
        sender="essex-cc",
        delivery="dl-" + "1" * 32,
        agreement="mash-weekly",
        dataset=DatasetId("ds-" + "2" * 32),
        dataset_version=1,
        sequence=sequence,
        supersedes=None,
        status=status,
        reason="plaintext-mismatch" if rejected else None,
        path=None if rejected else "inbox/essex-cc/mash-weekly/referrals.csv",
        plaintext_sha256=None if rejected else "3" * 64,
        size=None if rejected else 120,
        at=T0,
    )


def test_a_manifest_is_recorded_once_by_hash(ledger: Ledger) -> None:
    """Recording the same manifest hash twice keeps the first row and reports a duplicate."""
    first, new = ledger.record_received(received(4))
    again, new_again = ledger.record_received(replace(received(4), size=999))
    assert (True, False) == (new, new_again)
    assert first == again
    assert 120 == again.size
    assert [first] == ledger.received("essex-cc")
    assert first == ledger.received_by_hash("a" * 64)


def test_last_sequence_counts_accepted_deliveries_only(ledger: Ledger) -> None:
    """A rejected delivery does not advance the sender's last accepted sequence."""
    assert ledger.last_received_sequence("essex-cc") is None
    ledger.record_received(received(3, digest="a"))
    ledger.record_received(received(7, status="rejected", digest="b"))
    assert 3 == ledger.last_received_sequence("essex-cc")
    assert ledger.last_received_sequence("essex-police") is None


def test_received_rows_are_append_only(ledger: Ledger, tmp_path: Path) -> None:
    """An edit behind the ledger's back is refused by a trigger."""
    ledger.record_received(received(1))
    raw = sqlite3.connect(tmp_path / "state" / LEDGER_FILENAME)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE received SET status = 'rejected'")
    finally:
        raw.close()


def test_a_rejection_needs_a_reason_and_no_path(ledger: Ledger) -> None:
    """The schema refuses a rejected row that claims a filed path."""
    bad = replace(received(2, status="rejected"), path="inbox/x.csv")
    with pytest.raises(InvariantError, match="constraint failed"):
        ledger.record_received(bad)
