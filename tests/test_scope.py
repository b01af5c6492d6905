"""Where people stand in the tree of centres (workflow/scope.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

from sqlmodel import Session

from storage import queries
from storage.db import session_scope
from storage.models import Centre, Person, Request
from tests.utils.centres import Tree
from tests.utils.world import World
from workflow import scope


def held_at(world: World, tree: Tree, centre_id: int | None) -> str:
    """A new request, moved to be held by `centre_id`; its number."""
    number = tree.submit()
    with session_scope(world.engine) as session:
        request = queries.get_request_by_number(session=session, number=number)
        assert request is not None and centre_id is not None
        request.centre_id = centre_id
        session.add(request)
    return number


def load(session: Session, number: str) -> Request:
    request = queries.get_request_by_number(session=session, number=number)
    assert request is not None
    return request


def person(session: Session, someone: Person) -> Person:
    found = session.get(Person, someone.id)
    assert found is not None
    return found


def test_in_centre_is_true_only_for_the_centre_that_holds_the_request(
    tree: Tree, world: World
) -> None:
    number = held_at(world, tree, tree.c1.id)

    with Session(world.engine) as session:
        request = load(session, number)
        assert scope.in_centre(person(session, tree.c1_worker), request)
        for other in (tree.c2_worker, tree.d_worker, tree.d_leader, tree.b_worker):
            assert not scope.in_centre(person(session, other), request)


def test_staff_of_no_recorded_centre_count_as_the_default_centre_s(
    tree: Tree, world: World
) -> None:
    # Given a worker with no centre recorded, and a request of the default centre and one of C1
    worker = world.person("worker", name="老王")
    with Session(world.engine) as session:
        default_id = queries.default_centre(session=session).id
    at_default = held_at(world, tree, default_id)
    at_c1 = held_at(world, tree, tree.c1.id)

    # Then they are of the default centre, and not of C1
    with Session(world.engine) as session:
        me = person(session, worker)
        assert scope.centre_of(session, me) == default_id
        assert scope.in_centre(me, load(session, at_default))
        assert not scope.in_centre(me, load(session, at_c1))


def test_a_leader_oversees_their_centre_and_everything_below_it_only(
    tree: Tree, world: World
) -> None:
    # Given a request of C1, and a leader of C2 besides the tree's people
    number = held_at(world, tree, tree.c1.id)
    with session_scope(world.engine) as session:
        c2_leader = Person(
            channel="web", external_id="c2-leader", role="leader", centre_id=tree.c2.id
        )
        session.add(c2_leader)

    with Session(world.engine) as session:
        request = load(session, number)

        def oversees(someone: Person) -> bool:
            return scope.overseen_by(session, person(session, someone), request)

        # Then the district's leader and C1's leader oversee C1's request; a worker (even of
        # the district) and a leader of a sibling do not
        assert oversees(tree.d_leader) and oversees(tree.c1_leader)
        assert not oversees(tree.d_worker) and not oversees(tree.c1_worker)
        assert not oversees(c2_leader)


def test_a_centre_s_calendar_adds_the_days_off_of_every_centre_above_it(
    tree: Tree, world: World
) -> None:
    # Given days off at the district and at C1 (and a malformed entry, ignored)
    with session_scope(world.engine) as session:
        for centre_id, days in (
            (tree.district.id, ["2026-03-03"]),
            (tree.c1.id, ["2026-03-05", "x"]),
        ):
            centre = session.get(Centre, centre_id)
            assert centre is not None
            centre.days_off = days
            session.add(centre)

    # Then C1 has both, C2 the district's, the district its own
    with Session(world.engine) as session:
        assert scope.centre_calendar(session, int(tree.c1.id or 0)) == {
            date(2026, 3, 3),
            date(2026, 3, 5),
        }
        assert scope.centre_calendar(session, int(tree.c2.id or 0)) == {date(2026, 3, 3)}
        assert scope.centre_calendar(session, int(tree.district.id or 0)) == {date(2026, 3, 3)}
