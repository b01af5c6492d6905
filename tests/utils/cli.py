"""Running `redesk` commands in tests: only the database under test, from an empty directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from admin_scripts.manage import LOGIN_VARIABLES
from bot import runtime as bot_runtime
from bot.runtime import Runtime
from storage.db import get_engine
from storage.settings import Settings
from tests.utils.harness import Desk


def isolate_cli(monkeypatch: pytest.MonkeyPatch, here: Path, database_url: str) -> None:
    """The CLI sees only REDESK_DATABASE_URL=database_url and runs from `here`.

    Every other REDESK_* variable is removed, and so are the login variables, so that an
    audit's detail is the same whatever the shell running the tests says. The cached runtime
    is dropped; the fixture that calls this drops it again at teardown.
    """
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    for name in LOGIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(here)
    monkeypatch.setenv("REDESK_DATABASE_URL", database_url)
    bot_runtime.reset()


def desk_on(database_url: str) -> Desk:
    """A chat harness on the CLI's database."""
    settings = Settings(
        database_url=database_url,
        redis_url=None,  # type: ignore[call-arg]
        _env_file=None,
    )
    return Desk(Runtime(settings=settings, engine=get_engine(database_url)))
