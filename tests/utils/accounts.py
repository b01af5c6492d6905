"""Staff accounts in tests: made with a password in one step, and logged in through the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.db import session_scope
from storage.models import AdminAudit, utcnow
from tests.utils.app import TestClient
from workflow import accounts

#: A password that passes every rule.
PASSWORD = "春熙路-lamp-2026"

#: The test client's own origin: what a page of the console sends.
ORIGIN = "http://testserver"

#: Headers of a state-changing call from a page of this site.
SAME_SITE = {"Origin": ORIGIN}


def make_account(
    engine: Engine,
    username: str,
    role: str = "worker",
    *,
    name: str = "",
    centre: str | None = None,
    department: str | None = None,
    password: str | None = PASSWORD,
    now: datetime | None = None,
) -> accounts.SetupLink:
    """A staff account as `redesk staff add` makes it, its password set unless None."""
    now = now or utcnow()
    with session_scope(engine) as session:
        link = accounts.create_staff(
            session,
            username=username,
            name=name or username,
            role=role,
            now=now,
            centre_code=centre,
            department_name=department,
        )
    if password is not None:
        with session_scope(engine) as session:
            accounts.set_password(session, token=link.token, password=password, now=now)
    return link


def login(client: TestClient, username: str, password: str = PASSWORD, **headers: str) -> Any:
    """POST /api/console/login from a page of this site; the response."""
    return client.post(
        "/api/console/login",
        json={"username": username, "password": password},
        headers={**SAME_SITE, **headers},
    )


def logged_in(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Logs in (the cookie stays in the client); the headers of a state-changing call."""
    response = login(client, username, password)
    assert response.status_code == 200, response.text
    return {**SAME_SITE, "X-CSRF-Token": response.json()["csrf_token"]}


def audit_actions(engine: Engine, actor: str | None = None) -> list[str]:
    """The admin audit's actions, oldest first (of one actor when given)."""
    with session_scope(engine) as session:
        statement = select(AdminAudit).order_by(col(AdminAudit.id))
        if actor is not None:
            statement = statement.where(AdminAudit.actor == actor)
        return [row.action for row in session.exec(statement).all()]
