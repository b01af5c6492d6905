"""What `redesk centres` does: the tree of service centres (1+10+N), its imports, moves and days
off, and each centre's entry points (web link, Telegram deep link, WeChat QR scene).

The rules live here; admin_scripts/cli.py turns the errors raised here into exit codes and
prints the results. Nothing here commits: the caller's transaction holds a whole import or a
whole move of a subtree, so it lands entirely or not at all. Every change is put on the admin
audit log.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from admin_scripts.manage import (
    BadRow,
    BadRows,
    ImportResult,
    ManageError,
    Row,
    _text,
    audit,
    read_rows,
)
from storage import queries
from storage.dates import parse_date
from storage.models import Centre, CentreLevel, Role
from storage.settings import Settings
from workflow.machine import TERMINAL

#: What a centre's code may be: letters, digits and "-", 1 to 32 of them.
CODE_PATTERN = re.compile(r"[A-Za-z0-9-]{1,32}")
#: Longest centre name (the column's size).
MAX_NAME = 100

#: English words accepted for the levels, beside the Chinese ones (any case).
LEVEL_ALIASES: dict[str, CentreLevel] = {
    "city": CentreLevel.CITY,
    "district": CentreLevel.DISTRICT,
    "street": CentreLevel.STREET,
    "community": CentreLevel.COMMUNITY,
    "business": CentreLevel.BUSINESS,
    "building": CentreLevel.BUILDING,
    "park": CentreLevel.PARK,
    "market": CentreLevel.MARKET,
}

#: Fields of a centre in an import file.
CENTRE_FIELDS = ("code", "name", "level", "parent", "days_off")

#: What separates dates in a CSV cell of days_off (or a YAML string).
DATE_SEPARATORS = re.compile(r"[|、,，\s]+")

#: Roles counted as a centre's staff in `redesk centres list`.
STAFF_ROLES = (Role.WORKER, Role.LEADER, Role.DEPARTMENT, Role.GROUP)

#: States in which a request is finished.
FINISHED = tuple(state.value for state in TERMINAL)


class NoSuchCentre(ManageError):
    """No centre has this code (exit 4)."""


class CentreRefused(ManageError):
    """The change would break the tree or leave something without a centre; why, in a
    sentence (exit 1)."""


class BadValue(ManageError):
    """A value typed on the command line is malformed (exit 2)."""


# --- values ---------------------------------------------------------------------------------


def level_names() -> str:
    """The levels as the help and the errors list them."""
    return ", ".join(f"{level.value} ({alias})" for alias, level in LEVEL_ALIASES.items())


def parse_level(value: str) -> str | None:
    """The level's Chinese word from the word or its English alias; None when neither."""
    text = value.strip()
    for level in CentreLevel:
        if text == level.value:
            return level.value
    alias = LEVEL_ALIASES.get(text.lower())
    return alias.value if alias is not None else None


def code_problem(code: str) -> str | None:
    """Why `code` cannot be a centre's code, or None when it can."""
    if not CODE_PATTERN.fullmatch(code):
        return f"code must be 1 to 32 letters, digits or '-', not {code!r}"
    return None


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a centre's name, or None when it can."""
    if not name.strip():
        return "name is missing"
    if len(name.strip()) > MAX_NAME:
        return f"name is longer than {MAX_NAME} characters"
    return None


def find(session: Session, code: str) -> Centre:
    """The centre with this code (any case).

    Raises:
        NoSuchCentre: None has it.
    """
    centre = queries.get_centre_by_code(session=session, code=code)
    if centre is None:
        raise NoSuchCentre(f"No centre has the code {code.strip()!r} (see `redesk centres list`).")
    return centre


def label(centre: Centre) -> str:
    """A centre as messages name it: "城东社区 (chengdong)"."""
    return f"{centre.name} ({centre.code})"


# --- add ------------------------------------------------------------------------------------


def add(
    *, session: Session, code: str, name: str, level: str, parent: str | None, now: datetime
) -> Centre:
    """A new centre under `parent` (a code; None: a top centre).

    Raises:
        BadValue: The code, name or level is malformed.
        CentreRefused: The code is taken (in any case), or the parent is inactive.
        NoSuchCentre: No centre has the parent's code.
    """
    code = code.strip()
    for problem in (code_problem(code), name_problem(name)):
        if problem is not None:
            raise BadValue(problem[0].upper() + problem[1:] + ".")
    chosen = parse_level(level)
    if chosen is None:
        raise BadValue(f"--level must be one of {level_names()}, not {level!r}.")
    taken = queries.get_centre_by_code(session=session, code=code)
    if taken is not None:
        raise CentreRefused(f"The code {code!r} is taken by {label(taken)}; codes are unique.")
    above = None
    if parent is not None:
        above = find(session, parent)
        if not above.active:
            raise CentreRefused(f"The parent {label(above)} is inactive.")
    centre = queries.add_centre(
        session=session, code=code, name=name.strip(), level=chosen, parent=above
    )
    audit(
        session,
        action="centres_add",
        at=now,
        detail={
            "centre": centre.code,
            "name": centre.name,
            "level": centre.level,
            "parent": above.code if above else None,
        },
    )
    return centre


# --- list -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CentreLine:
    """One centre as `redesk centres list` shows it."""

    #: How far below a top centre it is (0: a top centre).
    depth: int
    code: str
    name: str
    level: str
    active: bool
    is_default: bool
    #: Requests it holds that are not finished.
    open_requests: int
    #: Workers, leaders, department staff and group chats in it.
    staff: int
    days_off: list[str]


def tree(*, session: Session) -> list[CentreLine]:
    """Every centre, parents before children, with its open requests and staff."""
    open_requests = queries.open_requests_by_centre(session=session, excluded=FINISHED)
    staff = queries.people_by_centre(session=session, roles=STAFF_ROLES)
    return [
        CentreLine(
            len(queries.path_ids(centre.path)) - 1,
            centre.code,
            centre.name,
            centre.level,
            centre.active,
            centre.is_default,
            open_requests.get(centre.id or 0, 0),
            staff.get(centre.id or 0, 0),
            list(centre.days_off),
        )
        for centre in queries.list_centres(session=session)
    ]


# --- import ---------------------------------------------------------------------------------


def _days_off(row: Row, reasons: list[str]) -> list[str] | None:
    """ISO dates from a list, or from text separated by |, 、, commas or spaces; None: absent
    or empty (an existing centre keeps its days off)."""
    value = row.fields.get("days_off")
    if value is None:
        return None
    items: list[Any]
    if isinstance(value, str):
        items = [item for item in DATE_SEPARATORS.split(value) if item]
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    days: list[str] = []
    for item in items:
        try:
            days.append(parse_date(str(item)).isoformat())
        except ValueError as exc:
            reasons.append(f"days_off {exc}")
    return sorted(set(days))


def import_centres(*, session: Session, path: Path, now: datetime) -> ImportResult:
    """Adds the file's new centres, parents first, and updates the name, level and days off of
    those that exist (matched by code, in any case).

    A row's parent is a centre that exists already or one on an earlier row. Every row is
    checked before anything changes.

    Raises:
        UnknownFileType, FileMissing, UnreadableFile, BadRows.
    """
    rows = read_rows(path, CENTRE_FIELDS, required=("code", "name", "level"))
    #: Codes of the file (lower case) -> the line they are on.
    seen: dict[str, int] = {}
    planned: list[tuple[str, str | None, dict[str, Any]]] = []
    bad: list[BadRow] = []
    later = {
        str(row.fields["code"]).strip().lower(): row.line
        for row in reversed(rows)
        if not row.broken and row.fields.get("code") is not None
    }
    for row in rows:
        reasons = list(row.problems)
        if row.broken:
            bad.append(BadRow(row.line, reasons))
            continue
        code = _text(row, "code", reasons)
        if code is None:
            reasons.append("code is missing")
        elif (problem := code_problem(code)) is not None:
            reasons.append(problem)
            code = None
        elif code.lower() in seen:
            reasons.append(f"{code} appears twice in the file (first on line {seen[code.lower()]})")
            code = None
        else:
            seen[code.lower()] = row.line
        name = _text(row, "name", reasons)
        if name is None:
            reasons.append("name is missing")
        elif (problem := name_problem(name)) is not None:
            reasons.append(problem)
        level_text = _text(row, "level", reasons)
        level = parse_level(level_text) if level_text is not None else None
        if level_text is None:
            reasons.append("level is missing")
        elif level is None:
            reasons.append(f"level must be one of {level_names()}, not {level_text!r}")
        parent = _text(row, "parent", reasons)
        existing = queries.get_centre_by_code(session=session, code=code) if code else None
        if parent is not None:
            reasons.extend(_parent_problems(session, code, parent, seen, later, existing))
        elif existing is not None and existing.parent_id is not None:
            reasons.append(_moved(session, existing))
        days = _days_off(row, reasons)
        if reasons:
            bad.append(BadRow(row.line, reasons))
        elif code is not None:
            changes: dict[str, Any] = {"name": name, "level": level}
            if days is not None:
                changes["days_off"] = days
            planned.append((code, parent, changes))
    if bad:
        raise BadRows(bad, len(rows))
    result = ImportResult()
    made: dict[str, Centre] = {}
    for code, parent, changes in planned:
        centre = queries.get_centre_by_code(session=session, code=code)
        if centre is None:
            above = None
            if parent is not None:
                above = made.get(parent.lower()) or queries.get_centre_by_code(
                    session=session, code=parent
                )
            centre = queries.add_centre(
                session=session,
                code=code,
                name=changes["name"],
                level=changes["level"],
                parent=above,
            )
            centre.days_off = changes.get("days_off", [])
            session.add(centre)
            result.added.append(code)
        elif any(getattr(centre, key) != value for key, value in changes.items()):
            for key, value in changes.items():
                setattr(centre, key, value)
            session.add(centre)
            result.updated.append(code)
        else:
            result.unchanged.append(code)
        made[code.lower()] = centre
    session.flush()
    audit(
        session,
        action="centres_import",
        at=now,
        detail={"file": str(path), "added": result.added, "updated": result.updated},
    )
    return result


def _parent_problems(
    session: Session,
    code: str | None,
    parent: str,
    seen: dict[str, int],
    later: dict[str, int],
    existing: Centre | None,
) -> list[str]:
    """What is wrong with a row's parent (nothing: an empty list)."""
    key = parent.lower()
    if code is not None and key == code.lower():
        return [f"parent {parent} is the centre itself"]
    found = queries.get_centre_by_code(session=session, code=parent)
    if found is None:
        if key in seen:
            # A new centre of an earlier row: fine for a new centre, not for an existing one.
            return [] if existing is None else [_moved(session, existing)]
        if key in later:
            return [
                f"parent {parent} is defined later, on line {later[key]}; put parents "
                "before their children"
            ]
        return [f"parent {parent} does not exist (see `redesk centres list`)"]
    if not found.active:
        return [f"parent {label(found)} is inactive"]
    if existing is not None and existing.parent_id != found.id:
        return [_moved(session, existing)]
    return []


def _moved(session: Session, existing: Centre) -> str:
    """The reason given when a row would move an existing centre."""
    now_under = (
        queries.get_centre(session=session, centre_id=existing.parent_id)
        if existing.parent_id is not None
        else None
    )
    where = f"under {now_under.code}" if now_under else "a top centre"
    return (
        f"{existing.code} exists already, {where}; an import does not move centres: use "
        f"`redesk centres edit {existing.code} --parent ...`"
    )


# --- deactivate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deactivated:
    """A centre switched off."""

    code: str
    name: str
    #: False when it was inactive already (nothing changed).
    changed: bool
    #: Its staff, who keep their role (their codes and cards of new requests stop).
    staff: int


def deactivate(*, session: Session, code: str, now: datetime) -> Deactivated:
    """Marks a centre inactive: its links and QR code no longer lead to it, no request is sent
    or assigned to it, and no new staff can join it.

    Raises:
        NoSuchCentre: No centre has this code.
        CentreRefused: It is the default centre, has active centres below it, or holds
            requests that are not finished.
    """
    centre = find(session, code)
    assert centre.id is not None
    if centre.is_default:
        raise CentreRefused(
            f"{label(centre)} is the default centre, which holds what comes in without a "
            "centre; it cannot be deactivated."
        )
    children = queries.child_centres(session=session, parent_id=centre.id, active_only=True)
    if children:
        names = "、".join(label(child) for child in children)
        raise CentreRefused(
            f"{label(centre)} has {len(children)} active centres below it ({names}); "
            "deactivate or move them first."
        )
    holding = queries.open_requests_by_centre(session=session, excluded=FINISHED).get(centre.id, 0)
    if holding:
        raise CentreRefused(
            f"{label(centre)} holds {holding} requests that are not finished; finish them or "
            "send them to another centre (上报/下派) first."
        )
    staff = queries.people_by_centre(session=session, roles=STAFF_ROLES).get(centre.id, 0)
    if not centre.active:
        return Deactivated(centre.code, centre.name, False, staff)
    centre.active = False
    session.add(centre)
    audit(session, action="centres_deactivate", at=now, detail={"centre": centre.code})
    return Deactivated(centre.code, centre.name, True, staff)


# --- edit -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edited:
    """What `redesk centres edit` changed."""

    code: str
    #: field -> (before, after), only what changed.
    changes: dict[str, tuple[Any, Any]]
    #: Centres whose path was rewritten by a move (the centre and its whole subtree).
    moved: int = 0


def edit(
    *,
    session: Session,
    code: str,
    name: str | None = None,
    new_code: str | None = None,
    level: str | None = None,
    parent: str | None = None,
    now: datetime,
) -> Edited:
    """Changes a centre's name, code, level or parent. A move rewrites the paths of the
    centre's whole subtree in the caller's transaction.

    Raises:
        NoSuchCentre: No centre has `code` or `parent`.
        BadValue: Nothing to change, or a malformed name, code or level.
        CentreRefused: The new code is taken; the new parent is the centre itself, below it
            (a cycle) or inactive.
    """
    if name is None and new_code is None and level is None and parent is None:
        raise BadValue("Nothing to change: give --name, --code, --level or --parent.")
    centre = find(session, code)
    changes: dict[str, tuple[Any, Any]] = {}
    if name is not None:
        problem = name_problem(name)
        if problem is not None:
            raise BadValue(f"--name: {problem}.")
        if name.strip() != centre.name:
            changes["name"] = (centre.name, name.strip())
    if new_code is not None:
        new_code = new_code.strip()
        problem = code_problem(new_code)
        if problem is not None:
            raise BadValue(f"--code: {problem}.")
        taken = queries.get_centre_by_code(session=session, code=new_code)
        if taken is not None and taken.id != centre.id:
            raise CentreRefused(f"The code {new_code!r} is taken by {label(taken)}.")
        if new_code != centre.code:
            changes["code"] = (centre.code, new_code)
    if level is not None:
        chosen = parse_level(level)
        if chosen is None:
            raise BadValue(f"--level must be one of {level_names()}, not {level!r}.")
        if chosen != centre.level:
            changes["level"] = (centre.level, chosen)
    moved = 0
    if parent is not None:
        above = find(session, parent)
        if above.id == centre.id:
            raise CentreRefused(f"{label(centre)} cannot be its own parent.")
        if above.path.startswith(centre.path):
            raise CentreRefused(
                f"{label(above)} is below {label(centre)}: moving it there would make a cycle."
            )
        if not above.active and centre.active:
            raise CentreRefused(f"The parent {label(above)} is inactive.")
        if above.id != centre.parent_id:
            before = queries.get_centre(session=session, centre_id=centre.parent_id or 0)
            changes["parent"] = (before.code if before else None, above.code)
            moved = _move(session, centre, above)
    for key in ("name", "code", "level"):
        if key in changes:
            setattr(centre, key, changes[key][1])
    session.add(centre)
    session.flush()
    if changes:
        audit(
            session,
            action="centres_edit",
            at=now,
            detail={
                "centre": centre.code,
                "changes": {key: list(pair) for key, pair in changes.items()},
                "moved": moved,
            },
        )
    return Edited(centre.code, changes, moved)


def _move(session: Session, centre: Centre, parent: Centre) -> int:
    """Puts `centre` under `parent`, rewriting the path of every centre in its subtree."""
    old = centre.path
    new = f"{parent.path}{centre.id}/"
    subtree = queries.subtree_centres(session=session, centre=centre, lock=True)
    for member in subtree:
        member.path = new + member.path[len(old) :]
        session.add(member)
    centre.parent_id = parent.id
    session.add(centre)
    return len(subtree)


# --- days off -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaysOff:
    """A centre's own days off after `redesk centres days-off`."""

    code: str
    days: list[str]
    #: The days of the command that changed something.
    changed: list[str] = field(default_factory=list)
    #: The days off the centres above it add (inherited).
    inherited: list[str] = field(default_factory=list)


def days_off(
    *, session: Session, code: str, action: str, dates: list[str], now: datetime
) -> DaysOff:
    """Lists, adds or removes a centre's days off (inherited by its whole subtree).

    Raises:
        NoSuchCentre: No centre has this code.
        BadValue: An unknown action, a date that is not one, no date to add or remove, or
            dates given to list.
    """
    if action not in ("add", "remove", "list"):
        raise BadValue(f"The action must be add, remove or list, not {action!r}.")
    if action == "list" and dates:
        raise BadValue("list takes no dates.")
    if action != "list" and not dates:
        raise BadValue(f"Name the dates to {action}, YYYY-MM-DD.")
    days: list[str] = []
    for text in dates:
        try:
            days.append(parse_date(text).isoformat())
        except ValueError as exc:
            raise BadValue(f"DATE {exc}.") from None
    centre = find(session, code)
    current = set(centre.days_off)
    if action == "add":
        changed = sorted(set(days) - current)
        current |= set(days)
    elif action == "remove":
        changed = sorted(set(days) & current)
        current -= set(days)
    else:
        changed = []
    if changed:
        centre.days_off = sorted(current)
        session.add(centre)
        audit(
            session,
            action=f"centres_days_off_{action}",
            at=now,
            detail={"centre": centre.code, "days": changed},
        )
        # The reminders of the subtree's open requests move with the calendar: the next tick
        # looks at each again (workflow/reminders.py).
        queries.look_again(
            session=session,
            now=now,
            excluded=[state.value for state in TERMINAL],
            condition=queries.subtree_condition(centre),
        )
    inherited: set[str] = set()
    for ancestor_id in queries.ancestor_ids(centre)[1:]:
        ancestor = queries.get_centre(session=session, centre_id=ancestor_id)
        if ancestor is not None:
            inherited |= set(ancestor.days_off)
    return DaysOff(centre.code, sorted(current), changed, sorted(inherited - current))


# --- entry points ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Links:
    """Every way into a centre."""

    code: str
    name: str
    active: bool
    web: str
    #: The Telegram deep link; None when Telegram is off or its bot's name is unknown.
    telegram: str | None
    #: Why there is no Telegram link (empty when there is one).
    telegram_note: str
    #: The scene of the centre's WeChat QR code (EventKey qrscene_<scene> or <scene>).
    wechat_scene: str
    #: Whether WeChat is on.
    wechat_on: bool
    #: The command that makes the poster's QR code.
    qrcode_command: str


def links(*, session: Session, code: str, settings: Settings) -> Links:
    """The web link, Telegram deep link and WeChat QR scene of a centre.

    The web link is on REDESK_PUBLIC_URL, else on the address `redesk run` listens on. The
    Telegram bot's username is REDESK_TELEGRAM_BOT_USERNAME, else asked of Telegram (getMe).

    Raises:
        NoSuchCentre: No centre has this code.
    """
    from bot.channels.telegram.settings import telegram_settings
    from bot.channels.wechat.settings import wechat_settings

    centre = find(session, code)
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    telegram = None
    note = ""
    own = telegram_settings(settings)
    if not own.enabled:
        note = "Telegram is off: REDESK_TELEGRAM_TOKEN is not set"
    else:
        username = (own.bot_username or "").strip().lstrip("@")
        if not username:
            from bot.channels.telegram.client import check_token

            try:
                username = str(check_token(settings).get("username") or "")
            except ValueError as exc:
                note = f"the bot's username is unknown: {exc}; set REDESK_TELEGRAM_BOT_USERNAME"
            else:
                if not username:
                    note = "Telegram gave no username for the bot"
        if username:
            telegram = f"https://t.me/{username}?start={centre.code}"
    return Links(
        centre.code,
        centre.name,
        centre.active,
        f"{base}/desk?centre={centre.code}",
        telegram,
        note,
        centre.code,
        wechat_settings(settings).enabled,
        f"redesk centres qrcode {centre.code} --out {centre.code}.png",
    )


# --- QR code --------------------------------------------------------------------------------


#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class NotAnImage(ManageError):
    """What WeChat answered for the QR code is no image."""


def as_png(data: bytes) -> bytes:
    """The image as PNG bytes (WeChat's showqrcode answers a JPEG; a PNG is kept as it is).

    Raises:
        NotAnImage: The bytes are no image Pillow can read.
    """
    if data.startswith(PNG_SIGNATURE):
        return data
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError):
        raise NotAnImage(
            f"WeChat answered {len(data)} bytes that are no image (PNG or JPEG)"
        ) from None


def record_qrcode(
    *, session: Session, centre: Centre, ticket: str, url: str | None, out: Path, now: datetime
) -> None:
    """Puts a permanent QR code made for a centre on the admin audit log."""
    audit(
        session,
        action="centres_qrcode",
        at=now,
        detail={"centre": centre.code, "ticket": ticket, "url": url, "file": str(out)},
    )
