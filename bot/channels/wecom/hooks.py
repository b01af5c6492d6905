"""WeCom's work around the handlers: a pressed card button (template_card_event) carries a
one-time token as its key, resolved to its action before handling (a forged or someone else's
token is refused); once handled, the card is updated with the press's ResponseCode to say who
did what, or that it could not be done.
"""

from __future__ import annotations

import json
from dataclasses import replace

from bot.channels.telegram.hooks import FOLLOW_UP_COMMANDS
from bot.channels.wecom import cards
from bot.channels.wecom.send import UPDATE_KEY
from bot.handlers import Outcome
from bot.handlers.commands import parse
from bot.inbound import Inbound
from bot.texts import action_label, text
from storage import queries
from storage.models import Person, utcnow
from workflow.service import Tx, person_label

#: The channel_state key prefix (then ".<person id>") of the card a press left open (转单's
#: department picker, a reason asked for): updated once its request moves.
OPEN_CARD_KEY = "wecom.open_card"


class WeComHooks:
    """Card presses: resolve the token before handling; update the card after."""

    def prepare(self, tx: Tx, person: Person, inbound: Inbound) -> Inbound | None:
        """The pressed button's action as the Inbound's text, or None for a forged one."""
        callback = inbound.callback
        if callback is None:
            return inbound
        row = (
            queries.get_button_token(session=tx.session, token=callback.token[:64])
            if callback.token
            else None
        )
        if row is None or row.person_id != person.id:
            tx.notify(person, "error.stale_button")
            return None
        return replace(inbound, text=row.action)

    def finish(self, tx: Tx, person: Person, inbound: Inbound, outcome: Outcome) -> None:
        """Updates the pressed card (or the one a press left open) with who acted."""
        callback = inbound.callback
        if callback is None:
            if outcome.error is None:
                self._update_open_card(tx, person)
            return
        code = str(inbound.platform.get("response_code") or "")
        task = str(inbound.platform.get("task_id") or "")
        if outcome.error is not None:
            tx.notify(person, UPDATE_KEY, response_code=code, replace_name=text("wecom.refused"))
            return
        if tx.moved:
            self._update(tx, person, code, task, tx.moved[-1][1])
            self._update_open_card(tx, person, pressed=task)
            return
        command = parse(inbound.text)
        if (
            command is not None
            and not command.rest
            and command.first
            and command.name in FOLLOW_UP_COMMANDS
        ):
            queries.set_channel_state(
                session=tx.session,
                key=f"{OPEN_CARD_KEY}.{person.id}",
                value=json.dumps({"number": command.first.upper(), "code": code, "task_id": task}),
            )

    def _update(self, tx: Tx, person: Person, code: str, task: str, action: str) -> None:
        tx.notify(
            person,
            UPDATE_KEY,
            response_code=code,
            replace_name=text(
                "wecom.acted",
                action=action_label(action),
                by=person_label(queries.principal_of(session=tx.session, person=person)),
            ),
        )
        outbox_id = cards.outbox_of(task)
        card = (
            queries.card_of_outbox(session=tx.session, outbox_id=outbox_id)
            if outbox_id is not None
            else None
        )
        if card is not None and card.person_id == person.id and card.open:
            # The update says who acted: the card's refresh (queued by the move) leaves it be.
            card.open = False
            card.buttons = []
            card.updated_at = utcnow()
            tx.session.add(card)

    def _update_open_card(self, tx: Tx, person: Person, pressed: str | None = None) -> None:
        key = f"{OPEN_CARD_KEY}.{person.id}"
        stored = queries.get_channel_state(session=tx.session, key=key) if tx.moved else None
        if not stored:
            return
        card = json.loads(stored)
        moved = [entry for entry in tx.moved if entry[0] == card["number"]]
        if not moved:
            return
        queries.set_channel_state(session=tx.session, key=key, value="")
        if card["task_id"] == pressed:
            return
        self._update(tx, person, card["code"], card["task_id"], moved[-1][1])
