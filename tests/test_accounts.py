"""Staff accounts (workflow/accounts.py) and `redesk staff`, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest
from argon2 import PasswordHasher
from sqlmodel import col, select

from admin_scripts import cli
from admin_scripts.cli import Exit, main
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import Account, AdminAudit, ConsoleSession, LoginAttempt, Person, Role
from tests.utils.accounts import (
    PASSWORD,
    audit_actions,
    make_account,
)
from tests.utils.centres import Tree
from tests.utils.world import NOW, Cast, World
from workflow import accounts, service
from workflow.errors import InvalidInput, UnknownCentre, UnknownDepartment
from workflow.machine import State

LIMITS = accounts.Limits()


def _login(
    world: World,
    username: str,
    password: str = PASSWORD,
    *,
    address: str = "10.0.0.1",
    now: datetime = NOW,
) -> Any:
    """The cookie token of a login that worked, else the outcome (LoginFailed, LoginLimited)."""
    with session_scope(world.engine) as session:
        outcome = accounts.login(
            session, username=username, password=password, address=address, now=now, limits=LIMITS
        )
        if isinstance(outcome, accounts.LoggedIn):
            return outcome.token
        return outcome


def _live(
    world: World, token: str, now: datetime = NOW, *, touch: bool = True
) -> accounts.Live | None:
    with session_scope(world.engine) as session:
        return accounts.session_of(session, token=token, now=now, limits=LIMITS, touch=touch)


def _account(world: World, username: str) -> Account:
    with session_scope(world.engine) as session:
        found = queries.get_account_by_username(session=session, username=username)
        assert found is not None
        return found


# --- accounts and setup links ---------------------------------------------------------------


def test_a_staff_account_is_a_console_person_with_the_role_and_a_one_time_setup_link(
    world: World,
) -> None:
    # When an account is made (any case in the username)
    link = make_account(world.engine, "Li.ShuJi", "leader", name="李书记", password=None, now=NOW)

    # Then its person is of channel console, external_id the username, with the role
    with session_scope(world.engine) as session:
        person = session.get(Person, link.person.id)
        assert person is not None
        assert (person.channel, person.external_id, person.role) == (
            "console",
            "li.shuji",
            "leader",
        )
        assert person.display_name == "李书记"
        assert person.centre_id == queries.default_centre(session=session).id
        account = queries.get_account_by_username(session=session, username="li.shuji")
        assert account is not None and account.password_hash is None
        # only the token's hash is stored
        assert account.setup_token_hash == accounts.hash_token(link.token)
        assert link.token not in str(account.setup_token_hash)
    assert link.expires_at == NOW + timedelta(hours=24)

    # And the link sets the password once
    with session_scope(world.engine) as session:
        accounts.set_password(session, token=link.token, password=PASSWORD, now=NOW)
    assert _account(world, "li.shuji").password_hash.startswith("$argon2id$")  # type: ignore[union-attr]
    with session_scope(world.engine) as session, pytest.raises(accounts.SetupInvalid):
        accounts.set_password(session, token=link.token, password="another-pass-1", now=NOW)


def test_an_expired_or_unknown_setup_link_is_refused_and_changes_nothing(world: World) -> None:
    link = make_account(world.engine, "wang", password=None, now=NOW)
    for token, now in ((link.token, NOW + timedelta(hours=24)), ("forged", NOW), ("", NOW)):
        with session_scope(world.engine) as session, pytest.raises(accounts.SetupInvalid):
            accounts.set_password(session, token=token, password=PASSWORD, now=now)
    assert _account(world, "wang").password_hash is None


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short-1", "too_short"),
        ("1234567890123", "all_digits"),
        ("wang.xiaoming", "is_username"),
        ("x" * 300, "too_long"),
    ],
)
def test_a_password_breaking_a_rule_is_refused_and_the_link_still_works(
    world: World, password: str, reason: str
) -> None:
    link = make_account(world.engine, "wang.xiaoming", password=None, now=NOW)
    with session_scope(world.engine) as session, pytest.raises(accounts.PasswordRejected) as exc:
        accounts.set_password(session, token=link.token, password=password, now=NOW)
    assert exc.value.reason == reason
    assert _account(world, "wang.xiaoming").password_hash is None
    with session_scope(world.engine) as session:
        accounts.set_password(session, token=link.token, password=PASSWORD, now=NOW)


@pytest.mark.parametrize("username", ["a", "-lead", "李书记", "has space", "x" * 65, "semi;colon"])
def test_a_malformed_username_is_refused(world: World, username: str) -> None:
    with session_scope(world.engine) as session, pytest.raises(accounts.BadUsername):
        accounts.create_staff(session, username=username, name="某", role="worker", now=NOW)
    assert world.count(Account) == 0


def test_a_taken_username_an_unknown_role_or_an_empty_name_is_refused(world: World) -> None:
    make_account(world.engine, "wang", now=NOW)
    with session_scope(world.engine) as session, pytest.raises(accounts.AccountExists):
        accounts.create_staff(session, username="WANG", name="王", role="worker", now=NOW)
    with session_scope(world.engine) as session, pytest.raises(InvalidInput):
        accounts.create_staff(session, username="zhao", name="赵", role="requester", now=NOW)
    with session_scope(world.engine) as session, pytest.raises(InvalidInput):
        accounts.create_staff(session, username="zhao", name="  ", role="worker", now=NOW)
    assert world.count(Account) == 1


def test_department_staff_name_a_department_of_their_centre_or_above_like_invite(
    tree: Tree,
) -> None:
    world = tree.world
    # A district department serves the community below it; C1's own one is C1's
    make_account(world.engine, "chen", "department", centre="C1", department="城管执法")
    make_account(world.engine, "wu", "department", centre="C1", department="社区网格")
    # but C1's department is not there for C2, and an unknown centre is refused
    with session_scope(world.engine) as session, pytest.raises(UnknownDepartment):
        accounts.create_staff(
            session,
            username="sun",
            name="孙",
            role="department",
            now=NOW,
            centre_code="C2",
            department_name="社区网格",
        )
    with session_scope(world.engine) as session, pytest.raises(UnknownCentre):
        accounts.create_staff(
            session, username="sun", name="孙", role="worker", now=NOW, centre_code="nowhere"
        )
    with session_scope(world.engine) as session:
        chen = queries.get_person(session=session, person_id=_account(world, "chen").person_id)
        assert chen is not None and chen.department_id == tree.d_department.id
        assert chen.centre_id == tree.c1.id
    assert world.count(Account) == 2


# --- logins and their limits ----------------------------------------------------------------


def test_a_login_with_the_right_password_opens_a_session_whose_token_is_stored_hashed(
    world: World,
) -> None:
    make_account(world.engine, "wang", now=NOW)
    token = _login(world, "  WANG ")
    assert isinstance(token, str) and len(token) >= 43
    with session_scope(world.engine) as session:
        rows = session.exec(select(ConsoleSession)).all()
        assert [row.token_hash for row in rows] == [accounts.hash_token(token)]
        assert rows[0].address == "10.0.0.1"
    live = _live(world, token)
    assert live is not None and live.account.username == "wang"
    assert _account(world, "wang").last_login_at == NOW
    assert audit_actions(world.engine, "console:wang") == ["console_setup", "console_login"]


def test_a_wrong_password_an_unknown_user_and_an_account_without_password_fail_alike(
    world: World,
) -> None:
    make_account(world.engine, "wang", now=NOW)
    make_account(world.engine, "zhao", password=None, now=NOW)
    for username, password in (("wang", "wrong-password"), ("nobody", PASSWORD), ("zhao", "")):
        assert isinstance(_login(world, username, password), accounts.LoginFailed)
    with session_scope(world.engine) as session:
        assert session.exec(select(ConsoleSession)).all() == []
        failed = session.exec(select(LoginAttempt).where(col(LoginAttempt.ok).is_(False))).all()
        assert sorted(a.username for a in failed) == ["nobody", "wang", "zhao"]
    assert audit_actions(world.engine).count("console_login_failed") == 3


class CountingHasher(PasswordHasher):
    """A PasswordHasher that remembers what it hashed and verified."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.hashed = 0
        self.verified: list[str] = []

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashed += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


def test_an_unknown_user_costs_a_hash_of_the_hasher_configured_made_once_per_hasher(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for params in (
        {"time_cost": 2, "memory_cost": 2048, "parallelism": 1},
        {"time_cost": 1, "memory_cost": 4096, "parallelism": 1},
    ):
        # Given a hasher with these parameters
        hasher = CountingHasher(**params)
        monkeypatch.setattr(accounts, "HASHER", hasher)
        # When unknown usernames try to log in, twice
        for username in ("nobody", "nobody-else"):
            assert isinstance(_login(world, username), accounts.LoginFailed)
        # Then each verified a hash of this hasher's parameters, made only once
        assert len(hasher.verified) == 2
        assert hasher.verified[0] == hasher.verified[1]
        assert not hasher.check_needs_rehash(hasher.verified[0])
        assert hasher.hashed == 1


def test_failures_per_username_refuse_even_the_right_password_until_the_window_passes(
    world: World,
) -> None:
    make_account(world.engine, "wang", now=NOW)
    for minute in range(5):
        outcome = _login(world, "wang", "wrong-password", now=NOW + timedelta(minutes=minute))
        assert isinstance(outcome, accounts.LoginFailed)

    # The sixth attempt, right password, from another address, is refused with a wait
    refused = _login(world, "wang", address="10.9.9.9", now=NOW + timedelta(minutes=5))
    assert isinstance(refused, accounts.LoginLimited)
    # the oldest failure leaves the 15-minute window at NOW + 15 min: 10 minutes from now
    assert refused.retry_after == 600
    assert "console_login_limited" in audit_actions(world.engine)

    # Once the oldest failure is out of the window, it works
    assert isinstance(_login(world, "wang", now=NOW + timedelta(minutes=15)), str)


def test_failures_per_address_refuse_any_username_from_that_address(world: World) -> None:
    make_account(world.engine, "wang", now=NOW)
    for n in range(20):
        _login(world, f"guess{n}", "wrong-password", address="203.0.113.7")
    assert isinstance(_login(world, "wang", address="203.0.113.7"), accounts.LoginLimited)
    # another address is not limited
    assert isinstance(_login(world, "wang", address="198.51.100.1"), str)


def test_a_hash_made_with_other_parameters_is_replaced_at_the_next_login(world: World) -> None:
    make_account(world.engine, "wang", now=NOW)
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with session_scope(world.engine) as session:
        account = queries.get_account_by_username(session=session, username="wang")
        assert account is not None
        account.password_hash = old
        session.add(account)
    assert isinstance(_login(world, "wang"), str)
    new = _account(world, "wang").password_hash
    assert new is not None and new != old
    assert not accounts.HASHER.check_needs_rehash(new)


# --- sessions -------------------------------------------------------------------------------


def test_a_session_ends_when_idle_too_long_and_when_too_old(world: World) -> None:
    make_account(world.engine, "wang", now=NOW)
    token = _login(world, "wang")
    assert isinstance(token, str)
    # used every 29 minutes it lives ...
    for step in range(1, 24):
        assert _live(world, token, NOW + timedelta(minutes=29 * step)) is not None
    # ... until 12 hours after the login
    assert _live(world, token, NOW + timedelta(hours=12)) is None

    idle = _login(world, "wang")
    assert isinstance(idle, str)
    assert _live(world, idle, NOW + timedelta(minutes=30)) is None
    # an ended session does not come back
    assert _live(world, idle, NOW + timedelta(minutes=1)) is None


def test_a_check_that_is_no_use_does_not_keep_a_session_alive(world: World) -> None:
    # Given a session last used at its login
    make_account(world.engine, "wang", now=NOW)
    token = _login(world, "wang")
    assert isinstance(token, str)
    # When it is only checked (an open page's stream) every 10 minutes
    for step in (1, 2):
        assert _live(world, token, NOW + timedelta(minutes=10 * step), touch=False) is not None
    # Then its last use is still the login's, and it goes idle 30 minutes after that
    with session_scope(world.engine) as session:
        row = session.exec(select(ConsoleSession)).one()
        assert row.last_seen_at == NOW
    assert _live(world, token, NOW + timedelta(minutes=30), touch=False) is None
    # (and a check of an expired session ends it, like a use would)
    assert _live(world, token, NOW + timedelta(minutes=1)) is None


def test_logout_everywhere_ends_every_session_and_logout_only_this_one(world: World) -> None:
    make_account(world.engine, "wang", now=NOW)
    first, second, third = (_login(world, "wang") for _ in range(3))
    with session_scope(world.engine) as session:
        live = accounts.session_of(session, token=first, now=NOW, limits=LIMITS)
        assert live is not None
        accounts.logout(session, live, everywhere=False, now=NOW)
    assert _live(world, first) is None
    assert _live(world, second) is not None
    with session_scope(world.engine) as session:
        live = accounts.session_of(session, token=second, now=NOW, limits=LIMITS)
        assert live is not None
        accounts.logout(session, live, everywhere=True, now=NOW)
    assert _live(world, third) is None
    assert audit_actions(world.engine, "console:wang").count("console_logout") == 2


def test_a_reset_password_ends_sessions_and_the_old_password(world: World) -> None:
    make_account(world.engine, "wang", now=NOW)
    token = _login(world, "wang")
    with session_scope(world.engine) as session:
        link = accounts.reset_password(
            session, accounts.account_named(session, "wang"), now=NOW + timedelta(minutes=1)
        )
    assert _live(world, token, NOW + timedelta(minutes=2)) is None
    assert isinstance(_login(world, "wang", now=NOW + timedelta(minutes=2)), accounts.LoginFailed)
    with session_scope(world.engine) as session:
        accounts.set_password(session, token=link.token, password="new-password-9", now=NOW)
    assert isinstance(_login(world, "wang", "new-password-9"), str)


def test_a_disabled_account_cannot_log_in_and_its_sessions_and_chats_end(
    world: World, cast: Cast
) -> None:
    link = make_account(world.engine, "wang", now=NOW)
    token = _login(world, "wang")
    with session_scope(world.engine) as session:
        chat = session.get(Person, cast.neighbour.id)
        assert chat is not None
        chat.principal_id = link.person.id
        session.add(chat)
    with session_scope(world.engine) as session:
        assert accounts.disable(session, accounts.account_named(session, "wang"), now=NOW) == [
            cast.neighbour.id
        ]
    assert _live(world, token) is None
    assert isinstance(_login(world, "wang"), accounts.LoginFailed)
    with session_scope(world.engine) as session:
        chat = session.get(Person, cast.neighbour.id)
        assert chat is not None and chat.principal_id is None


# --- linked chats ---------------------------------------------------------------------------


def test_a_link_code_binds_a_chat_to_the_account_and_unlink_undoes_it(
    world: World, cast: Cast
) -> None:
    make_account(world.engine, "wang", now=NOW)
    token = _login(world, "wang")
    with session_scope(world.engine) as session:
        live = accounts.session_of(session, token=token, now=NOW, limits=LIMITS)
        assert live is not None
        made = accounts.new_link_code(session, live, now=NOW, limits=LIMITS)
    assert made.expires_at == NOW + timedelta(minutes=15)

    # 绑定 from a resident's chat links it (the same code path as an invitation)
    bound = world.do(service.bind, cast.neighbour, made.code)
    assert bound.account == "wang"
    with session_scope(world.engine) as session:
        chat = session.get(Person, cast.neighbour.id)
        account = queries.get_account_by_username(session=session, username="wang")
        assert chat is not None and account is not None
        assert chat.principal_id == account.person_id
        assert [p.id for p in accounts.identities(session, account)] == [cast.neighbour.id]

    # The notify choice accepts only a linked chat
    with session_scope(world.engine) as session:
        live = accounts.session_of(session, token=token, now=NOW, limits=LIMITS)
        assert live is not None
        with pytest.raises(accounts.UnknownIdentity):
            accounts.set_notify(session, live, cast.worker.id, now=NOW)
    with session_scope(world.engine) as session:
        live = accounts.session_of(session, token=token, now=NOW, limits=LIMITS)
        assert live is not None
        accounts.set_notify(session, live, cast.neighbour.id, now=NOW)
    assert _account(world, "wang").notify_person_id == cast.neighbour.id

    # Unlink: a plain chat again, the notify choice dropped; unknown ids refused
    with session_scope(world.engine) as session:
        live = accounts.session_of(session, token=token, now=NOW, limits=LIMITS)
        assert live is not None
        with pytest.raises(accounts.UnknownIdentity):
            accounts.unlink(session, live, cast.worker.id or 0, now=NOW)
        accounts.unlink(session, live, cast.neighbour.id or 0, now=NOW)
    with session_scope(world.engine) as session:
        chat = session.get(Person, cast.neighbour.id)
        assert chat is not None and chat.principal_id is None
    assert _account(world, "wang").notify_person_id is None
    assert {"console_link_code", "console_notify", "console_unlink"} <= set(
        audit_actions(world.engine, "console:wang")
    )


def test_a_link_code_expires(world: World, cast: Cast) -> None:
    make_account(world.engine, "wang", now=NOW)
    token = _login(world, "wang")
    with session_scope(world.engine) as session:
        live = accounts.session_of(session, token=token, now=NOW, limits=LIMITS)
        assert live is not None
        made = accounts.new_link_code(session, live, now=NOW, limits=LIMITS)
    world.refused(service.bind, cast.neighbour, made.code, now=NOW + timedelta(minutes=15))
    with session_scope(world.engine) as session:
        chat = session.get(Person, cast.neighbour.id)
        assert chat is not None and chat.principal_id is None


# --- redesk staff ---------------------------------------------------------------------------


def _token(out: str) -> str:
    link = out.strip().splitlines()[-1]
    parts = urlsplit(link)
    assert parts.path == "/console/setup"
    return parse_qs(parts.query)["token"][0]


def test_staff_add_prints_a_setup_link_that_sets_the_password(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["staff", "add", "Admin", "--name", "管理员", "--role", "admin"]) == Exit.OK
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("http://127.0.0.1:8000/console/setup?token=")
    assert "Beijing time" in out
    engine = get_engine(any_db)
    with session_scope(engine) as session:
        accounts.set_password(session, token=_token(out), password=PASSWORD, now=NOW)
        account = queries.get_account_by_username(session=session, username="admin")
        assert account is not None and account.password_hash is not None
        person = queries.get_person(session=session, person_id=account.person_id)
        assert person is not None and person.role == Role.ADMIN
        audited = session.exec(select(AdminAudit).where(AdminAudit.action == "staff_add")).one()
        assert audited.detail["username"] == "admin"


def test_staff_add_uses_the_public_url(
    any_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDESK_PUBLIC_URL", "https://desk.example.cn/")
    assert main(["staff", "add", "wang", "--name", "王", "--role", "worker"]) == Exit.OK
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("https://desk.example.cn/console/setup?token=")


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["staff", "add", "x", "--name", "某", "--role", "worker"], Exit.USAGE, "USERNAME"),
        (["staff", "add", "wang", "--name", "某", "--role", "boss"], Exit.USAGE, "--role"),
        (
            ["staff", "add", "wang", "--name", "某", "--role", "department"],
            Exit.USAGE,
            "department",
        ),
        (
            ["staff", "add", "wang", "--name", "某", "--role", "worker", "--centre", "nope"],
            Exit.NOT_FOUND,
            "nope",
        ),
        (
            ["staff", "add", "wang", "--name", "某", "--role", "department", "--department", "无"],
            Exit.NOT_FOUND,
            "无",
        ),
        (["staff", "disable", "nobody"], Exit.NOT_FOUND, "nobody"),
        (["staff", "reset-password", "nobody"], Exit.NOT_FOUND, "nobody"),
    ],
)
def test_staff_verbs_refuse_bad_input_with_the_exit_code_and_change_nothing(
    any_db: str, capsys: pytest.CaptureFixture[str], args: list[str], code: Exit, says: str
) -> None:
    assert main(args) == code
    captured = capsys.readouterr()
    assert says in captured.err
    with session_scope(get_engine(any_db)) as session:
        assert session.exec(select(Account)).all() == []
        assert session.exec(select(AdminAudit)).all() == []


def test_staff_add_refuses_a_taken_username(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["staff", "add", "wang", "--name", "王", "--role", "worker"]) == Exit.OK
    assert main(["staff", "add", "WANG", "--name", "王二", "--role", "worker"]) == Exit.FAILURE
    assert "taken" in capsys.readouterr().err


def test_staff_list_shows_each_account(
    any_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["staff", "add", "wang", "--name", "王书记", "--role", "worker"]) == Exit.OK
    assert main(["staff", "add", "liu", "--name", "刘主任", "--role", "leader"]) == Exit.OK
    with session_scope(get_engine(any_db)) as session:
        link = accounts.reset_password(session, accounts.account_named(session, "wang"), now=NOW)
        accounts.set_password(session, token=link.token, password=PASSWORD, now=NOW)
    capsys.readouterr()
    monkeypatch.setattr(cli.console, "width", 200)

    assert main(["staff", "list"]) == Exit.OK

    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "│" in line]
    liu, wang = ([cell.strip() for cell in line.strip("│ ").split("│")] for line in rows)
    # username, name, role, centre, department, active, password set, linked chats, last login
    assert wang[:7] == ["wang", "王书记", "worker", "default", "", "是", "是"]
    assert liu[:7] == ["liu", "刘主任", "leader", "default", "", "是", "否"]


def test_staff_reset_password_prints_a_new_link_and_ends_the_old_password(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["staff", "add", "wang", "--name", "王", "--role", "worker"]) == Exit.OK
    first = _token(capsys.readouterr().out)
    engine = get_engine(any_db)
    with session_scope(engine) as session:
        accounts.set_password(session, token=first, password=PASSWORD, now=NOW)
    assert main(["staff", "reset-password", "wang"]) == Exit.OK
    second = _token(capsys.readouterr().out)
    assert second != first
    with session_scope(engine) as session:
        account = queries.get_account_by_username(session=session, username="wang")
        assert account is not None and account.password_hash is None
    with session_scope(engine) as session:
        accounts.set_password(session, token=second, password="another-pass-7", now=NOW)
    with session_scope(engine) as session:
        actions = [a.action for a in session.exec(select(AdminAudit)).all()]
    assert "staff_reset_password" in actions


def test_staff_disable_revokes_the_role_releases_held_requests_and_unlinks_chats(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.runtime import Runtime
    from storage.settings import Settings

    engine = get_engine(any_db)
    world = World(Runtime(settings=Settings(database_url=any_db, _env_file=None), engine=engine))
    assert main(["staff", "add", "wang", "--name", "王书记", "--role", "worker"]) == Exit.OK
    resident = world.person("requester", name="张三")
    chat = world.person("requester", name="王书记的微信", channel="wechat")
    with session_scope(engine) as session:
        account = queries.get_account_by_username(session=session, username="wang")
        assert account is not None
        me = session.get(Person, account.person_id)
        row = session.get(Person, chat.id)
        assert me is not None and row is not None
        row.principal_id = me.id
        session.add(row)
    number = world.do(service.submit, resident, "我家门口的路灯坏了").number
    world.do(service.accept, me, number)
    assert world.request(number).state == State.HANDLING

    assert main(["staff", "disable", "wang"]) == Exit.OK
    out = capsys.readouterr().out
    assert "disabled account wang" in out and number in out

    assert world.request(number).state == State.NEW
    with session_scope(engine) as session:
        account = queries.get_account_by_username(session=session, username="wang")
        assert account is not None and not account.active
        me = session.get(Person, account.person_id)
        row = session.get(Person, chat.id)
        assert me is not None and me.role == Role.REQUESTER
        assert row is not None and row.principal_id is None
        actions = [a.action for a in session.exec(select(AdminAudit)).all()]
    assert {"people_revoke", "staff_disable"} <= set(actions)


def test_a_person_whose_role_was_revoked_cannot_log_in(world: World) -> None:
    from admin_scripts.manage import revoke_role

    link = make_account(world.engine, "wang", now=NOW)
    with session_scope(world.engine) as session:
        revoke_role(session=session, who=str(link.person.id), role=None, now=NOW)
    assert isinstance(_login(world, "wang"), accounts.LoginFailed)
