"""Settings: one class, read from REDESK_* environment variables and a .env file."""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: Where the embedded default keeps its SQLite file.
DEFAULT_DATA_DIR = Path("data")


#: What a WeChat template field can be filled with (REDESK_WECHAT_TEMPLATE_FIELDS).
TEMPLATE_VALUES: tuple[str, ...] = ("title", "number", "status", "text", "time")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


class Settings(BaseSettings):
    """Every knob of redesk, as documented in the README."""

    model_config = SettingsConfigDict(
        env_prefix="REDESK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR / 'redesk.db'}"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None

    telegram_token: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_secret: str | None = None
    telegram_committee_chat: str | None = None

    wechat_app_id: str | None = None
    wechat_app_secret: str | None = None
    wechat_token: str | None = None
    wechat_aes_key: str | None = None
    wechat_api_url: str = "https://api.weixin.qq.com"
    #: Template message sent when the 48-hour customer-service window is closed; unset: such
    #: messages wait until the person writes again.
    wechat_template_id: str | None = None
    #: Template field -> what fills it (title, number, status, text, time), as JSON.
    wechat_template_fields: dict[str, str] = {
        "first": "title", "keyword1": "number", "keyword2": "time", "remark": "text",
    }
    #: Where fetched media (WeChat pictures, voice, video) are kept.
    media_dir: Path = DEFAULT_DATA_DIR / "media"

    #: Longest request or supplement text accepted, in characters.
    max_text_length: int = 2000
    #: How long a web chat identity's token stays valid, in days.
    web_session_days: int = 30
    #: How long an invitation code stays valid, in days.
    invitation_days: int = 7
    #: Seconds between two sweeps of unfinished inbox and outbox rows.
    sweep_interval: float = 15.0
    #: An inbox/outbox row untouched this many seconds is re-enqueued by the sweeper.
    sweep_grace: float = 10.0
    #: Worker threads of the in-process (embedded) worker and of `redesk worker`.
    worker_threads: int = 4
    #: Daily working hours used for response deadlines (Asia/Shanghai).
    workday_start_hour: int = 9
    workday_end_hour: int = 18
    #: Local days off beyond the national calendar, and local make-up working days:
    #: comma-separated dates, e.g. "2026-12-24,2026-12-31".
    extra_days_off: str = ""
    extra_workdays: str = ""
    #: Seconds between two ticks of the reminders, escalations, digest and auto-close.
    tick_interval: float = 60.0
    #: A NEW request nobody acted on for this many working minutes pings every worker again.
    unacted_minutes: int = 30
    #: An answered (回单) request nobody rated is closed as 未评价 after this many days.
    auto_close_days: int = 7
    #: The daily digest goes out from this hour (Asia/Shanghai) on working days.
    digest_hour: int = 9

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only sqlite:/// and postgresql:// URLs are supported")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("extra_days_off", "extra_workdays")
    @classmethod
    def _check_days(cls, value: str) -> str:
        for part in filter(None, (item.strip() for item in value.split(","))):
            try:
                date.fromisoformat(part)
            except ValueError:
                raise ValueError(f"{part!r} is not a date like 2026-12-24") from None
        return value

    @field_validator("tick_interval")
    @classmethod
    def _check_tick(cls, value: float) -> float:
        if not 1 <= value <= 3600:
            raise ValueError("must be between 1 and 3600 seconds")
        return value

    @field_validator("unacted_minutes", "auto_close_days")
    @classmethod
    def _check_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("digest_hour")
    @classmethod
    def _check_hour(cls, value: int) -> int:
        if not 0 <= value <= 23:
            raise ValueError("must be an hour from 0 to 23")
        return value

    @field_validator("wechat_aes_key")
    @classmethod
    def _check_wechat_aes_key(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if len(value) != 43:
            raise ValueError("an EncodingAESKey has 43 characters")
        return value

    @field_validator("wechat_template_fields")
    @classmethod
    def _check_template_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(TEMPLATE_VALUES))
        if unknown:
            raise ValueError(f"unknown values {unknown}; use {', '.join(TEMPLATE_VALUES)}")
        if not value:
            raise ValueError("needs at least one field")
        return value

    @field_validator("wechat_api_url", "telegram_api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.public_url and self.telegram_token and not self.telegram_webhook_secret:
            raise ValueError(
                "REDESK_TELEGRAM_WEBHOOK_SECRET is required when REDESK_PUBLIC_URL is set"
            )
        if not 0 <= self.workday_start_hour < self.workday_end_hour <= 24:
            raise ValueError("REDESK_WORKDAY_START_HOUR must be before REDESK_WORKDAY_END_HOUR")
        return self

    @property
    def days_off(self) -> frozenset[date]:
        """REDESK_EXTRA_DAYS_OFF as dates."""
        return _dates(self.extra_days_off)

    @property
    def workdays(self) -> frozenset[date]:
        """REDESK_EXTRA_WORKDAYS as dates."""
        return _dates(self.extra_workdays)

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is an (embedded) SQLite file."""
        return self.database_url.startswith("sqlite")

    @property
    def telegram_on(self) -> bool:
        """Whether the Telegram channel is configured."""
        return bool(self.telegram_token)

    @property
    def wechat_on(self) -> bool:
        """Whether the WeChat channel is configured."""
        return bool(self.wechat_app_id and self.wechat_app_secret and self.wechat_token)


def _dates(value: str) -> frozenset[date]:
    return frozenset(date.fromisoformat(part.strip()) for part in value.split(",")
                     if part.strip())


def load_settings() -> Settings:
    """Reads the settings, turning a validation error into one readable sentence per setting."""
    try:
        return Settings()
    except PydanticSettingsError as exc:
        # A structured setting (JSON) that does not parse; the message names the field.
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"REDESK_{found.group(1).upper()}" if found else "settings"
        raise SettingsError(f"Invalid setting — {name}: not valid JSON") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"REDESK_{field.upper()}" if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{name}: {message}")
        raise SettingsError("Invalid setting — " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache)."""
    return load_settings()
