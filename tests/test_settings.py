"""Settings: the documented defaults, REDESK_* variables, and readable refusals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.settings import Settings, SettingsError, get_settings
from tests.utils.settings import load_all, make_settings, telegram_of, wechat_of


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No REDESK_* variable and no .env file leaks in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    # The platform's data directory is looked up under these: never the real home's.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_are_the_documented_embedded_ones(tmp_path: Path) -> None:
    # When nothing is configured
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    # Then redesk is the embedded default: SQLite and media in the platform's data directory
    data = tmp_path / "xdg" / "redesk"
    assert settings.data_dir == data
    assert settings.database_url == f"sqlite:///{data / 'redesk.db'}"
    assert settings.sqlite_file == data / "redesk.db"
    assert settings.media_dir == data / "media"
    assert settings.is_sqlite
    assert settings.redis_url is None
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.public_url is None
    assert telegram_of(settings).token is None
    assert telegram_of(settings).api_url == "https://api.telegram.org"
    assert wechat_of(settings).api_url == "https://api.weixin.qq.com"
    assert wechat_of(settings).aes_key is None
    assert not telegram_of(settings).enabled
    assert not wechat_of(settings).enabled
    assert settings.min_request_length == 3
    assert settings.small_talk_file is None


def test_the_default_database_is_the_same_file_from_every_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two unrelated working directories
    first, second = tmp_path / "one", tmp_path / "two" / "deeper"
    first.mkdir()
    second.mkdir(parents=True)

    # When the settings are read in each
    monkeypatch.chdir(first)
    here = Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.chdir(second)
    there = Settings(_env_file=None)  # type: ignore[call-arg]

    # Then both name one absolute database file and one media directory, in neither of them
    assert here.database_url == there.database_url
    assert here.media_dir == there.media_dir
    assert here.sqlite_file is not None and here.sqlite_file.is_absolute()
    assert here.media_dir.is_absolute()
    assert not here.sqlite_file.is_relative_to(first)
    assert not here.sqlite_file.is_relative_to(second)


def test_without_xdg_data_home_the_data_directory_is_under_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no XDG_DATA_HOME
    monkeypatch.delenv("XDG_DATA_HOME")

    # When the settings are read
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    # Then the data directory is ~/.local/share/redesk of this HOME
    assert settings.data_dir == tmp_path / "home" / ".local" / "share" / "redesk"
    assert settings.sqlite_file == settings.data_dir / "redesk.db"


def test_redesk_data_dir_moves_the_database_and_the_media_and_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given REDESK_DATA_DIR relative to the working directory
    monkeypatch.setenv("REDESK_DATA_DIR", "desk-data")

    # When the settings are read
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    # Then the database and the media are in it, named absolutely
    assert settings.data_dir == tmp_path / "desk-data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'desk-data' / 'redesk.db'}"
    assert settings.media_dir == tmp_path / "desk-data" / "media"


def test_a_data_dir_starting_with_a_tilde_is_in_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDESK_DATA_DIR", "~/redesk-data")

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.data_dir == tmp_path / "home" / "redesk-data"


def test_the_database_url_and_the_media_dir_each_win_over_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a data directory, and the database and the media set on their own
    monkeypatch.setenv("REDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REDESK_DATABASE_URL", "postgresql+psycopg://redesk@db.example/redesk")
    monkeypatch.setenv("REDESK_MEDIA_DIR", str(tmp_path / "files"))

    # When the settings are read
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    # Then the explicit ones are taken, and a PostgreSQL database has no file
    assert settings.database_url == "postgresql+psycopg://redesk@db.example/redesk"
    assert settings.media_dir == tmp_path / "files"
    assert settings.sqlite_file is None


def test_redesk_variables_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given every documented variable set
    values = {
        "REDESK_DATABASE_URL": "postgresql+psycopg://redesk@db.example/redesk",
        "REDESK_REDIS_URL": "redis://cache.example:6379/2",
        "REDESK_HOST": "0.0.0.0",
        "REDESK_PORT": "9090",
        "REDESK_PUBLIC_URL": "https://desk.example.cn/",
        "REDESK_TELEGRAM_TOKEN": "123:abc",
        "REDESK_TELEGRAM_API_URL": "http://127.0.0.1:8081",
        "REDESK_TELEGRAM_WEBHOOK_SECRET": "s3cret",
        "REDESK_TELEGRAM_COMMITTEE_CHAT": "-100123",
        "REDESK_WECHAT_APP_ID": "wx123",
        "REDESK_WECHAT_APP_SECRET": "appsecret",
        "REDESK_WECHAT_TOKEN": "wxtoken",
        "REDESK_WECHAT_AES_KEY": "k" * 43,
        "REDESK_WECHAT_API_URL": "http://127.0.0.1:8082",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    # When the settings are read
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    # Then each one is taken
    assert settings.database_url == values["REDESK_DATABASE_URL"]
    assert not settings.is_sqlite
    assert settings.redis_url == values["REDESK_REDIS_URL"]
    assert settings.host == "0.0.0.0"
    assert settings.port == 9090
    assert settings.public_url == "https://desk.example.cn"
    assert telegram_of(settings).token == "123:abc"
    assert telegram_of(settings).api_url == "http://127.0.0.1:8081"
    assert telegram_of(settings).webhook_secret == "s3cret"
    assert telegram_of(settings).committee_chat == "-100123"
    assert wechat_of(settings).app_id == "wx123"
    assert wechat_of(settings).app_secret == "appsecret"
    assert wechat_of(settings).token == "wxtoken"
    assert wechat_of(settings).aes_key == "k" * 43
    assert wechat_of(settings).api_url == "http://127.0.0.1:8082"
    assert telegram_of(settings).enabled
    assert wechat_of(settings).enabled


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    # Given a .env file (the fixture made tmp_path the working directory)
    (tmp_path / ".env").write_text("REDESK_PORT=8123\nREDESK_HOST=192.168.1.5\n", encoding="utf-8")

    # When the settings are loaded
    settings = load_all()

    # Then its values are taken
    assert settings.port == 8123
    assert settings.host == "192.168.1.5"


def test_an_empty_redis_url_means_the_in_process_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDESK_REDIS_URL", "")

    assert Settings(_env_file=None).redis_url is None  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDESK_DATABASE_URL", "not a database url"),
        ("REDESK_DATABASE_URL", "mysql://redesk@db.example/redesk"),
        ("REDESK_REDIS_URL", "http://127.0.0.1:6379/0"),
        ("REDESK_PUBLIC_URL", "http://desk.example.cn"),
        ("REDESK_PORT", "eighty"),
        ("REDESK_WECHAT_AES_KEY", "too-short"),
        ("REDESK_WECHAT_TEMPLATE_FIELDS", '{"first": "phone"}'),
        ("REDESK_WECHAT_TEMPLATE_FIELDS", "first=title"),
        ("REDESK_WECHAT_API_URL", "api.weixin.qq.com"),
        ("REDESK_EXTRA_DAYS_OFF", "2026-12-24,christmas"),
        ("REDESK_TICK_INTERVAL", "0"),
        ("REDESK_AUTO_CLOSE_DAYS", "0"),
        ("REDESK_DIGEST_HOUR", "24"),
        ("REDESK_MIN_REQUEST_LENGTH", "-1"),
        ("REDESK_SMALL_TALK_FILE", "/nonexistent/small_talk.txt"),
    ],
    ids=[
        "malformed-database",
        "unsupported-backend",
        "bad-redis",
        "plain-http-public",
        "non-numeric-port",
        "short-aes-key",
        "unknown-template-value",
        "template-fields-not-json",
        "api-url-without-scheme",
        "bad-day-off",
        "zero-tick",
        "zero-auto-close",
        "digest-hour-25",
        "negative-min-request-length",
        "missing-small-talk-file",
    ],
)
def test_a_bad_setting_is_refused_with_a_message_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # Given a malformed value
    monkeypatch.setenv(name, value)

    # When the settings are loaded
    with pytest.raises(SettingsError) as raised:
        load_all()

    # Then the error names the setting, on one line, without pydantic's noise
    message = str(raised.value)
    assert name in message
    assert "\n" not in message
    assert "errors.pydantic.dev" not in message


def test_an_unsupported_backend_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDESK_DATABASE_URL", "mysql://redesk@db/redesk")

    with pytest.raises(SettingsError, match="sqlite.*postgresql"):
        load_all()


def test_get_settings_raises_the_same_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDESK_REDIS_URL", "localhost:6379")

    with pytest.raises(SettingsError, match="REDESK_REDIS_URL"):
        get_settings()


def test_a_public_url_with_a_telegram_token_needs_a_webhook_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a webhook setup without its secret
    monkeypatch.setenv("REDESK_PUBLIC_URL", "https://desk.example.cn")
    monkeypatch.setenv("REDESK_TELEGRAM_TOKEN", "123:abc")

    # Then it is refused, naming the missing secret
    with pytest.raises(SettingsError, match="REDESK_TELEGRAM_WEBHOOK_SECRET"):
        load_all()

    # And with the secret it is accepted
    monkeypatch.setenv("REDESK_TELEGRAM_WEBHOOK_SECRET", "s3cret")
    assert telegram_of(load_all()).webhook_secret == "s3cret"


def test_a_public_url_without_telegram_needs_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDESK_PUBLIC_URL", "https://desk.example.cn")

    assert load_all().public_url == "https://desk.example.cn"


def test_telegram_is_on_exactly_when_its_token_is_set() -> None:
    assert not telegram_of(Settings(_env_file=None)).enabled  # type: ignore[call-arg]
    assert telegram_of(make_settings(telegram_token="123:abc", _env_file=None)).enabled


@pytest.mark.parametrize(
    ("app_id", "secret", "token", "on"),
    [
        ("wx123", "appsecret", "wxtoken", True),
        ("wx123", "appsecret", None, False),
        ("wx123", None, "wxtoken", False),
        (None, "appsecret", "wxtoken", False),
    ],
)
def test_wechat_is_on_only_with_app_id_secret_and_token(
    app_id: str | None, secret: str | None, token: str | None, on: bool
) -> None:
    settings = make_settings(
        wechat_app_id=app_id, wechat_app_secret=secret, wechat_token=token, _env_file=None
    )

    assert wechat_of(settings).enabled is on


def test_working_hours_must_be_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDESK_WORKDAY_START_HOUR", "18")
    monkeypatch.setenv("REDESK_WORKDAY_END_HOUR", "9")

    with pytest.raises(SettingsError, match="REDESK_WORKDAY_START_HOUR"):
        load_all()


def test_wechat_template_fields_are_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "REDESK_WECHAT_TEMPLATE_FIELDS",
        '{"thing1": "title", "character_string2": "number", "time3": "time"}',
    )

    fields = wechat_of(load_all()).template_fields

    assert fields == {"thing1": "title", "character_string2": "number", "time3": "time"}


def test_local_days_off_and_workdays_are_read_as_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date

    monkeypatch.setenv("REDESK_EXTRA_DAYS_OFF", "2026-12-24, 2026-12-31")
    monkeypatch.setenv("REDESK_EXTRA_WORKDAYS", "2026-12-26")

    settings = load_all()

    assert settings.days_off == {date(2026, 12, 24), date(2026, 12, 31)}
    assert settings.workdays == {date(2026, 12, 26)}
