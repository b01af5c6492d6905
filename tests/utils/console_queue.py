"""A queue of requests in every state across the tree of centres, for the console queue's
tests (tests/test_console_queue.py, tests/browser/test_console_queue.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from storage import queries
from storage.db import session_scope
from storage.models import Person, utcnow
from tests.utils.app import TestClient
from tests.utils.centres import Tree
from tests.utils.world import NOW, local
from workflow import accounts, service

#: The password every test account gets.
PASSWORD = "春熙路灯-2026"

#: The Origin a same-site call of the test client sends.
ORIGIN = "http://testserver"

#: Five weeks before NOW: a request received then is past its resolution due at NOW.
EARLY = local(2026, 1, 26, 10)


@dataclass
class Queue:
    """Requests of the tree, by what they are for."""

    #: C1: new, received at NOW by C1's resident (phone 138-0013-8000), category 市政设施.
    new: str
    #: C1: accepted by C1's first worker (handling).
    mine: str
    #: C1: accepted and completed by C1's first worker (review).
    review: str
    #: C1: forwarded to the district's 城管执法 (forwarded).
    forwarded: str
    #: C1: forwarded to 城管执法 and taken by its staff (dept_handling).
    dept_handling: str
    #: C1: rejected.
    rejected: str
    #: C1: new, received EARLY (five weeks ago) on Telegram: overdue at NOW.
    overdue: str
    #: C2: new, by C2's resident.
    c2: str
    #: The C1 resident who writes from Telegram.
    telegram_resident: Person


def make_queue(tree: Tree) -> Queue:
    """The requests of Queue, made the ordinary way (commands of the service)."""
    world = tree.world
    with session_scope(world.engine) as session:
        resident = session.get(Person, tree.c1_resident.id)
        assert resident is not None
        resident.phone = "138-0013-8000"
        telegram = Person(
            channel="telegram",
            external_id="tg-queue-1",
            display_name="王五",
            role="requester",
            centre_id=tree.c1.id,
            phone="+86 139 1111 2222",
        )
        session.add_all([resident, telegram])
        session.flush()
    numbers: dict[str, str] = {}
    with session_scope(world.engine) as session:

        def act(command: Callable[..., Any], actor: Person, *args: Any, now: datetime = NOW) -> str:
            result = command(world.tx(session, now), session.get(Person, actor.id), *args)
            session.flush()
            return str(result.number)

        def submit(resident: Person, text: str, now: datetime = NOW) -> str:
            return act(service.submit, resident, text, now=now)

        numbers["overdue"] = submit(telegram, "楼道里的灯一直不亮，物业不管", EARLY)
        numbers["new"] = submit(tree.c1_resident, "小区门口的路灯坏了")
        numbers["mine"] = submit(tree.c1_resident, "门口路灯闪烁")
        act(service.accept, tree.c1_worker, numbers["mine"])
        numbers["review"] = submit(tree.c1_resident, "路灯不亮已经三天")
        act(service.accept, tree.c1_worker, numbers["review"])
        act(service.complete, tree.c1_worker, numbers["review"], "已修复")
        numbers["forwarded"] = submit(tree.c1_resident, "井边路灯倒了")
        act(service.forward, tree.c1_worker, numbers["forwarded"], "城管执法")
        numbers["dept_handling"] = submit(tree.c1_resident, "路灯杆歪了")
        act(service.forward, tree.c1_worker, numbers["dept_handling"], "城管执法")
        act(service.take, tree.d_staff, numbers["dept_handling"])
        numbers["rejected"] = submit(tree.c1_resident, "想咨询一下路灯的事")
        act(service.reject, tree.c1_worker, numbers["rejected"], "不属于受理范围")
        numbers["c2"] = submit(tree.c2_resident, "东风路的路灯坏了", NOW + timedelta(minutes=5))
    return Queue(telegram_resident=telegram, **numbers)


def give_password(engine: Engine, person: Person) -> str:
    """Makes `person` an account with PASSWORD (as the setup link would); its username."""
    with session_scope(engine) as session:
        found = session.get(Person, person.id)
        assert found is not None
        account = queries.ensure_account(session=session, person=found, at=utcnow())
        account.password_hash = accounts.HASHER.hash(PASSWORD)
        session.add(account)
        return account.username


def log_in(client: TestClient, engine: Engine, person: Person) -> str:
    """Logs `client` in as `person` through POST /api/console/login; the CSRF token."""
    username = give_password(engine, person)
    response = client.post(
        "/api/console/login",
        json={"username": username, "password": PASSWORD},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"])
