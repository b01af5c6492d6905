"""The console queue in a real browser against `redesk run`: a worker logs in and reads the
counts, filters, searches by phone, sees a resident's new request arrive without a reload,
moves with the keyboard, and reads the queue at 375 px without scrolling sideways."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bot.runtime import Runtime
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import Account, Person, utcnow
from storage.settings import Settings
from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment
from tests.utils.console_queue import PASSWORD
from workflow import accounts, service

pytestmark = pytest.mark.browser

_ids = itertools.count(1)

#: The phone of the resident with two requests (searched by its last four digits).
PHONE = "135-0000-4321"


@dataclass
class Desk:
    """What the module's deployment holds for the queue."""

    engine: Engine
    username: str
    numbers: list[str]
    phone_numbers: list[str]


def _submit(runtime: Runtime, resident_id: int, text: str) -> str:
    with session_scope(runtime.engine) as session:
        tx = runtime.tx(session, f"browser-queue:{next(_ids)}")
        resident = session.get(Person, resident_id)
        assert resident is not None
        return str(service.submit(tx, resident, text).number)


@pytest.fixture(scope="module")
def desk(deployment: Deployment) -> Iterator[Desk]:
    """A worker account with a password, and five requests of two residents."""
    url = deployment.env["REDESK_DATABASE_URL"]
    engine = get_engine(url)
    runtime = Runtime(settings=Settings(database_url=url, _env_file=None), engine=engine)  # type: ignore[call-arg]
    with session_scope(engine) as session:
        centre = queries.default_centre(session=session)
        worker = Person(
            channel="console",
            external_id="queue-worker",
            display_name="王书记",
            role="worker",
            centre_id=centre.id,
        )
        first = Person(
            channel="web",
            external_id="queue-r1",
            display_name="张三",
            phone=PHONE,
            centre_id=centre.id,
        )
        second = Person(
            channel="web", external_id="queue-r2", display_name="李四", centre_id=centre.id
        )
        session.add_all([worker, first, second])
        session.flush()
        assert worker.id is not None and first.id is not None and second.id is not None
        session.add(
            Account(
                username="queue-worker",
                person_id=worker.id,
                password_hash=accounts.HASHER.hash(PASSWORD),
                created_at=utcnow(),
            )
        )
        ids = (first.id, second.id)
    phone_numbers = [
        _submit(runtime, ids[0], "小区门口的路灯坏了，晚上很黑"),
        _submit(runtime, ids[0], "楼下井盖松动，踩上去会响"),
    ]
    others = [
        _submit(runtime, ids[1], "垃圾桶满了没人清运"),
        _submit(runtime, ids[1], "广场舞音响太吵影响休息"),
        _submit(runtime, ids[1], "电梯经常停运"),
    ]
    yield Desk(engine, "queue-worker", phone_numbers + others, phone_numbers)


@contextmanager
def shot_on_failure(page: Any, path: Path) -> Iterator[None]:
    """Saves a screenshot of `page` when the block fails."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(path), full_page=True)
        raise


def logged_in_page(browser: Any, deployment: Deployment, desk: Desk, **context: Any) -> Any:
    """A page of a new browser context whose cookie is the worker's session."""
    made = browser.new_context(base_url=deployment.base_url, **context)
    answer = made.request.post(
        "/api/console/login",
        data={"username": desk.username, "password": PASSWORD},
        headers={"Origin": deployment.base_url},
    )
    assert answer.status == 200, answer.text()
    return made.new_page()


def rows(page: Any) -> list[str]:
    numbers: list[str] = page.eval_on_selector_all(
        "#queue-rows .queue-row", "rows => rows.map(r => r.dataset.number)"
    )
    return numbers


def wait_rows(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#queue-rows .queue-row').length === n", arg=count
    )


def test_a_worker_reads_filters_and_searches_the_queue(
    browser: Any, deployment: Deployment, desk: Desk, tmp_path: Path
) -> None:
    # Given the worker logged in, on /console
    page = logged_in_page(browser, deployment, desk)
    with shot_on_failure(page, tmp_path / "queue-failure.png"):
        page.goto("/console")
        # Then the first tab is 待受理, every tab shows the API's count, 全部 all five
        page.wait_for_selector("#tab-todo_accept.is-active")
        page.wait_for_function("() => document.getElementById('count-all').textContent === '5'")
        counts = page.request.get("/api/console/requests").json()["counts"]
        for tab, count in counts.items():
            assert page.locator(f"#count-{tab}").text_content() == str(count), tab
        # (Demo categories send some requests straight to a department: 已转单.)
        assert counts["todo_accept"] + counts["forwarded"] == 5
        new = counts["todo_accept"]
        assert len(rows(page)) == new
        # And a row links to the request's page
        link = page.locator(".queue-number", has_text=desk.numbers[0])
        assert link.get_attribute("href") == f"/console/requests/{desk.numbers[0]}"

        # When they search for the resident's phone by its last four digits
        page.keyboard.press("/")
        assert page.evaluate("() => document.activeElement.id") == "queue-q"
        page.keyboard.type("4321")
        page.keyboard.press("Enter")
        # Then only that resident's requests are listed, and the counts follow
        wait_rows(page, 2)
        assert sorted(rows(page)) == sorted(desk.phone_numbers)
        assert page.locator("#count-todo_accept").text_content() == "2"
        assert "q=4321" in page.url

        # When they clear it, open 全部 and filter by state
        page.click("#queue-reset")
        wait_rows(page, new)
        page.click("#tab-all")
        wait_rows(page, 5)
        assert sorted(rows(page)) == sorted(desk.numbers)
        page.select_option("#queue-state", "handling")
        # Then nothing is in 办理中
        page.wait_for_selector("#queue-empty:not([hidden])")
        assert rows(page) == []
        page.select_option("#queue-state", "new")
        wait_rows(page, new)
        assert "state=new" in page.url

        # And j / k move through the rows, Enter opens the current one
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("j")
        page.keyboard.press("j")
        page.keyboard.press("k")
        first = rows(page)[0]
        assert page.evaluate("() => document.activeElement.textContent") == first
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/console/requests/{first}")
        page.screenshot(path=str(tmp_path / "queue-opened.png"))


def test_a_new_request_appears_without_a_reload(
    browser: Any, deployment: Deployment, desk: Desk, tmp_path: Path
) -> None:
    page = logged_in_page(browser, deployment, desk)
    with shot_on_failure(page, tmp_path / "queue-live-failure.png"):
        page.goto("/console?tab=all")
        page.wait_for_selector("#tab-all.is-active")
        before = len(rows(page))
        assert before >= 5
        page.evaluate("() => { window.sameDocument = true; }")
        # When a resident writes in on the web desk
        with deployment.http() as http:
            resident = WebChat.open(http, "赵六")
            resident.send("公园的路灯全都不亮了，请尽快处理")
            # Then the new request shows up in the open page, marked new
            page.wait_for_selector("#queue-rows .queue-row.is-new", timeout=30_000)
        wait_rows(page, before + 1)
        assert page.locator("#count-all").text_content() == str(before + 1)
        fresh = page.locator("#queue-rows .queue-row.is-new")
        assert fresh.count() == 1
        assert "公园的路灯" in (fresh.text_content() or "")
        assert "新到 1 件" in (page.locator("#queue-live").text_content() or "")
        # And the page was never reloaded
        assert page.evaluate("() => window.sameDocument === true")
        page.screenshot(path=str(tmp_path / "queue-live.png"), full_page=True)


def test_the_queue_reads_on_a_phone_without_scrolling_sideways(
    browser: Any, deployment: Deployment, desk: Desk, tmp_path: Path
) -> None:
    page = logged_in_page(
        browser, deployment, desk, viewport={"width": 375, "height": 740}, is_mobile=True
    )
    with shot_on_failure(page, tmp_path / "queue-phone-failure.png"):
        page.goto("/console?tab=all")
        page.wait_for_selector("#queue-rows .queue-row")
        # Each request is a card: the table's header row is not shown
        assert page.locator("#queue-table thead").is_hidden()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width}px wide"
        # Also with requests selected (the bulk bar shown)
        page.locator(".queue-pick-box").first.check()
        page.wait_for_selector("#queue-bulk:not([hidden])")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width}px wide with the bulk bar"
        page.screenshot(path=str(tmp_path / "queue-375.png"), full_page=True)


def test_the_queue_page_needs_a_login(browser: Any, deployment: Deployment) -> None:
    made = browser.new_context(base_url=deployment.base_url)
    page = made.new_page()
    response = page.goto("/console")
    assert response is not None
    assert "/console/login" in page.url
    made.close()


def test_bulk_actions_call_the_action_endpoint_once_per_request_and_show_each_answer(
    browser: Any, deployment: Deployment, desk: Desk, tmp_path: Path
) -> None:
    # Given the worker on the queue, with the actions endpoint answering as the request page's
    # API does (the first refused, the others done), every call recorded
    page = logged_in_page(browser, deployment, desk)
    calls: list[tuple[str, dict[str, Any]]] = []

    def answer(route: Any) -> None:
        number = route.request.url.split("/api/console/requests/")[1].split("/")[0]
        calls.append((number, route.request.post_data_json))
        assert route.request.headers.get("x-csrf-token")
        if len(calls) == 1:
            body = {"error": "transition", "message": f"【{number}】诉求当前状态不能转单。"}
            route.fulfill(status=409, json=body)
        else:
            body = {"state": "forwarded", "state_label": "已转单", "message": f"【{number}】已转单"}
            route.fulfill(status=200, json=body)

    page.route("**/api/console/requests/*/actions", answer)
    with shot_on_failure(page, tmp_path / "queue-bulk-failure.png"):
        page.goto("/console?tab=all&q=4321")
        wait_rows(page, 2)
        chosen = rows(page)
        # When they select both and forward them to a department
        page.locator("#queue-all").check()
        page.wait_for_selector("#queue-bulk:not([hidden])")
        assert page.locator("#queue-selected").text_content() == "已选 2 件"
        page.click("#bulk-forward")
        # (no department chosen yet: asked for one, nothing sent)
        assert "请先选择" in (page.locator("#queue-message").text_content() or "")
        assert calls == []
        department = page.locator("#bulk-department option").nth(1).get_attribute("value")
        assert department
        page.select_option("#bulk-department", department)
        page.click("#bulk-forward")
        # Then one call per request, each with its own answer shown
        page.wait_for_function(
            "() => document.querySelectorAll('#queue-results .queue-result').length === 2"
        )
        assert [number for number, _ in calls] == chosen
        assert all(body == {"action": "forward", "department": department} for _, body in calls)
        refused = page.locator(f".queue-result[data-number='{chosen[0]}']")
        assert "is-error" in (refused.get_attribute("class") or "")
        assert "不能转单" in (refused.text_content() or "")
        done = page.locator(f".queue-result[data-number='{chosen[1]}']")
        assert "已转单" in (done.text_content() or "")
        # And the refused one stays selected for another try
        assert page.locator("#queue-selected").text_content() == "已选 1 件"

        # When they reject it with a reason
        page.fill("#bulk-reason", "重复诉求")
        page.click("#bulk-reject")
        page.wait_for_function(
            "() => document.querySelectorAll('#queue-results .queue-result').length === 1"
        )
        assert calls[-1] == (chosen[0], {"action": "reject", "text": "重复诉求"})
        page.screenshot(path=str(tmp_path / "queue-bulk.png"), full_page=True)
