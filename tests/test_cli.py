"""The `redesk` command, run in-process through main([...])."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import inspect

from admin_scripts import demo
from admin_scripts.cli import Exit, app, main
from bot import runtime as bot_runtime
from bot.runtime import Runtime
from storage.db import get_engine
from storage.models import Role
from storage.settings import Settings
from tests.conftest import fresh_pg_database
from tests.utils.harness import Desk


@pytest.fixture
def cli_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A fresh SQLite database named by REDESK_DATABASE_URL, run from an empty directory."""
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cli.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("REDESK_DATABASE_URL", url)
    bot_runtime.reset()
    yield url
    bot_runtime.reset()


def use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Points the CLI at another database URL."""
    monkeypatch.setenv("REDESK_DATABASE_URL", url)
    bot_runtime.reset()


def desk_on(url: str) -> Desk:
    """A chat harness on the CLI's database."""
    settings = Settings(database_url=url, redis_url=None, _env_file=None)  # type: ignore[call-arg]
    return Desk(Runtime(settings=settings, engine=get_engine(url)))


def leaf_commands() -> list[list[str]]:
    """Every verb of the command, as the words that name it (e.g. ["db", "upgrade"])."""
    found: list[list[str]] = []

    def walk(command: Any, words: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*words, name])
        else:
            found.append(words)

    walk(typer.main.get_command(app), [])
    return found


def test_invite_worker_prints_the_code_alone_on_the_last_line_and_it_binds(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an invitation for a worker is made
    code = main(["invite", "worker"])

    # Then the code is alone on the last line
    assert code == Exit.OK
    lines = capsys.readouterr().out.strip().splitlines()
    invitation = lines[-1]
    assert invitation and " " not in invitation
    assert "党务工作者" in "\n".join(lines[:-1])

    # And a chat identity sending 绑定 <code> becomes a worker
    desk = desk_on(cli_db)
    someone = desk.identity("王书记")
    someone.send(f"绑定 {invitation}")
    assert someone.person().role == Role.WORKER


def test_invite_department_binds_staff_to_that_department(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a department added through the command
    assert main(["departments", "add", "城管执法", "--kind", "职能部门"]) == Exit.OK

    # When its staff are invited and bind
    assert main(["invite", "department", "城管执法"]) == Exit.OK
    invitation = capsys.readouterr().out.strip().splitlines()[-1]
    staff = desk_on(cli_db).identity("李科长")
    staff.send(f"绑定 {invitation}")

    # Then they are staff of it
    person = staff.person()
    assert person.role == Role.DEPARTMENT
    assert person.department_id is not None


def test_invite_for_an_unknown_department_exits_not_found_with_a_message(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["invite", "department", "不存在"])

    assert code == 4  # Exit.NOT_FOUND
    captured = capsys.readouterr()
    assert "不存在" in captured.err
    assert "departments list" in captured.err
    assert captured.out.strip() == ""


def test_invite_department_without_a_name_is_a_usage_error(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invite", "department"]) == 2  # Exit.USAGE
    assert "NAME" in capsys.readouterr().err


def test_inviting_an_unknown_role_is_a_usage_error(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invite", "boss"]) == Exit.USAGE
    assert "worker, leader or department" in capsys.readouterr().err


def test_demo_adds_its_data_once(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    # When the demo is loaded twice
    first = main(["demo"])
    first_out = capsys.readouterr().out
    second = main(["demo"])
    second_out = capsys.readouterr().out

    # Then the first run adds everything and the second nothing
    assert first == second == Exit.OK
    assert (f"{len(demo.DEPARTMENTS)} departments and {len(demo.CATEGORIES)} categories added"
            in first_out)
    assert "0 departments and 0 categories added" in second_out
    desk = desk_on(cli_db)
    assert len(desk.requests()) == 0


def test_departments_add_then_list_shows_it(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a department added
    assert main(["departments", "add", "法律援助工作站", "--kind", "社会组织"]) == Exit.OK
    assert "法律援助工作站" in capsys.readouterr().out

    # When the departments are listed
    assert main(["departments", "list"]) == Exit.OK

    # Then it is there with its kind and active
    out = capsys.readouterr().out
    assert "法律援助工作站" in out
    assert "社会组织" in out
    assert "启用" in out


def test_adding_a_department_twice_fails(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["departments", "add", "交警"]) == Exit.OK

    code = main(["departments", "add", "交警"])

    assert code != Exit.OK
    assert "exists already" in capsys.readouterr().err


def test_a_department_of_an_unknown_kind_is_a_usage_error(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["departments", "add", "交警", "--kind", "公司"]) == Exit.USAGE
    assert "--kind" in capsys.readouterr().err


def test_categories_list_after_demo_shows_routes_and_every_keyword(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the demo data
    assert main(["demo"]) == Exit.OK
    capsys.readouterr()

    # When the categories are listed
    assert main(["categories", "list"]) == Exit.OK
    out = capsys.readouterr().out

    # Then each category is there, with its route
    for category in demo.CATEGORIES:
        assert category.name in out
    assert "(兜底)" in out
    assert "城管执法" in out and "市场监管" in out
    # And no keyword is cut off: the keyword column, read top to bottom, holds them all
    cells = [line.split("│")[2].strip() for line in out.splitlines() if line.count("│") >= 3]
    keywords = "".join(cells)
    for category in demo.CATEGORIES:
        assert "、".join(category.keywords) in keywords


def test_a_malformed_database_url_exits_config_with_one_line_naming_it(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a database URL that is not one
    use_database(monkeypatch, "this is not a database url")

    # When any verb runs
    code = main(["departments", "list"])

    # Then it exits with the configuration code and one readable line
    assert code == 3  # Exit.CONFIG
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "REDESK_DATABASE_URL" in err
    assert "Traceback" not in err


def test_db_upgrade_creates_the_schema_on_a_fresh_postgresql_database(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an empty PostgreSQL database
    with fresh_pg_database("redesk_cli") as url:
        use_database(monkeypatch, url)

        # When the schema is upgraded, twice
        first = main(["db", "upgrade"])
        second = main(["db", "upgrade"])

        # Then the tables are there and the second run is harmless
        assert first == second == Exit.OK
        assert "database schema is current" in capsys.readouterr().out
        tables = set(inspect(get_engine(url)).get_table_names())
        assert {"requests", "events", "inbox", "outbox", "people", "web_messages",
                "alembic_version"} <= tables
        # And the verbs work on it
        assert main(["demo"]) == Exit.OK
        assert main(["departments", "list"]) == Exit.OK
        assert "城管执法" in capsys.readouterr().out


def test_db_upgrade_on_an_unreachable_database_exits_unavailable(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_database(monkeypatch, "postgresql+psycopg://postgres@127.0.0.1:1/none")

    code = main(["db", "upgrade"])

    assert code == Exit.UNAVAILABLE
    err = capsys.readouterr().err
    assert "does not answer" in err
    assert "Traceback" not in err


def test_worker_without_redis_exits_config_and_says_what_is_missing(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["worker"])

    assert code == Exit.CONFIG
    err = capsys.readouterr().err
    assert "REDESK_REDIS_URL" in err
    assert "redesk run" in err


def test_wechat_menu_creates_the_menu_on_the_account(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.channels import wechat
    from tests.fakes.wechat import FakeWeChat

    with FakeWeChat() as fake:
        for name, value in fake.settings_env().items():
            monkeypatch.setenv(name, value)
        bot_runtime.reset()
        try:
            code = main(["wechat", "menu"])
        finally:
            wechat.close_clients()

        assert code == Exit.OK
        assert "我要反映 / 我的诉求 / 帮助" in capsys.readouterr().out
        assert fake.menu == wechat.MENU


def test_wechat_menu_without_wechat_settings_exits_config(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["wechat", "menu"]) == Exit.CONFIG
    assert "REDESK_WECHAT_APP_ID" in capsys.readouterr().err


def test_wechat_menu_with_wechat_unreachable_exits_unavailable(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.channels import wechat
    from tests.e2e.conftest import free_port

    for name, value in {"REDESK_WECHAT_APP_ID": "wx0123", "REDESK_WECHAT_APP_SECRET": "s",
                        "REDESK_WECHAT_TOKEN": "t",
                        "REDESK_WECHAT_API_URL": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(name, value)
    bot_runtime.reset()
    try:
        assert main(["wechat", "menu"]) == Exit.UNAVAILABLE
    finally:
        wechat.close_clients()
    assert "could not be reached" in capsys.readouterr().err


def test_the_command_has_every_documented_verb() -> None:
    verbs = {" ".join(words) for words in leaf_commands()}

    assert {"run", "worker", "scheduler", "db upgrade", "invite", "departments list",
            "departments add", "categories list", "wechat menu", "demo"} <= verbs


@pytest.mark.parametrize("words", leaf_commands(), ids=" ".join)
def test_every_verb_has_help_with_an_example(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*words, "--help"])

    assert code == Exit.OK
    out = capsys.readouterr().out
    assert "Usage" in out
    assert "Example" in out


def test_an_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == Exit.USAGE
    assert "frobnicate" in capsys.readouterr().err
