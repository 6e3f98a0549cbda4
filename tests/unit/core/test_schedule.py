"""Calendar maths: cron, intervals, release windows, commencement and expiry, without sleeping."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.schedule import (
    Frequency,
    ReleaseWindow,
    ScheduleRule,
    ScheduleSyntaxError,
    describe_cron,
    in_release_windows,
    next_cron_time,
    next_interval_time,
    next_run,
    next_window_opening,
    parse_cron,
    parse_dates,
    parse_days,
    parse_duration,
    parse_hours,
)

LONDON = ZoneInfo("Europe/London")


def _rule(**overrides: object) -> ScheduleRule:
    values: dict[str, object] = {
        "frequency": Frequency.IMMEDIATE,
        "zone_name": "Europe/London",
        "cron": None,
        "every": None,
        "release_windows": (),
        "commencement": date(2026, 1, 1),
        "expiry": date(2027, 12, 31),
    }
    values.update(overrides)
    return ScheduleRule(**values)  # type: ignore[arg-type]


class TestParseCron:
    @pytest.mark.parametrize(
        "text",
        ["0 7 * * MON", "*/15 6-18 * * 1-5", "30 6 1 * *", "@weekly", "0 0 29 2 *", "0 9 * * 7"],
    )
    def test_valid_expressions_parse(self, text: str) -> None:
        """Common shapes, names, steps, ranges and macros are accepted."""
        assert parse_cron(text).text == text.strip()

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("0 7 * *", "five fields"),
            ("61 7 * * *", "out of range"),
            ("0 24 * * *", "out of range"),
            ("0 7 * * FUNDAY", "not a number"),
            ("0 7 5-1 * *", "backwards"),
            ("0 7 * * */0", "positive"),
            ("0 7 30 2 *", "never fires"),
            ("0 7 ,1 * *", "empty list item"),
        ],
    )
    def test_invalid_expressions_say_why(self, text: str, fragment: str) -> None:
        """Each malformed expression is refused with a message naming the problem."""
        with pytest.raises(ScheduleSyntaxError, match=fragment):
            parse_cron(text)

    def test_seven_is_sunday(self) -> None:
        """Day-of-week 7 means Sunday, as in Vixie cron."""
        assert parse_cron("0 9 * * 7").days_of_week == frozenset({0})


class TestNextCronTime:
    def test_weekly_monday_morning_in_london(self) -> None:
        """Monday 07:00 is evaluated in London time, in summer (BST) as in winter."""
        spec = parse_cron("0 7 * * MON")
        after = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # a Wednesday
        expected = datetime(2026, 7, 6, 7, 0, tzinfo=LONDON)
        assert expected == next_cron_time(spec, after, LONDON)
        assert datetime(2026, 7, 6, 6, 0, tzinfo=UTC) == expected.astimezone(UTC)

    def test_strictly_after(self) -> None:
        """A firing exactly at ``after`` is not returned again (no duplicate run)."""
        spec = parse_cron("0 7 * * *")
        at = datetime(2026, 3, 2, 7, 0, tzinfo=LONDON)
        assert at + timedelta(days=1) == next_cron_time(spec, at, LONDON)

    def test_spring_forward_gap_is_skipped(self) -> None:
        """01:30 does not exist in London on 29 March 2026, so that day's run is skipped."""
        spec = parse_cron("30 1 * * *")
        after = datetime(2026, 3, 28, 12, 0, tzinfo=LONDON)
        assert datetime(2026, 3, 30, 1, 30, tzinfo=LONDON) == next_cron_time(spec, after, LONDON)

    def test_autumn_repeat_fires_once(self) -> None:
        """01:30 happens twice on 25 October 2026; the run fires once, at the first."""
        spec = parse_cron("30 1 * * *")
        first = next_cron_time(spec, datetime(2026, 10, 24, 12, 0, tzinfo=LONDON), LONDON)
        assert first is not None
        assert datetime(2026, 10, 25, 0, 30, tzinfo=UTC) == first.astimezone(UTC)
        second = next_cron_time(spec, first.astimezone(UTC) + timedelta(minutes=1), LONDON)
        assert second is not None
        assert date(2026, 10, 26) == second.date()

    def test_both_day_fields_match_either(self) -> None:
        """With both day fields restricted, either matching day fires (Vixie semantics)."""
        spec = parse_cron("0 0 13 * FRI")
        after = datetime(2026, 2, 1, tzinfo=UTC)
        found = next_cron_time(spec, after, ZoneInfo("UTC"))
        assert datetime(2026, 2, 6, tzinfo=ZoneInfo("UTC")) == found  # the first Friday

    @given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)))
    def test_result_always_matches_and_is_later(self, naive: datetime) -> None:
        """For any start time, the next firing is later and matches the expression."""
        spec = parse_cron("*/20 6-18 * * MON-FRI")
        after = naive.replace(tzinfo=UTC)
        found = next_cron_time(spec, after, LONDON)
        assert found is not None and found > after
        assert found.minute in spec.minutes and found.hour in spec.hours
        assert found.isoweekday() <= 5


class TestDurationsAndWords:
    def test_durations(self) -> None:
        """Units s, m, h, d, w are understood."""
        assert timedelta(hours=6) == parse_duration("6h")
        assert timedelta(weeks=2) == parse_duration("2w")

    @pytest.mark.parametrize("text", ["", "6", "h", "-1h", "0h", "1.5h", "6 hours"])
    def test_bad_durations(self, text: str) -> None:
        """Anything but a positive whole number and one unit letter is refused."""
        with pytest.raises(ScheduleSyntaxError, match="unit"):
            parse_duration(text)

    def test_words(self) -> None:
        """Common cron shapes are described in words for 'exchange config check'."""
        assert (
            describe_cron(parse_cron("0 7 * * MON"), "Europe/London")
            == "weekly on Monday at 07:00 (Europe/London)"
        )
        assert describe_cron(parse_cron("30 6 * * *"), "UTC") == "daily at 06:30 (UTC)"

    def test_interval_is_anchored(self) -> None:
        """Interval runs fall at anchor + k * every, strictly after the given time."""
        anchor = datetime(2026, 1, 1, tzinfo=UTC)
        after = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
        assert datetime(2026, 1, 1, 18, 0, tzinfo=UTC) == next_interval_time(
            anchor, timedelta(hours=6), after
        )


class TestReleaseWindows:
    def test_parts(self) -> None:
        """Dates, days and hours parse, and every part given must hold."""
        window = ReleaseWindow(
            parse_dates("04-01..04-14"), parse_days(["mon", "tue"]), parse_hours("09:00-17:00")
        )
        assert window.contains(datetime(2026, 4, 6, 10, 0))  # Monday 6 April
        assert not window.contains(datetime(2026, 4, 8, 10, 0))  # Wednesday
        assert not window.contains(datetime(2026, 4, 6, 17, 0))  # closes at 17:00
        assert not window.contains(datetime(2026, 5, 4, 10, 0))  # May

    def test_year_end_wrap(self) -> None:
        """A date range across the new year holds on both sides of it."""
        window = ReleaseWindow(parse_dates("12-20..01-05"), None, None)
        assert window.contains(datetime(2026, 12, 31, 12, 0))
        assert window.contains(datetime(2027, 1, 2, 12, 0))
        assert not window.contains(datetime(2027, 1, 6, 12, 0))

    @pytest.mark.parametrize("text", ["9-17", "17:00-09:00", "09:00", "25:00-26:00"])
    def test_bad_hours(self, text: str) -> None:
        """Malformed or backwards hours are refused."""
        with pytest.raises(ScheduleSyntaxError):
            parse_hours(text)

    def test_next_opening(self) -> None:
        """A time outside every window waits for the earliest next opening."""
        windows = (
            ReleaseWindow(None, parse_days(["wed"]), parse_hours("09:00-12:00")),
            ReleaseWindow(None, parse_days(["tue"]), parse_hours("14:00-16:00")),
        )
        after = datetime(2026, 7, 6, 18, 0, tzinfo=LONDON)  # Monday evening
        assert not in_release_windows(windows, after, LONDON)
        assert datetime(2026, 7, 7, 14, 0, tzinfo=LONDON) == next_window_opening(
            windows, after, LONDON
        )


class TestNextRun:
    def test_immediate_is_now(self) -> None:
        """An immediate agreement may send now, once it has commenced."""
        now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        assert now == next_run(_rule(), now)

    def test_not_before_commencement(self) -> None:
        """Nothing is due before the agreement commences (protocol §11)."""
        now = datetime(2025, 12, 1, 12, 0, tzinfo=UTC)
        assert datetime(2026, 1, 1, 0, 0, tzinfo=LONDON) == next_run(_rule(), now)

    def test_nothing_after_expiry(self) -> None:
        """Nothing is due once the expiry day has passed."""
        assert next_run(_rule(), datetime(2028, 1, 1, 0, 1, tzinfo=UTC)) is None

    def test_cron_with_window(self) -> None:
        """A weekly run that falls outside the release window waits for the window."""
        rule = _rule(
            frequency=Frequency.CRON,
            cron=parse_cron("0 7 * * MON"),
            release_windows=(ReleaseWindow(None, None, (time(9, 0), time(17, 0))),),
        )
        now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
        assert datetime(2026, 7, 6, 9, 0, tzinfo=LONDON) == next_run(rule, now)

    def test_describe(self) -> None:
        """The rule says its frequency in words."""
        assert _rule().describe() == "immediately when a file is dropped"
