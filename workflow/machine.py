"""The request lifecycle: states, actions, and one declaration per action (SPEC) from which the
transition table, the permission checks and the docs' tables are derived; one pure
transition()."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    #: 上报: the request goes up to the parent centre.
    REFER = "refer"
    #: 下派: the request goes down to a direct child centre.
    ASSIGN = "assign"
    TAKE = "take"
    RETURN = "return"
    RECALL = "recall"
    RELEASE = "release"
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


class Who(StrEnum):
    """Who may take an action, by relationship to the request (permissions.py tells which
    roles and relationships each one means)."""

    #: The party committee of the centre that holds the request: its workers and leaders.
    COMMITTEE = "committee"
    #: A leader of the centre that holds the request or of any centre above it (they oversee
    #: their centre's whole subtree).
    OVERSEER = "overseer"
    #: Staff of the department the request is forwarded to now.
    DEPARTMENT = "department"
    #: The person who submitted the request (for a walk-in: the worker who registered it, or
    #: any worker once that worker's role is revoked).
    REQUESTER = "requester"
    #: Nobody by hand: the tick and the automatic routing.
    SYSTEM = "system"
    #: Anyone at all.
    ANYONE = "anyone"


#: States in which a request is finished for good.
TERMINAL: frozenset[State] = frozenset({State.CLOSED, State.REJECTED, State.CANCELLED})

#: States in which a request is still open.
OPEN: frozenset[State] = frozenset(State) - TERMINAL

#: States in which the requester may still cancel.
CANCELLABLE: frozenset[State] = frozenset(
    {State.NEW, State.HANDLING, State.FORWARDED, State.DEPT_HANDLING, State.REVIEW}
)


@dataclass(frozen=True)
class Rule:
    """One action, declared once: where it may happen, where it leads, and who may take it."""

    action: Action
    #: The 中文 term the docs show next to the action.
    label: str
    #: The states the action may happen in (empty for SUBMIT, which creates the request).
    sources: frozenset[State]
    #: The state it leads to; None: the request stays where it is (an event only).
    target: State | None
    #: Who may take it, in every state that `who_in` does not name.
    who: frozenset[Who]
    #: Who may take it in particular states, instead of `who`.
    who_in: Mapping[State, frozenset[Who]] = field(default_factory=dict)
    #: Where it leads instead of `target` when a department completed the request (SEND_BACK
    #: returns the request to whoever completed it).
    target_with_department: State | None = None

    def who_at(self, state: State) -> frozenset[Who]:
        """Who may take the action on a request in `state`."""
        return self.who_in.get(state, self.who)

    def everyone(self) -> frozenset[Who]:
        """Who may take the action in some state."""
        return self.who.union(*self.who_in.values())


def _rule(
    action: Action,
    label: str,
    sources: frozenset[State] | set[State],
    target: State | None,
    *who: Who,
    who_in: Mapping[State, set[Who]] | None = None,
    target_with_department: State | None = None,
) -> Rule:
    return Rule(
        action=action,
        label=label,
        sources=frozenset(sources),
        target=target,
        who=frozenset(who),
        who_in={state: frozenset(them) for state, them in (who_in or {}).items()},
        target_with_department=target_with_department,
    )


S, A, W = State, Action, Who

#: The workflow, one declaration per action, in the order the tables show them.
SPEC: tuple[Rule, ...] = (
    _rule(A.SUBMIT, "接单", set(), S.NEW, W.ANYONE),
    _rule(A.ACCEPT, "受理（做单）", {S.NEW}, S.HANDLING, W.COMMITTEE),
    _rule(A.FORWARD, "转单", {S.NEW, S.HANDLING}, S.FORWARDED, W.COMMITTEE),
    _rule(A.REJECT, "驳回（不予受理）", {S.NEW}, S.REJECTED, W.COMMITTEE),
    # 上报 and 下派 move the request to another centre, whose committee gets it as new.
    _rule(A.REFER, "上报", {S.NEW, S.HANDLING}, S.NEW, W.COMMITTEE),
    _rule(A.ASSIGN, "下派", {S.NEW, S.HANDLING}, S.NEW, W.COMMITTEE),
    _rule(A.TAKE, "接收", {S.FORWARDED}, S.DEPT_HANDLING, W.DEPARTMENT),
    _rule(A.RETURN, "退单", {S.FORWARDED, S.DEPT_HANDLING}, S.NEW, W.DEPARTMENT),
    # Only until the department takes it: once taken, only the department can hand it back.
    _rule(A.RECALL, "撤回转单", {S.FORWARDED}, S.NEW, W.COMMITTEE),
    # A worker whose role is revoked (`redesk people revoke`) no longer holds what they were
    # handling: it goes back to the committee as new, for any worker to accept or forward.
    _rule(A.RELEASE, "收回（角色撤销）", {S.HANDLING}, S.NEW, W.SYSTEM),
    # Whoever holds the request reports: the committee while it handles it, the department
    # while it is with the department. In the other states either may try, so that the
    # answer is the machine's "cannot complete now", not "not yours".
    _rule(
        A.COMPLETE,
        "办结",
        {S.HANDLING, S.DEPT_HANDLING},
        S.REVIEW,
        W.COMMITTEE,
        W.DEPARTMENT,
        who_in={S.HANDLING: {W.COMMITTEE}, S.DEPT_HANDLING: {W.DEPARTMENT}},
    ),
    _rule(A.APPROVE, "审核回单", {S.REVIEW}, S.REPLIED, W.COMMITTEE),
    _rule(
        A.SEND_BACK,
        "返工",
        {S.REVIEW},
        S.HANDLING,
        W.COMMITTEE,
        target_with_department=S.DEPT_HANDLING,
    ),
    _rule(A.RATE, "评价（已解决，满意或基本满意）", {S.REPLIED}, S.CLOSED, W.REQUESTER),
    _rule(A.REOPEN, "重办（未解决或不满意）", {S.REPLIED}, S.NEW, W.REQUESTER),
    _rule(A.AUTO_CLOSE, "自动办结", {S.REPLIED}, S.CLOSED, W.SYSTEM),
    _rule(A.CANCEL, "撤销", CANCELLABLE, S.CANCELLED, W.REQUESTER),
    _rule(A.SUPPLEMENT, "补充", OPEN, None, W.REQUESTER),
    _rule(A.COMMENT, "备注", set(State), None, W.COMMITTEE),
    _rule(A.REMIND, "提醒", OPEN, None, W.SYSTEM),
    _rule(A.ESCALATE, "督办", OPEN, None, W.SYSTEM),
)

#: Each action's declaration.
RULES: dict[Action, Rule] = {rule.action: rule for rule in SPEC}

#: Who may see a request's details and history (查询).
VIEWERS: frozenset[Who] = frozenset({W.REQUESTER, W.COMMITTEE, W.OVERSEER, W.DEPARTMENT})

#: The transition table: (action, from state) -> to state, derived from SPEC. SEND_BACK is
#: resolved by transition() because it returns to whoever completed the request.
TRANSITIONS: dict[tuple[Action, State], State] = {
    (rule.action, source): rule.target
    for rule in SPEC
    if rule.target is not None
    for source in State
    if source in rule.sources
}

#: Actions that record an event without moving the request, and the states they may occur in.
NON_TRANSITIONS: dict[Action, frozenset[State]] = {
    rule.action: rule.sources for rule in SPEC if rule.target is None
}

del S, A, W


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
    rule = RULES[action]
    if state not in rule.sources:
        raise TransitionNotAllowed(action, state)
    if rule.target is None:
        return state
    if with_department and rule.target_with_department is not None:
        return rule.target_with_department
    return rule.target


def allowed_actions(state: State) -> list[Action]:
    """Every action that can happen in `state`: state changes first, then events, each in
    SPEC order."""
    actions = [action for (action, source) in TRANSITIONS if source is state]
    actions += [action for action, states in NON_TRANSITIONS.items() if state in states]
    return actions


def table_markdown() -> str:
    """The transition table as a Markdown table (docs/architecture.md shows it)."""
    lines = ["| action | from | to |", "|---|---|---|"]
    for (action, source), target in TRANSITIONS.items():
        rule = RULES[action]
        to = str(target)
        if rule.target_with_department is not None:
            to = f"{target} or {rule.target_with_department}"
        lines.append(f"| {action} | {source} | {to} |")
    for action, states in NON_TRANSITIONS.items():
        names = ", ".join(state for state in State if state in states)
        lines.append(f"| {action} | {names} | (unchanged) |")
    return "\n".join(lines)
