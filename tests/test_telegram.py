"""The Telegram channel in-process, against the fake Bot API, on SQLite and PostgreSQL: the
whole cycle in chats and the committee group, buttons, the webhook, media, sending within
Telegram's limits, ordering, polling and the token check."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import update
from sqlmodel import Session, select
from telegram import Update

from bot import dispatch
from bot.app import create_app
from bot.channels import telegram
from bot.channels.base import TransientSendError
from bot.channels.telegram import Poller, TelegramSender
from bot.runtime import Runtime
from bot.texts import render
from bot.texts import text as catalogue
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import (
    Attachment,
    BindFailure,
    ButtonToken,
    Invitation,
    OutboxMessage,
    OutboxStatus,
    Person,
    utcnow,
)
from storage.settings import Settings
from tests.fakes.telegram import FakeTelegram
from tests.utils.app import TestClient
from tests.utils.network import add_network
from tests.utils.settings import make_settings
from tests.utils.telegram import (
    GROUP,
    SECRET,
    QuickLimiter,
    TelegramDesk,
    labels,
    number_in,
    text_of,
)
from workflow import invitations

#: The six rating buttons under a result.
RATINGS = [
    "已解决 · 满意",
    "已解决 · 基本满意",
    "已解决 · 不满意",
    "未解决 · 满意",
    "未解决 · 基本满意",
    "未解决 · 不满意",
]

STALE = catalogue("error.stale_button")
PRESSED = catalogue("tg.pressed")

_keys = itertools.count(1)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # RetryAfter warns without it, and filterwarnings=error would turn a 429 into that warning.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    """The fake Bot API with its limits on, but far looser than the QuickLimiter's spacing."""
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
def settings(db_url: str, fake: FakeTelegram, tmp_path: Path) -> Settings:
    """Settings for the database under test with Telegram on, pointing at the fake."""
    return make_settings(
        database_url=db_url,
        redis_url=None,
        telegram_token=fake.token,
        telegram_api_url=fake.url,
        telegram_webhook_secret=SECRET,
        telegram_committee_chat=str(GROUP),
        media_dir=tmp_path / "media",
        _env_file=None,
    )


@pytest.fixture
def quick_sender(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> TelegramSender:
    """The Telegram sender on a limiter forty times faster than Telegram's limits."""
    sender = TelegramSender(settings, limiter=QuickLimiter())
    monkeypatch.setitem(dispatch.SENDERS, telegram.CHANNEL, sender)
    return sender


@pytest.fixture
def tg(runtime: Runtime, fake: FakeTelegram, quick_sender: TelegramSender) -> TelegramDesk:
    """redesk on Telegram: two departments, the committee group, nobody bound yet."""
    desk = TelegramDesk(runtime, fake)
    desk.desk.add_department("城管执法")
    desk.desk.add_department("市场监管")
    fake.group(GROUP, "党群服务中心工作群")
    with session_scope(runtime.engine) as session:
        telegram.ensure_committee_chat(session, str(GROUP))
    return desk


def webhook(client: TestClient, body: Any, secret: str | None = SECRET, **kwargs: Any) -> Any:
    """POSTs to /telegram/webhook the way Telegram does (JSON unless `content` is given)."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    if "content" in kwargs:
        return client.post("/telegram/webhook", headers=headers, **kwargs)
    return client.post("/telegram/webhook", headers=headers, json=body)


def enqueued(broker: dramatiq.Broker) -> int:
    """How many handle_inbound jobs wait in the in-process queue."""
    return int(broker.queues["inbound"].qsize())


def queue_message(runtime: Runtime, chat: int, key: str, **params: Any) -> int:
    """An outbox row for a Telegram chat, as the workflow writes them; its id."""
    with session_scope(runtime.engine) as session:
        person = queries.get_or_create_person(
            session=session, channel=telegram.CHANNEL, external_id=str(chat)
        )
        assert person.id is not None
        row = queries.add_outbox(
            session=session,
            idempotency_key=f"test:{next(_keys)}",
            person_id=person.id,
            key=key,
            params=params,
            request_id=None,
            at=utcnow(),
        )
        session.flush()
        assert row.id is not None
        return row.id


def outbox_row(runtime: Runtime, outbox_id: int) -> OutboxMessage:
    with Session(runtime.engine) as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        return row


def make_due(runtime: Runtime, outbox_id: int) -> None:
    """The row's retry time has come (instead of waiting for it)."""
    with session_scope(runtime.engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == outbox_id)  # type: ignore[arg-type]
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


# --- the whole cycle ------------------------------------------------------------------------


def test_a_request_goes_from_a_private_chat_through_the_group_and_a_department_to_closed(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a bound worker, bound 城管执法 staff and a resident
    worker = tg.worker(200, "王书记")
    staff = tg.staff(300, "城管执法", "李科长")
    resident = fake.user(100, "张三")
    presses: list[dict[str, Any]] = []

    # When the resident writes to the bot in a private chat
    tg.say(resident, "小区门口的路灯坏了，晚上很黑")

    # Then the resident gets a receipt, and the card goes to the group and to the worker
    receipt = tg.last(100)
    number = number_in(receipt)
    assert "已受理登记" in text_of(receipt)
    group_card = tg.last(GROUP, "新诉求")
    assert number in text_of(group_card) and "小区门口的路灯坏了" in text_of(group_card)
    assert labels(group_card) == ["受理", "转单", "驳回"]
    assert labels(tg.last(200, "新诉求")) == ["受理", "转单", "驳回"]

    # When the worker presses 转单 in the group
    presses.append(tg.press(worker, group_card, "转单"))

    # Then the worker is offered the departments, and nothing has moved yet
    picker = tg.last(200, "请选择转交的部门")
    assert labels(picker) == ["城管执法", "市场监管"]
    assert tg.request(number).state == "new"
    assert fake.edits() == []

    # When the worker picks 城管执法
    presses.append(tg.press(worker, picker, "城管执法"))

    # Then it is forwarded; the picker and the group's card show who acted and the new state,
    # without their buttons
    assert tg.request(number).state == "forwarded"
    acted = "王书记 已转单（当前状态：已转单，待部门接收）"
    for message in (picker, group_card):
        edited = tg.edit_of(message)
        assert acted in edited["text"]
        assert "reply_markup" not in edited
    assert "已转交「城管执法」办理" in tg.texts(100)[-1]

    # When the staff member presses 接收 on the card they got
    card = tg.last(300, "转单")
    assert "王书记转交「城管执法」" in text_of(card)
    assert labels(card) == ["接收", "退单", "办结"]
    presses.append(tg.press(staff, card, "接收"))

    # Then the department handles it; the card says so
    assert tg.request(number).state == "dept_handling"
    assert "李科长 已接收（当前状态：部门办理中）" in tg.edit_of(card)["text"]
    assert "「城管执法」已接收" in tg.texts(100)[-1]

    # When they press 办结, the dialogue asks for the result, and the next text completes it
    taken = tg.last(300, "已接收")
    assert labels(taken) == ["办结", "退单"]
    edits_before = len(fake.edits())
    presses.append(tg.press(staff, taken, "办结"))
    assert "请输入办理结果" in tg.texts(300)[-1]
    assert len(fake.edits()) == edits_before
    tg.say(staff, "已更换灯泡，恢复照明")

    # Then the result waits for review in the group, and the pressed card says it is done
    assert tg.request(number).state == "review"
    assert "李科长 已办结（当前状态：待审核回单）" in tg.edit_of(taken)["text"]
    review = tg.last(GROUP, "待审核回单")
    assert "已更换灯泡，恢复照明" in text_of(review)
    assert labels(review) == ["回单", "返工"]

    # When the worker presses 回单 on the review card in the group
    presses.append(tg.press(worker, review, "回单"))

    # Then the resident gets the result with the rating buttons; the review card shows it
    assert tg.request(number).state == "replied"
    assert "王书记 已回单（当前状态：已回单，待评价）" in tg.edit_of(review)["text"]
    result = tg.last(100, "办理结果如下")
    assert "已更换灯泡，恢复照明" in text_of(result)
    assert labels(result) == RATINGS

    # When the resident presses 已解决 · 满意
    presses.append(tg.press(resident, result, "已解决 · 满意"))

    # Then the request is closed
    closed = tg.request(number)
    assert (closed.state, closed.solved, closed.satisfaction) == ("closed", True, "满意")
    assert "感谢您的评价（已解决 满意）" in tg.texts(100)[-1]
    assert "张三 已评价（当前状态：已办结）" in tg.edit_of(result)["text"]
    assert [e.action for e in tg.events(number) if e.outcome == "ok"] == [
        "submit",
        "forward",
        "take",
        "complete",
        "approve",
        "rate",
    ]
    # And every press was answered once, quietly; the six pressed cards were edited along the
    # way, and so were the worker's private copies of the new and the review card, which
    # offered what was done in the group: marked done, without buttons
    answers = tg.answers()
    assert [a["callback_query_id"] for a in answers] == [p["callback_query"]["id"] for p in presses]
    assert all(a["show_alert"] is False and a["text"] == PRESSED for a in answers)
    assert len(fake.edits()) == 8
    private = [
        edit.result
        for edit in fake.edits(200)
        if edit.result["message_id"] != picker.result["message_id"]
    ]
    assert [edit["text"].rsplit("\n", 1)[-1] for edit in private] == [
        "—— 已处理（当前状态：已转单，待部门接收）",
        "—— 已处理（当前状态：已回单，待评价）",
    ]
    assert all("reply_markup" not in edit for edit in private)


def test_department_staff_press_banjie_on_a_forwarded_card_without_pressing_jieshou(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a request forwarded to 城管执法 by text command
    worker = tg.worker(200, "王书记")
    staff = tg.staff(300, "城管执法", "李科长")
    tg.say(fake.user(100, "张三"), "小区门口的路灯坏了")
    number = number_in(tg.last(100))
    tg.say(worker, f"转单 {number} 城管执法")
    card = tg.last(300, "转单")

    # When the staff member presses 办结 on the card and types the result
    tg.press(staff, card, "办结")
    assert "请输入办理结果" in tg.texts(300)[-1]
    tg.say(staff, "已更换灯泡")

    # Then the request was taken and completed; the card says so; the group gets the review
    assert tg.request(number).state == "review"
    assert [e.action for e in tg.events(number) if e.outcome == "ok"] == [
        "submit",
        "forward",
        "take",
        "complete",
    ]
    assert "李科长 已办结（当前状态：待审核回单）" in tg.edit_of(card)["text"]
    assert "已更换灯泡" in text_of(tg.last(GROUP, "待审核回单"))
    assert "「城管执法」已接收" in tg.texts(100)[-1]


def test_a_request_handled_by_the_committee_itself_closes_from_the_group_and_private_chats(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a worker and a resident's request
    worker = tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.say(resident, "想咨询流动党员组织关系转接")
    number = number_in(tg.last(100))

    # When the worker presses 受理 in the group, then 办结 on their own reply and writes
    group_card = tg.last(GROUP, "新诉求")
    tg.press(worker, group_card, "受理")
    accepted = tg.last(200, "已受理（做单）")
    assert labels(accepted) == ["办结", "转单"]
    tg.press(worker, accepted, "办结")
    tg.say(worker, "已电话告知办理流程")
    # And approves the result from the review card in the private chat
    tg.press(worker, tg.last(200, "待审核回单"), "回单")
    tg.press(resident, tg.last(100, "办理结果如下"), "已解决 · 基本满意")

    # Then it went through every step and the group saw who acted
    assert tg.request(number).state == "closed"
    assert [e.action for e in tg.events(number) if e.outcome == "ok"] == [
        "submit",
        "accept",
        "complete",
        "approve",
        "rate",
    ]
    assert "王书记 已受理（当前状态：办理中（党委做单））" in tg.edit_of(group_card)["text"]
    assert all(not a["show_alert"] for a in tg.answers())


# --- buttons --------------------------------------------------------------------------------


def test_buttons_carry_short_random_tokens_instead_of_their_actions(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given cards in the group and to two workers
    tg.worker(200, "王书记")
    tg.worker(201, "赵干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    number = number_in(tg.last(100))

    # When every button sent so far is looked at
    buttons = [pair for call in fake.sent() for pair in FakeTelegram.buttons(call)]

    # Then each payload is at most 64 bytes, says nothing of its action and is never reused
    assert len(buttons) == 1 + 3 * 3  # 查询进度 + the card's three in the group and two chats
    tokens = [data or "" for _, data in buttons]
    assert all(0 < len(token.encode()) <= 64 for token in tokens)
    assert len(set(tokens)) == len(tokens)
    assert not any(
        number in token or label in token for (label, _), token in zip(buttons, tokens, strict=True)
    )
    # And the server knows what each stands for
    with Session(runtime.engine) as session:
        stored = {row.token: row.action for row in session.exec(select(ButtonToken)).all()}
    assert {stored[token] for token in tokens} == {
        f"查询 {number}",
        f"受理 {number}",
        f"转单 {number}",
        f"驳回 {number}",
    }


def test_the_receipts_button_answers_with_the_status_and_edits_nothing(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given the resident's receipt, whose only button is 查询进度
    resident = fake.user(100, "张三")
    tg.say(resident, "路灯坏了")
    receipt = tg.last(100)
    number = number_in(receipt)

    # When the resident presses it
    press = tg.press(resident, receipt, "查询进度")

    # Then the status comes back, the press is answered, and no card is edited
    assert tg.texts(100)[-1].startswith(f"【{number}】待受理")
    assert tg.answer_to(press)["show_alert"] is False
    assert fake.edits() == []


@pytest.mark.parametrize(
    "payload",
    ["forged-payload-0", "受理 {number}", "x" * 64],
    ids=["random", "the-action-itself", "64-bytes"],
)
def test_a_forged_payload_is_answered_with_an_alert_and_changes_nothing(
    tg: TelegramDesk, fake: FakeTelegram, payload: str
) -> None:
    # Given a new request whose card is in the group
    worker = tg.worker(200, "王书记")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    card = tg.last(GROUP, "新诉求")
    number = number_in(card)
    before = tg.footprint()
    last_row = tg.last_outbox_id()

    # When a worker's client sends a callback with a payload redesk never issued
    press = fake.callback_update(worker, payload.format(number=number), card)
    tg.feed(press)

    # Then it is answered with an alert, and nothing else happens
    assert tg.answer_to(press)["show_alert"] is True
    assert tg.answer_to(press)["text"] == STALE
    assert tg.footprint() == before
    assert tg.request(number).state == "new"
    assert [row.key for row in tg.outbox(after=last_row)] == ["tg.callback"]


def test_a_resident_pressing_a_workers_button_in_the_group_is_refused_and_recorded(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a request whose card is in the group, and a resident who is in the group too
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.say(resident, "路灯坏了")
    card = tg.last(GROUP, "新诉求")
    number = number_in(card)
    before = tg.footprint()
    last_row = tg.last_outbox_id()

    # When the resident presses 受理 under the group's card
    press = tg.press(resident, card, "受理")

    # Then the press is refused with an alert, recorded, and nothing changes
    answer = tg.answer_to(press)
    assert answer["show_alert"] is True
    assert answer["text"] == catalogue("error.not_permitted", action_label="受理")
    refused = [e for e in tg.events(number) if e.outcome == "refused"]
    assert [(e.action, e.actor_id) for e in refused] == [("accept", tg.person(100).id)]
    assert tg.footprint() == before
    assert [row.key for row in tg.outbox(after=last_row)] == ["tg.callback"]


def test_a_button_sent_to_one_person_and_pressed_by_another_is_stale(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given two workers, each with the new request's card in their private chat
    tg.worker(200, "王书记")
    other = tg.worker(201, "赵干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    card_of_first = tg.last(200, "新诉求")
    before = tg.footprint()

    # When the second worker's client presses the first worker's button
    press = tg.press(other, card_of_first, "受理")

    # Then it is answered as a stale button, although they could 受理 with their own
    assert tg.answer_to(press) == {
        "callback_query_id": press["callback_query"]["id"],
        "text": STALE,
        "show_alert": True,
    }
    assert tg.footprint() == before


def test_a_press_on_a_card_someone_else_already_acted_on_is_answered_with_the_reason(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given two workers, and the first has already accepted the request from the group
    first = tg.worker(200, "王书记")
    second = tg.worker(201, "赵干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    number = number_in(tg.last(100))
    tg.press(first, tg.last(GROUP, "新诉求"), "受理")
    before = tg.footprint()

    # When the second presses 受理 on the card in their private chat
    press = tg.press(second, tg.last(201, "新诉求"), "受理")

    # Then the alert says why, and the request stays with the first
    assert tg.answer_to(press)["show_alert"] is True
    assert tg.answer_to(press)["text"] == catalogue(
        "error.transition", number=number, state_label="办理中（党委做单）", action_label="受理"
    )
    assert tg.footprint() == before
    assert tg.request(number).handler_id == tg.person(200).id


def test_text_commands_keep_working_in_private_chats_and_in_the_group(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a worker and two new requests
    worker = tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.say(resident, "路灯坏了")
    tg.say(resident, "井盖丢了")
    first, second = (request.number for request in tg.requests())

    # When the worker types 受理 in the private chat, and /accept@bot in the group
    tg.say(worker, f"受理 {first}")
    tg.feed(fake.command_update(worker, "accept", second, chat=fake.group(GROUP), mention=True))

    # Then both are accepted, and the answers come to the worker's private chat
    assert [tg.request(n).state for n in (first, second)] == ["handling", "handling"]
    assert [number_in(call) for call in tg.messages(200) if "已受理（做单）" in text_of(call)] == [
        first,
        second,
    ]
    assert not any("已受理（做单）" in text for text in tg.texts(GROUP))


# --- the same update three times ------------------------------------------------------------


def test_the_same_update_stored_three_times_makes_one_request_and_one_receipt(
    tg: TelegramDesk, fake: FakeTelegram, client: TestClient, stub_broker: dramatiq.Broker
) -> None:
    # Given one message from a resident
    message = fake.text_update(fake.user(100, "张三"), "路灯坏了")

    # When Telegram delivers it through the webhook, the poller stores it, and the webhook again
    first = webhook(client, message)
    again = tg.store(message)
    third = webhook(client, message)
    tg.work()

    # Then it is one inbox row and one job, and one request answered once
    assert first.status_code == third.status_code == 200
    assert again == ("100", False)
    assert len(tg.inbox()) == 1
    assert enqueued(stub_broker) == 1
    assert len(tg.requests()) == 1
    assert len(fake.sent(100)) == 1


# --- the webhook ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [None, "", "wrong-secret", SECRET + "x", SECRET.upper()],
    ids=["missing", "empty", "wrong", "longer", "other-case"],
)
def test_a_wrong_or_missing_secret_answers_403_and_stores_nothing(
    tg: TelegramDesk,
    fake: FakeTelegram,
    client: TestClient,
    stub_broker: dramatiq.Broker,
    secret: str | None,
) -> None:
    response = webhook(client, fake.text_update(fake.user(100), "路灯坏了"), secret=secret)

    assert response.status_code == 403
    assert tg.inbox() == []
    assert enqueued(stub_broker) == 0


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00", b"", b"[1, 2"],
    ids=["broken", "not-utf8", "empty", "unfinished"],
)
def test_a_body_that_is_not_json_answers_400(
    tg: TelegramDesk, client: TestClient, body: bytes
) -> None:
    response = webhook(client, None, content=body)

    assert response.status_code == 400
    assert tg.inbox() == []


@pytest.mark.parametrize(
    "body",
    [
        [],
        [{"update_id": 1}],
        {},
        {"message": {"text": "hi"}},
        {"update_id": "700000001"},
        {"update_id": True},
        {"update_id": 1.5},
        {"update_id": -1},
        {"update_id": 2**63},
        None,
        "update",
        42,
    ],
    ids=[
        "array",
        "array-of-update",
        "empty-object",
        "no-update-id",
        "update-id-string",
        "update-id-bool",
        "update-id-float",
        "update-id-negative",
        "update-id-too-big",
        "null",
        "string",
        "number",
    ],
)
def test_json_that_is_not_an_update_answers_400_and_stores_nothing(
    tg: TelegramDesk, client: TestClient, stub_broker: dramatiq.Broker, body: Any
) -> None:
    response = webhook(client, None, content=json.dumps(body).encode())

    assert response.status_code == 400
    assert tg.inbox() == []
    assert enqueued(stub_broker) == 0


# --- entering a centre by a deep link (t.me/<bot>?start=CODE) --------------------------------


def test_a_deep_link_through_the_webhook_makes_the_resident_one_of_that_centre(
    tg: TelegramDesk, fake: FakeTelegram, client: TestClient, runtime: Runtime
) -> None:
    # Given a network of centres
    network = add_network(runtime.engine)
    resident = fake.user(100, "张三")

    # When a resident opens 春熙路's deep link (Telegram sends "/start chunxi")
    assert webhook(client, fake.command_update(resident, "start", "chunxi")).status_code == 200
    tg.work()

    # Then they are welcomed to that centre, get the help, and belong to it
    welcome, help_text = tg.texts(100)
    assert welcome == catalogue("centre.entered", centre="春熙路商圈党群服务中心")
    assert "切换" in help_text and "查询" in help_text
    assert tg.person(100).centre_id == network.chunxi

    # And their request is filed there with no question
    tg.say(resident, "小区门口的路灯坏了")
    assert "已受理登记" in tg.texts(100)[-1]
    assert [r.centre_id for r in tg.requests()] == [network.chunxi]


def test_a_plain_start_is_the_help_and_the_choice_comes_with_the_first_request(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a network of centres and a resident who opened the bot with no link
    network = add_network(runtime.engine)
    resident = fake.user(100, "张三")
    tg.feed(fake.command_update(resident, "start"))
    [help_text] = tg.texts(100)
    assert help_text.startswith("您好，这里是党群服务中心诉求受理平台")

    # When they send a photo with a caption
    tg.feed(fake.photo_update(resident, caption="井盖丢了，很危险", file_ids=["p1", "p2", "p3"]))

    # Then it is kept and they choose with buttons: the district, then one of its centres
    question = tg.last(100)
    assert labels(question) == ["党群服务中心", "锦江区党群服务中心"]
    assert tg.requests() == []
    tg.press(resident, question, "锦江区党群服务中心")
    children = tg.last(100)
    assert labels(children) == [
        "春熙路商圈党群服务中心",
        "书院街社区党群服务中心",
        "合江亭社区党群服务中心",
        "就选这里",
    ]
    tg.press(resident, children, "书院街社区党群服务中心")

    # Then the request is filed there once, with its photo
    [request] = tg.requests()
    assert (request.text, request.centre_id) == ("井盖丢了，很危险", network.shuyuan)
    assert [a.file_id for a in tg.attachments(request.number)] == ["p3"]
    assert "已受理登记" in tg.texts(100)[-1]


@pytest.mark.parametrize("payload", ["nowhere", "x' OR '1'='1", "A" * 64])
def test_a_deep_link_of_no_centre_is_answered_with_the_choice(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime, payload: str
) -> None:
    add_network(runtime.engine)
    resident = fake.user(100, "张三")

    tg.feed(fake.command_update(resident, "start", payload))

    [answer] = tg.texts(100)
    assert answer.startswith("没有找到「")
    assert "2. 锦江区党群服务中心" in answer
    assert tg.person(100).centre_id is None


def test_on_a_single_centre_install_a_deep_link_of_no_centre_is_a_plain_start(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # When one resident starts the bot plainly and another by a link of no centre
    tg.feed(fake.command_update(fake.user(100, "张三"), "start"))
    tg.feed(fake.command_update(fake.user(101, "李四"), "start", "nowhere"))

    # Then both get exactly the same help
    assert tg.texts(100) == tg.texts(101)
    assert len(tg.texts(100)) == 1


# --- updates python-telegram-bot cannot model -----------------------------------------------


def photo_without_unique_ids(fake: FakeTelegram, user: dict[str, Any]) -> dict[str, Any]:
    """A real photo update whose PhotoSizes lack file_unique_id, which the installed
    python-telegram-bot requires (Telegram and the library drifting apart)."""
    update = fake.photo_update(user, caption="井盖丢了")
    for size in update["message"]["photo"]:
        del size["file_unique_id"]
    return update


def text_without_date(fake: FakeTelegram, user: dict[str, Any]) -> dict[str, Any]:
    """A real text update whose message lacks `date`, a field the library requires."""
    update = fake.text_update(user, "路灯坏了")
    del update["message"]["date"]
    return update


def callback_without_chat_instance(fake: FakeTelegram, user: dict[str, Any]) -> dict[str, Any]:
    """A real button press without chat_instance, which the library requires."""
    card = {
        "message_id": 7,
        "date": 1700000000,
        "chat": fake.private_chat(user),
        "from": dict(fake.bot_user),
        "text": "卡片",
    }
    update = fake.callback_update(user, "t0k3n", card)
    del update["callback_query"]["chat_instance"]
    return update


def test_the_installed_library_really_refuses_the_samples(fake: FakeTelegram) -> None:
    # Given the real-format samples the tests below use as unparseable updates
    user = fake.user(100, "张三")
    samples = [
        photo_without_unique_ids(fake, user),
        text_without_date(fake, user),
        callback_without_chat_instance(fake, user),
    ]

    # When python-telegram-bot parses them, Then each is refused, and the chat is still known
    for sample in samples:
        with pytest.raises((TypeError, KeyError)):
            Update.de_json(sample, None)
        classified = telegram.classify(sample)
        assert classified.chat == "100"
        assert classified.error


def test_an_update_kind_or_field_the_library_does_not_know_is_no_parse_failure(
    fake: FakeTelegram,
) -> None:
    # Given a real text update with a field, and an update of a kind, newer than the library
    user = fake.user(100, "张三")
    newer_field = fake.text_update(user, "路灯坏了")
    newer_field["message"]["future_field"] = {"x": 1}
    newer_kind = {"update_id": newer_field["update_id"] + 1, "future_kind": {"x": 1}}

    # When they are classified, Then both parse (the library keeps them in api_kwargs)
    assert telegram.classify(newer_field) == (str(newer_field["update_id"]), "100", None)
    assert telegram.classify(newer_kind) == (str(newer_kind["update_id"]), None, None)


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ("photo", "file_unique_id"),
        ("no-date", "date"),
        ("callback", "chat_instance"),
        ("message-string", ""),
        ("message-incomplete", ""),
        ("callback-incomplete", ""),
        ("sender-id-string", "from.id"),
    ],
)
def test_an_update_the_library_cannot_model_is_answered_200_and_kept_as_failed_with_the_reason(
    tg: TelegramDesk,
    fake: FakeTelegram,
    client: TestClient,
    stub_broker: dramatiq.Broker,
    caplog: pytest.LogCaptureFixture,
    sample: str,
    reason: str,
) -> None:
    # Given an update that is a JSON object with an integer update_id, which the library
    # cannot model
    user = fake.user(100, "张三")
    bodies = {
        "photo": lambda: photo_without_unique_ids(fake, user),
        "no-date": lambda: text_without_date(fake, user),
        "callback": lambda: callback_without_chat_instance(fake, user),
        "message-string": lambda: {"update_id": 1, "message": "hi"},
        "message-incomplete": lambda: {"update_id": 1, "message": {"text": "hi"}},
        "callback-incomplete": lambda: {"update_id": 1, "callback_query": {"id": "1"}},
        "sender-id-string": lambda: {
            **fake.text_update(user, "路灯坏了"),
            "message": {
                **fake.text_update(user, "路灯坏了")["message"],
                "from": {**user, "id": "abc"},
            },
        },
    }
    body = bodies[sample]()

    # When Telegram posts it
    response = webhook(client, body)

    # Then it is acknowledged (Telegram will not retry and drop it) and kept as failed, raw,
    # with the parser's reason, logged; nothing is handled or enqueued
    assert response.status_code == 200
    [row] = tg.inbox()
    assert (row.natural_key, row.status, row.payload) == (str(body["update_id"]), "failed", body)
    assert row.error and reason in row.error
    assert row.chat_id == ("100" if sample in ("photo", "no-date", "callback") else "-")
    assert f"Telegram update {body['update_id']} cannot be parsed" in caplog.text
    assert enqueued(stub_broker) == 0
    tg.work()
    assert tg.requests() == []
    assert fake.sent() == []

    # And /metrics counts it
    metrics_text = client.get("/metrics").text
    assert 'redesk_inbox_failed{channel="telegram"} 1.0' in metrics_text
    assert 'redesk_inbound_messages_total{channel="telegram",outcome="unparseable"}' in metrics_text


def test_an_unparseable_update_between_two_good_ones_over_the_webhook_blocks_nothing(
    tg: TelegramDesk,
    fake: FakeTelegram,
    client: TestClient,
    stub_broker: dramatiq.Broker,
) -> None:
    # Given a resident whose second update of three cannot be parsed by the library
    resident = fake.user(100, "张三")
    updates = [
        fake.text_update(resident, "路灯坏了"),
        photo_without_unique_ids(fake, resident),
        fake.text_update(resident, "帮助"),
    ]

    # When Telegram posts them one after the other and the workers run
    answers = [webhook(client, update).status_code for update in updates]
    tg.work()

    # Then every one is acknowledged, the bad one kept as failed, and both good ones answered
    assert answers == [200, 200, 200]
    assert [row.status for row in tg.inbox()] == ["done", "failed", "done"]
    texts = tg.texts(100)
    assert len(texts) == 2
    assert number_in(tg.messages(100)[0])
    assert texts[1] == render("help", {"role": "requester"}).text
    assert len(tg.requests()) == 1


def test_a_pending_row_that_does_not_parse_is_kept_as_failed_and_the_chat_goes_on(
    tg: TelegramDesk,
    fake: FakeTelegram,
    runtime: Runtime,
) -> None:
    # Given a chat whose oldest pending row cannot be parsed (e.g. one put back by `redesk
    # inbox retry` while the library still refuses it) and a good one after it
    resident = fake.user(100, "张三")
    bad = photo_without_unique_ids(fake, resident)
    with session_scope(runtime.engine) as session:
        queries.add_inbox(
            session=session,
            channel=telegram.CHANNEL,
            natural_key=str(bad["update_id"]),
            chat_id="100",
            payload=bad,
        )
    tg.store(fake.text_update(resident, "帮助"))

    # When the chat is handled
    dispatch.process_chat(runtime, telegram.CHANNEL, "100")
    tg.work()

    # Then the bad row is failed at once with the parser's reason, and the next is answered
    rows = tg.inbox()
    assert [row.status for row in rows] == ["failed", "done"]
    assert rows[0].attempts == 1
    assert rows[0].error and "file_unique_id" in rows[0].error
    assert tg.texts(100) == [render("help", {"role": "requester"}).text]


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_body_over_1_mb_answers_413_and_stores_nothing(
    tg: TelegramDesk, fake: FakeTelegram, client: TestClient, chunked: bool
) -> None:
    # Given an otherwise valid update padded past 1 MB
    update = fake.text_update(fake.user(100), "路灯坏了")
    body = json.dumps({**update, "padding": "a" * telegram.WEBHOOK_BODY_LIMIT}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = webhook(client, None, content=chunks() if chunked else body)

    assert response.status_code == 413
    assert tg.inbox() == []


def test_an_update_just_under_1_mb_is_accepted(
    tg: TelegramDesk, fake: FakeTelegram, client: TestClient
) -> None:
    update = fake.text_update(fake.user(100), "路灯坏了")
    raw = json.dumps(update)
    body = raw[:-1] + ', "padding": "' + "a" * (telegram.WEBHOOK_BODY_LIMIT - len(raw) - 20) + '"}'
    assert len(body.encode()) <= telegram.WEBHOOK_BODY_LIMIT

    response = webhook(client, None, content=body.encode())

    assert response.status_code == 200
    assert len(tg.inbox()) == 1


@pytest.mark.parametrize(
    "kind",
    [
        "channel_post",
        "poll",
        "message_reaction",
        "group_chatter",
        "bot_message",
        "bot_added_to_a_group",
    ],
)
def test_an_update_redesk_does_not_handle_is_stored_as_done_and_ignored(
    tg: TelegramDesk,
    fake: FakeTelegram,
    client: TestClient,
    stub_broker: dramatiq.Broker,
    kind: str,
) -> None:
    # Given a bound worker and one update of a kind redesk does not handle
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    updates = {
        "channel_post": lambda: fake.channel_post_update("公告"),
        "poll": lambda: fake.poll_update(),
        "message_reaction": lambda: fake.message_reaction_update(resident, 1),
        "group_chatter": lambda: fake.text_update(resident, "大家好，路灯坏了", fake.group(GROUP)),
        "bot_message": lambda: fake.text_update(
            {"id": 999, "is_bot": True, "first_name": "另一个机器人"}, "路灯坏了"
        ),
        "bot_added_to_a_group": lambda: fake.my_chat_member_update(
            resident, "member", "left", fake.group(GROUP)
        ),
    }
    sent_before = len(fake.sent())

    # When Telegram posts it
    response = webhook(client, updates[kind]())
    tg.work()

    # Then it is acknowledged and kept, but nothing is done with it
    assert response.status_code == 200
    assert [row.status for row in tg.inbox() if row.chat_id == "-"] == ["done"]
    assert enqueued(stub_broker) == 0
    assert tg.requests() == []
    assert len(fake.sent()) == sent_before
    assert tg.answers() == []


def test_a_resident_who_blocks_the_bot_is_not_written_to_until_they_restart_it(
    tg: TelegramDesk,
    fake: FakeTelegram,
    client: TestClient,
    stub_broker: dramatiq.Broker,
) -> None:
    # Given a resident's request being handled
    worker = tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.say(resident, "路灯坏了")
    number = number_in(tg.last(100))
    sent_before = len(fake.sent(100))

    # When they block the bot, and a worker then accepts their request
    assert webhook(client, fake.my_chat_member_update(resident, "kicked")).status_code == 200
    tg.work()
    tg.say(worker, f"受理 {number}")

    # Then they are marked unreachable and nothing is sent to them (no 403 needed to learn it)
    assert tg.person(100).unreachable is True
    assert len(fake.sent(100)) == sent_before
    assert [call for call in fake.calls if call.status == 403] == []

    # When they restart the bot, and the request moves on
    assert (
        webhook(client, fake.my_chat_member_update(resident, "member", "kicked")).status_code == 200
    )
    tg.work()
    tg.say(worker, f"办结 {number} 已修好")
    tg.say(worker, f"回单 {number}")

    # Then they are reachable again and get the result, and neither update was answered
    assert tg.person(100).unreachable is False
    assert "办理结果如下" in tg.texts(100)[-1]
    assert len(fake.sent(100)) == sent_before + 1


def test_a_callback_from_a_message_redesk_did_not_send_is_answered_and_changes_nothing(
    tg: TelegramDesk, fake: FakeTelegram, client: TestClient
) -> None:
    # Given a request, and a message in the resident's chat that did not come from redesk
    resident = fake.user(100, "张三")
    tg.say(resident, "路灯坏了")
    before = tg.footprint()
    foreign = {
        "message_id": 999999,
        "date": 1,
        "chat": fake.private_chat(resident),
        "from": {"id": 5555, "is_bot": True, "first_name": "其他机器人"},
        "text": "投票",
    }

    # When a callback under it arrives through the webhook
    press = fake.callback_update(resident, "vote:yes", foreign)
    response = webhook(client, press)
    tg.work()

    # Then it is answered, and nothing else happens
    assert response.status_code == 200
    assert tg.answer_to(press)["text"] == STALE
    assert tg.footprint() == before


def test_the_webhook_answers_503_when_the_update_cannot_be_stored(
    stub_broker: dramatiq.Broker,
) -> None:
    # Given a server whose database does not answer
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    settings = make_settings(
        database_url=url,
        telegram_token="123456:TEST-TOKEN",
        telegram_webhook_secret=SECRET,
        _env_file=None,
    )
    update = {
        "update_id": 700000001,
        "message": {
            "message_id": 1,
            "date": 1,
            "chat": {"id": 100, "type": "private", "first_name": "张三"},
            "from": {"id": 100, "is_bot": False, "first_name": "张三"},
            "text": "路灯坏了",
        },
    }

    # When Telegram posts an update
    with TestClient(create_app(Runtime(settings=settings, engine=get_engine(url)))) as client:
        response = webhook(client, update)

    # Then it is told to try again later, and nothing was enqueued
    assert response.status_code == 503
    assert enqueued(stub_broker) == 0


def test_the_webhook_is_refused_when_telegram_is_off(
    tg: TelegramDesk, fake: FakeTelegram, db_url: str, stub_broker: dramatiq.Broker
) -> None:
    settings = Settings(database_url=db_url, _env_file=None)  # type: ignore[call-arg]
    app = create_app(Runtime(settings=settings, engine=get_engine(db_url)))

    with TestClient(app) as client:
        response = webhook(client, fake.text_update(fake.user(100), "路灯坏了"), secret="")

    # The channel is off: its route is not mounted at all
    assert response.status_code == 404
    assert tg.inbox() == []


# --- media ----------------------------------------------------------------------------------


def settle(tg: TelegramDesk, runtime: Runtime) -> None:
    """Works everything through, then delivers each row still pending (one waiting for its
    chat's slot or a retry) as the actor would, after the delays it asks for."""
    tg.work()
    for row in tg.outbox():
        if row.status == OutboxStatus.PENDING and row.id is not None:
            deliver_until_done(runtime, row.id)


def test_a_photo_with_a_caption_is_a_request_with_its_largest_size_attached(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a bound worker
    tg.worker(200, "王书记")

    # When a resident sends a photo (sizes in no particular order) with a caption
    tg.store(
        fake.photo_update(
            fake.user(100, "张三"),
            caption="井盖丢了，很危险",
            file_ids=["photo-mid", "photo-big", "photo-small"],
            sizes=[(320, 240), (1280, 960), (90, 68)],
        )
    )
    settle(tg, runtime)

    # Then the caption is the request, and the largest size is attached
    [request] = tg.requests()
    assert request.text == "井盖丢了，很危险"
    assert [(a.kind, a.file_id) for a in tg.attachments(request.number)] == [("photo", "photo-big")]
    # And the cards mention the attachment and the photo is sent again after them
    for chat in (200, GROUP):
        card = tg.last(chat, "新诉求")
        assert "附件：[图片]" in text_of(card)
        [media] = tg.sent_of(chat, "sendPhoto")
        assert media.params["photo"] == "photo-big"
        assert media.result["message_id"] > card.result["message_id"]


def test_a_photo_and_a_voice_message_are_downloaded_into_media_storage(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a resident's photo with a caption, then a voice message right after it
    resident = fake.user(100, "张三")
    tg.feed(fake.photo_update(resident, caption="井盖丢了", content=b"\xff\xd8picture"))
    tg.feed(fake.voice_update(resident, content=b"OggSvoice"))
    [request] = tg.requests()

    # When the media are fetched
    assert dispatch.fetch_media(runtime) == 2

    # Then both files are kept under the media directory, with the bytes Telegram served
    stored = {a.kind: a.stored_path for a in tg.attachments(request.number)}
    assert set(stored) == {"photo", "voice"}
    media_dir = Path(runtime.settings.media_dir)
    assert (media_dir / str(stored["photo"])).read_bytes() == b"\xff\xd8picture"
    assert (media_dir / str(stored["voice"])).read_bytes() == b"OggSvoice"
    assert dispatch.fetch_media(runtime) == 0


def test_a_file_telegram_does_not_know_is_marked_gone(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    tg.feed(fake.text_update(fake.user(100, "张三"), "路灯坏了"))
    [request] = tg.requests()
    with session_scope(runtime.engine) as session:
        assert request.id is not None
        session.add(
            Attachment(
                request_id=request.id, channel="telegram", kind="photo", file_id="no-such-file"
            )
        )

    assert dispatch.fetch_media(runtime) == 1

    assert [a.stored_path for a in tg.attachments(request.number)] == [""]


def test_a_photo_without_a_caption_right_after_a_request_is_added_to_it(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a worker and a resident who has just sent a request
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.say(resident, "小区门口的路灯坏了")
    [request] = tg.requests()

    # When the resident sends a photo without a caption
    tg.feed(fake.photo_update(resident, file_ids=["p1", "p2"]))

    # Then it is a supplement of that request, not a new one
    assert [r.number for r in tg.requests()] == [request.number]
    assert [(a.kind, a.file_id) for a in tg.attachments(request.number)] == [("photo", "p2")]
    supplement = tg.events(request.number)[-1]
    assert (supplement.action, supplement.note) == ("supplement", "[图片]")
    assert "补充信息已收到" in tg.texts(100)[-1]
    # And the workers are told and shown the photo
    for chat in (200, GROUP):
        told = tg.last(chat, "群众补充了信息")
        assert request.number in text_of(told) and "附件：[图片]" in text_of(told)
        [photo] = tg.sent_of(chat, "sendPhoto")
        assert photo.params["photo"] == "p2"
        assert photo.result["message_id"] > told.result["message_id"]


def test_a_location_becomes_an_attachment_with_its_coordinates(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a worker
    tg.worker(200, "王书记")

    # When a resident shares a location
    tg.feed(fake.location_update(fake.user(100, "张三"), 30.657, 104.066))

    # Then it is a request with the location attached, and the worker is sent the location
    [request] = tg.requests()
    [place] = tg.attachments(request.number)
    assert (place.kind, place.latitude, place.longitude) == ("location", 30.657, 104.066)
    assert "位置" in request.text
    [sent] = tg.sent_of(200, "sendLocation")
    assert (sent.params["latitude"], sent.params["longitude"]) == (30.657, 104.066)


@pytest.mark.parametrize("kind", ["voice", "video", "document"])
def test_voice_video_and_documents_become_requests_with_the_file_attached(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime, kind: str
) -> None:
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    builders = {
        "voice": lambda: fake.voice_update(resident, file_id="file-1"),
        "video": lambda: fake.video_update(resident, file_id="file-1", caption="占道经营"),
        "document": lambda: fake.document_update(resident, file_id="file-1"),
    }

    tg.store(builders[kind]())
    settle(tg, runtime)

    [request] = tg.requests()
    assert [(a.kind, a.file_id) for a in tg.attachments(request.number)] == [(kind, "file-1")]
    [sent] = tg.sent_of(200, f"send{kind.capitalize()}")
    assert sent.params[kind] == "file-1"


def test_an_edited_message_becomes_a_supplement_of_the_request_it_created(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a worker and a resident's request
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    original = tg.say(resident, "路灯坏了")
    [request] = tg.requests()

    # When the resident edits the message
    tg.feed(fake.edited_text_update(original, "路灯坏了，在3号楼门口"))

    # Then it is a supplement of that request, and the worker is told
    assert [r.number for r in tg.requests()] == [request.number]
    supplement = tg.events(request.number)[-1]
    assert (supplement.action, supplement.note) == ("supplement", "（修改后）路灯坏了，在3号楼门口")
    assert "补充信息已收到" in tg.texts(100)[-1]
    assert "路灯坏了，在3号楼门口" in text_of(tg.last(200, "群众补充了信息"))


@pytest.mark.parametrize("kind", ["video_note", "animation", "audio"])
def test_round_videos_animations_and_music_become_requests_and_are_sent_on_by_file_id(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime, kind: str
) -> None:
    # Given a worker, and a resident's round video, animation (which Telegram also sends as a
    # document) or music file
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    builders = {
        "video_note": lambda: fake.video_note_update(resident, file_id="file-1"),
        "animation": lambda: fake.animation_update(resident, file_id="file-1"),
        "audio": lambda: fake.audio_update(resident, file_id="file-1"),
    }

    # When it is handled and every message delivered
    tg.store(builders[kind]())
    settle(tg, runtime)

    # Then it is one request with exactly that file attached (no second "document")
    [request] = tg.requests()
    assert [(a.kind, a.file_id) for a in tg.attachments(request.number)] == [(kind, "file-1")]
    label = {"video_note": "视频消息", "animation": "动图", "audio": "音频"}[kind]
    assert request.text == f"[{label}]"
    assert catalogue("error.unsupported") not in tg.texts(100)
    # And the worker's card is followed by the file, sent with the method of its kind
    method = {"video_note": "sendVideoNote", "animation": "sendAnimation", "audio": "sendAudio"}[
        kind
    ]
    card, sent = fake.sent(200)[-2:]
    assert "新诉求" in text_of(card)
    assert (sent.method, sent.params.get(kind)) == (method, "file-1")


def test_a_live_photo_is_taken_as_its_motion_and_its_still_picture(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a worker, and a resident's live photo (Bot API LivePhoto: the motion file with
    # its still picture in sizes)
    tg.worker(200, "王书记")
    live = {
        "file_id": "live-1",
        "file_unique_id": "AgADlive1",
        "width": 1080,
        "height": 1440,
        "duration": 3,
        "mime_type": "video/mp4",
        "file_size": 81234,
        "photo": [
            {"file_id": "still-small", "file_unique_id": "AgADs1", "width": 90, "height": 120},
            {"file_id": "still-big", "file_unique_id": "AgADs2", "width": 1080, "height": 1440},
        ],
    }
    fake.add_file("still-big", b"\xff\xd8still", kind="photos")

    # When it is handled, with a caption, and every message delivered
    tg.store(fake.message_update(fake.user(100, "张三"), live_photo=live, caption="墙皮脱落"))
    settle(tg, runtime)

    # Then the request has the motion and the largest still attached
    [request] = tg.requests()
    assert request.text == "墙皮脱落"
    assert [(a.kind, a.file_id) for a in tg.attachments(request.number)] == [
        ("live_photo", "live-1"),
        ("photo", "still-big"),
    ]
    # And the worker sees the still picture after the card (the motion is not sent on)
    card, sent = fake.sent(200)[-2:]
    assert "新诉求" in text_of(card)
    assert (sent.method, sent.params.get("photo")) == ("sendPhoto", "still-big")
    assert "[实况照片][图片]" in text_of(tg.last(200, "新诉求"))


def test_paid_media_is_taken_for_its_photos_and_videos_and_a_preview_is_left_out(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given paid media with a photo, a video and a preview of media not bought
    paid = {
        "star_count": 5,
        "paid_media": [
            {
                "type": "photo",
                "photo": [
                    {
                        "file_id": "paid-photo",
                        "file_unique_id": "AgADp1",
                        "width": 800,
                        "height": 600,
                    }
                ],
            },
            {
                "type": "video",
                "video": {
                    "file_id": "paid-video",
                    "file_unique_id": "AgADp2",
                    "width": 640,
                    "height": 360,
                    "duration": 4,
                },
            },
            {"type": "preview", "width": 640, "height": 360},
        ],
    }

    # When it is handled
    tg.feed(fake.message_update(fake.user(100, "张三"), paid_media=paid))

    # Then the photo and the video are attached to a new request
    [request] = tg.requests()
    assert [(a.kind, a.file_id) for a in tg.attachments(request.number)] == [
        ("photo", "paid-photo"),
        ("video", "paid-video"),
    ]


def test_a_venue_is_taken_as_a_location_with_its_name_and_address(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a venue (a location with a title and an address)
    venue = {
        "location": {"latitude": 30.6541, "longitude": 104.0805},
        "title": "春熙路",
        "address": "锦江区春熙路",
    }

    # When it is handled
    tg.feed(fake.message_update(fake.user(100, "张三"), venue=venue, location=venue["location"]))

    # Then it is one location attachment labelled with the place
    [request] = tg.requests()
    [place] = tg.attachments(request.number)
    assert (place.kind, place.latitude, place.longitude, place.label) == (
        "location",
        30.6541,
        104.0805,
        "春熙路 锦江区春熙路",
    )
    assert request.text == "[位置：春熙路 锦江区春熙路]"


def test_a_resident_sharing_their_own_contact_has_it_kept_as_their_phone(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a worker and a resident
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")

    # When the resident shares their own contact (user_id is theirs)
    tg.feed(fake.contact_update(resident, "+8613800000000", "张三", user_id=100))

    # Then it is their phone, they are told so briefly, and no request is made
    assert tg.person(100).phone == "+8613800000000"
    assert tg.texts(100) == [catalogue("reply.phone_saved", phone="+8613800000000")]
    assert tg.requests() == []
    # And a request they make afterwards shows the number to the worker
    tg.feed(fake.text_update(resident, "路灯坏了"))
    assert "+8613800000000" in text_of(tg.last(200, "新诉求"))


def test_someone_elses_contact_is_attached_to_the_request_just_sent(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a resident who has just made a request
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.feed(fake.text_update(resident, "楼上漏水"))
    [request] = tg.requests()

    # When they share their neighbour's contact card (another user, or nobody on Telegram)
    tg.feed(fake.contact_update(resident, "+8613911112222", "李", "四", user_id=555))
    tg.feed(fake.contact_update(resident, "13933334444", "王五"))

    # Then both are attached to that request as contacts, their phone is not touched
    contacts = [(a.kind, a.label) for a in tg.attachments(request.number)]
    assert contacts == [("contact", "李 四 +8613911112222"), ("contact", "王五 13933334444")]
    assert tg.person(100).phone is None
    assert len(tg.requests()) == 1
    worker_sees = "\n".join(tg.texts(200))
    assert "[联系人：李 四 +8613911112222]" in worker_sees
    assert "[联系人：王五 13933334444]" in worker_sees


@pytest.mark.parametrize("kind", ["sticker", "dice", "poll", "game", "story"])
def test_a_message_carrying_nothing_usable_is_answered_politely_as_unsupported(
    tg: TelegramDesk, fake: FakeTelegram, kind: str
) -> None:
    # Given a message carrying only a sticker, a die, a poll, a game or a forwarded story
    fields = {
        "sticker": {
            "file_id": "CAACAgIAAx",
            "file_unique_id": "AgADs",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "type": "regular",
        },
        "dice": {"emoji": "🎲", "value": 4},
        "poll": {
            "id": "5432",
            "question": "好不好",
            "options": [
                {"persistent_id": "0", "text": "好", "voter_count": 0},
                {"persistent_id": "1", "text": "不好", "voter_count": 0},
            ],
            "total_voter_count": 0,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
            "allows_revoting": False,
            "members_only": False,
        },
        "game": {
            "title": "Snake",
            "description": "A game",
            "photo": [
                {"file_id": "game-photo", "file_unique_id": "AgADg", "width": 640, "height": 360}
            ],
        },
        "story": {"chat": {"id": 777, "type": "private", "first_name": "某人"}, "id": 12},
    }[kind]

    # When it is handled
    tg.feed(fake.message_update(fake.user(100, "张三"), **{kind: fields}))

    # Then the resident is told, and no request is made
    assert tg.texts(100) == [catalogue("error.unsupported")]
    assert tg.requests() == []


def test_a_round_video_is_downloaded_with_its_extension(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a resident's round video (a VideoNote has no mime type)
    tg.feed(fake.video_note_update(fake.user(100, "张三"), content=b"\0\0\0\x18ftypround"))
    [request] = tg.requests()

    # When the media are fetched
    assert dispatch.fetch_media(runtime) == 1

    # Then the file is kept as an .mp4 with the bytes Telegram served
    [note] = tg.attachments(request.number)
    assert str(note.stored_path).endswith(".mp4")
    assert (
        Path(runtime.settings.media_dir) / str(note.stored_path)
    ).read_bytes() == b"\0\0\0\x18ftypround"


# --- sending --------------------------------------------------------------------------------


def test_a_text_over_4096_characters_is_split_at_line_breaks_with_the_buttons_last(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a result longer than one Telegram message, in lines
    result = "\n".join(f"第{i:03d}项：" + "处理情况说明" * 8 for i in range(120))
    params = {"number": "SQ-20260101-0001", "result": result}
    rendered = render("requester.replied", params)
    assert len(rendered.text) > telegram.MAX_MESSAGE
    outbox_id = queue_message(runtime, 100, "requester.replied", **params)
    # This test is about the cut: the fake's per-chat spacing is off, so that a loaded
    # machine delaying the first part's call cannot turn the second into a 429 (pacing has
    # its own tests).
    fake.limits_enabled = False

    # When it is delivered
    assert dispatch.deliver(runtime, outbox_id) is None

    # Then it arrives in parts of at most 4,096 characters, cut between lines
    parts = tg.messages(100)
    texts = [text_of(part) for part in parts]
    assert len(parts) == 2
    assert all(len(text) <= telegram.MAX_MESSAGE for text in texts)
    assert "\n".join(texts) == rendered.text
    # And only the last part has the buttons
    assert [labels(part) for part in parts] == [[], RATINGS]
    assert outbox_row(runtime, outbox_id).status == OutboxStatus.SENT


def test_a_429_raises_a_transient_error_with_telegrams_retry_after(
    fake: FakeTelegram, runtime: Runtime, quick_sender: TelegramSender
) -> None:
    # Given Telegram answering every send with 429 retry after 3 seconds
    outbox_id = queue_message(runtime, 100, "reply.empty_todo")
    fake.force_429(3, 60)

    # When the sender sends
    with session_scope(runtime.engine) as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        person = session.get(Person, row.person_id)
        assert person is not None
        with pytest.raises(TransientSendError) as raised:
            quick_sender.send(session, person, render(row.key, row.params), row)

    # Then the error carries Telegram's retry_after in seconds
    assert raised.value.retry_after == 3.0
    assert fake.count("sendMessage", ok=False) == 1


def test_a_429_is_retried_after_retry_after_and_each_message_delivered_once_in_order(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given two messages for one chat, and Telegram answering 429 retry after 2 seconds
    first = queue_message(runtime, 100, "reply.empty_todo")
    second = queue_message(runtime, 100, "reply.no_requests")
    fake.force_429(2, 60)

    # When they are delivered
    retry_in = dispatch.deliver(runtime, first)

    # Then the first waits for retry_after (a rate limit is not counted as a failed
    # attempt), and the second waits behind it
    assert retry_in == 2.0
    row = outbox_row(runtime, first)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)
    assert row.next_attempt_at is not None and row.next_attempt_at > utcnow()
    assert outbox_row(runtime, second).attempts == 0

    # When Telegram accepts again, but the retry time has not come
    fake.clear_faults()
    assert dispatch.deliver(runtime, first) is not None
    assert tg.texts(100) == []

    # When it has come
    make_due(runtime, first)
    assert dispatch.deliver(runtime, first) is None

    # Then both are delivered once, in order
    assert tg.texts(100) == [catalogue("reply.empty_todo"), catalogue("reply.no_requests")]
    assert fake.count("sendMessage", ok=False) == 1
    assert [outbox_row(runtime, i).status for i in (first, second)] == [OutboxStatus.SENT] * 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_retried_and_the_message_delivered_once(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime, status: int
) -> None:
    # Given Telegram failing the next send
    outbox_id = queue_message(runtime, 100, "reply.empty_todo")
    fake.fail_next(1, status=status, methods="sendMessage")

    # When it is delivered, and again once the backoff is over
    retry_in = dispatch.deliver(runtime, outbox_id)
    failed = outbox_row(runtime, outbox_id)
    make_due(runtime, outbox_id)
    assert dispatch.deliver(runtime, outbox_id) is None

    # Then the first attempt was put off with a backoff, and the message arrived once
    assert retry_in == 2.0
    assert failed.status == OutboxStatus.PENDING and failed.last_error
    assert tg.texts(100) == [catalogue("reply.empty_todo")]
    assert outbox_row(runtime, outbox_id).status == OutboxStatus.SENT
    assert outbox_row(runtime, outbox_id).attempts == 2


def test_a_person_who_blocked_the_bot_is_marked_unreachable_and_never_retried(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a resident who blocked the bot, and two messages for them
    fake.block(100)
    first = queue_message(runtime, 100, "reply.empty_todo")
    second = queue_message(runtime, 100, "reply.no_requests")

    # When they are delivered, and the sweeper tries again
    assert dispatch.deliver(runtime, first) is None
    tg.work()

    # Then Telegram was asked once; both are skipped and the person is unreachable
    assert fake.count("sendMessage") == 1
    assert [outbox_row(runtime, i).status for i in (first, second)] == [OutboxStatus.SKIPPED] * 2
    assert tg.person(100).unreachable is True


def test_a_split_message_interrupted_by_a_429_resumes_with_the_parts_not_yet_sent(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a long message, and Telegram allowing one message to the chat every 5 seconds
    params = {"number": "SQ-20260101-0001", "result": "办理情况：" + "已处理。" * 1500}
    rendered = render("requester.replied", params)
    outbox_id = queue_message(runtime, 100, "requester.replied", **params)
    fake.per_chat_interval = 5.0

    # When it is delivered: the first part goes out, the second is refused with a 429
    retry_in = dispatch.deliver(runtime, outbox_id)
    assert retry_in == 5.0
    assert len(tg.messages(100)) == 1
    assert outbox_row(runtime, outbox_id).params["_parts_sent"] == 1

    # When its retry time has come
    fake.per_chat_interval = 0.005
    make_due(runtime, outbox_id)
    assert dispatch.deliver(runtime, outbox_id) is None

    # Then only the rest was sent: every part arrived once, the buttons with the last
    texts = tg.texts(100)
    assert len(texts) == 2
    assert "".join(texts) == rendered.text
    assert fake.count("sendMessage", ok=False) == 1
    assert labels(tg.messages(100)[-1]) == RATINGS
    assert outbox_row(runtime, outbox_id).status == OutboxStatus.SENT


def test_a_resident_who_blocked_the_bot_and_writes_again_is_answered_again(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a resident whose receipt could not be delivered: they had blocked the bot
    resident = fake.user(100, "张三")
    fake.block(100)
    tg.say(resident, "路灯坏了")
    assert tg.person(100).unreachable is True

    # When they unblock it and write again
    fake.unblock(100)
    tg.say(resident, "井盖丢了")

    # Then they get the receipt of the new request
    second = tg.requests()[-1]
    assert [number_in(call) for call in tg.messages(100)] == [second.number]
    assert tg.person(100).unreachable is False


def test_a_worker_who_cannot_be_written_to_privately_still_has_group_presses_answered(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a worker who bound themselves in the group but never opened a chat with the bot
    worker = fake.user(200, "王书记")
    fake.block(200)
    tg.feed(fake.command_update(worker, "bind", tg.desk.invite("worker"), chat=fake.group(GROUP)))
    assert tg.person(200).role == "worker"
    tg.say(fake.user(100, "张三"), "路灯坏了")
    card = tg.last(GROUP, "新诉求")

    # When the worker presses 受理 in the group
    press = tg.press(worker, card, "受理")

    # Then the press is answered and the group sees who acted
    assert tg.answer_to(press)["show_alert"] is False
    assert "王书记 已受理" in tg.edit_of(card)["text"]
    assert tg.request(number_in(card)).state == "handling"


def test_deliveries_stay_within_telegrams_real_limits_without_a_single_429(
    runtime: Runtime, fake: FakeTelegram
) -> None:
    # Given the fake enforcing Telegram's real limits, and the sender on the real limiter
    fake.per_chat_interval, fake.group_per_minute, fake.global_per_second = 1.0, 20, 30
    fake.group(GROUP)
    with session_scope(runtime.engine) as session:
        telegram.ensure_committee_chat(session, str(GROUP))
    sender = dispatch.sender_for(runtime, telegram.CHANNEL)
    assert isinstance(sender, TelegramSender)
    assert not isinstance(sender.limiter, QuickLimiter)
    # Three messages for one chat, one for the group, one each for 34 more chats
    to_one = [queue_message(runtime, 100, "reply.empty_todo") for _ in range(3)]
    to_group = [queue_message(runtime, GROUP, "reply.empty_todo")]
    to_many = [queue_message(runtime, 1000 + i, "reply.empty_todo") for i in range(34)]

    # When they are delivered by several workers at once, each job coming back when told to
    with ThreadPoolExecutor(max_workers=6) as pool:
        comebacks = list(
            pool.map(lambda i: deliver_until_done(runtime, i), [to_one[0], *to_group, *to_many])
        )

    # Then every message went out, and Telegram never answered 429
    assert [
        (call.method, call.params, call.status) for call in fake.calls if call.status != 200
    ] == []
    assert len(fake.sent()) == 3 + 1 + 34
    assert len(fake.sent(100)) == 3
    # and the chat with three messages was told to come back for its second and third
    assert comebacks[0] == 2


def deliver_until_done(runtime: Runtime, outbox_id: int) -> int:
    """Runs a delivery job as the actor does: again after each delay it asks for.

    Returns:
        How many times the job asked to come back.
    """
    comebacks = 0
    while (retry_in := dispatch.deliver(runtime, outbox_id)) is not None:
        comebacks += 1
        time.sleep(retry_in)
    return comebacks


def test_a_delivery_job_leaves_a_slot_far_off_to_a_later_run_and_books_nothing(
    runtime: Runtime, fake: FakeTelegram
) -> None:
    # Given the sender on the real limiter, and two messages queued for one chat
    sender = dispatch.sender_for(runtime, telegram.CHANNEL)
    assert isinstance(sender, TelegramSender)
    first, _ = (queue_message(runtime, 100, "reply.empty_todo") for _ in range(2))

    # When one job delivers them
    retry_in = dispatch.deliver(runtime, first)

    # Then it sent the first, and asks to come back for the second's slot instead of waiting
    assert len(fake.sent(100)) == 1
    assert retry_in is not None
    assert telegram.send.PACE_WITHIN < retry_in <= telegram.send.CHAT_MARGIN
    # and booked nothing for it: the chat's earliest slot is still the one after the first
    booked, earliest = sender.limiter.try_reserve(telegram.send._slots(100), 0.0)
    assert not booked
    assert earliest <= retry_in


# --- ordering -------------------------------------------------------------------------------


def test_updates_from_one_chat_are_handled_in_update_order_by_several_workers(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given five messages from one resident and one from another, stored before handling
    resident = fake.user(100, "张三")
    other = fake.user(101, "李四")
    texts = [f"第{i}件事：路灯坏了" for i in range(1, 6)]
    for text in texts[:2]:
        tg.store(fake.text_update(resident, text))
    tg.store(fake.text_update(other, "井盖丢了"))
    for text in texts[2:]:
        tg.store(fake.text_update(resident, text))

    # When three workers handle the resident's chat at once, and the other chat
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [
            pool.submit(dispatch.process_chat, tg.runtime, telegram.CHANNEL, chat)
            for chat in ("100", "100", "101", "100")
        ]
        for job in jobs:
            job.result()
    tg.work()

    # Then the resident's requests were numbered in the order they were sent
    mine = [r for r in tg.requests() if r.requester_id == tg.person(100).id]
    assert [r.text for r in sorted(mine, key=lambda r: r.number)] == texts
    # And the receipts arrived in that order too
    assert [number_in(call) for call in tg.messages(100)] == sorted(r.number for r in mine)
    assert len(tg.messages(101)) == 1


# --- polling --------------------------------------------------------------------------------


def stop(poller: Poller, fake: FakeTelegram) -> None:
    """Stops a poller waiting in its long poll: the fake ends the poll by shutting down."""
    poller.stop()
    fake.stop()
    poller.join(timeout=10)
    assert not poller.is_alive()


def test_polling_stores_updates_and_a_new_poller_continues_from_the_stored_offset(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given two updates waiting at Telegram
    resident, other = fake.user(100, "张三"), fake.user(101, "李四")
    updates = [
        fake.queue_update(fake.text_update(resident, "路灯坏了")),
        fake.queue_update(fake.text_update(other, "井盖丢了")),
    ]
    enqueued: list[tuple[str, str]] = []

    def offset() -> str | None:
        with Session(runtime.engine) as session:
            return queries.get_channel_state(session=session, key=telegram.OFFSET_KEY)

    # When a poller runs until it waits for more
    first = Poller(runtime, lambda channel, chat: enqueued.append((channel, chat)))
    first.start()
    try:
        assert fake.wait_for(lambda f: len(enqueued) == 2 and f.waiting_polls == 1)

        # Then both are stored and enqueued, and the next offset is persisted
        assert enqueued == [("telegram", "100"), ("telegram", "101")]
        assert offset() == str(updates[1]["update_id"] + 1)

        # When it is asked to stop while an update arrives during its last long poll
        first.stop()
        updates.append(fake.queue_update(fake.text_update(resident, "在3号楼门口")))
        first.join(timeout=10)
        assert not first.is_alive()
    finally:
        if first.is_alive():
            stop(first, fake)
    assert offset() == str(updates[2]["update_id"] + 1)

    # When a new poller starts and one more update arrives
    updates.append(fake.queue_update(fake.text_update(other, "谢谢")))
    calls_before = len(fake.calls)
    second = Poller(runtime, lambda channel, chat: enqueued.append((channel, chat)))
    second.start()
    try:
        assert fake.wait_for(lambda f: len(enqueued) == 4 and f.waiting_polls == 1)
    finally:
        stop(second, fake)

    # Then it asked from the stored offset, and every update was stored exactly once
    polls = [call for call in fake.calls[calls_before:] if call.method == "getUpdates"]
    assert polls[0].params["offset"] == updates[2]["update_id"] + 1
    assert polls[0].params["allowed_updates"] == list(telegram.ALLOWED_UPDATES)
    assert sorted(row.natural_key for row in tg.inbox()) == sorted(
        str(u["update_id"]) for u in updates
    )
    assert enqueued[2:] == [("telegram", "100"), ("telegram", "101")]
    assert offset() == str(updates[3]["update_id"] + 1)


def test_polling_moves_past_an_unparseable_update_and_answers_the_good_ones_around_it(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a getUpdates batch with an update the library cannot model between two good ones
    resident, other = fake.user(100, "张三"), fake.user(101, "李四")
    updates = [
        fake.queue_update(fake.text_update(resident, "路灯坏了")),
        fake.queue_update(photo_without_unique_ids(fake, resident)),
        fake.queue_update(fake.text_update(other, "帮助")),
    ]
    enqueued: list[tuple[str, str]] = []

    # When a poller reads the batch and waits for more
    poller = Poller(runtime, lambda channel, chat: enqueued.append((channel, chat)))
    poller.start()
    try:
        assert fake.wait_for(lambda f: len(enqueued) == 2 and f.waiting_polls == 1)
        # (asked to stop, it ends once its long poll answers; an update makes it answer now)
        poller.stop()
        fake.queue_update(fake.text_update(fake.user(102, "王五"), "帮助"))
        poller.join(timeout=10)
        assert not poller.is_alive()
    finally:
        if poller.is_alive():
            stop(poller, fake)

    # Then every update is stored once, the bad one as failed, and the next poll asked past
    # the whole batch (the offset moved; nothing is asked for again)
    assert [(row.natural_key, row.status) for row in tg.inbox()][:3] == [
        (str(updates[0]["update_id"]), "pending"),
        (str(updates[1]["update_id"]), "failed"),
        (str(updates[2]["update_id"]), "pending"),
    ]
    assert enqueued[:2] == [("telegram", "100"), ("telegram", "101")]
    polls = [call.params["offset"] for call in fake.calls if call.method == "getUpdates"]
    assert polls[-1] == updates[2]["update_id"] + 1

    # And when the workers run, both good ones are answered
    tg.work()
    assert number_in(tg.messages(100)[0])
    assert tg.texts(101) == [render("help", {"role": "requester"}).text]


# --- the token check ------------------------------------------------------------------------


def telegram_settings(token: str, api_url: str) -> Settings:
    return make_settings(telegram_token=token, telegram_api_url=api_url, _env_file=None)


def test_check_token_names_the_bot(fake: FakeTelegram) -> None:
    me = telegram.check_token(telegram_settings(fake.token, fake.url))

    assert me == {"id": 123456, "username": "redesk_bot", "name": "redesk"}


def test_a_refused_token_is_a_clear_error_naming_redesk_telegram_token(
    fake: FakeTelegram,
) -> None:
    with pytest.raises(ValueError, match="REDESK_TELEGRAM_TOKEN"):
        telegram.check_token(telegram_settings("999:WRONG-TOKEN", fake.url))

    # The getMe with that token is what was refused (other calls may reach the fake too)
    checks = [call for call in fake.calls if call.method == "getMe"]
    assert [call.status for call in checks] == [401]


def test_an_unreachable_api_url_is_a_clear_error(fake: FakeTelegram) -> None:
    with pytest.raises(ValueError, match="REDESK_TELEGRAM_API_URL"):
        telegram.check_token(telegram_settings(fake.token, "http://127.0.0.1:1"))


# --- cards that went stale ------------------------------------------------------------------


def shown(fake: FakeTelegram, chat: int, sent: Any) -> dict[str, Any]:
    """The message `sent` (a sendMessage call) as it is now in `chat`, after any edits."""
    wanted = sent.result["message_id"]
    [message] = [m for m in fake.messages(chat) if m["message_id"] == wanted]
    return message


def edits_of(fake: FakeTelegram, chat: int, sent: Any) -> list[dict[str, Any]]:
    """The edits of the message `sent` in `chat`, oldest first."""
    return [
        edit.result
        for edit in fake.edits(chat)
        if edit.result["message_id"] == sent.result["message_id"]
    ]


def test_a_press_on_one_workers_card_edits_the_other_workers_card_and_the_groups(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a new request carded to two workers and to the committee group
    first = tg.worker(200, "王书记")
    tg.worker(201, "赵干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    number = number_in(tg.last(100))
    mine, theirs, group = (tg.last(chat, "新诉求") for chat in (200, 201, GROUP))
    assert labels(theirs) == labels(group) == ["受理", "转单", "驳回"]

    # When the first worker presses 受理 on their own card
    tg.press(first, mine, "受理")

    # Then the second worker's card and the group's card are edited once: the new state, and
    # only 转单 (still possible for the committee) is left
    assert tg.request(number).state == "handling"
    for chat, card in ((201, theirs), (GROUP, group)):
        [edit] = edits_of(fake, chat, card)
        assert edit["text"].startswith(text_of(card))
        assert edit["text"].endswith(catalogue("line.state", state="办理中（党委做单）"))
        assert labels(shown(fake, chat, card)) == ["转单"]
    # And the pressed card says who acted, without buttons
    [edit] = edits_of(fake, 200, mine)
    assert "王书记 已受理" in edit["text"] and labels(shown(fake, 200, mine)) == []


def test_a_typed_accept_edits_every_card_of_the_request(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a new request carded to two workers and to the committee group
    first = tg.worker(200, "王书记")
    tg.worker(201, "赵干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    number = number_in(tg.last(100))
    cards = {chat: tg.last(chat, "新诉求") for chat in (200, 201, GROUP)}

    # When the first worker types 受理 instead of pressing
    tg.say(first, f"受理 {number}")

    # Then every card, the typist's own included, is edited to the new state with 转单 only
    for chat, card in cards.items():
        [edit] = edits_of(fake, chat, card)
        assert edit["text"].endswith(catalogue("line.state", state="办理中（党委做单）"))
        assert labels(shown(fake, chat, card)) == ["转单"]


def test_a_requesters_cancel_marks_the_workers_cards_done(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a new request carded to a worker and the group, and the resident's receipt
    tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.say(resident, "路灯坏了")
    receipt = tg.last(100)
    number = number_in(receipt)
    cards = {chat: tg.last(chat, "新诉求") for chat in (200, GROUP)}

    # When the resident cancels it (撤销)
    tg.say(resident, f"撤销 {number}")

    # Then the cards say it is done and offer nothing; the receipt's 查询进度 stays as it was
    assert tg.request(number).state == "cancelled"
    for chat, card in cards.items():
        [edit] = edits_of(fake, chat, card)
        assert edit["text"].endswith(catalogue("line.done", state="已撤销"))
        assert labels(shown(fake, chat, card)) == []
    assert edits_of(fake, 100, receipt) == []
    assert labels(shown(fake, 100, receipt)) == ["查询进度"]


def test_a_colleague_taking_a_forwarded_request_leaves_the_other_staff_card_its_valid_buttons(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a request forwarded to 城管执法, which has two staff members
    worker = tg.worker(200, "王书记")
    tg.staff(300, "城管执法", "李科长")
    colleague = tg.staff(301, "城管执法", "周干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    number = number_in(tg.last(100))
    tg.say(worker, f"转单 {number} 城管执法")
    card = tg.last(300, "转单")
    assert labels(card) == ["接收", "退单", "办结"]

    # When the colleague types 接收
    tg.say(colleague, f"接收 {number}")

    # Then the first staff member's card drops 接收 and keeps 退单 and 办结
    assert tg.request(number).state == "dept_handling"
    [edit] = edits_of(fake, 300, card)
    assert edit["text"].endswith(catalogue("line.state", state="部门办理中"))
    assert labels(shown(fake, 300, card)) == ["退单", "办结"]


def test_an_unsolved_rating_typed_by_the_requester_marks_the_rating_card_done(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given an answered request: the resident has the result with the rating buttons
    worker = tg.worker(200, "王书记")
    resident = fake.user(100, "张三")
    tg.say(resident, "路灯坏了")
    number = number_in(tg.last(100))
    tg.say(worker, f"受理 {number}")
    tg.say(worker, f"办结 {number} 已修好")
    tg.say(worker, f"回单 {number}")
    result = tg.last(100, "办理结果如下")
    assert labels(result) == RATINGS

    # When the resident types 评价 … 未解决 不满意 (重办) instead of pressing
    tg.say(resident, f"评价 {number} 未解决 不满意")

    # Then the request is new again and the result's rating buttons are gone
    assert tg.request(number).state == "new"
    [edit] = edits_of(fake, 100, result)
    assert edit["text"].endswith(catalogue("line.done", state="待受理"))
    assert labels(shown(fake, 100, result)) == []


def test_a_press_that_raced_an_edit_answers_with_the_current_state_and_changes_nothing(
    tg: TelegramDesk, fake: FakeTelegram
) -> None:
    # Given a request accepted by one worker, and the other's card already edited
    first = tg.worker(200, "王书记")
    second = tg.worker(201, "赵干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    number = number_in(tg.last(100))
    card = tg.last(201, "新诉求")
    tg.press(first, tg.last(200, "新诉求"), "受理")
    assert labels(shown(fake, 201, card)) == ["转单"]
    before = tg.footprint()

    # When the second worker's press of 驳回, made before the edit reached them, arrives
    tg.press(second, card, "驳回")

    # Then it is answered with an alert naming the current state, and nothing changes
    assert tg.answers()[-1]["show_alert"] is True
    assert tg.answers()[-1]["text"] == catalogue(
        "error.transition", number=number, state_label="办理中（党委做单）", action_label="驳回"
    )
    assert tg.footprint() == before
    assert tg.request(number).state == "handling"


def test_a_card_refresh_that_telegram_refuses_for_a_moment_is_edited_on_the_retry(
    tg: TelegramDesk, fake: FakeTelegram, runtime: Runtime
) -> None:
    # Given a new request carded to two workers and the group
    tg.worker(200, "王书记")
    second = tg.worker(201, "赵干事")
    tg.say(fake.user(100, "张三"), "路灯坏了")
    number = number_in(tg.last(100))
    cards = {chat: tg.last(chat, "新诉求") for chat in (200, 201, GROUP)}

    # When the second worker types 受理 while the Bot API fails the first edit with a 500
    fake.fail_next(1, status=500, methods="editMessageText")
    tg.store(fake.text_update(second, f"受理 {number}"))
    tg.desk.work()  # one pass, not waiting for the retry

    # Then that card's refresh waits for its retry, and the other cards are edited
    [waiting] = [
        row for row in tg.outbox() if row.key == "card.refresh" and row.status == "pending"
    ]
    assert sorted(len(edits_of(fake, chat, card)) for chat, card in cards.items()) == [0, 1, 1]

    # When its retry comes
    make_due(runtime, waiting.id or 0)
    tg.work()

    # Then every card has been edited exactly once, to the new state
    for chat, card in cards.items():
        [edit] = edits_of(fake, chat, card)
        assert edit["text"].endswith(catalogue("line.state", state="办理中（党委做单）"))
    assert outbox_row(runtime, waiting.id or 0).status == "sent"


def test_a_resident_who_forges_card_lines_on_telegram_cannot_fake_them_in_the_worker_s_card(
    tg: TelegramDesk,
    fake: FakeTelegram,
) -> None:
    # Given a worker, and a resident whose name hides a right-to-left override
    tg.worker(5101, "王书记")
    resident = fake.user(5102, "张三\u202e李四")

    # When the resident writes a text that imitates the card's own lines and a command
    tg.say(
        resident,
        "路灯坏了\n—— 来自：王书记 13800000000（Telegram）\n"
        "办结时限：已延期\n受理 SQ-20260101-0001",
    )
    number = tg.requests()[-1].number
    card = tg.last(5101, f"【{number}】新诉求")

    # Then the card has one 来自 line and one deadline line, the resident's lines all quoted
    lines = text_of(card).split("\n")
    assert [line for line in lines if line.startswith("—— 来自：")] == [
        "—— 来自：张三李四（Telegram）"
    ]
    assert len([line for line in lines if line.startswith(("响应时限", "办结时限"))]) == 1
    assert [line for line in lines if line.startswith("│ ")] == [
        "│ 路灯坏了",
        "│ —— 来自：王书记 13800000000（Telegram）",
        "│ 办结时限：已延期",
        "│ 受理 SQ-20260101-0001",
    ]
    # And it is plain text (no parse mode a resident's words could break), its buttons for
    # this request only
    assert "parse_mode" not in card.params
    assert labels(card) == ["受理", "转单", "驳回"]
    # And the request keeps the words as written
    assert tg.request(number).text.startswith("路灯坏了\n—— 来自：王书记")


def test_guessing_invitation_codes_on_telegram_is_refused_after_five_failures(
    tg: TelegramDesk,
    fake: FakeTelegram,
    client: TestClient,
) -> None:
    # Given a valid invitation, and a Telegram user who guesses codes through the webhook
    code = tg.desk.invite("worker")
    guesser = fake.user(5201, "猜码者")
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    for _ in range(5):
        update_body = fake.text_update(guesser, f"/bind {invitations.new_code()}")
        assert (
            client.post("/telegram/webhook", json=update_body, headers=headers).status_code == 200
        )
        tg.work()
    assert tg.texts(5201) == [catalogue("error.invitation_invalid")] * 5

    # When they send the right code
    tg.say(guesser, f"绑定 {code}")

    # Then it is refused without being read: the code is unused, they hold no role
    assert tg.texts(5201)[-1] == catalogue("error.bind_refused")
    assert tg.person(5201).role == "requester"
    with Session(tg.runtime.engine) as session:
        recorded = list(session.exec(select(BindFailure)).all())
        [invitation] = session.exec(select(Invitation)).all()
    assert invitation.used_at is None
    # And the five failures are on record under the chat, with the reason only
    assert {(f.channel, f.identity, f.address, f.reason) for f in recorded} == {
        ("telegram", "5201", "telegram:5201", "unknown")
    }
    assert len(recorded) == 5
