"""Where someone stands in the tree of centres, read against a request: whether they are of
the centre that holds it, whether they oversee it, and the calendar of a centre.

Staff act for the centre of their role (Person.centre_id). Staff with no centre recorded
(a committee group chat nobody placed, people made before centres existed) belong to the
default centre, so that a single-centre install behaves as it always did.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import object_session
from sqlmodel import Session

from storage import queries
from storage.models import Person, Request, Role


def default_centre_id(session: Session) -> int:
    """The id of the default centre (migration 0010 makes it), read once per session: every
    permission check and audience of a unit of work asks for it."""
    cached = session.info.get("default_centre_id")
    if isinstance(cached, int):
        return cached
    centre_id = queries.default_centre(session=session).id
    assert centre_id is not None
    session.info["default_centre_id"] = centre_id
    return centre_id


def centre_of(session: Session, person: Person) -> int:
    """The centre someone acts for: their own, or the default centre when none is recorded."""
    return person.centre_id if person.centre_id is not None else default_centre_id(session)


def _own_centre(person: Person, request: Request) -> int | None:
    """The person's centre; None recorded means the default centre (read through the session
    the request was loaded in)."""
    if person.centre_id is not None:
        return person.centre_id
    session = object_session(request)
    if session is None:
        return None
    return default_centre_id(session)  # type: ignore[arg-type]


def in_centre(person: Person, request: Request) -> bool:
    """Whether `person`'s centre is the one that holds `request` now."""
    own = _own_centre(person, request)
    return own is not None and own == request.centre_id


def overseen_by(session: Session, person: Person, request: Request) -> bool:
    """Whether `person` is a leader (or an admin) whose centre is the request's centre or an
    ancestor of it (a leader oversees their centre's whole subtree)."""
    if person.role not in (Role.LEADER, Role.ADMIN):
        return False
    own = centre_of(session, person)
    if own == request.centre_id:
        return True
    centre = queries.get_centre(session=session, centre_id=request.centre_id)
    return centre is not None and own in queries.ancestor_ids(centre)


def centre_calendar(session: Session, centre_id: int) -> frozenset[date]:
    """The days off a centre adds to the national calendar and REDESK_EXTRA_DAYS_OFF: its own
    `days_off` and those of every centre above it (malformed entries are ignored)."""
    centre = queries.get_centre(session=session, centre_id=centre_id)
    if centre is None:
        return frozenset()
    days: set[date] = set()
    for ancestor_id in queries.ancestor_ids(centre):
        ancestor = centre if ancestor_id == centre.id else None
        if ancestor is None:
            ancestor = queries.get_centre(session=session, centre_id=ancestor_id)
        for value in (ancestor.days_off if ancestor is not None else None) or []:
            try:
                days.add(date.fromisoformat(str(value)))
            except ValueError:
                continue
    return frozenset(days)
