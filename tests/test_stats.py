"""`redesk stats` on a fixed dataset with hand-computed figures, on SQLite and PostgreSQL.

The dataset (docs/statistics.md defines every figure): eleven requests around March 2026 in
Asia/Shanghai time, nine of them received in the period 2026-03-01 .. 2026-03-31, with their
first-action and first-reply figures as the workflow fixes them, and the events that say who
acted first and which were forwarded or returned.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from admin_scripts import stats
from admin_scripts.cli import Exit, main
from admin_scripts.stats import Period
from bot import runtime as bot_runtime
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import Category, Department, Event, Person, Request, Role
from tests.utils.cli import isolate_cli
from workflow import service
from workflow.deadlines import LOCAL_TZ

#: "Now" for the figures that depend on it (overdue).
NOW = datetime(2026, 4, 10, 2, 0, tzinfo=UTC)

MARCH = Period(date(2026, 3, 1), date(2026, 3, 31))


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A moment on the Asia/Shanghai wall clock in 2026."""
    return datetime(2026, month, day, hour, minute, tzinfo=LOCAL_TZ).astimezone(UTC)


@dataclass(frozen=True)
class Spec:
    """One request of the dataset."""

    number: str
    created: datetime
    category: str
    department: str | None
    state: str
    #: (action, actor name) in order; actors: 王书记, 李书记, or staff.
    events: tuple[tuple[str, str], ...] = ()
    in_time: bool | None = None
    response: tuple[int, int] | None = None
    reply: tuple[int, int] | None = None
    rating: tuple[bool, str] | None = None
    reopens: int = 0
    due_in_past: bool = False


SPECS = [
    Spec(
        "SQ-20260302-0001",
        local(3, 2, 10),
        "市政设施",
        "城管执法",
        "closed",
        (
            ("forward", "王书记"),
            ("take", "staff"),
            ("complete", "staff"),
            ("approve", "王书记"),
            ("rate", "resident"),
        ),
        True,
        (1800, 1800),
        (86400, 28800),
        (True, "满意"),
    ),
    Spec(
        "SQ-20260302-0002",
        local(3, 2, 11),
        "市政设施",
        None,
        "handling",
        (
            ("forward", "李书记"),
            ("take", "staff"),
            ("complete", "staff"),
            ("approve", "李书记"),
            ("reopen", "resident"),
            ("accept", "王书记"),
        ),
        True,
        (3600, 3600),
        (172800, 57600),
        (False, "不满意"),
        reopens=1,
    ),
    Spec(
        "SQ-20260303-0001",
        local(3, 3, 9, 30),
        "咨询",
        None,
        "closed",
        (("accept", "王书记"), ("complete", "王书记"), ("approve", "王书记"), ("rate", "resident")),
        False,
        (36000, 14400),
        (40000, 20000),
        (True, "基本满意"),
    ),
    Spec(
        "SQ-20260305-0001",
        local(3, 5, 15),
        "市政设施",
        "市场监管",
        "dept_handling",
        (("forward", "李书记"), ("return", "staff"), ("forward", "王书记"), ("take", "staff")),
        True,
        (600, 600),
        due_in_past=True,
    ),
    Spec(
        "SQ-20260310-0001",
        local(3, 10, 12),
        "咨询",
        None,
        "rejected",
        (("reject", "李书记"),),
        True,
        (60, 60),
    ),
    Spec("SQ-20260311-0001", local(3, 11, 8), "咨询", None, "cancelled", (("cancel", "resident"),)),
    Spec(
        "SQ-20260312-0001",
        local(3, 12, 10),
        "市政设施",
        "城管执法",
        "closed",
        (
            ("forward", "王书记"),
            ("take", "staff"),
            ("complete", "staff"),
            ("approve", "王书记"),
            ("reopen", "resident"),
            ("forward", "王书记"),
            ("complete", "staff"),
            ("approve", "王书记"),
            ("reopen", "resident"),
            ("forward", "王书记"),
            ("complete", "staff"),
            ("approve", "王书记"),
            ("rate", "resident"),
        ),
        True,
        (1200, 1200),
        (7200, 7200),
        (True, "满意"),
        reopens=2,
    ),
    Spec(
        "SQ-20260320-0001",
        local(3, 20, 10),
        "市政设施",
        None,
        "replied",
        (("accept", "王书记"), ("complete", "王书记"), ("approve", "王书记")),
        True,
        (300, 300),
        (3600, 3600),
    ),
    # The last minute of the period, not acted on yet.
    Spec("SQ-20260331-0001", local(3, 31, 23, 59), "咨询", None, "new"),
    # Outside the period, on either side.
    Spec("SQ-20260228-0001", local(2, 28, 23, 59), "咨询", None, "new"),
    Spec(
        "SQ-20260401-0001",
        local(4, 1, 0, 0),
        "市政设施",
        None,
        "closed",
        (("accept", "王书记"), ("complete", "王书记"), ("approve", "王书记"), ("rate", "resident")),
        True,
        (60, 60),
        (120, 120),
        (True, "满意"),
    ),
]


def load(url: str) -> None:
    """Writes the dataset into the database at `url`."""
    with session_scope(get_engine(url)) as session:
        departments = {name: Department(name=name) for name in ("城管执法", "市场监管")}
        categories = {name: Category(name=name, keywords=[name]) for name in ("市政设施", "咨询")}
        session.add_all([*departments.values(), *categories.values()])
        people = {
            name: Person(channel="web", external_id=name, display_name=name, role=role)
            for name, role in (
                ("王书记", Role.WORKER),
                ("李书记", Role.WORKER),
                ("staff", Role.DEPARTMENT),
                ("resident", Role.REQUESTER),
            )
        }
        session.add_all(people.values())
        session.flush()
        centre_id = queries.default_centre(session=session).id
        for spec in SPECS:
            created = spec.created
            request = Request(
                number=spec.number,
                centre_id=centre_id,
                requester_id=people["resident"].id,
                channel="web",
                text="路灯坏了",
                category_id=categories[spec.category].id,
                department_id=departments[spec.department].id if spec.department else None,
                state=spec.state,
                created_at=created,
                updated_at=created,
                response_due_at=created + timedelta(hours=8),
                resolution_due_at=NOW - timedelta(days=1)
                if spec.due_in_past
                else NOW + timedelta(days=30),
                responded_in_time=spec.in_time,
                response_seconds=spec.response[0] if spec.response else None,
                response_work_seconds=spec.response[1] if spec.response else None,
                first_action_at=created + timedelta(seconds=spec.response[0])
                if spec.response
                else None,
                reply_seconds=spec.reply[0] if spec.reply else None,
                reply_work_seconds=spec.reply[1] if spec.reply else None,
                first_replied_at=created + timedelta(seconds=spec.reply[0]) if spec.reply else None,
                solved=spec.rating[0] if spec.rating else None,
                satisfaction=spec.rating[1] if spec.rating else None,
                reopen_count=spec.reopens,
            )
            session.add(request)
            session.flush()
            session.add(
                Event(
                    request_id=request.id,
                    actor_id=people["resident"].id,
                    action="submit",
                    to_state="new",
                    created_at=created,
                )
            )
            for index, (action, actor) in enumerate(spec.events, start=1):
                session.add(
                    Event(
                        request_id=request.id,
                        actor_id=people[actor].id,
                        action=action,
                        created_at=created + timedelta(minutes=index),
                    )
                )
            # A refused attempt is no action: it must not count as the first one.
            session.add(
                Event(
                    request_id=request.id,
                    actor_id=people["resident"].id,
                    action="accept",
                    outcome="refused",
                    created_at=created,
                )
            )


@pytest.fixture
def dataset(db_url: str) -> str:
    load(db_url)
    return db_url


def report(url: str, period: Period = MARCH, **kwargs: Any) -> stats.Report:
    return stats.compute(get_engine(url), period, now=NOW, **kwargs)


def rates(figures: stats.Figures) -> dict[str, tuple[int, int]]:
    return {name: (rate.numerator, rate.denominator) for name, rate in figures.rates.items()}


# --- totals -----------------------------------------------------------------------------------


def test_the_counts_of_march(dataset: str) -> None:
    totals = report(dataset).totals

    assert totals.counts == {
        "received": 9,
        "closed": 3,
        "open": 4,
        "overdue": 1,
        "forwarded": 4,
        "returned": 1,
        "rejected": 1,
        "cancelled": 1,
        "reopened": 2,
    }


def test_the_rates_of_march_with_their_numerators_and_denominators(dataset: str) -> None:
    totals = report(dataset).totals

    assert rates(totals) == {
        "response_rate": (6, 9),
        "resolution_rate": (3, 4),
        "satisfaction_rate": (3, 4),
        "rating_rate": (4, 5),
    }
    assert totals.rates["response_rate"].value == pytest.approx(6 / 9)


def test_the_percentiles_and_means_of_march(dataset: str) -> None:
    durations = report(dataset).totals.durations

    assert durations == pytest.approx(
        {
            # first action, calendar: 60 300 600 1200 1800 3600 36000
            "first_action_median_calendar_seconds": 1200.0,
            "first_action_p90_calendar_seconds": 16560.0,
            # first action, working: 60 300 600 1200 1800 3600 14400
            "first_action_median_working_seconds": 1200.0,
            "first_action_p90_working_seconds": 7920.0,
            # reply, calendar: 3600 7200 40000 86400 172800
            "reply_median_calendar_seconds": 40000.0,
            "reply_p90_calendar_seconds": 138240.0,
            # reply, working: 3600 7200 20000 28800 57600
            "reply_median_working_seconds": 20000.0,
            "reply_p90_working_seconds": 46080.0,
            # the means of the same values
            "first_action_mean_calendar_seconds": 43560 / 7,
            "first_action_mean_working_seconds": 21960 / 7,
            "reply_mean_calendar_seconds": 62000.0,
            "reply_mean_working_seconds": 23440.0,
        }
    )


def test_without_rated_requests_the_rates_are_empty_not_an_error(dataset: str) -> None:
    totals = report(dataset, Period(date(2026, 3, 10), date(2026, 3, 11))).totals

    assert totals.counts["received"] == 2
    assert totals.rates["resolution_rate"].value is None
    assert totals.rates["resolution_rate"].as_json() == {
        "numerator": 0,
        "denominator": 0,
        "value": None,
    }
    assert stats.percent(totals.rates["satisfaction_rate"]) == "— (0/0)"
    assert totals.durations["reply_median_working_seconds"] is None


def test_an_empty_period_has_zeros_and_no_division_error(dataset: str) -> None:
    totals = report(dataset, Period(date(2025, 1, 1), date(2025, 1, 31))).totals

    assert set(totals.counts.values()) == {0}
    assert all(rate.value is None for rate in totals.rates.values())


def test_the_period_boundaries_are_shanghai_days(dataset: str) -> None:
    # 2026-03-31 23:59 is in March; 2026-04-01 00:00 and 2026-02-28 23:59 are not
    last_day = report(dataset, Period(date(2026, 3, 31), date(2026, 3, 31))).totals
    first_of_april = report(dataset, Period(date(2026, 4, 1), None)).totals
    everything = report(dataset, Period()).totals

    assert last_day.counts["received"] == 1
    assert first_of_april.counts["received"] == 1
    assert everything.counts["received"] == 11


# --- groups -----------------------------------------------------------------------------------


def test_by_department_ranks_the_slowest_first(dataset: str) -> None:
    rows = report(dataset, by="department").rows

    assert [row.key for row in rows] == ["党委自办", "城管执法", "市场监管"]
    by_key = {row.key: row for row in rows}
    assert by_key["党委自办"].durations["reply_median_working_seconds"] == 20000.0
    assert by_key["城管执法"].durations["reply_median_working_seconds"] == 18000.0
    assert by_key["市场监管"].durations["reply_median_working_seconds"] is None
    assert [by_key[key].counts["received"] for key in ("党委自办", "城管执法", "市场监管")] == [
        6,
        2,
        1,
    ]
    assert by_key["市场监管"].counts["overdue"] == 1
    assert sum(row.counts["received"] for row in rows) == 9


def test_by_worker_counts_who_acted_first(dataset: str) -> None:
    rows = {row.key: row.counts["received"] for row in report(dataset, by="worker").rows}

    assert rows == {"王书记": 4, "李书记": 3, "（未处理）": 2}


def test_a_recalled_automatic_forward_is_no_return_and_counts_for_the_worker_who_acted(
    runtime: bot_runtime.Runtime,
) -> None:
    # Given a category that forwards to 市场监管 by itself, a resident and a worker
    with session_scope(runtime.engine) as session:
        market, lamps = Department(name="市场监管"), Department(name="城管执法")
        session.add_all([market, lamps])
        session.flush()
        session.add(
            Category(
                name="食品安全", keywords=["过期"], route="department", department_id=market.id
            )
        )
        resident = Person(channel="web", external_id="r", display_name="张三", role=Role.REQUESTER)
        worker = Person(channel="web", external_id="w", display_name="王书记", role=Role.WORKER)
        session.add_all([resident, worker])
        session.flush()
    moments = iter([local(3, 16, 10), local(3, 16, 10, 30), local(3, 16, 10, 40)])
    sources = iter(range(1, 4))

    def act(command: Any, actor: Person, *args: Any) -> Any:
        with session_scope(runtime.engine) as session:
            tx = dataclasses.replace(
                runtime.tx(session, f"stats:{next(sources)}"), now=next(moments)
            )
            return command(tx, session.get(Person, actor.id), *args)

    # When a request is forwarded there automatically, and the worker takes it back and
    # forwards it to 城管执法
    number = act(service.submit, resident, "超市卖过期牛奶").number
    act(service.recall, worker, number)
    act(service.forward, worker, number, "城管执法")

    # Then it counts as forwarded, not as returned, for 城管执法, and for the worker who
    # forwarded it, whose forward (40 minutes after intake) is its first action, in time
    totals = stats.compute(runtime.engine, MARCH, now=NOW).totals
    assert (totals.counts["forwarded"], totals.counts["returned"]) == (1, 0)
    assert (totals.rates["response_rate"].numerator, totals.rates["response_rate"].denominator) == (
        1,
        1,
    )
    by_department = stats.compute(runtime.engine, MARCH, now=NOW, by="department").rows
    assert {row.key: row.counts["received"] for row in by_department} == {"城管执法": 1}
    by_worker = stats.compute(runtime.engine, MARCH, now=NOW, by="worker").rows
    assert {row.key: row.counts["received"] for row in by_worker} == {"王书记": 1}
    durations = totals.durations
    assert durations["first_action_median_calendar_seconds"] == 40 * 60


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        (
            "day",
            {
                "2026-03-02": 2,
                "2026-03-03": 1,
                "2026-03-05": 1,
                "2026-03-10": 1,
                "2026-03-11": 1,
                "2026-03-12": 1,
                "2026-03-20": 1,
                "2026-03-31": 1,
            },
        ),
        ("week", {"2026-03-02": 4, "2026-03-09": 3, "2026-03-16": 1, "2026-03-30": 1}),
        ("month", {"2026-03": 9}),
        ("category", {"市政设施": 5, "咨询": 4}),
    ],
)
def test_by_period_and_category(dataset: str, by: str, expected: dict[str, int]) -> None:
    rows = report(dataset, by=by).rows

    assert {row.key: row.counts["received"] for row in rows} == expected
    assert [row.key for row in rows] == sorted(expected)


def test_filters_by_category_and_department(dataset: str) -> None:
    lamps = report(dataset, category="市政设施").totals
    committee = report(dataset, department="党委").totals
    city = report(dataset, department="城管执法", category="市政设施").totals

    assert lamps.counts["received"] == 5
    assert committee.counts["received"] == 6
    assert city.counts["received"] == 2
    assert rates(city)["resolution_rate"] == (2, 2)


def test_an_unknown_filter_is_an_error(dataset: str) -> None:
    with pytest.raises(stats.StatsError, match="no category"):
        report(dataset, category="不存在")
    with pytest.raises(stats.StatsError, match="no department"):
        report(dataset, department="不存在")


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def cli(dataset: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The CLI pointed at the dataset, with "now" fixed."""
    isolate_cli(monkeypatch, tmp_path, dataset)
    monkeypatch.setattr(stats, "utcnow", lambda: NOW)
    return dataset


def test_json_has_totals_and_rows_with_documented_keys(
    cli: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "stats",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-31",
            "--by",
            "department",
            "--format",
            "json",
        ]
    )

    assert code == Exit.OK
    data = json.loads(capsys.readouterr().out)
    totals = data["totals"]
    assert totals["received"] == 9 and totals["overdue"] == 1
    assert totals["response_rate"] == {"numerator": 6, "denominator": 9, "value": 0.6667}
    assert totals["reply_median_working_seconds"] == 20000.0
    assert totals["reply_mean_working_seconds"] == 23440.0
    assert totals["first_action_mean_calendar_seconds"] == 6222.9  # 43560 / 7
    assert [row["key"] for row in data["rows"]] == ["党委自办", "城管执法", "市场监管"]
    assert data["period"] == {"from": "2026-03-01", "to": "2026-03-31", "timezone": "Asia/Shanghai"}


def test_the_table_shows_rates_with_their_counts(
    cli: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["stats", "--from", "2026-03-01", "--to", "2026-03-31"])

    assert code == Exit.OK
    out = capsys.readouterr().out
    assert "响应率" in out and "66.7% (6/9)" in out
    assert "75.0% (3/4)" in out
    assert "党委自办" in out  # the department ranking follows the totals


def test_the_table_shows_durations_under_an_hour_in_minutes(
    cli: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given March, whose median first action took 1200 s (20 minutes), calendar and working
    # When the table is printed
    code = main(["stats", "--from", "2026-03-01", "--to", "2026-03-31"])

    # Then it reads 20 分钟, not 0.3 (or 0.0) hours; longer ones stay in hours
    assert code == Exit.OK
    out = capsys.readouterr().out
    assert "工作 20 分钟" in out and "自然 20 分钟" in out
    assert "0.0 小时" not in out and "0.3 小时" not in out
    assert "11.1 小时" in out  # the reply median, calendar: 40000 s


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "—"),
        (0, "0 秒"),
        (45.4, "45 秒"),
        (60, "1 分钟"),
        (1200, "20 分钟"),
        (3569, "59 分钟"),
        (3600, "1.0 小时"),
        (138240, "38.4 小时"),
    ],
)
def test_a_duration_is_shown_in_the_unit_that_reads_best(
    seconds: float | None,
    shown: str,
) -> None:
    assert stats.duration(seconds) == shown


def test_csv_and_xlsx_carry_the_same_numbers(
    cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "stats",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-31",
                "--by",
                "category",
                "--format",
                "csv",
                "--out",
                str(tmp_path / "s.csv"),
            ]
        )
        == Exit.OK
    )
    assert (
        main(
            [
                "stats",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-31",
                "--by",
                "category",
                "--format",
                "xlsx",
                "--out",
                str(tmp_path / "s.xlsx"),
            ]
        )
        == Exit.OK
    )

    text = (tmp_path / "s.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["分组"] for row in rows] == ["咨询", "市政设施", "合计"]
    assert rows[-1]["受理量"] == "9" and rows[-1]["响应率分子"] == "6"
    sheet = load_workbook(tmp_path / "s.xlsx").active
    assert sheet is not None
    table = [[cell.value for cell in row] for row in sheet.iter_rows()]
    header = table[0]
    assert header[0] == "分组"
    totals = dict(zip(header, table[-1], strict=True))
    assert (totals["分组"], totals["受理量"], totals["满意率分母"]) == ("合计", 9, 4)


def test_the_chart_is_a_png(cli: str, tmp_path: Path) -> None:
    chart = tmp_path / "trend.png"

    code = main(
        [
            "stats",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-31",
            "--by",
            "week",
            "--chart",
            str(chart),
        ]
    )

    assert code == Exit.OK
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--from", "2026-13-01"],
        ["--from", "2026-03-31", "--to", "2026-03-01"],
        ["--by", "year"],
        ["--format", "pdf"],
        ["--format", "xlsx"],
    ],
)
def test_bad_arguments_are_usage_errors(
    cli: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", *args]) == Exit.USAGE
    assert capsys.readouterr().err.strip()


def test_an_unknown_category_exits_not_found(cli: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--category", "不存在"]) == Exit.NOT_FOUND
    assert "不存在" in capsys.readouterr().err


def test_the_charts_font_has_every_character_it_draws() -> None:
    from matplotlib.ft2font import FT2Font

    from admin_scripts import report as output

    font = FT2Font(str(output._cjk_font()))
    words = (
        "诉求统计受理与办结趋势量各部门三率无数据记为响应解决满意日周（一）月至北京时间"
        "全部最早今党委自城管执法市场监"
    )
    missing = [char for char in words if font.get_char_index(ord(char)) == 0]
    assert missing == []


@pytest.mark.parametrize("option", ["--out", "--chart"])
def test_an_existing_out_or_chart_file_is_refused_unless_forced(
    cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    # Given a file of the admin's own where the figures would go
    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"keep me")
    args = ["stats", "--from", "2026-03-01", "--to", "2026-03-31", "--format", "csv"]
    if option == "--chart":
        args += ["--out", str(tmp_path / "s.csv")]
    args += [option, str(mine)]

    # When stats names it
    code = main(args)

    # Then it is a usage error naming the file, and nothing is written
    assert code == Exit.USAGE
    assert (
        capsys.readouterr().err.strip()
        == f"error: {option} {mine} exists; pass --force to overwrite it."
    )
    assert mine.read_bytes() == b"keep me"
    assert not (tmp_path / "s.csv").exists()

    # When the same is asked with --force
    assert main([*args, "--force"]) == Exit.OK

    # Then the file holds the figures
    written = mine.read_bytes()
    assert written.startswith(b"\x89PNG") if option == "--chart" else b"9" in written


def test_stats_does_not_write_through_a_symlink_and_with_force_replaces_the_link(
    cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a link where the figures would go, to a file elsewhere, and a dangling one
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("do not overwrite\n", encoding="utf-8")
    link, dangling = tmp_path / "s.csv", tmp_path / "c.png"
    link.symlink_to(elsewhere)
    dangling.symlink_to(tmp_path / "nowhere" / "c.png")
    args = ["stats", "--from", "2026-03-01", "--to", "2026-03-31", "--format", "csv"]

    # When stats names them
    # Then each is refused, naming the link and its target
    assert main([*args, "--out", str(link)]) == Exit.USAGE
    assert f"--out {link} is a symbolic link to {elsewhere};" in capsys.readouterr().err
    assert main([*args, "--chart", str(dangling)]) == Exit.USAGE
    assert (
        f"--chart {dangling} is a symbolic link to {tmp_path / 'nowhere' / 'c.png'}, "
        "which does not exist;" in capsys.readouterr().err
    )
    assert elsewhere.read_text(encoding="utf-8") == "do not overwrite\n"
    assert not (tmp_path / "nowhere").exists()

    # When forced
    assert main([*args, "--out", str(link), "--chart", str(dangling), "--force"]) == Exit.OK

    # Then the links themselves became the files; what they pointed to is untouched
    assert not link.is_symlink() and "受理量" in link.read_text(encoding="utf-8-sig")
    assert not dangling.is_symlink() and dangling.read_bytes().startswith(b"\x89PNG")
    assert elsewhere.read_text(encoding="utf-8") == "do not overwrite\n"
    assert not (tmp_path / "nowhere").exists()
