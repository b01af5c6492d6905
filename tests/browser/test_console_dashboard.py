"""The leaders' dashboard in a real browser: the page shows the 三率 `redesk stats --format json`
prints for the same filters, its ECharts charts draw on a canvas under the app's CSP (tooltips
included), and a click on a figure, a table row or a bar opens the queue filtered to those
requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from admin_scripts.stats import duration
from bot.runtime import Runtime
from storage.db import get_engine
from storage.settings import Settings
from tests.e2e.conftest import Deployment, base_env, serve
from tests.utils.centres import make_tree
from tests.utils.dashboard import PASSWORD, fill_district, make_staff
from tests.utils.world import World

pytestmark = pytest.mark.browser

#: The month the requests came in (tests/utils/world.py's clock).
QUERY = "from=2026-03-01&to=2026-03-31"

#: Collects every CSP violation of the page, before any of its scripts runs.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__csp.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.fixture(scope="module")
def dashboard_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The embedded default with demo data, district D's tree with its requests, a district
    leader and a worker with console accounts."""
    directory = tmp_path_factory.mktemp("redesk-browser-dashboard")
    url = f"sqlite:///{directory / 'redesk.db'}"
    running = Deployment(directory, base_env(directory, url))
    running.cli("demo")
    runtime = Runtime(
        settings=Settings(database_url=url, redis_url=None, _env_file=None),  # type: ignore[call-arg]
        engine=get_engine(url),
    )
    fill_district(make_tree(World(runtime)))
    make_staff(runtime.engine, "d-leader", "leader", "D", name="区刘主任")
    make_staff(runtime.engine, "d-worker", "worker", "D", name="区王")
    yield from serve(running, "run")


def logged_in(browser: Any, deployment: Deployment, username: str) -> tuple[Any, Any]:
    """A context and page logged in as `username` (through POST /api/console/login)."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 1100, "height": 900})
    context.add_init_script(WATCH_CSP)
    answer = context.request.post(
        f"{deployment.base_url}/api/console/login",
        data=json.dumps({"username": username, "password": PASSWORD}),
        headers={"Content-Type": "application/json", "Origin": deployment.base_url},
    )
    assert answer.status == 200, answer.text()
    return context, context.new_page()


def open_dashboard(page: Any, deployment: Deployment) -> None:
    page.goto(f"{deployment.base_url}/console/dashboard?{QUERY}")
    page.wait_for_selector("body[data-loaded='true']")


def percent(rate: dict[str, Any]) -> str:
    value = rate["value"]
    return "—" if value is None else f"{value * 100:.1f}%"


def cli_totals(deployment: Deployment) -> dict[str, Any]:
    out = deployment.cli(
        "stats", "--format", "json", "--centre", "D", "--from", "2026-03-01", "--to", "2026-03-31"
    )
    totals: dict[str, Any] = json.loads(out)["totals"]
    return totals


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_the_page_shows_the_same_figures_as_redesk_stats(
    browser: Any, dashboard_deployment: Deployment, tmp_path: Path
) -> None:
    # Given a district leader on the dashboard for March
    context, page = logged_in(browser, dashboard_deployment, "d-leader")
    try:
        open_dashboard(page, dashboard_deployment)
        expected = cli_totals(dashboard_deployment)

        # Then 受理量 and each of the 三率, with its numerator and denominator, are the CLI's
        received = page.text_content("#figure-received .dashboard-figure-value")
        assert received == str(expected["received"]) == "5"
        for key in ("response_rate", "resolution_rate", "satisfaction_rate"):
            value = page.text_content(f"#figure-{key} .dashboard-figure-value")
            detail = page.text_content(f"#figure-{key} .dashboard-figure-detail") or ""
            assert value == percent(expected[key])
            rate = expected[key]
            assert detail.endswith(f"{rate['numerator']}/{rate['denominator']}")
        # And each duration's median, with its mean (平均) and P90 beside it, are the CLI's
        for key in ("first_action", "reply"):
            value = page.text_content(f"#figure-{key} .dashboard-figure-value")
            detail = page.text_content(f"#figure-{key} .dashboard-figure-detail")
            assert value == duration(expected[f"{key}_median_working_seconds"])
            assert detail == (
                f"中位数 · 平均 {duration(expected[f'{key}_mean_working_seconds'])}"
                f" · P90 {duration(expected[f'{key}_p90_working_seconds'])}"
            )
        assert expected["first_action_mean_working_seconds"] is not None
        heads = page.locator("#department-table thead th").all_text_contents()
        assert heads[-3:] == ["回单中位（工作时间）", "回单平均", "回单 P90"]
        # And the tables have the district's communities, and the scope is named
        assert page.text_content("#scope-name") == "锦江区党群服务中心"
        centres = page.locator("#centre-table tbody th").all_text_contents()
        assert "春熙社区" in centres and "东风社区" in centres
        # a department's row opens its requests; the committee's own (no queue filter) is text
        forwarded = page.get_attribute("#department-table tr[data-key='城管执法'] th a", "href")
        assert query_of(forwarded or "")["department"] == ["城管执法"]
        assert page.locator("#department-table tr[data-key='党委自办'] th").count() == 1
        assert page.locator("#department-table tr[data-key='党委自办'] a").count() == 0
        assert page.evaluate("() => window.__csp") == []
    except BaseException:
        page.screenshot(path=str(tmp_path / "dashboard-figures.png"), full_page=True)
        raise
    finally:
        context.close()


def test_the_charts_draw_on_a_canvas_with_tooltips_under_the_csp(
    browser: Any, dashboard_deployment: Deployment, tmp_path: Path
) -> None:
    context, page = logged_in(browser, dashboard_deployment, "d-leader")
    try:
        # Given the dashboard
        open_dashboard(page, dashboard_deployment)

        # Then each chart has a canvas with something drawn on it
        for chart in ("trend-chart", "centre-chart", "department-chart"):
            drawn = page.evaluate(
                """(id) => {
                    const canvas = document.querySelector('#' + id + ' canvas');
                    if (!canvas || !canvas.width || !canvas.height) { return 0; }
                    const data = canvas.getContext('2d')
                        .getImageData(0, 0, canvas.width, canvas.height).data;
                    let painted = 0;
                    for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) { painted++; } }
                    return painted;
                }""",
                chart,
            )
            assert drawn > 0, chart

        # When the mouse rests on the trend's bar
        box = page.locator("#trend-chart").bounding_box()
        point = page.evaluate(
            """() => echarts.getInstanceByDom(document.getElementById('trend-chart'))
                .convertToPixel({xAxisIndex: 0, yAxisIndex: 0}, [0, 2])"""
        )
        before = page.evaluate("() => document.querySelector('#trend-chart canvas').toDataURL()")
        page.mouse.move(box["x"] + point[0], box["y"] + point[1])
        page.wait_for_function(
            "(before) => document.querySelector('#trend-chart canvas').toDataURL() !== before",
            arg=before,
        )

        # Then the tooltip is drawn (the canvas changes) and nothing broke the CSP
        assert page.evaluate("() => window.__csp") == []
    except BaseException:
        page.screenshot(path=str(tmp_path / "dashboard-charts.png"), full_page=True)
        raise
    finally:
        context.close()


def test_a_click_on_a_figure_opens_the_queue_filtered_to_those_requests(
    browser: Any, dashboard_deployment: Deployment, tmp_path: Path
) -> None:
    context, page = logged_in(browser, dashboard_deployment, "d-leader")
    try:
        # When the leader clicks 当前超期
        open_dashboard(page, dashboard_deployment)
        page.click("#figure-overdue")
        page.wait_for_url("**/console?**")

        # Then the queue opens on its overdue tab for the period
        query = query_of(page.url)
        assert urlsplit(page.url).path == "/console"
        assert query["tab"] == ["overdue"] and query["overdue"] == ["1"]
        assert query["from"] == ["2026-03-01"] and query["to"] == ["2026-03-31"]

        # When they click a community in the centre table
        open_dashboard(page, dashboard_deployment)
        page.click("#centre-table tbody th a:text-is('春熙社区')")
        page.wait_for_url("**/console?**")

        # Then the queue is filtered to that community's subtree
        assert query_of(page.url)["centre"] == ["C1"]

        # When they click the trend's bar of 2 March
        open_dashboard(page, dashboard_deployment)
        box = page.locator("#trend-chart").bounding_box()
        point = page.evaluate(
            """() => echarts.getInstanceByDom(document.getElementById('trend-chart'))
                .convertToPixel({xAxisIndex: 0, yAxisIndex: 0}, [0, 2])"""
        )
        page.mouse.click(box["x"] + point[0], box["y"] + point[1])
        page.wait_for_url("**/console?**")

        # Then the queue shows the requests received that day
        query = query_of(page.url)
        assert query["from"] == ["2026-03-02"] and query["to"] == ["2026-03-02"]
    except BaseException:
        page.screenshot(path=str(tmp_path / "dashboard-click.png"), full_page=True)
        raise
    finally:
        context.close()


def test_the_period_picker_reloads_the_figures_and_the_downloads_follow(
    browser: Any, dashboard_deployment: Deployment, tmp_path: Path
) -> None:
    context, page = logged_in(browser, dashboard_deployment, "d-leader")
    try:
        # Given the dashboard for March
        open_dashboard(page, dashboard_deployment)

        # When the leader picks April, with personal data in the downloads
        page.fill("#from", "2026-04-01")
        page.fill("#to", "2026-04-30")
        page.check("#unmasked")
        page.click("#apply")
        page.wait_for_selector("body[data-loaded='true']")

        # Then nothing was received then, and the download links carry the filters
        assert page.text_content("#figure-received .dashboard-figure-value") == "0"
        assert "from=2026-04-01" in page.url
        href = page.get_attribute("#download-csv", "href") or ""
        assert query_of(href) == {
            "from": ["2026-04-01"],
            "to": ["2026-04-30"],
            "centre": ["D"],
            "format": ["csv"],
            "unmasked": ["1"],
        }
    except BaseException:
        page.screenshot(path=str(tmp_path / "dashboard-period.png"), full_page=True)
        raise
    finally:
        context.close()


def test_a_worker_gets_the_refusal_page(
    browser: Any, dashboard_deployment: Deployment, tmp_path: Path
) -> None:
    context, page = logged_in(browser, dashboard_deployment, "d-worker")
    try:
        answer = page.goto(f"{dashboard_deployment.base_url}/console/dashboard")
        assert answer is not None and answer.status == 403
        assert "数据看板仅对党委负责人和管理员开放" in (page.text_content("h1") or "")
    except BaseException:
        page.screenshot(path=str(tmp_path / "dashboard-worker.png"), full_page=True)
        raise
    finally:
        context.close()


def test_the_page_fits_a_phone(
    browser: Any, dashboard_deployment: Deployment, tmp_path: Path
) -> None:
    # Given a leader on a 375 px wide phone
    context = browser.new_context(locale="zh-CN", viewport={"width": 375, "height": 800})
    context.add_init_script(WATCH_CSP)
    answer = context.request.post(
        f"{dashboard_deployment.base_url}/api/console/login",
        data=json.dumps({"username": "d-leader", "password": PASSWORD}),
        headers={"Content-Type": "application/json", "Origin": dashboard_deployment.base_url},
    )
    assert answer.status == 200
    page = context.new_page()
    try:
        # When the dashboard opens
        open_dashboard(page, dashboard_deployment)

        # Then the page does not scroll sideways (wide tables scroll in their own box)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
        assert page.locator("#trend-chart canvas").count() == 1
    except BaseException:
        page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
        raise
    finally:
        context.close()
