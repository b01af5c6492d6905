"""The WeChat channel on the fake WeChat API (tests/fakes/wechat.py): callbacks signed and
encrypted as WeChat does, through the real app, handled and delivered through wechatpy's client.

The resident is on WeChat; the worker on the web desk (tests/utils/harness.py), so the whole
cycle crosses channels.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import update
from sqlmodel import Session, select
from wechatpy import parse_message
from wechatpy.events import EVENT_TYPES

from bot import dispatch
from bot.channels import wechat
from bot.channels.split import split_text
from bot.media import MEDIA_GONE
from bot.runtime import Runtime
from bot.texts import text as catalogue
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import (
    Attachment,
    InboxMessage,
    OutboxMessage,
    OutboxStatus,
    Person,
    WeChatNonce,
    utcnow,
)
from storage.settings import Settings
from tests.fakes.wechat import Callback, FakeWeChat
from tests.utils.app import TestClient
from tests.utils.harness import Desk
from tests.utils.network import add_network
from tests.utils.settings import make_settings, wechat_of

#: A request number in a message.
NUMBER = re.compile(r"SQ-\d{8}-\d{4,}")

#: The template registered with the fake and configured in the settings.
TEMPLATE = "tpl_progress_0001"

RESIDENT = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"


@pytest.fixture(params=["plain", "safe"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeWeChat]:
    """The fake WeChat API, and callbacks built in plain or in safe mode."""
    server = FakeWeChat(safe=request.param == "safe").start()
    server.template(TEMPLATE, fields=["first", "keyword1", "keyword2", "remark"])
    try:
        yield server
    finally:
        wechat.close_clients()
        dispatch._lazy_senders.clear()
        server.stop()
    assert server.errors == []


@pytest.fixture
def settings(db_url: str, fake: FakeWeChat, tmp_path: Path) -> Settings:
    """Settings for the database under test with WeChat on, pointing at the fake."""
    env = fake.settings_env()
    return make_settings(
        database_url=db_url,
        redis_url=None,
        _env_file=None,
        wechat_app_id=env["REDESK_WECHAT_APP_ID"],
        wechat_app_secret=env["REDESK_WECHAT_APP_SECRET"],
        wechat_token=env["REDESK_WECHAT_TOKEN"],
        wechat_aes_key=env.get("REDESK_WECHAT_AES_KEY"),
        wechat_api_url=env["REDESK_WECHAT_API_URL"],
        wechat_template_id=TEMPLATE,
        media_dir=tmp_path / "media",
    )


class WeChatDesk:
    """redesk with the WeChat channel, driven synchronously through the real app."""

    def __init__(self, runtime: Runtime, fake: FakeWeChat, client: TestClient) -> None:
        self.runtime = runtime
        self.fake = fake
        self.client = client
        self.desk = Desk(runtime)

    def post(self, callback: Callback) -> Any:
        """POSTs a callback to /wechat the way WeChat does."""
        return self.client.post(
            "/wechat",
            params=callback.params,
            content=callback.body,
            headers={"Content-Type": "text/xml"},
        )

    def send(self, callback: Callback) -> Any:
        """POSTs a callback, then works everything through."""
        response = self.post(callback)
        assert response.status_code == 200, response.text
        assert response.text == "success"
        self.desk.work()
        return response

    def say(self, openid: str, content: str) -> Any:
        """The person writes `content` to the official account."""
        return self.send(self.fake.text(openid, content))

    def texts(self, openid: str = RESIDENT) -> list[str]:
        """Customer-service texts the person got, in order."""
        return self.fake.texts(openid)

    def last_number(self, openid: str = RESIDENT) -> str:
        """The request number in the newest text the person got."""
        found = NUMBER.search(self.texts(openid)[-1])
        assert found, self.texts(openid)[-1]
        return found.group(0)

    def person(self, openid: str = RESIDENT) -> Person:
        """The person behind an openid, fresh."""
        with Session(self.runtime.engine) as session:
            found = queries.find_person(session=session, channel=wechat.CHANNEL, external_id=openid)
            assert found is not None
            return found

    def inbox(self) -> list[InboxMessage]:
        """Every inbox row, oldest first."""
        with Session(self.runtime.engine) as session:
            return list(session.exec(select(InboxMessage).order_by(InboxMessage.id)).all())  # type: ignore[arg-type]

    def attachments(self) -> list[Attachment]:
        """Every attachment row, oldest first."""
        with Session(self.runtime.engine) as session:
            return list(session.exec(select(Attachment).order_by(Attachment.id)).all())  # type: ignore[arg-type]

    def outbox(self) -> list[OutboxMessage]:
        """Every outbox row, oldest first."""
        with Session(self.runtime.engine) as session:
            return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all())  # type: ignore[arg-type]

    def outbox_of(self, openid: str = RESIDENT) -> list[OutboxMessage]:
        """The person's outbox rows, oldest first."""
        person_id = self.person(openid).id
        return [row for row in self.outbox() if row.person_id == person_id]

    def window_closes(self, openid: str = RESIDENT) -> None:
        """The person last wrote 49 hours ago (for redesk and for the fake)."""
        at = utcnow() - timedelta(hours=49)
        with session_scope(self.runtime.engine) as session:
            session.execute(
                update(Person)
                .where(Person.external_id == openid)  # type: ignore[arg-type]
                .values(last_inbound_at=at)
            )
        self.fake.interacted(openid, at=self.fake.now() - 49 * 3600)


@pytest.fixture
def wx(runtime: Runtime, fake: FakeWeChat, client: TestClient) -> WeChatDesk:
    """redesk on WeChat, one department, nobody bound yet."""
    desk = WeChatDesk(runtime, fake, client)
    desk.desk.add_department("城管执法")
    return desk


# --- verification -----------------------------------------------------------------------------


def test_the_server_verification_echoes_echostr_only_when_signed(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    good = fake.verify_params(echostr="echo-7263")
    assert wx.client.get("/wechat", params=good).text == "echo-7263"

    bad = {**good, "signature": "0" * 40}
    response = wx.client.get("/wechat", params=bad)
    assert response.status_code == 403
    assert "echo-7263" not in response.text
    stale = fake.verify_params(echostr="echo-1", timestamp=str(int(fake.now()) - 600))
    assert wx.client.get("/wechat", params=stale).status_code == 403


# --- the whole cycle ------------------------------------------------------------------------


def test_a_resident_on_wechat_is_answered_and_rates_a_request_handled_on_the_web_desk(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a worker on the web desk
    worker = wx.desk.worker("王书记")

    # When the resident writes to the official account
    wx.say(RESIDENT, "小区门口的路灯坏了，晚上很黑")

    # Then they get a receipt with the number, as a customer-service message
    assert "已受理登记" in wx.texts()[-1]
    number = wx.last_number()
    assert [call.body["msgtype"] for call in fake.sent(RESIDENT)] == ["text"]
    assert number in worker.new_messages()[-1].text

    # When the worker accepts, completes and sends back the result on the web desk
    worker.send(f"受理 {number}")
    worker.send(f"办结 {number} 已更换灯泡，恢复照明")
    worker.send(f"回单 {number}")
    wx.desk.work()

    # Then the resident gets the result, with the rating commands ready to copy
    result = wx.texts()[-1]
    assert "已更换灯泡，恢复照明" in result
    assert text_commands(result) >= {f"评价 {number} 已解决 满意", f"评价 {number} 未解决 不满意"}

    # When they copy one back
    wx.say(RESIDENT, f"评价 {number} 已解决 满意")

    # Then the request is closed and they are thanked
    assert wx.desk.request(number).state == "closed"
    assert "感谢您的评价" in wx.texts()[-1]
    assert [e.action for e in wx.desk.events(number) if e.outcome == "ok"] == [
        "submit",
        "accept",
        "complete",
        "approve",
        "rate",
    ]


def text_commands(message: str) -> set[str]:
    """The command lines at the end of a WeChat message."""
    head, _, tail = message.partition("复制下列指令回复即可办理：")
    assert tail, message
    return {line.strip() for line in tail.splitlines() if line.strip()}


def test_a_worker_on_wechat_gets_cards_ending_with_the_commands_that_apply(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a worker bound on WeChat
    wx.say("worker-openid", f"绑定 {wx.desk.invite('worker')}")
    assert "绑定成功" in wx.texts("worker-openid")[-1]

    # When a resident writes
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()

    # Then the worker's card ends with 受理 / 转单 / 驳回 for that request, and 受理 works
    card = wx.texts("worker-openid")[-1]
    assert text_commands(card) == {f"受理 {number}", f"转单 {number}", f"驳回 {number}"}
    wx.say("worker-openid", f"受理 {number}")
    assert wx.desk.request(number).state == "handling"


def test_a_stale_command_copied_from_a_wechat_card_is_answered_with_the_current_state(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given two workers bound on WeChat, and a new request both got as a card
    wx.say("worker-openid", f"绑定 {wx.desk.invite('worker')}")
    wx.say("second-openid", f"绑定 {wx.desk.invite('worker')}")
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()
    assert f"驳回 {number}" in text_commands(wx.texts("second-openid")[-1])

    # When the first accepts, and the second then copies 驳回 from the card they got
    wx.say("worker-openid", f"受理 {number}")
    wx.say("second-openid", f"驳回 {number} 不属于受理范围")

    # Then the second is told the request's current state, and the request stays accepted
    request = wx.desk.request(number)
    assert (request.state, request.closed_at) == ("handling", None)
    assert wx.texts("second-openid")[-1] == catalogue(
        "error.transition", number=number, state_label="办理中（党委做单）", action_label="驳回"
    )
    assert [e.action for e in wx.desk.events(number) if e.outcome == "ok"] == ["submit", "accept"]


# --- retries and replays ----------------------------------------------------------------------


def test_the_same_message_posted_three_times_makes_one_request_and_one_answer(
    wx: WeChatDesk, fake: FakeWeChat, stub_broker: dramatiq.Broker
) -> None:
    # Given one message, posted three times as WeChat's retries do
    callback = fake.text(RESIDENT, "井盖丢了")
    responses = [wx.post(callback) for _ in range(3)]
    wx.desk.work()

    # Then every post was answered "success", and one request and one receipt came of it
    assert [(r.status_code, r.text) for r in responses] == [(200, "success")] * 3
    assert len(wx.inbox()) == 1
    assert len(wx.desk.requests()) == 1
    assert len(fake.sent(RESIDENT)) == 1
    assert stub_broker.queues["inbound"].qsize() == 1


def test_an_event_posted_twice_is_handled_once(wx: WeChatDesk, fake: FakeWeChat) -> None:
    callback = fake.event(RESIDENT, "subscribe")
    wx.send(callback)
    wx.send(callback)

    assert len(wx.inbox()) == 1
    assert len(fake.sent(RESIDENT)) == 2  # the welcome and the help, once


WORKER = "oWorker_3kQ9zT2mXb7Lp0sVd4Rj8Nc1Y"


def reused(fake: FakeWeChat, seen: Callback, forged: Callback) -> Callback:
    """`forged`'s body under the query string of the callback `seen` (its URL, as a proxy's
    access log or an http:// callback shows it)."""
    return Callback(
        params=dict(seen.params), body=forged.body, xml=forged.xml, openid=forged.openid
    )


def snapshot(wx: WeChatDesk) -> dict[str, Any]:
    """What a forged callback must not change: inbox, requests, events, outbox, people."""
    with Session(wx.runtime.engine) as session:
        people = sorted(
            (p.external_id, p.role, p.unreachable) for p in session.exec(select(Person)).all()
        )
    return {
        "inbox": [(row.id, row.natural_key, row.status) for row in wx.inbox()],
        "requests": [(r.number, r.state) for r in wx.desk.requests()],
        "events": len(wx.desk.events()),
        "outbox": len(wx.outbox()),
        "people": people,
    }


@pytest.mark.parametrize("fake", ["plain"], indirect=True)
def test_a_signed_url_reused_with_a_forged_reject_or_unsubscribe_is_refused_and_changes_nothing(
    wx: WeChatDesk, fake: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker bound on WeChat and a new request, and the signed URL of the worker's
    # last callback (its timestamp is still within the five minutes)
    wx.say(WORKER, f"绑定 {wx.desk.invite('worker')}")
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()
    seen = fake.text(WORKER, "待办")
    wx.send(seen)
    before, sent = snapshot(wx), len(fake.calls)
    caplog.set_level(logging.INFO)

    # When someone posts the worker's 驳回 and an unsubscribe under that URL (plain mode
    # signs the timestamp and nonce, not the body)
    at, nonce = seen.params["timestamp"], seen.params["nonce"]
    forgeries = [
        reused(
            fake,
            seen,
            fake.text(WORKER, f"驳回 {number} 不属于受理范围", timestamp=at, nonce=nonce),
        ),
        reused(fake, seen, fake.event(WORKER, "unsubscribe", timestamp=at, nonce=nonce)),
    ]
    answers = [wx.post(forged) for forged in forgeries]
    wx.desk.work()

    # Then both are refused with 403, and nothing was stored, changed or sent
    assert [(answer.status_code, answer.text) for answer in answers] == [
        (403, "nonce reused with another body")
    ] * 2
    assert snapshot(wx) == before
    assert wx.desk.request(number).state == "new"
    assert wx.person(WORKER).unreachable is False
    assert len(fake.calls) == sent
    assert "不属于受理范围" not in caplog.text

    # and WeChat retrying the genuine callback is still answered "success", changing nothing
    assert wx.post(seen).text == "success"
    assert snapshot(wx) == before


def test_a_nonce_is_remembered_while_its_timestamp_is_accepted_and_forgotten_afterwards(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a callback stored, with a timestamp four minutes in the future (clock skew:
    # accepted until nine minutes from now)
    ahead = int(fake.now()) + 240
    first = fake.text(RESIDENT, "路灯坏了", timestamp=ahead, nonce="1357924680")
    wx.send(first)
    with Session(wx.runtime.engine) as session:
        row = session.exec(select(WeChatNonce)).one()

    # Then its nonce is kept until its timestamp leaves the window, not five minutes from now
    assert row.key == f"{ahead}:1357924680"
    assert row.expires_at.timestamp() == ahead + wechat.REPLAY_WINDOW_SECONDS + 1

    # When another callback arrives after that
    with session_scope(wx.runtime.engine) as session:
        wechat.check_nonce(
            wx.runtime.settings,
            session,
            {"timestamp": str(ahead + 400), "nonce": "2468013579"},
            b"<xml/>",
            now=ahead + wechat.REPLAY_WINDOW_SECONDS + 2,
        )

    # Then the expired nonce was cleaned up on the way, and only the new one is kept
    with Session(wx.runtime.engine) as session:
        assert [r.key for r in session.exec(select(WeChatNonce)).all()] == [
            f"{ahead + 400}:2468013579"
        ]


@pytest.mark.parametrize("fake", ["plain"], indirect=True)
def test_with_redis_the_nonce_is_kept_in_redis_and_refused_from_any_process(
    db_url: str, fake: FakeWeChat, redis_url: str, stub_broker: dramatiq.Broker, tmp_path: Path
) -> None:
    import redis

    from bot.app import create_app

    env = fake.settings_env()
    shared = make_settings(
        database_url=db_url,
        redis_url=redis_url,
        _env_file=None,
        wechat_app_id=env["REDESK_WECHAT_APP_ID"],
        wechat_app_secret=env["REDESK_WECHAT_APP_SECRET"],
        wechat_token=env["REDESK_WECHAT_TOKEN"],
        wechat_api_url=env["REDESK_WECHAT_API_URL"],
        media_dir=tmp_path / "media",
    )
    seen = fake.text(RESIDENT, "路灯坏了")
    forged = reused(
        fake,
        seen,
        fake.text(RESIDENT, "撤销", timestamp=seen.params["timestamp"], nonce=seen.params["nonce"]),
    )
    # Given two copies of redesk sharing Redis and the database
    first = Runtime(settings=shared, engine=get_engine(db_url))
    second = Runtime(settings=shared, engine=get_engine(db_url))
    with TestClient(create_app(first)) as one, TestClient(create_app(second)) as other:
        # When the genuine callback reaches the first and a forgery under its URL the second
        genuine = one.post("/wechat", params=seen.params, content=seen.body)
        refused = other.post("/wechat", params=forged.params, content=forged.body)
        retried = other.post("/wechat", params=seen.params, content=seen.body)

    # Then the second refuses the forgery and accepts WeChat's retry of the genuine one
    assert [(r.status_code, r.text) for r in (genuine, refused, retried)] == [
        (200, "success"),
        (403, "nonce reused with another body"),
        (200, "success"),
    ]
    with Session(first.engine) as session:
        assert [row.natural_key for row in session.exec(select(InboxMessage)).all()] == [
            str(seen.msg_id)
        ]
        # and the nonce is in Redis (not the database), for the replay window at most
        assert session.exec(select(WeChatNonce)).all() == []
    client = redis.Redis.from_url(redis_url)
    key = f"{wechat.NONCE_PREFIX}{seen.params['timestamp']}:{seen.params['nonce']}"
    assert 0 < client.ttl(key) <= wechat.REPLAY_WINDOW_SECONDS + 1
    client.close()
    wechat.close_clients()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("fake", ["plain"], indirect=True)
def test_concurrent_posts_with_one_nonce_and_different_bodies_store_exactly_one(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given pairs of callbacks, each pair under one timestamp and nonce with different bodies
    pairs = []
    for index in range(6):
        at, nonce = int(fake.now()), f"97531{index:05d}"
        pairs.append(
            (
                fake.text(RESIDENT, f"路灯坏了 {index}", timestamp=at, nonce=nonce),
                fake.text(RESIDENT, f"井盖丢了 {index}", timestamp=at, nonce=nonce),
            )
        )
    callbacks = [callback for pair in pairs for callback in pair]
    barrier = threading.Barrier(len(callbacks), timeout=60)

    def post(callback: Callback) -> int:
        barrier.wait()
        return int(wx.post(callback).status_code)

    # When all of them are posted at once
    answers: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda i=i, c=c: answers.__setitem__(i, post(c)))
        for i, c in enumerate(callbacks)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then of each pair exactly one was stored (200) and the other refused (403)
    for index in range(len(pairs)):
        assert sorted((answers[2 * index], answers[2 * index + 1])) == [200, 403]
    stored = {row.natural_key for row in wx.inbox()}
    assert len(stored) == len(pairs)
    for index, (one, other) in enumerate(pairs):
        winner = one if answers[2 * index] == 200 else other
        assert str(winner.msg_id) in stored


# --- messages and events ----------------------------------------------------------------------


def test_subscribing_gets_a_welcome_and_the_help(wx: WeChatDesk, fake: FakeWeChat) -> None:
    wx.send(fake.event(RESIDENT, "subscribe"))

    welcome, help_text = wx.texts()
    assert "欢迎关注" in welcome
    assert "查询" in help_text
    assert wx.desk.requests() == []


def test_unsubscribing_marks_the_person_unreachable_and_nothing_is_sent(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a resident with a request being handled
    worker = wx.desk.worker()
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()
    sent = len(fake.sent(RESIDENT))

    # When they unsubscribe and the worker then accepts
    wx.send(fake.event(RESIDENT, "unsubscribe"))
    worker.send(f"受理 {number}")
    wx.desk.work()

    # Then nothing more was sent to them
    assert wx.person().unreachable is True
    assert len(fake.sent(RESIDENT)) == sent


def test_menu_clicks_map_to_commands_and_view_clicks_are_ignored(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()

    wx.send(fake.event(RESIDENT, "CLICK", key=wechat.MENU_REPORT))
    assert "请直接发送您要反映的问题" in wx.texts()[-1]
    wx.send(fake.event(RESIDENT, "CLICK", key=wechat.MENU_MINE))
    assert number in wx.texts()[-1]
    wx.send(fake.event(RESIDENT, "CLICK", key=wechat.MENU_HELP))
    assert "查询" in wx.texts()[-1]
    sent = len(fake.sent(RESIDENT))
    wx.send(fake.event(RESIDENT, "VIEW", key="https://example.org/"))
    assert len(fake.sent(RESIDENT)) == sent
    assert wx.inbox()[-1].status == "done"
    assert len(wx.desk.requests()) == 1


def test_a_picture_is_a_request_and_is_fetched_into_media_storage(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime
) -> None:
    # When a resident sends a picture
    callback = fake.image(RESIDENT)
    wx.send(callback)

    # Then it is a request with the picture attached
    assert "已受理登记" in wx.texts()[-1]
    (attachment,) = wx.attachments()
    assert (attachment.kind, attachment.file_id) == ("photo", callback.media_id)
    assert attachment.url

    # When the media are fetched
    assert dispatch.fetch_media(runtime) == 1

    # Then the picture's bytes are kept under the media directory
    stored = wx.attachments()[0].stored_path
    assert stored
    assert (Path(runtime.settings.media_dir) / stored).read_bytes() == fake.media_bytes(
        callback.media_id
    )
    assert dispatch.fetch_media(runtime) == 0


def test_media_wechat_no_longer_has_are_marked_gone(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime
) -> None:
    wx.send(fake.image(RESIDENT))
    fake.advance(days=4)

    assert dispatch.fetch_media(runtime) == 1

    assert wx.attachments()[0].stored_path == MEDIA_GONE


def test_voice_uses_wechats_recognition_and_a_location_joins_the_request(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    wx.send(fake.voice(RESIDENT, recognition="小区东门的路灯坏了"))
    number = wx.last_number()
    wx.send(fake.location(RESIDENT, 30.657, 104.066, "春熙路街道"))

    request = wx.desk.request(number)
    assert request.text == "小区东门的路灯坏了"
    kinds = [(a.kind, a.label) for a in wx.attachments()]
    assert kinds == [("voice", None), ("location", "春熙路街道")]
    assert len(wx.desk.requests()) == 1


def test_a_link_becomes_the_requests_text_and_unknown_types_are_politely_refused(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    wx.send(fake.link(RESIDENT, "小区噪音扰民", "每晚施工到十二点", "https://example.org/a"))
    assert "小区噪音扰民" in wx.desk.requests()[0].text

    unknown = (
        f"<xml><ToUserName><![CDATA[{fake.account_id}]]></ToUserName>"
        f"<FromUserName><![CDATA[{RESIDENT}]]></FromUserName>"
        f"<CreateTime>{int(fake.now())}</CreateTime><MsgType><![CDATA[miniprogrampage]]>"
        "</MsgType><Title><![CDATA[x]]></Title><MsgId>99887766</MsgId></xml>"
    )
    wx.send(fake.raw(unknown.encode(), safe=fake.safe, openid=RESIDENT))
    assert "暂不支持" in wx.texts()[-1]
    assert len(wx.desk.requests()) == 1


@pytest.mark.parametrize(
    ("voice_format", "extension"), [("amr", ".amr"), ("mp3", ".mp3"), ("speex", ".speex")]
)
def test_a_voice_file_is_kept_with_the_extension_of_its_format(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime, voice_format: str, extension: str
) -> None:
    # Given a resident's voice message in that Format (media/get answers its content type)
    callback = fake.voice(RESIDENT, recognition="噪音扰民", voice_format=voice_format)
    wx.send(callback)

    # When the media are fetched
    assert dispatch.fetch_media(runtime) == 1

    # Then the file keeps a real extension and WeChat's bytes
    [voice] = wx.attachments()
    assert voice.stored_path is not None and voice.stored_path.endswith(extension)
    assert (Path(runtime.settings.media_dir) / voice.stored_path).read_bytes() == fake.media_bytes(
        callback.media_id
    )


def test_a_voice_served_as_octet_stream_takes_its_extension_from_the_format(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime
) -> None:
    # Given voice media that media/get serves with a content type that says nothing
    media_id = fake.media(None, b"#!AMR\n" + b"\0" * 200, "application/octet-stream")
    wx.send(fake.voice(RESIDENT, recognition="路灯坏了", media_id=media_id))

    # When it is fetched
    assert dispatch.fetch_media(runtime) == 1

    # Then the message's Format (amr) names the file, not ".bin"
    assert str(wx.attachments()[0].stored_path).endswith(".amr")


# --- following and QR codes -------------------------------------------------------------------

#: A centre's parametric QR code scene (DESIGN §6: qrscene_CODE on subscribe, CODE on SCAN).
SCENE = "CHUNXI-01"

#: wechatpy's events of following the account (welcomed).
FOLLOWING = ("subscribe", "subscribe_scan", "subscribe_scan_product")

#: wechatpy's events redesk answers in other ways (tested one by one above and below).
ANSWERED = (*FOLLOWING, "scan", "unsubscribe", "click")


def event_callback(fake: FakeWeChat, event_type: str, openid: str = RESIDENT) -> Callback:
    """A callback as WeChat sends it, that wechatpy parses as EVENT_TYPES[event_type].

    Event names are spelt as WeChat sends them (the fake spells the common ones); the
    qrscene_ and product-page subscribes are plain subscribe events with their EventKey, and
    device notices carry MsgType device_text / device_event (WeChat's hardware platform).
    """
    if event_type == "subscribe_scan":
        return fake.event(
            openid,
            "subscribe",
            key=f"qrscene_{SCENE}",
            ticket="gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRt",
        )
    if event_type == "subscribe_scan_product":
        return fake.event(openid, "subscribe", key="scanbarcode|EAN13|6901234567892")
    if event_type == "scan":
        return fake.event(
            openid,
            "SCAN",
            key=SCENE,
            ticket="gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRt",
        )
    if event_type.startswith("device_"):
        kind, event = (
            ("device_text", None)
            if event_type == "device_text"
            else ("device_event", event_type[len("device_") :])
        )
        xml = (
            f"<xml><ToUserName><![CDATA[{fake.account_id}]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(fake.now())}</CreateTime>"
            f"<MsgType><![CDATA[{kind}]]></MsgType>"
            + (f"<Event><![CDATA[{event}]]></Event>" if event else "")
            + "<DeviceType><![CDATA[gh_d3e07d51b513]]></DeviceType>"
            "<DeviceID><![CDATA[dev1234abcd]]></DeviceID>"
            "<SessionID>9394</SessionID>"
            f"<OpenID><![CDATA[{openid}]]></OpenID></xml>"
        )
        return fake.raw(xml.encode(), safe=fake.safe, openid=openid)
    return fake.event(openid, event_type)


def test_every_event_wechatpy_knows_is_built_as_its_own_class() -> None:
    # Given a fake that builds callbacks without a server
    fake = FakeWeChat()

    # When each of wechatpy's event types is built as WeChat sends it
    parsed = {
        event_type: type(parse_message(event_callback(fake, event_type).xml))
        for event_type in EVENT_TYPES
    }

    # Then wechatpy gives each its own class (the tests below cover them all)
    assert parsed == EVENT_TYPES
    assert set(ANSWERED) <= set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", FOLLOWING)
def test_following_in_any_way_gets_the_welcome_and_the_help(
    wx: WeChatDesk, fake: FakeWeChat, event_type: str
) -> None:
    # Given someone who follows plainly, by a centre's QR code, or from a product page
    callback = event_callback(fake, event_type)
    assert type(parse_message(callback.xml)) is EVENT_TYPES[event_type]

    # When the event is handled
    wx.send(callback)

    # Then they are welcomed with the help, and no request is made
    welcome, help_text = wx.texts()
    assert "欢迎关注" in welcome
    assert "查询" in help_text
    assert "暂不支持" not in welcome + help_text
    assert wx.desk.requests() == []


def test_following_by_a_centres_qr_code_keeps_its_scene_on_the_inbox_row_and_the_person(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # When someone follows by scanning a parametric QR code (EventKey qrscene_<scene>)
    wx.send(event_callback(fake, "subscribe_scan"))

    # Then the scene, without its prefix, is kept on the inbox row and on the person
    [row] = wx.inbox()
    assert (row.scene, row.status) == (SCENE, "done")
    person = wx.person()
    assert person.scene == SCENE
    assert person.scene_at is not None and person.scene_at >= row.received_at


def test_a_follower_scanning_a_qr_code_is_welcomed_back_and_the_scene_stored(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a resident who followed plainly earlier
    wx.send(fake.event(RESIDENT, "subscribe"))
    before = len(wx.texts())
    assert wx.person().scene is None

    # When they scan a centre's QR code (SCAN, EventKey = the scene)
    callback = event_callback(fake, "scan")
    assert type(parse_message(callback.xml)) is EVENT_TYPES["scan"]
    wx.send(callback)

    # Then they are welcomed back, the scene is kept, and nothing else happens
    assert wx.texts()[before:] == [catalogue("wechat.welcome_back")]
    assert wx.inbox()[-1].scene == SCENE
    assert wx.person().scene == SCENE
    assert wx.desk.requests() == []


def test_a_later_scan_of_another_centres_code_replaces_the_persons_scene(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a person who came through one centre's code
    wx.send(event_callback(fake, "subscribe_scan"))

    # When they scan another centre's code
    wx.send(fake.event(RESIDENT, "SCAN", key="JINJIANG-02", ticket="gQFx8DwAAAAAAAAAAS5o"))

    # Then the person names the last one, and each inbox row its own
    assert wx.person().scene == "JINJIANG-02"
    assert [row.scene for row in wx.inbox()] == [SCENE, "JINJIANG-02"]


def test_a_plain_subscribe_and_a_product_page_subscribe_name_no_scene(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # When someone follows plainly, and someone else from a product page
    wx.send(event_callback(fake, "subscribe"))
    wx.send(event_callback(fake, "subscribe_scan_product", openid="o6_product_page_user"))

    # Then neither inbox row nor person has a scene
    assert [row.scene for row in wx.inbox()] == [None, None]
    assert wx.person().scene is None
    assert wx.person("o6_product_page_user").scene is None


def test_a_scan_without_a_scene_is_welcomed_back_and_changes_no_scene(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a follower who came through a centre's code
    wx.send(event_callback(fake, "subscribe_scan"))
    before = len(wx.texts())

    # When a SCAN arrives with no EventKey, and one with a key longer than WeChat allows
    wx.send(fake.event(RESIDENT, "SCAN"))
    wx.send(fake.event(RESIDENT, "SCAN", key="X" * 100))

    # Then both are answered with the welcome back; the first changes no scene, the second
    # keeps WeChat's 64 characters at most
    assert wx.texts()[before:] == [catalogue("wechat.welcome_back")] * 2
    assert [row.scene for row in wx.inbox()] == [SCENE, None, "X" * wechat.receive.MAX_SCENE]
    assert wx.person().scene == "X" * wechat.receive.MAX_SCENE
    assert wx.desk.requests() == []


# --- centres' QR codes: qrscene_CODE on subscribe, CODE on SCAN -------------------------------


def test_following_by_a_centres_qr_code_makes_the_resident_one_of_that_centre(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime
) -> None:
    # Given a network of centres
    network = add_network(runtime.engine)

    # When a resident follows by scanning 春熙路's poster (EventKey qrscene_chunxi)
    wx.send(fake.event(RESIDENT, "subscribe", key="qrscene_chunxi", ticket="gQH47joAAAAAAAAAAS"))

    # Then the welcome names the centre, the help names 切换, and they belong to it
    welcome, help_text = wx.texts()
    assert welcome == catalogue("wechat.welcome_centre", centre="春熙路商圈党群服务中心")
    assert "切换" in help_text
    assert wx.person().centre_id == network.chunxi
    assert wx.person().scene == "chunxi"

    # And their request is filed there with no question
    wx.say(RESIDENT, "小区门口的路灯坏了")
    assert [r.centre_id for r in wx.desk.requests()] == [network.chunxi]


def test_scanning_another_centres_code_moves_a_follower_for_new_requests_only(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime
) -> None:
    # Given a follower of 春熙路 with a request there
    network = add_network(runtime.engine)
    wx.send(fake.event(RESIDENT, "subscribe", key="qrscene_chunxi", ticket="T1"))
    wx.say(RESIDENT, "小区门口的路灯坏了")
    before = len(wx.texts())

    # When they scan 书院街's code (SCAN, EventKey shuyuan)
    wx.send(fake.event(RESIDENT, "SCAN", key="SHUYUAN", ticket="T2"))

    # Then they are welcomed to it; new requests go there, the first stays
    assert wx.texts()[before:] == [
        catalogue("wechat.welcome_back_centre", centre="书院街社区党群服务中心")
    ]
    wx.say(RESIDENT, "楼道里的垃圾没人清理")
    assert [r.centre_id for r in wx.desk.requests()] == [network.chunxi, network.shuyuan]


@pytest.mark.parametrize("scene", ["nowhere", "x'--", "<a>b</a>"])
def test_a_qr_code_of_no_centre_is_answered_with_the_choice_without_commands_to_copy(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime, scene: str
) -> None:
    # Given a network of centres
    network = add_network(runtime.engine)

    # When someone follows by a QR code whose scene names no centre
    wx.send(fake.event(RESIDENT, "subscribe", key=f"qrscene_{scene}", ticket="T1"))

    # Then they are welcomed and told, with the numbered choice (nothing to copy on WeChat)
    welcome, choice = wx.texts()
    assert welcome == catalogue("wechat.welcome")
    assert choice.startswith(catalogue("centre.intro_unknown", typed=scene))
    assert "2. 锦江区党群服务中心" in choice
    assert catalogue("wechat.commands") not in choice

    # When they answer by number, twice
    wx.say(RESIDENT, "2")
    wx.say(RESIDENT, "3")

    # Then they belong to the centre chosen
    assert wx.texts()[-1] == catalogue("centre.switched", centre="合江亭社区党群服务中心")
    assert wx.person().centre_id == network.hejiang


def test_a_kept_request_is_filed_in_the_centre_whose_code_is_scanned_next(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime
) -> None:
    # Given a follower of no centre whose request waits for the choice
    network = add_network(runtime.engine)
    wx.send(fake.event(RESIDENT, "subscribe"))
    wx.say(RESIDENT, "小区门口的路灯坏了")
    assert wx.texts()[-1].startswith(catalogue("centre.intro_kept"))
    assert wx.desk.requests() == []

    # When they scan 春熙路's poster
    wx.send(fake.event(RESIDENT, "SCAN", key="chunxi", ticket="T2"))

    # Then the request is filed there, once
    [request] = wx.desk.requests()
    assert request.centre_id == network.chunxi
    assert "已受理登记" in wx.texts()[-1]


def test_staff_scanning_a_centres_code_keep_their_centre(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime
) -> None:
    # Given a worker bound on WeChat
    add_network(runtime.engine)
    wx.say(RESIDENT, f"绑定 {wx.desk.invite('worker')}")
    before = wx.person().centre_id
    sent = len(wx.texts())

    # When they scan a community's code
    wx.send(fake.event(RESIDENT, "SCAN", key="chunxi", ticket="T2"))

    # Then they are welcomed back as before, and keep the centre of their role
    assert wx.texts()[sent:] == [catalogue("wechat.welcome_back")]
    assert wx.person().centre_id == before


def test_every_other_event_wechatpy_knows_is_stored_as_done_and_ignored(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given every event type wechatpy knows that redesk does not answer
    others = sorted(set(EVENT_TYPES) - set(ANSWERED))
    assert others

    # When each arrives as WeChat sends it
    for event_type in others:
        callback = event_callback(fake, event_type)
        assert type(parse_message(callback.xml)) is EVENT_TYPES[event_type], event_type
        wx.send(callback)

    # Then each is stored once, as done, in no chat, and nothing is answered or made
    rows = wx.inbox()
    assert len(rows) == len(others)
    assert {(row.status, row.chat_id, row.scene) for row in rows} == {("done", "-", None)}
    assert fake.sent(RESIDENT) == []
    assert wx.desk.requests() == []


def test_an_event_of_a_kind_wechatpy_does_not_know_is_stored_and_ignored(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # When an event wechatpy has no class for arrives
    wx.send(fake.event(RESIDENT, "some_future_event", key="x"))

    # Then it is kept as done and nothing is answered
    assert [(row.status, row.chat_id) for row in wx.inbox()] == [("done", "-")]
    assert fake.sent(RESIDENT) == []


# --- sending ----------------------------------------------------------------------------------


def test_outside_the_48_hour_window_a_template_message_is_sent(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a request, and a resident who last wrote 49 hours ago
    worker = wx.desk.worker()
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()
    wx.window_closes()

    # When the worker accepts it
    worker.send(f"受理 {number}")
    wx.desk.work()

    # Then the resident hears through the template, with the number in its field
    (template,) = fake.templates(RESIDENT)
    assert template.body["template_id"] == TEMPLATE
    assert template.body["data"]["keyword1"]["value"] == number
    assert "已受理" in template.body["data"]["first"]["value"]
    assert wx.outbox_of()[-1].status == OutboxStatus.SENT


def test_the_sixth_message_in_the_window_goes_as_a_template(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a resident who wrote once and got the receipt (one message of five)
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()

    # When five more notices are queued for them
    with session_scope(wx.runtime.engine) as session:
        person = queries.find_person(session=session, channel=wechat.CHANNEL, external_id=RESIDENT)
        assert person is not None
        tx = wx.runtime.tx(session, "test:notices")
        for _ in range(5):
            tx.notify(person, "requester.accepted", number=number)
    wx.desk.work()

    # Then four more went as customer-service messages and the sixth as a template, without
    # WeChat having to refuse one first
    assert len(fake.sent(RESIDENT)) == 5
    assert len(fake.templates(RESIDENT)) == 1
    assert [c for c in fake.calls if c.errcode == wechat.client.ERR_OUT_OF_COUNT] == []


def test_a_45015_from_wechat_falls_back_to_the_template(wx: WeChatDesk, fake: FakeWeChat) -> None:
    # Given redesk believes the window is open, but WeChat says it is not
    worker = wx.desk.worker()
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()
    fake.interacted(RESIDENT, at=fake.now() - 49 * 3600)

    worker.send(f"受理 {number}")
    wx.desk.work()

    # The receipt went as a customer-service message; the acceptance was refused as one
    assert [
        c.errcode for c in fake.calls if c.path.endswith("custom/send") and c.openid == RESIDENT
    ] == [0, wechat.client.ERR_OUT_OF_TIME]
    assert len(fake.templates(RESIDENT)) == 1


def test_without_a_template_a_message_outside_the_window_is_marked_failed(
    wx: WeChatDesk, fake: FakeWeChat, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wechat_of(runtime.settings), "template_id", None)
    worker = wx.desk.worker()
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()
    wx.window_closes()

    worker.send(f"受理 {number}")
    wx.desk.work()

    row = wx.outbox_of()[-1]
    assert row.status == OutboxStatus.FAILED
    assert "REDESK_WECHAT_TEMPLATE_ID" in (row.last_error or "")
    assert fake.templates(RESIDENT) == []


def test_an_expired_token_is_refreshed_once_and_the_message_delivered(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    wx.say(RESIDENT, "路灯坏了")
    fetched = fake.token_fetches
    fake.expire_tokens()

    wx.say(RESIDENT, "补充：在东门")

    assert fake.token_fetches == fetched + 1
    assert len(fake.sent(RESIDENT)) == 2


def test_threads_meeting_an_expired_token_together_refresh_it_once(
    wx: WeChatDesk, fake: FakeWeChat, settings: Settings
) -> None:
    # Given a token in use, then expired
    for openid in (f"user-{i}" for i in range(8)):
        fake.interacted(openid)
    client = wechat.get_client(settings)
    client.message.send_text("user-0", "你好")
    fetched = fake.token_fetches
    fake.expire_tokens()

    # When eight threads send at once
    barrier = threading.Barrier(8)

    def send(i: int) -> None:
        barrier.wait()
        client.message.send_text(f"user-{i}", "你好")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one new token was fetched and every message went out
    assert fake.token_fetches == fetched + 1
    assert len(fake.sent()) == 9


def test_processes_share_the_token_through_redis(
    fake: FakeWeChat, settings: Settings, redis_url: str
) -> None:
    shared = settings.model_copy(update={"redis_url": redis_url})
    fake.interacted("user-1")
    first = wechat.RedeskWeChatClient(shared, *_redis_storage(redis_url))
    second = wechat.RedeskWeChatClient(shared, *_redis_storage(redis_url))

    first.message.send_text("user-1", "一")
    second.message.send_text("user-1", "二")

    assert fake.token_fetches == 1
    assert fake.texts("user-1") == ["一", "二"]


def _redis_storage(redis_url: str) -> tuple[Any, Any]:
    """What get_client builds for a process with Redis: (storage, lock factory)."""
    import redis
    from wechatpy.session.redisstorage import RedisStorage

    connection = redis.Redis.from_url(redis_url)
    connection.delete("redesk:wechat:test_access_token")
    return (
        RedisStorage(connection, prefix="redesk:wechat:test"),
        lambda: connection.lock("redesk:wechat:test:lock", timeout=30, blocking_timeout=30),
    )


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"errcode": -1}, OutboxStatus.PENDING),
        ({"status": 500}, OutboxStatus.PENDING),
        ({"errcode": 45009}, OutboxStatus.PENDING),
    ],
)
def test_busy_and_rate_limited_answers_are_retried_and_delivered_once(
    wx: WeChatDesk,
    fake: FakeWeChat,
    runtime: Runtime,
    fault: dict[str, Any],
    expected: str,
) -> None:
    # Given WeChat failing the next call
    fake.interacted(RESIDENT)
    fake.fail_next(1, paths="message/custom/send", **fault)
    wx.post(fake.text(RESIDENT, "路灯坏了"))
    wx.desk.work()

    # Then the receipt waits for its retry
    row = wx.outbox_of()[-1]
    assert row.status == expected
    assert row.next_attempt_at is not None
    assert fake.sent(RESIDENT) == []

    # When its time comes
    with session_scope(runtime.engine) as session:
        session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))  # type: ignore[arg-type]
    wx.desk.work()

    # Then it is delivered, once
    assert len(fake.sent(RESIDENT)) == 1
    assert wx.outbox_of()[-1].status == OutboxStatus.SENT


def test_a_person_who_unsubscribed_meanwhile_is_marked_unreachable_on_43004(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    worker = wx.desk.worker()
    wx.say(RESIDENT, "路灯坏了")
    number = wx.last_number()
    fake.unsubscribe(RESIDENT)  # WeChat knows, redesk has not heard yet

    worker.send(f"受理 {number}")
    wx.desk.work()

    assert wx.person().unreachable is True
    assert wx.outbox_of()[-1].status == OutboxStatus.SKIPPED


def test_a_long_answer_is_sent_in_parts(wx: WeChatDesk, fake: FakeWeChat) -> None:
    parts = split_text("路灯" * 1500, wechat.MAX_MESSAGE)
    assert [len(part) for part in parts] == [2000, 1000]
    assert "".join(parts) == "路灯" * 1500


# --- bad input ----------------------------------------------------------------------------------


def _billion_laughs() -> bytes:
    """Nine levels of entities, each ten of the one below: 10^9 "lol"s if expanded."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)
    ]
    return (
        f'<?xml version="1.0"?><!DOCTYPE xml [{"".join(entities)}]>'
        "<xml><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>"
        "<MsgType>text</MsgType><Content>&lol9;</Content><MsgId>1</MsgId></xml>"
    ).encode()


HOSTILE = {
    "xxe": (
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName>"
        b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&x;</Content>"
        b"<MsgId>1</MsgId></xml>"
    ),
    "billion_laughs": _billion_laughs(),
    "malformed": b"<xml><ToUserName>gh</ToUserName><FromUserName>",
    "not_xml": b'{"MsgType": "text"}',
    "missing_fields": b"<xml><ToUserName><![CDATA[gh]]></ToUserName><Content>hi</Content></xml>",
    "missing_msg_id": (
        b"<xml><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>"
        b"<MsgType>text</MsgType><Content>hi</Content></xml>"
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_or_malformed_xml_is_refused_and_nothing_is_stored(
    wx: WeChatDesk, fake: FakeWeChat, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = wx.post(fake.raw(HOSTILE[kind], safe=fake.safe, openid=RESIDENT))

    assert response.status_code == 400
    assert wx.inbox() == []
    assert "hi" not in caplog.text and "passwd" not in caplog.text


def test_a_body_over_one_megabyte_is_refused(wx: WeChatDesk, fake: FakeWeChat) -> None:
    callback = fake.text(RESIDENT, "路灯坏了" + "啊" * 400_000)
    assert len(callback.body) > wechat.CALLBACK_BODY_LIMIT

    assert wx.post(callback).status_code == 413
    assert wx.inbox() == []


@pytest.mark.parametrize("kind", ["bad_signature", "unsigned", "replayed", "future"])
def test_bad_signatures_and_replays_are_refused(
    wx: WeChatDesk, fake: FakeWeChat, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    callback = {
        "bad_signature": lambda: fake.text(RESIDENT, "路灯坏了", bad_signature=True),
        "unsigned": lambda: fake.text(RESIDENT, "路灯坏了", sign=False),
        "replayed": lambda: fake.text(RESIDENT, "路灯坏了", timestamp=str(int(fake.now()) - 600)),
        "future": lambda: fake.text(RESIDENT, "路灯坏了", timestamp=str(int(fake.now()) + 600)),
    }[kind]()

    assert wx.post(callback).status_code == 403
    assert wx.inbox() == []
    assert "路灯坏了" not in caplog.text


@pytest.mark.parametrize("fake", ["safe"], indirect=True)
def test_safe_mode_refuses_a_bad_msg_signature_an_undecryptable_body_and_a_plain_one(
    runtime: Runtime, fake: FakeWeChat, client: TestClient
) -> None:
    wx = WeChatDesk(runtime, fake, client)
    good = fake.text(RESIDENT, "路灯坏了")

    tampered = {**good.params, "msg_signature": "0" * 40}
    assert client.post("/wechat", params=tampered, content=good.body).status_code == 403

    garbage = fake.encrypt("x")[:-8] + "AAAAAAA="
    body = (
        f"<xml><ToUserName><![CDATA[{fake.account_id}]]></ToUserName>"
        f"<Encrypt><![CDATA[{garbage}]]></Encrypt></xml>"
    ).encode()
    params = {
        **good.params,
        "msg_signature": wechat.signature(
            fake.token, good.params["timestamp"], good.params["nonce"], garbage
        ),
    }
    assert client.post("/wechat", params=params, content=body).status_code == 400

    plain = fake.text(RESIDENT, "路灯坏了", safe=False)
    assert client.post("/wechat", params=plain.params, content=plain.body).status_code == 400
    assert wx.inbox() == []


@pytest.mark.parametrize("fake", ["safe"], indirect=True)
def test_a_message_for_another_account_does_not_decrypt(
    runtime: Runtime, fake: FakeWeChat, client: TestClient
) -> None:
    other = FakeWeChat(safe=True, token=fake.token, aes_key=fake.aes_key)
    callback = other.text(RESIDENT, "路灯坏了")

    assert client.post("/wechat", params=callback.params, content=callback.body).status_code == 400


def test_wechat_off_serves_no_callback_route(db_url: str, fake: FakeWeChat) -> None:
    """A channel that is off mounts no routes: its callback is not found (404), not stored."""
    from bot.app import create_app

    off = Runtime(
        settings=Settings(database_url=db_url, redis_url=None, _env_file=None),  # type: ignore[call-arg]
        engine=get_engine(db_url),
    )
    with TestClient(create_app(off)) as client:
        callback = fake.text(RESIDENT, "路灯坏了")
        assert (
            client.post("/wechat", params=callback.params, content=callback.body).status_code == 404
        )
    with Session(off.engine) as session:
        assert session.exec(select(InboxMessage)).all() == []


# --- small talk and 待办 on a channel without buttons ---------------------------------------


def test_small_talk_on_wechat_is_answered_and_a_short_text_offers_the_register_command(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # When a follower says hello, then sends a text too short to act on
    wx.say(RESIDENT, "你好！")
    greeting = wx.texts()[-1]
    wx.say(RESIDENT, "停水")
    question = wx.texts()[-1]

    # Then neither made a request; the question ends with the command to send
    assert "直接发送文字描述即可" in greeting
    assert "请描述您遇到的问题" in question and text_commands(question) == {"登记"}
    assert wx.desk.requests() == []

    # When they send the command
    wx.say(RESIDENT, "登记")

    # Then the short text is registered as it was
    assert [r.text for r in wx.desk.requests()] == ["停水"]
    assert "已受理登记" in wx.texts()[-1]


def test_a_worker_s_to_do_on_wechat_names_the_next_page_instead_of_buttons(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a worker bound on WeChat and 11 new requests
    wx.say("worker-openid", f"绑定 {wx.desk.invite('worker')}")
    for index in range(11):
        wx.say(f"resident-{index}", f"{index}号楼的路灯坏了")

    # When the worker asks for the to-do list
    wx.say("worker-openid", "待办")
    first = wx.texts("worker-openid")[-1]

    # Then the page counts everything and names the next page's command, without command
    # lines for every request
    assert "待受理（11 件）" in first and "第 1/2 页" in first
    assert first.endswith("发送「待办 2」查看下一页。")
    assert "复制下列指令回复即可办理" not in first

    # When they send it
    wx.say("worker-openid", "待办 2")

    # Then the last request is on page 2
    assert "第 2/2 页" in wx.texts("worker-openid")[-1]


def test_a_resident_who_forges_the_commands_footer_on_wechat_cannot_fake_it_in_the_card(
    wx: WeChatDesk, fake: FakeWeChat
) -> None:
    # Given a worker bound on WeChat
    wx.say("worker-openid", f"绑定 {wx.desk.invite('worker')}")

    # When a resident writes a text that imitates the card's 来自 line and commands footer
    wx.say(
        RESIDENT,
        "路灯坏了\n—— 来自：王书记\n复制下列指令回复即可办理：\n"
        "回单 SQ-20260101-0001\r\n驳回 SQ-20260101-0001 无",
    )
    number = wx.last_number()

    # Then the worker's card has one 来自 line and one commands footer, the card's own
    card = wx.texts("worker-openid")[-1]
    lines = card.split("\n")
    assert len([line for line in lines if line.startswith("—— 来自：")]) == 1
    assert [line for line in lines if line.startswith("复制下列指令")] == [
        "复制下列指令回复即可办理："
    ]
    # And every line of the resident's words is quoted, before the footer
    assert [line for line in lines if line.startswith("│ ")] == [
        "│ 路灯坏了",
        "│ —— 来自：王书记",
        "│ 复制下列指令回复即可办理：",
        "│ 回单 SQ-20260101-0001",
        "│ 驳回 SQ-20260101-0001 无",
    ]
    footer = lines.index("复制下列指令回复即可办理：")
    assert {line.strip() for line in lines[footer + 1 :] if line.strip()} == {
        f"受理 {number}",
        f"转单 {number}",
        f"驳回 {number}",
    }
