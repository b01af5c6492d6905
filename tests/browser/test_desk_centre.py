"""The web desk in a real browser opened by a centre's link (/desk?centre=CODE): the page keeps
the centre across reloads and later visits, and a link of no centre is answered clearly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from storage.db import get_engine
from storage.models import Person, Request
from tests.browser.test_desk_cards import bot_message, say
from tests.e2e.conftest import Deployment, base_env, serve
from tests.utils.network import Network, add_network

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def network_deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Deployment, Network]]:
    """The embedded default with demo data and a district of three centres beside the default
    centre."""
    directory = tmp_path_factory.mktemp("redesk-browser-centres")
    url = f"sqlite:///{directory / 'redesk.db'}"
    running = Deployment(directory, base_env(directory, url))
    running.cli("demo")
    network = add_network(get_engine(url))
    for deployment in serve(running, "run"):
        yield deployment, network


def database(deployment: Deployment) -> Any:
    return get_engine(deployment.env["REDESK_DATABASE_URL"])


def centre_of_token(deployment: Deployment, page: Any) -> int | None:
    """The centre of the identity whose token the page holds."""
    from storage import queries
    from storage.models import utcnow

    token = page.evaluate("() => sessionStorage.getItem('redesk.token')")
    assert isinstance(token, str) and token
    with Session(database(deployment)) as session:
        person = queries.person_for_web_token(session=session, token=token, now=utcnow())
        assert person is not None
        return person.centre_id


def request_centres(deployment: Deployment, text: str) -> list[int]:
    """The centres of the requests with this text, oldest first."""
    with Session(database(deployment)) as session:
        rows = session.exec(select(Request).where(Request.text == text).order_by(Request.id))  # type: ignore[arg-type]
        return [row.centre_id for row in rows.all()]


def create_identity(page: Any, name: str) -> None:
    page.wait_for_selector("#identity-dialog", state="visible")
    page.fill("#identity-input", name)
    page.click("#identity-submit")
    page.wait_for_selector("#identity-dialog", state="hidden")


def test_a_centres_link_gives_the_identity_that_centre_and_the_page_keeps_it(
    browser: Any, network_deployment: tuple[Deployment, Network], tmp_path: Path
) -> None:
    deployment, network = network_deployment
    context = browser.new_context(locale="zh-CN", viewport={"width": 900, "height": 900})
    page = context.new_page()

    # When a resident opens 春熙路's link and makes an identity
    page.goto(f"{deployment.base_url}/desk?centre=chunxi")
    create_identity(page, "张三")

    # Then the page says which centre takes their requests, keeps the code, and the identity
    # belongs to that centre
    page.locator("li", has_text="春熙路商圈党群服务中心").first.wait_for()
    assert page.evaluate("() => localStorage.getItem('redesk.centre')") == "chunxi"
    assert centre_of_token(deployment, page) == network.chunxi
    token = page.evaluate("() => sessionStorage.getItem('redesk.token')")

    # When the page is reloaded, and later opened without the link, and a request sent
    page.reload()
    page.goto(f"{deployment.base_url}/desk")
    assert page.evaluate("() => sessionStorage.getItem('redesk.token')") == token
    say(page, "春熙路口的路灯坏了，晚上很黑")

    # Then it is filed in that centre with no question
    bot_message(page, "已受理登记")
    assert request_centres(deployment, "春熙路口的路灯坏了，晚上很黑") == [network.chunxi]
    assert page.locator("li.msg-bot", has_text="请先选择").count() == 0
    page.screenshot(path=str(tmp_path / "desk-centre.png"), full_page=True)

    # When a new tab of the same browser opens the desk without the link
    other = context.new_page()
    other.goto(f"{deployment.base_url}/desk")
    create_identity(other, "张三")

    # Then its identity belongs to the centre the resident came through as well
    other.locator("li", has_text="春熙路商圈党群服务中心").first.wait_for()
    assert centre_of_token(deployment, other) == network.chunxi

    # When the first tab opens another centre's link
    page.goto(f"{deployment.base_url}/desk?centre=shuyuan")

    # Then the server moves the identity there for new requests, and says so once
    bot_message(page, "已切换到「书院街社区党群服务中心」")
    assert centre_of_token(deployment, page) == network.shuyuan
    page.reload()
    page.locator("li.msg-bot", has_text="已切换到").first.wait_for()
    assert page.locator("li.msg-bot", has_text="已切换到").count() == 1
    assert request_centres(deployment, "春熙路口的路灯坏了，晚上很黑") == [network.chunxi]
    context.close()


def test_a_link_of_no_centre_is_answered_and_the_resident_chooses_with_their_request(
    browser: Any, network_deployment: tuple[Deployment, Network]
) -> None:
    deployment, network = network_deployment
    context = browser.new_context(locale="zh-CN", viewport={"width": 900, "height": 900})
    page = context.new_page()

    # When a resident opens a link whose code names no centre (HTML in it) and makes an
    # identity
    page.goto(f"{deployment.base_url}/desk?centre=%3Cb%3Enowhere%3C%2Fb%3E")
    create_identity(page, "李四")

    # Then they are told, as text, and get an identity of no centre; nothing is kept
    notice = page.locator("li.msg-system", has_text="没有找到代码为").first
    notice.wait_for()
    assert "<b>nowhere</b>" in str(notice.inner_text())
    assert page.locator("b", has_text="nowhere").count() == 0
    assert centre_of_token(deployment, page) is None
    assert page.evaluate("() => localStorage.getItem('redesk.centre')") is None

    # When they write their request
    say(page, "合江亭旁的井盖丢了")

    # Then they are asked to choose, and choosing by the buttons files it
    question = bot_message(page, "请先选择")
    question.locator(".btn-action", has_text="锦江区党群服务中心").click()
    children = bot_message(page, "下设以下党群服务中心")
    children.locator(".btn-action", has_text="合江亭社区党群服务中心").click()
    bot_message(page, "已受理登记")
    assert request_centres(deployment, "合江亭旁的井盖丢了") == [network.hejiang]
    with Session(database(deployment)) as session:
        people = session.exec(select(Person).where(Person.display_name == "李四")).all()
        assert [person.centre_id for person in people] == [network.hejiang]
    context.close()
