"""What `redesk departments|categories|people|inbox` do: file imports, deactivation, roles,
failed inbox rows.

The rules live here (what a good row is, what revoking a role does); admin_scripts/cli.py turns
the errors raised here into exit codes and prints the results. Nothing here commits: the
caller's transaction holds a whole import, so a file lands entirely or not at all.
"""

from __future__ import annotations

import csv
import io
import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import Session

from storage import queries
from storage.models import (
    AdminAudit,
    Category,
    Centre,
    Department,
    DepartmentKind,
    InboxStatus,
    Person,
    Role,
    Route,
)
from workflow import service
from workflow.deadlines import format_local

#: The file types an import reads, by extension.
CSV_SUFFIXES = (".csv",)
YAML_SUFFIXES = (".yaml", ".yml")

#: Fields of a department in an import file.
DEPARTMENT_FIELDS = ("name", "kind", "resolution_days", "active", "centre")
#: Fields of a category in an import file.
CATEGORY_FIELDS = (
    "name",
    "keywords",
    "route",
    "department",
    "response_hours",
    "resolution_days",
    "urgent",
    "fallback",
)

#: Longest deadlines an import accepts. Deadlines are counted one working day at a time, and
#: the columns are 32-bit integers on PostgreSQL, so an absurd number must stop here.
MAX_RESOLUTION_DAYS = 365
MAX_RESPONSE_HOURS = 2000
#: Longest department or category name (the columns' size).
MAX_NAME = 100

#: Words read as yes and no (any case).
YES = frozenset({"yes", "y", "true", "1", "on", "是"})
NO = frozenset({"no", "n", "false", "0", "off", "否"})
#: What separates keywords in a CSV cell (or a YAML string).
KEYWORD_SEPARATORS = re.compile(r"[|、]")

#: Request states in which a department holds a request.
DEPARTMENT_STATES = ("forwarded", "dept_handling")
#: Roles `redesk people list --role` can show.
ROLES = (Role.WORKER, Role.LEADER, Role.DEPARTMENT, Role.GROUP, Role.REQUESTER)
#: Roles `redesk people revoke` can take away.
REVOCABLE = (Role.WORKER, Role.LEADER, Role.DEPARTMENT, Role.GROUP)


class ManageError(Exception):
    """Base class for the errors of the admin verbs."""


class FileMissing(ManageError):
    """The file to import does not exist."""


class UnknownFileType(ManageError):
    """The file's extension is neither .csv nor .yaml/.yml."""


class UnreadableFile(ManageError):
    """The file as a whole cannot be read (not UTF-8, not YAML, no usable header)."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


@dataclass(frozen=True)
class BadRow:
    """One row that cannot be imported: its line in the file and why, in plain words."""

    line: int
    reasons: list[str]


class BadRows(ManageError):
    """Some rows are bad; nothing was imported."""

    def __init__(self, rows: list[BadRow], total: int) -> None:
        super().__init__(f"{len(rows)} of {total} rows are bad")
        self.rows = rows
        self.total = total


class ImportConflict(ManageError):
    """The import would leave the database inconsistent in a way no single row explains."""


class UnknownName(ManageError):
    """No department, or no person, goes by this name or id."""


class UnknownInbox(ManageError):
    """No inbox row has this id."""


class NotFailed(ManageError):
    """The inbox row is not failed; there is nothing to retry."""


class StillUnparseable(ManageError):
    """The update still cannot be parsed, and has no chat to be handled in."""


class AmbiguousName(ManageError):
    """Several people go by this name; the candidates are named in the message."""


@dataclass
class Row:
    """One item of an import file.

    `fields` holds only what the row gives: a CSV column it has (an empty cell is None) or a
    YAML key it has (null is None). `problems` are what reading it found wrong already.
    """

    line: int
    fields: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    #: Not a row at all (a YAML item that is not a mapping): its problems say all there is.
    broken: bool = False


@dataclass
class ImportResult:
    """The names an import added, changed and left as they were."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


#: Environment variables that name a login, in the order getpass reads them. Anyone can set
#: them, so the audit only records them beside the account the real uid belongs to.
LOGIN_VARIABLES: tuple[str, ...] = ("LOGNAME", "USER", "LNAME", "USERNAME")


def admin_user() -> str:
    """The operating-system account running the command, from its real uid.

    Not from $LOGNAME or $USER, which whoever runs the command can set to any name. A uid
    without a passwd entry (some containers) is recorded as "uid <n>".
    """
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def claimed_users() -> dict[str, str]:
    """The login variables that name someone other than `admin_user()` (empty when none do)."""
    actual = admin_user()
    return {
        name: value
        for name in LOGIN_VARIABLES
        if (value := os.environ.get(name)) is not None and value != actual
    }


def audit(session: Session, *, action: str, detail: dict[str, Any], at: datetime) -> AdminAudit:
    """Puts an admin action on record under the real account; the row (with its id).

    When $LOGNAME, $USER and the like name someone else, the detail records them too
    ("claimed_users"), so that the record shows both.
    """
    claimed = claimed_users()
    return queries.audit_admin_action(
        session=session,
        actor=admin_user(),
        action=action,
        at=at,
        detail={**detail, "claimed_users": claimed} if claimed else detail,
    )


# --- reading files --------------------------------------------------------------------------


def read_rows(path: Path, fields: Sequence[str], required: Sequence[str] = ("name",)) -> list[Row]:
    """The items of a CSV (header on line 1) or YAML (a list) file, with their line numbers.

    Raises:
        UnknownFileType: Not .csv, .yaml or .yml.
        FileMissing: No file there.
        UnreadableFile: Not UTF-8, not valid YAML, or a CSV header that does not fit.
    """
    check_file(path)
    data = path.read_bytes()
    try:
        # utf-8-sig drops the byte-order mark Excel writes at the start of "CSV UTF-8".
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UnreadableFile(
            'the file is not UTF-8 (in Excel, save it as "CSV UTF-8")', line
        ) from None
    if path.suffix.lower() in CSV_SUFFIXES:
        return _read_csv(text, fields, required)
    return _read_yaml(text, fields)


def check_file(path: Path) -> None:
    """Whether `path` is a file an import can read, by its extension and existence.

    Raises:
        UnknownFileType: Not .csv, .yaml or .yml.
        FileMissing: No file there.
    """
    if path.suffix.lower() not in CSV_SUFFIXES + YAML_SUFFIXES:
        raise UnknownFileType(f"{path.name}: the file must be .csv, .yaml or .yml")
    if path.is_dir():
        raise FileMissing(f"{str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise FileMissing(f"there is no file {str(path)!r}")


def _read_csv(text: str, fields: Sequence[str], required: Sequence[str]) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [cell.strip().lower() for cell in next(reader)]
    except StopIteration:
        raise UnreadableFile(
            f"the file is empty; line 1 must be the header ({', '.join(fields)})", 1
        ) from None
    known = ", ".join(fields)
    for column in header:
        if column == "":
            continue  # Excel may leave empty columns; a value under one is a bad row
        if column not in fields:
            raise UnreadableFile(f"unknown column {column!r} in the header (columns: {known})", 1)
        if header.count(column) > 1:
            raise UnreadableFile(f"column {column!r} appears twice in the header", 1)
    for column in required:
        if column not in header:
            raise UnreadableFile(f"the header has no {column} column (columns: {known})", 1)
    rows: list[Row] = []
    end = reader.line_num
    try:
        for cells in reader:
            # A row starts on the line after the previous one ended (quoted cells span lines).
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                rows.append(_csv_row(start, header, cells))
    except csv.Error as exc:
        raise UnreadableFile(f"this is not valid CSV: {exc}", reader.line_num) from None
    return rows


def _csv_row(line: int, header: list[str], cells: list[str]) -> Row:
    row = Row(line, {})
    for index, column in enumerate(header):
        cell = cells[index].strip() if index < len(cells) else ""
        if column:
            row.fields[column] = cell or None
        elif cell:
            row.problems.append(
                f"{cell!r} is in column {index + 1}, which has no name in the header"
            )
    if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
        row.problems.append(f"it has {len(cells)} cells but the header has {len(header)} columns")
    return row


def _read_yaml(text: str, fields: Sequence[str]) -> list[Row]:
    try:
        # compose keeps every node's position, so each item can be reported by its line.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = f"this is not valid YAML: {exc.problem or exc.context}"
        if exc.problem and exc.context and exc.context_mark:
            reason += f" ({exc.context} from line {exc.context_mark.line + 1})"
        raise UnreadableFile(reason, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise UnreadableFile(f"this is not valid YAML: {exc}") from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise UnreadableFile(
            'the file must be a list, one item per entry starting with "- "',
            root.start_mark.line + 1,
        )
    constructor = yaml.SafeLoader("")
    rows: list[Row] = []
    for item in root.value:
        row = Row(item.start_mark.line + 1, {})
        rows.append(row)
        if not isinstance(item, yaml.MappingNode):
            row.problems.append('it is not a set of "field: value" lines')
            row.broken = True
            continue
        for key_node, value_node in item.value:
            key = str(key_node.value).strip().lower()
            if key not in fields:
                row.problems.append(f"unknown field {key!r} (fields: {', '.join(fields)})")
            elif key in row.fields:
                row.problems.append(f"{key} is given twice")
            else:
                row.fields[key] = constructor.construct_object(value_node, deep=True)
    return rows


# --- reading values -------------------------------------------------------------------------


def _text(row: Row, name: str, reasons: list[str]) -> str | None:
    """A text field, stripped; None when absent or empty."""
    value = row.fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        reasons.append(f"{name} must be text, not {value!r}")
        return None
    return str(value).strip() or None


def _name(row: Row, reasons: list[str], seen: dict[str, int]) -> str | None:
    before = len(reasons)
    name = _text(row, "name", reasons)
    if name is None:
        if len(reasons) == before:  # not already said to be malformed
            reasons.append("name is missing")
        return None
    if len(name) > MAX_NAME:
        reasons.append(f"name is longer than {MAX_NAME} characters")
        return None
    if name in seen:
        reasons.append(f"{name} appears twice in the file (first on line {seen[name]})")
        return None
    seen[name] = row.line
    return name


def _number(row: Row, name: str, reasons: list[str], maximum: int) -> int | None:
    """A whole number from 0 to `maximum`; None when absent, empty or bad (bad adds a reason)."""
    value = row.fields.get(name)
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        number = int(value)
    if number is None:
        reasons.append(f"{name} must be a whole number, not {value!r}")
    elif number < 0:
        reasons.append(f"{name} must be 0 or more, not {number}")
    elif number > maximum:
        reasons.append(f"{name} must be at most {maximum}, not {number}")
    else:
        return number
    return None


def _flag(row: Row, name: str, reasons: list[str]) -> bool | None:
    """yes/no (true/false, 1/0, 是/否); None when absent, empty or bad (bad adds a reason)."""
    value = row.fields.get(name)
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in YES:
        return True
    if word in NO:
        return False
    reasons.append(f"{name} must be yes or no, not {value!r}")
    return None


def _keywords(row: Row, reasons: list[str]) -> list[str] | None:
    """Keywords from a list, or from text separated by | or 、; None when absent."""
    if "keywords" not in row.fields:
        return None
    value = row.fields["keywords"]
    if value is None:
        return []
    if isinstance(value, str):
        words = KEYWORD_SEPARATORS.split(value)
    elif isinstance(value, list) and all(isinstance(word, str | int) for word in value):
        words = [str(word) for word in value]
    else:
        reasons.append("keywords must be a list of words, or words separated by | or 、")
        return None
    # dict.fromkeys: each keyword once, in the order given.
    return list(dict.fromkeys(word.strip() for word in words if word.strip()))


# --- departments ----------------------------------------------------------------------------


def import_departments(*, session: Session, path: Path, now: datetime) -> ImportResult:
    """Adds the file's new departments and updates those that exist (matched by name).

    Every row is checked before anything changes.

    Raises:
        UnknownFileType, FileMissing, UnreadableFile, BadRows.
    """
    rows = read_rows(path, DEPARTMENT_FIELDS, required=("name", "kind"))
    existing = {
        (d.centre_id, d.name): d
        for d in queries.list_departments(session=session, active_only=False)
    }
    default = queries.default_centre(session=session)
    kinds = [kind.value for kind in DepartmentKind]
    #: Names seen per centre (a name may be used once in each centre).
    seen_in: dict[int | None, dict[str, int]] = {}
    planned: list[tuple[str, dict[str, Any]]] = []
    bad: list[BadRow] = []
    for row in rows:
        reasons = list(row.problems)
        if row.broken:
            bad.append(BadRow(row.line, reasons))
            continue
        centre = _row_centre(session, row, reasons, default)
        name = _name(row, reasons, seen_in.setdefault(centre.id if centre else None, {}))
        kind = _text(row, "kind", reasons)
        if kind is None:
            reasons.append(f"kind is missing (one of {', '.join(kinds)})")
        elif kind not in kinds:
            reasons.append(f"kind must be {', '.join(kinds[:-1])} or {kinds[-1]}, not {kind!r}")
        changes: dict[str, Any] = {"kind": kind}
        if "resolution_days" in row.fields:
            # An empty cell means none: the category's resolution deadline applies.
            changes["resolution_days"] = _number(
                row, "resolution_days", reasons, MAX_RESOLUTION_DAYS
            )
        active = _flag(row, "active", reasons)
        if active is not None:
            changes["active"] = active
        if reasons:
            bad.append(BadRow(row.line, reasons))
        elif name is not None and centre is not None:
            changes["centre_id"] = centre.id
            planned.append((name, changes))
    if bad:
        raise BadRows(bad, len(rows))
    result = ImportResult()
    for name, changes in planned:
        department = existing.get((changes["centre_id"], name))
        if department is None:
            session.add(Department(name=name, **changes))
            result.added.append(name)
        elif _update(department, changes):
            session.add(department)
            result.updated.append(name)
        else:
            result.unchanged.append(name)
    _audit(session, "departments_import", path, result, now)
    return result


def _row_centre(session: Session, row: Row, reasons: list[str], default: Centre) -> Centre | None:
    """The centre a row names (its code, any case; empty: `default`); None when it names an
    unknown or inactive one (a reason is added)."""
    code = _text(row, "centre", reasons)
    if code is None:
        return default
    centre = queries.get_centre_by_code(session=session, code=code)
    if centre is None:
        reasons.append(f"centre {code!r} does not exist (see `redesk centres list`)")
        return None
    if not centre.active:
        reasons.append(f"centre {code!r} is inactive")
        return None
    return centre


def centre_named(session: Session, code: str | None, *, default: bool) -> Centre | None:
    """The active centre with this code; None (no code) is the default centre when `default`,
    else no centre.

    Raises:
        UnknownName: No active centre has the code.
    """
    if code is None:
        return queries.default_centre(session=session) if default else None
    centre = queries.get_centre_by_code(session=session, code=code)
    if centre is None or not centre.active:
        raise UnknownName(
            f"No active centre has the code {code.strip()!r} (see `redesk centres list`)."
        )
    return centre


def visible_departments(session: Session, centre: Centre | None) -> dict[str, Department]:
    """The departments a category of `centre` may route to, by name: those of the centre and
    of the centres above it (the nearest of a name), and those of no centre. For a category
    of no centre (it applies everywhere): every department, the default centre's first."""
    departments = queries.list_departments(session=session, active_only=False)
    if centre is None:
        order: list[int | None] = [queries.default_centre(session=session).id, None]
    else:
        order = [*queries.ancestor_ids(centre), None]
    rank = {centre_id: index for index, centre_id in enumerate(order)}
    found: dict[str, Department] = {}
    for department in sorted(departments, key=lambda d: rank.get(d.centre_id, len(rank))):
        if centre is not None and department.centre_id not in rank:
            continue
        found.setdefault(department.name, department)
    return found


@dataclass(frozen=True)
class Deactivated:
    """What deactivating a department left behind."""

    name: str
    #: False when it was inactive already (nothing changed).
    changed: bool
    #: Requests forwarded to it or being handled by it; they stay there.
    open_requests: int
    #: Categories routed to it; their new requests now go to the committee.
    categories: list[str]


def deactivate_department(
    *, session: Session, name: str, now: datetime, centre: str | None = None
) -> Deactivated:
    """Marks a department inactive: no new forwards reach it; its requests stay.

    `centre` (a code) names the centre it belongs to; without it the name must be one
    department's.

    Raises:
        UnknownName: No department has this name (in that centre), or no centre the code.
        AmbiguousName: Departments of several centres have this name and no centre is given.
    """
    named = [
        d
        for d in queries.list_departments(session=session, active_only=False)
        if d.name == name.strip()
    ]
    if centre is not None:
        place = centre_named(session, centre, default=False)
        named = [d for d in named if place is not None and d.centre_id == place.id]
    if len(named) > 1:
        codes = {c.id: c.code for c in queries.list_centres(session=session)}
        where = ", ".join(codes.get(d.centre_id, "no centre") for d in named)
        raise AmbiguousName(
            f"{len(named)} departments are called {name.strip()!r} (of {where}); "
            "name the centre with --centre."
        )
    department = named[0] if named else None
    if department is None or department.id is None:
        where = f" in centre {centre.strip()}" if centre else ""
        raise UnknownName(
            f"No department is called {name.strip()!r}{where} (see `redesk departments list`)."
        )
    open_requests = queries.count_requests_in_states(
        session=session, states=DEPARTMENT_STATES, department_id=department.id
    )
    categories = [
        c.name for c in queries.categories_routed_to(session=session, department_id=department.id)
    ]
    changed = department.active
    if changed:
        department.active = False
        session.add(department)
        audit(
            session, action="departments_deactivate", detail={"department": department.name}, at=now
        )
    return Deactivated(department.name, changed, open_requests, categories)


# --- categories -----------------------------------------------------------------------------


def import_categories(
    *, session: Session, path: Path, now: datetime, centre: str | None = None
) -> ImportResult:
    """Adds the file's new categories and updates those that exist (matched by name), all of
    one centre (a code; None: of no centre, applying everywhere).

    Every row is checked before anything changes, including that at most one category of
    the centre is the fallback once the file is applied.

    Raises:
        UnknownFileType, FileMissing, UnreadableFile, BadRows, ImportConflict, UnknownName.
    """
    place = centre_named(session, centre, default=False)
    rows = read_rows(path, CATEGORY_FIELDS)
    result = _apply_categories(session, rows, place)
    _audit(session, "categories_import", path, result, now, place)
    return result


def add_category(
    *, session: Session, fields: dict[str, Any], now: datetime, centre: str | None = None
) -> ImportResult:
    """Adds one category of a centre (None: of no centre), its fields as an import row has
    them.

    Raises:
        BadRows: What is wrong with it (line 1).
        ImportConflict: A category of that name exists in the centre already, or a second
            fallback.
        UnknownName: No active centre has the code.
    """
    place = centre_named(session, centre, default=False)
    name = str(fields.get("name") or "").strip()
    centre_id = place.id if place else None
    if any(
        c.name == name and c.centre_id == centre_id
        for c in queries.list_categories(session=session, active_only=False)
    ):
        where = f" in {place.name} ({place.code})" if place else " of no centre"
        raise ImportConflict(f"a category called {name!r} exists already{where}")
    result = _apply_categories(session, [Row(1, dict(fields))], place)
    audit(
        session,
        action="categories_add",
        at=now,
        detail={"category": name, "centre": place.code if place else None},
    )
    return result


def _apply_categories(session: Session, rows: list[Row], place: Centre | None) -> ImportResult:
    """Checks every row, then adds or updates the categories of `place`."""
    centre_id = place.id if place else None
    existing = {
        c.name: c
        for c in queries.list_categories(session=session, active_only=False)
        if c.centre_id == centre_id
    }
    departments = visible_departments(session, place)
    seen: dict[str, int] = {}
    planned: list[tuple[str, dict[str, Any]]] = []
    problems: dict[int, list[str]] = {}
    #: Whether each category given in the file is the fallback once applied, in file order.
    fallback_of: dict[str, tuple[bool, Row]] = {}
    for row in rows:
        reasons = problems.setdefault(row.line, list(row.problems))
        if row.broken:
            continue
        name = _name(row, reasons, seen)
        current = existing.get(name) if name else None
        changes = _category_changes(row, reasons, current, departments)
        if name is not None:
            is_fallback = changes.get("is_fallback", current.is_fallback if current else False)
            fallback_of[name] = (bool(is_fallback), row)
            planned.append((name, changes))
    # At most one fallback after the import: the database's others, then the file's, in order.
    fallbacks: list[tuple[str, Row | None]] = [
        (c.name, None)
        for c in existing.values()
        if c.is_fallback and c.active and c.name not in fallback_of
    ]
    fallbacks += [(name, row) for name, (flag, row) in fallback_of.items() if flag]
    if len(fallbacks) > 1 and fallbacks[1][1] is None:
        names = ", ".join(name for name, row in fallbacks if row is None)
        raise ImportConflict(
            f"the database already has several fallback categories ({names}); "
            "list them in the file with fallback set to no on all but one"
        )
    for _, extra in fallbacks[1:]:
        assert extra is not None  # the database's own are first, and there is one at most
        first, first_row = fallbacks[0]
        if first_row is None:
            problems[extra.line].append(
                f"only one category can be the fallback and {first} already is; to move the "
                f"fallback here, add {first} to the file with fallback no"
            )
        else:
            problems[extra.line].append(
                f"only one category can be the fallback and {first} (line {first_row.line}) "
                "already is; set fallback to no on one of them"
            )
    bad = [BadRow(line, reasons) for line, reasons in problems.items() if reasons]
    if bad:
        raise BadRows(bad, len(rows))
    result = ImportResult()
    for name, changes in planned:
        category = existing.get(name)
        if category is None:
            session.add(Category(name=name, centre_id=centre_id, **changes))
            result.added.append(name)
        elif _update(category, changes):
            session.add(category)
            result.updated.append(name)
        else:
            result.unchanged.append(name)
    session.flush()
    return result


def _category_changes(
    row: Row, reasons: list[str], current: Category | None, departments: dict[str, Department]
) -> dict[str, Any]:
    """The category's fields the row sets (new categories get the model's defaults)."""
    changes: dict[str, Any] = {}
    keywords = _keywords(row, reasons)
    if keywords is not None:
        changes["keywords"] = keywords
    routes = [route.value for route in Route]
    route = _text(row, "route", reasons)
    if route is not None and route.lower() not in routes:
        reasons.append(f"route must be committee or department, not {route!r}")
        route = None
    elif route is not None:
        changes["route"] = route.lower()
    final_route = changes.get("route", current.route if current else Route.COMMITTEE)
    department_name = _text(row, "department", reasons)
    if final_route == Route.COMMITTEE:
        if department_name is not None:
            reasons.append(
                "department is only for route department (this category's route is committee)"
            )
        changes["department_id"] = None
    elif department_name is not None:
        department = departments.get(department_name)
        if department is None:
            reasons.append(
                f"department {department_name!r} does not exist (see `redesk departments list`)"
            )
        elif not department.active:
            reasons.append(f"department {department_name!r} is inactive")
        else:
            changes["department_id"] = department.id
    elif current is None or current.department_id is None:
        reasons.append("department is missing: route department needs one")
    for name, maximum in (
        ("response_hours", MAX_RESPONSE_HOURS),
        ("resolution_days", MAX_RESOLUTION_DAYS),
    ):
        number = _number(row, name, reasons, maximum)
        if number is not None:
            changes[name] = number
    urgent = _flag(row, "urgent", reasons)
    if urgent is not None:
        changes["urgent"] = urgent
    fallback = _flag(row, "fallback", reasons)
    if fallback is not None:
        changes["is_fallback"] = fallback
    return changes


def _update(record: Department | Category, changes: dict[str, Any]) -> bool:
    """Sets the changed fields; whether any changed."""
    changed = False
    for name, value in changes.items():
        if getattr(record, name) != value:
            setattr(record, name, value)
            changed = True
    return changed


def _audit(
    session: Session,
    action: str,
    path: Path,
    result: ImportResult,
    now: datetime,
    centre: Centre | None = None,
) -> None:
    detail: dict[str, Any] = {"file": str(path), "added": result.added, "updated": result.updated}
    if centre is not None:
        detail["centre"] = centre.code
    audit(session, action=action, at=now, detail=detail)


# --- people ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonLine:
    """One person as `redesk people list` shows them."""

    id: int
    channel: str
    name: str
    role: str
    department: str
    unreachable: bool
    created: str


def list_people(*, session: Session, role: str | None) -> list[PersonLine]:
    """Everyone (or everyone with `role`), oldest first; times in Asia/Shanghai."""
    departments = {
        d.id: d.name for d in queries.list_departments(session=session, active_only=False)
    }
    return [
        PersonLine(
            person.id or 0,
            person.channel,
            person.display_name,
            person.role,
            departments.get(person.department_id, "") if person.department_id else "",
            person.unreachable,
            format_local(person.created_at),
        )
        for person in queries.list_people(session=session, roles=[role] if role else None)
    ]


@dataclass(frozen=True)
class Revoked:
    """Whose role was taken away, and what they held."""

    id: int
    name: str
    channel: str
    #: The role they had; requester means they had none and nothing changed.
    role: str
    department: str | None
    #: Requests they were handling (做单), now back in 待受理 for the committee.
    released: list[str] = field(default_factory=list)
    #: Walk-ins they registered, now relayed to and acted for by every worker.
    walk_ins: list[str] = field(default_factory=list)
    #: Web tokens of theirs that were expired.
    web_tokens: int = 0
    #: Outbox rows written for the workers (the caller enqueues them after committing).
    outbox: list[int] = field(default_factory=list)


def revoke_role(*, session: Session, who: str, role: str | None, now: datetime) -> Revoked:
    """Makes a person a plain requester again and ends everything their role gave them.

    They lose their role, their department and any open dialogue. What they hold goes back
    to the committee (workflow.service.release_holdings): requests they were handling return
    to 待受理 (an event each), walk-ins they registered are relayed to and acted for by every
    worker, their web tokens expire, and every worker is told. Their Telegram or WeChat chat
    stays, as a requester's.

    `who` is a person's id or exact display name; `role` narrows who is meant.

    Raises:
        UnknownName: Nobody (with that role) has this id or name.
        AmbiguousName: Several people with a role have this name.
    """
    who = who.strip()
    person = _person_meant(session, who, role)
    assert person.id is not None
    old_role = person.role
    department = None
    if person.department_id is not None:
        found = queries.get_department(session=session, department_id=person.department_id)
        department = found.name if found else None
    if old_role == Role.REQUESTER:
        return Revoked(person.id, person.display_name, person.channel, old_role, department)
    person.role = Role.REQUESTER
    person.department_id = None
    # A half-finished command (e.g. 驳回 waiting for its reason) must not complete later.
    person.dialogue = None
    session.add(person)
    # The role change is flushed first, so that the workers told below no longer include them.
    session.flush()
    queries.add_event(
        session=session,
        request_id=None,
        actor_id=person.id,
        action="revoke",
        from_state=None,
        to_state=None,
        note=old_role,
        at=now,
    )
    tx = service.Tx(session=session, now=now, source=f"revoke:{person.id}:{now.isoformat()}")
    held = service.release_holdings(tx, person)
    session.flush()
    audit(
        session,
        action="people_revoke",
        at=now,
        detail={
            "person": person.id,
            "name": person.display_name,
            "role": old_role,
            "department": department,
            "released": held.released,
            "walk_ins": held.walk_ins,
            "web_tokens": held.web_tokens,
            "skipped": held.skipped,
        },
    )
    return Revoked(
        person.id,
        person.display_name,
        person.channel,
        old_role,
        department,
        held.released,
        held.walk_ins,
        held.web_tokens,
        tx.outbox_ids(),
    )


def _person_meant(session: Session, who: str, role: str | None) -> Person:
    if re.fullmatch(r"[0-9]+", who):
        person = queries.get_person(session=session, person_id=int(who), lock=True)
        if person is not None:
            if role is not None and person.role != role:
                raise UnknownName(
                    f"Person {who} ({person.display_name or 'no name'}) is a "
                    f"{person.role}, not a {role}."
                )
            return person
    named = queries.people_named(session=session, name=who)
    if not named:
        raise UnknownName(f"Nobody has the id or name {who!r} (see `redesk people list`).")
    if role is not None:
        holders = [person for person in named if person.role == role]
        if not holders:
            roles = ", ".join(sorted({person.role for person in named}))
            raise UnknownName(f"Nobody called {who!r} is a {role} (their roles: {roles}).")
    else:
        holders = [person for person in named if person.role != Role.REQUESTER]
        if not holders:
            return named[0]  # a requester already: nothing to revoke
    if len(holders) > 1:
        candidates = "; ".join(f"id {p.id} ({p.channel}, {p.role})" for p in holders)
        raise AmbiguousName(
            f"{len(holders)} people are called {who!r}: {candidates}. Name one by its id."
        )
    person = queries.get_person(session=session, person_id=holders[0].id or 0, lock=True)
    assert person is not None
    return person


# --- web identities -------------------------------------------------------------------------


@dataclass(frozen=True)
class WebRevoked:
    """Whose web tokens were ended."""

    id: int
    name: str
    role: str
    #: Valid tokens that expired; 0 means there were none and nothing changed.
    tokens: int


def revoke_web(*, session: Session, who: str, now: datetime) -> WebRevoked:
    """Ends every valid token of a web identity (a resident abusing the desk, a lost device).

    `who` is the person's id or exact display name, among web identities only. Their requests
    and role stay; any page still holding a token is answered 401 from then on and must make
    a new identity. Ending at least one token is put on the admin audit log.

    Raises:
        UnknownName: No web identity has this id or name.
        AmbiguousName: Several web identities have this name.
    """
    who = who.strip()
    person: Person | None = None
    if re.fullmatch(r"[0-9]+", who):
        person = queries.get_person(session=session, person_id=int(who), lock=True)
        if person is not None and person.channel != "web":
            raise UnknownName(
                f"Person {who} ({person.display_name or 'no name'}) is a "
                f"{person.channel} identity, not a web one; see `redesk people "
                "revoke` for roles."
            )
    if person is None:
        named = [p for p in queries.people_named(session=session, name=who) if p.channel == "web"]
        if not named:
            raise UnknownName(
                f"No web identity has the id or name {who!r} (see `redesk people list`)."
            )
        if len(named) > 1:
            candidates = "; ".join(f"id {p.id} ({p.role})" for p in named)
            raise AmbiguousName(
                f"{len(named)} web identities are called {who!r}: {candidates}. Name one by its id."
            )
        person = queries.get_person(session=session, person_id=named[0].id or 0, lock=True)
    assert person is not None and person.id is not None
    ended = queries.expire_web_sessions(session=session, person_id=person.id, now=now)
    if ended:
        queries.audit_admin_action(
            session=session,
            actor=admin_user(),
            action="web_revoke",
            at=now,
            detail={
                "person": person.id,
                "name": person.display_name,
                "role": person.role,
                "tokens": ended,
            },
        )
    return WebRevoked(person.id, person.display_name, person.role, ended)


# --- inbox ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedLine:
    """One failed inbox row as `redesk inbox failed` shows it."""

    id: int
    channel: str
    #: The platform's key of the message (e.g. a Telegram update_id).
    natural_key: str
    chat_id: str
    #: When it was received, in Asia/Shanghai.
    received: str
    attempts: int
    reason: str


def list_failed_inbox(*, session: Session) -> list[FailedLine]:
    """Every failed inbox row, of any channel, oldest first."""
    return [
        FailedLine(
            row.id or 0,
            row.channel,
            row.natural_key,
            row.chat_id,
            format_local(row.received_at),
            row.attempts,
            row.error or "",
        )
        for row in queries.failed_inbox(session=session)
    ]


@dataclass(frozen=True)
class Retried:
    """A failed inbox row handed back to the workers."""

    id: int
    channel: str
    #: The chat to enqueue; None when the message turned out to be one nobody handles (done).
    chat: str | None
    #: The reason it had failed with.
    reason: str


def retry_inbox(*, session: Session, inbox_id: int, now: datetime) -> Retried:
    """Puts a failed inbox row back to pending, with its attempts counted from zero.

    A Telegram update is read again first (after an upgrade of python-telegram-bot it may
    parse); if it still does not and has no chat to be handled in, nothing changes. The
    caller enqueues the returned chat after committing.

    Raises:
        UnknownInbox: No inbox row has this id.
        NotFailed: The row is pending or done.
        StillUnparseable: A Telegram update that still cannot be parsed and has no chat.
    """
    from bot.channels import telegram

    row = queries.get_inbox(session=session, inbox_id=inbox_id)
    if row is None:
        raise UnknownInbox(f"No inbox row has the id {inbox_id} (see `redesk inbox failed`).")
    if row.status != InboxStatus.FAILED:
        raise NotFailed(f"Inbox row {inbox_id} is {row.status}, not failed; nothing changed.")
    reason = row.error or ""
    chat: str | None = row.chat_id
    if row.channel == telegram.CHANNEL:
        try:
            classified = telegram.classify(row.payload)
        except telegram.BadUpdate as exc:
            raise StillUnparseable(
                f"Inbox row {inbox_id} is no Telegram update ({exc}); nothing changed."
            ) from None
        if classified.chat is None and classified.error:
            raise StillUnparseable(
                f"Inbox row {inbox_id} still cannot be parsed "
                f"({classified.error}); nothing changed."
            )
        chat = classified.chat
        row.chat_id = chat or "-"
    row.status = InboxStatus.PENDING if chat else InboxStatus.DONE
    row.attempts = 0
    row.error = None
    session.add(row)
    audit(
        session,
        action="inbox_retry",
        at=now,
        detail={"inbox": inbox_id, "channel": row.channel, "reason": reason},
    )
    return Retried(inbox_id, row.channel, chat, reason)
