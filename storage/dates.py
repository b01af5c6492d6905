"""Dates as people type them ("YYYY-MM-DD"), and the defaults every deadline starts from."""

from __future__ import annotations

import re
from datetime import date

#: Daily working hours (Asia/Shanghai) that response and resolution deadlines count in.
WORKDAY_START_HOUR = 9
WORKDAY_END_HOUR = 18

#: A category's deadlines unless it sets its own, and those of a request with no category.
DEFAULT_RESPONSE_HOURS = 8
DEFAULT_RESOLUTION_DAYS = 5

#: What a typed date looks like; Python's fromisoformat alone also takes 20261224 or 2026-W52-4.
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: str) -> date:
    """Reads "2026-03-01" (surrounding spaces ignored).

    Raises:
        ValueError: one line that follows the name of what was typed:
            "must be a calendar date like 2026-03-01, not 'yesterday'".
    """
    text = value.strip()
    if DATE_PATTERN.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"must be a calendar date like 2026-03-01, not {value!r}")


def parse_dates(value: str) -> frozenset[date]:
    """Reads a comma-separated list of dates; empty items are skipped.

    Raises:
        ValueError: as parse_date, for the first item that is not a date.
    """
    return frozenset(parse_date(part) for part in value.split(",") if part.strip())
