"""The workflow service on a real database with a fixed clock, and the usual cast of people.

tests/conftest.py offers them as the `world` and `cast` fixtures.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, SQLModel, col, select

from bot.runtime import Runtime
from storage.db import session_scope
from storage.models import (
    Category,
    Department,
    Event,
    OutboxMessage,
    Person,
    Request,
    RequestCounter,
)
from workflow import service
from workflow.cards import REFRESH_KEY
from workflow.deadlines import LOCAL_TZ
from workflow.errors import WorkflowError
from workflow.machine import State
from workflow.service import Tx

#: Monday 2026-03-02, 10:00 in Shanghai: a working morning.
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)

_sources = itertools.count(1)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A moment on the Asia/Shanghai wall clock."""
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_TZ)


class World:
    """The service on one database, with a fixed clock and direct looks at the tables."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.engine = runtime.engine
        #: (person id, key, params) of the outbox rows the last command queued.
        self.queued: list[tuple[int, str, dict[str, Any]]] = []
        self.written = 0

    def tx(self, session: Session, now: datetime = NOW) -> Tx:
        """A unit of work at `now` with a unique outbox source."""
        return dataclasses.replace(self.runtime.tx(session, f"test:{next(_sources)}"), now=now)

    # --- setting up ---

    def department(
        self, name: str, *, resolution_days: int | None = None, active: bool = True
    ) -> Department:
        with session_scope(self.engine) as session:
            department = Department(name=name, resolution_days=resolution_days, active=active)
            session.add(department)
            session.flush()
            return department

    def category(
        self,
        name: str,
        keywords: list[str],
        *,
        department: Department | None = None,
        fallback: bool = False,
        response_hours: int = 8,
        resolution_days: int = 5,
    ) -> Category:
        with session_scope(self.engine) as session:
            category = Category(
                name=name,
                keywords=keywords,
                is_fallback=fallback,
                route="department" if department else "committee",
                department_id=department.id if department else None,
                response_hours=response_hours,
                resolution_days=resolution_days,
            )
            session.add(category)
            session.flush()
            return category

    def person(
        self,
        role: str = "requester",
        *,
        name: str = "",
        department: Department | None = None,
        channel: str = "web",
    ) -> Person:
        with session_scope(self.engine) as session:
            person = Person(
                channel=channel,
                external_id=f"x{next(_sources)}",
                display_name=name,
                role=role,
                department_id=department.id if department else None,
            )
            session.add(person)
            session.flush()
            return person

    # --- acting ---

    def do(
        self,
        command: Callable[..., Any],
        actor: Person,
        *args: Any,
        now: datetime = NOW,
        **kwargs: Any,
    ) -> Any:
        """Runs one command in its own committed unit of work."""
        with session_scope(self.engine) as session:
            tx = self.tx(session, now)
            me = session.get(Person, actor.id)
            result = command(tx, me, *args, **kwargs)
            session.flush()
            # Card refreshes are left out: tests/test_cards.py is about those.
            self.queued = [
                (row.person_id, row.key, dict(row.params))
                for row in tx.outbox
                if row.key != REFRESH_KEY
            ]
            self.written = len(tx.outbox)
            return result

    def refused(
        self,
        command: Callable[..., Any],
        actor: Person,
        *args: Any,
        now: datetime = NOW,
        **kwargs: Any,
    ) -> WorkflowError:
        """Runs a command that must fail; like the chat handler, commits what it recorded."""
        with session_scope(self.engine) as session:
            tx = self.tx(session, now)
            me = session.get(Person, actor.id)
            try:
                command(tx, me, *args, **kwargs)
            except WorkflowError as error:
                return error
        raise AssertionError(f"{command.__name__} was not refused")

    # --- looking ---

    def request(self, number: str) -> Request:
        with Session(self.engine) as session:
            found = session.exec(select(Request).where(Request.number == number)).first()
            assert found is not None
            return found

    def events(self, number: str | None = None) -> list[Event]:
        with Session(self.engine) as session:
            statement = select(Event).order_by(col(Event.id))
            if number is not None:
                statement = statement.where(Event.request_id == self.request(number).id)
            return list(session.exec(statement).all())

    def outbox(self) -> list[OutboxMessage]:
        with Session(self.engine) as session:
            return list(session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all())

    def count(self, model: type[SQLModel]) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(model)).one())

    def keys_for(self, person: Person) -> list[str]:
        """Catalogue keys the last command queued for `person`."""
        return [key for person_id, key, _ in self.queued if person_id == person.id]

    def snapshot(self) -> tuple[int, int, int, int]:
        """Row counts that a refused or invalid command must leave alone."""
        with Session(self.engine) as session:
            counts = [
                session.exec(select(func.count()).select_from(model)).one()
                for model in (Request, Event, OutboxMessage, RequestCounter)
            ]
        return (int(counts[0]), int(counts[1]), int(counts[2]), int(counts[3]))


@dataclass
class Cast:
    """The usual people: a resident, two workers, a leader and two departments' staff."""

    world: World
    lamps: Department
    market: Department
    requester: Person
    neighbour: Person
    worker: Person
    worker2: Person
    leader: Person
    staff: Person
    market_staff: Person

    def submit(self, text: str = "我家门口的路灯坏了", *, now: datetime = NOW) -> str:
        request = self.world.do(service.submit, self.requester, text, now=now)
        return str(request.number)

    def bring(self, state: State) -> str:
        """A new request of the requester's, brought to `state` the ordinary way.

        The steps share one database transaction (each with its own Tx), which keeps setup fast.
        """
        with session_scope(self.world.engine) as session:

            def act(command: Callable[..., Any], actor: Person, *args: Any) -> Any:
                return command(self.world.tx(session), session.get(Person, actor.id), *args)

            number = str(act(service.submit, self.requester, "我家门口的路灯坏了").number)
            if state is State.REJECTED:
                act(service.reject, self.worker, number, "不属于受理范围")
            elif state is State.CANCELLED:
                act(service.cancel, self.requester, number)
            elif state in (State.FORWARDED, State.DEPT_HANDLING):
                act(service.forward, self.worker, number, "城管执法")
                if state is State.DEPT_HANDLING:
                    act(service.take, self.staff, number)
            elif state is not State.NEW:
                act(service.accept, self.worker, number)
                if state is not State.HANDLING:
                    act(service.complete, self.worker, number, "已联系修复")
                    if state is not State.REVIEW:
                        act(service.approve, self.worker, number)
                        if state is State.CLOSED:
                            act(service.rate, self.requester, number, True, "满意")
        assert self.world.request(number).state == state
        return number


def make_cast(world: World) -> Cast:
    """The usual people, departments and categories on the world's database."""
    # One transaction for the whole cast keeps every test's setup short.
    with session_scope(world.engine) as session:
        lamps, market = Department(name="城管执法"), Department(name="市场监管")
        session.add_all([lamps, market])
        session.add_all(
            [
                Category(
                    name="市政设施", keywords=["路灯", "井盖"], response_hours=4, resolution_days=5
                ),
                Category(name="其他", keywords=[], is_fallback=True),
            ]
        )
        session.flush()
        people = {
            field: Person(
                channel="web",
                external_id=f"x{next(_sources)}",
                display_name=name,
                role=role,
                department_id=department.id if department else None,
            )
            for field, name, role, department in [
                ("requester", "张三", "requester", None),
                ("neighbour", "李四", "requester", None),
                ("worker", "王书记", "worker", None),
                ("worker2", "赵委员", "worker", None),
                ("leader", "刘主任", "leader", None),
                ("staff", "城管小陈", "department", lamps),
                ("market_staff", "市监小周", "department", market),
            ]
        }
        session.add_all(people.values())
        session.flush()
    return Cast(world=world, lamps=lamps, market=market, **people)
