"""What every role can do (help, bind, status, complete), and the replies to errors."""

from __future__ import annotations

from typing import Any

from bot.handlers.commands import Command
from bot.texts import action_label, state_label
from storage import queries
from storage.models import Person, Role
from workflow import deadlines, service
from workflow.errors import (
    InvalidInput,
    InvitationInvalid,
    NotPermitted,
    TransitionNotAllowed,
    UnknownDepartment,
    UnknownRequest,
    WorkflowError,
)
from workflow.permissions import COMMITTEE_ROLES
from workflow.service import Tx

#: Commands whose last argument is free text; without it a dialogue asks for it.
TEXT_ARGUMENT: frozenset[str] = frozenset(
    {"reject", "complete", "send_back", "return", "supplement"}
)

#: What a requester sees of their request's history: no internal steps (a result before its
#: review, 返工 and 退单 reasons, notes).
REQUESTER_EVENTS: frozenset[str] = frozenset(
    {"submit", "accept", "forward", "take", "reject", "approve", "rate", "reopen", "cancel",
     "supplement", "auto_close"}
)

#: Of those, the events whose note the requester may read (they were told it, or wrote it).
REQUESTER_NOTES: frozenset[str] = frozenset({"forward", "reject", "supplement", "rate", "reopen"})

#: An example number for usage hints.
EXAMPLE_NUMBER = "SQ-20260101-0001"


def reply(tx: Tx, person: Person, key: str, **params: Any) -> None:
    """Queues an answer to the person who wrote."""
    tx.notify(person, key, **params)


def help_(tx: Tx, person: Person) -> None:
    """Sends the help of the person's role."""
    reply(tx, person, "help", role=person.role, department=department_name(tx, person))


def department_name(tx: Tx, person: Person) -> str:
    """The name of a department staff member's department, or ""."""
    if person.department_id is None:
        return ""
    department = queries.get_department(session=tx.session, department_id=person.department_id)
    return department.name if department else ""


def bind(tx: Tx, person: Person, command: Command) -> None:
    """绑定 <code>: takes the role an invitation gives."""
    if not command.first:
        reply(tx, person, "error.bind_usage")
        return
    role, department = service.bind(tx, person, command.first)
    reply(
        tx, person, "reply.bound",
        role_label={"worker": "党务工作者", "leader": "党委负责人"}.get(role, "部门工作人员"),
        department_part=f"（{department}）" if department else "",
        help=_help_text(role, department),
    )


def _help_text(role: str, department: str | None) -> str:
    from bot.texts import render

    return render("help", {"role": role, "department": department or ""}).text


def status(tx: Tx, person: Person, command: Command) -> None:
    """查询 [编号]: one request in detail, or the person's recent requests / to-do list."""
    if not command.first:
        if person.role == Role.REQUESTER:
            items = service.my_requests(tx, person)
            if not items:
                reply(tx, person, "reply.no_requests")
                return
            reply(tx, person, "reply.listing", title="您最近的诉求：",
                  items=[[r.number, r.state, _summary(r.text)] for r in items])
            return
        todo(tx, person)
        return
    request, events = service.view(tx, person, command.first)
    staff_view = is_committee(person) or person.role == Role.DEPARTMENT
    history = [
        [deadlines.format_local(event.created_at), event.action,
         _summary(event.note, 60) if event.note and
         (staff_view or event.action in REQUESTER_NOTES) else ""]
        for event in events
        if event.outcome == "ok" and (staff_view or event.action in REQUESTER_EVENTS)
    ]
    department = ""
    if request.department_id is not None:
        found = queries.get_department(session=tx.session, department_id=request.department_id)
        department = found.name if found else ""
    category = None
    if request.category_id is not None:
        category = queries.get_category(session=tx.session, category_id=request.category_id)
    reply(
        tx, person, "reply.status", number=request.number, state=request.state,
        category=category.name if category else "其他",
        created=deadlines.format_local(request.created_at), text=request.text,
        department=department, result=request.result or "",
        response_due=deadlines.format_local(request.response_due_at),
        resolution_due=deadlines.format_local(request.resolution_due_at),
        history=history,
    )


def todo(tx: Tx, person: Person) -> None:
    """待办: what waits for this worker or department."""
    items = service.todo(tx, person)
    if not items:
        reply(tx, person, "reply.empty_todo")
        return
    reply(tx, person, "reply.listing", title=f"待办诉求（{len(items)} 件）：",
          items=[[r.number, r.state, _summary(r.text)] for r in items])


def complete(tx: Tx, person: Person, command: Command) -> None:
    """办结 <编号> <结果>: the handler reports the result."""
    request = service.complete(tx, person, command.first, command.rest)
    reply(tx, person, "reply.completed", number=request.number)


def _summary(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report_error(tx: Tx, person: Person, error: WorkflowError, command: Command | None) -> None:
    """Answers a refused or impossible command in plain words; nothing else changes."""
    label = action_label(command.name) if command else ""
    if command is not None and command.name == "return":
        label = "退单"
    if isinstance(error, UnknownRequest):
        if not error.number:
            reply(tx, person, "error.missing_number",
                  example=f"{_word(command)} {EXAMPLE_NUMBER}")
        else:
            reply(tx, person, "error.unknown_request", number=error.number[:40])
    elif isinstance(error, NotPermitted) and error.reason == "not_yours" \
            and person.role == Role.REQUESTER and command is not None:
        # A requester acting on someone else's number is answered exactly as for a number
        # nobody was given: the answer must not even confirm that it exists.
        reply(tx, person, "error.unknown_request", number=command.first.strip().upper()[:40])
    elif isinstance(error, NotPermitted):
        key = "error.not_yours" if error.reason == "not_yours" else "error.not_permitted"
        number = command.first.strip().upper() if command else ""
        reply(tx, person, key, action_label=label or action_label(error.action), number=number)
    elif isinstance(error, TransitionNotAllowed):
        number = command.first.strip().upper() if command else ""
        reply(tx, person, "error.transition", number=number,
              state_label=state_label(error.state),
              action_label=label or action_label(error.action))
    elif isinstance(error, UnknownDepartment):
        names = [d.name for d in queries.list_departments(session=tx.session)]
        reply(tx, person, "error.unknown_department", name=error.name[:40],
              departments="、".join(names) or "（暂无）")
    elif isinstance(error, InvitationInvalid):
        reply(tx, person, f"error.invitation_{error.reason}")
    elif isinstance(error, InvalidInput):
        if error.what == "too_long":
            reply(tx, person, "error.too_long", **error.params)
        elif error.what in ("empty", "reason_required", "result_required", "content_required",
                            "satisfaction"):
            reply(tx, person, f"error.{error.what}")
        else:
            reply(tx, person, "error.empty")
    else:  # pragma: no cover - every WorkflowError subclass is handled above
        raise error


def _word(command: Command | None) -> str:
    from bot.handlers.commands import COMMANDS

    if command is None:
        return ""
    for word, name in COMMANDS.items():
        if name == command.name and not word.startswith("/"):
            return word
    return ""


def is_committee(person: Person) -> bool:
    """Whether the person acts for the party committee."""
    return person.role in COMMITTEE_ROLES
