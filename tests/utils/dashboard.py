"""Helpers of the dashboard's tests: console accounts logged in through the real API, and a
district's worth of requests to count (tests/utils/centres.py's tree)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from storage.db import session_scope
from storage.models import utcnow
from tests.utils.app import TestClient
from tests.utils.centres import Tree
from tests.utils.world import NOW
from workflow import accounts, service

#: A password every test account gets (the rules: workflow/accounts.check_password).
PASSWORD = "Lantern-road-42"

#: The Origin of the test client's site (starlette's TestClient).
ORIGIN = "http://testserver"


@dataclass(frozen=True)
class Staff:
    """A console account made for a test."""

    username: str
    person_id: int


def make_staff(
    engine: Engine,
    username: str,
    role: str,
    centre_code: str | None,
    *,
    name: str = "测试账号",
    department: str | None = None,
) -> Staff:
    """A staff account (as `redesk staff add` makes it) with PASSWORD set through its link."""
    with session_scope(engine) as session:
        link = accounts.create_staff(
            session,
            username=username,
            name=name,
            role=role,
            now=utcnow(),
            centre_code=centre_code,
            department_name=department,
        )
        token, person_id = link.token, link.person.id
    with session_scope(engine) as session:
        accounts.set_password(session, token=token, password=PASSWORD, now=utcnow())
    assert person_id is not None
    return Staff(username=username, person_id=person_id)


def log_in(client: TestClient, username: str) -> str:
    """Logs `client` in through POST /api/console/login; the session's CSRF token."""
    response = client.post(
        "/api/console/login",
        json={"username": username, "password": PASSWORD},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"])


def fill_district(tree: Tree) -> dict[str, list[str]]:
    """Requests in C1 and C2 (and the district's own), some accepted, one forwarded, one
    rejected; their numbers by centre code."""
    world = tree.world
    numbers: dict[str, list[str]] = {"C1": [], "C2": []}
    for text in ("小区门口的路灯坏了，联系电话13812345678", "楼道里堆满了杂物", "路灯又坏了"):
        numbers["C1"].append(tree.submit(tree.c1_resident, text))
    for text in ("东风路的路灯不亮", "想了解一下社区活动的报名方式"):
        numbers["C2"].append(tree.submit(tree.c2_resident, text))
    world.do(service.accept, tree.c1_worker, numbers["C1"][0], now=NOW)
    world.do(service.forward, tree.c1_worker, numbers["C1"][1], "城管执法", now=NOW)
    world.do(service.reject, tree.c2_worker, numbers["C2"][1], "不属于受理范围", now=NOW)
    world.do(service.accept, tree.c2_worker, numbers["C2"][0], now=NOW)
    return numbers
