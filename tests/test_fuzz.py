"""Fuzzing the entry points through the real ASGI app (create_app + TestClient), with hypothesis,
on SQLite and PostgreSQL:

- POST /telegram/webhook with arbitrary JSON, with real updates (the fake's builders) mutated,
  and with arbitrary bytes, all with the right secret;
- POST /wechat with arbitrary bytes and with real callbacks' XML mutated, in plain and in safe
  mode, signed (and encrypted) as WeChat does so that they reach the parser, and with the query
  parameters of a real callback mutated;
- POST /api/web/messages with arbitrary JSON.

Properties of every answer: never a 5xx; one of the endpoint's documented codes; a refused
request (4xx) leaves the inbox, requests, events, outbox and people as they were; an accepted
one adds at most its own inbox row (nothing else), and every inbox row is complete (payload
present, natural key non-empty and unique).

Known bugs are pinned by the xfail tests at the end; a fuzz example that runs into one of them
is recognised by `known_bug` (which names it) instead of failing the fuzz test, so the fuzzing
keeps guarding everything else.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from functools import reduce
from operator import getitem
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import dramatiq
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select

from bot.app import create_app
from bot.channels import telegram, web
from bot.runtime import Runtime
from storage.db import session_scope
from storage.models import (
    Attachment,
    Event,
    InboxMessage,
    OutboxMessage,
    Person,
    Request,
    WebMessage,
)
from storage.settings import Settings
from tests.fakes.telegram import FakeTelegram
from tests.fakes.wechat import Callback, FakeWeChat
from tests.fakes.wechat import signature as wechat_signature
from tests.utils.app import TestClient
from tests.utils.settings import make_settings
from tests.utils.telegram import SECRET

#: Hundreds of generated examples a test: `make test` runs them, `make test-fast` does not.
pytestmark = pytest.mark.slow

#: Examples per endpoint test and database.
EXAMPLES = {"sqlite": 150, "postgresql": 40}

#: The official account's credentials (fixed, so every run builds the same callbacks).
APP_ID = "wx0123456789abcdef"
APP_SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = "RedeskFuzzToken0123456789abcdefg"
AES_KEY = base64.b64encode(bytes(range(32))).decode("ascii").rstrip("=")
ACCOUNT = "gh_0123456789ab"
OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
#: Nonces of the generated callbacks: a new one each time, since a (timestamp, nonce) seen
#: with another body is refused (403) and the examples of one second would share one.
NONCES = itertools.count(1_234_567_890)

#: A fixed instant for the fake's message dates (the callbacks' own timestamps stay current).
FIXED_TIME = 1_767_225_600

#: What each endpoint may answer (README / docs/architecture.md / the handlers' docstrings).
TELEGRAM_CODES = {200, 400, 403, 413, 503}
WECHAT_CODES = {200, 400, 403, 413, 503}
WEB_CODES = {202, 400, 401, 413, 415, 429, 503}


def _settings(examples: str) -> Any:
    return settings(
        max_examples=EXAMPLES[examples],
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
    )


# --- the app, twice: WeChat in plain and in safe mode ------------------------------------------


@pytest.fixture
def settings_(db_url: str, tmp_path: Path) -> Settings:
    """Telegram (webhook) and WeChat (plain mode) on; no flood limit, so the fuzzing reaches
    the inbox instead of 429."""
    return make_settings(
        database_url=db_url,
        redis_url=None,
        _env_file=None,
        media_dir=tmp_path / "media",
        telegram_token="123456:FUZZ-TOKEN",
        telegram_webhook_secret=SECRET,
        wechat_app_id=APP_ID,
        wechat_app_secret=APP_SECRET,
        wechat_token=TOKEN,
        wechat_api_url="http://127.0.0.1:9",
        flood_per_minute=0,
    )


@pytest.fixture
def backend(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def plain(settings_: Settings, runtime: Runtime) -> Runtime:
    return Runtime(settings=settings_, engine=runtime.engine)


@pytest.fixture
def safe(settings_: Settings, runtime: Runtime) -> Runtime:
    return Runtime(
        settings=settings_.model_copy(update={"wechat_aes_key": AES_KEY}), engine=runtime.engine
    )


def _client(runtime: Runtime) -> Iterator[TestClient]:
    # A crash must show as the 500 a real server would answer, not as an exception here.
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def app(plain: Runtime, stub_broker: dramatiq.Broker) -> Iterator[TestClient]:
    yield from _client(plain)


@pytest.fixture
def safe_app(safe: Runtime, stub_broker: dramatiq.Broker) -> Iterator[TestClient]:
    yield from _client(safe)


# --- looking at the database -------------------------------------------------------------------

#: The tables a refused request must leave alone (and an accepted one, but for the inbox).
WATCHED: dict[str, type[SQLModel]] = {
    "inbox": InboxMessage,
    "requests": Request,
    "events": Event,
    "outbox": OutboxMessage,
    "people": Person,
    "attachments": Attachment,
    "web_messages": WebMessage,
}


def counts(runtime: Runtime) -> dict[str, int]:
    with Session(runtime.engine) as session:
        return {
            name: int(session.exec(select(func.count()).select_from(model)).one())
            for name, model in WATCHED.items()
        }


def inbox(runtime: Runtime) -> list[InboxMessage]:
    with Session(runtime.engine) as session:
        return list(session.exec(select(InboxMessage).order_by(InboxMessage.id)))  # type: ignore[arg-type]


def assert_inbox_complete(rows: list[InboxMessage]) -> None:
    """Every row whole: a payload object, a non-empty natural key unique in its channel, and
    a reason on every failed row."""
    keys = [(row.channel, row.natural_key) for row in rows]
    assert len(keys) == len(set(keys)), "a natural key is stored twice"
    for row in rows:
        assert row.channel in (telegram.CHANNEL, "wechat", web.CHANNEL)
        assert isinstance(row.payload, dict) and row.payload, row
        assert row.natural_key and len(row.natural_key) <= 200
        assert row.chat_id and len(row.chat_id) <= 128
        if row.status == "failed":
            # Only a Telegram update the library cannot model is stored failed, with the reason.
            assert row.channel == telegram.CHANNEL and row.error, row
        else:
            assert row.status in ("pending", "done"), row


def check_answer(
    runtime: Runtime,
    codes: set[int],
    status: int,
    before: dict[str, int],
    before_rows: list[InboxMessage],
    ok: int,
    bug: str | None,
) -> InboxMessage | None:
    """The properties every answer has; returns the inbox row an accepted request added."""
    after = counts(runtime)
    if bug is not None and status >= 500:
        # A known bug (see the xfail tests): the answer is wrong, but nothing was written.
        note(f"known bug: {bug}")
        assert after == before
        return None
    assert status < 500, f"{status} (no known bug explains it)"
    assert status in codes, status
    rows = inbox(runtime)
    assert_inbox_complete(rows)
    if status != ok:
        assert after == before, f"a refused request ({status}) changed {before} -> {after}"
        return None
    assert {k: v for k, v in after.items() if k != "inbox"} == {
        k: v for k, v in before.items() if k != "inbox"
    }
    assert after["inbox"] - before["inbox"] in (0, 1)
    old = {row.id for row in before_rows}
    added = [row for row in rows if row.id not in old]
    return added[0] if added else None


# --- known bugs ----------------------------------------------------------------------------------


def _encodable(value: str | None) -> bool:
    try:
        (value or "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_non_finite(item) for item in value)
    return False


def known_telegram_bug(body: Any, backend: str) -> str | None:
    """Which known bug a webhook body runs into, if any."""
    try:
        key, chat, _ = telegram.classify(body)
    except (ValueError, RecursionError):
        return None
    except Exception as exc:  # that is the bug
        return f"classify() raises {type(exc).__name__} (500)"
    if not _encodable(chat):
        return "a sender id that is not an integer cannot be stored (503)"
    if backend == "postgresql" and (len(key) > 200 or len(chat or "") > 128):
        return "an id too long for its column cannot be stored on PostgreSQL (503)"
    if backend == "postgresql" and _non_finite(body):
        return "NaN/Infinity in the body cannot be stored on PostgreSQL (503)"
    return None


def known_web_bug(body: Any) -> str | None:
    """Which known bug a web message body runs into, if any."""
    if isinstance(body, dict) and isinstance(body.get("id"), str) and not _encodable(body["id"]):
        return "a client id with a lone surrogate cannot be stored (503)"
    return None


# --- JSON ----------------------------------------------------------------------------------

#: Values that tend to break parsers: edges of integer widths, timestamps out of range, long
#: strings, a NUL, a lone surrogate, strings that look like numbers or chat types.
NASTY = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**53 + 1,
        2**63,
        -(2**63) - 1,
        10**20,
        -(10**20),
        10**300,
        1.5,
        -0.0,
        1e300,
        "",
        " ",
        "0",
        "100",
        "-1",
        "a" * 300,
        "private",
        "group",
        "/start",
        "\x00",
        "\ud800",
        "null",
        [],
        {},
        None,
        True,
        False,
    ]
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    NASTY,
)

#: Any JSON value.
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    # ASCII escapes, so that lone surrogates travel as \\udxxx like any other JSON text.
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path to every value nested in `value` (not `value` itself)."""
    found: list[tuple[Any, ...]] = []
    items: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: str(item[0]))
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, item in items:
        found.append((*prefix, key))
        found += paths(item, (*prefix, key))
    return found


@st.composite
def mutated(draw: st.DrawFn, originals: list[Any]) -> Any:
    """One of `originals`, with one to four values replaced, removed, added or retyped."""
    value = copy.deepcopy(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 4))):
        found = paths(value)
        if not found:
            break
        path = draw(st.sampled_from(found))
        parent = reduce(getitem, path[:-1], value)
        key = path[-1]
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add", "retype"]))
        if operation == "replace":
            parent[key] = draw(st.one_of(NASTY, JSON))
        elif operation == "delete":
            del parent[key]
        elif operation == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(JSON)
        elif operation == "add":
            parent.insert(key, draw(JSON))
        else:
            old = parent[key]
            parent[key] = (
                str(old)
                if not isinstance(old, str)
                else (int(old) if re.fullmatch(r"-?\d{1,30}", old) else [old])
            )
    return value


# --- Telegram ----------------------------------------------------------------------------------


def _fixed(value: Any) -> Any:
    """The fake's update with its clock-dependent and hash-dependent fields made constant."""
    if isinstance(value, dict):
        return {
            key: FIXED_TIME
            if key in ("date", "edit_date")
            else "4242"
            if key == "chat_instance"
            else _fixed(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_fixed(item) for item in value]
    return value


def _real_updates() -> list[dict[str, Any]]:
    fake = FakeTelegram()
    resident, worker = fake.user(100, "张三", "zhangsan"), fake.user(200, "王书记")
    group = fake.group(-1001000000001, "党群服务中心工作群")
    sent = {
        "message_id": 77,
        "date": FIXED_TIME,
        "chat": fake.private_chat(resident),
        "from": fake.bot_user,
        "text": "SQ-20260302-0001 已受理",
        "reply_markup": {"inline_keyboard": [[{"text": "评价", "callback_data": "t0k3n"}]]},
    }
    first = fake.text_update(resident, "小区门口的路灯坏了")
    updates = [
        first,
        fake.command_update(resident, "status", "SQ-20260302-0001"),
        fake.command_update(worker, "accept", "SQ-20260302-0001", group, mention=True),
        fake.text_update(resident, "大家好", group),
        fake.photo_update(resident, caption="井盖丢了"),
        fake.voice_update(resident),
        fake.video_update(resident, caption="视频"),
        fake.document_update(resident),
        fake.location_update(resident, 31.2304, 121.4737),
        fake.edited_text_update(first, "小区门口的路灯坏了，已经三天"),
        fake.callback_update(resident, "t0k3n", sent),
        fake.my_chat_member_update(resident, "kicked"),
        fake.my_chat_member_update(resident, "member", "left", group),
        fake.channel_post_update("公告"),
        fake.poll_update(),
        fake.message_reaction_update(resident, 1),
    ]
    return [_fixed(update) for update in updates]


REAL_UPDATES = _real_updates()

#: Something shaped like an update: an update_id (mostly an integer) and any fields.
UPDATE_LIKE = st.fixed_dictionaries(
    {"update_id": st.one_of(st.integers(), NASTY)},
    optional={
        "message": JSON,
        "edited_message": JSON,
        "callback_query": JSON,
        "my_chat_member": JSON,
        "poll": JSON,
    },
)


def post_update(client: TestClient, raw: bytes) -> Any:
    return client.post(
        "/telegram/webhook",
        content=raw,
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )


def webhook_case(client: TestClient, runtime: Runtime, backend: str, raw: bytes) -> None:
    """POSTs `raw` and checks the answer and what it left in the database."""
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    before, before_rows = counts(runtime), inbox(runtime)
    response = post_update(client, raw)
    note(f"answered {response.status_code}")
    bug = known_telegram_bug(body, backend) if body is not None else None
    added = check_answer(
        runtime, TELEGRAM_CODES - {503}, response.status_code, before, before_rows, 200, bug
    )
    if response.status_code == 200:
        # Only an object with an integer update_id is an Update; it is stored as it came.
        assert isinstance(body, dict)
        update_id = body["update_id"]
        assert isinstance(update_id, int) and not isinstance(update_id, bool)
        rows = {row.natural_key: row for row in inbox(runtime) if row.channel == "telegram"}
        assert str(update_id) in rows, "answered 200 but not stored"
        if added is not None:
            assert added.channel == "telegram" and added.natural_key == str(update_id)
            if not _non_finite(body):
                assert added.payload == body


def test_the_telegram_webhook_takes_arbitrary_json(
    app: TestClient, plain: Runtime, backend: str
) -> None:
    @_settings(backend)
    @given(body=st.one_of(JSON, UPDATE_LIKE))
    def run(body: Any) -> None:
        webhook_case(app, plain, backend, dumps(body))

    run()


def test_the_telegram_webhook_takes_mutated_real_updates(
    app: TestClient, plain: Runtime, backend: str
) -> None:
    @_settings(backend)
    @given(body=st.one_of(st.sampled_from(REAL_UPDATES), mutated(REAL_UPDATES)))
    def run(body: Any) -> None:
        webhook_case(app, plain, backend, dumps(body))

    run()


#: Bytes: anything, or JSON text cut, spliced or spelt in ways json.loads accepts.
RAW_JSON = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda data, cut: dumps(data)[:cut], st.sampled_from(REAL_UPDATES), st.integers(0, 400)
    ),
    st.builds(
        lambda data, at, junk: dumps(data)[:at] + junk + dumps(data)[at:],
        st.sampled_from(REAL_UPDATES),
        st.integers(0, 400),
        st.binary(min_size=1, max_size=8),
    ),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"{}",
            b'{"update_id": NaN}',
            b'{"update_id": 1e999}',
            b'{"update_id": 1, "message": {"text": "x"}}',
            b"[" * 5000 + b"]" * 5000,
            b'{"update_id": 1' + b"0" * 5000 + b"}",
            b"\xef\xbb\xbf{}",
            b'{"update_id": 1}\x00',
        ]
    ),
)


def test_the_telegram_webhook_takes_arbitrary_bytes(
    app: TestClient, plain: Runtime, backend: str
) -> None:
    @_settings(backend)
    @given(raw=RAW_JSON)
    def run(raw: bytes) -> None:
        webhook_case(app, plain, backend, raw)

    run()


# --- WeChat ----------------------------------------------------------------------------------


def _fake(*, safe: bool, clock: Callable[[], float] = time.time) -> FakeWeChat:
    return FakeWeChat(
        appid=APP_ID,
        app_secret=APP_SECRET,
        token=TOKEN,
        aes_key=AES_KEY,
        account_id=ACCOUNT,
        safe=safe,
        clock=clock,
    )


def _real_messages() -> list[str]:
    """The XML of real callbacks of every kind redesk handles or ignores."""
    fake = _fake(safe=False, clock=lambda: float(FIXED_TIME))
    callbacks = [
        fake.text(OPENID, "小区门口的路灯坏了"),
        fake.text(OPENID, "评价 SQ-20260302-0001 已解决 满意"),
        fake.image(OPENID, media_id="MEDIA_image_0001", pic_url="http://mmbiz.qpic.cn/x/0"),
        fake.voice(OPENID, "路灯坏了", media_id="MEDIA_voice_0001"),
        fake.video(OPENID, media_id="MEDIA_video_0001"),
        fake.shortvideo(OPENID, media_id="MEDIA_short_0001"),
        fake.location(OPENID, 31.2304, 121.4737, "上海市黄浦区"),
        fake.link(OPENID, "标题", "描述", "https://example.org/a"),
        fake.event(OPENID, "subscribe"),
        fake.event(OPENID, "unsubscribe"),
        fake.event(OPENID, "CLICK", "REDESK_MINE"),
        fake.event(OPENID, "VIEW", "https://example.org"),
        fake.event(OPENID, "LOCATION", latitude=31.2, longitude=121.4, precision=65.0),
    ]
    return [callback.xml for callback in callbacks]


REAL_MESSAGES = _real_messages()

#: Elements a callback may carry, and values that are odd for them.
FIELDS = [
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "MsgId",
    "Content",
    "Event",
    "EventKey",
    "MediaId",
    "Encrypt",
    "Recognition",
    "Location_X",
]
ODD_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "9" * 300,
            "١٢٣",
            "²",
            "-1",
            "event",
            "text",
            "subscribe",
            "CLICK",
            "x" * 129,
            "o" * 128,
            "]]>",
            "&amp;",
            "\u3000",
        ]
    ),
)


@st.composite
def mutated_xml(draw: st.DrawFn) -> bytes:
    """A real callback's XML with elements changed, removed, added or renamed, then maybe
    damaged as bytes (cut, spliced, given a DOCTYPE or another encoding)."""
    root = ElementTree.fromstring(draw(st.sampled_from(REAL_MESSAGES)))
    for _ in range(draw(st.integers(1, 3))):
        children = list(root)
        operation = draw(
            st.sampled_from(
                ["text", "text", "delete", "add", "rename", "duplicate", "nest", "root", "new id"]
            )
        )
        child = draw(st.sampled_from(children)) if children else None
        if operation == "new id":
            # A message not stored yet (MsgId; for events, their CreateTime).
            fresh = str(draw(st.integers(1, 10**18)))
            for name in ("MsgId", "CreateTime"):
                for element in root.iter(name):
                    element.text = fresh
        elif operation == "text" and child is not None:
            child.text = draw(ODD_TEXT)
        elif operation == "delete" and child is not None:
            root.remove(child)
        elif operation == "add":
            ElementTree.SubElement(root, draw(st.sampled_from(FIELDS))).text = draw(ODD_TEXT)
        elif operation == "rename" and child is not None:
            child.tag = draw(st.sampled_from(FIELDS))
        elif operation == "duplicate" and child is not None:
            copy_ = ElementTree.SubElement(root, child.tag)
            copy_.text = draw(ODD_TEXT)
        elif operation == "nest" and child is not None:
            ElementTree.SubElement(child, draw(st.sampled_from(FIELDS))).text = "1"
        elif operation == "root":
            root.tag = draw(st.sampled_from(["xml", "XML", "message", "x"]))
    data = ElementTree.tostring(root, encoding="unicode").encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "cut", "splice", "doctype", "declaration"]))
    if damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "splice":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    elif damage == "doctype":
        data = b'<!DOCTYPE xml [<!ENTITY e "boom">]>' + data.replace(b"<xml>", b"<xml>&e;", 1)
    elif damage == "declaration":
        encoding = draw(st.sampled_from([b"utf-8", b"gbk", b"iso-8859-1", b"utf-16"]))
        data = b'<?xml version="1.0" encoding="' + encoding + b'"?>' + data
    return data


def post_callback(client: TestClient, params: dict[str, str], body: bytes) -> Any:
    return client.post("/wechat", params=params, content=body, headers={"Content-Type": "text/xml"})


def callback_case(client: TestClient, runtime: Runtime, callback: Callback) -> Any:
    """POSTs a callback and checks the answer and what it left in the database."""
    before, before_rows = counts(runtime), inbox(runtime)
    response = post_callback(client, callback.params, callback.body)
    note(f"answered {response.status_code}: {response.text[:60]!r}")
    added = check_answer(
        runtime, WECHAT_CODES - {503}, response.status_code, before, before_rows, 200, None
    )
    if response.status_code == 200:
        assert response.text == "success"
        if added is not None:
            assert added.channel == "wechat"
            assert isinstance(added.payload.get("xml"), str) and added.payload["xml"]
    return response


def test_wechat_takes_arbitrary_bytes_signed_in_plain_and_safe_mode(
    app: TestClient, safe_app: TestClient, plain: Runtime, backend: str
) -> None:
    fakes = {False: _fake(safe=False), True: _fake(safe=True)}

    @_settings(backend)
    @given(
        body=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode)),
        safe=st.booleans(),
    )
    def run(body: bytes, safe: bool) -> None:
        callback = fakes[safe].raw(body, safe=safe, openid=OPENID, nonce=str(next(NONCES)))
        callback_case(safe_app if safe else app, plain, callback)

    run()


def test_wechat_takes_mutated_real_callbacks_in_plain_and_safe_mode(
    app: TestClient, safe_app: TestClient, plain: Runtime, backend: str
) -> None:
    fakes = {False: _fake(safe=False), True: _fake(safe=True)}

    @_settings(backend)
    @given(
        xml=st.one_of(st.sampled_from(REAL_MESSAGES).map(str.encode), mutated_xml()),
        safe=st.booleans(),
    )
    def run(xml: bytes, safe: bool) -> None:
        callback = fakes[safe].raw(xml, safe=safe, openid=OPENID, nonce=str(next(NONCES)))
        callback_case(safe_app if safe else app, plain, callback)

    run()


PARAM_NAMES = [
    "signature",
    "timestamp",
    "nonce",
    "openid",
    "encrypt_type",
    "msg_signature",
    "echostr",
    "x",
]
ODD_PARAMS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "aes",
            "AES",
            "raw",
            "9" * 400,
            "١٧٠٠٠٠٠٠٠٠",
            "1_700_000",
            " 1700000000",
            "+1700000000",
            "1e9",
            "da39a3ee5e6b4b0d3255bfef95601890",
        ]
    ),
)


@st.composite
def mutated_params(draw: st.DrawFn) -> tuple[bool, dict[str, str], bytes]:
    """A real text callback (plain or safe) with its query parameters changed; sometimes
    signed again over the changed timestamp and nonce, so that other checks are reached."""
    safe = draw(st.booleans())
    fake = _fake(safe=safe)
    content = draw(st.sampled_from(["路灯坏了", "查询", "帮助"]))
    callback = fake.text(
        OPENID, content, draw(st.integers(1, 10**18)), safe=safe, nonce=str(next(NONCES))
    )
    params = dict(callback.params)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(PARAM_NAMES))
        operation = draw(st.sampled_from(["set", "set", "delete", "shift"]))
        if operation == "delete":
            params.pop(name, None)
        elif operation == "shift":
            seconds = draw(st.sampled_from([-100_000, -301, -299, 299, 301, 10**12]))
            params["timestamp"] = str(int(time.time()) + seconds)
        else:
            params[name] = draw(ODD_PARAMS)
    if draw(st.booleans()):
        timestamp, nonce = params.get("timestamp", ""), params.get("nonce", "")
        params["signature"] = wechat_signature(TOKEN, timestamp, nonce)
        if safe:
            encrypted = ElementTree.fromstring(callback.body).findtext("Encrypt") or ""
            params["msg_signature"] = wechat_signature(TOKEN, timestamp, nonce, encrypted)
    return safe, params, callback.body


def test_wechat_takes_mutated_query_parameters(
    app: TestClient, safe_app: TestClient, plain: Runtime, backend: str
) -> None:
    @_settings(backend)
    @given(case=mutated_params())
    def run(case: tuple[bool, dict[str, str], bytes]) -> None:
        safe, params, body = case
        callback_case(safe_app if safe else app, plain, Callback(params, body))

    run()


# --- the web API -----------------------------------------------------------------------------

#: Something shaped like a web message: an id and one or more of text, action, intake.
MESSAGE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=110), st.integers(), NASTY),
        "text": st.one_of(st.text(max_size=50), NASTY, JSON),
        "action": st.one_of(st.text(max_size=50), NASTY),
        "intake": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.one_of(st.text(max_size=110), NASTY),
                    "phone": st.one_of(st.text(max_size=35), NASTY),
                    "text": st.one_of(st.text(max_size=50), NASTY),
                },
            ),
            JSON,
        ),
    },
)


#: A web message of the documented form, now and then with an odd value.
WELL_FORMED = st.one_of(
    st.fixed_dictionaries(
        {"text": st.text(max_size=50)},
        optional={"id": st.one_of(st.text(max_size=100), st.integers())},
    ),
    st.fixed_dictionaries(
        {"action": st.text(max_size=50)},
        optional={"id": st.one_of(st.text(max_size=100), st.integers())},
    ),
    st.fixed_dictionaries(
        {
            "intake": st.fixed_dictionaries(
                {
                    "name": st.text(max_size=20),
                    "phone": st.text(max_size=30),
                    "text": st.text(max_size=50),
                }
            )
        }
    ),
)


def test_the_web_api_takes_arbitrary_json(app: TestClient, plain: Runtime, backend: str) -> None:
    with session_scope(plain.engine) as session:
        token = web.create_identity(session, name="居民", days=1)
    with Session(plain.engine) as session:
        chat = session.exec(select(Person.external_id).where(Person.channel == "web")).one()

    @_settings(backend)
    @given(
        body=st.one_of(JSON, MESSAGE_LIKE, WELL_FORMED),
        how=st.sampled_from(["json", "json", "json", "no token", "bad token", "form"]),
    )
    def run(body: Any, how: str) -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        if how == "no token":
            del headers["Authorization"]
        elif how == "bad token":
            headers["Authorization"] = "Bearer " + "x" * 43
        elif how == "form":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        before, before_rows = counts(plain), inbox(plain)
        response = app.post("/api/web/messages", content=dumps(body), headers=headers)
        note(f"answered {response.status_code}: {response.text[:80]!r}")
        added = check_answer(
            plain,
            WEB_CODES - {503},
            response.status_code,
            before,
            before_rows,
            202,
            known_web_bug(body),
        )
        if response.status_code == 202:
            assert how == "json" and isinstance(body, dict)
            kinds = [kind for kind in ("text", "action", "intake") if kind in body]
            assert len(kinds) == 1
            if added is not None:
                client_id = response.json()["id"]
                assert added.natural_key == f"{chat}:{client_id}" and added.chat_id == chat
                # The client's address rides along (failed binds are counted per address).
                assert added.payload.get("address") == "testclient"
                if kinds[0] in ("text", "action"):
                    assert added.payload == {kinds[0]: body[kinds[0]], "address": "testclient"}
                else:
                    assert set(added.payload["intake"]) == {"name", "phone", "text"}
            if "id" in body:
                assert response.json()["id"] == str(body["id"])
        elif how == "no token":
            assert response.status_code == 401
        elif how == "bad token":
            # The body is checked before the token is looked up: 400 or 401, never stored.
            assert response.status_code in (400, 401)
        elif how == "form":
            assert response.status_code == 415

    run()


# --- known bugs ------------------------------------------------------------------------------

PRIVATE = {"id": 100, "type": "private", "first_name": "张三"}
RESIDENT = {"id": 100, "is_bot": False, "first_name": "张三"}
MESSAGE = {"message_id": 1, "date": FIXED_TIME, "chat": PRIVATE, "from": RESIDENT, "text": "hi"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"update_id": 1, "message": {**MESSAGE, "date": 10**20}}, "failed"),
        (
            {"update_id": 3, "callback_query": {"id": "1", "chat_instance": "1", "data": "x"}},
            "failed",
        ),
        ({"update_id": 4, "message": {**MESSAGE, "from": {**RESIDENT, "id": "1" * 129}}}, "failed"),
        # No chat: not a private message, so kept and ignored like a group's chatter.
        (
            {
                "update_id": 2,
                "message": {key: value for key, value in MESSAGE.items() if key != "chat"},
            },
            "done",
        ),
    ],
    ids=[
        "date-out-of-range",
        "callback-without-from",
        "sender-id-129-characters",
        "message-without-chat",
    ],
)
def test_a_malformed_update_is_answered_200_and_kept_with_its_reason(
    app: TestClient, plain: Runtime, body: dict[str, Any], status: str
) -> None:
    # Given a JSON object with an integer update_id that the library cannot model
    before = counts(plain)

    # When Telegram posts it
    response = post_update(app, dumps(body))

    # Then it is acknowledged (Telegram would otherwise retry and drop it), kept as one failed
    # inbox row with the parser's reason, and nothing else is made of it
    assert response.status_code == 200
    assert counts(plain) == {**before, "inbox": before["inbox"] + 1}
    [row] = inbox(plain)
    assert row.natural_key == str(body["update_id"])
    assert row.status == status
    assert row.error if status == "failed" else row.error is None
    assert row.payload == body


@pytest.mark.parametrize(
    "raw",
    [
        dumps({"update_id": 10**200, "message": MESSAGE}),
        dumps({"update_id": 5, "message": {**MESSAGE, "from": {**RESIDENT, "id": "\ud800"}}}),
        b'{"update_id": 6, "message": {"message_id": 1, "date": 1, "text": "hi", '
        b'"chat": {"id": 100, "type": "private"}, "from": {"id": 100, "is_bot": false, '
        b'"first_name": "a"}}, "x": NaN}',
    ],
    ids=["update-id-201-digits", "sender-id-lone-surrogate", "nan"],
)
def test_an_update_that_cannot_be_stored_is_answered_400(
    app: TestClient, plain: Runtime, raw: bytes
) -> None:
    before = counts(plain)

    response = post_update(app, raw)

    assert response.status_code == 400
    assert counts(plain) == before


def test_a_web_message_id_with_a_lone_surrogate_is_answered_400(
    app: TestClient, plain: Runtime
) -> None:
    with session_scope(plain.engine) as session:
        token = web.create_identity(session, name="居民", days=1)
    before = counts(plain)

    response = app.post(
        "/api/web/messages",
        content=b'{"id": "\\ud800", "text": "hi"}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 400
    assert counts(plain) == before
