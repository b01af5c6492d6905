"""A small local fake of the Telegram Bot API, for tests that drive the real python-telegram-bot.

Standard library only: the shared scaffold (``tests.fakes.scaffold``), a real HTTP server on
127.0.0.1 in a background thread.

    with FakeTelegram() as fake:
        bot = telegram.Bot(fake.token, base_url=f"{fake.url}/bot",
                           base_file_url=f"{fake.url}/file/bot")   # or Bot(**fake.bot_kwargs())
        # REDESK_TELEGRAM_API_URL = fake.url

The server answers ``{api}/bot{token}/{method}`` (GET or POST; JSON, urlencoded or multipart
bodies; method names are case-insensitive like Telegram's) and ``{api}/file/bot{token}/{path}``.

What python-telegram-bot 22.x (HTTPXRequest) does with the answers -- for the adapter author:

    HTTP answer                          exception raised by the Bot method
    -----------------------------------  --------------------------------------------------------
    any status with parameters.retry_after  telegram.error.RetryAfter (429 here); see WARNING below
    403 (blocked, kicked)                telegram.error.Forbidden
    400 (too long, not modified, ...)    telegram.error.BadRequest; exc.message == str(exc) ==
                                         the description without "Bad Request: " passed through
                                         str.capitalize() -- the REST IS LOWERCASED
                                         ("BUTTON_DATA_INVALID" -> "Button_data_invalid"), so
                                         match with ``in exc.message.lower()``
    401 / 404 (bad token / unknown method)  telegram.error.InvalidToken
    409 (webhook set / second poller)    telegram.error.Conflict
    500, 502 and any other status        telegram.error.NetworkError (NOT a more specific class;
                                         502 too). BadRequest, TimedOut and RetryAfter are
                                         subclasses of NetworkError too, so catch those first.
    client timeout (delay_next)          telegram.error.TimedOut (a NetworkError subclass)
    connection refused / server stopped  telegram.error.NetworkError ("httpx.ConnectError: ...")

WARNING (PTB >= 22.2): ``RetryAfter.__init__`` reads its own ``retry_after`` property, which
issues a ``PTBDeprecationWarning`` unless the environment has ``PTB_TIMEDELTA=true``. Under
pytest's ``filterwarnings = error`` a 429 therefore surfaces as ``PTBDeprecationWarning`` instead
of ``RetryAfter``. Set ``PTB_TIMEDELTA=true`` (``monkeypatch.setenv``; the adapter should set it
or be ready for it too); then ``exc.retry_after`` is a ``datetime.timedelta``, not an int.
The same warning fires when reading ``.duration`` of Voice/Video and other time periods.

What PTB sends: every API call is a POST with ``application/x-www-form-urlencoded`` (httpx
``data=``), every value a string (``chat_id="42"``, ``show_alert="true"``, ``reply_markup`` a JSON
string); only calls that upload files are ``multipart/form-data``. File downloads are GETs. The
fake also accepts JSON bodies and query strings, and converts known fields to their types, so
``Call.params`` looks the same whatever the encoding.

Behaviour worth knowing:

* Limits (``limits_enabled``): one message per ``per_chat_interval`` seconds in every chat
  (measured with ``time.monotonic``; spacing of 0.9 x the interval is accepted), at most
  ``group_per_minute`` per minute in a group (negative chat id), ``global_per_second`` in all.
  Counted: every successful send* and edit*. A refused call answers 429 and is not counted.
* Message ids come from one counter shared by sends and update builders, so they increase within
  every chat and never collide. Update ids start at 700000001.
* ``parse_mode`` is honoured: HTML and MarkdownV2 (and legacy Markdown) are parsed, the delivered
  text (``texts()``, the returned Message) is the plain text, and malformed markup answers 400
  "Bad Request: can't parse entities: ..." like Telegram -- an unescaped ``<`` in HTML or ``.``
  in MarkdownV2 fails. The 4096 limit applies to the parsed text.
* Inline keyboards are validated (callback_data 1-64 bytes UTF-8, else 400 BUTTON_DATA_INVALID)
  and echoed in the returned Message; other keyboards are accepted but not echoed (as Telegram).
  editMessageText without reply_markup removes the inline keyboard (as Telegram).
* getUpdates: allowed_updates is remembered like Telegram's; by default message_reaction,
  message_reaction_count and chat_member updates are not delivered (and dropped). A second
  concurrent getUpdates ends the first with 409; setWebhook ends a waiting poll with 409.
* setWebhook accepts http:// URLs too (Telegram wants https), so a local app can be the target;
  nothing is pushed to it by itself: tests call ``post_webhook``.
* answerCallbackQuery: only ids issued by ``callback_update`` are accepted, each once.
* Sending media by file_id needs a known id (``add_file`` or an update builder); unknown ids
  answer 400 "wrong file identifier/HTTP URL specified". http(s) URLs are accepted.
* ``delay_next`` performs the call first and delays the answer (the message IS delivered although
  the client times out -- the case idempotency must survive); ``before=True`` delays first.
* Use ``wait_for`` from threads/sync tests and ``await wait_for_async`` inside a running event loop
  (the sync one would block the loop the bot runs on).
* Bugs in the fake itself answer 500 and are collected in ``fake.errors``.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
import re
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.scaffold import (
    BodyError,
    FakeServer,
    Request,
    Response,
    Script,
    UploadedFile,
    parse_multipart,
    targets,
)

DEFAULT_TOKEN = "123456:TEST-TOKEN"
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024

#: Methods that deliver a new message to a chat.
SEND_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendVoice",
        "sendVideo",
        "sendDocument",
        "sendLocation",
        "sendVideoNote",
        "sendAnimation",
        "sendAudio",
    }
)
#: Methods that change a message the bot sent.
EDIT_METHODS = frozenset({"editMessageText", "editMessageReplyMarkup", "editMessageCaption"})

#: Update types Telegram does not deliver unless allowed_updates names them.
_NOT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_CONFLICT_POLL = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)

_INT_FIELDS = frozenset(
    {
        "message_id",
        "offset",
        "limit",
        "timeout",
        "duration",
        "width",
        "height",
        "reply_to_message_id",
        "message_thread_id",
        "cache_time",
        "max_connections",
        "live_period",
        "heading",
        "proximity_alert_radius",
        "from_chat_id",
    }
)
_FLOAT_FIELDS = frozenset({"latitude", "longitude", "horizontal_accuracy"})
_BOOL_FIELDS = frozenset(
    {
        "show_alert",
        "disable_notification",
        "protect_content",
        "drop_pending_updates",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "supports_streaming",
        "has_spoiler",
        "disable_content_type_detection",
        "show_caption_above_media",
    }
)
_JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "entities",
        "caption_entities",
        "reply_parameters",
        "link_preview_options",
        "commands",
        "scope",
        "media",
    }
)
_INT_RE = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Call:
    """One request the fake answered. ``at`` is ``time.monotonic()`` when it arrived."""

    method: str
    params: dict[str, Any]
    status: int
    at: float
    result: Any = None
    description: str | None = None
    content_type: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def chat_id(self) -> int | str | None:
        return _norm_chat(self.params.get("chat_id"))


class ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def _too_many(retry_after: int) -> ApiError:
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


@dataclass
class _Fault(Script):
    status: int = 500
    description: str = "Internal Server Error"


@dataclass
class _Delay(Script):
    seconds: float = 0.0
    before: bool = False


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes = field(repr=False)

    def as_file(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
            "file_path": self.file_path,
        }


_REGISTERED: Any = object()  # post_webhook: "the secret given to setWebhook"


def _norm_chat(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or value is None:
        return value
    text = str(value).strip()
    return int(text) if _INT_RE.fullmatch(text) else text


def _message_of(message: dict[str, Any] | Call) -> dict[str, Any]:
    """A Message dict, given one or the Call whose result it is."""
    if isinstance(message, Call):
        if not isinstance(message.result, dict):
            raise ValueError(f"{message.method} call has no Message result")
        return message.result
    return message


def _update_type(update: dict[str, Any]) -> str:
    return next((key for key in update if key != "update_id"), "")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _coerce(params: dict[str, Any]) -> dict[str, Any]:
    """Gives form-encoded strings the types Telegram reads them as."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str):
            if key == "chat_id":
                value = _norm_chat(value)
            elif key in _INT_FIELDS and _INT_RE.fullmatch(value.strip()):
                value = int(value)
            elif key in _FLOAT_FIELDS:
                try:
                    value = float(value)
                except ValueError:
                    raise _bad(f'field "{key}" must be a number') from None
            elif key in _BOOL_FIELDS:
                value = value.strip().lower() in ("true", "1")
            elif key in _JSON_FIELDS:
                try:
                    value = json.loads(value)
                except ValueError:
                    if key == "reply_markup":
                        raise _bad("can't parse reply keyboard markup JSON object") from None
                    raise _bad(f"can't parse {key} JSON object") from None
        elif key == "chat_id":
            value = _norm_chat(value)
        out[key] = value
    return out


# --------------------------------------------------------------------------- parse modes


_HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[str] = []
        self.error: str | None = None

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS or (tag == "span" and ("class", "tg-spoiler") not in attrs):
            self._fail(f'Unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._fail(f'Unsupported start tag "{tag}"')  # no <br/> and friends at Telegram

    def handle_endtag(self, tag: str) -> None:
        if not self.stack:
            self._fail(f'Unexpected end tag "{tag}"')
        elif self.stack[-1] != tag:
            self._fail(f'Unmatched end tag, expected "</{self.stack[-1]}>", found "</{tag}>"')
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_decl(self, decl: str) -> None:
        self._fail("Unsupported start tag")

    def handle_comment(self, data: str) -> None:
        self._fail("Unsupported start tag")

    def handle_pi(self, data: str) -> None:
        self._fail("Unsupported start tag")

    def unknown_decl(self, data: str) -> None:
        self._fail("Unsupported start tag")


def _parse_html(text: str) -> str:
    # A '<' that does not open a tag is an error at Telegram; HTMLParser would keep it as text.
    for match in re.finditer(r"<", text):
        rest = text[match.start() + 1 :]
        if not re.match(r"/?[A-Za-z]", rest):
            raise _bad(
                'can\'t parse entities: Unsupported start tag "" at byte offset '
                f"{_byte_offset(text, match.start())}"
            )
    parser = _HtmlText()
    parser.feed(text)
    if "<" in parser.rawdata:  # an unfinished tag at the end, which close() would keep as text
        raise _bad(
            "can't parse entities: Unclosed start tag at byte offset "
            f"{_byte_offset(text, len(text) - len(parser.rawdata))}"
        )
    parser.close()
    if parser.error:
        raise _bad(f"can't parse entities: {parser.error}")
    if parser.stack:
        raise _bad(
            "can't parse entities: Can't find end tag corresponding to start tag "
            f'"{parser.stack[-1]}"'
        )
    return "".join(parser.parts)


_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MDV2_NAMES = {
    "*": "Bold",
    "_": "Italic",
    "__": "Underline",
    "~": "Strikethrough",
    "||": "Spoiler",
    "[": "TextUrl",
}


def _parse_markdown_v2(text: str) -> str:  # a small hand-written tokenizer
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i, n = 0, len(text)

    def reserved(index: int) -> ApiError:
        return _bad(
            f"can't parse entities: Character '{text[index]}' is reserved and must be escaped "
            "with the preceding '\\'"
        )

    def find_unescaped(token: str, start: int) -> int:
        j = start
        while j < n:
            if text[j] == "\\":
                j += 2
                continue
            if text.startswith(token, j):
                return j
            j += 1
        return -1

    def unescape(chunk: str) -> str:
        return re.sub(r"\\([\x01-\x7e])", r"\1", chunk)

    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            out.append(text[i + 1])
            i += 2
            continue
        if text.startswith("```", i):
            end = find_unescaped("```", i + 3)
            if end < 0:
                raise _bad(
                    "can't parse entities: Can't find end of Pre entity at byte offset "
                    f"{_byte_offset(text, i)}"
                )
            body = text[i + 3 : end]
            first, newline, rest = body.partition("\n")
            if newline and re.fullmatch(r"[A-Za-z0-9_+-]*", first):
                body = rest
            out.append(unescape(body))
            i = end + 3
            continue
        if c == "`":
            end = find_unescaped("`", i + 1)
            if end < 0:
                raise _bad(
                    "can't parse entities: Can't find end of Code entity at byte offset "
                    f"{_byte_offset(text, i)}"
                )
            out.append(unescape(text[i + 1 : end]))
            i = end + 1
            continue
        if c == "]":
            if not stack or stack[-1][0] != "[":
                raise reserved(i)
            stack.pop()
            if i + 1 < n and text[i + 1] == "(":
                end = find_unescaped(")", i + 2)
                if end < 0:
                    raise _bad("can't parse entities: Can't find end of a URL")
                i = end + 1
            else:
                i += 1
            continue
        if c == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1  # blockquote marker
            continue
        token = None
        if text.startswith("__", i):
            token = "__"
        elif text.startswith("||", i):
            token = "||"
        elif c in "*_~[":
            token = c
        if token is not None:
            if token != "[" and stack and stack[-1][0] == token:
                stack.pop()
            elif token != "[" and any(open_ == token for open_, _ in stack):
                raise _bad(
                    f"can't parse entities: Can't find end of {_MDV2_NAMES[stack[-1][0]]} "
                    f"entity at byte offset {_byte_offset(text, stack[-1][1])}"
                )
            else:
                stack.append((token, i))
            i += len(token)
            continue
        if c in _MDV2_RESERVED:
            raise reserved(i)
        out.append(c)
        i += 1
    if stack:
        token, start = stack[-1]
        raise _bad(
            f"can't parse entities: Can't find end of {_MDV2_NAMES[token]} entity at byte "
            f"offset {_byte_offset(text, start)}"
        )
    return "".join(out)


def _parse_markdown(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            i += 2
            continue
        token = "```" if text.startswith("```", i) else c if c in "*_`[" else None
        if token is None:
            out.append(c)
            i += 1
            continue
        close = "]" if token == "[" else token
        end = text.find(close, i + len(token))
        if end < 0:
            raise _bad(
                "can't parse entities: Can't find end of the entity starting at byte offset "
                f"{_byte_offset(text, i)}"
            )
        out.append(text[i + len(token) : end])
        i = end + len(close)
        if token == "[" and i < n and text[i] == "(":
            url_end = text.find(")", i)
            i = url_end + 1 if url_end >= 0 else n
    return "".join(out)


def render_text(text: str, parse_mode: str | None) -> str:
    """The text Telegram shows for ``text`` sent with ``parse_mode`` (400 ApiError if invalid)."""
    mode = (parse_mode or "").strip().lower()
    if not mode:
        return text
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _parse_markdown_v2(text)
    if mode == "markdown":
        return _parse_markdown(text)
    raise _bad(f"unsupported parse_mode: {parse_mode}")


# --------------------------------------------------------------------------- the fake


class FakeTelegram(FakeServer[Call]):
    """A local Telegram Bot API server. See the module docstring."""

    #: Spacing accepted between two messages in one chat, as a share of per_chat_interval.
    SPACING_TOLERANCE = 0.9

    thread_name = "fake-telegram"

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        per_chat_interval: float = 1.0,
        group_per_minute: int = 20,
        global_per_second: int = 30,
        limits_enabled: bool = True,
    ) -> None:
        super().__init__()
        self.token = token
        self.per_chat_interval = per_chat_interval
        self.group_per_minute = group_per_minute
        self.global_per_second = global_per_second
        self.limits_enabled = limits_enabled
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456
        #: The bot's User, as the "from" of what it sends (getMe adds the capability flags).
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "redesk",
            "username": "redesk_bot",
        }
        #: Every post_webhook: (url, update, status).
        self.webhook_posts: list[tuple[str, dict[str, Any], int]] = []
        self.webhook: dict[str, Any] = {}
        self.commands: list[dict[str, Any]] = []

        self._updates: list[dict[str, Any]] = []
        self._allowed: frozenset[str] | None = None
        self._poll_generation = 0
        self._waiting_polls = 0
        self._update_ids = itertools.count(700000001)
        self._message_ids = itertools.count(1)
        self._file_numbers = itertools.count(1)
        self._query_ids = itertools.count(4096000000000000001)
        self._users: dict[int, dict[str, Any]] = {}
        self._chats: dict[int | str, dict[str, Any]] = {}
        self._messages: dict[tuple[int | str, int], dict[str, Any]] = {}
        self._files: dict[str, _StoredFile] = {}
        self._paths: dict[str, str] = {}
        self._issued_queries: set[str] = set()
        self._answered_queries: set[str] = set()
        self._blocked: set[int | str] = set()
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._forced_429: tuple[float, int] | None = None
        self._last_send: dict[int | str, float] = {}
        self._group_sends: dict[int | str, deque[float]] = {}
        self._global_sends: deque[float] = deque()

        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getMe": self._get_me,
            "logOut": lambda p: True,
            "close": lambda p: True,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "sendPhoto": lambda p: self._send_media(p, "photo"),
            "sendVoice": lambda p: self._send_media(p, "voice"),
            "sendVideo": lambda p: self._send_media(p, "video"),
            "sendDocument": lambda p: self._send_media(p, "document"),
            "sendVideoNote": lambda p: self._send_media(p, "video_note"),
            "sendAnimation": lambda p: self._send_media(p, "animation"),
            "sendAudio": lambda p: self._send_media(p, "audio"),
            "sendLocation": self._send_location,
            "sendChatAction": self._send_chat_action,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "editMessageCaption": self._edit_message_caption,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": self._get_file,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": lambda p: copy.deepcopy(self.commands),
            "deleteMyCommands": self._delete_my_commands,
        }
        self._by_lower = {name.lower(): name for name in self._handlers}

    # ----------------------------------------------------------------- lifecycle

    def on_stop(self) -> None:
        with self._cond:
            self._cond.notify_all()  # wake waiting getUpdates

    def bot_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``telegram.Bot(**fake.bot_kwargs())``."""
        return {
            "token": self.token,
            "base_url": f"{self.url}/bot",
            "base_file_url": f"{self.url}/file/bot",
        }

    # ----------------------------------------------------------------- fault injection

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        description: str = "Internal Server Error",
        methods: Iterable[str] | str | None = None,
    ) -> None:
        """The next ``n`` calls of ``methods`` (default: any) answer ``status`` without acting."""
        with self._cond:
            self._faults.append(_Fault(n, targets(methods, str.lower), status, description))

    def delay_next(
        self,
        n: int,
        seconds: float,
        methods: Iterable[str] | str | None = None,
        *,
        before: bool = False,
    ) -> None:
        """The next ``n`` matching calls answer ``seconds`` late (acting first unless before)."""
        with self._cond:
            self._delays.append(_Delay(n, targets(methods, str.lower), seconds, before))

    def block(self, chat_id: int | str) -> None:
        """Sends to ``chat_id`` answer 403 (the user blocked the bot / kicked it from a group)."""
        with self._cond:
            self._blocked.add(_norm_chat(chat_id) or chat_id)

    def unblock(self, chat_id: int | str) -> None:
        with self._cond:
            self._blocked.discard(_norm_chat(chat_id) or chat_id)

    def force_429(self, seconds_retry_after: int, duration: float) -> None:
        """For ``duration`` seconds every send/edit answers 429 retry after N."""
        with self._cond:
            self._forced_429 = (time.monotonic() + duration, int(seconds_retry_after))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()
            self._delays.clear()
            self._blocked.clear()
            self._forced_429 = None

    def reset_limits(self) -> None:
        """Forgets the sends counted by the rate limits."""
        with self._cond:
            self._last_send.clear()
            self._group_sends.clear()
            self._global_sends.clear()

    # ----------------------------------------------------------------- recording

    def count(self, method: str, *, ok: bool | None = None) -> int:
        """How many calls of ``method`` arrived (only successful/failed ones if ``ok`` is set)."""
        return sum(
            1
            for call in self.calls
            if call.method.lower() == method.lower() and (ok is None or call.ok == ok)
        )

    def sent(self, chat_id: int | str | None = None) -> list[Call]:
        """Successful sendMessage/send* calls (to ``chat_id`` if given)."""
        return self._successful(SEND_METHODS, chat_id)

    def texts(self, chat_id: int | str | None = None) -> list[str]:
        """The texts sendMessage delivered (to ``chat_id`` if given), in order, as shown."""
        return [call.result["text"] for call in self._successful({"sendMessage"}, chat_id)]

    def edits(self, chat_id: int | str | None = None) -> list[Call]:
        """Successful editMessage* calls (in ``chat_id`` if given)."""
        return self._successful(EDIT_METHODS, chat_id)

    def callback_answers(self) -> list[Call]:
        """Successful answerCallbackQuery calls."""
        return self._successful({"answerCallbackQuery"}, None)

    def messages(self, chat_id: int | str) -> list[dict[str, Any]]:
        """The bot's messages in ``chat_id`` as they are now (after edits, without deleted)."""
        chat = _norm_chat(chat_id)
        with self._cond:
            found = [
                copy.deepcopy(message)
                for (key, _), message in self._messages.items()
                if key == chat
            ]
        return sorted(found, key=lambda message: message["message_id"])

    def last_message(self, chat_id: int | str) -> dict[str, Any] | None:
        found = self.messages(chat_id)
        return found[-1] if found else None

    @staticmethod
    def buttons(message: dict[str, Any] | Call) -> list[tuple[str, str | None]]:
        """(text, callback_data) of every inline button of a sent message, row by row."""
        message = _message_of(message)
        rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
        return [(button["text"], button.get("callback_data")) for row in rows for button in row]

    def _successful(self, methods: Iterable[str], chat_id: int | str | None) -> list[Call]:
        wanted = set(methods)
        chat = _norm_chat(chat_id)
        return [
            call
            for call in self.calls
            if call.ok and call.method in wanted and (chat is None or call.chat_id == chat)
        ]

    # ----------------------------------------------------------------- files

    def add_file(
        self,
        file_id: str | None,
        content: bytes,
        *,
        file_path: str | None = None,
        kind: str = "documents",
    ) -> dict[str, Any]:
        """Registers a file (getFile + download serve it); returns its File object."""
        number = next(self._file_numbers)
        file_id = file_id or f"{_ID_PREFIXES.get(kind, 'BQAC')}AgIAAxkBAAI{number:06d}fake"
        stored = _StoredFile(
            file_id=file_id,
            file_unique_id=f"AgAD{number:06d}",
            file_path=file_path or f"{kind}/file_{number}{_EXTENSIONS.get(kind, '')}",
            content=bytes(content),
        )
        with self._cond:
            self._files[file_id] = stored
            self._paths[stored.file_path] = file_id
        return stored.as_file()

    def file_content(self, file_id: str) -> bytes:
        with self._cond:
            return self._files[file_id].content

    # ----------------------------------------------------------------- update builders

    def user(
        self,
        id: int,
        first_name: str = "Test",
        username: str | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """A User (and the private chat with them is known from now on)."""
        user: dict[str, Any] = {"id": int(id), "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        with self._cond:
            self._users[int(id)] = user
        return dict(user)

    def group(self, id: int = -1001234567890, title: str = "Test group") -> dict[str, Any]:
        """A supergroup Chat (id negative)."""
        if int(id) >= 0:
            raise ValueError("group chat ids are negative")
        chat = {"id": int(id), "type": "supergroup", "title": title}
        with self._cond:
            self._chats[int(id)] = chat
        return dict(chat)

    def channel(self, id: int = -1009876543210, title: str = "Test channel") -> dict[str, Any]:
        """A channel Chat."""
        chat = {"id": int(id), "type": "channel", "title": title}
        with self._cond:
            self._chats[int(id)] = chat
        return dict(chat)

    def private_chat(self, user: dict[str, Any]) -> dict[str, Any]:
        chat: dict[str, Any] = {
            "id": user["id"],
            "type": "private",
            "first_name": user.get("first_name", "User"),
        }
        if user.get("username"):
            chat["username"] = user["username"]
        return chat

    def _incoming(
        self, user: dict[str, Any], chat: dict[str, Any] | None, **fields: Any
    ) -> dict[str, Any]:
        self.user(
            user["id"],
            user.get("first_name", "Test"),
            user.get("username"),
            user.get("language_code"),
        )
        return {
            "message_id": next(self._message_ids),
            "from": dict(user),
            "chat": dict(chat) if chat else self.private_chat(user),
            "date": int(time.time()),
            **fields,
        }

    def _update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"update_id": next(self._update_ids), kind: payload}

    def text_update(
        self, user: dict[str, Any], text: str, chat: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._update("message", self._incoming(user, chat, text=text))

    def command_update(
        self,
        user: dict[str, Any],
        command: str,
        args: str | None = None,
        chat: dict[str, Any] | None = None,
        *,
        mention: bool = False,
    ) -> dict[str, Any]:
        """``/command[@redesk_bot] [args]`` with its bot_command entity."""
        command = "/" + command.lstrip("/")
        if mention:
            command += f"@{self.bot_user['username']}"
        text = f"{command} {args}" if args else command
        length = len(command.encode("utf-16-le")) // 2  # entity offsets count UTF-16 units
        entity = {"type": "bot_command", "offset": 0, "length": length}
        return self._update("message", self._incoming(user, chat, text=text, entities=[entity]))

    def photo_update(
        self,
        user: dict[str, Any],
        file_ids: list[str] | None = None,
        sizes: list[tuple[int, int]] | None = None,
        caption: str | None = None,
        chat: dict[str, Any] | None = None,
        content: bytes | None = None,
    ) -> dict[str, Any]:
        """A photo as Telegram sends it: PhotoSizes smallest first; the largest gets ``content``."""
        if sizes is None:
            defaults = [(90, 68), (320, 240), (800, 600), (1280, 960)]
            count = len(file_ids) if file_ids else 3
            sizes = (
                defaults[:count]
                if count <= 4
                else [(90 * (k + 1), 68 * (k + 1)) for k in range(count)]
            )
        if file_ids is not None and len(file_ids) != len(sizes):
            raise ValueError("file_ids and sizes must have the same length")
        photo = []
        for index, (width, height) in enumerate(sizes):
            largest = index == len(sizes) - 1
            data = (
                content
                if (largest and content is not None)
                else _fake_bytes(b"\xff\xd8\xff\xe0", width * height // 20 + 100)
            )
            file_id = file_ids[index] if file_ids else None
            stored = self.add_file(file_id, data, kind="photos")
            photo.append(
                {
                    "file_id": stored["file_id"],
                    "file_unique_id": stored["file_unique_id"],
                    "width": width,
                    "height": height,
                    "file_size": stored["file_size"],
                }
            )
        fields: dict[str, Any] = {"photo": photo}
        if caption is not None:
            fields["caption"] = caption
        return self._update("message", self._incoming(user, chat, **fields))

    def voice_update(
        self,
        user: dict[str, Any],
        file_id: str | None = None,
        duration: int = 3,
        content: bytes | None = None,
        chat: dict[str, Any] | None = None,
        caption: str | None = None,
    ) -> dict[str, Any]:
        data = content if content is not None else _fake_bytes(b"OggS", 4000)
        stored = self.add_file(file_id, data, kind="voice")
        voice = {
            "file_id": stored["file_id"],
            "file_unique_id": stored["file_unique_id"],
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": stored["file_size"],
        }
        fields: dict[str, Any] = {"voice": voice}
        if caption is not None:
            fields["caption"] = caption
        return self._update("message", self._incoming(user, chat, **fields))

    def video_update(
        self,
        user: dict[str, Any],
        file_id: str | None = None,
        duration: int = 5,
        width: int = 640,
        height: int = 360,
        content: bytes | None = None,
        caption: str | None = None,
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = content if content is not None else _fake_bytes(b"\0\0\0\x18ftypmp42", 20000)
        stored = self.add_file(file_id, data, kind="videos")
        video = {
            "file_id": stored["file_id"],
            "file_unique_id": stored["file_unique_id"],
            "width": width,
            "height": height,
            "duration": duration,
            "mime_type": "video/mp4",
            "file_size": stored["file_size"],
        }
        fields: dict[str, Any] = {"video": video}
        if caption is not None:
            fields["caption"] = caption
        return self._update("message", self._incoming(user, chat, **fields))

    def document_update(
        self,
        user: dict[str, Any],
        file_name: str = "report.pdf",
        mime_type: str = "application/pdf",
        content: bytes | None = None,
        file_id: str | None = None,
        caption: str | None = None,
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = content if content is not None else _fake_bytes(b"%PDF-1.4\n", 3000)
        stored = self.add_file(file_id, data, kind="documents")
        document = {
            "file_id": stored["file_id"],
            "file_unique_id": stored["file_unique_id"],
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": stored["file_size"],
        }
        fields: dict[str, Any] = {"document": document}
        if caption is not None:
            fields["caption"] = caption
        return self._update("message", self._incoming(user, chat, **fields))

    def video_note_update(
        self,
        user: dict[str, Any],
        file_id: str | None = None,
        duration: int = 4,
        length: int = 240,
        content: bytes | None = None,
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A round video message (VideoNote: no caption, no mime type, square ``length``)."""
        data = content if content is not None else _fake_bytes(b"\0\0\0\x18ftypmp42", 9000)
        stored = self.add_file(file_id, data, kind="video_notes")
        note = {
            "file_id": stored["file_id"],
            "file_unique_id": stored["file_unique_id"],
            "length": length,
            "duration": duration,
            "file_size": stored["file_size"],
        }
        return self._update("message", self._incoming(user, chat, video_note=note))

    def animation_update(
        self,
        user: dict[str, Any],
        file_id: str | None = None,
        caption: str | None = None,
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A GIF or silent MP4; like Telegram, ``document`` is set too with the same file."""
        stored = self.add_file(file_id, _fake_bytes(b"\0\0\0\x18ftypmp42", 6000), kind="animations")
        animation = {
            "file_id": stored["file_id"],
            "file_unique_id": stored["file_unique_id"],
            "width": 480,
            "height": 270,
            "duration": 2,
            "file_name": "loop.mp4",
            "mime_type": "video/mp4",
            "file_size": stored["file_size"],
        }
        document = {
            key: animation[key]
            for key in ("file_id", "file_unique_id", "file_name", "mime_type", "file_size")
        }
        fields: dict[str, Any] = {"animation": animation, "document": document}
        if caption is not None:
            fields["caption"] = caption
        return self._update("message", self._incoming(user, chat, **fields))

    def audio_update(
        self,
        user: dict[str, Any],
        file_id: str | None = None,
        caption: str | None = None,
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A music file (Audio: performer, title, file name, audio/mpeg)."""
        stored = self.add_file(file_id, _fake_bytes(b"ID3\x04", 5000), kind="music")
        audio = {
            "file_id": stored["file_id"],
            "file_unique_id": stored["file_unique_id"],
            "duration": 30,
            "performer": "街坊",
            "title": "夜间施工噪音",
            "file_name": "noise.mp3",
            "mime_type": "audio/mpeg",
            "file_size": stored["file_size"],
        }
        fields: dict[str, Any] = {"audio": audio}
        if caption is not None:
            fields["caption"] = caption
        return self._update("message", self._incoming(user, chat, **fields))

    def contact_update(
        self,
        user: dict[str, Any],
        phone_number: str,
        first_name: str,
        last_name: str | None = None,
        user_id: int | None = None,
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A shared contact card; ``user_id`` is set when the contact is a Telegram user (the
        sender's own, from a request_contact button, has the sender's id)."""
        contact: dict[str, Any] = {"phone_number": phone_number, "first_name": first_name}
        if last_name is not None:
            contact["last_name"] = last_name
        if user_id is not None:
            contact["user_id"] = user_id
        return self._update("message", self._incoming(user, chat, contact=contact))

    def message_update(
        self, user: dict[str, Any], chat: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A message with the given Bot API fields (dice, poll, sticker, venue, ...)."""
        return self._update("message", self._incoming(user, chat, **fields))

    def location_update(
        self,
        user: dict[str, Any],
        latitude: float,
        longitude: float,
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        location = {"latitude": float(latitude), "longitude": float(longitude)}
        return self._update("message", self._incoming(user, chat, location=location))

    def edited_text_update(self, original_update: dict[str, Any], new_text: str) -> dict[str, Any]:
        """The user edited the message of ``original_update`` (same message_id, edit_date)."""
        message = original_update.get("message") or original_update.get("edited_message")
        if message is None:  # a Message dict itself
            message = original_update
        edited = copy.deepcopy(message)
        edited["text"] = new_text
        edited.pop("entities", None)
        edited["edit_date"] = max(int(time.time()), int(edited["date"]))
        return self._update("edited_message", edited)

    def callback_update(
        self,
        user: dict[str, Any],
        data: str,
        message: dict[str, Any] | Call,
    ) -> dict[str, Any]:
        """The user pressed a button with ``data`` under ``message`` (a Message the bot sent,
        or the Call that sent it); the query id is registered for answerCallbackQuery."""
        message = _message_of(message)
        chat_id = _norm_chat(message["chat"]["id"]) or 0
        with self._cond:
            current = self._messages.get((chat_id, int(message["message_id"])))
            query_id = str(next(self._query_ids))
            self._issued_queries.add(query_id)
        self.user(user["id"], user.get("first_name", "Test"), user.get("username"))
        query = {
            "id": query_id,
            "from": dict(user),
            "message": copy.deepcopy(current if current is not None else message),
            "chat_instance": str(abs(hash(("chat_instance", chat_id))) % 10**19),
            "data": data,
        }
        return self._update("callback_query", query)

    def channel_post_update(self, text: str, chat: dict[str, Any] | None = None) -> dict[str, Any]:
        chat = chat or self.channel()
        post = {
            "message_id": next(self._message_ids),
            "sender_chat": dict(chat),
            "chat": dict(chat),
            "date": int(time.time()),
            "text": text,
        }
        return self._update("channel_post", post)

    def poll_update(
        self, question: str = "Which one?", options: Iterable[str] = ("A", "B")
    ) -> dict[str, Any]:
        poll = {
            "id": str(next(self._query_ids)),
            "question": question,
            "options": [
                {"text": text, "voter_count": 0, "persistent_id": str(index)}
                for index, text in enumerate(options)
            ],
            "total_voter_count": 0,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
            "allows_revoting": True,
            "members_only": False,
        }
        return self._update("poll", poll)

    def message_reaction_update(
        self,
        user: dict[str, Any],
        message: dict[str, Any] | Call | int,
        emoji: str = "👍",
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """(Not delivered by getUpdates unless allowed_updates names "message_reaction".)"""
        if isinstance(message, Call | dict):
            message = _message_of(message)
            chat = chat or message["chat"]
            message_id = int(message["message_id"])
        else:
            message_id = int(message)
        reaction = {
            "chat": dict(chat) if chat else self.private_chat(user),
            "message_id": message_id,
            "user": dict(user),
            "date": int(time.time()),
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": emoji}],
        }
        return self._update("message_reaction", reaction)

    def my_chat_member_update(
        self,
        user: dict[str, Any],
        new_status: str = "kicked",
        old_status: str = "member",
        chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What Telegram sends when a user blocks ("kicked") or restarts ("member") the bot."""

        def member(status: str) -> dict[str, Any]:
            data: dict[str, Any] = {"status": status, "user": dict(self.bot_user)}
            if status == "kicked":
                data["until_date"] = 0
            return data

        update = {
            "chat": dict(chat) if chat else self.private_chat(user),
            "from": dict(user),
            "date": int(time.time()),
            "old_chat_member": member(old_status),
            "new_chat_member": member(new_status),
        }
        return self._update("my_chat_member", update)

    def queue_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Makes ``update`` available to getUpdates (wakes a waiting long poll)."""
        with self._cond:
            self._updates.append(copy.deepcopy(update))
            self._updates.sort(key=lambda u: u["update_id"])
            self._cond.notify_all()
        return update

    @property
    def waiting_polls(self) -> int:
        """How many getUpdates calls are in progress (waiting on their long poll) right now."""
        with self._cond:
            return self._waiting_polls

    def pending_updates(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(self._updates)

    def post_webhook(
        self,
        url: str | None,
        update: dict[str, Any],
        secret_token: str | None = _REGISTERED,
        timeout: float = 10.0,
    ) -> tuple[int, str]:
        """POSTs ``update`` like Telegram: JSON body, X-Telegram-Bot-Api-Secret-Token header
        (default: the secret given to setWebhook; None sends none). ``url`` None: the webhook
        set with setWebhook. Returns (status, body text). Blocking: from async code use
        ``await fake.post_webhook_async(...)``."""
        with self._cond:
            target = url or self.webhook.get("url")
            if secret_token is _REGISTERED:
                secret_token = self.webhook.get("secret_token")
        if not target:
            raise RuntimeError("no url given and no webhook set")
        headers = {"Content-Type": "application/json"}
        if secret_token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret_token
        request = urllib.request.Request(
            target, data=json.dumps(update).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, body = response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode("utf-8", "replace")
            exc.close()
        with self._cond:
            self.webhook_posts.append((target, copy.deepcopy(update), status))
        return status, body

    async def post_webhook_async(
        self,
        url: str | None,
        update: dict[str, Any],
        secret_token: str | None = _REGISTERED,
        timeout: float = 10.0,  # noqa: ASYNC109 - passed on to urllib
    ) -> tuple[int, str]:
        return await asyncio.to_thread(self.post_webhook, url, update, secret_token, timeout)

    # ----------------------------------------------------------------- request handling

    def handle(self, request: Request) -> Response:
        status, content_type, payload = self._handle_http(
            request.method, request.raw_path, request.content_type, request.body
        )
        return Response(status, content_type, payload)

    def _handle_http(
        self, verb: str, raw_path: str, content_type: str, body: bytes
    ) -> tuple[int, str, bytes]:
        at = time.monotonic()
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        if path.startswith("/file/bot"):
            token, _, file_path = path[len("/file/bot") :].partition("/")
            params = {"file_path": file_path}
            if token != self.token:
                return self._json(
                    self._record("downloadFile", params, at, error=ApiError(401, "Unauthorized"))
                )
            with self._cond:
                file_id = self._paths.get(file_path)
                content = self._files[file_id].content if file_id else None
            if content is None:
                return self._json(
                    self._record("downloadFile", params, at, error=ApiError(404, "Not Found"))
                )
            self._record("downloadFile", params, at, result=len(content))
            return 200, "application/octet-stream", content
        if not path.startswith("/bot"):
            return self._json(self._record(path, {}, at, error=ApiError(404, "Not Found")))
        token, _, name = path[len("/bot") :].partition("/")
        method = self._by_lower.get(name.lower(), name)
        try:
            params = self._parse_params(parts.query, content_type, body)
        except ApiError as exc:
            return self._json(self._record(method, {}, at, error=exc))
        if token != self.token:
            return self._json(self._record(method, params, at, error=ApiError(401, "Unauthorized")))
        if method not in self._handlers:
            return self._json(self._record(method, params, at, error=ApiError(404, "Not Found")))
        del verb  # GET and POST are the same to the Bot API
        return self._json(self._call(method, params, at, content_type.split(";")[0].strip()))

    @staticmethod
    def _parse_params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        mime = content_type.split(";")[0].strip().lower()
        if body:
            if mime == "application/json":
                try:
                    data = json.loads(body.decode("utf-8"))
                except ValueError:
                    raise _bad("can't parse JSON object") from None
                if not isinstance(data, dict):
                    raise _bad("can't parse JSON object")
                params.update(data)
            elif mime == "multipart/form-data":
                try:
                    params.update(parse_multipart(content_type, body))
                except BodyError as exc:
                    raise _bad(str(exc)) from None
            else:  # application/x-www-form-urlencoded (and Telegram's lenient default)
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        return _coerce(params)

    def _json(self, response: tuple[int, dict[str, Any]]) -> tuple[int, str, bytes]:
        status, body = response
        return status, "application/json", json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _record(
        self,
        method: str,
        params: dict[str, Any],
        at: float,
        *,
        result: Any = None,
        error: ApiError | None = None,
        content_type: str = "",
    ) -> tuple[int, dict[str, Any]]:
        status = error.status if error else 200
        self.record(
            Call(
                method,
                params,
                status,
                at,
                copy.deepcopy(result),
                error.description if error else None,
                content_type,
            )
        )
        return (status, error.body()) if error else (200, {"ok": True, "result": result})

    def _call(
        self, method: str, params: dict[str, Any], at: float, content_type: str = ""
    ) -> tuple[int, dict[str, Any]]:
        delay = self.take(self._delays, method.lower())
        fault = self.take(self._faults, method.lower())
        if delay is not None and delay.before:
            self.pause(delay.seconds)
        result: Any = None
        error: ApiError | None = None
        if fault is not None:
            error = ApiError(fault.status, fault.description)
        else:
            try:
                if method == "getUpdates":
                    result = self._get_updates(params)
                else:
                    with self._cond:
                        result = self._handlers[method](params)
            except ApiError as exc:
                error = exc
            except Exception as exc:  # a bug in the fake: answer 500, keep it for the test
                self.errors.append(exc)
                error = ApiError(500, f"Internal Server Error: fake failed: {exc!r}")
        response = self._record(
            method, params, at, result=result, error=error, content_type=content_type
        )
        if delay is not None and not delay.before:
            self.pause(delay.seconds)
        return response

    # ----------------------------------------------------------------- chats and limits

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        chat_id = _norm_chat(chat_id)
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        if chat_id in self._chats:
            return dict(self._chats[chat_id])
        if isinstance(chat_id, str):
            for chat in self._chats.values():
                if chat_id.startswith("@") and chat.get("username") == chat_id[1:]:
                    return dict(chat)
            raise _bad("chat not found")
        if chat_id > 0:
            user = self._users.get(chat_id)
            if user is not None:
                return self.private_chat(user)
            return {"id": chat_id, "type": "private", "first_name": "User"}
        if chat_id == 0:
            raise _bad("chat not found")
        return {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}

    def _target_chat(self, params: dict[str, Any], *, limited: bool = True) -> dict[str, Any]:
        """Resolves chat_id for a send/edit; raises forced 429, 400 chat not found, 403."""
        now = time.monotonic()
        if limited and self._forced_429 is not None:
            until, retry_after = self._forced_429
            if now < until:
                raise _too_many(retry_after)
            self._forced_429 = None
        chat = self._chat(params.get("chat_id"))
        if chat["id"] in self._blocked:
            if chat["type"] == "private":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if chat["type"] == "channel":
                raise ApiError(403, "Forbidden: bot is not a member of the channel chat")
            raise ApiError(403, f"Forbidden: bot was kicked from the {chat['type']} chat")
        return chat

    def _rate_limit(self, chat_id: int | str) -> None:
        """Raises 429 if a message to ``chat_id`` now breaks a limit; else counts it."""
        now = time.monotonic()
        if self.limits_enabled:
            while self._global_sends and now - self._global_sends[0] >= 1.0:
                self._global_sends.popleft()
            if len(self._global_sends) >= self.global_per_second:
                raise _too_many(max(1, math.ceil(1.0 - (now - self._global_sends[0]))))
            last = self._last_send.get(chat_id)
            if last is not None and now - last < self.per_chat_interval * self.SPACING_TOLERANCE:
                raise _too_many(max(1, math.ceil(self.per_chat_interval - (now - last))))
            if isinstance(chat_id, int) and chat_id < 0:
                window = self._group_sends.setdefault(chat_id, deque())
                while window and now - window[0] >= 60.0:
                    window.popleft()
                if len(window) >= self.group_per_minute:
                    raise _too_many(max(1, math.ceil(60.0 - (now - window[0]))))
        self._global_sends.append(now)
        self._last_send[chat_id] = now
        if isinstance(chat_id, int) and chat_id < 0:
            self._group_sends.setdefault(chat_id, deque()).append(now)

    def _inline_markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            return None  # reply keyboards and the like are not echoed
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise _bad(
                        "can't parse inline keyboard button: Text buttons are unallowed "
                        "in the inline keyboard"
                    )
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode("utf-8")) <= 64:
                    raise _bad("BUTTON_DATA_INVALID")
                url = button.get("url")
                if url is not None and not re.match(r"(https?|tg)://\S+$", str(url)):
                    raise _bad(f"inline keyboard button URL '{url}' is invalid")
        return copy.deepcopy(markup)

    def _new_message(self, chat: dict[str, Any], **fields: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": dict(self.bot_user),
            "chat": chat,
            "date": int(time.time()),
        }
        if chat["type"] == "channel":
            del message["from"]
            message["sender_chat"] = dict(chat)
        message.update({key: value for key, value in fields.items() if value is not None})
        self._messages[(chat["id"], message["message_id"])] = message
        return copy.deepcopy(message)

    def _stored_message(
        self, chat: dict[str, Any], params: dict[str, Any], missing: str
    ) -> dict[str, Any]:
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise _bad("message identifier is not specified")
        message = self._messages.get((chat["id"], message_id))
        if message is None:
            raise _bad(missing)
        return message

    @staticmethod
    def _text(
        params: dict[str, Any], key: str, limit: int, too_long: str, required: bool
    ) -> str | None:
        raw = params.get(key)
        if raw is None or raw == "":
            if required:
                raise _bad("message text is empty")
            return None
        text = render_text(str(raw), params.get("parse_mode"))
        if required and not text.strip():
            raise _bad("message text is empty")
        if len(text) > limit:
            raise _bad(too_long)
        return text

    # ----------------------------------------------------------------- methods

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("secret token contains unallowed characters")
        if url and not re.match(r"https?://", url):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        if "allowed_updates" in params:
            self._allowed = frozenset(params["allowed_updates"] or ()) or None
        if not url:
            self.webhook = {}
        else:
            self.webhook = {
                "url": url,
                "secret_token": secret,
                "allowed_updates": params.get("allowed_updates"),
                "max_connections": params.get("max_connections", 40),
            }
        self._poll_generation += 1
        self._cond.notify_all()
        return True

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {}
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook:
            info["max_connections"] = self.webhook["max_connections"]
            if self.webhook.get("allowed_updates"):
                info["allowed_updates"] = list(self.webhook["allowed_updates"])
        return info

    def _deliverable(self, update: dict[str, Any]) -> bool:
        kind = _update_type(update)
        if self._allowed is None:
            return kind not in _NOT_BY_DEFAULT
        return kind in self._allowed

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset")
        limit = params.get("limit") or 100
        limit = min(max(int(limit), 1), 100)
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            if self.webhook:
                raise ApiError(409, _CONFLICT_WEBHOOK)
            if "allowed_updates" in params:
                self._allowed = frozenset(params["allowed_updates"] or ()) or None
            if isinstance(offset, int) and offset < 0:
                self._updates = self._updates[offset:]
                offset = None
            if isinstance(offset, int):
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self._updates = [u for u in self._updates if self._deliverable(u)]
            self._poll_generation += 1
            generation = self._poll_generation
            self._waiting_polls += 1
            self._cond.notify_all()
            try:
                while not self._updates and not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                    if self._poll_generation != generation:
                        if self.webhook:
                            raise ApiError(409, _CONFLICT_WEBHOOK)
                        raise ApiError(409, _CONFLICT_POLL)
                    self._updates = [u for u in self._updates if self._deliverable(u)]
            finally:
                self._waiting_polls -= 1
                self._cond.notify_all()
            return copy.deepcopy(self._updates[:limit])

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._target_chat(params)
        text = self._text(params, "text", MAX_TEXT_LENGTH, "message is too long", True)
        markup = self._inline_markup(params)
        self._rate_limit(chat["id"])
        return self._new_message(chat, text=text, reply_markup=markup)

    def _media(self, params: dict[str, Any], kind: str) -> tuple[_StoredFile, str | None]:
        value = params.get(kind)
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.get(value[len("attach://") :])
        folder = {
            "photo": "photos",
            "voice": "voice",
            "video": "videos",
            "video_note": "video_notes",
            "animation": "animations",
            "audio": "music",
        }.get(kind, "documents")
        if isinstance(value, UploadedFile):
            stored = self.add_file(None, value.content, kind=folder)
            return self._files[stored["file_id"]], value.filename
        if isinstance(value, str) and value:
            if re.match(r"https?://", value):
                stored = self.add_file(None, b"", kind=folder)
                return self._files[stored["file_id"]], value.rsplit("/", 1)[-1] or None
            if value in self._files:
                return self._files[value], None
            raise _bad("wrong file identifier/HTTP URL specified")
        raise _bad(f"there is no {kind} in the request")

    def _send_media(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        chat = self._target_chat(params)
        caption = self._text(
            params, "caption", MAX_CAPTION_LENGTH, "message caption is too long", False
        )
        markup = self._inline_markup(params)
        stored, filename = self._media(params, kind)
        ids = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
        }
        media: Any
        if kind == "photo":
            media = [
                {
                    **ids,
                    "width": int(params.get("width") or 1280),
                    "height": int(params.get("height") or 960),
                }
            ]
        elif kind == "voice":
            media = {**ids, "duration": int(params.get("duration") or 1), "mime_type": "audio/ogg"}
        elif kind in ("video", "animation"):
            media = {
                **ids,
                "width": int(params.get("width") or 640),
                "height": int(params.get("height") or 360),
                "duration": int(params.get("duration") or 1),
                "mime_type": "video/mp4",
            }
        elif kind == "video_note":
            media = {
                **ids,
                "length": int(params.get("length") or 240),
                "duration": int(params.get("duration") or 1),
            }
        elif kind == "audio":
            media = {**ids, "duration": int(params.get("duration") or 1), "mime_type": "audio/mpeg"}
        else:
            media = {
                **ids,
                "file_name": filename or "document",
                "mime_type": "application/octet-stream",
            }
        self._rate_limit(chat["id"])
        extra = {"document": media} if kind == "animation" else {}
        return self._new_message(
            chat, caption=caption, reply_markup=markup, **{kind: media}, **extra
        )

    def _send_location(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._target_chat(params)
        latitude, longitude = params.get("latitude"), params.get("longitude")
        if not isinstance(latitude, float) or not -90 <= latitude <= 90:
            raise _bad("wrong latitude specified")
        if not isinstance(longitude, float) or not -180 <= longitude <= 180:
            raise _bad("wrong longitude specified")
        markup = self._inline_markup(params)
        self._rate_limit(chat["id"])
        location = {"latitude": latitude, "longitude": longitude}
        return self._new_message(chat, location=location, reply_markup=markup)

    def _send_chat_action(self, params: dict[str, Any]) -> bool:
        self._target_chat(params, limited=False)
        if not params.get("action"):
            raise _bad("wrong parameter action in request")
        return True

    def _edit(self, params: dict[str, Any], key: str | None) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            return True
        chat = self._target_chat(params)
        stored = self._stored_message(chat, params, "message to edit not found")
        changes: dict[str, Any] = {}
        if key == "text":
            if "text" not in stored:
                raise _bad("there is no text in the message to edit")
            changes["text"] = self._text(
                params, "text", MAX_TEXT_LENGTH, "message is too long", True
            )
        elif key == "caption":
            if not any(kind in stored for kind in ("photo", "voice", "video", "document")):
                raise _bad("there is no caption in the message to edit")
            changes["caption"] = self._text(
                params, "caption", MAX_CAPTION_LENGTH, "message caption is too long", False
            )
        markup = self._inline_markup(params)
        changes["reply_markup"] = markup
        if all(stored.get(name) == value for name, value in changes.items()):
            raise _bad(_NOT_MODIFIED.removeprefix("Bad Request: "))
        self._rate_limit(chat["id"])
        for name, value in changes.items():
            if value is None:
                stored.pop(name, None)
            else:
                stored[name] = value
        stored["edit_date"] = max(int(time.time()), stored["date"])
        return copy.deepcopy(stored)

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        return self._edit(params, "text")

    def _edit_message_caption(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        return self._edit(params, "caption")

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        return self._edit(params, None)

    def _delete_message(self, params: dict[str, Any]) -> bool:
        chat = self._chat(params.get("chat_id"))
        message = self._stored_message(chat, params, "message to delete not found")
        del self._messages[(chat["id"], message["message_id"])]
        return True

    def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._issued_queries or query_id in self._answered_queries:
            raise ApiError(400, _QUERY_TOO_OLD)
        text = params.get("text")
        if text is not None and len(str(text)) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        self._answered_queries.add(query_id)
        return True

    def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise _bad("invalid file_id")
        if len(stored.content) > 20 * 1024 * 1024:
            raise _bad("file is too big")
        return stored.as_file()

    def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        self.commands = copy.deepcopy(commands)
        return True

    def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        self.commands = []
        return True


_ID_PREFIXES = {
    "photos": "AgAC",
    "voice": "AwAC",
    "videos": "BAAC",
    "documents": "BQAC",
    "video_notes": "DQAC",
    "animations": "CgAC",
    "music": "CQAC",
}
_EXTENSIONS = {
    "photos": ".jpg",
    "voice": ".oga",
    "videos": ".mp4",
    "documents": "",
    "video_notes": ".mp4",
    "animations": ".mp4",
    "music": ".mp3",
}


def _fake_bytes(header: bytes, size: int) -> bytes:
    return header + bytes(i % 251 for i in range(max(size - len(header), 0)))
