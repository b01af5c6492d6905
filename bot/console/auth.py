"""The console's staff accounts: setup, login, sessions and the account's linked chats.

The session lives in the cookie `redesk_console` (HttpOnly, SameSite=Strict, Path=/, Secure in
production) holding a random token of which only the SHA-256 is stored. Every state-changing
call is checked with refuse_cross_site: the Origin (or, without one, the Referer) must be this
site, and X-CSRF-Token must be the session's token (answered at login and by /api/console/me).
The requester's web token (Authorization: Bearer of /api/web) is never read here.

The other console modules import ConsoleUser, current_user, require_user, require_page_user,
refuse_cross_site and console_page from here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.http import BodyTooLarge, client_address, read_body, runtime_of
from bot.runtime import Runtime
from bot.texts import channel_labels, role_label
from bot.texts import text as t
from storage import queries
from storage.db import session_scope
from storage.models import ConsoleSession, utcnow
from workflow import accounts

logger = logging.getLogger(__name__)

#: The session cookie's name.
COOKIE = "redesk_console"

#: Where the console's pages, scripts and styles live (served under /static/console/).
PAGES_DIR = Path(__file__).resolve().parent.parent / "static" / "console"

#: Largest body the auth API reads, in bytes.
BODY_LIMIT = 8 * 1024

#: The login page; require_page_user sends there with ?next=.
LOGIN_PATH = "/console/login"

#: Content types a cross-site HTML form can send without a CORS preflight: refused.
FORM_CONTENT_TYPES: tuple[str, ...] = (
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
)


@dataclass(frozen=True)
class ConsoleUser:
    """Who is logged in to the console: the account and its person (the actor of every
    action taken in the console)."""

    account_id: int
    #: The account's person: the actor of every action.
    person_id: int
    username: str
    name: str
    #: worker | leader | department | admin
    role: str
    centre_id: int | None
    department_id: int | None
    csrf_token: str
    session_id: int


def json_error(status: int, code: str, key: str, **params: Any) -> JSONResponse:
    """A JSON error of the console: {"error": <code>, "message": <中文>}."""
    return JSONResponse({"error": code, "message": t(key, **params)}, status_code=status)


def console_page(name: str) -> Response:
    """A static page from bot/static/console/, never cached (it may follow a login)."""
    path = (PAGES_DIR / name).resolve()
    if path.parent != PAGES_DIR or not path.is_file():
        return json_error(404, "not_found", "console.not_found")
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-store"})


def _limits(runtime: Runtime) -> accounts.Limits:
    return accounts.Limits.of(runtime.settings)


def _address(request: Request) -> str:
    return client_address(request, runtime_of(request).settings.trusted_proxy_networks)


def _live(runtime: Runtime, token: str, touch: bool) -> ConsoleUser | None:
    with session_scope(runtime.engine) as session:
        live = accounts.session_of(
            session, token=token, now=utcnow(), limits=_limits(runtime), touch=touch
        )
        if live is None or live.person.role not in accounts.STAFF_ROLES:
            return None
        assert live.account.id is not None and live.person.id is not None
        assert live.console_session.id is not None
        return ConsoleUser(
            account_id=live.account.id,
            person_id=live.person.id,
            username=live.account.username,
            name=live.person.display_name,
            role=live.person.role,
            centre_id=live.person.centre_id,
            department_id=live.person.department_id,
            csrf_token=live.console_session.csrf_token,
            session_id=live.console_session.id,
        )


async def current_user(request: Request, *, touch: bool = True) -> ConsoleUser | None:
    """The user of the request's session cookie, when the session is live; else None.

    Args:
        request: The request, with its cookie.
        touch: Whether this counts as a use of the session (its last use moved to now, which
            keeps it from going idle). A check that the session is still live while a page
            merely stays open (the queue's live stream) passes False.
    """
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    return await asyncio.to_thread(_live, runtime_of(request), token, touch)


async def require_user(request: Request) -> ConsoleUser | Response:
    """The logged-in user, or the API's 401 {"error": "login_required"}."""
    user = await current_user(request)
    if user is None:
        response = json_error(401, "login_required", "console.login_required")
        if request.cookies.get(COOKIE):
            _clear_cookie(request, response)
        return response
    return user


async def require_page_user(request: Request) -> ConsoleUser | Response:
    """The logged-in user, or a 303 to the login page that comes back here afterwards."""
    user = await current_user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Response(
            status_code=303,
            headers={
                "Location": f"{LOGIN_PATH}?next={quote(target, safe='')}",
                "Cache-Control": "no-store",
            },
        )
    return user


def _origins(request: Request) -> set[str]:
    """The origins this site is reached at: the request's own, and REDESK_PUBLIC_URL's."""
    own = {f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}".lower()}
    public = runtime_of(request).settings.public_url
    if public:
        parts = urlsplit(public)
        own.add(f"{parts.scheme}://{parts.netloc}".lower())
    return own


def same_site(request: Request) -> bool:
    """Whether the request comes from one of this site's pages: its Origin, or without one
    its Referer, is this site (neither: no)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if origin == "null" or not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.strip().lower() in _origins(request)


def refuse_cross_site(request: Request, user: ConsoleUser) -> Response | None:
    """None when a state-changing call may go ahead; else the 403 {"error": "csrf"}: the
    Origin (or Referer) is not this site, or X-CSRF-Token is not the session's."""
    sent = request.headers.get("x-csrf-token", "")
    if not same_site(request) or not (
        sent
        and hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), user.csrf_token.encode())
    ):
        return json_error(403, "csrf", "console.csrf")
    return None


def _set_cookie(request: Request, response: Response, token: str) -> None:
    settings = runtime_of(request).settings
    response.set_cookie(
        COOKIE,
        token,
        max_age=settings.console_session_hours * 3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.env == "production",
    )


def _clear_cookie(request: Request, response: Response) -> None:
    settings = runtime_of(request).settings
    response.delete_cookie(
        COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.env == "production",
    )


async def _body(request: Request) -> dict[str, Any] | Response:
    """The JSON object of a POST, or the error to answer."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind in FORM_CONTENT_TYPES:
        return json_error(415, "bad_content_type", "api.bad_content_type")
    try:
        raw = await read_body(request, BODY_LIMIT)
    except BodyTooLarge:
        return json_error(413, "too_large", "api.too_large")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        return json_error(400, "bad_json", "api.bad_json")
    return body


def _string(body: dict[str, Any], name: str, limit: int = 512) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and len(value) <= limit else None


# --- setup and login ------------------------------------------------------------------------


async def setup(request: Request) -> Response:
    """POST /api/console/setup {token, password}: sets the password of a setup link."""
    if not same_site(request):
        return json_error(403, "csrf", "console.csrf")
    body = await _body(request)
    if isinstance(body, Response):
        return body
    token = _string(body, "token", 200)
    password = _string(body, "password", accounts.MAX_PASSWORD * 4)
    if token is None or password is None:
        return json_error(400, "bad_field", "api.bad_field", field="token, password")
    runtime = runtime_of(request)
    address = _address(request)

    def run() -> str | accounts.AccountError:
        with session_scope(runtime.engine) as session:
            try:
                account = accounts.set_password(
                    session, token=token, password=password, now=utcnow(), address=address
                )
            except accounts.AccountError as exc:
                session.rollback()
                return exc
            return account.username

    done = await asyncio.to_thread(run)
    if isinstance(done, accounts.PasswordRejected):
        return json_error(400, "password", f"console.password_{done.reason}", **done.params)
    if isinstance(done, accounts.AccountError):
        return json_error(400, "setup_invalid", "console.setup_invalid")
    return JSONResponse({"username": done})


async def login(request: Request) -> Response:
    """POST /api/console/login {username, password}: a session cookie and {csrf_token}; 401
    for a wrong username or password (alike), 429 with Retry-After when limited."""
    if not same_site(request):
        return json_error(403, "csrf", "console.csrf")
    body = await _body(request)
    if isinstance(body, Response):
        return body
    username = _string(body, "username", 200)
    password = _string(body, "password", accounts.MAX_PASSWORD * 4)
    if username is None or password is None:
        return json_error(400, "bad_field", "api.bad_field", field="username, password")
    runtime = runtime_of(request)
    address = _address(request)

    def run() -> tuple[str, str, str] | accounts.LoginFailed | accounts.LoginLimited:
        with session_scope(runtime.engine) as session:
            outcome = accounts.login(
                session,
                username=username,
                password=password,
                address=address,
                now=utcnow(),
                limits=_limits(runtime),
            )
            if isinstance(outcome, accounts.LoggedIn):
                return outcome.token, outcome.console_session.csrf_token, outcome.account.username
            return outcome

    outcome = await asyncio.to_thread(run)
    if isinstance(outcome, accounts.LoginLimited):
        minutes = max(1, -(-outcome.retry_after // 60))
        response = json_error(429, "login_limited", "console.login_limited", minutes=minutes)
        response.headers["Retry-After"] = str(outcome.retry_after)
        return response
    if isinstance(outcome, accounts.LoginFailed):
        return json_error(401, "bad_login", "console.bad_login")
    token, csrf, name = outcome
    response = JSONResponse({"csrf_token": csrf, "username": name})
    response.headers["Cache-Control"] = "no-store"
    _set_cookie(request, response, token)
    return response


async def logout(request: Request) -> Response:
    """POST /api/console/logout {everywhere?}: ends this session (or every one)."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    refused = refuse_cross_site(request, user)
    if refused is not None:
        return refused
    body = await _body(request)
    if isinstance(body, Response):
        return body
    everywhere = body.get("everywhere", False)
    if not isinstance(everywhere, bool):
        return json_error(400, "bad_field", "api.bad_field", field="everywhere")
    runtime = runtime_of(request)
    address = _address(request)
    token = request.cookies.get(COOKIE, "")

    def run() -> None:
        with session_scope(runtime.engine) as session:
            live = accounts.session_of(session, token=token, now=utcnow(), limits=_limits(runtime))
            if live is not None:
                accounts.logout(session, live, everywhere=everywhere, now=utcnow(), address=address)

    await asyncio.to_thread(run)
    response = JSONResponse({"ok": True})
    _clear_cookie(request, response)
    return response


# --- the account ----------------------------------------------------------------------------


def _enabled_channels(runtime: Runtime) -> list[dict[str, str]]:
    from bot.channels.registry import CHANNELS

    return [
        {"name": channel.name, "label": channel.label}
        for channel in CHANNELS
        if channel.enabled(runtime.settings)
    ]


async def me(request: Request) -> Response:
    """GET /api/console/me: who is logged in, with the CSRF token."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    runtime = runtime_of(request)

    def run() -> dict[str, Any]:
        with session_scope(runtime.engine) as session:
            centre = (
                queries.get_centre(session=session, centre_id=user.centre_id)
                if user.centre_id is not None
                else None
            )
            department = (
                queries.get_department(session=session, department_id=user.department_id)
                if user.department_id is not None
                else None
            )
            account = queries.get_account(session=session, account_id=user.account_id)
            return {
                "username": user.username,
                "name": user.name,
                "role": user.role,
                "role_label": role_label(user.role, department.name if department else ""),
                "centre": (
                    {"id": centre.id, "code": centre.code, "name": centre.name} if centre else None
                ),
                "department": department.name if department else None,
                "department_id": user.department_id,
                "person_id": user.person_id,
                "csrf_token": user.csrf_token,
                "notify_person_id": account.notify_person_id if account else None,
                "last_login_at": _iso(account.last_login_at if account else None),
                "channels": _enabled_channels(runtime),
            }

    data = await asyncio.to_thread(run)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _acting(request: Request) -> ConsoleUser | Response:
    """The user of a state-changing call, refused when not logged in or cross-site."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    refused = refuse_cross_site(request, user)
    return refused if refused is not None else user


def _live_of(session: Any, runtime: Runtime, user: ConsoleUser) -> accounts.Live:
    account = queries.get_account(session=session, account_id=user.account_id, lock=True)
    person = queries.get_person(session=session, person_id=user.person_id)
    row = session.get(ConsoleSession, user.session_id)
    assert account is not None and person is not None and row is not None
    return accounts.Live(row, account, person)


async def link_code(request: Request) -> Response:
    """POST /api/console/link-code: a one-time 关联聊天账号 code {code, expires_at}."""
    user = await _acting(request)
    if isinstance(user, Response):
        return user
    runtime = runtime_of(request)
    address = _address(request)

    def run() -> accounts.LinkCode:
        with session_scope(runtime.engine) as session:
            live = _live_of(session, runtime, user)
            return accounts.new_link_code(
                session, live, now=utcnow(), limits=_limits(runtime), address=address
            )

    made = await asyncio.to_thread(run)
    return JSONResponse(
        {
            "code": made.code,
            "expires_at": made.expires_at.isoformat(),
            "channels": _enabled_channels(runtime),
        },
        headers={"Cache-Control": "no-store"},
    )


async def identities(request: Request) -> Response:
    """GET /api/console/identities: the chats linked to the account and which one is
    notified."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    runtime = runtime_of(request)

    def run() -> dict[str, Any]:
        with session_scope(runtime.engine) as session:
            account = queries.get_account(session=session, account_id=user.account_id)
            assert account is not None
            principal = queries.get_person(session=session, person_id=user.person_id)
            assert principal is not None
            notified = queries.notify_target(session=session, person=principal)
            labels = channel_labels()
            items = [
                {
                    "id": identity.id,
                    "channel": identity.channel,
                    "channel_label": labels.get(identity.channel, identity.channel),
                    "name": identity.display_name,
                    "own": identity.id == user.person_id,
                    "notify": identity.id == notified,
                    "unreachable": identity.unreachable,
                    "linked_at": _iso(identity.created_at),
                }
                for identity in accounts.identities(session, account)
            ]
            return {
                "items": items,
                "notify_person_id": None if notified == user.person_id else notified,
            }

    return JSONResponse(await asyncio.to_thread(run), headers={"Cache-Control": "no-store"})


async def notify(request: Request) -> Response:
    """POST /api/console/notify {person_id|null}: the linked chat notifications go to."""
    user = await _acting(request)
    if isinstance(user, Response):
        return user
    body = await _body(request)
    if isinstance(body, Response):
        return body
    chosen = body.get("person_id")
    if chosen is not None and (not isinstance(chosen, int) or isinstance(chosen, bool)):
        return json_error(400, "bad_field", "api.bad_field", field="person_id")
    refused = await _on_identity(request, user, accounts.set_notify, chosen)
    return refused or JSONResponse({"ok": True, "notify_person_id": chosen})


async def unlink(request: Request) -> Response:
    """POST /api/console/identities/{id}/unlink: a linked chat is unlinked."""
    user = await _acting(request)
    if isinstance(user, Response):
        return user
    raw = request.path_params["id"]
    if not raw.isdigit() or len(raw) > 18:
        return json_error(404, "unknown_identity", "console.unknown_identity")
    refused = await _on_identity(request, user, accounts.unlink, int(raw))
    return refused or JSONResponse({"ok": True})


async def _on_identity(
    request: Request, user: ConsoleUser, change: Callable[..., Any], person_id: int | None
) -> Response | None:
    """Runs `change` (accounts.set_notify or accounts.unlink) on one of the account's linked
    chats; a 404 when it is not one of them (nothing changed), else None."""
    runtime = runtime_of(request)
    address = _address(request)

    def run() -> bool:
        with session_scope(runtime.engine) as session:
            live = _live_of(session, runtime, user)
            try:
                change(session, live, person_id, now=utcnow(), address=address)
            except accounts.UnknownIdentity:
                session.rollback()
                return False
            return True

    if not await asyncio.to_thread(run):
        return json_error(404, "unknown_identity", "console.unknown_identity")
    return None


# --- pages ----------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    """GET /console/login."""
    return console_page("login.html")


async def setup_page(request: Request) -> Response:
    """GET /console/setup?token=."""
    return console_page("setup.html")


async def account_page(request: Request) -> Response:
    """GET /console/account: 关联聊天账号, the linked chats, 退出所有设备."""
    user = await require_page_user(request)
    if isinstance(user, Response):
        return user
    return console_page("account.html")


ROUTES: list[BaseRoute] = [
    Route("/console/login", login_page, methods=["GET"]),
    Route("/console/setup", setup_page, methods=["GET"]),
    Route("/console/account", account_page, methods=["GET"]),
    Route("/api/console/setup", setup, methods=["POST"]),
    Route("/api/console/login", login, methods=["POST"]),
    Route("/api/console/logout", logout, methods=["POST"]),
    Route("/api/console/me", me, methods=["GET"]),
    Route("/api/console/link-code", link_code, methods=["POST"]),
    Route("/api/console/identities", identities, methods=["GET"]),
    Route("/api/console/identities/{id}/unlink", unlink, methods=["POST"]),
    Route("/api/console/notify", notify, methods=["POST"]),
]

__all__ = [
    "COOKIE",
    "ROUTES",
    "ConsoleUser",
    "console_page",
    "current_user",
    "refuse_cross_site",
    "require_page_user",
    "require_user",
]
