"""The WeChat channel's name and settings (REDESK_WECHAT_*)."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from bot.channels.base import ChannelSettings, http_url
from storage.settings import MIN_SECRET_LENGTH, Secret, Settings, check_secrets

#: The channel's name in people and inbox rows.
CHANNEL = "wechat"

#: What a WeChat template field can be filled with (REDESK_WECHAT_TEMPLATE_FIELDS).
TEMPLATE_VALUES: tuple[str, ...] = ("title", "number", "status", "text", "time")


class WeChatSettings(ChannelSettings):
    """REDESK_WECHAT_*: the official account, its server token and EncodingAESKey, where its
    API is, and the template message used outside the customer-service window."""

    model_config = SettingsConfigDict(
        env_prefix="REDESK_WECHAT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    #: Samples from the message encryption docs and sample code, refused in production.
    samples = frozenset(
        {
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "QDG6eK",
        }
    )

    app_id: str | None = None
    app_secret: str | None = None
    #: The server Token (服务器配置) the callbacks are signed with.
    token: str | None = None
    #: The EncodingAESKey of safe mode (安全模式); unset: plain mode.
    aes_key: str | None = None
    #: Where every API call goes (the fake in tests).
    api_url: str = "https://api.weixin.qq.com"
    #: Template message sent when the 48-hour customer-service window is closed; unset: such
    #: messages wait until the person writes again.
    template_id: str | None = None
    #: Template field -> what fills it (title, number, status, text, time), as JSON.
    template_fields: dict[str, str] = {
        "first": "title",
        "keyword1": "number",
        "keyword2": "time",
        "remark": "text",
    }

    @field_validator("aes_key")
    @classmethod
    def _check_aes_key(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if len(value) != 43:
            raise ValueError("an EncodingAESKey has 43 characters")
        return value

    @field_validator("template_fields")
    @classmethod
    def _check_template_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(TEMPLATE_VALUES))
        if unknown:
            raise ValueError(f"unknown values {unknown}; use {', '.join(TEMPLATE_VALUES)}")
        if not value:
            raise ValueError("needs at least one field")
        return value

    _check_api_url = field_validator("api_url")(http_url)

    @property
    def enabled(self) -> bool:
        """Whether the app id, AppSecret and server Token are all set."""
        return bool(self.app_id and self.app_secret and self.token)

    def secrets(self) -> list[Secret]:
        """The AppSecret, the server Token and the EncodingAESKey."""
        return [
            ("REDESK_WECHAT_APP_SECRET", self.app_secret, 1),
            ("REDESK_WECHAT_TOKEN", self.token, MIN_SECRET_LENGTH),
            ("REDESK_WECHAT_AES_KEY", self.aes_key, 1),
        ]

    def check_production(self) -> None:
        """Weak secrets, and plain mode, are refused."""
        check_secrets(self.secrets())
        if self.enabled and not self.aes_key:
            # Plain mode signs the URL, not the body: whoever sees one callback URL (a proxy's
            # log, an http:// callback) can post messages in anyone's name under it.
            raise ValueError(
                "REDESK_WECHAT_AES_KEY is required for WeChat in production: set "
                "the official account to safe mode (安全模式) and its "
                "EncodingAESKey here (REDESK_ENV=production)"
            )


def wechat_settings(settings: Settings) -> WeChatSettings:
    """The WeChat section of `settings` (read once)."""
    return settings.section(WeChatSettings)
