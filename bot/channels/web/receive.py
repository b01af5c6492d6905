"""The web channel: chat identities with bearer tokens, messages read by long polling."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from bot import cards
from bot.inbound import Inbound, Intake
from bot.texts import Rendered
from storage import queries
from storage.models import OutboxMessage, Person, utcnow
from workflow.cards import REFRESH_KEY

#: The channel's name in people and inbox rows.
CHANNEL = "web"

#: Longest client message id accepted.
MAX_CLIENT_ID = 100

#: Longest centre code accepted in a body (longer is no code: 400).
MAX_CENTRE = 64


class BadMessage(ValueError):
    """A web message body that is not of the documented form; the text says which field."""


def create_identity(session: Session, *, name: str, days: int, centre_id: int | None = None) -> str:
    """A new web chat identity (a resident of `centre_id`, when they came by a centre's link);
    returns its bearer token (only its digest is stored)."""
    person = Person(
        channel=CHANNEL,
        external_id=uuid.uuid4().hex,
        display_name=name.strip()[:100],
        centre_id=centre_id,
    )
    session.add(person)
    session.flush()
    assert person.id is not None
    token = secrets.token_urlsafe(32)
    queries.add_web_session(
        session=session,
        token=token,
        person_id=person.id,
        expires_at=utcnow() + timedelta(days=days),
    )
    return token


def parse_body(body: Any, max_text: int) -> tuple[str, dict[str, Any]]:
    """The client message id and the inbox payload of a POST /api/web/messages body.

    Raises:
        BadMessage: The body is not an object of the documented form.
    """
    if not isinstance(body, dict):
        raise BadMessage("body")
    try:
        # Text that is not valid Unicode (a lone surrogate) cannot be stored anywhere.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        raise BadMessage("body") from None
    client_id = body.get("id")
    if client_id is None:
        client_id = uuid.uuid4().hex
    if (
        not isinstance(client_id, str | int)
        or not str(client_id)
        or len(str(client_id)) > MAX_CLIENT_ID
    ):
        raise BadMessage("id")
    kinds = [key for key in ("text", "action", "intake", "centre") if key in body]
    if len(kinds) != 1:
        raise BadMessage("text")
    kind = kinds[0]
    value = body[kind]
    if kind == "centre":
        # The desk page opened by a centre's link (/desk?centre=CODE) for this identity.
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_CENTRE:
            raise BadMessage("centre")
        return str(client_id), {"centre": value.strip()}
    # Text length is the handlers' business (they answer with the limit); this only bounds it.
    if kind in ("text", "action"):
        if not isinstance(value, str) or len(value) > max_text * 4:
            raise BadMessage(kind)
        return str(client_id), {kind: value}
    if not isinstance(value, dict):
        raise BadMessage("intake")
    form = {field: value.get(field, "") for field in ("name", "phone", "text")}
    if (
        not all(isinstance(v, str) for v in form.values())
        or len(form["text"]) > max_text * 4
        or len(form["name"]) > 100
        or len(form["phone"]) > 30
    ):
        raise BadMessage("intake")
    return str(client_id), {"intake": form}


def to_inbound(chat_id: str, payload: dict[str, Any]) -> Inbound:
    """An inbox row's payload as the channel-neutral Inbound."""
    if "intake" in payload:
        form = payload["intake"]
        return Inbound(
            channel=CHANNEL,
            chat_id=chat_id,
            intake=Intake(name=form["name"], phone=form["phone"], text=form["text"]),
        )
    if "action" in payload:
        return Inbound(channel=CHANNEL, chat_id=chat_id, text=payload["action"], pressed=True)
    if "centre" in payload:
        return Inbound(channel=CHANNEL, chat_id=chat_id, scene=str(payload["centre"]))
    return Inbound(
        channel=CHANNEL,
        chat_id=chat_id,
        text=str(payload.get("text", "")),
        address=f"web:{payload['address']}" if payload.get("address") else "",
    )


class WebSender:
    """Delivers to a web identity by storing the message for its long poll."""

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        """Stores the message in the identity's sequence (same transaction as the outbox).

        A card with buttons is remembered by its seq; a refresh of a stale card becomes a
        message that `updates` the card's seq (nothing at all when the card is not stale).
        """
        assert person.id is not None and row.id is not None
        if row.key == REFRESH_KEY:
            stale = cards.update_for(session, person, row)
            if stale is None:
                return
            queries.add_web_message(
                session=session,
                person_id=person.id,
                outbox_id=row.id,
                text=stale.message.text,
                buttons=[button.as_dict() for button in stale.message.buttons],
                at=utcnow(),
                updates=stale.card.web_seq,
            )
            stale.applied(session)
            return
        sent = queries.add_web_message(
            session=session,
            person_id=person.id,
            outbox_id=row.id,
            text=message.text,
            buttons=[button.as_dict() for button in message.buttons],
            at=utcnow(),
        )
        cards.record(session, person, row, message.text, message.buttons, web_seq=sent.seq)
