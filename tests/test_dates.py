"""storage.dates: the one reader of typed "YYYY-MM-DD" dates."""

from __future__ import annotations

from datetime import date

import pytest

from storage.dates import parse_date, parse_dates


def test_a_typed_date_is_read_with_its_spaces_ignored() -> None:
    assert parse_date(" 2026-03-01 ") == date(2026, 3, 1)


@pytest.mark.parametrize(
    "value", ["yesterday", "20260301", "2026-W09-7", "2026-02-30", "2026-3-1", ""]
)
def test_anything_but_a_calendar_date_is_refused_in_one_line(value: str) -> None:
    # When something that is not a calendar day is read
    with pytest.raises(ValueError) as raised:
        parse_date(value)

    # Then the error says what a date looks like and quotes what was typed
    assert str(raised.value) == f"must be a calendar date like 2026-03-01, not {value!r}"


def test_a_list_of_dates_skips_empty_items_and_refuses_a_bad_one() -> None:
    assert parse_dates("2026-12-24, ,2026-12-31,") == {date(2026, 12, 24), date(2026, 12, 31)}
    with pytest.raises(ValueError, match="'christmas'"):
        parse_dates("2026-12-24,christmas")
