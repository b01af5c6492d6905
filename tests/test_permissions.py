"""Who may do what: permitted() over every action, state, role, relationship and place in the
tree of centres."""

from __future__ import annotations

import itertools

import pytest

from workflow.machine import Action, State
from workflow.permissions import (
    COMMITTEE_ACTIONS,
    DEPARTMENT_ACTIONS,
    REQUESTER_ACTIONS,
    may_view,
    permitted,
    role_could,
)

S, A = State, Action

ROLES = ["requester", "worker", "leader", "department"]

#: Where the actor's centre stands to the centre that holds the request: the same centre, a
#: child of it (the actor is below), its parent (the actor is above), a sibling.
PLACES = ["same", "child", "parent", "sibling"]

#: Every pair of action and state; each test tries every role, relationship and place on it.
PAIRS = list(itertools.product(Action, State))

#: Every actor: role, is_requester, in_department, place.
ACTORS = list(itertools.product(ROLES, (False, True), (False, True), PLACES))

#: The actor of the request's own centre, as the single-centre tests below read it.
SAME = {"in_centre": True, "overseeing": True}


def flags(place: str) -> dict[str, bool]:
    """The centre facts permitted() reads, from where the actor's centre stands: in_centre
    only at the same centre; overseeing at the same centre and above it."""
    return {"in_centre": place == "same", "overseeing": place in ("same", "parent")}


def expected_rule(
    action: Action, state: State, role: str, is_requester: bool, in_department: bool, place: str
) -> bool:
    """The rule as the brief states it, written independently of workflow.permissions."""
    # The committee acts only on requests its own centre holds; nobody above or below, and no
    # sibling, acts for it (a leader above oversees but does not act).
    committee = role in ("worker", "leader") and place == "same"
    forwarded_staff = role == "department" and in_department
    if action in (
        A.ACCEPT,
        A.FORWARD,
        A.RECALL,
        A.REJECT,
        A.REFER,
        A.ASSIGN,
        A.APPROVE,
        A.SEND_BACK,
        A.COMMENT,
    ):
        return committee
    if action in (A.TAKE, A.RETURN):
        return forwarded_staff
    if action is A.COMPLETE:
        # Whoever holds the request reports the result: the committee unless the department
        # handles it, the department's staff while it is with them. In other states the
        # machine refuses; the answer is then "cannot complete now", not "not yours".
        if state is S.DEPT_HANDLING:
            return forwarded_staff
        if state is S.HANDLING:
            return committee
        return committee or forwarded_staff
    if action in (A.SUPPLEMENT, A.CANCEL, A.RATE, A.REOPEN):
        return is_requester
    if action is A.SUBMIT:
        return True
    # REMIND, ESCALATE, AUTO_CLOSE and RELEASE are the system's: no person may take them.
    assert action in (A.REMIND, A.ESCALATE, A.AUTO_CLOSE, A.RELEASE)
    return False


def expected_view(role: str, is_requester: bool, in_department: bool, place: str) -> bool:
    """Who may see a request: its requester, the committee of its centre, a leader of its
    centre or of a centre above, the department it is forwarded to."""
    return (
        is_requester
        or (role in ("worker", "leader") and place == "same")
        or (role == "leader" and place in ("same", "parent"))
        or (role == "department" and in_department)
    )


def _id(pair: tuple[Action, State]) -> str:
    return f"{pair[0].value}-in-{pair[1].value}"


def test_the_cases_cover_every_combination() -> None:
    assert len(PAIRS) * len(ACTORS) == len(Action) * len(State) * 4 * 2 * 2 * 4 == 21 * 9 * 64


@pytest.mark.parametrize("pair", PAIRS, ids=_id)
def test_permitted_follows_the_rule_for_every_role_relationship_and_place(
    pair: tuple[Action, State],
) -> None:
    action, state = pair
    for role, is_requester, in_department, place in ACTORS:
        expected = expected_rule(action, state, role, is_requester, in_department, place)
        actual = permitted(
            action,
            state,
            role=role,
            is_requester=is_requester,
            in_department=in_department,
            **flags(place),
        )
        assert actual is expected, (role, is_requester, in_department, place)


def test_may_view_follows_the_rule_for_every_role_relationship_and_place() -> None:
    for role, is_requester, in_department, place in ACTORS:
        expected = expected_view(role, is_requester, in_department, place)
        actual = may_view(
            role=role, is_requester=is_requester, in_department=in_department, **flags(place)
        )
        assert actual is expected, (role, is_requester, in_department, place)


@pytest.mark.parametrize("place", ["child", "parent", "sibling"])
@pytest.mark.parametrize("role", ["worker", "leader"])
def test_no_worker_or_leader_of_another_centre_may_act_for_the_committee(
    role: str, place: str
) -> None:
    # Given a worker or leader of a centre above, below or beside the request's
    for action, state in itertools.product(COMMITTEE_ACTIONS, State):
        # Then no committee action is theirs, in any state
        assert not permitted(
            action, state, role=role, is_requester=False, in_department=False, **flags(place)
        )


def test_a_leader_above_sees_a_request_but_a_worker_above_does_not() -> None:
    above = flags("parent")
    assert may_view(role="leader", is_requester=False, in_department=False, **above)
    assert not may_view(role="worker", is_requester=False, in_department=False, **above)
    # And nobody below or beside sees it, leader or not
    for place, role in itertools.product(("child", "sibling"), ("worker", "leader")):
        assert not may_view(role=role, is_requester=False, in_department=False, **flags(place))


@pytest.mark.parametrize("place", PLACES)
def test_a_department_serves_a_forwarded_request_wherever_its_centre_stands(place: str) -> None:
    # Given staff of the department the request is forwarded to (a district department serves
    # its communities' requests)
    staff = {"role": "department", "is_requester": False, "in_department": True}
    # Then they take, return, complete and see it, whatever the centres
    assert permitted(A.TAKE, S.FORWARDED, **staff, **flags(place))
    assert permitted(A.RETURN, S.DEPT_HANDLING, **staff, **flags(place))
    assert permitted(A.COMPLETE, S.DEPT_HANDLING, **staff, **flags(place))
    assert may_view(**staff, **flags(place))


@pytest.mark.parametrize("action", [A.TAKE, A.RETURN], ids=str)
def test_a_worker_cannot_take_or_return_a_forwarded_request(action: Action) -> None:
    for role in ("worker", "leader"):
        assert not permitted(
            action, S.FORWARDED, role=role, is_requester=False, in_department=False, **SAME
        )


@pytest.mark.parametrize("action", [A.TAKE, A.RETURN], ids=str)
def test_staff_of_another_department_cannot_take_or_return(action: Action) -> None:
    assert not permitted(
        action, S.FORWARDED, role="department", is_requester=False, in_department=False, **SAME
    )
    assert permitted(
        action, S.FORWARDED, role="department", is_requester=False, in_department=True, **SAME
    )


def test_only_the_committee_may_recall_a_forwarded_request() -> None:
    # Given a forwarded request
    # Then workers and leaders may take it back, its department's staff and its requester not
    for role in ("worker", "leader"):
        assert permitted(
            A.RECALL, S.FORWARDED, role=role, is_requester=False, in_department=False, **SAME
        )
    assert not permitted(
        A.RECALL, S.FORWARDED, role="department", is_requester=False, in_department=True, **SAME
    )
    assert not permitted(
        A.RECALL, S.FORWARDED, role="requester", is_requester=True, in_department=False, **SAME
    )


def test_a_department_completes_only_while_it_handles_the_request() -> None:
    # Given staff of the department the request is forwarded to
    staff = {"role": "department", "is_requester": False, "in_department": True}
    # Then they may complete in DEPT_HANDLING, but not a committee-handled request
    assert permitted(A.COMPLETE, S.DEPT_HANDLING, **staff, **SAME)
    assert not permitted(A.COMPLETE, S.HANDLING, **staff, **SAME)


def test_the_committee_completes_in_handling_but_not_a_departments_request() -> None:
    for role in ("worker", "leader"):
        assert permitted(
            A.COMPLETE, S.HANDLING, role=role, is_requester=False, in_department=False, **SAME
        )
        assert not permitted(
            A.COMPLETE, S.DEPT_HANDLING, role=role, is_requester=False, in_department=False, **SAME
        )


@pytest.mark.parametrize("action", [A.SUPPLEMENT, A.CANCEL, A.RATE, A.REOPEN], ids=str)
def test_only_the_requester_supplements_cancels_rates_and_reopens(action: Action) -> None:
    for role in ROLES:
        assert not permitted(
            action, S.REPLIED, role=role, is_requester=False, in_department=True, **SAME
        )
        # A worker who registered a walk-in counts as its requester.
        assert permitted(
            action, S.REPLIED, role=role, is_requester=True, in_department=False, **SAME
        )


@pytest.mark.parametrize(
    "action",
    [A.ACCEPT, A.FORWARD, A.RECALL, A.REJECT, A.REFER, A.ASSIGN, A.APPROVE, A.SEND_BACK, A.COMMENT],
    ids=str,
)
def test_a_requester_cannot_act_for_the_committee_even_on_their_own_request(
    action: Action,
) -> None:
    assert not permitted(
        action, S.NEW, role="requester", is_requester=True, in_department=False, **SAME
    )
    assert not permitted(
        action, S.REVIEW, role="department", is_requester=False, in_department=True, **SAME
    )


@pytest.mark.parametrize("action", [A.REMIND, A.ESCALATE, A.AUTO_CLOSE], ids=str)
def test_nobody_may_remind_escalate_or_auto_close_by_hand(action: Action) -> None:
    for role, is_requester, in_department in itertools.product(ROLES, (False, True), (False, True)):
        assert not permitted(
            action,
            S.REPLIED,
            role=role,
            is_requester=is_requester,
            in_department=in_department,
            **SAME,
        )


def test_anyone_may_submit() -> None:
    for role in ROLES:
        assert permitted(
            A.SUBMIT, S.NEW, role=role, is_requester=False, in_department=False, **SAME
        )


def test_an_unknown_role_may_do_nothing_but_submit() -> None:
    allowed = {
        action
        for action, state in itertools.product(Action, State)
        if permitted(action, state, role="stranger", is_requester=False, in_department=True, **SAME)
    }
    assert allowed == {A.SUBMIT}


@pytest.mark.parametrize(
    ("role", "is_requester", "in_department", "visible"),
    [
        ("requester", True, False, True),
        ("requester", False, False, False),
        ("requester", False, True, False),
        ("worker", False, False, True),
        ("leader", False, False, True),
        ("department", False, True, True),
        ("department", False, False, False),
        ("department", True, False, True),
        ("stranger", False, True, False),
    ],
)
def test_may_view_lets_only_the_requester_the_committee_and_the_holding_department_see(
    role: str, is_requester: bool, in_department: bool, visible: bool
) -> None:
    assert (
        may_view(role=role, is_requester=is_requester, in_department=in_department, **SAME)
        is visible
    )


def test_may_view_is_true_for_every_committee_member_whatever_the_relationship() -> None:
    for role, is_requester, in_department in itertools.product(
        ("worker", "leader"), (False, True), (False, True)
    ):
        assert may_view(role=role, is_requester=is_requester, in_department=in_department, **SAME)


@pytest.mark.parametrize("action", list(Action), ids=str)
def test_role_could_is_true_exactly_when_some_relationship_permits_the_role(
    action: Action,
) -> None:
    # Given every role
    for role in [*ROLES, "stranger"]:
        # When some state and relationship lets that role take the action
        some = any(
            permitted(
                action,
                state,
                role=role,
                is_requester=is_requester,
                in_department=in_department,
                **flags(place),
            )
            for state in State
            for is_requester in (False, True)
            for in_department in (False, True)
            for place in PLACES
        )

        # Then role_could says so, and says no otherwise
        assert role_could(role, action) is some, (role, action)


def test_committee_department_and_requester_action_sets_follow_the_rule() -> None:
    assert COMMITTEE_ACTIONS == {
        A.ACCEPT,
        A.FORWARD,
        A.RECALL,
        A.REJECT,
        A.REFER,
        A.ASSIGN,
        A.APPROVE,
        A.SEND_BACK,
        A.COMMENT,
    }
    assert DEPARTMENT_ACTIONS == {A.TAKE, A.RETURN}
    assert REQUESTER_ACTIONS == {A.SUPPLEMENT, A.CANCEL, A.RATE, A.REOPEN}
