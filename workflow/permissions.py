"""Who may do what: the "who" of each action in workflow.machine.SPEC, read against an actor's
role and relationship to the request."""

from __future__ import annotations

from workflow.machine import RULES, SPEC, VIEWERS, Action, State, Who

#: Roles that act for the party committee. Leaders can do everything a worker can.
COMMITTEE_ROLES: frozenset[str] = frozenset({"worker", "leader"})

#: The role of department staff.
DEPARTMENT_ROLE = "department"

#: The role that oversees a centre's whole subtree.
LEADER_ROLE = "leader"

#: Roles that see their centre's whole subtree: leaders, and the console's admins (who read
#: requests like a leader and take no action on them).
OVERSEER_ROLES: frozenset[str] = frozenset({LEADER_ROLE, "admin"})

#: Who reads a requester's name and phone as they are: those a request's cards go to in chat
#: (the committee of the centre that holds it, the staff of the department it is with) and
#: the requester. Everyone else who may see the request (leaders and admins above it) reads
#: them masked, as exports show them (workflow.masking).
CONTACT_VIEWERS: frozenset[Who] = frozenset({Who.COMMITTEE, Who.DEPARTMENT, Who.REQUESTER})

#: Actions only the committee may take (in every state).
COMMITTEE_ACTIONS: frozenset[Action] = frozenset(
    rule.action for rule in SPEC if rule.everyone() == {Who.COMMITTEE}
)

#: Actions only staff of the department the request is forwarded to may take.
DEPARTMENT_ACTIONS: frozenset[Action] = frozenset(
    rule.action for rule in SPEC if rule.everyone() == {Who.DEPARTMENT}
)

#: Actions only the requester may take on their own request.
REQUESTER_ACTIONS: frozenset[Action] = frozenset(
    rule.action for rule in SPEC if rule.everyone() == {Who.REQUESTER}
)


def is_one_of(
    who: frozenset[Who],
    *,
    role: str,
    is_requester: bool,
    in_department: bool,
    in_centre: bool,
    overseeing: bool,
) -> bool:
    """Whether an actor is one of `who`.

    Args:
        who: The kinds of actor a rule names.
        role: The actor's role: requester, worker, leader or department.
        is_requester: Whether the actor submitted the request (or acts for the walk-in).
        in_department: Whether the actor is staff of the department the request is forwarded to.
        in_centre: Whether the actor's centre is the one that holds the request.
        overseeing: Whether the actor's centre holds the request or is above the one that does.
    """
    return any(
        kind is Who.ANYONE
        or (kind is Who.COMMITTEE and role in COMMITTEE_ROLES and in_centre)
        or (kind is Who.OVERSEER and role in OVERSEER_ROLES and overseeing)
        or (kind is Who.DEPARTMENT and role == DEPARTMENT_ROLE and in_department)
        or (kind is Who.REQUESTER and is_requester)
        for kind in who
    )


def acts_for_walk_in(
    *, role: str, actor_id: int | None, registered_by_id: int | None, in_centre: bool
) -> bool:
    """Whether an actor acts for the walk-in requester of a request (cancel, rate, supplement).

    A walk-in has no chat: the worker who registered them acts for them while they are on
    the committee (wherever the request went since). Once that worker's role is revoked the
    reference is cleared (registered_by_id None), and every worker or leader of the centre that
    holds the request acts for the walk-in.

    Args:
        role: The actor's role.
        actor_id: The actor's person id.
        registered_by_id: Who registered the walk-in; None once nobody on the committee is.
        in_centre: Whether the actor's centre is the one that holds the request.
    """
    if role not in COMMITTEE_ROLES:
        return False
    if registered_by_id is None:
        return in_centre
    return actor_id == registered_by_id


def permitted(
    action: Action,
    state: State,
    *,
    role: str,
    is_requester: bool,
    in_department: bool,
    in_centre: bool,
    overseeing: bool,
) -> bool:
    """Whether an actor may take `action` on a request in `state`.

    Args:
        action: What the actor tries.
        state: The request's current state (COMPLETE depends on it).
        role: The actor's role: requester, worker, leader or department.
        is_requester: Whether the actor submitted the request.
        in_department: Whether the actor is staff of the department the request is forwarded to.
        in_centre: Whether the actor's centre is the one that holds the request.
        overseeing: Whether the actor's centre holds the request or is above the one that does.
    """
    return is_one_of(
        RULES[action].who_at(state),
        role=role,
        is_requester=is_requester,
        in_department=in_department,
        in_centre=in_centre,
        overseeing=overseeing,
    )


def may_view(
    *, role: str, is_requester: bool, in_department: bool, in_centre: bool, overseeing: bool
) -> bool:
    """Whether an actor may see a request's details and history."""
    return is_one_of(
        VIEWERS,
        role=role,
        is_requester=is_requester,
        in_department=in_department,
        in_centre=in_centre,
        overseeing=overseeing,
    )


def may_see_contact(
    *, role: str, is_requester: bool, in_department: bool, in_centre: bool, overseeing: bool
) -> bool:
    """Whether an actor reads a request's requester's name and phone unmasked."""
    return is_one_of(
        CONTACT_VIEWERS,
        role=role,
        is_requester=is_requester,
        in_department=in_department,
        in_centre=in_centre,
        overseeing=overseeing,
    )


def role_could(role: str, action: Action) -> bool:
    """Whether someone of `role` can take `action` on some request, in some state.

    Anyone may be the requester of some request (a worker registers walk-ins, staff may have
    written in before they were invited), so the requester's actions are open to every role;
    every worker and leader holds some request in their centre.
    """
    return is_one_of(
        RULES[action].everyone(),
        role=role,
        is_requester=True,
        in_department=True,
        in_centre=True,
        overseeing=True,
    )


#: How each kind of actor is named in the roles table.
WHO_LABELS: dict[Who, str] = {
    Who.COMMITTEE: "worker or leader of the request's centre",
    Who.OVERSEER: "leader or admin of the request's centre or of a centre above it",
    Who.DEPARTMENT: "staff of the department the request is forwarded to",
    Who.REQUESTER: "the requester (for a walk-in: the worker who registered it, or any "
    "worker or leader of the request's centre once that worker's role is revoked)",
    Who.SYSTEM: "nobody by hand (the system)",
    Who.ANYONE: "anyone",
}


def _names(who: frozenset[Who]) -> str:
    return ", ".join(WHO_LABELS[kind] for kind in Who if kind in who)


def roles_markdown() -> str:
    """The roles table as Markdown (docs/architecture.md shows it): who may take each action,
    and who may see a request."""
    lines = ["| action | 中文 | who |", "|---|---|---|"]
    for rule in SPEC:
        who = _names(rule.who)
        if rule.who_in:
            who = "; ".join(
                f"{_names(rule.who_in[state])} in `{state}`"
                for state in State
                if state in rule.who_in
            )
        lines.append(f"| {rule.action} | {rule.label} | {who} |")
    lines.append(f"| view | 查询 | {_names(VIEWERS)} |")
    return "\n".join(lines)
