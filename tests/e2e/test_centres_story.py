"""A network of centres end to end, in production's shape: PostgreSQL, Redis, `redesk worker`,
`redesk scheduler` and `redesk run` with Telegram (webhook, the fake Bot API) and WeChat (safe
mode, the fake WeChat API) on.

One district (锦江区) with two communities (书院街, 合江亭) and a 商圈 (春熙路) under it, made with
`redesk centres add` and `redesk centres import`; a worker in each of the four centres, a
district leader and the district's 城管执法 with its staff, all on the web desk and bound with
codes from `redesk invite ... --centre`. Residents come in by the three doors a centre has: the
web link (`POST /api/web/session {"centre": CODE}`, as /desk?centre=CODE does), the Telegram
deep link (`/start CODE` through the webhook) and the WeChat QR scene (subscribe with EventKey
`qrscene_CODE`, signed and encrypted).

The module's stories share the deployment; each has its own residents and requests, and each
writes down which centre holds its requests at the end (`Network.held`), so the figures of the
last story are checked against what the stories did, whichever of them ran.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.texts import render
from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment, base_env, serve
from tests.fakes.telegram import FakeTelegram
from tests.fakes.wechat import Callback, FakeWeChat, new_openid

#: Seconds one step of a story may take on Telegram or WeChat (a receipt, an answer).
STEP = 30.0

#: The public URL of the deployment; Telegram's webhook is set below it.
PUBLIC_URL = "https://redesk.example"

#: What /wechat answers once a callback is stored.
SUCCESS = (200, b"success")

#: A request number in a message, e.g. 【SQ-20260101-0001】.
NUMBER = re.compile(r"【(SQ-\d{8}-\d{4,})】")

#: The district and its centres: code -> name.
DISTRICT = "jinjiang"
SHUYUAN = "shuyuan"
HEJIANG = "hejiang"
CHUNXI = "chunxi"
NAMES: dict[str, str] = {
    DISTRICT: "锦江区党群服务中心",
    SHUYUAN: "书院街社区党群服务中心",
    HEJIANG: "合江亭社区党群服务中心",
    CHUNXI: "春熙路商圈党群服务中心",
}

#: The district's centres as `redesk centres import` reads them (line 1 is the header).
CENTRES_CSV = (
    "code,name,level,parent\n"
    f"{SHUYUAN},{NAMES[SHUYUAN]},社区,{DISTRICT}\n"
    f"{HEJIANG},{NAMES[HEJIANG]},社区,{DISTRICT}\n"
    f"{CHUNXI},{NAMES[CHUNXI]},商圈,{DISTRICT}\n"
)

#: The district's department, offered for 转单 in every centre below it.
CITY = "城管执法"

#: Telegram user ids of the residents on Telegram.
_telegram_ids = itertools.count(7001)


def says(key: str, **params: Any) -> str:
    """A catalogue sentence as users see it."""
    return render(key, params).text


def unknown(number: str) -> str:
    """The answer to a number nobody may see (or that does not exist)."""
    return says("error.unknown_request", number=number)


def number_of(words: str) -> str:
    """The request number a message is about."""
    found = NUMBER.search(words)
    assert found, words
    return found.group(1)


@dataclass
class Network:
    """The running deployment, the fakes it talks to, its staff by centre code and the ledger
    of where each request of the stories is held."""

    deployment: Deployment
    http: httpx.Client
    telegram: FakeTelegram
    wechat: FakeWeChat
    secret: str
    #: The worker of each centre (by code) on the web desk.
    workers: dict[str, WebChat] = field(default_factory=dict)
    leader: WebChat | None = None
    #: The district's 城管执法 staff.
    city: WebChat | None = None
    #: request number -> the code of the centre that holds it at the end of its story.
    held: dict[str, str] = field(default_factory=dict)
    #: Numbers of requests the district's 城管执法 was forwarded.
    forwarded: set[str] = field(default_factory=set)
    #: Telegram (chat, message_id) and WeChat (openid, index) already returned by a wait.
    tg_matched: set[tuple[int, int]] = field(default_factory=set)
    wx_matched: set[tuple[str, int]] = field(default_factory=set)

    def staff(self) -> list[WebChat]:
        """Every worker, the leader and the department's staff."""
        assert self.leader is not None and self.city is not None
        return [*self.workers.values(), self.leader, self.city]

    # --- residents on the web desk ------------------------------------------------------

    def web_resident(self, name: str, code: str) -> WebChat:
        """A new identity from a centre's link (the page posts {"centre": CODE})."""
        response = self.http.post("/api/web/session", json={"name": name, "centre": code})
        assert response.status_code == 201, response.text
        assert response.json()["centre"]["code"] == code
        return WebChat(http=self.http, token=response.json()["token"], name=name)

    def web_submit(self, resident: WebChat, words: str) -> str:
        """`resident` reports `words` on the web desk; the number of their receipt."""
        resident.send(words)
        return resident.wait_for("已受理登记").number.strip("【】")

    # --- residents on Telegram ----------------------------------------------------------

    def tg_resident(self, name: str, code: str) -> dict[str, Any]:
        """A new Telegram user who opened a centre's deep link (`/start CODE`)."""
        user = self.telegram.user(next(_telegram_ids), name)
        self.tg_push(self.telegram.command_update(user, "start", code))
        self.tg_wait(user, says("centre.entered", centre=NAMES[code]))
        return user

    def tg_push(self, update: dict[str, Any]) -> None:
        """Delivers an update through the real server's webhook, with the secret."""
        url = f"{self.deployment.base_url}/telegram/webhook"
        status, body = self.telegram.post_webhook(url, update, secret_token=self.secret)
        assert status == 200, f"webhook answered {status}: {body}\n{self.deployment.logs()}"

    def tg_say(self, user: dict[str, Any], words: str) -> None:
        """`user` types `words` in their private chat."""
        self.tg_push(self.telegram.text_update(user, words))

    def tg_wait(self, user: dict[str, Any], *needles: str) -> str:
        """The first message to `user` not returned before that holds every needle."""
        chat = int(user["id"])
        found: list[str] = []

        def arrived(fake: FakeTelegram) -> bool:
            for call in fake.sent(chat):
                key = (chat, int(call.result["message_id"]))
                words = call.result.get("text") or ""
                if key not in self.tg_matched and all(needle in words for needle in needles):
                    self.tg_matched.add(key)
                    found.append(words)
                    return True
            return False

        assert self.telegram.wait_for(arrived, STEP), (
            f"no Telegram message with {needles} to {chat} within {STEP:g} s; it got "
            f"{self.telegram.texts(chat)}\n{self.deployment.logs()}"
        )
        return found[0]

    def tg_submit(self, user: dict[str, Any], words: str) -> str:
        """`user` reports `words` on Telegram; the number of their receipt."""
        self.tg_say(user, words)
        return number_of(self.tg_wait(user, "已受理登记"))

    # --- residents on WeChat ------------------------------------------------------------

    def wx_post(self, callback: Callback) -> None:
        """POSTs a callback to /wechat the way WeChat does; it must be stored."""
        response = self.http.post(
            f"{self.deployment.base_url}/wechat",
            params=callback.params,
            content=callback.body,
            timeout=STEP,
            headers={"Content-Type": "text/xml"},
        )
        answer = (response.status_code, response.content)
        assert answer == SUCCESS, f"/wechat answered {answer}\n{self.deployment.logs()}"

    def wx_resident(self, code: str) -> str:
        """A new follower who scanned a centre's QR code (subscribe, EventKey qrscene_CODE)."""
        openid = new_openid()
        self.wx_post(self.wechat.event(openid, "subscribe", key=f"qrscene_{code}", ticket="T1"))
        self.wx_wait(openid, says("wechat.welcome_centre", centre=NAMES[code]))
        return openid

    def wx_wait(self, openid: str, *needles: str) -> str:
        """The first customer-service text to `openid` not returned before with every needle."""
        found: list[int] = []

        def arrived(fake: FakeWeChat) -> bool:
            for index, words in enumerate(fake.texts(openid)):
                if (openid, index) not in self.wx_matched and all(n in words for n in needles):
                    found.append(index)
                    return True
            return False

        assert self.wechat.wait_for(arrived, STEP), (
            f"no WeChat text with {needles} to {openid} within {STEP:g} s; it got "
            f"{self.wechat.texts(openid)}\n{self.deployment.logs()}"
        )
        self.wx_matched.add((openid, found[0]))
        return self.wechat.texts(openid)[found[0]]

    def wx_submit(self, openid: str, words: str) -> str:
        """`openid` reports `words` on WeChat; the number of their receipt."""
        self.wx_post(self.wechat.text(openid, words))
        return number_of(self.wx_wait(openid, "已受理登记"))


def network_env(
    directory: Path, database_url: str, redis_url: str, telegram: FakeTelegram, wechat: FakeWeChat
) -> tuple[dict[str, str], str]:
    """The environment of every process (Telegram by webhook, WeChat in safe mode) and the
    webhook's secret."""
    secret = secrets.token_urlsafe(24)
    env = {
        **base_env(directory, database_url),
        **wechat.settings_env(),
        "REDESK_REDIS_URL": redis_url,
        "REDESK_MEDIA_DIR": str(directory / "media"),
        "REDESK_TELEGRAM_TOKEN": telegram.token,
        "REDESK_TELEGRAM_API_URL": telegram.url,
        "REDESK_PUBLIC_URL": PUBLIC_URL,
        "REDESK_TELEGRAM_WEBHOOK_SECRET": secret,
        "PTB_TIMEDELTA": "true",
    }
    return env, secret


def make_centres(deployment: Deployment) -> None:
    """The district by `centres add`, its three centres by `centres import`, its 城管执法."""
    added = deployment.cli("centres", "add", DISTRICT, NAMES[DISTRICT], "--level", "区")
    assert DISTRICT in added
    csv = deployment.directory / "centres.csv"
    csv.write_text(CENTRES_CSV, encoding="utf-8")
    deployment.cli("centres", "import", str(csv))
    deployment.cli("departments", "add", CITY, "--centre", DISTRICT)


def bind_staff(net: Network) -> None:
    """A worker of each centre, the district's leader and its 城管执法 staff bind on the web
    desk with codes from `redesk invite ... --centre`."""
    codes = net.deployment.invites(
        *(("worker", "--centre", code) for code in NAMES),
        ("leader", "--centre", DISTRICT),
        ("department", CITY, "--centre", DISTRICT),
    )
    chats = [WebChat.open(net.http, f"{code}-worker") for code in NAMES]
    leader, city = WebChat.open(net.http, "区刘主任"), WebChat.open(net.http, "城管小陈")
    for chat, code in zip([*chats, leader, city], codes, strict=True):
        chat.send(f"绑定 {code}")
    for chat in chats:
        chat.wait_for("绑定成功", "党务工作者")
    leader.wait_for("绑定成功")
    city.wait_for("绑定成功", CITY)
    net.workers = dict(zip(NAMES, chats, strict=True))
    net.leader, net.city = leader, city


@pytest.fixture(scope="module")
def net(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, e2e_redis_url: str
) -> Iterator[Network]:
    """The district's network on PostgreSQL and Redis with `redesk worker`, `redesk scheduler`
    and `redesk run`, Telegram and WeChat on; its staff bound."""
    telegram = FakeTelegram().start()
    wechat = FakeWeChat(safe=True).start()
    try:
        directory = tmp_path_factory.mktemp("redesk-e2e-centres")
        env, secret = network_env(directory, postgres_url, e2e_redis_url, telegram, wechat)
        deployment = Deployment(directory, env)
        deployment.cli("db", "upgrade")
        deployment.cli("demo")
        make_centres(deployment)
        for running in serve(deployment, "worker", "scheduler", "run"):
            with running.http() as http:
                network = Network(running, http, telegram, wechat, secret)
                bind_staff(network)
                yield network
        assert not telegram.errors, telegram.errors
        assert not wechat.errors, wechat.errors
    finally:
        wechat.stop()
        telegram.stop()


# --- the tree as the CLI shows it --------------------------------------------------------------


def test_the_centres_list_shows_the_district_over_its_three_centres_with_their_staff(
    net: Network,
) -> None:
    # When the administrator lists the centres
    listing = net.deployment.cli("centres", "list")

    # Then the district and the three centres below it are there, each by code and name
    lines = listing.splitlines()
    for code, name in NAMES.items():
        assert any(code in line and name in line for line in lines), listing

    # And each centre's line comes after the district's (it is drawn as a tree)
    where = {code: next(i for i, line in enumerate(lines) if code in line) for code in NAMES}
    assert all(where[DISTRICT] < where[code] for code in (SHUYUAN, HEJIANG, CHUNXI)), listing

    # And the staff bound by the invitations count where they were invited: the district's
    # worker, leader and 城管执法 staff, one worker in each centre below it
    staff = {code: 3 if code == DISTRICT else 1 for code in NAMES}
    assert {code: f"人员 {staff[code]}" in lines[where[code]] for code in NAMES} == dict.fromkeys(
        NAMES, True
    ), listing


# --- isolation: each request reaches exactly its centre ----------------------------------------


def test_each_residents_request_reaches_exactly_the_worker_of_the_centre_they_came_through(
    net: Network,
) -> None:
    # Given residents who came in by 书院街's web link, 合江亭's Telegram deep link and
    # 春熙路's WeChat QR code
    web = net.web_resident("张三", SHUYUAN)
    tg = net.tg_resident("李四", HEJIANG)
    wx = net.wx_resident(CHUNXI)

    # When each reports a problem
    numbers = {
        SHUYUAN: net.web_submit(web, "书院街12号楼下的路灯坏了，晚上很黑"),
        HEJIANG: net.tg_submit(tg, "合江亭边的路面坑洼不平，下雨就积水"),
        CHUNXI: net.wx_submit(wx, "春熙路步行街的井盖松动了，行人容易绊倒"),
    }
    net.held.update({number: code for code, number in numbers.items()})

    # Then each centre's worker gets the card of its own request, with the committee's buttons
    # and 上报 (each has the district above it; nothing below it)
    cards = {
        code: net.workers[code].wait_for(f"【{number}】新诉求") for code, number in numbers.items()
    }
    assert "路灯坏了" in cards[SHUYUAN].text and "路面坑洼" in cards[HEJIANG].text
    assert "井盖松动" in cards[CHUNXI].text
    assert {code: card.labels for code, card in cards.items()} == {
        code: ["受理", "转单", "驳回", "上报"] for code in numbers
    }

    # And the workers of every other centre (siblings and the district) cannot find it: 查询
    # and 受理 are answered as for a number that does not exist
    for code, number in numbers.items():
        for other in (SHUYUAN, HEJIANG, CHUNXI, DISTRICT):
            if other == code:
                continue
            worker = net.workers[other]
            worker.ask(f"查询 {number}", unknown(number))
            worker.ask(f"受理 {number}", unknown(number))

    # And none of them got anything else about it, nor did the leader or the department
    # (every card was queued with its request, before those answers)
    for code, number in numbers.items():
        for chat in net.staff():
            if chat is net.workers[code]:
                continue
            chat.poll(wait=0)
            about = [t for t in chat.texts() if number in t and t != unknown(number)]
            assert about == [], (chat.name, about)

    # And the 受理 they tried changed nothing: each request still waits for its own worker
    for code, number in numbers.items():
        net.workers[code].ask(f"查询 {number}", f"【{number}】待受理")


# --- 上报: a community sends a request up to the district ----------------------------------------


def test_a_community_worker_refers_a_request_up_and_the_district_worker_handles_it(
    net: Network,
) -> None:
    community, district = net.workers[SHUYUAN], net.workers[DISTRICT]

    # Given a resident of 书院街 on Telegram and their request on 书院街's worker's desk
    resident = net.tg_resident("王五", SHUYUAN)
    number = net.tg_submit(resident, "书院街小区旁的河道有人偷排污水，气味很大")
    community.wait_for(f"【{number}】新诉求", "偷排污水")

    # When the community's worker refers it up (上报) with a reason
    community.ask(
        f"上报 {number} 涉及执法，超出社区职权",
        says("reply.referred", number=number, centre=NAMES[DISTRICT]),
    )

    # Then the resident hears where it went
    net.tg_wait(resident, says("requester.referred", number=number, centre=NAMES[DISTRICT]))

    # And the district's worker gets the card with the reason and the district's buttons
    # (下派 to its centres; nothing above the district)
    card = district.wait_for(f"【{number}】上报", "上报原因：涉及执法，超出社区职权", "偷排污水")
    assert card.labels == ["受理", "转单", "驳回", "下派"], card
    net.held[number] = DISTRICT

    # And the community no longer holds it: it is unknown to its worker now
    community.ask(f"受理 {number}", unknown(number))

    # When the district's worker accepts it, completes it and sends the result back (回单)
    district.press(card.action("受理"))
    district.wait_for(says("reply.accepted", number=number))
    net.tg_wait(resident, says("requester.accepted", number=number))
    district.ask(f"办结 {number} 已会同区城管执法查处偷排，河道已清理", f"【{number}】已办结")
    review = district.wait_for(f"【{number}】待审核回单", "河道已清理")
    district.press(review.action("回单"))
    district.wait_for(says("reply.approved", number=number))

    # Then the resident gets the result and is asked to rate it
    result = net.tg_wait(resident, f"【{number}】您的诉求已办结", "河道已清理")
    assert "是否满意" in result


# --- 下派: the district assigns a request down to a community ------------------------------------


def test_the_district_worker_assigns_a_request_down_and_the_communitys_worker_holds_it(
    net: Network,
) -> None:
    district, community = net.workers[DISTRICT], net.workers[HEJIANG]

    # Given a resident who came in by the district's own web link, and their request on the
    # district worker's desk
    resident = net.web_resident("赵六", DISTRICT)
    number = net.web_submit(resident, "合江亭附近的人行道被共享单车堵住了")
    card = district.wait_for(f"【{number}】新诉求", "共享单车")
    assert card.labels == ["受理", "转单", "驳回", "下派"], card

    # When the district's worker presses 下派: the district's three centres are offered
    district.press(card.action("下派"))
    question = district.wait_for(f"【{number}】请选择或输入下派的中心")
    assert sorted(question.labels) == sorted(NAMES[code] for code in (SHUYUAN, HEJIANG, CHUNXI))

    # And picks 合江亭
    district.press(question.action(NAMES[HEJIANG]))
    district.wait_for(says("reply.assigned", number=number, centre=NAMES[HEJIANG]))

    # Then the resident hears who handles it now
    resident.wait_for(says("requester.assigned", number=number, centre=NAMES[HEJIANG]))

    # And 合江亭's worker gets the card, with a community's buttons
    assigned = community.wait_for(f"【{number}】下派", "共享单车")
    assert assigned.labels == ["受理", "转单", "驳回", "上报"], assigned
    net.held[number] = HEJIANG

    # And the district's worker no longer holds it; the other communities never did
    district.ask(f"受理 {number}", unknown(number))
    net.workers[SHUYUAN].ask(f"受理 {number}", unknown(number))

    # When 合江亭's worker accepts it, Then it is theirs and the resident hears so
    community.press(assigned.action("受理"))
    community.wait_for(says("reply.accepted", number=number))
    resident.wait_for(says("requester.accepted", number=number))
    community.ask(f"查询 {number}", f"【{number}】办理中（党委做单）")


# --- 转单 to the district's department -----------------------------------------------------------


def test_the_districts_department_serves_a_request_of_the_business_centre_by_forwarding(
    net: Network,
) -> None:
    worker, city = net.workers[CHUNXI], net.city
    assert city is not None

    # Given a follower of 春熙路 on WeChat and their request on 春熙路's worker's desk
    resident = net.wx_resident(CHUNXI)
    number = net.wx_submit(resident, "春熙路步行街有商户把货架摆到了盲道上")
    card = worker.wait_for(f"【{number}】新诉求", "盲道")
    net.held[number] = CHUNXI

    # When the worker presses 转单: the district's 城管执法 is offered (and no other centre's)
    worker.press(card.action("转单"))
    picker = worker.wait_for(f"【{number}】请选择转交的部门")
    assert picker.labels == [CITY], picker

    # And picks it
    worker.press(picker.action(CITY))
    worker.wait_for(f"【{number}】已转交「{CITY}」")
    net.forwarded.add(number)

    # Then the resident hears, and the department's staff get the card to take it
    net.wx_wait(resident, says("requester.forwarded", number=number, department=CITY))
    forwarded = city.wait_for(f"【{number}】转单", "盲道", action=f"接收 {number}")

    # When they take it and report the result
    city.press(forwarded.action("接收"))
    city.wait_for(f"【{number}】已接收")
    net.wx_wait(resident, says("requester.taken", number=number, department=CITY))
    city.ask(f"办结 {number} 已责令商户退回店内经营，盲道已清空", f"【{number}】已办结")

    # Then 春熙路's worker reviews it and sends it back to the resident (回单)
    review = worker.wait_for(f"【{number}】待审核回单", "盲道已清空")
    worker.press(review.action("回单"))
    result = net.wx_wait(resident, f"【{number}】您的诉求已办结", "盲道已清空")
    assert f"评价 {number} 已解决 满意" in result


def test_a_category_sends_a_communitys_request_to_the_districts_department_by_itself(
    net: Network,
) -> None:
    worker, city = net.workers[HEJIANG], net.city
    assert city is not None

    # When a resident of 合江亭 reports rubbish (市容环境, a category routed to 城管执法)
    resident = net.web_resident("吴九", HEJIANG)
    number = net.web_submit(resident, "合江亭小区门口的垃圾堆了好几天没人清理")
    net.held[number] = HEJIANG
    net.forwarded.add(number)

    # Then it goes straight to the district's 城管执法, the one of that name serving 合江亭:
    # its staff get the card to take it, 合江亭's worker a card with 撤回
    forwarded = city.wait_for(f"【{number}】转单", "垃圾堆了", action=f"接收 {number}")
    assert forwarded.labels == ["接收", "退单", "办结"], forwarded
    notice = worker.wait_for(f"【{number}】新诉求", f"已按类别自动转交「{CITY}」")
    assert notice.labels == ["撤回"], notice
    resident.wait_for(says("requester.forwarded", number=number, department=CITY))


# --- the district's leader ---------------------------------------------------------------------


def test_the_district_leader_views_every_request_below_but_acts_on_none_of_a_communitys(
    net: Network,
) -> None:
    leader = net.leader
    assert leader is not None

    # Given a request of 合江亭 and one of the default centre (outside the district)
    resident = net.web_resident("孙七", HEJIANG)
    number = net.web_submit(resident, "合江亭小区的电梯经常停运，老人上下楼困难")
    net.workers[HEJIANG].wait_for(f"【{number}】新诉求", "电梯")
    net.held[number] = HEJIANG
    outsider = net.web_resident("周八", "default")
    elsewhere = net.web_submit(outsider, "小区门口的路面有个大坑，下雨积水")

    # When the district's leader looks the community's request up, Then they see it
    status = leader.ask(f"查询 {number}", f"【{number}】待受理")
    assert "电梯经常停运" in status.text

    # But when they try to accept it, they are told it is not theirs, and nothing moves
    leader.ask(f"受理 {number}", says("error.not_yours", number=number, action_label="受理"))
    leader.ask(f"查询 {number}", f"【{number}】待受理")
    net.workers[HEJIANG].ask(f"查询 {number}", f"【{number}】待受理")

    # And a request outside the district is unknown to them
    leader.ask(f"查询 {elsewhere}", unknown(elsewhere))
    leader.ask(f"受理 {elsewhere}", unknown(elsewhere))


# --- the figures roll up -----------------------------------------------------------------------


def test_the_districts_figures_have_a_row_per_centre_that_add_up_to_the_total(
    net: Network,
) -> None:
    # Given one more request in each of the district's centres (whichever stories ran before)
    for code, words in (
        (SHUYUAN, "书院街的健身器材坏了一个，存在安全隐患"),
        (HEJIANG, "合江亭的楼道灯不亮了"),
        (CHUNXI, "春熙路商圈的公共厕所没有水"),
    ):
        resident = net.web_resident(f"{code}-居民", code)
        number = net.web_submit(resident, words)
        net.workers[code].wait_for(f"【{number}】新诉求")
        net.held[number] = code

    # When the administrator asks for the district's figures by centre
    report = json.loads(
        net.deployment.cli("stats", "--centre", DISTRICT, "--by", "centre", "--format", "json")
    )

    # Then the report is about the district, with one row per centre below it and one for
    # what the district holds itself, each counting the requests held there
    assert report["centre"] == {"code": DISTRICT, "name": NAMES[DISTRICT]}
    held = Counter(net.held.values())
    rows = {(row["centre"], row["own"]): row for row in report["rows"]}
    expected = {(code, False): held[code] for code in (SHUYUAN, HEJIANG, CHUNXI)}
    if held[DISTRICT]:
        expected[(DISTRICT, True)] = held[DISTRICT]
    assert {key: row["received"] for key, row in rows.items()} == expected, report["rows"]
    assert {row["key"] for row in report["rows"] if not row["own"]} == {
        NAMES[code] for code in (SHUYUAN, HEJIANG, CHUNXI)
    }

    # And the forwarded requests count where they are held
    forwarded = Counter(net.held[number] for number in net.forwarded)
    assert {key: row["forwarded"] for key, row in rows.items()} == {
        key: forwarded[key[0]] for key in expected
    }

    # And the rows add up to the total, which is every request of the district's stories
    assert sum(row["received"] for row in report["rows"]) == report["totals"]["received"]
    assert report["totals"]["received"] == len(net.held)

    # And the table shows the same rows by name
    table = net.deployment.cli("stats", "--centre", DISTRICT, "--by", "centre")
    for code in (SHUYUAN, HEJIANG, CHUNXI):
        assert NAMES[code] in table, table
