"""How a resident reaches a centre: a centre found from what someone typed or a link carried,
the choice offered to a resident who came through none, and entering a centre from an entry
point (a web link, a Telegram deep link, a WeChat QR code).

A resident's `centre_id` is the centre they came through; staff have the centre of their role
and keep it whatever link they follow. With a single active centre nobody is ever asked.
"""

from __future__ import annotations

import re

from sqlmodel import Session

from storage import queries
from storage.models import Centre, Person, Role
from workflow.service import DESK_CHANNEL, Tx

#: What a centre code looks like (letters, digits and "-"; the column holds 32 characters).
#: Anything else is no code, and is not even looked up.
CODE = re.compile(r"[A-Za-z0-9-]{1,32}")

#: Longest name looked up (the column holds 100 characters).
MAX_NAME = 100


def is_code(typed: str) -> bool:
    """Whether `typed` (stripped) has the form of a centre code."""
    return CODE.fullmatch(typed.strip()) is not None


def by_code(session: Session, code: str) -> Centre | None:
    """The active centre with this code (any case), or None (unknown, inactive, malformed)."""
    if not is_code(code):
        return None
    centre = queries.get_centre_by_code(session=session, code=code)
    return centre if centre is not None and centre.active else None


def find_centre(session: Session, typed: str) -> Centre | None:
    """The active centre `typed` names: by code (case-insensitive), else by exact name.

    A name that two active centres share finds neither (a code is unique; a name need not
    be), so nobody lands in the wrong one of two namesakes.
    """
    text = typed.strip()
    if not text or len(text) > MAX_NAME:
        return None
    found = by_code(session, text)
    if found is not None:
        return found
    named = queries.active_centres_named(session=session, name=text, limit=2)
    return named[0] if len(named) == 1 else None


def choices(session: Session, parent_id: int | None = None) -> list[Centre]:
    """The centres to choose from under `parent_id`: its active children, in the order made.

    With None, the top of the tree: every active centre with no active centre above it (a
    root, or one whose parent was deactivated), so that every active centre can be reached.
    """
    if parent_id is not None:
        return list(queries.child_centres(session=session, parent_id=parent_id))
    active = queries.list_centres(session=session, active_only=True)
    ids = {centre.id for centre in active}
    return [centre for centre in active if centre.parent_id not in ids]


def several_active(session: Session) -> bool:
    """Whether more than one centre is active (only then is anybody asked to choose)."""
    return queries.count_active_centres(session=session) > 1


def needs_choice(session: Session, person: Person) -> bool:
    """Whether `person` must choose a centre before a request of theirs is filed: a resident
    with no centre (or an inactive one) while several centres are active.

    Staff have their role's centre; walk-ins belong to the registering worker's centre.
    """
    if person.role != Role.REQUESTER or person.channel == DESK_CHANNEL:
        return False
    if person.centre_id is not None:
        centre = queries.get_centre(session=session, centre_id=person.centre_id)
        if centre is not None and centre.active:
            return False
    return several_active(session)


def enter(tx: Tx, person: Person, code_or_none: str | None) -> Centre | None:
    """Someone came through an entry point carrying `code_or_none`: a resident now belongs to
    that centre (for the requests they file from now on); staff keep theirs.

    Returns:
        The active centre the code names (also for staff, whose centre does not change), or
        None when there is no code or it names no active centre (nothing changes then).
    """
    if code_or_none is None:
        return None
    centre = by_code(tx.session, code_or_none)
    if centre is None:
        return None
    if person.role == Role.REQUESTER and person.centre_id != centre.id:
        person.centre_id = centre.id
        tx.session.add(person)
    return centre


def move(tx: Tx, person: Person, centre: Centre) -> None:
    """A resident chose `centre` (切换, or the choice): their requests from now on go there;
    those already filed stay where they are."""
    if person.role == Role.REQUESTER and person.centre_id != centre.id:
        person.centre_id = centre.id
        tx.session.add(person)


def has_children(session: Session, centre: Centre) -> bool:
    """Whether `centre` has an active centre right under it."""
    return bool(with_children(session, [centre]))


def with_children(session: Session, centres: list[Centre]) -> set[int]:
    """The ids of those of `centres` that have an active centre right under them (one query)."""
    ids = [centre.id for centre in centres if centre.id is not None]
    if not ids:
        return set()
    return queries.parents_of_active_centres(session=session, parent_ids=ids)


def only_centre(session: Session) -> Centre:
    """The one active centre of a single-centre install (else the default centre)."""
    return queries.sole_active_centre(session=session) or queries.default_centre(session=session)
