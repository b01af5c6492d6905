"""A chat harness: web identities send text to redesk, and the inbox and outbox are worked
through synchronously (the same functions the actors call), so tests read as conversations."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from bot import dispatch
from bot.channels import web
from bot.runtime import Runtime
from storage import queries
from storage.db import session_scope
from storage.models import (
    Category,
    Department,
    Event,
    OutboxMessage,
    OutboxStatus,
    Person,
    Request,
    utcnow,
)
from workflow import service

_ids = itertools.count(1)

#: A request number in a message.
NUMBER = re.compile(r"SQ-\d{8}-\d{4,}")


@dataclass(frozen=True)
class Message:
    """A message a web identity received (as GET /api/web/messages returns it)."""

    seq: int
    text: str
    buttons: list[dict[str, str]]
    #: The seq of the earlier message (a card) this one updates, if it is an update.
    updates: int | None = None

    @property
    def actions(self) -> list[str]:
        """The actions of its buttons."""
        return [button["action"] for button in self.buttons]

    @property
    def labels(self) -> list[str]:
        """The labels of its buttons."""
        return [button["label"] for button in self.buttons]

    def action(self, label: str) -> str:
        """The action of the button labelled `label`."""
        for button in self.buttons:
            if button["label"] == label:
                return button["action"]
        raise AssertionError(f"no button {label!r} under {self.text!r} (buttons: {self.labels})")

    @property
    def number(self) -> str:
        """The first request number the message mentions."""
        found = NUMBER.search(self.text)
        assert found, f"no request number in {self.text!r}"
        return found.group(0)


@dataclass
class Identity:
    """One web chat identity."""

    desk: Desk
    token: str
    person_id: int
    chat_id: str
    seen: int = 0
    received: list[Message] = field(default_factory=list)

    def send(self, text: str, *, client_id: str | None = None) -> list[Message]:
        """Sends typed text; returns what this identity received as a result."""
        return self.post({"id": client_id or f"m{next(_ids)}", "text": text})

    def press(self, action: str) -> list[Message]:
        """Presses a button (sends its action)."""
        return self.post({"id": f"b{next(_ids)}", "action": action})

    def intake(self, name: str, phone: str, text: str) -> list[Message]:
        """Registers a walk-in at the reception desk."""
        return self.post(
            {"id": f"d{next(_ids)}", "intake": {"name": name, "phone": phone, "text": text}}
        )

    def post(self, body: dict[str, Any]) -> list[Message]:
        """Stores a raw web message body and works everything through."""
        client_id, payload = web.parse_body(body, self.desk.runtime.settings.max_text_length)
        with session_scope(self.desk.runtime.engine) as session:
            queries.add_inbox(
                session=session,
                channel=web.CHANNEL,
                natural_key=f"{self.chat_id}:{client_id}",
                chat_id=self.chat_id,
                payload=payload,
            )
        self.desk.work()
        return self.new_messages()

    def new_messages(self) -> list[Message]:
        """Messages received since the last call; updates of earlier cards are not new
        messages (the page replaces the card): they are kept in `received` only."""
        with session_scope(self.desk.runtime.engine) as session:
            rows = queries.web_messages_after(
                session=session, person_id=self.person_id, after=self.seen
            )
            fresh = [Message(r.seq, r.text, list(r.buttons), r.updates) for r in rows]
        if fresh:
            self.seen = fresh[-1].seq
        self.received.extend(fresh)
        return [message for message in fresh if message.updates is None]

    def last(self) -> Message:
        """The newest message received, not counting updates (after collecting new ones)."""
        self.new_messages()
        messages = [message for message in self.received if message.updates is None]
        assert messages, "no message received"
        return messages[-1]

    def person(self) -> Person:
        """This identity's person row, fresh."""
        with Session(self.desk.runtime.engine) as session:
            person = session.get(Person, self.person_id)
            assert person is not None
            return person


class Desk:
    """redesk on one database, driven synchronously."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def identity(self, name: str = "") -> Identity:
        """A new web chat identity."""
        with session_scope(self.runtime.engine) as session:
            token = web.create_identity(session, name=name, days=30)
            person = queries.person_for_web_token(session=session, token=token, now=utcnow())
            assert person is not None and person.id is not None
            return Identity(self, token, person.id, person.external_id)

    def work(self) -> None:
        """Handles every pending inbox row and delivers every due outbox row."""
        for _ in range(20):
            chats, _ = dispatch.stale_work(self.runtime, grace=-86400)
            for channel, chat_id in chats:
                dispatch.process_chat(self.runtime, channel, chat_id)
            with Session(self.runtime.engine) as session:
                pending = session.exec(
                    select(OutboxMessage.id).where(OutboxMessage.status == OutboxStatus.PENDING)
                ).all()
            for outbox_id in pending:
                assert outbox_id is not None
                dispatch.deliver(self.runtime, outbox_id)
            if not chats:
                return

    def invite(self, role: str, department: str | None = None) -> str:
        """A fresh invitation code."""
        with session_scope(self.runtime.engine) as session:
            return service.create_invitation(
                session=session, role=role, department_name=department, now=utcnow()
            )

    def worker(self, name: str = "王书记") -> Identity:
        """A web identity bound as a party worker."""
        identity = self.identity(name)
        identity.send(f"绑定 {self.invite('worker')}")
        return identity

    def staff(self, department: str, name: str = "部门人员") -> Identity:
        """A web identity bound as staff of `department`."""
        identity = self.identity(name)
        identity.send(f"绑定 {self.invite('department', department)}")
        return identity

    def add_department(
        self, name: str, kind: str = "职能部门", resolution_days: int | None = None
    ) -> int:
        """Adds a department; returns its id."""
        with session_scope(self.runtime.engine) as session:
            department = Department(name=name, kind=kind, resolution_days=resolution_days)
            session.add(department)
            session.flush()
            assert department.id is not None
            return department.id

    def add_category(
        self,
        name: str,
        keywords: list[str],
        *,
        department: str | None = None,
        fallback: bool = False,
        response_hours: int = 8,
        resolution_days: int = 5,
    ) -> None:
        """Adds a category (routed to `department` when given)."""
        with session_scope(self.runtime.engine) as session:
            department_id = None
            if department is not None:
                found = queries.get_department_by_name(session=session, name=department)
                assert found is not None
                department_id = found.id
            session.add(
                Category(
                    name=name,
                    keywords=keywords,
                    route="department" if department else "committee",
                    department_id=department_id,
                    is_fallback=fallback,
                    response_hours=response_hours,
                    resolution_days=resolution_days,
                )
            )

    def request(self, number: str) -> Request:
        """A request row, fresh."""
        with Session(self.runtime.engine) as session:
            found = queries.get_request_by_number(session=session, number=number)
            assert found is not None
            return found

    def requests(self) -> list[Request]:
        """Every request, oldest first."""
        with Session(self.runtime.engine) as session:
            return list(session.exec(select(Request).order_by(Request.id)).all())  # type: ignore[arg-type]

    def events(self, number: str | None = None) -> list[Event]:
        """Events (of one request), oldest first."""
        with Session(self.runtime.engine) as session:
            statement = select(Event).order_by(Event.id)  # type: ignore[arg-type]
            if number is not None:
                statement = statement.where(Event.request_id == self.request(number).id)
            return list(session.exec(statement).all())
