"""The tables. Every timestamp is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from storage.dates import DEFAULT_RESOLUTION_DAYS, DEFAULT_RESPONSE_HOURS


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC; SQLite's naive values come back tagged as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ts(nullable: bool = True, index: bool = False) -> Any:
    """A UTC timestamp column."""
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def created() -> Any:
    """A creation timestamp, filled in with the current UTC time."""
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Role(StrEnum):
    """What a chat identity may do."""

    REQUESTER = "requester"
    WORKER = "worker"
    LEADER = "leader"
    DEPARTMENT = "department"
    #: A committee group chat (e.g. a Telegram group): it receives the committee's cards and
    #: never acts itself; presses in it are checked against the person who pressed.
    GROUP = "group"
    #: A staff account that administers its centre's subtree from the console (accounts,
    #: downloads); it reads requests like a leader and takes no action on them.
    ADMIN = "admin"


class CentreLevel(StrEnum):
    """Where a service centre stands in the network: the four levels of responsibility, and
    the kinds of centre in the new fields (新兴领域)."""

    CITY = "市"
    DISTRICT = "区"
    STREET = "街道"
    COMMUNITY = "社区"
    BUSINESS = "商圈"
    BUILDING = "楼宇"
    PARK = "园区"
    MARKET = "市场"


class DepartmentKind(StrEnum):
    """The three kinds of unit a request is forwarded to."""

    STREET = "街道"
    FUNCTIONAL = "职能部门"
    SOCIAL = "社会组织"


class Route(StrEnum):
    """Where a new request of a category goes first."""

    COMMITTEE = "committee"
    DEPARTMENT = "department"


class InboxStatus(StrEnum):
    """Progress of one inbound platform message."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class OutboxStatus(StrEnum):
    """Progress of one message to send."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class Centre(SQLModel, table=True):
    """A party-mass service centre (党群服务中心) in the network's tree.

    `path` is the ids from the root down to this centre, as "/1/5/23/": a subtree is every
    centre whose path starts with its root's, and the ancestors are read off the path.
    """

    __tablename__ = "centres"

    id: int | None = Field(default=None, primary_key=True)
    #: Letters, digits and "-"; unique; used in links and QR codes.
    code: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    name: str = Field(max_length=100)
    #: One of CentreLevel's values.
    level: str = Field(max_length=10)
    parent_id: int | None = Field(default=None, foreign_key="centres.id", index=True)
    path: str = Field(sa_column=Column(String(400), nullable=False, index=True))
    active: bool = True
    #: The centre that holds everything of a single-centre install (exactly one).
    is_default: bool = False
    #: Extra days off (ISO dates) on top of the national calendar and REDESK_EXTRA_DAYS_OFF;
    #: inherited by the whole subtree.
    days_off: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = created()


class Department(SQLModel, table=True):
    """A street office, functional department or social organisation, belonging to a centre
    and serving its whole subtree."""

    __tablename__ = "departments"
    __table_args__ = (UniqueConstraint("centre_id", "name", name="uq_departments_centre_name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), nullable=False))
    centre_id: int | None = Field(default=None, foreign_key="centres.id", index=True)
    kind: str = Field(default=DepartmentKind.FUNCTIONAL, max_length=20)
    active: bool = True
    #: Resolution deadline (working days) when a request is forwarded here; None: the category's.
    resolution_days: int | None = None
    created_at: datetime = created()


class Category(SQLModel, table=True):
    """A kind of request, recognised by keywords, with its route and deadlines.

    A category of a centre applies in its whole subtree (the nearest one of a name wins);
    one of no centre applies everywhere."""

    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("centre_id", "name", name="uq_categories_centre_name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), nullable=False))
    centre_id: int | None = Field(default=None, foreign_key="centres.id", index=True)
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    route: str = Field(default=Route.COMMITTEE, max_length=20)
    department_id: int | None = Field(default=None, foreign_key="departments.id")
    #: First action expected within this many working hours (0: the same working day).
    response_hours: int = DEFAULT_RESPONSE_HOURS
    #: Resolution expected within this many working days (0: the same working day).
    resolution_days: int = DEFAULT_RESOLUTION_DAYS
    urgent: bool = False
    #: The category used when no keyword matches.
    is_fallback: bool = False
    active: bool = True


class Person(SQLModel, table=True):
    """One chat identity on one channel (a Telegram user, a WeChat openid, a web session)."""

    __tablename__ = "people"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_people_identity"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=20)
    external_id: str = Field(max_length=128)
    display_name: str = Field(default="", max_length=100)
    phone: str | None = Field(default=None, max_length=30)
    role: str = Field(default=Role.REQUESTER, max_length=20, index=True)
    department_id: int | None = Field(default=None, foreign_key="departments.id")
    #: The centre of their role (worker, leader, department staff, group); for a resident,
    #: the centre they came through (None: not chosen yet, while there are several).
    centre_id: int | None = Field(default=None, foreign_key="centres.id", index=True)
    #: The platform said the person cannot be reached (blocked the bot, unsubscribed).
    unreachable: bool = False
    #: An open dialogue: the command waiting for its missing argument, e.g. {"command": "reject",
    #: "number": "SQ-..."}.
    dialogue: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    #: Sequence of the last web message delivered to this identity.
    web_seq: int = 0
    #: The request most recently submitted, for attaching follow-up media.
    last_request_id: int | None = None
    #: When the person last wrote (or pressed, subscribed, clicked a menu) on their channel.
    last_inbound_at: datetime | None = ts()
    #: Messages sent to them since `last_inbound_at` (WeChat allows 5 within 48 hours).
    window_sent: int = 0
    #: The last entry scene they came through (a WeChat parametric QR code's scene), and when.
    scene: str | None = Field(default=None, max_length=64)
    scene_at: datetime | None = ts()
    #: A chat identity linked to a staff account (关联聊天账号): it acts as that account's
    #: person, whose role, centre and department are the ones that count.
    principal_id: int | None = Field(default=None, foreign_key="people.id", index=True)
    created_at: datetime = created()


class Account(SQLModel, table=True):
    """A staff account of the console: a username and password for one person (the
    principal, a row of people) that any number of chat identities may be linked to."""

    __tablename__ = "accounts"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    #: The person the account is: role, centre, department and history are theirs.
    person_id: int = Field(foreign_key="people.id", unique=True)
    #: argon2 hash; None until the one-time setup link is used.
    password_hash: str | None = Field(default=None, max_length=200)
    #: SHA-256 of the one-time setup token (`/console/setup?token=`), and its expiry.
    setup_token_hash: str | None = Field(
        default=None, sa_column=Column(String(64), nullable=True, unique=True)
    )
    setup_expires_at: datetime | None = ts()
    active: bool = True
    #: The chat identity notifications go to (None: the person's own chat, if any).
    notify_person_id: int | None = Field(default=None, foreign_key="people.id")
    #: Sessions started before this moment are over ("log out everywhere", a new password).
    sessions_valid_after: datetime | None = ts()
    created_at: datetime = created()
    last_login_at: datetime | None = ts()


class ConsoleSession(SQLModel, table=True):
    """A logged-in console session; the cookie holds the token, only its hash is stored."""

    __tablename__ = "console_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    account_id: int = Field(foreign_key="accounts.id", index=True)
    #: The CSRF token the page sends back as X-CSRF-Token (random, per session).
    csrf_token: str = Field(max_length=64)
    created_at: datetime = created()
    last_seen_at: datetime = created()
    #: Where the login came from, for the audit.
    address: str = Field(default="", max_length=160)
    ended_at: datetime | None = ts()


class LoginAttempt(SQLModel, table=True):
    """A console login attempt, counted per username and per address to limit guessing."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = created()
    username: str = Field(max_length=64)
    address: str = Field(max_length=160)
    ok: bool = False


class WebSession(SQLModel, table=True):
    """A bearer token of the web channel; only its hash is stored."""

    __tablename__ = "web_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    person_id: int = Field(foreign_key="people.id", index=True)
    created_at: datetime = created()
    expires_at: datetime = ts(nullable=False)


class Invitation(SQLModel, table=True):
    """A one-time code that gives the chat identity binding it a role."""

    __tablename__ = "invitations"

    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    role: str = Field(max_length=20)
    department_id: int | None = Field(default=None, foreign_key="departments.id")
    #: The centre the role is in.
    centre_id: int | None = Field(default=None, foreign_key="centres.id")
    created_at: datetime = created()
    expires_at: datetime = ts(nullable=False)
    used_at: datetime | None = ts()
    used_by_id: int | None = Field(default=None, foreign_key="people.id")
    #: A code to link a chat identity to this account (关联聊天账号) instead of a role.
    account_id: int | None = Field(default=None, foreign_key="accounts.id")


class BindFailure(SQLModel, table=True):
    """A 绑定 whose code was not a valid invitation: counted to refuse guessing, kept on record."""

    __tablename__ = "bind_failures"
    __table_args__ = (
        Index("ix_bind_failures_person_at", "person_id", "at"),
        Index("ix_bind_failures_address_at", "address", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = created()
    channel: str = Field(max_length=20)
    person_id: int = Field(foreign_key="people.id")
    #: The chat identity on its channel (Telegram user id, WeChat OpenID, web identity).
    identity: str = Field(max_length=128)
    #: Where it came from: the web client's address, or "<channel>:<chat id>" on chat channels.
    address: str = Field(max_length=160)
    #: Why it failed (unknown, used, expired); never the code itself.
    reason: str = Field(max_length=20)


class Request(SQLModel, table=True):
    """A resident's request (诉求) and where it stands."""

    __tablename__ = "requests"
    __table_args__ = (
        Index("ix_requests_state_created", "state", "created_at"),
        Index("ix_requests_centre_state", "centre_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    #: The centre that holds the request now (上报 and 下派 move it; the events say when).
    centre_id: int = Field(foreign_key="centres.id")
    requester_id: int = Field(foreign_key="people.id", index=True)
    channel: str = Field(max_length=20)
    text: str = Field(sa_column=Column(Text, nullable=False))
    category_id: int | None = Field(default=None, foreign_key="categories.id")
    state: str = Field(max_length=20)
    #: The department the request is forwarded to (None while the committee holds it).
    department_id: int | None = Field(default=None, foreign_key="departments.id", index=True)
    #: The worker who accepted (做单) it.
    handler_id: int | None = Field(default=None, foreign_key="people.id")
    #: Who registered a walk-in's request at the reception desk, with the walk-in's contact.
    registered_by_id: int | None = Field(default=None, foreign_key="people.id")
    contact_name: str | None = Field(default=None, max_length=100)
    contact_phone: str | None = Field(default=None, max_length=30)
    result: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    solved: bool | None = None
    satisfaction: str | None = Field(default=None, max_length=20)
    reopen_count: int = 0
    #: The platform message the request came from ("<chat>:<message id>"), to apply edits.
    origin: str | None = Field(default=None, max_length=100, index=True)
    created_at: datetime = created()
    updated_at: datetime = created()
    first_action_at: datetime | None = ts()
    response_due_at: datetime | None = ts()
    resolution_due_at: datetime | None = ts()
    #: When the current deadlines were set (intake, a forward, a reopen): reminders fall at
    #: 75 % of the time from here to each deadline.
    deadlines_set_at: datetime | None = ts()
    replied_at: datetime | None = ts()
    closed_at: datetime | None = ts()
    #: Figures fixed when they happen, for the statistics (docs/statistics.md): whether the
    #: first action came within the response deadline then in force, and how long it took ...
    responded_in_time: bool | None = None
    response_seconds: int | None = None
    response_work_seconds: int | None = None
    #: ... and when the first 回单 reached the requester, and how long after intake.
    first_replied_at: datetime | None = ts()
    reply_seconds: int | None = None
    reply_work_seconds: int | None = None
    #: When the tick should look at the request next (its next reminder, escalation or
    #: auto-close); None: nothing will fall. Set to now by every change, so that the tick
    #: reads only what is due.
    tick_at: datetime | None = ts(index=True)


class Event(SQLModel, table=True):
    """One thing that happened to a request: its history, row by row."""

    __tablename__ = "events"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int | None = Field(default=None, foreign_key="requests.id", index=True)
    actor_id: int | None = Field(default=None, foreign_key="people.id")
    action: str = Field(max_length=30)
    from_state: str | None = Field(default=None, max_length=20)
    to_state: str | None = Field(default=None, max_length=20)
    #: "ok", or "refused" for an attempt that was not allowed (nothing changed).
    outcome: str = Field(default="ok", max_length=20)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = created()


class RequestCounter(SQLModel, table=True):
    """The day's last request sequence number, for SQ-YYYYMMDD-NNNN."""

    __tablename__ = "request_counters"

    day: str = Field(primary_key=True, max_length=8)
    last: int = 0


class InboxMessage(SQLModel, table=True):
    """Every inbound platform message, stored before the platform gets its answer."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("channel", "natural_key", name="uq_inbox_natural_key"),
        Index("ix_inbox_chat_status", "channel", "chat_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=20)
    natural_key: str = Field(max_length=200)
    #: The sender's identity on the channel; messages of one chat are handled in order.
    chat_id: str = Field(max_length=128)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    #: The entry scene the message names (a WeChat QR code's scene on subscribe or SCAN).
    scene: str | None = Field(default=None, max_length=64)
    status: str = Field(default=InboxStatus.PENDING, max_length=20, index=True)
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    received_at: datetime = created()
    processed_at: datetime | None = ts()


class OutboxMessage(SQLModel, table=True):
    """Every message to send: a catalogue key and its parameters, rendered at delivery."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_person_status", "person_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(sa_column=Column(String(120), nullable=False, unique=True))
    person_id: int = Field(foreign_key="people.id")
    request_id: int | None = Field(default=None, foreign_key="requests.id")
    key: str = Field(max_length=60)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=OutboxStatus.PENDING, max_length=20, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = created()
    next_attempt_at: datetime | None = ts()
    sent_at: datetime | None = ts()


class WebMessage(SQLModel, table=True):
    """A message delivered to a web chat identity, read by long polling."""

    __tablename__ = "web_messages"
    __table_args__ = (UniqueConstraint("person_id", "seq", name="uq_web_messages_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="people.id")
    seq: int
    outbox_id: int = Field(sa_column=Column("outbox_id", Integer, nullable=False, unique=True))
    text: str = Field(sa_column=Column(Text, nullable=False))
    buttons: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    #: The seq of an earlier message this one replaces (a card whose buttons went stale).
    updates: int | None = None
    created_at: datetime = created()


class CardMessage(SQLModel, table=True):
    """A delivered message that offered buttons for a request: where it is on its platform
    (Telegram chat + message id, or web seq) and which buttons it offers now, so that it can
    be updated when the request moves on."""

    __tablename__ = "card_messages"
    __table_args__ = (Index("ix_card_messages_request_open", "request_id", "open"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="requests.id")
    person_id: int = Field(foreign_key="people.id")
    channel: str = Field(max_length=20)
    #: The outbox row the card was delivered from (a refresh names the card by it).
    outbox_id: int = Field(sa_column=Column("outbox_id", Integer, nullable=False, unique=True))
    chat_id: str | None = Field(default=None, max_length=128)
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    web_seq: int | None = None
    #: The card's text as first delivered (an update appends the current state to it).
    text: str = Field(sa_column=Column(Text, nullable=False))
    #: The buttons it offers now ({"label", "action"}).
    buttons: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    #: False once it offers nothing that can go stale.
    open: bool = True
    created_at: datetime = created()
    updated_at: datetime | None = ts()


class Attachment(SQLModel, table=True):
    """A file, location or contact card that came with a request or a supplement."""

    __tablename__ = "attachments"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="requests.id", index=True)
    #: One of bot.texts.ATTACHMENT_LABELS: photo, live_photo, video, video_note, animation,
    #: audio, voice, document (files), location, contact.
    kind: str = Field(max_length=20)
    channel: str = Field(max_length=20)
    #: The platform's id of the file (Telegram file_id, WeChat MediaId), if a file.
    file_id: str | None = Field(default=None, max_length=255)
    file_name: str | None = Field(default=None, max_length=255)
    mime_type: str | None = Field(default=None, max_length=100)
    latitude: float | None = None
    longitude: float | None = None
    label: str | None = Field(default=None, max_length=255)
    #: Where the platform serves the file for a while (WeChat PicUrl), if it says.
    url: str | None = Field(default=None, max_length=500)
    #: The file's path under REDESK_MEDIA_DIR once it has been fetched.
    stored_path: str | None = Field(default=None, max_length=255)
    created_at: datetime = created()


class ButtonToken(SQLModel, table=True):
    """What a button sent on a platform stands for: short, random, checked again when pressed."""

    __tablename__ = "button_tokens"

    token: str = Field(primary_key=True, max_length=32)
    #: Who the button was sent to (a person, or a committee group chat).
    person_id: int = Field(foreign_key="people.id")
    action: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = created()


class ChannelState(SQLModel, table=True):
    """Small durable values a channel keeps, e.g. the Telegram getUpdates offset."""

    __tablename__ = "channel_state"

    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(sa_column=Column(Text, nullable=False))


class AdminAudit(SQLModel, table=True):
    """What an admin did that must be on record (e.g. an export with personal data)."""

    __tablename__ = "admin_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = created()
    #: The operating-system user who ran the command.
    actor: str = Field(max_length=100)
    action: str = Field(max_length=50)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class WeChatNonce(SQLModel, table=True):
    """A WeChat callback's (timestamp, nonce) seen while its timestamp is accepted, with a
    digest of its body: the same pair again with another body is a forgery, not a retry.

    Used when there is no Redis (which then keeps the same memory)."""

    __tablename__ = "wechat_nonces"

    #: "<timestamp>:<nonce>" as signed by WeChat.
    key: str = Field(primary_key=True, max_length=100)
    #: SHA-256 of the body, hex.
    digest: str = Field(max_length=64)
    #: When the timestamp stops being accepted; the row may be deleted from then on.
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class Reminder(SQLModel, table=True):
    """A reminder, escalation, digest or auto-close that was done: its key makes it happen
    once however many ticks or schedulers run."""

    __tablename__ = "reminders"

    #: e.g. "42:resolution_due:2026-11-23T10:00:00+00:00" or "digest:2026-11-23".
    key: str = Field(primary_key=True, max_length=120)
    request_id: int | None = Field(default=None, foreign_key="requests.id", index=True)
    kind: str = Field(max_length=30)
    at: datetime = created()


# --- time bank (时间银行) ----------------------------------------------------------------------


class HourAccountKind(StrEnum):
    """Whose hours an account holds."""

    #: A centre's account: it issues the hours it confirms, so its balance is negative.
    CENTRE = "centre"
    VOLUNTEER = "volunteer"


class MovementKind(StrEnum):
    """Why hours moved."""

    #: Hours of service confirmed: centre -> volunteer.
    CONFIRM = "confirm"
    #: A reward redeemed: volunteer -> centre.
    REDEEM = "redeem"
    #: A correction, a compensating transfer in either direction with its reason.
    ADJUST = "adjust"


class HourAccount(SQLModel, table=True):
    """An account of the time bank: one per centre, one per volunteer (a person).

    Its balance is never stored: it is the sum of the movements into it less those out of it
    (storage.queries.account_balance)."""

    __tablename__ = "hour_accounts"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'centre' AND centre_id IS NOT NULL AND person_id IS NULL) OR "
            "(kind = 'volunteer' AND person_id IS NOT NULL AND centre_id IS NULL)",
            name="ck_hour_accounts_owner",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    #: One of HourAccountKind's values.
    kind: str = Field(max_length=10)
    centre_id: int | None = Field(default=None, foreign_key="centres.id", unique=True)
    person_id: int | None = Field(default=None, foreign_key="people.id", unique=True)
    created_at: datetime = created()


class HourMovement(SQLModel, table=True):
    """A transfer of minutes between two accounts. Rows are never updated (a trigger refuses
    it) nor deleted by the application: a correction is another movement."""

    __tablename__ = "hour_movements"
    __table_args__ = (
        CheckConstraint("minutes > 0", name="ck_hour_movements_minutes"),
        CheckConstraint("from_account_id <> to_account_id", name="ck_hour_movements_accounts"),
        Index("ix_hour_movements_to_created", "to_account_id", "created_at"),
        Index("ix_hour_movements_from_created", "from_account_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    from_account_id: int = Field(foreign_key="hour_accounts.id")
    to_account_id: int = Field(foreign_key="hour_accounts.id")
    #: Whole minutes, always positive (hours are shown as minutes / 60).
    minutes: int
    #: One of MovementKind's values.
    kind: str = Field(max_length=10)
    #: The need served (a confirmation), if any.
    request_id: int | None = Field(default=None, foreign_key="requests.id", index=True)
    #: The reward bought (a redemption).
    reward_id: int | None = Field(default=None, foreign_key="rewards.id")
    #: Who recorded the movement and so certifies it (谁记录谁证明): the worker who confirmed,
    #: the volunteer who redeemed; None for an adjustment made with `redesk hours adjust`
    #: (the admin is on the audit log, admin_audit).
    recorded_by_id: int | None = Field(default=None, foreign_key="people.id")
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = created()


class Reward(SQLModel, table=True):
    """Something a centre gives for hours (礼品、折扣、服务)."""

    __tablename__ = "rewards"
    __table_args__ = (
        UniqueConstraint("centre_id", "name", name="uq_rewards_centre_name"),
        CheckConstraint("minutes > 0", name="ck_rewards_minutes"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="ck_rewards_stock"),
    )

    id: int | None = Field(default=None, primary_key=True)
    centre_id: int = Field(foreign_key="centres.id", index=True)
    name: str = Field(sa_column=Column(String(100), nullable=False))
    #: What one costs, in minutes.
    minutes: int
    #: How many are left; None: unlimited.
    stock: int | None = None
    active: bool = True
    created_at: datetime = created()


class Redemption(SQLModel, table=True):
    """A reward redeemed by a person, paid by one movement, handed over later."""

    __tablename__ = "redemptions"

    id: int | None = Field(default=None, primary_key=True)
    reward_id: int = Field(foreign_key="rewards.id", index=True)
    person_id: int = Field(foreign_key="people.id", index=True)
    movement_id: int = Field(foreign_key="hour_movements.id", unique=True)
    created_at: datetime = created()
    #: When a worker handed it over, and who; None: not yet.
    given_at: datetime | None = ts()
    given_by_id: int | None = Field(default=None, foreign_key="people.id")
