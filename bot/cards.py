"""Cards on the platforms: which delivered messages offered buttons for a request, and what a
`card.refresh` (workflow/cards.py) turns such a card into once its request moved on.

Channels call `record` when they deliver a message with buttons about a request, and
`update_for` when they deliver a refresh; the update is applied to the stored card only
after the platform took it (`StaleCard.applied`), so a failed edit is tried again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from bot.handlers.commands import parse
from bot.texts import Button, Rendered, state_label, text
from storage import queries
from storage.models import CardMessage, OutboxMessage, Person, Request, utcnow
from workflow.cards import REFRESH_KEY, possible
from workflow.machine import Action

#: Command names of buttons that act on the request (and so can go stale); 评价's command
#: stands for both RATE and REOPEN, which are possible in the same state.
_ACTIONS: frozenset[str] = frozenset(action.value for action in Action)


def _action(button_action: str) -> str | None:
    """The workflow action a button's command sends, or None (e.g. 查询: never stale)."""
    command = parse(button_action)
    if command is None or command.name not in _ACTIONS:
        return None
    return command.name


def record(
    session: Session,
    person: Person,
    row: OutboxMessage,
    shown_text: str,
    buttons: list[Button],
    *,
    chat_id: str | None = None,
    message_id: int | None = None,
    web_seq: int | None = None,
) -> None:
    """Remembers a delivered message as a card if it offers buttons that can go stale."""
    if row.request_id is None or row.id is None or row.key == REFRESH_KEY:
        return
    if not any(_action(button.action) for button in buttons):
        return
    assert person.id is not None
    queries.add_card_message(
        session=session,
        request_id=row.request_id,
        person_id=person.id,
        channel=person.channel,
        outbox_id=row.id,
        text=shown_text,
        buttons=[button.as_dict() for button in buttons],
        at=utcnow(),
        chat_id=chat_id,
        message_id=message_id,
        web_seq=web_seq,
    )


def close_at(session: Session, channel: str, chat_id: str, message_id: int) -> None:
    """Marks the card at a platform message as done (it was edited otherwise, e.g. to show
    who pressed it), so that no refresh edits it again."""
    card = queries.card_at(session=session, channel=channel, chat_id=chat_id, message_id=message_id)
    if card is not None and card.open:
        card.open = False
        card.buttons = []
        card.updated_at = utcnow()
        session.add(card)


@dataclass
class StaleCard:
    """What a card becomes: its text with the current state, and the buttons still valid."""

    card: CardMessage
    message: Rendered

    def applied(self, session: Session) -> None:
        """Stores the update as done (after the platform took it)."""
        self.card.buttons = [button.as_dict() for button in self.message.buttons]
        self.card.open = any(_action(button.action) for button in self.message.buttons)
        self.card.updated_at = utcnow()
        session.add(self.card)


def update_for(session: Session, person: Person, row: OutboxMessage) -> StaleCard | None:
    """The update a `card.refresh` row asks for, or None when its card is not stale (not
    delivered as a card, already done, or every button still possible)."""
    card = queries.card_of_outbox(session=session, outbox_id=int(row.params.get("card", 0)))
    if card is None or not card.open or card.person_id != person.id:
        return None
    request = session.get(Request, card.request_id)
    if request is None:
        return None
    still = [
        Button(str(item["label"]), str(item["action"]))
        for item in card.buttons
        if possible(person, request, _action(str(item["action"])) or "")
    ]
    if len(still) == len(card.buttons):
        return None
    line = text(
        "line.state" if any(_action(b.action) for b in still) else "line.done",
        state=state_label(request.state),
    )
    return StaleCard(card, Rendered(f"{card.text}\n\n{line}", still))
