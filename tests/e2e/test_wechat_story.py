"""WeChat end to end: a real `redesk run` against the fake WeChat API, in plain and in safe mode.

The fake WeChat server (tests/fakes/wechat.py) runs in the test process: it builds the callbacks
WeChat's servers would POST (signed, and encrypted in safe mode), which the tests POST to the real
server's /wechat, and it records the customer-service messages redesk sends back. The resident is
on WeChat; the staff is on the web desk (tests/e2e/client.py) and on Telegram (the fake Bot API,
polling mode), so the stories cross channels and processes.

One deployment per mode (SQLite, the embedded worker), shared by the module's stories; every
story has its own resident (a fresh openid) and its own request.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment, base_env, serve
from tests.fakes.telegram import FakeTelegram
from tests.fakes.wechat import Callback, FakeWeChat, new_openid

#: Seconds one step of a story may take (a receipt, a card, an answer).
STEP = 30.0

#: The template registered with the fake and configured as REDESK_WECHAT_TEMPLATE_ID.
TEMPLATE = "tpl_progress_0001"

#: A request number in a message.
NUMBER = re.compile(r"【(SQ-\d{8}-\d{4,})】")

#: The Telegram user id of the worker on Telegram.
TELEGRAM_WORKER = 2001

#: What the callback is answered with once the message is stored.
SUCCESS = (200, b"success")


@dataclass
class WeChatDesk:
    """A redesk deployment with WeChat (and Telegram) on, the fakes, and its bound workers."""

    deployment: Deployment
    wechat: FakeWeChat
    telegram: FakeTelegram
    http: httpx.Client
    #: The worker on the web desk.
    web_worker: WebChat
    #: The worker on Telegram (a fake Telegram user).
    tg_worker: dict[str, Any]
    #: Messages already returned by a wait: (openid, index) and Telegram message ids.
    matched: set[tuple[str, int]] = field(default_factory=set)
    tg_matched: set[int] = field(default_factory=set)

    @property
    def mode(self) -> str:
        """ "safe" or "plain"."""
        return "safe" if self.wechat.safe else "plain"

    @property
    def callback_url(self) -> str:
        """The real server's WeChat callback endpoint."""
        return f"{self.deployment.base_url}/wechat"

    @property
    def database_url(self) -> str:
        """The deployment's database."""
        return self.deployment.env["REDESK_DATABASE_URL"]

    # --- the resident on WeChat ---------------------------------------------------------

    def post(self, callback: Callback) -> tuple[int, bytes]:
        """POSTs a callback to /wechat the way WeChat does; (status, body).

        httpx, not the fake's urllib-based `post_callback`: the server answers 413 as soon as
        it sees a Content-Length over 1 MB and closes the connection without reading the body;
        httpx reads that early answer, urllib sometimes fails with a broken pipe instead.
        """
        response = self.http.post(
            self.callback_url,
            params=callback.params,
            content=callback.body,
            timeout=STEP,
            headers={"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0"},
        )
        return response.status_code, response.content

    def say(self, openid: str, words: str) -> Callback:
        """`openid` writes `words` to the official account; the callback must be stored."""
        callback = self.wechat.text(openid, words)
        answer = self.post(callback)
        assert answer == SUCCESS, f"/wechat answered {answer}\n{self.deployment.logs()}"
        return callback

    def wait_text(self, openid: str, *needles: str, timeout: float = STEP) -> str:
        """The first customer-service text to `openid` not returned before that holds every
        needle (waits at most `timeout` seconds for it)."""
        found: list[int] = []

        def arrived(fake: FakeWeChat) -> bool:
            for index, words in enumerate(fake.texts(openid)):
                if (openid, index) not in self.matched and all(n in words for n in needles):
                    found.append(index)
                    return True
            return False

        assert self.wechat.wait_for(arrived, timeout), (
            f"no WeChat text with {needles} to {openid} within {timeout:g} s; it got "
            f"{self.wechat.texts(openid)}\n{self.deployment.logs()}"
        )
        self.matched.add((openid, found[0]))
        return self.wechat.texts(openid)[found[0]]

    def submit(self, openid: str, words: str) -> str:
        """`openid` reports `words`; returns the number of the receipt they got."""
        self.say(openid, words)
        return number_of(self.wait_text(openid, "已受理登记"))

    # --- the worker on Telegram ---------------------------------------------------------

    def tg_say(self, words: str) -> None:
        """The Telegram worker types `words` in their private chat (polled by redesk)."""
        self.telegram.queue_update(self.telegram.text_update(self.tg_worker, words))

    def tg_wait(self, *needles: str, timeout: float = STEP) -> str:
        """The first message to the Telegram worker not returned before that holds every
        needle."""
        chat = self.tg_worker["id"]
        found: list[str] = []

        def arrived(fake: FakeTelegram) -> bool:
            for call in fake.sent(chat):
                message_id = int(call.result["message_id"])
                words = call.result.get("text") or ""
                if message_id not in self.tg_matched and all(n in words for n in needles):
                    self.tg_matched.add(message_id)
                    found.append(words)
                    return True
            return False

        assert self.telegram.wait_for(arrived, timeout), (
            f"no Telegram message with {needles} to the worker within {timeout:g} s; they got "
            f"{self.telegram.texts(chat)}\n{self.deployment.logs()}"
        )
        return found[0]

    # --- the database -------------------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the deployment's database."""
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(text(sql), params).all()]
        finally:
            engine.dispose()

    def requests_of(self, openid: str) -> list[tuple[str, str, str]]:
        """(number, text, state) of every request of a WeChat person, oldest first."""
        return [
            (row[0], row[1], row[2])
            for row in self.query(
                "SELECT r.number, r.text, r.state FROM requests r "
                "JOIN people p ON p.id = r.requester_id "
                "WHERE p.channel = 'wechat' AND p.external_id = :openid ORDER BY r.id",
                openid=openid,
            )
        ]

    def inbox_of(self, openid: str) -> list[str]:
        """Natural keys of the WeChat inbox rows of a chat, oldest first."""
        return [
            row[0]
            for row in self.query(
                "SELECT natural_key FROM inbox WHERE channel = 'wechat' AND chat_id = :openid "
                "ORDER BY id",
                openid=openid,
            )
        ]

    def people_of(self, openid: str) -> int:
        """How many people rows the openid has."""
        return int(
            self.query(
                "SELECT count(*) FROM people WHERE channel = 'wechat' AND external_id = :openid",
                openid=openid,
            )[0][0]
        )

    def events_of(self, number: str) -> list[str]:
        """The successful actions on a request, in order."""
        return [
            row[0]
            for row in self.query(
                "SELECT e.action FROM events e JOIN requests r ON r.id = e.request_id "
                "WHERE r.number = :number AND e.outcome = 'ok' ORDER BY e.id",
                number=number,
            )
        ]


def number_of(message: str) -> str:
    """The request number a message is about."""
    found = NUMBER.search(message)
    assert found, message
    return found.group(1)


def command_lines(message: str) -> set[str]:
    """The commands to copy at the end of a WeChat message (WeChat has no buttons)."""
    _, _, tail = message.partition("复制下列指令回复即可办理：")
    assert tail, message
    return {line.strip() for line in tail.splitlines() if line.strip()}


def wechat_env(
    env: dict[str, str], wechat: FakeWeChat, telegram: FakeTelegram, media: Path
) -> dict[str, str]:
    """`env` with WeChat on (plain or safe like the fake) and Telegram on (polling)."""
    return {
        **env,
        **wechat.settings_env(),
        "REDESK_WECHAT_TEMPLATE_ID": TEMPLATE,
        "REDESK_MEDIA_DIR": str(media),
        "REDESK_TELEGRAM_TOKEN": telegram.token,
        "REDESK_TELEGRAM_API_URL": telegram.url,
        "PTB_TIMEDELTA": "true",
    }


@pytest.fixture(scope="module", params=["plain", "safe"])
def desk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WeChatDesk]:
    """`redesk run` (SQLite, embedded worker) with WeChat in the parameter's mode, Telegram
    polling, a worker bound on the web desk and another on Telegram."""
    safe = request.param == "safe"
    wechat = FakeWeChat(safe=safe).start()
    telegram = FakeTelegram().start()
    try:
        wechat.template(TEMPLATE, fields=["first", "keyword1", "keyword2", "remark"])
        directory = tmp_path_factory.mktemp(f"redesk-e2e-wechat-{request.param}")
        env = wechat_env(
            base_env(directory, f"sqlite:///{directory / 'redesk.db'}"),
            wechat,
            telegram,
            directory / "media",
        )
        assert ("REDESK_WECHAT_AES_KEY" in env) is safe
        deployment = Deployment(directory, env)
        deployment.cli("demo")
        deployment.start("run")
        for running in serve(deployment):
            with running.http() as http:
                web_code, telegram_code = running.invites(("worker",), ("worker",))
                web_worker = WebChat.open(http, "王书记")
                tg_worker = telegram.user(TELEGRAM_WORKER, "刘书记")
                desk = WeChatDesk(running, wechat, telegram, http, web_worker, tg_worker)
                web_worker.send(f"绑定 {web_code}")
                desk.tg_say(f"绑定 {telegram_code}")
                web_worker.wait_for("绑定成功", "党务工作者")
                desk.tg_wait("绑定成功", "党务工作者")
                yield desk
        assert not wechat.errors, wechat.errors
        assert not telegram.errors, telegram.errors
    finally:
        telegram.stop()
        wechat.stop()


# --- whole stories -----------------------------------------------------------------------------


def test_the_server_says_wechat_is_on_in_its_mode(desk: WeChatDesk) -> None:
    log = (desk.deployment.directory / "run.log").read_text()
    mode = "safe mode, encrypted" if desk.mode == "safe" else "plain mode"
    assert f"channel wechat: on, callback /wechat ({mode};" in log, log

    # And GET /wechat (WeChat's server verification) echoes echostr only when signed
    with desk.deployment.http() as http:
        good = desk.wechat.verify_params(echostr="echo-5150")
        assert http.get("/wechat", params=good).text == "echo-5150"
        bad = desk.wechat.verify_params(echostr="echo-5150", bad_signature=True)
        assert http.get("/wechat", params=bad).status_code == 403


def test_a_resident_on_wechat_rates_a_request_handled_on_telegram(desk: WeChatDesk) -> None:
    resident = new_openid()

    # When a resident writes to the official account
    number = desk.submit(resident, "人行道的地砖松动了，老人容易绊倒")

    # Then the worker on Telegram gets the card and handles it with typed commands
    desk.tg_wait(f"【{number}】新诉求", "地砖松动")
    desk.tg_say(f"受理 {number}")
    desk.tg_wait(f"【{number}】已受理（做单）")
    desk.tg_say(f"办结 {number} 已联系施工队重新铺设地砖")
    desk.tg_wait(f"【{number}】已办结，待党委审核")
    desk.tg_wait(f"【{number}】待审核回单", "重新铺设地砖")
    desk.tg_say(f"回单 {number}")
    desk.tg_wait(f"【{number}】已回单")

    # And the resident gets the acceptance, then the result with the rating commands
    desk.wait_text(resident, f"【{number}】党委已受理您的诉求")
    result = desk.wait_text(resident, f"【{number}】您的诉求已办结", "重新铺设地砖")
    rating = f"评价 {number} 已解决 基本满意"
    assert rating in command_lines(result)

    # When they rate it, the request is closed and the Telegram worker hears so
    desk.say(resident, rating)
    desk.wait_text(resident, f"【{number}】感谢您的评价（已解决 基本满意）")
    desk.tg_wait(f"【{number}】群众已评价：已解决 基本满意")

    # And the resident got exactly the receipt, the acceptance, the result and the thanks
    texts = desk.wechat.texts(resident)
    assert len(texts) == 4 and [number_of(words) for words in texts] == [number] * 4, texts
    assert [
        "已受理登记" in texts[0],
        "党委已受理您的诉求" in texts[1],
        "您的诉求已办结" in texts[2],
        "感谢您的评价" in texts[3],
    ] == [True] * 4, texts
    assert desk.wechat.templates(resident) == []
    assert desk.requests_of(resident) == [(number, "人行道的地砖松动了，老人容易绊倒", "closed")]
    assert desk.events_of(number) == ["submit", "accept", "complete", "approve", "rate"]


def test_a_resident_on_wechat_rates_a_request_handled_on_the_web_desk(desk: WeChatDesk) -> None:
    resident, worker = new_openid(), desk.web_worker

    # When a resident writes to the official account
    number = desk.submit(resident, "小区门口的路灯坏了，晚上很黑")

    # Then the worker on the web desk gets the card, accepts it (做单), completes it and
    # sends the result back (回单)
    card = worker.wait_for(f"【{number}】新诉求", "路灯坏了")
    worker.press(card.action("受理"))
    worker.wait_for(f"【{number}】已受理（做单）")
    worker.send(f"办结 {number} 已更换灯泡，恢复照明")
    worker.wait_for(f"【{number}】已办结，待党委审核")
    review = worker.wait_for(f"【{number}】待审核回单", "已更换灯泡")
    worker.press(review.action("回单"))
    worker.wait_for(f"【{number}】已回单")

    # And the resident hears that it was accepted, then gets the result with the rating
    # commands to copy
    desk.wait_text(resident, f"【{number}】党委已受理您的诉求")
    result = desk.wait_text(resident, f"【{number}】您的诉求已办结", "已更换灯泡，恢复照明")
    rating = f"评价 {number} 已解决 满意"
    assert rating in command_lines(result)

    # When they copy the rating back, the request is closed
    desk.say(resident, rating)
    desk.wait_text(resident, f"【{number}】感谢您的评价（已解决 满意）")
    worker.wait_for(f"【{number}】群众已评价：已解决 满意")

    # And 查询 over WeChat says so
    desk.say(resident, f"查询 {number}")
    status = desk.wait_text(resident, f"【{number}】已办结")
    assert "已更换灯泡，恢复照明" in status

    # And the resident got exactly these customer-service texts, in this order, no template
    texts = desk.wechat.texts(resident)
    assert [number_of(words) for words in texts] == [number] * 5, texts
    assert [
        "已受理登记" in texts[0],
        "党委已受理您的诉求" in texts[1],
        "您的诉求已办结" in texts[2],
        "感谢您的评价" in texts[3],
        "已办结" in texts[4],
    ] == [True] * 5, texts
    assert desk.wechat.templates(resident) == []

    # And the database holds the closed request and its history
    assert desk.requests_of(resident) == [(number, "小区门口的路灯坏了，晚上很黑", "closed")]
    assert desk.events_of(number) == ["submit", "accept", "complete", "approve", "rate"]


# --- WeChat's retries ------------------------------------------------------------------------


def test_a_resident_following_by_a_centres_qr_code_is_welcomed_and_their_voice_kept(
    desk: WeChatDesk,
) -> None:
    resident = new_openid()
    ticket = "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRt"

    # When a resident follows by scanning a centre's parametric QR code
    follow = desk.wechat.event(resident, "subscribe", key="qrscene_CHUNXI-01", ticket=ticket)
    assert desk.post(follow) == SUCCESS

    # Then they are welcomed with the help, and the scene is kept on the person
    desk.wait_text(resident, "欢迎关注")
    desk.wait_text(resident, "查询")
    assert desk.query(
        "SELECT scene FROM people WHERE channel = 'wechat' AND external_id = :openid",
        openid=resident,
    ) == [("CHUNXI-01",)]

    # When they send an MP3 voice message (speech recognition on)
    voice = desk.wechat.voice(resident, recognition="夜里工地施工太吵了", voice_format="mp3")
    assert desk.post(voice) == SUCCESS

    # Then it is a request, and the worker fetches the file with its real extension
    number = number_of(desk.wait_text(resident, "已受理登记"))
    stored = wait_for_stored_path(desk, number)
    assert stored.endswith(".mp3"), stored
    media = Path(desk.deployment.env["REDESK_MEDIA_DIR"]) / stored
    assert media.read_bytes() == desk.wechat.media_bytes(voice.media_id)

    # When, already following, they scan another centre's code
    assert (
        desk.post(desk.wechat.event(resident, "SCAN", key="JINJIANG-02", ticket=ticket)) == SUCCESS
    )

    # Then they are welcomed back and the person names the last scene
    desk.wait_text(resident, "欢迎回来")
    assert desk.query(
        "SELECT scene FROM people WHERE channel = 'wechat' AND external_id = :openid",
        openid=resident,
    ) == [("JINJIANG-02",)]
    assert [
        row[0]
        for row in desk.query(
            "SELECT scene FROM inbox WHERE channel = 'wechat' AND chat_id = :openid ORDER BY id",
            openid=resident,
        )
    ] == ["CHUNXI-01", None, "JINJIANG-02"]
    assert [words for words in desk.wechat.texts(resident) if "暂不支持" in words] == []


def wait_for_stored_path(desk: WeChatDesk, number: str) -> str:
    """The stored path of a request's first attachment, once the worker has fetched it
    (waits at most STEP seconds)."""
    deadline = time.monotonic() + STEP
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = desk.query(
            "SELECT a.stored_path FROM attachments a JOIN requests r ON r.id = a.request_id "
            "WHERE r.number = :number ORDER BY a.id",
            number=number,
        )
        if rows and rows[0][0]:
            return str(rows[0][0])
        time.sleep(0.1)
    raise AssertionError(
        f"{number}'s attachment was not fetched within {STEP:g} s ({rows})"
        f"\n{desk.deployment.logs()}"
    )


def test_the_same_msgid_posted_three_times_makes_one_request_and_one_receipt(
    desk: WeChatDesk,
) -> None:
    resident = new_openid()
    words = "小区东门的井盖丢了，很危险"

    # When WeChat delivers one message three times (its retries: same MsgId, each envelope
    # signed, and in safe mode encrypted, afresh)
    first = desk.wechat.text(resident, words)
    assert first.msg_id is not None
    callbacks = [first] + [desk.wechat.text(resident, words, msg_id=first.msg_id) for _ in range(2)]
    answers = [desk.post(callback) for callback in callbacks]

    # Then every POST is answered "success"
    assert answers == [SUCCESS] * 3, f"{answers}\n{desk.deployment.logs()}"

    # And one receipt comes; a later message is answered after it, and there is still one
    number = number_of(desk.wait_text(resident, "已受理登记"))
    desk.say(resident, f"查询 {number}")
    desk.wait_text(resident, f"【{number}】待受理")
    texts = desk.wechat.texts(resident)
    assert len(texts) == 2 and "已受理登记" in texts[0], texts

    # And one inbox row and one request came of the three
    assert desk.inbox_of(resident)[0] == str(first.msg_id)
    assert len(desk.inbox_of(resident)) == 2
    assert desk.requests_of(resident) == [(number, words, "new")]


def test_the_same_msgid_posted_three_times_at_once_is_stored_once(desk: WeChatDesk) -> None:
    resident = new_openid()
    words = "楼道里的消防栓漏水了"
    first = desk.wechat.text(resident, words)
    callbacks = [first] + [desk.wechat.text(resident, words, msg_id=first.msg_id) for _ in range(2)]

    # When the three copies arrive at the same moment (three connections)
    start = threading.Barrier(len(callbacks))

    def post(callback: Callback) -> tuple[int, bytes]:
        with httpx.Client(timeout=STEP) as http:
            start.wait(timeout=STEP)
            response = http.post(
                desk.callback_url,
                params=callback.params,
                content=callback.body,
                headers={"Content-Type": "text/xml"},
            )
            return response.status_code, response.content

    with ThreadPoolExecutor(max_workers=len(callbacks)) as pool:
        answers = list(pool.map(post, callbacks))

    # Then each is answered "success", and one request and one receipt come of them
    assert answers == [SUCCESS] * 3, f"{answers}\n{desk.deployment.logs()}"
    number = number_of(desk.wait_text(resident, "已受理登记"))
    desk.say(resident, f"查询 {number}")
    desk.wait_text(resident, f"【{number}】待受理")
    assert len(desk.wechat.texts(resident)) == 2, desk.wechat.texts(resident)
    assert desk.inbox_of(resident)[0] == str(first.msg_id)
    assert desk.requests_of(resident) == [(number, words, "new")]


# --- hostile input -----------------------------------------------------------------------------


def xxe_body(openid: str, msg_id: int) -> bytes:
    """A text message from `openid` whose content is an external entity (XXE)."""
    return (
        '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        f"<xml><ToUserName>gh_e2e</ToUserName><FromUserName>{openid}</FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content>&x;</Content>"
        f"<MsgId>{msg_id}</MsgId></xml>"
    ).encode()


def test_bad_signatures_replays_hostile_xml_and_huge_bodies_are_refused(
    desk: WeChatDesk,
) -> None:
    fake, resident = desk.wechat, new_openid()
    words = "公园的长椅坏了一张，请尽快修理"
    bad_signature = fake.text(resident, words, bad_signature=True)
    huge = fake.text(resident, words + "啊" * 400_000)
    assert len(huge.body) > 1024 * 1024
    refused: dict[str, tuple[Callback, int]] = {
        "bad signature": (bad_signature, 403),
        "unsigned": (fake.text(resident, words, sign=False), 403),
        "replayed (10 minutes old)": (
            fake.text(resident, words, timestamp=str(int(fake.now()) - 600)),
            403,
        ),
        "XXE / DOCTYPE": (
            fake.raw(xxe_body(resident, 987654321), safe=fake.safe, openid=resident),
            400,
        ),
        "over 1 MB": (huge, 413),
    }
    if fake.safe:
        good = fake.text(resident, words)
        refused.update(
            {
                "bad msg_signature": (
                    Callback(
                        {**good.params, "msg_signature": "0" * 40},
                        good.body,
                        good.xml,
                        resident,
                        good.msg_id,
                    ),
                    403,
                ),
                "a plain body in safe mode": (fake.text(resident, words, safe=False), 400),
                "an unencrypted DOCTYPE body": (
                    fake.raw(xxe_body(resident, 987654322), safe=False, openid=resident),
                    400,
                ),
            }
        )

    # When each is POSTed to the real server, it is refused with its status
    answers = {what: desk.post(callback)[0] for what, (callback, _) in refused.items()}
    assert answers == {what: status for what, (_, status) in refused.items()}, (
        desk.deployment.logs()
    )

    # Then nothing of them was stored, so nothing can ever be handled or answered
    assert desk.inbox_of(resident) == []
    assert desk.people_of(resident) == 0
    assert desk.requests_of(resident) == []
    assert [call for call in fake.calls if call.openid == resident] == []
    # And the refusals were logged without the message's content
    log = (desk.deployment.directory / "run.log").read_text()
    assert "WeChat callback refused" in log and words not in log and "passwd" not in log

    # And the refused message's MsgId was not taken: correctly signed, it is a new request
    assert bad_signature.msg_id is not None
    answer = desk.post(fake.text(resident, words, msg_id=bad_signature.msg_id))
    assert answer == SUCCESS, answer
    number = number_of(desk.wait_text(resident, "已受理登记"))
    assert desk.inbox_of(resident) == [str(bad_signature.msg_id)]
    assert desk.requests_of(resident) == [(number, words, "new")]
    assert len(fake.texts(resident)) == 1
