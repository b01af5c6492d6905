"""Engine, sessions and schema upgrades."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

logger = logging.getLogger(__name__)

#: The Alembic scripts, shipped inside the package.
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Execution option marking connections that only read.
READ_ONLY_OPTION = "redesk_read_only"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_pre_ping=True,
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN IMMEDIATE below is honoured.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers queue up at BEGIN instead of failing half-way with "database is locked";
        # readers (see read_engine) start a plain transaction and run beside the writer (WAL).
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def get_engine(url: str) -> Engine:
    """The engine for a database URL, created once per process."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = _sqlite_engine(url)
            else:
                # hide_parameters: a database error's message (which is logged) must not
                # carry the statement's values: request texts, phone numbers.
                engine = create_engine(
                    url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True
                )
            _engines[url] = engine
        return engine


def read_engine(engine: Engine) -> Engine:
    """The same database for work that only reads: on SQLite it does not take the write lock."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def dispose_engines() -> None:
    """Closes every pooled connection (tests, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed at the end of the block, or rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at the shipped migrations and at `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Brings the schema of the database at `url` to the newest revision."""
    logger.info("Upgrading the database schema")
    command.upgrade(alembic_config(url), "head")
