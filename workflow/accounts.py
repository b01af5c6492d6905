"""Staff accounts of the console: passwords, setup links, logins and their limits, sessions,
and the chat identities linked to an account (关联聊天账号).

An account is its person (a row of people): role, centre, department and history are the
person's. Accounts made with `redesk staff add` have a person of channel "console" whose
external_id is the username. Chat identities linked to the account act as that person
(storage.queries.principal_of).

Nothing here commits: the caller's transaction holds each change with its audit row. A login
that fails is answered with a value, not an exception, so that the caller commits the failed
attempt it records (the limits count them).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlmodel import Session

from storage import queries
from storage.models import Account, ConsoleSession, Person, Role
from workflow import invitations
from workflow.errors import InvalidInput, UnknownCentre, UnknownDepartment, WorkflowError
from workflow.service import CONSOLE_CHANNEL

#: The password hasher (argon2id with argon2-cffi's current parameters). A stored hash made
#: with other parameters is replaced at the next successful login.
HASHER = PasswordHasher()

#: Roles a staff account may have.
STAFF_ROLES: tuple[str, ...] = (Role.WORKER, Role.LEADER, Role.DEPARTMENT, Role.ADMIN)

#: How long a setup link (`/console/setup?token=`) stays valid.
SETUP_VALID = timedelta(hours=24)

#: Fewest and most characters of a password.
MIN_PASSWORD = 10
MAX_PASSWORD = 256

#: Longest display name of an account's person (the column's size).
MAX_NAME = 100

#: The hash verified when the username is unknown (see _dummy_hash): made once per HASHER.
_dummy: str | None = None


def _dummy_hash() -> str:
    """A hash of a random password made with the current HASHER's parameters, verified when
    the username is unknown, so that an unknown user costs as much time as a wrong password
    and the two cannot be told apart. Made again only when HASHER's parameters change."""
    global _dummy
    made = _dummy
    if made is None or HASHER.check_needs_rehash(made):
        made = _dummy = HASHER.hash(secrets.token_urlsafe(16))
    return made


class AccountError(WorkflowError):
    """Base class of the accounts' refusals."""


class BadUsername(AccountError):
    """A username is not 2 to 64 of a-z, 0-9, ".", "_" and "-" (starting with a letter or
    digit)."""


class AccountExists(AccountError):
    """The username is taken."""


class UnknownAccount(AccountError):
    """No account has this username."""


class PasswordRejected(AccountError):
    """A new password breaks a rule: `reason` is too_short, too_long, all_digits or
    is_username (the catalogue key console.password_<reason>)."""

    def __init__(self, reason: str, **params: Any) -> None:
        super().__init__(f"Password rejected: {reason}.")
        self.reason = reason
        self.params = params


class SetupInvalid(AccountError):
    """The setup token is unknown, used or expired (answered alike)."""


class UnknownIdentity(AccountError):
    """The chat identity is not one linked to this account."""


@dataclass(frozen=True)
class Limits:
    """The console's login and session settings (REDESK_CONSOLE_*)."""

    failures_per_username: int = 5
    failures_per_address: int = 20
    window: timedelta = timedelta(minutes=15)
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)
    link: timedelta = timedelta(minutes=15)

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The limits of a Settings object."""
        return cls(
            failures_per_username=settings.console_login_failures_per_username,
            failures_per_address=settings.console_login_failures_per_address,
            window=timedelta(minutes=settings.console_login_window_minutes),
            idle=timedelta(minutes=settings.console_idle_minutes),
            absolute=timedelta(hours=settings.console_session_hours),
            link=timedelta(minutes=settings.console_link_minutes),
        )


def hash_token(token: str) -> str:
    """The SHA-256 hex digest a token (session cookie, setup link) is stored as."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def actor(username: str) -> str:
    """The admin audit's actor of something done in the console."""
    return f"console:{username}"


def audit(
    session: Session, *, username: str, action: str, address: str, at: datetime, **detail: Any
) -> None:
    """Puts a console event (login, failed login, logout, setup, link, unlink) on the admin
    audit."""
    queries.audit_admin_action(
        session=session,
        actor=actor(username),
        action=action,
        detail={"address": address, **detail},
        at=at,
    )


# --- usernames and passwords ----------------------------------------------------------------


def normalise_username(typed: str) -> str:
    """A username as stored: stripped and lower-cased.

    Raises:
        BadUsername: It is not 2 to 64 of a-z, 0-9, ".", "_" and "-", starting with a letter
            or a digit.
    """
    username = typed.strip().lower()
    if not queries.USERNAME_PATTERN.match(username):
        raise BadUsername(typed)
    return username


def check_password(password: str, username: str) -> None:
    """Refuses a password that is too short or long, all digits, or the username.

    Raises:
        PasswordRejected: naming the rule.
    """
    if len(password) < MIN_PASSWORD:
        raise PasswordRejected("too_short", limit=MIN_PASSWORD)
    if len(password) > MAX_PASSWORD:
        raise PasswordRejected("too_long", limit=MAX_PASSWORD)
    if password.isdigit():
        raise PasswordRejected("all_digits")
    if password.strip().lower() == username.lower():
        raise PasswordRejected("is_username")


# --- accounts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupLink:
    """A one-time token to set an account's password, and until when it works."""

    account: Account
    person: Person
    token: str
    expires_at: datetime


def create_staff(
    session: Session,
    *,
    username: str,
    name: str,
    role: str,
    now: datetime,
    centre_code: str | None = None,
    department_name: str | None = None,
) -> SetupLink:
    """A new staff account with its person (channel "console", external_id = the username)
    and its setup link; checked like `redesk invite`: department staff name a department of
    the centre or of a centre above it.

    Raises:
        BadUsername: The username is malformed.
        AccountExists: The username is taken.
        InvalidInput: The role is not worker, leader, department or admin, or the name is
            empty or too long.
        UnknownCentre: No active centre has this code.
        UnknownDepartment: The department is not there for this centre, or is inactive.
    """
    username = normalise_username(username)
    if role not in STAFF_ROLES:
        raise InvalidInput("role")
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput("name")
    if queries.get_account_by_username(
        session=session, username=username
    ) is not None or queries.find_person(
        session=session, channel=CONSOLE_CHANNEL, external_id=username
    ):
        raise AccountExists(username)
    if centre_code is None:
        centre = queries.default_centre(session=session)
    else:
        found = queries.get_centre_by_code(session=session, code=centre_code.strip())
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
    person = Person(
        channel=CONSOLE_CHANNEL,
        external_id=username,
        display_name=name,
        role=role,
        centre_id=centre.id,
        department_id=department_id,
        created_at=now,
    )
    session.add(person)
    session.flush()
    assert person.id is not None
    account = Account(username=username, person_id=person.id, active=True, created_at=now)
    session.add(account)
    session.flush()
    return issue_setup_link(session, account, now=now)


def issue_setup_link(session: Session, account: Account, *, now: datetime) -> SetupLink:
    """A fresh one-time setup token for `account` (valid SETUP_VALID); any earlier one stops
    working."""
    person = queries.get_person(session=session, person_id=account.person_id)
    assert person is not None
    token = secrets.token_urlsafe(32)
    account.setup_token_hash = hash_token(token)
    account.setup_expires_at = now + SETUP_VALID
    session.add(account)
    session.flush()
    return SetupLink(account, person, token, now + SETUP_VALID)


def account_named(session: Session, username: str) -> Account:
    """The account of a username (any case), locked.

    Raises:
        UnknownAccount: Nobody has it.
    """
    found = queries.get_account_by_username(session=session, username=username.strip().lower())
    if found is None or found.id is None:
        raise UnknownAccount(username)
    locked = queries.get_account(session=session, account_id=found.id, lock=True)
    assert locked is not None
    return locked


def reset_password(session: Session, account: Account, *, now: datetime) -> SetupLink:
    """Clears the password, ends every session and issues a new setup link."""
    account.password_hash = None
    end_all_sessions(session, account, now=now)
    return issue_setup_link(session, account, now=now)


def set_password(
    session: Session, *, token: str, password: str, now: datetime, address: str = ""
) -> Account:
    """Uses a setup link: the password is set, the link is spent, earlier sessions end.

    Raises:
        SetupInvalid: The token is unknown, used or expired, or the account is disabled.
        PasswordRejected: The password breaks a rule (the link stays usable).
    """
    if not token or len(token) > 200:
        raise SetupInvalid()
    account = queries.get_account_by_setup_token(session=session, token_hash=hash_token(token))
    if (
        account is None
        or not account.active
        or account.setup_expires_at is None
        or account.setup_expires_at <= now
    ):
        raise SetupInvalid()
    check_password(password, account.username)
    account.password_hash = HASHER.hash(password)
    account.setup_token_hash = None
    account.setup_expires_at = None
    end_all_sessions(session, account, now=now)
    audit(session, username=account.username, action="console_setup", address=address, at=now)
    return account


def disable(session: Session, account: Account, *, now: datetime) -> list[int]:
    """Makes the account inactive: its sessions and setup link end and its linked chats are
    unlinked. The person's role is taken away by the caller (the path of `redesk people
    revoke`, admin_scripts.manage.revoke_role).

    Returns:
        The ids of the chat identities that were unlinked.
    """
    account.active = False
    account.setup_token_hash = None
    account.setup_expires_at = None
    account.notify_person_id = None
    end_all_sessions(session, account, now=now)
    unlinked: list[int] = []
    for identity in queries.linked_identities(session=session, principal_id=account.person_id):
        assert identity.id is not None
        identity.principal_id = None
        identity.dialogue = None
        session.add(identity)
        unlinked.append(identity.id)
    session.flush()
    return unlinked


def end_all_sessions(session: Session, account: Account, *, now: datetime) -> None:
    """Ends every session of the account ("log out everywhere")."""
    assert account.id is not None
    account.sessions_valid_after = now
    session.add(account)
    queries.end_console_sessions(session=session, account_id=account.id, at=now)
    session.flush()


# --- logins ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedIn:
    """A login that worked: the cookie's token (only its hash is stored) and the session."""

    account: Account
    person: Person
    token: str
    console_session: ConsoleSession


@dataclass(frozen=True)
class LoginFailed:
    """Wrong username or password (answered alike)."""


@dataclass(frozen=True)
class LoginLimited:
    """Too many failed logins for this username or address: when to try again, in seconds."""

    retry_after: int


def _retry_after(times: Sequence[datetime], limit: int, window: timedelta, now: datetime) -> int:
    """Seconds until fewer than `limit` of the failures `times` (oldest first) are in the
    window."""
    free_at = times[len(times) - limit] + window
    return max(1, math.ceil((free_at - now).total_seconds()))


def login(
    session: Session,
    *,
    username: str,
    password: str,
    address: str,
    now: datetime,
    limits: Limits,
) -> LoggedIn | LoginFailed | LoginLimited:
    """Checks a username and password within the limits; a new session when they match.

    Failures are recorded (login_attempts) and audited; once a username has
    `limits.failures_per_username`, or an address `limits.failures_per_address`, failures in
    `limits.window`, attempts are refused without checking the password (and not counted, so
    that the wait does not grow). An unknown username, a disabled account, one without a
    password or without a staff role, and a wrong password are one answer, costing the same
    hash verification.
    """
    typed = username.strip().lower()[:64]
    since = now - limits.window
    waits = []
    by_user = queries.failed_login_times(session=session, since=since, username=typed)
    if len(by_user) >= limits.failures_per_username:
        waits.append(_retry_after(by_user, limits.failures_per_username, limits.window, now))
    by_address = queries.failed_login_times(session=session, since=since, address=address)
    if len(by_address) >= limits.failures_per_address:
        waits.append(_retry_after(by_address, limits.failures_per_address, limits.window, now))
    if waits:
        audit(session, username=typed, action="console_login_limited", address=address, at=now)
        return LoginLimited(max(waits))
    account = queries.get_account_by_username(session=session, username=typed)
    person = (
        queries.get_person(session=session, person_id=account.person_id)
        if account is not None
        else None
    )
    # A disabled account, and one whose person lost their role (`redesk people revoke`), is
    # refused like a wrong password.
    staff = person is not None and person.role in STAFF_ROLES
    stored = account.password_hash if account is not None and account.active and staff else None
    matched = _verify(stored or _dummy_hash(), password) and stored is not None
    if not matched or account is None or person is None or account.id is None:
        queries.add_login_attempt(
            session=session, username=typed, address=address, ok=False, at=now
        )
        audit(session, username=typed, action="console_login_failed", address=address, at=now)
        return LoginFailed()
    assert stored is not None
    if HASHER.check_needs_rehash(stored):
        account.password_hash = HASHER.hash(password)
    account.last_login_at = now
    session.add(account)
    queries.add_login_attempt(session=session, username=typed, address=address, ok=True, at=now)
    token = secrets.token_urlsafe(32)
    row = queries.add_console_session(
        session=session,
        token_hash=hash_token(token),
        account_id=account.id,
        csrf_token=secrets.token_urlsafe(32),
        address=address,
        at=now,
    )
    audit(session, username=account.username, action="console_login", address=address, at=now)
    return LoggedIn(account, person, token, row)


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password[: MAX_PASSWORD * 4])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Live:
    """A live console session with its account and person."""

    console_session: ConsoleSession
    account: Account
    person: Person


def session_of(
    session: Session, *, token: str, now: datetime, limits: Limits, touch: bool = True
) -> Live | None:
    """The live session whose cookie token this is, its last use moved to `now` (unless
    `touch` is false: a check that is no use of the session, e.g. an open page's live
    stream); None when there is none or it is over (ended, idle too long, too old, before a
    "log out everywhere", or of a disabled account). An expired session is marked ended."""
    if not token or len(token) > 200:
        return None
    row = queries.get_console_session(session=session, token_hash=hash_token(token))
    if row is None or row.ended_at is not None:
        return None
    account = queries.get_account(session=session, account_id=row.account_id)
    person = (
        queries.get_person(session=session, person_id=account.person_id)
        if account is not None
        else None
    )
    over = (
        account is None
        or person is None
        or not account.active
        or account.password_hash is None
        or row.last_seen_at + limits.idle <= now
        or row.created_at + limits.absolute <= now
        or (
            account.sessions_valid_after is not None
            and row.created_at < account.sessions_valid_after
        )
    )
    if over or account is None or person is None:
        row.ended_at = now
        session.add(row)
        return None
    if touch:
        row.last_seen_at = now
        session.add(row)
    return Live(row, account, person)


def logout(
    session: Session, live: Live, *, everywhere: bool, now: datetime, address: str = ""
) -> None:
    """Ends this session, or with `everywhere` every session of the account."""
    if everywhere:
        end_all_sessions(session, live.account, now=now)
    else:
        live.console_session.ended_at = now
        session.add(live.console_session)
    audit(
        session,
        username=live.account.username,
        action="console_logout",
        address=address,
        at=now,
        everywhere=everywhere,
    )


def csrf_matches(live: Live, sent: str | None) -> bool:
    """Whether `sent` is the session's CSRF token (compared in constant time)."""
    return bool(sent) and hmac.compare_digest(
        live.console_session.csrf_token.encode(), (sent or "").encode("utf-8", "surrogatepass")
    )


# --- linked chats ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkCode:
    """A one-time 关联聊天账号 code and its expiry."""

    code: str
    expires_at: datetime


def new_link_code(
    session: Session, live: Live, *, now: datetime, limits: Limits, address: str = ""
) -> LinkCode:
    """A code whose `绑定 <code>` in any chat links that chat to the account (an invitation
    with account_id, read like every invitation code)."""
    code = invitations.new_code()
    invitation = queries.add_invitation(
        session=session,
        code=invitations.normalise(code),
        role=live.person.role,
        department_id=None,
        centre_id=live.person.centre_id,
        expires_at=now + limits.link,
    )
    invitation.account_id = live.account.id
    session.add(invitation)
    session.flush()
    audit(
        session,
        username=live.account.username,
        action="console_link_code",
        address=address,
        at=now,
    )
    return LinkCode(code, now + limits.link)


def identities(session: Session, account: Account) -> list[Person]:
    """The chat identities linked to the account, oldest first (with the account's person
    itself when it is a chat identity, e.g. a migrated account)."""
    linked = queries.linked_identities(session=session, principal_id=account.person_id)
    person = queries.get_person(session=session, person_id=account.person_id)
    own = [person] if person is not None and person.channel != CONSOLE_CHANNEL else []
    return own + linked


def set_notify(
    session: Session, live: Live, person_id: int | None, *, now: datetime, address: str = ""
) -> None:
    """Chooses the chat notifications go to (None: the person's own).

    Raises:
        UnknownIdentity: It is not a chat identity linked to this account.
    """
    if person_id is not None and person_id not in {p.id for p in identities(session, live.account)}:
        raise UnknownIdentity(str(person_id))
    live.account.notify_person_id = None if person_id == live.account.person_id else person_id
    session.add(live.account)
    session.flush()
    audit(
        session,
        username=live.account.username,
        action="console_notify",
        address=address,
        at=now,
        person=person_id,
    )


def unlink(
    session: Session, live: Live, person_id: int, *, now: datetime, address: str = ""
) -> Person:
    """Unlinks a chat identity from the account: it is a plain requester's chat again.

    Raises:
        UnknownIdentity: It is not linked to this account.
    """
    identity = queries.get_person(session=session, person_id=person_id, lock=True)
    if identity is None or identity.principal_id != live.account.person_id:
        raise UnknownIdentity(str(person_id))
    identity.principal_id = None
    identity.dialogue = None
    session.add(identity)
    if live.account.notify_person_id == person_id:
        live.account.notify_person_id = None
        session.add(live.account)
    queries.add_event(
        session=session,
        request_id=None,
        actor_id=live.account.person_id,
        action="unlink",
        from_state=None,
        to_state=None,
        note=f"{identity.channel}:{identity.id}",
        at=now,
    )
    session.flush()
    audit(
        session,
        username=live.account.username,
        action="console_unlink",
        address=address,
        at=now,
        person=person_id,
        channel=identity.channel,
    )
    return identity
