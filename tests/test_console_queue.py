"""The console queue: its query (tabs, filters, search, counts, order, paging, scope) on SQLite
and PostgreSQL, and its API (GET /api/console/requests, /options, /stream)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
from sqlmodel import Session

from bot import dispatch, wake
from bot.app import create_app
from bot.channels import web
from bot.console import queue as console_queue
from bot.console.auth import COOKIE
from bot.runtime import Runtime
from storage import queries
from storage.db import session_scope
from storage.models import Centre, Person, Request
from storage.settings import Settings
from tests.utils.app import TestClient
from tests.utils.centres import Tree
from tests.utils.console_queue import EARLY, ORIGIN, Queue, log_in, make_queue
from tests.utils.harness import Desk
from tests.utils.server import serving, wait_until
from tests.utils.world import NOW, local
from workflow import service

NO_FILTER = queries.QueueFilter()


@pytest.fixture
def queue(tree: Tree) -> Queue:
    return make_queue(tree)


def worker_scope(tree: Tree, centre: Centre | None = None) -> queries.QueueScope:
    return queries.QueueScope(centre=centre or tree.c1, person_id=tree.c1_worker.id)


def leader_scope(tree: Tree, centre: Centre) -> queries.QueueScope:
    return queries.QueueScope(centre=centre, subtree=True, person_id=tree.d_leader.id)


def department_scope(tree: Tree) -> queries.QueueScope:
    return queries.QueueScope(department_id=tree.d_department.id, person_id=tree.d_staff.id)


def listed(
    tree: Tree,
    scope: queries.QueueScope,
    tab: str = "all",
    filters: queries.QueueFilter = NO_FILTER,
    *,
    offset: int = 0,
    limit: int = 100,
) -> list[str]:
    with Session(tree.world.engine) as session:
        rows = queries.queue_page(
            session=session,
            scope=scope,
            tab=tab,
            filters=filters,
            now=NOW,
            offset=offset,
            limit=limit,
        )
        return [row.request.number for row in rows]


def counted(
    tree: Tree, scope: queries.QueueScope, filters: queries.QueueFilter = NO_FILTER
) -> dict[str, int]:
    with Session(tree.world.engine) as session:
        return queries.queue_counts(session=session, scope=scope, filters=filters, now=NOW)


# --- tabs and counts ----------------------------------------------------------------------


def test_a_worker_s_tabs_hold_what_waits_for_them(tree: Tree, queue: Queue) -> None:
    # Given the queue of C1 and the worker who accepted two of its requests
    scope = worker_scope(tree)
    # Then each tab holds its requests
    assert set(listed(tree, scope, "todo_accept")) == {queue.new, queue.overdue}
    assert listed(tree, scope, "review") == [queue.review]
    assert listed(tree, scope, "mine") == [queue.mine]
    assert set(listed(tree, scope, "forwarded")) == {queue.forwarded, queue.dept_handling}
    assert listed(tree, scope, "overdue") == [queue.overdue]
    assert len(listed(tree, scope, "all")) == 7


def test_another_worker_of_the_centre_has_nothing_of_their_own(tree: Tree, queue: Queue) -> None:
    scope = queries.QueueScope(centre=tree.c1, person_id=tree.c1_worker2.id)
    assert listed(tree, scope, "mine") == []
    assert counted(tree, scope)["mine"] == 0


@pytest.mark.parametrize(
    "filters",
    [
        NO_FILTER,
        queries.QueueFilter(q="路灯"),
        queries.QueueFilter(overdue=False),
        queries.QueueFilter(states=("new", "handling")),
    ],
)
def test_every_count_equals_the_length_of_its_tab(
    tree: Tree, queue: Queue, filters: queries.QueueFilter
) -> None:
    for scope in (worker_scope(tree), leader_scope(tree, tree.district), department_scope(tree)):
        counts = counted(tree, scope, filters)
        assert list(counts) == list(scope.tabs)
        for tab, count in counts.items():
            assert count == len(listed(tree, scope, tab, filters)), (scope, tab)


def test_department_staff_have_their_own_tabs(tree: Tree, queue: Queue) -> None:
    scope = department_scope(tree)
    assert scope.tabs == ("forwarded", "dept_handling", "overdue", "all")
    assert listed(tree, scope, "forwarded") == [queue.forwarded]
    assert listed(tree, scope, "dept_handling") == [queue.dept_handling]
    assert set(listed(tree, scope, "all")) == {queue.forwarded, queue.dept_handling}


def test_an_unknown_tab_is_refused_by_the_query(tree: Tree, queue: Queue) -> None:
    with pytest.raises(ValueError, match="unknown queue tab"):
        listed(tree, worker_scope(tree), "everything")


# --- order and paging ---------------------------------------------------------------------


def test_the_nearest_open_deadline_comes_first_and_finished_requests_last(
    tree: Tree, queue: Queue
) -> None:
    numbers = listed(tree, worker_scope(tree))
    # The request received five weeks ago is the most urgent; the rejected one has no deadline.
    assert numbers[0] == queue.overdue
    assert numbers[-1] == queue.rejected
    with Session(tree.world.engine) as session:
        deadlines = []
        for number in numbers[:-1]:
            request = queries.get_request_by_number(session=session, number=number)
            assert request is not None
            due = (
                request.response_due_at
                if request.first_action_at is None
                else request.resolution_due_at
            )
            assert due is not None
            deadlines.append(due)
    assert deadlines == sorted(deadlines)


def test_a_response_due_counts_only_until_someone_acts(tree: Tree, queue: Queue) -> None:
    # The new request's response due is hours away; the accepted ones are ordered by their
    # resolution due (days away): the new one comes before them all.
    numbers = listed(tree, worker_scope(tree))
    assert numbers.index(queue.new) < numbers.index(queue.mine)


def test_pages_follow_each_other_without_gaps_or_repeats(tree: Tree, queue: Queue) -> None:
    scope = leader_scope(tree, tree.district)
    everything = listed(tree, scope)
    pages = [listed(tree, scope, offset=offset, limit=3) for offset in (0, 3, 6, 9)]
    assert [len(page) for page in pages] == [3, 3, 2, 0]
    assert [number for page in pages for number in page] == everything


# --- filters ------------------------------------------------------------------------------


def test_each_filter_narrows_the_list(tree: Tree, queue: Queue) -> None:
    leader = leader_scope(tree, tree.district)
    with Session(tree.world.engine) as session:
        category_ids = tuple(queries.categories_named(session=session, key="市政设施"))
    assert category_ids
    checks: list[tuple[queries.QueueFilter, set[str]]] = [
        (queries.QueueFilter(states=("forwarded",)), {queue.forwarded}),
        (queries.QueueFilter(states=("review", "rejected")), {queue.review, queue.rejected}),
        (
            queries.QueueFilter(department_ids=(tree.d_department.id or 0,)),
            {queue.forwarded, queue.dept_handling},
        ),
        (queries.QueueFilter(centre=tree.c2), {queue.c2}),
        (queries.QueueFilter(channel="telegram"), {queue.overdue}),
        (queries.QueueFilter(overdue=True), {queue.overdue}),
        (
            queries.QueueFilter(created_from=local(2026, 1, 26), created_before=local(2026, 1, 27)),
            {queue.overdue},
        ),
        (
            queries.QueueFilter(created_from=local(2026, 3, 2)),
            set(listed(tree, leader)) - {queue.overdue},
        ),
    ]
    for filters, expected in checks:
        assert set(listed(tree, leader, "all", filters)) == expected, filters
    # Every request with 路灯 in its text is of 市政设施; the one about 楼道里的灯 is not.
    of_category = set(listed(tree, leader, "all", queries.QueueFilter(category_ids=category_ids)))
    assert queue.new in of_category
    assert queue.overdue not in of_category


def test_not_overdue_is_everything_else(tree: Tree, queue: Queue) -> None:
    scope = worker_scope(tree)
    late = set(listed(tree, scope, "all", queries.QueueFilter(overdue=True)))
    early = set(listed(tree, scope, "all", queries.QueueFilter(overdue=False)))
    assert late | early == set(listed(tree, scope)) and not late & early


def test_filters_combine(tree: Tree, queue: Queue) -> None:
    scope = leader_scope(tree, tree.district)
    filters = queries.QueueFilter(centre=tree.c1, states=("new",), channel="web")
    assert listed(tree, scope, "all", filters) == [queue.new]


def test_a_centre_filter_takes_the_centre_s_subtree(tree: Tree, queue: Queue) -> None:
    scope = leader_scope(tree, tree.district)
    assert set(listed(tree, scope, "all", queries.QueueFilter(centre=tree.district))) == set(
        listed(tree, scope)
    )


def test_the_day_of_receipt_is_read_on_the_shanghai_calendar(tree: Tree, queue: Queue) -> None:
    # Given a request received at 07:30 Shanghai time (23:30 UTC the day before)
    number = tree.submit(text="凌晨的路灯坏了", now=local(2026, 3, 3, 7, 30))
    scope = worker_scope(tree)
    # Then it is of 3 March, not of 2 March
    march_3 = queries.QueueFilter(created_from=local(2026, 3, 3), created_before=local(2026, 3, 4))
    march_2 = queries.QueueFilter(created_from=local(2026, 3, 2), created_before=local(2026, 3, 3))
    assert listed(tree, scope, "all", march_3) == [number]
    assert number not in listed(tree, scope, "all", march_2)


# --- search -------------------------------------------------------------------------------


def search(tree: Tree, q: str) -> set[str]:
    return set(listed(tree, leader_scope(tree, tree.district), "all", queries.QueueFilter(q=q)))


def test_search_finds_a_number_whole_or_in_part(tree: Tree, queue: Queue) -> None:
    assert search(tree, queue.review) == {queue.review}
    assert search(tree, queue.review.lower()) == {queue.review}
    assert search(tree, queue.review[-6:]) == {queue.review}


def test_search_finds_words_of_the_text(tree: Tree, queue: Queue) -> None:
    assert search(tree, "倒了") == {queue.forwarded}
    assert search(tree, "楼道") == {queue.overdue}
    assert search(tree, "没有这句话") == set()


def test_search_finds_the_requester_s_phone_whole_or_by_its_last_digits(
    tree: Tree, queue: Queue
) -> None:
    c1_resident = {
        queue.new,
        queue.mine,
        queue.review,
        queue.forwarded,
        queue.dept_handling,
        queue.rejected,
    }
    assert search(tree, "13800138000") == c1_resident
    assert search(tree, "138-0013-8000") == c1_resident
    assert search(tree, "8000") == c1_resident
    assert search(tree, "2222") == {queue.overdue}
    assert search(tree, "13911112222") == {queue.overdue}
    # Three digits are too few to be a phone, and a number in the middle is not a suffix.
    assert search(tree, "999") == set()
    assert search(tree, "0013") == set()


def test_search_finds_a_walk_in_s_contact_phone(tree: Tree, queue: Queue) -> None:
    request = tree.world.do(
        service.submit,
        tree.c1_worker,
        "老人来访：路灯坏了",
        contact_name="陈阿姨",
        contact_phone="028 8888 7777",
        registered_by=tree.c1_worker,
    )
    assert search(tree, "7777") == {request.number}


def test_search_treats_like_wildcards_as_text(tree: Tree, queue: Queue) -> None:
    assert search(tree, "%") == set()
    assert search(tree, "_") == set()


# --- scope --------------------------------------------------------------------------------


def test_each_user_sees_only_their_scope(tree: Tree, queue: Queue) -> None:
    everything = set(listed(tree, leader_scope(tree, tree.district)))
    assert len(everything) == 8
    c1 = set(listed(tree, worker_scope(tree)))
    assert c1 == everything - {queue.c2}
    assert set(listed(tree, worker_scope(tree, tree.c2))) == {queue.c2}
    assert set(listed(tree, leader_scope(tree, tree.c1))) == c1
    assert listed(tree, worker_scope(tree, tree.business)) == []
    assert listed(tree, worker_scope(tree, tree.district)) == []
    # Department staff of C1's 社区网格: nothing is forwarded to them.
    c1_staff = queries.QueueScope(department_id=tree.c1_department.id)
    assert listed(tree, c1_staff) == []


def test_a_scope_naming_nothing_sees_nothing(tree: Tree, queue: Queue) -> None:
    assert listed(tree, queries.QueueScope()) == []
    assert counted(tree, queries.QueueScope())["all"] == 0


def test_a_request_moved_up_leaves_the_community_s_queue(tree: Tree, queue: Queue) -> None:
    # Given C1's worker refers (上报) the new request up to the district
    tree.world.do(service.refer, tree.c1_worker, queue.new, "需要区里协调")
    # Then C1's worker no longer sees it, the district's worker does
    assert queue.new not in listed(tree, worker_scope(tree))
    assert queue.new in listed(tree, worker_scope(tree, tree.district))


# --- what changed -------------------------------------------------------------------------


def test_a_new_request_is_a_change_only_in_the_scope_that_holds_it(
    tree: Tree, queue: Queue
) -> None:
    with Session(tree.world.engine) as session:
        before = queries.newest_event_id(session=session)
    tree.submit(tree.c2_resident, "东风路又有路灯坏了", now=NOW + timedelta(minutes=10))
    with Session(tree.world.engine) as session:
        after = queries.newest_event_id(session=session)
        assert after > before

        def changed(scope: queries.QueueScope) -> bool:
            return queries.changed_in_scope(session=session, scope=scope, after=before, upto=after)

        assert changed(worker_scope(tree, tree.c2))
        assert changed(leader_scope(tree, tree.district))
        assert not changed(worker_scope(tree))
        assert not changed(department_scope(tree))


def test_a_refused_attempt_is_no_change(tree: Tree, queue: Queue) -> None:
    with session_scope(tree.world.engine) as session:
        before = queries.newest_event_id(session=session)
    # C2's worker may not accept C1's request: the attempt is recorded, nothing changes.
    tree.world.refused(service.accept, tree.c2_worker, queue.new)
    with Session(tree.world.engine) as session:
        after = queries.newest_event_id(session=session)
        assert not queries.changed_in_scope(
            session=session, scope=worker_scope(tree), after=before, upto=after
        )


def test_the_early_request_was_received_five_weeks_ago(queue: Queue, tree: Tree) -> None:
    assert tree.world.request(queue.overdue).created_at == EARLY


# --- the API ------------------------------------------------------------------------------

Opener = Callable[[Person], TestClient]


@pytest.fixture
def console(runtime: Runtime, stub_broker: dramatiq.Broker, queue: Queue) -> Iterator[Opener]:
    """Opens a test client of the app logged in as a person of the tree."""
    with ExitStack() as stack:

        def open_as(person: Person) -> TestClient:
            client = stack.enter_context(TestClient(create_app(runtime)))
            log_in(client, runtime.engine, person)
            return client

        yield open_as


def get(client: TestClient, **params: str) -> dict[str, Any]:
    response = client.get("/api/console/requests", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def numbers_of(client: TestClient, **params: str) -> set[str]:
    body = get(client, per_page="100", **params)
    assert body["total"] == len(body["items"])
    return {item["number"] for item in body["items"]}


def test_the_queue_s_api_needs_a_console_login(
    client: TestClient, desk: Desk, queue: Queue
) -> None:
    # Given a requester of the web desk with their bearer token
    token = desk.identity("张三").token
    for path in ("/api/console/requests", "/api/console/options", "/api/console/stream"):
        # Then neither nothing nor the requester's web token opens the queue
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"] == "login_required"


def test_the_queue_page_sends_a_visitor_to_the_login_and_serves_a_user(
    client: TestClient, console: Opener, tree: Tree
) -> None:
    response = client.get("/console", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole"
    page = console(tree.c1_worker).get("/console")
    assert page.status_code == 200
    assert "/static/console/queue.js" in page.text
    assert "<script>" not in page.text and "style=" not in page.text


def test_a_worker_s_counts_equal_their_lists(console: Opener, tree: Tree, queue: Queue) -> None:
    client = console(tree.c1_worker)
    body = get(client)
    assert body["tab"] == "all" and body["page"] == 1 and body["per_page"] == 50
    assert list(body["counts"]) == ["todo_accept", "review", "mine", "forwarded", "overdue", "all"]
    for tab, count in body["counts"].items():
        assert len(numbers_of(client, tab=tab)) == count, tab
    assert numbers_of(client, tab="mine") == {queue.mine}
    assert numbers_of(client, tab="todo_accept") == {queue.new, queue.overdue}


def test_an_item_says_what_the_page_shows(console: Opener, tree: Tree, queue: Queue) -> None:
    items = get(console(tree.c1_worker), tab="mine")["items"]
    assert len(items) == 1
    item = items[0]
    assert item["number"] == queue.mine
    assert item["state"] == "handling" and item["state_label"] == "办理中（党委做单）"
    assert item["category"] == "市政设施"
    assert item["centre"] == {"code": "C1", "name": "春熙社区"}
    assert item["handler"] == "春熙王书记"
    assert item["channel"] == "web" and item["channel_label"]
    assert item["summary"] == "门口路灯闪烁"
    assert item["created_at"].startswith("2026-03-02T02:00:00")
    assert item["resolution_due_at"] and item["response_due_at"]
    assert item["acted"] is True
    # The clock of the API is the real one: a request of March is long overdue.
    assert item["overdue"] is True


def test_every_filter_of_the_api(console: Opener, tree: Tree, queue: Queue) -> None:
    client = console(tree.d_leader)
    assert len(numbers_of(client)) == 8
    assert numbers_of(client, state="forwarded") == {queue.forwarded}
    assert numbers_of(client, state="review,rejected") == {queue.review, queue.rejected}
    assert queue.new in numbers_of(client, category="市政设施")
    assert queue.overdue not in numbers_of(client, category="市政设施")
    by_name = numbers_of(client, department="城管执法")
    assert by_name == {queue.forwarded, queue.dept_handling}
    assert numbers_of(client, department=str(tree.d_department.id)) == by_name
    assert numbers_of(client, centre="C2") == {queue.c2}
    assert numbers_of(client, centre="c1") == numbers_of(client) - {queue.c2}
    assert numbers_of(client, **{"from": "2026-01-26", "to": "2026-01-26"}) == {queue.overdue}
    assert queue.overdue not in numbers_of(client, **{"from": "2026-03-02"})
    assert numbers_of(client, to="2026-01-31") == {queue.overdue}
    assert numbers_of(client, overdue="0") == {queue.rejected}
    assert numbers_of(client, overdue="1") == numbers_of(client) - {queue.rejected}
    assert numbers_of(client, channel="telegram") == {queue.overdue}
    assert numbers_of(client, q="8000") == numbers_of(client, centre="C1") - {queue.overdue}
    assert numbers_of(client, q=queue.c2) == {queue.c2}
    assert numbers_of(client, q="  倒了 ") == {queue.forwarded}
    assert numbers_of(client, tab="todo_accept", centre="C1", channel="web") == {queue.new}


def test_counts_follow_the_filters(console: Opener, tree: Tree, queue: Queue) -> None:
    client = console(tree.d_leader)
    body = get(client, q="8000", tab="forwarded")
    assert body["counts"]["forwarded"] == body["total"] == 2
    for tab, count in body["counts"].items():
        assert len(numbers_of(client, q="8000", tab=tab)) == count


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("c1_worker", "c1"),
        ("c1_leader", "c1"),
        ("d_leader", "everything"),
        ("c2_worker", "c2"),
        ("b_worker", "nothing"),
        ("d_worker", "nothing"),
        ("d_staff", "department"),
        ("c1_staff", "nothing"),
    ],
)
def test_each_role_sees_its_scope(
    console: Opener, tree: Tree, queue: Queue, who: str, expected: str
) -> None:
    everything = {
        queue.new,
        queue.mine,
        queue.review,
        queue.forwarded,
        queue.dept_handling,
        queue.rejected,
        queue.overdue,
        queue.c2,
    }
    sets = {
        "everything": everything,
        "c1": everything - {queue.c2},
        "c2": {queue.c2},
        "department": {queue.forwarded, queue.dept_handling},
        "nothing": set(),
    }
    assert numbers_of(console(getattr(tree, who))) == sets[expected]


def test_an_admin_reads_their_centre_s_subtree(
    runtime: Runtime, console: Opener, tree: Tree, queue: Queue
) -> None:
    with session_scope(runtime.engine) as session:
        admin = Person(
            channel="console",
            external_id="d-admin",
            display_name="区管理员",
            role="admin",
            centre_id=tree.district.id,
        )
        session.add(admin)
        session.flush()
    assert len(numbers_of(console(admin))) == 8


def test_department_staff_have_their_department_s_tabs(
    console: Opener, tree: Tree, queue: Queue
) -> None:
    client = console(tree.d_staff)
    body = get(client, tab="forwarded")
    assert list(body["counts"]) == ["forwarded", "dept_handling", "overdue", "all"]
    assert [item["number"] for item in body["items"]] == [queue.forwarded]
    assert numbers_of(client, tab="dept_handling") == {queue.dept_handling}
    refused = client.get("/api/console/requests", params={"tab": "todo_accept"})
    assert refused.status_code == 400


def test_pages_of_the_api(console: Opener, tree: Tree, queue: Queue) -> None:
    client = console(tree.d_leader)
    pages = [get(client, per_page="3", page=str(page)) for page in (1, 2, 3, 4)]
    assert [len(page["items"]) for page in pages] == [3, 3, 2, 0]
    assert all(page["total"] == 8 and page["pages"] == 3 for page in pages)
    seen = [item["number"] for page in pages for item in page["items"]]
    assert len(set(seen)) == 8
    assert seen == [item["number"] for item in get(client)["items"]]


@pytest.mark.parametrize(
    "params",
    [
        {"tab": "everything"},
        {"tab": "dept_handling"},
        {"state": "lost"},
        {"state": "new,lost"},
        {"page": "0"},
        {"page": "-1"},
        {"page": "abc"},
        {"page": "１"},
        {"per_page": "1000"},
        {"per_page": "0"},
        {"per_page": "99999999999999999999"},
        {"from": "2026-13-01"},
        {"from": "20260101"},
        {"to": "2026-02-30"},
        {"from": "2026-03-02", "to": "2026-03-01"},
        {"overdue": "maybe"},
        {"channel": "fax"},
        {"category": "不存在的类别"},
        {"department": "不存在的部门"},
        {"centre": "NOPE"},
        {"centre": "C2"},
        {"q": "路" * 101},
    ],
)
def test_bad_parameters_get_a_clear_answer_and_change_nothing(
    console: Opener, tree: Tree, queue: Queue, params: dict[str, str]
) -> None:
    # Given C1's worker (C2 is outside their centre)
    client = console(tree.c1_worker)
    before = tree.world.snapshot()
    response = client.get("/api/console/requests", params=params)
    assert response.status_code == 400, params
    body = response.json()
    assert body["error"] == "bad_request"
    assert any("\u4e00" <= character <= "\u9fff" for character in body["message"])
    assert tree.world.snapshot() == before


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"q": "路灯\x00"}, 200),
        ({"q": "\x00" * 50}, 200),
        ({"category": "市政\x00设施"}, 200),
        ({"department": "\x00"}, 200),
        ({"centre": "C1\x00"}, 200),
        ({"q": "'; DROP TABLE requests; --"}, 200),
        ({"category": "x" * 5000}, 400),
        ({"from": "２０２６-01-01"}, 400),
    ],
)
def test_hostile_parameters_are_answered_and_change_nothing(
    console: Opener, tree: Tree, queue: Queue, params: dict[str, str], status: int
) -> None:
    client = console(tree.c1_worker)
    before = tree.world.snapshot()
    response = client.get("/api/console/requests", params=params)
    assert response.status_code == status, response.text
    assert tree.world.snapshot() == before
    if status == 400:
        # What was typed is shown back, not all of it
        assert len(response.json()["message"]) < 80


def test_a_centre_outside_the_scope_reads_like_an_unknown_one(
    console: Opener, tree: Tree, queue: Queue
) -> None:
    client = console(tree.c1_worker)
    outside = client.get("/api/console/requests", params={"centre": "C2"}).json()["message"]
    unknown = client.get("/api/console/requests", params={"centre": "ZZ"}).json()["message"]
    assert outside.replace("C2", "ZZ") == unknown


def test_the_options_offer_what_the_user_may_filter_by(
    console: Opener, tree: Tree, queue: Queue
) -> None:
    leader = console(tree.d_leader).get("/api/console/options").json()
    assert [centre["code"] for centre in leader["centres"]] == ["D", "C1", "C2", "B"]
    assert [tab["label"] for tab in leader["tabs"]] == [
        "待受理",
        "待审核回单",
        "我在办",
        "已转单",
        "超期",
        "全部",
    ]
    assert {"key": "new", "label": "待受理"} in leader["states"]
    assert "市政设施" in [category["name"] for category in leader["categories"]]
    assert "telegram" in [channel["key"] for channel in leader["channels"]]
    worker = console(tree.c1_worker).get("/api/console/options").json()
    assert [centre["code"] for centre in worker["centres"]] == ["C1"]
    # C1's worker may forward to C1's own 社区网格 and to the district's 城管执法.
    assert {d["name"] for d in worker["departments"]} == {"社区网格", "城管执法"}
    staff = console(tree.d_staff).get("/api/console/options").json()
    assert [tab["label"] for tab in staff["tabs"]] == ["待接收", "办理中", "超期", "全部"]
    assert [d["name"] for d in staff["departments"]] == ["城管执法"]


def test_a_role_taken_away_closes_the_queue(
    runtime: Runtime, console: Opener, tree: Tree, queue: Queue
) -> None:
    client = console(tree.c1_worker)
    with session_scope(runtime.engine) as session:
        person = session.get(Person, tree.c1_worker.id)
        assert person is not None
        person.role = "requester"
        session.add(person)
    assert client.get("/api/console/requests").status_code == 401


# --- the stream ---------------------------------------------------------------------------


#: Lines of a stream read at most while waiting for one (heartbeats come every 0.5 s).
MAX_LINES = 120


def read_events(stream: Iterator[str], until: str) -> list[str]:
    """The stream's lines until one equal to `until` (the stream must send it soon)."""
    lines: list[str] = []
    for line in stream:
        lines.append(line)
        if line == until:
            return lines
        if len(lines) >= MAX_LINES:
            break
    raise AssertionError(f"the stream sent no {until!r}: {lines[-10:]}")


@pytest.fixture
def quick_stream(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(settings, "console_stream_poll", 0.2)
    monkeypatch.setattr(console_queue, "HEARTBEAT", 0.5)
    return settings


def served_cookie(runtime: Runtime, client: TestClient) -> dict[str, str]:
    return {COOKIE: client.cookies[COOKIE]}


def test_the_stream_tells_of_a_new_request_in_scope(
    quick_stream: Settings, runtime: Runtime, console: Opener, tree: Tree, queue: Queue
) -> None:
    # Given C2's worker watching the stream on a real server
    cookie = served_cookie(runtime, console(tree.c2_worker))
    app = create_app(runtime)
    with serving(app) as base, httpx.Client(base_url=base, cookies=cookie, timeout=30) as http:
        with http.stream("GET", "/api/console/stream") as response:
            stream = response.iter_lines()
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            read_events(stream, ": connected")
            # When a C1 resident writes (outside C2), then a C2 resident
            tree.submit(text="春熙路口的路灯坏了", now=NOW + timedelta(hours=1))
            number = tree.submit(tree.c2_resident, "东风路又黑了", now=NOW + timedelta(hours=1))
            # Then the stream says something changed, with the newest event's id
            lines = read_events(stream, "event: changed")
            data = next(line for line in stream if line.startswith("data: "))
    newest = max(event.id or 0 for event in tree.world.events(number))
    assert json.loads(data.removeprefix("data: ")) == {"event_id": newest}
    assert f"id: {newest}" in lines


def test_the_stream_sends_heartbeats_and_ends_with_the_session(
    quick_stream: Settings, runtime: Runtime, console: Opener, tree: Tree, queue: Queue
) -> None:
    client = console(tree.c1_worker)
    cookie = served_cookie(runtime, client)
    app = create_app(runtime)
    with serving(app) as base, httpx.Client(base_url=base, cookies=cookie, timeout=30) as http:
        with http.stream("GET", "/api/console/stream") as response:
            stream = response.iter_lines()
            read_events(stream, ": heartbeat")
            # When the user logs out (in another tab)
            out = client.post(
                "/api/console/logout", json={}, headers={"Origin": ORIGIN, **csrf_of(client)}
            )
            assert out.status_code in (200, 204), out.text
            # Then the stream ends
            read_events(stream, "event: ended")


def csrf_of(client: TestClient) -> dict[str, str]:
    me = client.get("/api/console/me").json()
    return {"X-CSRF-Token": str(me["csrf_token"])}


def test_the_stream_ends_when_the_server_stops(
    quick_stream: Settings, runtime: Runtime, console: Opener, tree: Tree, queue: Queue
) -> None:
    cookie = served_cookie(runtime, console(tree.c1_worker))
    app = create_app(runtime)
    with serving(app) as base, httpx.Client(base_url=base, cookies=cookie, timeout=30) as http:
        with http.stream("GET", "/api/console/stream") as response:
            stream = response.iter_lines()
            read_events(stream, ": connected")
            app.state.stopping = True
            read_events(stream, "event: ended")


#: Handles a chat's pending inbox rows in a process of its own: argv database URL, Redis URL
#: (empty: none), channel, chat id.
OTHER_PROCESS = """
import sys
from bot import dispatch
from bot.runtime import Runtime
from storage.db import get_engine
from storage.settings import Settings
url, redis_url, channel, chat_id = sys.argv[1:]
settings = Settings(database_url=url, redis_url=redis_url or None, _env_file=None)
dispatch.process_chat(Runtime(settings=settings, engine=get_engine(url)), channel, chat_id)
"""


@pytest.mark.parametrize("where", ["another process, through Redis", "a second runtime"])
def test_the_stream_wakes_at_once_when_a_change_is_committed_elsewhere(
    where: str,
    request: pytest.FixtureRequest,
    settings: Settings,
    runtime: Runtime,
    console: Opener,
    tree: Tree,
    queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stream whose fallback read and heartbeat are further away than the client waits
    # for a line (so only a wake-up can bring the change in time)
    monkeypatch.setattr(settings, "console_stream_poll", 60.0)
    monkeypatch.setattr(console_queue, "HEARTBEAT", 600.0)
    through_redis = where.startswith("another")
    redis_url: str | None = request.getfixturevalue("redis_url") if through_redis else None
    served = Runtime(
        settings=settings.model_copy(update={"redis_url": redis_url}), engine=runtime.engine
    )
    cookie = served_cookie(runtime, console(tree.c2_worker))
    account = account_of(runtime, tree.c2_worker)
    # and a message of C2's resident stored, not yet handled
    resident = tree.c2_resident
    client_id, payload = web.parse_body({"id": "wake1", "text": "东风路的路灯又坏了"}, 2000)
    with session_scope(runtime.engine) as session:
        queries.add_inbox(
            session=session,
            channel=web.CHANNEL,
            natural_key=f"{resident.external_id}:{client_id}",
            chat_id=resident.external_id,
            payload=payload,
        )
    app = create_app(served)
    with serving(app) as base, httpx.Client(base_url=base, cookies=cookie, timeout=20) as http:
        with http.stream("GET", "/api/console/stream") as response:
            stream = response.iter_lines()
            read_events(stream, ": connected")
            wait_until(lambda: wake.CHANGES.open_polls(account) == 1, "the stream waits")
            # When the message is handled (a new request in C2) by another process or runtime
            if through_redis:
                assert redis_url is not None
                wait_until(lambda: subscribed(redis_url), "this process listens on Redis")
                subprocess.run(
                    [sys.executable, "-c", OTHER_PROCESS, settings.database_url, redis_url]
                    + [web.CHANNEL, resident.external_id],
                    check=True,
                    cwd=REPO,
                    timeout=120,
                )
            else:
                other = Runtime(settings=settings.model_copy(), engine=runtime.engine)
                dispatch.process_chat(other, web.CHANNEL, resident.external_id)
            # Then the stream tells of it at once (a read of the stream would time out
            # long before its fallback read)
            read_events(stream, "event: changed")
            data = next(line for line in stream if line.startswith("data: "))
    newest = tree.world.events()[-1]
    assert json.loads(data.removeprefix("data: ")) == {"event_id": newest.id}
    with Session(runtime.engine) as session:
        made = session.get(Request, newest.request_id)
        assert made is not None
        assert (made.requester_id, made.text) == (resident.id, "东风路的路灯又坏了")


def test_the_stream_wakes_at_once_when_a_request_is_acted_on_in_the_console(
    settings: Settings,
    runtime: Runtime,
    console: Opener,
    tree: Tree,
    queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given C2's worker's stream, its fallback read and heartbeat far away
    monkeypatch.setattr(settings, "console_stream_poll", 60.0)
    monkeypatch.setattr(console_queue, "HEARTBEAT", 600.0)
    client = console(tree.c2_worker)
    account = account_of(runtime, tree.c2_worker)
    app = create_app(runtime)
    with (
        serving(app) as base,
        httpx.Client(base_url=base, cookies=served_cookie(runtime, client), timeout=20) as http,
    ):
        with http.stream("GET", "/api/console/stream") as response:
            stream = response.iter_lines()
            read_events(stream, ": connected")
            wait_until(lambda: wake.CHANGES.open_polls(account) == 1, "the stream waits")
            # When they accept C2's new request in another tab (another app of the process)
            done = client.post(
                f"/api/console/requests/{queue.c2}/actions",
                json={"action": "accept"},
                headers={"Origin": ORIGIN, **csrf_of(client)},
            )
            assert done.status_code == 200, done.text
            # Then the stream tells of it at once
            read_events(stream, "event: changed")
            data = next(line for line in stream if line.startswith("data: "))
    newest = tree.world.events(queue.c2)[-1]
    assert newest.to_state == "handling"
    assert json.loads(data.removeprefix("data: ")) == {"event_id": newest.id}


#: The repository's root (the other process imports the packages from there).
REPO = Path(__file__).resolve().parent.parent


def subscribed(redis_url: str) -> bool:
    """Whether some process listens for request changes on `redis_url`'s server."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        counts = dict(client.pubsub_numsub(wake.CHANGE_CHANNEL))
    finally:
        client.close()
    return bool(counts.get(wake.CHANGE_CHANNEL.encode()) or counts.get(wake.CHANGE_CHANNEL))


def test_an_account_holds_only_so_many_streams(
    quick_stream: Settings,
    runtime: Runtime,
    console: Opener,
    tree: Tree,
    queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(quick_stream, "console_streams_per_account", 1)
    client = console(tree.c1_worker)
    cookie = served_cookie(runtime, client)
    app = create_app(runtime)
    with serving(app) as base, httpx.Client(base_url=base, cookies=cookie, timeout=30) as http:
        with http.stream("GET", "/api/console/stream") as first:
            # (The iterator is kept: dropping it would close the connection.)
            stream = first.iter_lines()
            read_events(stream, ": connected")
            second = http.get("/api/console/stream", timeout=5)
            assert second.status_code == 429
            assert second.json()["error"] == "too_many_streams"
            assert second.headers["retry-after"]
            # Another account is not affected
            other = console(tree.c1_worker2)
            with httpx.Client(base_url=base, cookies=served_cookie(runtime, other)) as http2:
                with http2.stream("GET", "/api/console/stream") as third:
                    assert third.status_code == 200
        # Once the first is closed, its slot is free again
        wait_until(
            lambda: console_queue.STREAMS.open_streams(account_of(runtime, tree.c1_worker)) == 0,
            "the closed stream gave its slot back",
        )
        with http.stream("GET", "/api/console/stream") as again:
            assert again.status_code == 200


def account_of(runtime: Runtime, person: Person) -> int:
    with Session(runtime.engine) as session:
        account = queries.get_account_of(session=session, person_id=person.id or 0)
        assert account is not None and account.id is not None
        return account.id
