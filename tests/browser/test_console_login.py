"""The console's accounts in a real browser: an admin's setup link, the password set on it, the
login (back to the page asked for), and a link code that the web desk binds to the account."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser.test_desk_cards import bot_message, open_desk, say
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.browser

#: A password that passes every rule.
PASSWORD = "春熙路-lamp-2026"


@contextmanager
def photographed_on_failure(pages: list[Any], directory: Path) -> Iterator[None]:
    """Screenshots of every page in `pages` (into `directory`) when the block fails."""
    try:
        yield
    except BaseException:
        for index, page in enumerate(pages):
            try:
                page.screenshot(path=str(directory / f"failure-{index}.png"), full_page=True)
            except Exception:  # noqa: BLE001 - a closed page cannot be photographed
                pass
        raise


def console_page(browser: Any, shots: list[Any], width: int = 900) -> Any:
    """A page in a browser context of its own (its own cookies), console errors collected."""
    context = browser.new_context(locale="zh-CN", viewport={"width": width, "height": 900})
    page = context.new_page()
    page.errors = []
    # Script errors and refusals of the CSP; answers 4xx of the API are expected ones.
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.text.startswith("Failed to load resource")
            and page.errors.append(m.text)
        ),
    )
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    shots.append(page)
    return page


def test_a_setup_link_a_login_and_a_link_code_bound_on_the_web_desk(
    browser: Any, deployment: Deployment, tmp_path: Path
) -> None:
    shots: list[Any] = []
    with photographed_on_failure(shots, tmp_path):
        _setup_login_and_link(browser, deployment, shots, tmp_path)


def _setup_login_and_link(
    browser: Any, deployment: Deployment, shots: list[Any], tmp_path: Path
) -> None:
    # Given an account made by an admin, its one-time link printed
    out = deployment.cli("staff", "add", "wang.sj", "--name", "王书记", "--role", "worker")
    link = out.strip().splitlines()[-1]
    assert link.startswith(f"{deployment.base_url}/console/setup?token=")

    # When the worker opens it (on a phone-sized screen) and sets a password
    page = console_page(browser, shots, width=375)
    page.goto(link)
    # the token leaves the address bar
    page.wait_for_function("() => !window.location.search.includes('token')")
    page.fill("#new-password", "short")
    page.fill("#confirm-password", "short")
    page.click("#setup-submit")
    page.locator("#setup-message", has_text="密码至少需要 10 个字符").wait_for()
    page.fill("#new-password", PASSWORD)
    page.fill("#confirm-password", PASSWORD)
    page.click("#setup-submit")
    page.locator("#setup-done").wait_for()
    page.screenshot(path=str(tmp_path / "setup-done.png"), full_page=True)

    # And the same link a second time is refused
    again = console_page(browser, shots)
    again.goto(link)
    again.fill("#new-password", PASSWORD)
    again.fill("#confirm-password", PASSWORD)
    again.click("#setup-submit")
    again.locator("#setup-message", has_text="无效、已使用或已过期").wait_for()

    # When they open their account page, they are sent to the login first
    page.goto(f"{deployment.base_url}/console/account")
    page.wait_for_url("**/console/login?next=%2Fconsole%2Faccount")
    page.fill("#username", "wang.sj")
    page.fill("#password", "wrong-password")
    page.click("#login-submit")
    page.locator("#login-message", has_text="用户名或密码错误").wait_for()
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")

    # Then they are back on the account page, logged in with a strict, HttpOnly cookie
    page.wait_for_url("**/console/account")
    page.locator("#account-facts", has_text="王书记").wait_for()
    assert page.locator("#console-header", has_text="党务工作者").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "redesk_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("() => document.cookie") == ""  # not readable from scripts
    page.locator("#chats-empty").wait_for()

    # When they ask for a link code
    page.click("#make-code")
    page.locator("#code-how", has_text="绑定 ").wait_for()
    code = page.locator("#link-code").inner_text().strip()
    assert len(code) == 14
    assert page.locator("#code-how", has_text=f"绑定 {code}").is_visible()
    page.screenshot(path=str(tmp_path / "account-code.png"), full_page=True)

    # And send 绑定 <code> on the web desk
    desk = open_desk(browser, deployment, "王书记的网页")
    shots.append(desk)
    say(desk, f"绑定 {code}")
    bot_message(desk, "关联成功")

    # Then the account page lists that chat, which can be chosen for notifications
    page.reload()
    row = page.locator("#chats tr", has_text="王书记的网页")
    row.wait_for()
    row.locator("button", has_text="设为通知").click()
    page.locator("#chats tr", has_text="接收通知").wait_for()
    page.screenshot(path=str(tmp_path / "account-linked.png"), full_page=True)

    # And 退出所有设备 ends the session: the account page asks for the login again
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#logout-everywhere")
    page.wait_for_url("**/console/login")
    page.goto(f"{deployment.base_url}/console/account")
    page.wait_for_url("**/console/login?next=*")
    assert page.errors == []


def test_a_login_never_follows_a_next_that_leaves_the_site(
    browser: Any, deployment: Deployment, tmp_path: Path
) -> None:
    out = deployment.cli("staff", "add", "zhao.wy", "--name", "赵委员", "--role", "leader")
    shots: list[Any] = []
    with photographed_on_failure(shots, tmp_path):
        page = console_page(browser, shots)
        page.goto(out.strip().splitlines()[-1])
        page.fill("#new-password", PASSWORD)
        page.fill("#confirm-password", PASSWORD)
        page.click("#setup-submit")
        page.locator("#setup-done").wait_for()
        for hostile in ("//evil.example/x", "/\\evil.example", "https://evil.example/"):
            page.goto(f"{deployment.base_url}/console/login?next={quote(hostile, safe='')}")
            page.fill("#username", "zhao.wy")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_url(f"{deployment.base_url}/console")
            assert page.url == f"{deployment.base_url}/console"
