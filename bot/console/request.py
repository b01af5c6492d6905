"""The console's request page: one request in full (requester, deadlines, attachments, the
whole history), the actions its viewer may take now, and the files that came with it.

Who may see a request is the chat's rule (service.view: permissions.may_view); anything else is
answered 404 like an unknown number. The actions offered are service.available (SPEC and the
permission checks); taking one runs the chat command's own handler, so the workflow, its
refusals and their wording (common.report_error) are those of chat. The handler's answer to
the actor is kept for the page instead of being sent to a chat.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlmodel import Session
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import wake
from bot.console.auth import (
    ConsoleUser,
    console_page,
    refuse_cross_site,
    require_page_user,
    require_user,
)
from bot.handlers import common, department, worker
from bot.handlers.commands import Command
from bot.http import BodyTooLarge, read_body, runtime_of
from bot.runtime import Runtime
from bot.texts import (
    ATTACHMENT_LABELS,
    action_label,
    actor_label,
    channel_labels,
    render,
    role_label,
    state_label,
    text,
)
from storage import queries
from storage.db import read_engine, session_scope
from storage.models import Attachment, Event, Person, Request
from workflow import service
from workflow.cards import REFRESH_KEY
from workflow.errors import (
    InvalidInput,
    NotPermitted,
    TransitionNotAllowed,
    UnknownCentre,
    UnknownDepartment,
    UnknownRequest,
    WorkflowError,
)
from workflow.machine import TERMINAL, Action, State
from workflow.masking import Redactor
from workflow.service import Tx

#: Largest body of an action (a reason or result is at most REDESK_MAX_TEXT_LENGTH characters).
BODY_LIMIT = 32 * 1024

#: Content types served inline (shown or played on the page); anything else is a download.
INLINE_TYPES: tuple[str, ...] = ("image/", "audio/", "video/")

#: Inline types that can carry script (SVG): served as downloads too.
NEVER_INLINE: frozenset[str] = frozenset({"image/svg+xml"})

#: How a kind of attachment is shown when its content type does not say.
MEDIA_OF_KIND: dict[str, str] = {
    "photo": "image",
    "live_photo": "image",
    "voice": "audio",
    "audio": "audio",
    "video": "video",
    "video_note": "video",
    "animation": "video",
    "location": "location",
    "contact": "contact",
}

#: Where a location opens on a map (latitude, longitude).
MAP_URL = "https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=17/{lat:.6f}/{lon:.6f}"


@dataclass(frozen=True)
class Form:
    """One action of the page: the chat command that takes it and what the page asks for."""

    action: Action
    #: The chat command's name (its handler, and how refusals name it).
    command: str
    handler: Callable[[Tx, Person, Command], None]
    #: The body field the command's argument comes from: "department", "centre", "text" or "".
    field: str = ""
    #: The catalogue key of the field's label ("console.ask.*").
    ask: str = ""


def _note(tx: Tx, person: Person, command: Command) -> None:
    """内部备注 <编号> <内容>: a note only staff read."""
    request = service.comment(tx, person, command.first, command.rest)
    common.reply(tx, person, "reply.noted", number=request.number)


#: The page's actions by the name the API takes, each taken by the chat command of the same
#: action (内部备注, which chat has no command for, by _note).
FORMS: dict[str, Form] = {
    "accept": Form(Action.ACCEPT, "accept", worker.accept),
    "forward": Form(
        Action.FORWARD, "forward", worker.forward, "department", "console.ask.department"
    ),
    "recall": Form(Action.RECALL, "recall", worker.recall),
    "reject": Form(Action.REJECT, "reject", worker.reject, "text", "console.ask.reason"),
    "refer": Form(Action.REFER, "refer", worker.refer, "text", "console.ask.reason"),
    "assign": Form(Action.ASSIGN, "assign", worker.assign, "centre", "console.ask.centre"),
    "take": Form(Action.TAKE, "take", department.take),
    "return": Form(Action.RETURN, "return", department.return_, "text", "console.ask.reason"),
    "complete": Form(Action.COMPLETE, "complete", common.complete, "text", "console.ask.result"),
    "approve": Form(Action.APPROVE, "approve", worker.approve),
    "send_back": Form(
        Action.SEND_BACK, "send_back", worker.send_back, "text", "console.ask.reason"
    ),
    "note": Form(Action.COMMENT, "comment", _note, "text", "console.ask.note"),
}

#: The API name of each action the page offers.
FORM_OF: dict[Action, str] = {form.action: name for name, form in FORMS.items()}

#: The answer to a picker left empty, by the field (the chat would ask with a question instead).
REQUIRED: dict[str, str] = {
    "department": "console.department_required",
    "centre": "console.centre_required",
}


@dataclass
class PageTx(Tx):
    """A unit of work of the console: what the handlers say to the actor is kept for the page
    (rendered from the catalogue) instead of being sent to a chat."""

    actor_id: int = 0
    #: (catalogue key, parameters) of every answer to the actor, in order.
    answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def of(cls, tx: Tx, actor_id: int) -> PageTx:
        """`tx` answering `actor_id` on the page."""
        values = {f.name: getattr(tx, f.name) for f in fields(Tx) if f.init}
        return cls(**values, actor_id=actor_id)

    def notify(
        self, person: Person, key: str, request: Request | None = None, **params: Any
    ) -> None:
        """Keeps an answer to the actor for the page (nothing goes to their chats); queues
        anyone else's message as usual, and the refresh of the actor's own cards too (a card
        in their chat that offered the action goes stale like everyone's)."""
        if person.id == self.actor_id and key != REFRESH_KEY:
            if request is not None:
                params.setdefault("number", request.number)
            self.answers.append((key, params))
            return
        super().notify(person, key, request, **params)

    def said(self) -> str:
        """What the handlers answered the actor, as chat would have shown it."""
        return "\n".join(render(key, params).text for key, params in self.answers)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _unknown(number: str) -> JSONResponse:
    return JSONResponse(_unknown_body(number), status_code=404)


def _unit(runtime: Runtime, session: Session, user: ConsoleUser) -> tuple[PageTx, Person] | None:
    """The console's unit of work for `user`, and the account's person (None: gone)."""
    actor = queries.get_person(session=session, person_id=user.person_id)
    if actor is None or actor.id is None:
        return None
    tx = runtime.tx(session, f"console:{user.session_id}:{uuid4().hex}")
    return PageTx.of(tx, actor.id), actor


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# --- reading ------------------------------------------------------------------------------


def _deadline(due: datetime | None, running: bool, now: datetime) -> dict[str, Any] | None:
    if due is None:
        return None
    left = int((due - now).total_seconds())
    return {
        "due_at": _iso(due),
        "seconds_left": left,
        "overdue": running and left < 0,
        "running": running,
    }


def _media(attachment: Attachment) -> tuple[str, str]:
    """How an attachment is shown (image, audio, video, location, contact, file) and its
    content type."""
    kind = (attachment.mime_type or "").split(";")[0].strip().lower()
    if not kind and attachment.stored_path:
        kind = mimetypes.guess_type(attachment.stored_path)[0] or ""
    if kind in NEVER_INLINE:
        return "file", kind
    for prefix in INLINE_TYPES:
        if kind.startswith(prefix):
            return prefix.rstrip("/"), kind
    media = MEDIA_OF_KIND.get(attachment.kind, "file")
    if media in ("image", "audio", "video") and kind:
        # The platform named a type that cannot be shown: offered as a file.
        media = "file"
    return media, kind


def _attachment(attachment: Attachment, redactor: Redactor) -> dict[str, Any]:
    media, kind = _media(attachment)
    stored = bool(attachment.stored_path)
    item: dict[str, Any] = {
        "id": attachment.id,
        "kind": attachment.kind,
        "kind_label": ATTACHMENT_LABELS.get(attachment.kind, "附件"),
        "media": media,
        "mime_type": kind or None,
        "name": attachment.file_name or None,
        "label": redactor.text(attachment.label) or None,
        "created_at": _iso(attachment.created_at),
        "url": f"/api/console/attachments/{attachment.id}" if stored else None,
        # None: not fetched yet; "": the platform no longer has it.
        "status": "stored" if stored else ("pending" if attachment.stored_path is None else "gone"),
    }
    if attachment.latitude is not None and attachment.longitude is not None:
        item["latitude"] = attachment.latitude
        item["longitude"] = attachment.longitude
        item["map_url"] = MAP_URL.format(lat=attachment.latitude, lon=attachment.longitude)
    return item


def _who(tx: Tx, actor_id: int | None, request: Request, redactor: Redactor) -> dict[str, Any]:
    """Who did a step: name, role and the label staff read ("王书记 · 党务工作者")."""
    person = queries.get_person(session=tx.session, person_id=actor_id) if actor_id else None
    if person is None:
        return {"name": "", "role": None, "role_label": "系统", "label": actor_label("", None)}
    name = service.person_label(person)
    if person.id == request.requester_id:
        name = redactor.name(request.contact_name or name)
    department = common.department_name(tx, person)
    return {
        "name": name,
        "role": person.role,
        "role_label": role_label(person.role, department),
        "label": actor_label(name, person.role, department),
    }


def _event(
    tx: Tx, event: Event, request: Request, redactor: Redactor, who: dict[int | None, Any]
) -> dict[str, Any]:
    if event.actor_id not in who:
        who[event.actor_id] = _who(tx, event.actor_id, request, redactor)
    return {
        "id": event.id,
        "at": _iso(event.created_at),
        "action": event.action,
        "action_label": action_label(event.action),
        "from_state": event.from_state,
        "from_label": state_label(event.from_state) if event.from_state else None,
        "to_state": event.to_state,
        "to_label": state_label(event.to_state) if event.to_state else None,
        "note": redactor.text(event.note) or None,
        # Notes of staff for staff: a requester's 查询 never shows them.
        "internal": event.action not in common.REQUESTER_EVENTS,
        "who": who[event.actor_id],
    }


def _actions(tx: Tx, actor: Person, request: Request) -> list[dict[str, Any]]:
    """What the actor may do now, with the choices each one needs."""
    offered = []
    for action in service.available(tx, actor, request):
        name = FORM_OF.get(action)
        if name is None:
            continue
        form = FORMS[name]
        item: dict[str, Any] = {
            "action": name,
            "label": text("console.note_label") if name == "note" else action_label(action),
            "field": form.field or None,
            "ask": text(form.ask) if form.ask else None,
        }
        if form.field == "department":
            departments = service.departments_for(tx, request)
            if not departments:
                continue
            item["departments"] = [{"id": d.id, "name": d.name} for d in departments]
        elif action is Action.REFER and service.parent_centre_of(tx, request) is None:
            continue
        elif form.field == "centre":
            children = service.child_centres_of(tx, request)
            if not children:
                continue
            item["centres"] = [{"code": c.code, "name": c.name} for c in children]
        offered.append(item)
    return offered


def detail(runtime: Runtime, user: ConsoleUser, number: str) -> dict[str, Any] | None:
    """A request as its page shows it, or None when the user may not see it (or it does not
    exist: the same answer)."""
    with session_scope(read_engine(runtime.engine)) as session:
        unit = _unit(runtime, session, user)
        if unit is None:
            return None
        tx, actor = unit
        try:
            request, events = service.view(tx, actor, number)
        except UnknownRequest:
            return None
        assert request.id is not None
        requester = queries.get_person(session=session, person_id=request.requester_id)
        name = request.contact_name or service.person_label(requester)
        phone = request.contact_phone or (requester.phone if requester else None) or ""
        unmasked = service.sees_contact(tx, actor, request)
        redactor = Redactor(names=[name], phones=[phone], include_pii=unmasked)
        category = (
            queries.get_category(session=session, category_id=request.category_id)
            if request.category_id is not None
            else None
        )
        centre = queries.get_centre(session=session, centre_id=request.centre_id)
        state = State(request.state)
        who: dict[int | None, Any] = {}
        return {
            "number": request.number,
            "state": request.state,
            "state_label": state_label(request.state),
            "text": redactor.text(request.text),
            "result": redactor.text(request.result) or None,
            "category": category.name if category else "其他",
            "centre": {"id": centre.id, "code": centre.code, "name": centre.name}
            if centre
            else None,
            "department": _department_name(tx, request),
            "channel": request.channel,
            "channel_label": channel_labels().get(request.channel, request.channel),
            "created_at": _iso(request.created_at),
            "now": _iso(tx.now),
            "requester": {
                "name": redactor.name(name),
                "phone": redactor.phone(phone) or None,
                "masked": not unmasked,
            },
            "deadlines": {
                "response": _deadline(
                    request.response_due_at,
                    request.first_action_at is None and state not in TERMINAL,
                    tx.now,
                ),
                "resolution": _deadline(
                    request.resolution_due_at,
                    state not in TERMINAL and state is not State.REPLIED,
                    tx.now,
                ),
            },
            "attachments": [
                _attachment(item, redactor)
                for item in queries.attachments_of(session=session, request_id=request.id)
            ],
            "events": [
                _event(tx, event, request, redactor, who)
                for event in events
                if event.outcome == "ok"
            ],
            "actions": _actions(tx, actor, request),
        }


def _department_name(tx: Tx, request: Request) -> str | None:
    if request.department_id is None:
        return None
    found = queries.get_department(session=tx.session, department_id=request.department_id)
    return found.name if found else None


# --- acting -------------------------------------------------------------------------------


#: HTTP status and error code of each refusal.
REFUSALS: tuple[tuple[type[WorkflowError], int, str], ...] = (
    (UnknownRequest, 404, "unknown_request"),
    (NotPermitted, 403, "not_permitted"),
    (TransitionNotAllowed, 409, "transition"),
    (UnknownDepartment, 400, "unknown_department"),
    (UnknownCentre, 400, "unknown_centre"),
    (InvalidInput, 400, "invalid_input"),
)


def _visible(tx: Tx, actor: Person, number: str) -> bool:
    try:
        service.view(tx, actor, number)
    except UnknownRequest:
        return False
    return True


@dataclass(frozen=True)
class Outcome:
    """How an action went: the HTTP answer, and the outbox rows to deliver."""

    status: int
    body: dict[str, Any]
    outbox_ids: list[int] = field(default_factory=list)
    #: Whether a request changed (the console's live streams are to be woken).
    changed: bool = False


def act(runtime: Runtime, user: ConsoleUser, number: str, name: str, value: str) -> Outcome:
    """Takes action `name` on request `number` for `user`, as the chat command would.

    A refusal is recorded like chat records it (the refused event commits); a request outside
    the user's scope is answered like an unknown number.
    """
    with session_scope(runtime.engine) as session:
        outcome = _take(runtime, session, user, number, name, value)
    return replace(outcome, changed=queries.changed_requests(session))


def _take(
    runtime: Runtime, session: Session, user: ConsoleUser, number: str, name: str, value: str
) -> Outcome:
    """The action of `act` in `session` (which the caller commits)."""
    form = FORMS[name]
    unit = _unit(runtime, session, user)
    if unit is None:
        return Outcome(401, {"error": "login_required", "message": "请先登录"})
    tx, actor = unit
    if form.field in REQUIRED and not value.strip():
        if not _visible(tx, actor, number):
            return Outcome(404, _unknown_body(number))
        return Outcome(400, {"error": "invalid_input", "message": text(REQUIRED[form.field])})
    command = Command(name=form.command, first=number, rest=value.strip())
    try:
        form.handler(tx, actor, command)
    except WorkflowError as error:
        common.report_error(tx, actor, error, command)
        status, code = next((s, c) for kind, s, c in REFUSALS if isinstance(error, kind))
        if status == 404 or not _visible(tx, actor, number):
            # Outside the user's scope: not even its existence is confirmed.
            return Outcome(404, _unknown_body(number))
        if isinstance(error, NotPermitted) and error.reason == "not_yours":
            code = "not_yours"
        session.flush()
        return Outcome(status, {"error": code, "message": tx.said()}, tx.outbox_ids())
    session.flush()
    request = service.load(tx, number, lock=False)
    body = {
        "number": request.number,
        "state": request.state,
        "state_label": state_label(request.state),
        "message": tx.said(),
    }
    return Outcome(200, body, tx.outbox_ids())


def _unknown_body(number: str) -> dict[str, Any]:
    return {
        "error": "unknown_request",
        "message": text("error.unknown_request", number=number.strip().upper()[:40]),
    }


# --- attachments --------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    """A stored attachment to serve."""

    path: Path
    content_type: str
    inline: bool
    name: str


def attachment_file(runtime: Runtime, user: ConsoleUser, attachment_id: int) -> File | None:
    """The stored file of an attachment, if the user may see its request and it is stored."""
    with session_scope(read_engine(runtime.engine)) as session:
        unit = _unit(runtime, session, user)
        attachment = queries.get_attachment(session=session, attachment_id=attachment_id)
        if unit is None or attachment is None or not attachment.stored_path:
            return None
        tx, actor = unit
        request = queries.get_request(session=session, request_id=attachment.request_id)
        if request is None or not _visible(tx, actor, request.number):
            return None
        media_dir = Path(runtime.settings.media_dir).resolve()
        path = (media_dir / attachment.stored_path).resolve()
        if not path.is_relative_to(media_dir) or not path.is_file():
            return None
        media, kind = _media(attachment)
        inline = media in ("image", "audio", "video")
        return File(
            path=path,
            content_type=kind if inline else "application/octet-stream",
            inline=inline,
            name=attachment.file_name or path.name,
        )


# --- routes -------------------------------------------------------------------------------


async def request_page(request: HttpRequest) -> Response:
    """GET /console/requests/{number}: the page (its script reads the API)."""
    user = await require_page_user(request)
    if isinstance(user, Response):
        return user
    return console_page("request.html")


async def request_detail(request: HttpRequest) -> Response:
    """GET /api/console/requests/{number}: the request, its history and the actions now."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    number = request.path_params["number"]
    found = await asyncio.to_thread(detail, runtime_of(request), user, number)
    if found is None:
        return _unknown(number)
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


async def request_action(request: HttpRequest) -> Response:
    """POST /api/console/requests/{number}/actions {action, department, centre, text}."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    refused = refuse_cross_site(request, user)
    if refused is not None:
        return refused
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        return _error(415, "bad_content_type", text("api.bad_content_type"))
    try:
        raw = await read_body(request, BODY_LIMIT)
    except BodyTooLarge:
        return _error(413, "too_large", text("api.too_large"))
    body = _parse(raw)
    if not isinstance(body, dict):
        return _error(400, "bad_json", text("api.bad_json"))
    name = body.get("action")
    if not isinstance(name, str) or name not in FORMS:
        shown = name[:30] if isinstance(name, str) else ""
        return _error(400, "unknown_action", text("console.unknown_action", action=shown))
    form = FORMS[name]
    for key in ("department", "centre", "text"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return _error(400, "bad_field", text("api.bad_field", field=key))
    value = str(body.get(form.field) or "") if form.field else ""
    runtime = runtime_of(request)
    outcome = await asyncio.to_thread(
        act, runtime, user, request.path_params["number"], name, value
    )
    if outcome.changed:
        # Committed: every console's live stream may read the change now.
        await asyncio.to_thread(wake.notify_changed, runtime.settings.redis_url)
    if outcome.outbox_ids:
        from bot import actors

        await asyncio.to_thread(actors.enqueue_deliveries, outcome.outbox_ids)
    return JSONResponse(outcome.body, status_code=outcome.status)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


async def attachment(request: HttpRequest) -> Response:
    """GET /api/console/attachments/{id}: the stored file, for someone who may see its
    request; 404 otherwise."""
    user = await require_user(request)
    if isinstance(user, Response):
        return user
    attachment_id = request.path_params["attachment_id"]
    found = await asyncio.to_thread(attachment_file, runtime_of(request), user, attachment_id)
    if found is None:
        return _error(404, "unknown_attachment", text("console.attachment_gone"))
    return FileResponse(
        found.path,
        media_type=found.content_type,
        filename=None if found.inline else found.name,
        content_disposition_type="inline" if found.inline else "attachment",
        headers={"Cache-Control": "private, no-store"},
    )


ROUTES: list[BaseRoute] = [
    Route("/console/requests/{number}", request_page, methods=["GET"]),
    Route("/api/console/requests/{number}", request_detail, methods=["GET"]),
    Route("/api/console/requests/{number}/actions", request_action, methods=["POST"]),
    Route("/api/console/attachments/{attachment_id:int}", attachment, methods=["GET"]),
]
