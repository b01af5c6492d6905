"""Query functions: keyword-only, typed; the caller commits."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, case, delete, false, func, null, or_, true, tuple_, update
from sqlalchemy import select as select_columns
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from storage.models import (
    Account,
    AdminAudit,
    Attachment,
    BindFailure,
    ButtonToken,
    CardMessage,
    Category,
    Centre,
    ChannelState,
    ConsoleSession,
    Department,
    Event,
    HourAccount,
    HourAccountKind,
    HourMovement,
    InboxMessage,
    InboxStatus,
    Invitation,
    LoginAttempt,
    OutboxMessage,
    OutboxStatus,
    Person,
    Redemption,
    Reminder,
    Request,
    RequestCounter,
    Reward,
    Role,
    WebMessage,
    WebSession,
    WeChatNonce,
    utcnow,
)


def digest(secret: str) -> str:
    """The stored form of a token or code: its SHA-256 hex digest."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _insert(session: Session, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model)


# --- people -------------------------------------------------------------------------------


def get_person(*, session: Session, person_id: int, lock: bool = False) -> Person | None:
    """A person by id, optionally locked for the rest of the transaction."""
    statement = select(Person).where(Person.id == person_id)
    if lock:
        statement = statement.with_for_update(key_share=True)
    return session.exec(statement).first()


def get_or_create_person(
    *, session: Session, channel: str, external_id: str, display_name: str = ""
) -> Person:
    """The person behind a chat identity, created on first contact and locked.

    The row lock serialises everything done for one chat, which keeps its messages in order.
    It is FOR NO KEY UPDATE: other transactions may still insert rows that reference this person
    (outbox rows for them) without waiting, which rules out deadlocks between two chats that
    notify each other.
    """
    statement = (
        _insert(session, Person)
        .values(
            channel=channel,
            external_id=external_id,
            display_name=display_name[:100],
            role=Role.REQUESTER,
            unreachable=False,
            web_seq=0,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
    )
    session.execute(statement)
    person = session.exec(
        select(Person)
        .where(Person.channel == channel, Person.external_id == external_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one()
    if display_name and person.display_name != display_name[:100]:
        person.display_name = display_name[:100]
        session.add(person)
    return person


def find_person(*, session: Session, channel: str, external_id: str) -> Person | None:
    """The person behind a chat identity, if they ever wrote."""
    return session.exec(
        select(Person).where(Person.channel == channel, Person.external_id == external_id)
    ).first()


def list_people(*, session: Session, roles: Sequence[str] | None = None) -> Sequence[Person]:
    """People, optionally only those with one of `roles`, oldest first."""
    statement = select(Person).order_by(col(Person.id))
    if roles:
        statement = statement.where(col(Person.role).in_(list(roles)))
    return session.exec(statement).all()


def reachable_people(
    *, session: Session, roles: Sequence[str], department_id: int | None = None
) -> Sequence[Person]:
    """People with one of `roles` (of one department, if given) who can still be reached."""
    statement = select(Person).where(
        col(Person.role).in_(list(roles)), col(Person.unreachable).is_(False)
    )
    if department_id is not None:
        statement = statement.where(Person.department_id == department_id)
    return session.exec(statement.order_by(col(Person.id))).all()


# --- centres ------------------------------------------------------------------------------


def path_ids(path: str) -> list[int]:
    """The centre ids of a path ("/1/5/23/" -> [1, 5, 23]), from the root down."""
    return [int(part) for part in path.strip("/").split("/") if part]


def add_centre(
    *,
    session: Session,
    code: str,
    name: str,
    level: str,
    parent: Centre | None = None,
    is_default: bool = False,
) -> Centre:
    """A new centre under `parent` (None: a root), with its path filled in (flushed)."""
    centre = Centre(
        code=code,
        name=name,
        level=level,
        parent_id=parent.id if parent is not None else None,
        path="/",
        is_default=is_default,
    )
    session.add(centre)
    session.flush()
    centre.path = f"{parent.path if parent is not None else '/'}{centre.id}/"
    session.add(centre)
    session.flush()
    return centre


def get_centre(*, session: Session, centre_id: int) -> Centre | None:
    """A centre by id."""
    return session.get(Centre, centre_id)


def get_centre_by_code(*, session: Session, code: str) -> Centre | None:
    """A centre by its code (compared without regard to case)."""
    return session.exec(
        select(Centre).where(func.lower(Centre.code) == code.strip().lower())
    ).first()


def default_centre(*, session: Session) -> Centre:
    """The centre a single-centre install holds everything in (migration 0010 makes it)."""
    centre = session.exec(
        select(Centre).where(col(Centre.is_default).is_(True)).order_by(col(Centre.id))
    ).first()
    if centre is None:
        raise LookupError("there is no default centre: the database is not migrated")
    return centre


def list_centres(*, session: Session, active_only: bool = False) -> Sequence[Centre]:
    """Every centre, parents before children (by path), siblings in the order made."""
    statement = select(Centre).order_by(col(Centre.path))
    if active_only:
        statement = statement.where(col(Centre.active).is_(True))
    rows = session.exec(statement).all()
    # Paths compare as text ("/10/" < "/2/"), so order by the ids along each path instead.
    return sorted(rows, key=lambda centre: path_ids(centre.path))


def child_centres(
    *, session: Session, parent_id: int | None, active_only: bool = True
) -> Sequence[Centre]:
    """The centres right under `parent_id` (None: the roots), in the order made."""
    statement = select(Centre).where(Centre.parent_id == parent_id).order_by(col(Centre.id))
    if active_only:
        statement = statement.where(col(Centre.active).is_(True))
    return session.exec(statement).all()


def active_centres_named(*, session: Session, name: str, limit: int) -> Sequence[Centre]:
    """At most `limit` active centres called exactly `name`, in the order made."""
    statement = (
        select(Centre)
        .where(Centre.name == name, col(Centre.active).is_(True))
        .order_by(col(Centre.id))
        .limit(limit)
    )
    return session.exec(statement).all()


def parents_of_active_centres(*, session: Session, parent_ids: Sequence[int]) -> set[int]:
    """Those of `parent_ids` that have an active centre right under them (one query)."""
    statement = select(Centre.parent_id).where(
        col(Centre.parent_id).in_(list(parent_ids)), col(Centre.active).is_(True)
    )
    return {parent for parent in session.exec(statement).all() if parent is not None}


def sole_active_centre(*, session: Session) -> Centre | None:
    """The one active centre, if exactly one is active."""
    active = session.exec(select(Centre).where(col(Centre.active).is_(True)).limit(2)).all()
    return active[0] if len(active) == 1 else None


def count_active_centres(*, session: Session) -> int:
    """How many centres are active."""
    statement = select(func.count()).select_from(Centre).where(col(Centre.active).is_(True))
    return int(session.exec(statement).one())


def ancestor_ids(centre: Centre) -> list[int]:
    """The ids of `centre` and every centre above it, nearest first."""
    return list(reversed(path_ids(centre.path)))


def subtree_ids(*, session: Session, centre: Centre) -> list[int]:
    """The ids of `centre` and every centre below it (inactive ones included)."""
    statement = select(Centre.id).where(col(Centre.path).startswith(centre.path, autoescape=True))
    return [centre_id for centre_id in session.exec(statement).all() if centre_id is not None]


def subtree_condition(centre: Centre) -> Any:
    """A condition on Request: held by `centre` or a centre below it (one subquery)."""
    inside = select(Centre.id).where(col(Centre.path).startswith(centre.path, autoescape=True))
    return col(Request.centre_id).in_(inside)


def reachable_in_centres(
    *,
    session: Session,
    roles: Sequence[str],
    centre_ids: Sequence[int],
    default_centre_id: int | None = None,
) -> Sequence[Person]:
    """People with one of `roles` in one of `centre_ids` who can still be reached; people of
    no recorded centre count as the default centre's (`default_centre_id`)."""
    ids = list(centre_ids)
    where: Any = col(Person.centre_id).in_(ids)
    if default_centre_id is not None and default_centre_id in ids:
        where = or_(where, col(Person.centre_id).is_(None))
    statement = select(Person).where(
        col(Person.role).in_(list(roles)), col(Person.unreachable).is_(False), where
    )
    return session.exec(statement.order_by(col(Person.id))).all()


def departments_of_centres(
    *, session: Session, centre_ids: Sequence[int], default_centre_id: int | None = None
) -> Sequence[Department]:
    """The active departments of `centre_ids`, in the order made; departments of no recorded
    centre count as the default centre's (`default_centre_id`)."""
    ids = list(centre_ids)
    where: Any = col(Department.centre_id).in_(ids)
    if default_centre_id is not None and default_centre_id in ids:
        where = or_(where, col(Department.centre_id).is_(None))
    statement = (
        select(Department)
        .where(where, col(Department.active).is_(True))
        .order_by(col(Department.id))
    )
    return session.exec(statement).all()


def subtree_centres(*, session: Session, centre: Centre, lock: bool = False) -> Sequence[Centre]:
    """`centre` and every centre below it (inactive ones included), parents first."""
    statement = select(Centre).where(col(Centre.path).startswith(centre.path, autoescape=True))
    if lock:
        statement = statement.with_for_update()
    return sorted(session.exec(statement).all(), key=lambda found: path_ids(found.path))


def open_requests_by_centre(*, session: Session, excluded: Sequence[str]) -> dict[int, int]:
    """How many requests each centre holds in a state not in `excluded` (centre id -> count)."""
    statement = (
        select(Request.centre_id, func.count())
        .where(col(Request.state).not_in(list(excluded)))
        .group_by(col(Request.centre_id))
    )
    return {centre_id: int(count) for centre_id, count in session.exec(statement).all()}


def people_by_centre(*, session: Session, roles: Sequence[str]) -> dict[int, int]:
    """How many people with one of `roles` each centre has (centre id -> count)."""
    statement = (
        select(Person.centre_id, func.count())
        .where(col(Person.role).in_(list(roles)), col(Person.centre_id).is_not(None))
        .group_by(col(Person.centre_id))
    )
    return {
        centre_id: int(count)
        for centre_id, count in session.exec(statement).all()
        if centre_id is not None
    }


def department_in_centres(
    *, session: Session, name: str, centre_ids: Sequence[int | None]
) -> Department | None:
    """The department called `name` owned by the first of `centre_ids` that has one (None in
    the list: a department of no centre), so a name is resolved nearest first."""
    found = {
        department.centre_id: department
        for department in session.exec(
            select(Department).where(
                Department.name == name,
                or_(
                    col(Department.centre_id).in_([i for i in centre_ids if i is not None]),
                    col(Department.centre_id).is_(None),
                ),
            )
        ).all()
    }
    for centre_id in centre_ids:
        if centre_id in found:
            return found[centre_id]
    return None


# --- departments and categories -----------------------------------------------------------


def list_departments(*, session: Session, active_only: bool = True) -> Sequence[Department]:
    """Departments by name."""
    statement = select(Department).order_by(col(Department.id))
    if active_only:
        statement = statement.where(col(Department.active).is_(True))
    return session.exec(statement).all()


def get_department(*, session: Session, department_id: int) -> Department | None:
    """A department by id."""
    return session.get(Department, department_id)


def get_department_by_name(*, session: Session, name: str) -> Department | None:
    """A department by its exact name."""
    return session.exec(select(Department).where(Department.name == name)).first()


def list_categories(*, session: Session, active_only: bool = True) -> Sequence[Category]:
    """Categories in the order they were defined."""
    statement = select(Category).order_by(col(Category.id))
    if active_only:
        statement = statement.where(col(Category.active).is_(True))
    return session.exec(statement).all()


def get_category(*, session: Session, category_id: int) -> Category | None:
    """A category by id."""
    return session.get(Category, category_id)


# --- requests and events ------------------------------------------------------------------


def next_request_sequence(*, session: Session, day: str) -> int:
    """The next number of the day, atomically, even with many processes submitting at once.

    On PostgreSQL the counter is bumped in a transaction of its own, so the day's counter row
    is locked for one statement rather than until the caller commits (which serialised every
    submission). A caller that then rolls back leaves a gap in the day's numbers; numbers are
    never reused. On SQLite the caller already holds the database's write lock, so the
    counter stays in the caller's transaction (a second connection would wait for that lock).
    """
    statement = (
        _insert(session, RequestCounter)
        .values(day=day, last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": col(RequestCounter.last) + 1})
        .returning(col(RequestCounter.last))
    )
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        engine = bind.engine if isinstance(bind, Connection) else bind
        with engine.begin() as connection:
            return int(connection.execute(statement).scalar_one())
    return int(session.execute(statement).scalar_one())


def get_request_by_number(*, session: Session, number: str, lock: bool = False) -> Request | None:
    """A request by its number, optionally locked for the rest of the transaction."""
    statement = select(Request).where(Request.number == number)
    if lock:
        statement = statement.with_for_update(key_share=True).execution_options(
            populate_existing=True
        )
    return session.exec(statement).first()


def get_request_by_origin(
    *, session: Session, origin: str, requester_id: int | None
) -> Request | None:
    """The request a requester sent as platform message `origin`."""
    return session.exec(
        select(Request).where(Request.origin == origin, Request.requester_id == requester_id)
    ).first()


def unfetched_attachments(*, session: Session, channel: str, limit: int) -> Sequence[Attachment]:
    """A channel's attachments with a file not fetched yet (stored_path NULL), oldest first."""
    return session.exec(
        select(Attachment)
        .where(
            Attachment.channel == channel,
            col(Attachment.file_id).is_not(None),
            col(Attachment.stored_path).is_(None),
        )
        .order_by(col(Attachment.id))
        .limit(limit)
    ).all()


def attachments_of(*, session: Session, request_id: int) -> Sequence[Attachment]:
    """A request's attachments, oldest first."""
    return session.exec(
        select(Attachment).where(Attachment.request_id == request_id).order_by(col(Attachment.id))
    ).all()


def get_request(*, session: Session, request_id: int) -> Request | None:
    """A request by id."""
    return session.get(Request, request_id)


def requests_of_requester(
    *, session: Session, requester_id: int, limit: int = 5
) -> Sequence[Request]:
    """A requester's most recent requests, newest first."""
    return session.exec(
        select(Request)
        .where(Request.requester_id == requester_id)
        .order_by(col(Request.id).desc())
        .limit(limit)
    ).all()


#: A to-do section: name, the condition on requests, and the deadline that orders it.
_Section = tuple[str, Any, Any]


@dataclass(frozen=True)
class TodoSection:
    """One section of a to-do list: its true size and the page's requests in it."""

    #: "new", "review", "mine" (committee); "forwarded", "dept_handling" (department).
    name: str
    #: How many requests the whole section holds (not only this page).
    total: int
    #: The requests of this section on the page asked for, most urgent first.
    items: list[Request] = field(default_factory=list)


def _committee_sections(handler_id: int, centre_id: int | None = None) -> list[_Section]:
    held: Any = col(Request.centre_id) == centre_id if centre_id is not None else True
    return [
        ("new", held & (col(Request.state) == "new"), col(Request.response_due_at)),
        ("review", held & (col(Request.state) == "review"), col(Request.resolution_due_at)),
        (
            "mine",
            held & (col(Request.state) == "handling") & (col(Request.handler_id) == handler_id),
            col(Request.resolution_due_at),
        ),
    ]


def _department_sections(department_id: int) -> list[_Section]:
    mine = col(Request.department_id) == department_id
    return [
        ("forwarded", mine & (col(Request.state) == "forwarded"), col(Request.resolution_due_at)),
        (
            "dept_handling",
            mine & (col(Request.state) == "dept_handling"),
            col(Request.resolution_due_at),
        ),
    ]


def todo_page(
    *,
    session: Session,
    handler_id: int | None = None,
    department_id: int | None = None,
    centre_id: int | None = None,
    offset: int = 0,
    limit: int = 10,
) -> list[TodoSection]:
    """A page of a worker's (handler_id) or a department's to-do list, by section.

    A worker's sections hold only requests of `centre_id` when it is given.

    The sections follow each other in a fixed order (committee: new, review, mine;
    department: forwarded, dept_handling); within one, the nearest deadline comes first and
    requests without one last. The page is `limit` requests from `offset` of that sequence;
    every section is returned with its true total, also when none of it is on the page.
    """
    if handler_id is not None:
        sections = _committee_sections(handler_id, centre_id)
    elif department_id is not None:
        sections = _department_sections(department_id)
    else:
        raise ValueError("todo_page needs handler_id or department_id")
    result: list[TodoSection] = []
    skip, room = offset, limit
    for name, condition, deadline in sections:
        total = session.execute(
            select_columns(func.count()).select_from(Request).where(condition)
        ).scalar_one()
        items: list[Request] = []
        if room > 0 and skip < total:
            items = list(
                session.exec(
                    select(Request)
                    .where(condition)
                    .order_by(deadline.asc().nulls_last(), col(Request.id))
                    .offset(skip)
                    .limit(room)
                ).all()
            )
            room -= len(items)
        skip = max(0, skip - total)
        result.append(TodoSection(name, total, items))
    return result


#: The key of Session.info set by add_event: this session recorded a change to a request.
CHANGED_REQUESTS = "redesk.changed_requests"


def changed_requests(session: Session) -> bool:
    """Whether `session` recorded a change to a request (an event that is not a refused
    attempt). A change rolled back to a savepoint still counts: the only cost is that the
    console's streams look at the database once for nothing."""
    return bool(session.info.get(CHANGED_REQUESTS))


def add_event(
    *,
    session: Session,
    request_id: int | None,
    actor_id: int | None,
    action: str,
    from_state: str | None,
    to_state: str | None,
    note: str | None = None,
    outcome: str = "ok",
    at: datetime,
) -> Event:
    """Records one event in a request's history; an event that is not a refused attempt
    marks the session as one that changed a request (changed_requests)."""
    if outcome == "ok":
        session.info[CHANGED_REQUESTS] = True
    event = Event(
        request_id=request_id,
        actor_id=actor_id,
        action=action,
        from_state=from_state,
        to_state=to_state,
        note=note,
        outcome=outcome,
        created_at=at,
    )
    session.add(event)
    return event


def events_of_request(*, session: Session, request_id: int) -> Sequence[Event]:
    """A request's history, oldest first."""
    return session.exec(
        select(Event).where(Event.request_id == request_id).order_by(col(Event.id))
    ).all()


def count_requests_by_state(*, session: Session) -> dict[str, int]:
    """How many requests are in each state."""
    rows = session.exec(select(Request.state, func.count()).group_by(Request.state)).all()
    return {state: int(count) for state, count in rows}


# --- staff accounts -----------------------------------------------------------------------


def principal_of(*, session: Session, person: Person, lock: bool = False) -> Person:
    """The person a chat identity acts as: the account's person it is linked to (关联聊天账号),
    else itself. With `lock`, a linked principal is locked too (FOR NO KEY UPDATE, after the
    identity: always in that order)."""
    if person.principal_id is None or person.principal_id == person.id:
        return person
    principal = get_person(session=session, person_id=person.principal_id, lock=lock)
    return principal if principal is not None else person


def notify_target(*, session: Session, person: Person) -> int:
    """The id of the chat identity messages to `person` go to: the one their account chose
    (while it is still linked to them), else the person's own."""
    assert person.id is not None
    account = get_account_of(session=session, person_id=person.id)
    if account is None or account.notify_person_id is None:
        return person.id
    chosen = get_person(session=session, person_id=account.notify_person_id)
    if chosen is None or chosen.principal_id != person.id or chosen.unreachable:
        return person.id
    return account.notify_person_id


#: Characters a username may hold (after lower-casing).
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


def ensure_account(*, session: Session, person: Person, at: datetime) -> Account:
    """The person's account, made (without a password) when they have none: the username is
    `<channel>-<chat id>`, cleaned and made unique."""
    assert person.id is not None
    account = get_account_of(session=session, person_id=person.id)
    if account is not None:
        return account
    base = re.sub(r"[^a-z0-9._-]+", "", f"{person.channel}-{person.external_id}".lower())[:48]
    username = base if USERNAME_PATTERN.match(base) else f"person-{person.id}"
    if get_account_by_username(session=session, username=username) is not None:
        username = f"{username}-{person.id}"
    account = Account(username=username, person_id=person.id, active=True, created_at=at)
    session.add(account)
    session.flush()
    return account


def get_account(*, session: Session, account_id: int, lock: bool = False) -> Account | None:
    """An account by id."""
    statement = select(Account).where(Account.id == account_id)
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).first()


def get_account_by_username(*, session: Session, username: str) -> Account | None:
    """An account by its username (already normalised: lower case, stripped)."""
    return session.exec(select(Account).where(Account.username == username)).first()


def get_account_of(*, session: Session, person_id: int) -> Account | None:
    """The account whose person this is, if any."""
    return session.exec(select(Account).where(Account.person_id == person_id)).first()


def get_account_by_setup_token(*, session: Session, token_hash: str) -> Account | None:
    """The account a one-time setup token (hashed) belongs to."""
    return session.exec(
        select(Account).where(Account.setup_token_hash == token_hash).with_for_update()
    ).first()


def list_accounts(
    *, session: Session, centre_ids: Sequence[int] | None = None
) -> list[tuple[Account, Person]]:
    """Accounts with their persons, by username; `centre_ids` limits them to those centres."""
    statement = select(Account, Person).join(Person, col(Person.id) == col(Account.person_id))
    if centre_ids is not None:
        statement = statement.where(col(Person.centre_id).in_(list(centre_ids)))
    return [(a, p) for a, p in session.exec(statement.order_by(col(Account.username))).all()]


def linked_identities(*, session: Session, principal_id: int) -> list[Person]:
    """The chat identities linked to a principal, oldest first."""
    return list(
        session.exec(
            select(Person).where(Person.principal_id == principal_id).order_by(col(Person.id))
        ).all()
    )


def add_console_session(
    *,
    session: Session,
    token_hash: str,
    account_id: int,
    csrf_token: str,
    address: str,
    at: datetime,
) -> ConsoleSession:
    """Records a new console session."""
    row = ConsoleSession(
        token_hash=token_hash,
        account_id=account_id,
        csrf_token=csrf_token,
        address=address[:160],
        created_at=at,
        last_seen_at=at,
    )
    session.add(row)
    session.flush()
    return row


def get_console_session(*, session: Session, token_hash: str) -> ConsoleSession | None:
    """A console session by the hash of its cookie token (ended ones too)."""
    return session.exec(
        select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)
    ).first()


def end_console_sessions(*, session: Session, account_id: int, at: datetime) -> int:
    """Ends every open session of an account; how many were open."""
    result = session.execute(
        update(ConsoleSession)
        .where(col(ConsoleSession.account_id) == account_id, col(ConsoleSession.ended_at).is_(None))
        .values(ended_at=at)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def add_login_attempt(
    *, session: Session, username: str, address: str, ok: bool, at: datetime
) -> None:
    """Records a console login attempt."""
    session.add(LoginAttempt(username=username[:64], address=address[:160], ok=ok, at=at))
    session.flush()


def count_failed_logins(
    *, session: Session, since: datetime, username: str | None = None, address: str | None = None
) -> int:
    """Failed login attempts since `since`, for a username or an address."""
    statement = (
        select(func.count())
        .select_from(LoginAttempt)
        .where(col(LoginAttempt.at) >= since, col(LoginAttempt.ok).is_(False))
    )
    if username is not None:
        statement = statement.where(LoginAttempt.username == username)
    if address is not None:
        statement = statement.where(LoginAttempt.address == address)
    return int(session.exec(statement).one())


def failed_login_times(
    *, session: Session, since: datetime, username: str | None = None, address: str | None = None
) -> list[datetime]:
    """When the failed login attempts after `since` were made, for a username or an address,
    oldest first."""
    statement = select(LoginAttempt.at).where(
        col(LoginAttempt.at) > since, col(LoginAttempt.ok).is_(False)
    )
    if username is not None:
        statement = statement.where(LoginAttempt.username == username)
    if address is not None:
        statement = statement.where(LoginAttempt.address == address)
    return list(session.exec(statement.order_by(col(LoginAttempt.at))).all())


# --- invitations --------------------------------------------------------------------------


def add_invitation(
    *,
    session: Session,
    code: str,
    role: str,
    department_id: int | None,
    expires_at: datetime,
    centre_id: int | None = None,
) -> Invitation:
    """Stores a new invitation (only the code's digest) for a role in `centre_id`."""
    invitation = Invitation(
        code_hash=digest(code),
        role=role,
        department_id=department_id,
        centre_id=centre_id,
        expires_at=expires_at,
    )
    session.add(invitation)
    return invitation


def get_invitation(*, session: Session, code: str) -> Invitation | None:
    """The invitation with this code, locked."""
    return session.exec(
        select(Invitation).where(Invitation.code_hash == digest(code)).with_for_update()
    ).first()


def add_bind_failure(
    *,
    session: Session,
    channel: str,
    person_id: int,
    identity: str,
    address: str,
    reason: str,
    at: datetime,
) -> BindFailure:
    """Puts a failed 绑定 on record (never the code that was tried)."""
    failure = BindFailure(
        channel=channel[:20],
        person_id=person_id,
        identity=identity[:128],
        address=address[:160],
        reason=reason[:20],
        at=at,
    )
    session.add(failure)
    return failure


def count_bind_failures(
    *,
    session: Session,
    since: datetime,
    person_id: int | None = None,
    address: str | None = None,
) -> int:
    """Failed 绑定 since `since` by this person, or from this address."""
    statement = (
        select_columns(func.count()).select_from(BindFailure).where(col(BindFailure.at) >= since)
    )
    if person_id is not None:
        statement = statement.where(col(BindFailure.person_id) == person_id)
    if address is not None:
        statement = statement.where(col(BindFailure.address) == address[:160])
    return int(session.execute(statement).scalar_one())


# --- inbox --------------------------------------------------------------------------------


def add_inbox(
    *,
    session: Session,
    channel: str,
    natural_key: str,
    chat_id: str,
    payload: dict[str, Any],
    status: str = InboxStatus.PENDING,
    error: str | None = None,
    scene: str | None = None,
) -> int | None:
    """Stores an inbound message; None when this natural key was stored before.

    A message redesk does not handle is stored with status done (kept, ignored); one that
    cannot be parsed, with status failed and the parser's reason as its error. `scene` is
    the entry scene the message names (a WeChat QR code's), if any.
    """
    statement = (
        _insert(session, InboxMessage)
        .values(
            channel=channel,
            natural_key=natural_key,
            chat_id=chat_id,
            payload=payload,
            status=status,
            error=error,
            attempts=0,
            received_at=utcnow(),
            scene=scene,
        )
        .on_conflict_do_nothing(index_elements=["channel", "natural_key"])
        .returning(col(InboxMessage.id))
    )
    value = session.execute(statement).scalar_one_or_none()
    return int(value) if value is not None else None


def get_inbox(*, session: Session, inbox_id: int) -> InboxMessage | None:
    """An inbox row by id."""
    return session.get(InboxMessage, inbox_id)


def next_pending_inbox(*, session: Session, channel: str, chat_id: str) -> InboxMessage | None:
    """The oldest unfinished message of one chat."""
    return session.exec(
        select(InboxMessage)
        .where(
            InboxMessage.channel == channel,
            InboxMessage.chat_id == chat_id,
            InboxMessage.status == InboxStatus.PENDING,
        )
        .order_by(col(InboxMessage.id))
        .limit(1)
        .execution_options(populate_existing=True)
    ).first()


def failed_inbox(*, session: Session) -> Sequence[InboxMessage]:
    """Every failed inbox row, of any channel, oldest first."""
    return session.exec(
        select(InboxMessage)
        .where(InboxMessage.status == InboxStatus.FAILED)
        .order_by(col(InboxMessage.id))
    ).all()


def count_failed_inbox(*, session: Session) -> dict[str, int]:
    """Failed inbox rows by channel (channels without any are left out)."""
    rows = session.execute(
        select_columns(col(InboxMessage.channel), func.count())
        .where(col(InboxMessage.status) == InboxStatus.FAILED)
        .group_by(col(InboxMessage.channel))
    ).all()
    return {channel: int(count) for channel, count in rows}


def stale_inbox(*, session: Session, before: datetime, limit: int = 500) -> Sequence[InboxMessage]:
    """Unfinished inbox rows received before `before`, one per chat is enough to drain it."""
    return session.exec(
        select(InboxMessage)
        .where(InboxMessage.status == InboxStatus.PENDING, InboxMessage.received_at < before)
        .order_by(col(InboxMessage.id))
        .limit(limit)
    ).all()


# --- outbox -------------------------------------------------------------------------------


def add_outbox(
    *,
    session: Session,
    idempotency_key: str,
    person_id: int,
    key: str,
    params: dict[str, Any],
    request_id: int | None,
    at: datetime,
) -> OutboxMessage:
    """Queues one message to send."""
    row = OutboxMessage(
        idempotency_key=idempotency_key,
        person_id=person_id,
        key=key,
        params=params,
        request_id=request_id,
        created_at=at,
        status=OutboxStatus.PENDING,
    )
    session.add(row)
    return row


def get_outbox(*, session: Session, outbox_id: int) -> OutboxMessage | None:
    """An outbox row by id."""
    return session.get(OutboxMessage, outbox_id)


def next_outbox_for(*, session: Session, person_id: int) -> OutboxMessage | None:
    """A person's oldest unsent message, due or not (later ones must not overtake it)."""
    return session.exec(
        select(OutboxMessage)
        .where(OutboxMessage.person_id == person_id, OutboxMessage.status == OutboxStatus.PENDING)
        .order_by(col(OutboxMessage.id))
        .limit(1)
        .execution_options(populate_existing=True)
    ).first()


def stale_outbox(
    *, session: Session, before: datetime, limit: int = 500
) -> Sequence[OutboxMessage]:
    """Unsent messages created before `before` whose retry time has come."""
    return session.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.status == OutboxStatus.PENDING,
            OutboxMessage.created_at < before,
            or_(
                col(OutboxMessage.next_attempt_at).is_(None),
                col(OutboxMessage.next_attempt_at) <= before,
            ),
        )
        .order_by(col(OutboxMessage.id))
        .limit(limit)
    ).all()


def count_backlog(*, session: Session) -> dict[str, int]:
    """Unfinished inbox and outbox rows."""
    inbox = session.exec(
        select(func.count())
        .select_from(InboxMessage)
        .where(InboxMessage.status == InboxStatus.PENDING)
    ).one()
    outbox = session.exec(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.PENDING)
    ).one()
    return {"inbox": int(inbox), "outbox": int(outbox)}


# --- web channel --------------------------------------------------------------------------


def add_web_session(
    *, session: Session, token: str, person_id: int, expires_at: datetime
) -> WebSession:
    """Stores a web chat token (its digest)."""
    row = WebSession(token_hash=digest(token), person_id=person_id, expires_at=expires_at)
    session.add(row)
    return row


def person_for_web_token(*, session: Session, token: str, now: datetime) -> Person | None:
    """The identity a valid, unexpired web token belongs to."""
    row = session.exec(select(WebSession).where(WebSession.token_hash == digest(token))).first()
    if row is None or row.expires_at <= now:
        return None
    return session.get(Person, row.person_id)


def expire_web_token(*, session: Session, token: str, now: datetime) -> int | None:
    """Ends one valid web token (logout): it expires at `now`; whose it was, or None.

    An unknown or already expired token changes nothing and answers None.
    """
    row = session.exec(
        select(WebSession).where(WebSession.token_hash == digest(token)).with_for_update()
    ).first()
    if row is None or row.expires_at <= now:
        return None
    row.expires_at = now
    session.add(row)
    return row.person_id


def expire_web_sessions(*, session: Session, person_id: int, now: datetime) -> int:
    """Ends every valid web token of a person (revoke): they expire at `now`; how many."""
    result = session.execute(
        update(WebSession)
        .where(col(WebSession.person_id) == person_id, col(WebSession.expires_at) > now)
        .values(expires_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def add_web_message(
    *,
    session: Session,
    person_id: int,
    outbox_id: int,
    text: str,
    buttons: list[dict[str, str]],
    at: datetime,
    updates: int | None = None,
) -> WebMessage:
    """Delivers a message to a web identity with the next sequence number.

    The UPDATE locks the person row until commit, so sequence order is commit order and a
    reader never skips a message.
    """
    seq = session.execute(
        update(Person)
        .where(col(Person.id) == person_id)
        .values(web_seq=col(Person.web_seq) + 1)
        .returning(col(Person.web_seq))
    ).scalar_one()
    row = WebMessage(
        person_id=person_id,
        seq=int(seq),
        outbox_id=outbox_id,
        text=text,
        buttons=buttons,
        created_at=at,
        updates=updates,
    )
    session.add(row)
    return row


def web_messages_after(
    *, session: Session, person_id: int, after: int, limit: int = 100
) -> Sequence[WebMessage]:
    """A web identity's messages with seq > after, in order."""
    return session.exec(
        select(WebMessage)
        .where(WebMessage.person_id == person_id, WebMessage.seq > after)
        .order_by(col(WebMessage.seq))
        .limit(limit)
    ).all()


# --- cards (messages that offered buttons for a request) ----------------------------------


def add_card_message(
    *,
    session: Session,
    request_id: int,
    person_id: int,
    channel: str,
    outbox_id: int,
    text: str,
    buttons: list[dict[str, str]],
    at: datetime,
    chat_id: str | None = None,
    message_id: int | None = None,
    web_seq: int | None = None,
) -> CardMessage:
    """Records where a delivered card is and which buttons it offers."""
    row = CardMessage(
        request_id=request_id,
        person_id=person_id,
        channel=channel,
        outbox_id=outbox_id,
        chat_id=chat_id,
        message_id=message_id,
        web_seq=web_seq,
        text=text,
        buttons=buttons,
        created_at=at,
    )
    session.add(row)
    return row


def card_of_outbox(*, session: Session, outbox_id: int) -> CardMessage | None:
    """The card delivered from an outbox row, if that row became one."""
    return session.exec(select(CardMessage).where(CardMessage.outbox_id == outbox_id)).first()


def card_at(*, session: Session, channel: str, chat_id: str, message_id: int) -> CardMessage | None:
    """The card shown as a platform message (Telegram: chat + message id)."""
    return session.exec(
        select(CardMessage).where(
            CardMessage.channel == channel,
            CardMessage.chat_id == chat_id,
            CardMessage.message_id == message_id,
        )
    ).first()


def cards_of_request(*, session: Session, request_id: int, skip_key: str) -> list[tuple[int, int]]:
    """(outbox id, person id) of every message about a request that is, or may become, a
    card with buttons: open cards, and rows not delivered yet (except rows of `skip_key`)."""
    open_cards = select_columns(col(CardMessage.outbox_id)).where(
        col(CardMessage.request_id) == request_id, col(CardMessage.open).is_(True)
    )
    rows = session.execute(
        select_columns(col(OutboxMessage.id), col(OutboxMessage.person_id))
        .where(
            col(OutboxMessage.request_id) == request_id,
            col(OutboxMessage.key) != skip_key,
            or_(
                col(OutboxMessage.status) == OutboxStatus.PENDING,
                col(OutboxMessage.id).in_(open_cards),
            ),
        )
        .order_by(col(OutboxMessage.id))
    ).all()
    return [(int(outbox_id), int(person_id)) for outbox_id, person_id in rows]


# --- platform buttons and channel state ---------------------------------------------------


def add_button_token(
    *, session: Session, token: str, person_id: int, action: str, at: datetime
) -> ButtonToken:
    """Stores what a platform button stands for."""
    row = ButtonToken(token=token, person_id=person_id, action=action, created_at=at)
    session.add(row)
    return row


def get_button_token(*, session: Session, token: str) -> ButtonToken | None:
    """A button by its token."""
    return session.get(ButtonToken, token)


def get_channel_state(*, session: Session, key: str) -> str | None:
    """A channel's stored value."""
    row = session.get(ChannelState, key)
    return row.value if row is not None else None


def set_channel_state(*, session: Session, key: str, value: str) -> None:
    """Stores a channel's value."""
    row = session.get(ChannelState, key)
    if row is None:
        session.add(ChannelState(key=key, value=value))
    else:
        row.value = value
        session.add(row)


# --- admin: imports, deactivation, roles (admin_scripts/manage.py) ------------------------


def categories_routed_to(*, session: Session, department_id: int) -> Sequence[Category]:
    """Active categories whose requests go to this department first."""
    return session.exec(
        select(Category)
        .where(
            Category.route == "department",
            Category.department_id == department_id,
            col(Category.active).is_(True),
        )
        .order_by(col(Category.id))
    ).all()


def people_named(*, session: Session, name: str) -> Sequence[Person]:
    """People whose display name is exactly `name`, oldest first."""
    return session.exec(
        select(Person).where(Person.display_name == name).order_by(col(Person.id))
    ).all()


def count_requests_in_states(
    *,
    session: Session,
    states: Sequence[str],
    department_id: int | None = None,
    handler_id: int | None = None,
) -> int:
    """How many requests are in one of `states` (of one department, or one handler, if given)."""
    statement = (
        select(func.count()).select_from(Request).where(col(Request.state).in_(list(states)))
    )
    if department_id is not None:
        statement = statement.where(Request.department_id == department_id)
    if handler_id is not None:
        statement = statement.where(Request.handler_id == handler_id)
    return int(session.exec(statement).one())


def requests_handled_by(*, session: Session, handler_id: int) -> Sequence[Request]:
    """The requests this person is handling (做单) now, oldest first, locked."""
    return session.exec(
        select(Request)
        .where(Request.handler_id == handler_id, col(Request.state) == "handling")
        .order_by(col(Request.id))
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).all()


def walk_ins_registered_by(*, session: Session, person_id: int) -> Sequence[Request]:
    """Every walk-in (desk) request this person registered, oldest first, locked."""
    return session.exec(
        select(Request)
        .where(Request.registered_by_id == person_id, Request.channel == "desk")
        .order_by(col(Request.id))
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).all()


def skip_pending_outbox(
    *,
    session: Session,
    person_id: int,
    keep_requester_id: int,
    keep_keys: Sequence[str],
    reason: str,
) -> int:
    """Marks skipped the pending messages to a person except those about requests
    `keep_requester_id` submitted and those with a key in `keep_keys`; how many.
    """
    own = select_columns(col(Request.id)).where(col(Request.requester_id) == keep_requester_id)
    rows = session.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.person_id == person_id,
            OutboxMessage.status == OutboxStatus.PENDING,
            col(OutboxMessage.key).not_in(list(keep_keys)),
            or_(col(OutboxMessage.request_id).is_(None), col(OutboxMessage.request_id).not_in(own)),
        )
        .with_for_update()
    ).all()
    for row in rows:
        row.status = OutboxStatus.SKIPPED
        row.last_error = reason
        session.add(row)
    return len(rows)


def audit_admin_action(
    *, session: Session, actor: str, action: str, detail: dict[str, Any], at: datetime
) -> AdminAudit:
    """Puts on record what an admin did from the command line; the row (with its id)."""
    audit = AdminAudit(actor=actor[:100], action=action[:50], detail=detail, at=at)
    session.add(audit)
    session.flush()
    return audit


# --- console queue ------------------------------------------------------------------------

#: The states in which a request is finished: no deadline is open any more.
_FINISHED_STATES = ("closed", "rejected", "cancelled")

#: Every queue tab, by the kind of user: committee (worker, leader, admin), department.
COMMITTEE_TABS: tuple[str, ...] = ("todo_accept", "review", "mine", "forwarded", "overdue", "all")
DEPARTMENT_TABS: tuple[str, ...] = ("forwarded", "dept_handling", "overdue", "all")


@dataclass(frozen=True)
class QueueScope:
    """The requests a console user sees: those a centre holds (with `subtree`, also those
    of every centre below it), or those forwarded to a department."""

    #: The centre (worker: their own; leader, admin: the root of their subtree).
    centre: Centre | None = None
    subtree: bool = False
    #: Department staff: their department (centre is then None).
    department_id: int | None = None
    #: The user's person: "mine" is what they handle.
    person_id: int | None = None

    def condition(self) -> Any:
        """The scope as a condition on Request (nothing at all when it names nothing)."""
        if self.department_id is not None:
            return col(Request.department_id) == self.department_id
        if self.centre is None:
            return false()
        if self.subtree:
            return subtree_condition(self.centre)
        return col(Request.centre_id) == self.centre.id

    @property
    def tabs(self) -> tuple[str, ...]:
        """The tabs this scope offers, in order."""
        return DEPARTMENT_TABS if self.department_id is not None else COMMITTEE_TABS


@dataclass(frozen=True)
class QueueFilter:
    """The filters of the queue, each None when not asked for."""

    states: tuple[str, ...] | None = None
    category_ids: tuple[int, ...] | None = None
    department_ids: tuple[int, ...] | None = None
    #: Requests held in this centre's subtree (already checked to be in scope).
    centre: Centre | None = None
    #: Received in [created_from, created_before) (UTC bounds of Asia/Shanghai days).
    created_from: datetime | None = None
    created_before: datetime | None = None
    overdue: bool | None = None
    channel: str | None = None
    #: The search: a number, words of the text, or the requester's phone (its last digits).
    q: str | None = None


@dataclass(frozen=True)
class QueueRow:
    """One request of the queue, with the names the page shows."""

    request: Request
    category: str | None
    centre_code: str | None
    centre_name: str | None
    department: str | None
    handler: str | None


def is_overdue(now: datetime) -> Any:
    """Overdue now, as the statistics count it: still open and past the resolution due."""
    return col(Request.state).not_in(_FINISHED_STATES) & (col(Request.resolution_due_at) < now)


def nearest_deadline() -> Any:
    """The request's nearest open deadline: the response due while nobody acted on it, else
    the resolution due; none for a finished request."""
    return case(
        (col(Request.state).in_(_FINISHED_STATES), null()),
        (
            col(Request.first_action_at).is_(None) & col(Request.response_due_at).is_not(None),
            col(Request.response_due_at),
        ),
        else_=col(Request.resolution_due_at),
    )


def _tab_condition(tab: str, scope: QueueScope, now: datetime) -> Any:
    state = col(Request.state)
    if tab == "todo_accept":
        return state == "new"
    if tab == "review":
        return state == "review"
    if tab == "mine":
        return (state == "handling") & (col(Request.handler_id) == scope.person_id)
    if tab == "forwarded":
        if scope.department_id is not None:
            return state == "forwarded"
        return state.in_(["forwarded", "dept_handling"])
    if tab == "dept_handling":
        return state == "dept_handling"
    if tab == "overdue":
        return is_overdue(now)
    if tab == "all":
        return true()
    raise ValueError(f"unknown queue tab {tab!r}")


def _digits(text: str) -> str:
    return "".join(character for character in text if character.isdigit())


#: A search of digits (and phone separators only) with at least this many digits also
#: matches the requesters whose phone is, or ends in, those digits.
PHONE_SUFFIX_DIGITS = 4
_PHONE_LIKE = re.compile(r"[\d\s+().-]+")


def _phone_digits(column: Any) -> Any:
    """A phone column with the usual separators taken out, in SQL."""
    for separator in (" ", "-", "+", "(", ")", "."):
        column = func.replace(column, separator, "")
    return column


def _search_condition(q: str) -> Any:
    """A number (whole or part), a piece of the text, or the requester's phone (the whole
    number or its last digits, separators ignored): any of them matches."""
    conditions: list[Any] = [
        func.upper(col(Request.number)).contains(q.upper(), autoescape=True),
        col(Request.text).contains(q, autoescape=True),
    ]
    digits = _digits(q)
    if len(digits) >= PHONE_SUFFIX_DIGITS and _PHONE_LIKE.fullmatch(q):
        requesters = select_columns(col(Person.id)).where(
            _phone_digits(col(Person.phone)).endswith(digits, autoescape=True)
        )
        conditions.append(col(Request.requester_id).in_(requesters))
        conditions.append(
            _phone_digits(col(Request.contact_phone)).endswith(digits, autoescape=True)
        )
    return or_(*conditions)


def _filter_conditions(scope: QueueScope, filters: QueueFilter, now: datetime) -> list[Any]:
    conditions: list[Any] = [scope.condition()]
    if filters.states is not None:
        conditions.append(col(Request.state).in_(list(filters.states)))
    if filters.category_ids is not None:
        conditions.append(col(Request.category_id).in_(list(filters.category_ids)))
    if filters.department_ids is not None:
        conditions.append(col(Request.department_id).in_(list(filters.department_ids)))
    if filters.centre is not None:
        conditions.append(subtree_condition(filters.centre))
    if filters.created_from is not None:
        conditions.append(col(Request.created_at) >= filters.created_from)
    if filters.created_before is not None:
        conditions.append(col(Request.created_at) < filters.created_before)
    if filters.overdue is not None:
        overdue = is_overdue(now)
        conditions.append(overdue if filters.overdue else ~overdue)
    if filters.channel is not None:
        conditions.append(col(Request.channel) == filters.channel)
    if filters.q:
        conditions.append(_search_condition(filters.q))
    return conditions


def queue_counts(
    *, session: Session, scope: QueueScope, filters: QueueFilter, now: datetime
) -> dict[str, int]:
    """How many requests each of the scope's tabs holds under `filters` (one statement)."""
    tabs = scope.tabs
    columns = [
        func.coalesce(func.sum(case((_tab_condition(tab, scope, now), 1), else_=0)), 0).label(tab)
        for tab in tabs
    ]
    row = session.execute(
        select_columns(*columns)
        .select_from(Request)
        .where(*_filter_conditions(scope, filters, now))
    ).one()
    return {tab: int(value or 0) for tab, value in zip(tabs, row, strict=True)}


def queue_page(
    *,
    session: Session,
    scope: QueueScope,
    tab: str,
    filters: QueueFilter,
    now: datetime,
    offset: int,
    limit: int,
) -> list[QueueRow]:
    """One page of a tab of the queue, the nearest open deadline first (none last), then the
    oldest request first; one statement, names of category, centre, department and handler
    included."""
    handler = aliased(Person)
    deadline = nearest_deadline()
    statement = (
        select_columns(
            Request,
            col(Category.name),
            col(Centre.code),
            col(Centre.name),
            col(Department.name),
            col(handler.display_name),
        )
        .select_from(Request)
        .outerjoin(Category, col(Category.id) == col(Request.category_id))
        .outerjoin(Centre, col(Centre.id) == col(Request.centre_id))
        .outerjoin(Department, col(Department.id) == col(Request.department_id))
        .outerjoin(handler, col(handler.id) == col(Request.handler_id))
        .where(_tab_condition(tab, scope, now), *_filter_conditions(scope, filters, now))
        .order_by(deadline.asc().nulls_last(), col(Request.id))
        .offset(offset)
        .limit(limit)
    )
    return [
        QueueRow(
            request=request,
            category=category,
            centre_code=centre_code,
            centre_name=centre_name,
            department=department,
            handler=handler_name,
        )
        for request, category, centre_code, centre_name, department, handler_name in (
            session.execute(statement).all()
        )
    ]


def categories_named(*, session: Session, key: str) -> list[int]:
    """The ids of categories whose id is `key` (digits) or whose name is `key`."""
    where: Any = Category.name == key
    if key.isdigit():
        where = or_(where, col(Category.id) == int(key))
    return [i for i in session.exec(select(Category.id).where(where)).all() if i is not None]


def departments_named(*, session: Session, key: str) -> list[int]:
    """The ids of departments whose id is `key` (digits) or whose name is `key`."""
    where: Any = Department.name == key
    if key.isdigit():
        where = or_(where, col(Department.id) == int(key))
    return [i for i in session.exec(select(Department.id).where(where)).all() if i is not None]


def newest_event_id(*, session: Session) -> int:
    """The id of the newest event (0: none): a cheap check that anything happened."""
    return int(session.execute(select_columns(func.max(col(Event.id)))).scalar() or 0)


def changed_in_scope(*, session: Session, scope: QueueScope, after: int, upto: int) -> bool:
    """Whether an event in (after, upto] changed a request of the scope (refused attempts
    change nothing and do not count)."""
    statement = (
        select_columns(col(Event.id))
        .select_from(Event)
        .join(Request, col(Request.id) == col(Event.request_id))
        .where(
            col(Event.id) > after,
            col(Event.id) <= upto,
            col(Event.outcome) == "ok",
            scope.condition(),
        )
        .limit(1)
    )
    return session.execute(statement).first() is not None


# --- exports ------------------------------------------------------------------------------


def _received_between(
    statement: Any, start: datetime | None, end: datetime | None, within: Any = None
) -> Any:
    """`statement` limited to requests received in [start, end); None leaves that end open.
    `within`: a further condition on Request (e.g. subtree_condition), or None."""
    if start is not None:
        statement = statement.where(col(Request.created_at) >= start)
    if end is not None:
        statement = statement.where(col(Request.created_at) < end)
    if within is not None:
        statement = statement.where(within)
    return statement


def count_requests_received(
    *, session: Session, start: datetime | None, end: datetime | None, within: Any = None
) -> int:
    """How many requests were received in [start, end) (None: that end is open), of those
    matching `within` (a condition on Request; None: all)."""
    statement = _received_between(
        select_columns(func.count()).select_from(Request), start, end, within
    )
    return int(session.execute(statement).scalar_one())


def count_events_received(
    *, session: Session, start: datetime | None, end: datetime | None, within: Any = None
) -> int:
    """How many events (outcome ok) the requests received in [start, end) (matching `within`)
    have."""
    statement = _received_between(
        select_columns(func.count())
        .select_from(Event)
        .join(Request, col(Request.id) == col(Event.request_id))
        .where(col(Event.outcome) == "ok"),
        start,
        end,
        within,
    )
    return int(session.execute(statement).scalar_one())


def stream_requests_received(
    *,
    session: Session,
    start: datetime | None,
    end: datetime | None,
    batch_size: int,
    within: Any = None,
) -> Iterator[Sequence[Row[Any]]]:
    """Requests received in [start, end) (matching `within`, a condition on Request), oldest
    first, in batches of `batch_size` rows.

    Each row holds the request's columns plus the names an export shows: `category`,
    `department`, `handler_name`, `requester_name`, `requester_phone`, and the holding
    centre's `centre_code` and `centre_name`. The rows come through
    a server-side cursor (PostgreSQL: a named cursor), so however many there are, only one
    batch is held in memory. Other queries may run in the same session between batches.
    """
    requester = aliased(Person, name="requester")
    handler = aliased(Person, name="handler")
    statement = (
        select_columns(
            col(Request.id),
            col(Request.number),
            col(Request.created_at),
            col(Request.channel),
            col(Request.state),
            col(Request.text),
            col(Request.result),
            col(Request.solved),
            col(Request.satisfaction),
            col(Request.reopen_count),
            col(Request.first_action_at),
            col(Request.responded_in_time),
            col(Request.first_replied_at),
            col(Request.closed_at),
            col(Request.response_due_at),
            col(Request.resolution_due_at),
            col(Request.contact_name),
            col(Request.contact_phone),
            col(Request.requester_id),
            col(Category.name).label("category"),
            col(Department.name).label("department"),
            col(handler.display_name).label("handler_name"),
            col(requester.display_name).label("requester_name"),
            col(requester.phone).label("requester_phone"),
            col(Centre.code).label("centre_code"),
            col(Centre.name).label("centre_name"),
        )
        .join(requester, col(requester.id) == col(Request.requester_id))
        .join(Centre, col(Centre.id) == col(Request.centre_id))
        .outerjoin(handler, col(handler.id) == col(Request.handler_id))
        .outerjoin(Category, col(Category.id) == col(Request.category_id))
        .outerjoin(Department, col(Department.id) == col(Request.department_id))
        .order_by(col(Request.created_at), col(Request.id))
        .execution_options(stream_results=True, yield_per=batch_size)
    )
    result = session.execute(_received_between(statement, start, end, within))
    try:
        yield from result.partitions()
    finally:
        result.close()


def events_of_requests(*, session: Session, request_ids: Sequence[int]) -> Sequence[Row[Any]]:
    """The history (outcome ok) of several requests in one query, by request, oldest first.

    Each row holds `request_id`, `created_at`, `action`, `from_state`, `to_state`, `note`,
    `actor_id`, and the actor's `actor_name` and `actor_role` (None for the system).
    """
    if not request_ids:
        return []
    statement: Any = (
        select_columns(
            col(Event.request_id),
            col(Event.created_at),
            col(Event.action),
            col(Event.from_state),
            col(Event.to_state),
            col(Event.note),
            col(Event.actor_id),
            col(Person.display_name).label("actor_name"),
            col(Person.role).label("actor_role"),
        )
        .outerjoin(Person, col(Person.id) == col(Event.actor_id))
        .where(col(Event.request_id).in_(list(request_ids)), col(Event.outcome) == "ok")
        .order_by(col(Event.request_id), col(Event.id))
    )
    rows: Sequence[Row[Any]] = session.execute(statement).all()
    return rows


# --- console request page -----------------------------------------------------------------


def get_attachment(*, session: Session, attachment_id: int) -> Attachment | None:
    """An attachment by id."""
    return session.get(Attachment, attachment_id)


# --- WeChat callback nonces ---------------------------------------------------------------


#: Expired nonce rows deleted by one callback at most (the rest go with the next ones).
NONCE_CLEANUP_BATCH = 500


def remember_nonce(
    *, session: Session, key: str, digest: str, expires_at: datetime, now: datetime
) -> str | None:
    """Records a callback's "<timestamp>:<nonce>" with its body's digest.

    Rows whose timestamp is no longer accepted are deleted on the way (up to
    NONCE_CLEANUP_BATCH), so the table stays about one replay window's callbacks.

    Returns:
        None when the pair is new (recorded now), else the digest recorded first. On
        PostgreSQL a concurrent insert of the same key waits for the other transaction, so
        of two posts with one nonce exactly one is recorded first.
    """
    # Skipping rows another callback is deleting: concurrent callbacks neither wait for each
    # other's clean-up nor deadlock over it (SQLite has one writer and ignores the clause).
    expired = (
        select_columns(col(WeChatNonce.key))
        .where(col(WeChatNonce.expires_at) < now)
        .limit(NONCE_CLEANUP_BATCH)
        .with_for_update(skip_locked=True)
    )
    session.execute(delete(WeChatNonce).where(col(WeChatNonce.key).in_(expired)))
    statement = (
        _insert(session, WeChatNonce)
        .values(key=key, digest=digest, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(col(WeChatNonce.key))
    )
    if session.execute(statement).first() is not None:
        return None
    earlier = session.execute(
        select_columns(col(WeChatNonce.digest)).where(col(WeChatNonce.key) == key)
    ).scalar_one_or_none()
    # Deleted in between by another callback's clean-up (it expired): nothing to compare with,
    # and its timestamp is refused by the caller's window check anyway.
    return str(earlier) if earlier is not None else ""


# --- time bank (时间银行) ----------------------------------------------------------------------


def hour_account(
    *,
    session: Session,
    centre_id: int | None = None,
    person_id: int | None = None,
    lock: bool = False,
) -> HourAccount:
    """The time-bank account of a centre or of a person (exactly one of the two), made on first
    use; locked for the rest of the transaction when `lock` (FOR UPDATE: movements into or out
    of it by others wait)."""
    if (centre_id is None) == (person_id is None):
        raise ValueError("an hour account belongs to a centre or to a person")
    if centre_id is not None:
        owner: Any = col(HourAccount.centre_id) == centre_id
        values: dict[str, Any] = {"kind": HourAccountKind.CENTRE, "centre_id": centre_id}
        key = "centre_id"
    else:
        owner = col(HourAccount.person_id) == person_id
        values = {"kind": HourAccountKind.VOLUNTEER, "person_id": person_id}
        key = "person_id"
    # Two first uses at once make one row: the second insert does nothing.
    session.execute(
        _insert(session, HourAccount)
        .values(**values, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=[key])
    )
    statement = select(HourAccount).where(owner)
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).one()


def find_hour_account(*, session: Session, person_id: int) -> HourAccount | None:
    """A person's time-bank account, if they have one (nothing is made)."""
    return session.exec(select(HourAccount).where(col(HourAccount.person_id) == person_id)).first()


def account_balance(*, session: Session, account_id: int) -> int:
    """An account's balance in minutes: what moved in less what moved out."""
    incoming = select_columns(func.coalesce(func.sum(HourMovement.minutes), 0)).where(
        col(HourMovement.to_account_id) == account_id
    )
    outgoing = select_columns(func.coalesce(func.sum(HourMovement.minutes), 0)).where(
        col(HourMovement.from_account_id) == account_id
    )
    return int(session.execute(incoming).scalar_one()) - int(session.execute(outgoing).scalar_one())


def minutes_received(
    *, session: Session, account_id: int, kind: str, start: datetime, end: datetime | None = None
) -> int:
    """Minutes moved into an account by movements of `kind` made in [start, end) (no end:
    until now)."""
    statement = select_columns(func.coalesce(func.sum(HourMovement.minutes), 0)).where(
        col(HourMovement.to_account_id) == account_id,
        col(HourMovement.kind) == kind,
        col(HourMovement.created_at) >= start,
    )
    if end is not None:
        statement = statement.where(col(HourMovement.created_at) < end)
    return int(session.execute(statement).scalar_one())


def minutes_sent(
    *, session: Session, account_id: int, kind: str, start: datetime, end: datetime | None = None
) -> int:
    """Minutes moved out of an account by movements of `kind` made in [start, end) (no end:
    until now)."""
    statement = select_columns(func.coalesce(func.sum(HourMovement.minutes), 0)).where(
        col(HourMovement.from_account_id) == account_id,
        col(HourMovement.kind) == kind,
        col(HourMovement.created_at) >= start,
    )
    if end is not None:
        statement = statement.where(col(HourMovement.created_at) < end)
    return int(session.execute(statement).scalar_one())


def add_movement(*, session: Session, movement: HourMovement) -> HourMovement:
    """Records a movement (with its id)."""
    session.add(movement)
    session.flush()
    return movement


def last_movements(*, session: Session, account_id: int, limit: int) -> Sequence[HourMovement]:
    """An account's newest movements, in or out, newest first."""
    return session.exec(
        select(HourMovement)
        .where(
            or_(
                col(HourMovement.to_account_id) == account_id,
                col(HourMovement.from_account_id) == account_id,
            )
        )
        .order_by(col(HourMovement.created_at).desc(), col(HourMovement.id).desc())
        .limit(limit)
    ).all()


def ledger_total(*, session: Session) -> int:
    """The sum of every account's balance (zero, by construction: each movement takes from one
    account what it gives another)."""
    accounts = session.exec(select(HourAccount.id)).all()
    return sum(
        account_balance(session=session, account_id=account_id)
        for account_id in accounts
        if account_id is not None
    )


def add_reward(*, session: Session, reward: Reward) -> Reward:
    """Adds a reward to a centre's catalogue (with its id)."""
    session.add(reward)
    session.flush()
    return reward


def get_reward(*, session: Session, reward_id: int, lock: bool = False) -> Reward | None:
    """A reward by id, optionally locked (FOR UPDATE) for the rest of the transaction."""
    statement = select(Reward).where(col(Reward.id) == reward_id)
    if lock:
        # Read again under the lock: the stock another transaction just changed counts.
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return session.exec(statement).first()


def reward_named(*, session: Session, centre_id: int, name: str) -> Reward | None:
    """A centre's reward of this exact name, active or not."""
    return session.exec(
        select(Reward).where(col(Reward.centre_id) == centre_id, col(Reward.name) == name)
    ).first()


def list_rewards(
    *, session: Session, centre_ids: Sequence[int] | None = None, active_only: bool = False
) -> Sequence[Reward]:
    """Rewards by centre and name, of some centres (None: all)."""
    statement = select(Reward)
    if centre_ids is not None:
        statement = statement.where(col(Reward.centre_id).in_(list(centre_ids)))
    if active_only:
        statement = statement.where(col(Reward.active) == true())
    return session.exec(statement.order_by(col(Reward.centre_id), col(Reward.name))).all()


def add_redemption(*, session: Session, redemption: Redemption) -> Redemption:
    """Records a redemption (with its id)."""
    session.add(redemption)
    session.flush()
    return redemption


def get_redemption(
    *, session: Session, redemption_id: int, lock: bool = False
) -> Redemption | None:
    """A redemption by id, optionally locked for the rest of the transaction."""
    statement = select(Redemption).where(col(Redemption.id) == redemption_id)
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return session.exec(statement).first()


# --- reminders ------------------------------------------------------------------------------


def claim_reminder(
    *, session: Session, key: str, kind: str, request_id: int | None, at: datetime
) -> bool:
    """Records that the reminder `key` is done; False if it was already (by anyone)."""
    statement = (
        _insert(session, Reminder)
        .values(key=key, kind=kind, request_id=request_id, at=at)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(col(Reminder.key))
    )
    return session.execute(statement).first() is not None


def reminder_keys(*, session: Session, request_ids: Sequence[int]) -> set[str]:
    """The reminder keys already done for these requests."""
    if not request_ids:
        return set()
    return set(
        session.exec(
            select(Reminder.key).where(col(Reminder.request_id).in_(list(request_ids)))
        ).all()
    )


def requests_to_tick(
    *,
    session: Session,
    now: datetime,
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> Sequence[Request]:
    """At most `limit` requests whose `tick_at` has come, in any state (a request that ended is
    read once more, to clear its `tick_at`), by (`tick_at`, id) from after `after` (the last
    one of the previous batch): the index on `tick_at` is read in order and stops at `now`."""
    statement = select(Request).where(col(Request.tick_at) <= now)
    if after is not None:
        statement = statement.where(
            tuple_(col(Request.tick_at), col(Request.id)) > tuple_(after[0], after[1])
        )
    return session.exec(
        statement.order_by(col(Request.tick_at), col(Request.id)).limit(limit)
    ).all()


@dataclass(frozen=True)
class NextTick:
    """When the tick should look at a request again, if the request is as the tick read it."""

    request_id: int
    #: The `tick_at` and `updated_at` the tick read.
    seen_tick_at: datetime
    seen_updated_at: datetime
    #: The next instant (None: nothing will fall unless the request changes).
    tick_at: datetime | None


def set_next_ticks(*, session: Session, ticks: Sequence[NextTick]) -> None:
    """Sets each request's `tick_at` in one statement, unless it changed since it was read (a
    change sets `tick_at` itself, and the tick must look at the request as it is now)."""
    if not ticks:
        return
    table: Any = Request.__table__  # type: ignore[attr-defined]
    statement = (
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            table.c.tick_at == bindparam("b_seen_tick_at"),
            table.c.updated_at == bindparam("b_seen_updated_at"),
        )
        .values(tick_at=bindparam("b_tick_at"))
    )
    session.execute(
        statement,
        [
            {
                "b_id": tick.request_id,
                "b_seen_tick_at": tick.seen_tick_at,
                "b_seen_updated_at": tick.seen_updated_at,
                "b_tick_at": tick.tick_at,
            }
            for tick in ticks
        ],
    )


def look_again(
    *, session: Session, now: datetime, excluded: Sequence[str], condition: Any = None
) -> int:
    """Makes the tick look at every request not in the `excluded` states (and matching
    `condition`, a condition on Request) at `now`: after a change of what reminders are
    computed from (days off, the policy settings), which no request's own change reflects.
    Returns how many were marked."""
    table: Any = Request.__table__  # type: ignore[attr-defined]
    statement = update(table).where(table.c.state.not_in(list(excluded))).values(tick_at=now)
    if condition is not None:
        statement = statement.where(condition)
    return int(getattr(session.execute(statement), "rowcount", 0) or 0)


def open_requests(*, session: Session, excluded: Sequence[str]) -> Sequence[Request]:
    """Requests not in the `excluded` states, oldest first."""
    return session.exec(
        select(Request).where(col(Request.state).not_in(list(excluded))).order_by(col(Request.id))
    ).all()


def requests_where(*, session: Session, condition: Any, limit: int = 200) -> Sequence[Request]:
    """Requests matching a SQL condition, oldest first, at most `limit`."""
    return session.exec(
        select(Request).where(condition).order_by(col(Request.id)).limit(limit)
    ).all()
