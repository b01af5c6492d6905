"""The process's settings and database engine, and units of work built from them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage.db import get_engine
from storage.models import utcnow
from storage.settings import Settings, get_settings
from workflow import deadlines
from workflow.reminders import Policy
from workflow.service import Tx


@dataclass(frozen=True)
class Runtime:
    """What every request handler, actor and CLI verb of one process shares."""

    settings: Settings
    engine: Engine

    def __post_init__(self) -> None:
        deadlines.configure(days_off=self.settings.days_off, workdays=self.settings.workdays)

    @property
    def policy(self) -> Policy:
        """The reminders' knobs."""
        return Policy(
            unacted_minutes=self.settings.unacted_minutes,
            auto_close_days=self.settings.auto_close_days,
            digest_hour=self.settings.digest_hour,
        )

    def tx(self, session: Session, source: str) -> Tx:
        """A unit of work on `session` at the current time."""
        return Tx(
            session=session,
            now=utcnow(),
            source=source,
            workday_start=self.settings.workday_start_hour,
            workday_end=self.settings.workday_end_hour,
            max_text=self.settings.max_text_length,
        )


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    """The process-wide runtime."""
    settings = get_settings()
    return Runtime(settings=settings, engine=get_engine(settings.database_url))


def reset() -> None:
    """Forgets the cached settings and runtime (tests change the environment)."""
    get_settings.cache_clear()
    get_runtime.cache_clear()
