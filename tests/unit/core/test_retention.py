"""core.retention: with the clock moved forward, exactly what is due is purged and nothing
else (pure: values in, a plan out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.delivery import DeliveryState as S
from exchange.core.retention import (
    DeliveryFact,
    FiledDataset,
    HubDelivery,
    QuarantinedFile,
    RetentionRule,
    SpoolCopy,
    due,
)

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RULES = {"mash": RetentionRule(retention=90 * DAY, hub_expiry=14 * DAY)}
QUARANTINE = 30 * DAY


def ack(delivery: str, days: float) -> DeliveryFact:
    return DeliveryFact(delivery, S.ACKNOWLEDGED, T0 + days * DAY)


SPOOL = (
    # both recipients acknowledged, the later on day 2: due on day 92
    SpoolCopy(1, "mash", "spool/mash/1", (ack("d1", 1), ack("d2", 2))),
    # one recipient has not acknowledged: never due while that lasts
    SpoolCopy(2, "mash", "spool/mash/2", (ack("d3", 1), DeliveryFact("d4", S.SENT, None))),
    # acknowledged, and the other delivery was superseded before it was sent: due on day 95
    SpoolCopy(3, "mash", "spool/mash/3", (ack("d5", 5), DeliveryFact("d6", S.SUPERSEDED, None))),
    # parked, rejected or poisoned deliveries keep the copy for investigation
    SpoolCopy(4, "mash", "spool/mash/4", (ack("d7", 1), DeliveryFact("d8", S.PARKED, None))),
    SpoolCopy(5, "mash", "spool/mash/5", (DeliveryFact("d9", S.REJECTED, None),)),
    # everything cancelled, nothing ever acknowledged: kept for ops
    SpoolCopy(6, "mash", "spool/mash/6", (DeliveryFact("d10", S.CANCELLED, None),)),
    # an agreement no longer configured: never judged
    SpoolCopy(7, "old", "spool/old/7", (ack("d11", 0),)),
)
QUARANTINED = (
    QuarantinedFile(1, "mash", "quarantine/mash/a.csv", T0),  # due on day 30
    QuarantinedFile(2, "mash", "quarantine/mash/b.csv", T0 + 40 * DAY),  # due on day 70
)
HUB = (
    HubDelivery("d4", "mash", "essex-police", S.SENT, T0 + 1 * DAY),  # due on day 15
    HubDelivery("d12", "mash", "southend-uhft", S.ACKNOWLEDGED, T0),  # collected: never
    HubDelivery("d13", "mash", "southend-uhft", S.PENDING, None),  # not on the hub: never
)
FILED = (FiledDataset("m" * 64, "mash", "inbox/mash/x.csv", T0 + 3 * DAY),)  # due on day 93


def plan_at(day: float) -> list[tuple[str, str]]:
    plan = due(
        T0 + day * DAY,
        rules=RULES,
        quarantine_retention=QUARANTINE,
        spool=SPOOL,
        quarantine=QUARANTINED,
        hub=HUB,
        filed=FILED,
    )
    return [(d.kind, d.key) for d in plan.due]


def test_exactly_what_is_due_as_the_clock_moves_forward() -> None:
    """At each step in time the plan holds exactly the items whose time has come."""
    assert [] == plan_at(14.99)
    assert [("hub", "d4")] == plan_at(15)
    assert [("hub", "d4"), ("quarantine", "1")] == plan_at(30)
    assert [("hub", "d4"), ("quarantine", "1"), ("quarantine", "2")] == plan_at(70)
    assert [
        ("hub", "d4"),
        ("quarantine", "1"),
        ("quarantine", "2"),
        ("spool", "1"),
    ] == plan_at(92)
    assert [
        ("hub", "d4"),
        ("quarantine", "1"),
        ("quarantine", "2"),
        ("spool", "1"),
        ("filed", "m" * 64),
        ("spool", "3"),
    ] == plan_at(95)
    assert plan_at(95) == plan_at(10_000)  # the rest is never due on time alone


def test_unconfigured_agreements_are_reported_not_purged() -> None:
    """Records under an agreement with no rule are listed as unjudged and never due."""
    plan = due(T0 + 1000 * DAY, rules=RULES, quarantine_retention=QUARANTINE, spool=SPOOL)
    assert ("old",) == plan.unjudged
    assert "7" not in [d.key for d in plan.of_kind("spool")]


def test_due_items_say_why_and_since_when() -> None:
    """Each item carries its due time and a reason in words."""
    plan = due(T0 + 92 * DAY, rules=RULES, quarantine_retention=QUARANTINE, spool=SPOOL[:1])
    (item,) = plan.due
    assert (T0 + 92 * DAY, "spool/mash/1") == (item.due_at, item.path)
    assert "every recipient acknowledged" in item.reason


@given(st.floats(min_value=0, max_value=400), st.floats(min_value=0, max_value=400))
def test_moving_the_clock_forward_only_adds(earlier: float, later: float) -> None:
    """Whatever is due at a time is still due at any later time (nothing flips back)."""
    first, second = sorted((earlier, later))
    assert set(plan_at(first)) <= set(plan_at(second))


@given(st.floats(min_value=0, max_value=400))
def test_nothing_is_due_before_its_time(day: float) -> None:
    """Every item in a plan has a due time at or before now."""
    now = T0 + day * DAY
    plan = due(
        now,
        rules=RULES,
        quarantine_retention=QUARANTINE,
        spool=SPOOL,
        quarantine=QUARANTINED,
        hub=HUB,
        filed=FILED,
    )
    assert all(d.due_at <= now for d in plan.due)
