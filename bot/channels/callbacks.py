"""What the signed XML callback receivers (WeChat, WeCom) share.

A platform that POSTs signed XML to a callback URL is checked the same way whatever it is:

- `CallbackRefused`: a callback answered with its status and not processed;
- `check_fresh`: the nonce and timestamp are well formed and the timestamp is within
  `REPLAY_WINDOW_SECONDS` of now (either way, for clock skew); `same` compares signatures in
  constant time;
- `safe_xml` / `field`: XML parsed with no DOCTYPE, entities or external references (before
  any other parser sees it), and a child element's text;
- `check_nonce`: a (timestamp, nonce) remembered with a digest of its body for as long as the
  timestamp is accepted, and refused again with another body (in Redis when configured, else
  in the database);
- `receive`: the POST endpoint's flow: checks, reads the body (up to a limit), parses, then
  stores in the inbox in the transaction that remembers the nonce, and only then answers;
  the chat's inbox is enqueued for a new message.

A platform's receive module keeps what is its own: its signature scheme, decryption, natural
keys and `to_inbound`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as safe_fromstring
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from bot import metrics
from bot.http import BodyTooLarge, enqueue_inbound, read_body, runtime_of
from storage import queries
from storage.db import session_scope
from storage.settings import Settings

if TYPE_CHECKING:
    from bot.runtime import Runtime

logger = logging.getLogger(__name__)


#: A callback whose timestamp is further than this from now (seconds) is a replay.
REPLAY_WINDOW_SECONDS = 300

#: Longest nonce and timestamp accepted (the platforms' are about ten digits each); together
#: they are the key of the callback's remembered nonce.
MAX_NONCE = 64
MAX_TIMESTAMP = 20

#: Prefix of the Redis keys remembering callback nonces (every channel's: a channel that
#: shares the memory prefixes its nonces with its name).
NONCE_PREFIX = "redesk:wechat:nonce:"


class CallbackRefused(Exception):
    """A callback that is answered with `status` and not processed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def same(given: str, expected: str) -> bool:
    """Whether two signatures are equal, compared in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


def check_fresh(params: dict[str, str], *, now: float | None = None) -> None:
    """Checks the shape of the nonce and the timestamp, and that the timestamp is fresh.

    Raises:
        CallbackRefused: 403 for a missing or malformed nonce or timestamp, or a stale one.
    """
    timestamp, nonce = params.get("timestamp", ""), params.get("nonce", "")
    if not nonce or len(nonce) > MAX_NONCE:
        raise CallbackRefused(403, "bad nonce")
    if not timestamp.isdigit() or len(timestamp) > MAX_TIMESTAMP:
        raise CallbackRefused(403, "bad timestamp")
    if abs((time.time() if now is None else now) - int(timestamp)) > REPLAY_WINDOW_SECONDS:
        raise CallbackRefused(403, "stale timestamp")


def safe_xml(body: bytes | str) -> Element:
    """Parses XML with no DOCTYPE, entities or external references allowed.

    Raises:
        CallbackRefused: 400 for malformed or hostile XML.
    """
    try:
        root: Element = safe_fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        return root
    except (DefusedXmlException, ParseError, ValueError) as exc:
        raise CallbackRefused(400, f"malformed XML ({type(exc).__name__})") from None


def field(root: Element, name: str) -> str:
    """The stripped text of `root`'s child `name` ("" when there is none)."""
    child = root.find(name)
    return (child.text or "").strip() if child is not None else ""


# --- the nonce memory -----------------------------------------------------------------------

_redis_clients: dict[str, Any] = {}
_redis_lock = threading.Lock()


def redis_client(url: str) -> Any:
    """This process's Redis client of the nonce memory for `url` (made once)."""
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=5)
            _redis_clients[url] = client
        return client


def close_redis_clients() -> None:
    """Closes and forgets the nonce memory's Redis clients (tests, shutdown)."""
    with _redis_lock:
        for client in _redis_clients.values():
            client.close()
        _redis_clients.clear()


def check_nonce(
    settings: Settings,
    session: Session,
    params: dict[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> None:
    """Remembers a callback's (timestamp, nonce) with a digest of its body, for as long as
    its timestamp is accepted, and refuses the pair again with another body.

    A signature over the token, the timestamp and the nonce does not cover the body: without
    this, anyone who saw one signed URL could post any message under it for the whole replay
    window. The same body again is the platform retrying; the inbox's natural key already
    makes that harmless, so it passes. In Redis when configured (SET NX, shared by every
    process), else in the database (a unique key, so of two concurrent posts exactly one is
    first). Call it after the timestamp is checked, in the transaction that stores the message.

    Raises:
        CallbackRefused: 403 when the pair was seen with another body.
    """
    timestamp, nonce = params.get("timestamp", ""), params.get("nonce", "")
    key = f"{timestamp}:{nonce}"
    digest = hashlib.sha256(body).hexdigest()
    # Accepted until `timestamp + window` (the window reaches into the future too, for clock
    # skew), so remembered until then, not for a window from now.
    expires = int(timestamp) + REPLAY_WINDOW_SECONDS + 1
    current = time.time() if now is None else now
    if settings.redis_url:
        client = redis_client(settings.redis_url)
        ttl = max(1, expires - int(current))
        earlier: str | None = None
        if not client.set(NONCE_PREFIX + key, digest, nx=True, ex=ttl):
            found = client.get(NONCE_PREFIX + key)
            # Expired in between: its timestamp is refused from now on.
            earlier = found.decode() if found is not None else ""
    else:
        earlier = queries.remember_nonce(
            session=session,
            key=key,
            digest=digest,
            expires_at=datetime.fromtimestamp(expires, UTC),
            now=datetime.fromtimestamp(current, UTC),
        )
    if earlier is not None and not same(earlier, digest):
        raise CallbackRefused(403, "nonce reused with another body")


# --- the endpoint ---------------------------------------------------------------------------


class Parsed(Protocol):
    """What a channel's parser returns: the chat to enqueue (None: stored and ignored)."""

    @property
    def chat(self) -> str | None: ...


ParsedT = TypeVar("ParsedT", bound=Parsed)


def refused(channel: str, label: str, what: str, exc: CallbackRefused) -> Response:
    """Counts, logs (the reason only: never the body, which holds personal data) and answers
    a refused callback or verification."""
    metrics.INBOUND.labels(channel, "forbidden" if exc.status == 403 else "bad").inc()
    logger.warning("%s %s refused (%d): %s", label, what, exc.status, exc.reason)
    return PlainTextResponse(exc.reason, status_code=exc.status)


async def receive(
    request: Request,
    *,
    channel: str,
    label: str,
    limit: int,
    check: Callable[[Settings, dict[str, str]], None],
    parse: Callable[[Settings, dict[str, str], bytes], ParsedT],
    store: Callable[[Session, ParsedT], bool],
    success: str,
    complete: Callable[[Runtime, ParsedT], ParsedT] | None = None,
    nonce_key: Callable[[str], str] = str,
) -> Response:
    """A callback POST: `check` the query (before the body is read), read the body (413 over
    `limit`), `parse` it, `complete` it (outside the storing transaction: a slow platform
    call holds no transaction open); then, in one transaction, remember its nonce
    (`nonce_key` of the nonce: a channel's own space in the shared memory) and `store` it.
    Answers `success` once stored (a repeat too, changing nothing), 403/400 for a refused
    callback and 503 when it cannot be stored (the platform retries). A new message with a
    chat is enqueued.
    """
    runtime = runtime_of(request)
    params = dict(request.query_params)
    try:
        check(runtime.settings, params)
        raw = await read_body(request, limit)
        parsed = parse(runtime.settings, params, raw)
    except BodyTooLarge:
        metrics.INBOUND.labels(channel, "too_large").inc()
        return PlainTextResponse("body too large", status_code=413)
    except CallbackRefused as exc:
        return refused(channel, label, "callback", exc)

    def stored() -> bool:
        done = parsed if complete is None else complete(runtime, parsed)
        with session_scope(runtime.engine) as session:
            # In the storing transaction: a refused reuse rolls back with nothing stored.
            check_nonce(
                runtime.settings, session, {**params, "nonce": nonce_key(params["nonce"])}, raw
            )
            return store(session, done)

    try:
        is_new = await asyncio.to_thread(stored)
    except CallbackRefused as exc:
        return refused(channel, label, "callback", exc)
    except Exception:
        logger.exception("Could not store a %s message", label)
        return PlainTextResponse("unavailable", status_code=503)
    metrics.INBOUND.labels(channel, "stored" if is_new else "duplicate").inc()
    if parsed.chat is not None and is_new:
        await enqueue_inbound(channel, parsed.chat)
    return PlainTextResponse(success)
