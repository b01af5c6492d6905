"""Who may do what: permitted() over every action, state, role and relationship."""

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

#: Every pair of action and state; each test tries every role and relationship on it.
PAIRS = list(itertools.product(Action, State))

#: Every actor: role, is_requester, in_department.
ACTORS = list(itertools.product(ROLES, (False, True), (False, True)))


def expected_rule(
    action: Action, state: State, role: str, is_requester: bool, in_department: bool
) -> bool:
    """The rule as the brief states it, written independently of workflow.permissions."""
    committee = role in ("worker", "leader")
    forwarded_staff = role == "department" and in_department
    if action in (A.ACCEPT, A.FORWARD, A.RECALL, A.REJECT, A.APPROVE, A.SEND_BACK, A.COMMENT):
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


def _id(pair: tuple[Action, State]) -> str:
    return f"{pair[0].value}-in-{pair[1].value}"


def test_the_cases_cover_every_combination() -> None:
    assert len(PAIRS) * len(ACTORS) == len(Action) * len(State) * 4 * 2 * 2 == 19 * 9 * 16


@pytest.mark.parametrize("pair", PAIRS, ids=_id)
def test_permitted_follows_the_rule_for_every_role_and_relationship(
    pair: tuple[Action, State],
) -> None:
    action, state = pair
    for role, is_requester, in_department in ACTORS:
        expected = expected_rule(action, state, role, is_requester, in_department)
        actual = permitted(
            action, state, role=role, is_requester=is_requester, in_department=in_department
        )
        assert actual is expected, (role, is_requester, in_department)


@pytest.mark.parametrize("action", [A.TAKE, A.RETURN], ids=str)
def test_a_worker_cannot_take_or_return_a_forwarded_request(action: Action) -> None:
    for role in ("worker", "leader"):
        assert not permitted(
            action, S.FORWARDED, role=role, is_requester=False, in_department=False
        )


@pytest.mark.parametrize("action", [A.TAKE, A.RETURN], ids=str)
def test_staff_of_another_department_cannot_take_or_return(action: Action) -> None:
    assert not permitted(
        action, S.FORWARDED, role="department", is_requester=False, in_department=False
    )
    assert permitted(action, S.FORWARDED, role="department", is_requester=False, in_department=True)


def test_only_the_committee_may_recall_a_forwarded_request() -> None:
    # Given a forwarded request
    # Then workers and leaders may take it back, its department's staff and its requester not
    for role in ("worker", "leader"):
        assert permitted(A.RECALL, S.FORWARDED, role=role, is_requester=False, in_department=False)
    assert not permitted(
        A.RECALL, S.FORWARDED, role="department", is_requester=False, in_department=True
    )
    assert not permitted(
        A.RECALL, S.FORWARDED, role="requester", is_requester=True, in_department=False
    )


def test_a_department_completes_only_while_it_handles_the_request() -> None:
    # Given staff of the department the request is forwarded to
    staff = {"role": "department", "is_requester": False, "in_department": True}
    # Then they may complete in DEPT_HANDLING, but not a committee-handled request
    assert permitted(A.COMPLETE, S.DEPT_HANDLING, **staff)
    assert not permitted(A.COMPLETE, S.HANDLING, **staff)


def test_the_committee_completes_in_handling_but_not_a_departments_request() -> None:
    for role in ("worker", "leader"):
        assert permitted(A.COMPLETE, S.HANDLING, role=role, is_requester=False, in_department=False)
        assert not permitted(
            A.COMPLETE, S.DEPT_HANDLING, role=role, is_requester=False, in_department=False
        )


@pytest.mark.parametrize("action", [A.SUPPLEMENT, A.CANCEL, A.RATE, A.REOPEN], ids=str)
def test_only_the_requester_supplements_cancels_rates_and_reopens(action: Action) -> None:
    for role in ROLES:
        assert not permitted(action, S.REPLIED, role=role, is_requester=False, in_department=True)
        # A worker who registered a walk-in counts as its requester.
        assert permitted(action, S.REPLIED, role=role, is_requester=True, in_department=False)


@pytest.mark.parametrize(
    "action", [A.ACCEPT, A.FORWARD, A.RECALL, A.REJECT, A.APPROVE, A.SEND_BACK, A.COMMENT], ids=str
)
def test_a_requester_cannot_act_for_the_committee_even_on_their_own_request(
    action: Action,
) -> None:
    assert not permitted(action, S.NEW, role="requester", is_requester=True, in_department=False)
    assert not permitted(
        action, S.REVIEW, role="department", is_requester=False, in_department=True
    )


@pytest.mark.parametrize("action", [A.REMIND, A.ESCALATE, A.AUTO_CLOSE], ids=str)
def test_nobody_may_remind_escalate_or_auto_close_by_hand(action: Action) -> None:
    for role, is_requester, in_department in itertools.product(ROLES, (False, True), (False, True)):
        assert not permitted(
            action, S.REPLIED, role=role, is_requester=is_requester, in_department=in_department
        )


def test_anyone_may_submit() -> None:
    for role in ROLES:
        assert permitted(A.SUBMIT, S.NEW, role=role, is_requester=False, in_department=False)


def test_an_unknown_role_may_do_nothing_but_submit() -> None:
    allowed = {
        action
        for action, state in itertools.product(Action, State)
        if permitted(action, state, role="stranger", is_requester=False, in_department=True)
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
    assert may_view(role=role, is_requester=is_requester, in_department=in_department) is visible


def test_may_view_is_true_for_every_committee_member_whatever_the_relationship() -> None:
    for role, is_requester, in_department in itertools.product(
        ("worker", "leader"), (False, True), (False, True)
    ):
        assert may_view(role=role, is_requester=is_requester, in_department=in_department)


@pytest.mark.parametrize("action", list(Action), ids=str)
def test_role_could_is_true_exactly_when_some_relationship_permits_the_role(
    action: Action,
) -> None:
    # Given every role
    for role in [*ROLES, "stranger"]:
        # When some state and relationship lets that role take the action
        some = any(
            permitted(
                action, state, role=role, is_requester=is_requester, in_department=in_department
            )
            for state in State
            for is_requester in (False, True)
            for in_department in (False, True)
        )

        # Then role_could says so, and says no otherwise
        assert role_could(role, action) is some, (role, action)


def test_committee_department_and_requester_action_sets_follow_the_rule() -> None:
    assert COMMITTEE_ACTIONS == {
        A.ACCEPT,
        A.FORWARD,
        A.RECALL,
        A.REJECT,
        A.APPROVE,
        A.SEND_BACK,
        A.COMMENT,
    }
    assert DEPARTMENT_ACTIONS == {A.TAKE, A.RETURN}
    assert REQUESTER_ACTIONS == {A.SUPPLEMENT, A.CANCEL, A.RATE, A.REOPEN}
