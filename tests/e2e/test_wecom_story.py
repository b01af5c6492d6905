"""WeCom end to end: real `redesk run` and `redesk worker` processes (PostgreSQL, Redis) against
the fake WeCom API and the fake WeChat API in safe mode.

The fakes run in the test process: they build the callbacks WeCom and WeChat would POST
(encrypted and signed), which the story POSTs to the real server, and they record what redesk
sends back. The resident is on WeChat; the worker on WeCom, answering on template cards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Deployment, base_env, serve
from tests.fakes.wechat import FakeWeChat, new_openid
from tests.fakes.wecom import Callback, FakeWeCom

#: Seconds one step of the story may take (a receipt, a card, an update).
STEP = 30.0

#: A request number in a message.
NUMBER = re.compile(r"SQ-\d{8}-\d{4,}")

WORKER = "lisj"


class Story:
    """The deployment, the fakes and an HTTP client on the server."""

    def __init__(
        self, deployment: Deployment, wecom: FakeWeCom, wechat: FakeWeChat, http: httpx.Client
    ) -> None:
        self.deployment = deployment
        self.wecom = wecom
        self.wechat = wechat
        self.http = http

    def post(self, path: str, params: dict[str, str], body: bytes) -> httpx.Response:
        return self.http.post(
            f"{self.deployment.base_url}{path}",
            params=params,
            content=body,
            timeout=STEP,
            headers={"Content-Type": "text/xml"},
        )

    def member_posts(self, callback: Callback) -> None:
        """A WeCom callback, which must be stored."""
        response = self.post("/wecom", callback.params, callback.body)
        assert (response.status_code, response.text) == (200, ""), self.deployment.logs()

    def resident_says(self, openid: str, words: str) -> None:
        callback = self.wechat.text(openid, words)
        response = self.post("/wechat", callback.params, callback.body)
        assert response.status_code == 200, self.deployment.logs()

    def wait(self, what: str, predicate: Any) -> None:
        assert self.wecom.wait_for(lambda fake: bool(predicate()), STEP), (
            f"no {what} within {STEP:g} s\n{self.deployment.logs()}"
        )


@pytest.fixture(scope="module")
def story(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, e2e_redis_url: str
) -> Iterator[Story]:
    """`redesk run` next to `redesk worker` with WeCom and WeChat (safe mode) on."""
    wecom = FakeWeCom().start()
    wechat = FakeWeChat(safe=True).start()
    wecom.member(WORKER, "李书记")
    try:
        directory = tmp_path_factory.mktemp("redesk-e2e-wecom")
        env = {
            **base_env(directory, postgres_url),
            **wecom.settings_env(),
            **wechat.settings_env(),
            "REDESK_REDIS_URL": e2e_redis_url,
            "REDESK_MEDIA_DIR": str(directory / "media"),
        }
        deployment = Deployment(directory, env)
        deployment.cli("db", "upgrade")
        deployment.cli("demo")
        for running in serve(deployment, "worker", "run"):
            with running.http() as http:
                yield Story(running, wecom, wechat, http)
    finally:
        wechat.stop()
        wecom.stop()
    assert wecom.errors == []


def test_the_url_verification_is_answered_by_the_real_server(story: Story) -> None:
    check = story.wecom.verification("echo-e2e")
    response = story.http.get(f"{story.deployment.base_url}/wecom", params=check.params)
    assert (response.status_code, response.text) == (200, "echo-e2e")
    forged = story.wecom.verification("echo-e2e", bad_signature=True)
    assert (
        story.http.get(f"{story.deployment.base_url}/wecom", params=forged.params).status_code
        == 403
    )


def test_a_resident_on_wechat_is_served_by_a_worker_pressing_cards_on_wecom(
    story: Story,
) -> None:
    wecom, resident = story.wecom, new_openid()
    # Given a worker bound on WeCom
    code = story.deployment.invites(("worker",))[0]
    story.member_posts(wecom.text(WORKER, f"绑定 {code}"))
    story.wait("bind answer", lambda: any("党务工作者" in t for t in wecom.texts(WORKER)))

    # When the resident writes on WeChat, the worker gets a card with the request
    story.resident_says(resident, "小区门口的路灯坏了，晚上很黑")
    story.wait("card", lambda: wecom.cards(WORKER))
    card = wecom.cards(WORKER)[-1]
    found = NUMBER.search(card["main_title"]["title"])
    assert found is not None
    number = found.group(0)
    assert [b["text"] for b in card["button_list"]] == ["受理", "转单", "驳回"]

    # When the worker presses 受理, the card says who accepted
    key = card["button_list"][0]["key"]
    story.member_posts(wecom.press(WORKER, key, card["task_id"]))
    story.wait(
        "card update",
        lambda: (
            (wecom.view(card["task_id"], WORKER) or _NoView()).replace_name == "已受理 · 李书记"
        ),
    )

    # The worker resolves with a typed result and approves it on the review card
    story.member_posts(wecom.text(WORKER, f"办结 {number} 已更换灯泡"))
    story.wait("review card", lambda: _review(wecom))
    review = _review(wecom)
    assert review is not None
    approve = next(b["key"] for b in review["button_list"] if b["text"] == "回单")
    story.member_posts(wecom.press(WORKER, approve, review["task_id"]))

    # The resident gets the result and rates it
    story.wait(
        "reply to the resident",
        lambda: any("已更换灯泡" in t for t in story.wechat.texts(resident)),
    )
    story.resident_says(resident, f"评价 {number} 已解决 满意")
    story.wait("closing", lambda: any("感谢您的评价" in t for t in story.wechat.texts(resident)))


def _review(wecom: FakeWeCom) -> dict[str, Any] | None:
    """The worker's newest review card (with a 回单 button), if any."""
    return next(
        (
            card
            for card in reversed(wecom.cards(WORKER))
            if any(b["text"] == "回单" for b in card["button_list"])
        ),
        None,
    )


class _NoView:
    replace_name: str | None = None
