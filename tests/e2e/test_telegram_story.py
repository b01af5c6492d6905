"""Telegram end to end: real `redesk run` / `redesk worker` processes against the fake Bot API.

The fake Telegram server (tests/fakes/telegram.py) runs in the test process and enforces
Telegram's limits; the redesk processes reach it through REDESK_TELEGRAM_API_URL. Updates reach
redesk the way Telegram delivers them: queued for getUpdates (polling mode) or POSTed to the real
server's /telegram/webhook (webhook mode). Everything redesk says is read from the calls the fake
recorded.

Three deployments, each with its own fake: polling on the embedded default (SQLite), webhook on
the embedded default, and production's shape (PostgreSQL, Redis, two `redesk worker`, `redesk
scheduler`, `redesk run` with the webhook).
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from bot.texts import render
from tests.e2e.conftest import CITY, Deployment, base_env, held_redis, serve
from tests.fakes.telegram import Call, FakeTelegram

#: The committee group chat (REDESK_TELEGRAM_COMMITTEE_CHAT).
GROUP_ID = -1001987654321

#: The public URL of the webhook deployments; setWebhook must point below it.
PUBLIC_URL = "https://redesk.example"

#: The Redis database of the production-shaped deployment (emptied, held exclusively).
TELEGRAM_REDIS_URL = "redis://127.0.0.1:6379/12"

#: Seconds one step of a story may take (a reply, a card, an answered button).
STEP = 30.0

#: The first line of the help a resident gets for 帮助.
HELP_FIRST_LINE = render("help", {"role": "requester"}).text.splitlines()[0]

#: A request number in a message, e.g. 【SQ-20260101-0001】.
NUMBER = re.compile(r"【(SQ-\d{8}-\d{4,})】")


@dataclass
class TelegramDesk:
    """A redesk deployment with Telegram on, the fake it talks to, and its bound staff."""

    deployment: Deployment
    fake: FakeTelegram
    #: The webhook secret; None in polling mode.
    secret: str | None
    group: dict[str, Any] | None = None
    worker: dict[str, Any] | None = None
    city: dict[str, Any] | None = None
    #: (chat, message_id) of the messages wait_message returned already.
    matched: set[tuple[Any, int]] = field(default_factory=set)

    @property
    def webhook_url(self) -> str:
        """The real local server's webhook endpoint (where the fake POSTs updates)."""
        return f"{self.deployment.base_url}/telegram/webhook"

    # --- what users do ------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> None:
        """Delivers an update to redesk the way this deployment receives them."""
        if self.secret is None:
            self.fake.queue_update(update)
            return
        status, body = self.fake.post_webhook(self.webhook_url, update, secret_token=self.secret)
        assert status == 200, f"webhook answered {status}: {body}\n{self.deployment.logs()}"

    def say(
        self, user: dict[str, Any], words: str, chat: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """`user` sends `words` (in their private chat unless `chat` is given)."""
        update = self.fake.text_update(user, words, chat)
        self.push(update)
        return update

    def press(self, user: dict[str, Any], message: Call, label: str) -> str:
        """`user` presses the button called `label` under `message`; returns the query id
        after checking that redesk answered it (without an alert)."""
        buttons = dict(self.fake.buttons(message))
        assert label in buttons, f"no button {label!r} under {message.result}"
        data = buttons[label]
        assert data is not None
        update = self.fake.callback_update(user, data, message)
        self.push(update)
        query_id: str = update["callback_query"]["id"]
        answer = self.wait_answer(query_id)
        assert not answer.params.get("show_alert"), answer.params
        return query_id

    # --- what redesk does ---------------------------------------------------------------

    def wait_message(self, chat_id: int, *needles: str, timeout: float = STEP) -> Call:
        """The first sendMessage to `chat_id` not returned before whose text contains every
        needle (waits at most `timeout` seconds for it)."""
        found: list[Call] = []

        def arrived(fake: FakeTelegram) -> bool:
            for call in fake.sent(chat_id):
                key = (chat_id, int(call.result["message_id"]))
                words = call.result.get("text") or ""
                if key not in self.matched and all(needle in words for needle in needles):
                    found.append(call)
                    return True
            return False

        assert self.fake.wait_for(arrived, timeout), (
            f"no message with {needles} in chat {chat_id} within {timeout:g} s; it got "
            f"{self.fake.texts(chat_id)}\n{self.deployment.logs()}"
        )
        self.matched.add((chat_id, int(found[0].result["message_id"])))
        return found[0]

    def wait_answer(self, query_id: str, timeout: float = STEP) -> Call:
        """The successful answerCallbackQuery for `query_id`."""
        found: list[Call] = []

        def answered(fake: FakeTelegram) -> bool:
            found[:] = [
                call
                for call in fake.callback_answers()
                if str(call.params.get("callback_query_id")) == query_id
            ]
            return bool(found)

        assert self.fake.wait_for(answered, timeout), (
            f"callback query {query_id} was never answered\n{self.deployment.logs()}"
        )
        assert len(found) == 1, found
        return found[0]

    def wait_edit(self, message: Call, *needles: str, timeout: float = STEP) -> Call:
        """The editMessageText of `message` whose new text contains every needle."""
        chat, message_id = message.result["chat"]["id"], message.result["message_id"]
        found: list[Call] = []

        def edited(fake: FakeTelegram) -> bool:
            found[:] = [
                call
                for call in fake.edits(chat)
                if call.params.get("message_id") == message_id
                and all(needle in call.result.get("text", "") for needle in needles)
            ]
            return bool(found)

        self.wait_until(
            f"an edit of message {message_id} in chat {chat} with {needles}", edited, timeout
        )
        return found[0]

    def wait_until(
        self, what: str, predicate: Callable[[FakeTelegram], bool], timeout: float = STEP
    ) -> None:
        """Waits (bounded) until `predicate(fake)`; fails naming `what`."""
        assert self.fake.wait_for(predicate, timeout), (
            f"{what}: not within {timeout:g} s\n{calls_digest(self.fake)}\n{self.deployment.logs()}"
        )

    def submit(self, resident: dict[str, Any], words: str) -> str:
        """`resident` reports `words`; returns the number of the receipt in their chat."""
        self.say(resident, words)
        return number_of(self.wait_message(resident["id"], "已受理登记"))


def calls_digest(fake: FakeTelegram) -> str:
    """The fake's calls, one a line (for failure messages)."""
    return "\n".join(
        f"{call.method} chat={call.chat_id} status={call.status} "
        f"{str(call.params.get('text') or call.params.get('callback_query_id') or '')[:60]!r}"
        for call in fake.calls
        if call.method != "getUpdates"
    )


def number_of(message: Call) -> str:
    """The request number a message is about."""
    found = NUMBER.search(message.result.get("text") or "")
    assert found, message.result
    return found.group(1)


def telegram_env(
    env: dict[str, str], fake: FakeTelegram, *, secret: str | None, committee: bool
) -> dict[str, str]:
    """`env` with Telegram on, pointed at the fake (webhook mode when `secret` is given)."""
    env = {
        **env,
        "REDESK_TELEGRAM_TOKEN": fake.token,
        "REDESK_TELEGRAM_API_URL": fake.url,
        "PTB_TIMEDELTA": "true",
    }
    if committee:
        env["REDESK_TELEGRAM_COMMITTEE_CHAT"] = str(GROUP_ID)
    if secret is not None:
        env["REDESK_PUBLIC_URL"] = PUBLIC_URL
        env["REDESK_TELEGRAM_WEBHOOK_SECRET"] = secret
    return env


def run_desk(
    directory: Path,
    database_url: str,
    *,
    webhook: bool,
    committee: bool = True,
    staff: bool = True,
    processes: tuple[tuple[str, str], ...] = (("run", "run"),),
    extra_env: dict[str, str] | None = None,
) -> Iterator[TelegramDesk]:
    """Starts the fake and the (name, verb) processes; yields once they are healthy (staff
    bound when asked); then stops the processes with SIGTERM (each must exit 0) and the fake."""
    fake = FakeTelegram().start()
    try:
        secret = secrets.token_urlsafe(24) if webhook else None
        env = telegram_env(
            base_env(directory, database_url), fake, secret=secret, committee=committee
        )
        env.update(extra_env or {})
        deployment = Deployment(directory, env)
        if not database_url.startswith("sqlite"):
            deployment.cli("db", "upgrade")
        deployment.cli("demo")
        for name, verb in processes:
            deployment.start(verb, name=name)
        for running in serve(deployment):
            desk = TelegramDesk(
                running, fake, secret, group=fake.group(GROUP_ID, "党委群") if committee else None
            )
            if staff:
                bind_staff(desk)
            yield desk
        assert not fake.errors, fake.errors
    finally:
        fake.stop()


def bind_staff(desk: TelegramDesk) -> None:
    """A worker and 城管执法 staff bind their private chats with codes from `redesk invite`."""
    worker_code, city_code = desk.deployment.invites(("worker",), ("department", CITY))
    desk.worker = desk.fake.user(2001, "王书记")
    desk.city = desk.fake.user(3001, "城管李")
    desk.say(desk.worker, f"绑定 {worker_code}")
    desk.say(desk.city, f"绑定 {city_code}")
    desk.wait_message(desk.worker["id"], "绑定成功", "党务工作者")
    desk.wait_message(desk.city["id"], "绑定成功", CITY)


def requests_of(database_url: str, user_id: int) -> list[tuple[str, str]]:
    """(number, text) of every request of a Telegram user, in the order they were made."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT r.number, r.text FROM requests r "
                    "JOIN people p ON p.id = r.requester_id "
                    "WHERE p.channel = 'telegram' AND p.external_id = :chat ORDER BY r.id"
                ),
                {"chat": str(user_id)},
            ).all()
    finally:
        engine.dispose()
    return [(row[0], row[1]) for row in rows]


def order_key(number: str) -> tuple[str, int]:
    """A request number as something that sorts by day, then by the day's sequence."""
    _, day, sequence = number.split("-")
    return day, int(sequence)


# --- polling mode ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def polling_desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelegramDesk]:
    """The embedded default (SQLite, in-process worker) polling getUpdates."""
    directory = tmp_path_factory.mktemp("redesk-e2e-tg-polling")
    yield from run_desk(directory, f"sqlite:///{directory / 'redesk.db'}", webhook=False)


def test_polling_a_request_goes_round_the_whole_cycle_in_telegram(
    polling_desk: TelegramDesk,
) -> None:
    desk, fake = polling_desk, polling_desk.fake
    assert desk.worker is not None and desk.city is not None and desk.group is not None

    # Given `redesk run` without a public URL: it dropped any webhook and polls getUpdates
    log = (desk.deployment.directory / "run.log").read_text()
    assert "channel telegram: on as @redesk_bot (polling getUpdates)" in log, log
    desk.wait_until(
        "deleteWebhook, then getUpdates",
        lambda f: f.count("deleteWebhook", ok=True) == 1 and f.count("getUpdates", ok=True) >= 1,
    )
    assert fake.webhook == {}

    # When a resident reports a broken street lamp
    resident = fake.user(1001, "张三")
    number = desk.submit(resident, "我家楼下的路灯坏了，晚上很黑")

    # Then the committee group gets the card with the committee's buttons
    card = desk.wait_message(GROUP_ID, f"【{number}】新诉求", "路灯坏了", "张三")
    assert [label for label, _ in fake.buttons(card)] == ["受理", "转单", "驳回"]

    # When a group member who is not bound presses 受理, they are refused with an alert
    stranger = fake.user(4001, "路人甲")
    update = fake.callback_update(stranger, dict(fake.buttons(card))["受理"] or "", card)
    desk.push(update)
    refusal = desk.wait_answer(update["callback_query"]["id"])
    assert refusal.params.get("show_alert") is True and "没有权限" in refusal.params["text"]

    # When the worker presses 转单 in the group, then 城管执法 in the picker sent to them
    presses = [desk.press(desk.worker, card, "转单")]
    picker = desk.wait_message(desk.worker["id"], f"【{number}】请选择转交的部门")
    presses.append(desk.press(desk.worker, picker, CITY))

    # Then the group card shows who acted, and the resident hears where it went
    edit = desk.wait_edit(card, "王书记 已转单", "已转单，待部门接收")
    assert "路人甲" not in edit.result["text"]
    desk.wait_message(desk.worker["id"], f"【{number}】已转交「{CITY}」")
    desk.wait_message(resident["id"], f"【{number}】您的诉求已转交「{CITY}」")

    # When the department's staff presses 接收, then 办结 and types the result
    forwarded = desk.wait_message(desk.city["id"], f"【{number}】转单", "王书记")
    presses.append(desk.press(desk.city, forwarded, "接收"))
    taken = desk.wait_message(desk.city["id"], f"【{number}】已接收")
    desk.wait_message(resident["id"], f"【{number}】「{CITY}」已接收")
    presses.append(desk.press(desk.city, taken, "办结"))
    desk.wait_message(desk.city["id"], f"【{number}】请输入办理结果")
    desk.say(desk.city, "已更换灯泡，恢复照明")
    desk.wait_message(desk.city["id"], f"【{number}】已办结，待党委审核")

    # And the worker approves the answer (回单)
    review = desk.wait_message(desk.worker["id"], f"【{number}】待审核回单", "已更换灯泡")
    presses.append(desk.press(desk.worker, review, "回单"))
    desk.wait_message(desk.worker["id"], f"【{number}】已回单")

    # Then the resident gets the result with the rating buttons and closes the request
    reply = desk.wait_message(resident["id"], f"【{number}】您的诉求已办结", "已更换灯泡，恢复照明")
    assert len(fake.buttons(reply)) == 6
    presses.append(desk.press(resident, reply, "已解决 · 满意"))
    desk.wait_message(resident["id"], f"【{number}】感谢您的评价")
    desk.wait_message(desk.worker["id"], f"【{number}】群众已评价：已解决 满意")

    # And every press was answered exactly once, and each card acted on shows who acted
    answered = Counter(str(call.params["callback_query_id"]) for call in fake.callback_answers())
    assert all(answered[query] == 1 for query in presses), (presses, answered)
    desk.wait_edit(picker, "王书记 已转单")
    desk.wait_edit(forwarded, "城管李 已接收")
    desk.wait_edit(taken, "城管李 已办结")
    desk.wait_edit(review, "王书记 已回单")
    desk.wait_edit(reply, "张三 已评价")

    # And the offset was confirmed: nothing is left for getUpdates
    desk.wait_until("every update confirmed", lambda f: not f.pending_updates())


# --- webhook mode ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webhook_desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelegramDesk]:
    """The embedded default (SQLite) behind a public URL: setWebhook, POST /telegram/webhook."""
    directory = tmp_path_factory.mktemp("redesk-e2e-tg-webhook")
    yield from run_desk(directory, f"sqlite:///{directory / 'redesk.db'}", webhook=True)


def test_webhook_mode_sets_the_webhook_with_the_secret(webhook_desk: TelegramDesk) -> None:
    fake = webhook_desk.fake

    assert fake.webhook["url"] == f"{PUBLIC_URL}/telegram/webhook"
    assert fake.webhook["secret_token"] == webhook_desk.secret
    assert set(fake.webhook["allowed_updates"]) >= {"message", "callback_query"}
    assert fake.count("getUpdates") == 0
    log = (webhook_desk.deployment.directory / "run.log").read_text()
    assert "channel telegram: on as @redesk_bot" in log, log


def test_the_same_update_three_times_makes_one_request_and_one_receipt(
    webhook_desk: TelegramDesk,
) -> None:
    desk, fake = webhook_desk, webhook_desk.fake
    resident = fake.user(1101, "李四")
    update = fake.text_update(resident, "小区门口的下水道堵了，污水漫到路上")

    # When Telegram delivers the same update three times
    for _ in range(3):
        desk.push(update)

    # Then there is one receipt; a later message is answered after it, and still one receipt
    number = number_of(desk.wait_message(resident["id"], "已受理登记"))
    desk.say(resident, f"查询 {number}")
    desk.wait_message(resident["id"], f"【{number}】")
    receipts = [words for words in fake.texts(resident["id"]) if "已受理登记" in words]
    assert len(receipts) == 1, receipts
    assert [
        row[0] for row in requests_of(desk.deployment.env["REDESK_DATABASE_URL"], resident["id"])
    ] == [number]


def test_a_wrong_or_missing_secret_is_refused_and_nothing_is_stored(
    webhook_desk: TelegramDesk,
) -> None:
    desk, fake = webhook_desk, webhook_desk.fake
    resident = fake.user(1201, "周七")
    update = fake.text_update(resident, "公园的长椅坏了一张")

    # When the update comes with a wrong secret, or none
    assert fake.post_webhook(desk.webhook_url, update, secret_token="wrong-secret")[0] == 403
    assert fake.post_webhook(desk.webhook_url, update, secret_token=None)[0] == 403

    # Then it was not stored: with the right secret it is a new request
    desk.push(update)
    desk.wait_message(resident["id"], "已受理登记")


def test_the_committee_handles_a_request_itself_over_the_webhook(
    webhook_desk: TelegramDesk,
) -> None:
    desk, fake = webhook_desk, webhook_desk.fake
    assert desk.worker is not None
    resident = fake.user(1301, "赵六")
    number = desk.submit(resident, "人行道的地砖松动了，老人容易绊倒")

    # When the worker presses 受理 (做单) on their card, then 办结 and types the result
    card = desk.wait_message(desk.worker["id"], f"【{number}】新诉求")
    desk.press(desk.worker, card, "受理")
    accepted = desk.wait_message(desk.worker["id"], f"【{number}】已受理（做单）")
    desk.wait_message(resident["id"], f"【{number}】党委已受理您的诉求")
    desk.press(desk.worker, accepted, "办结")
    desk.wait_message(desk.worker["id"], f"【{number}】请输入办理结果")
    desk.say(desk.worker, "已联系施工队重新铺设地砖")
    desk.wait_message(desk.worker["id"], f"【{number}】已办结，待党委审核")

    # And approves it (回单)
    review = desk.wait_message(desk.worker["id"], f"【{number}】待审核回单", "党委")
    desk.press(desk.worker, review, "回单")

    # Then the resident rates it and the request is closed
    reply = desk.wait_message(resident["id"], f"【{number}】您的诉求已办结", "重新铺设地砖")
    desk.press(resident, reply, "已解决 · 基本满意")
    desk.wait_message(resident["id"], f"【{number}】感谢您的评价（已解决 基本满意）")

    # And the group saw the card and who acted on it in the worker's chat
    desk.wait_message(GROUP_ID, f"【{number}】新诉求")
    desk.wait_message(GROUP_ID, f"【{number}】王书记已受理")


# --- production's shape: PostgreSQL, Redis, two workers ---------------------------------------


def inbox_statuses(database_url: str, keys: list[str]) -> list[tuple[str, str | None]]:
    """The status and reason of the Telegram inbox rows of these update_ids, in that order."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = {
                row[0]: (str(row[1]), row[2])
                for row in connection.execute(
                    text("SELECT natural_key, status, error FROM inbox WHERE channel = 'telegram'")
                )
            }
    finally:
        engine.dispose()
    return [rows.get(key, ("missing", None)) for key in keys]


@pytest.mark.parametrize("mode", ["polling", "webhook"])
def test_an_update_the_library_cannot_model_between_two_good_ones_blocks_nothing(
    mode: str, request: pytest.FixtureRequest
) -> None:
    desk: TelegramDesk = request.getfixturevalue(f"{mode}_desk")
    fake = desk.fake

    # Given a resident whose second update of three is a real photo message whose sizes lack
    # file_unique_id (python-telegram-bot requires it: Telegram and the library drifted apart)
    resident = fake.user(1501 if mode == "polling" else 1502, "赵六")
    bad = fake.photo_update(resident, caption="井盖的照片")
    for size in bad["message"]["photo"]:
        del size["file_unique_id"]
    updates = [
        fake.text_update(resident, "小区门口的井盖丢了"),
        bad,
        fake.text_update(resident, "帮助"),
    ]

    # When Telegram delivers the three (one getUpdates batch, or three webhook POSTs)
    for update in updates:
        desk.push(update)

    # Then both good ones are answered, in order
    desk.wait_message(resident["id"], "已受理登记")
    desk.wait_message(resident["id"], HELP_FIRST_LINE)
    if mode == "polling":
        desk.wait_until("every update confirmed", lambda f: not f.pending_updates())

    # And the bad one is kept as failed with the parser's reason
    statuses = inbox_statuses(
        desk.deployment.env["REDESK_DATABASE_URL"], [str(update["update_id"]) for update in updates]
    )
    assert [status for status, _ in statuses] == ["done", "failed", "done"], statuses
    assert "file_unique_id" in (statuses[1][1] or "")


@pytest.fixture(scope="module")
def telegram_redis_url() -> Iterator[str]:
    """Redis database 12, emptied and held exclusively for the module."""
    with held_redis(TELEGRAM_REDIS_URL) as url:
        yield url


@pytest.fixture(scope="module")
def redis_desk(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, telegram_redis_url: str
) -> Iterator[TelegramDesk]:
    """PostgreSQL, Redis, two `redesk worker`, `redesk scheduler` and `redesk run` (webhook).

    No committee group and no staff: only residents' chats get messages, so every count is
    exact. The sweeper runs often, so rows waiting for their turn are enqueued again meanwhile
    (several deliveries of one chat compete, as after a restart).
    """
    directory = tmp_path_factory.mktemp("redesk-e2e-tg-redis")
    yield from run_desk(
        directory,
        postgres_url,
        webhook=True,
        committee=False,
        staff=False,
        processes=(
            ("worker-1", "worker"),
            ("worker-2", "worker"),
            ("scheduler", "scheduler"),
            ("run", "run"),
        ),
        extra_env={
            "REDESK_REDIS_URL": telegram_redis_url,
            "REDESK_SWEEP_INTERVAL": "2",
            "REDESK_SWEEP_GRACE": "3",
        },
    )


def test_twenty_updates_from_one_chat_are_answered_in_order_by_two_workers(
    redis_desk: TelegramDesk,
) -> None:
    desk, fake = redis_desk, redis_desk.fake
    resident = fake.user(5001, "钱八")
    reports = [f"第{index}件：{index}号楼的楼道灯坏了" for index in range(1, 21)]

    # When one resident sends twenty messages in quick succession
    for report in reports:
        desk.say(resident, report)

    # Then twenty receipts arrive in their chat, their numbers growing
    receipts = [desk.wait_message(resident["id"], "已受理登记", timeout=60) for _ in reports]
    numbers = [number_of(receipt) for receipt in receipts]
    assert numbers == sorted(numbers, key=order_key) and len(set(numbers)) == 20, numbers

    # And nothing else: a later answer comes right after the twentieth receipt
    desk.say(resident, "帮助")
    desk.wait_message(resident["id"], "常用指令")
    delivered = fake.texts(resident["id"])
    assert len(delivered) == 21 and len(set(delivered)) == 21, [words[:40] for words in delivered]

    # And the requests were made in the order of the updates
    made = requests_of(desk.deployment.env["REDESK_DATABASE_URL"], resident["id"])
    assert made == list(zip(numbers, reports, strict=True))


def test_5xx_and_429_from_telegram_still_deliver_every_message_once(
    redis_desk: TelegramDesk,
) -> None:
    desk, fake = redis_desk, redis_desk.fake
    residents = [fake.user(6001 + index, f"居民{index}") for index in range(8)]
    first_call = len(fake.calls)

    def failures() -> Counter[int]:
        return Counter(
            call.status
            for call in fake.calls[first_call:]
            if call.method == "sendMessage" and not call.ok
        )

    # Given Telegram answers 500 (without sending) to the next five sendMessage
    fake.fail_next(5, 500, methods="sendMessage")

    # When eight residents report something at once
    numbers: dict[int, str] = {}
    for index, resident in enumerate(residents):
        desk.say(resident, f"{index + 1}号楼门口的井盖松动了")
    desk.wait_until("five receipts refused with 500", lambda f: failures()[500] == 5)

    # And then, while Telegram answers 429 to every send for a while, they ask for help
    fake.force_429(1, 2.5)
    for resident in residents:
        desk.say(resident, "帮助")

    # Then each gets the receipt, then the help, and a last answer after them
    for resident in residents:
        numbers[resident["id"]] = number_of(desk.wait_message(resident["id"], "已受理登记"))
        desk.wait_message(resident["id"], "常用指令")
    for resident in residents:
        desk.say(resident, f"查询 {numbers[resident['id']]}")
    for resident in residents:
        desk.wait_message(resident["id"], f"【{numbers[resident['id']]}】待受理")

    # And every message was delivered exactly once: three per chat, in order, none twice
    for resident in residents:
        delivered = fake.texts(resident["id"])
        assert (
            len(delivered) == 3
            and len(set(delivered)) == 3
            and "已受理登记" in delivered[0]
            and "常用指令" in delivered[1]
        ), (
            f"chat {resident['id']} got {[words[:40] for words in delivered]}\n"
            f"{calls_digest(fake)}\n{desk.deployment.logs()}"
        )
    assert failures()[500] == 5, failures()
    assert failures()[429] >= 1, failures()
