"""Sending on Telegram: within Telegram's limits for all processes together (bot.ratelimit),
waiting out 429s, marking people who blocked the bot unreachable, retrying network errors and
5xx, and splitting texts over 4,096 characters, remembering which parts went out.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from sqlmodel import Session
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from bot import cards
from bot.channels.base import PermanentSendError, TransientSendError, Unreachable
from bot.channels.split import split_text
from bot.channels.telegram.client import TelegramClient, get_client
from bot.channels.telegram.receive import SEND_METHODS
from bot.ratelimit import (
    TELEGRAM_GLOBAL_INTERVAL,
    TELEGRAM_GLOBAL_KEY,
    RateLimiter,
    make_limiter,
    telegram_slots,
)
from bot.texts import Button, Rendered
from storage import queries
from storage.models import OutboxMessage, Person, utcnow
from storage.settings import Settings
from workflow.cards import REFRESH_KEY

logger = logging.getLogger(__name__)


#: Longest text of one Telegram message.
MAX_MESSAGE = 4096

#: Sends are booked this much further apart than Telegram's overall limit allows: a message
#: reaches Telegram a little after its booked instant, and without a margin that jitter puts a
#: 31st message into one second now and then, which is a 429.
LIMIT_MARGIN = 1.05

#: Sends to one chat are booked this much further apart than its limit allows. The wider
#: margin lets a delivery use the slot it waited for even when its transaction (between the
#: wait and the call) is slow, instead of booking a second slot and wasting the first.
CHAT_MARGIN = 1.2

#: A chat slot waited for by `pace` is used by a call made at most this long after it; later,
#: a fresh slot is booked. Kept inside the chat margin of a private chat (0.2 s of 1.2 s).
PACED_VALID_SECONDS = 0.15

#: The overall slot waited for by `pace` is used by a call made at most this long after it
#: (within LIMIT_MARGIN of 1/30 s); later, the call books and waits for a fresh overall slot
#: only, keeping its chat slot: calls released together (e.g. by SQLite's write lock) must
#: not reach Telegram as a burst.
PACED_GLOBAL_VALID_SECONDS = 0.02

#: `pace` books a slot only if it comes within this many seconds; otherwise the delivery job
#: ends and is enqueued again for when the slot is due, so waiting holds no worker thread.
PACE_WITHIN = 0.25


#: Buttons per keyboard row.
BUTTONS_PER_ROW = 3


# --- sending --------------------------------------------------------------------------------


def _slots(chat: int) -> list[tuple[str, float]]:
    """The limiter slots of one call to `chat`, with redesk's margins."""
    return [
        (key, interval * (LIMIT_MARGIN if key == TELEGRAM_GLOBAL_KEY else CHAT_MARGIN))
        for key, interval in telegram_slots(chat)
    ]


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramSender:
    """Sends outbox messages through the Bot API within Telegram's limits."""

    def __init__(self, settings: Settings, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.limiter = limiter or make_limiter(settings.redis_url)
        #: Per thread: the chat whose slot `pace` already waited for, and when.
        self._local = threading.local()

    @property
    def client(self) -> TelegramClient:
        """This process's client (created on first use)."""
        return get_client(self.settings)

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        """Sends one outbox message: text parts, then attachments; answers and edits."""
        if row.key == "tg.callback":
            self._call(
                None,
                partial(
                    self.client.bot.answer_callback_query,
                    row.params["callback_id"],
                    text=message.text[:200],
                    show_alert=bool(row.params.get("alert")),
                ),
                callback=True,
            )
            return
        if row.key == "tg.edit":
            chat = int(row.params["chat_id"])
            self._call(
                chat,
                partial(
                    self.client.bot.edit_message_text,
                    message.text,
                    chat_id=chat,
                    message_id=int(row.params["message_id"]),
                ),
                edit=True,
            )
            return
        if row.key == REFRESH_KEY:
            self._refresh(session, person, row)
            return
        chat = int(person.external_id)
        parts = split_text(message.text, MAX_MESSAGE)
        media = list(row.params.get("attachments") or [])
        done = int(row.params.get("_parts_sent", 0))
        for index in range(done, len(parts) + len(media)):
            try:
                if index < len(parts):
                    markup = (
                        self._keyboard(session, person, message.buttons)
                        if index == len(parts) - 1
                        else None
                    )
                    part = parts[index]
                    sent = self._call(
                        chat, partial(self.client.bot.send_message, chat, part, reply_markup=markup)
                    )
                    if markup is not None and sent is not None:
                        cards.record(
                            session,
                            person,
                            row,
                            part,
                            message.buttons,
                            chat_id=str(chat),
                            message_id=int(sent.message_id),
                        )
                else:
                    item = media[index - len(parts)]
                    self._call(chat, partial(self._send_media, chat, item))
            except SkipPart:
                logger.warning("A Telegram attachment could not be sent; skipped")
            except (TransientSendError, Unreachable):
                row.params = {**row.params, "_parts_sent": index}
                raise
            row.params = {**row.params, "_parts_sent": index + 1}

    def _refresh(self, session: Session, person: Person, row: OutboxMessage) -> None:
        """Edits a stale card: the current state under its text, only the buttons still
        possible (editMessageText with a new keyboard, or none)."""
        stale = cards.update_for(session, person, row)
        if stale is None or stale.card.chat_id is None or stale.card.message_id is None:
            return
        chat = int(stale.card.chat_id)
        markup = self._keyboard(session, person, stale.message.buttons)
        self._call(
            chat,
            partial(
                self.client.bot.edit_message_text,
                stale.message.text[:MAX_MESSAGE],
                chat_id=chat,
                message_id=stale.card.message_id,
                reply_markup=markup,
            ),
            edit=True,
        )
        stale.applied(session)

    def pace(self, person: Person, row: OutboxMessage) -> float | None:
        """Books and waits for the slot of `row`'s first call, before any transaction opens,
        so the wait holds no database lock (on SQLite, the whole database's).

        Returns:
            None when the row may go now; else the seconds until its slot, which is further
            off than PACE_WITHIN and not booked: the caller comes back then.
        """
        if row.key in ("tg.callback", REFRESH_KEY):
            # A refresh of a card that is not stale calls nothing; one that is books its
            # slot when it calls.
            return None
        chat = int(row.params["chat_id"]) if row.key == "tg.edit" else int(person.external_id)
        booked, wait = self.limiter.try_reserve(_slots(chat), PACE_WITHIN)
        if not booked:
            return wait
        if wait > 0:
            time.sleep(wait)
        self._local.paced = (chat, time.monotonic())
        return None

    def _take_paced(self, chat: int) -> float | None:
        """Seconds since this thread waited for `chat`'s next call, if it did (and uses it)."""
        paced = getattr(self._local, "paced", None)
        self._local.paced = None
        if paced is None or paced[0] != chat:
            return None
        return float(time.monotonic() - paced[1])

    def _book_and_wait(self, chat: int | None) -> None:
        """Books and waits for a call to `chat` (None: the overall slot only)."""
        slots = (
            _slots(chat)
            if chat is not None
            else [(TELEGRAM_GLOBAL_KEY, TELEGRAM_GLOBAL_INTERVAL * LIMIT_MARGIN)]
        )
        wait = self.limiter.reserve(slots)
        if wait > 0:
            time.sleep(wait)

    def _call(
        self,
        chat: int | None,
        request: Callable[[], Coroutine[Any, Any, Any]],
        *,
        edit: bool = False,
        callback: bool = False,
    ) -> Any:
        """Runs one Bot API call within the limits, mapping its errors to send errors."""
        if chat is not None:
            late = self._take_paced(chat)
            if late is None or late >= PACED_VALID_SECONDS:
                self._book_and_wait(chat)
            elif late >= PACED_GLOBAL_VALID_SECONDS:
                self._book_and_wait(None)
        try:
            return self.client.run(request())
        except RetryAfter as exc:
            seconds = _seconds(exc.retry_after)
            if chat is not None:
                self.limiter.cooldown(telegram_slots(chat)[-1][0], seconds)
            raise TransientSendError(
                f"Telegram 429: retry after {seconds:g} s", retry_after=seconds
            ) from None
        except Forbidden as exc:
            if callback or edit:
                raise PermanentSendError(str(exc)) from None
            raise Unreachable(str(exc)) from None
        except BadRequest as exc:
            if edit and "not modified" in str(exc).lower():
                return None
            if callback and "too old" in str(exc).lower():
                return None
            if chat is not None and not edit and not callback and _is_media_error(exc):
                raise SkipPart(str(exc)) from None
            raise PermanentSendError(str(exc)) from None
        except (TimedOut, NetworkError) as exc:
            raise TransientSendError(f"Telegram: {type(exc).__name__}: {exc}") from None

    async def _send_media(self, chat: int, item: dict[str, Any]) -> Any:
        bot = self.client.bot
        kind = item.get("kind")
        if kind == "location":
            return await bot.send_location(
                chat, latitude=float(item["latitude"]), longitude=float(item["longitude"])
            )
        file_id = item.get("file_id")
        if not file_id:
            # A contact card has no file: the card's text names it.
            return None
        name = SEND_METHODS.get(str(kind), "send_document")
        if not name:
            return None
        return await getattr(bot, name)(chat, file_id)

    def _keyboard(
        self, session: Session, person: Person, buttons: Sequence[Button]
    ) -> InlineKeyboardMarkup | None:
        if not buttons:
            return None
        assert person.id is not None
        now = utcnow()
        keys = []
        for button in buttons:
            token = secrets.token_urlsafe(12)
            queries.add_button_token(
                session=session, token=token, person_id=person.id, action=button.action, at=now
            )
            keys.append(InlineKeyboardButton(button.label, callback_data=token))
        rows = [keys[i : i + BUTTONS_PER_ROW] for i in range(0, len(keys), BUTTONS_PER_ROW)]
        return InlineKeyboardMarkup(rows)


class SkipPart(Exception):
    """One attachment could not be sent (e.g. a file id from elsewhere); the rest goes on."""


def _is_media_error(exc: BadRequest) -> bool:
    return any(word in str(exc).lower() for word in ("file", "wrong type", "media"))
