"""The WeChat official account (公众号) channel: callbacks in plain and safe mode, customer-service
and template messages, the custom menu, and fetching media before WeChat forgets them.

Receiving: `parse_callback` checks the signature (constant time) and the timestamp (replays older
than five minutes are refused), refuses XML with a DOCTYPE or entities, decrypts a safe-mode
body, and returns the message's natural key (MsgId; FromUserName+CreateTime+Event for events),
the chat (the sender's openid) and the inner XML. `check_nonce` refuses a (timestamp, nonce)
already seen with another body (the plain-mode signature does not cover the body). The app
stores the message in the inbox and answers "success" at once; everything else goes out later
as customer-service messages.

Sending: within 48 hours of the person's last message and at most 5 messages since, a
customer-service text; otherwise (or when WeChat answers 45015/45047) a template message, if one
is configured. The access token is cached in Redis when there is one, so every process shares
it, and refreshed by one process at a time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from xml.etree.ElementTree import Element

import requests
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as safe_fromstring
from sqlmodel import Session
from wechatpy import parse_message
from wechatpy.client import WeChatClient
from wechatpy.crypto import PrpCrypto
from wechatpy.events import (
    BaseEvent,
    ClickEvent,
    ScanEvent,
    SubscribeEvent,
    SubscribeScanEvent,
    SubscribeScanProductEvent,
    UnsubscribeEvent,
)
from wechatpy.exceptions import APILimitedException, WeChatClientException
from wechatpy.messages import (
    ImageMessage,
    LinkMessage,
    LocationMessage,
    ShortVideoMessage,
    TextMessage,
    VideoMessage,
    VoiceMessage,
)
from wechatpy.session.memorystorage import MemoryStorage

from bot import media
from bot.channels.base import PermanentSendError, TransientSendError, Unreachable
from bot.handlers import Outcome
from bot.inbound import Inbound
from bot.media import MEDIA_GONE
from bot.texts import Rendered, text
from storage import queries
from storage.models import Attachment, OutboxMessage, Person, utcnow
from storage.settings import Settings
from workflow import deadlines
from workflow.service import Tx

logger = logging.getLogger(__name__)

#: The channel's name in people and inbox rows.
CHANNEL = "wechat"

#: Largest callback body accepted, in bytes.
CALLBACK_BODY_LIMIT = 1024 * 1024

#: A callback whose timestamp is further than this from now (seconds) is a replay.
REPLAY_WINDOW_SECONDS = 300

#: Longest nonce and timestamp accepted (WeChat's are about ten digits each); together they
#: are the key of the callback's remembered nonce.
MAX_NONCE = 64
MAX_TIMESTAMP = 20

#: Prefix of the Redis keys remembering callback nonces.
NONCE_PREFIX = "redesk:wechat:nonce:"

#: WeChat's customer-service window: hours after the person's last message ...
WINDOW_HOURS = 48
#: ... and messages within it.
WINDOW_MESSAGES = 5

#: Longest text of one customer-service message (characters).
MAX_MESSAGE = 2000

#: The custom menu's CLICK keys -> what a click means.
MENU_REPORT = "REDESK_REPORT"
MENU_MINE = "REDESK_MINE"
MENU_HELP = "REDESK_HELP"

#: The menu `redesk wechat menu` creates.
MENU: dict[str, Any] = {
    "button": [
        {"type": "click", "name": "我要反映", "key": MENU_REPORT},
        {"type": "click", "name": "我的诉求", "key": MENU_MINE},
        {"type": "click", "name": "帮助", "key": MENU_HELP},
    ]
}

#: What WeChat's callback is answered with once the message is stored.
SUCCESS = "success"

#: WeChat error codes.
ERR_SYSTEM_BUSY = -1
ERR_INVALID_OPENID = 40003
ERR_INVALID_MEDIA = 40007
ERR_REQUIRE_SUBSCRIBE = 43004
ERR_FREQUENCY = 45009
ERR_OUT_OF_TIME = 45015
ERR_OUT_OF_COUNT = 45047

#: Seconds to wait after WeChat's frequency limit (45009).
FREQUENCY_BACKOFF = 60.0

#: Seconds to wait for WeChat's token endpoint.
TOKEN_TIMEOUT = 10

#: Refreshes of the token for one call before giving up.
MAX_TOKEN_RETRIES = 2

#: wechatpy's events of someone starting to follow the account: a plain subscribe, one by
#: scanning a parametric QR code (EventKey qrscene_<scene>, which wechatpy turns into
#: SubscribeScanEvent) and one from a product page (SubscribeScanProductEvent). None of the
#: latter two is a subclass of SubscribeEvent, hence the tuple. They are welcomed.
FOLLOW_EVENTS: tuple[type[BaseEvent], ...] = (
    SubscribeEvent, SubscribeScanEvent, SubscribeScanProductEvent,
)

#: Events handled in the person's order; every other event wechatpy knows (VIEW, LOCATION
#: reports, card, invoice, device and verification notices ...) is stored as done and ignored.
HANDLED_EVENTS: tuple[type[BaseEvent], ...] = (
    *FOLLOW_EVENTS, ScanEvent, UnsubscribeEvent, ClickEvent,
)

#: Longest entry scene kept (WeChat's scene_str is at most 64 characters).
MAX_SCENE = 64

#: Voice Format -> content type (the file's extension comes from it).
VOICE_TYPES: dict[str, str] = {
    "amr": "audio/amr", "speex": "audio/speex", "mp3": "audio/mpeg", "silk": "audio/silk",
}



class CallbackRefused(Exception):
    """A callback that is answered with `status` and not processed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Parsed:
    """A verified, decrypted callback."""

    natural_key: str
    #: The sender's openid, or None for what is stored and ignored (VIEW clicks and the like).
    chat: str | None
    xml: str
    #: The QR code scene a subscribe or SCAN event names, if any.
    scene: str | None = None


# --- receiving ------------------------------------------------------------------------------


def signature(*parts: str) -> str:
    """WeChat's signature: SHA-1 of the sorted parts, concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def check_request(settings: Settings, params: dict[str, str], *, now: float | None = None) -> None:
    """Checks the plain signature and the timestamp of a callback or verification request.

    Raises:
        CallbackRefused: 403 for a bad signature, a stale timestamp (replay) or no channel.
    """
    token = settings.wechat_token or ""
    if not settings.wechat_on or not token:
        raise CallbackRefused(403, "wechat is off")
    timestamp, nonce = params.get("timestamp", ""), params.get("nonce", "")
    if not _same(params.get("signature", ""), signature(token, timestamp, nonce)):
        raise CallbackRefused(403, "bad signature")
    if not nonce or len(nonce) > MAX_NONCE:
        raise CallbackRefused(403, "bad nonce")
    if not timestamp.isdigit() or len(timestamp) > MAX_TIMESTAMP:
        raise CallbackRefused(403, "bad timestamp")
    sent_at = int(timestamp)
    if abs((time.time() if now is None else now) - sent_at) > REPLAY_WINDOW_SECONDS:
        raise CallbackRefused(403, "stale timestamp")


def check_nonce(settings: Settings, session: Session, params: dict[str, str], body: bytes,
                *, now: float | None = None) -> None:
    """Remembers a callback's (timestamp, nonce) with a digest of its body, for as long as
    its timestamp is accepted, and refuses the pair again with another body.

    The plain-mode signature covers the token, the timestamp and the nonce but not the body:
    without this, anyone who saw one signed URL could post any message under it for the
    whole replay window. The same body again is WeChat retrying; the inbox's natural key
    already makes that harmless, so it passes. In Redis when configured (SET NX, shared by
    every process), else in the database (a unique key, so of two concurrent posts exactly
    one is first). Call it after `check_request`, in the transaction that stores the message.

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
        client = _redis(settings.redis_url)
        ttl = max(1, expires - int(current))
        earlier: str | None = None
        if not client.set(NONCE_PREFIX + key, digest, nx=True, ex=ttl):
            found = client.get(NONCE_PREFIX + key)
            # Expired in between: its timestamp is refused by check_request from now on.
            earlier = found.decode() if found is not None else ""
    else:
        earlier = queries.remember_nonce(
            session=session, key=key, digest=digest,
            expires_at=datetime.fromtimestamp(expires, UTC),
            now=datetime.fromtimestamp(current, UTC))
    if earlier is not None and not _same(earlier, digest):
        raise CallbackRefused(403, "nonce reused with another body")


_redis_clients: dict[str, Any] = {}
_redis_lock = threading.Lock()


def _redis(url: str) -> Any:
    """This process's Redis client for `url` (made once)."""
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=5)
            _redis_clients[url] = client
        return client


def _xml(body: bytes | str) -> Element:
    """Parses XML with no DOCTYPE, entities or external references allowed."""
    try:
        root: Element = safe_fromstring(body, forbid_dtd=True, forbid_entities=True,
                                        forbid_external=True)
        return root
    except (DefusedXmlException, ParseError, ValueError) as exc:
        raise CallbackRefused(400, f"malformed XML ({type(exc).__name__})") from None


def _field(root: Element, name: str) -> str:
    child = root.find(name)
    return (child.text or "").strip() if child is not None else ""


def parse_callback(settings: Settings, params: dict[str, str], body: bytes) -> Parsed:
    """A callback's natural key, chat and inner XML, after every check.

    Raises:
        CallbackRefused: 403 (signature, msg_signature, replay), 400 (malformed or hostile XML,
            a body that does not decrypt, missing fields).
    """
    check_request(settings, params)
    root = _xml(body)
    if settings.wechat_aes_key:
        if params.get("encrypt_type") != "aes":
            raise CallbackRefused(400, "plain body in safe mode")
        encrypted = _field(root, "Encrypt")
        if not encrypted:
            raise CallbackRefused(400, "no Encrypt element")
        expected = signature(settings.wechat_token or "", params.get("timestamp", ""),
                             params.get("nonce", ""), encrypted)
        if not _same(params.get("msg_signature", ""), expected):
            raise CallbackRefused(403, "bad msg_signature")
        inner = decrypt(settings, encrypted)
        root = _xml(inner)
    else:
        try:
            inner = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackRefused(400, "not UTF-8") from None
    if root.tag != "xml":
        raise CallbackRefused(400, "not a WeChat message")
    sender, kind, created = (_field(root, "FromUserName"), _field(root, "MsgType").lower(),
                             _field(root, "CreateTime"))
    if not sender or not kind or not created.isdigit() or len(sender) > 128:
        raise CallbackRefused(400, "missing fields")
    scene: str | None = None
    if kind == "event" or kind.startswith("device_"):
        # Device notices (device_text, device_event) are events to wechatpy as well.
        event = _field(root, "Event").lower() or (kind if kind != "event" else "")
        if not event:
            raise CallbackRefused(400, "missing fields")
        # FromUserName + CreateTime (DESIGN §2), with the event and its key, so that two
        # different menu clicks within one second are two messages (a double tap is one).
        key = f"{sender}:{created}:{event}:{_field(root, 'EventKey')[:60]}"
        message = _parse(inner)
        chat = sender if isinstance(message, HANDLED_EVENTS) else None
        scene = scene_of(message)
    else:
        msg_id = _field(root, "MsgId")
        if not msg_id.isdigit():
            raise CallbackRefused(400, "missing fields")
        key, chat = msg_id, sender
    return Parsed(natural_key=key[:200], chat=chat, xml=inner, scene=scene)


def _parse(xml: str) -> Any:
    """wechatpy's message or event object of an XML body already checked by defusedxml."""
    try:
        return parse_message(xml)
    except Exception:  # noqa: BLE001 - xmltodict and wechatpy's fields raise many kinds
        raise CallbackRefused(400, "not a WeChat message") from None


def scene_of(message: Any) -> str | None:
    """The parametric QR code scene a subscribe (qrscene_<scene>) or SCAN (<scene>) names.

    A product-page subscribe's EventKey (scanbarcode|..., scanimage|...) names a product, not
    an entry, and gives None.
    """
    if isinstance(message, SubscribeScanEvent | ScanEvent):
        scene = (message.scene_id or "").strip()
        return scene[:MAX_SCENE] or None
    return None


def decrypt(settings: Settings, encrypted: str) -> str:
    """A safe-mode message's inner XML.

    Raises:
        CallbackRefused: 400 when it does not decrypt or was meant for another account.
    """
    try:
        return str(PrpCrypto(_aes_key(settings)).decrypt(encrypted, settings.wechat_app_id))
    except Exception:  # noqa: BLE001 - wechatpy raises anything from bad padding to bad app id
        raise CallbackRefused(400, "body does not decrypt") from None


def _aes_key(settings: Settings) -> bytes:
    return base64.b64decode((settings.wechat_aes_key or "") + "=")


def store_callback(session: Session, parsed: Parsed) -> bool:
    """Stores a parsed callback in the inbox; False for a repeat (WeChat's retry)."""
    inbox_id = queries.add_inbox(session=session, channel=CHANNEL, natural_key=parsed.natural_key,
                                 chat_id=parsed.chat or "-", payload={"xml": parsed.xml},
                                 status="pending" if parsed.chat else "done",
                                 scene=parsed.scene)
    return inbox_id is not None


def to_inbound(chat_id: str, payload: dict[str, Any]) -> Inbound:
    """An inbox row's message as the channel-neutral Inbound."""
    message = parse_message(payload["xml"])
    base: dict[str, Any] = {"channel": CHANNEL, "chat_id": chat_id}
    if isinstance(message, TextMessage):
        return Inbound(**base, text=message.content or "", origin=f"wx:{message.id}")
    if isinstance(message, ImageMessage):
        return Inbound(**base, attachments=[{"kind": "photo", "file_id": message.media_id,
                                             "url": message.image}])
    if isinstance(message, VoiceMessage):
        voice_format = (message.format or "amr").strip().lower()
        return Inbound(**base, text=(message.recognition or "").strip(),
                       attachments=[{"kind": "voice", "file_id": message.media_id,
                                     "mime_type": VOICE_TYPES.get(voice_format,
                                                                  f"audio/{voice_format}")}])
    if isinstance(message, VideoMessage | ShortVideoMessage):
        return Inbound(**base, attachments=[{"kind": "video", "file_id": message.media_id}])
    if isinstance(message, LocationMessage):
        latitude, longitude = message.location
        return Inbound(**base, attachments=[{"kind": "location", "latitude": float(latitude),
                                             "longitude": float(longitude),
                                             "label": message.label or None}])
    if isinstance(message, LinkMessage):
        parts = [message.title, message.description, message.url]
        return Inbound(**base, text="\n".join(part for part in parts if part))
    if isinstance(message, FOLLOW_EVENTS):
        return Inbound(**base, left=False, scene=scene_of(message))
    if isinstance(message, ScanEvent):
        return Inbound(**base, rescanned=True, scene=scene_of(message))
    if isinstance(message, UnsubscribeEvent):
        return Inbound(**base, left=True)
    if isinstance(message, ClickEvent):
        return Inbound(**base, text=_MENU_TEXT.get(message.key or "", "帮助"), pressed=True)
    if isinstance(message, BaseEvent):
        return Inbound(**base, ignored=True)
    return Inbound(**base, unsupported=True)


#: A menu click -> the command it stands for ("" asks for the request itself).
_MENU_TEXT: dict[str, str] = {MENU_REPORT: "", MENU_MINE: "查询", MENU_HELP: "帮助"}


class WeChatHooks:
    """Subscribe (plain or by QR code), SCAN, unsubscribe, the 我要反映 click, and the
    customer-service window."""

    def prepare(self, tx: Tx, person: Person, inbound: Inbound) -> Inbound | None:
        """The Inbound to handle, or None when the channel answered it itself."""
        if inbound.ignored:
            return None
        person.last_inbound_at = tx.now
        person.window_sent = 0
        if inbound.scene:
            # The last entry the person came through (a centre's QR code poster).
            person.scene = inbound.scene
            person.scene_at = tx.now
        tx.session.add(person)
        if inbound.rescanned:
            tx.notify(person, "wechat.welcome_back")
            return None
        if inbound.left is True:
            person.unreachable = True
            return None
        if inbound.left is False:
            tx.notify(person, "wechat.welcome")
            return Inbound(channel=CHANNEL, chat_id=inbound.chat_id, text="帮助", pressed=True)
        if inbound.pressed and not inbound.text:
            tx.notify(person, "wechat.report")
            return None
        return inbound

    def finish(self, tx: Tx, person: Person, inbound: Inbound, outcome: Outcome) -> None:
        """Nothing to do after the handlers on WeChat (no cards to edit)."""


# --- sending --------------------------------------------------------------------------------


class RedeskWeChatClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's client on REDESK_WECHAT_API_URL, with one token refresh at a time.

    wechatpy refreshes the token when WeChat answers 40001/42001 and retries once. Several
    threads or processes seeing the same stale token would each fetch a new one, and each
    fetch invalidates the last (a storm); here a refresh happens under a lock (in Redis when
    there is one), and a caller that finds a newer token than the one it used takes that one.
    """

    def __init__(self, settings: Settings, session: Any, lock: Callable[[], Any]) -> None:
        super().__init__(settings.wechat_app_id, settings.wechat_app_secret, session=session,
                         timeout=10, auto_retry=True)
        self.API_BASE_URL = f"{settings.wechat_api_url}/cgi-bin/"
        self._token_url = f"{settings.wechat_api_url}/cgi-bin/token"
        self._lock = lock
        self._local = threading.local()

    @property
    def access_token(self) -> str:
        """The shared token (fetched when there is none); remembered as the one this thread
        used, so that a refresh can tell whether someone else already replaced it."""
        token = self.session.get(self.access_token_key)
        if not token:
            self.fetch_access_token()
            token = self.session.get(self.access_token_key)
        self._local.used = token
        return str(token)

    def fetch_access_token(self) -> dict[str, Any]:
        """Fetches a new token unless another thread or process has just done it."""
        used = getattr(self._local, "used", None)
        with self._lock():
            current = self.session.get(self.access_token_key)
            if current and current != used:
                return {"access_token": current}
            response = self._http.get(self._token_url, timeout=TOKEN_TIMEOUT, params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self.secret,
            })
            try:
                result: dict[str, Any] = response.json()
            except ValueError:
                raise WeChatClientException(None, f"token: HTTP {response.status_code}",
                                            client=self, response=response) from None
            if result.get("errcode"):
                raise WeChatClientException(result["errcode"], result.get("errmsg"),
                                            client=self, response=response)
            token = result.get("access_token")
            if not isinstance(token, str) or not token:
                raise WeChatClientException(None, "token: no access_token", client=self,
                                            response=response)
            expires_in = int(result.get("expires_in") or 7200)
            # Kept a minute less than WeChat's lifetime, so it is replaced before it expires.
            self.session.set(self.access_token_key, token, max(expires_in - 60, 60))
            self._local.used = token
            return result

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """wechatpy's request; its refresh-and-retry on 40001/42001 is bounded here (it would
        recurse for ever if WeChat kept refusing fresh tokens)."""
        depth = getattr(self._local, "depth", 0)
        if depth > MAX_TOKEN_RETRIES:
            raise WeChatClientException(40001, "access_token refused after refreshing",
                                        client=self)
        self._local.depth = depth + 1
        try:
            return super()._request(method, url_or_endpoint, **kwargs)
        finally:
            self._local.depth = depth


@contextmanager
def _thread_lock(lock: threading.Lock) -> Iterator[None]:
    with lock:
        yield


_clients: dict[tuple[Any, ...], RedeskWeChatClient] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings) -> RedeskWeChatClient:
    """This process's client for the configured account (made once)."""
    key = (settings.wechat_app_id, settings.wechat_api_url, settings.redis_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if settings.redis_url:
                import redis
                from wechatpy.session.redisstorage import RedisStorage

                shared = redis.Redis.from_url(settings.redis_url)
                storage: Any = RedisStorage(shared, prefix="redesk:wechat")

                def lock() -> Any:
                    return shared.lock("redesk:wechat:token-lock", timeout=30,
                                       blocking_timeout=30)
            else:
                storage = MemoryStorage()
                local = threading.Lock()

                def lock() -> Any:
                    return _thread_lock(local)
            client = RedeskWeChatClient(settings, storage, lock)
            _clients[key] = client
        return client


def close_clients() -> None:
    """Forgets the clients, the API's and those of the nonce memory (tests, shutdown)."""
    with _clients_lock:
        _clients.clear()
    with _redis_lock:
        for client in _redis_clients.values():
            client.close()
        _redis_clients.clear()


def commands_footer(message: Rendered) -> str:
    """The message's text with its buttons as commands to copy (WeChat has no buttons)."""
    if not message.buttons:
        return message.text
    lines = [button.action for button in message.buttons]
    return f"{message.text}\n\n{text('wechat.commands')}\n" + "\n".join(lines)


def split_text(message: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Parts of at most `limit` characters, cut at line ends where possible."""
    parts: list[str] = []
    rest = message
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        parts.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    return [*parts, rest] if rest or not parts else parts


class WeChatSender:
    """Sends outbox messages as customer-service messages, or template messages outside the
    window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def client(self) -> RedeskWeChatClient:
        """This process's client."""
        return get_client(self.settings)

    def send(self, session: Session, person: Person, message: Rendered,
             row: OutboxMessage) -> None:
        """Sends one outbox message (its parts in order; a retry continues where it stopped)."""
        parts = split_text(commands_footer(message))
        done = int(row.params.get("_parts_sent", 0))
        if row.params.get("_template"):
            self._send_template(person, message, row)
            return
        for index in range(done, len(parts)):
            if not self._window_open(person):
                self._send_template(person, message, row)
                return
            part = parts[index]
            try:
                self._call(partial(self.client.message.send_text, person.external_id, part))
            except _WindowClosed:
                self._send_template(person, message, row)
                return
            except TransientSendError:
                row.params = {**row.params, "_parts_sent": index}
                raise
            person.window_sent += 1
            session.add(person)
            row.params = {**row.params, "_parts_sent": index + 1}

    def _window_open(self, person: Person) -> bool:
        seen = person.last_inbound_at
        if seen is None or person.window_sent >= WINDOW_MESSAGES:
            return False
        return (utcnow() - seen).total_seconds() < WINDOW_HOURS * 3600

    def _send_template(self, person: Person, message: Rendered, row: OutboxMessage) -> None:
        template = self.settings.wechat_template_id
        if not template:
            raise PermanentSendError(
                "outside the 48-hour window and REDESK_WECHAT_TEMPLATE_ID is not set")
        row.params = {**row.params, "_template": True}
        values = template_values(message, row)
        data = {field: {"value": values[name]}
                for field, name in self.settings.wechat_template_fields.items()}
        try:
            self._call(partial(self.client.message.send_template, person.external_id, template,
                               data))
        except _WindowClosed as exc:
            raise PermanentSendError(str(exc)) from None

    def _call(self, request: Callable[[], Any]) -> Any:
        """One API call with WeChat's errors mapped to send errors."""
        try:
            return request()
        except APILimitedException as exc:
            raise TransientSendError(f"WeChat 45009: {exc.errmsg}",
                                     retry_after=FREQUENCY_BACKOFF) from None
        except WeChatClientException as exc:
            code = exc.errcode
            if code in (ERR_OUT_OF_TIME, ERR_OUT_OF_COUNT):
                raise _WindowClosed(f"WeChat {code}: {exc.errmsg}") from None
            if code in (ERR_REQUIRE_SUBSCRIBE, ERR_INVALID_OPENID):
                raise Unreachable(f"WeChat {code}: {exc.errmsg}") from None
            if code is None or code == ERR_SYSTEM_BUSY:
                raise TransientSendError(f"WeChat: {exc.errmsg or 'HTTP error'}") from None
            raise PermanentSendError(f"WeChat {code}: {exc.errmsg}") from None
        except requests.RequestException as exc:
            raise TransientSendError(f"WeChat: {type(exc).__name__}") from None


class _WindowClosed(Exception):
    """WeChat refused a customer-service message: outside the window (45015 / 45047)."""


def template_values(message: Rendered, row: OutboxMessage) -> dict[str, str]:
    """What may fill a template's fields (REDESK_WECHAT_TEMPLATE_FIELDS)."""
    lines = [line for line in message.text.splitlines() if line.strip()]
    return {
        "title": (lines[0] if lines else "")[:60],
        "number": str(row.params.get("number") or "—"),
        "status": str(row.params.get("state_label") or text("wechat.template_status")),
        "text": "\n".join(lines[1:] or lines)[:180],
        "time": deadlines.format_local(utcnow()),
    }


# --- media ----------------------------------------------------------------------------------


def fetch_media(settings: Settings, attachment: Attachment) -> str:
    """Downloads one attachment into REDESK_MEDIA_DIR; its stored path, or MEDIA_GONE.

    Raises:
        TransientSendError: WeChat could not be reached (try again later).
    """
    try:
        response = get_client(settings).media.download(attachment.file_id)
    except WeChatClientException as exc:
        if exc.errcode in (None, ERR_SYSTEM_BUSY, ERR_FREQUENCY):
            raise TransientSendError(f"WeChat media: {exc.errmsg}") from None
        logger.warning("WeChat media of attachment %s is gone (%s)", attachment.id, exc.errcode)
        return MEDIA_GONE
    except requests.RequestException as exc:
        raise TransientSendError(f"WeChat media: {type(exc).__name__}") from None
    if isinstance(response, dict):
        # A video: WeChat answers with a URL to download it from.
        url = response.get("video_url")
        if not isinstance(url, str) or not url:
            return MEDIA_GONE
        try:
            response = requests.get(url, timeout=60)
        except requests.RequestException as exc:
            raise TransientSendError(f"WeChat video: {type(exc).__name__}") from None
    kind = response.headers.get("Content-Type", "").split(";")[0].strip()
    if response.status_code >= 500:
        raise TransientSendError(f"WeChat media: HTTP {response.status_code}")
    if response.status_code != 200 or kind in ("application/json", "text/plain"):
        logger.warning("WeChat media of attachment %s is gone", attachment.id)
        return MEDIA_GONE
    named = _FILENAME.search(response.headers.get("Content-Disposition", ""))
    return media.store(settings.media_dir, attachment, response.content, kind,
                       file_name=named.group(1) if named else None)


#: The file name in a Content-Disposition header (media/get names its files).
_FILENAME = re.compile(r'filename="?([^";]+)"?')
