"""The workflow commands on real databases: every test runs on SQLite and on PostgreSQL.

Commands are driven through a Tx on a session_scope, as the chat handlers drive them, with a
fixed clock; a few stories go through the chat harness to show the same from the outside.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from storage import queries
from storage.db import session_scope
from storage.models import (
    Category,
    Centre,
    Department,
    Event,
    Invitation,
    OutboxMessage,
    Person,
    Request,
    RequestCounter,
)
from tests.utils.centres import Tree
from tests.utils.harness import Desk
from tests.utils.world import NOW, Cast, World, local
from workflow import service
from workflow.errors import (
    InvalidInput,
    InvitationInvalid,
    NotPermitted,
    TransitionNotAllowed,
    UnknownCentre,
    UnknownDepartment,
    UnknownRequest,
)
from workflow.machine import State

# --- numbers -----------------------------------------------------------------------------


def test_submit_numbers_requests_by_the_shanghai_day_and_counts_up(cast: Cast) -> None:
    # Given moments either side of midnight in Shanghai (16:00 UTC)
    before_midnight = datetime(2026, 3, 1, 15, 59, tzinfo=UTC)
    after_midnight = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)

    # When requests are submitted at them
    numbers = [
        cast.submit(now=before_midnight),
        cast.submit(now=after_midnight),
        cast.submit(now=after_midnight + timedelta(hours=1)),
        cast.submit(now=NOW),
        cast.submit(now=before_midnight + timedelta(seconds=30)),
    ]

    # Then each Shanghai day has its own sequence
    assert numbers == [
        "SQ-20260301-0001",
        "SQ-20260302-0001",
        "SQ-20260302-0002",
        "SQ-20260302-0003",
        "SQ-20260301-0002",
    ]
    assert all(service.NUMBER_PATTERN.match(number) for number in numbers)


def test_the_days_sequence_grows_past_four_digits(cast: Cast, world: World) -> None:
    # Given a day that already had 9999 requests
    with session_scope(world.engine) as session:
        session.add(RequestCounter(day="20260302", last=9999))

    # When one more comes
    number = cast.submit()

    # Then it is number 10000, and it can be found again
    assert number == "SQ-20260302-10000"
    assert world.request(number).text == "我家门口的路灯坏了"
    with session_scope(world.engine) as session:
        assert service.load(world.tx(session), number.lower()).number == number


def submit_from_threads(world: World, threads: int, each: int) -> list[str]:
    """Submits threads x each requests at once, each thread with its own sessions."""
    requesters = [world.person(name=f"居民{i}") for i in range(threads)]
    barrier = threading.Barrier(threads, timeout=60)
    numbers: list[str] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def run(requester: Person) -> None:
        try:
            barrier.wait()
            for _ in range(each):
                with session_scope(world.engine) as session:
                    tx = world.tx(session)
                    me = session.get(Person, requester.id)
                    assert me is not None
                    number = service.submit(tx, me, "井盖丢了").number
                with guard:
                    numbers.append(number)
        except BaseException as exc:
            with guard:
                errors.append(exc)

    workers = [threading.Thread(target=run, args=(r,)) for r in requesters]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in workers)
    assert errors == []
    return numbers


def test_numbers_stay_unique_when_many_threads_submit_at_once(cast: Cast, world: World) -> None:
    # Given 8 threads with their own sessions
    # When each submits 10 requests at the same moment
    numbers = submit_from_threads(world, threads=8, each=10)

    # Then 80 distinct numbers, with no gap, were given out
    assert len(numbers) == 80
    assert sorted(numbers) == [f"SQ-20260302-{n:04d}" for n in range(1, 81)]
    assert world.count(Request) == 80
    assert {r.number for r in (world.request(n) for n in numbers)} == set(numbers)


# --- one transaction ---------------------------------------------------------------------


def test_a_failure_after_submit_rolls_back_request_event_outbox_and_counter(
    cast: Cast,
    world: World,
) -> None:
    # Given a submit inside a unit of work that then fails
    with pytest.raises(RuntimeError, match="crash after the command"):
        with session_scope(world.engine) as session:
            tx = world.tx(session)
            request = service.submit(tx, session.get(Person, cast.requester.id), "路灯坏了")
            session.flush()
            assert request.id is not None and tx.outbox_ids()
            raise RuntimeError("crash after the command")

    # Then nothing of it is left but, on PostgreSQL, the day's counter: the number it took
    # is never given out again (the counter is bumped in a transaction of its own)
    counters = 1 if world.engine.dialect.name == "postgresql" else 0
    assert world.snapshot() == (0, 0, 0, counters)
    assert cast.submit() == f"SQ-20260302-{counters + 1:04d}"


def test_a_failure_after_accept_leaves_the_request_as_it_was(cast: Cast, world: World) -> None:
    # Given a new request
    number = cast.submit()
    before = world.snapshot()

    # When accepting it fails afterwards in the same unit of work
    with pytest.raises(RuntimeError):
        with session_scope(world.engine) as session:
            service.accept(world.tx(session), session.get(Person, cast.worker.id), number)
            raise RuntimeError("crash")

    # Then neither state, handler, event nor outbox row was written
    request = world.request(number)
    assert (request.state, request.handler_id, request.first_action_at) == ("new", None, None)
    assert world.snapshot() == before


def test_state_event_and_outbox_rows_of_a_command_commit_together(
    cast: Cast,
    world: World,
) -> None:
    number = cast.submit()
    events, outbox = world.count(Event), world.count(OutboxMessage)

    world.do(service.accept, cast.worker, number)

    assert world.request(number).state == "handling"
    assert world.count(Event) == events + 1
    assert world.count(OutboxMessage) == outbox + world.written > outbox


# --- submit and routing ------------------------------------------------------------------


def test_submit_records_category_deadlines_event_and_notices(cast: Cast, world: World) -> None:
    # When the resident reports a broken lamp on a Monday at 10:00
    number = cast.submit("我家门口的路灯坏了")

    # Then the request is NEW in the lamp category with its deadlines
    request = world.request(number)
    assert request.state == "new"
    assert request.requester_id == cast.requester.id
    assert request.channel == "web"
    assert request.created_at == NOW
    assert request.response_due_at == local(2026, 3, 2, 14)  # 4 working hours
    assert request.resolution_due_at == local(2026, 3, 9, 18)  # 5 working days
    # And its history starts with the submit
    [event] = world.events(number)
    assert (
        event.actor_id,
        event.action,
        event.from_state,
        event.to_state,
        event.note,
        event.outcome,
    ) == (cast.requester.id, "submit", None, "new", None, "ok")
    # And the requester gets a receipt, every worker a card, nobody else anything
    assert world.keys_for(cast.requester) == ["requester.receipt"]
    assert world.keys_for(cast.worker) == ["card.new"]
    assert world.keys_for(cast.worker2) == ["card.new"]
    assert {pid for pid, _, _ in world.queued} == {
        cast.requester.id,
        cast.worker.id,
        cast.worker2.id,
    }
    receipt = world.queued[0][2]
    assert receipt["number"] == number and receipt["category"] == "市政设施"
    assert receipt["response_due"] == "2026-03-02 14:00"
    with Session(world.engine) as session:
        requester = session.get(Person, cast.requester.id)
        assert requester is not None and requester.last_request_id == request.id


def test_a_text_without_keywords_goes_to_the_fallback_category(cast: Cast, world: World) -> None:
    number = cast.submit("想咨询一下社保政策")
    with Session(world.engine) as session:
        category = session.get(Category, world.request(number).category_id)
        assert category is not None and category.name == "其他"


def test_without_any_category_the_default_deadlines_apply(world: World) -> None:
    # Given no categories at all
    requester = world.person()

    # When a request comes
    request = world.do(service.submit, requester, "想咨询一下")

    # Then it has no category, 8 working hours and 5 working days
    assert request.category_id is None
    assert request.response_due_at == local(2026, 3, 2, 18)
    assert request.resolution_due_at == local(2026, 3, 9, 18)
    assert world.queued[0][2]["category"] == "其他"


def test_a_category_routed_to_a_department_is_forwarded_automatically(
    cast: Cast,
    world: World,
) -> None:
    # Given a category routed to the market department
    world.category("食品安全", ["过期"], department=cast.market)

    # When a matching request comes
    number = cast.submit("超市卖过期牛奶")

    # Then it is forwarded there straight away, by nobody
    request = world.request(number)
    assert (request.state, request.department_id, request.handler_id) == (
        "forwarded",
        cast.market.id,
        None,
    )
    assert request.first_action_at is None  # the system's move is not a first response
    submit, forward = world.events(number)
    assert (submit.action, submit.to_state) == ("submit", "new")
    assert (
        forward.actor_id,
        forward.action,
        forward.from_state,
        forward.to_state,
        forward.note,
    ) == (None, "forward", "new", "forwarded", "按类别自动转单")
    # And the requester, the department's staff and the workers hear of it
    assert world.keys_for(cast.requester) == ["requester.receipt", "requester.forwarded"]
    assert world.keys_for(cast.market_staff) == ["card.forwarded"]
    assert world.keys_for(cast.worker) == ["card.auto_forwarded"]
    assert world.keys_for(cast.staff) == []


def test_a_route_to_an_inactive_department_leaves_the_request_with_the_committee(
    cast: Cast,
    world: World,
) -> None:
    closed = world.department("已撤并部门", active=False)
    world.category("旧类别", ["旧事"], department=closed)

    number = cast.submit("一件旧事")

    assert world.request(number).state == "new"
    assert world.keys_for(cast.worker) == ["card.new"]


def test_a_departments_resolution_days_override_the_categorys(world: World) -> None:
    # Given a department that promises 2 working days, one that does not, and a 5-day category
    fast = world.department("快速处置", resolution_days=2)
    slow = world.department("普通处置")
    world.category("市政设施", ["路灯"], resolution_days=5)
    requester, worker = world.person(), world.person("worker")
    first = world.do(service.submit, requester, "路灯坏了").number
    second = world.do(service.submit, requester, "路灯又坏了").number
    assert world.request(first).resolution_due_at == local(2026, 3, 9, 18)

    # When one is forwarded to each, on Tuesday at 11:00
    tuesday = local(2026, 3, 3, 11)
    world.do(service.forward, worker, first, fast.name, now=tuesday)
    world.do(service.forward, worker, second, slow.name, now=tuesday)

    # Then the first is due in 2 working days from then, the second keeps its category's date
    assert world.request(first).resolution_due_at == local(2026, 3, 5, 18)
    assert world.request(second).resolution_due_at == local(2026, 3, 9, 18)


def test_an_automatic_forward_also_takes_the_departments_resolution_days(world: World) -> None:
    fast = world.department("快速处置", resolution_days=1)
    world.category("市政设施", ["路灯"], department=fast, resolution_days=5)
    request = world.do(service.submit, world.person(), "路灯坏了")
    assert request.resolution_due_at == local(2026, 3, 3, 18)


# --- every command's event ---------------------------------------------------------------


def test_every_step_of_a_department_story_is_an_event_row(cast: Cast, world: World) -> None:
    # Given moments one minute apart
    at = [NOW + timedelta(minutes=i) for i in range(9)]
    w, c = world, cast

    # When the request goes the whole way through a department, with one rework
    number = c.submit(now=at[0])
    w.do(service.accept, c.worker, number, now=at[1])
    w.do(service.forward, c.worker, number, "城管执法", now=at[2])
    w.do(service.take, c.staff, number, now=at[3])
    w.do(service.complete, c.staff, number, "已更换灯泡", now=at[4])
    w.do(service.send_back, c.worker, number, "请附照片", now=at[5])
    w.do(service.complete, c.staff, number, "已更换灯泡，附照片", now=at[6])
    w.do(service.approve, c.worker, number, now=at[7])
    w.do(service.rate, c.requester, number, True, "基本满意", now=at[8])

    # Then each step is one event: who, what, from, to, note, when
    assert [
        (e.actor_id, e.action, e.from_state, e.to_state, e.note, e.outcome, e.created_at)
        for e in w.events(number)
    ] == [
        (c.requester.id, "submit", None, "new", None, "ok", at[0]),
        (c.worker.id, "accept", "new", "handling", None, "ok", at[1]),
        (c.worker.id, "forward", "handling", "forwarded", "城管执法", "ok", at[2]),
        (c.staff.id, "take", "forwarded", "dept_handling", None, "ok", at[3]),
        (c.staff.id, "complete", "dept_handling", "review", "已更换灯泡", "ok", at[4]),
        (c.worker.id, "send_back", "review", "dept_handling", "请附照片", "ok", at[5]),
        (c.staff.id, "complete", "dept_handling", "review", "已更换灯泡，附照片", "ok", at[6]),
        (c.worker.id, "approve", "review", "replied", None, "ok", at[7]),
        (c.requester.id, "rate", "replied", "closed", "已解决 基本满意", "ok", at[8]),
    ]
    # And the request carries the outcome
    request = w.request(number)
    assert request.state == "closed"
    assert request.department_id == c.lamps.id
    assert request.result == "已更换灯泡，附照片"
    assert (request.solved, request.satisfaction) == (True, "基本满意")
    assert (request.first_action_at, request.replied_at, request.closed_at) == (at[1], at[7], at[8])
    assert request.updated_at == at[8]


def test_every_step_of_a_committee_story_is_an_event_row(cast: Cast, world: World) -> None:
    w, c = world, cast
    number = c.submit()
    w.do(service.accept, c.worker, number)
    w.do(service.supplement, c.requester, number, "灯杆编号 A-17")
    w.do(service.complete, c.worker, number, "已报修")
    w.do(service.send_back, c.leader, number, "需确认修好")

    # A committee-handled request goes back to HANDLING, still with its handler
    request = w.request(number)
    assert (request.state, request.handler_id, request.department_id) == (
        "handling",
        c.worker.id,
        None,
    )
    # The handler gets the card; the "who acted" notice goes only to the other workers
    assert w.keys_for(c.worker) == ["card.sent_back"]

    w.do(service.complete, c.worker, number, "已修好")
    w.do(service.approve, c.worker2, number)
    assert [(e.actor_id, e.action, e.from_state, e.to_state, e.note) for e in w.events(number)] == [
        (c.requester.id, "submit", None, "new", None),
        (c.worker.id, "accept", "new", "handling", None),
        (c.requester.id, "supplement", "handling", "handling", "灯杆编号 A-17"),
        (c.worker.id, "complete", "handling", "review", "已报修"),
        (c.leader.id, "send_back", "review", "handling", "需确认修好"),
        (c.worker.id, "complete", "handling", "review", "已修好"),
        (c.worker2.id, "approve", "review", "replied", None),
    ]


def test_accept_makes_the_worker_the_handler_and_tells_the_others(
    cast: Cast,
    world: World,
) -> None:
    number = cast.submit()

    request = world.do(service.accept, cast.worker, number)

    assert (request.state, request.handler_id, request.first_action_at) == (
        "handling",
        cast.worker.id,
        NOW,
    )
    assert world.keys_for(cast.requester) == ["requester.accepted"]
    assert world.keys_for(cast.worker) == []
    assert world.keys_for(cast.worker2) == ["worker.acted"]


def test_a_leader_can_do_what_a_worker_does(cast: Cast, world: World) -> None:
    number = cast.submit()
    world.do(service.accept, cast.leader, number)
    world.do(service.complete, cast.leader, number, "已处理")
    world.do(service.approve, cast.leader, number)
    assert world.request(number).state == "replied"
    assert world.request(number).handler_id == cast.leader.id


def test_reject_closes_the_request_with_the_reason(cast: Cast, world: World) -> None:
    number = cast.submit()

    world.do(service.reject, cast.worker, number, "  不属于受理范围  ")

    request = world.request(number)
    assert (request.state, request.closed_at, request.first_action_at) == ("rejected", NOW, NOW)
    event = world.events(number)[-1]
    assert (event.actor_id, event.action, event.from_state, event.to_state, event.note) == (
        cast.worker.id,
        "reject",
        "new",
        "rejected",
        "不属于受理范围",
    )
    assert world.keys_for(cast.requester) == ["requester.rejected"]
    assert world.queued[0][2]["reason"] == "不属于受理范围"


def test_a_department_returns_a_request_to_the_committee_before_or_after_taking_it(
    cast: Cast,
    world: World,
) -> None:
    for state in (State.FORWARDED, State.DEPT_HANDLING):
        # Given a request forwarded to (or taken by) the lamp department
        number = cast.bring(state)

        # When its staff hand it back
        world.do(service.return_, cast.staff, number, "不属于本部门")

        # Then it is NEW again, with no department, and every worker gets it back
        request = world.request(number)
        assert (request.state, request.department_id) == ("new", None), state
        event = world.events(number)[-1]
        assert (event.actor_id, event.action, event.from_state, event.to_state, event.note) == (
            cast.staff.id,
            "return",
            state.value,
            "new",
            "不属于本部门",
        )
        assert world.keys_for(cast.worker) == ["card.returned"]
        assert world.keys_for(cast.worker2) == ["card.returned"]
        assert world.queued[0][2]["department"] == "城管执法"


# --- 撤回转单 ------------------------------------------------------------------------------


def test_a_worker_recalls_an_automatic_forward_and_the_department_is_told(
    cast: Cast,
    world: World,
) -> None:
    # Given a request a category forwarded automatically to the market department
    world.category("食品安全", ["过期"], department=cast.market)
    number = cast.submit("超市卖过期牛奶")
    assert world.request(number).state == "forwarded"

    # When a worker takes it back before the department took it
    world.do(service.recall, cast.worker, number)

    # Then it is new again, with no department, and the recall is in its history
    request = world.request(number)
    assert (request.state, request.department_id, request.handler_id) == ("new", None, None)
    assert request.first_action_at is None  # taking it back answers nobody yet
    event = world.events(number)[-1]
    assert (
        event.actor_id,
        event.action,
        event.from_state,
        event.to_state,
        event.note,
        event.outcome,
    ) == (cast.worker.id, "recall", "forwarded", "new", "市场监管", "ok")
    # And the department's staff are told, the other workers hear who did it, the requester
    # (who will hear where it goes next) is not bothered
    assert world.keys_for(cast.market_staff) == ["dept.recalled"]
    notice = next(
        params for person_id, key, params in world.queued if person_id == cast.market_staff.id
    )
    assert (notice["number"], notice["department"], notice["by"]) == (number, "市场监管", "王书记")
    assert world.keys_for(cast.worker2) == ["worker.acted"]
    assert world.keys_for(cast.leader) == []  # a leader is no worker: no committee card
    assert world.keys_for(cast.worker) == []
    assert world.keys_for(cast.requester) == []
    assert world.keys_for(cast.staff) == []


def test_the_worker_who_recalled_forwards_the_request_elsewhere_right_after(
    cast: Cast,
    world: World,
) -> None:
    # Given an automatic forward to the wrong department, recalled by a worker
    world.category("食品安全", ["过期"], department=cast.market)
    number = cast.submit("超市卖过期牛奶")
    world.do(service.recall, cast.worker, number)

    # When the same worker forwards it to the lamp department an hour later
    later = NOW + timedelta(hours=1)
    world.do(service.forward, cast.worker, number, "城管执法", now=later)

    # Then the lamp department holds it, its staff get the card, the market staff nothing
    request = world.request(number)
    assert (request.state, request.department_id) == ("forwarded", cast.lamps.id)
    assert world.keys_for(cast.staff) == ["card.forwarded"]
    assert world.keys_for(cast.market_staff) == []
    assert world.keys_for(cast.requester) == ["requester.forwarded"]
    # And that forward is the request's first action: neither the automatic forward nor the
    # recall answered the requester
    assert request.first_action_at == later
    assert [e.action for e in world.events(number)] == ["submit", "forward", "recall", "forward"]
    # And the lamp department can take it
    world.do(service.take, cast.staff, number)
    assert world.request(number).state == "dept_handling"


def test_a_leader_recalls_a_request_a_worker_forwarded(cast: Cast, world: World) -> None:
    # Given a request a worker forwarded to the lamp department
    number = cast.bring(State.FORWARDED)

    # When a leader takes it back
    world.do(service.recall, cast.leader, number)

    # Then it is new again, and the lamp staff and both workers hear of it
    assert (world.request(number).state, world.request(number).department_id) == ("new", None)
    assert world.keys_for(cast.staff) == ["dept.recalled"]
    assert world.keys_for(cast.worker) == ["worker.acted"]
    assert world.keys_for(cast.worker2) == ["worker.acted"]


def test_a_recall_after_the_department_took_the_request_is_refused_by_the_machine(
    cast: Cast,
    world: World,
) -> None:
    # Given a request the lamp department has taken
    number = cast.bring(State.DEPT_HANDLING)
    before = world.snapshot()
    row = world.request(number)

    # When a worker tries to take it back
    error = world.refused(service.recall, cast.worker, number)

    # Then the machine refuses ("cannot ... now") and nothing at all is written
    assert isinstance(error, TransitionNotAllowed)
    assert str(error) == "Can't recall when in dept_handling."
    assert world.snapshot() == before
    after = world.request(number)
    assert (after.state, after.department_id, after.updated_at) == (
        "dept_handling",
        row.department_id,
        row.updated_at,
    )


@pytest.mark.parametrize("who", ["staff", "market_staff", "requester", "neighbour"])
def test_department_staff_and_requesters_cannot_recall_a_forwarded_request(
    cast: Cast,
    world: World,
    who: str,
) -> None:
    # Given a request forwarded to the lamp department
    number = cast.bring(State.FORWARDED)
    actor: Person = getattr(cast, who)
    requests, events, outbox, counters = world.snapshot()

    # When department staff (its own or another's) or a requester (its own or not) try to
    # take it back
    error = world.refused(service.recall, actor, number)

    # Then it is refused for their role, the attempt is recorded, nothing else changes
    assert isinstance(error, NotPermitted) and error.reason == "role"
    assert_refusal_recorded(world, number, actor, "recall", "forwarded")
    assert world.snapshot() == (requests, events + 1, outbox, counters)
    request = world.request(number)
    assert (request.state, request.department_id) == ("forwarded", cast.lamps.id)


@pytest.mark.parametrize("state", [State.NEW, State.HANDLING, State.REVIEW, State.CLOSED])
def test_only_a_forwarded_request_can_be_recalled(
    cast: Cast,
    world: World,
    state: State,
) -> None:
    # Given a request that is not (or no longer) waiting for a department
    number = cast.bring(state)
    before = world.snapshot()

    # When a worker tries to recall it
    error = world.refused(service.recall, cast.worker, number)

    # Then the machine refuses and nothing is written
    assert isinstance(error, TransitionNotAllowed) and error.state == state
    assert world.snapshot() == before


def test_forward_to_an_unknown_or_inactive_department_changes_nothing(
    cast: Cast,
    world: World,
) -> None:
    world.department("已撤并部门", active=False)
    number = cast.submit()
    before = world.snapshot()

    for name in ("不存在的部门", "已撤并部门"):
        error = world.refused(service.forward, cast.worker, number, name)
        assert isinstance(error, UnknownDepartment) and error.name == name

    assert world.request(number).state == "new"
    assert world.snapshot() == before


def test_supplement_reaches_whoever_holds_the_request(cast: Cast, world: World) -> None:
    number = cast.bring(State.DEPT_HANDLING)

    world.do(service.supplement, cast.requester, number, "晚上八点后才不亮")

    assert world.request(number).state == "dept_handling"
    event = world.events(number)[-1]
    assert (event.action, event.from_state, event.to_state, event.note) == (
        "supplement",
        "dept_handling",
        "dept_handling",
        "晚上八点后才不亮",
    )
    assert world.keys_for(cast.staff) == ["card.supplemented"]
    assert world.keys_for(cast.worker) == []


# --- refusals ----------------------------------------------------------------------------


def assert_refusal_recorded(
    world: World, number: str, actor: Person, action: str, state: str
) -> None:
    event = world.events(number)[-1]
    assert (event.actor_id, event.action, event.from_state, event.to_state, event.outcome) == (
        actor.id,
        action,
        state,
        state,
        "refused",
    )


def test_a_requester_cannot_accept_and_the_attempt_is_recorded(cast: Cast, world: World) -> None:
    # Given a new request
    number = cast.submit()
    before = world.request(number)
    requests, events, outbox, counters = world.snapshot()

    # When its own requester tries to accept it
    error = world.refused(service.accept, cast.requester, number)

    # Then it is refused for their role, one refused event is written, nothing else changes
    assert isinstance(error, NotPermitted) and error.reason == "role"
    assert_refusal_recorded(world, number, cast.requester, "accept", "new")
    assert world.snapshot() == (requests, events + 1, outbox, counters)
    after = world.request(number)
    assert (after.state, after.handler_id, after.updated_at, after.first_action_at) == (
        before.state,
        before.handler_id,
        before.updated_at,
        before.first_action_at,
    )


def test_a_worker_cannot_take_a_forwarded_request(cast: Cast, world: World) -> None:
    number = cast.bring(State.FORWARDED)
    before = world.snapshot()

    error = world.refused(service.take, cast.worker, number)

    assert isinstance(error, NotPermitted)
    assert_refusal_recorded(world, number, cast.worker, "take", "forwarded")
    assert world.request(number).state == "forwarded"
    assert world.snapshot()[1:] == (before[1] + 1, before[2], before[3])


def test_staff_of_another_department_cannot_take_or_complete_it(
    cast: Cast,
    world: World,
) -> None:
    # Given a request forwarded to the lamp department
    number = cast.bring(State.FORWARDED)

    # When the market department's staff try to take it
    error = world.refused(service.take, cast.market_staff, number)

    # Then it is not theirs
    assert isinstance(error, NotPermitted) and error.reason == "not_yours"
    assert_refusal_recorded(world, number, cast.market_staff, "take", "forwarded")

    # And once the right department took it, the other cannot complete it either
    world.do(service.take, cast.staff, number)
    error = world.refused(service.complete, cast.market_staff, number, "办完了")
    assert isinstance(error, NotPermitted) and error.reason == "not_yours"
    assert_refusal_recorded(world, number, cast.market_staff, "complete", "dept_handling")
    assert world.request(number).result is None


def test_department_staff_complete_a_forwarded_request_without_taking_it_first(
    cast: Cast,
    world: World,
) -> None:
    # Given a request forwarded to the lamp department
    number = cast.bring(State.FORWARDED)

    # When its staff report the result straight away
    world.do(service.complete, cast.staff, number, "已更换灯泡")

    # Then it was taken and completed: two events, the requester told it was taken
    request = world.request(number)
    assert (request.state, request.result) == ("review", "已更换灯泡")
    assert [(e.action, e.from_state, e.to_state) for e in world.events(number)[-2:]] == [
        ("take", "forwarded", "dept_handling"),
        ("complete", "dept_handling", "review"),
    ]
    assert world.keys_for(cast.requester) == ["requester.taken"]
    assert world.keys_for(cast.worker) == ["card.review"]


def test_another_department_cannot_complete_a_forwarded_request(
    cast: Cast,
    world: World,
) -> None:
    number = cast.bring(State.FORWARDED)
    before = world.snapshot()

    error = world.refused(service.complete, cast.market_staff, number, "办完了")

    assert isinstance(error, NotPermitted) and error.reason == "not_yours"
    assert_refusal_recorded(world, number, cast.market_staff, "complete", "forwarded")
    assert world.request(number).state == "forwarded"
    assert world.snapshot() == (before[0], before[1] + 1, before[2], before[3])


def test_a_worker_cannot_complete_what_a_department_handles(cast: Cast, world: World) -> None:
    number = cast.bring(State.DEPT_HANDLING)
    error = world.refused(service.complete, cast.worker, number, "党委代办结")
    assert isinstance(error, NotPermitted)
    assert_refusal_recorded(world, number, cast.worker, "complete", "dept_handling")
    assert world.request(number).state == "dept_handling"


def test_department_staff_cannot_approve(cast: Cast, world: World) -> None:
    number = cast.bring(State.DEPT_HANDLING)
    world.do(service.complete, cast.staff, number, "已修好")

    error = world.refused(service.approve, cast.staff, number)

    assert isinstance(error, NotPermitted) and error.reason == "role"
    assert_refusal_recorded(world, number, cast.staff, "approve", "review")
    assert world.request(number).state == "review"


def test_another_resident_cannot_cancel_or_rate_someone_elses_request(
    cast: Cast,
    world: World,
) -> None:
    number = cast.bring(State.REPLIED)

    for command, args, action in (
        (service.cancel, (), "cancel"),
        (service.rate, (True, "满意"), "rate"),
    ):
        error = world.refused(command, cast.neighbour, number, *args)
        assert isinstance(error, NotPermitted) and error.reason == "not_yours"
        assert_refusal_recorded(world, number, cast.neighbour, action, "replied")
    assert world.request(number).state == "replied"


def test_a_requester_acting_on_an_unknown_number_is_refused_and_recorded(
    cast: Cast,
    world: World,
) -> None:
    error = world.refused(service.accept, cast.requester, "SQ-20260302-0042")

    assert isinstance(error, NotPermitted)
    [event] = world.events()
    assert (event.request_id, event.actor_id, event.action, event.outcome, event.note) == (
        None,
        cast.requester.id,
        "accept",
        "refused",
        "SQ-20260302-0042",
    )


def test_a_worker_acting_on_an_unknown_or_malformed_number_gets_unknown_request(
    cast: Cast,
    world: World,
) -> None:
    for number in ("SQ-20260302-0042", "SQ-1", "随便写的", " "):
        error = world.refused(service.accept, cast.worker, number)
        assert isinstance(error, UnknownRequest) and error.number == number.strip()
    assert world.snapshot() == (0, 0, 0, 0)


def test_an_impossible_step_is_refused_by_the_machine_and_changes_nothing(
    cast: Cast,
    world: World,
) -> None:
    number = cast.bring(State.HANDLING)
    before = world.snapshot()

    error = world.refused(service.approve, cast.worker, number)

    assert isinstance(error, TransitionNotAllowed)
    assert str(error) == "Can't approve when in handling."
    assert world.request(number).state == "handling"
    assert world.snapshot()[2:] == before[2:]
    assert [e.outcome for e in world.events(number)] == ["ok", "ok"]


# --- required and too-long text ----------------------------------------------------------


#: Commands whose last argument is required text: (state, command, actor, what is missing).
TEXT_COMMANDS: list[tuple[State, Callable[..., Any], str, str]] = [
    (State.NEW, service.reject, "worker", "reason_required"),
    (State.FORWARDED, service.return_, "staff", "reason_required"),
    (State.DEPT_HANDLING, service.return_, "staff", "reason_required"),
    (State.REVIEW, service.send_back, "worker", "reason_required"),
    (State.HANDLING, service.complete, "worker", "result_required"),
    (State.DEPT_HANDLING, service.complete, "staff", "result_required"),
    (State.NEW, service.supplement, "requester", "content_required"),
]


def test_commands_that_need_a_reason_or_result_refuse_blank_or_too_long_text(
    cast: Cast,
    world: World,
) -> None:
    limit = world.runtime.settings.max_text_length
    for state, command, actor, what in TEXT_COMMANDS:
        # Given a request where the command could happen
        number = cast.bring(state)
        before = world.snapshot()
        case = f"{command.__name__} in {state}"

        # When it is given no text, Then it says what is missing
        for blank in ("", "  \n\t "):
            error = world.refused(command, getattr(cast, actor), number, blank)
            assert isinstance(error, InvalidInput) and error.what == what, case

        # When it is given too much, Then it says so with the limit
        error = world.refused(command, getattr(cast, actor), number, "长" * (limit + 1))
        assert isinstance(error, InvalidInput) and error.what == "too_long", case
        assert error.params == {"limit": limit, "length": limit + 1}

        # And nothing is stored
        assert world.request(number).state == state, case
        assert world.snapshot() == before, case


def test_a_request_text_over_the_limit_is_refused_and_nothing_is_stored(
    cast: Cast,
    world: World,
) -> None:
    limit = world.runtime.settings.max_text_length
    error = world.refused(service.submit, cast.requester, "路" * (limit + 1))

    assert isinstance(error, InvalidInput) and error.what == "too_long"
    assert error.params == {"limit": limit, "length": limit + 1}
    assert world.snapshot() == (0, 0, 0, 0)


def test_a_request_text_of_exactly_the_limit_is_accepted(cast: Cast, world: World) -> None:
    limit = world.runtime.settings.max_text_length
    number = cast.submit("  " + "路" * limit + "  ")
    assert world.request(number).text == "路" * limit


def test_an_empty_request_is_refused(cast: Cast, world: World) -> None:
    error = world.refused(service.submit, cast.requester, " \n ")
    assert isinstance(error, InvalidInput) and error.what == "empty"
    assert world.snapshot() == (0, 0, 0, 0)


# --- rating and reopening ----------------------------------------------------------------


def test_a_solved_and_satisfied_rating_closes_the_request(cast: Cast, world: World) -> None:
    for satisfaction in ("满意", "基本满意"):
        number = cast.bring(State.REPLIED)

        world.do(service.rate, cast.requester, number, True, satisfaction)

        request = world.request(number)
        assert (
            request.state,
            request.solved,
            request.satisfaction,
            request.closed_at,
            request.reopen_count,
        ) == ("closed", True, satisfaction, NOW, 0)
        event = world.events(number)[-1]
        assert (event.action, event.from_state, event.to_state, event.note) == (
            "rate",
            "replied",
            "closed",
            f"已解决 {satisfaction}",
        )
        assert world.keys_for(cast.requester) == ["requester.closed"]
        assert world.keys_for(cast.worker) == ["worker.rated"]


def test_unsolved_or_unsatisfied_reopens_the_request(cast: Cast, world: World) -> None:
    for solved, satisfaction in (
        (False, "满意"),
        (False, "基本满意"),
        (False, "不满意"),
        (True, "不满意"),
    ):
        # Given a department-handled request that was answered
        number = cast.submit()
        world.do(service.forward, cast.worker, number, "城管执法")
        world.do(service.take, cast.staff, number)
        world.do(service.complete, cast.staff, number, "已处理")
        world.do(service.approve, cast.worker, number)

        # When the requester says it is not solved or they are not satisfied
        world.do(service.rate, cast.requester, number, solved, satisfaction)

        # Then it is NEW again, back with the committee, its old answer cleared
        request = world.request(number)
        assert (
            request.state,
            request.reopen_count,
            request.department_id,
            request.handler_id,
            request.result,
            request.replied_at,
            request.closed_at,
        ) == ("new", 1, None, None, None, None, None)
        assert (request.solved, request.satisfaction) == (solved, satisfaction)
        event = world.events(number)[-1]
        assert (event.actor_id, event.action, event.from_state, event.to_state, event.note) == (
            cast.requester.id,
            "reopen",
            "replied",
            "new",
            f"{'已解决' if solved else '未解决'} {satisfaction}",
        )
        assert world.keys_for(cast.requester) == ["requester.reopened"]
        assert world.keys_for(cast.worker) == ["card.reopened"]


def test_a_request_can_be_reopened_twice_and_then_closed(cast: Cast, world: World) -> None:
    w, c = world, cast
    number = c.bring(State.REPLIED)

    # First 重办: not solved
    w.do(service.rate, c.requester, number, False, "不满意")
    # Second round through a department, then not satisfied
    w.do(service.forward, c.worker, number, "城管执法")
    w.do(service.take, c.staff, number)
    w.do(service.complete, c.staff, number, "再次处理")
    w.do(service.approve, c.worker, number)
    w.do(service.rate, c.requester, number, True, "不满意")
    assert (w.request(number).state, w.request(number).reopen_count) == ("new", 2)
    assert w.request(number).department_id is None

    # Third round by the committee, finally satisfied
    w.do(service.accept, c.worker2, number)
    w.do(service.complete, c.worker2, number, "彻底修好")
    w.do(service.approve, c.worker, number)
    w.do(service.rate, c.requester, number, True, "满意")

    request = w.request(number)
    assert (request.state, request.reopen_count, request.result) == ("closed", 2, "彻底修好")
    assert [e.action for e in w.events(number)].count("reopen") == 2


def test_an_unknown_satisfaction_is_invalid_and_changes_nothing(cast: Cast, world: World) -> None:
    number = cast.bring(State.REPLIED)
    before = world.snapshot()

    error = world.refused(service.rate, cast.requester, number, True, "非常满意")

    assert isinstance(error, InvalidInput) and error.what == "satisfaction"
    assert world.request(number).state == "replied"
    assert world.snapshot() == before


def test_a_request_cannot_be_rated_before_it_is_answered(cast: Cast, world: World) -> None:
    number = cast.bring(State.REVIEW)
    error = world.refused(service.rate, cast.requester, number, True, "满意")
    assert isinstance(error, TransitionNotAllowed)
    assert world.request(number).state == "review"


# --- cancelling --------------------------------------------------------------------------


def test_the_requester_can_cancel_an_open_request_and_its_holders_are_told(
    cast: Cast,
    world: World,
) -> None:
    holders = {
        State.NEW: {cast.worker.id, cast.worker2.id},
        State.HANDLING: {cast.worker.id},
        State.FORWARDED: {cast.staff.id},
        State.DEPT_HANDLING: {cast.staff.id},
        State.REVIEW: {cast.worker.id},
    }
    for state, told in holders.items():
        # Given a request in a cancellable state
        number = cast.bring(state)

        # When the requester cancels it
        world.do(service.cancel, cast.requester, number)

        # Then it is cancelled, and whoever held it is told
        request = world.request(number)
        assert (request.state, request.closed_at) == ("cancelled", NOW), state
        event = world.events(number)[-1]
        assert (event.actor_id, event.action, event.from_state, event.to_state) == (
            cast.requester.id,
            "cancel",
            state.value,
            "cancelled",
        )
        assert world.keys_for(cast.requester) == ["requester.cancelled"]
        assert {pid for pid, key, _ in world.queued if key == "card.cancelled"} == told, state


def test_an_answered_or_finished_request_cannot_be_cancelled(cast: Cast, world: World) -> None:
    for state in (State.REPLIED, State.CLOSED, State.REJECTED, State.CANCELLED):
        number = cast.bring(state)
        before = world.snapshot()

        error = world.refused(service.cancel, cast.requester, number)

        assert isinstance(error, TransitionNotAllowed), state
        assert str(error) == f"Can't cancel when in {state.value}."
        assert world.request(number).state == state
        assert world.snapshot()[2:] == before[2:]


def test_only_the_requester_can_cancel(cast: Cast, world: World) -> None:
    number = cast.submit()
    for actor in (cast.worker, cast.staff):
        assert isinstance(world.refused(service.cancel, actor, number), NotPermitted)
    assert world.request(number).state == "new"


# --- walk-ins at the reception desk -------------------------------------------------------


def test_a_walk_ins_notices_go_to_the_registering_worker_who_may_rate(
    cast: Cast,
    world: World,
) -> None:
    # Given a walk-in registered at the desk by a worker
    walk_in = world.person(name="李大爷", channel=service.DESK_CHANNEL)
    request = world.do(
        service.submit,
        walk_in,
        "楼道路灯坏了",
        contact_name="李大爷",
        contact_phone="13800000000",
        registered_by=cast.worker,
    )
    number = request.number

    # Then the submit is the registrar's, and the receipt is relayed to them
    [event] = world.events(number)
    assert (event.actor_id, event.note) == (cast.worker.id, "接待台代登记：李大爷 13800000000")
    assert (request.channel, request.registered_by_id) == ("desk", cast.worker.id)
    assert world.keys_for(walk_in) == []
    relays = [
        params for pid, key, params in world.queued if pid == cast.worker.id and key == "desk.relay"
    ]
    assert [r["inner"] for r in relays] == ["requester.receipt"]
    assert relays[0]["contact_name"] == "李大爷" and relays[0]["contact_phone"] == "13800000000"

    # When another worker handles it to the end
    world.do(service.accept, cast.worker2, number)
    assert [
        (key, params.get("inner")) for pid, key, params in world.queued if pid == cast.worker.id
    ] == [("desk.relay", "requester.accepted"), ("worker.acted", None)]
    world.do(service.complete, cast.worker2, number, "已修好")
    world.do(service.approve, cast.worker2, number)

    # Then only the registering worker may rate for the walk-in
    error = world.refused(service.rate, cast.worker2, number, True, "满意")
    assert isinstance(error, NotPermitted)
    world.do(service.rate, cast.worker, number, True, "满意")
    assert world.request(number).state == "closed"
    assert [params["inner"] for pid, key, params in world.queued if key == "desk.relay"] == [
        "requester.closed"
    ]
    assert not any(row.person_id == walk_in.id for row in world.outbox())


def test_a_walk_in_registered_and_rated_through_the_desk_chat(desk: Desk) -> None:
    # Given a worker at the reception desk
    worker = desk.worker("王书记")

    # When they register a walk-in
    worker.intake("李大爷", "13800000000", "楼道路灯坏了")

    # Then they are told, for the walk-in, the number to pass on
    number = desk.requests()[0].number
    relay = [m for m in worker.received if "接待台登记的群众 李大爷" in m.text]
    assert relay and number in relay[0].text

    # And after handling it themselves, they rate it for the walk-in
    worker.send(f"受理 {number}")
    worker.send(f"办结 {number} 已更换灯泡")
    replied = worker.send(f"回单 {number}")
    assert any(f"评价 {number} 已解决 满意" in m.actions for m in replied)
    worker.press(f"评价 {number} 已解决 满意")
    assert desk.request(number).state == "closed"
    assert desk.events(number)[-1].actor_id == worker.person_id


def test_a_refusal_in_chat_is_answered_and_stays_recorded(desk: Desk) -> None:
    # Given a resident's new request
    resident = desk.identity("张三")
    resident.send("路灯坏了")
    number = desk.requests()[0].number

    # When the resident tries to accept it themselves
    answer = resident.send(f"受理 {number}")

    # Then they are told they may not, and the refusal is in the history
    assert len(answer) == 1 and "没有权限" in answer[0].text
    assert desk.request(number).state == "new"
    assert [(e.action, e.outcome) for e in desk.events(number)] == [
        ("submit", "ok"),
        ("accept", "refused"),
    ]


# --- invitations -------------------------------------------------------------------------


def invite(world: World, role: str, department: str | None = None) -> str:
    with session_scope(world.engine) as session:
        return service.create_invitation(
            session=session, role=role, department_name=department, now=NOW
        )


def test_binding_a_department_invitation_gives_the_role_and_department(
    cast: Cast,
    world: World,
) -> None:
    # Given an invitation for the lamp department and a new chat identity
    code = invite(world, "department", "城管执法")
    person = world.person(name="新同事")

    # When they bind it (in any letter case)
    bound = world.do(service.bind, person, f"  {code.lower()} ")

    # Then they are that department's staff (an account of their own), and the code is spent
    assert (bound.role, bound.department, bound.account) == ("department", "城管执法", None)
    with Session(world.engine) as session:
        bound = session.get(Person, person.id)
        assert bound is not None
        assert (bound.role, bound.department_id) == ("department", cast.lamps.id)
        [invitation] = session.exec(select(Invitation)).all()
        assert (invitation.used_at, invitation.used_by_id) == (NOW, person.id)
    event = world.events()[-1]
    assert (event.request_id, event.actor_id, event.action, event.note) == (
        None,
        person.id,
        "bind",
        "department",
    )


def test_binding_a_committee_invitation_gives_the_role(world: World) -> None:
    for role in ("worker", "leader"):
        person = world.person()
        assert world.do(service.bind, person, invite(world, role)) == service.Bound(role)
        with Session(world.engine) as session:
            bound = session.get(Person, person.id)
            assert bound is not None and (bound.role, bound.department_id) == (role, None)


def test_a_used_invitation_is_refused(world: World) -> None:
    code = invite(world, "worker")
    world.do(service.bind, world.person(), code)
    latecomer = world.person()

    error = world.refused(service.bind, latecomer, code)

    assert isinstance(error, InvitationInvalid) and error.reason == "used"
    with Session(world.engine) as session:
        person = session.get(Person, latecomer.id)
        assert person is not None and person.role == "requester"


def test_an_expired_invitation_is_refused(world: World) -> None:
    # Given an invitation whose expiry has been moved to the past
    code = invite(world, "worker")
    expired_at = NOW - timedelta(seconds=1)
    with session_scope(world.engine) as session:
        invitation = session.exec(select(Invitation)).one()
        invitation.expires_at = expired_at
        session.add(invitation)
    person = world.person()

    # When it is bound now, or at the very moment it expired
    for now in (NOW, expired_at):
        error = world.refused(service.bind, person, code, now=now)

        # Then it is expired
        assert isinstance(error, InvitationInvalid) and error.reason == "expired"

    # And it stays unused, and the person keeps their role
    with Session(world.engine) as session:
        assert session.exec(select(Invitation)).one().used_at is None
        refreshed = session.get(Person, person.id)
        assert refreshed is not None and refreshed.role == "requester"


def test_an_invitation_is_valid_until_it_expires(world: World) -> None:
    code = invite(world, "worker")  # 7 days from NOW
    person = world.person()
    bound = world.do(service.bind, person, code, now=NOW + timedelta(days=7, seconds=-1))
    assert bound.role == "worker"


def test_an_unknown_invitation_is_refused(world: World) -> None:
    person = world.person()
    error = world.refused(service.bind, person, "DEADBEEF")
    assert isinstance(error, InvitationInvalid) and error.reason == "unknown"
    assert world.count(Event) == 0


def test_invitations_are_only_for_staff_roles_and_active_departments(world: World) -> None:
    world.department("已撤并部门", active=False)
    with session_scope(world.engine) as session:
        with pytest.raises(InvalidInput):
            service.create_invitation(
                session=session, role="requester", department_name=None, now=NOW
            )
        for name in ("不存在的部门", "已撤并部门", None):
            with pytest.raises(UnknownDepartment):
                service.create_invitation(
                    session=session, role="department", department_name=name, now=NOW
                )
    assert world.count(Invitation) == 0


# --- viewing -----------------------------------------------------------------------------


def view(world: World, actor: Person, number: str) -> tuple[Request, list[Event]]:
    with session_scope(world.engine) as session:
        me = session.get(Person, actor.id)
        assert me is not None
        request, events = service.view(world.tx(session), me, number)
        return request, list(events)


def test_a_requester_sees_their_own_request_and_its_history(cast: Cast, world: World) -> None:
    number = cast.bring(State.HANDLING)
    request, events = view(world, cast.requester, number.lower())
    assert request.number == number
    assert [e.action for e in events] == ["submit", "accept"]


def test_another_requesters_request_looks_unknown(cast: Cast, world: World) -> None:
    number = cast.submit()
    with session_scope(world.engine) as session:
        me = session.get(Person, cast.neighbour.id)
        assert me is not None
        with pytest.raises(UnknownRequest) as caught:
            service.view(world.tx(session), me, number)
    assert caught.value.number == number


def test_the_committee_and_the_holding_department_see_a_request_others_do_not(
    cast: Cast,
    world: World,
) -> None:
    number = cast.bring(State.FORWARDED)
    for actor in (cast.worker, cast.leader, cast.staff):
        assert view(world, actor, number)[0].number == number
    with pytest.raises(UnknownRequest):
        view(world, cast.market_staff, number)


def test_a_department_no_longer_sees_a_request_it_returned(cast: Cast, world: World) -> None:
    number = cast.bring(State.FORWARDED)
    world.do(service.return_, cast.staff, number, "不属于本部门")
    with pytest.raises(UnknownRequest):
        view(world, cast.staff, number)


# --- to-do lists -------------------------------------------------------------------------


def test_todo_lists_what_waits_for_the_committee_and_for_a_department(
    cast: Cast,
    world: World,
) -> None:
    new = cast.submit()
    handled_by_worker = cast.bring(State.HANDLING)
    forwarded = cast.bring(State.FORWARDED)
    in_review = cast.bring(State.REVIEW)
    cast.bring(State.CLOSED)

    with session_scope(world.engine) as session:
        tx = world.tx(session)

        def numbers(actor: Person) -> list[str]:
            me = session.get(Person, actor.id)
            assert me is not None
            return [r.number for section in service.todo(tx, me) for r in section.items]

        assert numbers(cast.worker) == [new, in_review, handled_by_worker]
        assert numbers(cast.worker2) == [new, in_review]
        assert numbers(cast.staff) == [forwarded]
        assert numbers(cast.market_staff) == []
        with pytest.raises(NotPermitted):
            numbers(cast.requester)


def test_the_to_do_list_pages_every_section_with_its_true_total_most_urgent_first(
    cast: Cast,
    world: World,
) -> None:
    # Given 12 new requests, each submitted a minute before the previous one (so the newest
    # is the most urgent), one in review and one the worker handles
    new = [cast.submit(now=NOW - timedelta(minutes=index)) for index in range(12)]
    in_review = cast.bring(State.REVIEW)
    mine = cast.bring(State.HANDLING)
    # And department staff with one forwarded request and one they handle
    forwarded = cast.bring(State.FORWARDED)
    taken = cast.bring(State.DEPT_HANDLING)

    with session_scope(world.engine) as session:
        tx = world.tx(session)

        def page(actor: Person, number: int) -> list[tuple[str, int, list[str]]]:
            me = session.get(Person, actor.id)
            assert me is not None
            return [
                (section.name, section.total, [r.number for r in section.items])
                for section in service.todo(tx, me, page=number, per_page=10)
            ]

        # When the worker reads page 1 and page 2
        first, second = page(cast.worker, 1), page(cast.worker, 2)
        # Then every section has its true total on both pages, the nearest deadline first
        assert first == [("new", 12, new[::-1][:10]), ("review", 1, []), ("mine", 1, [])]
        assert second == [
            ("new", 12, new[::-1][10:]),
            ("review", 1, [in_review]),
            ("mine", 1, [mine]),
        ]
        # And a page past the end is empty but still counts everything
        assert page(cast.worker, 3) == [("new", 12, []), ("review", 1, []), ("mine", 1, [])]
        # And the department's sections are its own
        assert page(cast.staff, 1) == [("forwarded", 1, [forwarded]), ("dept_handling", 1, [taken])]


# --- figures for the statistics ------------------------------------------------------------


def test_the_first_action_and_the_first_reply_fix_their_figures_once(
    cast: Cast,
    world: World,
) -> None:
    # Given a request received on Monday 10:00 (due in 8 working hours: Monday 18:00)
    number = cast.submit()
    hour = timedelta(hours=1)

    # When a worker first acts on Tuesday 12:00, and replies at 13:00
    world.do(service.accept, cast.worker, number, now=NOW + 26 * hour)
    world.do(service.complete, cast.worker, number, "已修好", now=NOW + 26 * hour)
    world.do(service.approve, cast.worker2, number, now=NOW + 27 * hour)

    # Then the figures are late, 26 h (11 working h) and 27 h (12 working h)
    request = world.request(number)
    assert request.responded_in_time is False
    assert (request.response_seconds, request.response_work_seconds) == (26 * 3600, 11 * 3600)
    assert (request.reply_seconds, request.reply_work_seconds) == (27 * 3600, 12 * 3600)
    assert request.first_replied_at == NOW + 27 * hour

    # When the requester reopens it and it is answered again a day later
    world.do(service.rate, cast.requester, number, False, "不满意", now=NOW + 28 * hour)
    world.do(service.accept, cast.worker, number, now=NOW + 50 * hour)
    world.do(service.complete, cast.worker, number, "重新修好", now=NOW + 50 * hour)
    world.do(service.approve, cast.worker, number, now=NOW + 51 * hour)

    # Then the first action's and the first reply's figures stay as they were
    again = world.request(number)
    assert (
        again.responded_in_time,
        again.response_seconds,
        again.reply_seconds,
        again.first_replied_at,
    ) == (False, 26 * 3600, 27 * 3600, NOW + 27 * hour)
    assert again.replied_at == NOW + 51 * hour


def test_a_first_action_within_the_deadline_is_in_time(cast: Cast, world: World) -> None:
    number = cast.submit()

    world.do(service.reject, cast.worker, number, "不属于受理范围", now=NOW + timedelta(minutes=30))

    request = world.request(number)
    assert (request.responded_in_time, request.response_seconds, request.response_work_seconds) == (
        True,
        1800,
        1800,
    )


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("路灯不亮", 30, "路灯不亮"),
        ("  小区东门\n路灯  不亮 ", 30, "小区东门 路灯 不亮"),
        ("一二三四五六", 6, "一二三四五六"),
        ("一二三四五六七", 6, "一二三四五…"),
        ("", 30, ""),
    ],
)
def test_a_summary_is_one_line_of_at_most_the_limit(text: str, limit: int, expected: str) -> None:
    # When a text is summarised
    result = service.summary(text, limit)

    # Then it reads on one line and never exceeds the limit
    assert result == expected
    assert len(result) <= limit


# --- centres: where a request is held, who sees and acts on it ----------------------------


def _card_keys(world: World, tree: Tree) -> dict[str, list[str]]:
    """Catalogue keys the last command queued, by the tree's attribute name of the recipient."""
    names = {
        person.id: name
        for name in (
            "d_worker",
            "d_leader",
            "c1_worker",
            "c1_worker2",
            "c1_leader",
            "c1_group",
            "c2_worker",
            "b_worker",
            "d_staff",
            "c1_staff",
            "c1_resident",
            "c2_resident",
        )
        for person in [getattr(tree, name)]
    }
    keys: dict[str, list[str]] = {}
    for person_id, key, _ in world.queued:
        keys.setdefault(names.get(person_id, str(person_id)), []).append(key)
    return keys


def _refused_events(world: World, number: str) -> list[Event]:
    return [event for event in world.events(number) if event.outcome == "refused"]


def test_a_request_is_held_by_the_residents_centre_and_only_its_committee_gets_the_card(
    tree: Tree, world: World
) -> None:
    # When a resident of C1 writes in
    number = tree.submit()

    # Then C1 holds it, and only C1's workers and committee group get the card
    assert tree.held_by(number) == tree.c1.id
    keys = _card_keys(world, tree)
    assert keys.pop("c1_resident") == ["requester.receipt"]
    assert keys == {
        "c1_worker": ["card.new"],
        "c1_worker2": ["card.new"],
        "c1_group": ["card.new"],
    }


def test_a_walk_in_is_held_by_the_registering_workers_centre(tree: Tree, world: World) -> None:
    # Given a walk-in of no centre, registered by a worker of C2
    walk_in = world.person(channel=service.DESK_CHANNEL, name="王大爷")

    # When the worker registers the request
    request = world.do(
        service.submit,
        walk_in,
        "楼道灯坏了",
        contact_name="王大爷",
        contact_phone="13800000000",
        registered_by=tree.c2_worker,
    )

    # Then C2 holds it, and C2's worker (the only one there) got the card
    assert request.centre_id == tree.c2.id
    assert _card_keys(world, tree)["c2_worker"] == ["desk.relay", "card.new"]


def test_a_resident_of_no_centre_files_with_the_default_centre(tree: Tree, world: World) -> None:
    # Given a resident who came through no centre
    resident = world.person(name="过客")

    # When they write in
    request = world.do(service.submit, resident, "路灯坏了")

    # Then the default centre holds it, and no worker of the tree hears of it
    with Session(world.engine) as session:
        default = queries.default_centre(session=session)
    assert request.centre_id == default.id
    assert set(_card_keys(world, tree)) == {str(resident.id)}


OTHERS = ["c2_worker", "b_worker", "d_worker", "c1_staff", "c2_resident"]


@pytest.mark.parametrize("who", OTHERS)
def test_nobody_outside_the_centre_may_act_on_its_request_or_learn_that_it_exists(
    tree: Tree, world: World, who: str
) -> None:
    # Given a request held by C1, and someone of a sibling centre, the district (a worker,
    # not a leader), C1's own department not forwarded to, or a resident of C2
    number = tree.submit()
    actor: Person = getattr(tree, who)
    before = world.request(number)
    outbox = len(world.outbox())

    # When they try the committee's actions and to see it
    for command, args in [
        (service.accept, ()),
        (service.reject, ("不属于受理范围",)),
        (service.forward, ("城管执法",)),
        (service.refer, ("超出职权",)),
        (service.assign, ("C2",)),
    ]:
        error = world.refused(command, actor, number, *args)
        # Then each is refused; staff of the committee are told nothing more than "no such
        # number", the others as for any request not theirs
        if who in ("c2_worker", "b_worker", "d_worker"):
            assert isinstance(error, UnknownRequest)
        else:
            assert isinstance(error, NotPermitted)
    assert isinstance(world.refused(service.view, actor, number), UnknownRequest)

    # And the request, its centre and the outbox are as they were; each refusal is on record
    after = world.request(number)
    assert (after.state, after.centre_id, after.handler_id) == (
        before.state,
        before.centre_id,
        before.handler_id,
    )
    assert len(world.outbox()) == outbox
    assert len(_refused_events(world, number)) == 5


def test_a_worker_of_a_community_cannot_act_on_or_see_a_district_request(
    tree: Tree, world: World
) -> None:
    # Given a request sent up to the district
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出社区职权")

    # When C1's worker and C1's leader (below the district) try it
    for person in (tree.c1_worker, tree.c1_leader):
        # Then it is unknown to them
        assert isinstance(world.refused(service.accept, person, number), UnknownRequest)
        assert isinstance(world.refused(service.view, person, number), UnknownRequest)
    assert world.request(number).centre_id == tree.district.id


def test_a_district_leader_sees_a_community_request_but_does_not_act_on_it(
    tree: Tree, world: World
) -> None:
    # Given a request held by C1
    number = tree.submit()

    # When the district's leader looks at it and tries to accept it
    request, events = world.do(service.view, tree.d_leader, number)
    error = world.refused(service.accept, tree.d_leader, number)

    # Then they see it and its history, but acting is C1's: "not yours", nothing moves
    assert request.number == number
    assert [event.action for event in events] == ["submit"]
    assert isinstance(error, NotPermitted) and error.reason == "not_yours"
    assert world.request(number).state == State.NEW


@pytest.mark.parametrize("who", ["c1_resident", "c1_worker", "c1_leader", "d_leader"])
def test_the_requester_the_centre_s_committee_and_leaders_above_see_a_request(
    tree: Tree, world: World, who: str
) -> None:
    number = tree.submit()

    request, _ = world.do(service.view, getattr(tree, who), number)

    assert request.number == number


def test_the_department_of_the_district_serves_a_community_s_request(
    tree: Tree, world: World
) -> None:
    # Given a request of C1 forwarded by C1's worker to the district's 城管执法
    number = tree.submit()
    world.do(service.forward, tree.c1_worker, number, "城管执法")
    assert world.request(number).department_id == tree.d_department.id

    # When the district's staff see it and complete it
    world.do(service.view, tree.d_staff, number)
    world.do(service.complete, tree.d_staff, number, "已修复")

    # Then it waits for C1's review: C1's workers get the card, nobody of the district does
    assert world.request(number).state == State.REVIEW
    keys = _card_keys(world, tree)
    assert {name for name, got in keys.items() if "card.review" in got} == {
        "c1_worker",
        "c1_worker2",
        "c1_group",
    }


def test_a_department_is_offered_where_its_centre_or_one_above_holds_the_request(
    tree: Tree, world: World
) -> None:
    # Given requests of C1 and of C2
    c1_request = tree.submit()
    c2_request = tree.submit(tree.c2_resident)

    # Then C1 may forward to its own 社区网格 and to the district's 城管执法; C2 only to the latter
    world.do(service.forward, tree.c1_worker, c1_request, "社区网格")
    assert world.request(c1_request).department_id == tree.c1_department.id
    error = world.refused(service.forward, tree.c2_worker, c2_request, "社区网格")
    assert isinstance(error, UnknownDepartment)
    assert error.choices == ["城管执法"]
    assert world.request(c2_request).state == State.NEW


def test_of_two_departments_of_one_name_the_nearest_is_chosen(tree: Tree, world: World) -> None:
    # Given C1 has a 城管执法 of its own as well as the district's
    with session_scope(world.engine) as session:
        own = Department(name="城管执法", centre_id=tree.c1.id)
        session.add(own)
        session.flush()
    number = tree.submit()

    # When C1's worker forwards to 城管执法
    world.do(service.forward, tree.c1_worker, number, "城管执法")

    # Then C1's own gets it
    assert world.request(number).department_id == own.id


def test_a_category_of_no_centre_forwards_to_the_namesake_department_of_the_requests_branch(
    tree: Tree, world: World
) -> None:
    # Given a category of no centre routed to the default centre's 城管执法 (as `redesk demo`
    # makes it), which serves only the default centre
    elsewhere = world.department("城管执法")
    elsewhere_staff = world.person("department", name="默认城管", department=elsewhere)
    world.category("市容环境", ["垃圾"], department=elsewhere)

    # When a resident of C2 reports rubbish
    number = tree.submit(tree.c2_resident, "小区门口的垃圾好几天没人清理")

    # Then it goes to the district's 城管执法 (the nearest of that name serving C2), and only
    # the district's staff and C2's worker hear of it
    request = world.request(number)
    assert (request.state, request.department_id) == (State.FORWARDED, tree.d_department.id)
    assert world.keys_for(tree.d_staff) == ["card.forwarded"]
    assert world.keys_for(tree.c2_worker) == ["card.auto_forwarded"]
    assert world.keys_for(elsewhere_staff) == []


def test_a_category_routed_to_a_department_outside_the_requests_branch_leaves_it_to_the_committee(
    tree: Tree, world: World
) -> None:
    # Given a category of no centre routed to the default centre's 市场监管 (no namesake in
    # the district)
    market = world.department("市场监管")
    market_staff = world.person("department", name="市场监管小黄", department=market)
    world.category("消费维权", ["假货"], department=market)

    # When a resident of C2 reports fake goods
    number = tree.submit(tree.c2_resident, "商场里有店铺卖假货")

    # Then it waits for C2's committee; the default centre's department gets nothing
    request = world.request(number)
    assert (request.state, request.department_id) == (State.NEW, None)
    assert world.keys_for(tree.c2_worker) == ["card.new"]
    assert world.keys_for(market_staff) == []


def test_a_workers_to_do_list_holds_only_its_centre_s_requests(tree: Tree, world: World) -> None:
    # Given a request in C1 and one in C2
    c1_request = tree.submit()
    tree.submit(tree.c2_resident)

    # When C1's worker and the district's leader ask for their lists
    c1_sections = world.do(service.todo, tree.c1_worker)
    d_sections = world.do(service.todo, tree.d_leader)

    # Then C1's worker sees C1's request only, the district (holding none) nothing
    assert [r.number for section in c1_sections for r in section.items] == [c1_request]
    assert sum(section.total for section in d_sections) == 0


def test_the_nearest_category_of_a_name_applies(tree: Tree, world: World) -> None:
    # Given C1 has its own 市政设施 (2 days) besides the one of no centre (5 days)
    with session_scope(world.engine) as session:
        session.add(
            Category(
                name="市政设施",
                keywords=["路灯"],
                centre_id=tree.c1.id,
                response_hours=4,
                resolution_days=2,
            )
        )

    # When residents of C1 and C2 report a lamp
    c1 = world.request(tree.submit())
    c2 = world.request(tree.submit(tree.c2_resident))

    # Then C1's request takes C1's category, C2's the general one
    with Session(world.engine) as session:
        c1_category = session.get(Category, c1.category_id)
        c2_category = session.get(Category, c2.category_id)
    assert c1_category is not None and c1_category.centre_id == tree.c1.id
    assert c2_category is not None and c2_category.centre_id is None
    assert c1.resolution_due_at < c2.resolution_due_at


def test_a_centre_s_days_off_are_inherited_by_the_centres_below(tree: Tree, world: World) -> None:
    # Given the district takes Tuesday 2026-03-03 off (a working day nationally)
    with session_scope(world.engine) as session:
        district = session.get(Centre, tree.district.id)
        assert district is not None
        district.days_off = ["2026-03-03"]
        session.add(district)
    # And a resident of no centre (the default centre's calendar)
    elsewhere = world.person(name="过客")

    # When residents of C2 and elsewhere report a lamp on Monday (5 working days)
    c2 = world.request(tree.submit(tree.c2_resident))
    other = world.request(world.do(service.submit, elsewhere, "路灯坏了").number)

    # Then C2's deadline is one working day later: the district's day off counts for it
    assert other.resolution_due_at == local(2026, 3, 9, 18)
    assert c2.resolution_due_at == local(2026, 3, 10, 18)


# --- 上报 and 下派 --------------------------------------------------------------------------


def test_refer_sends_a_request_up_to_the_parent_centre_whose_workers_get_it(
    tree: Tree, world: World
) -> None:
    # Given a request C1's worker is handling
    number = tree.submit()
    world.do(service.accept, tree.c1_worker, number)
    before = world.request(number)

    # When the worker sends it up
    later = NOW + timedelta(hours=1)
    world.do(service.refer, tree.c1_worker, number, "涉及多个社区，超出社区职权", now=later)

    # Then the district holds it, new and handled by nobody; its deadlines are kept
    after = world.request(number)
    assert (after.centre_id, after.state, after.handler_id) == (
        tree.district.id,
        State.NEW,
        None,
    )
    assert after.response_due_at == before.response_due_at
    assert after.resolution_due_at == before.resolution_due_at
    assert after.tick_at == later
    # And the district's worker gets the card with who, from where and why; C1's other
    # worker hears it went up; the requester is told
    keys = _card_keys(world, tree)
    assert keys["d_worker"] == ["card.referred"]
    assert keys["c1_worker2"] == ["worker.acted"]
    assert keys["c1_resident"] == ["requester.referred"]
    assert "c2_worker" not in keys and "b_worker" not in keys
    card = next(p for i, k, p in world.queued if i == tree.d_worker.id)
    assert (card["centre"], card["by"], card["reason"]) == (
        "春熙社区",
        "春熙王书记",
        "涉及多个社区，超出社区职权",
    )
    assert (card["can_refer"], card["can_assign"]) == (False, True)
    # And the event names both centres
    event = world.events(number)[-1]
    assert (event.action, event.from_state, event.to_state) == ("refer", "handling", "new")
    assert event.note is not None and "春熙社区（C1）" in event.note and "（D）" in event.note


def test_the_district_acts_on_a_referred_request_and_the_community_no_longer_does(
    tree: Tree, world: World
) -> None:
    # Given a request sent up from C1
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出职权")

    # When C1's worker tries to accept it, and the district's worker does
    error = world.refused(service.accept, tree.c1_worker, number)
    world.do(service.accept, tree.d_worker, number)

    # Then the first is "no such number", the second holds it
    assert isinstance(error, UnknownRequest)
    assert world.request(number).handler_id == tree.d_worker.id


def test_refer_from_a_centre_with_nothing_above_is_refused_and_changes_nothing(
    tree: Tree, world: World
) -> None:
    # Given a request the district holds (its top centre)
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出职权")
    outbox = len(world.outbox())

    # When the district's worker tries to send it further up
    error = world.refused(service.refer, tree.d_worker, number, "再上报")

    # Then it is refused as "no parent", and nothing changed
    assert isinstance(error, InvalidInput) and error.what == "no_parent"
    assert world.request(number).centre_id == tree.district.id
    assert len(world.outbox()) == outbox


def test_refer_without_a_reason_is_refused(tree: Tree, world: World) -> None:
    number = tree.submit()

    error = world.refused(service.refer, tree.c1_worker, number, "  ")

    assert isinstance(error, InvalidInput) and error.what == "reason_required"
    assert world.request(number).centre_id == tree.c1.id


def test_refer_is_refused_once_a_department_has_the_request(tree: Tree, world: World) -> None:
    number = tree.submit()
    world.do(service.forward, tree.c1_worker, number, "城管执法")

    error = world.refused(service.refer, tree.c1_worker, number, "超出职权")

    assert isinstance(error, TransitionNotAllowed)
    assert world.request(number).centre_id == tree.c1.id


def test_assign_sends_a_request_down_to_a_child_whose_workers_get_it(
    tree: Tree, world: World
) -> None:
    # Given a request the district holds
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出职权")

    # When the district's worker assigns it to C2, by its code in any case
    world.do(service.assign, tree.d_worker, number, "c2")

    # Then C2 holds it as new; C2's worker gets the card, the requester is told
    after = world.request(number)
    assert (after.centre_id, after.state) == (tree.c2.id, State.NEW)
    keys = _card_keys(world, tree)
    assert keys["c2_worker"] == ["card.assigned"]
    assert keys["c1_resident"] == ["requester.assigned"]
    assert set(keys) == {"c2_worker", "c1_resident"}
    event = world.events(number)[-1]
    assert event.action == "assign" and event.note is not None and "东风社区（C2）" in event.note


def test_assign_takes_a_child_centre_by_its_exact_name(tree: Tree, world: World) -> None:
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出职权")

    world.do(service.assign, tree.d_worker, number, "春熙路商圈")

    assert world.request(number).centre_id == tree.business.id


@pytest.mark.parametrize("typed", ["D", "不存在", "", "SQ"])
def test_assign_to_anything_but_an_active_child_is_refused_with_the_choices(
    tree: Tree, world: World, typed: str
) -> None:
    # Given a request the district holds
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出职权")
    outbox = len(world.outbox())

    # When the district's worker names itself, nothing, or no centre
    error = world.refused(service.assign, tree.d_worker, number, typed)

    # Then it is refused, naming the children, and nothing changed
    assert isinstance(error, UnknownCentre)
    assert error.typed == typed
    assert error.choices == ["春熙社区", "东风社区", "春熙路商圈"]
    assert world.request(number).centre_id == tree.district.id
    assert len(world.outbox()) == outbox


def test_assign_skips_an_inactive_child_and_a_community_has_no_child_at_all(
    tree: Tree, world: World
) -> None:
    # Given the 商圈 is deactivated, and a request the district holds and one C1 holds
    with session_scope(world.engine) as session:
        business = session.get(Centre, tree.business.id)
        assert business is not None
        business.active = False
        session.add(business)
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出职权")
    c1_request = tree.submit()

    # When the district assigns to the 商圈, and C1 to anything
    inactive = world.refused(service.assign, tree.d_worker, number, "B")
    none = world.refused(service.assign, tree.c1_worker, c1_request, "C2")

    # Then both are refused: the district's choices leave out the 商圈, C1 has none
    assert isinstance(inactive, UnknownCentre) and inactive.choices == ["春熙社区", "东风社区"]
    assert isinstance(none, UnknownCentre) and none.choices == []


def test_a_referral_is_not_the_first_action_the_response_figures_wait_for(
    tree: Tree, world: World
) -> None:
    # Given a request sent up at once by C1
    number = tree.submit()
    world.do(service.refer, tree.c1_worker, number, "超出职权", now=NOW + timedelta(minutes=5))
    assert world.request(number).first_action_at is None

    # When the district accepts it an hour later
    world.do(service.accept, tree.d_worker, number, now=NOW + timedelta(hours=1))

    # Then that is the first action, in time against the deadline the request came with
    request = world.request(number)
    assert request.first_action_at == NOW + timedelta(hours=1)
    assert (request.responded_in_time, request.response_seconds) == (True, 3600)


def test_what_a_revoked_worker_held_goes_back_to_their_own_centre_s_workers(
    tree: Tree, world: World
) -> None:
    # Given C1's worker handling a request of C1, and a walk-in they registered
    number = tree.submit()
    world.do(service.accept, tree.c1_worker, number)
    walk_in = world.person(channel=service.DESK_CHANNEL, name="王大爷")
    desk_request = world.do(
        service.submit, walk_in, "楼道灯坏了", contact_name="王大爷", registered_by=tree.c1_worker
    )

    # When their role is revoked (the caller makes them a requester first)
    def revoke(tx: service.Tx, person: Person) -> service.Released:
        person.role = "requester"
        tx.session.add(person)
        tx.session.flush()
        return service.release_holdings(tx, person)

    released = world.do(revoke, tree.c1_worker)

    # Then the request is new again for C1, and only C1's other worker and group are told
    assert released.released == [number] and released.walk_ins == [desk_request.number]
    keys = _card_keys(world, tree)
    assert set(keys) == {"c1_worker2", "c1_group"}
    assert keys["c1_worker2"] == ["card.released", "committee.revoked"]

    # And a notice to the walk-in is relayed to C1's remaining worker, nobody elsewhere
    world.do(service.accept, tree.c1_worker2, desk_request.number)
    relays = {name for name, got in _card_keys(world, tree).items() if "desk.relay" in got}
    assert relays == {"c1_worker2"}
