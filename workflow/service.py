"""Commands on requests. Each one loads, checks, transitions and writes the new state, its
event and its outbox rows through the caller's session: the caller commits them together."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session

from storage import queries
from storage.dates import (
    DEFAULT_RESOLUTION_DAYS,
    DEFAULT_RESPONSE_HOURS,
    WORKDAY_END_HOUR,
    WORKDAY_START_HOUR,
)
from storage.models import (
    Attachment,
    Category,
    Centre,
    Department,
    Invitation,
    OutboxMessage,
    Person,
    Request,
    Role,
)
from workflow import cards, deadlines, invitations, scope
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
)
from workflow.machine import TERMINAL, Action, State, transition
from workflow.permissions import (
    COMMITTEE_ROLES,
    acts_for_walk_in,
    may_view,
    permitted,
    role_could,
)
from workflow.routing import detect_category

#: SQ-YYYYMMDD-NNNN; the sequence may grow past four digits.
NUMBER_PATTERN = re.compile(r"^SQ-\d{8}-\d{4,}$")

#: The three answers to "how satisfied are you".
SATISFACTION_LEVELS: tuple[str, ...] = ("满意", "基本满意", "不满意")

#: Channel name of walk-in requesters registered at the reception desk (no chat of their own).
DESK_CHANNEL = "desk"
#: Channel of the person of a staff account made for the console (no chat of its own until
#: one is linked).
CONSOLE_CHANNEL = "console"


@dataclass
class Tx:
    """One unit of work: the session, the clock, and the outbox rows it queued."""

    session: Session
    now: datetime
    #: Prefix of the outbox idempotency keys, unique per unit of work (e.g. "in:42").
    source: str
    workday_start: int = WORKDAY_START_HOUR
    workday_end: int = WORKDAY_END_HOUR
    max_text: int = 2000
    outbox: list[OutboxMessage] = field(default_factory=list)
    #: State changes made in this unit of work: (number, action, new state, actor id).
    moved: list[tuple[str, str, str, int | None]] = field(default_factory=list)
    #: Where messages to a person go in this unit of work instead of their usual chat: the
    #: chat identity they are writing from (an account's person answered where they typed),
    #: or None for nothing at all (an action taken in the console answers on the page).
    via: dict[int, int | None] = field(default_factory=dict)
    #: Where messages to each person went so far (their account's chosen chat, or their own).
    _targets: dict[int, int] = field(default_factory=dict, repr=False)

    def notify(
        self, person: Person, key: str, request: Request | None = None, **params: Any
    ) -> None:
        """Queues the catalogue message `key` for `person`: in the chat of theirs that
        `via` names, else in the one their account chose for notifications, else in their
        own (one message however many chats are linked to them)."""
        assert person.id is not None
        target = self._target(person)
        if target is None:
            return
        if request is not None:
            params.setdefault("number", request.number)
        row = queries.add_outbox(
            session=self.session,
            idempotency_key=f"{self.source}:{len(self.outbox) + 1}",
            person_id=target,
            key=key,
            params=params,
            request_id=request.id if request is not None else None,
            at=self.now,
        )
        self.outbox.append(row)

    def _target(self, person: Person) -> int | None:
        assert person.id is not None
        if person.id in self.via:
            return self.via[person.id]
        target = self._targets.get(person.id)
        if target is None:
            # Residents have no accounts: only staff can have chosen another chat.
            target = (
                person.id
                if person.role == Role.REQUESTER
                else queries.notify_target(session=self.session, person=person)
            )
            self._targets[person.id] = target
        return target

    def outbox_ids(self) -> list[int]:
        """Ids of the queued rows (after flush or commit)."""
        return [row.id for row in self.outbox if row.id is not None]


def person_label(person: Person | None) -> str:
    """How a person is named in messages to others."""
    if person is None:
        return "系统"
    return person.display_name or f"用户{person.id}"


# --- reading ------------------------------------------------------------------------------


def parse_number(text: str) -> str:
    """A request number in canonical form.

    Raises:
        UnknownRequest: `text` is not of the form SQ-YYYYMMDD-NNNN.
    """
    number = text.strip().upper()
    if not NUMBER_PATTERN.match(number):
        raise UnknownRequest(text.strip())
    return number


def load(tx: Tx, number: str, *, lock: bool = True) -> Request:
    """A request by number, locked for the rest of the unit of work.

    Raises:
        UnknownRequest: The number is malformed or unknown.
    """
    request = queries.get_request_by_number(
        session=tx.session, number=parse_number(number), lock=lock
    )
    if request is None:
        raise UnknownRequest(number.strip())
    return request


def view(tx: Tx, actor: Person, number: str) -> tuple[Request, Sequence[Any]]:
    """A request and its history, for someone allowed to see it.

    Raises:
        UnknownRequest: No such request, or one the actor may not see (same answer, so numbers
            cannot be probed).
    """
    request = load(tx, number, lock=False)
    if not may_view(**_relation(tx, actor, request)):
        raise UnknownRequest(number.strip())
    assert request.id is not None
    return request, queries.events_of_request(session=tx.session, request_id=request.id)


def my_requests(tx: Tx, actor: Person) -> Sequence[Request]:
    """The requester's recent requests."""
    assert actor.id is not None
    return queries.requests_of_requester(session=tx.session, requester_id=actor.id)


def todo(tx: Tx, actor: Person, *, page: int = 1, per_page: int = 10) -> list[queries.TodoSection]:
    """One page of what waits for a worker (committee) or for a department's staff.

    A worker or leader sees the requests their own centre holds. Every section comes with its
    true total; `page` counts from 1 over the sections in order.
    """
    assert actor.id is not None
    offset = (max(page, 1) - 1) * per_page
    if actor.role in COMMITTEE_ROLES:
        return queries.todo_page(
            session=tx.session,
            handler_id=actor.id,
            centre_id=scope.centre_of(tx.session, actor),
            offset=offset,
            limit=per_page,
        )
    if actor.role == Role.DEPARTMENT and actor.department_id is not None:
        return queries.todo_page(
            session=tx.session, department_id=actor.department_id, offset=offset, limit=per_page
        )
    raise NotPermitted("inbox")


# --- submitting ---------------------------------------------------------------------------


def check_text(tx: Tx, text: str) -> str:
    """The text stripped, if it is neither empty nor too long.

    Raises:
        InvalidInput: "empty" or "too_long" (with the limit).
    """
    # NUL cannot be stored in PostgreSQL text and means nothing to people: it is dropped.
    text = text.replace("\x00", "").strip()
    if not text:
        raise InvalidInput("empty")
    if len(text) > tx.max_text:
        raise InvalidInput("too_long", limit=tx.max_text, length=len(text))
    return text


def submit(
    tx: Tx,
    requester: Person,
    text: str,
    *,
    contact_name: str | None = None,
    contact_phone: str | None = None,
    registered_by: Person | None = None,
    attachments: Sequence[dict[str, Any]] = (),
    origin: str | None = None,
) -> Request:
    """接单: a new request gets its number, category and deadlines; the right people hear.

    `attachments` are dicts of Attachment fields (kind, file_id, latitude, ...); `origin` is the
    platform message it came from, so that an edit of that message becomes a supplement.
    """
    text = check_text(tx, text)
    assert requester.id is not None
    centre = _intake_centre(tx, requester, registered_by)
    assert centre.id is not None
    category = detect_category(text, categories_at(tx, centre))
    day = deadlines.local_day(tx.now).strftime("%Y%m%d")
    sequence = queries.next_request_sequence(session=tx.session, day=day)
    response_hours = category.response_hours if category else DEFAULT_RESPONSE_HOURS
    resolution_days = category.resolution_days if category else DEFAULT_RESOLUTION_DAYS
    days_off = scope.centre_calendar(tx.session, centre.id)
    request = Request(
        number=f"SQ-{day}-{sequence:04d}",
        centre_id=centre.id,
        requester_id=requester.id,
        channel=requester.channel,
        text=text,
        category_id=category.id if category else None,
        state=State.NEW,
        registered_by_id=registered_by.id if registered_by else None,
        contact_name=contact_name,
        contact_phone=contact_phone,
        created_at=tx.now,
        updated_at=tx.now,
        response_due_at=_working_hours(tx, response_hours, days_off),
        resolution_due_at=_working_days(tx, resolution_days, days_off),
        deadlines_set_at=tx.now,
        origin=origin,
        tick_at=tx.now,
    )
    tx.session.add(request)
    tx.session.flush()
    _store_attachments(tx, request, attachments)
    queries.add_event(
        session=tx.session,
        request_id=request.id,
        actor_id=(registered_by or requester).id,
        action=Action.SUBMIT,
        from_state=None,
        to_state=State.NEW,
        at=tx.now,
        note=f"接待台代登记：{contact_name or ''} {contact_phone or ''}".strip()
        if registered_by
        else None,
    )
    requester.last_request_id = request.id
    tx.session.add(requester)
    _tell_requester(
        tx,
        request,
        "requester.receipt",
        category=category.name if category else "其他",
        response_due=deadlines.format_local(request.response_due_at),
    )
    department = _default_department(tx, request, category)
    if department is not None:
        _do_forward(tx, request, None, department, note="按类别自动转单")
    else:
        for worker in _workers(tx, request):
            tx.notify(worker, "card.new", request, **_card(tx, request, category))
    return request


def _intake_centre(tx: Tx, requester: Person, registered_by: Person | None) -> Centre:
    """Where a new request is held: a walk-in at the registering worker's centre, otherwise
    the requester's active centre, otherwise (a resident who chose none, or whose centre was
    deactivated) the one active centre, else the default centre."""
    holder = registered_by if registered_by is not None else requester
    centre_id = holder.centre_id
    if registered_by is not None and centre_id is None:
        centre_id = scope.default_centre_id(tx.session)
    if centre_id is not None:
        centre = queries.get_centre(session=tx.session, centre_id=centre_id)
        if centre is not None and (centre.active or registered_by is not None):
            return centre
    # A resident of no centre, or of one deactivated since, on an install where they are not
    # asked to choose (one active centre): that centre holds it.
    return queries.sole_active_centre(session=tx.session) or queries.default_centre(
        session=tx.session
    )


def categories_at(tx: Tx, centre: Centre) -> list[Category]:
    """The active categories that apply at `centre`, in the order defined: those of no centre
    and those of the centre or a centre above it; of several with one name, the nearest."""
    nearness = {centre_id: depth for depth, centre_id in enumerate(queries.ancestor_ids(centre))}
    far = len(nearness)
    visible = [
        category
        for category in queries.list_categories(session=tx.session)
        if category.centre_id is None or category.centre_id in nearness
    ]
    nearest: dict[str, int] = {}
    for category in visible:
        depth = far if category.centre_id is None else nearness[category.centre_id]
        nearest[category.name] = min(nearest.get(category.name, far + 1), depth)
    return [
        category
        for category in visible
        if (far if category.centre_id is None else nearness[category.centre_id])
        == nearest[category.name]
    ]


def departments_for(tx: Tx, request: Request) -> list[Department]:
    """The active departments a request can be forwarded to: those of its centre and of every
    centre above it, nearest first (then in the order made); of several with one name, only
    the nearest."""
    centre = _centre(tx, request.centre_id)
    ancestors = queries.ancestor_ids(centre)
    rank = {centre_id: depth for depth, centre_id in enumerate(ancestors)}
    default_id = scope.default_centre_id(tx.session)
    found = queries.departments_of_centres(
        session=tx.session, centre_ids=ancestors, default_centre_id=default_id
    )
    ordered = sorted(
        found,
        key=lambda d: rank[d.centre_id if d.centre_id is not None else default_id],
    )
    chosen: dict[str, Department] = {}
    for department in ordered:
        chosen.setdefault(department.name, department)
    return list(chosen.values())


def _default_department(tx: Tx, request: Request, category: Category | None) -> Department | None:
    """Where a category sends a new request straight away: the department it names, if that
    department serves the request's centre, else the nearest one of that name that does;
    None (the committee decides) when none does or the category goes to the committee.

    A category of no centre applies everywhere but names one centre's department; a request
    of another branch of the tree goes to a namesake of its own branch, never outside it.
    """
    if category is None or category.route != "department" or category.department_id is None:
        return None
    department = queries.get_department(session=tx.session, department_id=category.department_id)
    if department is None or not department.active:
        return None
    offered = departments_for(tx, request)
    if any(d.id == department.id for d in offered):
        return department
    return next((d for d in offered if d.name == department.name), None)


# --- committee ----------------------------------------------------------------------------


def accept(tx: Tx, actor: Person, number: str) -> Request:
    """做单: the committee handles the request itself."""
    request = _begin(tx, actor, Action.ACCEPT, number)
    _move(tx, request, actor, Action.ACCEPT)
    request.handler_id = actor.id
    _mark_first_action(tx, request)
    _tell_requester(tx, request, "requester.accepted")
    _tell_other_workers(tx, actor, request, "worker.acted", action="受理")
    return request


def forward(tx: Tx, actor: Person, number: str, department_name: str) -> Request:
    """转单: the committee forwards the request to a department."""
    request = _begin(tx, actor, Action.FORWARD, number)
    offered = departments_for(tx, request)
    department = next((d for d in offered if d.name == department_name.strip()), None)
    if department is None:
        raise UnknownDepartment(department_name.strip(), [d.name for d in offered])
    _do_forward(tx, request, actor, department)
    _tell_other_workers(tx, actor, request, "worker.acted", action=f"转单至{department.name}")
    return request


def _do_forward(
    tx: Tx, request: Request, actor: Person | None, department: Department, note: str | None = None
) -> None:
    _move(tx, request, actor, Action.FORWARD, note=note or department.name)
    request.department_id = department.id
    request.handler_id = None
    if department.resolution_days is not None:
        request.resolution_due_at = _working_days(
            tx, department.resolution_days, _calendar(tx, request)
        )
        request.deadlines_set_at = tx.now
    if actor is not None:
        _mark_first_action(tx, request)
    _tell_requester(tx, request, "requester.forwarded", department=department.name)
    category = _category(tx, request)
    staff = queries.reachable_people(
        session=tx.session, roles=[Role.DEPARTMENT], department_id=department.id
    )
    for person in staff:
        tx.notify(
            person,
            "card.forwarded",
            request,
            department=department.name,
            by=person_label(actor),
            **_card(tx, request, category),
        )
    if actor is None:
        for worker in _workers(tx, request):
            tx.notify(
                worker,
                "card.auto_forwarded",
                request,
                department=department.name,
                **_card(tx, request, category),
            )


def recall(tx: Tx, actor: Person, number: str) -> Request:
    """撤回转单: the committee takes back a forwarded request the department has not taken yet
    (e.g. one a category forwarded automatically to the wrong department); it is new again and
    can be forwarded elsewhere. The department's staff are told."""
    request = _begin(tx, actor, Action.RECALL, number)
    department = _department(tx, request)
    staff = _current_handlers(tx, request)
    _move(tx, request, actor, Action.RECALL, note=department)
    request.department_id = None
    for person in staff:
        tx.notify(person, "dept.recalled", request, department=department, by=person_label(actor))
    _tell_other_workers(
        tx, actor, request, "worker.acted", action=f"撤回转单（原转交{department}）"
    )
    return request


def reject(tx: Tx, actor: Person, number: str, reason: str) -> Request:
    """不予受理: the committee refuses the request, with a reason."""
    request = _begin(tx, actor, Action.REJECT, number)
    reason = _required(tx, reason, "reason_required")
    _move(tx, request, actor, Action.REJECT, note=reason)
    _mark_first_action(tx, request)
    request.closed_at = tx.now
    _tell_requester(tx, request, "requester.rejected", reason=reason)
    _tell_other_workers(tx, actor, request, "worker.acted", action="驳回")
    return request


def refer(tx: Tx, actor: Person, number: str, reason: str) -> Request:
    """上报: the committee sends the request up to the parent centre (the nearest active
    centre above), with a reason; that centre's workers get it as new, the old centre's other
    workers and the requester are told. Its deadlines stay as they are.

    Raises:
        InvalidInput: "reason_required", or "no_parent" (the centre has none above it).
    """
    request = _begin(tx, actor, Action.REFER, number)
    reason = _required(tx, reason, "reason_required")
    old = _centre(tx, request.centre_id)
    parent = _parent(tx, old)
    if parent is None:
        raise InvalidInput("no_parent", number=request.number)
    _tell_other_workers(tx, actor, request, "worker.acted", action=f"上报至{parent.name}")
    _move_centre(tx, request, actor, Action.REFER, old, parent, reason)
    _tell_requester(tx, request, "requester.referred", centre=parent.name)
    category = _category(tx, request)
    for worker in _workers(tx, request):
        tx.notify(
            worker,
            "card.referred",
            request,
            by=person_label(actor),
            centre=old.name,
            reason=reason,
            **_card(tx, request, category),
        )
    return request


def assign(tx: Tx, actor: Person, number: str, centre: str) -> Request:
    """下派: the committee assigns the request to a direct, active child centre (by code, or
    by exact name), whose workers get it as new; the old centre's other workers and the
    requester are told. Its deadlines stay as they are.

    Raises:
        UnknownCentre: No direct, active child of the request's centre is called `centre`
            (its `choices` are the names that are).
    """
    request = _begin(tx, actor, Action.ASSIGN, number)
    old = _centre(tx, request.centre_id)
    children = list(queries.child_centres(session=tx.session, parent_id=old.id, active_only=True))
    typed = centre.strip()
    child = next((c for c in children if c.code.lower() == typed.lower()), None) or next(
        (c for c in children if c.name == typed), None
    )
    if child is None or not typed:
        raise UnknownCentre(typed, [c.name for c in children])
    _tell_other_workers(tx, actor, request, "worker.acted", action=f"下派至{child.name}")
    _move_centre(tx, request, actor, Action.ASSIGN, old, child, None)
    _tell_requester(tx, request, "requester.assigned", centre=child.name)
    category = _category(tx, request)
    for worker in _workers(tx, request):
        tx.notify(
            worker,
            "card.assigned",
            request,
            by=person_label(actor),
            centre=old.name,
            **_card(tx, request, category),
        )
    return request


def child_centres_of(tx: Tx, request: Request) -> list[Centre]:
    """The centres a request can be assigned to (下派): the active children of its centre."""
    return list(
        queries.child_centres(session=tx.session, parent_id=request.centre_id, active_only=True)
    )


def centre_name(tx: Tx, centre_id: int) -> str:
    """A centre's name."""
    return _centre(tx, centre_id).name


def _parent(tx: Tx, centre: Centre) -> Centre | None:
    """The nearest active centre above `centre`, if any."""
    for ancestor_id in queries.ancestor_ids(centre)[1:]:
        ancestor = queries.get_centre(session=tx.session, centre_id=ancestor_id)
        if ancestor is not None and ancestor.active:
            return ancestor
    return None


def _move_centre(
    tx: Tx,
    request: Request,
    actor: Person,
    action: Action,
    old: Centre,
    new: Centre,
    reason: str | None,
) -> None:
    """Moves the request from `old` to `new` centre as new, nobody handling it.

    Not a first action: the response figures wait for the 受理, 转单 or 驳回 of the centre that
    holds it (docs/statistics.md), whose response deadline is the one it had.
    """
    note = f"{old.name}（{old.code}）→ {new.name}（{new.code}）"
    if reason:
        note += f"：{reason}"
    assert new.id is not None
    request.centre_id = new.id
    request.handler_id = None
    _move(tx, request, actor, action, note=note, moved_centre=True)


def approve(tx: Tx, actor: Person, number: str) -> Request:
    """审核回单: a worker approves the result and it goes back to the requester."""
    request = _begin(tx, actor, Action.APPROVE, number)
    _move(tx, request, actor, Action.APPROVE)
    request.replied_at = tx.now
    if request.first_replied_at is None:
        request.first_replied_at = tx.now
        request.reply_seconds, request.reply_work_seconds = _took(tx, request)
    _tell_requester(tx, request, "requester.replied", result=request.result or "")
    _tell_other_workers(tx, actor, request, "worker.acted", action="回单")
    return request


def send_back(tx: Tx, actor: Person, number: str, reason: str) -> Request:
    """返工: a worker sends the result back to whoever completed it."""
    request = _begin(tx, actor, Action.SEND_BACK, number)
    reason = _required(tx, reason, "reason_required")
    _move(
        tx,
        request,
        actor,
        Action.SEND_BACK,
        note=reason,
        with_department=request.department_id is not None,
    )
    if request.department_id is None and not _on_committee(tx, request.handler_id):
        # Whoever completed it lost their role since: the rework is the committee's.
        request.handler_id = None
    holders = _current_handlers(tx, request)
    for person in holders:
        tx.notify(person, "card.sent_back", request, reason=reason, by=person_label(actor))
    _tell_other_workers(
        tx, actor, request, "worker.acted", action="返工", skip={person.id for person in holders}
    )
    return request


# --- departments --------------------------------------------------------------------------


def take(tx: Tx, actor: Person, number: str) -> Request:
    """接收: the department accepts a forwarded request."""
    request = _begin(tx, actor, Action.TAKE, number)
    _move(tx, request, actor, Action.TAKE)
    department = _department(tx, request)
    _tell_requester(tx, request, "requester.taken", department=department)
    return request


def return_(tx: Tx, actor: Person, number: str, reason: str) -> Request:
    """退单: the department hands the request back to the committee."""
    request = _begin(tx, actor, Action.RETURN, number)
    reason = _required(tx, reason, "reason_required")
    department = _department(tx, request)
    _move(tx, request, actor, Action.RETURN, note=reason)
    request.department_id = None
    for worker in _workers(tx, request):
        tx.notify(
            worker,
            "card.returned",
            request,
            department=department,
            reason=reason,
            **_card(tx, request, _category(tx, request)),
        )
    return request


def complete(tx: Tx, actor: Person, number: str, result: str) -> Request:
    """办结: whoever handles the request reports the result; it waits for review.

    Department staff may 办结 a request forwarded to their department without pressing 接收
    first: it is taken (its own event and notice) and then completed, in one transaction.
    """
    if result.strip() and _takes_before_completing(tx, actor, number):
        # The result is checked first: a refused 办结 must not leave the request taken.
        result = _required(tx, result, "result_required")
        take(tx, actor, number)
    request = _begin(tx, actor, Action.COMPLETE, number)
    result = _required(tx, result, "result_required")
    by_department = request.state == State.DEPT_HANDLING
    _move(tx, request, actor, Action.COMPLETE, note=result)
    request.result = result
    for worker in _workers(tx, request):
        tx.notify(
            worker,
            "card.review",
            request,
            result=result,
            by=person_label(actor),
            department=_department(tx, request) if by_department else "党委",
            text=request.text,
        )
    return request


# --- requesters ---------------------------------------------------------------------------


def supplement(
    tx: Tx,
    actor: Person,
    number: str,
    text: str,
    attachments: Sequence[dict[str, Any]] = (),
) -> Request:
    """补充: the requester adds information (text and/or attachments); its holders hear it."""
    request = _begin(tx, actor, Action.SUPPLEMENT, number)
    text = _required(tx, text, "content_required")
    _move(tx, request, actor, Action.SUPPLEMENT, note=text)
    _store_attachments(tx, request, attachments)
    for person in _current_handlers(tx, request):
        tx.notify(
            person,
            "card.supplemented",
            request,
            supplement=text,
            attachments=[dict(item) for item in attachments],
        )
    return request


def request_from_origin(tx: Tx, actor: Person, origin: str) -> Request | None:
    """The actor's request that came from platform message `origin`, if any."""
    return queries.get_request_by_origin(session=tx.session, origin=origin, requester_id=actor.id)


def recent_open_request(tx: Tx, actor: Person, minutes: float) -> Request | None:
    """The actor's last request if it is still open and younger than `minutes`."""
    if actor.last_request_id is None:
        return None
    request = queries.get_request(session=tx.session, request_id=actor.last_request_id)
    if request is None or State(request.state) in TERMINAL:
        return None
    if request.created_at < tx.now - timedelta(minutes=minutes):
        return None
    return request


def _store_attachments(tx: Tx, request: Request, attachments: Sequence[dict[str, Any]]) -> None:
    assert request.id is not None
    for item in attachments:
        tx.session.add(
            Attachment(
                request_id=request.id,
                channel=request.channel,
                created_at=tx.now,
                kind=str(item.get("kind", "document")),
                file_id=item.get("file_id"),
                file_name=item.get("file_name"),
                mime_type=item.get("mime_type"),
                latitude=item.get("latitude"),
                longitude=item.get("longitude"),
                label=item.get("label"),
                url=item.get("url"),
            )
        )


#: The fields of an attachment dict that are stored.
ATTACHMENT_FIELDS: tuple[str, ...] = (
    "kind",
    "file_id",
    "file_name",
    "mime_type",
    "latitude",
    "longitude",
    "label",
    "url",
)


def cancel(tx: Tx, actor: Person, number: str) -> Request:
    """撤销: the requester withdraws an open request."""
    request = _begin(tx, actor, Action.CANCEL, number)
    holders = _current_handlers(tx, request)
    _move(tx, request, actor, Action.CANCEL)
    request.closed_at = tx.now
    _tell_requester(tx, request, "requester.cancelled")
    for person in holders:
        tx.notify(person, "card.cancelled", request)
    return request


def rate(tx: Tx, actor: Person, number: str, solved: bool, satisfaction: str) -> Request:
    """评价: solved and (basically) satisfied closes; anything else reopens (重办)."""
    if satisfaction not in SATISFACTION_LEVELS:
        raise InvalidInput("satisfaction")
    positive = solved and satisfaction != "不满意"
    action = Action.RATE if positive else Action.REOPEN
    request = _begin(tx, actor, action, number)
    rating = f"{'已解决' if solved else '未解决'} {satisfaction}"
    _move(tx, request, actor, action, note=rating)
    request.solved = solved
    request.satisfaction = satisfaction
    if positive:
        request.closed_at = tx.now
        _tell_requester(tx, request, "requester.closed", rating=rating)
        for worker in _workers(tx, request):
            tx.notify(worker, "worker.rated", request, rating=rating)
    else:
        request.reopen_count += 1
        category = _category(tx, request)
        days_off = _calendar(tx, request)
        request.response_due_at = _working_hours(
            tx, category.response_hours if category else DEFAULT_RESPONSE_HOURS, days_off
        )
        request.resolution_due_at = _working_days(
            tx, category.resolution_days if category else DEFAULT_RESOLUTION_DAYS, days_off
        )
        request.deadlines_set_at = tx.now
        request.department_id = None
        request.handler_id = None
        request.result = None
        request.replied_at = None
        _tell_requester(tx, request, "requester.reopened")
        for worker in _workers(tx, request):
            tx.notify(
                worker,
                "card.reopened",
                request,
                rating=rating,
                **_card(tx, request, _category(tx, request)),
            )
    return request


# --- invitations --------------------------------------------------------------------------


def create_invitation(
    *,
    session: Session,
    role: str,
    department_name: str | None,
    now: datetime,
    days: int = 7,
    centre_code: str | None = None,
) -> str:
    """A new one-time invitation code for `role` in a centre (department staff name their
    department).

    Args:
        session: the caller's transaction.
        role: worker, leader or department.
        department_name: for department staff: a department owned by the centre or one of its
            ancestors (the nearest of that name), or by no centre.
        now: when the code is made.
        days: how long it is valid.
        centre_code: the centre of the role; None: the default centre.

    Raises:
        UnknownCentre: No active centre has this code.
        UnknownDepartment: The department is not there for this centre, or is inactive.
        InvalidInput: The role is not one that can be invited.
    """
    if role not in (Role.WORKER, Role.LEADER, Role.DEPARTMENT):
        raise InvalidInput("role")
    if centre_code is None:
        centre = queries.default_centre(session=session)
    else:
        found = queries.get_centre_by_code(session=session, code=centre_code)
        if found is None or not found.active:
            raise UnknownCentre(centre_code)
        centre = found
    department_id = None
    if role == Role.DEPARTMENT:
        department = queries.department_in_centres(
            session=session,
            name=(department_name or "").strip(),
            centre_ids=[*queries.ancestor_ids(centre), None],
        )
        if department is None or not department.active:
            raise UnknownDepartment(department_name or "")
        department_id = department.id
    code = invitations.new_code()
    # Stored as the digest of the normalised code, which is what 绑定 looks up.
    queries.add_invitation(
        session=session,
        code=invitations.normalise(code),
        role=role,
        department_id=department_id,
        centre_id=centre.id,
        expires_at=now + timedelta(days=days),
    )
    return code


#: Failed 绑定 allowed per person, and per address, within BIND_FAILURE_WINDOW; after that a
#: 绑定 is refused without looking at its code, so codes cannot be guessed by trying.
BIND_FAILURE_LIMIT = 5

#: The window in which failed 绑定 are counted.
BIND_FAILURE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Bound:
    """What a 绑定 did: the role now held (and the department's name for its staff), and for
    a link to an account (关联聊天账号), the account's username."""

    role: str
    department: str | None = None
    account: str | None = None


def bind(tx: Tx, person: Person, code: str, *, address: str = "") -> Bound:
    """绑定: a one-time code gives this chat identity its role.

    A code that is unknown, used or expired is put on record (bind_failures) with the
    person and `address` (the web client's address; "" for the chat itself); after
    BIND_FAILURE_LIMIT such failures within BIND_FAILURE_WINDOW from either, 绑定 is refused
    before the code is looked up.

    A code from the console's 关联聊天账号 links this chat identity to the account instead:
    from then on it acts as the account's person.

    Returns:
        The role, and the department's name for department staff (and the account).

    Raises:
        BindRefused: Too many failed 绑定 from this person or address.
        LinkRefused: The identity holds a role or requests of its own, or is the person
            of another account.
        InvitationInvalid: "unknown", "used" or "expired" (answered alike).
    """
    assert person.id is not None
    address = address or f"{person.channel}:{person.external_id}"
    since = tx.now - BIND_FAILURE_WINDOW
    if (
        queries.count_bind_failures(session=tx.session, since=since, person_id=person.id)
        >= BIND_FAILURE_LIMIT
        or queries.count_bind_failures(session=tx.session, since=since, address=address)
        >= BIND_FAILURE_LIMIT
    ):
        raise BindRefused()
    invitation = queries.get_invitation(session=tx.session, code=invitations.normalise(code))
    reason = None
    if invitation is None:
        reason = "unknown"
    elif invitation.used_at is not None:
        reason = "used"
    elif invitation.expires_at <= tx.now:
        reason = "expired"
    elif invitation.department_id is not None:
        unit = queries.get_department(session=tx.session, department_id=invitation.department_id)
        if unit is None or not unit.active:
            reason = "expired"
    if reason is None and invitation is not None and invitation.centre_id is not None:
        # A centre deactivated since the code was made takes no new staff.
        place = queries.get_centre(session=tx.session, centre_id=invitation.centre_id)
        if place is None or not place.active:
            reason = "expired"
    if reason is not None or invitation is None:
        reason = reason or "unknown"
        queries.add_bind_failure(
            session=tx.session,
            channel=person.channel,
            person_id=person.id,
            identity=person.external_id,
            address=address,
            reason=reason,
            at=tx.now,
        )
        raise InvitationInvalid(reason)
    if invitation.account_id is not None:
        return _link(tx, person, invitation, address)
    invitation.used_at = tx.now
    invitation.used_by_id = person.id
    person.role = invitation.role
    person.department_id = invitation.department_id
    # The role is in the invitation's centre (codes made before centres: the default one).
    person.centre_id = invitation.centre_id or queries.default_centre(session=tx.session).id
    tx.session.add(invitation)
    tx.session.add(person)
    department = None
    if invitation.department_id is not None:
        found = queries.get_department(session=tx.session, department_id=invitation.department_id)
        department = found.name if found else None
    queries.add_event(
        session=tx.session,
        request_id=None,
        actor_id=person.id,
        action="bind",
        from_state=None,
        to_state=None,
        note=invitation.role,
        at=tx.now,
    )
    # Everyone with a role is an account (it may get a password with `redesk staff
    # reset-password`), so that chats can be linked to them later.
    queries.ensure_account(session=tx.session, person=person, at=tx.now)
    return Bound(invitation.role, department)


def _link(tx: Tx, identity: Person, invitation: Invitation, address: str = "") -> Bound:
    """Links `identity` to the account of `invitation` (a 关联聊天账号 code), on the admin
    audit under the account's name."""
    assert invitation.account_id is not None and identity.id is not None
    account = queries.get_account(session=tx.session, account_id=invitation.account_id)
    principal = (
        queries.get_person(session=tx.session, person_id=account.person_id)
        if account is not None and account.active
        else None
    )
    if account is None or principal is None:
        raise InvitationInvalid("expired")
    if principal.id != identity.id:
        if (
            identity.role != Role.REQUESTER
            or queries.get_account_of(session=tx.session, person_id=identity.id) is not None
        ):
            raise LinkRefused("staff")
        identity.principal_id = principal.id
        identity.dialogue = None
        tx.session.add(identity)
    invitation.used_at = tx.now
    invitation.used_by_id = identity.id
    tx.session.add(invitation)
    queries.add_event(
        session=tx.session,
        request_id=None,
        actor_id=principal.id,
        action="link",
        from_state=None,
        to_state=None,
        note=f"{identity.channel}:{identity.id}",
        at=tx.now,
    )
    queries.audit_admin_action(
        session=tx.session,
        actor=f"console:{account.username}",
        action="console_link",
        detail={"address": address, "person": identity.id, "channel": identity.channel},
        at=tx.now,
    )
    department = None
    if principal.department_id is not None:
        found = queries.get_department(session=tx.session, department_id=principal.department_id)
        department = found.name if found else None
    return Bound(principal.role, department, account.username)


# --- revocation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Released:
    """What a revoked person held and where it went."""

    #: Numbers of the requests they were handling, now back in NEW.
    released: list[str]
    #: Numbers of the walk-ins they registered, now relayed to and acted for by every worker.
    walk_ins: list[str]
    #: Web tokens of theirs that were expired.
    web_tokens: int
    #: Pending messages to them that were dropped.
    skipped: int


def release_holdings(tx: Tx, person: Person) -> Released:
    """Ends what a person whose role was just revoked still holds.

    The caller has already made `person` a requester (so they are no longer among the
    workers who are told). Requests they were handling go back to NEW (收回, an event each);
    requests that name them as handler in a later state (their result in review, replied,
    closed) keep the name for the record, and `_current_handlers` no longer tells them
    anything; walk-ins they registered lose that reference, so that every worker is relayed
    their notices and may act for them (an event each); every web token of theirs expires;
    notices still queued for them are dropped. Every worker hears what came back.
    """
    assert person.id is not None
    label = person_label(person)
    released: list[str] = []
    for request in queries.requests_handled_by(session=tx.session, handler_id=person.id):
        _move(tx, request, None, Action.RELEASE, note=f"{label}的角色已撤销")
        request.handler_id = None
        released.append(request.number)
        for worker in _workers(tx, request):
            tx.notify(
                worker,
                "card.released",
                request,
                by=label,
                **_card(tx, request, _category(tx, request)),
            )
    walk_ins: list[str] = []
    for request in queries.walk_ins_registered_by(session=tx.session, person_id=person.id):
        request.registered_by_id = None
        tx.session.add(request)
        walk_ins.append(request.number)
        queries.add_event(
            session=tx.session,
            request_id=request.id,
            actor_id=None,
            action=Action.COMMENT,
            from_state=request.state,
            to_state=request.state,
            at=tx.now,
            note=f"登记人{label}的角色已撤销，改由全体党务工作者代为联系群众",
        )
    tokens = queries.expire_web_sessions(session=tx.session, person_id=person.id, now=tx.now)
    # Notices queued for them while they had the role (a supplement's text, a card) are not
    # delivered any more; messages about their own requests and card refreshes (which take
    # the buttons off their old cards) still are.
    skipped = queries.skip_pending_outbox(
        session=tx.session,
        person_id=person.id,
        keep_requester_id=person.id,
        keep_keys=[cards.REFRESH_KEY],
        reason="role revoked",
    )
    if released or walk_ins:
        for worker in _workers_of(tx, scope.centre_of(tx.session, person)):
            tx.notify(
                worker,
                "committee.revoked",
                by=label,
                released=len(released),
                walk_ins=len(walk_ins),
                numbers="、".join(released + walk_ins),
            )
    return Released(released, walk_ins, tokens, skipped)


# --- internals ----------------------------------------------------------------------------


def check(tx: Tx, actor: Person, action: Action, number: str) -> Request:
    """The request, if the actor may take `action` on it now; a refusal is recorded.

    Raises:
        UnknownRequest, NotPermitted, TransitionNotAllowed.
    """
    if action == Action.COMPLETE and _takes_before_completing(tx, actor, number):
        return _begin(tx, actor, Action.TAKE, number)
    return _begin(tx, actor, action, number)


def _takes_before_completing(tx: Tx, actor: Person, number: str) -> bool:
    """Whether `actor`'s 办结 on `number` takes it first (forwarded to their department)."""
    if actor.role != Role.DEPARTMENT:
        return False
    try:
        request = load(tx, number)
    except UnknownRequest:
        return False
    return request.state == State.FORWARDED and _in_department(actor, request)


def _begin(tx: Tx, actor: Person, action: Action, number: str) -> Request:
    """Loads and locks the request, checks the actor's right and the state, changes nothing."""
    try:
        request = load(tx, number)
    except UnknownRequest:
        if not _role_could(actor, action):
            _refuse(tx, actor, action, None, note=number.strip()[:40])
            raise NotPermitted(action) from None
        raise
    relation = _relation(tx, actor, request)
    if not permitted(action, State(request.state), **relation):
        _refuse(tx, actor, action, request)
        if not _role_could(actor, action):
            raise NotPermitted(action)
        if actor.role in COMMITTEE_ROLES and not may_view(**relation):
            # Outside the worker's centre (and, for a leader, outside their subtree): answered
            # like a number nobody was given, so that it does not even confirm it exists.
            raise UnknownRequest(number.strip())
        # Someone of the right kind, but not for this request (another department, not theirs).
        raise NotPermitted(action, "not_yours")
    transition(State(request.state), action, with_department=request.department_id is not None)
    return request


def _role_could(actor: Person, action: Action) -> bool:
    """Whether the actor's role can ever take `action` (on some request)."""
    return role_could(actor.role, action)


def _refuse(
    tx: Tx, actor: Person, action: Action, request: Request | None, note: str | None = None
) -> None:
    state = request.state if request else None
    queries.add_event(
        session=tx.session,
        request_id=request.id if request else None,
        actor_id=actor.id,
        action=action,
        from_state=state,
        to_state=state,
        outcome="refused",
        note=note,
        at=tx.now,
    )


def _move(
    tx: Tx,
    request: Request,
    actor: Person | None,
    action: Action,
    note: str | None = None,
    with_department: bool = False,
    moved_centre: bool = False,
) -> None:
    """Records `action` on `request` and moves it; `moved_centre`: the request changed
    centre (上报, 下派), so its cards are refreshed even when its state stays the same."""
    source = State(request.state)
    target = transition(source, action, with_department=with_department)
    queries.add_event(
        session=tx.session,
        request_id=request.id,
        actor_id=actor.id if actor else None,
        action=action,
        from_state=source,
        to_state=target,
        note=note,
        at=tx.now,
    )
    request.state = target
    request.updated_at = tx.now
    # The tick looks at it again now: its reminders may have changed with it.
    request.tick_at = tx.now
    tx.session.add(request)
    if source is not target or moved_centre:
        tx.moved.append((request.number, action.value, target.value, actor.id if actor else None))
        # Cards that offered actions for the old state are updated (workflow/cards.py).
        cards.queue_refresh(tx, request)


def _mark_first_action(tx: Tx, request: Request) -> None:
    """Fixes the first action's figures: when, whether in time, how long after intake."""
    if request.first_action_at is None:
        request.first_action_at = tx.now
        request.responded_in_time = (
            request.response_due_at is None or tx.now <= request.response_due_at
        )
        request.response_seconds, request.response_work_seconds = _took(tx, request)


def _took(tx: Tx, request: Request) -> tuple[int, int]:
    """Calendar and working seconds from the request's intake to now."""
    calendar = max(int((tx.now - request.created_at).total_seconds()), 0)
    working = deadlines.working_seconds(
        request.created_at,
        tx.now,
        start_hour=tx.workday_start,
        end_hour=tx.workday_end,
        days_off=_calendar(tx, request),
    )
    return calendar, working


def _required(tx: Tx, text: str, what: str) -> str:
    try:
        return check_text(tx, text)
    except InvalidInput as exc:
        if exc.what == "empty":
            raise InvalidInput(what) from None
        raise


def _is_requester(tx: Tx, actor: Person, request: Request) -> bool:
    if actor.id == request.requester_id:
        return True
    return request.channel == DESK_CHANNEL and acts_for_walk_in(
        role=actor.role,
        actor_id=actor.id,
        registered_by_id=request.registered_by_id,
        in_centre=_in_centre(tx, actor, request),
    )


def _in_centre(tx: Tx, actor: Person, request: Request) -> bool:
    """Whether the actor's centre holds the request."""
    return scope.centre_of(tx.session, actor) == request.centre_id


def _relation(tx: Tx, actor: Person, request: Request) -> dict[str, Any]:
    """The actor's role and relationships to the request, as permitted() reads them."""
    return {
        "role": actor.role,
        "is_requester": _is_requester(tx, actor, request),
        "in_department": _in_department(actor, request),
        "in_centre": _in_centre(tx, actor, request),
        "overseeing": scope.overseen_by(tx.session, actor, request),
    }


def _in_department(actor: Person, request: Request) -> bool:
    return (
        actor.role == Role.DEPARTMENT
        and actor.department_id is not None
        and actor.department_id == request.department_id
    )


def committee(tx: Tx, request: Request) -> Sequence[Person]:
    """The reachable workers and committee group chats of the centre that holds `request`
    (who hear about its new requests)."""
    return _workers(tx, request)


def holders(tx: Tx, request: Request) -> list[Person]:
    """Who holds the request now: its department's staff, its worker, or every worker."""
    return _current_handlers(tx, request)


def summary(text: str, limit: int = 30) -> str:
    """A text on one line (runs of whitespace made one space), at most `limit` characters.

    A longer text is cut and ends in "…", which counts toward the limit.
    """
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record(tx: Tx, request: Request, action: Action, note: str) -> None:
    """An event by the system that does not move the request (督办 / escalate, remind)."""
    transition(State(request.state), action)
    queries.add_event(
        session=tx.session,
        request_id=request.id,
        actor_id=None,
        action=action,
        from_state=request.state,
        to_state=request.state,
        note=note,
        at=tx.now,
    )


def auto_close(tx: Tx, request: Request, *, days: int) -> Request:
    """自动办结: an answer nobody rated for `days` days is closed as 未评价; the requester is
    told."""
    _move(tx, request, None, Action.AUTO_CLOSE, note="未评价")
    request.closed_at = tx.now
    _tell_requester(tx, request, "requester.auto_closed", days=days)
    return request


def _workers(tx: Tx, request: Request) -> Sequence[Person]:
    """The committee's audience for a request: the workers and committee group chats of the
    centre that holds it."""
    return _workers_of(tx, request.centre_id)


def _workers_of(
    tx: Tx, centre_id: int, roles: Sequence[str] = (Role.WORKER, Role.GROUP)
) -> Sequence[Person]:
    """The reachable workers (and committee group chats) of one centre."""
    return queries.reachable_in_centres(
        session=tx.session,
        roles=list(roles),
        centre_ids=[centre_id],
        default_centre_id=scope.default_centre_id(tx.session),
    )


def _centre(tx: Tx, centre_id: int) -> Centre:
    centre = queries.get_centre(session=tx.session, centre_id=centre_id)
    assert centre is not None
    return centre


def _calendar(tx: Tx, request: Request) -> frozenset[date]:
    """The days off of the centre that holds the request (inherited from above)."""
    return scope.centre_calendar(tx.session, request.centre_id)


def _tell_other_workers(
    tx: Tx,
    actor: Person,
    request: Request,
    key: str,
    skip: set[int | None] | None = None,
    **params: Any,
) -> None:
    """Tells every worker of the request's centre but the actor (and those in `skip`, told
    otherwise) who did what."""
    for worker in _workers(tx, request):
        if worker.id != actor.id and worker.id not in (skip or set()):
            tx.notify(worker, key, request, by=person_label(actor), **params)


def _on_committee(tx: Tx, person_id: int | None) -> bool:
    """Whether `person_id` names a worker or leader (not someone whose role was revoked)."""
    if person_id is None:
        return False
    person = queries.get_person(session=tx.session, person_id=person_id)
    return person is not None and person.role in COMMITTEE_ROLES


def _current_handlers(tx: Tx, request: Request) -> list[Person]:
    """Who holds the request now: the department's staff, the handling worker, or all workers."""
    if request.department_id is not None:
        return list(
            queries.reachable_people(
                session=tx.session, roles=[Role.DEPARTMENT], department_id=request.department_id
            )
        )
    if request.handler_id is not None:
        handler = queries.get_person(session=tx.session, person_id=request.handler_id)
        # A handler who is no longer on the committee (role revoked) hears nothing more.
        if handler is not None and not handler.unreachable and handler.role in COMMITTEE_ROLES:
            return [handler]
    return list(_workers(tx, request))


def _tell_requester(tx: Tx, request: Request, key: str, **params: Any) -> None:
    requester = queries.get_person(session=tx.session, person_id=request.requester_id)
    assert requester is not None
    if requester.channel == DESK_CHANNEL:
        # A walk-in is told by phone: the worker who registered them gets the message, or
        # every worker once nobody on the committee is that registrar (role revoked).
        registrar = None
        if request.registered_by_id is not None:
            registrar = queries.get_person(session=tx.session, person_id=request.registered_by_id)
        relays = (
            [registrar]
            if registrar is not None and registrar.role in COMMITTEE_ROLES
            else list(_workers_of(tx, request.centre_id, roles=[Role.WORKER]))
        )
        for person in relays:
            tx.notify(
                person,
                "desk.relay",
                request,
                inner=key,
                contact_name=request.contact_name or "",
                contact_phone=request.contact_phone or "",
                **params,
            )
        return
    tx.notify(requester, key, request, **params)


def _category(tx: Tx, request: Request) -> Category | None:
    if request.category_id is None:
        return None
    return queries.get_category(session=tx.session, category_id=request.category_id)


def _department(tx: Tx, request: Request) -> str:
    if request.department_id is None:
        return ""
    department = queries.get_department(session=tx.session, department_id=request.department_id)
    return department.name if department else ""


def _card(tx: Tx, request: Request, category: Category | None) -> dict[str, Any]:
    requester = queries.get_person(session=tx.session, person_id=request.requester_id)
    assert request.id is not None
    attachments = [
        {key: getattr(row, key) for key in ATTACHMENT_FIELDS if getattr(row, key) is not None}
        for row in queries.attachments_of(session=tx.session, request_id=request.id)
    ]
    return {
        "attachments": attachments,
        "text": request.text,
        "category": category.name if category else "其他",
        "requester": request.contact_name or person_label(requester),
        "phone": request.contact_phone or (requester.phone if requester else None) or "",
        "channel": request.channel,
        "response_due": deadlines.format_local(request.response_due_at),
        "resolution_due": deadlines.format_local(request.resolution_due_at),
        **_moves(tx, request),
    }


def _moves(tx: Tx, request: Request) -> dict[str, bool]:
    """Whether the request's centre can send it up (上报) or down (下派): its committee cards
    offer those buttons only then, so a single-centre install sees none."""
    centre = _centre(tx, request.centre_id)
    return {
        "can_refer": _parent(tx, centre) is not None,
        "can_assign": bool(
            queries.child_centres(session=tx.session, parent_id=centre.id, active_only=True)
        ),
    }


def _working_hours(tx: Tx, hours: int, days_off: frozenset[date] = frozenset()) -> datetime:
    return deadlines.add_working_hours(
        tx.now, hours, start_hour=tx.workday_start, end_hour=tx.workday_end, days_off=days_off
    )


def _working_days(tx: Tx, days: int, days_off: frozenset[date] = frozenset()) -> datetime:
    return deadlines.add_working_days(
        tx.now, days, start_hour=tx.workday_start, end_hour=tx.workday_end, days_off=days_off
    )


__all__ = [
    "CONSOLE_CHANNEL",
    "DESK_CHANNEL",
    "SATISFACTION_LEVELS",
    "TransitionNotAllowed",
    "Tx",
    "accept",
    "approve",
    "assign",
    "bind",
    "cancel",
    "check",
    "complete",
    "create_invitation",
    "forward",
    "load",
    "my_requests",
    "parse_number",
    "rate",
    "recall",
    "refer",
    "reject",
    "release_holdings",
    "return_",
    "send_back",
    "submit",
    "supplement",
    "take",
    "todo",
    "view",
]
