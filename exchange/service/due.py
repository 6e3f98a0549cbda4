"""What is due now: derived from the ledger and the configuration, never from memory.

Rules:

1. Pure: every function takes the time and the ledger rows it needs as values. The
   scheduler only wakes the reconciler; whether anything is due is decided here, from the
   runs and deliveries recorded in the ledger, so a restart, a missed wake-up or a clock
   jump cannot make a run happen twice or not at all.
2. A scheduled (cron or interval) agreement delivers at *runs*. The run to record is the
   latest scheduled time at or before now that is later than the last run in the ledger: a
   run that fell due while the daemon was stopped is done once at start, and a week of
   missed runs is still one run (no burst). A delivery is due at a run that fell due after
   its dataset was taken.
3. An immediate agreement's deliveries are due at once, within the release windows.
4. Nothing is due before the agreement's commencement; after its expiry, or from the day a
   partner's withdrawal takes effect (notice + 28 days), pending deliveries are cancelled
   (they never leave), with the reason; a correction is the exception to withdrawal (it
   still reaches a withdrawn partner that holds the data, protocol §11).
5. An out-of-schedule send (``exchange send``, kind ``manual``) and a correction under an
   agreement whose corrections go ``immediate`` ignore the schedule and the release windows,
   but never commencement, expiry or withdrawal.
6. A retry is due at its ``next_attempt_at``, inside the release windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from exchange.config import Agreement, Partner
from exchange.core.delivery import DeliveryState
from exchange.core.schedule import Frequency, in_release_windows, next_run, next_window_opening
from exchange.model import VersionKind

__all__ = ["Cancel", "Due", "Verdict", "Wait", "delivery_verdict", "run_to_record"]

#: With no run recorded yet, look back at most this far for the latest scheduled time.
_FIRST_LOOKBACK = timedelta(days=35)
#: Bound on the walk over scheduled times (a one-minute interval over the lookback fits).
_MAX_STEPS = 100_000
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Due:
    """Attempt it now."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Not yet; ``until`` is when to look again (None: at the next run, whenever that is)."""

    until: datetime | None
    why: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """It will never be sent; record ``Cancelled(reason)``."""

    reason: str


Verdict = Due | Wait | Cancel


def run_to_record(
    agreement: Agreement, last_run: datetime | None, now: datetime
) -> datetime | None:
    """The run a scheduled agreement should record now (rule 2), or None."""
    rule = agreement.schedule
    if rule.frequency is Frequency.IMMEDIATE:
        return None
    after = last_run if last_run is not None else max(rule.start() - _TICK, now - _FIRST_LOOKBACK)
    latest: datetime | None = None
    probe = after + _TICK
    for _ in range(_MAX_STEPS):
        due = next_run(rule, probe)
        if due is None or due > now:
            break
        latest = due
        probe = due + _TICK
    if latest is None or (last_run is not None and latest <= last_run):
        return None
    return latest


def _stop_reason(
    agreement: Agreement, partner: Partner, now: datetime, *, correction: bool = False
) -> str | None:
    rule = agreement.schedule
    if now >= rule.end():
        return f"agreement {agreement.id} expired on {rule.expiry}"
    stop = partner.no_new_data_from
    # Protocol §11: a withdrawn partner keeps complying for the data it holds, so a
    # correction of that data still reaches it (exchange.core.corrections rule 1).
    if stop is not None and not correction and now.astimezone(rule.zone).date() >= stop:
        return f"partner {partner.id} withdrew; no new data from {stop}"
    if partner.id not in agreement.recipients:
        return f"partner {partner.id} is no longer a recipient of agreement {agreement.id}"
    return None


def delivery_verdict(
    *,
    agreement: Agreement,
    partner: Partner,
    state: DeliveryState,
    kind: VersionKind,
    taken_at: datetime,
    next_attempt_at: datetime | None,
    last_run: datetime | None,
    now: datetime,
) -> Verdict:
    """Whether one pending or retrying delivery goes now (rules 2-6)."""
    if state not in (DeliveryState.PENDING, DeliveryState.RETRY_WAIT):
        return Wait(None, f"state {state.value} is not waiting to be sent")
    reason = _stop_reason(agreement, partner, now, correction=kind is VersionKind.CORRECTION)
    if reason is not None:
        return Cancel(reason)
    rule = agreement.schedule
    if now < rule.start():
        return Wait(rule.start(), f"agreement commences on {rule.commencement}")
    out_of_schedule = kind is VersionKind.MANUAL or (
        kind is VersionKind.CORRECTION and agreement.corrections == "immediate"
    )
    if state is DeliveryState.RETRY_WAIT:
        if next_attempt_at is not None and next_attempt_at > now:
            return Wait(next_attempt_at, "waiting to retry")
    elif (
        not out_of_schedule
        and rule.frequency is not Frequency.IMMEDIATE
        and (last_run is None or last_run < taken_at)
    ):
        return Wait(next_run(rule, now), "waiting for the agreement's next run")
    if not out_of_schedule and not in_release_windows(rule.release_windows, now, rule.zone):
        return Wait(
            next_window_opening(rule.release_windows, now, rule.zone),
            "outside the agreement's release windows",
        )
    return Due()
