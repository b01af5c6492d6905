"""Working-day arithmetic on the Chinese calendar (holidays and make-up working days)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

from storage.dates import WORKDAY_END_HOUR, WORKDAY_START_HOUR

#: Every date shown to people, and every working day, is in this zone.
LOCAL_TZ = ZoneInfo("Asia/Shanghai")


#: Local exceptions to the national calendar (REDESK_EXTRA_DAYS_OFF / REDESK_EXTRA_WORKDAYS).
_days_off: frozenset[date] = frozenset()
_workdays: frozenset[date] = frozenset()


def configure(
    *, days_off: frozenset[date] = frozenset(), workdays: frozenset[date] = frozenset()
) -> None:
    """Sets the local days off and make-up working days (the process's settings)."""
    global _days_off, _workdays
    _days_off, _workdays = frozenset(days_off), frozenset(workdays)


def is_working_day(day: date, days_off: frozenset[date] = frozenset()) -> bool:
    """Whether `day` is a working day: local exceptions first, then the official calendar, or
    Monday to Friday beyond the years it covers.

    Args:
        day: The calendar day.
        days_off: A centre's own days off (workflow.scope.centre_calendar), on top of the
            process's.
    """
    if day in _days_off or day in days_off:
        return False
    if day in _workdays:
        return True
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        # The package covers the years the State Council has published; later, weekdays work.
        return day.weekday() < 5


def next_working_start(
    moment: datetime, start_hour: int, end_hour: int, days_off: frozenset[date] = frozenset()
) -> datetime:
    """The first working instant at or after `moment` (local working hours)."""
    local = moment.astimezone(LOCAL_TZ)
    day = local.date()
    while True:
        opens = datetime.combine(day, time(start_hour), LOCAL_TZ)
        closes = datetime.combine(day, time(end_hour % 24), LOCAL_TZ)
        if end_hour == 24:
            closes = datetime.combine(day + timedelta(days=1), time(0), LOCAL_TZ)
        if is_working_day(day, days_off) and local < closes:
            return max(local, opens)
        day += timedelta(days=1)
        local = datetime.combine(day, time(0), LOCAL_TZ)


def add_working_hours(
    moment: datetime,
    hours: float,
    *,
    start_hour: int = WORKDAY_START_HOUR,
    end_hour: int = WORKDAY_END_HOUR,
    days_off: frozenset[date] = frozenset(),
) -> datetime:
    """`moment` plus `hours` of working time; 0 hours means the end of the working day
    (`days_off`: a centre's own days off)."""
    current = next_working_start(moment, start_hour, end_hour, days_off)
    if hours <= 0:
        return _day_end(current, end_hour).astimezone(UTC)
    remaining = timedelta(hours=hours)
    while True:
        day_end = _day_end(current, end_hour)
        available = day_end - current
        if remaining <= available:
            return (current + remaining).astimezone(UTC)
        remaining -= available
        current = next_working_start(day_end, start_hour, end_hour, days_off)


def add_working_days(
    moment: datetime,
    days: int,
    *,
    start_hour: int = WORKDAY_START_HOUR,
    end_hour: int = WORKDAY_END_HOUR,
    days_off: frozenset[date] = frozenset(),
) -> datetime:
    """The end of the working day `days` working days after `moment`'s (0: the same day;
    `days_off`: a centre's own days off)."""
    current = next_working_start(moment, start_hour, end_hour, days_off)
    day = current.date()
    for _ in range(max(days, 0)):
        day += timedelta(days=1)
        while not is_working_day(day, days_off):
            day += timedelta(days=1)
    return _day_end(datetime.combine(day, time(start_hour), LOCAL_TZ), end_hour).astimezone(UTC)


def working_seconds(
    start: datetime,
    end: datetime,
    *,
    start_hour: int = WORKDAY_START_HOUR,
    end_hour: int = WORKDAY_END_HOUR,
    days_off: frozenset[date] = frozenset(),
) -> int:
    """Working time between two moments, in whole seconds (0 if `end` is not after `start`).

    Only the working hours of working days count: a request sent on Friday evening and
    answered on Monday at 10:00 took one working hour. `days_off` are a centre's own days off.
    """
    if end <= start:
        return 0
    total = timedelta()
    current = next_working_start(start, start_hour, end_hour, days_off)
    finish = end.astimezone(LOCAL_TZ)
    while current < finish:
        day_end = _day_end(current, end_hour)
        total += min(day_end, finish) - current
        current = next_working_start(day_end, start_hour, end_hour, days_off)
    return int(total.total_seconds())


def _day_end(local: datetime, end_hour: int) -> datetime:
    if end_hour == 24:
        return datetime.combine(local.date() + timedelta(days=1), time(0), LOCAL_TZ)
    return datetime.combine(local.date(), time(end_hour), LOCAL_TZ)


def local_day(moment: datetime) -> date:
    """The Asia/Shanghai calendar day of a UTC moment."""
    return moment.astimezone(LOCAL_TZ).date()


def format_local(moment: datetime | None, missing: str = "—") -> str:
    """A moment as people read it: 2026-11-23 18:00 (Asia/Shanghai); `missing` for none."""
    if moment is None:
        return missing
    return moment.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")
