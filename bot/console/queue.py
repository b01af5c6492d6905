"""The console's queue (待办队列): the page, the list of requests in the user's scope with its
tabs, filters and search, the choices the filters offer, and the live updates.

Who sees what is the chat's rule (workflow/scope.py, workflow/permissions.py): a worker sees
the requests their centre holds, a leader or an admin those of their centre's whole subtree,
department staff those forwarded to their department.

The stream (GET /api/console/stream) is server-sent events: it reads the newest event id (one
primary-key lookup) and, when it moved, whether any of the new events is of a request in the
user's scope; then it sends `event: changed` with that id, and the page fetches its counts and
rows again. It reads when a unit of work that changed a request has committed (bot.wake's
notify_changed: in this process, or in another through Redis), and every
REDESK_CONSOLE_STREAM_POLL seconds in case a wake-up was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from bot import wake
from bot.console.auth import (
    ConsoleUser,
    console_page,
    current_user,
    require_page_user,
    require_user,
)
from bot.http import runtime_of
from bot.texts import (
    DEPARTMENT_QUEUE_TAB_LABELS,
    QUEUE_TAB_LABELS,
    STATE_LABELS,
    channel_labels,
)
from bot.texts import text as t
from storage import queries
from storage.db import read_engine, session_scope
from storage.models import Centre, Role, utcnow
from workflow import scope as centre_scope
from workflow.deadlines import LOCAL_TZ
from workflow.machine import State
from workflow.permissions import COMMITTEE_ROLES, DEPARTMENT_ROLE, LEADER_ROLE
from workflow.service import summary

#: Requests per page unless asked otherwise, and the most one page holds.
PER_PAGE = 50
MAX_PER_PAGE = 100

#: Longest search accepted, in characters.
MAX_QUERY = 100

#: Longest piece of a bad parameter shown back in the error message, in characters.
ECHO_LIMIT = 40

#: Seconds between two heartbeat comments of a stream (proxies close silent connections).
HEARTBEAT = 15.0

#: The roles that have a queue: the committee's, the admin (reads like a leader), departments.
QUEUE_ROLES: frozenset[str] = frozenset({*COMMITTEE_ROLES, Role.ADMIN, DEPARTMENT_ROLE})

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadQuery(Exception):
    """A parameter of the queue is malformed or names nothing the user may filter by."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        typed = str(params.get("typed", ""))
        if len(typed) > ECHO_LIMIT:
            # What was typed is shown back, but not a page of it.
            params["typed"] = typed[: ECHO_LIMIT - 1] + "…"
        self.params = params


def _error(status: int, code: str, key: str, **params: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": t(key, **params)}, status_code=status)


# --- scope --------------------------------------------------------------------------------


def scope_of(session: Session, user: ConsoleUser) -> queries.QueueScope | None:
    """The requests `user` sees, or None when their role has no queue."""
    if user.role not in QUEUE_ROLES:
        return None
    if user.role == DEPARTMENT_ROLE:
        if user.department_id is None:
            return None
        return queries.QueueScope(department_id=user.department_id, person_id=user.person_id)
    centre_id = (
        user.centre_id if user.centre_id is not None else centre_scope.default_centre_id(session)
    )
    centre = queries.get_centre(session=session, centre_id=centre_id)
    if centre is None:
        return None
    # A leader oversees the whole subtree (workflow.scope.overseen_by); an admin reads like one.
    whole = user.role in (LEADER_ROLE, Role.ADMIN)
    return queries.QueueScope(centre=centre, subtree=whole, person_id=user.person_id)


def centres_in_scope(session: Session, scope: queries.QueueScope) -> list[Centre]:
    """The centres a user may filter by: their centre (and its subtree for a leader or an
    admin); for department staff, the subtree their department serves."""
    if scope.centre is not None:
        if scope.subtree:
            return list(queries.subtree_centres(session=session, centre=scope.centre))
        return [scope.centre]
    assert scope.department_id is not None
    department = queries.get_department(session=session, department_id=scope.department_id)
    centre_id = (
        department.centre_id
        if department is not None and department.centre_id is not None
        else centre_scope.default_centre_id(session)
    )
    centre = queries.get_centre(session=session, centre_id=centre_id)
    return list(queries.subtree_centres(session=session, centre=centre)) if centre else []


def tab_labels(scope: queries.QueueScope) -> dict[str, str]:
    """The scope's tabs, in order, with their labels."""
    labels = DEPARTMENT_QUEUE_TAB_LABELS if scope.department_id is not None else QUEUE_TAB_LABELS
    return {tab: labels[tab] for tab in scope.tabs}


# --- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueQuery:
    """The list asked for: a tab, the filters, a page."""

    tab: str
    filters: queries.QueueFilter
    page: int
    per_page: int


def _day(value: str) -> date:
    if not _DAY.match(value):
        raise BadQuery("queue.bad_date", typed=value)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadQuery("queue.bad_date", typed=value) from None


def _local_midnight(day: date) -> datetime:
    """The start of an Asia/Shanghai day."""
    return datetime.combine(day, time(0), LOCAL_TZ)


def _positive(value: str | None, default: int, key: str, **params: Any) -> int:
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise BadQuery(key, typed=value, **params)
    return int(value)


def parse_query(session: Session, scope: queries.QueueScope, params: dict[str, str]) -> QueueQuery:
    """The list asked for by the query string, checked against what the user may see.

    Raises:
        BadQuery: A parameter is malformed, unknown, or outside the user's scope.
    """
    # NUL cannot be stored in (or compared with) PostgreSQL text and means nothing to anyone.
    params = {key: value.replace("\x00", "") for key, value in params.items()}
    tab = params.get("tab") or "all"
    if tab not in scope.tabs:
        raise BadQuery("queue.bad_tab", typed=tab)
    page = _positive(params.get("page"), 1, "queue.bad_page")
    if page < 1:
        raise BadQuery("queue.bad_page", typed=params.get("page"))
    per_page = _positive(params.get("per_page"), PER_PAGE, "queue.bad_per_page", limit=MAX_PER_PAGE)
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise BadQuery("queue.bad_per_page", typed=per_page, limit=MAX_PER_PAGE)
    states: tuple[str, ...] | None = None
    if params.get("state"):
        wanted = tuple(part.strip() for part in params["state"].split(",") if part.strip())
        for state in wanted:
            if state not in State.__members__.values():
                raise BadQuery("queue.bad_state", typed=state)
        states = wanted or None
    category_ids: tuple[int, ...] | None = None
    if params.get("category"):
        found = queries.categories_named(session=session, key=params["category"].strip())
        if not found:
            raise BadQuery("queue.bad_category", typed=params["category"])
        category_ids = tuple(found)
    department_ids: tuple[int, ...] | None = None
    if params.get("department"):
        found = queries.departments_named(session=session, key=params["department"].strip())
        if not found:
            raise BadQuery("queue.bad_department", typed=params["department"])
        department_ids = tuple(found)
    centre: Centre | None = None
    if params.get("centre"):
        code = params["centre"].strip()
        centre = next(
            (c for c in centres_in_scope(session, scope) if c.code.lower() == code.lower()), None
        )
        if centre is None:
            # Unknown and outside the scope get the same answer: codes cannot be probed.
            raise BadQuery("queue.bad_centre", typed=code)
    start = _day(params["from"].strip()) if params.get("from") else None
    end = _day(params["to"].strip()) if params.get("to") else None
    if start is not None and end is not None and start > end:
        raise BadQuery("queue.bad_range")
    overdue: bool | None = None
    if params.get("overdue"):
        value = params["overdue"].strip().lower()
        if value not in ("1", "0", "true", "false"):
            raise BadQuery("queue.bad_overdue", typed=params["overdue"])
        overdue = value in ("1", "true")
    channel: str | None = None
    if params.get("channel"):
        channel = params["channel"].strip()
        if channel not in channel_labels():
            raise BadQuery("queue.bad_channel", typed=channel)
    q = " ".join((params.get("q") or "").split())
    if len(q) > MAX_QUERY:
        raise BadQuery("queue.bad_query", limit=MAX_QUERY)
    filters = queries.QueueFilter(
        states=states,
        category_ids=category_ids,
        department_ids=department_ids,
        centre=centre,
        created_from=_local_midnight(start) if start else None,
        created_before=_local_midnight(end + timedelta(days=1)) if end else None,
        overdue=overdue,
        channel=channel,
        q=q or None,
    )
    return QueueQuery(tab=tab, filters=filters, page=page, per_page=per_page)


# --- the list -----------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _item(row: queries.QueueRow, now: datetime, channels: dict[str, str]) -> dict[str, Any]:
    request = row.request
    finished = request.state in ("closed", "rejected", "cancelled")
    overdue = (
        not finished and request.resolution_due_at is not None and request.resolution_due_at < now
    )
    return {
        "number": request.number,
        "state": request.state,
        "state_label": STATE_LABELS.get(request.state, request.state),
        "category": row.category,
        "centre": {"code": row.centre_code, "name": row.centre_name},
        "department": row.department,
        "channel": request.channel,
        "channel_label": channels.get(request.channel, request.channel),
        "summary": summary(request.text, 60),
        "created_at": _iso(request.created_at),
        "response_due_at": _iso(request.response_due_at),
        "resolution_due_at": _iso(request.resolution_due_at),
        "acted": request.first_action_at is not None,
        "overdue": overdue,
        "handler": row.handler,
    }


def list_requests(
    session: Session, scope: queries.QueueScope, asked: QueueQuery, now: datetime
) -> dict[str, Any]:
    """The JSON of GET /api/console/requests: counts of every tab and one page of one."""
    counts = queries.queue_counts(session=session, scope=scope, filters=asked.filters, now=now)
    rows = queries.queue_page(
        session=session,
        scope=scope,
        tab=asked.tab,
        filters=asked.filters,
        now=now,
        offset=(asked.page - 1) * asked.per_page,
        limit=asked.per_page,
    )
    channels = channel_labels()
    return {
        "tab": asked.tab,
        "total": counts[asked.tab],
        "page": asked.page,
        "per_page": asked.per_page,
        "pages": max(1, -(-counts[asked.tab] // asked.per_page)),
        "counts": counts,
        "items": [_item(row, now, channels) for row in rows],
    }


async def queue_page(request: Request) -> Response:
    """GET /console: the queue page (to the login page without a session)."""
    user = await require_page_user(request)
    if isinstance(user, Response):
        return user
    return console_page("queue.html")


async def api_requests(request: Request) -> Response:
    """GET /api/console/requests: the user's queue (see the README for the parameters)."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    runtime = runtime_of(request)
    params = dict(request.query_params)

    def read() -> dict[str, Any] | BadQuery | None:
        with session_scope(read_engine(runtime.engine)) as session:
            scope = scope_of(session, user)
            if scope is None:
                return None
            try:
                asked = parse_query(session, scope, params)
            except BadQuery as bad:
                return bad
            return list_requests(session, scope, asked, utcnow())

    answer = await asyncio.to_thread(read)
    if answer is None:
        return _error(403, "no_queue", "queue.no_queue")
    if isinstance(answer, BadQuery):
        return _error(400, "bad_request", answer.key, **answer.params)
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


def options_of(session: Session, scope: queries.QueueScope) -> dict[str, Any]:
    """The JSON of GET /api/console/options: what the filters and the bulk actions offer."""
    centres = centres_in_scope(session, scope)
    default_id = centre_scope.default_centre_id(session)
    if scope.centre is not None:
        # Departments serve their centre's whole subtree: those above the user's centre and
        # those of the centres the user sees, nearest first.
        above = [i for i in queries.ancestor_ids(scope.centre) if i != scope.centre.id]
        ids = [c.id for c in centres if c.id is not None] + above
        departments = list(
            queries.departments_of_centres(
                session=session, centre_ids=ids, default_centre_id=default_id
            )
        )
    else:
        assert scope.department_id is not None
        own = queries.get_department(session=session, department_id=scope.department_id)
        departments = [own] if own is not None else []
    categories = queries.list_categories(session=session)
    return {
        "tabs": [{"key": key, "label": label} for key, label in tab_labels(scope).items()],
        "states": [{"key": state.value, "label": STATE_LABELS[state.value]} for state in State],
        "categories": [{"id": c.id, "name": c.name} for c in categories],
        "departments": [{"id": d.id, "name": d.name} for d in departments],
        "centres": [{"code": c.code, "name": c.name} for c in centres],
        "channels": [{"key": key, "label": label} for key, label in channel_labels().items()],
        "per_page": PER_PAGE,
        "max_per_page": MAX_PER_PAGE,
    }


async def api_options(request: Request) -> Response:
    """GET /api/console/options: tabs, states, categories, departments, centres in scope and
    channels, for the filters and the bulk 转单's department picker."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    runtime = runtime_of(request)

    def read() -> dict[str, Any] | None:
        with session_scope(read_engine(runtime.engine)) as session:
            scope = scope_of(session, user)
            return options_of(session, scope) if scope is not None else None

    answer = await asyncio.to_thread(read)
    if answer is None:
        return _error(403, "no_queue", "queue.no_queue")
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


# --- live updates -------------------------------------------------------------------------


class TooManyStreams(Exception):
    """The account already holds as many streams as allowed in this process."""


class StreamCounter:
    """Open streams per account in this process; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}

    def open_streams(self, account_id: int) -> int:
        """How many streams the account holds open."""
        with self._lock:
            return self._open.get(account_id, 0)

    def hold(self, account_id: int, limit: int) -> Callable[[], None]:
        """Counts one stream of `account_id`; the function returned gives it back (once).

        Raises:
            TooManyStreams: The account already holds `limit` (0: no limit).
        """
        with self._lock:
            held = self._open.get(account_id, 0)
            if limit > 0 and held >= limit:
                raise TooManyStreams
            self._open[account_id] = held + 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                left = self._open.get(account_id, 1) - 1
                if left > 0:
                    self._open[account_id] = left
                else:
                    self._open.pop(account_id, None)

        return release


#: The streams open in this process.
STREAMS = StreamCounter()


def _changed(event_id: int) -> str:
    return f"id: {event_id}\nevent: changed\ndata: {json.dumps({'event_id': event_id})}\n\n"


async def api_stream(request: Request) -> Response:
    """GET /api/console/stream: server-sent events, `event: changed` (data {"event_id": N})
    whenever a request in the user's scope changed; a comment every HEARTBEAT seconds; the
    stream ends when the server stops or the session ends (`event: ended`). A browser that
    reconnects with Last-Event-ID hears about what changed meanwhile."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    runtime = runtime_of(request)
    engine = read_engine(runtime.engine)

    def newest_and_scope() -> tuple[int, queries.QueueScope | None]:
        with session_scope(engine) as session:
            return queries.newest_event_id(session=session), scope_of(session, user)

    newest, scope = await asyncio.to_thread(newest_and_scope)
    if scope is None:
        return _error(403, "no_queue", "queue.no_queue")
    resumed = request.headers.get("last-event-id", "")
    last = int(resumed) if resumed.isascii() and resumed.isdigit() and len(resumed) < 19 else newest
    last = min(last, newest)
    limit = runtime.settings.console_streams_per_account
    try:
        release = STREAMS.hold(user.account_id, limit)
    except TooManyStreams:
        response = _error(429, "too_many_streams", "queue.too_many_streams")
        response.headers["Retry-After"] = "10"
        return response
    poll = runtime.settings.console_stream_poll
    wake.listen(runtime.settings.redis_url)

    def look(after: int) -> tuple[int, bool]:
        with session_scope(engine) as session:
            upto = queries.newest_event_id(session=session)
            if upto <= after:
                return upto, False
            return upto, queries.changed_in_scope(
                session=session, scope=scope, after=after, upto=upto
            )

    async def events() -> AsyncIterator[str]:
        nonlocal last
        # How long the browser waits before reconnecting after a lost connection.
        yield "retry: 3000\n: connected\n\n"
        loop = asyncio.get_running_loop()
        beat = loop.time() + HEARTBEAT
        with wake.CHANGES.hold(user.account_id, per_identity=0, total=0) as waiter:
            while not request.app.state.stopping:
                # Cleared before reading: a change committed after this read sets it.
                waiter.event.clear()
                upto, changed = await asyncio.to_thread(look, last)
                if changed:
                    yield _changed(upto)
                last = max(last, upto)
                if loop.time() >= beat:
                    # Read without counting as a use: an open page alone does not keep a
                    # session alive.
                    if await current_user(request, touch=False) is None:
                        yield "event: ended\ndata: {}\n\n"
                        return
                    yield ": heartbeat\n\n"
                    beat = loop.time() + HEARTBEAT
                # No thread is held while waiting: only a timer and the event.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        waiter.event.wait(), timeout=max(0.0, min(poll, beat - loop.time()))
                    )
        yield "event: ended\ndata: {}\n\n"

    return _Stream(events(), release)


class _Stream(StreamingResponse):
    """A stream of server-sent events that gives its slot back however it ends (also when
    the client left before the first byte)."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


ROUTES: list[BaseRoute] = [
    Route("/console", queue_page, methods=["GET"]),
    Route("/api/console/requests", api_requests, methods=["GET"]),
    Route("/api/console/options", api_options, methods=["GET"]),
    Route("/api/console/stream", api_stream, methods=["GET"]),
]
