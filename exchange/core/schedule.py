"""Calendar maths for agreements: cron expressions, intervals, release windows.

Rules:

1. Pure: every function takes the time as a value (an aware ``datetime``) and never reads the
   clock, so the scheduling logic is tested without sleeping.
2. Cron expressions are evaluated in the agreement's own time zone (``zoneinfo``), because a
   "Monday 07:00" agreement means 07:00 in Essex whether or not the clocks changed.
   A wall time that does not exist (the spring-forward gap) is skipped; a wall time that
   happens twice (autumn) fires once, at its first occurrence, so a clock change never
   causes a duplicate run.
3. Parsing refuses anything it does not understand with :class:`ScheduleSyntaxError`, whose
   message says what was expected; the config loader turns it into a ConfigError naming the
   file and key.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Far enough to find "29 February on a Monday" (28 years) without looping forever on
# expressions that can never fire ("30 February").
_SEARCH_DAYS = 366 * 29

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        start=1,
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}
_DAY_WORDS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")


class ScheduleSyntaxError(ValueError):
    """A cron expression, duration or window that cannot be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed five-field cron expression (minute hour day-of-month month day-of-week)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    dom_restricted: bool
    dow_restricted: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_dom = day.day in self.days_of_month
        in_dow = (day.isoweekday() % 7) in self.days_of_week
        # Vixie cron: when both day fields are restricted, either may match.
        if self.dom_restricted and self.dow_restricted:
            return in_dom or in_dow
        if self.dom_restricted:
            return in_dom
        if self.dow_restricted:
            return in_dow
        return True


def _parse_value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    lowered = token.lower()
    if lowered in names:
        return names[lowered]
    if not token.isdigit():
        raise ScheduleSyntaxError(f"{field}: {token!r} is not a number between {low} and {high}")
    value = int(token)
    if not low <= value <= high:
        raise ScheduleSyntaxError(f"{field}: {value} is out of range {low}-{high}")
    return value


def _parse_field(
    text: str, low: int, high: int, names: dict[str, int], field: str
) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleSyntaxError(f"{field}: empty list item in {text!r}")
        range_part, _, step_part = part.partition("/")
        step = 1
        if step_part:
            if not step_part.isdigit() or int(step_part) == 0:
                raise ScheduleSyntaxError(f"{field}: step {step_part!r} must be a positive number")
            step = int(step_part)
        if range_part == "*":
            start, end = low, high
        elif "-" in range_part:
            first, _, last = range_part.partition("-")
            start = _parse_value(first, low, high, names, field)
            end = _parse_value(last, low, high, names, field)
            if start > end:
                raise ScheduleSyntaxError(f"{field}: range {range_part!r} runs backwards")
        else:
            start = _parse_value(range_part, low, high, names, field)
            end = high if step_part else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> CronSpec:
    """Parse a five-field cron expression or an @macro; raise ScheduleSyntaxError if invalid."""
    expanded = _MACROS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) != 5:
        raise ScheduleSyntaxError(
            f"expected five fields (minute hour day-of-month month day-of-week) or an @macro, "
            f"got {len(fields)} in {text!r}"
        )
    minute, hour, dom, month, dow = fields
    days_of_week = _parse_field(dow, 0, 7, _DAY_NAMES, "day-of-week")
    if 7 in days_of_week:  # 7 is Sunday too
        days_of_week = (days_of_week - {7}) | {0}
    spec = CronSpec(
        text=text.strip(),
        minutes=_parse_field(minute, 0, 59, {}, "minute"),
        hours=_parse_field(hour, 0, 23, {}, "hour"),
        days_of_month=_parse_field(dom, 1, 31, {}, "day-of-month"),
        months=_parse_field(month, 1, 12, _MONTH_NAMES, "month"),
        days_of_week=days_of_week,
        dom_restricted=not dom.startswith("*"),
        dow_restricted=not dow.startswith("*"),
    )
    if next_cron_time(spec, datetime(2000, 1, 1, tzinfo=UTC), ZoneInfo("UTC")) is None:
        raise ScheduleSyntaxError(f"{text!r} never fires (no such day exists)")
    return spec


def _wall_time_exists(candidate: datetime) -> bool:
    round_trip = candidate.astimezone(UTC).astimezone(candidate.tzinfo)
    return round_trip.replace(tzinfo=None) == candidate.replace(tzinfo=None)


def next_cron_time(spec: CronSpec, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The first firing strictly after ``after``, as an aware datetime in ``zone``."""
    local_after = after.astimezone(zone)
    day = local_after.date()
    hours = sorted(spec.hours)
    minutes = sorted(spec.minutes)
    for _ in range(_SEARCH_DAYS):
        if spec.matches_day(day):
            for hour in hours:
                for minute in minutes:
                    candidate = datetime.combine(day, time(hour, minute), tzinfo=zone)  # fold=0
                    if candidate <= after or not _wall_time_exists(candidate):
                        continue
                    return candidate
        day += timedelta(days=1)
    return None


def parse_duration(text: str) -> timedelta:
    """Parse ``30m``, ``6h``, ``1d``, ``2w`` into a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ScheduleSyntaxError(
            f"expected a positive whole number and a unit s, m, h, d or w (like '6h'), got {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def next_interval_time(anchor: datetime, every: timedelta, after: datetime) -> datetime:
    """The first ``anchor + k * every`` strictly after ``after`` (k >= 0)."""
    if after < anchor:
        return anchor
    periods = (after - anchor) // every + 1
    return anchor + periods * every


def describe_cron(spec: CronSpec, zone_name: str) -> str:
    """Cron in words where it is a common shape; the expression itself otherwise."""
    single_time = len(spec.hours) == 1 and len(spec.minutes) == 1
    if single_time and not spec.dom_restricted and spec.months == frozenset(range(1, 13)):
        at = f"{next(iter(spec.hours)):02d}:{next(iter(spec.minutes)):02d}"
        if not spec.dow_restricted:
            return f"daily at {at} ({zone_name})"
        days = ", ".join(_DAY_WORDS[d] for d in sorted(spec.days_of_week))
        return f"weekly on {days} at {at} ({zone_name})"
    if (
        single_time
        and spec.dom_restricted
        and not spec.dow_restricted
        and len(spec.days_of_month) == 1
    ):
        at = f"{next(iter(spec.hours)):02d}:{next(iter(spec.minutes)):02d}"
        day = next(iter(spec.days_of_month))
        if spec.months == frozenset(range(1, 13)):
            return f"monthly on day {day} at {at} ({zone_name})"
    return f"on the cron schedule '{spec.text}' ({zone_name})"


def describe_duration(every: timedelta) -> str:
    seconds = int(every.total_seconds())
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds} seconds"


# --- release windows ------------------------------------------------------------------------

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_MMDD = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


@dataclass(frozen=True, slots=True)
class ReleaseWindow:
    """When data may be released. Every part given must hold; an absent part always holds.

    ``dates`` is an inclusive annual range (month, day) that may wrap the year end;
    ``days`` are weekdays (0 = Sunday); ``hours`` is [start, end) local time.
    """

    dates: tuple[tuple[int, int], tuple[int, int]] | None
    days: frozenset[int] | None
    hours: tuple[time, time] | None

    def contains(self, local: datetime) -> bool:
        if self.dates is not None:
            start, end = self.dates
            key = (local.month, local.day)
            inside = start <= key <= end if start <= end else (key >= start or key <= end)
            if not inside:
                return False
        if self.days is not None and (local.isoweekday() % 7) not in self.days:
            return False
        if self.hours is not None:
            opens, closes = self.hours
            if not opens <= local.time().replace(tzinfo=None) < closes:
                return False
        return True


def parse_hours(text: str) -> tuple[time, time]:
    opens_text, sep, closes_text = text.partition("-")
    opens, closes = _HHMM.match(opens_text.strip()), _HHMM.match(closes_text.strip())
    if not sep or not opens or not closes:
        raise ScheduleSyntaxError(f"expected 'HH:MM-HH:MM' (like '09:00-17:00'), got {text!r}")
    start = time(int(opens.group(1)), int(opens.group(2)))
    end = time(int(closes.group(1)), int(closes.group(2)))
    if end <= start:
        raise ScheduleSyntaxError(f"window {text!r} closes before it opens")
    return start, end


def parse_dates(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    first, sep, last = text.partition("..")
    begins, ends = _MMDD.match(first.strip()), _MMDD.match(last.strip())
    if not sep or not begins or not ends:
        raise ScheduleSyntaxError(f"expected 'MM-DD..MM-DD' (like '04-01..04-14'), got {text!r}")
    return (int(begins.group(1)), int(begins.group(2))), (int(ends.group(1)), int(ends.group(2)))


def parse_days(names: list[str]) -> frozenset[int]:
    days: set[int] = set()
    for name in names:
        key = name.strip().lower()[:3]
        if key not in _DAY_NAMES:
            raise ScheduleSyntaxError(f"expected weekday names like 'mon', got {name!r}")
        days.add(_DAY_NAMES[key])
    if not days:
        raise ScheduleSyntaxError("expected at least one weekday")
    return frozenset(days)


def in_release_windows(windows: tuple[ReleaseWindow, ...], when: datetime, zone: ZoneInfo) -> bool:
    """True if there are no windows, or ``when`` falls in any of them."""
    if not windows:
        return True
    local = when.astimezone(zone)
    return any(window.contains(local) for window in windows)


def next_window_opening(
    windows: tuple[ReleaseWindow, ...], after: datetime, zone: ZoneInfo
) -> datetime | None:
    """The earliest moment at or after ``after`` that lies in a window (None if never)."""
    if in_release_windows(windows, after, zone):
        return after
    local = after.astimezone(zone)
    day = local.date()
    for _ in range(400):
        openings = [
            candidate
            for window in windows
            for candidate in [
                datetime.combine(day, window.hours[0] if window.hours else time(0, 0), tzinfo=zone)
            ]
            if candidate > after and _wall_time_exists(candidate) and window.contains(candidate)
        ]
        if openings:
            return min(openings)
        day += timedelta(days=1)
    return None


# --- the rule for one agreement -----------------------------------------------------------


class Frequency(enum.Enum):
    IMMEDIATE = "immediate"
    CRON = "cron"
    INTERVAL = "interval"


@dataclass(frozen=True, slots=True)
class ScheduleRule:
    """When an agreement's datasets may go out: frequency, time zone, windows, validity."""

    frequency: Frequency
    zone_name: str
    cron: CronSpec | None
    every: timedelta | None
    release_windows: tuple[ReleaseWindow, ...]
    commencement: date
    expiry: date

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.zone_name)

    def describe(self) -> str:
        if self.frequency is Frequency.IMMEDIATE:
            words = "immediately when a file is dropped"
        elif self.frequency is Frequency.CRON and self.cron is not None:
            words = describe_cron(self.cron, self.zone_name)
        elif self.every is not None:
            words = describe_duration(self.every)
        else:  # pragma: no cover - the loader never builds such a rule
            words = "never"
        if self.release_windows:
            words += ", within its release windows"
        return words

    def start(self) -> datetime:
        return datetime.combine(self.commencement, time(0, 0), tzinfo=self.zone)

    def end(self) -> datetime:
        """Sharing stops at the end of the expiry day, local time."""
        return datetime.combine(self.expiry + timedelta(days=1), time(0, 0), tzinfo=self.zone)


def next_run(rule: ScheduleRule, now: datetime) -> datetime | None:
    """When the next delivery run may happen after ``now`` (None once the agreement expired).

    For an immediate agreement this is ``now`` if sharing is allowed now (a dropped file goes
    at once), else the next moment it is allowed.
    """
    start = max(now, rule.start())
    if rule.frequency is Frequency.IMMEDIATE:
        due: datetime | None = start
    elif rule.frequency is Frequency.CRON and rule.cron is not None:
        due = next_cron_time(rule.cron, start - timedelta(microseconds=1), rule.zone)
    elif rule.every is not None:
        due = next_interval_time(rule.start(), rule.every, start - timedelta(microseconds=1))
    else:  # pragma: no cover - the loader never builds such a rule
        due = None
    if due is not None:
        due = next_window_opening(rule.release_windows, due, rule.zone)
    if due is None or due >= rule.end():
        return None
    return due
