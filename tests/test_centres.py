"""`redesk centres ...`: the tree of centres from the command line, run in-process through
main([...]) on SQLite and PostgreSQL; its QR codes against the fake WeChat API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from admin_scripts.cli import Exit, main
from bot import runtime as bot_runtime
from storage import queries
from storage.db import get_engine
from storage.models import (
    AdminAudit,
    Category,
    Centre,
    Department,
    Invitation,
    Person,
    Request,
    Role,
)
from tests.utils.cli import desk_on

# --- fixtures and helpers -------------------------------------------------------------------


def run(*words: str) -> int:
    """`redesk <words>`."""
    return main(list(words))


def write(name: str, text: str) -> str:
    """Writes a UTF-8 file in the working directory; returns its name."""
    Path(name).write_text(text, encoding="utf-8")
    return name


def centres(url: str) -> dict[str, dict[str, Any]]:
    """Every centre by code: name, level, parent's code, path as codes, active, days off."""
    with Session(get_engine(url)) as session:
        rows = session.exec(select(Centre)).all()
        codes = {row.id: row.code for row in rows}
        return {
            row.code: {
                "name": row.name,
                "level": row.level,
                "parent": codes.get(row.parent_id) if row.parent_id else None,
                "path": [codes[i] for i in queries.path_ids(row.path)],
                "active": row.active,
                "days_off": row.days_off,
            }
            for row in rows
        }


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


def a_district(url: str) -> None:
    """A district with two communities and a 商圈 under it, and a street under one community."""
    assert run("centres", "add", "futian", "福田区党群服务中心", "--level", "district") == Exit.OK
    for code, name, level in (
        ("xiangmihu", "香蜜湖社区", "community"),
        ("lianhua", "莲花社区", "社区"),
        ("cbd", "福田CBD商圈", "business"),
    ):
        assert run("centres", "add", code, name, "--level", level, "--parent", "futian") == 0
    street = ["lh-1", "莲花一街", "--level", "street", "--parent", "lianhua"]
    assert run("centres", "add", *street) == Exit.OK


def hold_request(url: str, code: str) -> None:
    """A request waiting (待受理) in the centre with this code."""
    with Session(get_engine(url)) as session:
        centre = queries.get_centre_by_code(session=session, code=code)
        assert centre is not None and centre.id is not None
        resident = Person(channel="web", external_id=f"resident-{code}")
        session.add(resident)
        session.flush()
        assert resident.id is not None
        session.add(
            Request(
                number=f"SQ-20261201-{centre.id:04d}",
                centre_id=centre.id,
                requester_id=resident.id,
                channel="web",
                text="路灯坏了",
                state="new",
            )
        )
        session.commit()


# --- add and list ---------------------------------------------------------------------------


def test_centres_add_stores_the_level_word_and_the_path_under_its_parent(any_db: str) -> None:
    # When a district and a community under it are added, one level given in English
    a_district(any_db)

    # Then each is stored with the Chinese level and its path from the top
    stored = centres(any_db)
    assert stored["futian"] == {
        "name": "福田区党群服务中心",
        "level": "区",
        "parent": None,
        "path": ["futian"],
        "active": True,
        "days_off": [],
    }
    assert stored["lh-1"]["path"] == ["futian", "lianhua", "lh-1"]
    assert stored["xiangmihu"]["level"] == "社区"
    assert stored["cbd"]["level"] == "商圈"
    # And each addition is on the admin audit log
    added = [detail["centre"] for action, detail in audit(any_db) if action == "centres_add"]
    assert added == ["futian", "xiangmihu", "lianhua", "cbd", "lh-1"]


def test_centres_list_shows_the_tree_with_open_requests_and_staff(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district with a waiting request and a worker in one community
    a_district(any_db)
    hold_request(any_db, "lianhua")
    with Session(get_engine(any_db)) as session:
        lianhua = queries.get_centre_by_code(session=session, code="lianhua")
        assert lianhua is not None
        session.add(Person(channel="web", external_id="w", role=Role.WORKER, centre_id=lianhua.id))
        session.commit()
    capsys.readouterr()

    # When the centres are listed
    assert run("centres", "list") == Exit.OK

    # Then children come below their parent, indented further, with their figures
    out = capsys.readouterr().out
    lines = {code: line for line in out.splitlines() for code in re.findall(r"(\S+)  \S+", line)}
    indent = {code: len(line) - len(line.lstrip(" │├└─")) for code, line in lines.items()}
    assert indent["futian"] < indent["lianhua"] < indent["lh-1"]
    assert "在办 1  人员 1" in lines["lianhua"]
    assert "在办 0  人员 0" in lines["cbd"]
    assert "默认" in lines["default"]
    assert out.index("futian") < out.index("lianhua") < out.index("lh-1")


@pytest.mark.parametrize(
    ("words", "code", "message"),
    [
        (["bad_code", "x", "--level", "city"], Exit.USAGE, "letters, digits or '-'"),
        (["a" * 33, "x", "--level", "city"], Exit.USAGE, "1 to 32"),
        (["ok", "x", "--level", "moon"], Exit.USAGE, "--level must be one of"),
        (["ok", " ", "--level", "city"], Exit.USAGE, "Name is missing"),
        (["ok", "x", "--level", "park", "--parent", "nowhere"], Exit.NOT_FOUND, "nowhere"),
        (["DEFAULT", "x", "--level", "city"], Exit.FAILURE, "taken by 党群服务中心 (default)"),
    ],
    ids=["bad code", "long code", "bad level", "no name", "unknown parent", "duplicate"],
)
def test_a_bad_centre_is_refused_with_a_reason_and_nothing_stored(
    any_db: str,
    capsys: pytest.CaptureFixture[str],
    words: list[str],
    code: Exit,
    message: str,
) -> None:
    # When a centre is added with something wrong
    result = run("centres", "add", *words)

    # Then the exit code and the message say what, and only the default centre is there
    assert result == code
    assert message in capsys.readouterr().err
    assert list(centres(any_db)) == ["default"]
    assert audit(any_db) == []


def test_a_centre_under_an_inactive_parent_is_refused(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district that was deactivated
    assert run("centres", "add", "old", "旧区", "--level", "区") == Exit.OK
    assert run("centres", "deactivate", "old") == Exit.OK

    # When a centre is added under it
    result = run("centres", "add", "new", "新社区", "--level", "社区", "--parent", "OLD")

    # Then it is refused
    assert result == Exit.FAILURE
    assert "旧区 (old) is inactive" in capsys.readouterr().err
    assert "new" not in centres(any_db)


# --- import ---------------------------------------------------------------------------------


def test_centres_import_adds_a_tree_whose_parents_come_earlier_or_exist(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district that exists, and a file with a street under it and communities under that
    assert run("centres", "add", "futian", "福田区", "--level", "district") == Exit.OK
    write(
        "centres.csv",
        "code,name,level,parent,days_off\n"
        "ft-street,福田街道,街道,FUTIAN,\n"
        "ft-1,福田一社区,community,ft-street,2026-12-24|2026-12-31\n"
        "ft-2,福田二社区,社区,ft-street,\n",
    )

    # When it is imported
    assert run("centres", "import", "centres.csv") == Exit.OK

    # Then every centre is where the file says, with its days off
    stored = centres(any_db)
    assert stored["ft-1"]["path"] == ["futian", "ft-street", "ft-1"]
    assert stored["ft-2"]["parent"] == "ft-street"
    assert stored["ft-1"]["days_off"] == ["2026-12-24", "2026-12-31"]
    assert "3 added" in capsys.readouterr().out
    assert audit(any_db)[-1] == (
        "centres_import",
        {"file": "centres.csv", "added": ["ft-street", "ft-1", "ft-2"], "updated": []},
    )


def test_centres_import_reads_yaml_and_updates_an_existing_centre(any_db: str) -> None:
    # Given a centre that exists
    assert run("centres", "add", "cbd", "商圈", "--level", "business") == Exit.OK
    write(
        "centres.yaml",
        "- code: CBD\n"
        "  name: 春熙路商圈党群服务中心\n"
        "  level: 商圈\n"
        "  days_off: [2026-12-24]\n"
        "- {code: cbd-t1, name: 国金中心楼宇, level: building, parent: cbd}\n",
    )

    # When a YAML file names it again (another case) with a new name, and a child of it
    assert run("centres", "import", "centres.yaml") == Exit.OK

    # Then it is updated, not duplicated, and the child is under it
    stored = centres(any_db)
    assert stored["cbd"]["name"] == "春熙路商圈党群服务中心"
    assert stored["cbd"]["days_off"] == ["2026-12-24"]
    assert stored["cbd-t1"]["path"] == ["cbd", "cbd-t1"]
    assert "CBD" not in stored


def test_a_centres_import_keeps_the_days_off_of_a_centre_whose_cell_is_empty(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a centre with a day off
    assert run("centres", "add", "cbd", "商圈", "--level", "business") == Exit.OK
    assert run("centres", "days-off", "cbd", "add", "2026-12-24") == Exit.OK

    # When a file renames it and leaves its days off empty, twice
    write("centres.csv", "code,name,level,parent,days_off\ncbd,春熙路商圈,商圈,,\n")
    assert run("centres", "import", "centres.csv") == Exit.OK
    assert run("centres", "import", "centres.csv") == Exit.OK

    # Then it is renamed once, and its day off stays
    assert centres(any_db)["cbd"]["name"] == "春熙路商圈"
    assert centres(any_db)["cbd"]["days_off"] == ["2026-12-24"]
    out = capsys.readouterr().out
    assert "0 added, 1 updated, 0 unchanged" in out and "0 added, 0 updated, 1 unchanged" in out


def test_a_centres_import_with_bad_rows_reports_each_line_and_stores_nothing(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file with good rows and bad ones
    write(
        "centres.csv",
        "code,name,level,parent,days_off\n"
        "sz,深圳市,city,,\n"  # line 2: good
        "bad code,x,city,,\n"  # line 3: bad code
        "ft,福田区,district,sz,\n"  # line 4: good
        "FT,again,district,sz,\n"  # line 5: duplicate of line 4
        "c1,x,moon,nowhere,\n"  # line 6: bad level, unknown parent
        "c2,x,社区,later,\n"  # line 7: parent defined later
        "c3,x,社区,ft,2026-02-30\n"  # line 8: not a date
        "later,x,社区,sz,\n"  # line 9: good
        "c4,,社区,c4,\n",  # line 10: no name, its own parent
    )

    # When it is imported
    result = run("centres", "import", "centres.csv")

    # Then each bad row is reported with its line and why, and nothing is stored
    assert result == Exit.FAILURE
    err = capsys.readouterr().err
    assert reported_lines(err) == [3, 5, 6, 7, 8, 10]
    assert "line 5: FT appears twice in the file (first on line 4)" in err
    assert "parent nowhere does not exist" in err
    assert "parent later is defined later, on line 9" in err
    assert "2026-02-30" in err
    assert "parent c4 is the centre itself" in err
    assert "6 of 9 rows are bad; nothing was imported" in err
    assert list(centres(any_db)) == ["default"]
    assert audit(any_db) == []


def test_a_centres_import_does_not_move_an_existing_centre(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district with a community
    a_district(any_db)
    write("centres.csv", "code,name,level,parent\nlianhua,莲花社区,社区,cbd\n")

    # When a file puts the community under another centre
    result = run("centres", "import", "centres.csv")

    # Then the row is refused and points to `centres edit`
    assert result == Exit.FAILURE
    assert "redesk centres edit lianhua" in capsys.readouterr().err
    assert centres(any_db)["lianhua"]["parent"] == "futian"


# --- deactivate -----------------------------------------------------------------------------


def test_the_default_centre_cannot_be_deactivated(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the default centre is deactivated
    result = run("centres", "deactivate", "default")

    # Then it is refused, saying why, and stays active
    assert result == Exit.FAILURE
    assert "is the default centre" in capsys.readouterr().err
    assert centres(any_db)["default"]["active"] is True


def test_a_centre_with_active_children_or_open_requests_cannot_be_deactivated(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district whose community holds a waiting request
    a_district(any_db)
    hold_request(any_db, "xiangmihu")

    # When the district and the community are deactivated
    parent = run("centres", "deactivate", "futian")
    holding = run("centres", "deactivate", "xiangmihu")

    # Then both are refused, each saying why, and nothing changed
    assert (parent, holding) == (Exit.FAILURE, Exit.FAILURE)
    err = capsys.readouterr().err
    assert "has 3 active centres below it" in err and "莲花社区 (lianhua)" in err
    assert "holds 1 requests that are not finished" in err
    assert all(centre["active"] for centre in centres(any_db).values())
    assert [action for action, _ in audit(any_db)].count("centres_deactivate") == 0


def test_deactivating_a_centre_marks_it_inactive_once_and_records_it(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district
    a_district(any_db)

    # When a leaf centre is deactivated twice
    first = run("centres", "deactivate", "cbd")
    second = run("centres", "deactivate", "CBD")

    # Then it is inactive, the second time changes nothing, and it is on record once
    assert (first, second) == (Exit.OK, Exit.OK)
    assert "inactive already; nothing changed" in capsys.readouterr().out
    assert centres(any_db)["cbd"]["active"] is False
    assert [d for a, d in audit(any_db) if a == "centres_deactivate"] == [{"centre": "cbd"}]


def test_deactivating_an_unknown_centre_exits_not_found(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("centres", "deactivate", "nowhere") == Exit.NOT_FOUND
    assert "No centre has the code 'nowhere'" in capsys.readouterr().err


# --- edit -----------------------------------------------------------------------------------


def test_moving_a_centre_rewrites_the_paths_of_its_whole_subtree(any_db: str) -> None:
    # Given a district whose community has a street below it, and a second district
    a_district(any_db)
    assert run("centres", "add", "luohu", "罗湖区", "--level", "district") == Exit.OK

    # When the community is moved under the second district
    assert run("centres", "edit", "lianhua", "--parent", "luohu") == Exit.OK

    # Then it and everything below it are under the new district
    stored = centres(any_db)
    assert stored["lianhua"]["path"] == ["luohu", "lianhua"]
    assert stored["lh-1"]["path"] == ["luohu", "lianhua", "lh-1"]
    assert stored["xiangmihu"]["path"] == ["futian", "xiangmihu"]
    with Session(get_engine(any_db)) as session:
        luohu = queries.get_centre_by_code(session=session, code="luohu")
        assert luohu is not None
        moved = {c.code for c in queries.subtree_centres(session=session, centre=luohu)}
    assert moved == {"luohu", "lianhua", "lh-1"}
    assert audit(any_db)[-1] == (
        "centres_edit",
        {"centre": "lianhua", "changes": {"parent": ["futian", "luohu"]}, "moved": 2},
    )


@pytest.mark.parametrize(
    ("parent", "message"),
    [("lianhua", "cannot be its own parent"), ("lh-1", "would make a cycle")],
    ids=["itself", "below itself"],
)
def test_a_move_that_would_make_a_cycle_is_refused(
    any_db: str, capsys: pytest.CaptureFixture[str], parent: str, message: str
) -> None:
    # Given a community with a street below it
    a_district(any_db)
    before = centres(any_db)

    # When it is moved under itself or under its street
    result = run("centres", "edit", "lianhua", "--parent", parent)

    # Then it is refused and the tree is as it was
    assert result == Exit.FAILURE
    assert message in capsys.readouterr().err
    assert centres(any_db) == before


def test_editing_renames_recodes_and_relevels_a_centre(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district
    a_district(any_db)

    # When its name, code and level change
    result = run(
        "centres", "edit", "cbd", "--name", "福田中心区商圈", "--code", "ft-cbd", "--level", "市场"
    )

    # Then it has them, and keeps its place
    assert result == Exit.OK
    stored = centres(any_db)
    assert "cbd" not in stored
    assert stored["ft-cbd"] | {"path": None} == {
        "name": "福田中心区商圈",
        "level": "市场",
        "parent": "futian",
        "path": None,
        "active": True,
        "days_off": [],
    }
    assert "code cbd -> ft-cbd" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("words", "code", "message"),
    [
        (["nowhere", "--name", "x"], Exit.NOT_FOUND, "No centre has the code 'nowhere'"),
        (["cbd"], Exit.USAGE, "Nothing to change"),
        (["cbd", "--code", "LIANHUA"], Exit.FAILURE, "is taken by 莲花社区 (lianhua)"),
        (["cbd", "--code", "c b d"], Exit.USAGE, "letters, digits or '-'"),
        (["cbd", "--level", "moon"], Exit.USAGE, "--level must be one of"),
        (["cbd", "--parent", "nowhere"], Exit.NOT_FOUND, "nowhere"),
    ],
    ids=["unknown centre", "nothing", "taken code", "bad code", "bad level", "unknown parent"],
)
def test_a_bad_edit_is_refused_and_changes_nothing(
    any_db: str,
    capsys: pytest.CaptureFixture[str],
    words: list[str],
    code: Exit,
    message: str,
) -> None:
    # Given a district
    a_district(any_db)
    before = centres(any_db)

    # When an edit is wrong
    result = run("centres", "edit", *words)

    # Then it is refused with a reason and the tree is as it was
    assert result == code
    assert message in capsys.readouterr().err
    assert centres(any_db) == before


# --- days off -------------------------------------------------------------------------------


def test_days_off_are_added_removed_and_listed_with_those_inherited(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district with a day off and a community below it
    a_district(any_db)
    assert run("centres", "days-off", "futian", "add", "2026-12-24") == Exit.OK

    # When the community adds two days, removes one and lists them
    assert run("centres", "days-off", "lianhua", "add", "2026-12-31", "2027-01-04") == Exit.OK
    assert run("centres", "days-off", "lianhua", "remove", "2027-01-04") == Exit.OK
    capsys.readouterr()
    assert run("centres", "days-off", "lianhua", "list") == Exit.OK

    # Then its own day and the district's show, and each change is on record
    out = capsys.readouterr().out
    assert "centre lianhua days off: 2026-12-31" in out
    assert "inherited from the centres above it: 2026-12-24" in out
    assert centres(any_db)["lianhua"]["days_off"] == ["2026-12-31"]
    assert [(a, d["days"]) for a, d in audit(any_db) if a.startswith("centres_days_off")] == [
        ("centres_days_off_add", ["2026-12-24"]),
        ("centres_days_off_add", ["2026-12-31", "2027-01-04"]),
        ("centres_days_off_remove", ["2027-01-04"]),
    ]


@pytest.mark.parametrize(
    ("words", "code", "message"),
    [
        (["lianhua", "add", "2026-02-30"], Exit.USAGE, "2026-02-30"),
        (["lianhua", "add"], Exit.USAGE, "Name the dates"),
        (["lianhua", "clear"], Exit.USAGE, "add, remove or list"),
        (["nowhere", "add", "2026-12-24"], Exit.NOT_FOUND, "nowhere"),
    ],
    ids=["not a date", "no date", "unknown action", "unknown centre"],
)
def test_bad_days_off_are_refused_and_change_nothing(
    any_db: str,
    capsys: pytest.CaptureFixture[str],
    words: list[str],
    code: Exit,
    message: str,
) -> None:
    # Given a district
    a_district(any_db)

    # When a day off is given wrong
    result = run("centres", "days-off", *words)

    # Then it is refused and no centre has a day off
    assert result == code
    assert message in capsys.readouterr().err
    assert all(centre["days_off"] == [] for centre in centres(any_db).values())


# --- links ----------------------------------------------------------------------------------


def test_links_print_every_entry_point_and_say_telegram_is_off(
    any_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a community and a public URL, Telegram off
    a_district(any_db)
    monkeypatch.setenv("REDESK_PUBLIC_URL", "https://desk.example.cn/")
    bot_runtime.reset()

    # When its links are printed (its code typed in another case)
    assert run("centres", "links", "LIANHUA") == Exit.OK

    # Then the web link, the WeChat scene and the poster command are there, and no Telegram
    out = capsys.readouterr().out
    assert "web: https://desk.example.cn/desk?centre=lianhua" in out
    assert "telegram: none (Telegram is off: REDESK_TELEGRAM_TOKEN is not set)" in out
    assert "wechat: QR scene lianhua" in out
    assert "redesk centres qrcode lianhua --out lianhua.png" in out


def test_links_name_the_bot_from_the_setting_or_from_telegram(
    any_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.channels import telegram
    from tests.fakes.telegram import FakeTelegram

    # Given a district, Telegram on against the fake, and no public URL
    a_district(any_db)
    with FakeTelegram() as fake:
        monkeypatch.setenv("REDESK_TELEGRAM_TOKEN", fake.token)
        monkeypatch.setenv("REDESK_TELEGRAM_API_URL", fake.url)
        bot_runtime.reset()
        try:
            # When the links are printed without and then with the bot's username set
            assert run("centres", "links", "cbd") == Exit.OK
            asked = sum(1 for call in fake.calls if call.method == "getMe")
            monkeypatch.setenv("REDESK_TELEGRAM_BOT_USERNAME", "@futian_desk_bot")
            bot_runtime.reset()
            assert run("centres", "links", "cbd") == Exit.OK
        finally:
            telegram.close_clients()

        # Then the first asked Telegram (getMe), the second took the setting
        out = capsys.readouterr().out
        assert "telegram: https://t.me/redesk_bot?start=cbd" in out
        assert "telegram: https://t.me/futian_desk_bot?start=cbd" in out
        assert "web: http://127.0.0.1:8000/desk?centre=cbd" in out
        assert asked >= 1
        assert sum(1 for call in fake.calls if call.method == "getMe") == asked


def test_links_of_an_unknown_centre_exit_not_found(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("centres", "links", "nowhere") == Exit.NOT_FOUND
    assert "nowhere" in capsys.readouterr().err


# --- QR codes -------------------------------------------------------------------------------


@pytest.fixture
def fake_wechat(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake WeChat API, named by the REDESK_WECHAT_* settings."""
    from bot.channels import wechat
    from tests.fakes.wechat import FakeWeChat

    with FakeWeChat() as fake:
        for name, value in fake.settings_env().items():
            monkeypatch.setenv(name, value)
        bot_runtime.reset()
        try:
            yield fake
        finally:
            wechat.close_clients()


def test_qrcode_saves_the_permanent_code_of_the_centre_s_scene_as_a_png(
    any_db: str, fake_wechat: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fakes.wechat import PNG_MAGIC, qrcode_png

    # Given a community
    a_district(any_db)

    # When its QR code is made
    result = run("centres", "qrcode", "lianhua", "--out", "poster.png")

    # Then WeChat was asked for a permanent code of scene "lianhua" and its image is the file
    assert result == Exit.OK
    created = [call for call in fake_wechat.calls if call.path == "qrcode/create"]
    assert [call.body for call in created] == [
        {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "lianhua"}}}
    ]
    code = fake_wechat.qrcode_of("lianhua")
    assert code is not None and code.expires_at is None
    shown = [call for call in fake_wechat.calls if call.path == "showqrcode"]
    assert [call.params["ticket"] for call in shown] == [code.ticket]
    data = Path("poster.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert data == qrcode_png(code.url)
    assert f"it encodes {code.url}" in capsys.readouterr().out
    # And it is on record
    assert audit(any_db)[-1][0] == "centres_qrcode"
    assert audit(any_db)[-1][1] | {"file": None} == {
        "centre": "lianhua",
        "ticket": code.ticket,
        "url": code.url,
        "file": None,
    }


def test_qrcode_refuses_an_existing_file_without_force_and_replaces_it_with(
    any_db: str, fake_wechat: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a community and a file where its poster would go
    a_district(any_db)
    write("poster.png", "old")

    # When the QR code is made without and then with --force
    refused = run("centres", "qrcode", "cbd", "--out", "poster.png")
    asked = fake_wechat.count("qrcode/create")
    forced = run("centres", "qrcode", "cbd", "--out", "poster.png", "--force")

    # Then the first asked nothing of WeChat, the second replaced the file
    assert (refused, forced) == (Exit.USAGE, Exit.OK)
    assert asked == 0
    assert "exists; pass --force" in capsys.readouterr().err
    assert Path("poster.png").read_bytes() != b"old"


def test_qrcode_with_wechat_off_exits_config_and_writes_nothing(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a community and WeChat off
    a_district(any_db)

    # When its QR code is asked for
    result = run("centres", "qrcode", "cbd", "--out", "cbd.png")

    # Then the message says what to set
    assert result == Exit.CONFIG
    assert "WeChat is off" in capsys.readouterr().err
    assert not Path("cbd.png").exists()


def test_qrcode_that_wechat_refuses_exits_failure_with_its_error_and_writes_nothing(
    any_db: str, fake_wechat: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a community, and WeChat answering an error to the next call
    a_district(any_db)
    fake_wechat.fail_next(errcode=45009, paths="qrcode/create")

    # When its QR code is asked for
    result = run("centres", "qrcode", "cbd", "--out", "cbd.png")

    # Then WeChat's error code is in the message, no file and no record
    assert result == Exit.FAILURE
    assert "WeChat refused the QR code: 45009" in capsys.readouterr().err
    assert not Path("cbd.png").exists()
    assert "centres_qrcode" not in [action for action, _ in audit(any_db)]


def test_qrcode_with_wechat_unreachable_exits_unavailable(
    any_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.channels import wechat
    from tests.e2e.conftest import free_port

    # Given a community and WeChat's API on a port nobody listens on
    a_district(any_db)
    for name, value in {
        "REDESK_WECHAT_APP_ID": "wx0123",
        "REDESK_WECHAT_APP_SECRET": "s",
        "REDESK_WECHAT_TOKEN": "t",
        "REDESK_WECHAT_API_URL": f"http://127.0.0.1:{free_port()}",
    }.items():
        monkeypatch.setenv(name, value)
    bot_runtime.reset()

    # When its QR code is asked for
    try:
        result = run("centres", "qrcode", "cbd", "--out", "cbd.png")
    finally:
        wechat.close_clients()

    # Then it says WeChat could not be reached
    assert result == Exit.UNAVAILABLE
    assert "could not be reached" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("words", "code", "message"),
    [
        (["nowhere", "--out", "x.png"], Exit.NOT_FOUND, "nowhere"),
        (["cbd", "--out", "x.jpg"], Exit.USAGE, "must end in .png"),
    ],
    ids=["unknown centre", "not png"],
)
def test_qrcode_of_bad_input_asks_nothing_of_wechat(
    any_db: str,
    fake_wechat: Any,
    capsys: pytest.CaptureFixture[str],
    words: list[str],
    code: Exit,
    message: str,
) -> None:
    # Given a district
    a_district(any_db)

    # When the QR code is asked for wrongly
    result = run("centres", "qrcode", *words)

    # Then it is refused before WeChat is asked
    assert result == code
    assert message in capsys.readouterr().err
    assert fake_wechat.count("qrcode/create") == 0


# --- invitations, departments and categories in a centre ------------------------------------


def centre_id(url: str, code: str) -> int:
    """The id of the centre with this code."""
    with Session(get_engine(url)) as session:
        centre = queries.get_centre_by_code(session=session, code=code)
        assert centre is not None and centre.id is not None
        return centre.id


def centre_ids(url: str) -> dict[str, int]:
    """Every centre's id by code."""
    return {code: centre_id(url, code) for code in centres(url)}


def invitation_code(capsys: pytest.CaptureFixture[str]) -> str:
    """The code `redesk invite` printed on its last line."""
    return capsys.readouterr().out.strip().splitlines()[-1]


def invitations(url: str) -> list[tuple[str, int | None, int | None]]:
    """Every invitation: (role, department id, centre id)."""
    with Session(get_engine(url)) as session:
        return [
            (row.role, row.department_id, row.centre_id)
            for row in session.exec(select(Invitation).order_by(col(Invitation.id))).all()
        ]


def test_an_invitation_names_its_centre_and_binding_puts_the_person_there(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district
    a_district(any_db)

    # When a worker of a community and a worker of no centre named are invited and bind
    assert run("invite", "worker", "--centre", "LIANHUA") == Exit.OK
    out = capsys.readouterr().out
    community = out.strip().splitlines()[-1]
    assert run("invite", "worker") == Exit.OK
    default = invitation_code(capsys)
    desk = desk_on(any_db)
    first, second = desk.identity("王书记"), desk.identity("李书记")
    first.send(f"绑定 {community}")
    second.send(f"绑定 {default}")

    # Then each is a worker of their centre; the output named it
    assert "in 莲花社区 (lianhua)" in out
    assert (first.person().role, first.person().centre_id) == (
        Role.WORKER,
        centre_id(any_db, "lianhua"),
    )
    assert second.person().centre_id == centre_id(any_db, "default")


def test_department_staff_are_invited_to_a_department_of_the_centre_or_one_above(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district department, and a department of the same name of a 商圈 (a sibling)
    a_district(any_db)
    assert run("departments", "add", "城管执法", "--centre", "futian") == Exit.OK
    assert run("departments", "add", "市场监管", "--centre", "cbd") == Exit.OK
    capsys.readouterr()

    # When staff of the district's department are invited for a street two levels below
    assert run("invite", "department", "城管执法", "--centre", "lh-1") == Exit.OK
    code = invitation_code(capsys)
    staff = desk_on(any_db).identity("赵科长")
    staff.send(f"绑定 {code}")
    # And staff of the 商圈's department are invited for a community beside it
    refused = run("invite", "department", "市场监管", "--centre", "lianhua")

    # Then the first are that department's staff, in the street's centre; the second is refused
    ids = centre_ids(any_db)
    with Session(get_engine(any_db)) as session:
        district_unit = queries.department_in_centres(
            session=session, name="城管执法", centre_ids=[ids["futian"]]
        )
    assert district_unit is not None
    person = staff.person()
    assert (person.role, person.department_id, person.centre_id) == (
        Role.DEPARTMENT,
        district_unit.id,
        centre_id(any_db, "lh-1"),
    )
    assert refused == Exit.NOT_FOUND
    assert "No active department is called '市场监管' for the centre lianhua" in (
        capsys.readouterr().err
    )
    assert len(invitations(any_db)) == 1


@pytest.mark.parametrize("code", ["nowhere", "cbd"], ids=["unknown", "inactive"])
def test_an_invitation_to_an_unknown_or_inactive_centre_exits_not_found_and_stores_nothing(
    any_db: str, capsys: pytest.CaptureFixture[str], code: str
) -> None:
    # Given a district whose 商圈 is inactive
    a_district(any_db)
    assert run("centres", "deactivate", "cbd") == Exit.OK
    capsys.readouterr()

    # When a worker is invited there
    result = run("invite", "worker", "--centre", code)

    # Then it is refused and no code is made
    assert result == Exit.NOT_FOUND
    captured = capsys.readouterr()
    assert f"No active centre has the code {code!r}" in captured.err
    assert captured.out == ""
    assert invitations(any_db) == []


def test_a_code_of_a_centre_deactivated_since_does_not_bind(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a worker's code for a 商圈 that was deactivated afterwards
    a_district(any_db)
    assert run("invite", "worker", "--centre", "cbd") == Exit.OK
    code = invitation_code(capsys)
    assert run("centres", "deactivate", "cbd") == Exit.OK

    # When someone binds with it
    someone = desk_on(any_db).identity("周书记")
    someone.send(f"绑定 {code}")

    # Then they stay a resident of no centre
    assert (someone.person().role, someone.person().centre_id) == (Role.REQUESTER, None)


def test_departments_are_named_once_per_centre_and_listed_with_it(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district
    a_district(any_db)

    # When a name is added in two centres, then again in one of them, then in an unknown one
    assert run("departments", "add", "城管执法", "--centre", "futian") == Exit.OK
    assert run("departments", "add", "城管执法") == Exit.OK
    again = run("departments", "add", "城管执法", "--centre", "FUTIAN")
    unknown = run("departments", "add", "交警", "--centre", "nowhere")
    capsys.readouterr()
    assert run("departments", "list") == Exit.OK

    # Then the first two are there, each in its centre, and the others are refused
    assert (again, unknown) == (Exit.FAILURE, Exit.NOT_FOUND)
    ids = centre_ids(any_db)
    with Session(get_engine(any_db)) as session:
        rows = session.exec(select(Department).order_by(col(Department.id))).all()
        assert [(d.name, d.centre_id) for d in rows] == [
            ("城管执法", ids["futian"]),
            ("城管执法", ids["default"]),
        ]
    out = capsys.readouterr().out
    assert "futian" in out and "default" in out


def test_a_departments_import_puts_each_row_in_its_centre_or_reports_an_unknown_one(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district and a file naming centres, one of them unknown
    a_district(any_db)
    write(
        "departments.csv",
        "name,kind,centre\n城管执法,职能部门,futian\n城管执法,职能部门,\n交警,职能部门,nowhere\n",
    )

    # When it is imported
    bad = run("departments", "import", "departments.csv")

    # Then the unknown centre's line is reported and nothing is stored
    assert bad == Exit.FAILURE
    err = capsys.readouterr().err
    assert reported_lines(err) == [4]
    assert "centre 'nowhere' does not exist" in err
    with Session(get_engine(any_db)) as session:
        assert session.exec(select(Department)).all() == []

    # When the bad row is dropped, the same name lands in both centres
    write("departments.csv", "name,kind,centre\n城管执法,职能部门,futian\n城管执法,职能部门,\n")
    assert run("departments", "import", "departments.csv") == Exit.OK
    with Session(get_engine(any_db)) as session:
        placed = {d.centre_id for d in session.exec(select(Department)).all()}
    assert placed == {centre_id(any_db, "futian"), centre_id(any_db, "default")}


def test_categories_apply_everywhere_or_in_a_centre_and_route_to_a_department_above(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district department and a 商圈 department
    a_district(any_db)
    assert run("departments", "add", "城管执法", "--centre", "futian") == Exit.OK
    assert run("departments", "add", "市场监管", "--centre", "cbd") == Exit.OK

    # When a community's category routes to the district's department, one everywhere is added,
    # and a community's category routes to the 商圈's department
    community = run(
        "categories",
        "add",
        "占道经营",
        "--keywords",
        "摆摊|占道",
        "--route",
        "department",
        "--department",
        "城管执法",
        "--centre",
        "lianhua",
    )
    everywhere = run("categories", "add", "占道经营", "--keywords", "占道")
    sibling = run(
        "categories",
        "add",
        "食品安全",
        "--route",
        "department",
        "--department",
        "市场监管",
        "--centre",
        "lianhua",
    )
    twice = run("categories", "add", "占道经营", "--centre", "lianhua")

    # Then the first two are stored, the district department is the community category's, and
    # the 商圈's department and a second 占道经营 of the community are refused
    assert (community, everywhere, sibling, twice) == (
        Exit.OK,
        Exit.OK,
        Exit.FAILURE,
        Exit.FAILURE,
    )
    err = capsys.readouterr().err
    assert "department '市场监管' does not exist" in err
    assert "exists already in 莲花社区 (lianhua)" in err
    ids = centre_ids(any_db)
    with Session(get_engine(any_db)) as session:
        rows = session.exec(select(Category).order_by(col(Category.id))).all()
        unit = session.exec(select(Department).where(Department.name == "城管执法")).one()
        assert [(c.name, c.centre_id, c.department_id, c.keywords) for c in rows] == [
            ("占道经营", ids["lianhua"], unit.id, ["摆摊", "占道"]),
            ("占道经营", None, None, ["占道"]),
        ]
    assert [d for a, d in audit(any_db) if a == "categories_add"] == [
        {"category": "占道经营", "centre": "lianhua"},
        {"category": "占道经营", "centre": None},
    ]


def test_a_categories_import_with_a_centre_puts_every_row_there(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a district and a file of categories
    a_district(any_db)
    write("categories.csv", "name,keywords\n路灯,路灯|灯\n噪音,噪音\n")

    # When it is imported for the 商圈, for no centre, and for an unknown centre
    assert run("categories", "import", "categories.csv", "--centre", "cbd") == Exit.OK
    assert run("categories", "import", "categories.csv") == Exit.OK
    unknown = run("categories", "import", "categories.csv", "--centre", "nowhere")
    capsys.readouterr()
    assert run("categories", "list") == Exit.OK

    # Then each name is there once in the 商圈 and once everywhere; the unknown centre is refused
    assert unknown == Exit.NOT_FOUND
    ids = centre_ids(any_db)
    with Session(get_engine(any_db)) as session:
        rows = session.exec(select(Category).order_by(col(Category.id))).all()
        assert [(c.name, c.centre_id) for c in rows] == [
            ("路灯", ids["cbd"]),
            ("噪音", ids["cbd"]),
            ("路灯", None),
            ("噪音", None),
        ]
    out = capsys.readouterr().out
    assert "cbd" in out and "全部" in out


# --- the WeChat client's QR code calls ------------------------------------------------------


def test_the_client_makes_a_permanent_code_and_reads_its_image_from_the_api_base() -> None:
    from bot.channels import wechat
    from bot.channels.wechat.client import get_client
    from tests.fakes.wechat import FakeWeChat, qrcode_png
    from tests.utils.settings import make_settings

    # Given the client on the fake
    with FakeWeChat() as fake:
        settings = make_settings(
            _env_file=None,
            redis_url=None,
            wechat_app_id=fake.appid,
            wechat_app_secret=fake.app_secret,
            wechat_token=fake.token,
            wechat_api_url=fake.url,
        )
        client = get_client(settings)
        try:
            # When a permanent code is made and its image fetched
            answer = client.permanent_qrcode("lianhua")
            image = client.qrcode_image(answer["ticket"])
        finally:
            wechat.close_clients()

        # Then both went to the fake, and the image is the code's
        assert image == qrcode_png(answer["url"])
        assert [call.path for call in fake.calls] == ["token", "qrcode/create", "showqrcode"]


def test_an_image_the_client_cannot_have_raises_with_the_status() -> None:
    from wechatpy.exceptions import WeChatClientException

    from bot.channels import wechat
    from bot.channels.wechat.client import get_client
    from tests.fakes.wechat import FakeWeChat
    from tests.utils.settings import make_settings

    # Given the client on the fake
    with FakeWeChat() as fake:
        settings = make_settings(
            _env_file=None,
            redis_url=None,
            wechat_app_id=fake.appid,
            wechat_app_secret=fake.app_secret,
            wechat_token=fake.token,
            wechat_api_url=fake.url,
        )
        try:
            # When the image of a ticket WeChat does not know is asked for
            with pytest.raises(WeChatClientException) as refused:
                get_client(settings).qrcode_image("no-such-ticket")
        finally:
            wechat.close_clients()

    # Then the error names the answer
    assert "showqrcode: HTTP 404" in str(refused.value.errmsg)


def test_on_wechat_s_own_servers_the_image_comes_from_mp_weixin_qq_com() -> None:
    from bot.channels import wechat
    from bot.channels.wechat.client import SHOW_QRCODE_URL, get_client
    from tests.utils.settings import make_settings

    # Given the client on WeChat's own API base (the default)
    settings = make_settings(
        _env_file=None,
        redis_url=None,
        wechat_app_id="wx0123",
        wechat_app_secret="s",
        wechat_token="t",
    )
    try:
        # When it is made
        client = get_client(settings)

        # Then QR code images are fetched where WeChat shows them
        assert (
            client._show_qrcode_url
            == SHOW_QRCODE_URL
            == ("https://mp.weixin.qq.com/cgi-bin/showqrcode")
        )
    finally:
        wechat.close_clients()


def test_create_invitation_names_an_unknown_centre_as_typed(any_db: str) -> None:
    from datetime import UTC, datetime

    from workflow import service
    from workflow.errors import UnknownCentre

    # When an invitation is made for a centre that does not exist
    with Session(get_engine(any_db)) as session:
        with pytest.raises(UnknownCentre) as refused:
            service.create_invitation(
                session=session,
                role="worker",
                department_name=None,
                now=datetime(2026, 12, 1, tzinfo=UTC),
                centre_code=" Nowhere ",
            )

    # Then the error carries what was typed, and nothing is stored
    assert refused.value.typed == " Nowhere "
    assert invitations(any_db) == []


def test_a_department_name_of_several_centres_is_deactivated_by_naming_its_centre(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 城管执法 in the district and in the default centre
    a_district(any_db)
    assert run("departments", "add", "城管执法", "--centre", "futian") == Exit.OK
    assert run("departments", "add", "城管执法") == Exit.OK

    # When it is deactivated without, then with the district named
    ambiguous = run("departments", "deactivate", "城管执法")
    named = run("departments", "deactivate", "城管执法", "--centre", "futian")

    # Then the first is refused listing both centres, the second deactivates the district's only
    assert (ambiguous, named) == (Exit.USAGE, Exit.OK)
    assert "2 departments are called '城管执法' (of futian, default)" in capsys.readouterr().err
    ids = centre_ids(any_db)
    with Session(get_engine(any_db)) as session:
        active = {d.centre_id: d.active for d in session.exec(select(Department)).all()}
    assert active == {ids["futian"]: False, ids["default"]: True}
