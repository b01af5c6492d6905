"""One staff account linked from Telegram, WeChat, WeCom and the web desk is one worker: one card
per new request (in the chat the account chose), a press answered where it was pressed, events
in the account's person's name and the same 待办 everywhere. On SQLite and PostgreSQL, through
the real app, the fake Telegram, WeChat and WeCom APIs and the chat harnesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot import dispatch
from bot.app import create_app
from bot.channels import telegram, wechat, wecom
from bot.channels.telegram import TelegramSender
from bot.channels.wecom import WeComSender, WeComSettings
from bot.runtime import Runtime
from storage.db import get_engine, session_scope
from storage.models import OutboxMessage, Person
from storage.settings import Settings
from tests.fakes.telegram import FakeTelegram
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wecom import FakeWeCom
from tests.utils.accounts import (
    logged_in,
    make_account,
)
from tests.utils.app import TestClient
from tests.utils.harness import NUMBER
from tests.utils.settings import make_settings
from tests.utils.telegram import SECRET, QuickLimiter, TelegramDesk, text_of

#: The account's Telegram user, its WeChat openid and its WeCom member.
TG_USER = 7002
OPENID = "o6_bmjrPTlm6_2sgVt7hLiShuJi"
MEMBER = "lisj"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    """The fake Bot API, limits far looser than the QuickLimiter's spacing."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    server = FakeTelegram(
        per_chat_interval=0.005, group_per_minute=6000, global_per_second=6000
    ).start()
    try:
        yield server
    finally:
        telegram.close_clients()
        dispatch._lazy_senders.clear()
        server.stop()
    assert server.errors == []


@pytest.fixture
def wechat_fake() -> Iterator[FakeWeChat]:
    """The fake WeChat API; callbacks in safe mode."""
    server = FakeWeChat(safe=True).start()
    try:
        yield server
    finally:
        wechat.close_clients()
        dispatch._lazy_senders.clear()
        server.stop()
    assert server.errors == []


@pytest.fixture
def wecom_fake() -> Iterator[FakeWeCom]:
    """The fake WeCom API with the account's member."""
    server = FakeWeCom().start()
    server.member(MEMBER, "李书记")
    try:
        yield server
    finally:
        wecom.close_clients()
        dispatch._lazy_senders.clear()
        server.stop()
    assert server.errors == []


@pytest.fixture
def settings(
    db_url: str,
    fake: FakeTelegram,
    wechat_fake: FakeWeChat,
    wecom_fake: FakeWeCom,
    tmp_path: Path,
) -> Settings:
    """The web desk, Telegram, WeChat and WeCom on, pointing at the fakes."""
    env = wechat_fake.settings_env()
    section = WeComSettings(  # type: ignore[call-arg]
        _env_file=None,
        corp_id=wecom_fake.corp_id,
        agent_id=wecom_fake.agent_id,
        secret=wecom_fake.secret,
        token=wecom_fake.token,
        aes_key=wecom_fake.aes_key,
        api_url=wecom_fake.url,
    )
    base = make_settings(
        database_url=db_url,
        redis_url=None,
        web_sessions_per_minute=0,
        telegram_token=fake.token,
        telegram_api_url=fake.url,
        telegram_webhook_secret=SECRET,
        wechat_app_id=env["REDESK_WECHAT_APP_ID"],
        wechat_app_secret=env["REDESK_WECHAT_APP_SECRET"],
        wechat_token=env["REDESK_WECHAT_TOKEN"],
        wechat_aes_key=env["REDESK_WECHAT_AES_KEY"],
        wechat_api_url=env["REDESK_WECHAT_API_URL"],
        media_dir=tmp_path / "media",
        _env_file=None,
    )
    return base.with_sections(section)


@pytest.fixture
def runtime(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The runtime, its Telegram sender on a quick limiter."""
    monkeypatch.setitem(
        dispatch.SENDERS, telegram.CHANNEL, TelegramSender(settings, limiter=QuickLimiter())
    )
    monkeypatch.setitem(
        dispatch.SENDERS, wecom.CHANNEL, WeComSender(settings, limiter=QuickLimiter())
    )
    return Runtime(settings=settings, engine=get_engine(settings.database_url))


class Linked:
    """An account "li" (李书记, worker) linked from Telegram, WeChat, WeCom and the web desk."""

    def __init__(
        self,
        runtime: Runtime,
        fake: FakeTelegram,
        wechat_fake: FakeWeChat,
        wecom_fake: FakeWeCom,
        client: TestClient,
    ) -> None:
        self.runtime = runtime
        self.tg = TelegramDesk(runtime, fake)
        self.desk = self.tg.desk
        self.wechat = wechat_fake
        self.wecom = wecom_fake
        self.client = client
        person_id = make_account(runtime.engine, "li", name="李书记").person.id
        assert person_id is not None
        self.person_id: int = person_id
        self.headers = logged_in(client, "li")
        self.tg_user = fake.user(TG_USER, "李书记TG")
        self.tg.say(self.tg_user, f"绑定 {self.code()}")
        assert "关联成功" in text_of(self.tg.last(TG_USER))
        self.wechat_says(f"绑定 {self.code()}")
        assert "关联成功" in wechat_fake.texts(OPENID)[-1]
        self.wecom_says(f"绑定 {self.code()}")
        assert "关联成功" in wecom_fake.texts(MEMBER)[-1]
        self.web = self.desk.identity("李书记网页")
        assert any("关联成功" in m.text for m in self.web.send(f"绑定 {self.code()}"))

    def code(self) -> str:
        made = self.client.post("/api/console/link-code", json={}, headers=self.headers)
        assert made.status_code == 200, made.text
        return str(made.json()["code"])

    def wechat_says(self, content: str) -> None:
        callback = self.wechat.text(OPENID, content)
        response = self.client.post(
            "/wechat",
            params=callback.params,
            content=callback.body,
            headers={"Content-Type": "text/xml"},
        )
        assert response.status_code == 200, response.text
        self.desk.work()

    def wecom_says(self, content: str) -> None:
        callback = self.wecom.text(MEMBER, content)
        response = self.client.post(
            "/wecom",
            params=callback.params,
            content=callback.body,
            headers={"Content-Type": "text/xml"},
        )
        assert response.status_code == 200, response.text
        self.desk.work()

    def identities(self) -> dict[str, int]:
        """The linked chats' person ids by channel."""
        items = self.client.get("/api/console/identities").json()["items"]
        return {item["channel"]: item["id"] for item in items}

    def outbox_to(self, people: set[int], after: int) -> list[OutboxMessage]:
        with session_scope(self.runtime.engine) as session:
            return list(
                session.exec(
                    select(OutboxMessage)
                    .where(col(OutboxMessage.person_id).in_(people), col(OutboxMessage.id) > after)
                    .order_by(col(OutboxMessage.id))
                ).all()
            )

    def last_outbox_id(self) -> int:
        return self.tg.last_outbox_id()


@pytest.fixture
def linked(
    runtime: Runtime,
    fake: FakeTelegram,
    wechat_fake: FakeWeChat,
    wecom_fake: FakeWeCom,
    stub_broker: Any,
) -> Iterator[Linked]:
    with TestClient(create_app(runtime)) as client:
        yield Linked(runtime, fake, wechat_fake, wecom_fake, client)


def test_three_linked_chats_act_as_the_accounts_person(linked: Linked) -> None:
    chats = linked.identities()
    assert set(chats) == {"telegram", "wechat", "wecom", "web"}
    with session_scope(linked.runtime.engine) as session:
        for person_id in chats.values():
            person = session.get(Person, person_id)
            # the chats keep the requester role: the account's person holds the role
            assert person is not None and person.principal_id == linked.person_id
            assert person.role == "requester"


def test_a_new_request_gives_one_card_in_the_chosen_chat_and_a_press_there_is_answered_there(
    linked: Linked, fake: FakeTelegram
) -> None:
    chats = linked.identities()
    everyone = {*chats.values(), linked.person_id}
    # Given the account chose Telegram for notifications
    chosen = linked.client.post(
        "/api/console/notify", json={"person_id": chats["telegram"]}, headers=linked.headers
    )
    assert chosen.status_code == 200
    before = linked.last_outbox_id()

    # When a resident writes on the web desk
    resident = linked.desk.identity("张三")
    resident.send("小区门口的路灯坏了，晚上很黑")
    number = resident.last().number

    # Then exactly one card reached the account, in Telegram
    cards = [row for row in linked.outbox_to(everyone, before) if row.key == "card.new"]
    assert [row.person_id for row in cards] == [chats["telegram"]]
    card = linked.tg.last(TG_USER, number)
    assert "受理" in [
        b["text"] for row in card.params["reply_markup"]["inline_keyboard"] for b in row
    ]
    assert not any(number in text for text in linked.wechat.texts(OPENID))
    assert linked.wecom.cards(MEMBER) == []

    # When 受理 is pressed in Telegram
    before = linked.last_outbox_id()
    press = linked.tg.press(linked.tg_user, card, "受理")

    # Then the request is the account's, the event names its person, the answer is in Telegram
    assert str(linked.desk.request(number).state) == "handling"
    assert linked.desk.request(number).handler_id == linked.person_id
    assert linked.desk.events(number)[-1].actor_id == linked.person_id
    assert linked.tg.answer_to(press)
    assert "李书记" in str(linked.tg.edit_of(card).get("text", ""))
    to_account = linked.outbox_to(everyone, before)
    assert to_account and {row.person_id for row in to_account} <= {chats["telegram"]}


def test_todo_from_any_linked_chat_is_the_same_list(linked: Linked) -> None:
    resident = linked.desk.identity("张三")
    numbers = []
    for text in ("小区门口的路灯坏了", "楼道里堆满了杂物", "垃圾桶两天没人清运"):
        resident.send(text)
        numbers.append(resident.last().number)

    web = "\n".join(m.text for m in linked.web.send("待办"))
    linked.wechat_says("待办")
    on_wechat = linked.wechat.texts(OPENID)[-1]
    linked.tg.say(linked.tg_user, "待办")
    on_telegram = text_of(linked.tg.last(TG_USER))
    linked.wecom_says("待办")
    on_wecom = "\n".join(d.text or str(d.payload) for d in linked.wecom.deliveries(MEMBER)[-1:])

    listed = [sorted(set(NUMBER.findall(text))) for text in (web, on_wechat, on_telegram, on_wecom)]
    assert listed[0] == sorted(numbers)
    assert listed[0] == listed[1] == listed[2] == listed[3]


def test_an_unlinked_chat_is_a_residents_chat_again(linked: Linked) -> None:
    # While linked, free text from the web chat is staff's: help, no request
    linked.web.send("我家楼下的水管漏水了")
    assert linked.desk.requests() == []

    chats = linked.identities()
    response = linked.client.post(
        f"/api/console/identities/{chats['web']}/unlink", json={}, headers=linked.headers
    )
    assert response.status_code == 200
    assert set(linked.identities()) == {"telegram", "wechat", "wecom"}

    # Unlinked, the same text is a resident's new request
    linked.web.send("我家楼下的水管漏水了")
    assert len(linked.desk.requests()) == 1


def test_an_admin_account_linked_on_the_web_desk_gets_help_and_no_request(
    runtime: Runtime, stub_broker: Any
) -> None:
    from tests.utils.harness import Desk

    make_account(runtime.engine, "boss", "admin", name="管理员")
    with TestClient(create_app(runtime)) as client:
        headers = logged_in(client, "boss")
        code = client.post("/api/console/link-code", json={}, headers=headers).json()["code"]
    desk = Desk(runtime)
    chat = desk.identity("管理员网页")
    assert any("关联成功" in m.text and "管理员" in m.text for m in chat.send(f"绑定 {code}"))
    answer = chat.send("帮助")
    assert answer and answer[-1].text
    chat.send("小区门口的路灯坏了")
    assert desk.requests() == []
