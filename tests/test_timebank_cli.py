"""admin_scripts/timebank via `redesk hours adjust` and `redesk rewards add|list|disable`, on
SQLite and PostgreSQL: what each verb writes, its audit row, and that every refusal exits with
its code and writes nothing."""

from __future__ import annotations

import pytest
from sqlmodel import Session, col, select

from admin_scripts.cli import Exit, main
from admin_scripts.timebank import BadValue, parse_hours
from storage.db import get_engine
from storage.models import AdminAudit, HourMovement, MovementKind, Person, Reward, Role
from tests.utils import timebank as tb


def audits(url: str) -> list[tuple[str, dict[str, object]]]:
    with Session(get_engine(url)) as session:
        rows = session.exec(select(AdminAudit).order_by(col(AdminAudit.id))).all()
        return [(row.action, row.detail) for row in rows]


def rewards(url: str) -> list[tuple[str, int, int | None, bool]]:
    with Session(get_engine(url)) as session:
        rows = session.exec(select(Reward).order_by(col(Reward.id))).all()
        return [(row.name, row.minutes, row.stock, row.active) for row in rows]


def movements(url: str) -> list[HourMovement]:
    with Session(get_engine(url)) as session:
        return list(session.exec(select(HourMovement).order_by(col(HourMovement.id))).all())


@pytest.fixture
def volunteer(any_db: str) -> Person:
    return tb.person(get_engine(any_db), Role.REQUESTER, name="李四")


def test_an_admin_adjustment_is_a_movement_without_recorder_and_is_audited(
    any_db: str, volunteer: Person, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an admin adds two hours, then takes half an hour back
    assert main(["hours", "adjust", "李四", "2", "--reason", "补录三月活动"]) == Exit.OK
    assert main(["hours", "adjust", str(volunteer.id), "-0.5", "--reason", "多记"]) == Exit.OK

    # Then there are two adjustments with no recorder, the balance is 1.5 h, both audited
    out = capsys.readouterr().out
    assert "balance 2 h" in out and "balance 1.5 h" in out
    rows = movements(any_db)
    assert [(m.kind, m.minutes, m.recorded_by_id) for m in rows] == [
        (MovementKind.ADJUST, 120, None),
        (MovementKind.ADJUST, 30, None),
    ]
    assert tb.balance_of(get_engine(any_db), volunteer) == 90
    logged = audits(any_db)
    assert [action for action, _ in logged] == ["hours_adjust", "hours_adjust"]
    assert logged[1][1]["minutes"] == -30 and logged[1][1]["reason"] == "多记"
    assert logged[1][1]["movement"] == rows[1].id


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["nobody", "2", "--reason", "x"], Exit.NOT_FOUND, "Nobody has the id or name"),
        (["李四", "abc", "--reason", "x"], Exit.USAGE, "must be a number"),
        (["李四", "0", "--reason", "x"], Exit.USAGE, "must not be zero"),
        (["李四", "0.01", "--reason", "x"], Exit.USAGE, "whole number of minutes"),
        (["李四", "2"], Exit.USAGE, "--reason is required"),
        (["李四", "2", "--reason", "  "], Exit.USAGE, "--reason is required"),
        (["李四", "-1", "--reason", "x"], Exit.FAILURE, "cannot be taken back"),
        (["李四", "2", "--reason", "x", "--centre", "nope"], Exit.NOT_FOUND, "No active centre"),
    ],
)
def test_a_bad_adjustment_exits_with_its_code_and_writes_nothing(
    any_db: str,
    volunteer: Person,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: Exit,
    says: str,
) -> None:
    assert main(["hours", "adjust", *args]) == code
    assert says in capsys.readouterr().err
    assert movements(any_db) == [] and audits(any_db) == []


def test_an_ambiguous_name_is_refused_and_names_the_candidates(
    any_db: str, volunteer: Person, capsys: pytest.CaptureFixture[str]
) -> None:
    tb.person(get_engine(any_db), name="李四")
    assert main(["hours", "adjust", "李四", "1", "--reason", "x"]) == Exit.FAILURE
    assert "Name one by its id" in capsys.readouterr().err
    assert movements(any_db) == []


def test_rewards_are_added_listed_and_disabled(
    any_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a community centre under the default one
    tb.centre(get_engine(any_db), "c1")

    # When rewards are added to each, one is listed and one disabled
    assert main(["rewards", "add", "保温杯", "--hours", "1.5", "--stock", "20"]) == Exit.OK
    assert main(["rewards", "add", "理发", "--hours", "1", "--centre", "c1"]) == Exit.OK
    assert main(["rewards", "list"]) == Exit.OK
    listed = capsys.readouterr().out
    assert main(["rewards", "disable", "保温杯"]) == Exit.OK
    assert main(["rewards", "disable", "保温杯"]) == Exit.OK

    # Then
    assert "保温杯" in listed and "理发" in listed and "unlimited" in listed and "1.5" in listed
    assert "was disabled already" in capsys.readouterr().out
    assert rewards(any_db) == [("保温杯", 90, 20, False), ("理发", 60, None, True)]
    assert [action for action, _ in audits(any_db)] == [
        "reward_add",
        "reward_add",
        "reward_disable",
    ]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["add", "", "--hours", "1"], Exit.USAGE, "NAME must be"),
        (["add", "杯" * 101, "--hours", "1"], Exit.USAGE, "NAME must be"),
        (["add", "杯", "--hours", "-1"], Exit.USAGE, "must be a number"),
        (["add", "杯", "--hours", "0"], Exit.USAGE, "must not be zero"),
        (["add", "杯", "--hours", "1", "--stock", "-1"], Exit.USAGE, "--stock"),
        (["add", "杯", "--hours", "1", "--centre", "nope"], Exit.NOT_FOUND, "No active centre"),
        (["add", "保温杯", "--hours", "1"], Exit.FAILURE, "already"),
        (["disable", "无此物"], Exit.NOT_FOUND, "no reward called"),
    ],
)
def test_a_bad_reward_verb_exits_with_its_code_and_writes_nothing(
    any_db: str, capsys: pytest.CaptureFixture[str], args: list[str], code: Exit, says: str
) -> None:
    assert main(["rewards", "add", "保温杯", "--hours", "2"]) == Exit.OK
    before = (rewards(any_db), audits(any_db))
    assert main(["rewards", *args]) == code
    assert says in capsys.readouterr().err
    assert (rewards(any_db), audits(any_db)) == before


def test_an_empty_catalogue_says_so(any_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rewards", "list"]) == Exit.OK
    assert "no rewards yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("typed", "minutes"), [("2", 120), ("+1.5", 90), ("-0.25", -15), ("1000", 60000)]
)
def test_hours_are_read_as_whole_minutes(typed: str, minutes: int) -> None:
    assert parse_hours(typed, signed=True) == minutes


@pytest.mark.parametrize("typed", ["", "1e3", "1,5", "--1", "1000.5", "½", "0.001"])
def test_malformed_hours_are_refused(typed: str) -> None:
    with pytest.raises(BadValue):
        parse_hours(typed, signed=True)
