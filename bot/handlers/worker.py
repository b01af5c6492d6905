"""What party workers do: the to-do list, 做单, 转单, 撤回转单, 驳回, 上报, 下派, review, and
walk-ins at the desk."""

from __future__ import annotations

from bot.handlers.commands import Command
from bot.handlers.common import is_committee, reply
from bot.inbound import Intake
from storage import queries
from storage.models import Person
from workflow import service
from workflow.machine import Action
from workflow.service import DESK_CHANNEL, Tx


def accept(tx: Tx, person: Person, command: Command) -> None:
    """受理 <编号>."""
    request = service.accept(tx, person, command.first)
    reply(tx, person, "reply.accepted", number=request.number)


def forward(tx: Tx, person: Person, command: Command) -> None:
    """转单 <编号> <部门>; without a department, offers the active ones as buttons."""
    if not command.rest:
        # Check right and state first, so the picker is offered only when forwarding can work.
        request = service.check(tx, person, Action.FORWARD, command.first)
        names = [d.name for d in service.departments_for(tx, request)]
        key = "ask.forward" if names else "ask.forward_none"
        reply(tx, person, key, number=request.number, departments=names)
        return
    request = service.forward(tx, person, command.first, command.rest)
    staff = queries.reachable_people(
        session=tx.session, roles=["department"], department_id=request.department_id
    )
    note = "" if staff else "（提示：该部门暂无绑定的工作人员，请尽快邀请其绑定。）"
    department = None
    if request.department_id is not None:
        department = queries.get_department(session=tx.session, department_id=request.department_id)
    reply(
        tx,
        person,
        "reply.forwarded",
        number=request.number,
        department=department.name if department else command.rest,
        staff_note=note,
    )


def recall(tx: Tx, person: Person, command: Command) -> None:
    """撤回转单 <编号>: takes back a forwarded request its department has not taken yet."""
    request = service.recall(tx, person, command.first)
    reply(tx, person, "reply.recalled", number=request.number)


def reject(tx: Tx, person: Person, command: Command) -> None:
    """驳回 <编号> <原因>."""
    request = service.reject(tx, person, command.first, command.rest)
    reply(tx, person, "reply.rejected", number=request.number)


def refer(tx: Tx, person: Person, command: Command) -> None:
    """上报 <编号> <原因>: sends the request up to the parent centre."""
    request = service.refer(tx, person, command.first, command.rest)
    reply(
        tx,
        person,
        "reply.referred",
        number=request.number,
        centre=service.centre_name(tx, request.centre_id),
    )


#: The dialogue 下派 without a centre opens: the next text names the child centre.
ASSIGN_DIALOGUE = "assign"


def assign(tx: Tx, person: Person, command: Command) -> None:
    """下派 <编号> <中心>; without a centre, asks for one, offering the child centres."""
    if not command.rest:
        # Check right and state first, so the question is asked only when assigning can work.
        request = service.check(tx, person, Action.ASSIGN, command.first)
        children = service.child_centres_of(tx, request)
        if not children:
            reply(tx, person, "error.no_children", number=request.number)
            return
        person.dialogue = {"command": ASSIGN_DIALOGUE, "number": request.number}
        tx.session.add(person)
        reply(
            tx,
            person,
            "ask.assign",
            number=request.number,
            centres=[[c.name, c.code] for c in children],
            names="、".join(c.name for c in children),
        )
        return
    request = service.assign(tx, person, command.first, command.rest)
    reply(
        tx,
        person,
        "reply.assigned",
        number=request.number,
        centre=service.centre_name(tx, request.centre_id),
    )


def approve(tx: Tx, person: Person, command: Command) -> None:
    """回单 <编号>."""
    request = service.approve(tx, person, command.first)
    reply(tx, person, "reply.approved", number=request.number)


def send_back(tx: Tx, person: Person, command: Command) -> None:
    """返工 <编号> <原因>."""
    request = service.send_back(tx, person, command.first, command.rest)
    reply(tx, person, "reply.sent_back", number=request.number)


def intake(tx: Tx, person: Person, form: Intake, natural_key: str) -> None:
    """接待台登记: a worker registers a walk-in's request on their behalf."""
    if not is_committee(person):
        reply(tx, person, "error.desk_not_worker")
        return
    service.check_text(tx, form.text)
    # Each walk-in gets an identity of the desk channel; they are reached through the registrar.
    walk_in = queries.get_or_create_person(
        session=tx.session,
        channel=DESK_CHANNEL,
        external_id=natural_key,
        display_name=form.name.strip()[:100],
    )
    walk_in.phone = form.phone.strip()[:30] or None
    tx.session.add(walk_in)
    tx.session.flush()
    service.submit(
        tx,
        walk_in,
        form.text,
        contact_name=form.name.strip()[:100] or "来访群众",
        contact_phone=form.phone.strip()[:30],
        registered_by=person,
    )
