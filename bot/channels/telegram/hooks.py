"""Telegram's work around the handlers: buttons carry short random tokens (table button_tokens)
instead of actions; a pressed button is resolved and checked again on the server, answered (an
alert when refused) and, when it moved the request, its card is edited in place to show the new
state and who acted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from bot import cards
from bot.channels.telegram.send import MAX_MESSAGE
from bot.channels.telegram.settings import CHANNEL
from bot.handlers import Outcome
from bot.handlers.commands import parse
from bot.handlers.common import TEXT_ARGUMENT
from bot.inbound import Callback, Inbound
from bot.texts import action_label, state_label, text
from storage import queries
from storage.models import Person, Role
from workflow.service import Tx, person_label

logger = logging.getLogger(__name__)


#: The channel_state key prefix (then ".<person id>") of the card a person's press left open.
OPEN_CARD_KEY = "telegram.open_card"

#: Commands whose button asks for more (a department, a reason, a result) before acting.
FOLLOW_UP_COMMANDS: frozenset[str] = frozenset({"forward", "assign", *TEXT_ARGUMENT})


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
            tx.notify(
                person,
                "tg.callback",
                callback_id=callback.id,
                message_key="error.stale_button",
                message_params={},
                alert=True,
            )
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
            refusal = next(
                (
                    row
                    for row in tx.outbox
                    if row.person_id == person.id and row.key.startswith("error.")
                ),
                None,
            )
            key, params = (
                ("error.stale_button", {})
                if refusal is None
                else (refusal.key, dict(refusal.params))
            )
            if refusal is not None:
                # The refusal is shown as an alert on the button instead of a chat message.
                tx.outbox.remove(refusal)
                if refusal.id is None:
                    tx.session.expunge(refusal)
                else:
                    tx.session.delete(refusal)
            tx.notify(
                person,
                "tg.callback",
                callback_id=callback.id,
                message_key=key,
                message_params=params,
                alert=True,
            )
            return
        tx.notify(
            person,
            "tg.callback",
            callback_id=callback.id,
            message_key="tg.pressed",
            message_params={},
            alert=False,
        )
        if tx.moved and callback.message_id:
            number, action, state, _ = tx.moved[-1]
            line = text(
                "line.acted",
                by=person_label(queries.principal_of(session=tx.session, person=person)),
                action=action_label(action),
                state=state_label(state),
            )
            tx.notify(
                person,
                "tg.edit",
                chat_id=callback.chat_id,
                message_id=callback.message_id,
                text=f"{callback.message_text}\n\n{line}"[:MAX_MESSAGE],
            )
            # This edit says who acted: the card's refresh (queued by the move) leaves it be.
            cards.close_at(tx.session, CHANNEL, callback.chat_id, callback.message_id)
            self._edit_open_card(tx, person, pressed=callback)
        elif callback.message_id:
            self._remember_open_card(tx, person, inbound.text, callback)

    def _remember_open_card(self, tx: Tx, person: Person, action: str, callback: Callback) -> None:
        """A press that asked for more (转单's department picker, a reason or a result) left
        its card as it was: remember the card, to edit it once the request moves."""
        command = parse(action)
        if (
            command is None
            or command.rest
            or not command.first
            or command.name not in FOLLOW_UP_COMMANDS
        ):
            return
        card = {
            "number": command.first.upper(),
            "chat_id": callback.chat_id,
            "message_id": callback.message_id,
            "text": callback.message_text,
        }
        queries.set_channel_state(
            session=tx.session,
            key=f"{OPEN_CARD_KEY}.{person.id}",
            value=json.dumps(card, ensure_ascii=False),
        )

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
        if pressed is not None and (pressed.chat_id, pressed.message_id) == (
            card["chat_id"],
            card["message_id"],
        ):
            return
        _, action, state, _ = moved[-1]
        line = text(
            "line.acted",
            by=person_label(queries.principal_of(session=tx.session, person=person)),
            action=action_label(action),
            state=state_label(state),
        )
        tx.notify(
            person,
            "tg.edit",
            chat_id=card["chat_id"],
            message_id=card["message_id"],
            text=f"{card['text']}\n\n{line}"[:MAX_MESSAGE],
        )
        cards.close_at(tx.session, CHANNEL, str(card["chat_id"]), int(card["message_id"]))
