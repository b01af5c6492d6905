"""A small local fake of the WeCom (企业微信) self-built app API, for tests that drive wechatpy.

Two halves:

* a server (``tests.fakes.scaffold``: a real HTTP server on 127.0.0.1 in a thread) answering
  the ``/cgi-bin/`` API a self-built app uses, with WeCom's JSON and error codes;
* builders of the callbacks WeCom POSTs to the app's callback URL (always encrypted) and of the
  GET URL verification. The crypto is implemented here with ``cryptography`` directly (not with
  wechatpy's), so the product's use of ``wechatpy.enterprise.crypto`` is checked against an
  independent implementation; ``tests/test_fake_wecom.py`` checks both against wechatpy's
  worked example.

    with FakeWeCom() as fake:
        fake.member("lisj", "李书记")
        client = WeChatClient(fake.corp_id, fake.secret)      # see "Pointing wechatpy" below
        client.message.send_text(fake.agent_id, "lisj", "收到")
        assert fake.texts("lisj") == ["收到"]
        press = fake.press("lisj", "accept:42")    # the latest card sent to lisj
        status, body = fake.post_callback(f"{app_url}/wecom", press)
        # REDESK_WECOM_* = fake.settings_env()

Endpoints (``{fake.url}/cgi-bin/...``; ``access_token`` in the query string; JSON bodies in
UTF-8 whatever the Content-Type):

    GET  gettoken?corpid=..&corpsecret=..   {"access_token", "expires_in": 7200}
    POST message/send                       text, markdown, template_card (+ the other msgtypes,
                                            accepted with a shallow check)
    POST message/update_template_card       userids/atall + agentid + response_code +
                                            button {replace_name} | template_card
    GET  user/get?userid=..                 the member (userid, name, department, ...)
    GET  media/get?media_id=..              the bytes, Content-Type, Content-disposition filename

Pointing wechatpy (1.8.x) at the fake -- ``WeChatClient.fetch_access_token`` and
``client.media.get_url`` hard-code https://qyapi.weixin.qq.com, so:

    class Client(wechatpy.enterprise.WeChatClient):
        def fetch_access_token(self):
            return self._fetch_access_token(url=f"{api}/cgi-bin/gettoken",
                                            params={"corpid": self.corp_id,
                                                    "corpsecret": self.secret})
    client = Client(corp_id, secret)
    client.API_BASE_URL = f"{api}/cgi-bin/"        # the instance attribute is used by every call

What wechatpy 1.8.18 does with the answers: errcode 40001, 40014 and 42001 are NOT raised with
auto_retry (the default): it fetches a new token and repeats the call, without a limit. 45009
raises ``APILimitedException``; any other errcode ``WeChatClientException`` (``exc.errcode`` an
int); HTTP 5xx ``WeChatClientException`` with errcode None; timeouts and dropped connections
raise ``requests`` exceptions unwrapped.

Behaviour worth knowing (from WeCom's documentation, see the ``ERRMSG`` table):

* gettoken: a wrong corpid answers 40013, a wrong secret 40001 (missing ones 41002/41004).
  Within its validity a second fetch returns the SAME token (WeCom: "有效期内重复获取返回相同
  结果") with the remaining ``expires_in``; after it a new one. ``expire_tokens()`` makes every
  token answer 42001, ``revoke_tokens()`` 40014 (both make the next fetch issue a new token).
  A missing token answers 41001.
* message/send checks, in order: agentid (41011 missing, 40056 not this app's), recipients
  (82001 none given), msgtype (40008), content, recipients again: unknown userids are listed in
  ``invaliduser`` ("a|b") and the message goes to the others; when none is valid the call
  answers 81013 "user & party & tag all invalid" with the ``invaliduser`` list. text: empty
  content 44004; longer than ``max_text_bytes`` (2048) UTF-8 bytes is TRUNCATED as WeCom says
  ("超过将截断") -- ``Delivery.truncated`` shows it. markdown: empty 44004, over 2048 bytes 45002.
* template_card of type button_interaction is validated against the doc's required fields:
  ``task_id`` (40058 missing, not [0-9a-zA-Z_-@]{1,128}, or already used by this app),
  ``main_title.title`` (41016), ``button_list`` of 1-6 buttons (40058), each with ``text``
  (42020), a ``key`` for callback buttons (type 0 or absent; 42019 missing, 42018 over 1024
  bytes or repeated) or a ``url`` for type 1 (41010). The answer carries ``msgid`` and, for the
  interactive types, a ``response_code``.
* update_template_card: a ``response_code`` (from message/send or from a press callback) is
  usable once and only for the card it came from, for 72 hours. The documentation names no
  dedicated errcode for a used, expired or unknown code; the fake answers
  ``RESPONSE_CODE_ERRCODE`` (40058, "不合法的参数") with errmsg "invalid response_code" --
  match on the errcode. A ``template_card.task_id`` that is not the code's card answers the
  same. ``button.replace_name`` empty answers 42020 and is only for button/vote/multiple cards.
  Targets are the card's recipients: others are listed in ``invaliduser``; none valid: 81013.
* user/get: unknown userid 60111 (missing 41009). media/get: unknown or older than
  ``media_days`` (3) media 40007 as JSON (missing 41006).
* Per-member limit (``limit_members``): beyond ``per_minute`` messages (default 30) to one member
  within 60 s of the fake clock, message/send answers 45009 and delivers nothing; with
  ``silent=True`` WeCom's documented behaviour instead ("超过部分会被丢弃不下发"): errcode 0, the
  excess recipient dropped (``dropped``).
* Error messages carry WeCom's ", hint: [...], from ip: ..., more info at ..." suffix
  (``hint=False`` turns it off): match on ``errcode``, never on the whole ``errmsg``.
* ``fail_next``/``delay_next`` apply to every API path except gettoken unless ``paths`` names
  them (``paths="gettoken"``). ``fail_next(network=True)`` closes the connection unanswered.
  ``delay_next`` performs the call first and answers late (the message IS sent although the
  client times out); ``before=True`` delays first.
* Time: token, media and response-code expiry, the per-member limit and callback timestamps
  follow ``now()`` = ``clock()`` + the offset moved by ``advance()``; ``Call.at`` is
  ``time.monotonic()``.
* Callbacks (``Callback``): POST query ``msg_signature``, ``timestamp``, ``nonce``; body
  ``<xml><ToUserName/><AgentID/><Encrypt/></xml>``; the plaintext inside is 16 random bytes +
  4-byte big-endian length + the XML + the ReceiveId (the corp id), PKCS#7-padded to 32 and
  AES-256-CBC encrypted (key = base64(EncodingAESKey + "="), IV = key[:16]);
  msg_signature = sha1 of the sorted [token, timestamp, nonce, Encrypt]. The GET verification
  carries ``echostr`` encrypted the same way; the app answers the decrypted echostr
  (``Callback.echostr``). Corruptions: ``bad_signature``, ``stale`` / ``timestamp``,
  ``receive_id`` (another corp's id inside), ``aes_key`` (another key), and ``replay(cb)``
  (the identical request again, as WeCom's own retries are).
* Building a callback for a userid makes it a known member.
* Bugs in the fake itself answer HTTP 500 and are collected in ``fake.errors``.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from tests.fakes.scaffold import (
    ALNUM,
    BodyError,
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

#: WeCom's errmsg for the codes the fake answers (the global error code page).
ERRMSG: dict[int, str] = {
    -1: "system busy",
    0: "ok",
    40001: "invalid credential",  # 不合法的secret参数
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40056: "invalid agentid",
    40058: "invalid parameter",  # 不合法的参数
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41006: "media_id missing",
    41009: "userid missing",
    41010: "url missing",
    41011: "agentid missing",
    41016: "title missing",
    42001: "access_token expired",
    42018: "invalid button key",  # 按钮key值不合法
    42019: "button key missing",
    42020: "button name missing",
    43001: "require GET method",
    43002: "require POST method",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    60111: "userid not found",
    81013: "user & party & tag all invalid",
    82001: "all touser & toparty & totag invalid",  # 指定的成员/部门/标签全部为空
}

#: What update_template_card answers for a used, expired, unknown or foreign response_code.
#: WeCom's documentation names no dedicated code ("一个code只能调用一次该接口"); 40058 is its
#: "不合法的参数" (parameter not as the API requires).
RESPONSE_CODE_ERRCODE = 40058

#: message/send msgtypes (those beyond text/markdown/template_card get a shallow check).
MSG_TYPES = frozenset(
    {
        "text",
        "image",
        "voice",
        "video",
        "file",
        "textcard",
        "news",
        "mpnews",
        "markdown",
        "miniprogram_notice",
        "template_card",
    }
)
#: template_card types that can be pressed (and so answer a response_code).
INTERACTIVE_CARDS = frozenset({"button_interaction", "vote_interaction", "multiple_interaction"})
CARD_TYPES = INTERACTIVE_CARDS | {"text_notice", "news_notice"}

_API_PREFIX = "/cgi-bin/"
_TOKEN_PATH = "gettoken"
_GET_PATHS = frozenset({"gettoken", "user/get", "media/get"})
_POST_PATHS = frozenset({"message/send", "message/update_template_card"})
_JSON_TYPE = "application/json; charset=UTF-8"
_SERVER_ERROR_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
_TASK_ID_RE = re.compile(r"[0-9A-Za-z_\-@]{1,128}")
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "audio/amr": "amr",
    "video/mp4": "mp4",
    "application/pdf": "pdf",
    "text/plain": "txt",
}


# --------------------------------------------------------------------------- crypto


def msg_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """WeCom's msg_signature: sha1 of the sorted concatenation of the four strings."""
    return sha1_signature(token, timestamp, nonce, encrypt)


def encrypt(
    encoding_aes_key: str,
    message: bytes | str,
    receive_id: str,
    random: bytes | None = None,
) -> str:
    """WeCom's encryption of ``message`` for ``receive_id`` (the scaffold's ``wx_encrypt``)."""
    return wx_encrypt(aes_key_bytes(encoding_aes_key), message, receive_id, random)


class CryptoError(AssertionError):
    """Something WeCom would not decrypt (bad base64, padding, length)."""


def decrypt(encoding_aes_key: str, encrypted: str) -> tuple[bytes, str]:
    """(message, receive_id) inside ``encrypted``; CryptoError if it is malformed."""
    message, receive_id = wx_decrypt(aes_key_bytes(encoding_aes_key), encrypted, CryptoError)
    return message, receive_id.decode("utf-8", "replace")


def new_userid() -> str:
    """A random member UserID (letters and digits, as WeCom's admins assign them)."""
    return "u" + "".join(secrets.choice(ALNUM) for _ in range(11))


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Call:
    """One request the fake answered. ``at`` is ``time.monotonic()`` when it arrived.

    ``path`` is relative to ``/cgi-bin/`` ("message/send", "gettoken"); ``errcode`` is 0 for a
    success (also for media bytes), None when the answer was not WeCom JSON (5xx, 404, dropped).
    """

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
    def userids(self) -> list[str]:
        """The recipients named by a message call (``touser`` split on "|", or ``userids``)."""
        if not isinstance(self.body, dict):
            return []
        if isinstance(self.body.get("touser"), str):
            return [u for u in str(self.body["touser"]).split("|") if u]
        users = self.body.get("userids")
        return [str(u) for u in users] if isinstance(users, list) else []


@dataclass(frozen=True)
class Delivery:
    """One message as a member received it (one per recipient of a successful send)."""

    userid: str
    msgtype: str
    payload: dict[str, Any]
    msgid: str
    at: float
    truncated: bool = False

    @property
    def text(self) -> str | None:
        """The delivered content of a text or markdown message."""
        content = self.payload.get("content")
        return content if isinstance(content, str) else None

    @property
    def card(self) -> dict[str, Any] | None:
        return self.payload if self.msgtype == "template_card" else None


@dataclass
class CardView:
    """What one member sees of a template card now (``template_card`` as last set for them;
    ``replace_name`` set when update_template_card replaced the buttons with a label)."""

    template_card: dict[str, Any]
    replace_name: str | None = None
    updates: int = 0


@dataclass
class Card:
    """A template card the app sent: its task_id, recipients and per-member view."""

    task_id: str
    card_type: str
    sent: dict[str, Any]
    msgid: str
    views: dict[str, CardView] = field(default_factory=dict)

    @property
    def recipients(self) -> list[str]:
        return list(self.views)


@dataclass(frozen=True)
class Callback:
    """A callback as WeCom sends it: the query parameters and the raw body (empty for the GET
    verification). ``xml`` is the plaintext message (what the app sees after decrypting);
    ``echostr`` the plaintext the app must answer to a verification."""

    params: dict[str, str]
    body: bytes
    xml: str = ""
    userid: str | None = None
    msg_id: int | None = None
    task_id: str | None = None
    event_key: str | None = None
    response_code: str | None = None
    echostr: str | None = None

    @property
    def query(self) -> str:
        """The query string: ``msg_signature=..&timestamp=..&nonce=..`` (+ ``echostr``)."""
        return urlencode(self.params)

    @property
    def is_verification(self) -> bool:
        return "echostr" in self.params

    def url(self, base: str) -> str:
        """``base`` with the callback's query string appended."""
        return f"{base}{'&' if '?' in base else '?'}{self.query}"


class _ApiError(Exception):
    def __init__(self, errcode: int, errmsg: str | None = None, **extra: Any):
        super().__init__(errcode, errmsg)
        self.errcode = errcode
        self.errmsg = errmsg if errmsg is not None else ERRMSG.get(errcode, "error")
        self.extra = extra


@dataclass
class _Token:
    expires_at: float
    revoked: bool = False
    expired: bool = False


@dataclass
class _Media:
    data: bytes
    content_type: str
    filename: str
    at: float


@dataclass
class _ResponseCode:
    task_id: str
    issued_at: float
    used: bool = False


@dataclass
class _Fault(Script):
    status: int = 500
    errcode: int | None = None
    errmsg: str | None = None
    network: bool = False


@dataclass
class _Delay(Script):
    seconds: float = 0.0
    before: bool = False


def _path(name: str) -> str:
    return name.removeprefix(_API_PREFIX).strip("/")


def _decoded(response: Response) -> dict[str, Any] | None:
    try:
        value = json.loads(response.payload.decode("utf-8"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _default_targets(paths: frozenset[str] | None, path: str) -> bool:
    return path != _TOKEN_PATH if paths is None else path in paths


# --------------------------------------------------------------------------- the fake


class FakeWeCom(FakeServer[Call]):
    """A local WeCom self-built app API server and callback builder. See the module docstring.

    Credentials are random unless given: ``corp_id`` ("ww" + 16 hex), ``secret`` (43
    characters), ``agent_id`` (1000002), ``token`` (the callback Token), ``aes_key`` (the
    43-character EncodingAESKey)."""

    thread_name = "fake-wecom"

    def __init__(
        self,
        *,
        corp_id: str | None = None,
        secret: str | None = None,
        agent_id: int = 1000002,
        token: str | None = None,
        aes_key: str | None = None,
        clock: Callable[[], float] = time.time,
        token_expires_in: int = 7200,
        max_text_bytes: int = 2048,
        media_days: float = 3.0,
        response_code_hours: float = 72.0,
        hint: bool = True,
    ) -> None:
        super().__init__()
        self.corp_id = corp_id or "ww" + secrets.token_hex(8)
        self.secret = secret or "".join(secrets.choice(ALNUM + "-_") for _ in range(43))
        self.agent_id = agent_id
        self.token = token or "".join(secrets.choice(ALNUM) for _ in range(32))
        self.aes_key = aes_key or random_aes_key()
        aes_key_bytes(self.aes_key)  # refuse a malformed key now, not at the first callback
        self.clock = clock
        self.token_expires_in = token_expires_in
        self.max_text_bytes = max_text_bytes
        self.media_days = media_days
        self.response_code_hours = response_code_hours
        self.hint = hint

        self._offset = 0.0
        self._tokens: dict[str, _Token] = {}
        self._token_fetches = 0
        self._members: dict[str, dict[str, Any]] = {}
        self._media: dict[str, _Media] = {}
        self._cards: dict[str, Card] = {}
        self._codes: dict[str, _ResponseCode] = {}
        self._deliveries: list[Delivery] = []
        self._dropped: list[tuple[str, dict[str, Any]]] = []
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._member_limit: tuple[int, bool] | None = None
        self._member_sends: dict[str, deque[float]] = {}
        self._msg_ids = itertools.count(7_000_000_000_000_000_001)
        self._msgids = itertools.count(1)

        self._handlers: dict[str, Callable[[dict[str, str], Any], dict[str, Any] | Response]] = {
            "message/send": self._message_send,
            "message/update_template_card": self._update_template_card,
            "user/get": self._user_get,
            "media/get": self._media_get,
        }

    # ----------------------------------------------------------------- addresses

    @property
    def api_base_url(self) -> str:
        """What wechatpy's ``API_BASE_URL`` must be: ``{url}/cgi-bin/``."""
        return f"{self.url}{_API_PREFIX}"

    @property
    def token_url(self) -> str:
        return f"{self.url}{_API_PREFIX}{_TOKEN_PATH}"

    def settings_env(self) -> dict[str, str]:
        """The REDESK_WECOM_* environment for the product."""
        return {
            "REDESK_WECOM_CORP_ID": self.corp_id,
            "REDESK_WECOM_AGENT_ID": str(self.agent_id),
            "REDESK_WECOM_SECRET": self.secret,
            "REDESK_WECOM_TOKEN": self.token,
            "REDESK_WECOM_AES_KEY": self.aes_key,
            "REDESK_WECOM_API_URL": self.url,
        }

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
        """How many successful gettoken calls there were (a repeated token counts too)."""
        with self._cond:
            return self._token_fetches

    @property
    def tokens(self) -> list[str]:
        """The access tokens issued so far, oldest first."""
        with self._cond:
            return list(self._tokens)

    def _live_token(self) -> str | None:
        now = self.now()
        for value, entry in reversed(self._tokens.items()):
            if not entry.revoked and not entry.expired and now < entry.expires_at:
                return value
        return None

    def new_token(self) -> str:
        """Issues a fresh access token without HTTP (earlier ones stay valid until expiry)."""
        with self._cond:
            token = secrets.token_urlsafe(160)[:214]
            self._tokens[token] = _Token(self.now() + self.token_expires_in)
            return token

    def expire_tokens(self) -> None:
        """Every token issued so far answers 42001 "access_token expired" from now on."""
        with self._cond:
            for entry in self._tokens.values():
                entry.expired = True

    def revoke_tokens(self) -> None:
        """Every token issued so far answers 40014 "invalid access_token" from now on (as after
        the secret was reset in the admin console)."""
        with self._cond:
            for entry in self._tokens.values():
                entry.revoked = True

    # ----------------------------------------------------------------- members, media

    def member(self, userid: str | None = None, name: str | None = None, **fields: Any) -> str:
        """Adds (or updates) a member of the corp visible to the app; returns the UserID.
        ``fields`` override what user/get answers (department, position, mobile, ...)."""
        userid = userid or new_userid()
        with self._cond:
            record = self._members.get(userid) or {
                "userid": userid,
                "name": name or userid,
                "department": [1],
                "order": [0],
                "position": "",
                "mobile": "",
                "gender": "0",
                "email": "",
                "is_leader_in_dept": [0],
                "avatar": "",
                "thumb_avatar": "",
                "telephone": "",
                "alias": "",
                "status": 1,
                "main_department": 1,
                "enable": 1,
            }
            if name is not None:
                record["name"] = name
            record.update(copy.deepcopy(fields))
            self._members[userid] = record
        return userid

    def remove_member(self, userid: str) -> None:
        """The member leaves the corp (or the app's visible range): 60111, invaliduser."""
        with self._cond:
            self._members.pop(userid, None)

    @property
    def members(self) -> list[str]:
        with self._cond:
            return list(self._members)

    def media(
        self,
        media_id: str | None,
        data: bytes,
        content_type: str = "image/jpeg",
        filename: str | None = None,
        at: float | None = None,
    ) -> str:
        """Registers temporary media (valid ``media_days`` from ``at``, default now); returns its
        id (a random one if ``media_id`` is None)."""
        media_id = media_id or "3" + secrets.token_urlsafe(48)
        name = filename or f"{media_id}.{_EXTENSIONS.get(content_type, 'bin')}"
        with self._cond:
            self._media[media_id] = _Media(
                data, content_type, name, self.now() if at is None else at
            )
        return media_id

    # ----------------------------------------------------------------- faults and limits

    def limit_members(self, per_minute: int | None = 30, *, silent: bool = False) -> None:
        """Beyond ``per_minute`` messages to one member within 60 s (fake clock), message/send
        answers 45009 and delivers nothing -- or, ``silent``, answers 0 and drops that member's
        copy (WeCom's documented behaviour). None: no limit."""
        with self._cond:
            self._member_limit = None if per_minute is None else (per_minute, silent)
            self._member_sends.clear()

    def fail_next(
        self,
        n: int = 1,
        status: int = 502,
        *,
        errcode: int | None = None,
        errmsg: str | None = None,
        network: bool = False,
        paths: Iterable[str] | str | None = None,
    ) -> None:
        """The next ``n`` matching calls fail without acting: HTTP ``status`` with an HTML page;
        or -- ``errcode`` -- HTTP 200 and ``{"errcode": errcode, "errmsg": ...}`` (-1 is
        WeCom's "system busy"); or -- ``network`` -- the connection closes unanswered.
        ``paths`` default: every API path but gettoken."""
        with self._cond:
            self._faults.append(_Fault(n, targets(paths, _path), status, errcode, errmsg, network))

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
            self._member_limit = None

    # ----------------------------------------------------------------- what was received

    def count(self, path: str, *, ok: bool | None = None) -> int:
        """How many calls of ``path`` ("message/send") arrived (successful/failed)."""
        path = _path(path)
        return sum(1 for call in self.calls if call.path == path and (ok is None or call.ok == ok))

    def sent(self, userid: str | None = None) -> list[Call]:
        """Successful message/send calls (naming ``userid`` if given), in order."""
        return [
            call
            for call in self.calls
            if call.path == "message/send"
            and call.ok
            and (userid is None or userid in call.userids)
        ]

    def deliveries(self, userid: str | None = None) -> list[Delivery]:
        """What members received (``userid``'s only if given), in order."""
        with self._cond:
            return [d for d in self._deliveries if userid is None or d.userid == userid]

    def texts(self, userid: str | None = None) -> list[str]:
        """The delivered contents of text messages (truncated as WeCom truncates)."""
        return [d.text or "" for d in self.deliveries(userid) if d.msgtype == "text"]

    def markdowns(self, userid: str | None = None) -> list[str]:
        return [d.text or "" for d in self.deliveries(userid) if d.msgtype == "markdown"]

    def cards(self, userid: str | None = None) -> list[dict[str, Any]]:
        """The template cards delivered (to ``userid``), as sent, in order."""
        return [
            copy.deepcopy(d.payload)
            for d in self.deliveries(userid)
            if d.msgtype == "template_card"
        ]

    @property
    def dropped(self) -> list[tuple[str, dict[str, Any]]]:
        """(userid, message body) the silent per-member limit discarded."""
        with self._cond:
            return list(self._dropped)

    def card(self, task_id: str) -> Card | None:
        """A snapshot of the card sent with ``task_id`` (None if none was)."""
        with self._cond:
            found = self._cards.get(task_id)
            return copy.deepcopy(found) if found is not None else None

    def view(self, task_id: str, userid: str) -> CardView | None:
        """What ``userid`` sees of card ``task_id`` now."""
        found = self.card(task_id)
        return found.views.get(userid) if found is not None else None

    def updates(self) -> list[Call]:
        """Successful update_template_card calls, in order."""
        return [c for c in self.calls if c.path == "message/update_template_card" and c.ok]

    def response_code_used(self, code: str) -> bool | None:
        """Whether ``code`` was consumed (None: the fake never issued it)."""
        with self._cond:
            entry = self._codes.get(code)
            return entry.used if entry is not None else None

    # ----------------------------------------------------------------- request handling

    def handle(self, request: Request) -> Response:
        if not request.path.startswith(_API_PREFIX):
            response = Response(404, "text/plain", b"Not Found")
            self._record(request, request.path, None, response)
            return response
        path = request.path[len(_API_PREFIX) :].strip("/")
        body: Any = None
        body_error = False
        try:
            body = request.json()
        except BodyError:
            body_error = True
        fault = self.take(self._faults, path, _default_targets)
        delay = self.take(self._delays, path, _default_targets)
        if delay is not None and delay.before:
            self.pause(delay.seconds)
        if fault is not None and fault.network:
            response = Response(0, "", b"", drop=True)
        elif fault is not None and fault.errcode is not None:
            response = self._error(_ApiError(fault.errcode, fault.errmsg))
        elif fault is not None:
            response = Response(fault.status, "text/html", _SERVER_ERROR_PAGE)
        else:
            try:
                with self._cond:
                    response = self._dispatch(request.method, path, request.query, body, body_error)
            except _ApiError as exc:
                response = self._error(exc)
        self._record(request, path, body, response)
        if delay is not None and not delay.before:
            self.pause(delay.seconds)
        return response

    def _error(self, exc: _ApiError) -> Response:
        message = exc.errmsg
        if self.hint and exc.errcode != 0:
            message = (
                f"{message}, hint: [{int(self.now())}_{secrets.randbelow(10**6)}_"
                f"{secrets.token_hex(16)}], from ip: 127.0.0.1, more info at "
                f"https://open.work.weixin.qq.com/devtool/query?e={exc.errcode}"
            )
        return Response.json(
            {"errcode": exc.errcode, "errmsg": message, **exc.extra}, content_type=_JSON_TYPE
        )

    def _record(self, request: Request, path: str, body: Any, response: Response) -> None:
        decoded: dict[str, Any] | None = None
        errcode: int | None = None
        errmsg: str | None = None
        if response.content_type.startswith("application/json"):
            decoded = _decoded(response)
            errcode = int(decoded.get("errcode", 0)) if decoded is not None else None
            errmsg = decoded.get("errmsg") if decoded is not None else None
        elif response.status == 200 and not response.drop:
            errcode = 0  # media bytes
        self.record(
            Call(
                request.method,
                path,
                dict(request.query),
                copy.deepcopy(body),
                errcode,
                request.at,
                response.status if not response.drop else 0,
                errmsg,
                decoded,
                request.body,
            )
        )

    def _dispatch(
        self,
        verb: str,
        path: str,
        params: dict[str, str],
        body: Any,
        body_error: bool,
    ) -> Response:
        if path == _TOKEN_PATH:
            if verb != "GET":
                raise _ApiError(43001)
            return self._ok(self._fetch_token(params))
        handler = self._handlers.get(path)
        if handler is None:
            return Response(404, "text/plain", b"Not Found")
        self._check_token(params.get("access_token"))
        if path in _POST_PATHS and verb != "POST":
            raise _ApiError(43002)
        if path in _GET_PATHS and verb != "GET":
            raise _ApiError(43001)
        if path in _POST_PATHS and (body_error or not isinstance(body, dict)):
            raise _ApiError(40058, "Warning: wrong json format.")
        result = handler(params, body)
        return result if isinstance(result, Response) else self._ok(result)

    @staticmethod
    def _ok(result: dict[str, Any]) -> Response:
        return Response.json({"errcode": 0, "errmsg": "ok", **result}, content_type=_JSON_TYPE)

    def _fetch_token(self, params: dict[str, str]) -> dict[str, Any]:
        if not params.get("corpid"):
            raise _ApiError(41002)
        if params["corpid"] != self.corp_id:
            raise _ApiError(40013)
        if not params.get("corpsecret"):
            raise _ApiError(41004)
        if params["corpsecret"] != self.secret:
            raise _ApiError(40001)
        token = self._live_token() or self.new_token()
        self._token_fetches += 1
        remaining = int(self._tokens[token].expires_at - self.now())
        return {"access_token": token, "expires_in": remaining}

    def _check_token(self, token: str | None) -> None:
        if not token:
            raise _ApiError(41001)
        entry = self._tokens.get(token)
        if entry is None or entry.revoked:
            raise _ApiError(40014)
        if entry.expired or self.now() >= entry.expires_at:
            raise _ApiError(42001)

    def _check_agent(self, body: dict[str, Any]) -> None:
        agent = body.get("agentid")
        if agent is None or agent == "":
            raise _ApiError(41011)
        try:
            number = int(agent)
        except (TypeError, ValueError):
            raise _ApiError(40056) from None
        if number != self.agent_id:
            raise _ApiError(40056)

    # ----------------------------------------------------------------- message/send

    def _message_send(self, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self._check_agent(body)
        touser, toparty, totag = (str(body.get(k) or "") for k in ("touser", "toparty", "totag"))
        if not (touser or toparty or totag):
            raise _ApiError(82001)
        msgtype = body.get("msgtype")
        if msgtype not in MSG_TYPES:
            raise _ApiError(40008)
        payload = body.get(msgtype)
        if not isinstance(payload, dict):
            raise _ApiError(40058, f"invalid {msgtype}")
        delivered = copy.deepcopy(payload)
        truncated = False
        if msgtype in ("text", "markdown"):
            content = payload.get("content")
            if not isinstance(content, str) or not content:
                raise _ApiError(44004)
            raw = content.encode("utf-8")
            if len(raw) > self.max_text_bytes:
                if msgtype == "markdown":
                    raise _ApiError(45002)
                delivered["content"] = raw[: self.max_text_bytes].decode("utf-8", "ignore")
                truncated = True
        elif msgtype == "template_card":
            self._check_card(payload, new=True)
        if touser == "@all":
            wanted = list(self._members)
        else:
            wanted = [u for u in dict.fromkeys(touser.split("|")) if u]
        valid = [u for u in wanted if u in self._members]
        invalid = {
            "invaliduser": "|".join(u for u in wanted if u not in self._members),
            "invalidparty": toparty,
            "invalidtag": totag,
        }
        extra = {k: v for k, v in invalid.items() if v}
        if not valid:
            raise _ApiError(81013, **extra)
        recipients = self._apply_member_limit(valid, body)
        msgid = f"{secrets.token_urlsafe(24)}_{next(self._msgids)}"
        now = self.now()
        for userid in recipients:
            self._deliveries.append(
                Delivery(userid, msgtype, copy.deepcopy(delivered), msgid, now, truncated)
            )
        answer: dict[str, Any] = {**extra, "msgid": msgid}
        if msgtype == "template_card":
            card_type = str(payload["card_type"])
            task_id = payload.get("task_id")
            if isinstance(task_id, str) and task_id:
                self._cards[task_id] = Card(
                    task_id,
                    card_type,
                    copy.deepcopy(payload),
                    msgid,
                    {u: CardView(copy.deepcopy(payload)) for u in recipients},
                )
                if card_type in INTERACTIVE_CARDS or payload.get("action_menu"):
                    answer["response_code"] = self._issue_code(task_id)
        return answer

    def _apply_member_limit(self, valid: list[str], body: dict[str, Any]) -> list[str]:
        if self._member_limit is None:
            return valid
        per_minute, silent = self._member_limit
        now = self.now()
        over: list[str] = []
        for userid in valid:
            recent = self._member_sends.setdefault(userid, deque())
            while recent and recent[0] <= now - 60.0:
                recent.popleft()
            if len(recent) >= per_minute:
                over.append(userid)
        if over and not silent:
            raise _ApiError(45009)
        for userid in over:
            self._dropped.append((userid, copy.deepcopy(body)))
        kept = [u for u in valid if u not in over]
        for userid in kept:
            self._member_sends[userid].append(now)
        return kept

    def _issue_code(self, task_id: str) -> str:
        code = secrets.token_urlsafe(32)
        self._codes[code] = _ResponseCode(task_id, self.now())
        return code

    def _check_card(self, card: dict[str, Any], *, new: bool) -> None:
        card_type = card.get("card_type")
        if card_type not in CARD_TYPES:
            raise _ApiError(40058, "invalid template_card.card_type")
        task_id = card.get("task_id")
        if card_type in INTERACTIVE_CARDS or card.get("action_menu"):
            if not isinstance(task_id, str) or not task_id:
                raise _ApiError(40058, "template_card.task_id missing")
            if not _TASK_ID_RE.fullmatch(task_id) or len(task_id.encode()) > 128:
                raise _ApiError(40058, "invalid template_card.task_id")
            if new and task_id in self._cards:
                raise _ApiError(40058, "template_card.task_id duplicated")
        main_title = card.get("main_title")
        title = main_title.get("title") if isinstance(main_title, dict) else None
        if card_type == "text_notice":
            if not title and not card.get("sub_title_text"):
                raise _ApiError(41016)
        elif card_type in ("button_interaction", "news_notice") and (
            not isinstance(title, str) or not title
        ):
            raise _ApiError(41016)
        if card_type == "button_interaction":
            self._check_buttons(card.get("button_list"))

    @staticmethod
    def _check_buttons(buttons: Any) -> None:
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 6:
            raise _ApiError(40058, "invalid template_card.button_list")
        keys: set[str] = set()
        for button in buttons:
            if not isinstance(button, dict):
                raise _ApiError(40058, "invalid template_card.button_list")
            text = button.get("text")
            if not isinstance(text, str) or not text:
                raise _ApiError(42020)
            kind = button.get("type", 0)
            if kind in (0, None):
                key = button.get("key")
                if not isinstance(key, str) or not key:
                    raise _ApiError(42019)
                if len(key.encode("utf-8")) > 1024 or key in keys:
                    raise _ApiError(42018)
                keys.add(key)
            elif kind == 1:
                url = button.get("url")
                if not isinstance(url, str) or not url:
                    raise _ApiError(41010)
            else:
                raise _ApiError(40058, "invalid template_card.button_list.type")

    # ----------------------------------------------------------------- update_template_card

    def _update_template_card(
        self,
        params: dict[str, str],
        body: dict[str, Any],
    ) -> dict[str, Any]:
        self._check_agent(body)
        code = body.get("response_code")
        entry = self._codes.get(code) if isinstance(code, str) else None
        if (
            entry is None
            or entry.used
            or self.now() - entry.issued_at > self.response_code_hours * 3600
        ):
            raise _ApiError(RESPONSE_CODE_ERRCODE, "invalid response_code")
        card = self._cards[entry.task_id]
        button = body.get("button")
        new_card = body.get("template_card")
        if (button is None) == (new_card is None):
            raise _ApiError(40058, "exactly one of button and template_card is required")
        replace_name: str | None = None
        if button is not None:
            name = button.get("replace_name") if isinstance(button, dict) else None
            if not isinstance(name, str) or not name:
                raise _ApiError(42020)
            if card.card_type not in INTERACTIVE_CARDS:
                raise _ApiError(40058, "button can only be updated on interactive cards")
            replace_name = name
        else:
            if not isinstance(new_card, dict):
                raise _ApiError(40058, "invalid template_card")
            task_id = new_card.get("task_id")
            if task_id is not None and task_id != card.task_id:
                raise _ApiError(RESPONSE_CODE_ERRCODE, "invalid response_code")
            self._check_card({**new_card, "task_id": card.task_id}, new=False)
        userids = body.get("userids")
        if userids is not None and not isinstance(userids, list):
            raise _ApiError(40058, "invalid userids")
        if body.get("atall") in (1, "1"):
            wanted = card.recipients
        else:
            wanted = [str(u) for u in dict.fromkeys(userids or [])]
        if not wanted and not body.get("partyids") and not body.get("tagids"):
            raise _ApiError(82001)
        valid = [u for u in wanted if u in card.views]
        invalid = [u for u in wanted if u not in card.views]
        extra: dict[str, Any] = {"invaliduser": invalid} if invalid else {}
        if not valid:
            raise _ApiError(81013, **extra)
        entry.used = True
        for userid in valid:
            view = card.views[userid]
            view.updates += 1
            if replace_name is not None:
                view.replace_name = replace_name
            else:
                assert isinstance(new_card, dict)
                view.template_card = copy.deepcopy(new_card)
                view.replace_name = None
        return extra

    # ----------------------------------------------------------------- user/get, media/get

    def _user_get(self, params: dict[str, str], body: Any) -> dict[str, Any]:
        userid = params.get("userid")
        if not userid:
            raise _ApiError(41009)
        record = self._members.get(userid)
        if record is None:
            raise _ApiError(60111)
        return copy.deepcopy(record)

    def _media_get(self, params: dict[str, str], body: Any) -> Response:
        media_id = params.get("media_id")
        if not media_id:
            raise _ApiError(41006)
        stored = self._media.get(media_id)
        if stored is None or self.now() - stored.at > self.media_days * 86400:
            raise _ApiError(40007)
        return Response(
            200,
            stored.content_type,
            stored.data,
            headers={
                "Content-disposition": f'attachment; filename="{stored.filename}"',
                "Cache-Control": "no-cache, must-revalidate",
            },
        )

    # ----------------------------------------------------------------- crypto and callbacks

    def encrypt(
        self,
        message: bytes | str,
        *,
        receive_id: str | None = None,
        random: bytes | None = None,
        aes_key: str | None = None,
    ) -> str:
        """WeCom's encryption of ``message`` for this app (ReceiveId = the corp id)."""
        return encrypt(
            aes_key or self.aes_key,
            message,
            self.corp_id if receive_id is None else receive_id,
            random,
        )

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside ``encrypted``; CryptoError if malformed or not for this corp."""
        message, receive_id = decrypt(self.aes_key, encrypted)
        if receive_id != self.corp_id:
            raise CryptoError(f"ReceiveId is {receive_id!r}, not {self.corp_id!r}")
        return message

    def decrypt_reply(self, body: bytes | str) -> str:
        """Checks a passive reply (``<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>``)
        as WeCom does: MsgSignature, decryption, ReceiveId; returns the inner XML."""
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise CryptoError(f"reply is not XML: {exc}") from None
        fields = {child.tag: (child.text or "") for child in root}
        for name in ("Encrypt", "MsgSignature", "TimeStamp", "Nonce"):
            if not fields.get(name):
                raise CryptoError(f"reply has no {name}")
        if fields["MsgSignature"] != msg_signature(
            self.token, fields["TimeStamp"], fields["Nonce"], fields["Encrypt"]
        ):
            raise CryptoError("MsgSignature does not match")
        return self.decrypt(fields["Encrypt"]).decode("utf-8")

    def _sign(
        self,
        encrypted: str,
        *,
        timestamp: int | str | None,
        stale: bool,
        nonce: str | None,
        bad_signature: bool,
    ) -> dict[str, str]:
        if timestamp is None:
            timestamp = int(self.now()) - (3600 if stale else 0)
        ts = str(timestamp)
        nonce = str(secrets.randbelow(9 * 10**9) + 10**9) if nonce is None else nonce
        signature = msg_signature(self.token, ts, nonce, encrypted)
        return {
            "msg_signature": _corrupt(signature) if bad_signature else signature,
            "timestamp": ts,
            "nonce": nonce,
        }

    def callback(
        self,
        xml: bytes | str,
        *,
        timestamp: int | str | None = None,
        stale: bool = False,
        nonce: str | None = None,
        bad_signature: bool = False,
        receive_id: str | None = None,
        aes_key: str | None = None,
        random: bytes | None = None,
        **info: Any,
    ) -> Callback:
        """Any plaintext (an XML message, hostile XML, not XML at all) encrypted, wrapped and
        signed exactly as WeCom POSTs it. ``stale``: the timestamp an hour old;
        ``receive_id``: another corp's id inside; ``aes_key``: encrypted with another key;
        ``bad_signature``: msg_signature off by one character. ``info`` fills the Callback's
        descriptive fields (userid, msg_id, task_id, ...)."""
        plain = xml.encode("utf-8") if isinstance(xml, str) else xml
        encrypted = self.encrypt(plain, receive_id=receive_id, random=random, aes_key=aes_key)
        body = (
            f"<xml><ToUserName>{_cdata(self.corp_id)}</ToUserName>"
            f"<AgentID>{_cdata(str(self.agent_id))}</AgentID>"
            f"<Encrypt>{_cdata(encrypted)}</Encrypt></xml>"
        ).encode()
        params = self._sign(
            encrypted, timestamp=timestamp, stale=stale, nonce=nonce, bad_signature=bad_signature
        )
        return Callback(params, body, plain.decode("utf-8", "replace"), **info)

    def verification(
        self,
        echostr: str | None = None,
        *,
        timestamp: int | str | None = None,
        stale: bool = False,
        nonce: str | None = None,
        bad_signature: bool = False,
        receive_id: str | None = None,
        aes_key: str | None = None,
    ) -> Callback:
        """WeCom's GET URL verification: ``echostr`` (default a random number) encrypted in the
        query and signed; the app answers ``Callback.echostr``."""
        plain = echostr or str(secrets.randbelow(9 * 10**18) + 10**18)
        encrypted = self.encrypt(plain, receive_id=receive_id, aes_key=aes_key)
        params = self._sign(
            encrypted, timestamp=timestamp, stale=stale, nonce=nonce, bad_signature=bad_signature
        )
        params["echostr"] = encrypted
        return Callback(params, b"", echostr=plain)

    @staticmethod
    def replay(callback: Callback) -> Callback:
        """The identical request again (WeCom retries a callback unanswered in 5 s this way)."""
        return replace(callback, params=dict(callback.params))

    def _message(
        self,
        userid: str,
        msg_type: str,
        fields: list[tuple[str, str, bool]],
        options: dict[str, Any],
        *,
        msg_id: int | None = None,
        with_msg_id: bool = True,
        **info: Any,
    ) -> Callback:
        with self._cond:
            if userid not in self._members:
                self.member(userid)
            created = int(self.now())
            if with_msg_id and msg_id is None:
                msg_id = next(self._msg_ids)
        parts = [
            f"<ToUserName>{_cdata(self.corp_id)}</ToUserName>",
            f"<FromUserName>{_cdata(userid)}</FromUserName>",
            f"<CreateTime>{created}</CreateTime>",
            f"<MsgType>{_cdata(msg_type)}</MsgType>",
        ]
        parts.extend(
            f"<{name}>{_cdata(value) if cdata else value}</{name}>" for name, value, cdata in fields
        )
        if with_msg_id:
            parts.append(f"<MsgId>{msg_id}</MsgId>")
        parts.append(f"<AgentID>{self.agent_id}</AgentID>")
        xml = "<xml>" + "".join(parts) + "</xml>"
        return self.callback(
            xml, userid=userid, msg_id=msg_id if with_msg_id else None, **info, **options
        )

    def text(
        self,
        userid: str,
        content: str,
        msg_id: int | None = None,
        **options: Any,
    ) -> Callback:
        """A text message from member ``userid`` to the app (options: see ``callback``)."""
        return self._message(userid, "text", [("Content", content, True)], options, msg_id=msg_id)

    def image(
        self,
        userid: str,
        media_id: str | None = None,
        msg_id: int | None = None,
        **options: Any,
    ) -> Callback:
        """A picture from ``userid``; its media is registered (JPEG bytes) unless known."""
        with self._cond:
            known = media_id is not None and media_id in self._media
        if not known:
            media_id = self.media(
                media_id, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(1024) + b"\xff\xd9"
            )
        assert media_id is not None
        pic_url = f"https://wework.qpic.cn/wwpic/{media_id}/0"
        return self._message(
            userid,
            "image",
            [("PicUrl", pic_url, True), ("MediaId", media_id, True)],
            options,
            msg_id=msg_id,
        )

    def event(
        self,
        userid: str,
        event: str,
        key: str | None = None,
        **options: Any,
    ) -> Callback:
        """An event (subscribe, unsubscribe, enter_agent, click with ``key`` = EventKey, ...)."""
        fields = [("Event", event, True)]
        if key is not None:
            fields.append(("EventKey", key, True))
        return self._message(userid, "event", fields, options, with_msg_id=False, event_key=key)

    def press(
        self,
        userid: str,
        key: str,
        task_id: str | None = None,
        *,
        card_type: str | None = None,
        response_code: str | None = None,
        **options: Any,
    ) -> Callback:
        """``userid`` presses button ``key`` on card ``task_id`` (default: the latest card
        delivered to ``userid``): a template_card_event with EventKey, TaskId, CardType and a
        fresh ResponseCode, usable once with update_template_card. Neither the key nor the
        task_id is checked, so forged presses can be built; a code for an unknown task_id is
        not registered (update_template_card refuses it)."""
        with self._cond:
            if task_id is None:
                latest = next(
                    (
                        d.payload
                        for d in reversed(self._deliveries)
                        if d.userid == userid and d.msgtype == "template_card"
                    ),
                    None,
                )
                if latest is None:
                    raise ValueError(f"no card was delivered to {userid!r}")
                task_id = str(latest.get("task_id"))
            card = self._cards.get(task_id)
            if card_type is None:
                card_type = card.card_type if card is not None else "button_interaction"
            if response_code is None:
                response_code = (
                    self._issue_code(task_id) if card is not None else secrets.token_urlsafe(32)
                )
        fields = [
            ("Event", "template_card_event", True),
            ("EventKey", key, True),
            ("TaskId", task_id, True),
            ("CardType", card_type, True),
            ("ResponseCode", response_code, True),
        ]
        return self._message(
            userid,
            "event",
            fields,
            options,
            with_msg_id=False,
            task_id=task_id,
            event_key=key,
            response_code=response_code,
        )

    def post_callback(
        self,
        url: str,
        callback: Callback,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """Sends ``callback`` to the app's ``url`` like WeCom (POST text/xml, or GET for a
        verification); returns (status, body)."""
        if callback.is_verification:
            request = urllib.request.Request(callback.url(url), method="GET")
        else:
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
