"""A network of centres end to end, in production's shape (PostgreSQL, Redis, `redesk worker`,
`redesk scheduler`, `redesk run`): a district (锦江区) with two communities and a 商圈 under
it, made with `redesk centres add`, each with its worker, a district leader and a district
department. Residents come in through the three doors — a web link, a Telegram deep link
(`/start CODE`, the fake Bot API polled) and a WeChat QR code (`qrscene_CODE`, the fake WeChat
API, safe mode) — and each request reaches its own centre's worker only; one who came through
no door chooses; 上报 and 下派 move a request up and down; the figures roll up by centre.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment, base_env, serve
from tests.fakes.telegram import FakeTelegram
from tests.fakes.wechat import Callback, FakeWeChat, new_openid

#: Seconds one step of a story may take.
STEP = 30.0

#: A request number in a message.
NUMBER = re.compile(r"【(SQ-\d{8}-\d{4,})】")

#: The district and its centres: code -> (name, level).
DISTRICT = "jinjiang"
CENTRES: dict[str, tuple[str, str]] = {
    "chunxi": ("春熙路商圈党群服务中心", "商圈"),
    "shuyuan": ("书院街社区党群服务中心", "社区"),
    "hejiang": ("合江亭社区党群服务中心", "社区"),
}

#: The district's department.
DEPARTMENT = "锦江区城管执法"


@dataclass
class Network:
    """The deployment, the fakes, and the bound staff (web identities by centre code)."""

    deployment: Deployment
    http: httpx.Client
    wechat: FakeWeChat
    telegram: FakeTelegram
    workers: dict[str, WebChat]
    leader: WebChat
    matched: set[tuple[str, int]] = field(default_factory=set)

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the deployment's database."""
        engine = create_engine(self.deployment.env["REDESK_DATABASE_URL"])
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(text(sql), params).all()]
        finally:
            engine.dispose()

    def centre_of(self, number: str) -> str:
        """The code of the centre holding a request."""
        [(code,)] = self.query(
            "SELECT c.code FROM requests r JOIN centres c ON c.id = r.centre_id "
            "WHERE r.number = :number",
            number=number,
        )
        return str(code)

    def card_centres(self, number: str) -> set[str]:
        """The centres of the staff (workers, leaders) any message about a request went to."""
        return {
            str(code)
            for (code,) in self.query(
                "SELECT DISTINCT c.code FROM outbox o JOIN people p ON p.id = o.person_id "
                "JOIN centres c ON c.id = p.centre_id JOIN requests r ON r.id = o.request_id "
                "WHERE r.number = :number AND p.role IN ('worker', 'leader')",
                number=number,
            )
        }

    def post_wechat(self, callback: Callback) -> None:
        """POSTs a callback to /wechat the way WeChat does; it must be stored."""
        response = self.http.post(
            f"{self.deployment.base_url}/wechat",
            params=callback.params,
            content=callback.body,
            timeout=STEP,
            headers={"Content-Type": "text/xml"},
        )
        assert (response.status_code, response.content) == (200, b"success"), response.text

    def wait_wechat(self, openid: str, *needles: str) -> str:
        """The first WeChat text to `openid` not returned before holding every needle."""
        found: list[int] = []

        def arrived(fake: FakeWeChat) -> bool:
            for index, words in enumerate(fake.texts(openid)):
                if (openid, index) not in self.matched and all(n in words for n in needles):
                    found.append(index)
                    return True
            return False

        assert self.wechat.wait_for(arrived, STEP), (
            f"no WeChat text with {needles}: {self.wechat.texts(openid)}\n{self.deployment.logs()}"
        )
        self.matched.add((openid, found[0]))
        return self.wechat.texts(openid)[found[0]]

    def wait_telegram(self, chat: int, *needles: str) -> str:
        """The first Telegram message to `chat` not returned before holding every needle."""
        found: list[str] = []

        def arrived(fake: FakeTelegram) -> bool:
            for call in fake.sent(chat):
                message_id = int(call.result["message_id"])
                words = call.result.get("text") or ""
                if ("tg", message_id) not in self.matched and all(n in words for n in needles):
                    self.matched.add(("tg", message_id))
                    found.append(words)
                    return True
            return False

        assert self.telegram.wait_for(arrived, STEP), (
            f"no Telegram message with {needles}: {self.telegram.texts(chat)}\n"
            f"{self.deployment.logs()}"
        )
        return found[0]


def number_of(message: str) -> str:
    found = NUMBER.search(message)
    assert found, message
    return found.group(1)


@pytest.fixture(scope="module")
def network(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, e2e_redis_url: str
) -> Iterator[Network]:
    """Production's shape with WeChat (safe mode) and Telegram (polling) on, the district's
    tree made and its staff bound."""
    wechat = FakeWeChat(safe=True).start()
    telegram = FakeTelegram().start()
    try:
        directory = tmp_path_factory.mktemp("redesk-e2e-centres")
        env = base_env(directory, postgres_url)
        env.update(wechat.settings_env())
        env.update(
            {
                "REDESK_REDIS_URL": e2e_redis_url,
                "REDESK_MEDIA_DIR": str(directory / "media"),
                "REDESK_TELEGRAM_TOKEN": telegram.token,
                "REDESK_TELEGRAM_API_URL": telegram.url,
                "PTB_TIMEDELTA": "true",
            }
        )
        deployment = Deployment(directory, env)
        deployment.cli("db", "upgrade")
        deployment.cli("centres", "add", DISTRICT, "锦江区党群服务中心", "--level", "区")
        for code, (name, level) in CENTRES.items():
            deployment.cli("centres", "add", code, name, "--level", level, "--parent", DISTRICT)
        deployment.cli("departments", "add", DEPARTMENT, "--centre", DISTRICT)
        for running in serve(deployment, "worker", "scheduler", "run"):
            with running.http() as http:
                codes = running.invites(
                    *(("worker", "--centre", code) for code in (DISTRICT, *CENTRES)),
                    ("leader", "--centre", DISTRICT),
                )
                staff = [WebChat.open(http, f"{code}-staff") for code in (DISTRICT, *CENTRES)]
                leader = WebChat.open(http, "区领导")
                for chat, code in zip([*staff, leader], codes, strict=True):
                    chat.send(f"绑定 {code}")
                for chat in [*staff, leader]:
                    chat.wait_for("绑定成功")
                workers = dict(zip((DISTRICT, *CENTRES), staff, strict=True))
                yield Network(running, http, wechat, telegram, workers, leader)
        assert not wechat.errors, wechat.errors
        assert not telegram.errors, telegram.errors
    finally:
        telegram.stop()
        wechat.stop()


def test_residents_entering_by_each_door_reach_their_own_centres_worker_only(
    network: Network,
) -> None:
    # When a resident opens 春熙路's web link and writes a request
    made = network.http.post("/api/web/session", json={"name": "张三", "centre": "chunxi"})
    assert made.status_code == 201, made.text
    web = WebChat(http=network.http, token=made.json()["token"], name="张三")
    web_number = number_of(web.ask("春熙路口的路灯坏了，晚上很黑", "已受理登记").text)

    # And a resident opens 书院街's Telegram deep link and writes one
    user = network.telegram.user(3001, "李四")
    network.telegram.queue_update(network.telegram.command_update(user, "start", "shuyuan"))
    network.wait_telegram(3001, "欢迎来到「书院街社区党群服务中心」")
    network.telegram.queue_update(network.telegram.text_update(user, "书院街楼道灯不亮了"))
    tg_number = number_of(network.wait_telegram(3001, "已受理登记"))

    # And a resident follows by 合江亭's QR code on WeChat and writes one
    openid = new_openid()
    follow = network.wechat.event(openid, "subscribe", key="qrscene_hejiang", ticket="gQH47jo")
    network.post_wechat(follow)
    network.wait_wechat(openid, "欢迎关注「合江亭社区党群服务中心」")
    network.post_wechat(network.wechat.text(openid, "合江亭旁的井盖丢了，很危险"))
    wx_number = number_of(network.wait_wechat(openid, "已受理登记"))

    # Then each request is held by its centre, and only that centre's worker got its card
    for number, code in ((web_number, "chunxi"), (tg_number, "shuyuan"), (wx_number, "hejiang")):
        network.workers[code].wait_for(f"【{number}】新诉求")
        assert network.centre_of(number) == code
        assert network.card_centres(number) == {code}

    # And a worker of another centre is answered as for an unknown number
    other = network.workers["shuyuan"]
    other.ask(f"受理 {web_number}", f"没有找到编号为「{web_number}」的诉求")
    assert network.query("SELECT state FROM requests WHERE number = :n", n=web_number) == [("new",)]


def test_a_resident_of_no_centre_chooses_and_a_request_goes_up_and_down_the_tree(
    network: Network,
) -> None:
    # Given a resident who opened the desk with no link
    resident = WebChat.open(network.http, "王五")

    # When they write a request, they are asked to choose; they pick the district, then 春熙路
    resident.ask("春熙路步行街噪音扰民，每晚施工到十二点", "请先选择")
    resident.ask("2", "下设以下党群服务中心")
    number = number_of(resident.ask("chunxi", "已受理登记").text)
    network.workers["chunxi"].wait_for(f"【{number}】新诉求")
    assert network.centre_of(number) == "chunxi"

    # When 春熙路's worker sends it up (上报), the district's worker gets it
    network.workers["chunxi"].ask(f"上报 {number} 涉及多个社区，超出商圈职权", "已上报")
    network.workers[DISTRICT].wait_for(f"【{number}】上报")
    assert network.centre_of(number) == DISTRICT

    # When the district's worker assigns it down (下派) to 书院街, its worker gets it
    network.workers[DISTRICT].ask(f"下派 {number} shuyuan", "已下派")
    network.workers["shuyuan"].wait_for(f"【{number}】下派")
    assert network.centre_of(number) == "shuyuan"

    # And the district leader sees it (查询), and the figures roll up by centre
    network.leader.ask(f"查询 {number}", f"【{number}】")
    report = json.loads(network.deployment.cli("stats", "--by", "centre", "--format", "json"))
    rows = {row.get("centre"): row for row in report["rows"]}
    district = rows[DISTRICT]
    assert district["received"] >= 1
    assert sum(row["received"] for row in report["rows"]) == report["totals"]["received"]
