"""The Telegram channel's name and settings (REDESK_TELEGRAM_*)."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from bot.channels.base import ChannelSettings, http_url
from storage.settings import MIN_SECRET_LENGTH, Secret, Settings

#: The channel's name in people and inbox rows.
CHANNEL = "telegram"

#: The bot token's variable: its part after the colon is the secret (the bot id is public).
TOKEN_VARIABLE = "REDESK_TELEGRAM_TOKEN"


class TelegramSettings(ChannelSettings):
    """REDESK_TELEGRAM_*: the bot, where its API is, the webhook's secret and the committee's
    group chat."""

    model_config = SettingsConfigDict(
        env_prefix="REDESK_TELEGRAM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    #: Samples from the Bot API documentation (BotFather), refused in production.
    samples = frozenset(
        {
            "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11",
            "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        }
    )

    #: The bot's token from BotFather ("<bot id>:<secret>"); set: the channel is on.
    token: str | None = None
    #: Where every Bot API call goes (a local Bot API server, or the fake in tests).
    api_url: str = "https://api.telegram.org"
    #: The secret Telegram sends with each webhook call (needed with REDESK_PUBLIC_URL).
    webhook_secret: str | None = None
    #: The committee's group chat id: it receives the committee's cards.
    committee_chat: str | None = None
    #: The bot's username (without @), for the deep links `redesk centres links` prints;
    #: unset: asked of Telegram (getMe).
    bot_username: str | None = None

    _check_api_url = field_validator("api_url")(http_url)

    @property
    def enabled(self) -> bool:
        """Whether a bot token is set."""
        return bool(self.token)

    def secrets(self) -> list[Secret]:
        """The bot token and the webhook secret."""
        return [
            (TOKEN_VARIABLE, self.token, 1),
            ("REDESK_TELEGRAM_WEBHOOK_SECRET", self.webhook_secret, MIN_SECRET_LENGTH),
        ]

    def secret_part(self, name: str, value: str) -> str:
        """The bot token is judged by its secret half (the bot id before the colon is public)."""
        return value.split(":", 1)[-1] if name == TOKEN_VARIABLE else value

    def log_secrets(self) -> list[str]:
        """The token's secret half, which appears on its own in some library records."""
        return [self.token.split(":", 1)[1]] if self.token and ":" in self.token else []

    def check_with(self, settings: Settings) -> None:
        """A webhook (REDESK_PUBLIC_URL) needs its secret."""
        if settings.public_url and self.token and not self.webhook_secret:
            raise ValueError(
                "REDESK_TELEGRAM_WEBHOOK_SECRET is required when REDESK_PUBLIC_URL is set"
            )


def telegram_settings(settings: Settings) -> TelegramSettings:
    """The Telegram section of `settings` (read once)."""
    return settings.section(TelegramSettings)
