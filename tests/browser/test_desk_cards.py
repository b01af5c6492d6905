"""The web desk in a real browser: a worker's card stops offering what another worker did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.browser

#: Milliseconds the page may take to show what the server delivered (a long poll round).
SHOWN_WITHIN_MS = 30_000


def open_desk(browser: Any, deployment: Deployment, name: str) -> Any:
    """A new page (its own browser context, so its own identity) with a named identity."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 900, "height": 900})
    page = context.new_page()
    page.goto(f"{deployment.base_url}/desk")
    page.fill("#identity-input", name)
    page.click("#identity-submit")
    page.wait_for_selector("#identity-dialog", state="hidden")
    return page


def say(page: Any, text: str) -> None:
    """Types `text` into the composer and sends it with Enter."""
    page.fill("#input", text)
    page.press("#input", "Enter")


def bot_message(page: Any, containing: str) -> Any:
    """The newest bot message containing `containing`, once it is shown."""
    found = page.locator("li.msg-bot", has_text=containing).last
    found.wait_for(timeout=SHOWN_WITHIN_MS)
    return found


def labels(message: Any) -> list[str]:
    """The labels of the buttons under a bot message."""
    return [str(label) for label in message.locator(".btn-action").all_inner_texts()]


def test_a_workers_card_drops_the_buttons_another_worker_used_without_a_reload(
    browser: Any, deployment: Deployment, tmp_path: Path
) -> None:
    # Given a worker on the desk page, bound with an invitation code, and a second worker on
    # the web API
    first_code, second_code = deployment.invites(("worker",), ("worker",))
    worker = open_desk(browser, deployment, "王书记")
    say(worker, f"绑定 {first_code}")
    bot_message(worker, "绑定成功")
    with deployment.http() as http:
        second = WebChat.open(http, "赵干事")
        second.send(f"绑定 {second_code}")
        second.wait_for("绑定成功")

        # When a resident sends a request from the desk page
        resident = open_desk(browser, deployment, "张三")
        say(resident, "小区门口的路灯坏了，晚上很黑")
        receipt = bot_message(resident, "已受理登记")
        number = str(receipt.inner_text()).split("】", 1)[0].lstrip("【")

        # Then the worker's card offers 受理 / 转单 / 驳回
        card = bot_message(worker, "新诉求 ·")
        assert number in card.inner_text()
        assert labels(card) == ["受理", "转单", "驳回"]

        # When the second worker accepts the request
        second.send(f"受理 {number}")
        second.wait_for("已受理（做单）")

        # Then, without a reload, the worker's card shows the new state and offers only what
        # is still possible (转单), and still stands where it was in the conversation
        worker.locator("li.msg-bot", has_text="新诉求 ·").locator(
            ".btn-action", has_text="受理"
        ).wait_for(state="detached", timeout=SHOWN_WITHIN_MS)
        card = bot_message(worker, "新诉求 ·")
        assert labels(card) == ["转单"]
        assert "当前状态：办理中（党委做单）" in card.inner_text()
        assert worker.locator("li.msg-bot", has_text="新诉求 ·").count() == 1

        # When the resident cancels the request
        say(resident, f"撤销 {number}")
        bot_message(resident, "已撤销")

        # Then the card is marked done, with no button left
        done = worker.locator("li.msg-bot.is-done", has_text="新诉求 ·")
        done.wait_for(timeout=SHOWN_WITHIN_MS)
        assert labels(done) == []
        assert "已处理（当前状态：已撤销）" in done.inner_text()
        worker.screenshot(path=str(tmp_path / "desk-card-done.png"), full_page=True)
