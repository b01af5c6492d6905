"""The WeCom channel's name and settings (REDESK_WECOM_*)."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from bot.channels.base import ChannelSettings, http_url
from storage.settings import MIN_SECRET_LENGTH, Secret, Settings, check_secrets

#: The channel's name in people and inbox rows.
CHANNEL = "wecom"

#: The EncodingAESKey of WeCom's worked example (refused in production).
SAMPLE_AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"


class WeComSettings(ChannelSettings):
    """REDESK_WECOM_*: the corp, the self-built app (its AgentId and Secret), the callback's
    Token and EncodingAESKey, and where the API is."""

    model_config = SettingsConfigDict(
        env_prefix="REDESK_WECOM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    #: The corp id (企业ID, "ww..."): also the ReceiveId inside every callback.
    corp_id: str | None = None
    #: The self-built app's AgentId.
    agent_id: int | None = None
    #: The app's Secret.
    secret: str | None = None
    #: The callback Token (接收消息 服务器配置).
    token: str | None = None
    #: The callback EncodingAESKey (43 characters); WeCom always encrypts.
    aes_key: str | None = None
    #: Where every API call goes (the fake in tests).
    api_url: str = "https://qyapi.weixin.qq.com"

    @field_validator("corp_id", "secret", "token", "aes_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("agent_id", mode="before")
    @classmethod
    def _empty_agent(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("aes_key")
    @classmethod
    def _check_aes_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 43:
            raise ValueError("an EncodingAESKey has 43 characters")
        return value

    _check_api_url = field_validator("api_url")(http_url)

    @property
    def enabled(self) -> bool:
        """Whether the corp id, AgentId, Secret, Token and EncodingAESKey are all set."""
        return bool(
            self.corp_id
            and self.agent_id is not None
            and self.secret
            and self.token
            and self.aes_key
        )

    def secrets(self) -> list[Secret]:
        """The app Secret, the callback Token and the EncodingAESKey."""
        return [
            ("REDESK_WECOM_SECRET", self.secret, 1),
            ("REDESK_WECOM_TOKEN", self.token, MIN_SECRET_LENGTH),
            ("REDESK_WECOM_AES_KEY", self.aes_key, 1),
        ]

    def check_production(self) -> None:
        """Weak or placeholder secrets are refused."""
        check_secrets(self.secrets(), samples=frozenset({SAMPLE_AES_KEY}))


def wecom_settings(settings: Settings) -> WeComSettings:
    """The WeCom section of `settings` (read once)."""
    return settings.section(WeComSettings)
