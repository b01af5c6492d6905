"""The channels redesk talks on: one line per channel. Every layer that depends on a channel
(dispatch, app, actors, handlers, texts, export, the server and the CLI) loops over `CHANNELS`.

Import order: the channel packages import bot.texts, bot.handlers and bot.http, so those
modules must not import this one at their top; bot.texts and bot.handlers look the registry up
inside the functions that need it (`labels()`, `buttonless()`, `flood_checked()` below), by
which time every module is loaded.
"""

from __future__ import annotations

import importlib

from bot.channels.base import Channel
from storage.settings import Settings

#: Every channel, one line each: "<package>:<its Channel subclass>".
CHANNEL_CLASSES: tuple[str, ...] = (
    "bot.channels.web:WebChannel",
    "bot.channels.telegram:TelegramChannel",
    "bot.channels.wechat:WeChatChannel",
    "bot.channels.wecom:WeComChannel",
)


def _load(spec: str) -> Channel:
    module, name = spec.split(":")
    channel = getattr(importlib.import_module(module), name)()
    assert isinstance(channel, Channel), spec
    return channel


#: Every channel, in CHANNEL_CLASSES's order.
CHANNELS: tuple[Channel, ...] = tuple(_load(spec) for spec in CHANNEL_CLASSES)

#: Channel name -> channel.
by_name: dict[str, Channel] = {channel.name: channel for channel in CHANNELS}


def get(name: str) -> Channel | None:
    """The channel called `name`, or None."""
    return by_name.get(name)


def labels() -> dict[str, str]:
    """Channel name -> what people read for it."""
    return {channel.name: channel.label for channel in CHANNELS}


def buttonless() -> frozenset[str]:
    """Channels whose messages carry command texts to copy instead of buttons."""
    return frozenset(channel.name for channel in CHANNELS if not channel.buttons)


def flood_checked() -> frozenset[str]:
    """Channels whose floods the handlers limit."""
    return frozenset(channel.name for channel in CHANNELS if channel.flood_checked_by_handlers)


def texts() -> dict[str, str]:
    """The catalogue entries the channels add."""
    merged: dict[str, str] = {}
    for channel in CHANNELS:
        merged.update(channel.texts)
    return merged


def check_sections(settings: Settings) -> None:
    """Reads every channel's settings now, so that a malformed or refused one stops the
    process at start-up.

    Raises:
        storage.settings.SettingsError: one line naming the setting.
    """
    for channel in CHANNELS:
        channel.settings(settings)
