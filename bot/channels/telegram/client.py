"""python-telegram-bot's Bot on its own event loop thread, shared by the process's worker
threads (TelegramClient), and the token check.

All Bot API calls go to REDESK_TELEGRAM_API_URL. The Bot is asynchronous; redesk's workers are
threads, so each process runs one event loop thread for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from telegram import Bot
from telegram.error import (
    Forbidden,
    InvalidToken,
    TelegramError,
)
from telegram.request import HTTPXRequest

from bot.channels.telegram.settings import telegram_settings
from storage.settings import REDACTED, Settings, add_log_pattern

logger = logging.getLogger(__name__)

# The bot token in Bot API URLs, and the whole request and answer of every Bot API call in
# python-telegram-bot's debug records (message texts, names, phone numbers).
add_log_pattern(re.compile(r"/bot\d+:[A-Za-z0-9_-]+"), f"/bot{REDACTED}")
add_log_pattern(re.compile(r"(with parameters|with return value) `.*`", re.S), rf"\1 {REDACTED}")


#: Update types redesk asks Telegram for.
ALLOWED_UPDATES: tuple[str, ...] = (
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
)


#: Seconds of one getUpdates long poll.
POLL_TIMEOUT = 25


T = TypeVar("T")


class TelegramClient:
    """python-telegram-bot's Bot on its own event loop thread, called from worker threads."""

    def __init__(self, token: str, api_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="telegram", daemon=True)
        self._thread.start()
        base = api_url.rstrip("/")
        self._updates_url = f"{base}/bot{token}/getUpdates"
        self._updates_request = HTTPXRequest(connection_pool_size=2, read_timeout=POLL_TIMEOUT + 15)
        self.bot = Bot(
            token,
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=HTTPXRequest(
                connection_pool_size=32,
                read_timeout=15,
                write_timeout=15,
                connect_timeout=10,
                pool_timeout=10,
            ),
            get_updates_request=self._updates_request,
        )

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 90.0) -> T:
        """Runs a Bot coroutine on the client's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def get_raw_updates(
        self, *, offset: int, long_poll: int, allowed_updates: Sequence[str]
    ) -> list[Any]:
        """getUpdates answered as raw JSON, one item per update.

        Bot.get_updates parses the whole batch at once, so one update the library cannot
        model would fail the batch, and the offset would never move past it. This call goes
        through the same request object (and its error mapping), but leaves parsing to the
        caller, one update at a time.

        Raises:
            TelegramError: The call failed (network, server, conflict with a webhook).
        """
        # The Bot API reads parameters from the query string as from a form body.
        query = urlencode(
            {
                "offset": offset,
                "timeout": long_poll,
                "allowed_updates": json.dumps(list(allowed_updates)),
            }
        )
        result = await self._updates_request.post(
            f"{self._updates_url}?{query}", read_timeout=long_poll + 15
        )
        if not isinstance(result, list):
            raise TelegramError(f"getUpdates answered {type(result).__name__}, not a list")
        return result

    def get_me(self) -> dict[str, Any]:
        """The bot's own user (checks the token)."""
        me = self.run(self.bot.get_me())
        return {"id": me.id, "username": me.username or "", "name": me.full_name}

    def close(self) -> None:
        """Closes the HTTP connections and stops the loop thread."""
        try:
            self.run(self.bot.shutdown(), timeout=10)
        except Exception:  # closing is best effort
            logger.debug("Telegram client shutdown failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


_clients: dict[tuple[str, str], TelegramClient] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings) -> TelegramClient:
    """This process's client for the configured bot."""
    own = telegram_settings(settings)
    assert own.token
    key = (own.token, own.api_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = TelegramClient(*key)
            try:
                # initialize() checks the token (getMe) and makes shutdown() close the pools.
                client.run(client.bot.initialize(), timeout=60)
            except BaseException:
                client.close()
                raise
            _clients[key] = client
        return client


def close_clients() -> None:
    """Closes every client of this process (shutdown, tests)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def check_token(settings: Settings) -> dict[str, Any]:
    """getMe with the configured token.

    Raises:
        ValueError: Telegram refused the token, or could not be reached (message says which).
    """
    try:
        return get_client(settings).get_me()
    except (InvalidToken, Forbidden) as exc:
        raise ValueError(f"REDESK_TELEGRAM_TOKEN was refused by Telegram ({exc})") from None
    except TelegramError as exc:
        raise ValueError(
            f"Telegram at REDESK_TELEGRAM_API_URL could not be reached ({exc})"
        ) from None
