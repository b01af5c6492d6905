"""The WeCom channel on the fake WeCom API (tests/fakes/wecom.py): callbacks encrypted and signed
as WeCom does, through the real app, handled and delivered through the real client.

The workers and the departments' staff are on WeCom; the resident on WeChat (safe mode,
tests/fakes/wechat.py), so the whole cycle crosses channels.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from wechatpy.enterprise.parser import parse_message

from bot import dispatch
from bot.channels import wecom
from bot.channels.base import ChannelError, TransientSendError, Unreachable
from bot.channels.wecom import WeComChannel, WeComSender, WeComSettings
from bot.channels.wecom.cards import MAX_BUTTONS, fits, layout, outbox_of, task_id
from bot.runtime import Runtime
from bot.texts import Rendered
from bot.texts import text as catalogue
from storage import queries
from storage.models import Attachment, InboxMessage, OutboxMessage, OutboxStatus, Person
from storage.settings import Settings, SettingsError
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wecom import Callback, FakeWeCom
from tests.utils.app import TestClient
from tests.utils.harness import Desk
from tests.utils.settings import make_settings
from tests.utils.telegram import QuickLimiter

#: A request number in a message.
NUMBER = re.compile(r"SQ-\d{8}-\d{4,}")

RESIDENT = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
WORKER = "lisj"
STAFF = "zhangsan"

#: XML that expands to a billion "lol"s, and XML that reads a local file.
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<xml><ToUserName>{corp}</ToUserName><FromUserName>lisj</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol3;</Content>"
    "<MsgId>1</MsgId></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>{corp}</ToUserName><FromUserName>lisj</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content>"
    "<MsgId>2</MsgId></xml>"
)


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    """The fake WeCom API with two members."""
    server = FakeWeCom().start()
    server.member(WORKER, "李书记")
    server.member(STAFF, "张三")
    try:
        yield server
    finally:
        wecom.close_clients()
        dispatch._lazy_senders.clear()
        server.stop()
    assert server.errors == []


@pytest.fixture
def wechat_fake() -> Iterator[FakeWeChat]:
    """The fake WeChat API in safe mode, for the resident."""
    from bot.channels import wechat

    server = FakeWeChat(safe=True).start()
    try:
        yield server
    finally:
        wechat.close_clients()
        server.stop()
    assert server.errors == []


def wecom_section(fake: FakeWeCom, **overrides: Any) -> WeComSettings:
    """The WeCom settings of the fake's app."""
    values: dict[str, Any] = {
        "corp_id": fake.corp_id,
        "agent_id": fake.agent_id,
        "secret": fake.secret,
        "token": fake.token,
        "aes_key": fake.aes_key,
        "api_url": fake.url,
        **overrides,
    }
    return WeComSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(db_url: str, fake: FakeWeCom, wechat_fake: FakeWeChat, tmp_path: Path) -> Settings:
    """Settings for the database under test with WeCom and WeChat on, pointing at the fakes."""
    env = wechat_fake.settings_env()
    base = make_settings(
        database_url=db_url,
        redis_url=None,
        _env_file=None,
        media_dir=tmp_path / "media",
        wechat_app_id=env["REDESK_WECHAT_APP_ID"],
        wechat_app_secret=env["REDESK_WECHAT_APP_SECRET"],
        wechat_token=env["REDESK_WECHAT_TOKEN"],
        wechat_aes_key=env["REDESK_WECHAT_AES_KEY"],
        wechat_api_url=env["REDESK_WECHAT_API_URL"],
    )
    return base.with_sections(wecom_section(fake))


@pytest.fixture
def sender(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> WeComSender:
    """The WeCom sender on a limiter forty times faster than WeCom's per-member limit."""
    made = WeComSender(settings, limiter=QuickLimiter())
    monkeypatch.setitem(dispatch.SENDERS, wecom.CHANNEL, made)
    return made


class WeComDesk:
    """redesk with WeCom and WeChat, driven synchronously through the real app."""

    def __init__(
        self, runtime: Runtime, fake: FakeWeCom, wechat_fake: FakeWeChat, client: TestClient
    ) -> None:
        self.runtime = runtime
        self.fake = fake
        self.wechat = wechat_fake
        self.client = client
        self.desk = Desk(runtime)

    def post(self, callback: Callback) -> Any:
        """POSTs a callback to /wecom the way WeCom does."""
        return self.client.post(
            "/wecom",
            params=callback.params,
            content=callback.body,
            headers={"Content-Type": "text/xml"},
        )

    def send(self, callback: Callback) -> None:
        """POSTs a callback, then works everything through."""
        response = self.post(callback)
        assert response.status_code == 200, response.text
        assert response.text == ""
        self.desk.work()

    def say(self, userid: str, content: str) -> None:
        """The member writes `content` to the app."""
        self.send(self.fake.text(userid, content))

    def press(self, userid: str, label: str, card: dict[str, Any] | None = None) -> Callback:
        """The member presses the button `label` of `card` (default: their newest card)."""
        card = card or self.fake.cards(userid)[-1]
        key = next(b["key"] for b in card["button_list"] if b["text"] == label)
        callback = self.fake.press(userid, key, card["task_id"])
        self.send(callback)
        return callback

    def resident_says(self, content: str) -> None:
        """The resident writes on WeChat."""
        callback = self.wechat.text(RESIDENT, content)
        response = self.client.post(
            "/wechat",
            params=callback.params,
            content=callback.body,
            headers={"Content-Type": "text/xml"},
        )
        assert response.status_code == 200, response.text
        self.desk.work()

    def bind(self, userid: str, role: str, department: str | None = None) -> None:
        """The member binds with an invitation code."""
        self.say(userid, f"绑定 {self.desk.invite(role, department)}")

    def inbox(self) -> list[InboxMessage]:
        with Session(self.runtime.engine) as session:
            return list(session.exec(select(InboxMessage)).all())

    def outbox(self) -> list[OutboxMessage]:
        with Session(self.runtime.engine) as session:
            return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all())  # type: ignore[arg-type]

    def state(self, number: str) -> str:
        return str(self.desk.request(number).state)


@pytest.fixture
def wc(
    runtime: Runtime,
    fake: FakeWeCom,
    wechat_fake: FakeWeChat,
    client: TestClient,
    sender: WeComSender,
) -> WeComDesk:
    """redesk on WeCom and WeChat, one department, nobody bound yet."""
    desk = WeComDesk(runtime, fake, wechat_fake, client)
    desk.desk.add_department("城管执法")
    return desk


# --- pure pieces ----------------------------------------------------------------------------


def test_a_card_press_is_parsed_by_wechatpy_as_a_template_card_event(fake: FakeWeCom) -> None:
    press = fake.press(WORKER, "tok-1", "rd1_0_abc", response_code="code-1")
    message = parse_message(press.xml)
    assert isinstance(message, wecom.TemplateCardEvent)
    assert (message.key, message.task_id, message.response_code) == ("tok-1", "rd1_0_abc", "code-1")


def test_a_card_shows_the_title_the_deadlines_and_the_text() -> None:
    title, pairs, rest = layout(
        "【SQ-1】新诉求 · 路灯\n路灯坏了\n—— 来自：王\n"
        "响应时限：12-03 09:00\u3000办结时限：12-08 18:00"
    )
    assert title == "【SQ-1】新诉求 · 路灯"
    assert pairs == [("响应时限", "12-03 09:00"), ("办结时限", "12-08 18:00")]
    assert rest == "路灯坏了\n—— 来自：王"
    assert fits("【SQ-1】\n短")
    assert not fits("【SQ-1】\n" + "长" * 200)
    assert outbox_of(task_id(42, 1)) == 42
    assert outbox_of("forged") is None


def test_the_settings_switch_wecom_on_only_with_all_five(fake: FakeWeCom) -> None:
    assert wecom_section(fake).enabled
    assert not wecom_section(fake, aes_key=None).enabled
    assert not wecom_section(fake, agent_id=None).enabled
    with pytest.raises(ValueError):
        wecom_section(fake, api_url="ftp://x")
    with pytest.raises(ValueError):
        wecom_section(fake, aes_key="short")
    settings = make_settings(_env_file=None).with_sections(wecom_section(fake))
    assert (
        WeComChannel().describe(settings)
        == f"on, callback /wecom (corp {fake.corp_id}, agent {fake.agent_id})"
    )
    off = make_settings(_env_file=None).with_sections(WeComSettings(_env_file=None))  # type: ignore[call-arg]
    assert WeComChannel().describe(off).startswith("off (set REDESK_WECOM_CORP_ID")


# --- verification and refusals --------------------------------------------------------------


def test_the_url_verification_answers_the_decrypted_echostr_only_when_signed(
    wc: WeComDesk, fake: FakeWeCom
) -> None:
    good = fake.verification("echo-7263")
    response = wc.client.get("/wecom", params=good.params)
    assert (response.status_code, response.text) == (200, "echo-7263")
    for bad in (
        fake.verification("e", bad_signature=True),
        fake.verification("e", stale=True),
        fake.verification("e", receive_id="ww0000000000000000"),
    ):
        refused = wc.client.get("/wecom", params=bad.params)
        assert refused.status_code == 403
        assert "e" != refused.text


@pytest.mark.parametrize("corrupt", ["bad_signature", "stale", "receive_id", "aes_key"])
def test_a_corrupted_callback_is_refused_and_stores_nothing(
    wc: WeComDesk, fake: FakeWeCom, corrupt: str
) -> None:
    choices: dict[str, dict[str, Any]] = {
        "bad_signature": {"bad_signature": True},
        "stale": {"stale": True},
        "receive_id": {"receive_id": "ww0000000000000000"},
        "aes_key": {"aes_key": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"},
    }
    options = choices[corrupt]
    response = wc.post(fake.text(WORKER, "你好", **options))
    assert response.status_code in (400, 403)
    assert wc.inbox() == []


def test_another_corps_message_inside_a_valid_envelope_is_refused(
    wc: WeComDesk, fake: FakeWeCom
) -> None:
    xml = (
        f"<xml><ToUserName><![CDATA[wwother]]></ToUserName><FromUserName>{WORKER}"
        "</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>"
        "<Content>hi</Content><MsgId>5</MsgId></xml>"
    )
    assert wc.post(fake.callback(xml)).status_code == 403
    assert wc.inbox() == []


def test_a_replay_is_stored_once_and_a_reused_nonce_with_another_body_refused(
    wc: WeComDesk, fake: FakeWeCom
) -> None:
    first = fake.text(WORKER, "帮助", nonce="1234567890")
    assert wc.post(first).status_code == 200
    assert wc.post(fake.replay(first)).status_code == 200
    assert len(wc.inbox()) == 1
    other = fake.text(WORKER, "查询", nonce="1234567890", timestamp=first.params["timestamp"])
    assert wc.post(other).status_code == 403
    assert len(wc.inbox()) == 1


@pytest.mark.parametrize("hostile", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_hostile_xml_is_refused_inside_and_outside_the_envelope(
    wc: WeComDesk, fake: FakeWeCom, hostile: str
) -> None:
    inner = fake.callback(hostile.format(corp=fake.corp_id))
    assert wc.post(inner).status_code == 400
    outer = Callback(inner.params, hostile.format(corp=fake.corp_id).encode())
    assert wc.post(outer).status_code == 400
    assert wc.inbox() == []


def test_a_huge_body_is_refused(wc: WeComDesk, fake: FakeWeCom) -> None:
    callback = fake.text(WORKER, "长" * 200_000)
    assert wc.post(callback).status_code == 413
    assert wc.inbox() == []


# --- members, texts, commands ---------------------------------------------------------------


def test_a_member_binds_and_uses_text_commands(wc: WeComDesk, fake: FakeWeCom) -> None:
    wc.bind(WORKER, "worker")
    assert "党务工作者" in fake.texts(WORKER)[-1]
    wc.say(WORKER, "帮助")
    assert "待办" in fake.texts(WORKER)[-1]
    with Session(wc.runtime.engine) as session:
        person = queries.find_person(session=session, channel="wecom", external_id=WORKER)
        assert person is not None and person.role == "worker"


def test_events_other_than_presses_are_stored_as_done(wc: WeComDesk, fake: FakeWeCom) -> None:
    wc.send(fake.event(WORKER, "enter_agent"))
    assert [row.status for row in wc.inbox()] == ["done"]
    assert fake.texts(WORKER) == []


def test_a_members_picture_is_downloaded_with_media_get(
    wc: WeComDesk, fake: FakeWeCom, runtime: Runtime
) -> None:
    # Given a member with no role, who reports something with a picture
    wc.say(STAFF, "单元楼门口井盖缺失，很危险，请尽快处理")
    wc.send(fake.image(STAFF))

    # When the media are fetched
    assert dispatch.fetch_media(runtime) == 1

    # Then the file is stored with the picture's bytes
    with Session(runtime.engine) as session:
        (attachment,) = session.exec(select(Attachment)).all()
    assert attachment.stored_path
    stored = Path(runtime.settings.media_dir) / attachment.stored_path
    assert stored.read_bytes()[:3] == b"\xff\xd8\xff"


def test_production_refuses_a_placeholder_wecom_secret(
    fake: FakeWeCom, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fake.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDESK_WECOM_TOKEN", "changeme")
    production = make_settings(
        _env_file=None, env="production", secret_key="k" * 8 + "Zq3!x9Lm#2vB7&wR"
    )
    with pytest.raises(SettingsError, match="REDESK_WECOM_TOKEN"):
        production.section(WeComSettings)


# --- the whole cycle ------------------------------------------------------------------------


def test_a_request_from_wechat_is_accepted_forwarded_resolved_and_rated_on_wecom(
    wc: WeComDesk, fake: FakeWeCom, wechat_fake: FakeWeChat
) -> None:
    # Given a worker and a department's staff on WeCom
    wc.bind(WORKER, "worker")
    wc.bind(STAFF, "department", "城管执法")

    # When the resident writes on WeChat
    wc.resident_says("小区门口的路灯坏了，晚上很黑")
    number = NUMBER.search(wechat_fake.texts(RESIDENT)[-1]).group(0)  # type: ignore[union-attr]

    # Then the worker gets a button card
    card = fake.cards(WORKER)[-1]
    assert number in card["main_title"]["title"]
    assert [b["text"] for b in card["button_list"]] == ["受理", "转单", "驳回"]
    assert [k["keyname"] for k in card["horizontal_content_list"]] == ["响应时限", "办结时限"]

    # When they press 转单, they get the department picker; pressing the department forwards
    wc.press(WORKER, "转单")
    picker = fake.cards(WORKER)[-1]
    assert picker["task_id"] != card["task_id"]
    assert [b["text"] for b in picker["button_list"]] == ["城管执法"]
    wc.press(WORKER, "城管执法", picker)
    assert wc.state(number) == "forwarded"
    # ... and the first card says who forwarded it
    assert "转单" in (fake.view(card["task_id"], WORKER).replace_name or "")  # type: ignore[union-attr]

    # The staff accepts and resolves with a typed result
    forwarded = fake.cards(STAFF)[-1]
    wc.press(STAFF, "接收", forwarded)
    assert "已接收" in (fake.view(forwarded["task_id"], STAFF).replace_name or "")  # type: ignore[union-attr]
    wc.say(STAFF, f"办结 {number} 已更换灯泡")
    assert wc.state(number) == "review"

    # The worker gets the review card and approves
    review = fake.cards(WORKER)[-1]
    assert [b["text"] for b in review["button_list"]] == ["回单", "返工"]
    wc.press(WORKER, "回单")
    assert wc.state(number) == "replied"

    # The resident rates on WeChat
    wc.resident_says(f"评价 {number} 已解决 满意")
    assert wc.state(number) == "closed"


def test_pressing_accept_updates_the_card_with_who_accepted(wc: WeComDesk, fake: FakeWeCom) -> None:
    wc.bind(WORKER, "worker")
    wc.resident_says("楼道灯不亮了，请派人看看")
    card = fake.cards(WORKER)[-1]
    press = wc.press(WORKER, "受理")
    number = NUMBER.search(card["main_title"]["title"]).group(0)  # type: ignore[union-attr]
    assert wc.state(number) == "handling"
    assert fake.view(card["task_id"], WORKER).replace_name == "已受理 · 李书记"  # type: ignore[union-attr]
    assert fake.response_code_used(press.response_code or "") is True


def test_a_forged_key_resolves_to_nothing_and_changes_nothing(
    wc: WeComDesk, fake: FakeWeCom
) -> None:
    wc.bind(WORKER, "worker")
    wc.resident_says("楼道灯不亮了，请派人看看")
    card = fake.cards(WORKER)[-1]
    number = NUMBER.search(card["main_title"]["title"]).group(0)  # type: ignore[union-attr]
    wc.send(fake.press(WORKER, "受理 " + number, card["task_id"]))
    assert fake.texts(WORKER)[-1] == catalogue("error.stale_button")
    assert wc.state(number) == "new"
    assert fake.updates() == []


def test_someone_elses_button_is_refused_to_the_presser(wc: WeComDesk, fake: FakeWeCom) -> None:
    wc.bind(WORKER, "worker")
    wc.resident_says("楼道灯不亮了，请派人看看")
    card = fake.cards(WORKER)[-1]
    number = NUMBER.search(card["main_title"]["title"]).group(0)  # type: ignore[union-attr]
    key = card["button_list"][0]["key"]
    wc.send(fake.press("intruder", key, card["task_id"]))
    assert fake.texts("intruder")[-1] == catalogue("error.stale_button")
    assert wc.state(number) == "new"


def test_a_press_the_workflow_refuses_changes_nothing_and_says_so_on_the_card(
    wc: WeComDesk, fake: FakeWeCom
) -> None:
    wc.bind(WORKER, "worker")
    wc.bind("wangsj", "worker")
    wc.resident_says("楼道灯不亮了，请派人看看")
    number = NUMBER.search(fake.cards(WORKER)[-1]["main_title"]["title"]).group(0)  # type: ignore[union-attr]
    late = fake.cards(WORKER)[-1]
    wc.say("wangsj", f"受理 {number}")
    accepted_by = wc.desk.request(number).handler_id
    wc.press(WORKER, "受理", late)
    assert wc.desk.request(number).handler_id == accepted_by
    view = fake.view(late["task_id"], WORKER)
    assert view is not None and view.replace_name == catalogue("wecom.refused")


def test_reject_asks_for_the_reason_and_the_typed_reason_updates_the_card(
    wc: WeComDesk, fake: FakeWeCom
) -> None:
    wc.bind(WORKER, "worker")
    wc.resident_says("楼道灯不亮了，请派人看看")
    card = fake.cards(WORKER)[-1]
    number = NUMBER.search(card["main_title"]["title"]).group(0)  # type: ignore[union-attr]
    wc.press(WORKER, "驳回", card)
    assert "请输入驳回原因" in fake.texts(WORKER)[-1]
    assert wc.state(number) == "new"
    assert fake.view(card["task_id"], WORKER).replace_name is None  # type: ignore[union-attr]
    wc.say(WORKER, "不属于本中心受理范围")
    assert wc.state(number) == "rejected"
    assert fake.view(card["task_id"], WORKER).replace_name == "已驳回 · 李书记"  # type: ignore[union-attr]


def test_a_card_gone_stale_is_refreshed_with_the_code_message_send_returned(
    wc: WeComDesk, fake: FakeWeCom
) -> None:
    wc.bind(WORKER, "worker")
    wc.bind("wangsj", "worker")
    wc.resident_says("楼道灯不亮了，请派人看看")
    mine, theirs = fake.cards(WORKER)[-1], fake.cards("wangsj")[-1]
    wc.press(WORKER, "受理", mine)
    view = fake.view(theirs["task_id"], "wangsj")
    assert view is not None and view.updates == 1
    # Only what is still possible for them is left, under the current state
    assert [b["text"] for b in view.template_card["button_list"]] == ["转单"]
    assert "办理中" in view.template_card["sub_title_text"]
    assert fake.view(mine["task_id"], WORKER).replace_name == "已受理 · 李书记"  # type: ignore[union-attr]


# --- sending --------------------------------------------------------------------------------


def _person(runtime: Runtime, userid: str) -> Person:
    with Session(runtime.engine) as session:
        return queries.get_or_create_person(session=session, channel="wecom", external_id=userid)


def _send(
    sender: WeComSender,
    runtime: Runtime,
    userid: str,
    message: Rendered,
    row: OutboxMessage | None = None,
) -> OutboxMessage:
    row = row or OutboxMessage(
        id=1, person_id=1, key="plain", params={}, idempotency_key="t", status=OutboxStatus.PENDING
    )
    with Session(runtime.engine) as session:
        person = _person(runtime, userid)
        sender.send(session, person, message, row)
    return row


def test_the_token_is_fetched_once_and_a_revoked_one_refreshed_once(
    runtime: Runtime, fake: FakeWeCom, sender: WeComSender
) -> None:
    _send(sender, runtime, WORKER, Rendered("一"))
    _send(sender, runtime, WORKER, Rendered("二"))
    assert fake.token_fetches == 1
    fake.revoke_tokens()
    _send(sender, runtime, WORKER, Rendered("三"))
    assert fake.token_fetches == 2
    assert fake.texts(WORKER) == ["一", "二", "三"]


def test_the_token_is_shared_by_processes_through_redis(
    fake: FakeWeCom, redis_url: str, db_url: str
) -> None:
    # Given two processes' clients on one Redis
    made = [
        make_settings(database_url=db_url, redis_url=redis_url, _env_file=None).with_sections(
            wecom_section(fake)
        )
        for _ in range(2)
    ]
    first, second = (wecom.WeComClient(settings) for settings in made)
    try:
        # When both call the API
        first.call("GET", "user/get", params={"userid": WORKER})
        second.call("GET", "user/get", params={"userid": WORKER})
        # Then one token was fetched; a revoked one is refreshed once for both
        assert fake.token_fetches == 1
        fake.revoke_tokens()
        first.call("GET", "user/get", params={"userid": WORKER})
        second.call("GET", "user/get", params={"userid": WORKER})
        assert fake.token_fetches == 2
    finally:
        first.close()
        second.close()


def test_a_5xx_is_transient_and_the_retry_sends_once(
    runtime: Runtime, fake: FakeWeCom, sender: WeComSender
) -> None:
    long = "\n".join(["第一段" * 200, "第二段" * 200])
    fake.member(WORKER)
    _send(sender, runtime, WORKER, Rendered("预热"))
    fake.fail_next(1, status=502)
    row = OutboxMessage(
        id=1, person_id=1, key="plain", params={}, idempotency_key="t", status=OutboxStatus.PENDING
    )
    with pytest.raises(TransientSendError):
        _send(sender, runtime, WORKER, Rendered(long), row)
    assert row.params["_parts_sent"] == 0
    _send(sender, runtime, WORKER, Rendered(long), row)
    texts = fake.texts(WORKER)[1:]
    assert texts == ["第一段" * 200, "第二段" * 200]


def test_a_part_that_failed_after_another_went_resumes_without_resending(
    runtime: Runtime, fake: FakeWeCom, sender: WeComSender
) -> None:
    long = "\n".join(["第一段" * 200, "第二段" * 200])
    _send(sender, runtime, WORKER, Rendered("预热"))
    row = OutboxMessage(
        id=1, person_id=1, key="plain", params={}, idempotency_key="t", status=OutboxStatus.PENDING
    )
    fake.fail_next(1, network=True)
    row.params = {"_parts_sent": 1}
    with pytest.raises(TransientSendError):
        _send(sender, runtime, WORKER, Rendered(long), row)
    _send(sender, runtime, WORKER, Rendered(long), row)
    assert fake.texts(WORKER)[1:] == ["第二段" * 200]


def test_texts_over_2048_bytes_are_split_and_never_truncated(
    runtime: Runtime, fake: FakeWeCom, sender: WeComSender
) -> None:
    message = "诉" * 2000
    _send(sender, runtime, WORKER, Rendered(message))
    parts = fake.texts(WORKER)
    assert len(parts) == 3
    assert all(len(part.encode()) <= 2048 for part in parts)
    assert "".join(parts) == message
    assert not any(d.truncated for d in fake.deliveries(WORKER))


def test_a_stranger_is_unreachable(runtime: Runtime, fake: FakeWeCom, sender: WeComSender) -> None:
    with pytest.raises(Unreachable):
        _send(sender, runtime, "nobody", Rendered("你好"))


def test_every_message_books_the_members_slot_of_30_a_minute(
    runtime: Runtime, fake: FakeWeCom, settings: Settings
) -> None:
    booked: list[list[tuple[str, float]]] = []

    class Recording(QuickLimiter):
        def reserve(self, slots: Any) -> float:
            booked.append(list(slots))
            return 0.0

    made = WeComSender(settings, limiter=Recording())
    _send(made, runtime, WORKER, Rendered("诉" * 1000))
    assert len(booked) == 2
    assert all(slots == wecom.member_slots(WORKER) for slots in booked)
    ((key, interval),) = wecom.member_slots(WORKER)
    assert key.endswith(WORKER) and interval * 30 >= 60


def test_45009_is_transient_with_a_wait(
    runtime: Runtime, fake: FakeWeCom, sender: WeComSender
) -> None:
    fake.limit_members(1)
    _send(sender, runtime, WORKER, Rendered("一"))
    with pytest.raises(TransientSendError) as raised:
        _send(sender, runtime, WORKER, Rendered("二"))
    assert raised.value.retry_after == 60.0
    assert fake.texts(WORKER) == ["一"]


def test_a_card_has_at_most_six_buttons_a_picker_more_cards(
    runtime: Runtime, fake: FakeWeCom, sender: WeComSender
) -> None:
    from bot.texts import Button

    buttons = [Button(f"部门{i}", f"转单 SQ-1 部门{i}") for i in range(8)]
    _send(sender, runtime, WORKER, Rendered("【SQ-1】请选择部门", buttons))
    sent = fake.cards(WORKER)
    assert [len(card["button_list"]) for card in sent] == [MAX_BUTTONS, 2]


# --- start ------------------------------------------------------------------------------------


def test_start_refuses_a_wrong_secret_with_one_line(fake: FakeWeCom, db_url: str) -> None:
    settings = make_settings(database_url=db_url, _env_file=None).with_sections(
        wecom_section(fake, secret="x" * 43)
    )
    runtime = Runtime(settings=settings, engine=None)  # type: ignore[arg-type]
    with pytest.raises(ChannelError, match="REDESK_WECOM_SECRET"):
        WeComChannel().start(runtime, lambda line: None, lambda channel, chat: None)
    lines: list[str] = []
    good = make_settings(database_url=db_url, _env_file=None).with_sections(wecom_section(fake))
    WeComChannel().start(
        Runtime(settings=good, engine=None),
        lines.append,  # type: ignore[arg-type]
        lambda channel, chat: None,
    )
    assert lines == [
        f"channel wecom: on, callback /wecom (corp {fake.corp_id}, agent {fake.agent_id})"
    ]
