"""Working-day arithmetic on the Chinese calendar, with fixed moments only.

The 2026 National Day holiday, as chinese_calendar 1.11 has it: 2026-10-01 (Thu) to 2026-10-07
(Wed) off; Sunday 2026-09-20 and Saturday 2026-10-10 are make-up working days. The
Mid-Autumn Festival (Friday 2026-09-25) is off too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from workflow.deadlines import (
    LOCAL_TZ,
    add_working_days,
    add_working_hours,
    format_local,
    is_working_day,
    local_day,
    next_working_start,
    working_seconds,
)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A moment on the Asia/Shanghai wall clock."""
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_TZ)


def assert_utc(moment: datetime) -> None:
    """Deadlines are stored as timezone-aware UTC."""
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)


# --- which days are working days ---------------------------------------------------------


@pytest.mark.parametrize("day", [date(2026, 10, d) for d in range(1, 8)], ids=str)
def test_every_day_of_the_2026_national_day_holiday_is_off(day: date) -> None:
    assert not is_working_day(day)


@pytest.mark.parametrize("day", [date(2026, 9, 20), date(2026, 10, 10)], ids=str)
def test_the_national_day_make_up_weekend_days_are_working_days(day: date) -> None:
    assert day.weekday() >= 5
    assert is_working_day(day)


def test_ordinary_weekends_are_off_and_weekdays_work() -> None:
    assert is_working_day(date(2026, 3, 2))  # Monday
    assert is_working_day(date(2026, 3, 6))  # Friday
    assert not is_working_day(date(2026, 3, 7))  # Saturday
    assert not is_working_day(date(2026, 3, 8))  # Sunday
    assert not is_working_day(date(2026, 10, 11))  # the Sunday after the make-up Saturday


def test_the_mid_autumn_festival_friday_is_off() -> None:
    assert not is_working_day(date(2026, 9, 25))


def test_beyond_the_calendars_years_monday_to_friday_work() -> None:
    # Given years the calendar package has no data for (it raises NotImplementedError)
    # Then weekdays work and weekends do not, holidays unknown
    assert is_working_day(date(2099, 1, 1))  # Thursday (New Year's Day, not known)
    assert is_working_day(date(2099, 1, 2))  # Friday
    assert not is_working_day(date(2099, 1, 3))  # Saturday
    assert not is_working_day(date(2099, 1, 4))  # Sunday
    assert is_working_day(date(2099, 1, 5))  # Monday
    assert not is_working_day(date(2000, 1, 1))  # Saturday, before the calendar's years


# --- working days ------------------------------------------------------------------------


def test_zero_working_days_is_the_end_of_the_same_working_day() -> None:
    deadline = add_working_days(local(2026, 3, 2, 10), 0)
    assert deadline == local(2026, 3, 2, 18)
    assert_utc(deadline)


def test_one_working_day_before_the_holiday_lands_after_it() -> None:
    # Given a request on Wednesday 2026-09-30, the last working day before National Day
    # When it is due in one working day
    deadline = add_working_days(local(2026, 9, 30, 10), 1)
    # Then it is due at the end of Thursday 2026-10-08, the first day back
    assert deadline == local(2026, 10, 8, 18)
    assert_utc(deadline)


def test_working_days_count_the_make_up_saturday_after_the_holiday() -> None:
    start = local(2026, 9, 30, 10)
    assert add_working_days(start, 2) == local(2026, 10, 9, 18)
    assert add_working_days(start, 3) == local(2026, 10, 10, 18)  # make-up Saturday
    assert add_working_days(start, 4) == local(2026, 10, 12, 18)  # Sunday 10-11 is off


def test_working_days_count_the_make_up_sunday_before_the_holiday() -> None:
    # Friday 2026-09-18 plus one working day is the make-up Sunday 2026-09-20.
    assert add_working_days(local(2026, 9, 18, 15), 1) == local(2026, 9, 20, 18)


def test_a_request_made_during_the_holiday_starts_counting_on_the_first_day_back() -> None:
    assert add_working_days(local(2026, 10, 3, 10), 0) == local(2026, 10, 8, 18)
    assert add_working_days(local(2026, 10, 3, 10), 1) == local(2026, 10, 9, 18)


def test_the_local_day_decides_not_the_utc_day() -> None:
    # Given 2026-09-30 16:30 UTC, which is already 2026-10-01 00:30 in Shanghai (a holiday)
    moment = datetime(2026, 9, 30, 16, 30, tzinfo=UTC)
    # Then the same-day deadline is the end of the first working day after the holiday
    assert add_working_days(moment, 0) == local(2026, 10, 8, 18)
    # And 2026-09-29 20:00 UTC is 2026-09-30 04:00 in Shanghai: that day's end, not the 29th's
    assert add_working_days(datetime(2026, 9, 29, 20, 0, tzinfo=UTC), 0) == local(2026, 9, 30, 18)


def test_working_days_skip_a_weekend() -> None:
    # Friday 2026-03-06 plus one working day is Monday 2026-03-09.
    assert add_working_days(local(2026, 3, 6, 11), 1) == local(2026, 3, 9, 18)
    assert add_working_days(local(2026, 3, 6, 11), 5) == local(2026, 3, 13, 18)


def test_a_moment_after_hours_counts_from_the_next_working_day() -> None:
    # Friday 19:00 is after hours: day 0 is Monday.
    assert add_working_days(local(2026, 3, 6, 19), 0) == local(2026, 3, 9, 18)
    assert add_working_days(local(2026, 3, 6, 19), 1) == local(2026, 3, 10, 18)


def test_negative_working_days_count_as_zero() -> None:
    assert add_working_days(local(2026, 3, 2, 10), -3) == local(2026, 3, 2, 18)


def test_working_days_beyond_the_calendar_skip_only_weekends() -> None:
    # Friday 2099-01-02 plus one working day is Monday 2099-01-05.
    assert add_working_days(local(2099, 1, 2, 10), 1) == local(2099, 1, 5, 18)
    # New Year's Day 2099 (a Thursday) counts, as nothing is known about that year.
    assert add_working_days(local(2098, 12, 31, 10), 1) == local(2099, 1, 1, 18)


def test_working_days_use_the_configured_end_of_the_working_day() -> None:
    assert add_working_days(local(2026, 3, 2, 10), 1, start_hour=8, end_hour=17) == local(
        2026, 3, 3, 17
    )


# --- working hours -----------------------------------------------------------------------


def test_zero_hours_is_the_end_of_the_same_working_day() -> None:
    deadline = add_working_hours(local(2026, 3, 2, 10), 0)
    assert deadline == local(2026, 3, 2, 18)
    assert_utc(deadline)


def test_zero_hours_after_hours_is_the_end_of_the_next_working_day() -> None:
    # Given Monday 18:01, a moment after hours
    assert add_working_hours(local(2026, 3, 2, 18, 1), 0) == local(2026, 3, 3, 18)
    # And exactly at closing time the day is over too
    assert add_working_hours(local(2026, 3, 2, 18), 0) == local(2026, 3, 3, 18)


def test_hours_within_one_working_day() -> None:
    deadline = add_working_hours(local(2026, 3, 2, 10), 4)
    assert deadline == local(2026, 3, 2, 14)
    assert_utc(deadline)


def test_hours_that_fill_the_day_exactly_end_at_closing_time() -> None:
    assert add_working_hours(local(2026, 3, 2, 9), 9) == local(2026, 3, 2, 18)
    assert add_working_hours(local(2026, 3, 2, 10), 8) == local(2026, 3, 2, 18)


def test_hours_before_opening_start_counting_at_opening() -> None:
    assert add_working_hours(local(2026, 3, 2, 7), 2) == local(2026, 3, 2, 11)


def test_hours_after_hours_start_counting_the_next_working_morning() -> None:
    assert add_working_hours(local(2026, 3, 2, 19), 8) == local(2026, 3, 3, 17)
    assert add_working_hours(local(2026, 3, 2, 18), 1) == local(2026, 3, 3, 10)


def test_hours_carry_over_a_weekend() -> None:
    # Friday 17:00 + 4 h: one hour on Friday, three on Monday.
    assert add_working_hours(local(2026, 3, 6, 17), 4) == local(2026, 3, 9, 12)


def test_hours_carry_over_the_national_day_holiday() -> None:
    # Wednesday 2026-09-30 16:00 + 4 h: two hours that day, two on Thursday 2026-10-08.
    assert add_working_hours(local(2026, 9, 30, 16), 4) == local(2026, 10, 8, 11)
    # And 21 h from there: 2 on 09-30, 9 on 10-08, 9 on 10-09, the last on the make-up Saturday.
    assert add_working_hours(local(2026, 9, 30, 16), 2 + 9 + 9 + 1) == local(2026, 10, 10, 10)


def test_hours_on_the_make_up_saturday_count() -> None:
    assert add_working_hours(local(2026, 10, 10, 8), 3) == local(2026, 10, 10, 12)


def test_fractional_hours_are_honoured() -> None:
    assert add_working_hours(local(2026, 3, 2, 10), 1.5) == local(2026, 3, 2, 11, 30)


def test_hours_with_a_working_day_ending_at_midnight() -> None:
    # Given working hours 0-24
    # Then Monday 22:00 + 4 h is Tuesday 02:00, and 0 h is Monday's midnight
    assert add_working_hours(local(2026, 3, 2, 22), 4, start_hour=0, end_hour=24) == local(
        2026, 3, 3, 2
    )
    assert add_working_hours(local(2026, 3, 2, 22), 0, start_hour=0, end_hour=24) == local(
        2026, 3, 3, 0
    )
    # And Friday 23:00 + 2 h skips the weekend to Monday 01:00
    assert add_working_hours(local(2026, 3, 6, 23), 2, start_hour=0, end_hour=24) == local(
        2026, 3, 9, 1
    )


def test_hours_beyond_the_calendar_skip_only_weekends() -> None:
    assert add_working_hours(local(2099, 1, 2, 17), 2) == local(2099, 1, 5, 10)


# --- helpers -----------------------------------------------------------------------------


def test_next_working_start_keeps_a_moment_inside_working_hours() -> None:
    assert next_working_start(local(2026, 3, 2, 10, 15), 9, 18) == local(2026, 3, 2, 10, 15)


def test_next_working_start_jumps_over_the_holiday_to_the_opening_time() -> None:
    assert next_working_start(local(2026, 10, 1, 12), 9, 18) == local(2026, 10, 8, 9)


def test_local_day_is_the_shanghai_calendar_day() -> None:
    assert local_day(datetime(2026, 3, 1, 15, 59, tzinfo=UTC)) == date(2026, 3, 1)
    assert local_day(datetime(2026, 3, 1, 16, 0, tzinfo=UTC)) == date(2026, 3, 2)


def test_format_local_shows_shanghai_wall_time() -> None:
    assert format_local(datetime(2026, 3, 2, 10, 0, tzinfo=UTC)) == "2026-03-02 18:00"
    assert format_local(datetime(2026, 12, 31, 16, 5, tzinfo=UTC)) == "2027-01-01 00:05"


def test_format_local_shows_a_dash_for_no_moment() -> None:
    assert format_local(None) == "—"


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        # within one working day
        (local(2025, 9, 30, 10), local(2025, 9, 30, 12, 30), 2.5),
        # Friday evening to Monday morning: the weekend does not count
        (local(2025, 9, 19, 17), local(2025, 9, 22, 10), 2.0),
        # across the National Day holiday (10-01 .. 10-08): only 09-30 17-18 and 10-09 9-10
        (local(2025, 9, 30, 17), local(2025, 10, 9, 10), 2.0),
        # the make-up working Saturday 10-11 counts in full
        (local(2025, 10, 10, 17), local(2025, 10, 13, 9, 30), 10.5),
        # the make-up working Sunday 09-28 counts too
        (local(2025, 9, 27, 12), local(2025, 9, 28, 12), 3.0),
        # before opening and after closing count nothing
        (local(2025, 9, 30, 6), local(2025, 9, 30, 8), 0.0),
        (local(2025, 9, 30, 19), local(2025, 9, 30, 23), 0.0),
        # the end before the start
        (local(2025, 9, 30, 12), local(2025, 9, 30, 10), 0.0),
    ],
)
def test_working_seconds_count_only_working_hours_of_working_days(
    start: datetime, end: datetime, hours: float
) -> None:
    assert working_seconds(start.astimezone(UTC), end.astimezone(UTC)) == hours * 3600


# --- a centre's own days off -----------------------------------------------------------------

#: Tuesday 2026-03-03, a working day nationally, taken off by some centre.
TUESDAY = date(2026, 3, 3)


def test_a_centres_day_off_is_off_for_it_and_working_for_everyone_else() -> None:
    assert is_working_day(TUESDAY)
    assert not is_working_day(TUESDAY, frozenset({TUESDAY}))


def test_every_deadline_function_skips_a_centres_day_off() -> None:
    # Given Monday 2026-03-02 at 17:00, and a centre with Tuesday off
    monday = local(2026, 3, 2, 17)
    off = frozenset({TUESDAY})

    # Then two working hours end on Wednesday, one working day is Wednesday, and the time from
    # Monday 17:00 to Wednesday 10:00 is two working hours (1 h Monday, 1 h Wednesday)
    assert add_working_hours(monday, 2) == local(2026, 3, 3, 10)
    assert add_working_hours(monday, 2, days_off=off) == local(2026, 3, 4, 10)
    assert add_working_days(monday, 1) == local(2026, 3, 3, 18)
    assert add_working_days(monday, 1, days_off=off) == local(2026, 3, 4, 18)
    wednesday = local(2026, 3, 4, 10)
    assert working_seconds(monday, wednesday) == (1 + 9 + 1) * 3600
    assert working_seconds(monday, wednesday, days_off=off) == 2 * 3600
    assert next_working_start(local(2026, 3, 2, 19), 9, 18, off) == local(2026, 3, 4, 9)
