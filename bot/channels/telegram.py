"""The Telegram channel, on python-telegram-bot's Bot client and types.

- Updates (webhook or getUpdates polling) are stored in the inbox under their update_id before
  anything else happens; `to_inbound` turns one into the channel-neutral Inbound.
- Buttons carry short random tokens (table button_tokens) instead of actions: a pressed button
  is resolved and checked again on the server, answered (an alert when refused) and, when it
  moved the request, its card is edited in place to show the new state and who acted.
- Sending respects Telegram's limits for all processes together (bot.ratelimit), waits out
  429s, marks people who blocked the bot unreachable, retries network errors and 5xx, and
  splits texts over 4,096 characters, remembering which parts went out.

All Bot API calls go to REDESK_TELEGRAM_API_URL. The Bot is asynchronous; redesk's workers are
threads, so each process runs one event loop thread for it (TelegramClient).
"""

from __future__ import annotations

import os

# Telegram durations (RetryAfter.retry_after) as timedelta, without the deprecation warning.
os.environ.setdefault("PTB_TIMEDELTA", "true")

import asyncio  # noqa: E402
import json
import logging
import mimetypes
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlencode

from sqlmodel import Session
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from bot import cards, media
from bot.channels.base import PermanentSendError, TransientSendError, Unreachable
from bot.handlers import Outcome
from bot.handlers.commands import parse
from bot.handlers.common import TEXT_ARGUMENT
from bot.inbound import Callback, Inbound
from bot.media import MEDIA_GONE
from bot.ratelimit import (
    TELEGRAM_GLOBAL_INTERVAL,
    TELEGRAM_GLOBAL_KEY,
    RateLimiter,
    make_limiter,
    telegram_slots,
)
from bot.texts import Button, Rendered, action_label, state_label, text
from storage import queries
from storage.db import session_scope
from storage.models import Attachment, InboxStatus, OutboxMessage, Person, Role, utcnow
from storage.settings import Settings
from workflow.cards import REFRESH_KEY
from workflow.service import Tx, person_label

logger = logging.getLogger(__name__)

#: The channel's name in people and inbox rows.
CHANNEL = "telegram"

#: Update types redesk asks Telegram for.
ALLOWED_UPDATES: tuple[str, ...] = (
    "message", "edited_message", "callback_query", "my_chat_member",
)

#: A private chat's my_chat_member statuses meaning the person blocked the bot.
LEFT_STATUSES: frozenset[str] = frozenset({"kicked", "left"})

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

#: Largest webhook body accepted, in bytes.
WEBHOOK_BODY_LIMIT = 1024 * 1024

#: Buttons per keyboard row.
BUTTONS_PER_ROW = 3

#: Seconds of one getUpdates long poll.
POLL_TIMEOUT = 25

#: The channel_state key of the getUpdates offset.
OFFSET_KEY = "telegram.offset"

#: The channel_state key prefix (then ".<person id>") of the card a person's press left open.
OPEN_CARD_KEY = "telegram.open_card"

#: Commands whose button asks for more (a department, a reason, a result) before acting.
FOLLOW_UP_COMMANDS: frozenset[str] = frozenset({"forward", *TEXT_ARGUMENT})

T = TypeVar("T")


class BadUpdate(ValueError):
    """A body that is not a Telegram Update, or one that cannot be stored at all."""


class Classified(NamedTuple):
    """What redesk reads from an update's raw JSON before it is handled."""

    #: The natural key: the update_id.
    key: str
    #: The user whose order it is handled in; None: nobody's message to handle.
    chat: str | None
    #: Why python-telegram-bot cannot model the update (it is kept as failed), or None.
    error: str | None


class TelegramClient:
    """python-telegram-bot's Bot on its own event loop thread, called from worker threads."""

    def __init__(self, token: str, api_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="telegram",
                                        daemon=True)
        self._thread.start()
        base = api_url.rstrip("/")
        self._updates_url = f"{base}/bot{token}/getUpdates"
        self._updates_request = HTTPXRequest(connection_pool_size=2,
                                             read_timeout=POLL_TIMEOUT + 15)
        self.bot = Bot(
            token,
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=HTTPXRequest(connection_pool_size=32, read_timeout=15, write_timeout=15,
                                 connect_timeout=10, pool_timeout=10),
            get_updates_request=self._updates_request,
        )

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 90.0) -> T:
        """Runs a Bot coroutine on the client's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def get_raw_updates(self, *, offset: int, long_poll: int,
                              allowed_updates: Sequence[str]) -> list[Any]:
        """getUpdates answered as raw JSON, one item per update.

        Bot.get_updates parses the whole batch at once, so one update the library cannot
        model would fail the batch, and the offset would never move past it. This call goes
        through the same request object (and its error mapping), but leaves parsing to the
        caller, one update at a time.

        Raises:
            TelegramError: The call failed (network, server, conflict with a webhook).
        """
        # The Bot API reads parameters from the query string as from a form body.
        query = urlencode({"offset": offset, "timeout": long_poll,
                           "allowed_updates": json.dumps(list(allowed_updates))})
        result = await self._updates_request.post(f"{self._updates_url}?{query}",
                                                  read_timeout=long_poll + 15)
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
        except Exception:  # noqa: BLE001 - closing is best effort
            logger.debug("Telegram client shutdown failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


_clients: dict[tuple[str, str], TelegramClient] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings) -> TelegramClient:
    """This process's client for the configured bot."""
    assert settings.telegram_token
    key = (settings.telegram_token, settings.telegram_api_url)
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
            f"Telegram at REDESK_TELEGRAM_API_URL could not be reached ({exc})") from None


# --- receiving ------------------------------------------------------------------------------


def classify(data: Any) -> Classified:
    """The natural key, the chat (ordering key) and the parse outcome of an update.

    Anything that is a JSON object with an integer update_id is an update: one that
    python-telegram-bot cannot model (Telegram and the library drift apart) is still stored,
    as failed with the parser's reason, so that it neither is lost nor blocks the updates
    after it. Its chat is read from the raw JSON, so it keeps its place in the person's order.

    Raises:
        BadUpdate: `data` is not an Update, or cannot be stored (an update_id out of range,
            text that is not valid Unicode, NaN).
    """
    update_id = data.get("update_id") if isinstance(data, dict) else None
    if not isinstance(update_id, int) or isinstance(update_id, bool) \
            or not 0 <= update_id < 2**63:
        raise BadUpdate("not an Update")
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise BadUpdate(f"cannot be stored ({type(exc).__name__})") from None
    error = parse_error(data)
    try:
        chat = chat_of(data)
    except ValueError as exc:
        chat, error = None, error or str(exc)
    return Classified(str(update_id), chat, error)


def parse_error(data: dict[str, Any]) -> str | None:
    """Why python-telegram-bot cannot model `data` as an Update, or None when it can."""
    try:
        Update.de_json(data, None)
    except Exception as exc:  # noqa: BLE001 - whatever the library raises is the reason
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


def chat_of(data: dict[str, Any]) -> str | None:
    """The user whose order an update is handled in, read from its raw JSON; None: stored
    and ignored.

    Raises:
        ValueError: The update is a person's, but its sender is no Telegram user id.
    """
    query = data.get("callback_query")
    if query is not None:
        return _user_id(_object(query).get("from"), "callback_query")
    if data.get("my_chat_member") is not None:
        member = _object(data["my_chat_member"])
        changer = _object(member.get("from"))
        # Only a person's own chat with the bot matters (blocked / restarted); groups do not.
        private = _object(member.get("chat")).get("type") == "private" \
            and not changer.get("is_bot")
        return _user_id(changer, "my_chat_member") if private else None
    kind = "message" if data.get("message") is not None else "edited_message"
    message = _object(data.get(kind))
    sender = message.get("from")
    if not message or sender is None or _object(sender).get("is_bot"):
        return None
    text = message.get("text")
    if _object(message.get("chat")).get("type") != "private" and \
            not (isinstance(text, str) and text.startswith("/")):
        # In a group only commands are for redesk; the rest is the members' conversation.
        return None
    return _user_id(sender, kind)


def _object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (its fields read as missing)."""
    return value if isinstance(value, dict) else {}


def _user_id(user: Any, kind: str) -> str:
    """A Telegram user id as text.

    Raises:
        ValueError: `user` has no id that is a positive integer of at most 20 digits.
    """
    user_id = _object(user).get("id")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id < 10**20:
        raise ValueError(f"{kind}.from.id is not a Telegram user id")
    return str(user_id)


def store_update(
    session: Session, data: dict[str, Any], classified: Classified | None = None
) -> tuple[str | None, bool]:
    """Stores an update in the inbox (a repeat is a no-op).

    An update python-telegram-bot cannot model is stored as failed with the parser's reason
    (`redesk inbox retry ID` hands it to the workers again, e.g. after an upgrade).

    Args:
        session: The caller's session (the caller commits).
        data: The update's JSON.
        classified: `classify(data)`, when the caller has it already (not parsed twice).

    Returns:
        The chat to handle now (None when the update is ignored or failed) and whether it
        was new.
    """
    key, chat, error = classified or classify(data)
    status = InboxStatus.FAILED if error else InboxStatus.PENDING if chat else InboxStatus.DONE
    inbox_id = queries.add_inbox(session=session, channel=CHANNEL, natural_key=key,
                                 chat_id=chat or "-", payload=data, status=status, error=error)
    if error and inbox_id is not None:
        logger.warning("Telegram update %s cannot be parsed; kept as failed (inbox %s): %s",
                       key, inbox_id, error)
    return (None if error else chat), inbox_id is not None


def to_inbound(chat_id: str, payload: dict[str, Any]) -> Inbound:
    """An inbox row's update as the channel-neutral Inbound."""
    update = Update.de_json(payload, None)
    query = update.callback_query
    if query is not None:
        message = query.message
        card_text = getattr(message, "text", None) or ""
        return Inbound(
            channel=CHANNEL, chat_id=chat_id, pressed=True,
            display_name=query.from_user.full_name,
            callback=Callback(
                id=query.id, token=query.data or "",
                chat_id=str(message.chat.id) if message is not None else chat_id,
                message_id=message.message_id if message is not None else 0,
                message_text=card_text,
            ),
        )
    member = update.my_chat_member
    if member is not None:
        return Inbound(channel=CHANNEL, chat_id=chat_id,
                       left=member.new_chat_member.status in LEFT_STATUSES,
                       display_name=member.from_user.full_name)
    edited = update.edited_message
    if edited is not None:
        return Inbound(channel=CHANNEL, chat_id=chat_id,
                       text=edited.text or edited.caption or "",
                       edit_of=f"{edited.chat.id}:{edited.message_id}",
                       display_name=edited.from_user.full_name if edited.from_user else "")
    message = update.message
    if message is None:
        return Inbound(channel=CHANNEL, chat_id=chat_id, unsupported=True)
    attachments = _attachments(message)
    words = message.text or message.caption or ""
    contact = message.contact
    own_phone = contact.phone_number[:30] if contact is not None and _own_contact(message) \
        else None
    return Inbound(
        channel=CHANNEL, chat_id=chat_id, text=words, attachments=attachments,
        origin=f"{message.chat.id}:{message.message_id}",
        display_name=message.from_user.full_name if message.from_user else "",
        own_phone=own_phone,
        unsupported=not words and not attachments and own_phone is None,
    )


#: Message fields that carry one file -> the attachment kind it becomes, and the Bot API
#: method that sends it again by file id ("" : not sent again). Every field of the Bot API
#: Message that holds a file a resident could mean as evidence is here; a sticker (a picture
#: from a set, not of the problem) and a story (no file, only a reference) are not, so they
#: are answered 暂不支持, like dice, polls, games and the rest. A live photo is taken twice:
#: its still picture as a photo (sent on with the card) and its motion as `live_photo`
#: (fetched and kept; sendLivePhoto would need both files together, which one attachment
#: row does not hold).
FILE_KINDS: tuple[tuple[str, str, str], ...] = (
    ("photo", "photo", "send_photo"),
    ("live_photo", "live_photo", ""),
    ("video", "video", "send_video"),
    ("video_note", "video_note", "send_video_note"),
    ("animation", "animation", "send_animation"),
    ("audio", "audio", "send_audio"),
    ("voice", "voice", "send_voice"),
    ("document", "document", "send_document"),
)

#: Attachment kind -> the Bot method sending it by file id (others go as documents).
SEND_METHODS: dict[str, str] = {kind: method for _, kind, method in FILE_KINDS}


def _file(kind: str, value: Any) -> dict[str, Any] | None:
    """One attachment dict from a Message field's value (a PhotoSize list or a file)."""
    if isinstance(value, tuple | list):
        if not value:
            return None
        value = max(value, key=lambda size: (size.width * size.height, size.file_size or 0))
    file_id = getattr(value, "file_id", None)
    if not file_id:
        return None
    found: dict[str, Any] = {"kind": kind, "file_id": file_id}
    for name in ("file_name", "mime_type"):
        detail = getattr(value, name, None)
        if detail:
            found[name] = detail
    return found


def _attachments(message: Any) -> list[dict[str, Any]]:
    """The files, paid media, location or venue, and someone's contact card of a message."""
    found: list[dict[str, Any]] = []
    for field_name, kind, _ in FILE_KINDS:
        if field_name == "document" and message.animation is not None:
            # Telegram sets `document` too for an animation (backward compatibility).
            continue
        value = getattr(message, field_name, None)
        item = _file(kind, value)
        if item is not None:
            found.append(item)
        still = _file("photo", value.photo) if kind == "live_photo" and value else None
        if still is not None:
            found.append(still)
    paid = message.paid_media
    for paid_item in (paid.paid_media if paid is not None else ()):
        # A paid photo or video the bot may see; a preview of unbought media has no file.
        item = _file("photo", getattr(paid_item, "photo", None)) or \
            _file("video", getattr(paid_item, "video", None))
        if item is not None:
            found.append(item)
    venue = message.venue
    location = venue.location if venue is not None else message.location
    if location is not None:
        found.append({"kind": "location", "latitude": location.latitude,
                      "longitude": location.longitude,
                      "label": f"{venue.title} {venue.address}".strip() if venue else None})
    contact = message.contact
    if contact is not None and not _own_contact(message):
        name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
        found.append({"kind": "contact",
                      "label": f"{name} {contact.phone_number}".strip()[:255]})
    return found


def _own_contact(message: Any) -> bool:
    """Whether the message shares the sender's own contact card (their phone number)."""
    contact = message.contact
    sender = message.from_user
    return bool(contact is not None and sender is not None and contact.user_id == sender.id
                and contact.phone_number)


class TelegramHooks:
    """Button presses: resolve the token before handling; answer and edit the card after."""

    def prepare(self, tx: Tx, person: Person, inbound: Inbound) -> Inbound | None:
        """The pressed button's action as the Inbound's text, or None for a forged/stale one."""
        if inbound.left is not None:
            # Blocked: nothing more is sent to their chat (a later message of theirs, or a
            # restart, makes them reachable again). Nothing is answered either way.
            person.unreachable = inbound.left
            tx.session.add(person)
            return None
        callback = inbound.callback
        if callback is None:
            return inbound
        row = queries.get_button_token(session=tx.session, token=callback.token[:64])
        if row is not None and row.person_id != person.id:
            owner = queries.get_person(session=tx.session, person_id=row.person_id)
            # A button in a committee group may be pressed by anyone in it (rights are
            # checked by the workflow); any other button only by the person it was sent to.
            if owner is None or owner.role != Role.GROUP or owner.external_id != callback.chat_id:
                row = None
        if row is None:
            tx.notify(person, "tg.callback", callback_id=callback.id,
                      message_key="error.stale_button", message_params={}, alert=True)
            return None
        return replace(inbound, text=row.action)

    def finish(self, tx: Tx, person: Person, inbound: Inbound, outcome: Outcome) -> None:
        """Answers the callback (an alert with the reason when refused) and edits the card."""
        callback = inbound.callback
        if callback is None:
            if outcome.error is None:
                # A typed reason or result may complete what a pressed card asked for.
                self._edit_open_card(tx, person)
            return
        if outcome.error is not None:
            refusal = next((row for row in tx.outbox if row.person_id == person.id
                            and row.key.startswith("error.")), None)
            key, params = ("error.stale_button", {}) if refusal is None else \
                (refusal.key, dict(refusal.params))
            if refusal is not None:
                # The refusal is shown as an alert on the button instead of a chat message.
                tx.outbox.remove(refusal)
                if refusal.id is None:
                    tx.session.expunge(refusal)
                else:
                    tx.session.delete(refusal)
            tx.notify(person, "tg.callback", callback_id=callback.id, message_key=key,
                      message_params=params, alert=True)
            return
        tx.notify(person, "tg.callback", callback_id=callback.id, message_key="tg.pressed",
                  message_params={}, alert=False)
        if tx.moved and callback.message_id:
            number, action, state, _ = tx.moved[-1]
            line = text("line.acted", by=person_label(person),
                        action=action_label(action), state=state_label(state))
            tx.notify(person, "tg.edit", chat_id=callback.chat_id, message_id=callback.message_id,
                      text=f"{callback.message_text}\n\n{line}"[:MAX_MESSAGE])
            # This edit says who acted: the card's refresh (queued by the move) leaves it be.
            cards.close_at(tx.session, CHANNEL, callback.chat_id, callback.message_id)
            self._edit_open_card(tx, person, pressed=callback)
        elif callback.message_id:
            self._remember_open_card(tx, person, inbound.text, callback)

    def _remember_open_card(self, tx: Tx, person: Person, action: str,
                            callback: Callback) -> None:
        """A press that asked for more (转单's department picker, a reason or a result) left
        its card as it was: remember the card, to edit it once the request moves."""
        command = parse(action)
        if command is None or command.rest or not command.first or \
                command.name not in FOLLOW_UP_COMMANDS:
            return
        card = {"number": command.first.upper(), "chat_id": callback.chat_id,
                "message_id": callback.message_id, "text": callback.message_text}
        queries.set_channel_state(session=tx.session, key=f"{OPEN_CARD_KEY}.{person.id}",
                                  value=json.dumps(card, ensure_ascii=False))

    def _edit_open_card(self, tx: Tx, person: Person, pressed: Callback | None = None) -> None:
        """Edits the card remembered by `_remember_open_card` if its request moved now."""
        key = f"{OPEN_CARD_KEY}.{person.id}"
        stored = queries.get_channel_state(session=tx.session, key=key) if tx.moved else None
        if not stored:
            return
        card = json.loads(stored)
        moved = [entry for entry in tx.moved if entry[0] == card["number"]]
        if not moved:
            return
        queries.set_channel_state(session=tx.session, key=key, value="")
        if pressed is not None and (pressed.chat_id, pressed.message_id) == \
                (card["chat_id"], card["message_id"]):
            return
        _, action, state, _ = moved[-1]
        line = text("line.acted", by=person_label(person), action=action_label(action),
                    state=state_label(state))
        tx.notify(person, "tg.edit", chat_id=card["chat_id"], message_id=card["message_id"],
                  text=f"{card['text']}\n\n{line}"[:MAX_MESSAGE])
        cards.close_at(tx.session, CHANNEL, str(card["chat_id"]), int(card["message_id"]))


# --- sending --------------------------------------------------------------------------------


def split_text(message: str, limit: int = MAX_MESSAGE) -> list[str]:
    """A text cut into Telegram-sized parts, at line breaks where possible."""
    if len(message) <= limit:
        return [message]
    parts: list[str] = []
    rest = message
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit)
        if cut <= limit // 2:
            cut = limit
        parts.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest:
        parts.append(rest)
    return parts


def _slots(chat: int) -> list[tuple[str, float]]:
    """The limiter slots of one call to `chat`, with redesk's margins."""
    return [(key, interval * (LIMIT_MARGIN if key == TELEGRAM_GLOBAL_KEY else CHAT_MARGIN))
            for key, interval in telegram_slots(chat)]


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

    def send(
        self, session: Session, person: Person, message: Rendered, row: OutboxMessage
    ) -> None:
        """Sends one outbox message: text parts, then attachments; answers and edits."""
        if row.key == "tg.callback":
            self._call(None, partial(self.client.bot.answer_callback_query,
                                     row.params["callback_id"], text=message.text[:200],
                                     show_alert=bool(row.params.get("alert"))), callback=True)
            return
        if row.key == "tg.edit":
            chat = int(row.params["chat_id"])
            self._call(chat, partial(self.client.bot.edit_message_text, message.text,
                                     chat_id=chat, message_id=int(row.params["message_id"])),
                       edit=True)
            return
        if row.key == REFRESH_KEY:
            self._refresh(session, person, row)
            return
        chat = int(person.external_id)
        parts = split_text(message.text)
        media = list(row.params.get("attachments") or [])
        done = int(row.params.get("_parts_sent", 0))
        for index in range(done, len(parts) + len(media)):
            try:
                if index < len(parts):
                    markup = self._keyboard(session, person, message.buttons) \
                        if index == len(parts) - 1 else None
                    part = parts[index]
                    sent = self._call(chat, partial(self.client.bot.send_message, chat, part,
                                                    reply_markup=markup))
                    if markup is not None and sent is not None:
                        cards.record(session, person, row, part, message.buttons,
                                     chat_id=str(chat), message_id=int(sent.message_id))
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
        self._call(chat, partial(self.client.bot.edit_message_text,
                                 stale.message.text[:MAX_MESSAGE], chat_id=chat,
                                 message_id=stale.card.message_id, reply_markup=markup),
                   edit=True)
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
        slots = _slots(chat) if chat is not None else \
            [(TELEGRAM_GLOBAL_KEY, TELEGRAM_GLOBAL_INTERVAL * LIMIT_MARGIN)]
        wait = self.limiter.reserve(slots)
        if wait > 0:
            time.sleep(wait)

    def _call(self, chat: int | None, request: Callable[[], Coroutine[Any, Any, Any]], *,
              edit: bool = False, callback: bool = False) -> Any:
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
            raise TransientSendError(f"Telegram 429: retry after {seconds:g} s",
                                     retry_after=seconds) from None
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
            return await bot.send_location(chat, latitude=float(item["latitude"]),
                                           longitude=float(item["longitude"]))
        file_id = item.get("file_id")
        if not file_id:
            # A contact card has no file: the card's text names it.
            return None
        name = SEND_METHODS.get(str(kind), "send_document")
        if not name:
            return None
        return await getattr(bot, name)(chat, file_id)

    def _keyboard(self, session: Session, person: Person,
                  buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
        if not buttons:
            return None
        assert person.id is not None
        now = utcnow()
        keys = []
        for button in buttons:
            token = secrets.token_urlsafe(12)
            queries.add_button_token(session=session, token=token, person_id=person.id,
                                     action=button.action, at=now)
            keys.append(InlineKeyboardButton(button.label, callback_data=token))
        rows = [keys[i:i + BUTTONS_PER_ROW] for i in range(0, len(keys), BUTTONS_PER_ROW)]
        return InlineKeyboardMarkup(rows)


class SkipPart(Exception):
    """One attachment could not be sent (e.g. a file id from elsewhere); the rest goes on."""


def _is_media_error(exc: BadRequest) -> bool:
    return any(word in str(exc).lower() for word in ("file", "wrong type", "media"))


# --- polling and webhook ---------------------------------------------------------------------


class Poller(threading.Thread):
    """getUpdates long polling with the offset persisted, so a restart neither loses nor
    repeats updates (and a repeat would be deduplicated by update_id anyway)."""

    def __init__(self, runtime: Any, enqueue: Any) -> None:
        super().__init__(name="telegram-poller", daemon=True)
        self.runtime = runtime
        self.enqueue = enqueue
        self.stopping = threading.Event()

    def run(self) -> None:
        """Polls until stopped; network trouble is retried with backoff."""
        client = get_client(self.runtime.settings)
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                with session_scope(self.runtime.engine) as session:
                    offset = int(queries.get_channel_state(session=session, key=OFFSET_KEY) or 0)
                updates = client.run(client.get_raw_updates(
                    offset=offset, long_poll=POLL_TIMEOUT, allowed_updates=ALLOWED_UPDATES,
                ), timeout=POLL_TIMEOUT + 30)
                self._store(updates)
                backoff = 1.0
            except Exception:  # noqa: BLE001 - the poller must outlive any failure
                logger.warning("Telegram polling failed; retrying in %.0f s", backoff,
                               exc_info=True)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _store(self, updates: list[Any]) -> None:
        """Stores a getUpdates batch, each update on its own, and moves the offset past it."""
        if not updates:
            return
        chats: list[str] = []
        with session_scope(self.runtime.engine) as session:
            newest = -1
            for data in updates:
                update_id = data.get("update_id") if isinstance(data, dict) else None
                if isinstance(update_id, int) and not isinstance(update_id, bool):
                    # Even one that cannot be stored is confirmed: asking again gives it again.
                    newest = max(newest, update_id)
                try:
                    classified = classify(data)
                except BadUpdate as exc:
                    # Telegram never sends these; if it did, skipping is all that can be done.
                    logger.warning("getUpdates returned an item that cannot be stored (%s); "
                                   "skipped", exc)
                    continue
                chat, is_new = store_update(session, data, classified)
                if chat and is_new:
                    chats.append(chat)
            if newest >= 0:
                queries.set_channel_state(session=session, key=OFFSET_KEY,
                                          value=str(newest + 1))
        for chat in dict.fromkeys(chats):
            self.enqueue(CHANNEL, chat)

    def stop(self) -> None:
        """Asks the poller to stop after the current long poll."""
        self.stopping.set()


def ensure_committee_chat(session: Session, chat_id: str) -> None:
    """The committee group chat as a person of role group (it receives the committee's cards)."""
    person = queries.get_or_create_person(session=session, channel=CHANNEL,
                                          external_id=str(chat_id), display_name="党委群")
    if person.role != Role.GROUP:
        person.role = Role.GROUP
        session.add(person)


# --- media ----------------------------------------------------------------------------------


def fetch_media(settings: Settings, attachment: Attachment) -> str:
    """Downloads one attachment (getFile, then the file) into REDESK_MEDIA_DIR.

    Returns:
        Its stored path, or MEDIA_GONE when Telegram will not give it (unknown, too big).

    Raises:
        TransientSendError: Telegram could not be reached (try again later).
    """
    client = get_client(settings)

    async def download() -> tuple[bytes, str, str]:
        found = await client.bot.get_file(str(attachment.file_id))
        content = bytes(await found.download_as_bytearray())
        kind = attachment.mime_type or mimetypes.guess_type(found.file_path or "")[0] or ""
        return content, kind, found.file_path or ""

    try:
        content, kind, path = client.run(download())
    except (BadRequest, Forbidden, InvalidToken) as exc:
        logger.warning("Telegram media of attachment %s is gone (%s)", attachment.id, exc)
        return MEDIA_GONE
    except (TimedOut, NetworkError) as exc:
        raise TransientSendError(f"Telegram media: {type(exc).__name__}") from None
    return media.store(settings.media_dir, attachment, content, kind or _KIND_TYPES.get(
        attachment.kind, "application/octet-stream"), file_name=path.rsplit("/", 1)[-1])


#: A content type for an attachment kind when Telegram does not say.
_KIND_TYPES: dict[str, str] = {
    "photo": "image/jpeg", "live_photo": "video/mp4", "voice": "audio/ogg",
    "video": "video/mp4", "video_note": "video/mp4", "animation": "video/mp4",
    "audio": "audio/mpeg",
}
