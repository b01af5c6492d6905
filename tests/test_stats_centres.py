"""`redesk stats --centre` and `--by centre`: the figures of a tree of centres, rolled up over
each subtree, on SQLite and PostgreSQL.

The tree: the default centre (a root holding one request) and 福田区 (a root) with 香蜜湖社区
(and its 楼宇 香蜜湖大厦 below it), 莲花社区 and 华强北商圈 (holding nothing). Every figure
below is counted by hand from TREE.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from admin_scripts import export, stats
from admin_scripts.cli import Exit, main
from admin_scripts.stats import Period
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import AdminAudit, CentreLevel, Department, Event, Person, Request, Role
from tests.utils.cli import isolate_cli
from workflow.deadlines import LOCAL_TZ

#: "Now" for the figures that depend on it (overdue).
NOW = datetime(2026, 4, 10, 2, 0, tzinfo=UTC)

MARCH = Period(date(2026, 3, 1), date(2026, 3, 31))

#: (code, name, level, parent code); the default centre is there already.
CENTRES: tuple[tuple[str, str, str, str | None], ...] = (
    ("futian", "福田区", CentreLevel.DISTRICT, None),
    ("xmh", "香蜜湖社区", CentreLevel.COMMUNITY, "futian"),
    ("lianhua", "莲花社区", CentreLevel.COMMUNITY, "futian"),
    ("hqb", "华强北商圈", CentreLevel.BUSINESS, "futian"),
    ("xmh-t1", "香蜜湖大厦", CentreLevel.BUILDING, "xmh"),
)


@dataclass(frozen=True)
class Held:
    """One request of the dataset and the centre that holds it."""

    centre: str
    state: str
    in_time: bool | None = None
    #: Working seconds from intake to the first 回单 (None: no 回单 yet).
    reply: int | None = None
    rating: tuple[bool, str] | None = None
    forwarded: bool = False


TREE = [
    Held("futian", "closed", True, 3600, (True, "满意")),
    Held("xmh", "closed", True, 3600, (True, "基本满意"), forwarded=True),
    Held("xmh-t1", "handling", False),
    Held("xmh-t1", "replied", True, 7200),
    Held("lianhua", "new"),
    Held("lianhua", "closed", True, 1800, (False, "不满意")),
    Held("default", "new"),
]


def load(url: str) -> None:
    """Writes the tree and TREE's requests into the database at `url`."""
    with session_scope(get_engine(url)) as session:
        centres = {"default": queries.default_centre(session=session)}
        for code, name, level, parent in CENTRES:
            centres[code] = queries.add_centre(
                session=session,
                code=code,
                name=name,
                level=str(level),
                parent=centres[parent] if parent else None,
            )
        department = Department(name="城管执法", centre_id=centres["futian"].id)
        resident = Person(channel="web", external_id="r", display_name="居民", role=Role.REQUESTER)
        worker = Person(channel="web", external_id="w", display_name="王书记", role=Role.WORKER)
        session.add_all([department, resident, worker])
        session.flush()
        for index, held in enumerate(TREE, start=1):
            created = datetime(2026, 3, index, 10, tzinfo=LOCAL_TZ).astimezone(UTC)
            request = Request(
                number=f"SQ-202603{index:02d}-0001",
                centre_id=centres[held.centre].id,
                requester_id=resident.id,
                channel="web",
                text="路灯坏了",
                department_id=department.id if held.forwarded else None,
                state=held.state,
                created_at=created,
                updated_at=created,
                response_due_at=created + timedelta(hours=8),
                resolution_due_at=NOW + timedelta(days=30),
                responded_in_time=held.in_time,
                reply_seconds=held.reply,
                reply_work_seconds=held.reply,
                first_replied_at=created + timedelta(seconds=held.reply) if held.reply else None,
                solved=held.rating[0] if held.rating else None,
                satisfaction=held.rating[1] if held.rating else None,
            )
            session.add(request)
            session.flush()
            if held.forwarded:
                session.add(
                    Event(
                        request_id=request.id,
                        actor_id=worker.id,
                        action="forward",
                        created_at=created + timedelta(minutes=1),
                    )
                )


@pytest.fixture
def tree(db_url: str) -> str:
    load(db_url)
    return db_url


def report(url: str, **kwargs: Any) -> stats.Report:
    return stats.compute(get_engine(url), MARCH, now=NOW, **kwargs)


def rates(figures: stats.Figures) -> dict[str, tuple[int, int]]:
    return {name: (rate.numerator, rate.denominator) for name, rate in figures.rates.items()}


def rows_by_key(result: stats.Report) -> dict[str, stats.Figures]:
    return {row.key or "": row for row in result.rows}


def test_a_centre_counts_its_whole_subtree(tree: str) -> None:
    # Given the tree; When the district is counted
    district = report(tree, centre="futian").totals
    community = report(tree, centre="XMH").totals

    # Then its six requests count, its communities' and their 楼宇's included
    assert district.counts["received"] == 6
    assert district.counts["closed"] == 3
    assert district.counts["forwarded"] == 1
    assert rates(district) == {
        "response_rate": (4, 6),
        "resolution_rate": (2, 3),
        "satisfaction_rate": (2, 3),
        "rating_rate": (3, 4),
    }
    # And a community counts its 楼宇 (the code is read without regard to case)
    assert community.counts["received"] == 3
    assert rates(community)["rating_rate"] == (1, 2)


def test_by_centre_gives_each_child_rolled_up_and_the_centre_itself(tree: str) -> None:
    # When the district's figures are grouped by centre
    result = report(tree, by="centre", centre="futian")

    # Then there is a row per child centre over its subtree, and one for what the district
    # holds itself
    rows = rows_by_key(result)
    assert set(rows) == {"香蜜湖社区", "莲花社区", "华强北商圈", "福田区（本级）"}
    assert {key: row.counts["received"] for key, row in rows.items()} == {
        "香蜜湖社区": 3,
        "莲花社区": 2,
        "华强北商圈": 0,
        "福田区（本级）": 1,
    }
    assert rates(rows["香蜜湖社区"]) == {
        "response_rate": (2, 3),
        "resolution_rate": (1, 1),
        "satisfaction_rate": (1, 1),
        "rating_rate": (1, 2),
    }
    assert rates(rows["莲花社区"]) == {
        "response_rate": (1, 2),
        "resolution_rate": (0, 1),
        "satisfaction_rate": (0, 1),
        "rating_rate": (1, 1),
    }
    assert rates(rows["华强北商圈"])["response_rate"] == (0, 0)
    assert rows["香蜜湖社区"].durations["reply_median_working_seconds"] == 5400.0
    assert (rows["香蜜湖社区"].centre, rows["香蜜湖社区"].own) == ("xmh", False)
    assert (rows["福田区（本级）"].centre, rows["福田区（本级）"].own) == ("futian", True)
    assert result.centre is not None and result.centre.code == "futian"


@pytest.mark.parametrize("centre", ["futian", "xmh", None])
def test_the_rows_of_by_centre_add_up_to_the_total(tree: str, centre: str | None) -> None:
    # When any scope is grouped by centre
    result = report(tree, by="centre", centre=centre)

    # Then every count, numerator and denominator of the rows sums to the total's
    for name, _ in stats.COUNTS:
        assert sum(row.counts[name] for row in result.rows) == result.totals.counts[name], name
    for name, *_ in stats.RATES:
        assert sum(row.rates[name].numerator for row in result.rows) == (
            result.totals.rates[name].numerator
        ), name
        assert sum(row.rates[name].denominator for row in result.rows) == (
            result.totals.rates[name].denominator
        ), name


def test_by_centre_without_a_centre_gives_the_roots(tree: str) -> None:
    # When the whole tree (two roots) is grouped by centre
    result = report(tree, by="centre")

    # Then each root is a row over its subtree, and the total is everything
    rows = rows_by_key(result)
    assert {key: row.counts["received"] for key, row in rows.items()} == {
        "党群服务中心": 1,
        "福田区": 6,
    }
    assert result.totals.counts["received"] == 7
    assert result.centre is None


def test_by_centre_with_one_root_gives_its_children(db_url: str) -> None:
    # Given a single-centre install with one request
    with session_scope(get_engine(db_url)) as session:
        centre = queries.default_centre(session=session)
        resident = Person(channel="web", external_id="r", role=Role.REQUESTER)
        session.add(resident)
        session.flush()
        created = datetime(2026, 3, 2, 10, tzinfo=UTC)
        session.add(
            Request(
                number="SQ-20260302-0001",
                centre_id=centre.id,
                requester_id=resident.id,
                channel="web",
                text="路灯坏了",
                state="new",
                created_at=created,
                updated_at=created,
            )
        )

    # When it is grouped by centre
    result = report(db_url, by="centre")

    # Then the one root is the scope: it has no children, so only its own row
    assert [(row.key, row.counts["received"], row.own) for row in result.rows] == [
        ("党群服务中心（本级）", 1, True)
    ]


def test_by_centre_ranks_the_slowest_first(tree: str) -> None:
    # When the district is grouped by centre
    result = report(tree, by="centre", centre="futian")

    # Then the longest median working time to 回单 comes first, no 回单 at all last
    assert [row.key for row in result.rows] == [
        "香蜜湖社区",
        "福田区（本级）",
        "莲花社区",
        "华强北商圈",
    ]


def test_a_department_name_of_several_centres_counts_each_within_the_scope(tree: str) -> None:
    # Given a 城管执法 of the default centre too, holding the default centre's request
    with session_scope(get_engine(tree)) as session:
        default = queries.default_centre(session=session)
        other = Department(name="城管执法", centre_id=default.id)
        session.add(other)
        session.flush()
        request = session.exec(select(Request).where(Request.centre_id == default.id)).one()
        request.department_id = other.id
        session.add(request)

    # When the requests of 城管执法 are counted, everywhere and in the district
    everywhere = report(tree, department="城管执法").totals
    district = report(tree, department="城管执法", centre="futian").totals

    # Then both departments of that name count everywhere, the district's only in the district
    assert everywhere.counts["received"] == 2
    assert district.counts["received"] == 1


def test_an_unknown_centre_is_an_error(tree: str) -> None:
    with pytest.raises(stats.StatsError, match="nowhere"):
        report(tree, centre="nowhere")


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def cli(tree: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The CLI pointed at the tree, with "now" fixed."""
    isolate_cli(monkeypatch, tmp_path, tree)
    monkeypatch.setattr(stats, "utcnow", lambda: NOW)
    return tree


def test_json_by_centre_names_the_scope_and_each_rows_centre(
    cli: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the district's figures are asked for as JSON
    code = main(
        ["stats", "--from", "2026-03-01", "--to", "2026-03-31"]
        + ["--by", "centre", "--centre", "futian", "--format", "json"]
    )

    # Then the scope and each row's centre code are there
    assert code == Exit.OK
    data = json.loads(capsys.readouterr().out)
    assert data["centre"] == {"code": "futian", "name": "福田区"}
    assert data["totals"]["received"] == 6
    assert {row["centre"]: (row["received"], row["own"]) for row in data["rows"]} == {
        "xmh": (3, False),
        "lianhua": (2, False),
        "hqb": (0, False),
        "futian": (1, True),
    }


def test_json_without_a_centre_is_as_before(cli: str, capsys: pytest.CaptureFixture[str]) -> None:
    # When no centre is named
    code = main(["stats", "--from", "2026-03-01", "--to", "2026-03-31", "--format", "json"])

    # Then the whole database counts and no centre key appears
    assert code == Exit.OK
    data = json.loads(capsys.readouterr().out)
    assert "centre" not in data
    assert data["totals"]["received"] == 7


def test_the_table_by_centre_ranks_centres_and_then_departments(
    cli: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the table is asked for by centre
    code = main(["stats", "--by", "centre", "--centre", "futian"])

    # Then it names the scope, ranks the centres, and ranks the departments after them
    assert code == Exit.OK
    out = capsys.readouterr().out
    assert "福田区（含下级）" in out
    assert "中心（慢者在前）" in out and "香蜜湖社区" in out and "66.7% (2/3)" in out
    assert "部门（慢者在前）" in out and "城管执法" in out


def test_csv_by_centre_has_a_row_per_centre_and_the_total(
    cli: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["stats", "--by", "centre", "--centre", "futian", "--format", "csv"])

    assert code == Exit.OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["香蜜湖社区", "3"],
        ["福田区（本级）", "1"],
        ["莲花社区", "2"],
        ["华强北商圈", "0"],
        ["合计", "6"],
    ]


def test_the_chart_by_centre_is_a_png(cli: str, tmp_path: Path) -> None:
    chart = tmp_path / "centres.png"

    code = main(["stats", "--by", "centre", "--centre", "futian", "--chart", str(chart)])

    assert code == Exit.OK
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_centre_exits_not_found_and_writes_nothing(
    cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the centre code names no centre
    out = tmp_path / "figures.csv"
    code = main(["stats", "--centre", "nowhere", "--format", "csv", "--out", str(out)])

    # Then the command exits 4, says which code, and writes no file
    assert code == Exit.NOT_FOUND
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()


# --- the export -------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_export_of_a_centre_has_only_its_subtree_and_a_centre_column(
    cli: str, tmp_path: Path
) -> None:
    # When the community is exported
    out = tmp_path / "xmh.csv"
    code = main(["export", "--centre", "xmh", "--out", str(out)])

    # Then its requests and its 楼宇's come, each with the centre holding it
    assert code == Exit.OK
    rows = read_csv(out)
    assert [(row["编号"], row["中心"]) for row in rows] == [
        ("SQ-20260302-0001", "香蜜湖社区"),
        ("SQ-20260303-0001", "香蜜湖大厦"),
        ("SQ-20260304-0001", "香蜜湖大厦"),
    ]
    assert list(rows[0])[:4] == ["编号", "受理时间", "渠道", "中心"]


def test_export_of_every_centre_names_each_rows_centre(cli: str, tmp_path: Path) -> None:
    out = tmp_path / "all.csv"

    code = main(["export", "--out", str(out)])

    assert code == Exit.OK
    assert [row["中心"] for row in read_csv(out)] == [
        "福田区",
        "香蜜湖社区",
        "香蜜湖大厦",
        "香蜜湖大厦",
        "莲花社区",
        "莲花社区",
        "党群服务中心",
    ]


def test_an_export_of_an_unknown_centre_exits_not_found_and_writes_nothing(
    cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the centre code names no centre
    out = tmp_path / "nowhere.csv"
    code = main(["export", "--centre", "nowhere", "--out", str(out), "--include-pii"])

    # Then the command exits 4, says which code, writes no file and records no audit entry
    assert code == Exit.NOT_FOUND
    assert "nowhere" in capsys.readouterr().err
    assert list(tmp_path.glob("nowhere*")) == []
    with session_scope(get_engine(cli)) as session:
        assert session.exec(select(AdminAudit)).all() == []


def test_a_single_centre_export_has_no_centre_column(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a single-centre install with a request
    with session_scope(get_engine(db_url)) as session:
        centre = queries.default_centre(session=session)
        resident = Person(channel="web", external_id="r", role=Role.REQUESTER)
        session.add(resident)
        session.flush()
        created = datetime(2026, 3, 2, 10, tzinfo=UTC)
        session.add(
            Request(
                number="SQ-20260302-0001",
                centre_id=centre.id,
                requester_id=resident.id,
                channel="web",
                text="路灯坏了",
                state="new",
                created_at=created,
                updated_at=created,
            )
        )
    isolate_cli(monkeypatch, tmp_path, db_url)
    out = tmp_path / "all.csv"

    # When everything is exported
    code = main(["export", "--out", str(out)])

    # Then the columns are the ones of before
    assert code == Exit.OK
    assert tuple(read_csv(out)[0]) == export.REQUEST_HEADERS
