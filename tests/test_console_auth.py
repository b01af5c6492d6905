"""The console's auth API (bot/console/auth.py) over HTTP, on SQLite and PostgreSQL: setup,
login and its limits, the session cookie, CSRF and cross-site refusals, session expiry,
logout everywhere, and the account's linked chats."""

from __future__ import annotations

from datetime import timedelta
from http.cookies import SimpleCookie

import pytest
from sqlmodel import select

from bot.app import create_app
from bot.console.auth import COOKIE
from bot.runtime import Runtime
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import Account, ConsoleSession, Person
from storage.settings import Settings
from tests.utils.accounts import (
    ORIGIN,
    PASSWORD,
    SAME_SITE,
    audit_actions,
    logged_in,
    login,
    make_account,
)
from tests.utils.app import TestClient
from tests.utils.harness import Desk


def _cookie(response: object) -> SimpleCookie:
    header = response.headers["set-cookie"]  # type: ignore[attr-defined]
    jar: SimpleCookie = SimpleCookie()
    jar.load(header)
    return jar


def _age_sessions(
    runtime: Runtime, *, idle: timedelta = timedelta(), age: timedelta = timedelta()
) -> None:
    """Moves every session's last use and start into the past."""
    with session_scope(runtime.engine) as session:
        for row in session.exec(select(ConsoleSession)).all():
            row.last_seen_at -= idle
            row.created_at -= age
            session.add(row)
        # the password was set just before the login: that moment moves back too
        for account in session.exec(select(Account)).all():
            if account.sessions_valid_after is not None:
                account.sessions_valid_after -= age
                session.add(account)


# --- login and the cookie -------------------------------------------------------------------


def test_login_sets_an_httponly_samesite_strict_cookie_and_answers_the_csrf_token(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang", name="王书记")

    response = login(client, "wang")

    assert response.status_code == 200
    csrf = response.json()["csrf_token"]
    morsel = _cookie(response)[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # development
    assert morsel.value not in csrf
    # only the token's hash is stored
    with session_scope(runtime.engine) as session:
        stored = session.exec(select(ConsoleSession)).one()
        assert stored.token_hash != morsel.value and morsel.value not in stored.token_hash

    me = client.get("/api/console/me")
    assert me.status_code == 200
    data = me.json()
    assert (data["username"], data["name"], data["role"]) == ("wang", "王书记", "worker")
    assert data["role_label"] == "党务工作者"
    assert data["centre"]["code"] == "default"
    assert data["csrf_token"] == csrf
    assert me.headers["cache-control"] == "no-store"


def test_in_production_the_cookie_is_secure(db_url: str, stub_broker: object) -> None:
    settings = Settings(
        database_url=db_url,
        redis_url=None,
        web_sessions_per_minute=0,
        env="production",
        public_url="https://desk.example.cn",
        _env_file=None,
    )
    runtime = Runtime(settings=settings, engine=get_engine(db_url))
    make_account(runtime.engine, "wang")
    with TestClient(create_app(runtime), base_url="https://desk.example.cn") as client:
        response = client.post(
            "/api/console/login",
            json={"username": "wang", "password": PASSWORD},
            headers={"Origin": "https://desk.example.cn"},
        )
    assert response.status_code == 200, response.text
    assert _cookie(response)[COOKIE]["secure"] is True


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    wrong = login(client, "wang", "not-the-password")
    unknown = login(client, "nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "bad_login", "message": "用户名或密码错误。"}
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers
    assert client.get("/api/console/me").status_code == 401
    assert audit_actions(runtime.engine).count("console_login_failed") == 2


def test_logins_are_limited_per_username_with_a_clear_answer(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    for _ in range(5):
        assert login(client, "wang", "not-the-password").status_code == 401

    refused = login(client, "wang")  # the right password, now refused

    assert refused.status_code == 429
    assert refused.json()["error"] == "login_limited"
    assert refused.json()["message"] == "登录失败次数过多，请在 15 分钟后再试。"
    assert 1 <= int(refused.headers["retry-after"]) <= 900
    assert "set-cookie" not in refused.headers


def test_logins_are_limited_per_address(client: TestClient, runtime: Runtime) -> None:
    make_account(runtime.engine, "wang")
    for n in range(20):
        assert login(client, f"guess{n}", "not-the-password").status_code == 401
    assert login(client, "wang").status_code == 429


@pytest.mark.parametrize(
    "body",
    [
        {"username": "wang"},
        {"username": 1, "password": PASSWORD},
        {"username": "wang", "password": ["x"]},
        {"username": "x" * 500, "password": PASSWORD},
    ],
)
def test_a_malformed_login_is_refused(
    client: TestClient, runtime: Runtime, body: dict[str, object]
) -> None:
    make_account(runtime.engine, "wang")
    response = client.post("/api/console/login", json=body, headers=SAME_SITE)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_field"


def test_a_login_posted_as_a_form_or_from_another_site_is_refused(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    form = client.post(
        "/api/console/login",
        content=b'{"username": "wang", "password": "%s"}' % PASSWORD.encode(),
        headers={**SAME_SITE, "Content-Type": "text/plain"},
    )
    assert form.status_code == 415
    cross = login(client, "wang", Origin="https://evil.example")
    assert cross.status_code == 403 and cross.json()["error"] == "csrf"
    nothing = client.post("/api/console/login", json={"username": "wang", "password": PASSWORD})
    assert nothing.status_code == 403
    assert client.get("/api/console/me").status_code == 401


# --- CSRF and cross-site --------------------------------------------------------------------


def test_a_state_changing_call_needs_the_csrf_token_and_this_sites_origin(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    headers = logged_in(client, "wang")
    token = headers["X-CSRF-Token"]
    refusals = [
        SAME_SITE,  # no token
        {**SAME_SITE, "X-CSRF-Token": "wrong"},
        {"Origin": "https://evil.example", "X-CSRF-Token": token},
        {"Referer": "https://evil.example/page", "X-CSRF-Token": token},
        {"Origin": "null", "X-CSRF-Token": token},
        {"X-CSRF-Token": token},  # neither Origin nor Referer
    ]
    for sent in refusals:
        response = client.post("/api/console/logout", json={}, headers=sent)
        assert response.status_code == 403, sent
        assert response.json()["error"] == "csrf"
        assert response.json()["message"]
    # nothing changed: still logged in
    assert client.get("/api/console/me").status_code == 200

    # A same-site Referer without an Origin is accepted
    ok = client.post(
        "/api/console/logout",
        json={},
        headers={"Referer": f"{ORIGIN}/console", "X-CSRF-Token": token},
    )
    assert ok.status_code == 200
    assert client.get("/api/console/me").status_code == 401


def test_a_residents_web_token_opens_nothing_in_the_console(
    client: TestClient, runtime: Runtime
) -> None:
    token = client.post("/api/web/session", json={"name": "张三"}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/console/me", headers=bearer).status_code == 401
    assert client.get("/api/console/identities", headers=bearer).status_code == 401
    link = client.post("/api/console/link-code", json={}, headers={**bearer, **SAME_SITE})
    assert link.status_code == 401 and link.json()["error"] == "login_required"
    page = client.get("/console/account", headers=bearer, follow_redirects=False)
    assert page.status_code == 303
    # nor does a web token put in the cookie
    client.cookies.set(COOKIE, token)
    assert client.get("/api/console/me").status_code == 401


# --- sessions -------------------------------------------------------------------------------


def test_an_idle_session_is_over(client: TestClient, runtime: Runtime) -> None:
    make_account(runtime.engine, "wang")
    logged_in(client, "wang")
    _age_sessions(runtime, idle=timedelta(minutes=29))
    assert client.get("/api/console/me").status_code == 200
    _age_sessions(runtime, idle=timedelta(minutes=31))
    response = client.get("/api/console/me")
    assert response.status_code == 401
    assert response.json() == {"error": "login_required", "message": "请先登录。"}


def test_a_session_is_over_after_its_absolute_expiry_even_in_use(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    logged_in(client, "wang")
    _age_sessions(runtime, age=timedelta(hours=11, minutes=59))
    assert client.get("/api/console/me").status_code == 200
    _age_sessions(runtime, age=timedelta(minutes=2))
    assert client.get("/api/console/me").status_code == 401


def test_logout_everywhere_ends_the_sessions_of_every_device(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    with TestClient(client.app) as phone:
        logged_in(phone, "wang")
        headers = logged_in(client, "wang")
        response = client.post("/api/console/logout", json={"everywhere": True}, headers=headers)
        assert response.status_code == 200
        assert _cookie(response)[COOKIE].value == ""
        assert phone.get("/api/console/me").status_code == 401
    assert client.get("/api/console/me").status_code == 401
    bad = logged_in(client, "wang")
    assert (
        client.post("/api/console/logout", json={"everywhere": "yes"}, headers=bad).status_code
        == 400
    )


def test_a_disabled_account_is_logged_out_and_cannot_log_in(
    client: TestClient, runtime: Runtime
) -> None:
    from admin_scripts import staff
    from storage.models import utcnow

    make_account(runtime.engine, "wang")
    logged_in(client, "wang")
    with session_scope(runtime.engine) as session:
        staff.disable(session, username="wang", now=utcnow())
    assert client.get("/api/console/me").status_code == 401
    assert login(client, "wang").status_code == 401


def test_pages_that_need_a_login_redirect_to_it_and_come_back(
    client: TestClient, runtime: Runtime
) -> None:
    response = client.get("/console/account?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Faccount%3Fx%3D1"
    login_page = client.get("/console/login")
    assert login_page.status_code == 200 and "text/html" in login_page.headers["content-type"]
    assert (
        "<script" in login_page.text
        and "script-src 'self'" in login_page.headers["content-security-policy"]
    )
    make_account(runtime.engine, "wang")
    logged_in(client, "wang")
    page = client.get("/console/account")
    assert page.status_code == 200 and "关联聊天账号" in page.text
    assert page.headers["cache-control"] == "no-store"


# --- setup ----------------------------------------------------------------------------------


def test_setup_sets_the_password_once_and_refuses_a_bad_one_in_chinese(
    client: TestClient, runtime: Runtime
) -> None:
    link = make_account(runtime.engine, "wang", password=None)
    short = client.post(
        "/api/console/setup", json={"token": link.token, "password": "short"}, headers=SAME_SITE
    )
    assert short.status_code == 400
    assert short.json() == {"error": "password", "message": "密码至少需要 10 个字符。"}
    digits = client.post(
        "/api/console/setup",
        json={"token": link.token, "password": "12345678901"},
        headers=SAME_SITE,
    )
    assert digits.json()["message"] == "密码不能全是数字。"

    done = client.post(
        "/api/console/setup", json={"token": link.token, "password": PASSWORD}, headers=SAME_SITE
    )
    assert done.status_code == 200 and done.json() == {"username": "wang"}
    again = client.post(
        "/api/console/setup", json={"token": link.token, "password": PASSWORD}, headers=SAME_SITE
    )
    assert again.status_code == 400 and again.json()["error"] == "setup_invalid"
    cross = client.post(
        "/api/console/setup",
        json={"token": link.token, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert login(client, "wang").status_code == 200
    assert "console_setup" in audit_actions(runtime.engine, "console:wang")


# --- the account's chats ----------------------------------------------------------------------


def test_a_link_code_from_the_console_links_a_web_chat_which_can_be_chosen_and_unlinked(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang", name="王书记")
    headers = logged_in(client, "wang")

    made = client.post("/api/console/link-code", json={}, headers=headers)
    assert made.status_code == 200
    code = made.json()["code"]
    assert len(code) == 14 and made.json()["expires_at"]
    assert "web" in [c["name"] for c in made.json()["channels"]]

    # 绑定 <code> on the web desk links that chat
    desk = Desk(runtime)
    chat = desk.identity("王书记的网页")
    reply = chat.send(f"绑定 {code}")
    assert any("关联成功" in m.text and "wang" in m.text for m in reply)

    listed = client.get("/api/console/identities").json()
    assert [(i["id"], i["channel"], i["notify"]) for i in listed["items"]] == [
        (chat.person_id, "web", False)
    ]

    chosen = client.post("/api/console/notify", json={"person_id": chat.person_id}, headers=headers)
    assert chosen.status_code == 200
    assert client.get("/api/console/identities").json()["items"][0]["notify"] is True
    assert (
        client.post("/api/console/notify", json={"person_id": 999999}, headers=headers).status_code
        == 404
    )
    assert (
        client.post("/api/console/notify", json={"person_id": "1"}, headers=headers).status_code
        == 400
    )
    assert (
        client.post(
            "/api/console/notify", json={"person_id": chat.person_id}, headers=SAME_SITE
        ).status_code
        == 403
    )

    refused = client.post(
        f"/api/console/identities/{chat.person_id}/unlink", json={}, headers=SAME_SITE
    )
    assert refused.status_code == 403
    for bad in ("999999", "abc", "-1"):
        assert (
            client.post(
                f"/api/console/identities/{bad}/unlink", json={}, headers=headers
            ).status_code
            == 404
        )
    assert (
        client.post(
            f"/api/console/identities/{chat.person_id}/unlink", json={}, headers=headers
        ).status_code
        == 200
    )
    assert client.get("/api/console/identities").json()["items"] == []
    with session_scope(runtime.engine) as session:
        person = session.get(Person, chat.person_id)
        assert person is not None and person.principal_id is None
        account = session.exec(select(Account)).one()
        assert account.notify_person_id is None
    actions = audit_actions(runtime.engine, "console:wang")
    assert {
        "console_login",
        "console_link_code",
        "console_link",
        "console_notify",
        "console_unlink",
    } <= set(actions)


def test_another_accounts_chat_cannot_be_unlinked_or_chosen(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    other = make_account(runtime.engine, "zhao")
    desk = Desk(runtime)
    chat = desk.identity("赵的网页")
    with session_scope(runtime.engine) as session:
        row = session.get(Person, chat.person_id)
        assert row is not None
        row.principal_id = other.person.id
        session.add(row)
    headers = logged_in(client, "wang")
    assert (
        client.post(
            f"/api/console/identities/{chat.person_id}/unlink", json={}, headers=headers
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/console/notify", json={"person_id": chat.person_id}, headers=headers
        ).status_code
        == 404
    )
    with session_scope(runtime.engine) as session:
        row = session.get(Person, chat.person_id)
        assert row is not None and row.principal_id == other.person.id
        assert queries.get_account_by_username(session=session, username="zhao") is not None


def test_a_login_body_that_is_not_json_or_too_large_is_refused(
    client: TestClient, runtime: Runtime
) -> None:
    make_account(runtime.engine, "wang")
    headers = {**SAME_SITE, "Content-Type": "application/json"}
    for body, status in ((b"{not json", 400), (b"[1, 2]", 400), (b"x" * 20_000, 413)):
        response = client.post("/api/console/login", content=body, headers=headers)
        assert response.status_code == status
        assert response.json()["message"]
    assert client.get("/api/console/me").status_code == 401
    with session_scope(runtime.engine) as session:
        assert session.exec(select(ConsoleSession)).all() == []
