"""Receiving Telegram updates: what redesk reads from an update's raw JSON (`classify`), storing
it in the inbox under its update_id before anything else happens, the webhook endpoint, and
`to_inbound`, which turns a stored update into the channel-neutral Inbound.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any, NamedTuple

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Update

from bot import metrics
from bot.channels.telegram.settings import CHANNEL, telegram_settings
from bot.http import BodyTooLarge, enqueue_inbound, read_body, runtime_of
from bot.inbound import Callback, Inbound
from storage import queries
from storage.db import session_scope
from storage.models import InboxStatus

logger = logging.getLogger(__name__)


#: A private chat's my_chat_member statuses meaning the person blocked the bot.
LEFT_STATUSES: frozenset[str] = frozenset({"kicked", "left"})


#: Largest webhook body accepted, in bytes.
WEBHOOK_BODY_LIMIT = 1024 * 1024


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
    if not isinstance(update_id, int) or isinstance(update_id, bool) or not 0 <= update_id < 2**63:
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
    except Exception as exc:  # whatever the library raises is the reason
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
        private = _object(member.get("chat")).get("type") == "private" and not changer.get("is_bot")
        return _user_id(changer, "my_chat_member") if private else None
    kind = "message" if data.get("message") is not None else "edited_message"
    message = _object(data.get(kind))
    sender = message.get("from")
    if not message or sender is None or _object(sender).get("is_bot"):
        return None
    text = message.get("text")
    if _object(message.get("chat")).get("type") != "private" and not (
        isinstance(text, str) and text.startswith("/")
    ):
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
    inbox_id = queries.add_inbox(
        session=session,
        channel=CHANNEL,
        natural_key=key,
        chat_id=chat or "-",
        payload=data,
        status=status,
        error=error,
    )
    if error and inbox_id is not None:
        logger.warning(
            "Telegram update %s cannot be parsed; kept as failed (inbox %s): %s",
            key,
            inbox_id,
            error,
        )
    return (None if error else chat), inbox_id is not None


def to_inbound(chat_id: str, payload: dict[str, Any]) -> Inbound:
    """An inbox row's update as the channel-neutral Inbound."""
    update = Update.de_json(payload, None)
    query = update.callback_query
    if query is not None:
        message = query.message
        card_text = getattr(message, "text", None) or ""
        return Inbound(
            channel=CHANNEL,
            chat_id=chat_id,
            pressed=True,
            display_name=query.from_user.full_name,
            callback=Callback(
                id=query.id,
                token=query.data or "",
                chat_id=str(message.chat.id) if message is not None else chat_id,
                message_id=message.message_id if message is not None else 0,
                message_text=card_text,
            ),
        )
    member = update.my_chat_member
    if member is not None:
        return Inbound(
            channel=CHANNEL,
            chat_id=chat_id,
            left=member.new_chat_member.status in LEFT_STATUSES,
            display_name=member.from_user.full_name,
        )
    edited = update.edited_message
    if edited is not None:
        return Inbound(
            channel=CHANNEL,
            chat_id=chat_id,
            text=edited.text or edited.caption or "",
            edit_of=f"{edited.chat.id}:{edited.message_id}",
            display_name=edited.from_user.full_name if edited.from_user else "",
        )
    message = update.message
    if message is None:
        return Inbound(channel=CHANNEL, chat_id=chat_id, unsupported=True)
    attachments = _attachments(message)
    words = message.text or message.caption or ""
    contact = message.contact
    own_phone = contact.phone_number[:30] if contact is not None and _own_contact(message) else None
    return Inbound(
        channel=CHANNEL,
        chat_id=chat_id,
        text=words,
        attachments=attachments,
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
    for paid_item in paid.paid_media if paid is not None else ():
        # A paid photo or video the bot may see; a preview of unbought media has no file.
        item = _file("photo", getattr(paid_item, "photo", None)) or _file(
            "video", getattr(paid_item, "video", None)
        )
        if item is not None:
            found.append(item)
    venue = message.venue
    location = venue.location if venue is not None else message.location
    if location is not None:
        found.append(
            {
                "kind": "location",
                "latitude": location.latitude,
                "longitude": location.longitude,
                "label": f"{venue.title} {venue.address}".strip() if venue else None,
            }
        )
    contact = message.contact
    if contact is not None and not _own_contact(message):
        name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
        found.append({"kind": "contact", "label": f"{name} {contact.phone_number}".strip()[:255]})
    return found


def _own_contact(message: Any) -> bool:
    """Whether the message shares the sender's own contact card (their phone number)."""
    contact = message.contact
    sender = message.from_user
    return bool(
        contact is not None
        and sender is not None
        and contact.user_id == sender.id
        and contact.phone_number
    )


async def webhook(request: Request) -> Response:
    """POST /telegram/webhook: checks the secret, stores the update, then answers 200.

    403 for a wrong or missing secret, 413 over 1 MB, 400 for what is not an Update (not a
    JSON object with an integer update_id, or not storable), 503 when the update cannot be
    stored (Telegram retries). Update types redesk does not handle are stored and answered
    200; so is an update python-telegram-bot cannot model, kept as failed with the reason.
    """
    runtime = runtime_of(request)
    own = telegram_settings(runtime.settings)
    secret = own.webhook_secret or ""
    given = request.headers.get("x-telegram-bot-api-secret-token", "")
    if not own.enabled or not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        metrics.INBOUND.labels(CHANNEL, "forbidden").inc()
        return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
    try:
        raw = await read_body(request, WEBHOOK_BODY_LIMIT)
    except BodyTooLarge:
        metrics.INBOUND.labels(CHANNEL, "too_large").inc()
        return JSONResponse({"ok": False, "error": "body too large"}, status_code=413)
    try:
        data = json.loads(raw)
        classified = classify(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        metrics.INBOUND.labels(CHANNEL, "bad").inc()
        reason = str(exc) if isinstance(exc, BadUpdate) else "not JSON"
        logger.warning(
            "Telegram webhook: a body that is not an Update (%d bytes): %s", len(raw), reason
        )
        return JSONResponse({"ok": False, "error": "not an Update"}, status_code=400)

    def store() -> tuple[str | None, bool]:
        with session_scope(runtime.engine) as session:
            return store_update(session, data, classified)

    try:
        chat, is_new = await asyncio.to_thread(store)
    except Exception:
        logger.exception("Could not store a Telegram update")
        return JSONResponse({"ok": False, "error": "unavailable"}, status_code=503)
    outcome = "unparseable" if classified.error else "stored"
    metrics.INBOUND.labels(CHANNEL, outcome if is_new else "duplicate").inc()
    if chat is not None and is_new:
        await enqueue_inbound(CHANNEL, chat)
    return JSONResponse({"ok": True})


#: The routes of the Telegram channel.
ROUTES: tuple[Route, ...] = (Route("/telegram/webhook", webhook, methods=["POST"]),)
