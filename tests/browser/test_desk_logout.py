"""The web desk in a real browser: 退出 ends the identity on the server and in the tab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_desk_cards import bot_message, open_desk, say
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.browser


def test_the_logout_control_ends_the_token_on_the_server_and_forgets_it_in_the_tab(
    browser: Any, deployment: Deployment, tmp_path: Path
) -> None:
    # Given a resident on the desk page whose identity works
    page = open_desk(browser, deployment, "李大爷")
    say(page, "帮助")
    bot_message(page, "诉求受理平台")
    token = page.evaluate("() => sessionStorage.getItem('redesk.token')")
    assert isinstance(token, str) and token
    headers = {"Authorization": f"Bearer {token}"}
    with deployment.http() as http:
        assert http.get("/api/web/messages?wait=0", headers=headers).status_code == 200

        # When they press 退出
        assert page.locator("#logout").is_visible()
        page.click("#logout")

        # Then the page forgets the token, shows that it logged out and asks for a new identity
        page.wait_for_selector("#identity-dialog", state="visible")
        page.locator("li", has_text="已退出").wait_for()
        assert page.evaluate("() => sessionStorage.getItem('redesk.token')") is None
        assert page.locator("#logout").is_hidden()
        page.screenshot(path=str(tmp_path / "desk-logged-out.png"), full_page=True)

        # And the server refuses the old token from then on, for reading and for writing
        assert http.get("/api/web/messages?wait=0", headers=headers).status_code == 401
        refused = http.post(
            "/api/web/messages", headers=headers, json={"id": "after-logout", "text": "路灯坏了"}
        )
        assert refused.status_code == 401

    # And after a reload the tab has no identity (the dialog is asked again)
    page.reload()
    page.wait_for_selector("#identity-dialog", state="visible")
    assert page.evaluate("() => sessionStorage.getItem('redesk.token')") is None
