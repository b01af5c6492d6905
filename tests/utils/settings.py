"""Settings for tests, with the channels' sections given as keywords as the variables name
them (telegram_token=..., wechat_app_id=...)."""

from __future__ import annotations

from typing import Any

from bot.channels.telegram import TelegramSettings
from bot.channels.wechat import WeChatSettings
from storage.settings import Settings

#: Keyword prefix -> the section it belongs to.
SECTIONS: dict[str, type[Any]] = {"telegram_": TelegramSettings, "wechat_": WeChatSettings}


def make_settings(**values: Any) -> Settings:
    """`Settings(**core)` with each channel's keywords (`telegram_token`, ...) given to its
    section (read from no .env file) instead of read from the environment."""
    sections: dict[type[Any], dict[str, Any]] = {model: {} for model in SECTIONS.values()}
    core: dict[str, Any] = {}
    for name, value in values.items():
        prefix = next((prefix for prefix in SECTIONS if name.startswith(prefix)), None)
        if prefix is None:
            core[name] = value
        else:
            sections[SECTIONS[prefix]][name.removeprefix(prefix)] = value
    settings = Settings(**core)
    return settings.with_sections(
        *(model(_env_file=None, **given) for model, given in sections.items())
    )


def load_all() -> Settings:
    """load_settings() with every channel's section read, as each redesk process starts."""
    from bot.channels import registry
    from storage.settings import load_settings

    settings = load_settings()
    registry.check_sections(settings)
    return settings


def telegram_of(settings: Settings) -> TelegramSettings:
    """The Telegram section of `settings`."""
    return settings.section(TelegramSettings)


def wechat_of(settings: Settings) -> WeChatSettings:
    """The WeChat section of `settings`."""
    return settings.section(WeChatSettings)
