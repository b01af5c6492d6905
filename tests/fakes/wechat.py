"""A small local fake of the WeChat official account (公众号) API, for tests that drive wechatpy.

Two halves:

* a server (``tests.fakes.scaffold``: a real HTTP server on 127.0.0.1 in a background thread)
  answering the ``/cgi-bin/`` API with WeChat's JSON and error codes;
* builders of the inbound callbacks WeChat's servers POST to the developer's URL (plain and safe
  mode), and checkers of the passive replies the developer answers with. The safe-mode crypto is
  implemented here with ``cryptography`` directly (not with wechatpy's), so the product's use of
  wechatpy is checked against an independent implementation.

    with FakeWeChat() as fake:
        client = MyWeChatClient(fake.appid, fake.app_secret)      # see "Pointing wechatpy" below
        fake.text(openid, "你好")              # the user writes: opens the 48-hour window
        client.message.send_text(openid, "收到")
        assert fake.texts(openid) == ["收到"]
        # REDESK_WECHAT_* = fake.settings_env()

Endpoints (``{fake.url}/cgi-bin/...``; ``access_token`` in the query string; JSON bodies in
UTF-8 whatever the Content-Type; answers ``application/json; encoding=utf-8`` like WeChat):

    GET  token?grant_type=client_credential&appid=..&secret=..
    POST message/custom/send        text, image, voice, video, news, link (+ music, mpnews, ...)
    POST message/template/send
    POST menu/create   GET menu/get   GET menu/delete
    GET  media/get?media_id=..      the bytes; video media answer {"video_url": ...} like WeChat
    POST qrcode/create              {"ticket", "url"} (+ "expire_seconds" for temporary codes);
                                    the same permanent scene gives the same ticket
    GET  showqrcode?ticket=..       the code's image, a PNG (no access_token, like WeChat)

Pointing wechatpy (1.8.x) at the fake -- ``WeChatClient.fetch_access_token`` and
``client.media.get_url`` hard-code https://api.weixin.qq.com, so:

    class Client(WeChatClient):
        def fetch_access_token(self):
            return self._fetch_access_token(url=f"{api}/cgi-bin/token", params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})
    client = Client(appid, secret)
    client.API_BASE_URL = f"{api}/cgi-bin/"        # the instance attribute is used by every call

What wechatpy 1.8.18 does with the answers -- for the adapter author:

    answer                                exception raised by the client method
    ------------------------------------  ---------------------------------------------------------
    errcode 0                             none; the method returns the decoded JSON dict
    errcode 40001 / 40014 / 42001         NOT raised: with auto_retry (default) wechatpy fetches a
                                          new token and repeats the call, recursively and without a
                                          limit (a token endpoint that keeps handing out bad
                                          tokens ends in RecursionError). With auto_retry=False:
                                          WeChatClientException.
    errcode 45009                         wechatpy.exceptions.APILimitedException (a subclass of
                                          WeChatClientException), errcode 45009
    any other errcode (-1, 45015, ...)    wechatpy.exceptions.WeChatClientException; exc.errcode is
                                          an int, exc.errmsg the text (with WeChat's " rid: ..."
                                          suffix, see below)
    HTTP 4xx/5xx (fail_next(status=500))  WeChatClientException with errcode None and errmsg None;
                                          exc.response.status_code is the status
    client timeout (delay_next)           requests.exceptions.ReadTimeout -- NOT wrapped; neither
                                          are ConnectionError & co: catch requests.RequestException
    token endpoint errors (40013/40125)   WeChatClientException from fetch_access_token, which
                                          wechatpy calls lazily from the first API call
    media/get of a binary                 client.media.download returns the requests.Response
                                          (``.content``, ``.headers``); an errcode JSON raises; a
                                          video answers a dict {"video_url": ...} instead

Other wechatpy facts: ``_fetch_access_token`` passes no timeout to requests (the client's
``timeout`` is not used for the token fetch); the token is cached in the client's session with
``expires_at`` measured by the real ``time.time()``, so moving the fake's clock makes the next
call answer 42001 and wechatpy fetches again (``token_fetches`` shows it).

Behaviour worth knowing:

* Error messages carry WeChat's ``" rid: xxxxxxxx-xxxxxxxx-xxxxxxxx"`` suffix (``rid=False``
  turns it off): match on ``errcode``, never on the whole ``errmsg``.
* Tokens: each fetch issues a new token; earlier tokens keep working ``old_token_grace`` seconds
  (then 40001); every token expires after ``token_expires_in`` seconds of the fake clock (42001);
  ``expire_tokens()`` expires them all at once. A missing token answers 41001.
* Users: an openid is known once a callback is built for it, or through ``interacted``,
  ``follower`` or ``unsubscribe``; an unknown openid answers 40003. What opens the 48-hour window
  is what WeChat counts as an interaction: a message, subscribe, SCAN, CLICK and the scancode_*
  menu events -- not VIEW, LOCATION or unsubscribe. At most ``window_messages`` customer-service
  messages are accepted per interaction (45047), none after ``window_hours`` (45015) or to a user
  who unsubscribed (43004). Template messages ignore the window but not the subscription.
* Order of the checks of message/custom/send: openid (40003), subscription (43004), window
  (45015), count (45047), msgtype (40008), content (44004 empty, 45002 longer than
  ``max_text_length`` characters, 40007 unknown media_id). A refused message is not counted.
* Template fields named like WeChat's new templates are length-checked like WeChat
  (``thing``: 20 characters, ``phrase``: 5, ``character_string``/``number``/``letter``: 32, ...):
  47003 "argument invalid! data.thing1.value invalid". Missing or empty: "... is empty".
* Time: business time (48-hour window, token and media expiry, CreateTime) follows ``now()`` =
  ``clock()`` + the offset moved by ``advance()``; the frequency limit and ``Call.at`` use
  ``time.monotonic()``.
* ``fail_next``/``delay_next`` apply to every API path except the token endpoint unless
  ``paths`` names them (``paths="token"`` targets the token endpoint). ``delay_next`` performs
  the call first and answers late (the message IS sent although the client times out);
  ``before=True`` delays first.
* Callbacks (``Callback``): query ``signature``, ``timestamp``, ``nonce``, ``openid`` (WeChat sends
  the openid in plain mode too) and in safe mode ``encrypt_type=aes`` and ``msg_signature``. The
  GET verification request (``verify_params``) is never encrypted for an official account.
  Building a callback records the user's interaction at build time, not when it is posted.
* Bugs in the fake itself answer HTTP 500 and are collected in ``fake.errors``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import itertools
import json
import re
import secrets
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tests.fakes.scaffold import (
    ALNUM,
    FakeServer,
    Request,
    Response,
    Script,
    aes_key_bytes,
    sha1_signature,
    targets,
    wx_decrypt,
    wx_encrypt,
)
from tests.fakes.scaffold import cdata as _cdata
from tests.fakes.scaffold import corrupt as _corrupt
from tests.fakes.scaffold import random_aes_key as random_aes_key

#: WeChat's errmsg for the codes the fake answers.
ERRMSG: dict[int, str] = {
    -1: "system error",
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40020: "invalid button url size",
    40022: "invalid sub button level",
    40023: "invalid sub button size",
    40024: "invalid sub button type",
    40025: "invalid sub button name size",
    40026: "invalid sub button key size",
    40027: "invalid sub button url size",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43004: "require subscribe",
    44003: "empty news data",
    44004: "empty content",
    45002: "content size out of limit",
    45008: "article size out of limit",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    46003: "menu no exist",
    47001: "data format error",
    47003: "argument invalid!",
    40097: "invalid args",
}

#: Custom-service message types accepted by message/custom/send.
CUSTOM_TYPES = frozenset(
    {
        "text",
        "image",
        "voice",
        "video",
        "news",
        "link",
        "music",
        "mpnews",
        "mpnewsarticle",
        "msgmenu",
        "wxcard",
        "miniprogrampage",
    }
)

#: Menu button types, and those that need a ``key``.
BUTTON_TYPES = frozenset(
    {
        "click",
        "view",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
        "media_id",
        "view_limited",
        "article_id",
        "article_view_limited",
        "miniprogram",
    }
)
KEY_BUTTON_TYPES = frozenset(
    {
        "click",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
    }
)

#: Events that count as an interaction for the 48-hour customer-service window (lowercase).
INTERACTION_EVENTS = frozenset({"subscribe", "scan", "click", "scancode_push", "scancode_waitmsg"})

#: WeChat's spelling of the common events.
_EVENT_NAMES = {
    "subscribe": "subscribe",
    "unsubscribe": "unsubscribe",
    "scan": "SCAN",
    "click": "CLICK",
    "view": "VIEW",
    "location": "LOCATION",
}

#: Length limits of new-style template fields (keyword prefix -> characters).
_TEMPLATE_LIMITS = {
    "thing": 20,
    "phrase": 5,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "name": 20,
    "car_number": 8,
    "phone_number": 17,
    "amount": 14,
}
_TEMPLATE_FIELD_RE = re.compile(r"([a-z_]+?)\d+$")

_API_PREFIX = "/cgi-bin/"
_TOKEN_PATH = "token"
_GET_PATHS = frozenset({"token", "media/get", "menu/get", "menu/delete"})
_POST_PATHS = frozenset(
    {"message/custom/send", "message/template/send", "menu/create", "qrcode/create"}
)
#: The first bytes of every PNG file (showqrcode's answer).
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Served without an access token (WeChat shows QR codes to anyone with the ticket).
_SHOW_QRCODE_PATH = "showqrcode"
#: QR code types of qrcode/create: permanent ones, and those whose scene is a string.
QR_ACTIONS = frozenset({"QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"})
_QR_PERMANENT = frozenset({"QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"})
_QR_STRING = frozenset({"QR_STR_SCENE", "QR_LIMIT_STR_SCENE"})
#: Longest temporary QR code lifetime WeChat accepts (30 days), and its default (30 s).
QR_MAX_EXPIRE = 2_592_000
QR_DEFAULT_EXPIRE = 30
#: Permanent scene ids WeChat allows (1 to 100000).
QR_MAX_SCENE_ID = 100_000
_JSON_TYPE = "application/json; encoding=utf-8"
_SERVER_ERROR_PAGE = (
    b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    b"<center><h1>500 Internal Server Error</h1></center>\r\n</body>\r\n</html>\r\n"
)
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "audio/amr": "amr",
    "audio/mpeg": "mp3",
    "audio/speex": "speex",
    "video/mp4": "mp4",
}
#: Voice Format -> the file's first bytes and the content type media/get answers with.
_VOICE_FORMATS = {
    "amr": (b"#!AMR\n", "audio/amr"),
    "mp3": (b"ID3\x04", "audio/mpeg"),
    "speex": (b"Speex   ", "audio/speex"),
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Call:
    """One request the fake answered. ``at`` is ``time.monotonic()`` when it arrived.

    ``path`` is relative to ``/cgi-bin/`` ("message/custom/send", "token"); other paths (media
    URLs) keep their leading slash. ``errcode`` is 0 for a success (also for binary answers),
    None when the answer was not WeChat JSON (HTTP 500 from ``fail_next``, 404)."""

    method: str
    path: str
    params: dict[str, str]
    body: Any
    errcode: int | None
    at: float
    status: int = 200
    errmsg: str | None = None
    response: dict[str, Any] | None = None
    raw_body: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.errcode == 0

    @property
    def openid(self) -> str | None:
        """``touser`` of a message call."""
        if isinstance(self.body, dict) and isinstance(self.body.get("touser"), str):
            return str(self.body["touser"])
        return None


@dataclass(frozen=True)
class Callback:
    """An inbound callback as WeChat POSTs it: the query string and the raw body.

    ``xml`` is the plain XML message (what the product sees after decrypting a safe-mode body)."""

    params: dict[str, str]
    body: bytes
    xml: str = ""
    openid: str | None = None
    msg_id: int | None = None
    media_id: str | None = None

    @property
    def query(self) -> str:
        """The query string, e.g. ``signature=..&timestamp=..&nonce=..&openid=..``."""
        return urlencode(self.params)

    @property
    def safe(self) -> bool:
        return self.params.get("encrypt_type") == "aes"

    def url(self, base: str) -> str:
        """``base`` with the callback's query string appended."""
        return f"{base}{'&' if '?' in base else '?'}{self.query}"


class ReplyError(AssertionError):
    """A passive reply WeChat would not accept (bad signature, appid, padding or XML)."""


class _ApiError(Exception):
    def __init__(self, errcode: int, errmsg: str | None = None):
        super().__init__(errcode, errmsg)
        self.errcode = errcode
        self.errmsg = errmsg if errmsg is not None else ERRMSG.get(errcode, "error")


@dataclass
class _Answer:
    status: int
    content_type: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    errcode: int | None = 0
    errmsg: str | None = None
    response: dict[str, Any] | None = None


@dataclass(frozen=True)
class QRCode:
    """A QR code qrcode/create made: its scene (``scene_str`` or ``scene_id``), whether it is
    permanent, and until when (fake-clock seconds) a temporary one is valid."""

    ticket: str
    action_name: str
    scene: str | int
    url: str
    expires_at: float | None


@dataclass
class _Token:
    issued_at: float
    expires_at: float
    superseded_at: float | None = None
    expired: bool = False


@dataclass
class _User:
    subscribed: bool = True
    last_interaction: float | None = None
    sent_since: int = 0


@dataclass
class _Media:
    data: bytes
    content_type: str
    at: float


@dataclass
class _Fault(Script):
    status: int = 500
    errcode: int | None = None
    errmsg: str | None = None


@dataclass
class _Delay(Script):
    seconds: float = 0.0
    before: bool = False


def _path(name: str) -> str:
    return name.removeprefix(_API_PREFIX).strip("/")


def _matches(paths: frozenset[str] | None, path: str) -> bool:
    if paths is None:
        return path != _TOKEN_PATH
    return path in paths


def signature(*parts: str) -> str:
    """WeChat's signature: sha1 of the sorted concatenation of ``parts``."""
    return sha1_signature(*parts)


def _number(value: float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _fake_bytes(header: bytes, trailer: bytes, size: int) -> bytes:
    middle = bytes(i % 251 for i in range(max(size - len(header) - len(trailer), 0)))
    return header + middle + trailer


def new_openid() -> str:
    """A random openid shaped like WeChat's (28 characters, starting with "o")."""
    return "o" + "".join(secrets.choice(ALNUM + "-_") for _ in range(27))


def _element_value(element: ElementTree.Element) -> Any:
    children = list(element)
    if not children:
        return element.text or ""
    value: dict[str, Any] = {}
    for child in children:
        item = _element_value(child)
        if child.tag in value:
            previous = value[child.tag]
            value[child.tag] = [*previous, item] if isinstance(previous, list) else [previous, item]
        else:
            value[child.tag] = item
    return value


def _parse_xml(body: bytes | str) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ReplyError(f"reply is not XML: {exc}") from None
    if root.tag != "xml":
        raise ReplyError(f"reply root element is <{root.tag}>, not <xml>")
    return root


# --------------------------------------------------------------------------- the fake


class FakeWeChat(FakeServer[Call]):
    """A local WeChat official account API server and callback builder. See the module docstring.

    Credentials are random unless given: ``appid`` ("wx" + 16 hex), ``app_secret`` (32 hex),
    ``token`` (the callback token), ``aes_key`` (43-character EncodingAESKey), ``account_id``
    (the original id "gh_" + 12 hex, the ToUserName of callbacks). ``safe`` is the default mode
    of the builders (and whether ``settings_env`` carries the AES key)."""

    thread_name = "fake-wechat"

    def __init__(
        self,
        *,
        appid: str | None = None,
        app_secret: str | None = None,
        token: str | None = None,
        aes_key: str | None = None,
        account_id: str | None = None,
        safe: bool = False,
        clock: Callable[[], float] = time.time,
        old_token_grace: float = 300.0,
        token_expires_in: int = 7200,
        window_hours: float = 48.0,
        window_messages: int = 5,
        max_text_length: int = 2048,
        media_days: float = 3.0,
        rid: bool = True,
    ) -> None:
        super().__init__()
        self.appid = appid or "wx" + secrets.token_hex(8)
        self.app_secret = app_secret or secrets.token_hex(16)
        self.token = token or "".join(secrets.choice(ALNUM) for _ in range(32))
        self.aes_key = aes_key or random_aes_key()
        self._key = aes_key_bytes(self.aes_key)
        self.account_id = account_id or "gh_" + secrets.token_hex(6)
        self.safe = safe
        self.clock = clock
        self.old_token_grace = old_token_grace
        self.token_expires_in = token_expires_in
        self.window_hours = window_hours
        self.window_messages = window_messages
        self.max_text_length = max_text_length
        self.media_days = media_days
        self.rid = rid
        #: The last menu created ({"button": [...]}), None before menu/create or after delete.
        self.menu: dict[str, Any] | None = None
        #: QR codes made by qrcode/create, by ticket.
        self.qrcodes: dict[str, QRCode] = {}

        self._offset = 0.0
        self._tokens: dict[str, _Token] = {}
        self._token_fetches = 0
        self._users: dict[str, _User] = {}
        self._templates: dict[str, list[str]] = {}
        self._media: dict[str, _Media] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._per_second: float | None = None
        self._recent: deque[float] = deque()
        self._msg_ids = itertools.count(24_476_571_690_000_001)
        self._template_msg_ids = itertools.count(2_853_000_001)

        self._handlers: dict[str, Callable[[dict[str, str], Any], dict[str, Any] | _Answer]] = {
            "message/custom/send": self._custom_send,
            "message/template/send": self._template_send,
            "menu/create": self._menu_create,
            "menu/get": self._menu_get,
            "menu/delete": self._menu_delete,
            "media/get": self._media_get,
            "qrcode/create": self._qrcode_create,
        }

    # ----------------------------------------------------------------- lifecycle

    @property
    def api_base_url(self) -> str:
        """What wechatpy's ``API_BASE_URL`` must be: ``{url}/cgi-bin/``."""
        return f"{self.url}{_API_PREFIX}"

    @property
    def token_url(self) -> str:
        return f"{self.url}{_API_PREFIX}{_TOKEN_PATH}"

    def settings_env(self) -> dict[str, str]:
        """The REDESK_WECHAT_* environment for the product (AES key only if made with safe)."""
        env = {
            "REDESK_WECHAT_APP_ID": self.appid,
            "REDESK_WECHAT_APP_SECRET": self.app_secret,
            "REDESK_WECHAT_TOKEN": self.token,
            "REDESK_WECHAT_API_URL": self.url,
        }
        if self.safe:
            env["REDESK_WECHAT_AES_KEY"] = self.aes_key
        return env

    # ----------------------------------------------------------------- time

    def now(self) -> float:
        """The fake's business time: ``clock()`` plus what ``advance`` added."""
        return self.clock() + self._offset

    def advance(
        self,
        seconds: float = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> float:
        """Moves the fake clock ahead (no sleeping); returns the new ``now()``."""
        with self._cond:
            self._offset += seconds + minutes * 60 + hours * 3600 + days * 86400
            return self.now()

    # ----------------------------------------------------------------- tokens

    @property
    def token_fetches(self) -> int:
        """How many access tokens the token endpoint issued (failed fetches not counted)."""
        with self._cond:
            return self._token_fetches

    def new_token(self) -> str:
        """Issues an access token without HTTP (not counted in ``token_fetches``)."""
        with self._cond:
            now = self.now()
            for entry in self._tokens.values():
                if entry.superseded_at is None:
                    entry.superseded_at = now
            token = secrets.token_urlsafe(102)[:136]
            self._tokens[token] = _Token(now, now + self.token_expires_in)
            return token

    def expire_tokens(self) -> None:
        """Every token issued so far answers 42001 "access_token expired" from now on."""
        with self._cond:
            for entry in self._tokens.values():
                entry.expired = True

    @property
    def tokens(self) -> list[str]:
        """The access tokens issued so far, oldest first."""
        with self._cond:
            return list(self._tokens)

    # ----------------------------------------------------------------- users, templates, media

    def _user(self, openid: str) -> _User:
        user = self._users.get(openid)
        if user is None:
            user = self._users[openid] = _User()
        return user

    def follower(self, openid: str) -> None:
        """Makes ``openid`` a known, subscribed user without an interaction (templates only)."""
        with self._cond:
            self._user(openid).subscribed = True

    def interacted(self, openid: str, at: float | None = None) -> None:
        """Records an interaction of ``openid`` at ``at`` (fake-clock seconds, default now):
        opens the 48-hour window and resets the message count. Makes the user known."""
        with self._cond:
            user = self._user(openid)
            user.last_interaction = self.now() if at is None else at
            user.sent_since = 0

    def unsubscribe(self, openid: str) -> None:
        """``openid`` unfollows: custom and template messages answer 43004."""
        with self._cond:
            self._user(openid).subscribed = False

    def subscribe(self, openid: str) -> None:
        """``openid`` follows (again), which is an interaction."""
        with self._cond:
            self._user(openid).subscribed = True
            self.interacted(openid)

    def template(self, template_id: str, fields: Iterable[str] = ()) -> None:
        """Registers a template; message/template/send must give a non-empty value per field."""
        with self._cond:
            self._templates[template_id] = list(fields)

    def media(
        self,
        media_id: str | None,
        data: bytes,
        content_type: str = "image/jpeg",
        at: float | None = None,
    ) -> str:
        """Registers temporary media (valid ``media_days`` from ``at``, default now); returns
        its id (a random one if ``media_id`` is None)."""
        media_id = media_id or secrets.token_urlsafe(48)
        with self._cond:
            self._media[media_id] = _Media(data, content_type, self.now() if at is None else at)
        return media_id

    def media_bytes(self, media_id: str) -> bytes | None:
        with self._cond:
            stored = self._media.get(media_id)
            return stored.data if stored else None

    # ----------------------------------------------------------------- faults and limits

    def limit(self, calls_per_second: float | None) -> None:
        """Over ``calls_per_second`` API calls (token fetches excepted) in any second, calls
        answer 45009 "reach max api daily quota limit" and are not counted. None: no limit."""
        with self._cond:
            self._per_second = calls_per_second
            self._recent.clear()

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        errcode: int | None = None,
        errmsg: str | None = None,
        paths: Iterable[str] | str | None = None,
    ) -> None:
        """The next ``n`` matching calls fail without acting: HTTP ``status`` with an HTML page,
        or -- with ``errcode`` -- HTTP 200 and ``{"errcode": errcode, "errmsg": ...}`` (-1 is
        WeChat's "system error", the system-busy answer). ``paths`` default: every API path but
        the token endpoint."""
        with self._cond:
            self._faults.append(_Fault(n, targets(paths, _path), status, errcode, errmsg))

    def delay_next(
        self,
        n: int,
        seconds: float,
        *,
        paths: Iterable[str] | str | None = None,
        before: bool = False,
    ) -> None:
        """The next ``n`` matching calls answer ``seconds`` late (acting first unless before)."""
        with self._cond:
            self._delays.append(_Delay(n, targets(paths, _path), seconds, before))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()
            self._delays.clear()
            self._per_second = None

    # ----------------------------------------------------------------- recording

    def count(self, path: str, *, ok: bool | None = None) -> int:
        """How many calls of ``path`` ("message/custom/send") arrived (successful/failed)."""
        path = path.removeprefix(_API_PREFIX).strip("/")
        return sum(1 for call in self.calls if call.path == path and (ok is None or call.ok == ok))

    def _successful(self, path: str, openid: str | None) -> list[Call]:
        return [
            call
            for call in self.calls
            if call.path == path and call.ok and (openid is None or call.openid == openid)
        ]

    def sent(self, openid: str | None = None) -> list[Call]:
        """Successful message/custom/send calls (to ``openid`` if given), in order."""
        return self._successful("message/custom/send", openid)

    def texts(self, openid: str | None = None) -> list[str]:
        """The contents of the successful custom text messages (to ``openid``), in order."""
        return [
            str(call.body["text"]["content"])
            for call in self.sent(openid)
            if call.body.get("msgtype") == "text"
        ]

    def templates(self, openid: str | None = None) -> list[Call]:
        """Successful message/template/send calls (to ``openid`` if given), in order."""
        return self._successful("message/template/send", openid)

    # ----------------------------------------------------------------- crypto

    def encrypt(self, message: bytes | str) -> str:
        """WeChat's safe-mode encryption of ``message``: base64 of AES-256-CBC (IV = key[:16])
        over 16 random bytes + 4-byte big-endian length + message + appid, PKCS#7 to 32."""
        return wx_encrypt(self._key, message, self.appid)

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside ``encrypted``; ReplyError if padding, length or appid is wrong."""
        message, appid = wx_decrypt(self._key, encrypted, ReplyError)
        if appid != self.appid.encode("utf-8"):
            raise ReplyError(f"appid in the reply is {appid!r}, not {self.appid!r}")
        return message

    def decrypt_reply(
        self,
        body: bytes | str,
        callback: Callback | Mapping[str, str] | None = None,
    ) -> str:
        """Checks a safe-mode passive reply (``<xml><Encrypt/><MsgSignature/><TimeStamp/>
        <Nonce/></xml>``) like WeChat: MsgSignature, decryption, appid; returns the inner XML.
        With ``callback`` (or its params) the inner ToUserName must be its openid and
        FromUserName the account id. Raises ReplyError."""
        fields = {child.tag: (child.text or "") for child in _parse_xml(body)}
        for name in ("Encrypt", "MsgSignature", "TimeStamp", "Nonce"):
            if not fields.get(name):
                raise ReplyError(f"reply has no {name}")
        expected = signature(self.token, fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
        if fields["MsgSignature"] != expected:
            raise ReplyError("MsgSignature does not match")
        try:
            inner = self.decrypt(fields["Encrypt"]).decode("utf-8")
        except UnicodeDecodeError:
            raise ReplyError("decrypted reply is not UTF-8") from None
        if callback is not None:
            self._check_addressing(inner, callback)
        return inner

    def reply_fields(
        self,
        body: bytes | str,
        callback: Callback | Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """A passive reply (plain or encrypted) as a dict of its elements (nested elements as
        dicts); None for the "no reply" answers WeChat accepts ("" and "success")."""
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if text.strip() in ("", "success"):
            return None
        root = _parse_xml(text)
        if root.find("Encrypt") is not None:
            text = self.decrypt_reply(text, callback)
            root = _parse_xml(text)
        elif callback is not None:
            self._check_addressing(text, callback)
        value = _element_value(root)
        return value if isinstance(value, dict) else {}

    def _check_addressing(self, inner: str, callback: Callback | Mapping[str, str]) -> None:
        openid = callback.openid if isinstance(callback, Callback) else callback.get("openid")
        fields = {child.tag: (child.text or "") for child in _parse_xml(inner)}
        if openid is not None and fields.get("ToUserName") != openid:
            raise ReplyError(f"reply ToUserName {fields.get('ToUserName')!r} is not {openid!r}")
        if fields.get("FromUserName") != self.account_id:
            raise ReplyError(
                f"reply FromUserName {fields.get('FromUserName')!r} is not {self.account_id!r}"
            )

    # ----------------------------------------------------------------- callback builders

    def verify_params(
        self,
        echostr: str | None = None,
        *,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> dict[str, str]:
        """Query of WeChat's GET URL verification (signature, timestamp, nonce, echostr); the
        developer answers the echostr as is. Never encrypted for an official account."""
        params = self._plain_params(timestamp, nonce, sign, bad_signature)
        params["echostr"] = echostr or str(secrets.randbelow(9 * 10**18) + 10**18)
        return params

    def _plain_params(
        self,
        timestamp: int | str | None,
        nonce: str | None,
        sign: bool,
        bad_signature: bool,
    ) -> dict[str, str]:
        ts = str(int(self.now()) if timestamp is None else timestamp)
        nonce = str(secrets.randbelow(9 * 10**9) + 10**9) if nonce is None else nonce
        params: dict[str, str] = {}
        if sign:
            sig = signature(self.token, ts, nonce)
            params["signature"] = _corrupt(sig) if bad_signature else sig
        params["timestamp"] = ts
        params["nonce"] = nonce
        return params

    def _wrap(
        self,
        message: bytes,
        openid: str | None,
        *,
        safe: bool | None,
        timestamp: int | str | None,
        nonce: str | None,
        sign: bool,
        bad_signature: bool,
        msg_id: int | None = None,
        media_id: str | None = None,
    ) -> Callback:
        params = self._plain_params(timestamp, nonce, sign, bad_signature)
        if openid is not None:
            params["openid"] = openid
        body = message
        if self.safe if safe is None else safe:
            encrypted = self.encrypt(message)
            body = (
                f"<xml><ToUserName>{_cdata(self.account_id)}</ToUserName>"
                f"<Encrypt>{_cdata(encrypted)}</Encrypt></xml>"
            ).encode()
            params["encrypt_type"] = "aes"
            if sign:
                sig = signature(self.token, params["timestamp"], params["nonce"], encrypted)
                params["msg_signature"] = _corrupt(sig) if bad_signature else sig
        return Callback(params, body, message.decode("utf-8", "replace"), openid, msg_id, media_id)

    def _message(
        self,
        openid: str,
        msg_type: str,
        fields: list[tuple[str, str, bool]],
        options: dict[str, Any],
        *,
        msg_id: int | None = None,
        with_msg_id: bool = True,
        interaction: bool = True,
        media_id: str | None = None,
    ) -> Callback:
        with self._cond:
            self._user(openid)
            if interaction:
                self.interacted(openid)
            created = int(self.now())
            if with_msg_id and msg_id is None:
                msg_id = next(self._msg_ids)
        parts = [
            f"<ToUserName>{_cdata(self.account_id)}</ToUserName>",
            f"<FromUserName>{_cdata(openid)}</FromUserName>",
            f"<CreateTime>{created}</CreateTime>",
            f"<MsgType>{_cdata(msg_type)}</MsgType>",
        ]
        parts.extend(
            f"<{name}>{_cdata(value) if cdata else value}</{name}>" for name, value, cdata in fields
        )
        if with_msg_id:
            parts.append(f"<MsgId>{msg_id}</MsgId>")
        xml = "<xml>" + "".join(parts) + "</xml>"
        return self._wrap(
            xml.encode("utf-8"),
            openid,
            msg_id=msg_id if with_msg_id else None,
            media_id=media_id,
            **options,
        )

    def text(
        self,
        openid: str,
        content: str,
        msg_id: int | None = None,
        *,
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """A text message from ``openid``."""
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._message(openid, "text", [("Content", content, True)], options, msg_id=msg_id)

    def image(
        self,
        openid: str,
        media_id: str | None = None,
        pic_url: str | None = None,
        msg_id: int | None = None,
        *,
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """A picture from ``openid``; its media is registered (JPEG bytes) unless known."""
        media_id = self._ensure_media(
            media_id,
            _fake_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd9", 2048),
            "image/jpeg",
        )
        if pic_url is None:
            pic_url = (
                f"{self.url}/mmbiz_jpg/{media_id}/0"
                if self.started
                else f"http://mmbiz.qpic.cn/mmbiz_jpg/{media_id}/0"
            )
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._message(
            openid,
            "image",
            [("PicUrl", pic_url, True), ("MediaId", media_id, True)],
            options,
            msg_id=msg_id,
            media_id=media_id,
        )

    def voice(
        self,
        openid: str,
        recognition: str | None = None,
        media_id: str | None = None,
        msg_id: int | None = None,
        *,
        voice_format: str = "amr",
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """A voice message (``Format`` amr, speex or mp3; its media is registered with that
        format's content type unless known); ``Recognition`` only when given."""
        header, content_type = _VOICE_FORMATS[voice_format]
        media_id = self._ensure_media(media_id, _fake_bytes(header, b"", 1024), content_type)
        fields = [("MediaId", media_id, True), ("Format", voice_format, True)]
        if recognition is not None:
            fields.append(("Recognition", recognition, True))
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._message(openid, "voice", fields, options, msg_id=msg_id, media_id=media_id)

    def _video(
        self,
        openid: str,
        msg_type: str,
        media_id: str | None,
        msg_id: int | None,
        options: dict[str, Any],
    ) -> Callback:
        media_id = self._ensure_media(
            media_id, _fake_bytes(b"\x00\x00\x00\x18ftypmp42", b"", 4096), "video/mp4"
        )
        thumb = self.media(None, _fake_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd9", 512))
        fields = [("MediaId", media_id, True), ("ThumbMediaId", thumb, True)]
        return self._message(openid, msg_type, fields, options, msg_id=msg_id, media_id=media_id)

    def video(
        self,
        openid: str,
        media_id: str | None = None,
        msg_id: int | None = None,
        *,
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """A video message (its media and thumbnail are registered)."""
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._video(openid, "video", media_id, msg_id, options)

    def shortvideo(
        self,
        openid: str,
        media_id: str | None = None,
        msg_id: int | None = None,
        *,
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """A short video message (its media and thumbnail are registered)."""
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._video(openid, "shortvideo", media_id, msg_id, options)

    def location(
        self,
        openid: str,
        x: float,
        y: float,
        label: str,
        scale: int = 15,
        msg_id: int | None = None,
        *,
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """A location message: ``x`` latitude, ``y`` longitude (Location_X, Location_Y)."""
        fields = [
            ("Location_X", _number(x), False),
            ("Location_Y", _number(y), False),
            ("Scale", str(scale), False),
            ("Label", label, True),
        ]
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._message(openid, "location", fields, options, msg_id=msg_id)

    def link(
        self,
        openid: str,
        title: str,
        description: str,
        url: str,
        msg_id: int | None = None,
        *,
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """A link message."""
        fields = [("Title", title, True), ("Description", description, True), ("Url", url, True)]
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._message(openid, "link", fields, options, msg_id=msg_id)

    def event(
        self,
        openid: str,
        event: str,
        key: str | None = None,
        *,
        latitude: float | None = None,
        longitude: float | None = None,
        precision: float | None = None,
        ticket: str | None = None,
        extra: Mapping[str, str | int] | None = None,
        safe: bool | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """An event: subscribe, unsubscribe, CLICK (key = EventKey), VIEW (key = the url),
        SCAN, LOCATION (latitude/longitude/precision) or any other name, with ``extra``
        elements appended as they are (strings in CDATA, ints bare). The common names are
        spelt like WeChat whatever their case. subscribe/unsubscribe change the subscription;
        subscribe, SCAN, CLICK and scancode_* are interactions."""
        name = _EVENT_NAMES.get(event.lower(), event)
        lower = name.lower()
        with self._cond:
            if lower == "unsubscribe":
                self.unsubscribe(openid)
            elif lower == "subscribe":
                self._user(openid).subscribed = True
        fields: list[tuple[str, str, bool]] = [("Event", name, True)]
        if key is not None:
            fields.append(("EventKey", key, True))
        if ticket is not None:
            fields.append(("Ticket", ticket, True))
        if lower == "location":
            fields.extend(
                [
                    ("Latitude", _number(float(latitude or 0.0)), False),
                    ("Longitude", _number(float(longitude or 0.0)), False),
                    ("Precision", _number(float(precision or 0.0)), False),
                ]
            )
        for element, value in (extra or {}).items():
            fields.append((element, str(value), not isinstance(value, int)))
        options = {
            "safe": safe,
            "timestamp": timestamp,
            "nonce": nonce,
            "sign": sign,
            "bad_signature": bad_signature,
        }
        return self._message(
            openid,
            "event",
            fields,
            options,
            with_msg_id=False,
            interaction=lower in INTERACTION_EVENTS,
        )

    def raw(
        self,
        xml: bytes | str,
        safe: bool | None = False,
        *,
        openid: str | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
        sign: bool = True,
        bad_signature: bool = False,
    ) -> Callback:
        """Any body (hostile XML, not XML at all), signed and in safe mode encrypted like a
        real callback. Records no interaction."""
        data = xml.encode("utf-8") if isinstance(xml, str) else xml
        return self._wrap(
            data,
            openid,
            safe=safe,
            timestamp=timestamp,
            nonce=nonce,
            sign=sign,
            bad_signature=bad_signature,
        )

    def _ensure_media(self, media_id: str | None, data: bytes, content_type: str) -> str:
        with self._cond:
            if media_id is not None and media_id in self._media:
                return media_id
        return self.media(media_id, data, content_type)

    def post_callback(
        self,
        url: str,
        callback: Callback,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """POSTs ``callback`` to ``url`` like WeChat (text/xml); returns (status, body)."""
        request = urllib.request.Request(
            callback.url(url),
            data=callback.body,
            method="POST",
            headers={"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), bytes(exc.read())

    # ----------------------------------------------------------------- request handling

    def handle(self, request: Request) -> Response:
        answer = self._answer(
            request.method, request.path, dict(request.query), request.body, request.at
        )
        return Response(answer.status, answer.content_type, answer.payload, answer.headers)

    def _answer(
        self,
        verb: str,
        path: str,
        params: dict[str, str],
        body: bytes,
        at: float,
    ) -> _Answer:
        if path.startswith(_API_PREFIX):
            return self._api(verb, path[len(_API_PREFIX) :].strip("/"), params, body, at)
        match = re.fullmatch(r"/(?:mmbiz_jpg|mmvideo)/([^/]+)(?:/0)?", path)
        with self._cond:
            stored = self._media.get(match.group(1)) if match else None
        if stored is not None:
            answer = _Answer(200, stored.content_type, stored.data)
        else:
            answer = _Answer(404, "text/plain", b"Not Found", errcode=None)
        self._record(verb, path, params, None, body, at, answer)
        return answer

    def _error(self, errcode: int, errmsg: str | None = None) -> _Answer:
        message = errmsg if errmsg is not None else ERRMSG.get(errcode, "error")
        if self.rid and errcode != 0:
            message = (
                f"{message} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}-"
                f"{secrets.token_hex(4)}"
            )
        response = {"errcode": errcode, "errmsg": message}
        return _Answer(
            200,
            _JSON_TYPE,
            json.dumps(response, ensure_ascii=False).encode("utf-8"),
            errcode=errcode,
            errmsg=message,
            response=response,
        )

    @staticmethod
    def _ok(response: dict[str, Any]) -> _Answer:
        return _Answer(
            200,
            _JSON_TYPE,
            json.dumps(response, ensure_ascii=False).encode("utf-8"),
            errcode=int(response.get("errcode", 0)),
            errmsg=response.get("errmsg"),
            response=response,
        )

    def _api(
        self,
        verb: str,
        path: str,
        params: dict[str, str],
        raw: bytes,
        at: float,
    ) -> _Answer:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except ValueError:
                body = None
        fault = self.take(self._faults, path, _matches)
        delay = self.take(self._delays, path, _matches)
        if delay is not None and delay.before:
            self.pause(delay.seconds)
        if fault is not None:
            if fault.errcode is not None:
                answer = self._error(fault.errcode, fault.errmsg)
            else:
                answer = _Answer(fault.status, "text/html", _SERVER_ERROR_PAGE, errcode=None)
        else:
            try:
                with self._cond:
                    answer = self._dispatch(verb, path, params, raw, body)
            except _ApiError as exc:
                answer = self._error(exc.errcode, exc.errmsg)
            except Exception as exc:  # a bug in the fake: answer 500, keep it for the test
                self.errors.append(exc)
                answer = _Answer(500, "text/plain", f"fake failed: {exc!r}".encode(), errcode=None)
        self._record(verb, path, params, body, raw, at, answer)
        if delay is not None and not delay.before:
            self.pause(delay.seconds)
        return answer

    def _record(
        self,
        verb: str,
        path: str,
        params: dict[str, str],
        body: Any,
        raw: bytes,
        at: float,
        answer: _Answer,
    ) -> None:
        self.record(
            Call(
                verb,
                path,
                params,
                copy.deepcopy(body),
                answer.errcode,
                at,
                answer.status,
                answer.errmsg,
                copy.deepcopy(answer.response),
                raw,
            )
        )

    def _dispatch(
        self,
        verb: str,
        path: str,
        params: dict[str, str],
        raw: bytes,
        body: Any,
    ) -> _Answer:
        if path == _TOKEN_PATH:
            if verb != "GET":
                raise _ApiError(43001)
            return self._ok(self._fetch_token(params))
        if path == _SHOW_QRCODE_PATH:
            return self._show_qrcode(verb, params)
        handler = self._handlers.get(path)
        if handler is None:
            return _Answer(404, "text/plain", b"Not Found", errcode=None)
        self._check_token(params.get("access_token"))
        if path in _POST_PATHS and verb != "POST":
            raise _ApiError(43002)
        if path in _GET_PATHS and verb != "GET":
            raise _ApiError(43001)
        self._rate_limit()
        if path in _POST_PATHS and not isinstance(body, dict):
            raise _ApiError(47001)
        result = handler(params, body)
        return result if isinstance(result, _Answer) else self._ok(result)

    def _fetch_token(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("grant_type") != "client_credential":
            raise _ApiError(40002)
        if not params.get("appid"):
            raise _ApiError(41002)
        if params["appid"] != self.appid:
            raise _ApiError(40013)
        if not params.get("secret"):
            raise _ApiError(41004)
        if params["secret"] != self.app_secret:
            raise _ApiError(40125)
        token = self.new_token()
        self._token_fetches += 1
        return {"access_token": token, "expires_in": self.token_expires_in}

    def _check_token(self, token: str | None) -> None:
        if not token:
            raise _ApiError(41001)
        entry = self._tokens.get(token)
        if entry is None:
            raise _ApiError(40001)
        now = self.now()
        if entry.expired or now >= entry.expires_at:
            raise _ApiError(42001)
        if entry.superseded_at is not None and now > entry.superseded_at + self.old_token_grace:
            raise _ApiError(40001)

    def _rate_limit(self) -> None:
        if self._per_second is None:
            return
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self._per_second:
            raise _ApiError(45009)
        self._recent.append(now)

    def _known_user(self, openid: Any) -> _User:
        if not isinstance(openid, str) or openid not in self._users:
            raise _ApiError(40003)
        return self._users[openid]

    def _live_media(self, media_id: Any) -> _Media:
        stored = self._media.get(media_id) if isinstance(media_id, str) else None
        if stored is None or self.now() - stored.at > self.media_days * 86400:
            raise _ApiError(40007)
        return stored

    # ----------------------------------------------------------------- API methods

    def _custom_send(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        user = self._known_user(body.get("touser"))
        if not user.subscribed:
            raise _ApiError(43004)
        last = user.last_interaction
        if last is None or self.now() - last > self.window_hours * 3600:
            raise _ApiError(45015)
        if user.sent_since >= self.window_messages:
            raise _ApiError(45047)
        msgtype = body.get("msgtype")
        if msgtype not in CUSTOM_TYPES:
            raise _ApiError(40008)
        payload = body.get(msgtype)
        if not isinstance(payload, dict):
            raise _ApiError(47001)
        if msgtype == "text":
            content = payload.get("content")
            if not isinstance(content, str) or not content:
                raise _ApiError(44004)
            if len(content) > self.max_text_length:
                raise _ApiError(45002)
        elif msgtype in ("image", "voice", "video"):
            self._live_media(payload.get("media_id"))
        elif msgtype == "news":
            articles = payload.get("articles")
            if not isinstance(articles, list) or not articles:
                raise _ApiError(44003)
            if len(articles) > 1:
                raise _ApiError(45008)
        user.sent_since += 1
        return {"errcode": 0, "errmsg": "ok"}

    def _template_send(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or template_id not in self._templates:
            raise _ApiError(40037)
        user = self._known_user(body.get("touser"))
        if not user.subscribed:
            raise _ApiError(43004)
        data = body.get("data")
        if not isinstance(data, dict):
            raise _ApiError(47001)
        for name in self._templates[template_id]:
            item = data.get(name)
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise _ApiError(47003, f"argument invalid! data.{name}.value is empty")
            match = _TEMPLATE_FIELD_RE.fullmatch(name)
            limit = _TEMPLATE_LIMITS.get(match.group(1)) if match else None
            if limit is not None and len(value) > limit:
                raise _ApiError(47003, f"argument invalid! data.{name}.value invalid")
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise _ApiError(47001)
        return {"errcode": 0, "errmsg": "ok", "msgid": next(self._template_msg_ids)}

    def _check_button(self, button: Any, sub: bool) -> None:
        if not isinstance(button, dict):
            raise _ApiError(47001)
        name = button.get("name")
        if not isinstance(name, str) or not 0 < len(name.encode("utf-8")) <= (60 if sub else 16):
            raise _ApiError(40025 if sub else 40018)
        kind = button.get("type")
        if kind is None and "sub_button" in button:
            if sub:
                raise _ApiError(40022)
            subs = button["sub_button"]
            if not isinstance(subs, list) or not 1 <= len(subs) <= 5:
                raise _ApiError(40023)
            for child in subs:
                self._check_button(child, True)
            return
        if kind not in BUTTON_TYPES:
            raise _ApiError(40024 if sub else 40017)
        if kind in KEY_BUTTON_TYPES:
            key = button.get("key")
            if not isinstance(key, str) or not 0 < len(key.encode("utf-8")) <= 128:
                raise _ApiError(40026 if sub else 40019)
        if kind in ("view", "miniprogram"):
            url = button.get("url")
            if (
                not isinstance(url, str)
                or not 0 < len(url.encode("utf-8")) <= 1024
                or not re.match(r"https?://", url)
            ):
                raise _ApiError(40027 if sub else 40020)
        if kind in ("media_id", "view_limited"):
            self._live_media(button.get("media_id"))
        if kind in ("article_id", "article_view_limited") and not button.get("article_id"):
            raise _ApiError(47001)

    def _menu_create(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        buttons = body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            raise _ApiError(40016)
        for button in buttons:
            self._check_button(button, False)
        self.menu = copy.deepcopy(body)
        return {"errcode": 0, "errmsg": "ok"}

    def _menu_get(self, params: dict[str, str], body: Any) -> dict[str, Any]:
        if self.menu is None:
            raise _ApiError(46003)
        return {"menu": copy.deepcopy(self.menu)}

    def _menu_delete(self, params: dict[str, str], body: Any) -> dict[str, Any]:
        self.menu = None
        return {"errcode": 0, "errmsg": "ok"}

    def _media_get(self, params: dict[str, str], body: Any) -> dict[str, Any] | _Answer:
        media_id = params.get("media_id")
        stored = self._live_media(media_id)
        if stored.content_type.startswith("video/"):
            return {"video_url": f"{self.url}/mmvideo/{media_id}"}
        extension = _EXTENSIONS.get(stored.content_type, "bin")
        return _Answer(
            200,
            stored.content_type,
            stored.data,
            headers={
                "Content-disposition": f'attachment; filename="{media_id}.{extension}"',
                "Cache-Control": "no-cache, must-revalidate",
            },
        )

    def _qrcode_create(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action_name")
        if action not in QR_ACTIONS:
            raise _ApiError(40097)
        info = body.get("action_info")
        scene_info = info.get("scene") if isinstance(info, dict) else None
        if not isinstance(scene_info, dict):
            raise _ApiError(40097)
        scene: str | int
        if action in _QR_STRING:
            value = scene_info.get("scene_str")
            if not isinstance(value, str) or not 1 <= len(value) <= 64:
                raise _ApiError(40097)
            scene = value
        else:
            number = scene_info.get("scene_id")
            limit = QR_MAX_SCENE_ID if action in _QR_PERMANENT else 2**32 - 1
            if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= limit:
                raise _ApiError(40097)
            scene = number
        if action in _QR_PERMANENT:
            for made in self.qrcodes.values():
                if made.action_name == action and made.scene == scene:
                    return {"ticket": made.ticket, "url": made.url}
            expires_at = None
        else:
            seconds = body.get("expire_seconds", QR_DEFAULT_EXPIRE)
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
                raise _ApiError(40097)
            expires_at = self.now() + min(seconds, QR_MAX_EXPIRE)
        # WeChat's tickets are base64 and may hold "/", "+" and "=": clients must quote them.
        ticket = base64.b64encode(b"qr/" + secrets.token_bytes(45)).decode("ascii")
        code = QRCode(
            ticket,
            str(action),
            scene,
            f"http://weixin.qq.com/q/{secrets.token_urlsafe(16)}",
            expires_at,
        )
        self.qrcodes[ticket] = code
        answer: dict[str, Any] = {"ticket": ticket, "url": code.url}
        if expires_at is not None:
            answer["expire_seconds"] = min(int(body.get("expire_seconds", 30)), QR_MAX_EXPIRE)
        return answer

    def _show_qrcode(self, verb: str, params: dict[str, str]) -> _Answer:
        if verb != "GET":
            raise _ApiError(43001)
        code = self.qrcodes.get(params.get("ticket", ""))
        if code is None or (code.expires_at is not None and self.now() >= code.expires_at):
            page = b"<html><body>ticket invalid</body></html>"
            return _Answer(404, "text/html", page, errcode=None)
        return _Answer(
            200, "image/png", qrcode_png(code.url), headers={"Cache-Control": "max-age=604800"}
        )

    def qrcode_of(self, scene: str | int) -> QRCode | None:
        """The QR code made for ``scene``, if any (the latest)."""
        with self._cond:
            found = [code for code in self.qrcodes.values() if code.scene == scene]
            return found[-1] if found else None


def qrcode_png(text: str, modules: int = 25, scale: int = 8) -> bytes:
    """A real PNG that looks like a QR code (three finder squares and a pattern from ``text``):
    what showqrcode answers. Each ``text`` gives its own image, so tests can tell codes apart."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(text.encode("utf-8")).digest()
    bits = "".join(f"{byte:08b}" for byte in digest) * (modules * modules // 256 + 1)
    border = 4
    size = (modules + 2 * border) * scale
    image = Image.new("1", (size, size), 1)
    draw = ImageDraw.Draw(image)
    corners = ((0, 0), (modules - 7, 0), (0, modules - 7))
    for y in range(modules):
        for x in range(modules):
            corner = next(
                ((ox, oy) for ox, oy in corners if ox <= x < ox + 7 and oy <= y < oy + 7), None
            )
            if corner is not None:
                dx, dy = x - corner[0], y - corner[1]
                dark = dx in (0, 6) or dy in (0, 6) or (2 <= dx <= 4 and 2 <= dy <= 4)
            else:
                dark = bits[y * modules + x] == "1"
            if dark:
                left, top = (x + border) * scale, (y + border) * scale
                draw.rectangle((left, top, left + scale - 1, top + scale - 1), fill=0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
