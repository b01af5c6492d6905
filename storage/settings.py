"""Settings: one class, read from REDESK_* environment variables and a .env file."""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

import platformdirs
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError
from pydantic_settings.sources import ENV_FILE_SENTINEL
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from storage.dates import WORKDAY_END_HOUR, WORKDAY_START_HOUR, parse_dates

#: An address network of either family.
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The application name platformdirs places the data directory under.
APP_NAME = "redesk"


def default_data_dir() -> Path:
    """The platform's per-user data directory for redesk (e.g. ~/.local/share/redesk).

    Read when the settings are loaded, not at import, so that HOME and XDG_DATA_HOME are those
    of the process at that moment. The same directory whatever the working directory: every
    `redesk` verb run by one user finds the database `redesk run` made.
    """
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


#: Shortest secret accepted in production where a secret is compared by signature (a webhook
#: secret, a server token: a short one can be guessed offline from a single signed request) or
#: must not be guessable by trying (the metrics token).
MIN_SECRET_LENGTH = 16

#: Secrets that are placeholders (compared lower-cased, without "-", "_", "." and spaces).
PLACEHOLDER_SECRETS: frozenset[str] = frozenset(
    {
        "changeme",
        "changeit",
        "changethis",
        "secret",
        "mysecret",
        "yoursecret",
        "password",
        "passw0rd",
        "token",
        "mytoken",
        "yourtoken",
        "example",
        "placeholder",
        "todo",
        "fixme",
        "test",
        "testing",
        "dummy",
        "default",
        "none",
        "null",
        "xxx",
        "xxxx",
        "webhooksecret",
        "replaceme",
        "postgres",
        "redesk",
        "admin",
    }
)

#: Words that mark a value as a placeholder wherever they occur in it ("your..." as in
#: "your-app-secret" only at the start).
PLACEHOLDER_WORDS: tuple[str, ...] = (
    "changeme",
    "changethis",
    "replaceme",
    "placeholder",
    "yoursecret",
    "yourtoken",
    "xxxxxx",
)


#: Fewest estimated bits of entropy a secret needs in production (see `entropy_bits`). A
#: random 16-character letters-and-digits secret has about 95, 32 hex digits about 130, 43
#: letters and digits about 250; "passwordpassword" 47, "1111111111111112" or
#: "abcdefghijklmnop" about 10.
MIN_SECRET_BITS = 56

#: Alphabet sizes of the character classes a secret draws from.
_CLASSES: tuple[tuple[str, int], ...] = (
    (r"[a-z]", 26),
    (r"[A-Z]", 26),
    (r"[0-9]", 10),
    (r"[^a-zA-Z0-9]", 33),
)


def entropy_bits(value: str) -> float:
    """An estimate of a secret's entropy, in bits, erring low for what people type.

    Each character that cannot be guessed from the ones before counts log2 of the alphabet
    of the character classes the value uses (lower case, upper case, digits, others). A
    character can be guessed when it continues a run (the same step of -1, 0 or +1 as the
    previous pair: "1111", "abcd", "9876") or when it ends a three-character piece seen
    earlier in the value ("abc123abc123"). Random values of the platforms' formats lose
    almost nothing; keyboard patterns and repetitions lose nearly everything.
    """
    if not value:
        return 0.0
    alphabet = sum(size for pattern, size in _CLASSES if re.search(pattern, value))
    counted = 0
    seen: set[str] = set()
    for index, char in enumerate(value):
        piece = value[max(0, index - 2) : index + 1]
        step = ord(char) - ord(value[index - 1]) if index >= 1 else None
        before = ord(value[index - 1]) - ord(value[index - 2]) if index >= 2 else None
        in_run = step is not None and step == before and abs(step) <= 1
        repeated = len(piece) == 3 and piece in seen
        if len(piece) == 3:
            seen.add(piece)
        if not (in_run or repeated):
            counted += 1
    return counted * math.log2(alphabet)


def _is_placeholder(value: str, samples: frozenset[str]) -> bool:
    """Whether a secret is a placeholder, a documentation sample or one repeated character."""
    folded = re.sub(r"[-_.\s]", "", value.lower())
    return (
        value in samples
        or folded in PLACEHOLDER_SECRETS
        or any(word in folded for word in PLACEHOLDER_WORDS)
        or folded.startswith("your")
        or len(set(value)) <= 1
    )


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


#: One secret setting: its variable, its value, and the shortest length production accepts.
Secret: TypeAlias = tuple[str, "str | None", int]


def _whole(name: str, value: str) -> str:
    return value


def check_secrets(
    checks: list[Secret],
    *,
    samples: frozenset[str] = frozenset(),
    part: Callable[[str, str], str] = _whole,
) -> None:
    """Refuses (ValueError) secrets that are placeholders, samples, too short or too easy to
    guess; REDESK_ENV=production calls it.

    Args:
        checks: the secrets, each with its variable and the shortest length accepted.
        samples: values from the platform's documentation, refused as they are.
        part: the part of a secret (its variable, its value) whose entropy is judged, e.g.
            a token's half after a public id; by default all of it.
    """
    for name, value, shortest in checks:
        if value is None or (value == "" and name.endswith("password")):
            continue
        if _is_placeholder(value, samples):
            raise ValueError(
                f"{name} is a placeholder or a documentation sample; "
                "set a real secret (REDESK_ENV=production)"
            )
        if len(value) < shortest:
            raise ValueError(
                f"{name} is shorter than {shortest} characters; "
                "set a longer random secret (REDESK_ENV=production)"
            )
        if entropy_bits(part(name, value)) < MIN_SECRET_BITS:
            raise ValueError(
                f"{name} is too easy to guess (runs, repeats or too few kinds "
                "of characters); set a random secret (REDESK_ENV=production)"
            )


class Section(BaseSettings):
    """Settings a plug-in (a channel) declares for itself, read from its own REDESK_<NAME>_*
    variables and the same .env file as `Settings`; `Settings.section` loads one."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    #: Secrets from the platform's documentation, sometimes pasted as they are: refused in
    #: production.
    samples: ClassVar[frozenset[str]] = frozenset()

    def secrets(self) -> list[Secret]:
        """The secret settings: refused as placeholders in production, masked in the logs."""
        return []

    def secret_part(self, name: str, value: str) -> str:
        """The part of secret `name` whose entropy production judges; by default all of it."""
        return value

    def log_secrets(self) -> list[str]:
        """Further values to mask in the logs (parts of a secret that appear on their own)."""
        return []

    def check_production(self) -> None:
        """Refuses (ValueError) what production must not run with; by default weak
        secrets."""
        check_secrets(self.secrets(), samples=self.samples, part=self.secret_part)

    def check_with(self, settings: Settings) -> None:
        """Refuses (ValueError) a combination with the core settings that cannot work (any
        environment); by default none."""


S = TypeVar("S", bound=Section)


class Settings(BaseSettings):
    """Every knob of redesk, as documented in the README."""

    model_config = SettingsConfigDict(
        env_prefix="REDESK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    #: Where the embedded default keeps its SQLite file and fetched media (REDESK_DATA_DIR);
    #: declared before database_url and media_dir, whose defaults are made from it.
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['data_dir'] / 'redesk.db'}"
    )
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None

    #: Where fetched media (pictures, voice, video of the chat channels) are kept.
    media_dir: Path = Field(default_factory=lambda data: data["data_dir"] / "media")

    #: Longest request or supplement text accepted, in characters.
    max_text_length: int = 2000
    #: Bearer token /metrics asks for (`Authorization: Bearer <token>`); unset: /metrics is
    #: open, and in production answers only clients on this machine (loopback).
    metrics_token: str | None = None
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
    workday_start_hour: int = WORKDAY_START_HOUR
    workday_end_hour: int = WORKDAY_END_HOUR
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
    #: Messages a requester may send in one minute before being asked to slow down: the web
    #: API answers 429, chat channels make no further requests (0: no limit).
    flood_per_minute: int = 20
    #: Web chat identities one client address may create in one minute (0: no limit).
    web_sessions_per_minute: int = 10
    #: Reverse proxies whose X-Forwarded-For is believed: comma-separated addresses or
    #: networks (CIDR); unset: the peer address is the client's, X-Forwarded-For is ignored.
    trusted_proxies: str = ""
    #: Long polls (GET /api/web/messages) one web identity may hold open at once (0: any).
    web_polls_per_identity: int = 2
    #: Long polls one `redesk run` process holds open at once, all identities together (0: any).
    web_polls_total: int = 500
    #: Seconds between two database checks of a waiting long poll that nobody woke: a lost
    #: delivery notification delays an answer by at most this much.
    web_poll_fallback: float = 5.0
    #: The console's live updates (GET /api/console/stream): seconds between two cheap
    #: checks of the newest event, and how many streams one account may hold open per
    #: process (0: any).
    console_stream_poll: float = 2.0
    console_streams_per_account: int = 5
    #: Fewest characters (letters and digits, after punctuation and emoji are dropped) a
    #: requester's text needs to become a request; a shorter one is asked about (0: any).
    min_request_length: int = 3
    #: A word list of greetings, thanks and acknowledgements replacing the shipped one
    #: (bot/handlers/small_talk.txt); unset: the shipped list.
    small_talk_file: Path | None = None
    #: Console logins: failed attempts allowed per username, and per client address, within
    #: REDESK_CONSOLE_LOGIN_WINDOW_MINUTES before further attempts are refused (429).
    console_login_failures_per_username: int = 5
    console_login_failures_per_address: int = 20
    console_login_window_minutes: int = 15
    #: A console session unused this many minutes is over (idle expiry).
    console_idle_minutes: int = 30
    #: A console session is over this many hours after its login, used or not.
    console_session_hours: int = 12
    #: How long a 关联聊天账号 code from the console stays valid, in minutes.
    console_link_minutes: int = 15
    #: Most hours of service (时间银行) confirmed to one person in one day (Asia/Shanghai);
    #: a confirmation beyond it is refused.
    hours_per_day_cap: float = Field(default=12.0, gt=0, le=24)

    @field_validator("data_dir")
    @classmethod
    def _check_data_dir(cls, value: Path) -> Path:
        # Absolute from the start: a relative directory would again depend on where each
        # verb is run from.
        return value.expanduser().absolute()

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
        parse_dates(value)
        return value

    @field_validator("tick_interval")
    @classmethod
    def _check_tick(cls, value: float) -> float:
        if not 1 <= value <= 3600:
            raise ValueError("must be between 1 and 3600 seconds")
        return value

    @field_validator(
        "unacted_minutes",
        "auto_close_days",
        "console_login_failures_per_username",
        "console_login_failures_per_address",
        "console_login_window_minutes",
        "console_idle_minutes",
        "console_session_hours",
        "console_link_minutes",
    )
    @classmethod
    def _check_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator(
        "flood_per_minute", "web_sessions_per_minute", "web_polls_per_identity", "web_polls_total"
    )
    @classmethod
    def _check_flood(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (no limit) or more")
        return value

    @field_validator("console_stream_poll")
    @classmethod
    def _check_console_stream_poll(cls, value: float) -> float:
        if not 0.2 <= value <= 60:
            raise ValueError("must be between 0.2 and 60 seconds")
        return value

    @field_validator("console_streams_per_account")
    @classmethod
    def _check_console_streams(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (no limit) or more")
        return value

    @field_validator("web_poll_fallback")
    @classmethod
    def _check_poll_fallback(cls, value: float) -> float:
        if not 0.5 <= value <= 300:
            raise ValueError("must be between 0.5 and 300 seconds")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for part in filter(None, (item.strip() for item in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an address or a network like 10.0.0.0/8"
                ) from None
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        """REDESK_TRUSTED_PROXIES as networks (a single address is a /32 or /128)."""
        return tuple(
            ipaddress.ip_network(part, strict=False)
            for part in filter(None, (item.strip() for item in self.trusted_proxies.split(",")))
        )

    @field_validator("min_request_length")
    @classmethod
    def _check_min_request_length(cls, value: int) -> int:
        if not 0 <= value <= 100:
            raise ValueError("must be between 0 (any length) and 100")
        return value

    @field_validator("small_talk_file", mode="before")
    @classmethod
    def _check_small_talk_file(cls, value: object) -> object:
        if value in (None, ""):
            return None
        path = Path(str(value))
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"cannot read {path} as UTF-8 text ({exc.__class__.__name__})"
            ) from None
        return path

    @field_validator("digest_hour")
    @classmethod
    def _check_hour(cls, value: int) -> int:
        if not 0 <= value <= 23:
            raise ValueError("must be an hour from 0 to 23")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if not 0 <= self.workday_start_hour < self.workday_end_hour <= 24:
            raise ValueError("REDESK_WORKDAY_START_HOUR must be before REDESK_WORKDAY_END_HOUR")
        if self.env == "production":
            self._check_production_secrets()
        return self

    def _check_production_secrets(self) -> None:
        """Refuses, in production, secrets that are placeholders, samples, too short or too
        easy to guess (a section's own are checked when it is read)."""
        checks: list[Secret] = [
            ("REDESK_METRICS_TOKEN", self.metrics_token, MIN_SECRET_LENGTH),
            ("REDESK_DATABASE_URL password", make_url(self.database_url).password, 1),
        ]
        check_secrets(checks)

    _env_file_given: Any = PrivateAttr(default=ENV_FILE_SENTINEL)
    _sections: dict[type[Section], Section] = PrivateAttr(default_factory=dict)
    _sections_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        # Sections are read from the same .env file (or none, as tests ask with None).
        self._env_file_given = values.get("_env_file", ENV_FILE_SENTINEL)

    def section(self, model: type[S]) -> S:
        """A plug-in's own settings (a channel's), read once from the same variables and .env
        file, checked for production like the rest, and their secrets kept out of the logs.

        Raises:
            SettingsError: a setting of the section is malformed or refused, named.
        """
        with self._sections_lock:
            found = self._sections.get(model)
            if found is None:
                prefix = str(model.model_config.get("env_prefix", ""))
                try:
                    found = model(_env_file=self._env_file_given)  # type: ignore[call-arg]
                    if self.env == "production":
                        found.check_production()
                    found.check_with(self)
                except PydanticSettingsError as exc:
                    raise _readable(exc, prefix) from None
                except ValidationError as exc:
                    raise _readable(exc, prefix) from None
                except ValueError as exc:
                    raise SettingsError(f"Invalid setting — {exc}") from None
                self._sections[model] = found
                _mask(self._section_secrets(found))
            assert isinstance(found, model)
            return found

    def with_sections(self, *sections: Section) -> Settings:
        """These settings with sections given instead of read (tests, embedding)."""
        with self._sections_lock:
            for section in sections:
                self._sections[type(section)] = section
                _mask(self._section_secrets(section))
        return self

    @staticmethod
    def _section_secrets(section: Section) -> list[str]:
        return [value for _, value, _ in section.secrets() if value] + section.log_secrets()

    @property
    def days_off(self) -> frozenset[date]:
        """REDESK_EXTRA_DAYS_OFF as dates."""
        return parse_dates(self.extra_days_off)

    @property
    def workdays(self) -> frozenset[date]:
        """REDESK_EXTRA_WORKDAYS as dates."""
        return parse_dates(self.extra_workdays)

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is an (embedded) SQLite file."""
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_file(self) -> Path | None:
        """The file of an SQLite database, absolute; None for PostgreSQL and in-memory."""
        if not self.is_sqlite:
            return None
        database = make_url(self.database_url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database).absolute()


#: Written in log records instead of a secret.
REDACTED = "<redacted>"

#: Secrets in what the HTTP client libraries log: secrets and access tokens in query strings
#: (a token URL carrying an app secret); a channel adds its platform's own with
#: `add_log_pattern`.
LOG_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b(\w*(?:secret|token|password))=[^&\s\"']+"), rf"\1={REDACTED}"),
]


def add_log_pattern(pattern: re.Pattern[str], replacement: str) -> None:
    """Cleans what `pattern` matches out of every log record from now on (a channel's client
    logging its secrets or people's data in a shape of its own)."""
    with _log_lock:
        if (pattern, replacement) not in LOG_PATTERNS:
            LOG_PATTERNS.append((pattern, replacement))


#: Secret values of the settings loaded in this process (shorter ones would redact too much).
_log_secrets: set[str] = set()
_log_lock = threading.Lock()
_log_factory_installed = False


def redact_logs(settings: Settings) -> None:
    """Keeps the settings' secrets, and what LOG_PATTERNS matches, out of every log record.

    Installed once per process as a log record factory, so it covers every logger (the HTTP
    libraries' too), at every level, whatever handlers an operator configures. Loading the
    settings calls it; calling it again only adds secrets. A section's secrets are added when
    it is read (`Settings.section`).
    """
    url_password = make_url(settings.database_url).password
    values = {settings.metrics_token, url_password if isinstance(url_password, str) else None}
    _mask(value for value in values if value)


def _mask(values: Iterable[str]) -> None:
    """Adds secret values to what every log record is cleaned of (installing the cleaner
    once per process)."""
    global _log_factory_installed
    with _log_lock:
        _log_secrets.update(value for value in values if value and len(value) >= 6)
        if _log_factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _log_factory_installed = True


def redact(text: str) -> str:
    """`text` without the known secrets and what LOG_PATTERNS matches."""
    for secret in sorted(_log_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in LOG_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is logging's to report
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        formatted = logging.Formatter().formatException(record.exc_info)
        if redact(formatted) != formatted:
            record.exc_text = redact(formatted)


def load_settings() -> Settings:
    """Reads the settings, turning a validation error into one readable sentence per setting.

    The secrets of the settings read are kept out of the logs from then on (redact_logs).
    """
    try:
        settings = Settings()
        redact_logs(settings)
        return settings
    except (PydanticSettingsError, ValidationError) as exc:
        raise _readable(exc, "REDESK_") from None


def _readable(exc: PydanticSettingsError | ValidationError, prefix: str) -> SettingsError:
    """A settings error as one readable sentence per setting, named by its variable."""
    if isinstance(exc, PydanticSettingsError):
        # A structured setting (JSON) that does not parse; the message names the field.
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"{prefix}{found.group(1).upper()}" if found else "settings"
        return SettingsError(f"Invalid setting — {name}: not valid JSON")
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        name = f"{prefix}{field.upper()}" if error["loc"] else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return SettingsError("Invalid setting — " + "; ".join(lines))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache)."""
    return load_settings()
