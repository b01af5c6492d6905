"""The ASGI app: the web desk and its API, health and metrics, and the routes of every channel
that is on (bot/channels/registry.py)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, col, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import actors, console, metrics, scheduler, wake
from bot.channels import web
from bot.channels.registry import CHANNELS
from bot.http import BodyTooLarge, client_address, read_body, runtime_of
from bot.ratelimit import RateLimiter, make_limiter
from bot.runtime import Runtime, get_runtime
from bot.texts import inline
from bot.texts import text as t
from storage import queries
from storage.db import read_engine, session_scope
from storage.models import InboxMessage, Person, Role, utcnow
from storage.settings import Settings
from workflow import centres

logger = logging.getLogger(__name__)

#: Where the desk page and its script live.
STATIC_DIR = Path(__file__).parent / "static"

#: Largest body accepted by the web API, in bytes.
WEB_BODY_LIMIT = 64 * 1024

#: Longest long poll, in seconds.
MAX_WAIT = 30.0

#: Largest `after` a long poll accepts: seq is a 64-bit integer at most.
MAX_SEQ = 2**63 - 1

#: Retry-After of a long poll refused because too many are open, in seconds.
POLL_RETRY_AFTER = 5

#: The window REDESK_WEB_SESSIONS_PER_MINUTE counts new identities in, in seconds.
SESSION_WINDOW = 60.0

#: The window REDESK_FLOOD_PER_MINUTE counts messages in.
FLOOD_WINDOW = timedelta(minutes=1)

#: Content types a cross-site HTML form can send without a CORS preflight; the JSON API
#: refuses them, so no other site's page can post to it (it needs no cookie either).
FORM_CONTENT_TYPES: tuple[str, ...] = (
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DeskApp(Starlette):
    """Starlette with SecurityHeaders outermost: even the 500 of an unexpected error, which
    Starlette's own error middleware answers outside every user middleware, carries them."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def error(status: int, key: str, **params: Any) -> JSONResponse:
    """A JSON error answer with a sentence from the catalogue."""
    return JSONResponse({"error": t(key, **params)}, status_code=status)


def _runtime(request: Request) -> Runtime:
    return runtime_of(request)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _form_posted(request: Request) -> bool:
    """Whether the body was sent as an HTML form (or text/plain) rather than as JSON."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind in FORM_CONTENT_TYPES


@dataclass(frozen=True)
class Flooded:
    """An identity over REDESK_FLOOD_PER_MINUTE: when it may send again, in seconds."""

    retry_after: int


def flood_wait(session: Session, person: Person, *, limit: int, now: datetime) -> Flooded | None:
    """Whether a web requester already sent `limit` messages in the last minute.

    Counted from the inbox, so every copy of `redesk run` sees the same count. Staff (bound
    by invitation) are not limited; 0 switches the limit off.
    """
    if limit <= 0 or person.role != Role.REQUESTER:
        return None
    since = now - FLOOD_WINDOW
    count, oldest = session.execute(
        select(func.count(), func.min(col(InboxMessage.received_at))).where(
            col(InboxMessage.channel) == web.CHANNEL,
            col(InboxMessage.chat_id) == person.external_id,
            col(InboxMessage.received_at) > since,
        )
    ).one()
    if count < limit or oldest is None:
        return None
    if oldest.tzinfo is None:  # SQLite hands back naive UTC values in aggregates
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return Flooded(max(1, math.ceil((oldest + FLOOD_WINDOW - now).total_seconds())))


async def _json_body(request: Request, limit: int) -> Any:
    raw = await read_body(request, limit)
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: deeply nested arrays, which fit well within the body limit.
        return None


def _session_limiter(request: Request) -> RateLimiter:
    """The limiter of new identities: shared through Redis when there is one."""
    limiter: RateLimiter = request.app.state.session_limiter
    return limiter


def _sessions_wait(request: Request, address: str, per_minute: int) -> int | None:
    """Books one new identity for `address`; None when allowed, else seconds to wait.

    One slot every 60/N seconds, booked up to a minute ahead: N identities at once, then one
    every 60/N seconds, so no address makes more than N in any minute.
    """
    interval = SESSION_WINDOW / per_minute
    within = SESSION_WINDOW - interval
    booked, wait = _session_limiter(request).try_reserve(
        [(f"web:session:{address}", interval)], within
    )
    return None if booked else max(1, math.ceil(wait - within))


async def web_session(request: Request) -> Response:
    """POST /api/web/session: a new web chat identity and its token.

    429 with Retry-After once the client address made REDESK_WEB_SESSIONS_PER_MINUTE
    identities in the last minute.
    """
    runtime = _runtime(request)
    per_minute = runtime.settings.web_sessions_per_minute
    if per_minute > 0:
        address = client_address(request, runtime.settings.trusted_proxy_networks)
        try:
            wait = await asyncio.to_thread(_sessions_wait, request, address, per_minute)
        except Exception:
            logger.exception("Could not check the new-identity limit")
            return error(503, "api.unavailable")
        if wait is not None:
            metrics.INBOUND.labels("web", "sessions_limited").inc()
            response = error(429, "api.sessions_limited", limit=per_minute)
            response.headers["Retry-After"] = str(wait)
            return response
    if _form_posted(request):
        return error(415, "api.bad_content_type")
    try:
        body = await _json_body(request, WEB_BODY_LIMIT)
    except BodyTooLarge:
        return error(413, "api.too_large")
    if not isinstance(body, dict):
        return error(400, "api.bad_json")
    name = body.get("name") or ""
    if not isinstance(name, str) or len(name) > 100:
        return error(400, "api.bad_field", field="name")
    code = body.get("centre")
    if code is not None and (not isinstance(code, str) or len(code) > web.MAX_CENTRE):
        return error(400, "api.bad_field", field="centre")

    def create() -> tuple[str, dict[str, str] | None] | list[dict[str, str]]:
        with session_scope(runtime.engine) as session:
            centre = centres.by_code(session, code) if code else None
            if code and centre is None:
                # Nobody is made with a centre that does not exist: the answer is the choice.
                return [{"code": c.code, "name": c.name} for c in centres.choices(session)]
            token = web.create_identity(
                session,
                name=name,
                days=runtime.settings.web_session_days,
                centre_id=centre.id if centre else None,
            )
            return token, ({"code": centre.code, "name": centre.name} if centre else None)

    try:
        created = await asyncio.to_thread(create)
    except Exception:
        logger.exception("Could not create a web identity")
        return error(503, "api.unavailable")
    if isinstance(created, list):
        return JSONResponse(
            {"error": t("api.unknown_centre", code=inline(str(code))[:40]), "centres": created},
            status_code=400,
        )
    token, entered = created
    return JSONResponse(
        {"token": token} | ({"centre": entered} if entered else {}), status_code=201
    )


def _already_stored(session: Session, natural_key: str) -> bool:
    """Whether a web message with this natural key is in the inbox (a client's retry)."""
    found = session.execute(
        select(col(InboxMessage.id)).where(
            col(InboxMessage.channel) == web.CHANNEL, col(InboxMessage.natural_key) == natural_key
        )
    ).first()
    return found is not None


def _identity(runtime: Runtime, token: str) -> tuple[int, str] | None:
    with session_scope(read_engine(runtime.engine)) as session:
        person = queries.person_for_web_token(session=session, token=token, now=utcnow())
        if person is None or person.id is None:
            return None
        return person.id, person.external_id


async def web_post_message(request: Request) -> Response:
    """POST /api/web/messages: stores the message in the inbox, then answers 202."""
    runtime = _runtime(request)
    token = _bearer(request)
    if token is None:
        return error(401, "api.unauthorized")
    if _form_posted(request):
        metrics.INBOUND.labels("web", "bad").inc()
        return error(415, "api.bad_content_type")
    try:
        body = await _json_body(request, WEB_BODY_LIMIT)
    except BodyTooLarge:
        metrics.INBOUND.labels("web", "too_large").inc()
        return error(413, "api.too_large")
    if body is None:
        return error(400, "api.bad_json")
    try:
        client_id, payload = web.parse_body(body, runtime.settings.max_text_length)
    except web.BadMessage as exc:
        metrics.INBOUND.labels("web", "bad").inc()
        return error(400, "api.bad_field", field=str(exc))
    address = client_address(request, runtime.settings.trusted_proxy_networks)
    if address:
        # Failed 绑定 are also counted per client address: a new web identity costs nothing,
        # an address does (behind a proxy: REDESK_TRUSTED_PROXIES, see client_address).
        payload["address"] = address

    limit = runtime.settings.flood_per_minute

    def store() -> tuple[str, bool] | Flooded | None:
        with session_scope(runtime.engine) as session:
            now = utcnow()
            found = queries.person_for_web_token(session=session, token=token, now=now)
            if found is None or found.id is None:
                return None
            # The person's row lock makes count-then-insert one step: two POSTs of the same
            # identity cannot both see room for one more message.
            person = queries.get_person(session=session, person_id=found.id, lock=True)
            assert person is not None
            chat_id = person.external_id
            natural_key = f"{chat_id}:{client_id}"
            flooded = flood_wait(session, person, limit=limit, now=now)
            if flooded is not None and not _already_stored(session, natural_key):
                # Refused before it is stored: nothing the identity sent earlier is touched.
                return flooded
            inbox_id = queries.add_inbox(
                session=session,
                channel=web.CHANNEL,
                natural_key=natural_key,
                chat_id=chat_id,
                payload=payload,
            )
        return chat_id, inbox_id is not None

    try:
        stored = await asyncio.to_thread(store)
    except Exception:
        logger.exception("Could not store a web message")
        return error(503, "api.unavailable")
    if stored is None:
        return error(401, "api.unauthorized")
    if isinstance(stored, Flooded):
        metrics.INBOUND.labels("web", "flooded").inc()
        response = error(429, "api.rate_limited", limit=limit)
        response.headers["Retry-After"] = str(stored.retry_after)
        return response
    chat_id, is_new = stored
    metrics.INBOUND.labels("web", "stored" if is_new else "duplicate").inc()
    if is_new:
        await asyncio.to_thread(actors.enqueue_inbound, web.CHANNEL, chat_id)
    return JSONResponse({"id": client_id}, status_code=202)


async def _watch_disconnect(request: Request, gone: asyncio.Event, waiter: wake.Waiter) -> None:
    """Sets `gone` and wakes the poll when the client goes away, so its slot is freed."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            waiter.event.set()
            return


async def web_get_messages(request: Request) -> Response:
    """GET /api/web/messages?after=N&wait=S: the identity's messages after N (long poll).

    A waiting poll is woken by the delivery of a message to the identity (and looks at the
    database every REDESK_WEB_POLL_FALLBACK seconds in case a wake-up was lost). 429 with
    Retry-After when the identity already holds REDESK_WEB_POLLS_PER_IDENTITY polls, or the
    process REDESK_WEB_POLLS_TOTAL.
    """
    runtime = _runtime(request)
    token = _bearer(request)
    if token is None:
        return error(401, "api.unauthorized")
    try:
        after = int(request.query_params.get("after", "0"))
        if not -MAX_SEQ <= after <= MAX_SEQ:
            # Beyond a 64-bit integer the database driver fails (a 500) instead of answering.
            raise ValueError("after is out of range")
        wait = float(request.query_params.get("wait", "0"))
        if wait != wait:
            # NaN passes min/max unchanged and would make the long poll endless.
            raise ValueError("wait is not a number")
        wait = min(max(wait, 0.0), MAX_WAIT)
    except ValueError:
        return error(400, "api.bad_field", field="after/wait")
    identity = await asyncio.to_thread(_identity, runtime, token)
    if identity is None:
        return error(401, "api.unauthorized")
    person_id, _ = identity

    def fetch() -> list[dict[str, Any]]:
        with session_scope(read_engine(runtime.engine)) as session:
            rows = queries.web_messages_after(session=session, person_id=person_id, after=after)
            return [
                {"seq": r.seq, "text": r.text, "buttons": r.buttons}
                | ({"updates": r.updates} if r.updates is not None else {})
                for r in rows
            ]

    if wait <= 0:
        return JSONResponse({"messages": await asyncio.to_thread(fetch)})
    wake.listen(runtime.settings.redis_url)
    try:
        with wake.HUB.hold(
            person_id,
            per_identity=runtime.settings.web_polls_per_identity,
            total=runtime.settings.web_polls_total,
        ) as waiter:
            gone = asyncio.Event()
            watcher = asyncio.create_task(_watch_disconnect(request, gone, waiter))
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + wait
                fallback = runtime.settings.web_poll_fallback
                while True:
                    # Cleared before reading: a delivery committed after this read sets it.
                    waiter.event.clear()
                    messages = await asyncio.to_thread(fetch)
                    remaining = deadline - loop.time()
                    if messages or remaining <= 0 or request.app.state.stopping or gone.is_set():
                        return JSONResponse({"messages": messages})
                    # No thread is held while waiting: only a timer and the event.
                    try:
                        await asyncio.wait_for(
                            waiter.event.wait(), timeout=min(fallback, remaining)
                        )
                    except TimeoutError:
                        if loop.time() >= deadline:
                            # Nobody woke it: nothing was delivered (a lost wake-up only
                            # delays the message to the client's next poll).
                            return JSONResponse({"messages": []})
            finally:
                watcher.cancel()
    except wake.TooManyPolls:
        metrics.INBOUND.labels("web", "polls_limited").inc()
        response = error(429, "api.too_many_polls")
        response.headers["Retry-After"] = str(POLL_RETRY_AFTER)
        return response


async def web_logout(request: Request) -> Response:
    """POST /api/web/logout: the Bearer token expires now; 204, and 401 with it afterwards."""
    runtime = _runtime(request)
    token = _bearer(request)
    if token is None:
        return error(401, "api.unauthorized")

    def expire() -> int | None:
        with session_scope(runtime.engine) as session:
            return queries.expire_web_token(session=session, token=token, now=utcnow())

    try:
        ended = await asyncio.to_thread(expire)
    except Exception:
        logger.exception("Could not end a web token")
        return error(503, "api.unavailable")
    if ended is None:
        return error(401, "api.unauthorized")
    logger.info("Web identity %s logged out", ended)
    return Response(status_code=204)


async def web_me(request: Request) -> Response:
    """GET /api/web/me: the identity's role, so the desk offers the quick buttons it can use."""
    runtime = _runtime(request)
    token = _bearer(request)
    if token is None:
        return error(401, "api.unauthorized")

    def role() -> str | None:
        with session_scope(read_engine(runtime.engine)) as session:
            person = queries.person_for_web_token(session=session, token=token, now=utcnow())
            return None if person is None else str(person.role)

    found = await asyncio.to_thread(role)
    if found is None:
        return error(401, "api.unauthorized")
    return JSONResponse({"role": found})


async def desk(request: Request) -> Response:
    """GET /desk: the web desk page."""
    return FileResponse(STATIC_DIR / "desk.html", media_type="text/html; charset=utf-8")


async def root(request: Request) -> Response:
    """GET /: to the desk."""
    return RedirectResponse("/desk")


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 when the database (and Redis, when configured) answer.

    Its JSON also says whether a scheduler runs ("scheduler": "ok", "missing" when none has
    held the lease for a while, with "scheduler_seen_seconds_ago", or "embedded"); a missing
    scheduler does not make the process unhealthy, it makes the deployment unsafe.
    """
    runtime = _runtime(request)

    def check() -> dict[str, Any]:
        status: dict[str, Any] = {"database": "ok"}
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        if runtime.settings.redis_url:
            import redis

            client = redis.Redis.from_url(runtime.settings.redis_url, socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            status["redis"] = "ok"
            seen = scheduler.last_seen(runtime.settings.redis_url)
            status["scheduler"] = "missing" if seen.missing else "ok"
            status["scheduler_seen_seconds_ago"] = None if seen.age is None else round(seen.age)
        else:
            status["scheduler"] = "embedded"
        return status

    try:
        status = await asyncio.to_thread(check)
    except Exception as exc:  # any failure means unhealthy
        logger.warning("Health check failed: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok", **status})


#: Client addresses counted as this machine: /metrics without a token in production (a
#: request that carries X-Forwarded-For is never local).
LOOPBACK: frozenset[str] = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def _metrics_refusal(request: Request, settings: Settings) -> Response | None:
    """Why /metrics is not answered to this client, or None when it may read them.

    With REDESK_METRICS_TOKEN set, the Bearer token must match (compared in constant time).
    Without it, in production, only loopback clients are answered: a reverse proxy on the same
    machine that does not set X-Forwarded-For is loopback too, so it must not route /metrics
    (README, deployment).
    """
    if settings.metrics_token:
        given = _bearer(request) or ""
        if not hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            refused = error(401, "api.metrics_unauthorized")
            refused.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return refused
        return None
    # Local means a client on this machine talking to redesk directly: a request that a proxy
    # forwarded (X-Forwarded-For) comes from elsewhere, whatever the proxy's own address.
    client = client_address(request, settings.trusted_proxy_networks)
    forwarded = bool(request.headers.get("x-forwarded-for"))
    if settings.env == "production" and (client not in LOOPBACK or forwarded):
        return error(403, "api.metrics_local_only")
    return None


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: Prometheus text format (token or loopback rules: _metrics_refusal)."""
    refused = _metrics_refusal(request, _runtime(request).settings)
    if refused is not None:
        return refused
    body = await asyncio.to_thread(metrics.render_metrics, _runtime(request))
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def create_app(runtime: Runtime | None = None) -> Starlette:
    """The ASGI application for `runtime` (the process's own by default)."""
    routes: list[BaseRoute] = [
        Route("/", root),
        Route("/desk", desk),
        Route("/api/web/session", web_session, methods=["POST"]),
        Route("/api/web/messages", web_post_message, methods=["POST"]),
        Route("/api/web/messages", web_get_messages, methods=["GET"]),
        Route("/api/web/me", web_me, methods=["GET"]),
        Route("/api/web/logout", web_logout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        *console.routes(),
    ]
    runtime = runtime or get_runtime()
    # Each channel brings its routes; a channel that is off serves none (404).
    for channel in CHANNELS:
        if channel.enabled(runtime.settings):
            routes.extend(channel.routes())
    app = DeskApp(routes=routes)
    app.state.runtime = runtime
    #: New web identities booked per client address (connects to Redis on first use).
    app.state.session_limiter = make_limiter(app.state.runtime.settings.redis_url)
    #: Set when the server is asked to stop: open long polls answer at once.
    app.state.stopping = False
    return app
