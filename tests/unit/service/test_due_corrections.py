"""service.due and corrections: a correction still reaches a partner past its withdrawal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from exchange.model import VersionKind
from exchange.service.due import Cancel, Due
from tests.unit.service.test_due import PARTNER, agreement, rule, verdict

AFTER_WITHDRAWAL = datetime(2026, 6, 7, 12, tzinfo=UTC)
WITHDRAWN = replace(PARTNER, withdrawal_notice=date(2026, 5, 1))  # no new data from 29 May


def test_correction_reaches_a_partner_after_its_withdrawal() -> None:
    """Protocol §11: the withdrawn partner must keep complying for data it holds, so the
    correction is due while a new regular version to it is cancelled."""
    a = agreement(rule())
    correction = verdict(a, now=AFTER_WITHDRAWAL, partner=WITHDRAWN, kind=VersionKind.CORRECTION)
    regular = verdict(a, now=AFTER_WITHDRAWAL, partner=WITHDRAWN)
    assert Due() == correction
    assert isinstance(regular, Cancel) and "withdrew" in regular.reason


def test_correction_still_stops_at_expiry() -> None:
    """Withdrawal does not stop a correction, but the agreement's expiry does."""
    result = verdict(
        agreement(rule(expiry=date(2026, 6, 1))),
        now=AFTER_WITHDRAWAL,
        partner=WITHDRAWN,
        kind=VersionKind.CORRECTION,
    )
    assert isinstance(result, Cancel) and "expired" in result.reason
