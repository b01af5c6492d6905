"""The tick reads only the requests whose `tick_at` has come (workflow/reminders.py), on SQLite
and PostgreSQL: a request far from any deadline is not read, each read sets `tick_at` to the
next instant something falls for it, and a change makes the tick look at it again.

tests/test_reminders.py checks that the reminders themselves fall at the same instants.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from admin_scripts import centres
from bot.runtime import Runtime
from storage import queries
from storage.db import session_scope
from storage.models import Request
from tests.utils.world import NOW, Cast, World
from workflow import reminders, service
from workflow.deadlines import LOCAL_TZ
from workflow.machine import TERMINAL, State
from workflow.reminders import Policy, TickResult

#: Monday 2026-03-02 10:00 Shanghai (NOW) + 30 working minutes.
UNACTED = NOW + timedelta(minutes=30)


@pytest.fixture
def tick(runtime: Runtime) -> Any:
    """tick(at): one tick at `at`, committed; what it did and read."""

    def run(at: datetime) -> TickResult:
        with session_scope(runtime.engine) as session:
            tx = runtime.tx(session, f"tick:{at.isoformat()}")
            return reminders.tick(dataclasses.replace(tx, now=at), Policy())

    return run


def did(result: TickResult) -> dict[str, int]:
    """What a tick did for requests (the daily digest left out)."""
    return {kind: count for kind, count in result.done.items() if kind != "digest"}


def tick_at(world: World, number: str) -> datetime | None:
    return world.request(number).tick_at


def test_a_request_far_from_any_deadline_is_not_read(cast: Cast, world: World, tick: Any) -> None:
    # Given a new request, read once by a tick
    number = cast.submit(now=NOW)
    first = tick(NOW + timedelta(minutes=1))

    # When ticks run before its first reminder (30 working minutes after intake)
    quiet = [tick(NOW + timedelta(minutes=minutes)) for minutes in (5, 10, 29)]

    # Then the first tick read it and put it off to that instant; the others read nothing
    assert first.read == 1 and did(first) == {}
    assert tick_at(world, number) == UNACTED
    assert [result.read for result in quiet] == [0, 0, 0]
    assert [did(result) for result in quiet] == [{}, {}, {}]


def test_each_read_puts_the_request_off_to_its_next_reminder(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given a new request of 市政设施 (4 working hours to respond: due 14:00; 75 %: 13:00)
    number = cast.submit(now=NOW)
    request = world.request(number)
    assert request.response_due_at == NOW + timedelta(hours=4)

    # When ticks run at intake, after the 30-minute ping, and after the 75 % reminder
    tick(NOW)
    after_ping = tick(UNACTED + timedelta(minutes=1))
    ping_next = tick_at(world, number)
    after_soon = tick(NOW + timedelta(hours=3, minutes=1))
    soon_next = tick_at(world, number)

    # Then each read did what fell and set tick_at to the next instant
    assert did(after_ping) == {"unacted": 1} and after_ping.read == 1
    assert ping_next == NOW + timedelta(hours=3)
    assert did(after_soon) == {"response_soon": 1}
    assert soon_next == NOW + timedelta(hours=4)


def test_many_open_requests_with_nothing_due_cost_a_tick_nothing(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given twelve open requests, each read once
    numbers = [cast.submit(now=NOW) for _ in range(12)]
    numbers.append(cast.bring(State.HANDLING))
    first = tick(NOW + timedelta(minutes=1))

    # When a tick runs with nothing due
    quiet = tick(NOW + timedelta(minutes=2))

    # Then it read none of them, and each waits for its own next instant
    assert first.read == 13
    assert quiet.read == 0
    assert all(tick_at(world, number) is not None for number in numbers)
    assert min(tick_at(world, number) or NOW for number in numbers) > NOW + timedelta(minutes=2)


def test_a_forward_makes_the_tick_look_again(cast: Cast, world: World, tick: Any) -> None:
    # Given a request accepted and put off to its resolution reminder
    number = cast.submit(now=NOW)
    world.do(service.accept, cast.worker, number, now=NOW + timedelta(minutes=5))
    tick(NOW + timedelta(minutes=6))
    put_off = tick_at(world, number)
    assert put_off is not None and put_off > NOW + timedelta(days=1)

    # When it is forwarded to a department
    forwarded = NOW + timedelta(minutes=10)
    world.do(service.forward, cast.worker, number, "城管执法", now=forwarded)
    changed = tick_at(world, number)
    again = tick(forwarded + timedelta(minutes=1))

    # Then the change brought tick_at to its time and the next tick read it
    assert changed == forwarded
    assert again.read == 1
    assert tick_at(world, number) == reminder_instant(world, number)


def reminder_instant(world: World, number: str) -> datetime | None:
    """The next instant of `number`'s reminders as reminders computes it."""
    with Session(world.engine) as session:
        tx = world.tx(session, NOW + timedelta(minutes=11))
        request = session.exec(select(Request).where(col(Request.number) == number)).one()
        return reminders._next(tx, request, Policy())


def test_a_reopen_makes_the_tick_look_again_with_the_new_deadlines(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given an answered request put off to its auto-close, seven days on
    number = cast.bring(State.REPLIED)
    tick(NOW + timedelta(minutes=1))
    replied = world.request(number).replied_at
    assert replied is not None
    assert tick_at(world, number) == replied + timedelta(days=7)

    # When the requester says it is not solved (重办: new deadlines)
    reopened = NOW + timedelta(hours=1)
    world.do(service.rate, cast.requester, number, False, "不满意", now=reopened)
    again = tick(reopened + timedelta(minutes=1))

    # Then the tick read it and put it off to the first reminder of its new deadlines: the
    # 30-minute ping of a new request
    request = world.request(number)
    assert again.read == 1
    assert (request.state, request.deadlines_set_at) == ("new", reopened)
    assert request.tick_at == reopened + timedelta(minutes=30)


def test_an_ended_request_is_read_once_and_never_again(cast: Cast, world: World, tick: Any) -> None:
    # Given a request that was closed (its last change set tick_at)
    number = cast.bring(State.CLOSED)
    assert tick_at(world, number) is not None

    # When two ticks run
    first, second = tick(NOW + timedelta(minutes=1)), tick(NOW + timedelta(minutes=2))

    # Then the first cleared tick_at, the second read nothing
    assert first.read == 1 and did(first) == {}
    assert tick_at(world, number) is None
    assert second.read == 0


def test_an_auto_closed_request_is_not_looked_at_again(cast: Cast, world: World, tick: Any) -> None:
    number = cast.bring(State.REPLIED)
    replied = world.request(number).replied_at
    assert replied is not None

    closing = tick(replied + timedelta(days=7, minutes=1))
    after = tick(replied + timedelta(days=8))

    assert did(closing) == {"auto_close": 1}
    assert world.request(number).state == "closed"
    assert tick_at(world, number) is None
    assert after.read == 0


def test_a_change_after_the_tick_read_keeps_its_own_tick_at(cast: Cast, world: World) -> None:
    # Given a request as a tick read it
    number = cast.submit(now=NOW)
    read = world.request(number)
    assert read.id is not None and read.tick_at is not None

    # When it changed (accepted) before the tick writes its next instant
    accepted = NOW + timedelta(minutes=3)
    world.do(service.accept, cast.worker, number, now=accepted)
    with session_scope(world.engine) as session:
        queries.set_next_ticks(
            session=session,
            ticks=[
                queries.NextTick(
                    request_id=read.id,
                    seen_tick_at=read.tick_at,
                    seen_updated_at=read.updated_at,
                    tick_at=None,
                )
            ],
        )

    # Then the change's tick_at stands: the next tick looks at the request as it is now
    assert tick_at(world, number) == accepted


def test_look_again_marks_every_open_request(cast: Cast, world: World, tick: Any) -> None:
    # Given an open and a closed request, both read (nothing due)
    open_one, closed = cast.submit(now=NOW), cast.bring(State.CLOSED)
    tick(NOW + timedelta(minutes=1))
    later = NOW + timedelta(minutes=2)

    # When the tick is asked to look at every open request again (days off changed)
    with session_scope(world.engine) as session:
        marked = queries.look_again(
            session=session, now=later, excluded=[state.value for state in TERMINAL]
        )

    # Then only the open one is marked, and the next tick reads it
    assert marked == 1
    assert (tick_at(world, open_one), tick_at(world, closed)) == (later, None)
    assert tick(later).read == 1


def test_a_backlog_is_read_in_batches_within_one_tick(
    cast: Cast, world: World, tick: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five requests to look at and batches of two
    numbers = [cast.submit(now=NOW) for _ in range(5)]
    monkeypatch.setattr(reminders, "TICK_BATCH", 2)

    # When a tick runs
    result = tick(NOW + timedelta(minutes=1))

    # Then it read all five, each once, and put each off to its 30-minute ping
    assert result.read == 5
    assert {tick_at(world, number) for number in numbers} == {UNACTED}
    assert tick(NOW + timedelta(minutes=2)).read == 0


def test_the_next_instant_skips_the_days_off_of_the_requests_centre(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given Tuesday 2026-03-03 a day off of the default centre, and a request received on
    # Monday at 17:50 (10 working minutes left that day)
    with session_scope(world.engine) as session:
        centre = queries.default_centre(session=session)
        centre.days_off = ["2026-03-03"]
        session.add(centre)
    monday_evening = datetime(2026, 3, 2, 17, 50, tzinfo=LOCAL_TZ).astimezone(UTC)
    number = cast.submit(now=monday_evening)

    # When a tick reads it, and another runs on the Tuesday morning
    tick(monday_evening + timedelta(minutes=1))
    tuesday = tick(datetime(2026, 3, 3, 9, 30, tzinfo=LOCAL_TZ).astimezone(UTC))

    # Then its 30-minute ping is put off to Wednesday 09:20, past the centre's day off
    assert tick_at(world, number) == datetime(2026, 3, 4, 9, 20, tzinfo=LOCAL_TZ)
    assert tuesday.read == 0 and did(tuesday) == {}


def test_a_new_day_off_makes_the_tick_look_again_at_the_centres_open_requests(
    cast: Cast, world: World, tick: Any
) -> None:
    # Given a new request read by a tick and put off to its 30-minute ping
    number = cast.submit(now=NOW)
    tick(NOW + timedelta(minutes=1))
    assert tick_at(world, number) == UNACTED

    # When its centre gets a day off (redesk centres days-off)
    changed = NOW + timedelta(minutes=2)
    with session_scope(world.engine) as session:
        centres.days_off(
            session=session, code="default", action="add", dates=["2026-03-03"], now=changed
        )

    # Then the next tick looks at it again
    assert tick_at(world, number) == changed
    assert tick(changed + timedelta(seconds=1)).read == 1
