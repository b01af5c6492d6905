"""A request's page in a real browser: a worker logs in, opens a resident's request with a
photo and a location, accepts it, forwards it with the department picker, and sees why an
action another worker made impossible is refused."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment
from tests.utils.accounts import PASSWORD

pytestmark = pytest.mark.browser

#: A phone's width.
PHONE = {"width": 375, "height": 740}


def _png() -> bytes:
    """A real 2×2 red PNG (so that the page can show it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _account(deployment: Deployment, username: str, name: str) -> None:
    """A worker account made with `redesk staff add`, its password set through the link."""
    out = deployment.cli("staff", "add", username, "--name", name, "--role", "worker")
    found = re.search(r"/console/setup\?token=([A-Za-z0-9_\-]+)", out)
    assert found, out
    with deployment.http() as http:
        done = http.post(
            "/api/console/setup",
            json={"token": found.group(1), "password": PASSWORD},
            headers={"Origin": deployment.base_url},
        )
        assert done.status_code == 200, done.text


def _login(http: httpx.Client, deployment: Deployment, username: str) -> dict[str, str]:
    """Logs `http` in; the headers of its state-changing calls."""
    done = http.post(
        "/api/console/login",
        json={"username": username, "password": PASSWORD},
        headers={"Origin": deployment.base_url},
    )
    assert done.status_code == 200, done.text
    return {"Origin": deployment.base_url, "X-CSRF-Token": done.json()["csrf_token"]}


def _with_photo_and_location(deployment: Deployment, number: str) -> None:
    """Gives request `number` a stored photo and a location, as a channel stores them."""
    engine = create_engine(deployment.env["REDESK_DATABASE_URL"])
    relative = Path("web") / "202612" / f"{number}.png"
    target = Path(deployment.env["REDESK_DATA_DIR"]) / "media" / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_png())
    with engine.begin() as connection:
        request_id = connection.execute(
            text("SELECT id FROM requests WHERE number = :number"), {"number": number}
        ).scalar_one()
        for values in (
            {"kind": "photo", "mime": "image/png", "path": str(relative), "lat": None, "lon": None},
            {"kind": "location", "mime": None, "path": None, "lat": 30.657, "lon": 104.081},
        ):
            connection.execute(
                text(
                    "INSERT INTO attachments (request_id, kind, channel, mime_type, stored_path,"
                    " latitude, longitude, label, created_at) VALUES (:request_id, :kind, 'web',"
                    " :mime, :path, :lat, :lon, :label, CURRENT_TIMESTAMP)"
                ),
                {"request_id": request_id, "label": "春熙路" if values["lat"] else None, **values},
            )
    engine.dispose()


@pytest.fixture(scope="module")
def workers(deployment: Deployment) -> Iterator[tuple[str, str]]:
    """Two workers of the (only) centre."""
    _account(deployment, "wang", "王书记")
    _account(deployment, "zhao", "赵委员")
    yield "wang", "zhao"


def _submit(resident: WebChat, text_: str) -> str:
    """A resident's new request; its number."""
    answer = resident.ask(text_, "SQ-")
    found = re.search(r"SQ-\d{8}-\d{4,}", answer.text)
    assert found, answer.text
    return found.group(0)


def _new_request(deployment: Deployment, text_: str) -> str:
    with deployment.http() as http:
        return _submit(WebChat.open(http, "张阿姨"), text_)


def _open(browser: Any, deployment: Deployment, username: str, number: str) -> Any:
    """A phone-sized page of `username`, logged in through the login page, on the request."""
    context = browser.new_context(viewport=PHONE, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{deployment.base_url}/console/requests/{number}")
    page.wait_for_url(re.compile(r"/console/login"))
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(re.compile(rf"/console/requests/{number}$"))
    page.wait_for_selector("#request:not([hidden])")
    return page


def test_a_worker_opens_a_request_with_a_photo_and_a_location_accepts_and_forwards_it(
    browser: Any, deployment: Deployment, workers: tuple[str, str], tmp_path: Path
) -> None:
    # Given a resident's request with a photo and a location
    http = deployment.http()
    resident = WebChat.open(http, "张阿姨")
    number = _submit(resident, "小区门口的路灯坏了，晚上很黑")
    _with_photo_and_location(deployment, number)

    # When the worker opens its page on a phone
    page = _open(browser, deployment, workers[0], number)
    try:
        # Then the request is there with its photo shown, its location and its history
        assert page.locator("#request-number").inner_text() == number
        assert page.locator("#request-state").inner_text() == "待受理"
        assert "路灯坏了" in page.locator("#request-text").inner_text()
        photo = page.locator(".request-photo img")
        photo.wait_for()
        page.wait_for_function("() => document.querySelector('.request-photo img').complete")
        assert page.evaluate("() => document.querySelector('.request-photo img').naturalWidth") == 2
        location = page.locator(".request-location")
        assert "30.657000, 104.081000" in location.inner_text()
        link = location.locator("a")
        assert "openstreetmap.org" in (link.get_attribute("href") or "")
        assert link.get_attribute("rel") == "noopener noreferrer"
        assert "接单" in page.locator("#history").inner_text()
        assert "响应时限" in page.locator("#request-deadlines").inner_text()
        # and nothing is wider than the phone
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]

        # When they accept it with the keyboard
        page.focus("#action-accept")
        page.keyboard.press("Enter")

        # Then the page shows chat's answer and the new state, and offers the next actions
        page.locator("#action-message", has_text="已受理").wait_for()
        page.locator("#request-state", has_text="办理中").wait_for()
        assert page.locator("#action-accept").count() == 0
        page.screenshot(path=str(tmp_path / "request-accepted.png"), full_page=True)
        # and the resident is told in their chat, as when the worker accepts in chat
        resident.wait_for(number, "党委已受理您的诉求")

        # When they forward it, choosing the department in the picker
        page.click("#action-forward")
        picker = page.locator("#action-department")
        assert picker.is_visible() and picker.evaluate("e => e === document.activeElement")
        options = picker.locator("option").all_inner_texts()
        assert "城管执法" in options and "请选择部门" in options
        picker.select_option("城管执法")
        page.click("#action-submit")

        # Then it is forwarded, and the history says so
        page.locator("#request-state", has_text="已转单").wait_for()
        page.locator("#action-message", has_text="城管执法").wait_for()
        assert "转单" in page.locator("#history").inner_text()
        assert "城管执法" in page.locator("#request-facts").inner_text()
        page.screenshot(path=str(tmp_path / "request-forwarded.png"), full_page=True)
        resident.wait_for(number, "已转交「城管执法」")
    finally:
        page.context.close()
        http.close()


def test_an_action_made_impossible_meanwhile_is_refused_with_the_reason(
    browser: Any, deployment: Deployment, workers: tuple[str, str], tmp_path: Path
) -> None:
    # Given a new request open on the first worker's page
    number = _new_request(deployment, "人行道的井盖松动了")
    page = _open(browser, deployment, workers[0], number)
    try:
        page.locator("#action-accept").wait_for()

        # When the second worker accepts it first (in their own session)
        with deployment.http() as http:
            headers = _login(http, deployment, workers[1])
            taken = http.post(
                f"/api/console/requests/{number}/actions",
                json={"action": "accept"},
                headers=headers,
            )
            assert taken.status_code == 200, taken.text

        # And the first presses 受理 on the page they still have open
        page.click("#action-accept")

        # Then the page says why it cannot be done, in chat's words
        message = page.locator("#action-message.is-error")
        message.wait_for()
        refusal = f"【{number}】诉求当前状态为「办理中（党委做单）」，不能受理。"
        assert message.inner_text() == refusal
        assert message.get_attribute("role") == "alert"

        # And a 驳回 without a reason is refused with what is missing
        page.reload()
        page.wait_for_selector("#request:not([hidden])")
        assert page.locator("#action-reject").count() == 0  # 驳回 is for new requests only
        page.click("#action-note")
        page.click("#action-submit")
        page.locator("#action-message.is-error", has_text="内容不能为空").wait_for()
        page.screenshot(path=str(tmp_path / "request-refused.png"), full_page=True)
    finally:
        page.context.close()
