"""Migration 0010 (centres) on a database with data in every table, on SQLite and PostgreSQL:
upgrading from 0009 loses nothing and puts everything in the default centre; downgrading gives
0009's data back. Migration 0011 (staff accounts): every bound staff person becomes an account,
nothing else changes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import JSON, Boolean, DateTime, Integer, MetaData, Table, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session
from sqlmodel import select as select_models

from storage import queries
from storage.db import alembic_config, get_engine, session_scope
from storage.models import Centre, Department
from tests.conftest import fresh_pg_database

#: The revision before centres, and the one that brings them.
BEFORE, CENTRES = "0009", "0010"

#: When the rows were made.
T0 = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)

#: Request states at 0009, and whether each is open (the tick must look at it).
STATES = {
    "new": True,
    "handling": True,
    "forwarded": True,
    "dept_handling": True,
    "review": True,
    "replied": True,
    "closed": False,
    "rejected": False,
    "cancelled": False,
}

#: Roles at 0009, one person each.
ROLES = ("requester", "worker", "leader", "department", "group")


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0009(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database brought to revision 0009 and no further."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        command.upgrade(alembic_config(url), BEFORE)
        yield url
        get_engine(url).dispose()
        return
    with fresh_pg_database("redesk_migrate") as url:
        command.upgrade(alembic_config(url), BEFORE)
        yield url


def reflect(engine: Engine) -> MetaData:
    """The tables as the database has them now (alembic's own table left out)."""
    metadata = MetaData()
    metadata.reflect(engine)
    if "alembic_version" in metadata.tables:
        metadata.remove(metadata.tables["alembic_version"])
    return metadata


def filler(column: Any, ids: dict[str, list[int]], index: int) -> Any:
    """A value for a required column that a row does not set: the first row of a referenced
    table, else something of the column's type (unique per row)."""
    for foreign in column.foreign_keys:
        return ids[foreign.column.table.name][0]
    kind = column.type
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return index
    if isinstance(kind, DateTime):
        return T0
    if isinstance(kind, JSON):
        return {}
    return f"{column.name}-{index}"


def insert(
    connection: Connection,
    table: Table,
    ids: dict[str, list[int]],
    rows: list[dict[str, Any]],
) -> None:
    """Inserts `rows` into `table`, filling its other required columns; keeps the new ids."""
    for index, given in enumerate(rows, start=1):
        row = dict(given)
        for column in table.columns:
            if column.name in row or column.nullable or column.server_default is not None:
                continue
            if column.primary_key and isinstance(column.type, Integer) and column.autoincrement:
                continue
            row[column.name] = filler(column, ids, index)
        result = connection.execute(table.insert().values(**row))
        if "id" in table.columns:
            key = result.inserted_primary_key
            ids.setdefault(table.name, []).append(int(key[0]) if key else int(row["id"]))


def load(url: str) -> dict[str, list[int]]:
    """Rows in every table of 0009: departments, categories, a person of every role,
    invitations, requests in every state with events and outbox rows, and one row at least in
    each other table. Returns the ids made, by table."""
    engine = get_engine(url)
    metadata = reflect(engine)
    ids: dict[str, list[int]] = {}
    day = timedelta(days=1)
    explicit: dict[str, list[dict[str, Any]]] = {
        "departments": [
            {"name": "城管执法", "kind": "职能部门", "active": True, "created_at": T0},
            {"name": "市场监管", "kind": "职能部门", "active": False, "created_at": T0},
        ],
    }
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            name = table.name
            if name == "departments":
                insert(connection, table, ids, explicit[name])
            elif name == "categories":
                insert(
                    connection,
                    table,
                    ids,
                    [
                        {
                            "name": "市容环境",
                            "keywords": ["路灯"],
                            "route": "department",
                            "department_id": ids["departments"][0],
                            "is_fallback": False,
                        },
                        {"name": "其他", "keywords": [], "route": "committee", "is_fallback": True},
                    ],
                )
            elif name == "people":
                insert(
                    connection,
                    table,
                    ids,
                    [
                        {
                            "channel": "web",
                            "external_id": f"{role}-1",
                            "display_name": role,
                            "role": role,
                            "department_id": ids["departments"][0]
                            if role == "department"
                            else None,
                            "created_at": T0,
                        }
                        for role in ROLES
                    ],
                )
            elif name == "invitations":
                insert(
                    connection,
                    table,
                    ids,
                    [
                        {
                            "code_hash": "a" * 64,
                            "role": "worker",
                            "created_at": T0,
                            "expires_at": T0 + 7 * day,
                        },
                        {
                            "code_hash": "b" * 64,
                            "role": "department",
                            "department_id": ids["departments"][0],
                            "created_at": T0,
                            "expires_at": T0 + 7 * day,
                            "used_at": T0 + day,
                            "used_by_id": ids["people"][3],
                        },
                    ],
                )
            elif name == "requests":
                insert(
                    connection,
                    table,
                    ids,
                    [
                        {
                            "number": f"SQ-20261130-{index:04d}",
                            "requester_id": ids["people"][0],
                            "channel": "web",
                            "text": f"第{index}件：路灯坏了",
                            "state": state,
                            "category_id": ids["categories"][0],
                            "department_id": ids["departments"][0]
                            if state in ("forwarded", "dept_handling")
                            else None,
                            "created_at": T0,
                            "updated_at": T0 + index * timedelta(hours=1),
                        }
                        for index, state in enumerate(STATES, start=1)
                    ],
                )
            elif name == "events":
                insert(
                    connection,
                    table,
                    ids,
                    [
                        {
                            "request_id": request_id,
                            "actor_id": ids["people"][1],
                            "action": "submit",
                            "to_state": "new",
                            "created_at": T0,
                        }
                        for request_id in ids["requests"]
                    ]
                    + [
                        {
                            "request_id": None,
                            "actor_id": ids["people"][1],
                            "action": "bind",
                            "note": "worker",
                            "created_at": T0,
                        }
                    ],
                )
            elif name == "outbox":
                insert(
                    connection,
                    table,
                    ids,
                    [
                        {
                            "person_id": ids["people"][1],
                            "request_id": request_id,
                            "key": "card.new",
                            "params": {},
                            "status": "pending",
                            "idempotency_key": f"card.new:{request_id}",
                            "created_at": T0,
                        }
                        for request_id in ids["requests"][:3]
                    ],
                )
            else:
                insert(connection, table, ids, [{}])
    return ids


def columns_of(engine: Engine) -> dict[str, list[str]]:
    """Each table's columns, as the database has them now."""
    return {name: [c.name for c in table.columns] for name, table in reflect(engine).tables.items()}


def snapshot(url: str, columns: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables in `columns`, by those columns, in primary key order."""
    engine = get_engine(url)
    metadata = reflect(engine)
    rows: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for name, names in columns.items():
            table = metadata.tables[name]
            order = list(table.primary_key.columns) or [table.c[names[0]]]
            result = connection.execute(select(*(table.c[c] for c in names)).order_by(*order))
            rows[name] = [dict(row._mapping) for row in result]
    return rows


def test_upgrading_from_0009_keeps_every_row_and_puts_it_in_the_default_centre(
    url_at_0009: str,
) -> None:
    # Given a database at 0009 with data in every table
    loaded = load(url_at_0009)
    engine = get_engine(url_at_0009)
    old = columns_of(engine)
    before = snapshot(url_at_0009, old)
    assert all(before.values()), "a table was left empty"

    # When it is upgraded to the newest revision
    command.upgrade(alembic_config(url_at_0009), "head")

    # Then every row of every table is as it was
    assert snapshot(url_at_0009, old) == before
    # And there is one centre, the default one, holding every department, person, invitation
    # and request; categories are of no centre
    with Session(engine) as session:
        centres = list(session.exec(select_models(Centre)).all())
        assert [(c.code, c.name, c.level, c.is_default, c.active) for c in centres] == [
            ("default", "党群服务中心", "社区", True, True)
        ]
        default = centres[0]
        assert default.path == f"/{default.id}/" and default.parent_id is None
        assert default.days_off == []
    metadata = reflect(engine)
    with engine.connect() as connection:
        for name in ("departments", "people", "invitations", "requests"):
            held = connection.execute(select(metadata.tables[name].c.centre_id)).scalars().all()
            assert held and set(held) == {default.id}, name
        categories = metadata.tables["categories"]
        assert set(connection.execute(select(categories.c.centre_id)).scalars()) == {None}
        # And the tick looks next at every open request, at its last change, and at no other
        requests = metadata.tables["requests"]
        ticks = {
            row.state: (row.tick_at, row.updated_at)
            for row in connection.execute(
                select(requests.c.state, requests.c.tick_at, requests.c.updated_at)
            )
        }
    assert set(ticks) == set(STATES)
    for state, is_open in STATES.items():
        tick_at, updated_at = ticks[state]
        assert (tick_at == updated_at) if is_open else (tick_at is None), state
    # And department names are still found, nearest first from the default centre
    with Session(engine) as session:
        for name in ("城管执法", "市场监管"):
            found = queries.department_in_centres(
                session=session, name=name, centre_ids=[*queries.ancestor_ids(default), None]
            )
            assert found is not None and found.name == name
            assert queries.get_department_by_name(session=session, name=name) == found
        assert session.get(Department, loaded["departments"][0]) is not None


def test_downgrading_0010_gives_back_the_data_of_0009(url_at_0009: str) -> None:
    # Given a database at 0009 with data in every table, upgraded to 0010
    load(url_at_0009)
    engine = get_engine(url_at_0009)
    old = columns_of(engine)
    before = snapshot(url_at_0009, old)
    command.upgrade(alembic_config(url_at_0009), CENTRES)

    # When it is downgraded to 0009
    command.downgrade(alembic_config(url_at_0009), BEFORE)

    # Then the centres are gone and every table has 0009's columns and rows
    engine.dispose()
    inspector = inspect(engine)
    assert "centres" not in inspector.get_table_names()
    for name, names in old.items():
        assert [c["name"] for c in inspector.get_columns(name)] == names, name
    assert snapshot(url_at_0009, old) == before
    # And a department name is unique again, as 0009 had it
    uniques = {
        tuple(constraint["column_names"])
        for constraint in inspector.get_unique_constraints("departments")
    }
    assert ("name",) in uniques


# --- 0011: staff accounts ---------------------------------------------------------------------

#: The revision that brings staff accounts.
ACCOUNTS = "0011"


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0010(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database brought to revision 0010 and no further."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        command.upgrade(alembic_config(url), CENTRES)
        yield url
        get_engine(url).dispose()
        return
    with fresh_pg_database("redesk_migrate") as url:
        command.upgrade(alembic_config(url), CENTRES)
        yield url


#: People at 0010: (channel, external_id, role); two Telegram ids clean to the same username.
STAFF_AT_0010 = [
    ("telegram", "1001", "worker"),
    ("wechat", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "leader"),
    ("web", "Desk Session#7", "department"),
    ("wecom", "LiSJ", "worker"),
    ("wecom", "lisj", "worker"),
    ("telegram", "-1001000000001", "group"),
    ("web", "resident-1", "requester"),
]


def test_upgrading_to_0011_makes_every_bound_staff_person_an_account_without_a_password(
    url_at_0010: str,
) -> None:
    from storage.models import Account, Person
    from workflow import accounts

    # Given bound staff, a group chat and a resident at 0010
    engine = get_engine(url_at_0010)
    metadata = reflect(engine)
    ids: dict[str, list[int]] = {}
    with engine.begin() as connection:
        ids["centres"] = list(connection.execute(select(metadata.tables["centres"].c.id)).scalars())
        insert(
            connection,
            metadata.tables["people"],
            ids,
            [
                {
                    "channel": c,
                    "external_id": e,
                    "role": r,
                    "display_name": f"{r}{n}",
                    "created_at": T0,
                }
                for n, (c, e, r) in enumerate(STAFF_AT_0010)
            ],
        )
    old = columns_of(engine)
    people_before = snapshot(url_at_0010, old)["people"]

    # When it is upgraded
    command.upgrade(alembic_config(url_at_0010), ACCOUNTS)

    # Then the people are as they were, linked to nobody
    assert snapshot(url_at_0010, old)["people"] == people_before
    after = snapshot(url_at_0010, columns_of(engine))["people"]
    assert [row["principal_id"] for row in after] == [None] * len(STAFF_AT_0010)
    # And each staff person (not the group, not the resident) is an account of their own,
    # named after their chat, unique, with no password and no session
    person_ids = ids["people"]
    with Session(engine) as session:
        made = {
            account.person_id: account for account in session.exec(select_models(Account)).all()
        }
        assert set(made) == {person_ids[i] for i in range(5)}
        names = {pid: made[pid].username for pid in made}
        assert names[person_ids[0]] == "telegram-1001"
        assert names[person_ids[1]] == "wechat-o6_bmjrptlm6_2sgvt7hmzopfl2m"
        assert names[person_ids[2]] == "web-desksession7"
        assert {names[person_ids[3]], names[person_ids[4]]} == {
            "wecom-lisj",
            f"wecom-lisj-{person_ids[4]}",
        }
        assert all(queries.USERNAME_PATTERN.match(name) for name in names.values())
        assert all(a.password_hash is None and a.active for a in made.values())

        # And a migrated account is its chat identity: the same person, shown as its chat
        account = made[person_ids[0]]
        person = session.get(Person, account.person_id)
        assert person is not None and person.channel == "telegram" and person.role == "worker"
        assert [p.id for p in accounts.identities(session, account)] == [person.id]

    # And its person gets a password through a setup link, as `redesk staff reset-password`
    # gives one, and logs in
    with session_scope(engine) as session:
        link = accounts.reset_password(
            session, accounts.account_named(session, "telegram-1001"), now=T0
        )
        accounts.set_password(session, token=link.token, password="春熙路-lamp-2026", now=T0)
    with session_scope(engine) as session:
        outcome = accounts.login(
            session,
            username="telegram-1001",
            password="春熙路-lamp-2026",
            address="127.0.0.1",
            now=T0,
            limits=accounts.Limits(),
        )
        assert isinstance(outcome, accounts.LoggedIn)


def test_downgrading_0011_drops_the_accounts_and_keeps_the_people(url_at_0010: str) -> None:
    engine = get_engine(url_at_0010)
    metadata = reflect(engine)
    ids: dict[str, list[int]] = {}
    with engine.begin() as connection:
        insert(
            connection,
            metadata.tables["people"],
            ids,
            [{"channel": "telegram", "external_id": "1001", "role": "worker", "created_at": T0}],
        )
    before = snapshot(url_at_0010, columns_of(engine))["people"]
    command.upgrade(alembic_config(url_at_0010), ACCOUNTS)
    command.downgrade(alembic_config(url_at_0010), CENTRES)
    tables = set(inspect(engine).get_table_names())
    assert not tables & {"accounts", "console_sessions", "login_attempts"}
    assert "principal_id" not in {c["name"] for c in inspect(engine).get_columns("people")}
    assert snapshot(url_at_0010, columns_of(engine))["people"] == before


# --- 0012: the time bank ---------------------------------------------------------------------

#: The revision that brings the time bank.
TIME_BANK = "0012"

TIME_BANK_TABLES = {"hour_accounts", "hour_movements", "rewards", "redemptions"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0011(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database brought to revision 0011 and no further."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        command.upgrade(alembic_config(url), ACCOUNTS)
        yield url
        get_engine(url).dispose()
        return
    with fresh_pg_database("redesk_migrate") as url:
        command.upgrade(alembic_config(url), ACCOUNTS)
        yield url


def test_0012_adds_the_time_bank_whose_movements_cannot_be_updated_and_downgrades_cleanly(
    url_at_0011: str,
) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    engine = get_engine(url_at_0011)
    before = set(inspect(engine).get_table_names())

    # When 0012 is applied
    command.upgrade(alembic_config(url_at_0011), TIME_BANK)

    # Then the four tables are there, and a movement cannot be changed
    assert set(inspect(engine).get_table_names()) - before == TIME_BANK_TABLES
    with engine.begin() as connection:
        centre = connection.execute(text("SELECT id FROM centres")).scalars().first()
        connection.execute(
            text(
                "INSERT INTO people (channel, external_id, display_name, role, unreachable, "
                "web_seq, window_sent, created_at) VALUES ('web', 'v', '', 'requester', false, "
                "0, 0, :at)"
            ),
            {"at": T0},
        )
        person = connection.execute(text("SELECT id FROM people")).scalars().one()
        for kind, column, owner in (
            ("centre", "centre_id", centre),
            ("volunteer", "person_id", person),
        ):
            connection.execute(
                text(
                    f"INSERT INTO hour_accounts (kind, {column}, created_at) "
                    "VALUES (:kind, :owner, :at)"
                ),
                {"kind": kind, "owner": owner, "at": T0},
            )
        first, second = (
            connection.execute(text("SELECT id FROM hour_accounts ORDER BY id")).scalars().all()
        )
        connection.execute(
            text(
                "INSERT INTO hour_movements (from_account_id, to_account_id, minutes, kind, "
                "reason, created_at) VALUES (:a, :b, 60, 'confirm', '', :at)"
            ),
            {"a": first, "b": second, "at": T0},
        )
    with pytest.raises(DBAPIError), engine.begin() as connection:
        connection.execute(text("UPDATE hour_movements SET minutes = 600"))
    with pytest.raises(DBAPIError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO hour_movements (from_account_id, to_account_id, minutes, kind, "
                "reason, created_at) VALUES (:a, :b, 0, 'confirm', '', :at)"
            ),
            {"a": first, "b": second, "at": T0},
        )

    # And downgrading removes them (trigger and all), and upgrading again works
    command.downgrade(alembic_config(url_at_0011), ACCOUNTS)
    assert set(inspect(engine).get_table_names()) == before
    command.upgrade(alembic_config(url_at_0011), TIME_BANK)
    assert TIME_BANK_TABLES <= set(inspect(engine).get_table_names())
