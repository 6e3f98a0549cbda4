"""Who receives a correction, who holds which version, and when a correction is complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.corrections import (
    CorrectionFacts,
    DeliveryFact,
    correction_recipients,
    holdings,
    open_only,
    progress,
)
from exchange.core.delivery import HOLDING, DeliveryState
from exchange.errors import InvariantError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
S = DeliveryState
EVERYONE = frozenset({"southend-uhft", "essex-police", "thurrock", "barnardos"})


def fact(
    recipient: str,
    state: DeliveryState,
    *,
    version: int = 1,
    status: str | None = None,
    sent_hours_ago: float | None = 2,
) -> DeliveryFact:
    sent = None if sent_hours_ago is None else NOW - timedelta(hours=sent_hours_ago)
    return DeliveryFact(
        delivery=f"dl-{recipient}-{version}",
        recipient=recipient,
        version=version,
        state=state,
        receipt_status=status,
        sent_at=sent,
        acknowledged_at=NOW if state is S.ACKNOWLEDGED else None,
    )


def test_recipients_are_every_holder_of_any_earlier_version() -> None:
    """Acknowledged, sent and withdrawn-from-hub deliveries of any earlier version make a
    partner a recipient; a partner with no delivery at all (joined later) is not one."""
    earlier = [
        fact("southend-uhft", S.ACKNOWLEDGED, status="accepted"),
        fact("essex-police", S.SENT),
        fact("thurrock", S.WITHDRAWN, version=2),
    ]
    assert ("essex-police", "southend-uhft", "thurrock") == correction_recipients(earlier, EVERYONE)


def test_withdrawn_partner_holding_data_still_receives_the_correction() -> None:
    """A partner that may no longer get new data still gets the correction of data it holds."""
    earlier = [fact("essex-police", S.ACKNOWLEDGED, status="accepted")]
    assert ("essex-police",) == correction_recipients(earlier, frozenset())


def test_rejected_cancelled_and_poisoned_deliveries_hold_nothing() -> None:
    """A partner whose earlier delivery never reached it, or was refused by it, is left out."""
    earlier = [
        fact("southend-uhft", S.REJECTED, status="rejected"),
        fact("essex-police", S.CANCELLED, sent_hours_ago=None),
        fact("thurrock", S.POISONED, sent_hours_ago=None),
        fact("barnardos", S.SUPERSEDED, sent_hours_ago=None),
    ]
    assert () == correction_recipients(earlier, EVERYONE)


@pytest.mark.parametrize("state", [S.PENDING, S.RETRY_WAIT, S.PARKED])
def test_unsent_earlier_delivery_is_replaced_by_the_correction(state: DeliveryState) -> None:
    """A partner whose earlier version has not left yet gets the correction instead, unless
    it may no longer receive new data."""
    earlier = [fact("southend-uhft", state, sent_hours_ago=None)]
    assert ("southend-uhft",) == correction_recipients(earlier, EVERYONE)
    assert () == correction_recipients(earlier, frozenset())


def test_an_upload_in_progress_counts_as_holding() -> None:
    """A partner whose earlier version is being uploaded now may hold it in a moment."""
    earlier = [fact("southend-uhft", S.UPLOADING, sent_hours_ago=None)]
    assert ("southend-uhft",) == correction_recipients(earlier, frozenset())


def test_holdings_show_the_highest_version_each_partner_holds() -> None:
    """Each partner's row is its newest holding version, confirmed only by a receipt."""
    facts = [
        fact("southend-uhft", S.ACKNOWLEDGED, status="accepted"),
        fact("southend-uhft", S.ACKNOWLEDGED, version=2, status="replaced"),
        fact("essex-police", S.ACKNOWLEDGED, status="accepted"),
        fact("essex-police", S.SENT, version=2),
        fact("thurrock", S.REJECTED, status="rejected"),
    ]
    rows = holdings(facts)
    assert [("essex-police", 2, False), ("southend-uhft", 2, True)] == [
        (h.recipient, h.version, h.confirmed) for h in rows
    ]
    assert "replaced" == rows[1].receipt_status


def correction(*deliveries: DeliveryFact, hours_ago: float = 3) -> CorrectionFacts:
    return CorrectionFacts(
        dataset="ds-" + "a" * 32,
        agreement="mash-referrals",
        version=2,
        supersedes=1,
        complaint="CMP-2026-0042",
        reason="wrong age band for one referral",
        created_at=NOW - timedelta(hours=hours_ago),
        deliveries=deliveries,
    )


def test_complete_only_when_every_receipt_is_replaced_or_accepted() -> None:
    """Two verified receipts out of three leave the correction open, with the third partner
    outstanding; the third receipt completes it."""
    first = correction(
        fact("southend-uhft", S.ACKNOWLEDGED, version=2, status="replaced"),
        fact("essex-police", S.ACKNOWLEDGED, version=2, status="accepted"),
        fact("thurrock", S.SENT, version=2),
    )
    seen = progress(first, timedelta(days=1), NOW)
    assert not seen.complete
    assert ("thurrock",) == seen.outstanding
    assert ("essex-police", "southend-uhft") == seen.done
    finished = correction(
        *first.deliveries[:2], fact("thurrock", S.ACKNOWLEDGED, version=2, status="replaced")
    )
    assert progress(finished, timedelta(days=1), NOW).complete


@pytest.mark.parametrize("state", [S.REJECTED, S.CANCELLED, S.POISONED, S.RETRY_WAIT])
def test_a_delivery_that_failed_or_waits_is_never_done(state: DeliveryState) -> None:
    """Rejected, cancelled, poisoned or still retrying: the correction stays open."""
    seen = progress(correction(fact("southend-uhft", state, version=2)), timedelta(days=1), NOW)
    assert not seen.complete
    assert ("southend-uhft",) == seen.outstanding


def test_correction_nobody_holds_is_complete_at_once() -> None:
    """No holders, nothing to wait for."""
    assert progress(correction(), timedelta(days=1), NOW).complete


def test_overdue_counts_from_the_correction_not_from_the_hub() -> None:
    """A partner that never got the replacement (it was down) is overdue once the window has
    passed since the correction was made; a partner that acknowledged is not."""
    late = correction(
        fact("southend-uhft", S.ACKNOWLEDGED, version=2, status="replaced"),
        fact("essex-police", S.RETRY_WAIT, version=2, sent_hours_ago=None),
        hours_ago=30,
    )
    seen = progress(late, timedelta(days=1), NOW)
    assert seen.overdue
    assert [False, True] == [p.overdue for p in sorted(seen.partners, key=lambda p: p.done)][::-1]
    police = next(p for p in seen.partners if p.recipient == "essex-police")
    assert police.overdue and police.had_for is None
    assert not progress(late, timedelta(days=2), NOW).overdue


def test_how_long_a_partner_has_had_the_replacement() -> None:
    """``had_for`` runs from when the replacement reached the hub for that partner."""
    seen = progress(
        correction(fact("southend-uhft", S.SENT, version=2, sent_hours_ago=5)),
        timedelta(days=1),
        NOW,
    )
    assert timedelta(hours=5) == seen.partners[0].had_for


def test_open_only_lists_incomplete_corrections_oldest_first() -> None:
    """Complete corrections drop out; the rest come oldest first."""
    done = progress(correction(hours_ago=1), timedelta(days=1), NOW)
    newer = progress(
        correction(fact("southend-uhft", S.SENT, version=2), hours_ago=2), timedelta(days=1), NOW
    )
    older = progress(
        correction(fact("essex-police", S.SENT, version=2), hours_ago=9), timedelta(days=1), NOW
    )
    assert [older, newer] == open_only([done, newer, older])


def test_a_window_that_is_not_positive_is_a_bug() -> None:
    """Config validation guarantees a positive window; anything else is an invariant error."""
    with pytest.raises(InvariantError):
        progress(correction(), timedelta(0), NOW)


_PARTNER_IDS = ("southend-uhft", "essex-police", "thurrock", "barnardos")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(_PARTNER_IDS),
            st.sampled_from(list(DeliveryState)),
            st.integers(min_value=1, max_value=4),
        ),
        max_size=12,
    ),
    st.frozensets(st.sampled_from(_PARTNER_IDS)),
)
def test_recipients_property(
    rows: list[tuple[str, DeliveryState, int]], allowed: frozenset[str]
) -> None:
    """Every holder is chosen, nobody without a delivery is, and the choice is sorted and
    unique whatever the order of the facts."""
    facts = [fact(p, s, version=v) for p, s, v in rows]
    chosen = correction_recipients(facts, allowed)
    assert list(chosen) == sorted(set(chosen))
    assert {f.recipient for f in facts if f.state in HOLDING} <= set(chosen)
    assert set(chosen) <= {f.recipient for f in facts}
    assert chosen == correction_recipients(list(reversed(facts)), allowed)
