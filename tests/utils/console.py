"""Helpers of the console story (tests/browser/test_console_story.py): pages of their own in
chromium, the console's setup and login pages driven as a person would, the web desk's
messages waited for without a time limit of their own, and screenshots of the open pages
when a test fails (a pytest hook, registered by the `shots` fixture)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.client import WebChat
from tests.utils.harness import Message

#: Milliseconds Playwright waits for a page to show something (the machine may be loaded).
PATIENCE_MS = 90_000

#: Seconds a message to a chat may take to arrive.
PATIENCE_S = PATIENCE_MS / 1000

#: A one-time setup link in the output of `redesk staff add`.
SETUP_LINK = re.compile(r"https?://\S+/console/setup\?token=[A-Za-z0-9_\-]+")

#: A request number in a message, e.g. 【SQ-20260101-0001】.
NUMBER = re.compile(r"【(SQ-\d{8}-\d{4,})】")

#: The pages open in the current test, photographed if it fails.
PAGES = pytest.StashKey[list[Any]]()

#: Where the current test's screenshots go.
SHOTS_DIR = pytest.StashKey[Path]()

#: The name the hook is registered under.
PLUGIN = "redesk-console-shots"


# --- screenshots on failure ------------------------------------------------------------------


class FailurePhotographer:
    """A pytest plugin: when a test's call fails, every page it registered is saved as a
    full-page PNG in its tmp dir, and the paths are printed and added to the report."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if report.when != "call" or not report.failed:
            return report
        pages = item.stash.get(PAGES, [])
        directory = item.stash.get(SHOTS_DIR, None)
        if directory is None:
            return report
        saved = []
        for index, page in enumerate(pages):
            path = directory / f"failure-{index}.png"
            try:
                page.screenshot(path=str(path), full_page=True)
            except Exception:  # a closed page cannot be photographed
                continue
            saved.append(f"{path} ({page.url})")
        if saved:
            lines = "\n".join(saved)
            reporter = item.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\nscreenshots of the failed test {item.nodeid}:\n{lines}")
            report.sections.append(("screenshots on failure", lines))
        return report


def photographed_on_failure(request: pytest.FixtureRequest, tmp_path: Path) -> list[Any]:
    """The list of pages to photograph into `tmp_path` if the requesting test fails (append
    every page it opens); registers the hook that does it on first use."""
    manager = request.config.pluginmanager
    if manager.get_plugin(PLUGIN) is None:
        manager.register(FailurePhotographer(), PLUGIN)
    pages: list[Any] = []
    request.node.stash[PAGES] = pages
    request.node.stash[SHOTS_DIR] = tmp_path
    return pages


# --- pages -----------------------------------------------------------------------------------


def new_page(browser: Any, shots: list[Any], *, width: int = 1280, height: int = 900) -> Any:
    """A page in a browser context of its own (its own cookies), its script errors and CSP
    refusals collected in `page.errors`."""
    context = browser.new_context(locale="zh-CN", viewport={"width": width, "height": height})
    context.set_default_timeout(PATIENCE_MS)
    page = context.new_page()
    errors: list[str] = []
    page.errors = errors

    def logged(message: Any) -> None:
        # Answers 4xx of the API are expected ("Failed to load resource"); nothing else is.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", logged)
    page.on("pageerror", lambda error: errors.append(str(error)))
    shots.append(page)
    return page


def setup_link(cli_output: str) -> str:
    """The one-time link `redesk staff add` printed."""
    found = SETUP_LINK.search(cli_output)
    assert found, f"no setup link in:\n{cli_output}"
    return found.group(0)


def set_password(page: Any, link: str, password: str) -> None:
    """Opens a setup link and sets the password on its page."""
    page.goto(link)
    page.fill("#new-password", password)
    page.fill("#confirm-password", password)
    page.click("#setup-submit")
    page.locator("#setup-done").wait_for()


def log_in(page: Any, base_url: str, username: str, password: str, *, then: str) -> None:
    """Opens `then` (a console path), is sent to the login page, logs in there, and waits
    to be back on `then`."""
    page.goto(f"{base_url}{then}")
    page.wait_for_url("**/console/login?next=*")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_url(f"{base_url}{then}")


def no_horizontal_scroll(page: Any) -> tuple[int, int]:
    """(scrollWidth, viewport width) of the page's document."""
    sizes: list[int] = page.evaluate(
        "() => [Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),"
        " document.documentElement.clientWidth]"
    )
    return sizes[0], sizes[1]


# --- web desk --------------------------------------------------------------------------------


def wait_web(chat: WebChat, *needles: str, timeout: float = PATIENCE_S) -> Message:
    """The oldest message to `chat` not waited for yet whose text holds every needle, long
    polling for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for message in chat.received:
            if message.seq in chat.matched or message.updates is not None:
                continue
            if all(needle in message.text for needle in needles):
                chat.matched.add(message.seq)
                return message
        if time.monotonic() > deadline:
            break
        chat.poll()
    raise AssertionError(
        f"{chat.name} never received a message with {list(needles)} within {timeout:g} s. "
        "Received:\n" + "\n---\n".join(f"#{m.seq} {m.text} {m.actions}" for m in chat.received)
    )


def number_in(text: str) -> str:
    """The request number a message is about."""
    found = NUMBER.search(text)
    assert found, text
    return found.group(1)
