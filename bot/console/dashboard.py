"""The leaders' dashboard (数据看板): the page, its figures and the downloads.

GET /api/console/stats answers exactly the JSON of `redesk stats --format json` for the same
filters (workflow/stats.py computes both), always for one centre's subtree: the one asked for
with ?centre=, else the user's own. GET /api/console/export answers the file `redesk export`
writes for the same filters (workflow/export.py writes both), masked unless ?unmasked=1, and
puts every download on the admin audit under "console:<username>".

Leaders and admins may open all of it, for their centre's subtree (a user with no centre
recorded belongs to the default centre, as in chat: workflow/scope.py); a centre outside that
subtree is answered 404 like an unknown one. Everyone else gets 403.
"""

from __future__ import annotations

import asyncio
import html
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlmodel import Session
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from bot.console.auth import (
    ConsoleUser,
    console_page,
    json_error,
    require_page_user,
    require_user,
)
from bot.http import client_address, runtime_of
from bot.runtime import Runtime
from bot.texts import action_label, channel_labels, state_label
from bot.texts import text as t
from storage import queries
from storage.dates import parse_date
from storage.db import read_engine, session_scope
from storage.models import Centre, Role, utcnow
from workflow import accounts, scope, stats
from workflow import export as exporting
from workflow.deadlines import LOCAL_TZ

#: Who may open the dashboard and its API.
DASHBOARD_ROLES: frozenset[str] = frozenset({Role.LEADER, Role.ADMIN})

#: What ?by= (or ?trend=) may group by: every grouping of `redesk stats --by`.
GROUPS: tuple[str, ...] = stats.GROUPS

#: What ?trend= may be: a grouping by period.
TRENDS: tuple[str, ...] = ("day", "week", "month")

#: The content type of each download format.
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

#: ?unmasked= values that ask for personal data, and those that do not.
YES: frozenset[str] = frozenset({"1", "true", "yes"})
NO: frozenset[str] = frozenset({"", "0", "false", "no"})


class Refused(Exception):
    """A request answered with a JSON error."""

    def __init__(self, status: int, code: str, key: str, **params: Any) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.key = key
        self.params = params

    def response(self) -> Response:
        """The JSON error {"error", "message"}."""
        return json_error(self.status, self.code, self.key, **self.params)


@dataclass(frozen=True)
class Filters:
    """The query string of a stats or export call, checked."""

    period: stats.Period
    centre: str | None
    by: str | None
    category: str | None
    department: str | None


def _day(request: Request, name: str) -> date | None:
    value = request.query_params.get(name, "").strip()
    if not value:
        return None
    try:
        return parse_date(value)
    except ValueError:
        raise Refused(400, "bad_date", "dashboard.bad_date", field=name) from None


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    if len(value) > 200:
        raise Refused(400, "bad_field", "api.bad_field", field=name)
    return value or None


def filters_of(request: Request) -> Filters:
    """The filters of the query string.

    Raises:
        Refused: A malformed date, --to before --from, an unknown grouping, or ?by= and
            ?trend= that disagree (400).
    """
    start, end = _day(request, "from"), _day(request, "to")
    if start is not None and end is not None and end < start:
        raise Refused(400, "bad_period", "dashboard.bad_period")
    by, trend = _text(request, "by"), _text(request, "trend")
    if by is not None and by not in GROUPS:
        raise Refused(400, "bad_field", "dashboard.bad_by")
    if trend is not None and trend not in TRENDS:
        raise Refused(400, "bad_field", "dashboard.bad_trend")
    if by is not None and trend is not None and by != trend:
        raise Refused(400, "bad_field", "dashboard.by_and_trend")
    return Filters(
        period=stats.Period(start, end),
        centre=_text(request, "centre"),
        by=by or trend,
        category=_text(request, "category"),
        department=_text(request, "department"),
    )


def centre_in_scope(session: Session, user: ConsoleUser, code: str | None) -> Centre:
    """The centre a call is about: `code`'s when it is in the user's subtree, else the user's.

    Raises:
        Refused: No centre has `code`, or it is outside the user's subtree (404, alike).
    """
    own_id = user.centre_id if user.centre_id is not None else scope.default_centre_id(session)
    own = queries.get_centre(session=session, centre_id=own_id)
    if own is None:
        raise Refused(404, "not_found", "dashboard.no_centre")
    if code is None:
        return own
    found = queries.get_centre_by_code(session=session, code=code)
    if found is None or own_id not in queries.ancestor_ids(found):
        raise Refused(404, "not_found", "dashboard.no_centre")
    return found


async def _dashboard_user(request: Request) -> ConsoleUser | Response:
    """The logged-in leader or admin, or the API's 401 / 403."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    if user.role not in DASHBOARD_ROLES:
        return json_error(403, "forbidden", "dashboard.forbidden")
    return user


def forbidden_page() -> Response:
    """The page for someone logged in who may not see the dashboard (403)."""
    page = (
        '<!doctype html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(t('dashboard.title'))}</title>\n"
        '<link rel="stylesheet" href="/static/console/console.css">\n'
        '<link rel="stylesheet" href="/static/console/dashboard.css">\n</head>\n<body>\n'
        f'<main class="dashboard-forbidden"><h1>{html.escape(t("dashboard.forbidden"))}</h1>\n'
        f'<p><a href="/console">{html.escape(t("dashboard.back_to_queue"))}</a></p></main>\n'
        "</body>\n</html>\n"
    )
    return HTMLResponse(page, status_code=403, headers={"Cache-Control": "no-store"})


# --- routes ---------------------------------------------------------------------------------


async def dashboard_page(request: Request) -> Response:
    """GET /console/dashboard: the page (leaders and admins; others 403)."""
    user = await require_page_user(request)
    if isinstance(user, Response):
        return user
    if user.role not in DASHBOARD_ROLES:
        return forbidden_page()
    return console_page("dashboard.html")


def _figures(runtime: Runtime, user: ConsoleUser, chosen: Filters) -> str:
    with Session(runtime.engine) as session:
        centre = centre_in_scope(session, user, chosen.centre)
    try:
        report = stats.compute(
            read_engine(runtime.engine),
            chosen.period,
            by=chosen.by,
            category=chosen.category,
            department=chosen.department,
            centre=centre.code,
            now=stats.utcnow(),
        )
    except stats.StatsError:
        raise Refused(404, "not_found", "dashboard.unknown_filter") from None
    # As `redesk stats --format json` prints it (admin_scripts/report.py to_json).
    return json.dumps(report.as_json(), ensure_ascii=False, indent=2)


async def stats_api(request: Request) -> Response:
    """GET /api/console/stats?from=&to=&centre=&by=&trend=&category=&department=: the JSON of
    `redesk stats --format json --centre <centre>` with the same filters."""
    user = await _dashboard_user(request)
    if isinstance(user, Response):
        return user
    try:
        chosen = filters_of(request)
        body = await asyncio.to_thread(_figures, runtime_of(request), user, chosen)
    except Refused as refused:
        return refused.response()
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def labels() -> exporting.Labels:
    """The labels people read in an export (as `redesk export` writes them)."""
    return exporting.Labels(state=state_label, action=action_label, channels=channel_labels())


@dataclass(frozen=True)
class Download:
    """A written export, in a directory of its own removed once it is sent."""

    directory: Path
    path: Path


def _export(
    runtime: Runtime,
    user: ConsoleUser,
    chosen: Filters,
    *,
    format_: str,
    unmasked: bool,
    address: str,
) -> Download:
    now = utcnow()
    start, end = chosen.period.bounds()
    with Session(exporting.reader(runtime.engine)) as session:
        centre = centre_in_scope(session, user, chosen.centre)
        try:
            plan = exporting.plan(
                session, start=start, end=end, centre=centre.code, xlsx=format_ == "xlsx"
            )
        except exporting.TooManyRows:
            raise Refused(400, "too_many_rows", "dashboard.too_many_rows") from None
        except exporting.UnknownCentre:
            raise Refused(404, "not_found", "dashboard.no_centre") from None
        # On the record before anything is written, like `redesk export --include-pii`.
        with session_scope(runtime.engine) as audit_session:
            accounts.audit(
                audit_session,
                username=user.username,
                action="export_pii" if unmasked else "export",
                address=address,
                at=now,
                **{
                    "from": chosen.period.start.isoformat() if chosen.period.start else None,
                    "to": chosen.period.end.isoformat() if chosen.period.end else None,
                    "format": format_,
                    "centre": centre.code,
                    "rows": plan.total,
                    "unmasked": unmasked,
                },
            )
        directory = Path(tempfile.mkdtemp(prefix="redesk-console-export-"))
        stamp = now.astimezone(LOCAL_TZ).strftime("%Y%m%d-%H%M%S")
        path = directory / f"redesk-export-{stamp}.{format_}"
        try:
            sink = exporting.open_sink(format_, str(path), with_centre=plan.with_centre)
            try:
                exporting.write_rows(session, plan, sink, include_pii=unmasked, labels=labels())
                sink.finish()
            except BaseException:
                sink.abort()
                raise
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    return Download(directory=directory, path=path)


async def export_api(request: Request) -> Response:
    """GET /api/console/export?format=csv|xlsx&from=&to=&centre=&unmasked=: the file of
    `redesk export --centre <centre>` for the same period (masked unless unmasked=1),
    recorded on the admin audit."""
    user = await _dashboard_user(request)
    if isinstance(user, Response):
        return user
    format_ = request.query_params.get("format", "csv").strip().lower() or "csv"
    unmasked = request.query_params.get("unmasked", "").strip().lower()
    try:
        if format_ not in exporting.FORMATS:
            raise Refused(400, "bad_field", "dashboard.bad_format")
        if unmasked not in YES | NO:
            raise Refused(400, "bad_field", "api.bad_field", field="unmasked")
        chosen = filters_of(request)
        runtime = runtime_of(request)
        address = client_address(request, runtime.settings.trusted_proxy_networks)
        download = await asyncio.to_thread(
            _export,
            runtime,
            user,
            chosen,
            format_=format_,
            unmasked=unmasked in YES,
            address=address,
        )
    except Refused as refused:
        return refused.response()
    return FileResponse(
        download.path,
        media_type=MEDIA_TYPES[format_],
        filename=download.path.name,
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(shutil.rmtree, download.directory, ignore_errors=True),
    )


ROUTES: list[BaseRoute] = [
    Route("/console/dashboard", dashboard_page, methods=["GET"]),
    Route("/api/console/stats", stats_api, methods=["GET"]),
    Route("/api/console/export", export_api, methods=["GET"]),
]
