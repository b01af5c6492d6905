"""The console's story in a real browser, on a real `redesk run` talking to the fake Telegram
Bot API: an admin makes the accounts with the CLI, a worker sets a password through the printed
link, links a Telegram chat and works a queue of 30 requests from 10 residents in the console
(filters, search, bulk 转单, one 驳回, one request taken through 受理 -> 办结 -> 回单) and in
Telegram (受理 pressed on a card) while the residents are answered in their own channels; a
leader's dashboard shows the figures of `redesk stats --format json`. Then the same pages at a
phone's width have no horizontal scroll.

Nothing is timed: every wait is for a condition, with generous limits (tests/utils/console.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.client import WebChat
from tests.e2e.test_telegram_story import TelegramDesk, number_of, run_desk
from tests.fakes.telegram import Call, FakeTelegram
from tests.utils.console import (
    PATIENCE_MS,
    PATIENCE_S,
    log_in,
    new_page,
    no_horizontal_scroll,
    number_in,
    photographed_on_failure,
    set_password,
    setup_link,
    wait_web,
)

pytestmark = pytest.mark.browser

# Playwright's expect waits as long as the other waits of the story (the machine may be loaded).
expect.set_options(timeout=PATIENCE_MS)


#: Passwords that pass every rule.
WORKER_PASSWORD = "锦华路-worker-2026"
LEADER_PASSWORD = "锦华路-leader-2026"
DEPARTMENT_PASSWORD = "锦华路-department-2026"

#: The department made for the story (`redesk departments add`) and its staff.
DEPARTMENT = "社区服务站"

#: The worker's Telegram user: its chat name is not the account's name on purpose.
WORKER_TG_ID = 5001
WORKER_TG_NAME = "小李手机"

#: The phone a Telegram resident shares (their own contact card), and its search form.
RESIDENT_PHONE = "+8613912340001"
PHONE_SEARCH = "13912340001"

#: The three requests of each resident: the first two words name a category without a
#: department of its own (so each request waits for the committee: 待受理), the third text is
#: each resident's own.
CATEGORIES = ("市政设施", "物业小区", "政策咨询")
TEXTS = (
    "锦华路{n}号门口的路灯坏了好几天，晚上出行很不方便",
    "锦华路{n}号单元门禁坏了，外人随意进出，请物业尽快修理",
    "想咨询一下锦华路{n}号的居住证明怎么办理，需要带什么材料",
)

#: The 驳回 reason and the 办结 result the worker types.
REJECT_REASON = "该事项属于区政务服务中心受理范围，请携带身份证前往咨询"
RESULT = "已更换锦华路的路灯灯泡，经夜间复查照明正常"


@dataclass
class Resident:
    """One resident: a Telegram user or a web desk identity, and their requests' numbers."""

    name: str
    telegram: dict[str, Any] | None = None
    web: WebChat | None = None
    numbers: list[str] | None = None

    @property
    def channel(self) -> str:
        return "telegram" if self.telegram is not None else "web"


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelegramDesk]:
    """`redesk run` on the embedded default (SQLite) polling the fake Telegram API, no
    committee group (cards go to each worker's chat), nobody bound yet."""
    directory = tmp_path_factory.mktemp("redesk-console-story")
    yield from run_desk(
        directory,
        f"sqlite:///{directory / 'redesk.db'}",
        webhook=False,
        committee=False,
        staff=False,
    )


@pytest.fixture
def shots(request: pytest.FixtureRequest, tmp_path: Path) -> list[Any]:
    """The pages to photograph (into the test's tmp dir) if the test fails."""
    return photographed_on_failure(request, tmp_path)


# --- waiting on chats ------------------------------------------------------------------------


def tg_message(desk: TelegramDesk, chat_id: int, *needles: str) -> Call:
    return desk.wait_message(chat_id, *needles, timeout=PATIENCE_S)


def cards_by_number(fake: FakeTelegram, chat_id: int) -> Counter[str]:
    """How many 新诉求 cards each request got in a chat."""
    return Counter(
        number_of(call)
        for call in fake.sent(chat_id)
        if "】新诉求" in (call.result.get("text") or "")
    )


def card_of(fake: FakeTelegram, number: str) -> Call:
    """The 新诉求 card of request `number` in the worker's Telegram chat."""
    return next(
        call
        for call in fake.sent(WORKER_TG_ID)
        if f"【{number}】新诉求" in (call.result.get("text") or "")
    )


def card_edit(desk: TelegramDesk, card: Call, needle: str) -> Call:
    """The edit of `card` whose text holds `needle` (waited for); a failure shows the edits."""
    message_id = card.result["message_id"]
    found: list[Call] = []

    def edited(fake: FakeTelegram) -> bool:
        found[:] = [
            call
            for call in fake.edits(WORKER_TG_ID)
            if call.params.get("message_id") == message_id
            and needle in (call.result.get("text") or "")
        ]
        return bool(found)

    if not desk.fake.wait_for(edited, PATIENCE_S):
        texts = [
            call.result.get("text")
            for call in desk.fake.edits(WORKER_TG_ID)
            if call.params.get("message_id") == message_id
        ]
        raise AssertionError(f"no edit of card {message_id} with {needle!r}; its edits: {texts}")
    return found[0]


# --- the story -------------------------------------------------------------------------------


def test_a_worker_runs_the_day_from_the_console_and_telegram_and_a_leader_reads_the_figures(
    browser: Any, desk: TelegramDesk, shots: list[Any]
) -> None:
    with desk.deployment.http() as http:
        _story(browser, desk, shots, http)


def _story(browser: Any, desk: TelegramDesk, shots: list[Any], http: httpx.Client) -> None:
    deployment, fake, base = desk.deployment, desk.fake, desk.deployment.base_url

    # 1. Given an admin who makes the accounts with the CLI: a worker, a leader, and the staff
    # of a department made first; the printed setup links are the only way in
    worker_link = setup_link(
        deployment.cli("staff", "add", "li", "--name", "李书记", "--role", "worker")
    )
    leader_link = setup_link(
        deployment.cli("staff", "add", "zhang", "--name", "张主任", "--role", "leader")
    )
    deployment.cli("departments", "add", DEPARTMENT, "--kind", "职能部门")
    department_link = setup_link(
        deployment.cli(
            "staff",
            "add",
            "zhao",
            "--name",
            "赵干事",
            "--role",
            "department",
            "--department",
            DEPARTMENT,
        )
    )
    listed = deployment.cli("staff", "list")
    assert "li" in listed and "zhang" in listed and "zhao" in listed

    # 2. When the worker opens their link, sets a password and logs in
    worker = new_page(browser, shots)
    set_password(worker, worker_link, WORKER_PASSWORD)
    log_in(worker, base, "li", WORKER_PASSWORD, then="/console/account")
    expect(worker.locator("#account-facts")).to_contain_text("李书记")
    worker.locator("#chats-empty").wait_for()

    # And takes a link code on 我的账号 and sends 绑定 <code> from their Telegram chat
    worker_tg = fake.user(WORKER_TG_ID, WORKER_TG_NAME)
    code = make_link_code(worker)
    desk.say(worker_tg, f"绑定 {code}")
    tg_message(desk, WORKER_TG_ID, "关联成功")

    # And links a web desk chat too, so that the account has two chats to choose from
    worker_web = WebChat.open(http, "李书记的网页")
    worker_web.send(f"绑定 {make_link_code(worker)}")
    wait_web(worker_web, "关联成功")

    # Then the account page lists both; they choose Telegram for notifications
    worker.reload()
    telegram_row = worker.locator("#chats tr", has_text=WORKER_TG_NAME)
    expect(worker.locator("#chats tr", has_text="李书记的网页")).to_be_visible()
    telegram_row.locator("button", has_text="设为通知").click()
    expect(telegram_row).to_contain_text("接收通知")
    expect(worker.locator("#chats tr", has_text="李书记的网页")).not_to_contain_text("接收通知")

    # 3. Given the worker's queue open on 待受理, with nothing yet
    worker.goto(f"{base}/console")
    expect(worker.locator("#count-todo_accept")).to_have_text("0")
    worker.evaluate("() => { window.__sameDocument = true; }")

    # When 10 residents, on Telegram and on the web desk, send 30 requests in all
    residents = [
        Resident(f"居民{i}", telegram=fake.user(7000 + i, f"居民{i}") if i % 2 == 0 else None)
        for i in range(10)
    ]
    for resident in residents:
        if resident.telegram is None:
            resident.web = WebChat.open(http, resident.name)
        resident.numbers = []
    # one of them shares their own phone number first
    phone_owner = residents[0]
    assert phone_owner.telegram is not None
    desk.push(
        fake.contact_update(
            phone_owner.telegram,
            RESIDENT_PHONE,
            phone_owner.name,
            user_id=phone_owner.telegram["id"],
        )
    )
    tg_message(desk, phone_owner.telegram["id"], RESIDENT_PHONE)
    for round_ in range(3):
        for i, resident in enumerate(residents):
            words = TEXTS[round_].format(n=10 * i + round_ + 1)
            if resident.telegram is not None:
                desk.say(resident.telegram, words)
            else:
                assert resident.web is not None
                resident.web.send(words)
        # each gets the receipt of this round's request before the next round
        for resident in residents:
            assert resident.numbers is not None
            if resident.telegram is not None:
                receipt = tg_message(
                    desk, resident.telegram["id"], "已受理登记", CATEGORIES[round_]
                )
                resident.numbers.append(number_of(receipt))
            else:
                assert resident.web is not None
                message = wait_web(resident.web, "已受理登记", CATEGORIES[round_])
                resident.numbers.append(number_in(message.text))
    numbers = [n for r in residents for n in (r.numbers or [])]
    assert len(set(numbers)) == 30

    # Then the worker's Telegram chat gets exactly one card per request (not one per chat)
    desk.wait_until(
        "a card of every request in the worker's Telegram chat",
        lambda f: set(cards_by_number(f, WORKER_TG_ID)) >= set(numbers),
        timeout=PATIENCE_S,
    )
    cards = cards_by_number(fake, WORKER_TG_ID)
    assert set(cards) == set(numbers) and set(cards.values()) == {1}, cards
    # and the web desk chat they did not choose gets none
    worker_web.poll()
    assert not [t for t in worker_web.texts() if "】新诉求" in t], worker_web.texts()

    # And the queue page shows 待受理 30 without being reloaded
    expect(worker.locator("#count-todo_accept")).to_have_text("30")
    expect(worker.locator("#queue-total")).to_have_text("共 30 件")
    expect(worker.locator("#queue-rows tr.queue-row")).to_have_count(30)
    assert worker.evaluate("() => window.__sameDocument === true")

    # 4. When the worker filters by a category
    worker.select_option("#queue-category", label="市政设施")
    expect(worker.locator("#queue-total")).to_have_text("共 10 件")
    categories = worker.locator("#queue-rows td[data-label='类别']").all_text_contents()
    assert categories == ["市政设施"] * 10
    worker.click("#queue-reset")
    expect(worker.locator("#queue-total")).to_have_text("共 30 件")

    # And searches a number, then a resident's phone
    wanted = residents[3].numbers[2]  # type: ignore[index]
    search(worker, wanted)
    expect(worker.locator("#queue-total")).to_have_text("共 1 件")
    expect(worker.locator("#queue-rows tr.queue-row")).to_have_attribute("data-number", wanted)
    search(worker, PHONE_SEARCH)
    expect(worker.locator("#queue-total")).to_have_text("共 3 件")
    assert shown_numbers(worker) == set(phone_owner.numbers or [])
    worker.click("#queue-reset")
    expect(worker.locator("#queue-total")).to_have_text("共 30 件")

    # And selects four requests (two from Telegram, two from the web desk) and bulk 转单s them
    forwarded = [residents[i].numbers[1] for i in range(4)]  # type: ignore[index]
    for number in forwarded:
        worker.locator(f"#queue-rows tr[data-number='{number}'] input.queue-pick-box").check()
    expect(worker.locator("#queue-selected")).to_have_text("已选 4 件")
    worker.select_option("#bulk-department", label=DEPARTMENT)
    worker.click("#bulk-forward")

    # Then each is answered on its own
    results = worker.locator("#queue-results li.queue-result")
    expect(results).to_have_count(4)
    expect(worker.locator("#queue-results li.queue-result.is-ok")).to_have_count(4)
    assert {results.nth(i).get_attribute("data-number") for i in range(4)} == set(forwarded)
    expect(worker.locator("#count-todo_accept")).to_have_text("26")
    expect(worker.locator("#count-forwarded")).to_have_text("4")
    # and their cards in the worker's Telegram chat show the new state, without buttons left
    for number in forwarded:
        card = card_of(fake, number)
        card_edit(desk, card, "已转单，待部门接收")
        now = next(
            m for m in fake.messages(WORKER_TG_ID) if m["message_id"] == card.result["message_id"]
        )
        assert fake.buttons(now) == [], now

    # When they 驳回 one with a reason on its page
    rejected = residents[5].numbers[2]  # type: ignore[index]
    open_request(worker, base, rejected)
    worker.click("#action-reject")
    worker.fill("#action-text", REJECT_REASON)
    worker.click("#action-submit")
    expect(worker.locator("#request-state")).to_have_text("不予受理")
    expect(worker.locator("#history")).to_contain_text(REJECT_REASON)

    # And take one through 受理 -> 办结 (with the result) -> 回单
    replied = residents[4].numbers[0]  # type: ignore[index]
    open_request(worker, base, replied)
    worker.click("#action-accept")
    expect(worker.locator("#request-state")).to_have_text("办理中（党委做单）")
    worker.click("#action-complete")
    worker.fill("#action-text", RESULT)
    worker.click("#action-submit")
    expect(worker.locator("#request-state")).to_have_text("待审核回单")
    worker.click("#action-approve")
    expect(worker.locator("#request-state")).to_have_text("已回单，待评价")

    # When they press 受理 on a card in Telegram
    pressed = residents[7].numbers[0]  # type: ignore[index]
    card = card_of(fake, pressed)
    desk.press(worker_tg, card, "受理")
    tg_message(desk, WORKER_TG_ID, f"【{pressed}】已受理")
    edit = card_edit(desk, card, "李书记 已受理")
    assert WORKER_TG_NAME not in edit.result["text"]

    # Then the console shows it as 我在办, and its history names 李书记 (not the chat's name)
    worker.goto(f"{base}/console")
    worker.click("#tab-mine")
    expect(worker.locator("#tab-mine")).to_have_attribute("aria-selected", "true")
    expect(worker.locator("#queue-rows tr.queue-row")).to_have_count(1)
    expect(worker.locator("#queue-rows tr.queue-row")).to_have_attribute("data-number", pressed)
    expect(worker.locator("#count-mine")).to_have_text("1")
    expect(worker.locator("#count-todo_accept")).to_have_text("23")
    open_request(worker, base, pressed)
    expect(worker.locator("#request-state")).to_have_text("办理中（党委做单）")
    accepted_event = worker.locator("#history .request-event", has_text="受理").filter(
        has_text="李书记"
    )
    expect(accepted_event).to_have_count(1)
    expect(worker.locator("#history")).not_to_contain_text(WORKER_TG_NAME)

    # 5. And the residents are answered in their own channels
    for i in range(4):
        resident, number = residents[i], forwarded[i]
        told = f"【{number}】您的诉求已转交「{DEPARTMENT}」办理"
        if resident.telegram is not None:
            tg_message(desk, resident.telegram["id"], told)
        else:
            assert resident.web is not None
            wait_web(resident.web, told)
    assert residents[5].web is not None
    wait_web(residents[5].web, f"【{rejected}】很抱歉，您的诉求不予受理", REJECT_REASON)
    assert residents[4].telegram is not None
    answer = tg_message(desk, residents[4].telegram["id"], f"【{replied}】您的诉求已办结", RESULT)
    labels = [label for label, _ in fake.buttons(answer)]
    assert labels == [
        f"{solved} · {level}"
        for solved in ("已解决", "未解决")
        for level in ("满意", "基本满意", "不满意")
    ]
    assert residents[7].web is not None
    wait_web(residents[7].web, f"【{pressed}】党委已受理您的诉求")
    # (the receipts were waited for above: one per request, in the channel it came from)
    for resident in residents:
        if resident.telegram is not None:
            receipts = [t for t in fake.texts(resident.telegram["id"]) if "已受理登记" in t]
        else:
            assert resident.web is not None
            receipts = [t for t in resident.web.texts() if "已受理登记" in t]
        assert [number_in(t) for t in receipts] == resident.numbers
    # and the worker's chosen chat got still one card per request
    assert set(cards_by_number(fake, WORKER_TG_ID).values()) == {1}

    # And the department's staff, logged in through their own link, find exactly the four
    # forwarded requests waiting for them (待接收), and nothing else of the centre's
    staff = new_page(browser, shots)
    set_password(staff, department_link, DEPARTMENT_PASSWORD)
    log_in(staff, base, "zhao", DEPARTMENT_PASSWORD, then="/console")
    expect(staff.locator("#count-forwarded")).to_have_text("4")
    expect(staff.locator("#tab-forwarded")).to_have_attribute("aria-selected", "true")
    expect(staff.locator("#queue-rows tr.queue-row")).to_have_count(4)
    assert shown_numbers(staff) == set(forwarded)
    expect(staff.locator("#count-all")).to_have_text("4")

    # 6. When the leader sets their password, logs in and opens 数据看板
    leader = new_page(browser, shots)
    set_password(leader, leader_link, LEADER_PASSWORD)
    log_in(leader, base, "zhang", LEADER_PASSWORD, then="/console")
    leader.click("#console-header a:has-text('数据看板')")
    leader.wait_for_url("**/console/dashboard*")
    leader.locator("body[data-loaded='true']").wait_for()

    # Then the page shows the 受理量 and 三率 of `redesk stats --format json` for its filters
    period_from = leader.input_value("#from")
    period_to = leader.input_value("#to")
    centre_code = leader.evaluate("() => Console.me().then((me) => me.centre.code)")
    report = json.loads(
        deployment.cli(
            "stats",
            "--format",
            "json",
            "--from",
            period_from,
            "--to",
            period_to,
            "--centre",
            centre_code,
        )
    )
    totals = report["totals"]
    assert totals["received"] == 30
    expect(leader.locator("#figure-received .dashboard-figure-value")).to_have_text("30")
    for key in ("response_rate", "resolution_rate", "satisfaction_rate"):
        rate = totals[key]
        shown = "—" if rate["value"] is None else f"{rate['value'] * 100:.1f}%"
        expect(leader.locator(f"#figure-{key} .dashboard-figure-value")).to_have_text(shown)
        expect(leader.locator(f"#figure-{key} .dashboard-figure-detail")).to_contain_text(
            f"{rate['numerator']}/{rate['denominator']}"
        )

    assert worker.errors == [] and staff.errors == [] and leader.errors == []


def make_link_code(page: Any) -> str:
    """A fresh 关联聊天账号 code from the account page."""
    before = (
        page.locator("#link-code").inner_text().strip()
        if page.locator("#link-code").count()
        else ""
    )
    page.click("#make-code")
    expect(page.locator("#code-how")).to_contain_text("绑定 ")
    if before:
        expect(page.locator("#link-code")).not_to_have_text(before)
    code: str = page.locator("#link-code").inner_text().strip()
    assert code
    return code


def search(page: Any, words: str) -> None:
    """Types `words` in the queue's search box and submits it."""
    page.fill("#queue-q", words)
    page.press("#queue-q", "Enter")


def shown_numbers(page: Any) -> set[str]:
    """The numbers of the rows the queue shows."""
    rows = page.locator("#queue-rows tr.queue-row")
    return {rows.nth(i).get_attribute("data-number") or "" for i in range(rows.count())}


def open_request(page: Any, base: str, number: str) -> None:
    """Opens a request's page and waits for it to show."""
    page.goto(f"{base}/console/requests/{number}")
    expect(page.locator("#request-number")).to_have_text(number)


# --- phone width -----------------------------------------------------------------------------


def test_the_console_pages_have_no_horizontal_scroll_at_phone_width(
    browser: Any, desk: TelegramDesk, shots: list[Any]
) -> None:
    deployment, base = desk.deployment, desk.deployment.base_url
    # Given a worker and a leader with passwords, and a request in the queue
    worker_link = setup_link(
        deployment.cli("staff", "add", "wu", "--name", "吴书记", "--role", "worker")
    )
    leader_link = setup_link(
        deployment.cli("staff", "add", "qian", "--name", "钱主任", "--role", "leader")
    )
    with deployment.http() as http:
        resident = WebChat.open(http, "手机用户")
        resident.send("锦华路99号的井盖松动了，走上去会响，担心有人踩空")
        number = number_in(wait_web(resident, "已受理登记").text)

    # When each console page is opened on a 375 px wide screen
    for username, link, password, paths in (
        (
            "wu",
            worker_link,
            WORKER_PASSWORD,
            ("/console", f"/console/requests/{number}", "/console/account"),
        ),
        ("qian", leader_link, LEADER_PASSWORD, ("/console/dashboard",)),
    ):
        page = new_page(browser, shots, width=375, height=740)
        page.goto(link)
        assert_fits(page, "/console/setup")
        set_password(page, link, password)
        page.goto(f"{base}/console/login")
        page.locator("#login-submit").wait_for()
        assert_fits(page, "/console/login")
        log_in(page, base, username, password, then=paths[0])
        for path in paths:
            if page.url != f"{base}{path}":
                page.goto(f"{base}{path}")
            ready(page, path, number)
            # Then nothing is wider than the screen
            assert_fits(page, path)
        assert page.errors == []


def ready(page: Any, path: str, number: str) -> None:
    """Waits until the page at `path` shows its content."""
    if path == "/console":
        expect(page.locator(f"#queue-rows tr[data-number='{number}']")).to_be_visible()
    elif path.startswith("/console/requests/"):
        expect(page.locator("#request-number")).to_have_text(number)
        page.locator("#history .request-event").first.wait_for()
    elif path == "/console/account":
        expect(page.locator("#account-facts")).to_contain_text("吴书记")
    elif path == "/console/dashboard":
        page.locator("body[data-loaded='true']").wait_for()


def assert_fits(page: Any, what: str) -> None:
    page.wait_for_load_state("load")
    width, viewport = no_horizontal_scroll(page)
    assert width <= viewport, f"{what} is {width} px wide on a {viewport} px screen"
