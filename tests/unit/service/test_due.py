"""What is due, decided from values (exchange.service.due): runs, windows, commencement,
expiry, withdrawal and out-of-schedule sends, without a clock or a ledger file."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from exchange.config import Agreement, Partner, PartnerKeys
from exchange.core.delivery import DeliveryState
from exchange.core.schedule import (
    Frequency,
    ReleaseWindow,
    ScheduleRule,
    parse_cron,
    parse_days,
    parse_hours,
)
from exchange.model import VersionKind
from exchange.service.due import Cancel, Due, Wait, delivery_verdict, run_to_record

SUNDAY = datetime(2026, 6, 7, 12, 0, tzinfo=UTC)
MONDAY_RUN = datetime(2026, 6, 8, 6, 0, tzinfo=UTC)  # 07:00 Europe/London (BST)


def rule(frequency: Frequency = Frequency.IMMEDIATE, **changes: object) -> ScheduleRule:
    base = ScheduleRule(
        frequency=frequency,
        zone_name="Europe/London",
        cron=parse_cron("0 7 * * MON") if frequency is Frequency.CRON else None,
        every=timedelta(hours=6) if frequency is Frequency.INTERVAL else None,
        release_windows=(),
        commencement=date(2026, 4, 1),
        expiry=date(2028, 3, 31),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def agreement(schedule: ScheduleRule, **changes: object) -> Agreement:
    base = Agreement(
        id="mash",
        title="MASH referrals",
        purpose="Protect children at risk",
        legal_basis=("Children Act 2004, s.11",),
        data_categories=("referral details",),
        classification="OFFICIAL-SENSITIVE",
        recipients=("southend-uhft",),
        outbox=Path("/nonexistent/outbox/mash"),
        formats=("csv",),
        allowed_fields=None,
        max_size_bytes=1 << 20,
        allow_empty=False,
        schedule=schedule,
        review=date(2027, 3, 31),
        retention_days=90,
        acknowledgement_window=timedelta(days=1),
        corrections="immediate",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


PARTNER = Partner(
    id="southend-uhft",
    name="Southend University Hospital NHS Foundation Trust",
    ico_registration="Z1972899",
    contact="data@southend-uhft.example",
    hub_folder="southend-uhft",
    keys=PartnerKeys("age1x", "ed25519:x", "SHA256:x", "ssh-ed25519 AAAA"),
    withdrawal_notice=None,
)


def verdict(
    a: Agreement,
    *,
    now: datetime = SUNDAY,
    state: DeliveryState = DeliveryState.PENDING,
    kind: VersionKind = VersionKind.REGULAR,
    taken_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
    last_run: datetime | None = None,
    partner: Partner = PARTNER,
) -> Due | Wait | Cancel:
    return delivery_verdict(
        agreement=a,
        partner=partner,
        state=state,
        kind=kind,
        taken_at=taken_at or now - timedelta(minutes=1),
        next_attempt_at=next_attempt_at,
        last_run=last_run,
        now=now,
    )


def test_immediate_agreement_is_due_at_once() -> None:
    """A pending delivery under an immediate agreement with no windows is due now."""
    assert Due() == verdict(agreement(rule()))


def test_before_commencement_waits_for_it() -> None:
    """Nothing is due before the agreement commences; the wait ends at commencement."""
    early = datetime(2026, 3, 1, tzinfo=UTC)
    result = verdict(agreement(rule()), now=early)
    assert isinstance(result, Wait)
    assert datetime(2026, 3, 31, 23, 0, tzinfo=UTC) == result.until  # 00:00 BST


def test_after_expiry_is_cancelled() -> None:
    """After the expiry day a waiting delivery is cancelled, naming the expiry."""
    late = datetime(2028, 4, 2, tzinfo=UTC)
    result = verdict(agreement(rule()), now=late)
    assert isinstance(result, Cancel) and "expired" in result.reason


def test_withdrawal_stops_new_data_after_notice_plus_28_days() -> None:
    """A partner that gave notice on 1 May gets nothing new from 29 May, but still before."""
    withdrawing = replace(PARTNER, withdrawal_notice=date(2026, 5, 1))
    a = agreement(rule())
    assert Due() == verdict(a, now=datetime(2026, 5, 28, 12, tzinfo=UTC), partner=withdrawing)
    result = verdict(a, now=datetime(2026, 5, 29, 12, tzinfo=UTC), partner=withdrawing)
    assert isinstance(result, Cancel) and "withdrew" in result.reason


def test_partner_removed_from_agreement_is_cancelled() -> None:
    """A delivery to a partner no longer listed as a recipient never leaves."""
    result = verdict(agreement(rule(), recipients=("essex-police",)))
    assert isinstance(result, Cancel)


def test_scheduled_delivery_waits_for_a_run_after_it_was_taken() -> None:
    """Under a weekly agreement a file taken on Sunday waits; a run recorded on Monday after
    it makes it due; a run from before it was taken does not."""
    weekly = agreement(rule(Frequency.CRON))
    taken = SUNDAY
    assert isinstance(verdict(weekly, now=SUNDAY, taken_at=taken, last_run=None), Wait)
    earlier_run = MONDAY_RUN - timedelta(days=7)
    assert isinstance(verdict(weekly, now=SUNDAY, taken_at=taken, last_run=earlier_run), Wait)
    later = MONDAY_RUN + timedelta(hours=1)
    assert Due() == verdict(weekly, now=later, taken_at=taken, last_run=MONDAY_RUN)


def test_release_window_holds_until_it_opens() -> None:
    """Outside a weekday 08:00-18:00 window the delivery waits until Monday 08:00 local."""
    window = ReleaseWindow(
        None, parse_days(["mon", "tue", "wed", "thu", "fri"]), parse_hours("08:00-18:00")
    )
    a = agreement(rule(release_windows=(window,)))
    result = verdict(a, now=SUNDAY)
    assert isinstance(result, Wait)
    assert datetime(2026, 6, 8, 7, 0, tzinfo=UTC) == result.until
    assert Due() == verdict(a, now=datetime(2026, 6, 8, 9, 0, tzinfo=UTC))


@pytest.mark.parametrize("kind", [VersionKind.MANUAL, VersionKind.CORRECTION])
def test_out_of_schedule_sends_ignore_runs_and_windows(kind: VersionKind) -> None:
    """A manual send, and a correction under 'corrections = immediate', go at once on a
    Sunday under a weekly, windowed agreement."""
    window = ReleaseWindow(None, parse_days(["mon"]), None)
    a = agreement(rule(Frequency.CRON, release_windows=(window,)))
    assert Due() == verdict(a, kind=kind)


def test_correction_waits_for_next_run_when_configured() -> None:
    """With 'corrections = next-run' a correction waits for the schedule like any dataset."""
    a = agreement(rule(Frequency.CRON), corrections="next-run")
    assert isinstance(verdict(a, kind=VersionKind.CORRECTION), Wait)


def test_retry_waits_for_its_time() -> None:
    """A delivery in retry_wait is due at its next_attempt_at and not before."""
    a = agreement(rule())
    later = SUNDAY + timedelta(seconds=30)
    assert Wait(later, "waiting to retry") == verdict(
        a, state=DeliveryState.RETRY_WAIT, next_attempt_at=later
    )
    assert Due() == verdict(a, now=later, state=DeliveryState.RETRY_WAIT, next_attempt_at=later)


def test_other_states_are_never_due() -> None:
    """Only pending and retry_wait deliveries are ever due."""
    for state in DeliveryState:
        if state not in (DeliveryState.PENDING, DeliveryState.RETRY_WAIT):
            assert isinstance(verdict(agreement(rule()), state=state), Wait)


def test_run_to_record_catches_up_once() -> None:
    """Three Mondays missed while stopped: one run is recorded, the latest, and asking again
    with it recorded gives nothing."""
    weekly = agreement(rule(Frequency.CRON))
    last = MONDAY_RUN - timedelta(days=7)
    now = MONDAY_RUN + timedelta(days=15)
    latest = run_to_record(weekly, last, now)
    assert MONDAY_RUN + timedelta(days=14) == latest
    assert run_to_record(weekly, latest, now) is None


def test_run_to_record_first_start_and_immediate() -> None:
    """On a first start the latest scheduled time is recorded; an immediate agreement never
    records runs; nothing before commencement."""
    weekly = agreement(rule(Frequency.CRON))
    assert MONDAY_RUN - timedelta(days=7) == run_to_record(weekly, None, SUNDAY)
    assert run_to_record(agreement(rule()), None, SUNDAY) is None
    assert run_to_record(weekly, None, datetime(2026, 3, 1, tzinfo=UTC)) is None


def test_interval_runs() -> None:
    """An interval agreement (every 6 hours from commencement) records the latest boundary."""
    every = agreement(rule(Frequency.INTERVAL))
    now = datetime(2026, 6, 7, 13, 0, tzinfo=UTC)
    due = run_to_record(every, now - timedelta(hours=7), now)
    assert due is not None and now - timedelta(hours=6) < due <= now
