"""The request lifecycle: states, actions, the transition table and one pure transition()."""

from __future__ import annotations

from enum import StrEnum

from workflow.errors import TransitionNotAllowed


class State(StrEnum):
    """Where a request stands."""

    NEW = "new"
    HANDLING = "handling"
    FORWARDED = "forwarded"
    DEPT_HANDLING = "dept_handling"
    REVIEW = "review"
    REPLIED = "replied"
    CLOSED = "closed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class Action(StrEnum):
    """What can happen to a request."""

    SUBMIT = "submit"
    ACCEPT = "accept"
    FORWARD = "forward"
    REJECT = "reject"
    TAKE = "take"
    RETURN = "return"
    COMPLETE = "complete"
    APPROVE = "approve"
    SEND_BACK = "send_back"
    RATE = "rate"
    REOPEN = "reopen"
    AUTO_CLOSE = "auto_close"
    CANCEL = "cancel"
    #: Events that do not change the state.
    SUPPLEMENT = "supplement"
    COMMENT = "comment"
    REMIND = "remind"
    ESCALATE = "escalate"


#: States in which a request is finished for good.
TERMINAL: frozenset[State] = frozenset({State.CLOSED, State.REJECTED, State.CANCELLED})

#: States in which the requester may still cancel.
CANCELLABLE: frozenset[State] = frozenset(
    {State.NEW, State.HANDLING, State.FORWARDED, State.DEPT_HANDLING, State.REVIEW}
)

#: The transition table: (action, from state) -> to state. SEND_BACK is resolved by
#: transition() because it returns to whoever completed the request.
TRANSITIONS: dict[tuple[Action, State], State] = {
    (Action.ACCEPT, State.NEW): State.HANDLING,
    (Action.FORWARD, State.NEW): State.FORWARDED,
    (Action.FORWARD, State.HANDLING): State.FORWARDED,
    (Action.REJECT, State.NEW): State.REJECTED,
    (Action.TAKE, State.FORWARDED): State.DEPT_HANDLING,
    (Action.RETURN, State.FORWARDED): State.NEW,
    (Action.RETURN, State.DEPT_HANDLING): State.NEW,
    (Action.COMPLETE, State.HANDLING): State.REVIEW,
    (Action.COMPLETE, State.DEPT_HANDLING): State.REVIEW,
    (Action.APPROVE, State.REVIEW): State.REPLIED,
    (Action.SEND_BACK, State.REVIEW): State.HANDLING,
    (Action.RATE, State.REPLIED): State.CLOSED,
    (Action.REOPEN, State.REPLIED): State.NEW,
    (Action.AUTO_CLOSE, State.REPLIED): State.CLOSED,
    **{(Action.CANCEL, state): State.CANCELLED for state in State if state in CANCELLABLE},
}

#: Actions that record an event without moving the request, and the states they may occur in.
NON_TRANSITIONS: dict[Action, frozenset[State]] = {
    Action.SUPPLEMENT: frozenset(State) - TERMINAL,
    Action.COMMENT: frozenset(State),
    Action.REMIND: frozenset(State) - TERMINAL,
    Action.ESCALATE: frozenset(State) - TERMINAL,
}


def transition(state: State, action: Action, *, with_department: bool = False) -> State:
    """The state a request moves to when `action` happens in `state`.

    Args:
        state: The current state.
        action: What happens.
        with_department: Whether a department completed the request (SEND_BACK returns
            it to DEPT_HANDLING instead of HANDLING).

    Raises:
        TransitionNotAllowed: The action cannot happen in this state.
    """
    if action in NON_TRANSITIONS:
        if state in NON_TRANSITIONS[action]:
            return state
        raise TransitionNotAllowed(action, state)
    target = TRANSITIONS.get((action, state))
    if target is None:
        raise TransitionNotAllowed(action, state)
    if action is Action.SEND_BACK and with_department:
        return State.DEPT_HANDLING
    return target


def allowed_actions(state: State) -> list[Action]:
    """Every action that can happen in `state`, in table order."""
    actions = [action for (action, source) in TRANSITIONS if source is state]
    actions += [action for action, states in NON_TRANSITIONS.items() if state in states]
    return actions


def table_markdown() -> str:
    """The transition table as a Markdown table (docs/architecture.md shows it)."""
    lines = ["| action | from | to |", "|---|---|---|"]
    for (action, source), target in TRANSITIONS.items():
        to = f"{target} or {State.DEPT_HANDLING}" if action is Action.SEND_BACK else str(target)
        lines.append(f"| {action} | {source} | {to} |")
    for action, states in NON_TRANSITIONS.items():
        names = ", ".join(state for state in State if state in states)
        lines.append(f"| {action} | {names} | (unchanged) |")
    return "\n".join(lines)
