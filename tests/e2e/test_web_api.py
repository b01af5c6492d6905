"""The web API's answers to bad input, health, metrics and the desk page, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment, base_env, serve

#: The web API's body limit (bot.app.WEB_BODY_LIMIT).
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def http(sqlite_deployment: Deployment) -> Iterator[httpx.Client]:
    """An HTTP client on the module's server."""
    with sqlite_deployment.http() as client:
        yield client


@pytest.fixture
def resident(http: httpx.Client) -> WebChat:
    """A fresh web identity."""
    return WebChat.open(http, "居民")


def assert_error(response: httpx.Response, status: int) -> None:
    """The answer has `status` and a JSON body {"error": a sentence}."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]


def test_posting_a_message_without_a_token_is_unauthorized(http: httpx.Client) -> None:
    assert_error(http.post("/api/web/messages", json={"text": "路灯坏了"}), 401)


def test_posting_a_message_with_a_bad_token_is_unauthorized(http: httpx.Client) -> None:
    response = http.post(
        "/api/web/messages",
        json={"text": "路灯坏了"},
        headers={"Authorization": "Bearer not-a-real-token"},
    )
    assert_error(response, 401)


def test_posting_with_another_scheme_is_unauthorized(http: httpx.Client, resident: WebChat) -> None:
    response = http.post(
        "/api/web/messages",
        json={"text": "路灯坏了"},
        headers={"Authorization": f"Basic {resident.token}"},
    )
    assert_error(response, 401)


def test_reading_messages_with_a_bad_token_is_unauthorized(http: httpx.Client) -> None:
    assert_error(http.get("/api/web/messages"), 401)
    assert_error(http.get("/api/web/messages", headers={"Authorization": "Bearer nope"}), 401)


def test_a_body_that_is_not_json_is_a_bad_request(http: httpx.Client, resident: WebChat) -> None:
    response = http.post(
        "/api/web/messages",
        content=b"text=hello",
        headers={**resident.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400)


def test_a_body_that_is_not_utf8_is_a_bad_request(http: httpx.Client, resident: WebChat) -> None:
    response = http.post(
        "/api/web/messages", content=b'{"text": "\xff\xfe"}', headers=resident.headers
    )
    assert_error(response, 400)


def test_deeply_nested_json_is_a_bad_request(resident: WebChat) -> None:
    body = b"[" * 30_000 + b"]" * 30_000
    assert len(body) < BODY_LIMIT
    response = resident.http.post(
        "/api/web/messages",
        content=body,
        headers={**resident.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(["路灯坏了"], id="an array"),
        pytest.param("路灯坏了", id="a string"),
        pytest.param({"id": "m1"}, id="no text"),
        pytest.param({}, id="empty object"),
        pytest.param({"text": "路灯坏了", "action": "查询"}, id="text and action"),
        pytest.param({"text": 42}, id="text a number"),
        pytest.param({"text": ["路灯坏了"]}, id="text a list"),
        pytest.param({"text": None}, id="text null"),
        pytest.param({"action": {"受理": 1}}, id="action an object"),
        pytest.param({"id": ["x"], "text": "路灯坏了"}, id="id a list"),
        pytest.param({"id": "x" * 101, "text": "路灯坏了"}, id="id too long"),
        pytest.param({"intake": "陈阿姨"}, id="intake a string"),
    ],
)
def test_json_of_the_wrong_shape_is_a_bad_request(resident: WebChat, body: Any) -> None:
    assert_error(resident.post(body), 400)


def test_a_body_over_64_kib_is_too_large(resident: WebChat) -> None:
    body = json.dumps({"text": "a" * BODY_LIMIT}).encode()
    assert len(body) > BODY_LIMIT
    response = resident.http.post(
        "/api/web/messages",
        content=body,
        headers={**resident.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 413)


def test_a_chunked_body_over_64_kib_is_too_large(resident: WebChat) -> None:
    # Given a body without Content-Length (chunked), so the server must count as it reads
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(BODY_LIMIT // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'

    response = resident.http.post(
        "/api/web/messages",
        content=chunks(),
        headers={**resident.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 413)


def test_an_over_long_text_within_the_body_limit_is_answered_in_chat(resident: WebChat) -> None:
    # The handlers answer an over-long text in chat; the HTTP layer only bounds the body.
    response = resident.post({"id": "long", "text": "a" * 8000})
    assert response.status_code == 202, response.text
    assert resident.wait_for("内容过长", "2000").text


@pytest.mark.parametrize(
    "query",
    [
        "after=abc",
        "after=1.5",
        "after=99999999999999999999",
        "after=&wait=1",
        "wait=soon",
        "wait=nan",
    ],
)
def test_reading_with_a_malformed_query_is_a_bad_request(resident: WebChat, query: str) -> None:
    response = resident.http.get(f"/api/web/messages?{query}", headers=resident.headers)
    assert_error(response, 400)


def test_a_new_session_needs_a_json_object(http: httpx.Client) -> None:
    assert_error(http.post("/api/web/session", json=["张三"]), 400)
    assert_error(http.post("/api/web/session", json={"name": 7}), 400)
    assert_error(
        http.post("/api/web/session", content=b"{", headers={"Content-Type": "application/json"}),
        400,
    )
    created = http.post("/api/web/session")
    assert created.status_code == 201 and created.json()["token"]


def test_health_answers_ok(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_metrics_show_requests_by_state_and_the_backlog(resident: WebChat) -> None:
    # Given a request, so requests by state has a sample
    resident.send("我家楼下的路灯坏了")
    resident.wait_for("已受理登记")

    response = resident.http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = [line for line in response.text.splitlines() if not line.startswith("#")]
    assert any(line.startswith('redesk_requests{state="new"}') for line in samples), samples
    assert any(line.startswith("redesk_backlog{") for line in samples), samples
    assert any(line.startswith("redesk_inbound_messages_total{") for line in samples), samples


def test_the_desk_page_is_html_under_a_strict_content_security_policy(
    http: httpx.Client,
) -> None:
    response = http.get("/desk")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    page = response.text.lower()
    assert "<html" in page
    # Under script-src 'self' an inline script would not run: every script is a file.
    assert page.count("<script") == page.count("<script src=")


def test_the_desk_script_fills_messages_as_text_not_html(http: httpx.Client) -> None:
    script = http.get("/static/desk.js")

    assert script.status_code == 200
    assert "textContent" in script.text
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text


def test_a_script_tag_in_a_request_comes_back_as_plain_text(resident: WebChat) -> None:
    # Given a request whose text holds markup
    markup = '<script>alert("x")</script><b>路灯</b>坏了 & 不亮'
    resident.send(markup)
    number = resident.wait_for("已受理登记").number

    # When the resident looks at it
    status = resident.ask(f"查询 {number}", f"【{number}】")

    # Then the JSON carries the text exactly as typed, not escaped and not stripped
    assert f"诉求：\n│ {markup}" in status.text
    raw = resident.http.get(
        "/api/web/messages", params={"after": status.seq - 1}, headers=resident.headers
    )
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.json()["messages"][0]["text"] == status.text


# --- long polls woken over Redis ----------------------------------------------------------


@pytest.fixture(scope="module")
def split_deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, e2e_redis_url: str
) -> Iterator[Deployment]:
    """PostgreSQL, Redis, `redesk run` and a separate `redesk worker`; waiting polls never
    look at the database on their own within a poll's 30 s."""
    directory = tmp_path_factory.mktemp("redesk-e2e-wake")
    env = base_env(directory, postgres_url)
    env["REDESK_REDIS_URL"] = e2e_redis_url
    env["REDESK_WEB_POLL_FALLBACK"] = "300"
    deployment = Deployment(directory, env)
    deployment.cli("db", "upgrade")
    deployment.cli("demo")
    yield from serve(deployment, "worker", "run")


def open_polls(http: httpx.Client) -> float:
    """redesk_web_polls_open of the server's /metrics."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("redesk_web_polls_open "):
            return float(line.split()[1])
    raise AssertionError("no redesk_web_polls_open in /metrics")


def test_a_long_poll_is_woken_when_a_separate_worker_delivers(
    split_deployment: Deployment,
) -> None:
    # Given a resident whose long poll waits (the worker is another process)
    with split_deployment.http() as http, ThreadPoolExecutor(max_workers=1) as pool:
        resident = WebChat.open(http, "居民")
        waiting = pool.submit(
            httpx.get,
            f"{split_deployment.base_url}/api/web/messages",
            params={"after": 0, "wait": 30},
            headers=resident.headers,
            timeout=60,
        )
        for _ in range(200):
            if open_polls(http) == 1:
                break
            time.sleep(0.05)
        assert open_polls(http) == 1

        # When the resident writes and the worker delivers the receipt
        resident.send("3号楼楼道灯坏了，晚上很黑")

        # Then the waiting poll answers with it (unwoken, it would end empty)
        answer = waiting.result()
    assert answer.status_code == 200
    messages = answer.json()["messages"]
    assert len(messages) == 1 and "已受理登记" in messages[0]["text"]


def test_a_third_long_poll_of_one_identity_is_refused(
    http: httpx.Client, resident: WebChat
) -> None:
    # Given a resident holding two long polls (the most per identity by default)
    base = str(http.base_url).rstrip("/")
    with ThreadPoolExecutor(max_workers=2) as pool:
        held = [
            pool.submit(
                httpx.get,
                f"{base}/api/web/messages",
                params={"after": 0, "wait": 30},
                headers=resident.headers,
                timeout=60,
            )
            for _ in range(2)
        ]
        for _ in range(200):
            if open_polls(http) == 2:
                break
            time.sleep(0.05)
        assert open_polls(http) == 2

        # When it opens a third
        third = http.get(
            "/api/web/messages", params={"after": 0, "wait": 30}, headers=resident.headers
        )

        # Then it is refused with 429 and Retry-After; nothing else changed
        assert_error(third, 429)
        assert int(third.headers["Retry-After"]) >= 1
        assert open_polls(http) == 2

        # And once a message arrives the held polls answer with it and free their slots
        resident.send("5号楼电梯停运了")
        answers = [future.result() for future in held]
    assert all("已受理登记" in a.json()["messages"][0]["text"] for a in answers)
