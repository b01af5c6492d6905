"""The Telegram channel, on python-telegram-bot's Bot client and types.

- client: the Bot on its own event loop thread, shared by the worker threads; the token check.
- receive: updates (webhook or polling) stored in the inbox under their update_id before
  anything else happens; the webhook endpoint; `to_inbound`.
- hooks: buttons carry short random tokens; a press is resolved and checked again on the
  server, answered, and its card edited in place.
- send: within Telegram's limits for all processes together, 429s waited out, blocked people
  marked unreachable, long texts split.
- poll: getUpdates long polling when there is no public URL; the committee group chat.
- fetch: attachments downloaded into REDESK_MEDIA_DIR.
- settings: REDESK_TELEGRAM_*.

The names other layers and tests use are re-exported here.
"""

from __future__ import annotations

import os

# Telegram durations (RetryAfter.retry_after) as timedelta, without the deprecation warning;
# set before python-telegram-bot is imported by the modules below.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bot.channels.base import Channel, ChannelError, Say, Sender, Stoppable
from bot.channels.telegram.client import (
    ALLOWED_UPDATES,
    POLL_TIMEOUT,
    TelegramClient,
    check_token,
    close_clients,
    get_client,
)
from bot.channels.telegram.fetch import fetch_media
from bot.channels.telegram.hooks import OPEN_CARD_KEY, TelegramHooks
from bot.channels.telegram.poll import OFFSET_KEY, Poller, ensure_committee_chat
from bot.channels.telegram.receive import (
    ROUTES,
    WEBHOOK_BODY_LIMIT,
    BadUpdate,
    Classified,
    chat_of,
    classify,
    parse_error,
    store_update,
    to_inbound,
)
from bot.channels.telegram.send import MAX_MESSAGE, SkipPart, TelegramSender
from bot.channels.telegram.settings import (
    CHANNEL,
    TelegramSettings,
    telegram_settings,
)
from storage.db import session_scope
from storage.settings import Settings

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.runtime import Runtime


class TelegramChannel(TelegramHooks, Channel):
    """Telegram: buttons and cards edited in place, a webhook or getUpdates polling."""

    name = CHANNEL
    label = "Telegram"
    settings_model = TelegramSettings
    buttons = True
    cards = True
    not_to_chat = frozenset({"tg.callback", "tg.edit"})

    def describe(self, settings: Settings) -> str:
        """Off, with what switches it on (the line of a channel that is on comes from start)."""
        if self.enabled(settings):
            return "on"
        return "off (set REDESK_TELEGRAM_TOKEN to switch it on)"

    def routes(self) -> Sequence[BaseRoute]:
        """POST /telegram/webhook."""
        return ROUTES

    def to_inbound(self, chat_id: str, payload: dict[str, Any]) -> Any:
        """The stored update as an Inbound (receive.to_inbound)."""
        return to_inbound(chat_id, payload)

    def sender(self, runtime: Runtime) -> Sender | None:
        """A TelegramSender while the channel is on."""
        return TelegramSender(runtime.settings) if self.enabled(runtime.settings) else None

    def has_media(self, settings: Settings) -> bool:
        """Attachments are fetched while the channel is on."""
        return self.enabled(settings)

    def fetch_media(self, settings: Settings, attachment: Any) -> str:
        """getFile, then the file (fetch.fetch_media)."""
        return fetch_media(settings, attachment)

    def start(
        self, runtime: Runtime, say: Say, enqueue: Callable[[str, str], None]
    ) -> Stoppable | None:
        """Checks the token, makes the committee chat a group, then sets the webhook (with
        REDESK_PUBLIC_URL) or starts polling; says which."""
        settings = runtime.settings
        own = telegram_settings(settings)
        try:
            me = check_token(settings)
        except ValueError as exc:
            raise ChannelError(str(exc)) from None
        if own.committee_chat:
            with session_scope(runtime.engine) as session:
                ensure_committee_chat(session, own.committee_chat)
        client = get_client(settings)
        if settings.public_url:
            url = f"{settings.public_url}/telegram/webhook"
            client.run(
                client.bot.set_webhook(
                    url, secret_token=own.webhook_secret, allowed_updates=list(ALLOWED_UPDATES)
                )
            )
            say(f"channel telegram: on as @{me['username']} (webhook {url})")
            return None
        client.run(client.bot.delete_webhook())
        poller = Poller(runtime, enqueue)
        poller.start()
        say(f"channel telegram: on as @{me['username']} (polling getUpdates)")
        return poller

    def close(self) -> None:
        """Closes the Bot clients of this process."""
        close_clients()


__all__ = [
    "ALLOWED_UPDATES",
    "CHANNEL",
    "MAX_MESSAGE",
    "OFFSET_KEY",
    "OPEN_CARD_KEY",
    "POLL_TIMEOUT",
    "ROUTES",
    "WEBHOOK_BODY_LIMIT",
    "BadUpdate",
    "Classified",
    "Poller",
    "SkipPart",
    "TelegramChannel",
    "TelegramClient",
    "TelegramHooks",
    "TelegramSender",
    "TelegramSettings",
    "chat_of",
    "check_token",
    "classify",
    "close_clients",
    "ensure_committee_chat",
    "fetch_media",
    "get_client",
    "parse_error",
    "store_update",
    "telegram_settings",
    "to_inbound",
]
