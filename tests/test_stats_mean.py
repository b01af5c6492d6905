"""The mean (平均) of each duration, against a hand computation on a small dataset, on SQLite
and PostgreSQL: totals, groups, JSON (seconds), CSV (hours) and the table."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from admin_scripts import report as output
from admin_scripts import stats
from admin_scripts.cli import Exit, main
from admin_scripts.stats import Period
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import Department, Person, Request, Role
from tests.utils.cli import isolate_cli

NOW = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)
JUNE = Period(date(2026, 6, 1), date(2026, 6, 30))

#: (department, (response calendar, working) or None, (reply calendar, working) or None).
ROWS: list[tuple[str | None, tuple[int, int] | None, tuple[int, int] | None]] = [
    ("城管执法", (100, 100), (7200, 3600)),
    ("城管执法", (200, 50), None),
    (None, (250, 250), (10800, 1800)),
    (None, None, None),  # not acted on yet: in no duration
]


def load(url: str) -> None:
    with session_scope(get_engine(url)) as session:
        department = Department(name="城管执法")
        resident = Person(channel="web", external_id="r", display_name="r", role=Role.REQUESTER)
        session.add_all([department, resident])
        session.flush()
        centre_id = queries.default_centre(session=session).id
        for index, (held_by, response, reply) in enumerate(ROWS, start=1):
            created = datetime(2026, 6, 2, 2, index, tzinfo=UTC)
            session.add(
                Request(
                    number=f"SQ-20260602-{index:04d}",
                    centre_id=centre_id,
                    requester_id=resident.id,
                    channel="web",
                    text="路灯坏了",
                    department_id=department.id if held_by else None,
                    state="handling" if response else "new",
                    created_at=created,
                    updated_at=created,
                    response_due_at=created + timedelta(hours=8),
                    resolution_due_at=NOW + timedelta(days=30),
                    responded_in_time=True if response else None,
                    response_seconds=response[0] if response else None,
                    response_work_seconds=response[1] if response else None,
                    first_action_at=created + timedelta(seconds=response[0]) if response else None,
                    reply_seconds=reply[0] if reply else None,
                    reply_work_seconds=reply[1] if reply else None,
                    first_replied_at=created + timedelta(seconds=reply[0]) if reply else None,
                )
            )


@pytest.fixture
def small(db_url: str) -> str:
    load(db_url)
    return db_url


def means(figures: stats.Figures) -> dict[str, float | None]:
    return {key: value for key, value in figures.durations.items() if "_mean_" in key}


def test_the_mean_of_each_duration_is_the_hand_computed_average(small: str) -> None:
    totals = stats.compute(get_engine(small), JUNE, now=NOW).totals

    assert means(totals) == pytest.approx(
        {
            # (100 + 200 + 250) / 3; the request not acted on is left out, not counted as 0
            "first_action_mean_calendar_seconds": 550 / 3,
            "first_action_mean_working_seconds": (100 + 50 + 250) / 3,
            "reply_mean_calendar_seconds": (7200 + 10800) / 2,
            "reply_mean_working_seconds": (3600 + 1800) / 2,
        }
    )
    # The percentiles are unchanged beside it: the median of 100, 200, 250 is 200
    assert totals.durations["first_action_median_calendar_seconds"] == pytest.approx(200)


def test_each_group_has_its_own_mean_and_none_without_the_duration(small: str) -> None:
    rows = stats.compute(get_engine(small), JUNE, now=NOW, by="department").rows
    by_key = {row.key: row for row in rows}

    assert means(by_key["城管执法"]) == pytest.approx(
        {
            "first_action_mean_calendar_seconds": 150.0,
            "first_action_mean_working_seconds": 75.0,
            "reply_mean_calendar_seconds": 7200.0,
            "reply_mean_working_seconds": 3600.0,
        }
    )
    assert means(by_key["党委自办"]) == pytest.approx(
        {
            "first_action_mean_calendar_seconds": 250.0,
            "first_action_mean_working_seconds": 250.0,
            "reply_mean_calendar_seconds": 10800.0,
            "reply_mean_working_seconds": 1800.0,
        }
    )


def test_without_any_duration_the_mean_is_none(small: str) -> None:
    totals = stats.compute(get_engine(small), Period(date(2025, 1, 1), date(2025, 1, 2))).totals

    assert set(means(totals)) == {
        "first_action_mean_calendar_seconds",
        "first_action_mean_working_seconds",
        "reply_mean_calendar_seconds",
        "reply_mean_working_seconds",
    }
    assert set(means(totals).values()) == {None}
    assert (
        output.to_json(
            stats.compute(get_engine(small), Period(date(2025, 1, 1), date(2025, 1, 2)))
        ).count("_mean_")
        == 4
    )


def test_json_gives_seconds_csv_hours_and_the_table_reads_well(
    small: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    isolate_cli(monkeypatch, tmp_path, small)
    monkeypatch.setattr(stats, "utcnow", lambda: NOW)
    period = ["--from", "2026-06-01", "--to", "2026-06-30"]

    assert main(["stats", *period, "--format", "json"]) == Exit.OK
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["first_action_mean_calendar_seconds"] == 183.3  # 550 / 3, one decimal
    assert totals["reply_mean_working_seconds"] == 2700.0

    assert main(["stats", *period, "--format", "csv", "--out", str(tmp_path / "s.csv")]) == Exit.OK
    text = (tmp_path / "s.csv").read_text(encoding="utf-8-sig")
    row = list(csv.DictReader(io.StringIO(text)))[-1]
    assert row["分组"] == "合计"
    assert row["回单平均(自然小时)"] == "2.5"  # 9000 s
    assert row["回单平均(工作小时)"] == "0.75"  # 2700 s
    assert row["首次响应平均(自然小时)"] == "0.05"  # 183.3 s

    assert main(["stats", *period]) == Exit.OK
    out = capsys.readouterr().out
    assert "首次响应用时平均" in out and "工作 2 分钟 / 自然 3 分钟" in out
    assert "回单用时平均" in out and "工作 45 分钟 / 自然 2.5 小时" in out
