"""The `redesk` command, run in-process through main([...])."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import inspect

from admin_scripts import cli, demo
from admin_scripts.cli import Exit, app, main
from bot import runtime as bot_runtime
from bot import server
from storage.db import get_engine
from storage.models import Role
from tests.conftest import fresh_pg_database
from tests.utils.cli import desk_on


def use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Points the CLI at another database URL."""
    monkeypatch.setenv("REDESK_DATABASE_URL", url)
    bot_runtime.reset()


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


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Nothing configured, and no database yet: the platform's data directory (under a
    temporary HOME and XDG_DATA_HOME) is empty; the working directory is tmp_path/work.

    Yields the data directory the settings default to.
    """
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    bot_runtime.reset()
    yield tmp_path / "xdg" / "redesk"
    bot_runtime.reset()


#: Verbs that make the database when there is none (`redesk run` upgrades an embedded one).
CREATING_VERBS = {"run", "db upgrade", "demo"}

#: Verbs that never open the database.
VERBS_WITHOUT_DATABASE = {"scheduler", "wechat menu"}

#: Arguments that take a verb up to its database (its own checks pass).
SAMPLE_ARGUMENTS: dict[str, list[str]] = {
    "invite": ["worker"],
    "departments add": ["城管执法"],
    "departments deactivate": ["城管执法"],
    "departments import": ["departments.csv"],
    "categories import": ["categories.csv"],
    "people revoke": ["王书记"],
    "inbox retry": ["1"],
    "web revoke": ["1"],
    "categories add": ["路灯"],
    "centres add": ["futian", "福田区", "--level", "district"],
    "centres import": ["departments.csv"],
    "centres deactivate": ["futian"],
    "centres edit": ["futian", "--name", "福田区"],
    "centres days-off": ["futian", "list"],
    "centres links": ["futian"],
    "centres qrcode": ["futian", "--out", "futian.png"],
    "staff add": ["wang", "--name", "王书记", "--role", "worker"],
    "staff disable": ["wang"],
    "staff reset-password": ["wang"],
    "hours adjust": ["李四", "2", "--reason", "补录"],
    "rewards add": ["保温杯", "--hours", "2"],
    "rewards disable": ["保温杯"],
}


def database_verbs() -> list[list[str]]:
    """Every verb that opens an existing database."""
    return [
        words
        for words in leaf_commands()
        if " ".join(words) not in CREATING_VERBS | VERBS_WITHOUT_DATABASE
    ]


@pytest.mark.parametrize("words", database_verbs(), ids=" ".join)
def test_every_verb_but_run_db_upgrade_and_demo_refuses_a_missing_database_file_naming_it(
    words: list[str],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given no database in the data directory (and import files that would be valid)
    (Path.cwd() / "departments.csv").write_text("name,kind\n城管执法,职能部门\n", encoding="utf-8")
    (Path.cwd() / "categories.csv").write_text("name,keywords\n路灯,路灯\n", encoding="utf-8")
    monkeypatch.setenv("REDESK_REDIS_URL", "redis://127.0.0.1:1/0")  # `worker` needs one

    # When the verb runs
    code = main([*words, *SAMPLE_ARGUMENTS.get(" ".join(words), [])])

    # Then it exits "database unavailable", naming the file, and creates nothing
    assert code == Exit.UNAVAILABLE
    err = capsys.readouterr().err
    assert f"No database file {data_dir / 'redesk.db'}" in err
    assert "redesk run" in err
    assert len(err.strip().splitlines()) == 1
    assert not data_dir.exists()


def test_a_relative_database_url_from_another_directory_is_refused_not_created(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a server's database at data/redesk.db under tmp_path/work
    monkeypatch.setenv("REDESK_DATABASE_URL", "sqlite:///data/redesk.db")
    assert main(["demo"]) == Exit.OK
    capsys.readouterr()

    # When an invitation is asked for from another directory, with the same relative URL
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    bot_runtime.reset()
    code = main(["invite", "worker"])

    # Then no code is printed and no second, empty database is made there
    assert code == Exit.UNAVAILABLE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"No database file {elsewhere / 'data' / 'redesk.db'}" in captured.err
    assert not (elsewhere / "data").exists()


def test_an_invitation_made_in_another_directory_binds_on_the_database_the_demo_made(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the demo loaded from one working directory (it makes the default database)
    assert main(["demo"]) == Exit.OK
    assert (data_dir / "redesk.db").is_file()

    # When an invitation is made from another one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    bot_runtime.reset()
    assert main(["invite", "department", "城管执法"]) == Exit.OK
    invitation = capsys.readouterr().out.strip().splitlines()[-1]

    # Then the code binds on that same database, and nothing was made where it ran
    staff = desk_on(f"sqlite:///{data_dir / 'redesk.db'}").identity("李科长")
    staff.send(f"绑定 {invitation}")
    assert staff.person().role == Role.DEPARTMENT
    assert list(elsewhere.iterdir()) == []


def test_db_upgrade_makes_the_data_directory_and_its_database(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the schema is created with nothing configured
    assert main(["db", "upgrade"]) == Exit.OK

    # Then the database is in the data directory, and the other verbs use it
    assert (data_dir / "redesk.db").is_file()
    assert main(["departments", "list"]) == Exit.OK
    assert list(Path.cwd().iterdir()) == []


def test_the_run_banner_keeps_every_url_and_path_whole_on_its_own_line_in_40_columns(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a terminal 40 columns wide and a data directory with a long path
    monkeypatch.setenv("COLUMNS", "40")
    deep = tmp_path / "a-rather-long-directory-name" / "for-the-data-of-the-desk"
    monkeypatch.setenv("REDESK_DATA_DIR", str(deep))
    monkeypatch.setenv("REDESK_HOST", "desk-server.internal.example.org")
    bot_runtime.reset()
    settings = cli.get_settings()

    # When `redesk run` prints its banner
    server.banner(settings, embedded=True, say=cli.say)

    # Then each URL and path is a line of its own, whole
    lines = capsys.readouterr().out.splitlines()
    base = "http://desk-server.internal.example.org:8000"
    assert f"redesk listens on {base}" in lines
    assert f"web desk: {base}/desk" in lines
    assert f"database: sqlite:///{deep / 'redesk.db'}" in lines
    assert f"media: {deep / 'media'}" in lines


def test_help_names_the_default_data_directory_and_the_database_in_use(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a PostgreSQL database configured, with a password
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("REDESK_DATABASE_URL", "postgresql+psycopg://redesk:s3cret@db/redesk")
    bot_runtime.reset()

    # When the command's help is shown
    assert main(["--help"]) == Exit.OK

    # Then it names the default data directory, and the database and media in use
    out = capsys.readouterr().out
    assert f"Default data directory: {data_dir}" in out
    assert "REDESK_DATA_DIR" in out
    assert "Database: postgresql+psycopg://redesk:***@db/redesk" in out
    assert f"Media: {data_dir / 'media'}" in out
    assert "s3cret" not in out


def test_help_with_a_malformed_setting_still_names_the_default_data_directory(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("REDESK_PORT", "eighty")
    bot_runtime.reset()

    assert main(["--help"]) == Exit.OK

    out = capsys.readouterr().out
    assert f"Default data directory: {data_dir}" in out
    assert "Database:" not in out


def test_invite_worker_prints_the_code_alone_on_the_last_line_and_it_binds(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an invitation for a worker is made
    code = main(["invite", "worker"])

    # Then the code is alone on the last line
    assert code == Exit.OK
    lines = capsys.readouterr().out.strip().splitlines()
    invitation = lines[-1]
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){2}", invitation)
    assert "党务工作者" in "\n".join(lines[:-1])

    # And a chat identity sending 绑定 <code>, typed in lower case with spaces, becomes a worker
    desk = desk_on(cli_db)
    someone = desk.identity("王书记")
    someone.send(f"绑定 {invitation.lower().replace('-', ' ')}")
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
    assert (
        f"{len(demo.DEPARTMENTS)} departments and {len(demo.CATEGORIES)} categories added"
        in first_out
    )
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


def test_adding_a_department_twice_fails(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
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
        assert {
            "requests",
            "events",
            "inbox",
            "outbox",
            "people",
            "web_messages",
            "alembic_version",
        } <= tables
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


@pytest.mark.parametrize("verb", ["run", "worker"])
def test_a_malformed_small_talk_word_list_stops_run_and_worker_naming_file_and_line(
    verb: str,
    cli_db: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a readable word list with a phrase before any section
    words = tmp_path / "words.txt"
    words.write_text("你好\n[thanks]\n谢谢\n", encoding="utf-8")
    monkeypatch.setenv("REDESK_SMALL_TALK_FILE", str(words))
    monkeypatch.setenv("REDESK_REDIS_URL", "redis://127.0.0.1:1/0")
    bot_runtime.reset()

    # When a process that handles messages starts
    code = main([verb])

    # Then it stops with the configuration code, naming the file and the line, and the
    # database was not touched
    assert code == Exit.CONFIG
    err = capsys.readouterr().err
    assert "REDESK_SMALL_TALK_FILE" in err and "words.txt" in err and "line 1" in err
    assert "Traceback" not in err


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

    for name, value in {
        "REDESK_WECHAT_APP_ID": "wx0123",
        "REDESK_WECHAT_APP_SECRET": "s",
        "REDESK_WECHAT_TOKEN": "t",
        "REDESK_WECHAT_API_URL": f"http://127.0.0.1:{free_port()}",
    }.items():
        monkeypatch.setenv(name, value)
    bot_runtime.reset()
    try:
        assert main(["wechat", "menu"]) == Exit.UNAVAILABLE
    finally:
        wechat.close_clients()
    assert "could not be reached" in capsys.readouterr().err


def test_the_command_has_every_documented_verb() -> None:
    verbs = {" ".join(words) for words in leaf_commands()}

    assert {
        "run",
        "worker",
        "scheduler",
        "db upgrade",
        "invite",
        "departments list",
        "departments add",
        "categories list",
        "categories add",
        "centres add",
        "centres list",
        "centres import",
        "centres deactivate",
        "centres edit",
        "centres days-off",
        "centres links",
        "centres qrcode",
        "wechat menu",
        "demo",
    } <= verbs


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
