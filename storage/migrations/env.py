"""Alembic environment: migrations run against the URL the caller configured."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables)
from storage.db import get_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    """Runs the migrations on a live connection."""
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = get_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch migration copies a table and drops the old one, which the rows of other
            # tables still reference: with foreign keys enforced SQLite refuses the drop as
            # soon as there is data. The pragma is a no-op inside a transaction, so it is set
            # on the driver's connection (autocommit) before one begins, and checked after.
            _foreign_keys(connection, enforced=False)
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
            connection.commit()
        finally:
            if sqlite:
                _foreign_keys(connection, enforced=True)


def _foreign_keys(connection: Any, *, enforced: bool) -> None:
    """Switches SQLite's foreign key enforcement on this pooled connection."""
    driver = connection.connection.driver_connection
    driver.execute(f"PRAGMA foreign_keys={'ON' if enforced else 'OFF'}")


run_migrations_online()
