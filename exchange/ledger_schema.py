"""The ledger's schema, as an append-only list of migrations.

Rules:

1. ``MIGRATIONS[n - 1]`` takes a ledger from ``user_version`` n - 1 to n. :mod:`exchange.ledger`
   applies each in one transaction together with its version bump.
2. A shipped migration is never edited, not even for whitespace: change the schema by
   appending a migration. ``tests/unit/test_ledger.py`` pins the schema's shape.
3. Plain SQL text only; no ``sqlite3`` here (:mod:`exchange.ledger` is its only importer).
4. Delivery states live in the ``delivery_states`` table (a foreign key, not a CHECK), so a
   state added to :mod:`exchange.core.delivery` later is one ``INSERT`` in a new migration.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema
    """
    CREATE TABLE delivery_states (name TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT INTO delivery_states (name) VALUES
        ('pending'), ('uploading'), ('sent'), ('retry_wait'), ('parked'), ('acknowledged'),
        ('rejected'), ('withdrawn'), ('poisoned'), ('superseded'), ('cancelled');
    CREATE TABLE datasets (
        id TEXT PRIMARY KEY,
        agreement TEXT NOT NULL,
        original_name BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX datasets_agreement ON datasets (agreement);
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        dataset TEXT NOT NULL REFERENCES datasets (id),
        number INTEGER NOT NULL CHECK (number >= 1),
        sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
        size INTEGER NOT NULL CHECK (size >= 0),
        spool_path TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('regular', 'correction', 'manual')),
        supersedes INTEGER UNIQUE REFERENCES versions (id),
        complaint_ref TEXT,
        reason TEXT,
        override_note TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (dataset, number),
        UNIQUE (dataset, sha256),
        CHECK ((kind = 'correction') = (supersedes IS NOT NULL)),
        CHECK (kind = 'regular' OR reason IS NOT NULL)
    );
    CREATE INDEX versions_sha256 ON versions (sha256);
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        version INTEGER NOT NULL REFERENCES versions (id),
        recipient TEXT NOT NULL,
        state TEXT NOT NULL REFERENCES delivery_states (name),
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        strikes INTEGER NOT NULL DEFAULT 0 CHECK (strikes >= 0),
        next_attempt_at TEXT,
        remote_name TEXT,
        sequence INTEGER,
        ciphertext_sha256 TEXT,
        size INTEGER,
        duration_ms INTEGER,
        manifest_hash TEXT UNIQUE,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        sent_at TEXT,
        acknowledged_at TEXT,
        UNIQUE (version, recipient),
        UNIQUE (recipient, sequence)
    );
    CREATE INDEX deliveries_state ON deliveries (state, next_attempt_at);
    CREATE TABLE sequences (recipient TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE delivery_events (
        id INTEGER PRIMARY KEY,
        delivery TEXT NOT NULL REFERENCES deliveries (id),
        from_state TEXT REFERENCES delivery_states (name),
        to_state TEXT NOT NULL REFERENCES delivery_states (name),
        event TEXT NOT NULL,
        reason TEXT,
        at TEXT NOT NULL,
        chain TEXT NOT NULL
    );
    CREATE INDEX delivery_events_delivery ON delivery_events (delivery);
    CREATE TABLE receipts (
        manifest_hash TEXT PRIMARY KEY,
        delivery TEXT NOT NULL REFERENCES deliveries (id),
        status TEXT NOT NULL,
        reason TEXT,
        received_at TEXT NOT NULL
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        opened_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        agreement TEXT,
        partner TEXT,
        context TEXT NOT NULL,
        dedupe_key TEXT,
        occurrences INTEGER NOT NULL DEFAULT 1,
        last_seen_at TEXT NOT NULL,
        closed_at TEXT,
        close_note TEXT,
        CHECK ((closed_at IS NULL) = (close_note IS NULL))
    );
    CREATE UNIQUE INDEX incidents_open_key ON incidents (dedupe_key)
        WHERE closed_at IS NULL AND dedupe_key IS NOT NULL;
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        agreement TEXT NOT NULL,
        original_name BLOB NOT NULL,
        path TEXT NOT NULL UNIQUE,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        sha256 TEXT,
        size INTEGER,
        incident INTEGER REFERENCES incidents (id),
        at TEXT NOT NULL
    );
    CREATE TABLE runs (
        agreement TEXT NOT NULL,
        due_at TEXT NOT NULL,
        done_at TEXT,
        PRIMARY KEY (agreement, due_at)
    ) WITHOUT ROWID;
    CREATE TRIGGER delivery_events_no_update BEFORE UPDATE ON delivery_events
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER delivery_events_no_delete BEFORE DELETE ON delivery_events
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER datasets_no_update BEFORE UPDATE ON datasets
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER datasets_no_delete BEFORE DELETE ON datasets
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER versions_no_update BEFORE UPDATE ON versions
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER versions_no_delete BEFORE DELETE ON versions
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER receipts_no_update BEFORE UPDATE ON receipts
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER receipts_no_delete BEFORE DELETE ON receipts
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER deliveries_no_delete BEFORE DELETE ON deliveries
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER incidents_no_delete BEFORE DELETE ON incidents
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER quarantine_no_delete BEFORE DELETE ON quarantine
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    """,
    # 2: the receiving side (exchange pull, inbound datasets): one row per manifest processed
    """
    CREATE TABLE received (
        manifest_hash TEXT PRIMARY KEY CHECK (length(manifest_hash) = 64),
        sender TEXT NOT NULL,
        delivery TEXT NOT NULL,
        agreement TEXT NOT NULL,
        dataset TEXT NOT NULL,
        dataset_version INTEGER NOT NULL CHECK (dataset_version >= 1),
        sequence INTEGER NOT NULL CHECK (sequence >= 1),
        supersedes INTEGER,
        status TEXT NOT NULL CHECK (status IN ('accepted', 'replaced', 'rejected')),
        reason TEXT,
        path TEXT,
        plaintext_sha256 TEXT,
        size INTEGER,
        at TEXT NOT NULL,
        CHECK ((status = 'rejected') = (reason IS NOT NULL)),
        CHECK ((status = 'rejected') = (path IS NULL))
    );
    CREATE INDEX received_sender ON received (sender, status, sequence);
    CREATE INDEX received_dataset ON received (sender, dataset, dataset_version);
    CREATE TRIGGER received_no_update BEFORE UPDATE ON received
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER received_no_delete BEFORE DELETE ON received
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    """,
    # 3: every attempt's manifest, so an upload whose outcome is unknown (a lost reply to the
    # rename, a crash) is resolved by the hash of the manifest file found on the hub, never by
    # sizes, which are the same for every attempt (docs/DESIGN.md invariants 11, 12)
    """
    CREATE TABLE attempts (
        manifest_hash TEXT PRIMARY KEY CHECK (length(manifest_hash) = 64),
        delivery TEXT NOT NULL REFERENCES deliveries (id),
        sequence INTEGER NOT NULL CHECK (sequence >= 1),
        ciphertext_sha256 TEXT NOT NULL CHECK (length(ciphertext_sha256) = 64),
        size INTEGER NOT NULL CHECK (size >= 0),
        sealed_sha256 TEXT NOT NULL UNIQUE CHECK (length(sealed_sha256) = 64),
        at TEXT NOT NULL
    );
    CREATE INDEX attempts_delivery ON attempts (delivery);
    CREATE TRIGGER attempts_no_update BEFORE UPDATE ON attempts
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    CREATE TRIGGER attempts_no_delete BEFORE DELETE ON attempts
        BEGIN SELECT RAISE(ABORT, 'append-only table'); END;
    """,
)
