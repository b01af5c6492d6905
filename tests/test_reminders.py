"""Reminders, escalation, the daily digest and auto-close (workflow/reminders.py) on a
controllable clock (time-machine), across the 2025 National Day holiday and its make-up
working days, on SQLite and PostgreSQL.

2025: 10-01 .. 10-08 are days off; Sunday 09-28 and Saturday 10-11 are working days.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlmodel import Session, select

from bot import dispatch
from bot.runtime import Runtime
from storage.models import Event, OutboxMessage, Person, Reminder
from tests.utils.centres import Tree
from tests.utils.world import Cast, World
from workflow import deadlines, service
from workflow.cards import REFRESH_KEY
from workflow.deadlines import LOCAL_TZ
from workflow.machine import State
from workflow.reminders import Policy

#: A request without keywords: the fallback category, 8 working hours to respond.
ASK = "想咨询流动党员组织关系转接"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A moment on the Asia/Shanghai wall clock, as UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_TZ).astimezone(UTC)


@pytest.fixture
def tick(runtime: Runtime) -> Iterator[Any]:
    """tick(at): one tick of the scheduler's work at `at`; the keys it queued, by person id."""

    def run(at: datetime, digest: bool = False) -> dict[int, list[str]]:
        """The keys queued by person; the daily digest left out unless `digest`."""
        with time_machine.travel(at, tick=False):
            written = dispatch.tick(runtime)
        with Session(runtime.engine) as session:
            rows = [session.get(OutboxMessage, outbox_id) for outbox_id in written]
        queued: dict[int, list[str]] = {}
        for row in rows:
            assert row is not None
            if row.key != "digest" or digest:
                queued.setdefault(row.person_id, []).append(row.key)
        return queued

    yield run
    deadlines.configure()


def keys(queued: dict[int, list[str]], person: Person) -> list[str]:
    assert person.id is not None
    return queued.get(person.id, [])


def all_keys(queued: dict[int, list[str]]) -> set[str]:
    return {key for values in queued.values() for key in values}


def events(world: World, number: str, action: str) -> list[Event]:
    return [event for event in world.events(number) if event.action == action]


# --- new requests nobody acts on ----------------------------------------------------------------


def test_a_new_request_nobody_acts_on_pings_the_workers_after_30_working_minutes(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given a request received on Tuesday 2025-09-30 at 17:30 (30 working minutes: 18:00)
    number = cast.submit(ASK, now=local(2025, 9, 30, 17, 30))

    # When the ticks run before and after
    before = tick(local(2025, 9, 30, 17, 55))
    after = tick(local(2025, 9, 30, 18, 5))
    again = tick(local(2025, 9, 30, 18, 10))

    # Then the workers were pinged once, at 18:00, and nobody else
    assert before == {}
    assert keys(after, cast.worker) == keys(after, cast.worker2) == ["remind.unacted"]
    assert all_keys(after) == {"remind.unacted"}
    assert again == {}
    assert world.request(number).state == "new"


def test_the_response_deadline_across_national_day_reminds_then_escalates(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given a request on 2025-09-30 17:30 with 8 working hours to respond: 0.5 h that day,
    # then 7.5 h on 10-09 (10-01 .. 10-08 are days off): due 10-09 16:30; 75 % (6 h): 14:30
    number = cast.submit(ASK, now=local(2025, 9, 30, 17, 30))
    request = world.request(number)
    assert request.response_due_at == local(2025, 10, 9, 16, 30)
    tick(local(2025, 9, 30, 18, 5))  # the 30-minute ping

    # When ticks run through the holiday and on 10-09
    holiday = [tick(local(2025, 10, day, 12)) for day in range(1, 9)]
    morning = tick(local(2025, 10, 9, 14, 25))
    soon = tick(local(2025, 10, 9, 14, 35))
    due = tick(local(2025, 10, 9, 16, 35))

    # Then nothing happens during the holiday; the 75 % reminder comes at 14:30 and the
    # deadline at 16:30, with 督办 to the leader and an escalate event
    assert holiday == [{}] * 8
    assert morning == {}
    assert keys(soon, cast.worker) == ["remind.response_soon"]
    assert keys(due, cast.worker) == ["remind.response_due"]
    assert keys(due, cast.leader) == ["escalate.overdue"]
    [escalated] = events(world, number, "escalate")
    assert escalated.actor_id is None and escalated.note is not None
    assert "响应时限" in escalated.note


def test_acting_in_time_stops_the_reminders(cast: Cast, world: World, tick: Any) -> None:
    number = cast.submit(now=local(2025, 9, 30, 10))
    world.do(service.accept, cast.worker, number, now=local(2025, 9, 30, 10, 10))

    assert tick(local(2025, 9, 30, 11)) == {}
    assert tick(local(2025, 9, 30, 17)) == {}


# --- resolution deadlines --------------------------------------------------------------------


def test_the_resolution_deadline_reminds_the_handler_then_escalates(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given a request accepted by a worker on Friday 2025-10-10 10:00, with one working day
    # to resolve: the next working day is the make-up Saturday 10-11, due at 18:00
    category = world.category("加急", ["加急"], resolution_days=1)
    assert category.id is not None
    number = cast.submit("加急：排水沟堵了", now=local(2025, 10, 10, 10))
    world.do(service.accept, cast.worker, number, now=local(2025, 10, 10, 10, 5))
    request = world.request(number)
    assert request.resolution_due_at == local(2025, 10, 11, 18)

    # When ticks run on Saturday (75 % of 17 working hours = 12.75 h: 8 h on Friday, then
    # Saturday 13:45)
    early = tick(local(2025, 10, 11, 13, 40))
    soon = tick(local(2025, 10, 11, 13, 50))
    due = tick(local(2025, 10, 11, 18, 1))

    # Then only the handling worker is reminded, and at the deadline the leader is told
    assert early == {}
    assert soon == {cast.worker.id: ["remind.resolution_soon"]}
    assert keys(due, cast.worker) == ["remind.resolution_due"]
    assert keys(due, cast.worker2) == []
    assert keys(due, cast.leader) == ["escalate.overdue"]
    assert len(events(world, number, "escalate")) == 1


def test_a_forwarded_request_reminds_the_departments_staff(
    cast: Cast, world: World, tick: Any
) -> None:
    number = cast.submit(now=local(2025, 9, 22, 10))
    world.do(service.forward, cast.worker, number, "城管执法", now=local(2025, 9, 22, 10, 5))
    due_at = world.request(number).resolution_due_at
    assert due_at is not None

    due = tick(due_at + timedelta(minutes=1))

    assert keys(due, cast.staff) == ["remind.resolution_due"]
    assert keys(due, cast.worker) == []
    assert keys(due, cast.leader) == ["escalate.overdue"]


def test_replied_requests_are_not_chased_for_their_deadline(
    cast: Cast, world: World, tick: Any
) -> None:
    number = cast.bring(State.REPLIED)
    due_at = world.request(number).resolution_due_at
    assert due_at is not None

    queued = tick(due_at + timedelta(hours=1))

    assert not {"remind.resolution_soon", "remind.resolution_due", "escalate.overdue"} & all_keys(
        queued
    )
    assert events(world, number, "escalate") == []


# --- auto-close ----------------------------------------------------------------------------------


def test_an_answer_nobody_rates_is_closed_after_seven_days(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given a request answered (回单)
    number = cast.bring(State.REPLIED)
    replied = world.request(number).replied_at
    assert replied is not None

    # When ticks run just before and after seven days
    before = tick(replied + timedelta(days=7) - timedelta(minutes=1))
    after = tick(replied + timedelta(days=7, minutes=1))

    # Then it is closed as 未评价 and the requester is told, once (besides the refreshes of
    # the messages about it, which nothing delivered here: tests/test_cards.py)
    assert before == {}
    assert [key for key in keys(after, cast.requester) if key != REFRESH_KEY] == [
        "requester.auto_closed"
    ]
    request = world.request(number)
    assert (request.state, request.solved, request.satisfaction) == ("closed", None, None)
    [closing] = events(world, number, "auto_close")
    assert (closing.from_state, closing.to_state, closing.note) == ("replied", "closed", "未评价")
    assert tick(replied + timedelta(days=8)) == {}


def test_a_rated_answer_is_not_auto_closed(cast: Cast, world: World, tick: Any) -> None:
    number = cast.bring(State.REPLIED)
    world.do(service.rate, cast.requester, number, True, "满意")

    assert tick(datetime.now(UTC) + timedelta(days=30)) == {}
    assert events(world, number, "auto_close") == []


# --- once, whatever runs -----------------------------------------------------------------------


def test_two_schedulers_ticking_at_once_send_each_reminder_once(
    cast: Cast, world: World, runtime: Runtime
) -> None:
    # Given three requests nobody acted on, 30 working minutes ago
    numbers = [cast.submit(now=local(2025, 9, 30, 10)) for _ in range(3)]

    # When two ticks run at the same moment in two threads, four times over
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with time_machine.travel(local(2025, 9, 30, 10, 45), tick=False):
                for _ in range(4):
                    barrier.wait()
                    dispatch.tick(runtime)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then each worker got one ping per request
    assert failures == []
    with Session(runtime.engine) as session:
        pings = session.exec(
            select(OutboxMessage).where(OutboxMessage.key == "remind.unacted")
        ).all()
        done = session.exec(select(Reminder)).all()
    assert len(pings) == 3 * len(service_committee(world, numbers[0]))
    assert sorted(r.kind for r in done) == ["digest", "unacted", "unacted", "unacted"]
    assert {ping.params["number"] for ping in pings} == set(numbers)


def service_committee(world: World, number: str) -> list[Person]:
    with Session(world.engine) as session:
        from workflow.service import Tx

        tx = Tx(session=session, now=datetime.now(UTC), source="count")
        return list(service.committee(tx, service.load(tx, number, lock=False)))


# --- the daily digest --------------------------------------------------------------------------


def test_the_digest_lists_the_right_numbers_once_on_working_days(
    cast: Cast, world: World, tick: Any, runtime: Runtime
) -> None:
    # Given, on Monday 2025-09-22: a new request, one due today, one overdue, one waiting for
    # review and one reopened
    day = (2025, 9, 22)
    fresh = cast.submit("新的诉求", now=local(*day, 8))
    review = cast.bring(State.REVIEW)
    reopened = cast.bring(State.REPLIED)
    world.do(service.rate, cast.requester, reopened, False, "不满意")
    with Session(runtime.engine) as session:
        from storage.models import Request

        for number, due in ((review, local(*day, 17)), (reopened, local(*day, 3))):
            row = session.exec(select(Request).where(Request.number == number)).one()
            row.resolution_due_at = due
            session.add(row)
        session.commit()

    # When ticks run before nine, at nine, later that day, and on the Sunday after
    early = tick(local(*day, 8, 55), digest=True)
    digest = tick(local(*day, 9, 1), digest=True)
    later = tick(local(*day, 15), digest=True)
    sunday = tick(local(2025, 9, 21, 10), digest=True)  # an ordinary Sunday: no digest

    # Then one digest went to each worker and the leader, at nine
    assert "digest" not in all_keys(early)
    assert keys(digest, cast.worker).count("digest") == 1
    assert keys(digest, cast.leader).count("digest") == 1
    assert keys(digest, cast.staff) == []
    assert "digest" not in all_keys(later) and "digest" not in all_keys(sunday)
    with Session(runtime.engine) as session:
        row = session.exec(
            select(OutboxMessage).where(
                OutboxMessage.key == "digest", OutboxMessage.person_id == cast.worker.id
            )
        ).one()
    sections = row.params["sections"]
    assert any(fresh in line for line in sections["new"])
    assert any(review in line for line in sections["due_today"])
    assert any(review in line for line in sections["review"])
    assert any(reopened in line for line in sections["overdue"])
    assert any(reopened in line for line in sections["reopened"])
    from bot.texts import render

    text = render("digest", row.params).text
    assert "今日到期（1）" in text and review in text


def test_local_days_off_and_make_up_days_from_the_settings(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given Monday 2025-09-22 declared a local day off, and Sunday 09-21 a working day
    deadlines.configure(
        days_off=frozenset({date(2025, 9, 22)}), workdays=frozenset({date(2025, 9, 21)})
    )

    # Then the digest comes on Sunday, not Monday
    assert "digest" in all_keys(tick(local(2025, 9, 21, 9, 30), digest=True))
    assert "digest" not in all_keys(tick(local(2025, 9, 22, 9, 30), digest=True))


def test_the_policy_knobs_are_read_from_the_settings(runtime: Runtime) -> None:
    assert runtime.policy == Policy(unacted_minutes=30, auto_close_days=7, digest_hour=9)


# --- centres: who hears what -------------------------------------------------------------------


def names_of(tree: Tree, queued: dict[int, list[str]], key: str) -> set[str]:
    """The tree's people (by attribute name) who were queued `key`."""
    return {
        name
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
        if key in keys(queued, getattr(tree, name))
    }


def test_reminders_go_to_the_workers_of_the_centre_and_overdue_to_leaders_up_the_tree(
    tree: Tree, tick: Any
) -> None:
    # Given a request of C1 on Monday 2026-03-02 10:00, 4 working hours to respond
    tree.submit(now=local(2026, 3, 2, 10))

    # When the ticks run after 30 minutes and after the response deadline
    unacted = tick(local(2026, 3, 2, 10, 35))
    due = tick(local(2026, 3, 2, 14, 5))

    # Then C1's workers and committee group are reminded, nobody of another centre
    c1_committee = {"c1_worker", "c1_worker2", "c1_group"}
    assert names_of(tree, unacted, "remind.unacted") == c1_committee
    assert names_of(tree, due, "remind.response_due") == c1_committee
    # And 督办 goes to the leaders of C1 and of the district above, and C1's group
    assert names_of(tree, due, "escalate.overdue") == {"c1_leader", "d_leader", "c1_group"}


def test_overdue_after_a_request_went_up_skips_the_community_it_came_from(
    tree: Tree, world: World, tick: Any
) -> None:
    # Given a request of C1 sent up to the district at once
    number = tree.submit(now=local(2026, 3, 2, 10))
    world.do(service.refer, tree.c1_worker, number, "超出职权", now=local(2026, 3, 2, 10, 5))

    # When its response deadline passes
    due = tick(local(2026, 3, 2, 14, 5))

    # Then the district's worker is reminded and its leader gets 督办; C1 hears nothing
    assert names_of(tree, due, "remind.response_due") == {"d_worker"}
    assert names_of(tree, due, "escalate.overdue") == {"d_leader"}


def test_the_digest_gives_a_worker_their_centre_and_a_leader_their_subtree_once(
    tree: Tree, tick: Any, runtime: Runtime
) -> None:
    # Given on Monday 2026-03-02 a request of C1 and one of C2
    c1 = tree.submit(now=local(2026, 3, 2, 8))
    c2 = tree.submit(tree.c2_resident, now=local(2026, 3, 2, 8, 5))

    # When the ticks run at nine and a little later
    queued = tick(local(2026, 3, 2, 9, 1), digest=True)
    again = tick(local(2026, 3, 2, 9, 30), digest=True)

    # Then every worker and leader got one digest, that day only once (one claim)
    readers = {"d_worker", "d_leader", "c1_worker", "c1_worker2", "c1_leader", "c2_worker"}
    assert names_of(tree, queued, "digest") == readers | {"b_worker"}
    assert "digest" not in all_keys(again)
    with Session(runtime.engine) as session:
        claims = session.exec(select(Reminder).where(Reminder.kind == "digest")).all()
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.key == "digest")).all()
    assert len(claims) == 1
    new_of = {row.person_id: " ".join(row.params["sections"]["new"]) for row in rows}
    # And each saw what their place covers: a worker their centre, a leader the subtree
    assert c1 in new_of[tree.c1_worker.id] and c2 not in new_of[tree.c1_worker.id]
    assert c2 in new_of[tree.c2_worker.id] and c1 not in new_of[tree.c2_worker.id]
    assert c1 in new_of[tree.c1_leader.id] and c2 not in new_of[tree.c1_leader.id]
    assert c1 in new_of[tree.d_leader.id] and c2 in new_of[tree.d_leader.id]
    assert new_of[tree.d_worker.id] == "" and new_of[tree.b_worker.id] == ""
