"""The delivery state table, the step function, the retry policy and the DESIGN.md diagram."""

from __future__ import annotations

import random
import re
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core import delivery
from exchange.core.delivery import (
    HOLDING,
    TERMINAL,
    TRANSITIONS,
    Cancelled,
    DeliveryState,
    Event,
    GaveUp,
    Parked,
    ReceiptAccepted,
    ReceiptRejected,
    RemovedFromHub,
    Resumed,
    Superseded,
    UploadCompleted,
    UploadFailed,
    UploadInterrupted,
    UploadStarted,
)
from exchange.errors import InvariantError

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DESIGN = Path(__file__).resolve().parents[3] / "docs" / "DESIGN.md"

#: One instance of every event type, so every (state, event) pair can be tried.
SAMPLES: dict[type[Event], Event] = {
    UploadStarted: UploadStarted(remote_name="ds-0123.age"),
    UploadCompleted: UploadCompleted(
        ciphertext_sha256="a" * 64, size=10, duration=timedelta(seconds=1), manifest_hash="b" * 64
    ),
    UploadFailed: UploadFailed(reason="hub-unreachable", retry_at=NOW),
    UploadInterrupted: UploadInterrupted(reason="found in flight at start", retry_at=NOW),
    Parked: Parked(reason="host-key-mismatch"),
    Resumed: Resumed(note="host key re-pinned after checking with Essex Police"),
    GaveUp: GaveUp(reason="poisoned"),
    ReceiptAccepted: ReceiptAccepted(manifest_hash="b" * 64, status="accepted"),
    ReceiptRejected: ReceiptRejected(manifest_hash="b" * 64, reason="schema-mismatch"),
    RemovedFromHub: RemovedFromHub(reason="retention"),
    Superseded: Superseded(by_version=2),
    Cancelled: Cancelled(reason="agreement expired"),
}

ALL_PAIRS = [(state, cls) for state in DeliveryState for cls in SAMPLES]
LEGAL = list(TRANSITIONS.items())
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]


class FixedRandom:
    """A random source that always returns the same fraction."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_samples_cover_every_event_type() -> None:
    """Every member of the Event union has a sample, so the pair sweep below is exhaustive."""
    assert set(typing.get_args(Event)) == set(SAMPLES)


@pytest.mark.parametrize(("pair", "target"), LEGAL, ids=lambda p: str(p))
def test_every_legal_transition(
    pair: tuple[DeliveryState, type[Event]], target: DeliveryState
) -> None:
    """Each row of the table moves its state to the listed target."""
    state, cls = pair
    assert target == delivery.step(state, SAMPLES[cls])
    assert delivery.can_step(state, cls)


@pytest.mark.parametrize("pair", ILLEGAL, ids=lambda p: str(p))
def test_every_illegal_transition_raises(pair: tuple[DeliveryState, type[Event]]) -> None:
    """Every pair missing from the table raises InvariantError naming the event and state."""
    state, cls = pair
    assert not delivery.can_step(state, SAMPLES[cls])
    with pytest.raises(InvariantError, match=f"{cls.__name__} in state {state.value}"):
        delivery.step(state, SAMPLES[cls])


def test_every_state_is_reachable_from_pending() -> None:
    """No state in the enum is dead: each is reachable from pending through the table."""
    seen = {DeliveryState.PENDING}
    frontier = [DeliveryState.PENDING]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert set(DeliveryState) == seen


def test_terminal_states() -> None:
    """Exactly the finished outcomes have no way out."""
    expected = {
        DeliveryState.ACKNOWLEDGED,
        DeliveryState.REJECTED,
        DeliveryState.POISONED,
        DeliveryState.SUPERSEDED,
        DeliveryState.CANCELLED,
    }
    assert expected == TERMINAL


def test_sent_only_after_an_upload() -> None:
    """Only an UploadCompleted reaches sent, and only from uploading (the rename invariant)."""
    into_sent = [pair for pair, target in TRANSITIONS.items() if target is DeliveryState.SENT]
    assert [(DeliveryState.UPLOADING, UploadCompleted)] == into_sent


def test_in_flight_cannot_be_superseded_or_cancelled() -> None:
    """An attempt in flight must resolve before a correction or cancellation can act on it."""
    for cls in (Superseded, Cancelled, Resumed):
        assert not delivery.can_step(DeliveryState.UPLOADING, cls)


def test_a_late_receipt_after_retention_still_records_the_holder() -> None:
    """A withdrawn delivery still accepts a verified receipt, so the holder is known."""
    after = delivery.step(DeliveryState.WITHDRAWN, SAMPLES[ReceiptAccepted])
    assert after is DeliveryState.ACKNOWLEDGED
    assert DeliveryState.WITHDRAWN in HOLDING


@pytest.mark.parametrize(
    ("attempts", "ceiling"),
    [
        (1, timedelta(seconds=30)),
        (2, timedelta(seconds=60)),
        (3, timedelta(seconds=120)),
        (7, timedelta(seconds=1920)),
        (8, timedelta(hours=1)),
        (10_000, timedelta(hours=1)),
    ],
)
def test_backoff_bounds(attempts: int, ceiling: timedelta) -> None:
    """The wait lies in [ceiling/2, ceiling]; the ceiling doubles per attempt up to the cap."""
    low = delivery.next_attempt_at(attempts, NOW, FixedRandom(0.0))
    high = delivery.next_attempt_at(attempts, NOW, FixedRandom(0.999999))
    assert NOW + ceiling / 2 == low
    assert NOW + ceiling / 2 < high <= NOW + ceiling


@given(attempts=st.integers(min_value=1, max_value=10**6), seed=st.integers())
def test_backoff_never_exceeds_cap(attempts: int, seed: int) -> None:
    """Whatever the attempt count and randomness, the wait is positive and at most the cap."""
    wait = delivery.next_attempt_at(attempts, NOW, random.Random(seed)) - NOW
    assert timedelta(0) < wait <= delivery.BACKOFF_CAP


def test_backoff_jitter_spreads_retries() -> None:
    """Two deliveries failing together do not retry at the same instant."""
    rng = random.Random(7)
    times = {delivery.next_attempt_at(5, NOW, rng) for _ in range(20)}
    assert len(times) > 1


@pytest.mark.parametrize(
    ("attempts", "rng_value"),
    [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1)],
)
def test_backoff_rejects_bad_inputs(attempts: int, rng_value: float) -> None:
    """A zero attempt count or a random source outside [0, 1) is a bug, not a wait."""
    with pytest.raises(InvariantError):
        delivery.next_attempt_at(attempts, NOW, FixedRandom(rng_value))


def test_backoff_custom_base_and_cap() -> None:
    """The base and cap are parameters, so the daemon's config can tune them."""
    at = delivery.next_attempt_at(
        3, NOW, FixedRandom(0.0), base=timedelta(seconds=1), cap=timedelta(seconds=3)
    )
    assert NOW + timedelta(seconds=1.5) == at


@pytest.mark.parametrize(
    ("strikes", "max_attempts", "expected"),
    [(0, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (1, 1, True)],
)
def test_should_poison(strikes: int, max_attempts: int, expected: bool) -> None:
    """Poisoning fires once the strikes reach the limit, not before."""
    assert expected == delivery.should_poison(strikes, max_attempts)


def test_should_poison_rejects_zero_limit() -> None:
    """A limit below one would poison every file at once: a configuration bug."""
    with pytest.raises(InvariantError):
        delivery.should_poison(0, 0)


def test_mermaid_has_one_line_per_transition() -> None:
    """The rendered diagram lists every table row exactly once, plus start and end markers."""
    text = delivery.mermaid_diagram()
    arrows = [line for line in text.splitlines() if ": " in line]
    assert len(TRANSITIONS) == len(arrows)
    assert "    pending --> uploading: UploadStarted" in text.splitlines()
    assert text.count("--> [*]") == len(TERMINAL)


def test_design_doc_diagram_matches_the_table() -> None:
    """docs/DESIGN.md embeds the diagram generated from TRANSITIONS, byte for byte."""
    document = DESIGN.read_text(encoding="utf-8")
    blocks = re.findall(r"```mermaid\n(stateDiagram-v2\n.*?)```", document, flags=re.DOTALL)
    assert [delivery.mermaid_diagram()] == blocks
