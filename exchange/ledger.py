"""The ledger: what was taken, what was sent to whom and when, and every decision on the way.

Rules:

1. This is the only module that imports :mod:`sqlite3`. Callers get frozen dataclasses back
   (defined in :mod:`exchange.ledger_records`, re-exported here), never rows or cursors.
2. Durability first: WAL with ``synchronous=FULL``, ``foreign_keys=ON``, a ``busy_timeout``.
   ``PRAGMA integrity_check`` runs on a *read-only* connection before anything else; a corrupt
   ledger raises :class:`~exchange.errors.LedgerCorrupt` and is never written, migrated or
   overwritten. A lock held past the timeout raises :class:`~exchange.errors.LedgerBusy`.
3. The schema moves forward only, by ``PRAGMA user_version``: :data:`MIGRATIONS` (in
   :mod:`exchange.ledger_schema`) is a list of scripts, each applied in one transaction
   together with its version bump. A shipped migration is never edited; append one.
4. Every delivery state change goes through :func:`exchange.core.delivery.step` in the same
   transaction that appends its row to ``delivery_events``; an illegal transition raises
   before anything is written. ``delivery_events``, ``datasets``, ``versions`` and
   ``receipts`` are append-only (triggers refuse UPDATE and DELETE), and each event row carries
   a SHA-256 chain over the previous one, so an edit made behind the ledger's back shows.
5. Intent is written before acting (``begin_upload`` before the first byte,
   ``record_ciphertext`` before the remote rename), so a restart knows what was in flight.
6. Unique constraints make retries harmless: one delivery per (version, recipient), one
   receipt per manifest hash, one run per (agreement, due time), one open incident per
   dedupe key, one quarantine record per quarantined path.
7. Time is always passed in as an aware datetime and stored as fixed-width UTC text, so text
   order is time order. Nothing here reads the clock.
8. File names are data: stored as BLOBs of the raw bytes, never decoded here.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from exchange.core import delivery as lifecycle
from exchange.core.delivery import DeliveryState, Event
from exchange.errors import (
    InvariantError,
    LedgerBusy,
    LedgerCorrupt,
    LedgerError,
    NotFoundError,
    RefusedError,
)
from exchange.ledger_records import (
    ATTEMPT_SELECT,
    DELIVERY_SELECT,
    INCIDENT_SELECT,
    QUARANTINE_SELECT,
    RECEIVED_SELECT,
    VERSION_SELECT,
    Attempt,
    Dataset,
    Delivery,
    DeliveryEvent,
    DuplicateContent,
    Incident,
    LedgerFull,
    QuarantineRecord,
    Received,
    Run,
    StatusRow,
    Version,
    attempt_from_row,
    delivery_from_row,
    from_opt_text,
    from_text,
    incident_from_row,
    quarantine_from_row,
    received_from_row,
    to_text,
    version_from_row,
)
from exchange.ledger_schema import MIGRATIONS
from exchange.model import DatasetId, ReasonCode, Sha256, VersionKind

# The records are part of this module's interface: callers import them from here.
__all__ = [
    "LEDGER_FILENAME",
    "MIGRATIONS",
    "Attempt",
    "Dataset",
    "Delivery",
    "DeliveryEvent",
    "DuplicateContent",
    "Incident",
    "Ledger",
    "LedgerFull",
    "QuarantineRecord",
    "Received",
    "Run",
    "StatusRow",
    "Version",
]


#: The ledger's file name inside the workspace's ``state/`` directory.
LEDGER_FILENAME = "ledger.sqlite3"

_CHAIN_START = "0" * 64


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (triggers hold semicolons, so ';' alone will not do)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise InvariantError("ledger: migration script ends inside a statement")


def _translate(error: sqlite3.Error, path: Path) -> Exception:
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return LedgerBusy(f"{path}: the ledger is locked by another process")
    if primary == sqlite3.SQLITE_FULL:
        return LedgerFull(f"{path}: disk full while writing the ledger")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return LedgerCorrupt(f"{path}: the ledger is damaged ({error})")
    if isinstance(error, sqlite3.IntegrityError):
        return InvariantError(f"ledger: constraint failed: {error}")
    return LedgerError(f"{path}: ledger error: {error}", hint="check the state directory")


def _event_reason(event: Event) -> str | None:
    match event:
        case lifecycle.UploadStarted(remote_name=name):
            return f"remote name {name}"
        case lifecycle.UploadCompleted(size=size):
            return f"{size} bytes"
        case lifecycle.Resumed(note=note):
            return note
        case lifecycle.ReceiptAccepted(status=status):
            return status
        case lifecycle.Superseded(by_version=number):
            return f"superseded by version {number}"
        case (
            lifecycle.UploadFailed(reason=reason)
            | lifecycle.UploadInterrupted(reason=reason)
            | lifecycle.Parked(reason=reason)
            | lifecycle.GaveUp(reason=reason)
            | lifecycle.ReceiptRejected(reason=reason)
            | lifecycle.RemovedFromHub(reason=reason)
            | lifecycle.Cancelled(reason=reason)
        ):
            return reason
    raise InvariantError(f"ledger: no reason rule for {lifecycle.event_name(event)}")


# --- the ledger -------------------------------------------------------------------------------


class Ledger:
    """One open ledger file. Thread-safe: one lock serialises all use of the connection, and
    :meth:`transaction` holds it for the whole transaction."""

    DEFAULT_BUSY_TIMEOUT: ClassVar[float] = 5.0

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        """Use :meth:`open`; this only wraps a connection that :meth:`open` prepared."""
        self._db = connection
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Ledger:
        """Open (creating and migrating if needed) the ledger at ``path``.

        Raises LedgerCorrupt (file left untouched), LedgerBusy, or LedgerError.
        """
        path = Path(path)
        if path.exists():
            cls._check_integrity(path, busy_timeout)
        else:
            # Created 0600 before SQLite touches it: the ledger holds file names, which can be
            # personal data. SQLite gives the -wal and -shm files the same mode.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                cls._check_integrity(path, busy_timeout)
            except OSError as error:
                raise LedgerError(
                    f"{path}: cannot create the ledger: {error.strerror}",
                    hint="check that the state directory exists and is writable",
                ) from error
        try:
            connection = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise _translate(error, path) from error
        ledger = cls(connection, path)
        try:
            ledger._configure(busy_timeout)
            ledger._migrate()
        except BaseException:
            connection.close()
            raise
        return ledger

    @staticmethod
    def _check_integrity(path: Path, busy_timeout: float) -> None:
        # Read-only, so a damaged file is never modified (no WAL checkpoint, no rollback).
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            probe = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
        except sqlite3.Error as error:
            raise _translate(error, path) from error
        # Damaged pages can put arbitrary bytes into the check's own messages.
        probe.text_factory = lambda raw: raw.decode("utf-8", "replace")
        try:
            rows = probe.execute("PRAGMA integrity_check(10)").fetchall()
        except sqlite3.Error as error:
            raise _translate(error, path) from error
        except UnicodeDecodeError as error:
            # SQLite's own error text quoted bytes from a damaged schema page.
            raise LedgerCorrupt(f"{path}: the ledger's schema is damaged") from error
        finally:
            probe.close()
        if rows != [("ok",)]:
            problems = [
                line
                for row in rows
                for line in str(row[0]).splitlines()
                if line and not line.startswith("***")
            ]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            first = problems[0] if problems else "unknown problem"
            raise LedgerCorrupt(f"{path}: the ledger fails its integrity check: {first}{more}")

    def _configure(self, busy_timeout: float) -> None:
        with self._translating():
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise LedgerError(f"{self.path}: cannot switch the ledger to WAL (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise LedgerError(
                f"{self.path}: ledger schema version {current} is newer than this exchange "
                f"supports ({len(MIGRATIONS)})",
                hint="run the newer exchange release that wrote this ledger",
            )
        for number in range(current + 1, len(MIGRATIONS) + 1):
            with self.transaction():
                # Re-read inside the write lock: another process may have migrated meanwhile.
                if self.schema_version >= number:
                    continue
                for statement in _statements(MIGRATIONS[number - 1]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        with self._lock, self._translating():
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            return version

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def _translating(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise _translate(error, self.path) from error

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all. ``BEGIN IMMEDIATE`` takes the write
        lock up front, so a busy ledger fails here, after ``busy_timeout``, rather than half-way
        through. Nested blocks are savepoints: an inner block that raises is undone even if the
        outer block catches the exception and goes on to commit."""
        with self._lock:
            if self._depth:
                savepoint = f"nested_{self._depth}"
                with self._translating():
                    self._db.execute(f"SAVEPOINT {savepoint}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    # Some errors (SQLITE_FULL, SQLITE_IOERR) make SQLite roll back the whole
                    # transaction itself; then there is no savepoint left to return to.
                    if self._db.in_transaction:
                        with self._translating():
                            self._db.execute(f"ROLLBACK TO {savepoint}")
                            self._db.execute(f"RELEASE {savepoint}")
                    raise
                finally:
                    self._depth -= 1
                with self._translating():
                    self._db.execute(f"RELEASE {savepoint}")
                return
            with self._translating():
                self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                if self._db.in_transaction:
                    with self._translating():
                        self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            if not self._db.in_transaction:
                raise LedgerError(
                    f"{self.path}: SQLite rolled the transaction back after an earlier error",
                    hint="nothing was written; the work is retried",
                )
            try:
                with self._translating():
                    self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._lock, self._translating():
            return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[object] = ()) -> Any:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _write(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        if not self._depth or not self._db.in_transaction:
            raise InvariantError("ledger: write outside a transaction (or after SQLite ended it)")
        with self._translating():
            return self._db.execute(sql, params)

    # -- datasets and versions -----------------------------------------------------------------

    def record_intake(
        self,
        *,
        dataset: DatasetId,
        agreement: str,
        original_name: bytes,
        sha256: Sha256,
        size: int,
        spool_path: str,
        recipients: Sequence[tuple[str, str]],
        now: datetime,
        kind: VersionKind = VersionKind.REGULAR,
        reason: str | None = None,
        override_note: str | None = None,
    ) -> Version:
        """A new dataset, its first version and one pending delivery per
        ``(delivery_id, recipient)``, in one transaction. Raises DuplicateContent if a regular
        dataset under the agreement already has this content (the service checks with
        :meth:`versions_with_content` first; this guards races and crash replays)."""
        with self.transaction():
            if kind is VersionKind.REGULAR:
                earlier = self.versions_with_content(agreement, sha256)
                if earlier:
                    raise DuplicateContent(
                        f"agreement {agreement}: the same content was already taken as "
                        f"{earlier[0].dataset} version {earlier[0].number}",
                        existing=earlier[0],
                    )
            self._write(
                "INSERT INTO datasets (id, agreement, original_name, created_at) "
                "VALUES (?, ?, ?, ?)",
                (dataset.value, agreement, original_name, to_text(now)),
            )
            return self._insert_version(
                dataset,
                1,
                sha256,
                size,
                spool_path,
                kind,
                None,
                None,
                reason,
                override_note,
                recipients,
                now,
            )

    def add_version(
        self,
        *,
        dataset: DatasetId,
        sha256: Sha256,
        size: int,
        spool_path: str,
        kind: VersionKind,
        reason: str,
        recipients: Sequence[tuple[str, str]],
        now: datetime,
        supersedes: int | None = None,
        complaint_ref: str | None = None,
        override_note: str | None = None,
    ) -> Version:
        """A later version of a dataset (a correction or a manual re-send) and its deliveries.
        A correction must supersede the dataset's newest version, which no correction has
        superseded yet (TESTPLAN E45); pending deliveries of older versions are superseded in
        the same transaction."""
        with self.transaction():
            self.get_dataset(dataset)
            latest = self.versions_of(dataset)[-1]
            if kind is VersionKind.CORRECTION:
                if supersedes != latest.id:
                    raise RefusedError(
                        f"dataset {dataset}: a correction must supersede the latest version "
                        f"({latest.number}), which is not yet superseded",
                        hint="run 'exchange status' to see the dataset's versions",
                    )
            elif supersedes is not None:
                raise InvariantError("ledger: only a correction supersedes a version")
            version = self._insert_version(
                dataset,
                latest.number + 1,
                sha256,
                size,
                spool_path,
                kind,
                supersedes,
                complaint_ref,
                reason,
                override_note,
                recipients,
                now,
            )
            if kind is VersionKind.CORRECTION:
                for older in self._all(
                    DELIVERY_SELECT + " WHERE v.dataset = ? AND v.id <> ? AND dl.state IN "
                    "('pending', 'retry_wait', 'parked')",
                    (dataset.value, version.id),
                ):
                    self.apply(older[0], lifecycle.Superseded(by_version=version.number), now)
            return version

    def _insert_version(
        self,
        dataset: DatasetId,
        number: int,
        sha256: Sha256,
        size: int,
        spool_path: str,
        kind: VersionKind,
        supersedes: int | None,
        complaint_ref: str | None,
        reason: str | None,
        override_note: str | None,
        recipients: Sequence[tuple[str, str]],
        now: datetime,
    ) -> Version:
        cursor = self._write(
            "INSERT INTO versions (dataset, number, sha256, size, spool_path, kind, supersedes, "
            "complaint_ref, reason, override_note, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                dataset.value,
                number,
                sha256.hex,
                size,
                spool_path,
                kind.value,
                supersedes,
                complaint_ref,
                reason,
                override_note,
                to_text(now),
            ),
        )
        version_id = cursor.lastrowid
        if version_id is None:
            raise InvariantError("ledger: no row id for a new version")
        for delivery_id, recipient in recipients:
            self.add_delivery(delivery_id, version_id, recipient, now)
        return self.get_version(version_id)

    def get_dataset(self, dataset: DatasetId) -> Dataset:
        row = self._one(
            "SELECT id, agreement, original_name, created_at FROM datasets WHERE id = ?",
            (dataset.value,),
        )
        if row is None:
            raise NotFoundError(f"dataset {dataset}: not in the ledger")
        return Dataset(DatasetId(row[0]), row[1], bytes(row[2]), from_text(row[3]))

    def get_version(self, version_id: int) -> Version:
        row = self._one(VERSION_SELECT + " WHERE v.id = ?", (version_id,))
        if row is None:
            raise NotFoundError(f"version {version_id}: not in the ledger")
        return version_from_row(row)

    def versions_of(self, dataset: DatasetId) -> list[Version]:
        rows = self._all(
            VERSION_SELECT + " WHERE v.dataset = ? ORDER BY v.number", (dataset.value,)
        )
        return [version_from_row(row) for row in rows]

    def versions_with_content(self, agreement: str, sha256: Sha256) -> list[Version]:
        """Every version under ``agreement`` whose content has this hash (duplicate check)."""
        rows = self._all(
            VERSION_SELECT + " JOIN datasets d ON d.id = v.dataset "
            "WHERE v.sha256 = ? AND d.agreement = ? ORDER BY v.id",
            (sha256.hex, agreement),
        )
        return [version_from_row(row) for row in rows]

    # -- deliveries ----------------------------------------------------------------------------

    def add_delivery(
        self, delivery_id: str, version_id: int, recipient: str, now: datetime
    ) -> Delivery:
        """A pending delivery of a version to a recipient; its creation is the first event."""
        with self.transaction():
            existing = self._one(
                "SELECT id FROM deliveries WHERE version = ? AND recipient = ?",
                (version_id, recipient),
            )
            if existing is not None:
                raise InvariantError(
                    f"ledger: version {version_id} already has delivery {existing[0]} "
                    f"to {recipient}"
                )
            stamp = to_text(now)
            self._write(
                "INSERT INTO deliveries (id, version, recipient, state, created_at, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (delivery_id, version_id, recipient, stamp, stamp),
            )
            self._append_event(delivery_id, None, DeliveryState.PENDING, "Created", None, stamp)
            return self.get_delivery(delivery_id)

    def get_delivery(self, delivery_id: str) -> Delivery:
        row = self._one(DELIVERY_SELECT + " WHERE dl.id = ?", (delivery_id,))
        if row is None:
            raise NotFoundError(f"delivery {delivery_id}: not in the ledger")
        return delivery_from_row(row)

    def deliveries(
        self,
        *states: DeliveryState,
        agreement: str | None = None,
        recipient: str | None = None,
    ) -> list[Delivery]:
        """Deliveries in any of ``states`` (all if none given), oldest first."""
        clauses: list[str] = []
        params: list[object] = []
        if states:
            clauses.append(f"dl.state IN ({', '.join('?' * len(states))})")
            params.extend(state.value for state in states)
        if agreement is not None:
            clauses.append("d.agreement = ?")
            params.append(agreement)
        if recipient is not None:
            clauses.append("dl.recipient = ?")
            params.append(recipient)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._all(DELIVERY_SELECT + where + " ORDER BY dl.created_at, dl.id", params)
        return [delivery_from_row(row) for row in rows]

    def retries_due(self, now: datetime) -> list[Delivery]:
        """Deliveries waiting to retry whose time has come, earliest first."""
        rows = self._all(
            DELIVERY_SELECT + " WHERE dl.state = 'retry_wait' AND dl.next_attempt_at <= ? "
            "ORDER BY dl.next_attempt_at, dl.id",
            (to_text(now),),
        )
        return [delivery_from_row(row) for row in rows]

    def holders(self, dataset: DatasetId) -> set[str]:
        """Recipients that hold, or may hold, some version of ``dataset`` (corrections go to
        each of them, protocol §8)."""
        holding = sorted(state.value for state in lifecycle.HOLDING)
        rows = self._all(
            "SELECT DISTINCT dl.recipient FROM deliveries dl JOIN versions v ON v.id = dl.version "  # noqa: S608 (placeholders only)
            f"WHERE v.dataset = ? AND dl.state IN ({', '.join('?' * len(holding))})",
            (dataset.value, *holding),
        )
        return {row[0] for row in rows}

    def begin_upload(self, delivery_id: str, remote_name: str, now: datetime) -> Delivery:
        """Write intent before acting: the delivery is ``uploading`` to ``remote_name`` with a
        fresh sequence number, committed before the first byte is encrypted."""
        return self.apply(delivery_id, lifecycle.UploadStarted(remote_name=remote_name), now)

    def record_ciphertext(
        self,
        delivery_id: str,
        *,
        ciphertext_sha256: str,
        size: int,
        manifest_hash: str,
        sealed_sha256: str,
        now: datetime,
    ) -> Delivery:
        """Write intent before the remote rename: what the temporary file holds, and the
        SHA-256 of the sealed manifest file this attempt will rename in. The state stays
        ``uploading``; a restart (or a lane that lost the reply to a rename) compares the
        manifest found on the hub with every attempt recorded here (:meth:`attempts_of`)."""
        with self.transaction():
            current = self.get_delivery(delivery_id)
            if current.state is not DeliveryState.UPLOADING or current.sequence is None:
                raise InvariantError(
                    f"delivery {delivery_id}: ciphertext recorded in state {current.state.value}"
                )
            stamp = to_text(now)
            self._write(
                "UPDATE deliveries SET ciphertext_sha256 = ?, size = ?, manifest_hash = ?, "
                "updated_at = ? WHERE id = ?",
                (ciphertext_sha256, size, manifest_hash, stamp, delivery_id),
            )
            self._write(
                "INSERT INTO attempts (manifest_hash, delivery, sequence, ciphertext_sha256, size, "
                "sealed_sha256, at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    manifest_hash,
                    delivery_id,
                    current.sequence,
                    ciphertext_sha256,
                    size,
                    sealed_sha256,
                    stamp,
                ),
            )
            return self.get_delivery(delivery_id)

    def attempts_of(self, delivery_id: str) -> tuple[Attempt, ...]:
        """Every attempt of a delivery that got as far as recording its ciphertext, oldest first."""
        rows = self._all(ATTEMPT_SELECT + " WHERE delivery = ? ORDER BY sequence", (delivery_id,))
        return tuple(attempt_from_row(row) for row in rows)

    def complete_from_hub(self, delivery_id: str, attempt: Attempt, now: datetime) -> Delivery:
        """``sent`` for an ``uploading`` delivery whose final manifest on the hub is the one
        ``attempt`` sealed (possibly an earlier attempt than the latest): the row takes that
        attempt's sequence, hashes and size, so receipts for the manifest the partner can
        really see are matched (docs/DESIGN.md invariant 12)."""
        with self.transaction():
            current = self.get_delivery(delivery_id)
            if attempt.delivery != delivery_id:
                raise InvariantError(f"delivery {delivery_id}: attempt of another delivery")
            if current.state is not DeliveryState.UPLOADING:
                raise InvariantError(
                    f"delivery {delivery_id}: found on the hub in state {current.state.value}"
                )
            # The latest attempt's values are replaced by the found one's, then completed
            # through the state table as usual.
            self._write(
                "UPDATE deliveries SET sequence = ?, ciphertext_sha256 = ?, size = ?, "
                "manifest_hash = ? WHERE id = ? AND state = 'uploading'",
                (
                    attempt.sequence,
                    attempt.ciphertext_sha256,
                    attempt.size,
                    attempt.manifest_hash,
                    delivery_id,
                ),
            )
            return self.apply(
                delivery_id,
                lifecycle.UploadCompleted(
                    ciphertext_sha256=attempt.ciphertext_sha256,
                    size=attempt.size,
                    duration=timedelta(0),
                    manifest_hash=attempt.manifest_hash,
                ),
                now,
            )

    def record_receipt(
        self,
        delivery_id: str,
        event: lifecycle.ReceiptAccepted | lifecycle.ReceiptRejected,
        now: datetime,
    ) -> tuple[Delivery, bool]:
        """Record a verified receipt once. Returns the delivery and whether this receipt was
        new; a second receipt for the same manifest hash (another valid signature, or a re-read
        after a crash) changes nothing (TESTPLAN E46)."""
        with self.transaction():
            seen = self._one(
                "SELECT delivery FROM receipts WHERE manifest_hash = ?", (event.manifest_hash,)
            )
            if seen is not None:
                if seen[0] != delivery_id:
                    raise InvariantError(
                        f"ledger: receipt for manifest {event.manifest_hash} names two deliveries"
                    )
                return self.get_delivery(delivery_id), False
            return self.apply(delivery_id, event, now), True

    def apply(self, delivery_id: str, event: Event, now: datetime) -> Delivery:
        """Move a delivery by ``event`` through the state table, record what the event says,
        and append the event row, in one transaction. An illegal transition raises
        InvariantError before anything is written."""
        with self.transaction():
            current = self.get_delivery(delivery_id)
            target = lifecycle.step(current.state, event)
            changes = self._effects(current, event, now)
            stamp = to_text(now)
            changes.update(state=target.value, updated_at=stamp)
            columns = ", ".join(f"{name} = ?" for name in changes)
            cursor = self._write(
                # Column names come from _effects, never from input; values are bound.
                f"UPDATE deliveries SET {columns} WHERE id = ? AND state = ?",  # noqa: S608
                (*changes.values(), delivery_id, current.state.value),
            )
            if cursor.rowcount != 1:
                raise InvariantError(f"delivery {delivery_id}: changed under a transition")
            if isinstance(event, lifecycle.ReceiptAccepted | lifecycle.ReceiptRejected):
                self._write(
                    "INSERT INTO receipts (manifest_hash, delivery, status, reason, received_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        event.manifest_hash,
                        delivery_id,
                        "rejected"
                        if isinstance(event, lifecycle.ReceiptRejected)
                        else event.status,
                        event.reason if isinstance(event, lifecycle.ReceiptRejected) else None,
                        stamp,
                    ),
                )
            self._append_event(
                delivery_id,
                current.state,
                target,
                lifecycle.event_name(event),
                _event_reason(event),
                stamp,
            )
            return self.get_delivery(delivery_id)

    def _effects(self, current: Delivery, event: Event, now: datetime) -> dict[str, object]:
        """The columns an event sets besides the state (the table says where; this says what)."""
        match event:
            case lifecycle.UploadStarted(remote_name=name):
                if current.remote_name is not None and current.remote_name != name:
                    raise InvariantError(
                        f"delivery {current.id}: remote name changed between attempts"
                    )
                row = self._write(
                    "INSERT INTO sequences (recipient, last) VALUES (?, 1) ON CONFLICT (recipient) "
                    "DO UPDATE SET last = last + 1 RETURNING last",
                    (current.recipient,),
                ).fetchone()
                return {
                    "remote_name": name,
                    "attempts": current.attempts + 1,
                    "sequence": row[0],
                    "next_attempt_at": None,
                    "ciphertext_sha256": None,
                    "size": None,
                    "manifest_hash": None,
                }
            case lifecycle.UploadCompleted():
                recorded = (current.ciphertext_sha256, current.size, current.manifest_hash)
                given = (event.ciphertext_sha256, event.size, event.manifest_hash)
                if current.ciphertext_sha256 is not None and recorded != given:
                    raise InvariantError(
                        f"delivery {current.id}: completed upload differs from the recorded one"
                    )
                return {
                    "ciphertext_sha256": event.ciphertext_sha256,
                    "size": event.size,
                    "manifest_hash": event.manifest_hash,
                    "duration_ms": round(event.duration / timedelta(milliseconds=1)),
                    "sent_at": to_text(now),
                    "last_error": None,
                }
            case lifecycle.UploadFailed(reason=reason, retry_at=retry_at):
                return {"last_error": reason, "next_attempt_at": to_text(retry_at)}
            case lifecycle.UploadInterrupted(reason=reason, retry_at=retry_at):
                return {
                    "last_error": reason,
                    "next_attempt_at": to_text(retry_at),
                    "strikes": current.strikes + 1,
                }
            case lifecycle.Parked(reason=reason) | lifecycle.GaveUp(reason=reason):
                return {"last_error": reason, "next_attempt_at": None}
            case lifecycle.Resumed():
                return {"last_error": None, "next_attempt_at": None, "strikes": 0}
            case lifecycle.ReceiptAccepted() | lifecycle.ReceiptRejected():
                if event.manifest_hash != current.manifest_hash:
                    raise InvariantError(f"delivery {current.id}: receipt is for another manifest")
                extra: dict[str, object] = {"acknowledged_at": to_text(now)}
                if isinstance(event, lifecycle.ReceiptRejected):
                    extra["last_error"] = event.reason
                return extra
            case _:
                return {}

    def _append_event(
        self,
        delivery_id: str,
        source: DeliveryState | None,
        target: DeliveryState,
        event: str,
        reason: str | None,
        stamp: str,
    ) -> None:
        previous = self._one("SELECT chain FROM delivery_events ORDER BY id DESC LIMIT 1")
        link = json.dumps(
            [
                _CHAIN_START if previous is None else previous[0],
                delivery_id,
                None if source is None else source.value,
                target.value,
                event,
                reason,
                stamp,
            ],
            separators=(",", ":"),
        )
        self._write(
            "INSERT INTO delivery_events (delivery, from_state, to_state, event, reason, at, chain) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                delivery_id,
                None if source is None else source.value,
                target.value,
                event,
                reason,
                stamp,
                hashlib.sha256(link.encode()).hexdigest(),
            ),
        )

    def events(self, delivery_id: str) -> list[DeliveryEvent]:
        """The delivery's history, oldest first."""
        rows = self._all(
            "SELECT id, delivery, from_state, to_state, event, reason, at, chain "
            "FROM delivery_events WHERE delivery = ? ORDER BY id",
            (delivery_id,),
        )
        return [
            DeliveryEvent(
                row[0],
                row[1],
                None if row[2] is None else DeliveryState(row[2]),
                DeliveryState(row[3]),
                row[4],
                row[5],
                from_text(row[6]),
                row[7],
            )
            for row in rows
        ]

    def verify_chain(self) -> int | None:
        """The id of the first event row whose chain link does not match, or None if the whole
        event log is intact."""
        previous = _CHAIN_START
        with self._lock, self._translating():
            cursor = self._db.execute(
                "SELECT id, delivery, from_state, to_state, event, reason, at, chain "
                "FROM delivery_events ORDER BY id"
            )
            for row in cursor:
                link = json.dumps([previous, *row[1:7]], separators=(",", ":"))
                if hashlib.sha256(link.encode()).hexdigest() != row[7]:
                    return int(row[0])
                previous = row[7]
        return None

    def status(self) -> list[StatusRow]:
        """Deliveries counted by agreement, recipient and state, with the last send time."""
        rows = self._all(
            "SELECT d.agreement, dl.recipient, dl.state, COUNT(*), MAX(dl.sent_at) "
            "FROM deliveries dl JOIN versions v ON v.id = dl.version "
            "JOIN datasets d ON d.id = v.dataset "
            "GROUP BY d.agreement, dl.recipient, dl.state "
            "ORDER BY d.agreement, dl.recipient, dl.state"
        )
        return [
            StatusRow(row[0], row[1], DeliveryState(row[2]), row[3], from_opt_text(row[4]))
            for row in rows
        ]

    # -- incidents -----------------------------------------------------------------------------

    def open_incident(
        self,
        *,
        reason: ReasonCode,
        now: datetime,
        agreement: str | None = None,
        partner: str | None = None,
        context: Mapping[str, str | int | bool | None] | None = None,
        dedupe_key: str | None = None,
    ) -> Incident:
        """Record an incident. With a ``dedupe_key``, a repeat while one with that key is open
        only counts an occurrence, so a failing partner raises one incident, not a storm.
        ``context`` holds ids, sizes, hashes and reason codes: never file contents or names."""
        values = dict(context or {})
        for key, value in values.items():
            if not isinstance(value, str | int | bool | None):
                raise InvariantError(f"ledger: incident context {key!r} is not a scalar")
        stamp = to_text(now)
        with self.transaction():
            if dedupe_key is not None:
                row = self._one(
                    "SELECT id FROM incidents WHERE dedupe_key = ? AND closed_at IS NULL",
                    (dedupe_key,),
                )
                if row is not None:
                    self._write(
                        "UPDATE incidents SET occurrences = occurrences + 1, last_seen_at = ? "
                        "WHERE id = ?",
                        (stamp, row[0]),
                    )
                    return self.get_incident(row[0])
            cursor = self._write(
                "INSERT INTO incidents (opened_at, reason, agreement, partner, context, "
                "dedupe_key, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    stamp,
                    reason.value,
                    agreement,
                    partner,
                    json.dumps(values, sort_keys=True),
                    dedupe_key,
                    stamp,
                ),
            )
            if cursor.lastrowid is None:
                raise InvariantError("ledger: no row id for a new incident")
            return self.get_incident(cursor.lastrowid)

    def close_incident(self, incident_id: int, note: str, now: datetime) -> Incident:
        """Close an open incident with a note saying what was done."""
        if not note.strip():
            raise RefusedError(
                f"incident {incident_id}: closing needs a note", hint="say what was done"
            )
        with self.transaction():
            if self.get_incident(incident_id).closed_at is not None:
                raise RefusedError(f"incident {incident_id}: already closed")
            self._write(
                "UPDATE incidents SET closed_at = ?, close_note = ? WHERE id = ?",
                (to_text(now), note, incident_id),
            )
            return self.get_incident(incident_id)

    def get_incident(self, incident_id: int) -> Incident:
        row = self._one(INCIDENT_SELECT + " WHERE id = ?", (incident_id,))
        if row is None:
            raise NotFoundError(f"incident {incident_id}: not in the ledger")
        return incident_from_row(row)

    def incidents(self, *, open_only: bool = True) -> list[Incident]:
        where = " WHERE closed_at IS NULL" if open_only else ""
        return [
            incident_from_row(row) for row in self._all(INCIDENT_SELECT + where + " ORDER BY id")
        ]

    # -- quarantine ----------------------------------------------------------------------------

    def record_quarantine(
        self,
        *,
        agreement: str,
        original_name: bytes,
        path: str,
        reason: ReasonCode,
        detail: str,
        now: datetime,
        sha256: Sha256 | None = None,
        size: int | None = None,
        incident: int | None = None,
    ) -> QuarantineRecord:
        """Record a file moved into quarantine. Idempotent per ``path``: a restart after the
        move (crash point ``quarantine.after_move``) records it once."""
        with self.transaction():
            self._write(
                "INSERT INTO quarantine (agreement, original_name, path, reason, detail, sha256, "
                "size, incident, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (path) DO NOTHING",
                (
                    agreement,
                    original_name,
                    path,
                    reason.value,
                    detail,
                    None if sha256 is None else sha256.hex,
                    size,
                    incident,
                    to_text(now),
                ),
            )
            return quarantine_from_row(self._one(QUARANTINE_SELECT + " WHERE path = ?", (path,)))

    def quarantined(self, agreement: str | None = None) -> list[QuarantineRecord]:
        if agreement is None:
            rows = self._all(QUARANTINE_SELECT + " ORDER BY id")
        else:
            rows = self._all(QUARANTINE_SELECT + " WHERE agreement = ? ORDER BY id", (agreement,))
        return [quarantine_from_row(row) for row in rows]

    # -- the receiving side (exchange pull, inbound datasets) ----------------------------------

    def record_received(self, record: Received) -> tuple[Received, bool]:
        """Record a processed manifest once; returns the stored row and whether it was new.
        Keyed by manifest hash, so a re-read after a crash, or the same manifest under a
        second valid signature, is recognised as a duplicate (FORMAT.md §5.1 step 9)."""
        with self.transaction():
            cursor = self._write(
                "INSERT INTO received (manifest_hash, sender, delivery, agreement, dataset, "
                "dataset_version, sequence, supersedes, status, reason, path, plaintext_sha256, "
                "size, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (manifest_hash) DO NOTHING",
                (
                    record.manifest_hash,
                    record.sender,
                    record.delivery,
                    record.agreement,
                    record.dataset.value,
                    record.dataset_version,
                    record.sequence,
                    record.supersedes,
                    record.status,
                    record.reason,
                    record.path,
                    record.plaintext_sha256,
                    record.size,
                    to_text(record.at),
                ),
            )
            stored = self.received_by_hash(record.manifest_hash)
            if stored is None:
                raise InvariantError(f"ledger: received {record.manifest_hash} not stored")
            return stored, cursor.rowcount == 1

    def received_by_hash(self, manifest_hash: str) -> Received | None:
        row = self._one(RECEIVED_SELECT + " WHERE manifest_hash = ?", (manifest_hash,))
        return None if row is None else received_from_row(row)

    def received(self, sender: str | None = None) -> list[Received]:
        """Manifests processed as a recipient, oldest first."""
        if sender is None:
            rows = self._all(RECEIVED_SELECT + " ORDER BY at, manifest_hash")
        else:
            rows = self._all(
                RECEIVED_SELECT + " WHERE sender = ? ORDER BY at, manifest_hash", (sender,)
            )
        return [received_from_row(row) for row in rows]

    def last_received_sequence(self, sender: str) -> int | None:
        """The highest sequence accepted from ``sender`` (rejections do not count), or None."""
        row = self._one(
            "SELECT MAX(sequence) FROM received WHERE sender = ? AND status != 'rejected'",
            (sender,),
        )
        return None if row is None or row[0] is None else int(row[0])

    # -- scheduled runs ------------------------------------------------------------------------

    def add_run(self, agreement: str, due_at: datetime) -> bool:
        """Record that a run fell due; False if it was recorded already. The schedule derives
        due times from the calendar, so waking twice for one due time adds one run."""
        with self.transaction():
            cursor = self._write(
                "INSERT INTO runs (agreement, due_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (agreement, to_text(due_at)),
            )
            return cursor.rowcount == 1

    def finish_run(self, agreement: str, due_at: datetime, now: datetime) -> bool:
        """Mark a run done; False if it was done already."""
        with self.transaction():
            if (
                self._one(
                    "SELECT 1 FROM runs WHERE agreement = ? AND due_at = ?",
                    (agreement, to_text(due_at)),
                )
                is None
            ):
                raise InvariantError(
                    f"ledger: run {agreement} at {to_text(due_at)} was never added"
                )
            cursor = self._write(
                "UPDATE runs SET done_at = ? WHERE agreement = ? AND due_at = ? "
                "AND done_at IS NULL",
                (to_text(now), agreement, to_text(due_at)),
            )
            return cursor.rowcount == 1

    def runs_not_done(self, agreement: str | None = None) -> list[Run]:
        """Runs that fell due and are not done, earliest first."""
        sql = "SELECT agreement, due_at, done_at FROM runs WHERE done_at IS NULL"
        params: tuple[str, ...] = ()
        if agreement is not None:
            sql += " AND agreement = ?"
            params = (agreement,)
        return [
            Run(r[0], from_text(r[1]), None) for r in self._all(sql + " ORDER BY due_at", params)
        ]

    def last_run(self, agreement: str) -> Run | None:
        """The latest run recorded for an agreement, done or not."""
        row = self._one(
            "SELECT agreement, due_at, done_at FROM runs WHERE agreement = ? "
            "ORDER BY due_at DESC LIMIT 1",
            (agreement,),
        )
        return None if row is None else Run(row[0], from_text(row[1]), from_opt_text(row[2]))
