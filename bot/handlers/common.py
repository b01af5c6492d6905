"""What every role can do (help, bind, status, complete), and the replies to errors."""

from __future__ import annotations

from math import ceil
from typing import Any

from bot.handlers.commands import Command
from bot.texts import action_label, actor_label, buttonless_channels, role_label, state_label
from storage import queries
from storage.models import Person, Role
from workflow import centres, deadlines, service
from workflow.errors import (
    BindRefused,
    InvalidInput,
    InvitationInvalid,
    LinkRefused,
    NotPermitted,
    TransitionNotAllowed,
    UnknownCentre,
    UnknownDepartment,
    UnknownRequest,
    WorkflowError,
)
from workflow.permissions import COMMITTEE_ROLES
from workflow.service import Tx

#: Commands whose last argument is free text; without it a dialogue asks for it.
TEXT_ARGUMENT: frozenset[str] = frozenset(
    {"reject", "refer", "complete", "send_back", "return", "supplement"}
)

#: What a requester sees of their request's history: no internal steps (a result before its
#: review, 返工 and 退单 reasons, notes).
REQUESTER_EVENTS: frozenset[str] = frozenset(
    {
        "submit",
        "accept",
        "forward",
        "refer",
        "assign",
        "take",
        "reject",
        "approve",
        "rate",
        "reopen",
        "cancel",
        "supplement",
        "auto_close",
    }
)

#: Of those, the events whose note the requester may read (they were told it, or wrote it).
REQUESTER_NOTES: frozenset[str] = frozenset({"forward", "reject", "supplement", "rate", "reopen"})

#: Requests on one page of 待办.
TODO_PAGE_SIZE = 10

#: Longest page argument of 待办 taken as a number (a longer one is a typing error).
TODO_PAGE_DIGITS = 6

#: An example number for usage hints.
EXAMPLE_NUMBER = "SQ-20260101-0001"


def reply(tx: Tx, person: Person, key: str, **params: Any) -> None:
    """Queues an answer to the person who wrote."""
    tx.notify(person, key, **params)


def help_(tx: Tx, person: Person) -> None:
    """Sends the help of the person's role (a resident's names 切换 while several centres are
    active)."""
    extra: dict[str, Any] = {}
    if person.role == Role.REQUESTER and centres.several_active(tx.session):
        extra["centres"] = True
    reply(tx, person, "help", role=person.role, department=department_name(tx, person), **extra)


def department_name(tx: Tx, person: Person) -> str:
    """The name of a department staff member's department, or ""."""
    if person.department_id is None:
        return ""
    department = queries.get_department(session=tx.session, department_id=person.department_id)
    return department.name if department else ""


def bind(tx: Tx, person: Person, command: Command, address: str = "") -> None:
    """绑定 <code>: takes the role an invitation gives.

    `address` is where the message came from (the web client's address); without one, the
    chat itself is the address failed attempts are counted under.
    """
    if not command.first:
        reply(tx, person, "error.bind_usage")
        return
    # A code typed in groups with spaces (7K3M Q9XD 2HRT) arrives split over the arguments.
    code = f"{command.first}{command.rest}"
    bound = service.bind(tx, person, code, address=address)
    reply(
        tx,
        person,
        "reply.linked" if bound.account else "reply.bound",
        account=bound.account or "",
        role_label=role_label(bound.role),
        department_part=f"（{bound.department}）" if bound.department else "",
        help=_help_text(bound.role, bound.department),
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
            reply(
                tx,
                person,
                "reply.listing",
                title="您最近的诉求：",
                items=[[r.number, r.state, service.summary(r.text)] for r in items],
            )
            return
        todo(tx, person)
        return
    request, events = service.view(tx, person, command.first)
    staff_view = is_committee(person) or person.role == Role.DEPARTMENT
    actors: dict[int | None, str] = {}
    history = []
    for event in events:
        if event.outcome != "ok" or not (staff_view or event.action in REQUESTER_EVENTS):
            continue
        line = [
            deadlines.format_local(event.created_at),
            event.action,
            service.summary(event.note, 60)
            if event.note and (staff_view or event.action in REQUESTER_NOTES)
            else "",
        ]
        if staff_view:
            # Staff follow up with whoever did a step, so each line names its actor.
            if event.actor_id not in actors:
                actors[event.actor_id] = _actor(tx, event.actor_id)
            line.append(actors[event.actor_id])
        history.append(line)
    department = ""
    if request.department_id is not None:
        found = queries.get_department(session=tx.session, department_id=request.department_id)
        department = found.name if found else ""
    category = None
    if request.category_id is not None:
        category = queries.get_category(session=tx.session, category_id=request.category_id)
    reply(
        tx,
        person,
        "reply.status",
        number=request.number,
        state=request.state,
        category=category.name if category else "其他",
        created=deadlines.format_local(request.created_at),
        text=request.text,
        department=department,
        result=request.result or "",
        response_due=deadlines.format_local(request.response_due_at),
        resolution_due=deadlines.format_local(request.resolution_due_at),
        history=history,
    )


def _actor(tx: Tx, actor_id: int | None) -> str:
    """Who did a step: name and role (the department for its staff), or 系统."""
    if actor_id is None:
        return actor_label("", None)
    actor = queries.get_person(session=tx.session, person_id=actor_id)
    if actor is None:
        return actor_label("", None)
    return actor_label(service.person_label(actor), actor.role, department_name(tx, actor))


def todo(tx: Tx, person: Person, page_argument: str = "") -> None:
    """待办 [页码]: what waits for this worker or department, one page at a time.

    Sections (待受理, 待审核回单, 我在办; 待接收, 办理中) come with their true counts, the
    nearest deadline first; on channels with buttons each line has its actions and 更多 sends
    the next page, elsewhere the next page's command is written out.
    """
    argument = page_argument.strip()
    page: int | None = 1
    if argument:
        valid = argument.isdecimal() and len(argument) <= TODO_PAGE_DIGITS
        page = int(argument) if valid and int(argument) >= 1 else None
    # The rights come first: a requester's 待办 of any page is refused the same way.
    sections = service.todo(tx, person, page=page or 1, per_page=TODO_PAGE_SIZE)
    total = sum(section.total for section in sections)
    if total == 0 and page == 1:
        reply(tx, person, "reply.empty_todo")
        return
    pages = max(1, ceil(total / TODO_PAGE_SIZE))
    if page is None or page > pages:
        reply(tx, person, "error.todo_page", pages=pages)
        return
    rows = []
    before = 0
    for section in sections:
        first_page = before // TODO_PAGE_SIZE + 1
        before += section.total
        items = []
        for request in section.items:
            due = request.response_due_at if section.name == "new" else request.resolution_due_at
            items.append(
                [
                    request.number,
                    service.summary(request.text),
                    deadlines.format_local(due)[5:] if due else "—",
                    due is not None and due < tx.now,
                ]
            )
        rows.append([section.name, section.total, first_page, items])
    reply(
        tx,
        person,
        "reply.todo",
        total=total,
        page=page,
        pages=pages,
        todo=rows,
        buttons=person.channel not in buttonless_channels(),
    )


def complete(tx: Tx, person: Person, command: Command) -> None:
    """办结 <编号> <结果>: the handler reports the result."""
    request = service.complete(tx, person, command.first, command.rest)
    reply(tx, person, "reply.completed", number=request.number)


def report_error(tx: Tx, person: Person, error: WorkflowError, command: Command | None) -> None:
    """Answers a refused or impossible command in plain words; nothing else changes."""
    label = action_label(command.name) if command else ""
    if command is not None and command.name == "return":
        label = "退单"
    if isinstance(error, UnknownRequest):
        if not error.number:
            reply(tx, person, "error.missing_number", example=f"{_word(command)} {EXAMPLE_NUMBER}")
        else:
            reply(tx, person, "error.unknown_request", number=error.number[:40])
    elif (
        isinstance(error, NotPermitted)
        and error.reason == "not_yours"
        and person.role == Role.REQUESTER
        and command is not None
    ):
        # A requester acting on someone else's number is answered exactly as for a number
        # nobody was given: the answer must not even confirm that it exists.
        reply(tx, person, "error.unknown_request", number=command.first.strip().upper()[:40])
    elif isinstance(error, NotPermitted):
        key = "error.not_yours" if error.reason == "not_yours" else "error.not_permitted"
        number = command.first.strip().upper() if command else ""
        reply(tx, person, key, action_label=label or action_label(error.action), number=number)
    elif isinstance(error, TransitionNotAllowed):
        number = command.first.strip().upper() if command else ""
        reply(
            tx,
            person,
            "error.transition",
            number=number,
            state_label=state_label(error.state),
            action_label=label or action_label(error.action),
        )
    elif isinstance(error, UnknownDepartment):
        names = error.choices
        if names is None:
            names = [d.name for d in queries.list_departments(session=tx.session)]
        reply(
            tx,
            person,
            "error.unknown_department",
            name=error.name[:40],
            departments="、".join(names) or "（暂无）",
        )
    elif isinstance(error, UnknownCentre):
        number = command.first.strip().upper() if command else ""
        if command is not None and command.name == "assign" and not error.choices:
            reply(tx, person, "error.no_children", number=number)
        elif command is not None and command.name == "assign":
            reply(
                tx,
                person,
                "error.unknown_child_centre",
                number=number,
                name=error.typed[:40],
                centres="、".join(error.choices),
            )
        else:
            reply(tx, person, "error.unknown_centre", name=error.typed[:40])
    elif isinstance(error, InvitationInvalid):
        # Unknown, used and expired codes are answered alike: the answer must not tell a
        # guesser that a code exists.
        reply(tx, person, "error.invitation_invalid")
    elif isinstance(error, BindRefused):
        reply(tx, person, "error.bind_refused")
    elif isinstance(error, LinkRefused):
        reply(tx, person, "error.link_refused")
    elif isinstance(error, InvalidInput):
        if error.what == "too_long":
            reply(tx, person, "error.too_long", **error.params)
        elif error.what in (
            "empty",
            "reason_required",
            "result_required",
            "content_required",
            "satisfaction",
        ):
            reply(tx, person, f"error.{error.what}")
        elif error.what == "no_parent":
            reply(tx, person, "error.no_parent", **error.params)
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
