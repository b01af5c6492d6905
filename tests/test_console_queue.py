"""The console queue: its query (tabs, filters, search, counts, order, paging, scope) on SQLite
and PostgreSQL, and its API (GET /api/console/requests, /options, /stream)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from storage import queries
from storage.db import session_scope
from storage.models import Centre
from tests.utils.centres import Tree
from tests.utils.console_queue import EARLY, Queue, make_queue
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
            queries.QueueFilter(
                created_from=local(2026, 1, 26), created_before=local(2026, 1, 27)
            ),
            {queue.overdue},
        ),
        (queries.QueueFilter(created_from=local(2026, 3, 2)), set(listed(tree, leader)) - {
            queue.overdue
        }),
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
    march_3 = queries.QueueFilter(
        created_from=local(2026, 3, 3), created_before=local(2026, 3, 4)
    )
    march_2 = queries.QueueFilter(
        created_from=local(2026, 3, 2), created_before=local(2026, 3, 3)
    )
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
