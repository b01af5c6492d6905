"""What `redesk staff` does: staff accounts of the console (add, list, disable, reset-password).

The rules live in workflow/accounts.py; this module puts every change on the admin audit log
and raises ManageError subclasses that admin_scripts/cli.py turns into exit codes. Nothing here
commits: the caller's transaction holds a change with its audit row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from admin_scripts.manage import ManageError, audit, revoke_role
from storage import queries
from storage.models import Account, Role
from storage.settings import Settings
from workflow import accounts
from workflow.deadlines import LOCAL_TZ
from workflow.errors import InvalidInput, UnknownCentre, UnknownDepartment


class NoSuchAccount(ManageError):
    """No account has this username (exit 4)."""


class NoSuchPlace(ManageError):
    """The centre or the department named is not there (exit 4)."""


class BadStaffValue(ManageError):
    """A username, name or role typed on the command line is malformed (exit 2)."""


class StaffRefused(ManageError):
    """The change cannot be made (a taken username); why, in a sentence (exit 1)."""


def base_url(settings: Settings) -> str:
    """Where the console is reached: REDESK_PUBLIC_URL, else http://host:port."""
    return settings.public_url or f"http://{settings.host}:{settings.port}"


def setup_url(settings: Settings, token: str) -> str:
    """The one-time link to set a password."""
    return f"{base_url(settings)}/console/setup?token={token}"


def local(value: datetime) -> str:
    """A moment as admins read it: Beijing time to the minute."""
    return value.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


def add(
    session: Session,
    *,
    username: str,
    name: str,
    role: str,
    now: datetime,
    centre: str | None = None,
    department: str | None = None,
) -> accounts.SetupLink:
    """A new staff account and its setup link, on the audit log.

    Raises:
        BadStaffValue: A malformed username, name or role.
        StaffRefused: The username is taken.
        NoSuchPlace: No active centre has this code, or the department is not there.
    """
    try:
        link = accounts.create_staff(
            session,
            username=username,
            name=name,
            role=role,
            now=now,
            centre_code=centre,
            department_name=department,
        )
    except accounts.BadUsername:
        raise BadStaffValue(
            f"USERNAME {username!r} must be 2 to 64 of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or a digit."
        ) from None
    except accounts.AccountExists:
        raise StaffRefused(f"The username {username.strip().lower()!r} is taken.") from None
    except InvalidInput as exc:
        if exc.what == "role":
            raise BadStaffValue(
                f"--role must be one of {', '.join(accounts.STAFF_ROLES)}."
            ) from None
        raise BadStaffValue(f"--name must be 1 to {accounts.MAX_NAME} characters.") from None
    except UnknownCentre:
        raise NoSuchPlace(
            f"No active centre has the code {(centre or '').strip()!r} (see `redesk centres list`)."
        ) from None
    except UnknownDepartment:
        where = f" for the centre {centre.strip()}" if centre else ""
        raise NoSuchPlace(
            f"No active department is called {department!r}{where} (see `redesk departments list`)."
        ) from None
    audit(
        session,
        action="staff_add",
        at=now,
        detail={
            "username": link.account.username,
            "person": link.person.id,
            "name": link.person.display_name,
            "role": role,
            "centre": link.person.centre_id,
            "department": link.person.department_id,
        },
    )
    return link


@dataclass(frozen=True)
class StaffRow:
    """One line of `redesk staff list`."""

    username: str
    name: str
    role: str
    centre: str
    department: str
    active: bool
    password_set: bool
    linked: list[str] = field(default_factory=list)
    last_login: str = ""


def list_staff(session: Session) -> list[StaffRow]:
    """Every account with its person, by username."""
    centres = {c.id: c.code for c in queries.list_centres(session=session)}
    departments = {
        d.id: d.name for d in queries.list_departments(session=session, active_only=False)
    }
    rows = []
    for account, person in queries.list_accounts(session=session):
        linked = [
            f"{p.channel}:{p.display_name or p.external_id}"
            for p in accounts.identities(session, account)
        ]
        rows.append(
            StaffRow(
                username=account.username,
                name=person.display_name,
                role=person.role,
                centre=centres.get(person.centre_id, "") if person.centre_id else "",
                department=departments.get(person.department_id, "")
                if person.department_id
                else "",
                active=account.active,
                password_set=account.password_hash is not None,
                linked=linked,
                last_login=local(account.last_login_at) if account.last_login_at else "",
            )
        )
    return rows


def _account(session: Session, username: str) -> Account:
    try:
        return accounts.account_named(session, username)
    except accounts.UnknownAccount:
        raise NoSuchAccount(
            f"No account has the username {username.strip().lower()!r} (see `redesk staff list`)."
        ) from None


@dataclass(frozen=True)
class Disabled:
    """What `redesk staff disable` did."""

    username: str
    #: False when the account was inactive already (nothing changed).
    changed: bool
    unlinked: list[int] = field(default_factory=list)
    role: str = ""
    released: list[str] = field(default_factory=list)
    #: Outbox rows to deliver after the commit (the workers told of released requests).
    outbox: list[int] = field(default_factory=list)


def disable(session: Session, *, username: str, now: datetime) -> Disabled:
    """Makes an account inactive: its sessions end, its chats are unlinked and its person's
    role is taken away as `redesk people revoke` does (held requests back to 待受理).

    Raises:
        NoSuchAccount: Nobody has this username.
    """
    account = _account(session, username)
    if not account.active:
        return Disabled(account.username, changed=False)
    unlinked = accounts.disable(session, account, now=now)
    person = queries.get_person(session=session, person_id=account.person_id)
    assert person is not None
    role = person.role
    released: list[str] = []
    outbox: list[int] = []
    if role != Role.REQUESTER:
        done = revoke_role(session=session, who=str(account.person_id), role=None, now=now)
        released, outbox = done.released, done.outbox
    audit(
        session,
        action="staff_disable",
        at=now,
        detail={
            "username": account.username,
            "person": account.person_id,
            "role": role,
            "unlinked": unlinked,
            "released": released,
        },
    )
    return Disabled(account.username, True, unlinked, role, released, outbox)


def reset_password(session: Session, *, username: str, now: datetime) -> accounts.SetupLink:
    """Clears an account's password, ends its sessions and makes a new setup link.

    Raises:
        NoSuchAccount: Nobody has this username.
        StaffRefused: The account is disabled.
    """
    account = _account(session, username)
    if not account.active:
        raise StaffRefused(f"The account {account.username!r} is disabled.")
    link = accounts.reset_password(session, account, now=now)
    audit(
        session,
        action="staff_reset_password",
        at=now,
        detail={"username": account.username, "person": account.person_id},
    )
    return link
