"""A Hypothesis state machine drives the delivery table and the ledger together.

The model is ``core.delivery.step`` itself plus a few counters; the system under test is a
real ledger file. After every step the two must agree on every delivery, illegal events must
have raised without writing, and the event log's chain must verify.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import event as note_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule

from exchange.core import delivery as lc
from exchange.core.delivery import DeliveryState, Event
from exchange.errors import InvariantError
from exchange.ledger import Ledger
from exchange.model import DatasetId, Sha256

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RECIPIENTS = ("essex-police", "southend-hospital", "barnardos")
EVENT_TYPES: tuple[type[Event], ...] = (
    lc.UploadStarted,
    lc.UploadCompleted,
    lc.UploadFailed,
    lc.UploadInterrupted,
    lc.Parked,
    lc.Resumed,
    lc.GaveUp,
    lc.ReceiptAccepted,
    lc.ReceiptRejected,
    lc.RemovedFromHub,
    lc.Superseded,
    lc.Cancelled,
)


class Abandoned(Exception):
    """Raised inside a transaction to abandon it."""


@dataclass
class Expected:
    """What the model says one delivery must look like."""

    recipient: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    strikes: int = 0
    events: int = 1  # the creation row
    recorded: tuple[str, int, str] | None = None  # ciphertext recorded before the rename
    receipts: set[str] = field(default_factory=set)


def digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class LedgerMachine(RuleBasedStateMachine):
    """Random sequences of intake, events, intents, restarts and abandoned transactions."""

    deliveries = Bundle("deliveries")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        self.path = self.directory / "ledger.sqlite3"
        self.ledger = Ledger.open(self.path)
        self.expected: dict[str, Expected] = {}
        self.now = T0
        self.contents = 0

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.directory)

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    @rule(target=deliveries, count=st.integers(min_value=1, max_value=3))
    def take(self, count: int) -> object:  # a MultipleResults of the new ids
        """A new dataset is taken with a pending delivery per recipient."""
        self.contents += 1
        ids = [str(uuid.uuid4()) for _ in range(count)]
        self.ledger.record_intake(
            dataset=DatasetId.from_uuid(uuid.uuid4()),
            agreement="essex-cp-referrals",
            original_name=b"referrals.csv",
            sha256=Sha256(digest("content", self.contents)),
            size=100,
            spool_path=f"spool/{self.contents}",
            recipients=list(zip(ids, RECIPIENTS, strict=False)),
            now=self.tick(),
        )
        for delivery_id, recipient in zip(ids, RECIPIENTS, strict=False):
            self.expected[delivery_id] = Expected(recipient)
        return multiple(*ids)

    def make_event(self, delivery_id: str, kind: type[Event]) -> Event:
        current = self.ledger.get_delivery(delivery_id)
        manifest = current.manifest_hash or digest("manifest", delivery_id, current.attempts)
        later = self.now + timedelta(minutes=5)
        samples: dict[type[Event], Event] = {
            lc.UploadStarted: lc.UploadStarted(remote_name=f"{delivery_id}.age"),
            lc.UploadCompleted: lc.UploadCompleted(
                ciphertext_sha256=current.ciphertext_sha256 or digest("c", delivery_id),
                size=current.size if current.size is not None else 4096,
                duration=timedelta(seconds=2),
                manifest_hash=manifest,
            ),
            lc.UploadFailed: lc.UploadFailed("hub-unreachable", later),
            lc.UploadInterrupted: lc.UploadInterrupted("found in flight at start", later),
            lc.Parked: lc.Parked("host-key-mismatch"),
            lc.Resumed: lc.Resumed("key re-pinned"),
            lc.GaveUp: lc.GaveUp("poisoned"),
            lc.ReceiptAccepted: lc.ReceiptAccepted(manifest, "accepted"),
            lc.ReceiptRejected: lc.ReceiptRejected(manifest, "schema-mismatch"),
            lc.RemovedFromHub: lc.RemovedFromHub("retention"),
            lc.Superseded: lc.Superseded(by_version=2),
            lc.Cancelled: lc.Cancelled("agreement expired"),
        }
        return samples[kind]

    @rule(delivery_id=deliveries, kind=st.sampled_from(EVENT_TYPES))
    def event(self, delivery_id: str, kind: type[Event]) -> None:
        """Any event on any delivery: legal ones move it as the table says, others raise."""
        model = self.expected[delivery_id]
        event = self.make_event(delivery_id, kind)
        receipt = isinstance(event, lc.ReceiptAccepted | lc.ReceiptRejected)
        if receipt and event.manifest_hash in model.receipts:
            _, new = self.ledger.record_receipt(delivery_id, event, self.tick())
            assert not new  # a repeat over the same manifest changes nothing
            return
        if not lc.can_step(model.state, event):
            with pytest.raises(InvariantError, match="illegal transition"):
                self.ledger.apply(delivery_id, event, self.tick())
            return
        if receipt:
            self.ledger.record_receipt(delivery_id, event, self.tick())
            model.receipts.add(event.manifest_hash)
        else:
            self.ledger.apply(delivery_id, event, self.tick())
        model.state = lc.step(model.state, event)
        note_event(f"reached {model.state.value}")
        model.events += 1
        if isinstance(event, lc.UploadStarted):
            model.attempts += 1
            model.recorded = None
        elif isinstance(event, lc.UploadInterrupted):
            model.strikes += 1
        elif isinstance(event, lc.Resumed):
            model.strikes = 0

    @rule(delivery_id=deliveries, data=st.data())
    def legal_event(self, delivery_id: str, data: st.DataObject) -> None:
        """An event the table allows in the delivery's state, so runs reach the deep states."""
        state = self.expected[delivery_id].state
        legal = sorted(
            (kind for source, kind in lc.TRANSITIONS if source is state), key=lc.event_name
        )
        if legal:
            self.event(delivery_id, data.draw(st.sampled_from(legal)))

    @rule(delivery_id=deliveries, data=st.data())
    def progress(self, delivery_id: str, data: st.DataObject) -> None:
        """The next step on the way to a receipt, so runs reach sent, withdrawn and beyond."""
        forward: dict[DeliveryState, list[type[Event]]] = {
            DeliveryState.PENDING: [lc.UploadStarted],
            DeliveryState.RETRY_WAIT: [lc.UploadStarted],
            DeliveryState.UPLOADING: [lc.UploadCompleted],
            DeliveryState.PARKED: [lc.Resumed],
            DeliveryState.SENT: [lc.ReceiptAccepted, lc.ReceiptRejected, lc.RemovedFromHub],
            DeliveryState.WITHDRAWN: [lc.ReceiptAccepted, lc.ReceiptRejected],
        }
        choices = forward.get(self.expected[delivery_id].state)
        if choices:
            self.event(delivery_id, data.draw(st.sampled_from(choices)))

    @rule(delivery_id=deliveries)
    def record_ciphertext(self, delivery_id: str) -> None:
        """The digest is recorded before the rename, and only while uploading."""
        model = self.expected[delivery_id]
        values = (
            digest("c", delivery_id, model.attempts),
            4096,
            digest("manifest", delivery_id, model.attempts),
        )
        if model.state is not DeliveryState.UPLOADING:
            with pytest.raises(InvariantError, match="ciphertext recorded in state"):
                self.ledger.record_ciphertext(
                    delivery_id,
                    ciphertext_sha256=values[0],
                    size=values[1],
                    manifest_hash=values[2],
                    sealed_sha256=digest("sealed", delivery_id, model.attempts),
                    now=self.tick(),
                )
            return
        self.ledger.record_ciphertext(
            delivery_id,
            ciphertext_sha256=values[0],
            size=values[1],
            manifest_hash=values[2],
            sealed_sha256=digest("sealed", delivery_id, model.attempts),
            now=self.tick(),
        )
        model.recorded = values

    @rule(delivery_id=deliveries, kind=st.sampled_from(EVENT_TYPES))
    def abandoned_transaction(self, delivery_id: str, kind: type[Event]) -> None:
        """A legal event inside a transaction that is then abandoned leaves no trace."""
        event = self.make_event(delivery_id, kind)
        if not lc.can_step(self.expected[delivery_id].state, event):
            return
        with pytest.raises(Abandoned), self.ledger.transaction():
            self.ledger.apply(delivery_id, event, self.tick())
            raise Abandoned

    @rule()
    def restart(self) -> None:
        """Closing and reopening the ledger (a daemon restart) loses nothing."""
        self.ledger.close()
        self.ledger = Ledger.open(self.path)

    @invariant()
    def ledger_matches_model(self) -> None:
        """Every delivery's state, counters and history length match the model."""
        actual = {d.id: d for d in self.ledger.deliveries()}
        assert set(self.expected) == set(actual)
        for delivery_id, model in self.expected.items():
            row = actual[delivery_id]
            assert (model.state, model.attempts, model.strikes) == (
                row.state,
                row.attempts,
                row.strikes,
            )
            assert model.recipient == row.recipient
            if model.recorded is not None and model.state is DeliveryState.UPLOADING:
                assert model.recorded == (row.ciphertext_sha256, row.size, row.manifest_hash)
            if model.state is DeliveryState.SENT:
                assert row.sent_at is not None and row.manifest_hash is not None
            history = self.ledger.events(delivery_id)
            assert model.events == len(history)
            assert model.state == history[-1].to_state
            for before, after in itertools.pairwise(history):
                assert before.to_state == after.from_state

    @invariant()
    def sequences_are_unique_per_recipient(self) -> None:
        """No two deliveries to one recipient share a sequence number."""
        seen = [(d.recipient, d.sequence) for d in self.ledger.deliveries() if d.sequence]
        assert len(seen) == len(set(seen))

    @invariant()
    def event_chain_verifies(self) -> None:
        """The append-only event log's hash chain is intact."""
        assert self.ledger.verify_chain() is None


LedgerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase
