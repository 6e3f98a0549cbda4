"""The ledger against a real SQLite file: schema, constraints, transitions, corruption, locks."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exchange.core import delivery as lc
from exchange.core.delivery import DeliveryState
from exchange.errors import InvariantError, LedgerBusy, LedgerCorrupt, LedgerError, RefusedError
from exchange.ledger import (
    LEDGER_FILENAME,
    MIGRATIONS,
    DuplicateContent,
    Ledger,
    LedgerFull,
    Version,
)
from exchange.model import DatasetId, ReasonCode, Sha256, VersionKind

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
AGREEMENT = "essex-cp-referrals"
POLICE = "essex-police"
TRUST = "southend-hospital"


def sha(n: int) -> Sha256:
    return Sha256(f"{n:064x}")


def new_dataset() -> DatasetId:
    return DatasetId.from_uuid(uuid.uuid4())


@pytest.fixture(name="path")
def fixture_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / LEDGER_FILENAME


@pytest.fixture(name="ledger")
def fixture_ledger(path: Path) -> Iterator[Ledger]:
    path.parent.mkdir()
    with Ledger.open(path) as ledger:
        yield ledger


def take(
    ledger: Ledger,
    content: int = 1,
    recipients: tuple[str, ...] = (POLICE, TRUST),
    name: bytes = b"referrals.csv",
) -> tuple[Version, list[str]]:
    ids = [str(uuid.uuid4()) for _ in recipients]
    version = ledger.record_intake(
        dataset=new_dataset(),
        agreement=AGREEMENT,
        original_name=name,
        sha256=sha(content),
        size=1234,
        spool_path=f"spool/{sha(content)}",
        recipients=list(zip(ids, recipients, strict=True)),
        now=T0,
    )
    return version, ids


def send(ledger: Ledger, delivery_id: str, manifest: str = "m" * 64) -> None:
    ledger.begin_upload(delivery_id, f"{delivery_id}.age", T0)
    ledger.apply(
        delivery_id,
        lc.UploadCompleted(
            ciphertext_sha256="c" * 64,
            size=2000,
            duration=timedelta(milliseconds=1500),
            manifest_hash=manifest,
        ),
        T0,
    )


# --- schema -----------------------------------------------------------------------------------


def test_migrates_an_empty_file_to_the_latest_schema(ledger: Ledger, path: Path) -> None:
    """A new ledger is created 0600, in WAL mode, at the newest schema version."""
    assert len(MIGRATIONS) == ledger.schema_version
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        probe.close()


def test_shipped_migrations_are_never_edited() -> None:
    """Each shipped migration's text is pinned: change the schema by appending one."""
    shipped = ["7f619386697f2da06459d3b272232bc17d4fdac90d6c9c4e07b8f444cb1c8fd5"]
    assert shipped == [hashlib.sha256(m.encode()).hexdigest() for m in MIGRATIONS[: len(shipped)]]


def test_schema_knows_every_delivery_state(ledger: Ledger, path: Path) -> None:
    """The delivery_states table holds exactly the states of the lifecycle table."""
    probe = sqlite3.connect(path)
    try:
        stored = {row[0] for row in probe.execute("SELECT name FROM delivery_states")}
    finally:
        probe.close()
    assert {state.value for state in DeliveryState} == stored


def test_reopen_keeps_data_and_does_not_migrate_again(path: Path) -> None:
    """Reopening finds the same rows and the same schema version."""
    path.parent.mkdir()
    with Ledger.open(path) as ledger:
        version, ids = take(ledger)
    with Ledger.open(path) as again:
        assert len(MIGRATIONS) == again.schema_version
        assert version == again.get_version(version.id)
        assert {POLICE, TRUST} == {d.recipient for d in again.deliveries()}
        assert again.get_delivery(ids[0]).state == DeliveryState.PENDING


def test_a_newer_schema_is_refused(path: Path) -> None:
    """A ledger written by a newer release is not opened (and not downgraded)."""
    path.parent.mkdir()
    Ledger.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(LedgerError, match="newer than this exchange supports"):
        Ledger.open(path)


def test_missing_state_directory_is_a_clear_error(path: Path) -> None:
    """Opening in a directory that does not exist names the path and says what to check."""
    with pytest.raises(LedgerError, match="cannot create the ledger") as caught:
        Ledger.open(path)
    assert caught.value.hint is not None and "state directory" in caught.value.hint


def test_foreign_keys_are_enforced(ledger: Ledger) -> None:
    """A delivery for a version that does not exist is refused by the foreign key."""
    with pytest.raises(InvariantError, match="FOREIGN KEY"):
        ledger.add_delivery(str(uuid.uuid4()), 999, POLICE, T0)


def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    """Times must be aware: a naive one is a bug in the caller."""
    with pytest.raises(InvariantError, match="naive"):
        ledger.add_run(AGREEMENT, datetime(2026, 3, 2, 9, 0))


def test_names_are_stored_as_raw_bytes(ledger: Ledger) -> None:
    """A non-UTF-8 name with a newline comes back byte for byte."""
    name = b"r\xe9f\nerrals.csv"
    version, _ = take(ledger, name=name)
    assert name == ledger.get_dataset(version.dataset).original_name


# --- uniqueness -------------------------------------------------------------------------------


def test_same_content_twice_is_a_duplicate(ledger: Ledger) -> None:
    """Taking content already taken under the agreement raises DuplicateContent naming it."""
    first, _ = take(ledger, content=7)
    with pytest.raises(DuplicateContent) as caught:
        take(ledger, content=7)
    assert first == caught.value.existing
    assert len(ledger.deliveries()) == 2
    assert [first] == ledger.versions_with_content(AGREEMENT, sha(7))


def test_one_delivery_per_version_and_recipient(ledger: Ledger) -> None:
    """A second delivery of a version to the same recipient is refused and writes nothing."""
    version, _ = take(ledger)
    with pytest.raises(InvariantError, match="already has delivery"):
        ledger.add_delivery(str(uuid.uuid4()), version.id, POLICE, T0)
    assert len(ledger.deliveries()) == 2


def test_a_retried_delivery_id_is_refused(ledger: Ledger) -> None:
    """Reusing a delivery id (a replayed create) violates the primary key."""
    version, ids = take(ledger, recipients=(POLICE,))
    with pytest.raises(InvariantError, match="UNIQUE"):
        ledger.add_delivery(ids[0], version.id, TRUST, T0)


def test_receipts_are_deduplicated_by_manifest_hash(ledger: Ledger) -> None:
    """A second receipt over the same manifest (another signature) adds no row or event."""
    _, ids = take(ledger, recipients=(POLICE,))
    send(ledger, ids[0])
    receipt = lc.ReceiptAccepted(manifest_hash="m" * 64, status="accepted")
    first, new = ledger.record_receipt(ids[0], receipt, T0)
    assert new and first.state == DeliveryState.ACKNOWLEDGED
    events = ledger.events(ids[0])
    again, new_again = ledger.record_receipt(ids[0], receipt, T0 + timedelta(hours=1))
    assert not new_again
    assert first == again
    assert events == ledger.events(ids[0])


def test_receipt_for_another_manifest_is_a_bug(ledger: Ledger) -> None:
    """A receipt whose manifest hash is not the delivery's raises and records nothing."""
    _, ids = take(ledger, recipients=(POLICE,))
    send(ledger, ids[0])
    with pytest.raises(InvariantError, match="another manifest"):
        ledger.record_receipt(ids[0], lc.ReceiptAccepted("x" * 64, "accepted"), T0)
    assert ledger.get_delivery(ids[0]).state == DeliveryState.SENT


# --- transitions ------------------------------------------------------------------------------


def test_illegal_transition_raises_and_writes_nothing(ledger: Ledger) -> None:
    """A receipt for a pending delivery raises InvariantError; state and events are unchanged."""
    _, ids = take(ledger, recipients=(POLICE,))
    before = (ledger.get_delivery(ids[0]), ledger.events(ids[0]))
    with pytest.raises(InvariantError, match="illegal transition ReceiptAccepted"):
        ledger.apply(ids[0], lc.ReceiptAccepted("m" * 64, "accepted"), T0)
    assert before == (ledger.get_delivery(ids[0]), ledger.events(ids[0]))


def test_failed_transaction_rolls_back_earlier_steps(ledger: Ledger) -> None:
    """In one transaction, a legal step followed by an illegal one leaves neither."""
    _, ids = take(ledger, recipients=(POLICE,))
    with pytest.raises(InvariantError), ledger.transaction():
        ledger.begin_upload(ids[0], "x.age", T0)
        ledger.apply(ids[0], lc.Resumed(note="nothing to resume"), T0)
    current = ledger.get_delivery(ids[0])
    assert (current.state, current.attempts, current.sequence) == (DeliveryState.PENDING, 0, None)
    assert [event.event for event in ledger.events(ids[0])] == ["Created"]


def test_a_caught_inner_failure_is_undone_before_the_outer_commit(ledger: Ledger) -> None:
    """An inner block that raises is rolled back to its savepoint even if the caller carries on."""
    _, ids = take(ledger, recipients=(POLICE,))
    with ledger.transaction():
        try:
            with ledger.transaction():
                ledger.begin_upload(ids[0], "x.age", T0)
                raise RuntimeError("worker failed")
        except RuntimeError:
            pass
        ledger.apply(ids[0], lc.Cancelled("agreement expired"), T0)
    current = ledger.get_delivery(ids[0])
    assert (current.state, current.attempts, current.sequence) == (DeliveryState.CANCELLED, 0, None)
    assert [event.event for event in ledger.events(ids[0])] == ["Created", "Cancelled"]


def test_intent_is_recorded_before_acting(ledger: Ledger) -> None:
    """begin_upload records the remote name, counts the attempt and draws a sequence number."""
    _, ids = take(ledger)
    started = ledger.begin_upload(ids[0], "0001.age", T0)
    assert started.state == DeliveryState.UPLOADING
    assert (started.remote_name, started.attempts, started.sequence) == ("0001.age", 1, 1)
    event = ledger.events(ids[0])[-1]
    assert (
        event.from_state,
        event.to_state,
        event.event,
    ) == (DeliveryState.PENDING, DeliveryState.UPLOADING, "UploadStarted")


def test_sequence_rises_per_recipient_in_upload_order(ledger: Ledger) -> None:
    """Each attempt to a recipient gets the next number, so a retry is never a 'replay'."""
    _, first = take(ledger, content=1)
    _, second = take(ledger, content=2)
    ledger.begin_upload(first[0], "a.age", T0)
    ledger.apply(first[0], lc.UploadFailed("hub-unreachable", T0), T0)
    ledger.begin_upload(second[0], "b.age", T0)
    retried = ledger.begin_upload(first[0], "a.age", T0)
    other = ledger.begin_upload(first[1], "c.age", T0)
    assert (retried.sequence, retried.attempts) == (3, 2)
    assert ledger.get_delivery(second[0]).sequence == 2
    assert other.sequence == 1


def test_remote_name_cannot_change_between_attempts(ledger: Ledger) -> None:
    """The remote name is deterministic; a different one on retry is a bug."""
    _, ids = take(ledger)
    ledger.begin_upload(ids[0], "a.age", T0)
    ledger.apply(ids[0], lc.UploadFailed("timeout", T0), T0)
    with pytest.raises(InvariantError, match="remote name changed"):
        ledger.begin_upload(ids[0], "b.age", T0)


def test_ciphertext_recorded_before_rename_completes_after_restart(path: Path) -> None:
    """After a crash past the rename, the recorded digest lets a restart mark the delivery sent."""
    path.parent.mkdir()
    with Ledger.open(path) as ledger:
        _, ids = take(ledger, recipients=(POLICE,))
        ledger.begin_upload(ids[0], "a.age", T0)
        ledger.record_ciphertext(
            ids[0],
            ciphertext_sha256="c" * 64,
            size=9,
            manifest_hash="m" * 64,
            sealed_sha256="s" * 64,
            now=T0,
        )
    with Ledger.open(path) as restarted:
        (inflight,) = restarted.deliveries(DeliveryState.UPLOADING)
        assert inflight.ciphertext_sha256 is not None and inflight.size is not None
        assert inflight.manifest_hash is not None
        done = restarted.apply(
            inflight.id,
            lc.UploadCompleted(
                inflight.ciphertext_sha256, inflight.size, timedelta(0), inflight.manifest_hash
            ),
            T0,
        )
        assert done.state == DeliveryState.SENT
        assert done.sent_at == T0
        with pytest.raises(InvariantError, match="in state sent"):
            restarted.record_ciphertext(
                inflight.id,
                ciphertext_sha256="d" * 64,
                size=9,
                manifest_hash="n" * 64,
                sealed_sha256="t" * 64,
                now=T0,
            )


def test_completion_must_match_the_recorded_ciphertext(ledger: Ledger) -> None:
    """A completion reporting other bytes than were recorded before the rename is a bug."""
    _, ids = take(ledger)
    ledger.begin_upload(ids[0], "a.age", T0)
    ledger.record_ciphertext(
        ids[0],
        ciphertext_sha256="c" * 64,
        size=9,
        manifest_hash="m" * 64,
        sealed_sha256="s" * 64,
        now=T0,
    )
    with pytest.raises(InvariantError, match="differs from the recorded"):
        ledger.apply(ids[0], lc.UploadCompleted("e" * 64, 9, timedelta(0), "m" * 64), T0)


def test_retry_and_strikes(ledger: Ledger) -> None:
    """Transient failures schedule a retry; only interruptions count as strikes."""
    _, ids = take(ledger)
    later = T0 + timedelta(minutes=5)
    ledger.begin_upload(ids[0], "a.age", T0)
    failed = ledger.apply(ids[0], lc.UploadFailed("hub-unreachable", later), T0)
    assert (DeliveryState.RETRY_WAIT, later, 0) == (
        failed.state,
        failed.next_attempt_at,
        failed.strikes,
    )
    assert ledger.retries_due(T0) == []
    assert [ids[0]] == [d.id for d in ledger.retries_due(later)]
    ledger.begin_upload(ids[0], "a.age", later)
    interrupted = ledger.apply(ids[0], lc.UploadInterrupted("found in flight", later), later)
    assert (
        interrupted.attempts,
        interrupted.strikes,
        interrupted.last_error,
    ) == (2, 1, "found in flight")


def test_a_correction_supersedes_pending_deliveries(ledger: Ledger) -> None:
    """A correction of the latest version supersedes its unsent deliveries, and only once."""
    first, ids = take(ledger)
    send(ledger, ids[0])
    correction = ledger.add_version(
        dataset=first.dataset,
        sha256=sha(99),
        size=10,
        spool_path="spool/99",
        kind=VersionKind.CORRECTION,
        reason="postcode column was wrong",
        complaint_ref="ECC-2026-0142",
        supersedes=first.id,
        recipients=[(str(uuid.uuid4()), POLICE), (str(uuid.uuid4()), TRUST)],
        now=T0,
    )
    assert (2, first.id) == (correction.number, correction.supersedes)
    assert ledger.get_delivery(ids[1]).state == DeliveryState.SUPERSEDED
    assert ledger.get_delivery(ids[0]).state == DeliveryState.SENT
    assert {POLICE} == ledger.holders(first.dataset)
    with pytest.raises(RefusedError, match="must supersede the latest version"):
        ledger.add_version(
            dataset=first.dataset,
            sha256=sha(100),
            size=10,
            spool_path="spool/100",
            kind=VersionKind.CORRECTION,
            reason="again",
            supersedes=first.id,
            recipients=[],
            now=T0,
        )


def test_manual_send_needs_a_reason(ledger: Ledger) -> None:
    """A manual version without a reason is refused by the schema (protocol §3)."""
    first, _ = take(ledger)
    with pytest.raises(InvariantError, match="CHECK"):
        ledger.add_version(
            dataset=first.dataset,
            sha256=sha(5),
            size=1,
            spool_path="s",
            kind=VersionKind.MANUAL,
            reason=None,  # type: ignore[arg-type]
            recipients=[],
            now=T0,
        )


# --- append-only and the chain ----------------------------------------------------------------


def test_event_log_is_append_only_and_chained(ledger: Ledger, path: Path) -> None:
    """The event log refuses edits, and an edit made after dropping the trigger breaks the chain."""
    _, ids = take(ledger)
    send(ledger, ids[0])
    assert ledger.verify_chain() is None
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE delivery_events SET reason = 'edited'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM versions")
        raw.execute("DROP TRIGGER delivery_events_no_update")
        raw.execute("UPDATE delivery_events SET reason = 'edited' WHERE id = 3")
    finally:
        raw.close()
    assert ledger.verify_chain() == 3


# --- corruption and locks ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["all pages", "data pages"])
def test_corrupt_ledger_is_refused_and_left_unchanged(path: Path, where: str) -> None:
    """A ledger with damaged pages (schema or data) is refused and its bytes are not touched."""
    path.parent.mkdir()
    with Ledger.open(path) as ledger, ledger.transaction():
        for n in range(1000):
            take(ledger, content=n)
    data = bytearray(path.read_bytes())
    start = 4096 * 3 if where == "all pages" else len(data) - 4096 * 20
    for offset in range(start, len(data) - 4096, 4096):
        data[offset + 100 : offset + 400] = b"\xa5" * 300
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerCorrupt) as caught:
        Ledger.open(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert bytes(data) == path.read_bytes()


def test_a_file_that_is_not_a_database_is_refused_unchanged(path: Path) -> None:
    """Random bytes where the ledger should be are refused as corrupt and not overwritten."""
    path.parent.mkdir()
    junk = bytes(range(256)) * 64
    path.write_bytes(junk)
    with pytest.raises(LedgerCorrupt):
        Ledger.open(path)
    assert junk == path.read_bytes()


def test_locked_ledger_raises_busy_after_the_timeout(ledger: Ledger, path: Path) -> None:
    """While another connection holds the write lock, a write gives up with LedgerBusy."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with Ledger.open(path, busy_timeout=0.2) as second:
            with pytest.raises(LedgerBusy) as caught:
                take(second)
            assert caught.value.transient
            assert second.deliveries() == []  # reads still work under WAL
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    take(ledger)
    assert len(ledger.deliveries()) == 2


def test_disk_full_rolls_back_and_is_transient(ledger: Ledger) -> None:
    """SQLITE_FULL (simulated by capping the page count) raises LedgerFull and writes nothing."""
    take(ledger, content=1)
    pages = ledger._db.execute("PRAGMA page_count").fetchone()[0]  # fault injection
    ledger._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(LedgerFull) as caught, ledger.transaction():
        for n in range(2, 500):
            take(ledger, content=n)
    assert caught.value.transient
    assert 2 == len(ledger.deliveries())
    ledger._db.execute("PRAGMA max_page_count = 1073741823")
    take(ledger, content=2)
    assert 4 == len(ledger.deliveries())


def test_swallowed_disk_full_cannot_commit_half_a_transaction(ledger: Ledger) -> None:
    """If SQLite ended the transaction and the caller swallows the error, nothing commits."""
    take(ledger, content=1)
    pages = ledger._db.execute("PRAGMA page_count").fetchone()[0]  # fault injection
    ledger._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(LedgerError, match="rolled the transaction back"), ledger.transaction():
        try:
            with ledger.transaction():
                for n in range(2, 500):
                    take(ledger, content=n)
        except LedgerFull:
            pass
    assert 2 == len(ledger.deliveries())


# --- incidents, quarantine, runs --------------------------------------------------------------


def test_incidents_deduplicate_while_open(ledger: Ledger) -> None:
    """Repeats of an open incident count occurrences; after closing, a repeat opens a new one."""
    key = f"host-key:{POLICE}"
    first = ledger.open_incident(
        reason=ReasonCode.HOST_KEY_MISMATCH,
        now=T0,
        partner=POLICE,
        dedupe_key=key,
        context={"fingerprint": "SHA256:abc", "attempt": 1},
    )
    again = ledger.open_incident(
        reason=ReasonCode.HOST_KEY_MISMATCH, now=T0 + timedelta(minutes=1), dedupe_key=key
    )
    assert (first.id, 2) == (again.id, again.occurrences)
    assert dict(again.context) == {"fingerprint": "SHA256:abc", "attempt": 1}
    closed = ledger.close_incident(first.id, "re-pinned after a call with Essex Police", T0)
    assert closed.closed_at == T0
    with pytest.raises(RefusedError, match="already closed"):
        ledger.close_incident(first.id, "twice", T0)
    fresh = ledger.open_incident(reason=ReasonCode.HOST_KEY_MISMATCH, now=T0, dedupe_key=key)
    assert fresh.id != first.id
    assert [fresh] == ledger.incidents()
    assert len(ledger.incidents(open_only=False)) == 2


def test_incident_context_must_be_scalars(ledger: Ledger) -> None:
    """Context values are ids, sizes and codes: a nested structure is refused."""
    with pytest.raises(InvariantError, match="not a scalar"):
        ledger.open_incident(
            reason=ReasonCode.REPLAY,
            now=T0,
            context={"rows": ["x"]},  # type: ignore[dict-item]
        )


def test_closing_needs_a_note(ledger: Ledger) -> None:
    """An incident cannot be closed without saying what was done."""
    incident = ledger.open_incident(reason=ReasonCode.REPLAY, now=T0)
    with pytest.raises(RefusedError, match="needs a note"):
        ledger.close_incident(incident.id, "  ", T0)


def test_quarantine_is_recorded_once_per_path(ledger: Ledger) -> None:
    """Recording the same quarantined path twice (a restart) keeps one record."""
    kwargs = {
        "agreement": AGREEMENT,
        "original_name": b"-rf\n.csv",
        "path": "quarantine/essex-cp-referrals/0001",
        "reason": ReasonCode.NAME_UNSAFE,
        "detail": "file name starts with '-'",
    }
    first = ledger.record_quarantine(now=T0, **kwargs)  # type: ignore[arg-type]
    second = ledger.record_quarantine(now=T0 + timedelta(hours=1), **kwargs)  # type: ignore[arg-type]
    assert first == second
    assert [first] == ledger.quarantined(AGREEMENT)
    assert ledger.quarantined("other") == []


def test_a_run_that_fell_due_is_done_once(ledger: Ledger) -> None:
    """Adding the same due run twice records one; finishing it twice finishes it once."""
    due = T0 - timedelta(days=2)
    assert ledger.add_run(AGREEMENT, due)
    assert not ledger.add_run(AGREEMENT, due)
    assert [due] == [run.due_at for run in ledger.runs_not_done()]
    assert ledger.finish_run(AGREEMENT, due, T0)
    assert not ledger.finish_run(AGREEMENT, due, T0)
    assert ledger.runs_not_done(AGREEMENT) == []
    last = ledger.last_run(AGREEMENT)
    assert last is not None and last.done_at == T0
    with pytest.raises(InvariantError, match="never added"):
        ledger.finish_run(AGREEMENT, T0, T0)


# --- volume -----------------------------------------------------------------------------------


def test_hundred_thousand_deliveries_and_a_status_query(ledger: Ledger) -> None:
    """100,000 deliveries go in, and the status aggregate counts every one of them."""
    recipients = tuple(f"partner-{n}" for n in range(5))
    with ledger.transaction():
        for n in range(20_000):
            take(ledger, content=n, recipients=recipients)
    ledger.begin_upload(ledger.deliveries(recipient="partner-0")[0].id, "x.age", T0)
    rows = ledger.status()
    assert sum(row.count for row in rows) == 100_000
    assert {(AGREEMENT, "partner-0", DeliveryState.UPLOADING, 1)} <= {
        (r.agreement, r.recipient, r.state, r.count) for r in rows
    }
