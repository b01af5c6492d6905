"""The WeCom (企业微信) self-built app channel: members (UserIDs) of the corp who work the
desk; residents stay on WeChat, Telegram or the web.

- receive: callbacks checked (msg_signature, replay, corp, hostile XML), decrypted and stored;
  GET/POST /wecom; `to_inbound`.
- hooks: pressed card buttons resolved from one-time tokens, the card updated afterwards.
- cards: messages with buttons as button_interaction template cards.
- client: wechatpy's enterprise client on the API, its access token shared and refreshed by one
  process at a time.
- send: texts, cards and card updates within the per-member limit.
- fetch: media downloaded into REDESK_MEDIA_DIR.
- settings: REDESK_WECOM_*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import requests

from bot.channels.base import Channel, ChannelError, Say, Sender, Stoppable
from bot.channels.callbacks import REPLAY_WINDOW_SECONDS, CallbackRefused
from bot.channels.wecom.client import (
    ERR_INVALID_CORP,
    ERR_INVALID_SECRET,
    ApiError,
    WeComClient,
    close_clients,
    get_client,
)
from bot.channels.wecom.fetch import fetch_media
from bot.channels.wecom.hooks import OPEN_CARD_KEY, WeComHooks
from bot.channels.wecom.receive import (
    CALLBACK_BODY_LIMIT,
    ROUTES,
    Parsed,
    TemplateCardEvent,
    parse_callback,
    store_callback,
    to_inbound,
    verify_url,
)
from bot.channels.wecom.send import (
    CARD_STATE_KEY,
    MAX_MESSAGE,
    MEMBER_PER_MINUTE,
    UPDATE_KEY,
    WeComSender,
    member_slots,
)
from bot.channels.wecom.settings import CHANNEL, WeComSettings, wecom_settings
from storage.settings import Settings

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.runtime import Runtime


class WeComChannel(WeComHooks, Channel):
    """WeCom: template cards with buttons, updated after a press and refreshed when stale."""

    name = CHANNEL
    label = "企业微信"
    settings_model = WeComSettings
    buttons = True
    cards = True
    not_to_chat = frozenset({UPDATE_KEY})
    texts = {
        UPDATE_KEY: "{replace_name}",
        "wecom.acted": "已{action} · {by}",
        "wecom.refused": "未能办理，详见消息",
    }

    def describe(self, settings: Settings) -> str:
        """On with its callback and app, or off with what switches it on."""
        own = wecom_settings(settings)
        if not own.enabled:
            return (
                "off (set REDESK_WECOM_CORP_ID, REDESK_WECOM_AGENT_ID, REDESK_WECOM_SECRET, "
                "REDESK_WECOM_TOKEN and REDESK_WECOM_AES_KEY to switch it on)"
            )
        return f"on, callback /wecom (corp {own.corp_id}, agent {own.agent_id})"

    def routes(self) -> Sequence[BaseRoute]:
        """GET and POST /wecom."""
        return ROUTES

    def to_inbound(self, chat_id: str, payload: dict[str, Any]) -> Any:
        """The stored message as an Inbound (receive.to_inbound)."""
        return to_inbound(chat_id, payload)

    def sender(self, runtime: Runtime) -> Sender | None:
        """A WeComSender while the channel is on."""
        return WeComSender(runtime.settings) if self.enabled(runtime.settings) else None

    def has_media(self, settings: Settings) -> bool:
        """Media are fetched while the channel is on."""
        return self.enabled(settings)

    def fetch_media(self, settings: Settings, attachment: Any) -> str:
        """media/get (fetch.fetch_media)."""
        return fetch_media(settings, attachment)

    def start(
        self, runtime: Runtime, say: Say, enqueue: Callable[[str, str], None]
    ) -> Stoppable | None:
        """Checks the corp id and Secret with gettoken, then says the channel's line."""
        settings = runtime.settings
        if self.enabled(settings):
            check_credentials(settings)
        say(f"channel {self.name}: {self.describe(settings)}")
        return None

    def close(self) -> None:
        """Forgets the API clients."""
        close_clients()


def check_credentials(settings: Settings) -> None:
    """Fetches a token once.

    Raises:
        ChannelError: WeCom refused the corp id or Secret, or could not be reached.
    """
    try:
        get_client(settings).fetch_token()
    except ApiError as exc:
        if exc.errcode in (ERR_INVALID_SECRET, ERR_INVALID_CORP, 41002, 41004, 40091):
            raise ChannelError(
                f"WeCom refused REDESK_WECOM_CORP_ID or REDESK_WECOM_SECRET (errcode "
                f"{exc.errcode}): check the corp id and the app's Secret"
            ) from None
        raise ChannelError(f"WeCom gettoken failed: {exc}") from None
    except requests.RequestException as exc:
        raise ChannelError(
            f"WeCom could not be reached at REDESK_WECOM_API_URL ({type(exc).__name__})"
        ) from None


__all__ = [
    "CALLBACK_BODY_LIMIT",
    "CARD_STATE_KEY",
    "CHANNEL",
    "MAX_MESSAGE",
    "MEMBER_PER_MINUTE",
    "OPEN_CARD_KEY",
    "REPLAY_WINDOW_SECONDS",
    "ROUTES",
    "UPDATE_KEY",
    "ApiError",
    "CallbackRefused",
    "Parsed",
    "TemplateCardEvent",
    "WeComChannel",
    "WeComClient",
    "WeComHooks",
    "WeComSender",
    "WeComSettings",
    "check_credentials",
    "close_clients",
    "fetch_media",
    "get_client",
    "member_slots",
    "parse_callback",
    "store_callback",
    "to_inbound",
    "verify_url",
    "wecom_settings",
]
