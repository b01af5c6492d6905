"""Cards that go stale: when a request moves on, every message that offered buttons for it
is told to refresh, and which of its buttons are still possible is decided here.

The workflow does not know platforms: it queues one `card.refresh` outbox row per message
that is, or may become, a card (naming the card by the outbox row it was delivered from);
the bot layer looks the card up at delivery and edits it on its platform. Rows go through
the recipient's ordered outbox, so a refresh never overtakes the card it refreshes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import object_session

from storage import queries
from storage.models import Person, Request, Role
from workflow import scope
from workflow.errors import TransitionNotAllowed
from workflow.machine import RULES, Action, State, Who, transition
from workflow.permissions import acts_for_walk_in, permitted

if TYPE_CHECKING:
    from workflow.service import Tx

#: The outbox key of "this card's request moved: update it" (params: number, card, state).
REFRESH_KEY = "card.refresh"

#: Channel of walk-ins (the same as service.DESK_CHANNEL; service imports this module).
_DESK = "desk"


def queue_refresh(tx: Tx, request: Request) -> None:
    """Queues a refresh of every card about `request` (called where a state change is
    recorded)."""
    assert request.id is not None
    for outbox_id, person_id in queries.cards_of_request(
        session=tx.session, request_id=request.id, skip_key=REFRESH_KEY
    ):
        person = queries.get_person(session=tx.session, person_id=person_id)
        if person is not None:
            tx.notify(person, REFRESH_KEY, request, card=outbox_id, state=request.state)


def possible(person: Person, request: Request, action: str) -> bool:
    """Whether `person` could still take `action` (an Action value) on `request` now.

    A card of a worker whose centre no longer holds the request (上报, 下派) goes stale.

    Args:
        person: The card's recipient (a committee group counts as a worker of its centre: any
            bound worker may press its buttons).
        request: The request in its current state (loaded in a session).
        action: The action a button sends, e.g. "accept".
    """
    try:
        wanted = Action(action)
    except ValueError:
        return True  # not an action on the request (e.g. 查询): never stale
    role = Role.WORKER if person.role == Role.GROUP else person.role
    state = State(request.state)
    in_centre = scope.in_centre(person, request)
    is_requester = person.id == request.requester_id or (
        request.channel == _DESK
        and acts_for_walk_in(
            role=role,
            actor_id=person.id,
            registered_by_id=request.registered_by_id,
            in_centre=in_centre,
        )
    )
    in_department = (
        role == Role.DEPARTMENT
        and person.department_id is not None
        and person.department_id == request.department_id
    )
    if wanted is Action.COMPLETE and state is State.FORWARDED and in_department:
        # Department staff may 办结 a forwarded request: it is taken first.
        return True
    session = object_session(request)
    # Only a leader can oversee; it is read from the tree only when the rule asks for it.
    overseeing = (
        Who.OVERSEER in RULES[wanted].who_at(state)
        and session is not None
        and scope.overseen_by(session, person, request)  # type: ignore[arg-type]
    )
    if not permitted(
        wanted,
        state,
        role=role,
        is_requester=is_requester,
        in_department=in_department,
        in_centre=in_centre,
        overseeing=overseeing,
    ):
        return False
    try:
        transition(state, wanted, with_department=request.department_id is not None)
    except TransitionNotAllowed:
        return False
    return True
