"""The WeChat official account (公众号) channel: callbacks in plain and safe mode,
customer-service and template messages, the custom menu, and fetching media before WeChat
forgets them.

- receive: callbacks checked (signature, replay, hostile XML), decrypted and stored; the
  endpoints; `to_inbound`.
- hooks: follow, QR code scans, unsubscribe, menu clicks, the customer-service window.
- client: wechatpy's client, its access token shared and refreshed by one process at a time.
- send: customer-service texts within the 48-hour window, template messages outside it.
- menu: the custom menu and `redesk wechat menu`.
- fetch: media downloaded into REDESK_MEDIA_DIR.
- settings: REDESK_WECHAT_*.

The names other layers and tests use are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.channels.base import Channel, Sender
from bot.channels.callbacks import (
    NONCE_PREFIX,
    REPLAY_WINDOW_SECONDS,
    CallbackRefused,
    check_nonce,
)
from bot.channels.wechat.client import RedeskWeChatClient, close_clients, get_client
from bot.channels.wechat.fetch import fetch_media
from bot.channels.wechat.hooks import WeChatHooks
from bot.channels.wechat.menu import MENU, MENU_HELP, MENU_MINE, MENU_REPORT, commands
from bot.channels.wechat.receive import (
    CALLBACK_BODY_LIMIT,
    ROUTES,
    SUCCESS,
    Parsed,
    check_request,
    decrypt,
    parse_callback,
    scene_of,
    signature,
    store_callback,
    to_inbound,
)
from bot.channels.wechat.send import (
    MAX_MESSAGE,
    WINDOW_HOURS,
    WINDOW_MESSAGES,
    WeChatSender,
    commands_footer,
    template_values,
)
from bot.channels.wechat.settings import (
    CHANNEL,
    TEMPLATE_VALUES,
    WeChatSettings,
    wechat_settings,
)
from storage.settings import Settings

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.runtime import Runtime


class WeChatChannel(WeChatHooks, Channel):
    """WeChat: no buttons (messages carry the commands to copy), no cards edited."""

    name = CHANNEL
    label = "微信公众号"
    settings_model = WeChatSettings
    buttons = False

    def describe(self, settings: Settings) -> str:
        """On with its callback, mode and template; or off with what switches it on."""
        own = wechat_settings(settings)
        if not own.enabled:
            return (
                "off (set REDESK_WECHAT_APP_ID, REDESK_WECHAT_APP_SECRET and "
                "REDESK_WECHAT_TOKEN to switch it on)"
            )
        mode = "safe mode, encrypted" if own.aes_key else "plain mode"
        window = (
            "template messages outside the 48-hour window"
            if own.template_id
            else "no REDESK_WECHAT_TEMPLATE_ID: messages outside the 48-hour window cannot be "
            "delivered"
        )
        return f"on, callback /wechat ({mode}; {window})"

    def routes(self) -> Sequence[BaseRoute]:
        """GET and POST /wechat."""
        return ROUTES

    def to_inbound(self, chat_id: str, payload: dict[str, Any]) -> Any:
        """The stored message as an Inbound (receive.to_inbound)."""
        return to_inbound(chat_id, payload)

    def sender(self, runtime: Runtime) -> Sender | None:
        """A WeChatSender while the channel is on."""
        return WeChatSender(runtime.settings) if self.enabled(runtime.settings) else None

    def has_media(self, settings: Settings) -> bool:
        """Media are fetched while the channel is on."""
        return self.enabled(settings)

    def fetch_media(self, settings: Settings, attachment: Any) -> str:
        """media/get (fetch.fetch_media)."""
        return fetch_media(settings, attachment)

    def close(self) -> None:
        """Forgets the API clients and those of the nonce memory."""
        close_clients()

    def commands(self) -> Any | None:
        """`redesk wechat menu`."""
        return commands()


__all__ = [
    "CALLBACK_BODY_LIMIT",
    "CHANNEL",
    "MAX_MESSAGE",
    "MENU",
    "MENU_HELP",
    "MENU_MINE",
    "MENU_REPORT",
    "NONCE_PREFIX",
    "REPLAY_WINDOW_SECONDS",
    "ROUTES",
    "SUCCESS",
    "TEMPLATE_VALUES",
    "WINDOW_HOURS",
    "WINDOW_MESSAGES",
    "CallbackRefused",
    "Parsed",
    "RedeskWeChatClient",
    "WeChatChannel",
    "WeChatHooks",
    "WeChatSender",
    "WeChatSettings",
    "check_nonce",
    "check_request",
    "close_clients",
    "commands_footer",
    "decrypt",
    "fetch_media",
    "get_client",
    "parse_callback",
    "scene_of",
    "signature",
    "store_callback",
    "template_values",
    "to_inbound",
    "wechat_settings",
]
