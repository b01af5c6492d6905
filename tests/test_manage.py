"""`redesk departments|categories|people`: imports, deactivation and roles, run in-process
through main([...]) on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import pwd
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
import typer
from sqlalchemy import text as sa_text
from sqlmodel import Session, col, select

from admin_scripts import cli, manage
from admin_scripts.cli import Exit, app, main
from bot import dispatch
from bot.app import create_app
from bot.channels import telegram, web
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import (
    AdminAudit,
    Category,
    Department,
    Event,
    InboxMessage,
    OutboxMessage,
    Person,
    Role,
)
from tests.utils.app import TestClient
from tests.utils.cli import desk_on
from tests.utils.harness import Desk, Identity
from workflow import broker as broker_module
from workflow import deadlines, service
from workflow.deadlines import LOCAL_TZ, format_local

# --- fixtures and helpers -------------------------------------------------------------------


def write(name: str, text: str, *, bom: bool = False) -> str:
    """Writes a UTF-8 file in the working directory; returns its name."""
    Path(name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return name


def departments(url: str) -> dict[str, tuple[str, int | None, bool]]:
    """Every department: name -> (kind, resolution days, active)."""
    with Session(get_engine(url)) as session:
        return {
            d.name: (d.kind, d.resolution_days, d.active)
            for d in session.exec(select(Department)).all()
        }


def categories(url: str) -> dict[str, dict[str, Any]]:
    """Every category by name, with its department's name."""
    with Session(get_engine(url)) as session:
        names = {d.id: d.name for d in session.exec(select(Department)).all()}
        return {
            c.name: {
                "keywords": c.keywords,
                "route": c.route,
                "department": names.get(c.department_id),
                "response_hours": c.response_hours,
                "resolution_days": c.resolution_days,
                "urgent": c.urgent,
                "fallback": c.is_fallback,
            }
            for c in session.exec(select(Category)).all()
        }


def person(url: str, person_id: int) -> Person:
    """A person row, fresh."""
    with Session(get_engine(url)) as session:
        found = session.get(Person, person_id)
        assert found is not None
        return found


def audit(url: str) -> list[tuple[str, dict[str, Any]]]:
    """The admin audit log: (action, detail), oldest first."""
    with Session(get_engine(url)) as session:
        return [
            (row.action, row.detail)
            for row in session.exec(select(AdminAudit).order_by(col(AdminAudit.id))).all()
        ]


def reported_lines(err: str) -> list[int]:
    """The line numbers a failed import reported, in order."""
    return [int(n) for n in re.findall(r"^\S+ line (\d+): ", err, flags=re.MULTILINE)]


def leaf_commands() -> set[str]:
    """Every verb of the command, e.g. "departments import"."""
    found: set[str] = set()

    def walk(command: Any, words: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*words, name])
        else:
            found.add(" ".join(words))

    walk(typer.main.get_command(app), [])
    return found


DEPARTMENTS_CSV = """name,kind,resolution_days,active
城管执法,职能部门,5,yes
物业服务中心,社会组织,,
交警,街道,7,no
"""

DEPARTMENTS_YAML = """# the street's units
- name: 城管执法
  kind: 职能部门
  resolution_days: 5
- name: 法律援助工作站
  kind: 社会组织
  resolution_days: null
  active: no
- {name: 街道办事处, kind: 街道}
"""

CATEGORIES_CSV = """name,keywords,route,department,response_hours,resolution_days,urgent,fallback
市容环境,垃圾|占道、油烟,department,城管执法,8,5,no,no
紧急求助,紧急|火灾,committee,,0,0,yes,no
其他,,,,,,,yes
"""

CATEGORIES_YAML = """- name: 市容环境
  keywords: [垃圾, 占道, 油烟]
  route: department
  department: 城管执法
  response_hours: 4
  resolution_days: 3
- name: 其他
  fallback: true
"""


# --- the verbs exist ------------------------------------------------------------------------


def test_the_command_has_the_departments_categories_and_people_verbs() -> None:
    assert {
        "departments list",
        "departments add",
        "departments deactivate",
        "departments import",
        "categories list",
        "categories import",
        "people list",
        "people revoke",
    } <= leaf_commands()


# --- departments import ---------------------------------------------------------------------


def test_a_departments_csv_with_a_bom_adds_new_ones_and_updates_existing_ones(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 交警 exists as a functional department
    assert main(["departments", "add", "交警"]) == Exit.OK
    capsys.readouterr()

    # When a CSV saved by Excel (UTF-8 with a BOM) is imported
    code = main(["departments", "import", write("departments.csv", DEPARTMENTS_CSV, bom=True)])

    # Then the new departments are added and 交警 is updated
    assert code == Exit.OK
    out = capsys.readouterr().out
    assert "2 added, 1 updated, 0 unchanged" in out
    assert departments(any_db) == {
        "城管执法": ("职能部门", 5, True),
        "物业服务中心": ("社会组织", None, True),
        "交警": ("街道", 7, False),
    }
    # And the import is on record
    assert audit(any_db)[-1] == (
        "departments_import",
        {"file": "departments.csv", "added": ["城管执法", "物业服务中心"], "updated": ["交警"]},
    )


def test_a_departments_yaml_lands_and_importing_it_again_changes_nothing(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a YAML list is imported twice
    assert main(["departments", "import", write("units.yaml", DEPARTMENTS_YAML)]) == Exit.OK
    first = capsys.readouterr().out
    assert main(["departments", "import", "units.yaml"]) == Exit.OK
    second = capsys.readouterr().out

    # Then the first run adds them all, the second leaves them as they are
    assert "3 added, 0 updated, 0 unchanged" in first
    assert "0 added, 0 updated, 3 unchanged" in second
    assert departments(any_db) == {
        "城管执法": ("职能部门", 5, True),
        "法律援助工作站": ("社会组织", None, False),
        "街道办事处": ("街道", None, True),
    }


def test_an_import_that_leaves_active_empty_keeps_a_deactivated_department_inactive(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a deactivated department
    assert main(["departments", "add", "交警"]) == Exit.OK
    assert main(["departments", "deactivate", "交警"]) == Exit.OK

    # When a file names it without an active value, then with active yes
    assert (
        main(["departments", "import", write("a.csv", "name,kind,active\n交警,职能部门,\n")])
        == Exit.OK
    )
    still = departments(any_db)["交警"]
    assert (
        main(["departments", "import", write("b.csv", "name,kind,active\n交警,职能部门,yes\n")])
        == Exit.OK
    )

    # Then the first leaves it inactive and the second switches it on again
    assert still == ("职能部门", None, False)
    assert departments(any_db)["交警"] == ("职能部门", None, True)


# --- categories import ----------------------------------------------------------------------


def test_a_categories_csv_lands_with_its_keywords_route_and_deadlines(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the department a category routes to
    assert main(["departments", "add", "城管执法"]) == Exit.OK

    # When the categories are imported from CSV
    code = main(["categories", "import", write("categories.csv", CATEGORIES_CSV)])

    # Then each is there as the file says (keywords split on | and 、)
    assert code == Exit.OK
    assert "3 added" in capsys.readouterr().out
    assert categories(any_db) == {
        "市容环境": {
            "keywords": ["垃圾", "占道", "油烟"],
            "route": "department",
            "department": "城管执法",
            "response_hours": 8,
            "resolution_days": 5,
            "urgent": False,
            "fallback": False,
        },
        "紧急求助": {
            "keywords": ["紧急", "火灾"],
            "route": "committee",
            "department": None,
            "response_hours": 0,
            "resolution_days": 0,
            "urgent": True,
            "fallback": False,
        },
        "其他": {
            "keywords": [],
            "route": "committee",
            "department": None,
            "response_hours": 8,
            "resolution_days": 5,
            "urgent": False,
            "fallback": True,
        },
    }


def test_a_categories_yaml_updates_the_demo_and_new_requests_follow_it(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the demo, where 市容环境 has other keywords and deadlines
    assert main(["demo"]) == Exit.OK
    before = categories(any_db)
    capsys.readouterr()

    # When a YAML file updates 市容环境 and names the existing fallback again
    code = main(["categories", "import", write("categories.yml", CATEGORIES_YAML)])

    # Then 市容环境 is updated, 其他 is unchanged, and nothing else moved
    assert code == Exit.OK
    assert "0 added, 1 updated, 1 unchanged" in capsys.readouterr().out
    after = categories(any_db)
    assert after["市容环境"]["keywords"] == ["垃圾", "占道", "油烟"]
    assert (after["市容环境"]["response_hours"], after["市容环境"]["resolution_days"]) == (4, 3)
    assert {k: v for k, v in after.items() if k != "市容环境"} == {
        k: v for k, v in before.items() if k != "市容环境"
    }

    # And a resident's request with one of the keywords goes to 城管执法 at once
    resident = desk_on(any_db).identity("张三")
    resident.send("店门口油烟太大了")
    request = desk_on(any_db).requests()[-1]
    assert request.state == "forwarded"
    with Session(get_engine(any_db)) as session:
        assert session.get(Department, request.department_id).name == "城管执法"  # type: ignore[union-attr]


# --- bad rows: nothing changes, every bad row is reported with its line ----------------------


#: (file, content, the bad row's line, what the report says about it); each file has good rows
#: around exactly one bad one.
ONE_BAD_ROW = {
    "unknown kind": (
        "departments.csv",
        "name,kind\n新部门,街道\n公司甲,公司\n另一部门,社会组织\n",
        3,
        "kind must be 街道, 职能部门 or 社会组织, not '公司'",
    ),
    "negative days": (
        "departments.yaml",
        "- name: 新部门\n  kind: 街道\n- name: 城管执法\n  kind: 职能部门\n  resolution_days: -2\n",
        3,
        "resolution_days must be 0 or more, not -2",
    ),
    "missing name": (
        "departments.csv",
        "name,kind,resolution_days\n新部门,街道,3\n,街道,3\n",
        3,
        "name is missing",
    ),
    "duplicate department": (
        "departments.yaml",
        "- name: 新部门\n  kind: 街道\n\n- name: 新部门\n  kind: 社会组织\n",
        4,
        "新部门 appears twice in the file (first on line 1)",
    ),
    "department that does not exist": (
        "categories.csv",
        "name,keywords,route,department\n新类别,路灯,committee,\n违建,违章搭建,department,规划局\n",
        3,
        "department '规划局' does not exist",
    ),
    "duplicate category": (
        "categories.csv",
        "name,keywords\n新类别,路灯\n新类别,井盖\n",
        3,
        "新类别 appears twice in the file (first on line 2)",
    ),
    "two fallbacks in the file": (
        "categories.yaml",
        "- name: 其他\n  fallback: yes\n- name: 新类别\n  keywords: [路灯]\n"
        "- name: 兜底二\n  fallback: yes\n",
        5,
        "only one category can be the fallback and 其他 (line 1) already is",
    ),
    "a second fallback beside the database's": (
        "categories.csv",
        "name,fallback\n新类别,no\n兜底二,yes\n",
        3,
        "only one category can be the fallback and 其他 already is; to move the fallback here, "
        "add 其他 to the file with fallback no",
    ),
    "negative hours": (
        "categories.yaml",
        "- name: 新类别\n  response_hours: -1\n",
        1,
        "response_hours must be 0 or more, not -1",
    ),
}


@pytest.mark.parametrize("case", list(ONE_BAD_ROW), ids=str)
def test_an_import_with_one_bad_row_changes_nothing_and_reports_that_line(
    case: str, any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the demo departments and categories (其他 is the fallback)
    assert main(["demo"]) == Exit.OK
    before = (departments(any_db), categories(any_db), audit(any_db))
    capsys.readouterr()
    name, content, line, reason = ONE_BAD_ROW[case]

    # When a file with one bad row among good ones is imported
    code = main([name.split(".")[0], "import", write(name, content)])

    # Then it fails, reports that row alone with its line and the reason, and changes nothing
    assert code == Exit.FAILURE
    err = capsys.readouterr().err
    assert reported_lines(err) == [line]
    assert f"{name} line {line}: {reason}" in err
    assert "nothing was imported" in err
    assert (departments(any_db), categories(any_db), audit(any_db)) == before


def test_a_departments_file_with_many_bad_rows_reports_every_one(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one department
    assert main(["departments", "add", "交警"]) == Exit.OK
    capsys.readouterr()
    content = (
        "name,kind,resolution_days,active\n"
        "交警,街道,3,yes\n"  # 2: good (an update)
        "甲,公司,,\n"  # 3: unknown kind
        "乙,街道,-1,\n"  # 4: negative days
        "丙,街道,x,maybe\n"  # 5: two reasons
        ",街道,,\n"  # 6: no name
        "\n"  # 7: blank, skipped
        "乙,街道,,\n"  # 8: duplicate of line 4
        "丁,街道,\n"
    )  # 9: good (a short row)

    code = main(["departments", "import", write("units.csv", content)])

    assert code == Exit.FAILURE
    err = capsys.readouterr().err
    assert reported_lines(err) == [3, 4, 5, 6, 8]
    assert (
        "units.csv line 5: resolution_days must be a whole number, not 'x'; "
        "active must be yes or no, not 'maybe'"
    ) in err
    assert "units.csv line 8: 乙 appears twice in the file (first on line 4)" in err
    assert "5 of 7 rows are bad; nothing was imported." in err
    assert departments(any_db) == {"交警": ("职能部门", None, True)}


def test_a_categories_yaml_with_bad_items_reports_each_by_its_line(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 城管执法 (active) and 交警 (inactive)
    assert main(["departments", "add", "城管执法"]) == Exit.OK
    assert main(["departments", "add", "交警"]) == Exit.OK
    assert main(["departments", "deactivate", "交警"]) == Exit.OK
    capsys.readouterr()
    content = """# categories
- name: 交通停车
  route: department
  department: 交警
- name: 噪音扰民
  route: department
  department: 城管执法
- name: 市容环境
  route: department
  colour: red
- just a string
- name: 政策咨询
  department: 城管执法
- name: 意见建议
  response_hours: 2001
  urgent: maybe
"""

    code = main(["categories", "import", write("categories.yaml", content)])

    assert code == Exit.FAILURE
    err = capsys.readouterr().err
    assert reported_lines(err) == [2, 8, 11, 12, 14]
    assert "line 2: department '交警' is inactive" in err
    assert "line 8: unknown field 'colour'" in err
    assert "department is missing: route department needs one" in err
    assert 'line 11: it is not a set of "field: value" lines' in err
    assert "line 12: department is only for route department" in err
    assert "line 14: response_hours must be at most 2000, not 2001; urgent must be yes or no" in err
    assert categories(any_db) == {}


def test_an_unknown_column_stops_the_import_at_the_header(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["departments", "import", write("u.csv", "name,kind,colour\n交警,街道,red\n")])

    assert code == Exit.FAILURE
    assert "u.csv line 1: unknown column 'colour'" in capsys.readouterr().err
    assert departments(cli_db) == {}


def test_invalid_yaml_is_reported_with_its_line(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["departments", "import", write("u.yaml", "- name: 交警\n  kind: [街道\n")])

    assert code == Exit.FAILURE
    err = capsys.readouterr().err
    assert "u.yaml line 3: this is not valid YAML" in err
    assert "from line 2" in err


def test_a_file_that_is_not_utf8_is_refused_with_advice(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("gbk.csv").write_bytes("name,kind\n交警,街道\n".encode("gbk"))

    assert main(["departments", "import", "gbk.csv"]) == Exit.FAILURE
    err = capsys.readouterr().err
    assert "gbk.csv line 2: the file is not UTF-8" in err
    assert "CSV UTF-8" in err
    assert departments(cli_db) == {}


def test_a_missing_file_exits_not_found_and_an_unknown_type_is_a_usage_error(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["departments", "import", "nowhere.csv"]) == Exit.NOT_FOUND
    assert "there is no file 'nowhere.csv'" in capsys.readouterr().err

    assert main(["categories", "import", write("list.txt", "name\n")]) == Exit.USAGE
    assert "must be .csv, .yaml or .yml" in capsys.readouterr().err


# --- departments deactivate -----------------------------------------------------------------


def test_a_deactivated_department_gets_no_new_forwards_but_keeps_its_requests(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 城管执法 with staff, a category routed to it, and one request forwarded to it
    assert main(["departments", "add", "城管执法"]) == Exit.OK
    assert main(["departments", "add", "交警"]) == Exit.OK
    assert (
        main(
            [
                "categories",
                "import",
                write(
                    "c.csv", "name,keywords,route,department\n市容环境,垃圾,department,城管执法\n"
                ),
            ]
        )
        == 0
    )
    desk = desk_on(any_db)
    worker, staff, resident = desk.worker(), desk.staff("城管执法"), desk.identity("张三")
    resident.send("小区门口的路灯坏了")
    first = desk.requests()[-1].number
    worker.send(f"转单 {first} 城管执法")
    assert desk.request(first).state == "forwarded"
    capsys.readouterr()

    # When the department is deactivated
    code = main(["departments", "deactivate", "城管执法"])

    # Then it says what stays and where its category's requests go now
    assert code == Exit.OK
    out = capsys.readouterr().out
    assert "deactivated department 城管执法" in out
    assert "1 requests stay with it" in out
    assert "new requests of 市容环境 now go to the committee" in out
    assert main(["departments", "list"]) == Exit.OK
    assert re.search(r"城管执法.*停用", capsys.readouterr().out)

    # And forwarding another request to it is refused: the request stays new
    resident.send("楼下的井盖丢了")
    second = desk.requests()[-1].number
    answer = worker.send(f"转单 {second} 城管执法")
    assert desk.request(second).state == "new"
    assert "没有名为「城管执法」的部门" in answer[-1].text
    assert "可选部门：交警" in answer[-1].text

    # And a request of its category goes to the committee instead of to it
    resident.send("街上垃圾没人清理")
    third = desk.requests()[-1]
    assert (third.state, third.department_id) == ("new", None)

    # And the request already there stays: its staff can still take it
    staff.send(f"接收 {first}")
    assert desk.request(first).state == "dept_handling"


def test_deactivating_twice_says_so_and_an_unknown_department_is_not_found(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["departments", "add", "交警"]) == Exit.OK
    assert main(["departments", "deactivate", "交警"]) == Exit.OK
    capsys.readouterr()

    assert main(["departments", "deactivate", "交警"]) == Exit.OK
    assert "交警 is inactive already; nothing changed" in capsys.readouterr().out
    assert [action for action, _ in audit(cli_db)] == ["departments_deactivate"]

    assert main(["departments", "deactivate", "不存在"]) == Exit.NOT_FOUND
    assert "No department is called '不存在'" in capsys.readouterr().err


# --- who is on record -----------------------------------------------------------------------


def audit_rows(url: str) -> list[AdminAudit]:
    """The admin audit rows, oldest first."""
    with Session(get_engine(url)) as session:
        return list(session.exec(select(AdminAudit).order_by(col(AdminAudit.id))).all())


def test_the_audit_names_the_account_of_the_real_uid_whatever_logname_and_user_claim(
    any_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an admin who sets $LOGNAME and $USER to a colleague's name
    real = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("LOGNAME", "zhangsan")
    monkeypatch.setenv("USER", "zhangsan")
    assert main(["departments", "add", "交警"]) == Exit.OK

    # When they deactivate a department
    assert main(["departments", "deactivate", "交警"]) == Exit.OK

    # Then the audit names the account the uid belongs to, and what the variables claimed
    [row] = audit_rows(any_db)
    assert (row.actor, row.action) == (real, "departments_deactivate")
    assert row.detail == {
        "department": "交警",
        "claimed_users": {"LOGNAME": "zhangsan", "USER": "zhangsan"},
    }


def test_login_variables_naming_the_real_account_add_nothing_to_the_audit(
    any_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given $LOGNAME naming the real account and $USER unset
    real = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("LOGNAME", real)
    assert main(["departments", "add", "交警"]) == Exit.OK

    # When a department is deactivated
    assert main(["departments", "deactivate", "交警"]) == Exit.OK

    # Then the record names that account and nothing else
    [row] = audit_rows(any_db)
    assert (row.actor, row.detail) == (real, {"department": "交警"})


def test_a_uid_without_a_passwd_entry_is_recorded_by_its_number_not_by_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a uid no passwd entry has (some containers), and $USER claiming root
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    orphan = next(uid for uid in range(60000, 65000) if uid not in taken)
    monkeypatch.setattr(os, "getuid", lambda: orphan)
    monkeypatch.setenv("USER", "root")
    monkeypatch.delenv("LOGNAME", raising=False)

    # Then the account is that uid, and root is only what was claimed
    assert manage.admin_user() == f"uid {orphan}"
    assert manage.claimed_users() == {"USER": "root"}


# --- people ---------------------------------------------------------------------------------


def test_people_list_shows_roles_departments_and_local_creation_times(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a worker, a department's staff and a resident
    assert main(["departments", "add", "城管执法"]) == Exit.OK
    desk = desk_on(any_db)
    worker = desk.worker("王书记")
    staff = desk.staff("城管执法", "李科长")
    desk.identity("张三")
    capsys.readouterr()

    # When everyone is listed, then only workers
    assert main(["people", "list"]) == Exit.OK
    everyone = capsys.readouterr().out
    assert main(["people", "list", "--role", "worker"]) == Exit.OK
    workers = capsys.readouterr().out

    # Then each row shows id, channel, name, role and department, created in Beijing time
    rows = {
        line.split("│")[3].strip(): [cell.strip() for cell in line.split("│")[1:-1]]
        for line in everyone.splitlines()
        if line.count("│") == 8
    }
    assert set(rows) == {"王书记", "李科长", "张三"}
    assert rows["王书记"][:5] == [str(worker.person_id), "web", "王书记", "worker", ""]
    assert rows["李科长"][:5] == [str(staff.person_id), "web", "李科长", "department", "城管执法"]
    assert rows["张三"][3] == "requester"
    assert rows["王书记"][6] == format_local(worker.person().created_at)
    # And the filter keeps workers only
    assert "王书记" in workers and "李科长" not in workers and "张三" not in workers


def test_people_list_with_an_unknown_role_is_a_usage_error(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["people", "list", "--role", "boss"]) == Exit.USAGE
    assert (
        "--role must be one of worker, leader, department, group, requester"
        in capsys.readouterr().err
    )


def test_a_revoked_worker_can_no_longer_accept_and_their_open_command_is_dropped(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a worker who started to reject a request (the reason is still to come)
    desk = desk_on(any_db)
    worker, other, resident = desk.worker("王书记"), desk.worker("赵书记"), desk.identity("张三")
    resident.send("小区门口的路灯坏了")
    number = desk.requests()[-1].number
    worker.send(f"驳回 {number}")
    assert worker.person().dialogue is not None
    capsys.readouterr()

    # When their role is revoked by id
    code = main(["people", "revoke", str(worker.person_id)])

    # Then they are a requester again, and the command says so
    assert code == Exit.OK
    assert (
        f"revoked worker from 王书记 (id {worker.person_id}, web): now a requester"
        in capsys.readouterr().out
    )
    revoked = person(any_db, worker.person_id)
    assert (revoked.role, revoked.department_id, revoked.dialogue) == ("requester", None, None)

    # And their reason no longer completes the rejection
    worker.send("不属于受理范围")
    assert desk.request(number).state == "new"

    # And accepting is refused and recorded as refused
    worker.send(f"受理 {number}")
    assert desk.request(number).state == "new"
    refused = [e for e in desk.events(number) if e.actor_id == worker.person_id]
    assert [(e.action, e.outcome) for e in refused] == [("accept", "refused")]

    # While another worker still can
    other.send(f"受理 {number}")
    assert desk.request(number).state == "handling"

    # And the revocation is on record
    with Session(get_engine(any_db)) as session:
        events = session.exec(select(Event).where(Event.action == "revoke")).all()
        assert [(e.actor_id, e.note) for e in events] == [(worker.person_id, "worker")]
    action, detail = audit(any_db)[-1]
    assert action == "people_revoke"
    assert detail["person"] == worker.person_id and detail["role"] == "worker"


def test_revoking_department_staff_by_name_clears_their_department(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given staff of 城管执法 with a request forwarded there
    assert main(["departments", "add", "城管执法"]) == Exit.OK
    desk = desk_on(any_db)
    worker, staff, resident = desk.worker(), desk.staff("城管执法", "李科长"), desk.identity()
    resident.send("路边占道经营")
    number = desk.requests()[-1].number
    worker.send(f"转单 {number} 城管执法")
    capsys.readouterr()

    # When their role is revoked by name
    assert main(["people", "revoke", "李科长", "--role", "department"]) == Exit.OK

    # Then they belong to no department and cannot take the request
    assert "revoked department of 城管执法 from 李科长" in capsys.readouterr().out
    assert (staff.person().role, staff.person().department_id) == (Role.REQUESTER, None)
    staff.send(f"接收 {number}")
    assert desk.request(number).state == "forwarded"


def test_revoking_an_ambiguous_name_is_refused_with_the_candidates(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two people called 王书记 with roles, and a resident of the same name
    desk = desk_on(any_db)
    first, second = desk.worker("王书记"), desk.worker("王书记")
    desk.identity("王书记")
    with Session(get_engine(any_db)) as session:
        leader = session.get(Person, second.person_id)
        assert leader is not None
        leader.role = Role.LEADER
        session.add(leader)
        session.commit()
    capsys.readouterr()

    # When the name alone is given
    code = main(["people", "revoke", "王书记"])

    # Then it is a usage error listing both (not the resident), and nobody changes
    assert code == Exit.USAGE
    err = capsys.readouterr().err
    assert (
        f"2 people are called '王书记': id {first.person_id} (web, worker); "
        f"id {second.person_id} (web, leader)"
    ) in err
    assert "by its id" in err
    assert (first.person().role, second.person().role) == ("worker", "leader")

    # And --role picks one
    assert main(["people", "revoke", "王书记", "--role", "leader"]) == Exit.OK
    assert (first.person().role, second.person().role) == ("worker", "requester")


def test_revoking_someone_unknown_is_not_found_and_a_requester_is_left_alone(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    desk = desk_on(any_db)
    worker = desk.worker("王书记")
    resident = desk.identity("张三")
    capsys.readouterr()

    assert main(["people", "revoke", "无名氏"]) == Exit.NOT_FOUND
    assert "Nobody has the id or name '无名氏'" in capsys.readouterr().err

    assert main(["people", "revoke", "99999"]) == Exit.NOT_FOUND

    assert main(["people", "revoke", str(worker.person_id), "--role", "leader"]) == Exit.NOT_FOUND
    assert "is a worker, not a leader" in capsys.readouterr().err
    assert worker.person().role == "worker"

    assert main(["people", "revoke", "张三"]) == Exit.OK
    assert "has no role to revoke; nothing changed" in capsys.readouterr().out
    assert resident.person().role == "requester"
    assert [action for action, _ in audit(any_db)] == []


def test_revoke_with_a_role_that_cannot_be_revoked_is_a_usage_error(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["people", "revoke", "张三", "--role", "requester"]) == Exit.USAGE
    assert "--role must be one of worker, leader, department, group" in capsys.readouterr().err


# --- revoking: what the revoked person held ---------------------------------------------------


def outbox_to(url: str, person_id: int) -> list[OutboxMessage]:
    """Every outbox row addressed to a person, oldest first."""
    with Session(get_engine(url)) as session:
        return list(
            session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.person_id == person_id)
                .order_by(col(OutboxMessage.id))
            ).all()
        )


def leader(desk: Desk, name: str = "钱部长") -> Identity:
    """A web identity bound as a leader."""
    identity = desk.identity(name)
    identity.send(f"绑定 {desk.invite('leader')}")
    return identity


def shanghai(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A moment on the Asia/Shanghai wall clock, as UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_TZ).astimezone(UTC)


def test_revoking_a_worker_releases_what_they_handle_to_the_committee_and_tells_the_workers(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a worker handling one request and whose result for another awaits review
    desk = desk_on(any_db)
    worker, other, resident = desk.worker("王书记"), desk.worker("赵书记"), desk.identity("张三")
    resident.send("小区门口的路灯坏了")
    handled = desk.requests()[-1].number
    worker.send(f"受理 {handled}")
    resident.send("楼道里堆满了杂物")
    reviewed = desk.requests()[-1].number
    worker.send(f"受理 {reviewed}")
    worker.send(f"办结 {reviewed} 已清理")
    assert desk.request(reviewed).state == "review"
    worker.new_messages()
    other.new_messages()
    capsys.readouterr()

    # When the worker's role is revoked
    assert main(["people", "revoke", str(worker.person_id)]) == Exit.OK
    desk.work()

    # Then the handled request is back in 待受理 with nobody holding it, by a system event
    assert (desk.request(handled).state, desk.request(handled).handler_id) == ("new", None)
    assert [
        (e.action, e.from_state, e.to_state, e.actor_id)
        for e in desk.events(handled)
        if e.action == "release"
    ] == [("release", "handling", "new", None)]
    # And the request awaiting review keeps its state and, for the record, who completed it
    assert (desk.request(reviewed).state, desk.request(reviewed).handler_id) == (
        "review",
        worker.person_id,
    )
    # And the command lists what came back
    assert f"1 requests they were handling are back in 待受理: {handled}" in capsys.readouterr().out
    # And the other worker got the released request as a card to act on, and a summary
    told = other.new_messages()
    card = next(m for m in told if "已收回" in m.text)
    assert card.number == handled
    assert card.actions == [f"受理 {handled}", f"转单 {handled}", f"驳回 {handled}"]
    summary = [m.text for m in told if "王书记的角色已撤销：1件办理中" in m.text]
    assert len(summary) == 1 and handled in summary[0] and reviewed not in summary[0]
    # And the revoked worker got no new message (their old cards only lose their buttons)
    assert worker.new_messages() == []
    assert [action for action, _ in audit(any_db)] == ["people_revoke"]
    assert audit(any_db)[-1][1]["released"] == [handled]

    # When the resident adds personal details to both requests
    resident.send(f"补充 {handled} 身份证号110101199001011234，住春熙路3栋2单元")
    resident.send(f"补充 {reviewed} 联系电话13800000000")

    # Then the committee's workers receive them and the revoked worker does not
    assert worker.new_messages() == []
    received = "\n".join(m.text for m in other.new_messages())
    assert "110101199001011234" in received and "13800000000" in received
    assert not any(
        "110101199001011234" in str(row.params) for row in outbox_to(any_db, worker.person_id)
    )

    # When the other worker sends the result they completed back for rework (返工)
    other.send(f"返工 {reviewed} 请补充照片")

    # Then the rework is the committee's: no handler, and the revoked worker is not told
    assert (desk.request(reviewed).state, desk.request(reviewed).handler_id) == ("handling", None)
    assert worker.new_messages() == []

    # And another worker can take the released request up from its card
    other.press(card.action("受理"))
    assert (desk.request(handled).state, desk.request(handled).handler_id) == (
        "handling",
        other.person_id,
    )

    # And revoking them again changes nothing and tells nobody
    before = len(desk.events())
    other.new_messages()
    assert main(["people", "revoke", str(worker.person_id)]) == Exit.OK
    desk.work()
    assert "has no role to revoke; nothing changed" in capsys.readouterr().out
    assert len(desk.events()) == before and other.new_messages() == []


def test_a_notice_queued_for_a_worker_before_revocation_is_not_delivered_after_it(
    any_db: str,
) -> None:
    # Given a worker handling a request, and a resident's supplement handled but not yet
    # delivered to them (still in the outbox)
    desk = desk_on(any_db)
    worker, resident = desk.worker("王书记"), desk.identity("张三")
    resident.send("想反映一下噪音问题")
    number = desk.requests()[-1].number
    worker.send(f"受理 {number}")
    with session_scope(desk.runtime.engine) as session:
        queries.add_inbox(
            session=session,
            channel=web.CHANNEL,
            natural_key="late-supplement",
            chat_id=resident.chat_id,
            payload={"text": f"补充 {number} 住址：春熙路3栋2单元401"},
        )
    dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)
    pending = [row for row in outbox_to(any_db, worker.person_id) if row.status == "pending"]
    assert [row.key for row in pending] == ["card.supplemented"]

    # When their role is revoked and the outbox is worked through
    assert main(["people", "revoke", str(worker.person_id)]) == Exit.OK
    desk.work()

    # Then the supplement never reached them: it is skipped, on record why
    assert all("春熙路3栋2单元401" not in m.text for m in worker.new_messages())
    rows = {row.id: row for row in outbox_to(any_db, worker.person_id)}
    assert pending[0].id is not None
    assert (rows[pending[0].id].status, rows[pending[0].id].last_error) == (
        "skipped",
        "role revoked",
    )


def test_after_revocation_no_reminder_escalation_or_digest_reaches_the_revoked_worker(
    any_db: str,
) -> None:
    # Given on Monday 2025-09-22 a worker handling one request, a leader, another worker and
    # a new request nobody took
    with time_machine.travel(shanghai(2025, 9, 22, 10), tick=False):
        desk = desk_on(any_db)
        worker, other, boss = desk.worker("王书记"), desk.worker("赵书记"), leader(desk)
        resident = desk.identity("张三")
        resident.send("小区门口的路灯坏了")
        handled = desk.requests()[-1].number
        worker.send(f"受理 {handled}")
        resident.send("楼道里堆满了杂物")
        # When the worker's role is revoked the same morning
        assert main(["people", "revoke", str(worker.person_id)]) == Exit.OK
        desk.work()
    revoked_at = len(outbox_to(any_db, worker.person_id))

    # And a tick runs on Tuesday 09-30 at 09:30: both deadlines have passed, a digest is due
    try:
        with time_machine.travel(shanghai(2025, 9, 30, 9, 30), tick=False):
            written = dispatch.tick(desk.runtime)
            desk.work()
    finally:
        deadlines.configure()

    # Then reminders, 督办 and the digest went out, none of them to the revoked worker
    with Session(desk.runtime.engine) as session:
        rows = [session.get(OutboxMessage, outbox_id) for outbox_id in written]
    by_person: dict[int, list[str]] = {}
    for row in rows:
        assert row is not None
        by_person.setdefault(row.person_id, []).append(row.key)
    assert worker.person_id not in by_person
    assert {"remind.unacted", "remind.resolution_due", "digest"} <= set(by_person[other.person_id])
    assert "digest" in by_person[boss.person_id]
    assert "escalate.overdue" in by_person[boss.person_id]
    # And the 督办 names the committee as holder of the released request, not them
    overdue = [m.text for m in boss.new_messages() if "督办" in m.text and handled in m.text]
    assert overdue and all("王书记" not in text for text in overdue)
    assert len(outbox_to(any_db, worker.person_id)) == revoked_at


def test_a_walk_in_a_revoked_worker_registered_is_relayed_to_every_worker_and_only_they_act(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a walk-in registered at the desk by a worker, and two other workers
    desk = desk_on(any_db)
    worker, other, third = desk.worker("王书记"), desk.worker("赵书记"), desk.worker("孙书记")
    worker.intake("刘大爷", "13900000000", "家门口的下水道堵了")
    walk_in = desk.requests()[-1]
    assert (walk_in.channel, walk_in.registered_by_id) == ("desk", worker.person_id)
    number = walk_in.number
    capsys.readouterr()

    # When the registering worker's role is revoked
    assert main(["people", "revoke", str(worker.person_id)]) == Exit.OK
    desk.work()

    # Then the walk-in no longer names them, with an event saying who acts for it now
    assert desk.request(number).registered_by_id is None
    assert (
        f"1 walk-ins they registered are relayed to every worker: {number}"
        in capsys.readouterr().out
    )
    notes = [e.note or "" for e in desk.events(number) if e.action == "comment"]
    assert len(notes) == 1 and "王书记" in notes[0] and "全体党务工作者" in notes[0]
    worker.new_messages()

    # When they try to cancel it and to look it up
    answers = [m.text for m in worker.send(f"撤销 {number}") + worker.send(f"查询 {number}")]

    # Then both are refused as for an unknown number, nothing changes, the refusal is recorded
    assert desk.request(number).state == "new"
    assert len(answers) == 2 and all(f"没有找到编号为「{number}」" in a for a in answers)
    assert [
        (e.action, e.outcome)
        for e in desk.events(number)
        if e.actor_id == worker.person_id and e.outcome == "refused"
    ] == [("cancel", "refused")]

    # When another worker accepts it
    third.new_messages()
    accepted = other.send(f"受理 {number}")

    # Then the phone relay of the walk-in's notice goes to every worker, not to them
    assert worker.new_messages() == []
    for received in (accepted, third.new_messages()):
        relays = [m.text for m in received if "接待台登记的群众 刘大爷" in m.text]
        assert len(relays) == 1 and number in relays[0]

    # And any worker may act for the walk-in: a third worker cancels it for them
    third.send(f"撤销 {number}")
    assert desk.request(number).state == "cancelled"


def test_a_revoked_worker_s_web_token_is_refused_while_others_still_work(
    any_db: str,
    stub_broker: Any,
) -> None:
    # Given two workers on the web chat, both able to read their messages
    desk = desk_on(any_db)
    worker, other = desk.worker("王书记"), desk.worker("赵书记")
    with TestClient(create_app(desk.runtime)) as client:

        def get(token: str) -> int:
            return client.get(
                "/api/web/messages?after=0&wait=0", headers={"Authorization": f"Bearer {token}"}
            ).status_code

        assert (get(worker.token), get(other.token)) == (200, 200)

        # When the first worker's role is revoked
        assert main(["people", "revoke", str(worker.person_id)]) == Exit.OK

        # Then their token is refused for reading and for sending, and nothing is stored
        assert get(worker.token) == 401
        inbox_before = len(inbox_rows(any_db))
        posted = client.post(
            "/api/web/messages",
            json={"id": "after-revoke", "text": "待办"},
            headers={"Authorization": f"Bearer {worker.token}"},
        )
        assert posted.status_code == 401
        assert len(inbox_rows(any_db)) == inbox_before
        # And the other worker's token still works
        assert get(other.token) == 200
    assert audit(any_db)[-1][1]["web_tokens"] == 1


def test_revoked_department_staff_get_no_more_department_cards_or_notices(
    any_db: str,
) -> None:
    # Given two staff of 城管执法, one of whom is revoked
    assert main(["departments", "add", "城管执法"]) == Exit.OK
    desk = desk_on(any_db)
    worker, resident = desk.worker(), desk.identity("张三")
    revoked, kept = desk.staff("城管执法", "李科长"), desk.staff("城管执法", "周干事")
    assert main(["people", "revoke", str(revoked.person_id)]) == Exit.OK
    desk.work()
    revoked.new_messages()

    # When a request is forwarded to the department and the resident supplements it
    resident.send("路边占道经营")
    number = desk.requests()[-1].number
    worker.send(f"转单 {number} 城管执法")
    resident.send(f"补充 {number} 身份证号110101199001011234")

    # Then the remaining staff get the card and the supplement, the revoked one nothing
    assert revoked.new_messages() == []
    texts = "\n".join(m.text for m in kept.new_messages())
    assert f"【{number}】转单" in texts and "110101199001011234" in texts
    # And the revoked one cannot take it
    revoked.send(f"接收 {number}")
    assert desk.request(number).state == "forwarded"


def waiting_for_a_lock(url: str) -> bool:
    """Whether some other PostgreSQL backend waits for a row lock now."""
    with get_engine(url).connect() as connection:
        return bool(
            connection.execute(
                sa_text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_worker_s_command_in_flight_when_they_are_revoked_is_released_all_the_same(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a worker whose 受理 is being handled: their person row is locked, as the
    # dispatcher locks it for each message
    desk = desk_on(any_db)
    worker, other, resident = desk.worker("王书记"), desk.worker("赵书记"), desk.identity("张三")
    resident.send("小区门口的路灯坏了")
    number = desk.requests()[-1].number
    codes: list[int] = []
    with session_scope(desk.runtime.engine) as session:
        held = queries.get_person(session=session, person_id=worker.person_id, lock=True)
        assert held is not None

        # When `redesk people revoke` runs meanwhile
        revoking = threading.Thread(
            target=lambda: codes.append(main(["people", "revoke", str(worker.person_id)]))
        )
        revoking.start()
        for _ in range(200):
            if waiting_for_a_lock(any_db):
                break
            revoking.join(0.05)
        assert waiting_for_a_lock(any_db), "the revocation did not wait for the worker's lock"
        # And the worker's 受理 commits first
        service.accept(desk.runtime.tx(session, "race"), held, number)
    revoking.join()

    # Then the revocation saw the accepted request and released it to the committee
    assert codes == [Exit.OK]
    request = desk.request(number)
    assert (request.state, request.handler_id) == ("new", None)
    assert [(e.action, e.to_state) for e in desk.events(number)][-2:] == [
        ("accept", "handling"),
        ("release", "new"),
    ]
    desk.work()
    assert any("已收回" in m.text for m in other.new_messages())


def inbox_rows(url: str) -> list[InboxMessage]:
    """Every inbox row."""
    with Session(get_engine(url)) as session:
        return list(session.exec(select(InboxMessage)).all())


# --- inbox ----------------------------------------------------------------------------------


def text_update(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    """A private text message as the Bot API sends it."""
    user = {"id": user_id, "is_bot": False, "first_name": "张三", "language_code": "zh-hans"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id % 1000,
            "from": user,
            "chat": {"id": user_id, "first_name": "张三", "type": "private"},
            "date": 1764633600,
            "text": text,
        },
    }


def unparseable_photo(update_id: int, user_id: int) -> dict[str, Any]:
    """A real photo message whose PhotoSizes lack file_unique_id, which the installed
    python-telegram-bot requires."""
    update = text_update(update_id, user_id, "")
    message = update["message"]
    del message["text"]
    message["caption"] = "井盖丢了"
    message["photo"] = [
        {"file_id": "AgACAgUAAxkBAAIBZ2dNb3Qx", "file_size": 1403, "width": 90, "height": 68},
        {"file_id": "AgACAgUAAxkBAAIBZ2dNb3Qy", "file_size": 20377, "width": 320, "height": 240},
    ]
    return update


def inbox_row(url: str, inbox_id: int) -> InboxMessage:
    """An inbox row, fresh."""
    with Session(get_engine(url)) as session:
        found = session.get(InboxMessage, inbox_id)
        assert found is not None
        return found


def store(url: str, update: dict[str, Any]) -> int:
    """Stores a Telegram update as the webhook and the poller do; its inbox id."""
    with session_scope(get_engine(url)) as session:
        telegram.store_update(session, update)
        row = session.exec(
            select(InboxMessage).where(InboxMessage.natural_key == str(update["update_id"]))
        ).one()
        assert row.id is not None
        return row.id


def queued_inbound() -> int:
    """handle_inbound jobs waiting in the CLI's in-process broker."""
    return int(broker_module.current().queues["inbound"].qsize())


def test_inbox_failed_lists_every_failed_row_of_any_channel_with_its_time_and_reason(
    any_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an update the library cannot model, a web message given up after its attempts,
    # and a pending message
    photo = store(any_db, unparseable_photo(700000001, 100))
    with session_scope(get_engine(any_db)) as session:
        queries.add_inbox(
            session=session,
            channel="web",
            natural_key="7:a",
            chat_id="7",
            payload={"text": "路灯坏了"},
            status="failed",
            error="RuntimeError: the handler failed",
        )
        queries.add_inbox(
            session=session, channel="web", natural_key="7:b", chat_id="7", payload={"text": "帮助"}
        )
    web = photo + 1
    monkeypatch.setattr(cli.console, "width", 400)

    # When the admin lists the failed rows
    assert main(["inbox", "failed"]) == Exit.OK
    out = capsys.readouterr().out

    # Then both failed rows are there, with id, channel, key, chat, time and reason
    rows = {
        cells[0]: cells
        for cells in (
            [cell.strip() for cell in line.split("│")[1:-1]]
            for line in out.splitlines()
            if line.count("│") == 8
        )
    }
    assert set(rows) == {str(photo), str(web)}
    assert rows[str(photo)][:4] == [str(photo), "telegram", "700000001", "100"]
    assert rows[str(photo)][4] == format_local(inbox_row(any_db, photo).received_at)
    assert "PhotoSize" in rows[str(photo)][6] and "file_unique_id" in rows[str(photo)][6]
    assert rows[str(web)][1:4] == ["web", "7:a", "7"]
    assert rows[str(web)][6] == "RuntimeError: the handler failed"


def test_inbox_failed_says_so_when_there_is_none(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inbox", "failed"]) == Exit.OK
    assert "no failed inbox rows" in capsys.readouterr().out


def test_inbox_retry_hands_a_row_that_parses_now_to_the_workers_and_it_is_answered(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a resident's update kept as failed by an older python-telegram-bot, which this
    # one parses
    assert main(["demo"]) == Exit.OK
    with session_scope(get_engine(any_db)) as session:
        inbox_id = queries.add_inbox(
            session=session,
            channel=telegram.CHANNEL,
            natural_key="700000001",
            chat_id="100",
            payload=text_update(700000001, 100, "路灯坏了"),
            status="failed",
            error="TypeError: Message.__init__() missing 1 required positional argument: 'chat'",
        )
    assert inbox_id is not None
    capsys.readouterr()

    # When the admin retries it
    code = main(["inbox", "retry", str(inbox_id)])

    # Then it is pending again, from zero attempts, enqueued, and the retry is on record
    assert code == Exit.OK
    assert (
        f"inbox row {inbox_id} (telegram) is pending again and enqueued" in capsys.readouterr().out
    )
    row = inbox_row(any_db, inbox_id)
    assert (row.status, row.attempts, row.error, row.chat_id) == ("pending", 0, None, "100")
    assert queued_inbound() == 1
    assert audit(any_db)[-1][0] == "inbox_retry"
    assert audit(any_db)[-1][1]["inbox"] == inbox_id

    # When a worker handles the chat, Then the resident's request exists
    desk = desk_on(any_db)
    dispatch.process_chat(desk.runtime, telegram.CHANNEL, "100")
    assert inbox_row(any_db, inbox_id).status == "done"
    assert [request.text for request in desk.requests()] == ["路灯坏了"]


def test_inbox_retry_of_an_update_that_still_does_not_parse_fails_it_again_and_blocks_nothing(
    any_db: str,
) -> None:
    # Given an update the library cannot model, and the same resident's next message
    bad = store(any_db, unparseable_photo(700000001, 100))
    good = store(any_db, text_update(700000002, 100, "帮助"))
    assert inbox_row(any_db, bad).status == "failed"

    # When the admin retries it with the library unchanged, and a worker handles the chat
    assert main(["inbox", "retry", str(bad)]) == Exit.OK
    desk = desk_on(any_db)
    dispatch.process_chat(desk.runtime, telegram.CHANNEL, "100")

    # Then it is failed again with the parser's reason, and the next message was handled
    row = inbox_row(any_db, bad)
    assert row.status == "failed" and row.error and "file_unique_id" in row.error
    assert inbox_row(any_db, good).status == "done"


def test_inbox_retry_refuses_an_unknown_id_a_row_not_failed_and_an_unparseable_update_of_nobody(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a pending message, and an update that neither parses nor names a sender
    pending = store(any_db, text_update(700000001, 100, "帮助"))
    nobody = store(any_db, {"update_id": 700000002, "message": {"text": "hi"}})
    before = [(inbox_row(any_db, i).status, inbox_row(any_db, i).error) for i in (pending, nobody)]
    capsys.readouterr()

    # When the admin retries an unknown id, the pending row and the update of nobody
    unknown = main(["inbox", "retry", "999999"])
    unknown_err = capsys.readouterr().err
    not_failed = main(["inbox", "retry", str(pending)])
    not_failed_err = capsys.readouterr().err
    still = main(["inbox", "retry", str(nobody)])
    still_err = capsys.readouterr().err

    # Then each is refused with its reason and exit code, and nothing changed
    assert unknown == Exit.NOT_FOUND
    assert "No inbox row has the id 999999" in unknown_err
    assert not_failed == Exit.FAILURE
    assert f"Inbox row {pending} is pending, not failed; nothing changed." in not_failed_err
    assert still == Exit.FAILURE
    assert f"Inbox row {nobody} still cannot be parsed" in still_err
    assert [
        (inbox_row(any_db, i).status, inbox_row(any_db, i).error) for i in (pending, nobody)
    ] == before
    assert [action for action, _ in audit(any_db)] == []
