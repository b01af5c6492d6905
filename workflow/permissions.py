"""Who may do what: one pure function over role and relationship to the request."""

from __future__ import annotations

from workflow.machine import Action, State

#: Roles that act for the party committee. Leaders can do everything a worker can.
COMMITTEE_ROLES: frozenset[str] = frozenset({"worker", "leader"})

#: Actions only the committee may take.
COMMITTEE_ACTIONS: frozenset[Action] = frozenset(
    {Action.ACCEPT, Action.FORWARD, Action.REJECT, Action.APPROVE, Action.SEND_BACK,
     Action.COMMENT}
)

#: Actions only staff of the department the request is forwarded to may take.
DEPARTMENT_ACTIONS: frozenset[Action] = frozenset({Action.TAKE, Action.RETURN})

#: Actions only the requester may take on their own request.
REQUESTER_ACTIONS: frozenset[Action] = frozenset(
    {Action.SUPPLEMENT, Action.CANCEL, Action.RATE, Action.REOPEN}
)


def permitted(
    action: Action,
    state: State,
    *,
    role: str,
    is_requester: bool,
    in_department: bool,
) -> bool:
    """Whether an actor may take `action` on a request in `state`.

    Args:
        action: What the actor tries.
        state: The request's current state (COMPLETE depends on it).
        role: The actor's role: requester, worker, leader or department.
        is_requester: Whether the actor submitted the request.
        in_department: Whether the actor is staff of the department the request is forwarded to.
    """
    if action in COMMITTEE_ACTIONS:
        return role in COMMITTEE_ROLES
    if action in DEPARTMENT_ACTIONS:
        return role == "department" and in_department
    if action in REQUESTER_ACTIONS:
        return is_requester
    if action is Action.COMPLETE:
        # Whoever holds the request reports: the department while it is forwarded to it, the
        # committee otherwise. In other states the machine refuses with "cannot ... now".
        staff = role == "department" and in_department
        if state is State.DEPT_HANDLING:
            return staff
        if state is State.HANDLING:
            return role in COMMITTEE_ROLES
        return staff or role in COMMITTEE_ROLES
    # SUBMIT is open to anyone; REMIND, ESCALATE and AUTO_CLOSE are the system's own.
    return action is Action.SUBMIT


def may_view(*, role: str, is_requester: bool, in_department: bool) -> bool:
    """Whether an actor may see a request's details and history."""
    return is_requester or role in COMMITTEE_ROLES or (role == "department" and in_department)
