"""Fixtures: real SQLite and PostgreSQL databases, real Redis, and a chat harness.

Locally a missing PostgreSQL or Redis skips the tests that need it; with CI=true it fails them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import pytest
from argon2 import PasswordHasher
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from bot import runtime as bot_runtime
from bot.app import create_app
from bot.runtime import Runtime
from storage.db import dispose_engines, get_engine, upgrade
from storage.settings import Settings
from tests.utils.app import TestClient
from tests.utils.centres import Tree, make_tree
from tests.utils.cli import isolate_cli
from tests.utils.harness import Desk
from tests.utils.world import Cast, World, make_cast
from workflow import accounts
from workflow import broker as broker_module

#: Whether this run is CI's: a missing service fails instead of skipping.
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: A PostgreSQL URL with the right to create databases (each test run makes its own).
PG_ADMIN_URL = os.environ.get(
    "REDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def worker_redis_url(url: str) -> str:
    """The Redis database this test process may empty: `url`'s, or under pytest-xdist
    (`make test-fast` runs two processes) the Nth database below it for worker gwN, so that
    two workers never empty each other's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return url
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) - int(worker[2:])
    if database < 0:
        raise RuntimeError(f"{url}: no Redis database left for xdist worker {worker}")
    return urlunsplit(parts._replace(path=f"/{database}"))


#: A Redis database the tests may empty.
REDIS_URL = worker_redis_url(os.environ.get("REDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))

#: The default centre as migration 0010 makes it, whatever a test changed (the other centres
#: are deleted after it; their ids keep counting).
RESET_CENTRES = (
    "UPDATE centres SET code = 'default', name = '党群服务中心', level = '社区', "
    "parent_id = NULL, path = '/' || id || '/', active = true, days_off = '[]' WHERE is_default"
)

#: The default centre, unless there is one.
MAKE_DEFAULT_CENTRE = (
    "INSERT INTO centres (code, name, level, parent_id, path, active, is_default, days_off, "
    "created_at) SELECT 'default', '党群服务中心', '社区', NULL, '/', true, true, '[]', now() "
    "WHERE NOT EXISTS (SELECT 1 FROM centres WHERE is_default)"
)

#: Tables a PostgreSQL test does not empty: the centres are reset (above), the schema's version
#: stays.
KEPT_TABLES = frozenset({"centres", "alembic_version"})


@dataclass(frozen=True)
class Schema:
    """What a PostgreSQL test empties, read from the upgraded schema (so a migration's new
    table is emptied too, with no list to keep): the tables, children first, and the id
    sequences they own."""

    tables: tuple[str, ...]
    sequences: tuple[str, ...]


def read_schema(url: str) -> Schema:
    """The tables of the database at `url` in the order they can be emptied (children
    first), without KEPT_TABLES, and the sequences those tables own."""
    engine = get_engine(url)
    metadata = MetaData()
    metadata.reflect(bind=engine)
    tables = tuple(
        table.name for table in reversed(metadata.sorted_tables) if table.name not in KEPT_TABLES
    )
    with engine.connect() as connection:
        owned = connection.execute(
            text(
                "SELECT s.relname, t.relname FROM pg_class s "
                "JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a' "
                "JOIN pg_class t ON t.oid = d.refobjid "
                "WHERE s.relkind = 'S' ORDER BY s.relname"
            )
        ).all()
    return Schema(
        tables=tables,
        sequences=tuple(sequence for sequence, table in owned if table in tables),
    )


#: Tiers chosen by where a test lives or what it asks for (`make test-fast` runs the quick
#: ones); the e2e and faults conftests mark their directories.
SLOW_TIERS = ("e2e", "faults", "browser")

#: Fixtures that reach a real database or Redis: a test asking for one is in the db tier.
SERVICE_FIXTURES = frozenset(
    {
        "db_url",
        "pg_url",
        "sqlite_template",
        "redis_url",
        "settings",
        "runtime",
        "desk",
        "client",
        "cli_db",
    }
)


#: This directory: tests/<tier>/ holds the tests of a slow tier.
TESTS_DIR = Path(__file__).parent


#: The databases a test parametrised over SQLite and PostgreSQL can run on.
DATABASES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--databases",
        default=",".join(DATABASES),
        help=(
            "comma-separated databases the SQLite/PostgreSQL pairs run on (default both; "
            "`make test-fast` runs them on sqlite only)"
        ),
    )


def chosen_databases(config: pytest.Config) -> frozenset[str]:
    """The databases of --databases; a pytest.UsageError for an unknown one."""
    chosen = frozenset(part.strip() for part in str(config.getoption("databases")).split(","))
    unknown = chosen - set(DATABASES)
    if unknown or not chosen:
        raise pytest.UsageError(
            f"--databases takes {','.join(DATABASES)}, not {','.join(sorted(unknown))}"
        )
    return chosen


def on_database(item: pytest.Item) -> str | None:
    """The database a test of an SQLite/PostgreSQL pair runs on (a parameter named after
    it: db_url's and the fixtures like it), or None for a test of neither pair."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    return next((value for value in callspec.params.values() if value in DATABASES), None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselects the pairs' tests on a database --databases leaves out, and marks every test
    outside the slow tiers as unit or db (see pyproject markers).

    It runs first, before `-m` deselects anything and before the tier directories' own
    conftests mark their tests, so a slow test is known by its directory or its own marker.
    """
    chosen = chosen_databases(config)
    if chosen != set(DATABASES):
        left_out = [item for item in items if on_database(item) not in (None, *chosen)]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            dropped = {id(item) for item in left_out}
            items[:] = [item for item in items if id(item) not in dropped]
    for item in items:
        if any(item.get_closest_marker(tier) for tier in SLOW_TIERS) or any(
            item.path.is_relative_to(TESTS_DIR / tier) for tier in SLOW_TIERS
        ):
            continue
        names = set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.db if names & SERVICE_FIXTURES else pytest.mark.unit)


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The platform's data directory of the whole run is a temporary one, never the real
    home's: settings made without a database URL or a media directory point there (and so do
    the processes the e2e tests start, which inherit the environment)."""
    home = tmp_path_factory.mktemp("xdg-data-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(home))
        yield home


def missing_service(name: str, reason: object) -> None:
    """Skips the test locally, fails it on CI."""
    message = f"{name} is not available: {reason}"
    if ON_CI:
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def fresh_pg_database(prefix: str = "redesk_test") -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        missing_service("PostgreSQL", exc)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, upgraded to the newest schema."""
    with fresh_pg_database() as url:
        upgrade(url)
        yield url
        dispose_engines()


@pytest.fixture(scope="session")
def pg_schema(pg_url: str) -> Schema:
    """The tables and sequences a PostgreSQL test empties and restarts."""
    return read_schema(pg_url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upgraded SQLite file that each test copies (faster than migrating every time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    dispose_engines()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """An empty, upgraded database: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "redesk.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    schema: Schema = request.getfixturevalue("pg_schema")
    # DELETE is several times faster than TRUNCATE on tables this small.
    with get_engine(url).begin() as connection:
        for table in schema.tables:
            connection.execute(text(f'DELETE FROM "{table}"'))
        for sequence in schema.sequences:
            connection.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
        # The default centre (migration 0010) stays, as it was made (first, so that it is
        # under none of them); any other goes.
        connection.execute(text(RESET_CENTRES))
        connection.execute(text("DELETE FROM centres WHERE NOT is_default"))
        # A test that emptied every table took the default centre too: it is made again.
        connection.execute(text(MAKE_DEFAULT_CENTRE))
        connection.execute(text(RESET_CENTRES))
    return url


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for the database under test, ignoring the environment's .env.

    Every test client comes from one address, so the limit of new identities per address is
    off; the tests of that limit switch it on.
    """
    return Settings(
        database_url=db_url,
        redis_url=None,  # type: ignore[call-arg]
        web_sessions_per_minute=0,
        _env_file=None,
    )


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    """A runtime on the database under test."""
    return Runtime(settings=settings, engine=get_engine(settings.database_url))


@pytest.fixture
def desk(runtime: Runtime) -> Desk:
    """A chat harness: web identities talking to redesk, processed synchronously."""
    return Desk(runtime)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real, emptied Redis database."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.flushdb()
    except Exception as exc:
        client.close()
        missing_service("Redis", exc)
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def stub_broker() -> Iterator[dramatiq.Broker]:
    """The in-process broker, emptied, so what the app enqueues can be counted."""
    broker = broker_module.configure(None)
    yield broker
    broker.flush_all()


@pytest.fixture
def client(runtime: Runtime, stub_broker: dramatiq.Broker) -> Iterator[TestClient]:
    """A client of the app (create_app) on the database under test."""
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


@pytest.fixture
def world(runtime: Runtime) -> World:
    """The workflow service on the database under test, at a fixed clock."""
    return World(runtime)


@pytest.fixture
def cast(world: World) -> Cast:
    """The usual people, two departments and two categories (see tests/utils/world.py)."""
    return make_cast(world)


@pytest.fixture
def tree(world: World) -> Tree:
    """District D over communities C1, C2 and the 商圈 B, with their people (see
    tests/utils/centres.py)."""
    return make_tree(world)


@pytest.fixture
def any_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> Iterator[str]:
    """An empty database named by REDESK_DATABASE_URL, the CLI run from an empty directory:
    SQLite, then PostgreSQL (db_url)."""
    isolate_cli(monkeypatch, tmp_path, db_url)
    yield db_url
    bot_runtime.reset()


@pytest.fixture
def cli_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A fresh SQLite database named by REDESK_DATABASE_URL, the CLI run from an empty directory."""
    path = tmp_path / "cli.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    isolate_cli(monkeypatch, tmp_path, url)
    yield url
    bot_runtime.reset()


#: argon2 at its smallest cost: the tests hash and verify passwords hundreds of times, and
#: production's cost (argon2-cffi's defaults, 64 MiB per hash) would make that most of the
#: run's CPU. The code under test is the same; processes started by the e2e and browser tiers
#: hash at production's cost.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts made in the test process hash their passwords with CHEAP_HASHER."""
    monkeypatch.setattr(accounts, "HASHER", CHEAP_HASHER)
