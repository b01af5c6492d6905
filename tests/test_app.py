"""The ASGI app in-process: web API, desk page, health and metrics, on both databases."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from sqlalchemy import func, update
from sqlmodel import Session, select

from bot.app import STATIC_DIR, WEB_BODY_LIMIT, create_app
from bot.runtime import Runtime
from bot.scheduler import HEARTBEAT_SUFFIX, LEASE_KEY, RedisLease
from storage.db import get_engine
from storage.models import InboxMessage, WebSession, utcnow
from storage.settings import Settings
from tests.utils.app import TestClient
from tests.utils.harness import Desk

#: Any CJK character: error answers are sentences in Chinese.
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def new_token(client: TestClient, name: str = "张三") -> str:
    """A new web chat identity's token."""
    response = client.post("/api/web/session", json={"name": name})
    assert response.status_code == 201
    token: str = response.json()["token"]
    return token


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def post(client: TestClient, token: str, body: Any) -> Any:
    """POSTs a web message."""
    return client.post("/api/web/messages", json=body, headers=auth(token))


def messages(client: TestClient, token: str, after: int = 0) -> list[dict[str, Any]]:
    """The identity's messages after `after`, without waiting."""
    response = client.get(f"/api/web/messages?after={after}&wait=0", headers=auth(token))
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json()["messages"]
    return found


def inbox_count(runtime: Runtime) -> int:
    """How many inbox rows are stored."""
    with Session(runtime.engine) as session:
        return int(session.exec(select(func.count()).select_from(InboxMessage)).one())


def enqueued(broker: dramatiq.Broker) -> int:
    """How many handle_inbound jobs wait in the in-process queue."""
    return int(broker.queues["inbound"].qsize())


def with_fallback_category(runtime: Runtime) -> Desk:
    """A harness on the runtime, with a catch-all category so any text becomes a request."""
    desk = Desk(runtime)
    desk.add_category("其他", [], fallback=True)
    return desk


# --- identities -----------------------------------------------------------------------------


def test_a_new_web_session_answers_201_with_a_token(client: TestClient) -> None:
    response = client.post("/api/web/session", json={"name": "张阿姨"})

    assert response.status_code == 201
    token = response.json()["token"]
    assert isinstance(token, str) and len(token) >= 32


def test_a_web_session_needs_no_name(client: TestClient) -> None:
    response = client.post("/api/web/session")

    assert response.status_code == 201
    assert response.json()["token"]


@pytest.mark.parametrize("name", ["名" * 101, 42, ["张三"]], ids=["too-long", "number", "list"])
def test_a_web_session_with_a_bad_name_is_refused(client: TestClient, name: Any) -> None:
    response = client.post("/api/web/session", json={"name": name})

    assert response.status_code == 400
    assert CHINESE.search(response.json()["error"])


def test_every_web_session_is_a_different_identity(client: TestClient) -> None:
    assert new_token(client) != new_token(client)


# --- posting and reading ----------------------------------------------------------------------


def test_a_posted_message_is_stored_enqueued_and_answered(
    client: TestClient, runtime: Runtime, stub_broker: dramatiq.Broker
) -> None:
    # Given an identity and a catch-all category
    desk = with_fallback_category(runtime)
    token = new_token(client)

    # When it posts a message
    response = post(client, token, {"id": "c-1", "text": "小区门口的路灯坏了"})

    # Then it is accepted, stored and enqueued before anything is handled
    assert response.status_code == 202
    assert response.json() == {"id": "c-1"}
    assert inbox_count(runtime) == 1
    assert enqueued(stub_broker) == 1
    assert messages(client, token) == []

    # And once a worker has handled it, the receipt with the request's number is there
    desk.work()
    found = messages(client, token)
    number = desk.requests()[0].number
    assert len(found) == 1
    assert number in found[0]["text"]
    assert found[0]["seq"] == 1
    assert isinstance(found[0]["buttons"], list)
    assert all(set(button) == {"label", "action"} for button in found[0]["buttons"])


def test_a_message_without_an_id_is_given_one(client: TestClient, runtime: Runtime) -> None:
    token = new_token(client)

    response = post(client, token, {"text": "帮助"})

    assert response.status_code == 202
    assert response.json()["id"]
    assert inbox_count(runtime) == 1


def test_a_pressed_button_is_a_message_too(client: TestClient, runtime: Runtime) -> None:
    token = new_token(client)

    response = post(client, token, {"id": "b-1", "action": "帮助"})
    Desk(runtime).work()

    assert response.status_code == 202
    assert len(messages(client, token)) == 1


def test_after_returns_only_later_messages_in_order(client: TestClient, runtime: Runtime) -> None:
    # Given three answered messages
    token = new_token(client)
    for index in range(3):
        assert post(client, token, {"id": f"h{index}", "text": "帮助"}).status_code == 202
    Desk(runtime).work()
    every = messages(client, token)
    assert [m["seq"] for m in every] == [1, 2, 3]

    # When reading after the first
    later = messages(client, token, after=every[0]["seq"])

    # Then only the two later ones come, in order; after the last, none
    assert [m["seq"] for m in later] == [2, 3]
    assert messages(client, token, after=3) == []


def test_wait_zero_returns_an_empty_list_at_once(client: TestClient) -> None:
    token = new_token(client)

    response = client.get("/api/web/messages?after=0&wait=0", headers=auth(token))

    assert response.status_code == 200
    assert response.json() == {"messages": []}


def test_a_long_poll_returns_messages_already_there(client: TestClient, runtime: Runtime) -> None:
    token = new_token(client)
    post(client, token, {"id": "x", "text": "帮助"})
    Desk(runtime).work()

    response = client.get("/api/web/messages?after=0&wait=5", headers=auth(token))

    assert response.status_code == 200
    assert len(response.json()["messages"]) == 1


@pytest.mark.parametrize("query", ["after=abc", "wait=soon"])
def test_a_malformed_query_is_refused(client: TestClient, query: str) -> None:
    token = new_token(client)

    response = client.get(f"/api/web/messages?{query}", headers=auth(token))

    assert response.status_code == 400
    assert CHINESE.search(response.json()["error"])


def test_one_identity_never_sees_another_ones_messages(
    client: TestClient, runtime: Runtime
) -> None:
    # Given two identities: A asks for help, B reports a problem
    desk = with_fallback_category(runtime)
    token_a = new_token(client, "甲")
    token_b = new_token(client, "乙")
    post(client, token_a, {"id": "same", "text": "帮助"})
    post(client, token_b, {"id": "same", "text": "路灯坏了"})
    desk.work()

    # When each reads its messages
    seen_a = messages(client, token_a)
    seen_b = messages(client, token_b)

    # Then each sees its own answer only, with the same client id stored twice
    number = desk.requests()[0].number
    assert inbox_count(runtime) == 2
    assert len(seen_a) == 1 and len(seen_b) == 1
    assert number in seen_b[0]["text"]
    assert all(number not in m["text"] for m in seen_a)
    assert seen_a[0]["text"] != seen_b[0]["text"]


# --- authorization ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "unknown-token", "empty-token", "basic"],
)
def test_without_a_valid_token_both_endpoints_answer_401(
    client: TestClient, runtime: Runtime, headers: dict[str, str]
) -> None:
    posted = client.post("/api/web/messages", json={"id": "1", "text": "帮助"}, headers=headers)
    read = client.get("/api/web/messages?after=0", headers=headers)

    assert posted.status_code == 401
    assert read.status_code == 401
    assert CHINESE.search(posted.json()["error"])
    assert inbox_count(runtime) == 0


def test_an_expired_token_answers_401_and_stores_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    # Given a token whose session has expired
    token = new_token(client)
    with Session(runtime.engine) as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(minutes=1)))
        session.commit()

    # When it is used
    posted = post(client, token, {"id": "1", "text": "帮助"})
    read = client.get("/api/web/messages?after=0", headers=auth(token))

    # Then it is refused
    assert posted.status_code == 401
    assert read.status_code == 401
    assert inbox_count(runtime) == 0


# --- malformed bodies ---------------------------------------------------------------------


def test_a_body_that_is_not_json_is_refused_in_chinese(
    client: TestClient, runtime: Runtime
) -> None:
    token = new_token(client)

    posted = client.post(
        "/api/web/messages",
        content=b"text=hello",
        headers={**auth(token), "Content-Type": "application/json"},
    )
    session = client.post("/api/web/session", content=b"{not json")

    assert posted.status_code == 400
    assert session.status_code == 400
    for response in (posted, session):
        body = response.json()
        assert set(body) == {"error"}
        assert CHINESE.search(body["error"])
    assert inbox_count(runtime) == 0


@pytest.mark.parametrize(
    "body",
    [
        [],
        "帮助",
        None,
        {},
        {"id": "1"},
        {"id": "1", "text": 5},
        {"id": "1", "text": "帮助", "action": "帮助"},
        {"id": {"nested": 1}, "text": "帮助"},
        {"id": "x" * 101, "text": "帮助"},
        {"id": "1", "intake": "张三"},
        {"id": "1", "text": "长" * 10_000},
    ],
    ids=[
        "list",
        "string",
        "null",
        "empty",
        "no-text",
        "text-number",
        "text-and-action",
        "id-object",
        "id-too-long",
        "intake-string",
        "text-far-too-long",
    ],
)
def test_a_body_of_the_wrong_shape_is_refused(
    client: TestClient, runtime: Runtime, stub_broker: dramatiq.Broker, body: Any
) -> None:
    token = new_token(client)

    response = post(client, token, body)

    assert response.status_code == 400
    assert CHINESE.search(response.json()["error"])
    assert inbox_count(runtime) == 0
    assert enqueued(stub_broker) == 0


def test_a_declared_body_over_64_kib_answers_413_and_stores_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    token = new_token(client)
    body = b'{"id": "big", "text": "' + b"a" * WEB_BODY_LIMIT + b'"}'

    response = client.post(
        "/api/web/messages",
        content=body,
        headers={**auth(token), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert CHINESE.search(response.json()["error"])
    assert inbox_count(runtime) == 0


def test_a_chunked_body_over_the_limit_answers_413_and_stores_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    # Given a body sent in chunks, without Content-Length
    token = new_token(client)

    def chunks() -> Iterator[bytes]:
        yield b'{"id": "big", "text": "'
        for _ in range(WEB_BODY_LIMIT // 4096 + 1):
            yield b"a" * 4096
        yield b'"}'

    # When it is posted
    response = client.post(
        "/api/web/messages",
        content=chunks(),
        headers={**auth(token), "Content-Type": "application/json"},
    )

    # Then it is refused like a declared one
    assert response.status_code == 413
    assert inbox_count(runtime) == 0


def test_a_body_just_under_the_limit_is_read(client: TestClient) -> None:
    token = new_token(client)
    padding = " " * (WEB_BODY_LIMIT - 100)
    body = f'{{"id": "edge",{padding}"text": "帮助"}}'.encode()
    assert len(body) <= WEB_BODY_LIMIT

    response = client.post(
        "/api/web/messages",
        content=body,
        headers={**auth(token), "Content-Type": "application/json"},
    )

    assert response.status_code == 202


def test_a_repeated_client_id_is_accepted_twice_but_stored_and_enqueued_once(
    client: TestClient, runtime: Runtime, stub_broker: dramatiq.Broker
) -> None:
    # Given an identity
    token = new_token(client)

    # When the same message is posted twice (a client retry)
    first = post(client, token, {"id": "retry-1", "text": "帮助"})
    second = post(client, token, {"id": "retry-1", "text": "帮助"})

    # Then both are acknowledged, but it is one inbox row, one job and one answer
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() == {"id": "retry-1"}
    assert inbox_count(runtime) == 1
    assert enqueued(stub_broker) == 1
    Desk(runtime).work()
    assert len(messages(client, token)) == 1


# --- health, metrics, desk ----------------------------------------------------------------


def test_healthz_answers_200_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "scheduler": "embedded"}


def runtime_for(database_url: str, redis_url: str | None = None) -> Runtime:
    """A runtime on a given database (and Redis)."""
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,  # type: ignore[call-arg]
        _env_file=None,
    )
    return Runtime(settings=settings, engine=get_engine(database_url))


def test_healthz_answers_503_when_the_database_does_not(stub_broker: dramatiq.Broker) -> None:
    # Given a runtime whose database does not answer
    runtime = runtime_for("postgresql+psycopg://postgres@127.0.0.1:1/none")

    # When health is asked
    with TestClient(create_app(runtime)) as client:
        response = client.get("/healthz")

    # Then it is unhealthy
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_healthz_checks_redis_when_it_is_configured(
    runtime: Runtime, redis_url: str, stub_broker: dramatiq.Broker
) -> None:
    # Given the same database with a working Redis, and with one that does not answer
    good = runtime_for(runtime.settings.database_url, redis_url)
    bad = runtime_for(runtime.settings.database_url, "redis://127.0.0.1:1/0")

    with TestClient(create_app(good)) as client:
        healthy = client.get("/healthz")
    with TestClient(create_app(bad)) as client:
        unhealthy = client.get("/healthz")

    assert healthy.status_code == 200
    assert healthy.json()["redis"] == "ok"
    assert unhealthy.status_code == 503


def test_healthz_and_metrics_say_when_no_scheduler_has_held_the_lease(
    runtime: Runtime, redis_url: str, stub_broker: dramatiq.Broker
) -> None:
    # Given production's shape (Redis configured) and no `redesk scheduler` ever started
    app = create_app(runtime_for(runtime.settings.database_url, redis_url))
    with TestClient(app) as client:
        # When health and metrics are asked
        health = client.get("/healthz")
        metrics_text = client.get("/metrics").text

        # Then the process is alive (200) but says the scheduler is missing
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok",
            "database": "ok",
            "redis": "ok",
            "scheduler": "missing",
            "scheduler_seen_seconds_ago": None,
        }
        assert "redesk_scheduler_missing 1.0" in metrics_text
        assert "redesk_scheduler_lease_age_seconds" not in metrics_text

        # When a scheduler takes the lease
        lease = RedisLease(redis_url)
        assert lease.hold()
        health = client.get("/healthz").json()
        metrics_text = client.get("/metrics").text

        # Then it is there
        assert health["scheduler"] == "ok"
        assert health["scheduler_seen_seconds_ago"] in (0, 1)
        assert "redesk_scheduler_missing 0.0" in metrics_text
        assert "redesk_scheduler_lease_age_seconds" in metrics_text

        # When it died two minutes ago (its lease expired; its last heartbeat stays)
        lease.release()
        connection = redis.Redis.from_url(redis_url)
        seconds, micros = connection.time()
        connection.set(LEASE_KEY + HEARTBEAT_SUFFIX, seconds * 1000 + micros // 1000 - 120_000)
        connection.close()
        health = client.get("/healthz").json()
        metrics_text = client.get("/metrics").text

        # Then it is missing again, and how long ago it was seen is told
        assert health["scheduler"] == "missing"
        assert 120 <= health["scheduler_seen_seconds_ago"] < 180
        assert "redesk_scheduler_missing 1.0" in metrics_text


def test_metrics_on_the_embedded_default_never_report_the_scheduler_missing(
    client: TestClient,
) -> None:
    # Given the embedded default, where `redesk run` runs the scheduler itself
    # When the metrics are scraped
    body = client.get("/metrics").text

    # Then nothing is missing
    assert "redesk_scheduler_missing 0.0" in body


def test_metrics_count_requests_by_state_and_the_backlog(
    client: TestClient, runtime: Runtime
) -> None:
    # Given one new request and one message not yet handled
    desk = with_fallback_category(runtime)
    post(client, new_token(client), {"id": "1", "text": "路灯坏了"})
    desk.work()
    post(client, new_token(client), {"id": "2", "text": "帮助"})

    # When the metrics are scraped
    response = client.get("/metrics")

    # Then they are Prometheus text with the gauges read from the database
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    assert 'redesk_requests{state="new"} 1.0' in body
    assert 'redesk_backlog{queue="inbox"} 1.0' in body
    assert 'redesk_backlog{queue="outbox"} 0.0' in body
    assert 'redesk_inbound_messages_total{channel="web",outcome="stored"}' in body


def test_metrics_of_an_app_read_its_own_database_only(
    client: TestClient, runtime: Runtime, tmp_path: Path, sqlite_template: Path
) -> None:
    # Given one app with a request scraped once, and a second app on an empty database
    with_fallback_category(runtime)
    post(client, new_token(client), {"id": "1", "text": "路灯坏了"})
    Desk(runtime).work()
    assert 'redesk_requests{state="new"} 1.0' in client.get("/metrics").text
    empty = tmp_path / "empty.db"
    shutil.copy(sqlite_template, empty)

    # When the second app is scraped
    with TestClient(create_app(runtime_for(f"sqlite:///{empty}"))) as other:
        body = other.get("/metrics").text

    # Then it shows its own (empty) database, once
    assert 'redesk_requests{state="new"}' not in body
    assert body.count("# TYPE redesk_backlog gauge") == 1
    assert 'redesk_backlog{queue="inbox"} 0.0' in body


def test_the_desk_page_is_served_with_strict_security_headers(client: TestClient) -> None:
    response = client.get("/desk")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "诉求受理台" in response.text


def test_the_desk_page_needs_no_inline_script_or_style() -> None:
    # The CSP forbids inline code, so the page must load everything from /static.
    html = (STATIC_DIR / "desk.html").read_text(encoding="utf-8")

    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert all(
        not body.strip() for body in re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    )
    assert "<style" not in html
    assert " style=" not in html
    assert " onclick=" not in html.lower()


def test_api_answers_carry_the_security_headers_too(client: TestClient) -> None:
    response = client.post("/api/web/messages", json={"text": "帮助"})

    assert response.status_code == 401
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_the_root_redirects_to_the_desk(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)

    assert response.status_code in (302, 303, 307)
    assert response.headers["location"].endswith("/desk")


@pytest.mark.parametrize(
    ("path", "kind"), [("/static/desk.js", "javascript"), ("/static/desk.css", "css")]
)
def test_the_desk_assets_are_served(client: TestClient, path: str, kind: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert kind in response.headers["content-type"]
    assert response.content


def test_an_unknown_path_is_404(client: TestClient) -> None:
    assert client.get("/no-such-page").status_code == 404


def test_the_web_api_refuses_other_methods(client: TestClient) -> None:
    assert client.get("/api/web/session").status_code == 405
    assert client.delete("/api/web/messages").status_code == 405


# --- the desk's quick buttons follow the role ------------------------------------------------


def test_web_me_answers_the_identity_s_role_which_changes_when_a_code_is_bound(
    client: TestClient,
    runtime: Runtime,
) -> None:
    # Given a new web identity (a resident)
    desk = Desk(runtime)
    token = new_token(client)
    before = client.get("/api/web/me", headers=auth(token))

    # When it binds a worker invitation code
    post(client, token, {"id": "bind", "text": f"绑定 {desk.invite('worker')}"})
    desk.work()
    after = client.get("/api/web/me", headers=auth(token))

    # Then the role it answers is first requester, then worker
    assert (before.status_code, before.json()) == (200, {"role": "requester"})
    assert (after.status_code, after.json()) == (200, {"role": "worker"})


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}])
def test_web_me_without_a_valid_token_answers_401(
    client: TestClient,
    headers: dict[str, str],
) -> None:
    response = client.get("/api/web/me", headers=headers)

    assert response.status_code == 401
    assert "身份无效" in response.json()["error"]


def test_the_desk_offers_the_to_do_button_to_staff_roles_only() -> None:
    # Given the desk page and its script
    html = (STATIC_DIR / "desk.html").read_text(encoding="utf-8")
    script = (STATIC_DIR / "desk.js").read_text(encoding="utf-8")

    # Then 待办 starts hidden and is shown only to the roles that have a to-do list
    button = re.search(r'<button[^>]*data-quick="待办"[^>]*>', html)
    assert button is not None
    assert 'data-roles="worker leader department"' in button.group(0)
    assert " hidden" in button.group(0)
    # And the script asks the server for the role instead of guessing it
    assert '"/api/web/me"' in script and "applyRole(res.data.role)" in script
