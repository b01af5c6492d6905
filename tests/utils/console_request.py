"""Helpers of the console request page's tests: a signed-in console client for a person,
attachments with stored files, and the cleanup of accounts between PostgreSQL tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from bot.console.auth import COOKIE
from bot.runtime import Runtime
from storage import queries
from storage.db import session_scope
from storage.models import Attachment, Person, Request, utcnow
from tests.utils.accounts import PASSWORD
from workflow import accounts

#: The origin the test client's requests come from.
ORIGIN = "http://testserver"


@dataclass
class Signed:
    """A console session of one person: the cookie's token and the CSRF token."""

    token: str
    csrf: str

    def headers(self, **extra: str) -> dict[str, str]:
        """The headers of a same-site, state-changing call."""
        return {"Origin": ORIGIN, "X-CSRF-Token": self.csrf, **extra}


def sign_in(runtime: Runtime, person: Person) -> Signed:
    """A live console session of `person`'s account: the account (made as every bind makes
    it) gets a password through its setup link and logs in, as a page would."""
    with session_scope(runtime.engine) as session:
        me = session.get(Person, person.id)
        assert me is not None
        account = queries.ensure_account(session=session, person=me, at=utcnow())
        link = accounts.issue_setup_link(session, account, now=utcnow())
        username = account.username
    with session_scope(runtime.engine) as session:
        accounts.set_password(session, token=link.token, password=PASSWORD, now=utcnow())
    with session_scope(runtime.engine) as session:
        done = accounts.login(
            session,
            username=username,
            password=PASSWORD,
            address="testclient",
            now=utcnow(),
            limits=accounts.Limits.of(runtime.settings),
        )
        assert isinstance(done, accounts.LoggedIn)
        return Signed(token=done.token, csrf=done.console_session.csrf_token)


def as_user(client: TestClient, signed: Signed | None) -> TestClient:
    """The client with `signed`'s cookie (or none)."""
    client.cookies.clear()
    if signed is not None:
        client.cookies.set(COOKIE, signed.token)
    return client


def act(
    client: TestClient, signed: Signed, number: str, action: str, **fields: Any
) -> httpx.Response:
    """POSTs one action of the request page as `signed`."""
    as_user(client, signed)
    response: httpx.Response = client.post(
        f"/api/console/requests/{number}/actions",
        json={"action": action, **fields},
        headers=signed.headers(),
    )
    return response


def attach(
    runtime: Runtime,
    number: str,
    *,
    kind: str,
    content: bytes | None = None,
    mime_type: str | None = None,
    file_name: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    label: str | None = None,
) -> int:
    """An attachment of request `number`, its file written under the media directory."""
    with session_scope(runtime.engine) as session:
        request = queries.get_request_by_number(session=session, number=number)
        assert request is not None and request.id is not None
        row = Attachment(
            request_id=request.id,
            channel=request.channel,
            kind=kind,
            mime_type=mime_type,
            file_name=file_name,
            latitude=latitude,
            longitude=longitude,
            label=label,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        if content is not None:
            relative = Path(request.channel) / "202603" / f"{row.id}.bin"
            target = Path(runtime.settings.media_dir) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            row.stored_path = str(relative)
            session.add(row)
        return row.id


def state_of(runtime: Runtime, number: str) -> str:
    """A request's state now."""
    with session_scope(runtime.engine) as session:
        request = queries.get_request_by_number(session=session, number=number)
        assert isinstance(request, Request)
        return request.state
