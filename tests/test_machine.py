"""The request lifecycle of DESIGN §3: every state against every action."""

from __future__ import annotations

import itertools

import pytest

from workflow.errors import TransitionNotAllowed, WorkflowError
from workflow.machine import (
    NON_TRANSITIONS,
    RULES,
    SPEC,
    Action,
    State,
    allowed_actions,
    transition,
)

S, A = State, Action

#: The open states: the request is not finished yet.
OPEN = [S.NEW, S.HANDLING, S.FORWARDED, S.DEPT_HANDLING, S.REVIEW, S.REPLIED]

#: The states a request never leaves.
FINISHED = [S.CLOSED, S.REJECTED, S.CANCELLED]

#: Actions that record an event but never move the request.
EVENTS_ONLY = [A.SUPPLEMENT, A.COMMENT, A.REMIND, A.ESCALATE]

#: DESIGN §3 written out by hand, not derived from workflow.machine.TRANSITIONS:
#: (state, action) -> the state after it. SEND_BACK is listed for a committee-handled request
#: (with_department=False); anything missing is not allowed.
EXPECTED: dict[tuple[State, Action], State] = {
    # NEW (待受理): 做单, 转单, 不予受理, 撤销.
    (S.NEW, A.ACCEPT): S.HANDLING,
    (S.NEW, A.FORWARD): S.FORWARDED,
    (S.NEW, A.REJECT): S.REJECTED,
    (S.NEW, A.CANCEL): S.CANCELLED,
    # ... or it goes to another centre, up (上报) or down (下派), where it is new again.
    (S.NEW, A.REFER): S.NEW,
    (S.NEW, A.ASSIGN): S.NEW,
    # HANDLING (做单): forward after all, complete, cancel, or send up or down after all.
    (S.HANDLING, A.FORWARD): S.FORWARDED,
    (S.HANDLING, A.REFER): S.NEW,
    (S.HANDLING, A.ASSIGN): S.NEW,
    (S.HANDLING, A.COMPLETE): S.REVIEW,
    (S.HANDLING, A.CANCEL): S.CANCELLED,
    # ... or, when the handling worker's role is revoked, it goes back to the committee.
    (S.HANDLING, A.RELEASE): S.NEW,
    # FORWARDED (已转单): the department takes it or hands it back.
    (S.FORWARDED, A.TAKE): S.DEPT_HANDLING,
    (S.FORWARDED, A.RETURN): S.NEW,
    # ... or, until the department takes it, the committee takes it back (撤回转单).
    (S.FORWARDED, A.RECALL): S.NEW,
    (S.FORWARDED, A.CANCEL): S.CANCELLED,
    # DEPT_HANDLING: the department completes it or hands it back.
    (S.DEPT_HANDLING, A.COMPLETE): S.REVIEW,
    (S.DEPT_HANDLING, A.RETURN): S.NEW,
    (S.DEPT_HANDLING, A.CANCEL): S.CANCELLED,
    # REVIEW (待审核回单): approve, or send back (返工) for rework.
    (S.REVIEW, A.APPROVE): S.REPLIED,
    (S.REVIEW, A.SEND_BACK): S.HANDLING,
    (S.REVIEW, A.CANCEL): S.CANCELLED,
    # REPLIED (已回单): rated, reopened (重办) or closed when nobody rates.
    (S.REPLIED, A.RATE): S.CLOSED,
    (S.REPLIED, A.REOPEN): S.NEW,
    (S.REPLIED, A.AUTO_CLOSE): S.CLOSED,
}
# Events that do not change the state: supplement, remind and escalate while the request is
# open; an internal comment on any request, finished ones included.
for _state in OPEN:
    for _action in (A.SUPPLEMENT, A.COMMENT, A.REMIND, A.ESCALATE):
        EXPECTED[(_state, _action)] = _state
for _state in FINISHED:
    EXPECTED[(_state, A.COMMENT)] = _state

ALL_PAIRS = list(itertools.product(State, Action))


def _id(pair: tuple[State, Action]) -> str:
    return f"{pair[1].value}-in-{pair[0].value}"


def test_the_expected_table_names_every_state_and_every_action() -> None:
    # Guards the test itself: a new state or action must be decided on here.
    assert {state for state, _ in EXPECTED} == set(State)
    assert {action for _, action in EXPECTED} == set(Action) - {A.SUBMIT}
    assert len(ALL_PAIRS) == len(State) * len(Action) == 9 * 21


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_id)
def test_every_action_in_every_state_moves_as_designed_or_is_refused(
    pair: tuple[State, Action],
) -> None:
    # Given a request in some state
    state, action = pair
    expected = EXPECTED.get(pair)

    if expected is not None:
        # When an allowed action happens, Then it lands where DESIGN §3 says
        assert transition(state, action) is expected
    else:
        # When an impossible action is tried, Then it is refused with the standard sentence
        with pytest.raises(TransitionNotAllowed) as caught:
            transition(state, action)
        assert str(caught.value) == f"Can't {action.value} when in {state.value}."
        assert caught.value.action == action
        assert caught.value.state == state


def test_transition_not_allowed_is_a_workflow_error() -> None:
    with pytest.raises(WorkflowError):
        transition(S.CLOSED, A.ACCEPT)


def test_the_refusal_message_names_the_action_and_state_values() -> None:
    with pytest.raises(TransitionNotAllowed, match=r"^Can't send_back when in dept_handling\.$"):
        transition(S.DEPT_HANDLING, A.SEND_BACK)


@pytest.mark.parametrize("state", list(State), ids=str)
def test_submit_is_not_a_transition_from_any_state(state: State) -> None:
    # A request is born NEW by submit; no existing request can be submitted again.
    with pytest.raises(TransitionNotAllowed, match=f"Can't submit when in {state.value}."):
        transition(state, A.SUBMIT)


def test_send_back_returns_a_committee_handled_request_to_handling() -> None:
    assert transition(S.REVIEW, A.SEND_BACK, with_department=False) is S.HANDLING


def test_send_back_returns_a_department_handled_request_to_dept_handling() -> None:
    assert transition(S.REVIEW, A.SEND_BACK, with_department=True) is S.DEPT_HANDLING


@pytest.mark.parametrize("state", [s for s in State if s is not S.REVIEW], ids=str)
def test_send_back_with_a_department_is_still_refused_outside_review(state: State) -> None:
    with pytest.raises(TransitionNotAllowed, match=f"Can't send_back when in {state.value}."):
        transition(state, A.SEND_BACK, with_department=True)


@pytest.mark.parametrize("pair", sorted(EXPECTED, key=_id), ids=_id)
def test_with_department_changes_nothing_but_send_back(pair: tuple[State, Action]) -> None:
    state, action = pair
    expected = S.DEPT_HANDLING if action is A.SEND_BACK else EXPECTED[pair]
    assert transition(state, action, with_department=True) is expected


@pytest.mark.parametrize("state", FINISHED, ids=str)
@pytest.mark.parametrize("action", [a for a in Action if a not in EVENTS_ONLY], ids=str)
def test_a_finished_request_accepts_no_state_changing_action(state: State, action: Action) -> None:
    for with_department in (False, True):
        with pytest.raises(TransitionNotAllowed):
            transition(state, action, with_department=with_department)


@pytest.mark.parametrize("state", FINISHED, ids=str)
def test_a_finished_request_takes_only_an_internal_comment(state: State) -> None:
    # Given a finished request
    # Then supplement, remind and escalate are refused, a comment keeps the state
    for action in (A.SUPPLEMENT, A.REMIND, A.ESCALATE):
        with pytest.raises(TransitionNotAllowed):
            transition(state, action)
    assert transition(state, A.COMMENT) is state
    assert allowed_actions(state) == [A.COMMENT]


@pytest.mark.parametrize("state", OPEN, ids=str)
def test_events_only_actions_keep_an_open_request_where_it_is(state: State) -> None:
    for action in EVENTS_ONLY:
        assert transition(state, action) is state


def test_cancel_is_possible_in_every_open_state_before_the_reply() -> None:
    cancellable = {s for s in State if (s, A.CANCEL) in EXPECTED}
    assert cancellable == {S.NEW, S.HANDLING, S.FORWARDED, S.DEPT_HANDLING, S.REVIEW}
    for state in cancellable:
        assert transition(state, A.CANCEL) is S.CANCELLED


@pytest.mark.parametrize("state", list(State), ids=str)
def test_allowed_actions_lists_exactly_the_actions_the_table_allows(state: State) -> None:
    # When asking which actions can happen in a state
    actions = allowed_actions(state)

    # Then they are exactly those of the hand-written table, each once
    expected = {action for (source, action) in EXPECTED if source is state}
    assert set(actions) == expected
    assert len(actions) == len(set(actions))
    # And every one of them really goes through transition()
    for action in actions:
        transition(state, action)


def test_allowed_actions_of_a_new_request_put_state_changes_before_events() -> None:
    assert allowed_actions(S.NEW) == [
        A.ACCEPT,
        A.FORWARD,
        A.REJECT,
        A.REFER,
        A.ASSIGN,
        A.CANCEL,
        A.SUPPLEMENT,
        A.COMMENT,
        A.REMIND,
        A.ESCALATE,
    ]


def test_a_forwarded_request_can_be_taken_back_only_until_the_department_takes_it() -> None:
    # Given a forwarded request, and one the department has taken
    # Then the committee can recall the first (back to NEW), not the second
    assert transition(S.FORWARDED, A.RECALL) is S.NEW
    assert A.RECALL in allowed_actions(S.FORWARDED)
    with pytest.raises(TransitionNotAllowed, match=r"^Can't recall when in dept_handling\.$"):
        transition(S.DEPT_HANDLING, A.RECALL)
    assert A.RECALL not in allowed_actions(S.DEPT_HANDLING)


def test_allowed_actions_of_a_replied_request_offer_rating_reopening_and_auto_close() -> None:
    actions = allowed_actions(S.REPLIED)
    assert {A.RATE, A.REOPEN, A.AUTO_CLOSE} <= set(actions)
    assert A.CANCEL not in actions


def test_transition_is_pure_and_repeatable() -> None:
    # The same question always gets the same answer; nothing is remembered between calls.
    first = [transition(S.NEW, A.ACCEPT) for _ in range(3)]
    assert first == [S.HANDLING] * 3
    assert transition(S.REVIEW, A.SEND_BACK, with_department=True) is S.DEPT_HANDLING
    assert transition(S.REVIEW, A.SEND_BACK) is S.HANDLING


def test_states_and_actions_are_stored_as_their_plain_string_values() -> None:
    # The state column holds a plain str; the enums must read it back.
    assert State("dept_handling") is S.DEPT_HANDLING
    assert Action("send_back") is A.SEND_BACK
    assert [s.value for s in State] == [
        "new",
        "handling",
        "forwarded",
        "dept_handling",
        "review",
        "replied",
        "closed",
        "rejected",
        "cancelled",
    ]


def test_every_action_is_declared_exactly_once_in_the_spec() -> None:
    # Given the one declaration per action
    declared = [rule.action for rule in SPEC]

    # Then every action has exactly one, and the tables are read from it
    assert sorted(declared) == sorted(Action)
    assert len(declared) == len(set(declared))
    assert RULES[A.SEND_BACK].target_with_department is S.DEPT_HANDLING
    assert all(rule.sources == NON_TRANSITIONS[rule.action] for rule in SPEC if rule.target is None)


def test_a_rule_with_no_source_state_cannot_happen_to_an_existing_request() -> None:
    # Given SUBMIT, which creates a request and so has no source state
    assert RULES[A.SUBMIT].sources == frozenset()

    # Then no state lists it among its allowed actions
    assert all(A.SUBMIT not in allowed_actions(state) for state in State)


@pytest.mark.parametrize("action", [A.REFER, A.ASSIGN], ids=str)
def test_a_request_sent_up_or_down_is_new_at_its_new_centre_and_cannot_move_once_forwarded(
    action: Action,
) -> None:
    # Given a new request and one the committee handles
    # Then 上报 and 下派 leave both new (for the other centre's committee)
    assert transition(S.NEW, action) is S.NEW
    assert transition(S.HANDLING, action) is S.NEW
    # And a request with a department, in review or finished cannot move between centres
    for state in (S.FORWARDED, S.DEPT_HANDLING, S.REVIEW, S.REPLIED, *FINISHED):
        with pytest.raises(TransitionNotAllowed):
            transition(state, action)
