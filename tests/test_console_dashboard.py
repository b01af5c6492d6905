"""The leaders' dashboard API (bot/console/dashboard.py): the same figures as `redesk stats
--format json` and the same file as `redesk export`, only for leaders and admins, only within
their centre's subtree, every download on the admin audit; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from admin_scripts import stats as cli_stats
from admin_scripts.cli import Exit, main
from bot.runtime import Runtime
from storage.models import AdminAudit
from tests.utils.app import TestClient
from tests.utils.centres import Tree
from tests.utils.cli import isolate_cli
from tests.utils.dashboard import fill_district, log_in, make_staff
from workflow import stats

#: "Now" of the figures that depend on it (overdue), for the CLI and the API alike.
LATER = datetime(2026, 3, 20, 4, 0, tzinfo=UTC)

#: The period the figures are asked for.
MARCH = {"from": "2026-03-01", "to": "2026-03-31"}


@pytest.fixture
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The CLI and the API measure "overdue now" against LATER."""
    monkeypatch.setattr(cli_stats, "utcnow", lambda: LATER)
    monkeypatch.setattr(stats, "utcnow", lambda: LATER)
    return LATER


def cli_json(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    *args: str,
) -> Any:
    """What `redesk stats --format json ARGS` prints, parsed."""
    isolate_cli(monkeypatch, tmp_path, db_url)
    capsys.readouterr()
    assert main(["stats", "--format", "json", *args]) == Exit.OK
    return json.loads(capsys.readouterr().out)


def audits(runtime: Runtime) -> list[AdminAudit]:
    """The admin audit's rows of console downloads."""
    with Session(runtime.engine) as session:
        return [
            row
            for row in session.exec(select(AdminAudit).order_by(AdminAudit.id))  # type: ignore[arg-type]
            if row.action in ("export", "export_pii")
        ]


@pytest.mark.parametrize("by", [None, "centre", "department", "category", "day", "week"])
def test_the_stats_api_answers_the_json_of_redesk_stats_for_the_same_filters(
    by: str | None,
    client: TestClient,
    runtime: Runtime,
    tree: Tree,
    db_url: str,
    fixed_now: datetime,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given requests in the district's communities and a district leader logged in
    fill_district(tree)
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    # When the API and the CLI are asked for the same figures
    query = {**MARCH, **({"by": by} if by else {})}
    answer = client.get("/api/console/stats", params=query)
    expected = cli_json(
        monkeypatch,
        tmp_path,
        capsys,
        db_url,
        "--centre",
        "D",
        "--from",
        MARCH["from"],
        "--to",
        MARCH["to"],
        *(["--by", by] if by else []),
    )

    # Then they are the same JSON, and it counts the district's requests
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == expected
    assert expected["totals"]["received"] == 5
    assert expected["centre"]["code"] == "D"
    # with the mean of each duration beside its median and P90, on the totals and every row
    for figures in (expected["totals"], *expected["rows"]):
        for name in ("first_action", "reply"):
            for unit in ("calendar", "working"):
                assert f"{name}_mean_{unit}_seconds" in figures
    assert expected["totals"]["first_action_mean_working_seconds"] is not None


def test_trend_is_the_grouping_by_day_or_week(
    client: TestClient, runtime: Runtime, tree: Tree, fixed_now: datetime
) -> None:
    # Given a district leader and the district's requests
    fill_district(tree)
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    # When the trend is asked for by week, and by=week likewise
    trend = client.get("/api/console/stats", params={**MARCH, "trend": "week"})
    by = client.get("/api/console/stats", params={**MARCH, "by": "week"})

    # Then both are the figures grouped by week
    assert trend.status_code == 200
    assert trend.json() == by.json()
    assert trend.json()["by"] == "week"
    assert [row["key"] for row in trend.json()["rows"]] == ["2026-03-02"]


def test_a_community_leader_sees_the_community_and_not_a_sibling(
    client: TestClient, runtime: Runtime, tree: Tree, fixed_now: datetime
) -> None:
    # Given a leader of C1 and requests in C1 and C2
    numbers = fill_district(tree)
    make_staff(runtime.engine, "c1-leader", "leader", "C1")
    log_in(client, "c1-leader")

    # When the leader asks for the figures without a centre, for C1, for C2 and for the district
    own = client.get("/api/console/stats", params=MARCH)
    named = client.get("/api/console/stats", params={**MARCH, "centre": "C1"})
    sibling = client.get("/api/console/stats", params={**MARCH, "centre": "C2"})
    above = client.get("/api/console/stats", params={**MARCH, "centre": "D"})
    unknown = client.get("/api/console/stats", params={**MARCH, "centre": "nowhere"})

    # Then the default is C1's subtree, and C2, D and an unknown code are alike not found
    assert own.status_code == 200
    assert own.json()["centre"]["code"] == "C1"
    assert own.json()["totals"]["received"] == len(numbers["C1"])
    assert named.json() == own.json()
    for refused in (sibling, above, unknown):
        assert refused.status_code == 404
        assert refused.json() == unknown.json()
        assert refused.json()["error"] == "not_found"
        assert refused.json()["message"]
    # And a download of the sibling's requests is refused the same way, with nothing on record
    assert client.get("/api/console/export", params={"centre": "C2"}).status_code == 404
    assert audits(runtime) == []


def test_a_district_leader_sees_a_community_within_the_district(
    client: TestClient, runtime: Runtime, tree: Tree, fixed_now: datetime
) -> None:
    # Given a district leader
    numbers = fill_district(tree)
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    # When they ask for C2 grouped by centre
    answer = client.get("/api/console/stats", params={**MARCH, "centre": "C2"})

    # Then they get C2's figures
    assert answer.status_code == 200
    assert answer.json()["centre"]["code"] == "C2"
    assert answer.json()["totals"]["received"] == len(numbers["C2"])
    assert answer.json()["totals"]["rejected"] == 1


def test_an_admin_sees_the_figures_of_their_centre_s_subtree(
    client: TestClient, runtime: Runtime, tree: Tree, fixed_now: datetime
) -> None:
    # Given an admin of the district
    fill_district(tree)
    make_staff(runtime.engine, "d-admin", "admin", "D")
    log_in(client, "d-admin")

    # When they ask for the figures by centre
    answer = client.get("/api/console/stats", params={**MARCH, "by": "centre"})

    # Then they get the district's, one row per community (and the 商圈 holding nothing)
    assert answer.status_code == 200
    assert answer.json()["centre"]["code"] == "D"
    assert {row["centre"]: row["received"] for row in answer.json()["rows"]} == {
        "C1": 3,
        "C2": 2,
        "B": 0,
    }


@pytest.mark.parametrize("role", ["worker", "department"])
def test_a_worker_or_department_staff_is_refused_everything(
    role: str, client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    # Given a worker (or department staff) of the district, logged in
    fill_district(tree)
    make_staff(
        runtime.engine, "staff1", role, "D", department="城管执法" if role == "department" else None
    )
    log_in(client, "staff1")

    # When they open the dashboard, its figures and a download
    page = client.get("/console/dashboard", follow_redirects=False)
    figures = client.get("/api/console/stats", params=MARCH)
    download = client.get("/api/console/export", params={"unmasked": "1"})

    # Then each is refused with 403, and no download is on record
    assert page.status_code == 403
    assert "text/html" in page.headers["content-type"]
    assert "数据看板仅对党委负责人和管理员开放" in page.text
    assert "<script" not in page.text
    for refused in (figures, download):
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
    assert audits(runtime) == []


def test_without_a_login_the_api_answers_401_and_the_page_goes_to_the_login(
    client: TestClient, tree: Tree
) -> None:
    # When nobody is logged in
    page = client.get("/console/dashboard?from=2026-03-01", follow_redirects=False)
    figures = client.get("/api/console/stats")
    download = client.get("/api/console/export")
    with_desk_token = client.get(
        "/api/console/stats", headers={"Authorization": "Bearer not-a-console-session"}
    )

    # Then the page sends to the login and comes back, the API answers 401
    assert page.status_code == 303
    assert (
        page.headers["location"] == "/console/login?next=%2Fconsole%2Fdashboard%3Ffrom%3D2026-03-01"
    )
    for refused in (figures, download, with_desk_token):
        assert refused.status_code == 401
        assert refused.json()["error"] == "login_required"


def test_a_leader_opens_the_page(client: TestClient, runtime: Runtime, tree: Tree) -> None:
    # Given a district leader
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    # When they open the dashboard
    page = client.get("/console/dashboard")

    # Then it is the page, with its script and the vendored chart library, nothing inline
    assert page.status_code == 200
    assert '<script src="/static/vendor/echarts/echarts.min.js"></script>' in page.text
    assert '<script src="/static/console/dashboard.js"></script>' in page.text
    assert "<script>" not in page.text and "style=" not in page.text
    assert client.get("/static/vendor/echarts/echarts.min.js").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2026-13-01"},
        {"from": "yesterday"},
        {"from": "2026-03-31", "to": "2026-03-01"},
        {"by": "person"},
        {"trend": "year"},
        {"by": "day", "trend": "week"},
        {"centre": "x" * 300},
    ],
)
def test_malformed_filters_get_a_400_and_change_nothing(
    query: dict[str, str], client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    # Given a district leader
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    # When the figures or a download are asked for with a malformed filter
    figures = client.get("/api/console/stats", params=query)
    download = client.get("/api/console/export", params=query)

    # Then both get a 400 with a message, and nothing is on record
    for refused in (figures, download):
        assert refused.status_code == 400
        assert refused.json()["error"] in ("bad_date", "bad_period", "bad_field")
        assert refused.json()["message"]
    assert audits(runtime) == []


@pytest.mark.parametrize("query", [{"format": "pdf"}, {"unmasked": "maybe"}])
def test_a_malformed_download_gets_a_400_and_nothing_on_record(
    query: dict[str, str], client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    refused = client.get("/api/console/export", params=query)

    assert refused.status_code == 400
    assert refused.json()["error"] == "bad_field"
    assert audits(runtime) == []


def test_an_unknown_category_is_not_found(client: TestClient, runtime: Runtime, tree: Tree) -> None:
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    refused = client.get("/api/console/stats", params={"category": "不存在的类别"})

    assert refused.status_code == 404
    assert refused.json()["error"] == "not_found"


def test_the_download_is_the_file_of_redesk_export_masked_unless_asked_and_audited(
    client: TestClient,
    runtime: Runtime,
    tree: Tree,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given the district's requests and a district leader
    fill_district(tree)
    make_staff(runtime.engine, "d-leader", "leader", "D")
    log_in(client, "d-leader")

    # When the leader downloads the CSV masked, then unmasked, then the xlsx
    masked = client.get("/api/console/export", params={**MARCH, "format": "csv"})
    unmasked = client.get("/api/console/export", params={**MARCH, "unmasked": "1"})
    workbook = client.get("/api/console/export", params={**MARCH, "format": "xlsx"})

    # Then each is a download of the file `redesk export` writes for the same filters
    isolate_cli(monkeypatch, tmp_path, db_url)
    common = ["export", "--centre", "D", "--from", MARCH["from"], "--to", MARCH["to"]]
    assert main([*common, "--out", "masked.csv"]) == Exit.OK
    assert main([*common, "--out", "full.csv", "--include-pii"]) == Exit.OK
    assert masked.status_code == 200 and unmasked.status_code == 200
    assert masked.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in masked.headers["content-disposition"]
    assert masked.content == (tmp_path / "masked.csv").read_bytes()
    assert unmasked.content == (tmp_path / "full.csv").read_bytes()
    # masked: the requester and the phone in the text; unmasked: in full
    masked_text = masked.content.decode("utf-8-sig")
    unmasked_text = unmasked.content.decode("utf-8-sig")
    assert "张*" in masked_text and "张三" not in masked_text
    assert "138****5678" in masked_text and "13812345678" not in masked_text
    assert "张三" in unmasked_text and "13812345678" in unmasked_text
    assert workbook.status_code == 200
    assert workbook.content[:2] == b"PK"
    assert workbook.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml"
    )

    # And every download is on the admin audit under the console account
    rows = [row for row in audits(runtime) if row.actor.startswith("console:")]
    assert [(row.actor, row.action) for row in rows] == [
        ("console:d-leader", "export"),
        ("console:d-leader", "export_pii"),
        ("console:d-leader", "export"),
    ]
    assert rows[0].detail["centre"] == "D"
    assert rows[0].detail["rows"] == 5
    assert rows[0].detail["format"] == "csv"
    assert rows[1].detail["unmasked"] is True
    assert rows[2].detail["format"] == "xlsx"
